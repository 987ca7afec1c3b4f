/*
 * Running a step VM: build QEMU's command line, then read the console
 * line by line until QEMU exits, the step's time is up, or the user
 * cancels. The status line carries a nonce from the kernel command line,
 * so ordinary output cannot be mistaken for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/clock.h"
#include "mbuild/cancel.h"
#include "mbuild/fsutil.h"
#include "mbuild/net.h"
#include "mbuild/spawn.h"
#include "mbuild/stepvm.h"
#include "vm_args.h"

#define MARKER       "MBUILD-STEP-EXIT "
#define LINE_MAX_LEN 4096
#define POLL_MS      200

/* What the console reader keeps between lines. */
struct console {
    const struct mb_step_vm *vm;
    char nonce[33];
    FILE *log;
    char line[LINE_MAX_LEN];
    size_t len;
    char *tail[MB_STEP_TAIL_LINES];
    size_t tail_next;
    int exit_status;
};

static int make_nonce(char out[33], struct mb_error *err)
{
    unsigned char raw[16];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "getrandom");
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/*
 * The host's TSC rate in kHz, for the guest's tsc_early_khz=: microvm has
 * no PIT or HPET to calibrate against and hangs without it. Under TCG the
 * guest's TSC ticks at the host's rate.
 */
unsigned long mb_vm_tsc_khz(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    char line[256];
    double mhz = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "cpu MHz : %lf", &mhz) == 1)
            break;
    fclose(f);
    return (unsigned long)(mhz * 1000);
}

/* A kernel message ("[    1.234] ...") rather than the step's own output. */
static bool kernel_line(const char *line)
{
    size_t digits = strspn(line + 1, " 0123456789.");

    return line[0] == '[' && digits > 0 && line[1 + digits] == ']';
}

static void keep_tail(struct console *c, const char *line)
{
    free(c->tail[c->tail_next]);
    c->tail[c->tail_next] = strdup(line);
    c->tail_next = (c->tail_next + 1) % MB_STEP_TAIL_LINES;
}

/* The status line, where a step that printed no final newline may have left it mid-line. */
static bool status_line(struct console *c, int *status)
{
    char *at = strstr(c->line, MARKER);

    return at != NULL && strncmp(at + strlen(MARKER), c->nonce, 32) == 0 &&
           sscanf(at + strlen(MARKER) + 32, " %d", status) == 1;
}

static void take_line(struct console *c)
{
    size_t len;
    int status;

    c->line[c->len] = '\0';
    c->len = 0;
    len = strlen(c->line);
    if (len > 0 && c->line[len - 1] == '\r')
        c->line[len - 1] = '\0';
    if (c->log != NULL)
        fprintf(c->log, "%s\n", c->line);
    if (status_line(c, &status)) {
        c->exit_status = status;
        *strstr(c->line, MARKER) = '\0';
        if (c->line[0] == '\0')
            return;
    }
    if (kernel_line(c->line))
        return;
    keep_tail(c, c->line);
    if (c->vm->on_output != NULL)
        c->vm->on_output(c->vm->ctx, c->line);
}

static void take_bytes(struct console *c, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || c->len == LINE_MAX_LEN - 1)
            take_line(c);
        if (buf[i] != '\n')
            c->line[c->len++] = buf[i];
    }
}

/* The tail, oldest line first, as one string. */
static char *join_tail(struct console *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return NULL;
    for (size_t i = 0; i < MB_STEP_TAIL_LINES; i++) {
        char *line = c->tail[(c->tail_next + i) % MB_STEP_TAIL_LINES];

        if (line != NULL)
            fprintf(f, "%s\n", line);
        free(line);
        c->tail[(c->tail_next + i) % MB_STEP_TAIL_LINES] = NULL;
    }
    fclose(f);
    return text;
}

enum read_end { READ_EOF, READ_TIMEOUT, READ_CANCELLED };

static enum read_end read_console(struct console *c, int fd)
{
    long long deadline = mb_clock_ms() + (long long)c->vm->timeout_seconds * 1000;
    char buf[8192];

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (mb_cancel_requested())
            return READ_CANCELLED;
        if (mb_clock_ms() >= deadline)
            return READ_TIMEOUT;
        if (poll(&p, 1, POLL_MS) <= 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return READ_EOF;
        if (n > 0)
            take_bytes(c, buf, (size_t)n);
    }
}

/* The disks: the layer and the payload; none for the KVM probe, which boots only. */
static void disk_args(const struct mb_step_vm *vm, struct vm_args *a)
{
    if (vm->disk == NULL)
        return;
    vm_args_add(a, "-drive");
    vm_args_add(a, "if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,file=%s", vm->disk);
    vm_args_add(a, "-device");
    vm_args_add(a, "virtio-blk-device,drive=root");
    vm_args_add(a, "-drive");
    vm_args_add(a, "if=none,id=payload,format=raw,readonly=on,file=%s", vm->payload);
    vm_args_add(a, "-device");
    vm_args_add(a, "virtio-blk-device,drive=payload");
}

static void build_args(const struct mb_step_vm *vm, bool kvm, const char *nonce,
                       const struct mb_net *net, struct vm_args *a)
{
    char extra[128];

    snprintf(extra, sizeof(extra), "reboot=t mb.nonce=%s%s", nonce, net != NULL ? " mb.net=1" : "");
    vm_args_boot(a, vm->appliance, kvm, vm->memory, vm->cpus);
    vm_args_append(a, extra);
    disk_args(vm, a);
    if (net != NULL) {
        vm_args_add(a, "-netdev");
        vm_args_add(a, "stream,id=net,server=off,addr.type=fd,addr.str=%d", net->qemu_fd);
        vm_args_add(a, "-device");
        vm_args_add(a, "virtio-net-device,netdev=net");
    }
}

static int run_qemu(const struct mb_step_vm *vm, bool kvm, struct console *c, struct mb_net *net,
                    struct mb_step_outcome *out, struct mb_error *err)
{
    struct mb_spawn_result res = {0};
    struct vm_args a = {0};
    struct mb_child qemu;
    enum read_end end;
    int rc;

    build_args(vm, kvm, c->nonce, net, &a);
    rc = a.oom ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
               : mb_child_start((const char *const *)a.v, NULL, true,
                                net != NULL ? net->qemu_fd : -1, &qemu, err);
    vm_args_free(&a);
    if (rc < 0)
        return -1;
    if (net != NULL)
        mb_net_release(net);
    end = read_console(c, qemu.out_fd);
    if (end != READ_EOF)
        mb_child_kill(&qemu);
    mb_child_wait(&qemu, &res);
    if (c->len > 0)
        take_line(c);
    out->timed_out = end == READ_TIMEOUT;
    out->exit_status = c->exit_status;
    if (end == READ_CANCELLED)
        return mb_error_set(err, MB_ERR_INTERRUPTED, "interrupted");
    if (end == READ_EOF && c->exit_status < 0 && res.exit_status != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "qemu-system-x86_64 failed (status %d)",
                            res.exit_status);
    return 0;
}

/*
 * Whether KVM works: /dev/kvm can exist and still fail (here `-cpu host`
 * aborts and other models hang silently), so boot the appliance with no
 * disks under KVM and a short timeout, and expect its init to report
 * that it found no layer (status 125). The answer is kept beside the
 * appliance for the rest of the host's uptime.
 */
static bool probe_kvm(const struct mb_appliance *appliance)
{
    struct mb_step_vm probe = {
        .appliance = appliance, .cpus = 1, .memory = 256 * 1024 * 1024, .timeout_seconds = 15};
    struct console c = {.vm = &probe, .exit_status = -1};
    struct mb_step_outcome out = {0};
    struct mb_error err;
    int rc = make_nonce(c.nonce, &err);

    if (rc == 0)
        rc = run_qemu(&probe, true, &c, NULL, &out, &err);
    for (size_t i = 0; i < MB_STEP_TAIL_LINES; i++)
        free(c.tail[i]);
    return rc == 0 && out.exit_status == 125;
}

static char *kvm_answer_path(const struct mb_appliance *appliance)
{
    char boot_id[64] = "unknown", *path;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

    if (f != NULL) {
        if (fscanf(f, "%63s", boot_id) != 1)
            strcpy(boot_id, "unknown");
        fclose(f);
    }
    return asprintf(&path, "%s/kvm-%s", appliance->dir, boot_id) < 0 ? NULL : path;
}

bool mb_vm_use_kvm(const struct mb_appliance *appliance, const struct mb_progress *progress)
{
    const char *forced = getenv("MBUILD_ACCEL");
    char *path, answer = '0';
    struct mb_error err;
    int fd;

    if (forced != NULL && forced[0] != '\0')
        return strcmp(forced, "kvm") == 0;
    fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    path = kvm_answer_path(appliance);
    if (path == NULL)
        return false;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &answer, 1) != 1) {
        mb_progress_say(progress, "checking whether KVM works (once per boot of this host)");
        answer = probe_kvm(appliance) ? '1' : '0';
        if (answer == '0')
            mb_progress_say(progress, "KVM does not work here: steps run under emulation "
                                      "(TCG), 10 to 25 times slower");
        mb_fs_write_atomic(path, &answer, 1, &err); /* a lost answer only costs a probe */
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return answer == '1';
}

int mb_step_vm_run(const struct mb_step_vm *vm, struct mb_step_outcome *out, struct mb_error *err)
{
    struct console c = {.vm = vm, .exit_status = -1};
    struct mb_net net;
    int rc;

    memset(out, 0, sizeof(*out));
    out->exit_status = -1;
    if (make_nonce(c.nonce, err) < 0)
        return -1;
    if (vm->log != NULL && (c.log = fopen(vm->log, "ae")) == NULL)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", vm->log);
    rc = vm->network ? mb_net_start(&net, err) : 0;
    if (rc == 0) {
        rc = run_qemu(vm, mb_vm_use_kvm(vm->appliance, vm->progress), &c, vm->network ? &net : NULL,
                      out, err);
        if (vm->network)
            mb_net_stop(&net);
    }
    out->tail = join_tail(&c);
    if (c.log != NULL)
        fclose(c.log);
    return rc;
}

void mb_step_outcome_clear(struct mb_step_outcome *out)
{
    free(out->tail);
    out->tail = NULL;
}
