/*
 * Store one file into a cache directory as a layer, the way mbuild does
 * after a step, and report what it cost: wall seconds, the compressed
 * size, the uncompressed size and this process's peak RSS. bench/store.sh
 * runs it against the zstd and sha256sum command-line tools.
 *
 *   bench_store CACHE_DIR FILE
 *
 * Prints "key value" lines on stdout; exit status 1 on failure.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mbuild/cache.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmHWM of this process in KiB, or 0 if /proc cannot say. */
static unsigned long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long kib = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmHWM: %lu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    struct mb_error err = {0};
    struct mb_cache *cache;
    struct mb_blob_info info;
    char digest[MB_DIGEST_STR_LEN];
    double start;

    if (argc != 3) {
        fprintf(stderr, "usage: bench_store CACHE_DIR FILE\n");
        return 1;
    }
    start = now();
    if (mb_cache_open(argv[1], &cache, &err) < 0 ||
        mb_cache_put_layer_file(cache, argv[2], &info, &err) < 0) {
        fprintf(stderr, "bench_store: %s\n", err.msg);
        return 1;
    }
    printf("seconds %.3f\n", now() - start);
    printf("compressed %llu\n", (unsigned long long)info.size);
    printf("uncompressed %llu\n", (unsigned long long)info.diff_size);
    printf("existed %s\n", info.existed ? "yes" : "no");
    mb_digest_str(&info.digest, digest);
    printf("digest %s\n", digest);
    mb_digest_str(&info.diff_digest, digest);
    printf("diff_digest %s\n", digest);
    printf("peak_rss_kib %lu\n", peak_rss_kib());
    mb_cache_close(cache);
    return 0;
}
