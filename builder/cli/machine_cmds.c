/*
 * machine's subcommands: thin wrappers that find the machine meant, call
 * libmbuild and print. `start` builds and assembles the image first.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mbuild/clock.h"
#include "mbuild/appliance.h"
#include "mbuild/cache.h"
#include "mbuild/fsutil.h"
#include "mbuild/image.h"
#include "mbuild/machine.h"
#include "mbuild/machinefile.h"

#include "cli.h"
#include "machine_cmds.h"
#include "run_build.h"

#define DEFAULT_BOOT_TIMEOUT 300

static bool wants_help(int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("Usage: %s %s\n\n%s", cli_program, usage, cli_exit_codes);
            return true;
        }
    }
    return false;
}

/*
 * The machine a command means: NAME when given, else the machine of the
 * project in the current directory. 0 with *m filled, or an exit status.
 */
static int find_machine(const char *name, struct mb_machine *m)
{
    struct mb_error err = {0};
    char cwd[PATH_MAX];
    int found;

    if (name != NULL)
        found = mb_machine_load(name, m, &err);
    else if (realpath(".", cwd) == NULL)
        return cli_usage_error("cannot resolve the current directory");
    else
        found = mb_machine_of_project(cwd, m, &err);
    if (found < 0)
        return cli_fail(&err);
    if (found == 0 && name != NULL)
        return cli_usage_error("no machine named '%s' (see '%s ls')", name, cli_program);
    if (found == 0)
        return cli_usage_error("no machine for this directory: run '%s start' or name one",
                               cli_program);
    return 0;
}

/* --- start --------------------------------------------------------------- */

struct start_options {
    const char *dir;
    const char *name;
    const char *cache_dir;
    const char *progress;
    bool keep;
    bool host_loopback;
    unsigned timeout;
};

static const char start_usage[] =
    "start [DIR] [--name NAME] [--keep] [--cache DIR] [--timeout SECONDS]\n"
    "       [--progress=auto|plain|none] [--open-host-loopback]\n\n"
    "Start the VM of the project in DIR (default: here) from the image its\n"
    "Machinefile describes, building the missing layers first. Returns when the\n"
    "VM answers ssh. Each start begins from the image on a fresh root disk unless\n"
    "--keep or `persistent: true`; volumes and the project mount always last.\n"
    "The VM cannot reach services on this host's 127.0.0.1 by any address unless\n"
    "--open-host-loopback, which maps them to the VM's gateway address.\n";

static int parse_start(int argc, char **argv, struct start_options *o)
{
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"keep", no_argument, NULL, 'k'},
        {"cache", required_argument, NULL, 'c'},
        {"progress", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"open-host-loopback", no_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct start_options){".", NULL, NULL, "auto", false, false, DEFAULT_BOOT_TIMEOUT};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        if (c == 'n')
            o->name = optarg;
        else if (c == 'k')
            o->keep = true;
        else if (c == 'l')
            o->host_loopback = true;
        else if (c == 'c')
            o->cache_dir = optarg;
        else if (c == 'p')
            o->progress = optarg;
        else if (c == 't' && atoi(optarg) > 0)
            o->timeout = (unsigned)atoi(optarg);
        else
            return cli_usage_error("start: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        o->dir = argv[optind++];
    if (optind < argc)
        return cli_usage_error("start: unexpected argument '%s'", argv[optind]);
    return 0;
}

static void say(void *ctx, const char *text)
{
    if (strcmp(ctx, "none") != 0)
        fprintf(stderr, "%s\n", text);
}

/* Build, assemble and boot; the machine is in *m on success. */
static int start_machine(const struct start_options *o, struct mb_machine *m, bool *already,
                         struct mb_error *err)
{
    struct mb_progress progress = {say, (void *)o->progress};
    struct mb_machinefile *mf = NULL;
    struct mb_cache *cache = NULL;
    struct mb_appliance appliance = {0};
    struct mb_plan *plan = NULL;
    char *file = mb_path_join(o->dir, "Machinefile"), *dir = NULL, *disk = NULL;
    char image[MB_DIGEST_STR_LEN];
    bool assembled;
    int rc = file == NULL ? -1 : mb_machinefile_load(file, &mf, err);

    dir = rc == 0 ? mb_cache_default_dir(o->cache_dir, err) : NULL;
    rc = dir == NULL ? -1 : mb_cache_open(dir, &cache, err);
    if (rc == 0)
        rc = cli_build(cache, mf, o->progress, false, (struct cli_build_flags){0}, &plan, err);
    if (rc == 0)
        rc = mb_image_assemble(cache, &plan->layers[plan->count - 1].key, &progress, &disk,
                               &assembled, err);
    if (rc == 0)
        rc = mb_appliance_ensure(dir, &progress, &appliance, err);
    if (rc == 0) {
        mb_digest_str(&plan->layers[plan->count - 1].key, image);
        struct mb_machine_start start = {
            .mf = mf,
            .image = image,
            .disk = disk,
            .appliance = &appliance,
            .name = o->name,
            .keep_root = o->keep,
            .host_loopback = o->host_loopback,
            .timeout_seconds = o->timeout,
            .progress = &progress,
        };

        rc = mb_machine_start(&start, m, already, err);
    }
    mb_appliance_clear(&appliance);
    mb_plan_free(plan);
    mb_cache_close(cache);
    mb_machinefile_free(mf);
    free(disk);
    free(dir);
    free(file);
    return rc;
}

int cmd_machine_start(int argc, char **argv)
{
    struct start_options o;
    struct mb_machine m;
    struct mb_error err = {0};
    long long start_ms;
    bool already;
    int rc;

    if (wants_help(argc, argv, start_usage))
        return 0;
    rc = parse_start(argc, argv, &o);
    if (rc != 0)
        return rc;
    start_ms = mb_clock_ms();
    cli_catch_signals();
    if (start_machine(&o, &m, &already, &err) < 0)
        return cli_fail(&err);
    if (already)
        printf("machine '%s' is already running\n", m.name);
    else
        printf("machine '%s' is ready in %.1fs\n", m.name, mb_clock_seconds_since(start_ms));
    printf("enter it with: %s shell %s\n", cli_program, m.name);
    mb_machine_clear(&m);
    return 0;
}

/* --- shell, exec, ssh-config ---------------------------------------------- */

static int run_ssh(const char *name, bool tty, char *const *command)
{
    struct mb_machine m;
    struct mb_error err = {0};
    char **argv;
    int rc = find_machine(name, &m);

    if (rc != 0)
        return rc;
    if (!m.running) {
        fprintf(stderr, "%s: error: machine '%s' is not running: run '%s start'\n", cli_program,
                m.name, cli_program);
        mb_machine_clear(&m);
        return MB_ERR_GENERAL;
    }
    argv = mb_machine_ssh_argv(&m, tty, command, &err);
    mb_machine_clear(&m);
    if (argv == NULL)
        return cli_fail(&err);
    fflush(NULL);
    execvp(argv[0], argv);
    fprintf(stderr, "%s: error: run ssh: %s\n", cli_program, strerror(errno));
    mb_machine_argv_free(argv);
    return MB_ERR_GENERAL;
}

int cmd_machine_shell(int argc, char **argv)
{
    if (wants_help(argc, argv, "shell [NAME]\n\nOpen an interactive shell in a running VM.\n"))
        return 0;
    if (argc > 2)
        return cli_usage_error("shell: unexpected argument '%s'", argv[2]);
    return run_ssh(argc > 1 ? argv[1] : NULL, isatty(0), NULL);
}

int cmd_machine_exec(int argc, char **argv)
{
    int dash = 1;

    if (wants_help(argc, argv,
                   "exec [NAME] -- COMMAND [ARGS...]\n\n"
                   "Run a command in a running VM; its output streams here and its exit\n"
                   "status is this command's.\n"))
        return 0;
    while (dash < argc && strcmp(argv[dash], "--") != 0)
        dash++;
    if (dash >= argc - 1)
        return cli_usage_error("exec: give the command after '--'");
    if (dash > 2)
        return cli_usage_error("exec: unexpected argument '%s'", argv[2]);
    return run_ssh(dash == 2 ? argv[1] : NULL, false, argv + dash + 1);
}

int cmd_machine_ssh_config(int argc, char **argv)
{
    struct mb_machine m;
    int rc;

    if (wants_help(argc, argv,
                   "ssh-config [NAME]\n\n"
                   "Print a Host block for ~/.ssh/config (for editors such as VS Code\n"
                   "Remote-SSH). The port changes at each start: print it again after one.\n"))
        return 0;
    rc = find_machine(argc > 1 ? argv[1] : NULL, &m);
    if (rc != 0)
        return rc;
    printf("Host machine-%s\n"
           "  HostName 127.0.0.1\n"
           "  Port %d\n"
           "  User root\n"
           "  IdentityFile %s/id_ed25519\n"
           "  IdentitiesOnly yes\n"
           "  UserKnownHostsFile %s/known_hosts\n"
           "  HostKeyAlias machine-%s\n"
           "  StrictHostKeyChecking yes\n",
           m.name, m.ssh_port, m.dir, m.dir, m.name);
    mb_machine_clear(&m);
    return 0;
}

/* --- stop, rm, ls ---------------------------------------------------------- */

int cmd_machine_stop(int argc, char **argv)
{
    struct mb_machine m;
    struct mb_error err = {0};
    int rc;

    if (wants_help(argc, argv, "stop [NAME]\n\nShut a VM down cleanly (killed after 30 s).\n"))
        return 0;
    rc = find_machine(argc > 1 ? argv[1] : NULL, &m);
    if (rc != 0)
        return rc;
    if (!m.running)
        printf("machine '%s' is not running\n", m.name);
    else if (mb_machine_stop(&m, &err) < 0)
        rc = cli_fail(&err);
    else
        printf("machine '%s' stopped\n", m.name);
    mb_machine_clear(&m);
    return rc;
}

int cmd_machine_reset(int argc, char **argv)
{
    struct mb_machine m;
    struct mb_error err = {0};
    int rc;

    if (wants_help(argc, argv,
                   "reset [NAME]\n\n"
                   "Drop the VM's root disk now (stopping it first), so its next start begins\n"
                   "from the image even with `persistent: true`. Volumes are kept.\n"))
        return 0;
    rc = find_machine(argc > 1 ? argv[1] : NULL, &m);
    if (rc != 0)
        return rc;
    if (mb_machine_reset(&m, &err) < 0)
        rc = cli_fail(&err);
    else
        printf("machine '%s' reset: its next start begins from the image\n", m.name);
    mb_machine_clear(&m);
    return rc;
}

int cmd_machine_rm(int argc, char **argv)
{
    struct mb_machine m;
    struct mb_error err = {0};
    bool force = false;
    const char *name = NULL;
    int rc;

    if (wants_help(argc, argv,
                   "rm [NAME] [--force]\n\n"
                   "Remove a VM, its root disk and its volumes (never the image). A running\n"
                   "VM only with --force, which kills it.\n"))
        return 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0 || strcmp(argv[i], "-f") == 0)
            force = true;
        else if (name == NULL && argv[i][0] != '-')
            name = argv[i];
        else
            return cli_usage_error("rm: unexpected argument '%s'", argv[i]);
    }
    rc = find_machine(name, &m);
    if (rc != 0)
        return rc;
    if (mb_machine_remove(&m, force, &err) < 0)
        rc = cli_fail(&err);
    else
        printf("machine '%s' removed\n", m.name);
    mb_machine_clear(&m);
    return rc;
}

static void print_table(const struct mb_machine *all, size_t n)
{
    printf("%-20s %-8s %-14s %-16s %s\n", "NAME", "STATE", "IMAGE", "PORTS", "PROJECT");
    for (size_t i = 0; i < n; i++)
        printf("%-20s %-8s %-14.14s %-16s %s\n", all[i].name,
               all[i].running ? "running" : "stopped", all[i].image + strlen("sha256:"),
               all[i].ports[0] ? all[i].ports : "-", all[i].project_dir);
}

static void print_json(const struct mb_machine *all, size_t n)
{
    json_t *list = json_array(), *doc;
    char *text;

    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "name", all[i].name,
                                              "state", all[i].running ? "running" : "stopped",
                                              "image", all[i].image, "ports", all[i].ports,
                                              "project_dir", all[i].project_dir, "ssh_port",
                                              all[i].running ? all[i].ssh_port : 0));
    doc = json_pack("{s:i, s:o}", "version", 1, "machines", list);
    text = json_dumps(doc, JSON_INDENT(2));
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(doc);
}

int cmd_machine_ls(int argc, char **argv)
{
    struct mb_machine *all;
    struct mb_error err = {0};
    size_t n;
    bool json = argc > 1 && strcmp(argv[1], "--json") == 0;

    if (wants_help(argc, argv,
                   "ls [--json]\n\nList the VMs: name, state, image, ports, project.\n"))
        return 0;
    if (argc > (json ? 2 : 1))
        return cli_usage_error("ls: unexpected argument '%s'", argv[json ? 2 : 1]);
    if (mb_machine_list(&all, &n, &err) < 0)
        return cli_fail(&err);
    if (json)
        print_json(all, n);
    else
        print_table(all, n);
    for (size_t i = 0; i < n; i++)
        mb_machine_clear(&all[i]);
    free(all);
    return 0;
}

/* --- init ---------------------------------------------------------------- */

static const char machinefile_template[] =
    "# Machinefile: this project's VM. Each step below is a cached layer: editing\n"
    "# one rebuilds it and the steps after it, nothing before.\n"
    "# Build it with 'mbuild build', start it with 'machine start'.\n"
    "version: 1\n"
    "base: %s\n"
    "cpus: 2\n"
    "memory: 2GiB\n"
    "disk: 20GiB\n"
    "%s"
    "steps:\n"
    "  # Dependencies first, keyed by the lock file: editing code rebuilds nothing.\n"
    "  # - name: dependencies\n"
    "  #   copy: [package.json, package-lock.json]\n"
    "  #   run: cd /work && npm ci\n"
    "%s"
    "# Forwarded from 127.0.0.1 on this machine only.\n"
    "ports: [\"3000:3000\"]\n"
    "# The project, shared into the VM; read-only unless writable: true.\n"
    "mounts:\n"
    "  - {source: ., target: /work, writable: true}\n"
    "# Disks that outlive restarts (the root disk starts fresh each time).\n"
    "# volumes:\n"
    "#   - {name: data, target: /var/lib/data, size: 4GiB}\n";

int cmd_machine_init(int argc, char **argv)
{
    const char *base = "debian-12";
    char text[4096];
    int fd;

    if (wants_help(argc, argv,
                   "init [--base NAME]\n\n"
                   "Write a commented Machinefile for the project here (never over one):\n"
                   "git, Node.js, npm, Docker and an AI coding agent from npm.\n"))
        return 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--base") == 0 && i + 1 < argc)
            base = argv[++i];
        else
            return cli_usage_error("init: unexpected argument '%s'", argv[i]);
    }
    if (strcmp(base, "tiny") == 0)
        snprintf(text, sizeof(text), machinefile_template, base, "",
                 "  - name: hello\n    run: echo hello from a layer > /etc/motd\n");
    else
        snprintf(text, sizeof(text), machinefile_template, base,
                 "# Installed from the base's package manager, as one layer.\n"
                 "packages: [git, nodejs, npm, docker.io, ca-certificates]\n",
                 "  - name: agent\n    run: npm install -g @openai/codex\n");
    fd = open("Machinefile", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST)
        return cli_usage_error("init: a Machinefile exists here already; not overwriting it");
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) < 0) {
        fprintf(stderr, "%s: error: write 'Machinefile': %s\n", cli_program, strerror(errno));
        return MB_ERR_GENERAL;
    }
    printf("wrote Machinefile (base %s): edit it, then run '%s start'\n", base, cli_program);
    return 0;
}
