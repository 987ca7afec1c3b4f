/*
 * Building the appliance: pick files out of Debian's kernel and
 * busybox-static packages, unpack the kernel, write the initramfs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "mbuild/appliance.h"
#include "mbuild/debpkg.h"
#include "mbuild/fsutil.h"

#define APPLIANCE_VERSION "mbuild appliance v2"

extern const unsigned char mb_appliance_init[];
extern const unsigned long mb_appliance_init_len;
extern const unsigned char mb_appliance_udhcpc[];
extern const unsigned long mb_appliance_udhcpc_len;

/*
 * The kernel modules the appliance loads, in load order: each one's
 * dependencies come before it (checked against the module's own
 * depends= list when the appliance is made). ext4 also needs
 * crc32c_generic, which its depends= does not name.
 */
static const char *const modules[] = {
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",
    "ext4",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_balloon",
    "qemu_fw_cfg",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "fuse",
    "virtiofs",
};

#define MODULE_COUNT (sizeof(modules) / sizeof(modules[0]))

struct blob {
    unsigned char *data;
    size_t len;
};

/* What the appliance is made of, gathered from the two packages. */
struct parts {
    struct blob vmlinuz;
    struct blob busybox;
    struct blob module[MODULE_COUNT];
};

static void parts_free(struct parts *p)
{
    free(p->vmlinuz.data);
    free(p->busybox.data);
    for (size_t i = 0; i < MODULE_COUNT; i++)
        free(p->module[i].data);
}

static int read_entry(struct archive *a, struct archive_entry *e, struct blob *out,
                      struct mb_error *err)
{
    la_int64_t size = archive_entry_size(e);

    if (size <= 0 || size > 256 * 1024 * 1024)
        return mb_error_set(err, MB_ERR_GENERAL, "'%s' has an unlikely size",
                            archive_entry_pathname(e));
    free(out->data);
    out->data = malloc((size_t)size);
    if (out->data == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    out->len = (size_t)size;
    if (archive_read_data(a, out->data, out->len) != (la_ssize_t)out->len)
        return mb_error_set(err, MB_ERR_GENERAL, "read '%s': %s", archive_entry_pathname(e),
                            archive_error_string(a));
    return 0;
}

/* The index in `modules` of a path ending in "/NAME.ko", or -1. */
static int module_index(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len;

    if (slash == NULL || strstr(path, "/lib/modules/") == NULL)
        return -1;
    len = strlen(slash + 1);
    if (len < 4 || strcmp(slash + 1 + len - 3, ".ko") != 0)
        return -1;
    for (size_t i = 0; i < MODULE_COUNT; i++)
        if (strlen(modules[i]) == len - 3 && strncmp(slash + 1, modules[i], len - 3) == 0)
            return (int)i;
    return -1;
}

static int take_kernel_file(void *ctx, struct archive *a, struct archive_entry *e,
                            struct mb_error *err)
{
    struct parts *p = ctx;
    const char *path = archive_entry_pathname(e);
    int m;

    if (archive_entry_filetype(e) != AE_IFREG)
        return 0;
    if (strncmp(path, "./boot/vmlinuz-", 15) == 0)
        return read_entry(a, e, &p->vmlinuz, err);
    m = module_index(path);
    return m < 0 ? 0 : read_entry(a, e, &p->module[m], err);
}

static int take_busybox(void *ctx, struct archive *a, struct archive_entry *e, struct mb_error *err)
{
    struct parts *p = ctx;

    if (strcmp(archive_entry_pathname(e), "./bin/busybox") != 0)
        return 0;
    return read_entry(a, e, &p->busybox, err) < 0 ? -1 : 1;
}

/* The module's depends= list from its .modinfo section, or "" when it has none. */
static const char *module_depends(const struct blob *b)
{
    static const char tag[] = "depends=";

    for (size_t i = 0; i + sizeof(tag) < b->len; i++)
        if (memcmp(b->data + i, tag, sizeof(tag) - 1) == 0 &&
            memchr(b->data + i, '\0', b->len - i) != NULL)
            return (const char *)b->data + i + sizeof(tag) - 1;
    return "";
}

static bool loaded_before(const char *name, size_t len, size_t index)
{
    for (size_t i = 0; i < index; i++)
        if (strlen(modules[i]) == len && strncmp(modules[i], name, len) == 0)
            return true;
    return false;
}

/* Every module found, and each one's dependencies earlier in the load order. */
static int check_modules(const struct parts *p, struct mb_error *err)
{
    for (size_t i = 0; i < MODULE_COUNT; i++) {
        const char *dep;

        if (p->module[i].data == NULL)
            return mb_error_set(err, MB_ERR_GENERAL, "the kernel package has no module '%s'",
                                modules[i]);
        dep = module_depends(&p->module[i]);
        while (*dep != '\0') {
            size_t len = strcspn(dep, ",");

            if (!loaded_before(dep, len, i))
                return mb_error_set(err, MB_ERR_GENERAL,
                                    "module '%s' needs '%.*s', which is not loaded before it",
                                    modules[i], (int)len, dep);
            dep += len + (dep[len] == ',');
        }
    }
    return 0;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Where bzImage keeps its compressed kernel: the setup header's
 * payload_offset and payload_length (Linux boot protocol 2.08+), relative
 * to the protected-mode code after the (setup_sects + 1) * 512 byte setup.
 * The payload is the XZ stream followed by the uncompressed size (4 bytes,
 * little-endian), which *size gets.
 */
static int kernel_payload(const struct blob *vmlinuz, const unsigned char **start, size_t *len,
                          size_t *size, struct mb_error *err)
{
    static const unsigned char xz_magic[] = {0xfd, '7', 'z', 'X', 'Z', 0x00};
    const unsigned char *d = vmlinuz->data;
    uint32_t offset, length;
    size_t setup, begin;

    if (vmlinuz->len < 0x250 || memcmp(d + 0x202, "HdrS", 4) != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "the kernel image is not a bzImage");
    setup = ((size_t)(d[0x1f1] ? d[0x1f1] : 4) + 1) * 512;
    offset = le32(d + 0x248);
    length = le32(d + 0x24c);
    begin = setup + offset;
    if (begin > vmlinuz->len || length > vmlinuz->len - begin || length < sizeof(xz_magic) + 4 ||
        memcmp(d + begin, xz_magic, sizeof(xz_magic)) != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "the kernel image holds no XZ payload");
    *start = d + begin;
    *len = length - 4;
    *size = le32(d + begin + length - 4);
    return 0;
}

/* Unpack bzImage's XZ payload with libarchive into `dest`: an ELF that boots with PVH. */
static int unpack_kernel(const struct blob *vmlinuz, const char *dest, struct mb_error *err)
{
    struct archive *a;
    struct archive_entry *e;
    const unsigned char *start = NULL;
    char buf[64 * 1024];
    size_t len = 0, size = 0, total = 0;
    la_ssize_t n = 0;
    FILE *out;
    int rc;

    if (kernel_payload(vmlinuz, &start, &len, &size, err) < 0)
        return -1;
    a = archive_read_new();
    archive_read_support_filter_xz(a);
    archive_read_support_format_raw(a);
    out = fopen(dest, "we");
    rc = out == NULL ? mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", dest) : 0;
    if (rc == 0 && (archive_read_open_memory(a, start, len) != ARCHIVE_OK ||
                    archive_read_next_header(a, &e) != ARCHIVE_OK))
        rc = mb_error_set(err, MB_ERR_GENERAL, "unpack the kernel: %s", archive_error_string(a));
    while (rc == 0 && (n = archive_read_data(a, buf, sizeof(buf))) > 0) {
        if (fwrite(buf, 1, (size_t)n, out) != (size_t)n)
            rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "write '%s'", dest);
        total += (size_t)n;
    }
    if (rc == 0 && n < 0)
        rc = mb_error_set(err, MB_ERR_GENERAL, "unpack the kernel: %s", archive_error_string(a));
    if (out != NULL && fclose(out) != 0 && rc == 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "write '%s'", dest);
    archive_read_free(a);
    if (rc == 0 && total != size)
        rc = mb_error_set(err, MB_ERR_GENERAL, "unpack the kernel: %zu bytes, expected %zu", total,
                          size);
    return rc;
}

static int cpio_add(struct archive *a, const char *path, unsigned mode, const void *data,
                    size_t len, struct mb_error *err)
{
    struct archive_entry *e = archive_entry_new();
    int rc = 0;

    archive_entry_set_pathname(e, path);
    archive_entry_set_mode(e, mode);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_nlink(e, (mode & AE_IFMT) == AE_IFDIR ? 2 : 1);
    if ((mode & AE_IFMT) == AE_IFCHR)
        archive_entry_set_rdev(e, makedev(5, 1)); /* the only device: /dev/console */
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        (len > 0 && archive_write_data(a, data, len) != (la_ssize_t)len))
        rc = mb_error_set(err, MB_ERR_GENERAL, "write initramfs entry '%s': %s", path,
                          archive_error_string(a));
    archive_entry_free(e);
    return rc;
}

static int write_initramfs(const struct parts *p, const char *dest, struct mb_error *err)
{
    static const char *const dirs[] = {"bin",  "dev",     "etc",      "lib",   "lib/modules",
                                       "proc", "sys",     "tmp",      "layer", "payload",
                                       "usr",  "usr/bin", "usr/sbin", "sbin"};
    struct archive *a = archive_write_new();
    char order[1024] = "";
    char path[128];
    int rc = 0;

    archive_write_set_format_cpio_newc(a);
    if (archive_write_open_filename(a, dest) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "write '%s': %s", dest, archive_error_string(a));
    for (size_t i = 0; rc == 0 && i < sizeof(dirs) / sizeof(dirs[0]); i++)
        rc = cpio_add(a, dirs[i], AE_IFDIR | 0755, NULL, 0, err);
    if (rc == 0)
        rc = cpio_add(a, "dev/console", AE_IFCHR | 0600, NULL, 0, err);
    if (rc == 0)
        rc = cpio_add(a, "init", AE_IFREG | 0755, mb_appliance_init, mb_appliance_init_len, err);
    if (rc == 0)
        rc = cpio_add(a, "etc/udhcpc.script", AE_IFREG | 0755, mb_appliance_udhcpc,
                      mb_appliance_udhcpc_len, err);
    if (rc == 0)
        rc = cpio_add(a, "bin/busybox", AE_IFREG | 0755, p->busybox.data, p->busybox.len, err);
    for (size_t i = 0; rc == 0 && i < MODULE_COUNT; i++) {
        snprintf(path, sizeof(path), "lib/modules/%s.ko", modules[i]);
        rc = cpio_add(a, path, AE_IFREG | 0644, p->module[i].data, p->module[i].len, err);
        strcat(order, modules[i]);
        strcat(order, "\n");
    }
    if (rc == 0)
        rc = cpio_add(a, "lib/modules/order", AE_IFREG | 0644, order, strlen(order), err);
    if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
        rc = mb_error_set(err, MB_ERR_GENERAL, "write '%s': %s", dest, archive_error_string(a));
    archive_write_free(a);
    return rc;
}

static void compute_key(const struct mb_deb *kernel, const struct mb_deb *busybox,
                        struct mb_digest *key)
{
    struct mb_error err;
    struct mb_sha256 *h = mb_sha256_new(&err);

    if (h == NULL)
        abort(); /* OpenSSL cannot make a digest context: nothing sane to do */
    mb_sha256_update(h, APPLIANCE_VERSION, sizeof(APPLIANCE_VERSION));
    mb_sha256_update(h, kernel->sha256.bytes, MB_DIGEST_LEN);
    mb_sha256_update(h, busybox->sha256.bytes, MB_DIGEST_LEN);
    mb_sha256_update(h, mb_appliance_init, mb_appliance_init_len + 1);
    mb_sha256_update(h, mb_appliance_udhcpc, mb_appliance_udhcpc_len + 1);
    for (size_t i = 0; i < MODULE_COUNT; i++)
        mb_sha256_update(h, modules[i], strlen(modules[i]) + 1);
    mb_sha256_final(h, key);
    mb_sha256_free(h);
}

static int set_paths(struct mb_appliance *app, const char *cache_dir, struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1];

    mb_digest_hex(&app->key, hex);
    if (asprintf(&app->dir, "%s/appliance/%s", cache_dir, hex) < 0 ||
        asprintf(&app->kernel, "%s/vmlinux", app->dir) < 0 ||
        asprintf(&app->initrd, "%s/initramfs.cpio", app->dir) < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return 0;
}

/* Gather the parts and write vmlinux and initramfs.cpio into `stage`. */
static int build_into(const char *cache_dir, const struct mb_deb *kernel,
                      const struct mb_deb *busybox, const char *stage,
                      const struct mb_progress *progress, struct mb_error *err)
{
    struct parts parts = {0};
    char *kernel_deb = NULL, *busybox_deb = NULL, *vmlinux = NULL, *initrd = NULL;
    int rc;

    mb_progress_say(progress, "appliance: fetching %s %s and %s %s", kernel->name, kernel->version,
                    busybox->name, busybox->version);
    rc = mb_deb_fetch(cache_dir, kernel, &kernel_deb, err);
    if (rc == 0)
        rc = mb_deb_fetch(cache_dir, busybox, &busybox_deb, err);
    if (rc == 0) {
        mb_progress_say(progress, "appliance: unpacking the kernel and modules");
        rc = mb_deb_each_file(kernel_deb, take_kernel_file, &parts, err);
    }
    if (rc == 0)
        rc = mb_deb_each_file(busybox_deb, take_busybox, &parts, err);
    if (rc == 0 && (parts.vmlinuz.data == NULL || parts.busybox.data == NULL))
        rc = mb_error_set(err, MB_ERR_GENERAL, "no kernel image or busybox in the packages");
    if (rc == 0)
        rc = check_modules(&parts, err);
    vmlinux = mb_path_join(stage, "vmlinux");
    initrd = mb_path_join(stage, "initramfs.cpio");
    if (rc == 0)
        rc = unpack_kernel(&parts.vmlinuz, vmlinux, err);
    if (rc == 0)
        rc = write_initramfs(&parts, initrd, err);
    parts_free(&parts);
    free(kernel_deb);
    free(busybox_deb);
    free(vmlinux);
    free(initrd);
    return rc;
}

static void remove_stage(const char *stage)
{
    char *path;

    for (int i = 0; i < 2; i++) {
        path = mb_path_join(stage, i == 0 ? "vmlinux" : "initramfs.cpio");
        if (path != NULL)
            unlink(path);
        free(path);
    }
    rmdir(stage);
}

/*
 * What apt offers changes only when its package lists do: the state of
 * /var/lib/apt/lists names the appliance last resolved from them, which
 * saves the three `apt-cache show` runs (about 1.4 s) on every build.
 */
static void apt_lists_state(char *out, size_t size)
{
    struct mb_deb none = {0};
    char ours[MB_DIGEST_HEX_LEN + 1];
    struct mb_digest d;
    struct stat st;

    /* What the appliance is made of besides the packages: init, scripts, modules. */
    compute_key(&none, &none, &d);
    mb_digest_hex(&d, ours);
    if (stat("/var/lib/apt/lists", &st) < 0)
        memset(&st, 0, sizeof(st));
    snprintf(out, size, "%s %lld.%09ld %llu", ours, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
}

static char *remembered_path(const char *cache_dir)
{
    char *path;

    return asprintf(&path, "%s/appliance/resolved", cache_dir) < 0 ? NULL : path;
}

/* 1 and *out filled when the remembered appliance still stands and exists. */
static int remembered(const char *cache_dir, struct mb_appliance *out)
{
    char *path = remembered_path(cache_dir), *text = NULL, state[256];
    struct mb_error err;
    size_t len;
    int found = 0;

    apt_lists_state(state, sizeof(state));
    if (path != NULL && mb_fs_read_file(path, 4096, &text, &len, &err) == 0 &&
        len == strlen(state) + 1 + MB_DIGEST_HEX_LEN && strncmp(text, state, strlen(state)) == 0 &&
        text[strlen(state)] == ' ' &&
        mb_digest_parse_hex(text + strlen(state) + 1, &out->key, &err) == 0 &&
        set_paths(out, cache_dir, &err) == 0)
        found = access(out->kernel, R_OK) == 0 && access(out->initrd, R_OK) == 0;
    if (!found)
        mb_appliance_clear(out);
    free(text);
    free(path);
    return found;
}

static void remember(const char *cache_dir, const struct mb_appliance *app)
{
    char *path = remembered_path(cache_dir), state[256], hex[MB_DIGEST_HEX_LEN + 1];
    char line[512];
    struct mb_error err;

    apt_lists_state(state, sizeof(state));
    mb_digest_hex(&app->key, hex);
    snprintf(line, sizeof(line), "%s %s", state, hex);
    if (path != NULL)
        mb_fs_write_atomic(path, line, strlen(line), &err); /* only a shortcut: best effort */
    free(path);
}

int mb_appliance_ensure(const char *cache_dir, const struct mb_progress *progress,
                        struct mb_appliance *out, struct mb_error *err)
{
    struct mb_deb kernel, busybox;
    char *stage = NULL, *parent = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if (remembered(cache_dir, out))
        return 0;
    if (mb_deb_resolve("linux-image-amd64", "linux-image-", &kernel, err) < 0 ||
        mb_deb_resolve("busybox-static", NULL, &busybox, err) < 0)
        return mb_error_prefix(err, "build appliance");
    compute_key(&kernel, &busybox, &out->key);
    if (set_paths(out, cache_dir, err) < 0)
        return -1;
    if (access(out->kernel, R_OK) == 0 && access(out->initrd, R_OK) == 0) {
        remember(cache_dir, out);
        return 0;
    }
    parent = mb_path_join(cache_dir, "appliance");
    if (parent == NULL || mb_fs_mkdir_p(parent, 0755, err) < 0 ||
        asprintf(&stage, "%s/tmp/appliance-XXXXXX", cache_dir) < 0 || mkdtemp(stage) == NULL) {
        free(parent);
        free(stage);
        mb_appliance_clear(out);
        return err->msg[0] ? -1 : mb_error_errno(err, MB_ERR_GENERAL, errno, "make a stage");
    }
    rc = build_into(cache_dir, &kernel, &busybox, stage, progress, err);
    /* Another process may have published the same appliance meanwhile: theirs is as good. */
    if (rc == 0 && rename(stage, out->dir) < 0 && errno != EEXIST && errno != ENOTEMPTY)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", out->dir);
    if (rc == 0)
        rc = mb_fs_fsync_dir(parent, err);
    remove_stage(stage);
    free(stage);
    free(parent);
    if (rc < 0) {
        mb_appliance_clear(out);
        return mb_error_prefix(err, "build appliance");
    }
    remember(cache_dir, out);
    return 0;
}

void mb_appliance_clear(struct mb_appliance *app)
{
    free(app->dir);
    free(app->kernel);
    free(app->initrd);
    memset(app, 0, sizeof(*app));
}
