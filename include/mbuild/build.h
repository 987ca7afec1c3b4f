/*
 * Building a Machinefile: plan, then make every missing layer in order,
 * each in a throwaway VM on an overlay of its parent, and store the
 * overlay in the cache as the layer.
 *
 * Beside the OCI layout the build keeps, as derived data it can always
 * make again from the blobs:
 *   <cache>/layers/<key hex>.qcow2   each layer unpacked, its backing file
 *                                    the parent's, named relative
 *   <cache>/logs/<key hex>.log       the console of the step VM that made it
 *   <cache>/work/                    one directory per build in progress
 *
 * One build per key at a time: a layer is made under a lock on its key, so
 * two builds of the same Machinefile do each step once and both succeed.
 * A failed, timed-out or interrupted step leaves the cache as it was.
 */
#ifndef MBUILD_BUILD_H
#define MBUILD_BUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "mbuild/cache.h"
#include "mbuild/error.h"
#include "mbuild/plan.h"
#include "mbuild/progress.h"
#include "mbuild/stepvm.h"

struct mb_build_options {
    bool no_cache;                      /* rebuild every layer but the base */
    bool refresh;                       /* rebuild the base too, and so everything */
    const char *ca_file;                /* extra certificates steps trust (a proxy CA), or NULL */
    const struct mb_progress *progress; /* phases: "greet: starting VM" */
    mb_step_output_fn on_output;        /* each line a step prints; ctx below */
    void *ctx;
    /* Called when a layer is done, cached or built. */
    void (*on_layer)(void *ctx, size_t index, const struct mb_layer *layer, bool built,
                     double seconds, uint64_t size);
};

struct mb_build_failure {
    char *tail; /* the failed step's last lines of output, malloc'ed, or NULL */
};

/*
 * Build what `plan` misses. A step that fails or times out is
 * MB_ERR_STEP, with its tail in *failure; cancellation is
 * MB_ERR_INTERRUPTED.
 */
int mb_build_run(struct mb_cache *cache, const struct mb_plan *plan,
                 const struct mb_build_options *opts, struct mb_build_failure *failure,
                 struct mb_error *err);

/* The unpacked qcow2 of a cached layer, made from its blob when missing. Malloc'ed path. */
char *mb_build_unpacked_layer(struct mb_cache *cache, const struct mb_digest *key,
                              struct mb_error *err);

#endif
