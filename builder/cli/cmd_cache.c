/*
 * mbuild cache: look at the local layer cache and check it.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mbuild/cache.h"

#include "cli.h"
#include "commands.h"

struct cache_options {
    const char *cache_dir;
    bool json;
    bool no_trunc;
};

static int cache_usage(FILE *out, int status)
{
    fprintf(out,
            "Usage: %s cache ls [--json] [--no-trunc] [--cache DIR]\n"
            "       %s cache verify [--cache DIR]\n\n"
            "  ls      list cached layers: key, size, created, last used, step\n"
            "  verify  re-hash every blob and check every layer record; exits 4 on damage\n\n"
            "Options:\n"
            "      --json       (ls) print a JSON document on stdout\n"
            "      --no-trunc   (ls) print full keys\n"
            "      --cache DIR  the layer cache (default: $MBUILD_CACHE, else\n"
            "                   $XDG_CACHE_HOME/mbuild, else ~/.cache/mbuild)\n"
            "  -h, --help       show this help\n\n%s",
            cli_program, cli_program, cli_exit_codes);
    return status;
}

static int parse_options(int argc, char **argv, struct cache_options *opts)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"no-trunc", no_argument, NULL, 'n'},
        {"cache", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            opts->json = true;
            break;
        case 'n':
            opts->no_trunc = true;
            break;
        case 'c':
            opts->cache_dir = optarg;
            break;
        case 'h':
            exit(cache_usage(stdout, 0));
        default:
            return cli_usage_error("cache: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("cache: unexpected argument '%s'", argv[optind]);
    return 0;
}

static json_t *digest_json(const struct mb_digest *d)
{
    char s[MB_DIGEST_STR_LEN];

    mb_digest_str(d, s);
    return json_string(s);
}

static json_t *record_json(const struct mb_layer_record *r)
{
    return json_pack("{s:o, s:o*, s:o, s:I, s:o, s:I, s:s, s:I, s:I, s:I}", "key",
                     digest_json(&r->key), "parent",
                     r->has_parent ? digest_json(&r->parent_key) : NULL, "digest",
                     digest_json(&r->blob.digest), "size", (json_int_t)r->blob.size, "diff_digest",
                     digest_json(&r->blob.diff_digest), "diff_size", (json_int_t)r->blob.diff_size,
                     "step", r->step ? r->step : "", "created", (json_int_t)r->created, "last_used",
                     (json_int_t)r->last_used, "build_ms", (json_int_t)r->build_ms);
}

static void print_json(const struct mb_layer_record *recs, size_t count)
{
    json_t *layers = json_array();
    json_t *root;
    char *text;

    for (size_t i = 0; i < count; i++)
        json_array_append_new(layers, record_json(&recs[i]));
    root = json_pack("{s:i, s:o}", "version", 1, "layers", layers);
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text != NULL)
        puts(text);
    free(text);
    json_decref(root);
}

static void print_table(const struct mb_layer_record *recs, size_t count, bool no_trunc)
{
    int key_width = no_trunc ? MB_DIGEST_STR_LEN - 1 : 12;

    printf("%-*s  %10s  %-16s  %-16s  %s\n", key_width, "KEY", "SIZE", "CREATED", "LAST USED",
           "STEP");
    for (size_t i = 0; i < count; i++) {
        char key[MB_DIGEST_STR_LEN], size[32], created[32], used[32];

        if (no_trunc)
            mb_digest_str(&recs[i].key, key);
        else
            mb_digest_hex(&recs[i].key, key);
        cli_format_size(recs[i].blob.size, size, sizeof(size));
        cli_format_time(recs[i].created, created, sizeof(created));
        cli_format_time(recs[i].last_used, used, sizeof(used));
        printf("%-*.*s  %10s  %-16s  %-16s  %s\n", key_width, key_width, key, size, created, used,
               recs[i].step ? recs[i].step : "");
    }
}

static int cache_ls(struct mb_cache *cache, const struct cache_options *opts, struct mb_error *err)
{
    struct mb_layer_record *recs;
    size_t count;

    if (mb_cache_list_layers(cache, &recs, &count, err) < 0)
        return -1;
    if (opts->json)
        print_json(recs, count);
    else
        print_table(recs, count, opts->no_trunc);
    mb_layer_records_free(recs, count);
    return 0;
}

static void print_problem(void *ctx, const char *problem)
{
    (void)ctx;
    fprintf(stderr, "%s: damaged: %s\n", cli_program, problem);
}

static int cache_verify(struct mb_cache *cache, struct mb_error *err)
{
    struct mb_verify_report report;

    if (mb_cache_verify(cache, print_problem, NULL, &report, err) < 0)
        return -1;
    printf("%zu blobs checked, %zu damaged; %zu layer records checked, %zu damaged\n",
           report.blobs_checked, report.blobs_damaged, report.records_checked,
           report.records_damaged);
    if (report.blobs_damaged + report.records_damaged > 0)
        return mb_error_set(err, MB_ERR_INTEGRITY, "cache '%s' is damaged", mb_cache_dir(cache));
    return 0;
}

int cmd_cache(int argc, char **argv)
{
    struct cache_options opts = {0};
    struct mb_cache *cache = NULL;
    struct mb_error err = {0};
    const char *action;
    char *dir;
    int rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cache_usage(argc < 2 ? stderr : stdout, argc < 2 ? MB_ERR_INPUT : 0);
    action = argv[1];
    if (strcmp(action, "ls") != 0 && strcmp(action, "verify") != 0)
        return cli_usage_error("cache: unknown command '%s'", action);
    if (parse_options(argc - 1, argv + 1, &opts) < 0)
        return MB_ERR_INPUT;
    dir = mb_cache_default_dir(opts.cache_dir, &err);
    rc = dir == NULL ? -1 : mb_cache_open(dir, &cache, &err);
    free(dir);
    if (rc == 0 && strcmp(action, "ls") == 0)
        rc = cache_ls(cache, &opts, &err);
    else if (rc == 0)
        rc = cache_verify(cache, &err);
    mb_cache_close(cache);
    return rc < 0 ? cli_fail(&err) : 0;
}
