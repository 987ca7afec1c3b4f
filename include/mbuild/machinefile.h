/*
 * The Machinefile, version 1: a project's VM described in YAML.
 *
 * mb_machinefile_load() parses it strictly (libyaml events, no document
 * loader): unknown or duplicate keys, anchors and aliases, wrong types,
 * tabs in indentation, several documents and empty files are errors whose
 * message starts "PATH:LINE:COLUMN: " and whose code is MB_ERR_INPUT.
 *
 * A Machinefile may come from a repository someone else controls, so
 * loading also checks every path it names (`copy` sources, mount sources)
 * against the project directory, the directory holding the Machinefile:
 * absolute paths, `..` components and symlinks resolving outside it are
 * refused. Nothing in a Machinefile makes the library read outside it.
 *
 * Ownership: everything hangs off the struct; mb_machinefile_free() frees
 * it all. Strings are NUL-terminated and never NULL unless said.
 */
#ifndef MBUILD_MACHINEFILE_H
#define MBUILD_MACHINEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbuild/error.h"

/* Where a value came from, for error messages after parsing (1-based). */
struct mb_mark {
    unsigned line;
    unsigned column;
};

struct mb_env_var {
    char *name; /* [A-Za-z_][A-Za-z0-9_]* */
    char *value;
};

/* An ordered list of environment variables, as written (no duplicates). */
struct mb_env {
    struct mb_env_var *vars;
    size_t count;
};

/* One `copy` entry: a file or directory of the project, placed in the VM. */
struct mb_copy {
    char *source; /* relative to the project directory, normalised, inside it */
    char *target; /* absolute path in the VM; default "/work/<source>" */
    struct mb_mark mark;
};

struct mb_step {
    char *name; /* default "step N" (1-based), unique within the file */
    char *run;  /* shell script run as root in the step VM */
    struct mb_copy *copies;
    size_t copy_count;
    struct mb_env env;        /* the step's own env, applied over the file's */
    bool network;             /* default true */
    uint64_t timeout_seconds; /* default 1800 */
    struct mb_mark mark;
};

struct mb_port {
    uint16_t host;
    uint16_t guest;
};

struct mb_mount {
    char *source;  /* relative to the project directory, inside it */
    char *target;  /* absolute path in the VM */
    bool writable; /* default false */
};

struct mb_volume {
    char *name;    /* [a-z0-9][a-z0-9_.-]*, unique */
    char *target;  /* absolute path in the VM */
    uint64_t size; /* bytes */
};

struct mb_machinefile {
    char *path;        /* as given to mb_machinefile_load */
    char *project_dir; /* absolute, symlinks resolved: the directory holding the file */
    int version;       /* 1 */
    char *base;        /* recipe name, local image path, or https URL */
    char *base_digest; /* "sha256:..." for an https base, else NULL */
    struct mb_mark base_mark;
    char *arch;      /* "x86_64" or "aarch64"; default the host's */
    unsigned cpus;   /* default 2 */
    uint64_t memory; /* bytes; default 2 GiB */
    uint64_t disk;   /* bytes; default 20 GiB */
    struct mb_env env;
    char **packages;
    size_t package_count;
    struct mb_mark packages_mark;
    struct mb_step *steps;
    size_t step_count;
    struct mb_port *ports;
    size_t port_count;
    struct mb_mount *mounts;
    size_t mount_count;
    struct mb_volume *volumes;
    size_t volume_count;
    bool persistent; /* default false */
    char **secrets;  /* declared secret names; values come from the command line */
    size_t secret_count;
};

/* The largest Machinefile accepted, in bytes. */
#define MB_MACHINEFILE_MAX_SIZE (1024 * 1024)

/* Parse and check `path`. On success *out is a new Machinefile to free. */
int mb_machinefile_load(const char *path, struct mb_machinefile **out, struct mb_error *err);

/* Parse YAML text already in memory; `path` names it in errors and fixes the project dir. */
int mb_machinefile_parse(const char *path, const char *text, size_t len,
                         struct mb_machinefile **out, struct mb_error *err);

void mb_machinefile_free(struct mb_machinefile *mf);

/*
 * Parse a size: a decimal integer and a unit, K, M, G, T or KiB, MiB, GiB,
 * TiB. All units are binary: "2G" and "2GiB" are both 2 * 1024^3 bytes, as
 * in QEMU. A unit is required; overflow is an error.
 */
int mb_size_parse(const char *text, uint64_t *out, struct mb_error *err);

/* Parse a duration: an integer and s, m or h ("90s", "30m", "2h"). */
int mb_duration_parse(const char *text, uint64_t *seconds, struct mb_error *err);

/* The env in effect for a step: the file's env overridden by the step's, sorted by name. */
int mb_machinefile_step_env(const struct mb_machinefile *mf, const struct mb_step *step,
                            struct mb_env *out, struct mb_error *err);
void mb_env_free(struct mb_env *env);

#endif
