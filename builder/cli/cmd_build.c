/*
 * mbuild build: plan the layers of a Machinefile, then build the missing
 * ones in VMs, streaming each step's output to stderr.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "mbuild/cache.h"
#include "mbuild/machinefile.h"
#include "mbuild/plan.h"

#include "cli.h"
#include "commands.h"
#include "run_build.h"

struct build_options {
    const char *file;
    const char *cache_dir;
    bool plan_only;
    bool json;
    bool no_cache;
    bool refresh;
    const char *ca_file;
    const char *progress; /* auto, plain or none */
};

static int build_usage(FILE *out, int status)
{
    fprintf(out,
            "Usage: %s build [--plan] [-f FILE] [--json] [--cache DIR] [--no-cache]\n"
            "       [--refresh] [--ca-cert FILE] [--progress=auto|plain|none]\n\n"
            "Build the layers of a Machinefile: the base, the packages, then one per step.\n"
            "Each missing layer runs in a throwaway VM; cached layers are reused.\n\n"
            "Options:\n"
            "  -f, --file FILE    the Machinefile (default: ./Machinefile)\n"
            "      --plan         show each layer, its key and whether it is cached; run nothing\n"
            "      --json         print the plan, or the build's summary, as JSON on stdout\n"
            "      --no-cache     rebuild every layer above the base\n"
            "      --refresh      rebuild the base image too, and so every layer\n"
            "      --ca-cert FILE also trust these PEM certificates in steps (a TLS-inspecting\n"
            "                     proxy's CA; default $MBUILD_CA_CERT); in no key or layer\n"
            "      --progress=MODE  auto or plain: phases and each step's output on stderr;\n"
            "                     none: only failures\n"
            "      --cache DIR    the layer cache (default: $MBUILD_CACHE, else\n"
            "                     $XDG_CACHE_HOME/mbuild, else ~/.cache/mbuild)\n"
            "  -h, --help         show this help\n\n%s",
            cli_program, cli_exit_codes);
    return status;
}

static int parse_options(int argc, char **argv, struct build_options *opts)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'},     {"plan", no_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},           {"cache", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},           {"no-cache", no_argument, NULL, 'n'},
        {"refresh", no_argument, NULL, 'r'},        {"ca-cert", required_argument, NULL, 'C'},
        {"progress", required_argument, NULL, 'P'}, {NULL, 0, NULL, 0},
    };
    int c;

    opts->file = "Machinefile";
    opts->progress = "auto";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            opts->file = optarg;
            break;
        case 'p':
            opts->plan_only = true;
            break;
        case 'j':
            opts->json = true;
            break;
        case 'c':
            opts->cache_dir = optarg;
            break;
        case 'n':
            opts->no_cache = true;
            break;
        case 'r':
            opts->refresh = true;
            break;
        case 'P':
            opts->progress = optarg;
            break;
        case 'C':
            opts->ca_file = optarg;
            break;
        case 'h':
            exit(build_usage(stdout, 0));
        default:
            return cli_usage_error("build: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("build: unexpected argument '%s'", argv[optind]);
    if (strcmp(opts->progress, "auto") != 0 && strcmp(opts->progress, "plain") != 0 &&
        strcmp(opts->progress, "none") != 0)
        return cli_usage_error("build: --progress must be auto, plain or none, not '%s'",
                               opts->progress);
    return 0;
}

/* The first line of a layer's text, cut to fit beside its name. */
static void print_summary(const struct mb_layer *layer)
{
    size_t len = strcspn(layer->text, "\n");
    const char *more = layer->text[len] != '\0' || len > 60 ? " ..." : "";

    if (len > 60)
        len = 60;
    printf("%s: %.*s%s\n", mb_layer_kind_name(layer->kind), (int)len, layer->text, more);
}

static void print_plan(const struct mb_plan *plan)
{
    size_t cached = 0;

    for (size_t i = 0; i < plan->count; i++)
        cached += plan->entries[i].cached;
    printf("%s: %zu layers, %zu cached, %zu to build\n", plan->mf->path, plan->count, cached,
           plan->count - cached);
    for (size_t i = 0; i < plan->count; i++) {
        const struct mb_plan_entry *e = &plan->entries[i];
        char key[MB_DIGEST_STR_LEN];

        mb_digest_str(&e->layer->key, key);
        printf("[%zu/%zu] %-16s ", i + 1, plan->count, e->layer->name);
        print_summary(e->layer);
        if (e->cached)
            printf("      %s  cached\n", key);
        else
            printf("      %s  miss: %s\n", key, e->reason);
    }
}

static int show_plan(struct mb_cache *cache, const struct mb_machinefile *mf, bool json,
                     struct mb_error *err)
{
    struct mb_plan *plan;
    char *text;

    if (mb_plan_make(cache, mf, &plan, err) < 0)
        return -1;
    /* Keep the first record until a build replaces it, so a repeated plan still explains. */
    if (!plan->had_record && mb_plan_record(cache, plan, err) < 0) {
        mb_plan_free(plan);
        return -1;
    }
    if (json) {
        text = mb_plan_to_json(plan, err);
        if (text == NULL) {
            mb_plan_free(plan);
            return -1;
        }
        fputs(text, stdout);
        free(text);
    } else {
        print_plan(plan);
    }
    mb_plan_free(plan);
    return 0;
}

int cmd_build(int argc, char **argv)
{
    struct build_options opts = {0};
    struct mb_machinefile *mf = NULL;
    struct mb_cache *cache = NULL;
    struct mb_error err = {0};
    char *dir;
    int rc;

    if (parse_options(argc, argv, &opts) != 0)
        return MB_ERR_INPUT;
    if (mb_machinefile_load(opts.file, &mf, &err) < 0)
        return cli_fail(&err);
    dir = mb_cache_default_dir(opts.cache_dir, &err);
    rc = dir == NULL ? -1 : mb_cache_open(dir, &cache, &err);
    free(dir);
    if (rc == 0)
        rc = opts.plan_only
                 ? show_plan(cache, mf, opts.json, &err)
                 : cli_build(cache, mf, opts.progress, opts.json,
                             (struct cli_build_flags){opts.no_cache, opts.refresh, opts.ca_file},
                             NULL, &err);
    mb_cache_close(cache);
    mb_machinefile_free(mf);
    return rc < 0 ? cli_fail(&err) : 0;
}
