/* The build as the front ends run it: see run_build.h. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mbuild/build.h"
#include "mbuild/cancel.h"

#include "cli.h"
#include "run_build.h"

static void on_signal(int sig)
{
    (void)sig;
    mb_cancel_request();
}

void cli_catch_signals(void)
{
    struct sigaction sa = {0};

    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* What the build reports as it goes, and the summary it prints at the end. */
struct build_view {
    const struct mb_plan *plan;
    bool show_output;
    const char *step; /* name of the layer being built, for prefixes */
    json_t *summary;  /* --json: one entry per layer */
};

static void show_message(void *ctx, const char *text)
{
    struct build_view *v = ctx;

    if (v->show_output)
        fprintf(stderr, "%s\n", text);
}

static void show_output(void *ctx, const char *line)
{
    struct build_view *v = ctx;

    if (v->show_output)
        fprintf(stderr, "%s | %s\n", v->step != NULL ? v->step : "", line);
}

static void layer_done(void *ctx, size_t i, const struct mb_layer *layer, bool built,
                       double seconds, uint64_t size)
{
    struct build_view *v = ctx;
    char key[MB_DIGEST_STR_LEN], human[32];

    mb_digest_str(&layer->key, key);
    cli_format_size(size, human, sizeof(human));
    if (v->summary != NULL)
        json_array_append_new(
            v->summary, json_pack("{s:s, s:s, s:s, s:b, s:f, s:I}", "name", layer->name, "kind",
                                  mb_layer_kind_name(layer->kind), "key", key, "built", built,
                                  "seconds", seconds, "size", (json_int_t)size));
    else if (built)
        printf("[%zu/%zu] %-16s built in %.1fs, %s\n", i + 1, v->plan->count, layer->name, seconds,
               human);
    else
        printf("[%zu/%zu] %-16s cached, %s\n", i + 1, v->plan->count, layer->name, human);
    fflush(stdout);
    if (i + 1 < v->plan->count)
        v->step = v->plan->layers[i + 1].name;
}

static void print_failure(const struct mb_build_failure *failure)
{
    if (failure->tail == NULL || failure->tail[0] == '\0')
        return;
    fprintf(stderr, "%s: last lines of the step's output:\n", cli_program);
    for (const char *line = failure->tail; *line != '\0';) {
        size_t len = strcspn(line, "\n");

        fprintf(stderr, "  | %.*s\n", (int)len, line);
        line += len + (line[len] == '\n');
    }
}

int cli_build(struct mb_cache *cache, const struct mb_machinefile *mf, const char *progress_mode,
              bool json, struct cli_build_flags flags, struct mb_plan **plan_out,
              struct mb_error *err)
{
    struct build_view view = {.show_output = strcmp(progress_mode, "none") != 0};
    struct mb_progress progress = {show_message, &view};
    struct mb_build_options bopts = {
        .no_cache = flags.no_cache,
        .refresh = flags.refresh,
        .ca_file = flags.ca_file != NULL ? flags.ca_file : getenv("MBUILD_CA_CERT"),
        .progress = &progress,
        .on_output = show_output,
        .ctx = &view,
        .on_layer = layer_done,
    };
    struct mb_build_failure failure;
    struct mb_plan *plan;
    int rc;

    if (mb_plan_make(cache, mf, &plan, err) < 0)
        return -1;
    view.plan = plan;
    view.step = plan->count > 0 ? plan->layers[0].name : NULL;
    view.summary = json ? json_array() : NULL;
    cli_catch_signals();
    rc = mb_build_run(cache, plan, &bopts, &failure, err);
    if (rc == 0)
        rc = mb_plan_record(cache, plan, err);
    if (rc < 0)
        print_failure(&failure);
    if (rc == 0 && view.summary != NULL) {
        json_t *doc = json_pack("{s:i, s:s, s:O}", "version", MB_PLAN_FORMAT_VERSION, "machinefile",
                                mf->path, "layers", view.summary);
        char *text = json_dumps(doc, JSON_INDENT(2));

        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(doc);
    }
    json_decref(view.summary);
    free(failure.tail);
    if (rc == 0 && plan_out != NULL)
        *plan_out = plan;
    else
        mb_plan_free(plan);
    return rc;
}
