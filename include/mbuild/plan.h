/*
 * The build plan: each layer of a Machinefile, its key, whether the cache
 * has it, and for a miss the reason, found by comparing the layer's inputs
 * with the last plan recorded for the same Machinefile.
 *
 * A recorded plan keeps, per layer, digests of its inputs only (never the
 * inputs themselves), in <cache>/plans/<sha256 of the Machinefile's
 * absolute path>.json. mb_plan_record() writes it; a build records after
 * it succeeds, and `build --plan` records only when there is no earlier
 * record, so repeating a plan keeps explaining the same change.
 */
#ifndef MBUILD_PLAN_H
#define MBUILD_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "mbuild/cache.h"
#include "mbuild/error.h"
#include "mbuild/layers.h"
#include "mbuild/machinefile.h"

/* Version of the --json document and of the recorded plan. */
#define MB_PLAN_FORMAT_VERSION 1

struct mb_plan_entry {
    const struct mb_layer *layer; /* borrowed from the plan's layers */
    bool cached;
    char *reason; /* for a miss: why; NULL for a hit */
};

struct mb_plan {
    const struct mb_machinefile *mf; /* borrowed */
    struct mb_layer *layers;         /* owned */
    size_t count;
    struct mb_plan_entry *entries; /* one per layer */
    bool had_record;               /* an earlier plan was recorded for this Machinefile */
};

/* Derive the layers of `mf`, look each up in the cache, explain each miss. */
int mb_plan_make(struct mb_cache *cache, const struct mb_machinefile *mf, struct mb_plan **out,
                 struct mb_error *err);

/* Record the plan's inputs as the last plan for its Machinefile. */
int mb_plan_record(struct mb_cache *cache, const struct mb_plan *plan, struct mb_error *err);

/* The plan as a versioned JSON document, malloc'ed, ending in a newline. */
char *mb_plan_to_json(const struct mb_plan *plan, struct mb_error *err);

void mb_plan_free(struct mb_plan *plan);

#endif
