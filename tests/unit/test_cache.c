/*
 * The cache: what is stored comes back bit for bit and under the digests
 * an independent hash gives; memory stays bounded whatever the size; a
 * damaged or hostile blob is refused with MB_ERR_INTEGRITY and leaves no
 * output; a killed writer leaves nothing a reader can see; concurrent
 * writers of the same content all succeed with one blob; key records
 * round trip and any damage to them is reported, never trusted.
 *
 * Each test runs in a directory of its own with a fresh cache in it.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/cache.h"
#include "mbuild/fsutil.h"

#include "helpers.h"

#define MIB       (1024 * 1024)
#define GIB       (1024L * MIB)
#define RSS_LIMIT (64 * MIB)

/*
 * AddressSanitizer's shadow memory and quarantine inflate RSS far beyond
 * what the code uses, so under it the memory bound is not asserted.
 */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char *work;      /* the test's own directory */
static char *cache_dir; /* work/cache */
static struct mb_cache *cache;

static void open_cache(void)
{
    struct mb_error err = {0};

    cr_assert_eq(mb_cache_open(cache_dir, &cache, &err), 0, "%s", err.msg);
}

static void reopen_cache(void)
{
    mb_cache_close(cache);
    open_cache();
}

static void setup(void)
{
    work = mbt_tempdir();
    cache_dir = mbt_path(work, "cache");
    open_cache();
}

static void teardown(void)
{
    mb_cache_close(cache);
    mbt_rm_rf(work);
    free(cache_dir);
    free(work);
}

TestSuite(cache, .init = setup, .fini = teardown);

/* Text-like bytes: compressible, not trivially so, the same for the same seed. */
static void fill_text(char *buf, size_t len, unsigned *seed)
{
    static const char *const words[] = {"layer ",   "cache ",  "blob ", "digest ",  "qemu ",
                                        "overlay ", "kernel ", "npm ",  "install ", "\n"};
    size_t pos = 0;

    while (pos < len) {
        const char *w = words[rand_r(seed) % (sizeof(words) / sizeof(words[0]))];
        size_t n = strlen(w) < len - pos ? strlen(w) : len - pos;

        memcpy(buf + pos, w, n);
        pos += n;
    }
}

static char *text_file(const char *name, size_t size, unsigned seed)
{
    char *path = mbt_path(work, name);
    char *buf = malloc(MIB);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    cr_assert(buf != NULL && fd >= 0);
    for (size_t done = 0; done < size; done += MIB) {
        size_t n = size - done < MIB ? size - done : MIB;

        fill_text(buf, n, &seed);
        cr_assert_eq(write(fd, buf, n), (ssize_t)n);
    }
    close(fd);
    free(buf);
    return path;
}

/* A 1 GiB file, mostly a hole, with text at the start, in the middle and at the end. */
static char *sparse_file(const char *name)
{
    static const off_t regions[] = {0, 512 * MIB + 12345, GIB - MIB};
    char *path = mbt_path(work, name);
    char *buf = malloc(MIB);
    unsigned seed = 7;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    cr_assert(buf != NULL && fd >= 0);
    cr_assert_eq(ftruncate(fd, GIB), 0);
    for (size_t i = 0; i < sizeof(regions) / sizeof(regions[0]); i++) {
        fill_text(buf, MIB, &seed);
        cr_assert_eq(pwrite(fd, buf, MIB, regions[i]), MIB);
    }
    close(fd);
    free(buf);
    return path;
}

static struct mb_digest digest_of_file(const char *path)
{
    struct mb_error err = {0};
    struct mb_digest d;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    cr_assert(fd >= 0, "open %s", path);
    cr_assert_eq(mb_sha256_fd(fd, &d, &err), 0, "%s", err.msg);
    close(fd);
    return d;
}

/* Entries of cache_dir/rel whose names start with `prefix`. */
static size_t count_entries(const char *rel, const char *prefix)
{
    char *path = mbt_path(cache_dir, rel);
    DIR *d = opendir(path);
    struct dirent *ent;
    size_t n = 0;

    cr_assert(d != NULL, "opendir %s", path);
    while ((ent = readdir(d)) != NULL)
        if (ent->d_name[0] != '.' && strncmp(ent->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    free(path);
    return n;
}

static bool exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static struct mb_blob_info store(const char *path)
{
    struct mb_error err = {0};
    struct mb_blob_info info;

    cr_assert_eq(mb_cache_put_layer_file(cache, path, &info, &err), 0, "%s", err.msg);
    return info;
}

static void flip_byte(const struct mb_digest *digest, off_t offset)
{
    char *path = mb_cache_blob_path(cache, digest);
    unsigned char c;
    int fd;

    cr_assert_eq(chmod(path, 0644), 0);
    fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert(fd >= 0);
    cr_assert_eq(pread(fd, &c, 1, offset), 1);
    c ^= 0x40;
    cr_assert_eq(pwrite(fd, &c, 1, offset), 1);
    close(fd);
    free(path);
}

/* What mb_cache_verify reported, line by line. */
struct problems {
    size_t count;
    char text[8192];
};

static void collect(void *ctx, const char *problem)
{
    struct problems *p = ctx;
    size_t len = strlen(p->text);

    p->count++;
    snprintf(p->text + len, sizeof(p->text) - len, "%s\n", problem);
}

static struct mb_verify_report verify(struct problems *p)
{
    struct mb_error err = {0};
    struct mb_verify_report report;

    memset(p, 0, sizeof(*p));
    cr_assert_eq(mb_cache_verify(cache, collect, p, &report, &err), 0, "%s", err.msg);
    return report;
}

static void assert_clean(void)
{
    struct problems p;
    struct mb_verify_report r = verify(&p);

    cr_assert_eq(p.count, 0, "%s", p.text);
    cr_assert_eq(r.blobs_damaged + r.records_damaged, 0);
}

struct dir_case {
    const char *flag;
    const char *mbuild_cache;
    const char *xdg_cache_home;
    const char *home;
    const char *want; /* NULL: an error */
};

static void set_env(const char *name, const char *value)
{
    if (value == NULL)
        unsetenv(name);
    else
        setenv(name, value, 1);
}

Test(cache, default_dir_resolution)
{
    static const struct dir_case cases[] = {
        {"/f", "/m", "/x", "/h", "/f"},
        {NULL, "/m", "/x", "/h", "/m"},
        {NULL, "", "/x", "/h", "/x/mbuild"},
        {NULL, NULL, "/x", "/h", "/x/mbuild"},
        {NULL, NULL, "relative", "/h", "/h/.cache/mbuild"},
        {NULL, NULL, "", "/h", "/h/.cache/mbuild"},
        {NULL, NULL, NULL, "/h", "/h/.cache/mbuild"},
        {NULL, NULL, NULL, NULL, NULL},
        {NULL, NULL, NULL, "", NULL},
        {"", "/m", "/x", "/h", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct dir_case *c = &cases[i];
        struct mb_error err = {0};
        char *dir;

        set_env("MBUILD_CACHE", c->mbuild_cache);
        set_env("XDG_CACHE_HOME", c->xdg_cache_home);
        set_env("HOME", c->home);
        dir = mb_cache_default_dir(c->flag, &err);
        if (c->want == NULL) {
            cr_assert_null(dir, "case %zu gave '%s'", i, dir);
            cr_assert_neq(err.msg[0], '\0', "case %zu", i);
        } else {
            cr_assert_not_null(dir, "case %zu: %s", i, err.msg);
            cr_assert_str_eq(dir, c->want, "case %zu", i);
        }
        free(dir);
    }
}

static char *read_text(const char *dir, const char *name)
{
    char *path = mbt_path(dir, name);
    struct mb_error err = {0};
    char *text;
    size_t len;

    cr_assert_eq(mb_fs_read_file(path, MIB, &text, &len, &err), 0, "%s", err.msg);
    free(path);
    return text;
}

Test(cache, open_creates_the_oci_layout)
{
    static const char *const dirs[] = {"blobs", "blobs/sha256", "keys", "tmp", "plans"};
    char *text;
    struct stat st;

    cr_assert_eq(stat(cache_dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char *path = mbt_path(cache_dir, dirs[i]);

        cr_assert(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "%s", dirs[i]);
        free(path);
    }
    text = read_text(cache_dir, "oci-layout");
    cr_assert_str_eq(text, "{\"imageLayoutVersion\":\"1.0.0\"}\n");
    free(text);
    text = read_text(cache_dir, "index.json");
    cr_assert_str_eq(text, "{\"schemaVersion\":2,\"mediaType\":"
                           "\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}\n");
    free(text);
    cr_assert_eq(count_entries("tmp", ""), 0);
}

Test(cache, open_keeps_an_existing_index)
{
    mbt_write(cache_dir, "index.json", "{\"schemaVersion\":2,\"manifests\":[{}]}\n");
    reopen_cache();
    char *text = read_text(cache_dir, "index.json");

    cr_assert_str_eq(text, "{\"schemaVersion\":2,\"manifests\":[{}]}\n");
    free(text);
}

Test(cache, small_file_round_trip)
{
    char *src = text_file("small", 300000, 1);
    char *dest = mbt_path(work, "out");
    struct mb_error err = {0};
    struct mb_blob_info info = store(src);
    struct mb_digest want = digest_of_file(src);
    char *blob = mb_cache_blob_path(cache, &info.digest);
    struct mb_digest got = digest_of_file(blob);

    cr_assert(mb_digest_equal(&info.diff_digest, &want));
    cr_assert(mb_digest_equal(&info.digest, &got));
    cr_assert_eq(info.diff_size, 300000);
    cr_assert(info.size > 0 && info.size < info.diff_size / 2, "size %lu", info.size);
    cr_assert_not(info.existed);
    cr_assert(mb_cache_has_blob(cache, &info.digest));
    cr_assert_not(mb_cache_has_blob(cache, &info.diff_digest));
    cr_assert_eq(count_entries("tmp", ""), 0);

    cr_assert_eq(mb_cache_extract_layer(cache, &info.digest, &info.diff_digest, dest, &err), 0,
                 "%s", err.msg);
    got = digest_of_file(dest);
    cr_assert(mb_digest_equal(&got, &want));
    assert_clean();
    free(blob);
    free(dest);
    free(src);
}

Test(cache, empty_file_round_trip)
{
    char *src = text_file("empty", 0, 1);
    char *dest = mbt_path(work, "out");
    struct mb_error err = {0};
    struct mb_blob_info info = store(src);
    struct stat st;

    cr_assert_eq(info.diff_size, 0);
    cr_assert_eq(mb_cache_extract_layer(cache, &info.digest, &info.diff_digest, dest, &err), 0,
                 "%s", err.msg);
    cr_assert(stat(dest, &st) == 0 && st.st_size == 0);
    free(dest);
    free(src);
}

/* What a measuring child hands back through shared memory. */
struct child_report {
    int rc;
    char msg[MB_ERROR_MAX];
    struct mb_blob_info info;
    size_t peak_rss;
};

static struct child_report *shared_report(void)
{
    void *p = mmap(NULL, sizeof(struct child_report), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    cr_assert(p != MAP_FAILED);
    memset(p, 0, sizeof(struct child_report));
    return p;
}

static void wait_ok(pid_t pid)
{
    int status;

    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

/* In a child, so that the peak is this operation's alone, not the test's history. */
static void measured_store(const char *src, struct child_report *rep)
{
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        struct mb_error err = {0};

        rep->rc = mb_cache_put_layer_file(cache, src, &rep->info, &err);
        memcpy(rep->msg, err.msg, sizeof(rep->msg));
        rep->peak_rss = mbt_peak_rss();
        _exit(0);
    }
    wait_ok(pid);
    cr_assert_eq(rep->rc, 0, "%s", rep->msg);
}

static void measured_extract(const struct mb_blob_info *info, const char *dest,
                             struct child_report *rep)
{
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        struct mb_error err = {0};

        rep->rc = mb_cache_extract_layer(cache, &info->digest, &info->diff_digest, dest, &err);
        memcpy(rep->msg, err.msg, sizeof(rep->msg));
        rep->peak_rss = mbt_peak_rss();
        _exit(0);
    }
    wait_ok(pid);
    cr_assert_eq(rep->rc, 0, "%s", rep->msg);
}

static void assert_rss_bounded(const char *what, size_t peak)
{
    cr_log_info("%s: peak RSS %.1f MiB", what, (double)peak / MIB);
    if (!UNDER_ASAN)
        cr_assert_lt(peak, RSS_LIMIT, "%s: peak RSS %zu bytes", what, peak);
}

Test(cache, sparse_gib_round_trip_in_bounded_memory, .timeout = 600)
{
    char *src = sparse_file("disk.raw");
    char *dest = mbt_path(work, "out.raw");
    struct child_report *rep = shared_report();
    struct mb_blob_info info;
    struct mb_digest want = digest_of_file(src);
    struct mb_digest got;
    char *blob;
    struct stat st;

    measured_store(src, rep);
    info = rep->info;
    assert_rss_bounded("store", rep->peak_rss);
    blob = mb_cache_blob_path(cache, &info.digest);
    got = digest_of_file(blob);
    cr_assert(mb_digest_equal(&info.diff_digest, &want));
    cr_assert(mb_digest_equal(&info.digest, &got));
    cr_assert_eq(info.diff_size, GIB);
    cr_assert_lt(info.size, 4 * MIB);

    measured_extract(&info, dest, rep);
    assert_rss_bounded("extract", rep->peak_rss);
    got = digest_of_file(dest);
    cr_assert(mb_digest_equal(&got, &want));
    /* The hole stays a hole. */
    cr_assert(stat(dest, &st) == 0 && st.st_size == GIB);
    cr_assert_lt((long)st.st_blocks * 512, 64 * MIB);
    munmap(rep, sizeof(*rep));
    free(blob);
    free(dest);
    free(src);
}

Test(cache, storing_twice_is_a_hit_with_one_blob)
{
    char *src = text_file("twice", 200000, 2);
    struct mb_blob_info first = store(src);
    struct mb_blob_info second = store(src);

    cr_assert_not(first.existed);
    cr_assert(second.existed);
    cr_assert(mb_digest_equal(&first.digest, &second.digest));
    cr_assert(mb_digest_equal(&first.diff_digest, &second.diff_digest));
    cr_assert_eq(first.size, second.size);
    cr_assert_eq(count_entries("blobs/sha256", ""), 1);
    cr_assert_eq(count_entries("tmp", ""), 0);
    free(src);
}

static struct mb_layer_record record_for(const struct mb_blob_info *info, unsigned char key_byte,
                                         int64_t created)
{
    struct mb_layer_record rec = {0};

    memset(rec.key.bytes, key_byte, MB_DIGEST_LEN);
    rec.blob = *info;
    rec.blob.existed = false;
    rec.step = (char *)"run: npm ci";
    rec.created = created;
    rec.last_used = created;
    return rec;
}

static void put_record(const struct mb_layer_record *rec)
{
    struct mb_error err = {0};

    cr_assert_eq(mb_cache_put_layer_record(cache, rec, &err), 0, "%s", err.msg);
}

Test(cache, flipped_byte_is_refused_everywhere)
{
    char *src = text_file("flip", 500000, 3);
    char *dest = mbt_path(work, "out");
    struct mb_blob_info info = store(src);
    struct mb_layer_record rec = record_for(&info, 0x11, 100);
    char name[MB_DIGEST_STR_LEN];
    struct mb_error err = {0};
    struct mb_verify_report report;
    struct problems p;
    char *data;
    size_t len;

    put_record(&rec);
    flip_byte(&info.digest, (off_t)info.size / 2);
    mb_digest_str(&info.digest, name);

    cr_assert_eq(mb_cache_read_blob(cache, &info.digest, 16 * MIB, &data, &len, &err), -1);
    cr_assert_eq(err.code, MB_ERR_INTEGRITY, "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, name), "%s", err.msg);

    /* A stale dest must not survive a failed extraction either. */
    mbt_write(work, "out", "stale");
    mb_error_clear(&err);
    cr_assert_eq(mb_cache_extract_layer(cache, &info.digest, NULL, dest, &err), -1);
    cr_assert_eq(err.code, MB_ERR_INTEGRITY, "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, name), "%s", err.msg);
    cr_assert_not(exists(dest));
    cr_assert_eq(count_entries("..", "out"), 0, "a temp file was left next to dest");

    report = verify(&p);
    cr_assert_eq(report.blobs_checked, 1);
    cr_assert_eq(report.blobs_damaged, 1);
    cr_assert_eq(report.records_checked, 1);
    cr_assert_eq(report.records_damaged, 1);
    cr_assert_eq(p.count, 2, "%s", p.text);
    cr_assert_not_null(strstr(p.text, name + 7), "%s", p.text);
    free(dest);
    free(src);
}

Test(cache, wrong_uncompressed_digest_is_refused)
{
    char *src = text_file("diff", 100000, 4);
    char *dest = mbt_path(work, "out");
    struct mb_blob_info info = store(src);
    struct mb_error err = {0};
    struct mb_digest wrong = info.diff_digest;

    wrong.bytes[0] ^= 1;
    cr_assert_eq(mb_cache_extract_layer(cache, &info.digest, &wrong, dest, &err), -1);
    cr_assert_eq(err.code, MB_ERR_INTEGRITY, "%s", err.msg);
    cr_assert_not(exists(dest));
    free(dest);
    free(src);
}

/* A frame header asking for a 2 GiB window (log 31), then an empty last raw block. */
static const unsigned char huge_window_frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00,
                                                  0xa8, 0x01, 0x00, 0x00};

struct hostile_case {
    const char *name;
    const void *data;
    size_t len;
};

Test(cache, hostile_blobs_fail_cleanly)
{
    char *src = text_file("layer", 400000, 5);
    struct mb_blob_info info = store(src);
    struct mb_error err = {0};
    char *good;
    size_t good_len;

    cr_assert_eq(mb_cache_read_blob(cache, &info.digest, 16 * MIB, &good, &good_len, &err), 0, "%s",
                 err.msg);
    const struct hostile_case cases[] = {
        {"huge window", huge_window_frame, sizeof(huge_window_frame)},
        {"truncated frame", good, good_len / 2},
        {"not zstd", "plain text, not a frame", 23},
        {"empty", "", 0},
        {"trailing garbage", NULL, 0},
    };
    char *with_garbage = malloc(good_len + 4);

    memcpy(with_garbage, good, good_len);
    memcpy(with_garbage + good_len, "junk", 4);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const void *data = cases[i].data ? cases[i].data : with_garbage;
        size_t len = cases[i].data ? cases[i].len : good_len + 4;
        char *dest = mbt_path(work, "out");
        struct mb_digest digest;

        mb_error_clear(&err);
        cr_assert_eq(mb_cache_put_blob(cache, data, len, &digest, &err), 0, "%s", err.msg);
        cr_assert_eq(mb_cache_extract_layer(cache, &digest, NULL, dest, &err), -1, "%s",
                     cases[i].name);
        cr_assert_eq(err.code, MB_ERR_INTEGRITY, "%s: %s", cases[i].name, err.msg);
        cr_assert_not(exists(dest), "%s", cases[i].name);
        free(dest);
    }
    free(with_garbage);
    free(good);
    free(src);
}

Test(cache, small_blobs_round_trip)
{
    static const char manifest[] = "{\"schemaVersion\":2}";
    struct mb_error err = {0};
    struct mb_digest digest, again, want, missing = {{0}};
    char *data;
    size_t len;

    mb_sha256_buf(manifest, strlen(manifest), &want);
    cr_assert_eq(mb_cache_put_blob(cache, manifest, strlen(manifest), &digest, &err), 0, "%s",
                 err.msg);
    cr_assert(mb_digest_equal(&digest, &want));
    cr_assert_eq(mb_cache_put_blob(cache, manifest, strlen(manifest), &again, &err), 0, "%s",
                 err.msg);
    cr_assert(mb_digest_equal(&again, &want));
    cr_assert_eq(count_entries("blobs/sha256", ""), 1);

    cr_assert_eq(mb_cache_read_blob(cache, &digest, 1024, &data, &len, &err), 0, "%s", err.msg);
    cr_assert_eq(len, strlen(manifest));
    cr_assert_str_eq(data, manifest);
    free(data);
    cr_assert_eq(mb_cache_read_blob(cache, &digest, 4, &data, &len, &err), -1);
    cr_assert_eq(mb_cache_read_blob(cache, &missing, 1024, &data, &len, &err), -1);
    cr_assert_not_null(strstr(err.msg, "not in the cache"), "%s", err.msg);
    assert_clean();
}

/* Wait until the writer's temp file shows up in tmp/, then kill it there. */
static void kill_when_temp_appears(pid_t pid)
{
    int status;

    for (int i = 0; i < 60000 && count_entries("tmp", "layer-") == 0; i++)
        usleep(1000);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status), "the store finished before it could be killed");
}

Test(cache, killed_store_leaves_only_a_swept_temp, .timeout = 300)
{
    char *src = sparse_file("big.raw");
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        struct mb_error err = {0};
        struct mb_blob_info info;

        _exit(mb_cache_put_layer_file(cache, src, &info, &err) == 0 ? 0 : 1);
    }
    kill_when_temp_appears(pid);
    cr_assert_eq(count_entries("tmp", "layer-"), 1);
    cr_assert_eq(count_entries("blobs/sha256", ""), 0);

    reopen_cache();
    cr_assert_eq(count_entries("tmp", ""), 0);
    cr_assert_eq(count_entries("blobs/sha256", ""), 0);
    cr_assert_eq(count_entries("keys", ""), 0);
    assert_clean();
    free(src);
}

Test(cache, live_temps_survive_the_sweep)
{
    char *live = mbt_path(cache_dir, "tmp/layer-live");
    char *dead = mbt_path(cache_dir, "tmp/layer-dead");
    int fd;

    mbt_write(cache_dir, "tmp/layer-dead", "partial");
    mbt_write(cache_dir, "tmp/layer-live", "partial");
    fd = open(live, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0);
    cr_assert_eq(flock(fd, LOCK_EX), 0);
    reopen_cache();
    cr_assert_not(exists(dead));
    cr_assert(exists(live));
    close(fd);
    reopen_cache();
    cr_assert_not(exists(live));
    free(live);
    free(dead);
}

Test(cache, stale_record_temps_are_swept)
{
    static const char stale_name[] =
        "keys/"
        "0000000000000000000000000000000000000000000000000000000000000000.json.tmp-AbCdEf";
    static const char fresh_name[] =
        "keys/"
        "1111111111111111111111111111111111111111111111111111111111111111.json.tmp-AbCdEf";
    char *stale = mbt_path(cache_dir, stale_name);
    char *fresh = mbt_path(cache_dir, fresh_name);
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};

    mbt_write(cache_dir, stale_name, "{");
    mbt_write(cache_dir, fresh_name, "{");
    cr_assert_eq(utimensat(AT_FDCWD, stale, old, 0), 0);
    reopen_cache();
    cr_assert_not(exists(stale));
    cr_assert(exists(fresh));
    assert_clean();
    free(stale);
    free(fresh);
}

enum { WRITERS = 4 };

/* Exit status of a concurrent writer: stored it, found it stored, or failed. */
enum { STORED = 10, EXISTED = 11, FAILED = 12 };

static void concurrent_writer(const char *src, int start_fd)
{
    struct mb_error err = {0};
    struct mb_blob_info info;
    struct mb_cache *own;
    char go;

    /* Everyone starts at once: the parent closes the pipe. */
    if (read(start_fd, &go, 1) < 0 || mb_cache_open(cache_dir, &own, &err) < 0)
        _exit(FAILED);
    if (mb_cache_put_layer_file(own, src, &info, &err) < 0)
        _exit(FAILED);
    mb_cache_close(own);
    _exit(info.existed ? EXISTED : STORED);
}

Test(cache, concurrent_stores_of_one_content, .timeout = 300)
{
    char *src = text_file("shared", 24 * MIB, 6);
    int start[2];
    pid_t pids[WRITERS];
    int stored = 0;
    int existed = 0;

    cr_assert_eq(pipe2(start, O_CLOEXEC), 0);
    for (int i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        cr_assert(pids[i] >= 0);
        if (pids[i] == 0) {
            close(start[1]);
            concurrent_writer(src, start[0]);
        }
    }
    close(start[0]);
    close(start[1]);
    for (int i = 0; i < WRITERS; i++) {
        int status;

        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status), "writer %d status %d", i, status);
        stored += WEXITSTATUS(status) == STORED;
        existed += WEXITSTATUS(status) == EXISTED;
    }
    cr_assert_eq(stored, 1);
    cr_assert_eq(existed, WRITERS - 1);
    cr_assert_eq(count_entries("blobs/sha256", ""), 1);
    cr_assert_eq(count_entries("tmp", ""), 0);
    assert_clean();
    free(src);
}

static struct mb_blob_info stored_layer(unsigned seed)
{
    char name[32];
    char *src;
    struct mb_blob_info info;

    snprintf(name, sizeof(name), "layer-%u", seed);
    src = text_file(name, 50000, seed);
    info = store(src);
    free(src);
    return info;
}

static void assert_records_equal(const struct mb_layer_record *a, const struct mb_layer_record *b)
{
    cr_assert(mb_digest_equal(&a->key, &b->key));
    cr_assert_eq(a->has_parent, b->has_parent);
    if (a->has_parent)
        cr_assert(mb_digest_equal(&a->parent_key, &b->parent_key));
    cr_assert(mb_digest_equal(&a->blob.digest, &b->blob.digest));
    cr_assert(mb_digest_equal(&a->blob.diff_digest, &b->blob.diff_digest));
    cr_assert_eq(a->blob.size, b->blob.size);
    cr_assert_eq(a->blob.diff_size, b->blob.diff_size);
    cr_assert_str_eq(a->step, b->step);
    cr_assert_eq(a->created, b->created);
    cr_assert_eq(a->last_used, b->last_used);
}

Test(cache, key_records_round_trip)
{
    struct mb_blob_info info = stored_layer(1);
    struct mb_layer_record base = record_for(&info, 0x21, 1700000000);
    struct mb_layer_record child = record_for(&info, 0x22, 1700000001);
    struct mb_layer_record got;
    struct mb_digest unknown;
    struct mb_error err = {0};

    child.has_parent = true;
    child.parent_key = base.key;
    child.step = (char *)"copy: [package.json] \"quoted\" \xc3\xa9";
    put_record(&base);
    put_record(&child);

    cr_assert_eq(mb_cache_get_layer_record(cache, &base.key, &got, &err), 1, "%s", err.msg);
    assert_records_equal(&got, &base);
    mb_layer_record_clear(&got);
    cr_assert_eq(mb_cache_get_layer_record(cache, &child.key, &got, &err), 1, "%s", err.msg);
    assert_records_equal(&got, &child);
    mb_layer_record_clear(&got);

    memset(unknown.bytes, 0x23, MB_DIGEST_LEN);
    cr_assert_eq(mb_cache_get_layer_record(cache, &unknown, &got, &err), 0);
    assert_clean();
}

Test(cache, a_record_needs_its_blob)
{
    struct mb_blob_info info = stored_layer(1);
    struct mb_layer_record rec = record_for(&info, 0x31, 1);
    struct mb_error err = {0};

    rec.blob.digest.bytes[0] ^= 1;
    cr_assert_eq(mb_cache_put_layer_record(cache, &rec, &err), -1);
    cr_assert_eq(count_entries("keys", ""), 0);
}

Test(cache, touch_updates_last_used)
{
    struct mb_blob_info info = stored_layer(1);
    struct mb_layer_record rec = record_for(&info, 0x41, 1000);
    struct mb_layer_record got;
    struct mb_error err = {0};
    time_t before = time(NULL);
    struct mb_digest unknown;

    put_record(&rec);
    cr_assert_eq(mb_cache_touch_layer(cache, &rec.key, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_cache_get_layer_record(cache, &rec.key, &got, &err), 1, "%s", err.msg);
    cr_assert_eq(got.created, 1000);
    cr_assert_geq(got.last_used, before);
    cr_assert_leq(got.last_used, time(NULL));
    mb_layer_record_clear(&got);

    memset(unknown.bytes, 0x42, MB_DIGEST_LEN);
    cr_assert_eq(mb_cache_touch_layer(cache, &unknown, &err), -1);
}

/* Replace "@K" with the key's digest and "@B" with the blob's, in a record template. */
static char *fill_template(const char *tmpl, const char *key, const char *blob)
{
    char *out = malloc(strlen(tmpl) * 2 + 1024);
    char *o = out;

    for (const char *t = tmpl; *t != '\0'; t++) {
        const char *sub = NULL;

        if (t[0] == '@' && t[1] == 'K')
            sub = key;
        else if (t[0] == '@' && t[1] == 'B')
            sub = blob;
        if (sub == NULL) {
            *o++ = *t;
            continue;
        }
        o = stpcpy(o, sub);
        t++;
    }
    *o = '\0';
    return out;
}

#define GOOD_FIELDS                                                                                \
    "\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","           \
    "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6"

Test(cache, damaged_records_are_reported_not_trusted)
{
    static const char *const damaged[] = {
        "",
        "not json",
        "[]",
        "{" GOOD_FIELDS,
        "{" GOOD_FIELDS ",\"extra\":1}",
        "{" GOOD_FIELDS ",\"key\":\"@K\"}",
        "{\"version\":2,\"key\":\"@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{" GOOD_FIELDS ",\"parent_key\":null}",
        "{" GOOD_FIELDS ",\"parent_key\":\"sha256:abc\"}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":\"10\",\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":-1,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":1.5,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":7,\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":99999999999999999999,"
        "\"diff_digest\":\"@B\",\"diff_size\":20,\"step\":\"\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"SHA256:@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@Bx\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@B\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":5,\"last_used\":6}",
        "{\"version\":1,\"key\":\"@K\",\"digest\":\"@B\",\"size\":10,\"diff_digest\":\"@B\","
        "\"diff_size\":20,\"step\":\"run: x\",\"created\":-5,\"last_used\":6}",
    };
    struct mb_blob_info info = stored_layer(1);
    struct mb_digest key;
    char key_str[MB_DIGEST_STR_LEN], blob_str[MB_DIGEST_STR_LEN], name[128];
    struct mb_layer_record rec;
    struct mb_error err = {0};

    memset(key.bytes, 0x51, MB_DIGEST_LEN);
    mb_digest_str(&key, key_str);
    mb_digest_str(&info.digest, blob_str);
    snprintf(name, sizeof(name), "keys/%s.json", key_str + 7);

    /* The template itself is good, so each damaged one fails for its own reason. */
    char *good = fill_template("{" GOOD_FIELDS "}", key_str, blob_str);
    mbt_write(cache_dir, name, good);
    cr_assert_eq(mb_cache_get_layer_record(cache, &key, &rec, &err), 1, "%s", err.msg);
    mb_layer_record_clear(&rec);
    free(good);

    for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
        char *text = fill_template(damaged[i], key_str, blob_str);
        struct mb_layer_record *recs;
        struct mb_verify_report report;
        struct problems p;
        size_t count;

        mbt_write(cache_dir, name, text);
        mb_error_clear(&err);
        cr_assert_eq(mb_cache_get_layer_record(cache, &key, &rec, &err), -1, "case %zu: %s", i,
                     text);
        cr_assert_eq(err.code, MB_ERR_INTEGRITY, "case %zu: %s", i, err.msg);
        cr_assert_eq(mb_cache_list_layers(cache, &recs, &count, &err), -1, "case %zu", i);
        cr_assert_eq(err.code, MB_ERR_INTEGRITY, "case %zu: %s", i, err.msg);
        report = verify(&p);
        cr_assert_eq(report.records_checked, 1, "case %zu", i);
        cr_assert_eq(report.records_damaged, 1, "case %zu", i);
        cr_assert_eq(p.count, 1, "case %zu: %s", i, p.text);
        cr_assert_not_null(strstr(p.text, key_str + 7), "case %zu: %s", i, p.text);
        free(text);
    }
}

Test(cache, list_sorts_by_created_then_key)
{
    struct mb_blob_info info = stored_layer(1);
    /* key byte, created: listed as 0x01@10, 0x02@20, 0x03@30, 0x04@30 */
    static const struct {
        unsigned char key;
        int64_t created;
    } order[] = {{0x04, 30}, {0x01, 10}, {0x03, 30}, {0x02, 20}};
    static const unsigned char want[] = {0x01, 0x02, 0x03, 0x04};
    struct mb_layer_record *recs;
    struct mb_error err = {0};
    size_t count;

    cr_assert_eq(mb_cache_list_layers(cache, &recs, &count, &err), 0, "%s", err.msg);
    cr_assert_eq(count, 0);
    mb_layer_records_free(recs, count);
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        struct mb_layer_record rec = record_for(&info, order[i].key, order[i].created);

        put_record(&rec);
    }
    cr_assert_eq(mb_cache_list_layers(cache, &recs, &count, &err), 0, "%s", err.msg);
    cr_assert_eq(count, 4);
    for (size_t i = 0; i < count; i++) {
        cr_assert_eq(recs[i].key.bytes[0], want[i], "position %zu", i);
        cr_assert_str_eq(recs[i].step, "run: npm ci");
    }
    mb_layer_records_free(recs, count);
}

Test(cache, verify_reports_strays_and_missing_blobs)
{
    struct mb_blob_info info = stored_layer(1);
    struct mb_blob_info gone = stored_layer(2);
    struct mb_layer_record rec = record_for(&gone, 0x61, 1);
    char *blob = mb_cache_blob_path(cache, &gone.digest);
    char upper[MB_DIGEST_HEX_LEN + 1];
    char stray[128];
    struct mb_verify_report report;
    struct problems p;

    put_record(&rec);
    cr_assert_eq(unlink(blob), 0);
    mb_digest_hex(&info.digest, upper);
    for (char *c = upper; *c != '\0'; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    snprintf(stray, sizeof(stray), "blobs/sha256/%s", upper);
    mbt_write(cache_dir, stray, "x");
    mbt_write(cache_dir, "blobs/sha256/not-a-digest", "x");
    mbt_write(cache_dir, "keys/junk.txt", "x");

    report = verify(&p);
    cr_assert_eq(report.blobs_checked, 3, "%s", p.text);
    cr_assert_eq(report.blobs_damaged, 2, "%s", p.text);
    cr_assert_eq(report.records_checked, 2, "%s", p.text);
    cr_assert_eq(report.records_damaged, 2, "%s", p.text);
    cr_assert_eq(p.count, 4, "%s", p.text);
    cr_assert_not_null(strstr(p.text, "missing"), "%s", p.text);
    cr_assert_not_null(strstr(p.text, "not-a-digest"), "%s", p.text);
    cr_assert_not_null(strstr(p.text, "junk.txt"), "%s", p.text);
    free(blob);
}
