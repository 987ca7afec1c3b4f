/*
 * Building a Machinefile from a front end, as `mbuild build` and `machine
 * start` both do: plan, build what is missing with each step's output on
 * stderr, record the plan, and print a line (or a JSON entry) per layer.
 * SIGINT and SIGTERM cancel the build cleanly.
 */
#ifndef MBUILD_CLI_RUN_BUILD_H
#define MBUILD_CLI_RUN_BUILD_H

#include <stdbool.h>

#include "mbuild/cache.h"
#include "mbuild/plan.h"

struct cli_build_flags {
    bool no_cache;
    bool refresh;
    const char *ca_file; /* --ca-cert, else $MBUILD_CA_CERT, else NULL */
};

/* Cancel on SIGINT and SIGTERM (see mbuild/cancel.h). */
void cli_catch_signals(void);

/*
 * `progress_mode` is auto, plain or none. On success, *plan_out (unless
 * NULL) gets the plan, for the caller to free.
 */
int cli_build(struct mb_cache *cache, const struct mb_machinefile *mf, const char *progress_mode,
              bool json, struct cli_build_flags flags, struct mb_plan **plan_out,
              struct mb_error *err);

#endif
