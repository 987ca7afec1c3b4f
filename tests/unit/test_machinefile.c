/*
 * The Machinefile parser: every way a file can be wrong is refused with
 * MB_ERR_INPUT and a message starting "PATH:LINE:COLUMN: " that points at
 * the offending text; nothing a file names may reach outside the project
 * directory; hostile files (alias bombs, oversized files) cost nothing;
 * well-formed files, large ones included, come back field for field, with
 * the documented defaults.
 *
 * The error cases are tables of {YAML text, line, column, key part of the
 * message}, each run against a fresh project directory holding the files
 * and symlinks the paths in the table name.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/machinefile.h"

#include "helpers.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define GIB          (1024ULL * 1024 * 1024)

/* The two required keys: text after them starts on line 3. */
#define HEAD "version: 1\nbase: tiny\n"
/* A step whose further keys start on line 5, column 5. */
#define STEP  HEAD "steps:\n  - run: x\n"
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* One Machinefile that must be refused: where, and a key part of what is said. */
struct bad {
    const char *yaml;
    unsigned line;
    unsigned column;
    const char *message;
};

/* ---- a project to parse in -------------------------------------------- */

static void must(int rc, const char *what)
{
    cr_assert_eq(rc, 0, "%s failed", what);
}

/*
 * A project directory with what the tables refer to: plain files, a
 * directory, symlinks out of the project (to /etc, /etc/passwd), a
 * directory hiding one, a symlink staying inside, a symlink loop, a FIFO
 * and a directory holding one.
 */
static char *make_project(void)
{
    char *dir = mbt_tempdir();
    char *p;

    mbt_write(dir, "data.txt", "data\n");
    mbt_write(dir, "conf/a.conf", "a=1\n");
    mbt_write(dir, "conf/img.qcow2", "not really an image\n");
    mbt_write(dir, "leaky/fine.txt", "fine\n");
    p = mbt_path(dir, "etc-link");
    must(symlink("/etc", p), "symlink etc-link");
    free(p);
    p = mbt_path(dir, "passwd-link");
    must(symlink("/etc/passwd", p), "symlink passwd-link");
    free(p);
    p = mbt_path(dir, "leaky/out");
    must(symlink("../../../../../../../../etc/passwd", p), "symlink leaky/out");
    free(p);
    p = mbt_path(dir, "conf/inner-link");
    must(symlink("../data.txt", p), "symlink conf/inner-link");
    free(p);
    p = mbt_path(dir, "conf/dangling");
    must(symlink("nowhere", p), "symlink conf/dangling");
    free(p);
    p = mbt_path(dir, "fifo");
    must(mkfifo(p, 0600), "mkfifo");
    free(p);
    p = mbt_path(dir, "pipes");
    must(mkdir(p, 0755), "mkdir pipes");
    free(p);
    p = mbt_path(dir, "pipes/fifo");
    must(mkfifo(p, 0600), "mkfifo pipes/fifo");
    free(p);
    p = mbt_path(dir, "loop");
    must(symlink("loop", p), "symlink loop");
    free(p);
    return dir;
}

struct project {
    char *dir;
    char *machinefile;
};

static struct project project_new(void)
{
    struct project p;

    p.dir = make_project();
    p.machinefile = mbt_path(p.dir, "Machinefile");
    return p;
}

static void project_free(struct project *p)
{
    mbt_rm_rf(p->dir);
    free(p->dir);
    free(p->machinefile);
}

/* Write `yaml` as the project's Machinefile and load it. */
static int load_text(struct project *p, const char *yaml, struct mb_machinefile **mf,
                     struct mb_error *err)
{
    mbt_write(p->dir, "Machinefile", yaml);
    mb_error_clear(err);
    return mb_machinefile_load(p->machinefile, mf, err);
}

static struct mb_machinefile *load_ok(struct project *p, const char *yaml)
{
    struct mb_machinefile *mf;
    struct mb_error err = {0};

    cr_assert_eq(load_text(p, yaml, &mf, &err), 0, "refused:\n%s\n--- %s", yaml, err.msg);
    cr_assert_not_null(mf);
    return mf;
}

/* Run a table of files that must be refused; every case is checked, failures are listed. */
static void expect_refused(const struct bad *cases, size_t count)
{
    struct project p = project_new();

    for (size_t i = 0; i < count; i++) {
        const struct bad *c = &cases[i];
        struct mb_machinefile *mf = NULL;
        struct mb_error err = {0};
        char prefix[4096];
        int rc = load_text(&p, c->yaml, &mf, &err);

        snprintf(prefix, sizeof(prefix), "%s:%u:%u: ", p.machinefile, c->line, c->column);
        cr_expect_eq(rc, -1, "case %zu was accepted:\n%s", i, c->yaml);
        cr_expect_null(mf, "case %zu: no Machinefile on failure", i);
        mb_machinefile_free(mf);
        if (rc != -1)
            continue;
        cr_expect_eq(err.code, MB_ERR_INPUT, "case %zu: code %d, not MB_ERR_INPUT:\n%s\n--- %s", i,
                     err.code, c->yaml, err.msg);
        cr_expect(strncmp(err.msg, prefix, strlen(prefix)) == 0,
                  "case %zu: expected at %u:%u:\n%s\n--- got: %s", i, c->line, c->column, c->yaml,
                  err.msg);
        cr_expect_not_null(strstr(err.msg, c->message),
                           "case %zu: expected \"%s\":\n%s\n--- got: %s", i, c->message, c->yaml,
                           err.msg);
    }
    project_free(&p);
}

/* ---- refused: the shape of the file ----------------------------------- */

static const struct bad syntax_cases[] = {
    {"", 1, 1, "empty Machinefile"},
    {"\n\n   \n", 1, 1, "empty Machinefile"},
    {"# only a comment\n# and another\n", 1, 1, "empty Machinefile"},
    {"---\n", 1, 1, "empty Machinefile"},
    {"~\n", 1, 1, "empty Machinefile"},
    {"- version: 1\n", 1, 1, "a Machinefile must be a mapping, got a list"},
    {"hello\n", 1, 1, "a Machinefile must be a mapping, got 'hello'"},
    {HEAD "---\nversion: 1\n", 3, 1, "a second YAML document; a Machinefile holds exactly one"},
    {"---\n" HEAD "---\n", 4, 1, "a second YAML document"},
    {HEAD "...\n---\nbase: tiny\n", 4, 1, "a second YAML document"},
    {HEAD "steps:\n\t- run: x\n", 4, 1, "tab in indentation; use spaces"},
    {HEAD "steps:\n  \t- run: x\n", 4, 3, "tab in indentation; use spaces"},
    {"\tversion: 1\nbase: tiny\n", 1, 1, "tab in indentation"},
    {"version: 1\r\nbase: tiny\r\nsteps:\r\n \t- run: x\r\n", 4, 2, "tab in indentation"},
    {"version: 1\nbase: \xff\n", 2, 7, "(byte 0xff)"},
    {"\xef\xbb\xbf", 1, 1, "empty Machinefile"},
    {"\xef\xbb\xbfversion: 2\nbase: tiny\n", 1, 10, "unsupported Machinefile version 2"},
    {"\xef\xbb\xbf" HEAD "cpus: x\n", 3, 7, "'cpus' must be an integer from 1 to 256, got 'x'"},
    {"\xef\xbb\xbf\tversion: 1\n", 1, 1, "tab in indentation"},
    {"version: 1\nbase: [tiny\n", 3, 1, "did not find expected ',' or ']'"},
    {HEAD "env: {A: \"x\\0y\"}\n", 3, 10, "strings must not contain NUL characters"},
    {HEAD "env:\n  ? [A]\n  : x\n", 4, 5, "keys must be strings, not lists or mappings"},
    {HEAD "env: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     3, 38, "nesting deeper than 32 levels"},
};

Test(machinefile, shape_errors_name_line_and_column)
{
    expect_refused(syntax_cases, ARRAY_LEN(syntax_cases));
}

static const struct bad property_cases[] = {
    {HEAD "env: &e {A: x}\n", 3, 6, "anchors and aliases are not allowed (found anchor '&e')"},
    {"version: 1\nbase: &b tiny\n", 2, 7, "found anchor '&b'"},
    {HEAD "steps:\n  - &s\n    run: x\n", 4, 5, "found anchor '&s'"},
    {HEAD "cpus: *c\n", 3, 7, "anchors and aliases are not allowed (found alias '*c')"},
    {HEAD "packages: [git, *p]\n", 3, 17, "found alias '*p'"},
    {HEAD "*k : 1\n", 3, 1, "found alias '*k'"},
    {HEAD "cpus: !!int 2\n", 3, 7, "tags are not allowed"},
    {HEAD "env: !custom {A: x}\n", 3, 6, "tags are not allowed (found '!custom')"},
};

Test(machinefile, anchors_aliases_and_tags_are_refused_where_written)
{
    expect_refused(property_cases, ARRAY_LEN(property_cases));
}

/* ---- refused: keys and types ------------------------------------------ */

static const struct bad key_cases[] = {
    {HEAD "stpes: []\n", 3, 1, "unknown key 'stpes' (did you mean 'steps'?)"},
    {HEAD "memroy: 2G\n", 3, 1, "unknown key 'memroy' (did you mean 'memory'?)"},
    {HEAD "persistant: true\n", 3, 1, "(did you mean 'persistent'?)"},
    {HEAD "colour: red\n", 3, 1, "unknown key 'colour'"},
    {STEP "    nmae: a\n", 5, 5, "unknown key 'nmae' (did you mean 'name'?)"},
    {HEAD "mounts: [{source: ., target: /w, writeable: true}]\n", 3, 34,
     "unknown key 'writeable' (did you mean 'writable'?)"},
    {"version: 1\nbase: tiny\nbase: debian-12\n", 3, 1,
     "duplicate key 'base' (first at line 2, column 1)"},
    {HEAD "env: {A: x, A: y}\n", 3, 13, "duplicate key 'A' (first at line 3, column 7)"},
    {STEP "    run: y\n", 5, 5, "duplicate key 'run' (first at line 4, column 5)"},
    {HEAD "cpus: 1\nenv: {}\ncpus: 2\ncpus: 3\n", 5, 1,
     "duplicate key 'cpus' (first at line 3, column 1)"},
    {"base: tiny\n", 1, 1, "missing required key 'version'"},
    {"version: 1\n", 1, 1, "missing required key 'base'"},
    {"cpus: 2\nversion: 1\n", 1, 1, "missing required key 'base'"},
    {HEAD "steps:\n  - name: a\n", 4, 5, "missing required key 'run' in a step"},
    {HEAD "volumes: [{name: v, target: /v}]\n", 3, 11, "missing required key 'size' in a volume"},
    {HEAD "mounts: [{target: /w}]\n", 3, 10, "missing required key 'source' in a mount"},
    {"version: 2\nbase: tiny\n", 1, 10, "unsupported Machinefile version 2 (this mbuild reads"},
    {"version: 0\nbase: tiny\n", 1, 10, "unsupported Machinefile version 0"},
    {"version: \"1\"\nbase: tiny\n", 1, 10,
     "'version' must be an integer, got the quoted string '1'"},
    {"version: 1.0\nbase: tiny\n", 1, 10, "'version' must be an integer, got '1.0'"},
    {"version:\nbase: tiny\n", 1, 9, "'version' must be an integer, got no value"},
};

Test(machinefile, key_errors_name_line_and_column)
{
    expect_refused(key_cases, ARRAY_LEN(key_cases));
}

static const struct bad type_cases[] = {
    {HEAD "cpus: \"two\"\n", 3, 7,
     "'cpus' must be an integer from 1 to 256, got the quoted string 'two'"},
    {HEAD "cpus: two\n", 3, 7, "'cpus' must be an integer from 1 to 256, got 'two'"},
    {HEAD "cpus: 0\n", 3, 7, "got '0'"},
    {HEAD "cpus: 257\n", 3, 7, "got '257'"},
    {HEAD "cpus: 0x2\n", 3, 7, "got '0x2'"},
    {HEAD "cpus: 02\n", 3, 7, "got '02'"},
    {HEAD "cpus: [2]\n", 3, 7, "'cpus' must be an integer from 1 to 256, got a list"},
    {HEAD "cpus: null\n", 3, 7, "got null"},
    {HEAD "steps: echo hi\n", 3, 8, "'steps' must be a list, got 'echo hi'"},
    {HEAD "steps: {run: x}\n", 3, 8, "'steps' must be a list, got a mapping"},
    {HEAD "steps:\n  - echo hi\n", 4, 5, "an entry of 'steps' must be a mapping, got 'echo hi'"},
    {HEAD "env: {A: [1, 2]}\n", 3, 10, "env 'A' must be a string, got a list"},
    {HEAD "env: {A: {b: c}}\n", 3, 10, "env 'A' must be a string, got a mapping"},
    {HEAD "env: {A: }\n", 3, 10, "env 'A' must be a string, got no value"},
    {HEAD "env: [A]\n", 3, 6, "'env' must be a mapping of names to strings, got a list"},
    {HEAD "persistent: yes\n", 3, 13, "'persistent' must be true or false, got 'yes'"},
    {STEP "    network: \"false\"\n", 5, 14,
     "'network' must be true or false, got the quoted string 'false'"},
    {HEAD "steps:\n  - run: \"\"\n", 4, 10, "'run' is empty"},
    {HEAD "steps:\n  - run:\n", 4, 9, "'run' must be a shell script, got no value"},
    {STEP "    name: \" \"\n", 5, 11, "'name' is empty"},
    {STEP "    name: \"a\\tb\"\n", 5, 11, "'name' must not contain control characters"},
    {STEP "    name: \"a\\u009bb\"\n", 5, 11, "'name' must not contain control characters"},
    {STEP "    name: \"a\\u0085b\"\n", 5, 11, "'name' must not contain control characters"},
    {HEAD "packages: git\n", 3, 11, "'packages' must be a list, got 'git'"},
    {HEAD "packages: [\"rm -rf\"]\n", 3, 12, "invalid package name 'rm -rf'"},
    {HEAD "packages: [git, \"$(id)\"]\n", 3, 17, "invalid package name '$(id)'"},
    {HEAD "arch: amd64\n", 3, 7, "unsupported arch 'amd64' (did you mean 'x86_64'?)"},
    {HEAD "arch: sparc\n", 3, 7, "unsupported arch 'sparc' (expected x86_64 or aarch64)"},
    {HEAD "secrets: [tok, tok]\n", 3, 16, "duplicate secret 'tok' (first at line 3, column 11)"},
    {HEAD "secrets: [..]\n", 3, 11, "invalid secret name '..'"},
    {"version: 1\nbase: Debian\n", 2, 7, "invalid base recipe name 'Debian'"},
    {"version: 1\nbase: https://example.com/x.qcow2\n", 2, 7, "a URL base needs a digest"},
    {"version: 1\nbase: {url: http://example.com/x, digest: sha256:" HEX64 "}\n", 2, 13,
     "'url' must be an https:// URL, got 'http://example.com/x'"},
    {"version: 1\nbase: {url: http://127.0.0.1.example.com/x, digest: sha256:" HEX64 "}\n", 2, 13,
     "'url' must be an https:// URL, got 'http://127.0.0.1.example.com/x'"},
    {"version: 1\nbase: {url: http://localhost@evil.example/x, digest: sha256:" HEX64 "}\n", 2, 13,
     "'url' must be an https:// URL"},
    {"version: 1\nbase: {url: https://example.com/x, digest: sha256:abc}\n", 2, 44,
     "'digest' must be 'sha256:' and 64 lowercase hex digits"},
    {"version: 1\nbase: {url: https://example.com/x}\n", 2, 7,
     "missing required key 'digest' in base"},
    {"version: 1\nbase: [tiny]\n", 2, 7, "'base' must be a recipe name, an image path or"},
};

Test(machinefile, type_errors_name_line_and_column)
{
    expect_refused(type_cases, ARRAY_LEN(type_cases));
}

/* ---- refused: values -------------------------------------------------- */

static const struct bad value_cases[] = {
    {HEAD "memory: 2GB\n", 3, 9, "'memory': invalid size '2GB': write G or GiB"},
    {HEAD "memory: 2 G\n", 3, 9, "'memory': invalid size '2 G'"},
    {HEAD "memory: -1G\n", 3, 9, "'memory': invalid size '-1G': expected a whole number"},
    {HEAD "disk: 99999999999T\n", 3, 7, "'disk': size '99999999999T' is too large"},
    {HEAD "disk: 99999999999999999999G\n", 3, 7, "is too large"},
    {HEAD "disk: 2048\n", 3, 7, "'disk': size '2048' needs a unit"},
    {HEAD "disk: 0G\n", 3, 7, "'disk': size '0G' must be greater than zero"},
    {HEAD "memory: 1.5G\n", 3, 9, "sizes are whole numbers"},
    {HEAD "memory: [2G]\n", 3, 9, "'memory' must be a size such as 512M or 2GiB, got a list"},
    {HEAD "volumes: [{name: v, target: /v, size: 4GB}]\n", 3, 39,
     "'size': invalid size '4GB': write G or GiB"},
    {HEAD "ports: [0]\n", 3, 9, "port '0' is out of range (1 to 65535)"},
    {HEAD "ports: [65536]\n", 3, 9, "port '65536' is out of range (1 to 65535)"},
    {HEAD "ports: [\"8080:65536\"]\n", 3, 9, "port '8080:65536' is out of range"},
    {HEAD "ports: [\"0:80\"]\n", 3, 9, "port '0:80' is out of range"},
    {HEAD "ports: [99999999999999999999]\n", 3, 9, "is out of range"},
    {HEAD "ports: [\"3000:3000\", \"3000:4000\"]\n", 3, 22,
     "duplicate host port 3000 (first at line 3, column 9)"},
    {HEAD "ports:\n  - 8080\n  - 9090\n  - \"8080:80\"\n", 6, 5,
     "duplicate host port 8080 (first at line 4, column 5)"},
    {HEAD "ports: [\"a:b\"]\n", 3, 9, "invalid port 'a:b': expected \"host:guest\" or \"port\""},
    {HEAD "ports: [\"80:\"]\n", 3, 9, "invalid port '80:'"},
    {HEAD "ports: [\":80\"]\n", 3, 9, "invalid port ':80'"},
    {HEAD "ports: [\"80:80:80\"]\n", 3, 9, "invalid port '80:80:80'"},
    {HEAD "ports: [\"080\"]\n", 3, 9, "invalid port '080'"},
    {HEAD "ports: [-1]\n", 3, 9, "invalid port '-1'"},
    {HEAD "ports: [\" 80\"]\n", 3, 9, "invalid port ' 80'"},
    {HEAD "ports: [80.5]\n", 3, 9, "invalid port '80.5'"},
    {HEAD "ports: [[80]]\n", 3, 9, "an entry of 'ports' must be a port or \"host:guest\""},
    {HEAD "ports: 80\n", 3, 8, "'ports' must be a list, got '80'"},
    {HEAD "volumes: [{name: PgData, target: /v, size: 1G}]\n", 3, 18,
     "invalid volume name 'PgData' (allowed: lowercase letters"},
    {HEAD "volumes: [{name: -x, target: /v, size: 1G}]\n", 3, 18, "invalid volume name '-x'"},
    {HEAD "volumes: [{name: .v, target: /v, size: 1G}]\n", 3, 18, "invalid volume name '.v'"},
    {HEAD "volumes: [{name: \"a b\", target: /v, size: 1G}]\n", 3, 18, "invalid volume name 'a b'"},
    {HEAD "volumes: [{name: a/b, target: /v, size: 1G}]\n", 3, 18, "invalid volume name 'a/b'"},
    {HEAD "volumes: [{name: \"\", target: /v, size: 1G}]\n", 3, 18, "invalid volume name ''"},
    {HEAD "volumes:\n  - {name: pg, target: /a, size: 1G}\n  - {name: pg, target: /b, size: 1G}\n",
     5, 12, "duplicate volume name 'pg' (first at line 4, column 12)"},
    {HEAD "volumes: [{name: v, target: v, size: 1G}]\n", 3, 29,
     "'target' must be an absolute path, got 'v'"},
    {HEAD "steps:\n  - name: a\n    run: x\n  - name: a\n    run: y\n", 6, 11,
     "duplicate step name 'a' (first at line 4, column 11)"},
    {HEAD "steps:\n  - run: x\n  - name: step 1\n    run: y\n", 5, 11,
     "duplicate step name 'step 1' (first at line 4, column 5)"},
    {HEAD "env: {1A: x}\n", 3, 7,
     "invalid env name '1A' (allowed: letters, digits and '_', not starting with a digit)"},
    {HEAD "env: {A-B: x}\n", 3, 7, "invalid env name 'A-B'"},
    {HEAD "env: {\"A=B\": x}\n", 3, 7, "invalid env name 'A=B'"},
    {HEAD "env: {\"\": x}\n", 3, 7, "invalid env name ''"},
    {STEP "    env: {\"bad name\": 1}\n", 5, 11, "invalid env name 'bad name'"},
    {STEP "    timeout: 30\n", 5, 14, "'timeout': duration '30' needs a unit: s, m or h"},
    {STEP "    timeout: 30d\n", 5, 14, "'timeout': invalid duration '30d'"},
    {STEP "    timeout: 0s\n", 5, 14, "duration '0s' must be greater than zero"},
    {STEP "    timeout: -5m\n", 5, 14, "invalid duration '-5m'"},
    {STEP "    timeout: 1.5h\n", 5, 14, "invalid duration '1.5h'"},
    {STEP "    timeout: 30 m\n", 5, 14, "invalid duration '30 m'"},
    {STEP "    timeout: 5124095576030432h\n", 5, 14, "duration '5124095576030432h' is too long"},
    {STEP "    timeout: 99999999999999999999s\n", 5, 14, "is too long"},
    {STEP "    timeout: [30m]\n", 5, 14, "'timeout' must be a duration such as 90s"},
};

Test(machinefile, value_errors_name_line_and_column)
{
    expect_refused(value_cases, ARRAY_LEN(value_cases));
}

/* ---- refused: paths leaving the project ------------------------------- */

static const struct bad path_cases[] = {
    {STEP "    copy: [/etc/passwd]\n", 5, 12,
     "copy source '/etc/passwd' is absolute; paths are relative to the project directory"},
    {STEP "    copy: [../secret]\n", 5, 12, "copy source '../secret' contains '..'"},
    {STEP "    copy: [conf/../../x]\n", 5, 12, "copy source 'conf/../../x' contains '..'"},
    {STEP "    copy: [conf/../data.txt]\n", 5, 12, "contains '..'"},
    {STEP "    copy: [etc-link]\n", 5, 12,
     "copy source 'etc-link' resolves outside the project directory"},
    {STEP "    copy: [etc-link/passwd]\n", 5, 12,
     "copy source 'etc-link/passwd' resolves outside the project directory"},
    {STEP "    copy: [passwd-link]\n", 5, 12, "resolves outside the project directory"},
    {STEP "    copy: [data.txt, leaky]\n", 5, 22,
     "copy source 'leaky' contains 'leaky/out', which resolves outside the project directory"},
    {STEP "    copy: [.]\n", 5, 12,
     "copy source '.' contains 'etc-link', which resolves outside the project directory"},
    {STEP "    copy: [missing.txt]\n", 5, 12, "copy source 'missing.txt' does not exist"},
    {STEP "    copy: [\"\"]\n", 5, 12, "copy source is empty"},
    {STEP "    copy: [fifo]\n", 5, 12, "copy source 'fifo' is not a regular file or directory"},
    {STEP "    copy: [pipes]\n", 5, 12,
     "copy source 'pipes' contains 'pipes/fifo', which is not a regular file, directory or "
     "symlink"},
    {STEP "    copy: [loop]\n", 5, 12,
     "copy source 'loop' goes through a symlink loop or too many symlinks"},
    {STEP "    copy: [data.txt/x]\n", 5, 12, "goes through something that is not a directory"},
    {STEP "    copy: [{source: /etc/passwd}]\n", 5, 21, "copy source '/etc/passwd' is absolute"},
    {STEP "    copy: [{source: etc-link, target: /etc}]\n", 5, 21,
     "resolves outside the project directory"},
    {STEP "    copy: [{target: /x}]\n", 5, 12, "missing required key 'source' in a copy entry"},
    {STEP "    copy: [{source: data.txt, target: x}]\n", 5, 39,
     "'target' must be an absolute path, got 'x'"},
    {STEP "    copy: [{source: data.txt, target: /a/../b}]\n", 5, 39,
     "'target' '/a/../b' contains '..'"},
    {STEP "    copy: data.txt\n", 5, 11, "'copy' must be a list, got 'data.txt'"},
    {HEAD "mounts: [{source: /tmp, target: /w}]\n", 3, 19,
     "mount source '/tmp' is absolute; paths are relative to the project directory"},
    {HEAD "mounts: [{source: .., target: /w}]\n", 3, 19, "mount source '..' contains '..'"},
    {HEAD "mounts: [{source: etc-link, target: /w}]\n", 3, 19,
     "mount source 'etc-link' resolves outside the project directory"},
    {HEAD "mounts: [{source: data.txt, target: /w}]\n", 3, 19,
     "mount source 'data.txt' is not a directory"},
    {HEAD "mounts: [{source: ., target: work}]\n", 3, 30,
     "'target' must be an absolute path, got 'work'"},
    {HEAD "mounts: [{source: ., target: /}]\n", 3, 30,
     "'target' cannot be '/': nothing may be mounted over the root"},
    {HEAD "mounts: [{source: ., target: //.}]\n", 3, 30, "'target' cannot be '/'"},
    {HEAD "mounts: [{source: ., target: /w}]\nvolumes: [{name: v, target: /w/, size: 1G}]\n", 4, 29,
     "duplicate mount target '/w' (first at line 3, column 30)"},
    {"version: 1\nbase: /images/x.qcow2\n", 2, 7, "base image '/images/x.qcow2' is absolute"},
    {"version: 1\nbase: ../x.qcow2\n", 2, 7, "base image '../x.qcow2' contains '..'"},
    {"version: 1\nbase: missing.qcow2\n", 2, 7, "base image 'missing.qcow2' does not exist"},
    {"version: 1\nbase: etc-link/passwd\n", 2, 7,
     "base image 'etc-link/passwd' resolves outside the project directory"},
    {"version: 1\nbase: conf/\n", 2, 7, "base image 'conf/' is not a regular file"},
};

Test(machinefile, paths_outside_the_project_are_refused)
{
    expect_refused(path_cases, ARRAY_LEN(path_cases));
}

/* ---- accepted --------------------------------------------------------- */

/* Close to an edge of a rule, and on the right side of it. */
static const char *const good_cases[] = {
    HEAD,
    "# a comment first\n\n" HEAD "# and last\n",
    "---\n" HEAD "...\n",
    "version: 1\r\nbase: tiny\r\n",
    "\xef\xbb\xbf" HEAD,
    "{version: 1, base: tiny}\n",
    HEAD "cpus: 1\n",
    HEAD "cpus: 256\n",
    HEAD "arch: aarch64\n",
    HEAD "ports: [1, 65535, \"8080:80\", \"8081:80\"]\n",
    HEAD "volumes: [{name: a0_.-z, target: /v, size: 16777215T}]\n",
    HEAD "env: {_A1: \"\", b: 1, C: true}\n",
    STEP "    copy: [conf]\n",
    STEP "    copy: [conf/inner-link, ./data.txt, conf//a.conf]\n",
    STEP "    copy: [leaky/fine.txt]\n",
    STEP "    timeout: 1s\n",
    HEAD "mounts: [{source: ., target: /work}, {source: conf, target: /conf}]\n",
    "version: 1\nbase: conf/img.qcow2\n",
    "version: 1\nbase: ./conf/img.qcow2\n",
    "version: 1\nbase: {url: https://example.com/x.qcow2, digest: sha256:" HEX64 "}\n",
    "version: 1\nbase: {url: \"http://127.0.0.1:8080/x.img\", digest: sha256:" HEX64 "}\n",
    "version: 1\nbase: {url: http://localhost/x.img, digest: sha256:" HEX64 "}\n",
    HEAD "secrets: [npm_token, a.b-c]\n",
    HEAD "steps:\n  - run: |\n      echo one\n        echo two\n",
    HEAD "env: {A: x}   # a tab\there is in a comment\n",
};

Test(machinefile, files_near_the_edges_are_accepted)
{
    struct project p = project_new();

    for (size_t i = 0; i < ARRAY_LEN(good_cases); i++) {
        struct mb_machinefile *mf = NULL;
        struct mb_error err = {0};

        cr_expect_eq(load_text(&p, good_cases[i], &mf, &err), 0, "case %zu refused:\n%s\n--- %s", i,
                     good_cases[i], err.msg);
        mb_machinefile_free(mf);
    }
    project_free(&p);
}

Test(machinefile, an_unknown_key_far_from_any_gets_no_suggestion)
{
    struct project p = project_new();
    static const char *const keys[] = {"colour", "xy", "stepsstepssteps"};

    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        struct mb_machinefile *mf;
        struct mb_error err = {0};
        char yaml[256];

        snprintf(yaml, sizeof(yaml), HEAD "%s: 1\n", keys[i]);
        cr_assert_eq(load_text(&p, yaml, &mf, &err), -1);
        cr_expect_not_null(strstr(err.msg, "unknown key"), "%s", err.msg);
        cr_expect_null(strstr(err.msg, "did you mean"), "%s", err.msg);
    }
    project_free(&p);
}

/* A byte a terminal could act on: C0, DEL, or C1 (U+0080 to U+009F) encoded as UTF-8. */
static bool has_terminal_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
            return true;
    return false;
}

/* Text from the file is quoted in messages with every control character masked. */
static const char *const hostile_text_cases[] = {
    HEAD "\"k\\e[2J\": 1\n",
    HEAD "\"k\\u009b2J\": 1\n",
    HEAD "cpus: \"\\e]0;title\\a\"\n",
    HEAD "arch: \"\\u009b31m\"\n",
    HEAD "memory: \"1\\u009bG\"\n",
    HEAD "volumes: [{name: \"\\u0085x\", target: /v, size: 1G}]\n",
    STEP "    copy: [\"\\e[2Jmissing\"]\n",
    STEP "    copy: [\"missing\\u0080\\u009f\"]\n",
};

Test(machinefile, messages_mask_control_characters)
{
    struct project p = project_new();

    for (size_t i = 0; i < ARRAY_LEN(hostile_text_cases); i++) {
        struct mb_machinefile *mf;
        struct mb_error err = {0};

        cr_assert_eq(load_text(&p, hostile_text_cases[i], &mf, &err), -1, "case %zu accepted", i);
        cr_expect(!has_terminal_control(err.msg), "case %zu: control character in: %s", i, err.msg);
        cr_expect_not_null(strchr(err.msg, '?'), "case %zu: nothing masked in: %s", i, err.msg);
    }
    project_free(&p);
}

Test(machinefile, defaults)
{
    struct project p = project_new();
    struct mb_machinefile *mf = load_ok(&p, HEAD "steps:\n  - run: one\n  - run: two\n");

    cr_assert_eq(mf->version, 1);
    cr_assert_str_eq(mf->base, "tiny");
    cr_assert_null(mf->base_digest);
    cr_assert_eq(mf->cpus, 2);
    cr_assert_eq(mf->memory, 2 * GIB);
    cr_assert_eq(mf->disk, 20 * GIB);
    cr_assert_not_null(mf->arch);
    cr_assert_eq(mf->env.count, 0);
    cr_assert_eq(mf->package_count, 0);
    cr_assert_eq(mf->port_count, 0);
    cr_assert_eq(mf->mount_count, 0);
    cr_assert_eq(mf->volume_count, 0);
    cr_assert_eq(mf->secret_count, 0);
    cr_assert(!mf->persistent);
    cr_assert_eq(mf->step_count, 2);
    for (size_t i = 0; i < mf->step_count; i++) {
        char name[32];

        snprintf(name, sizeof(name), "step %zu", i + 1);
        cr_assert_str_eq(mf->steps[i].name, name);
        cr_assert(mf->steps[i].network);
        cr_assert_eq(mf->steps[i].timeout_seconds, 1800);
        cr_assert_eq(mf->steps[i].copy_count, 0);
        cr_assert_eq(mf->steps[i].env.count, 0);
        cr_assert_eq(mf->steps[i].mark.line, 4 + i);
        cr_assert_eq(mf->steps[i].mark.column, 5);
    }
    cr_assert_str_eq(mf->steps[1].run, "two");
    mb_machinefile_free(mf);
    project_free(&p);
}

Test(machinefile, project_dir_is_absolute_and_resolved)
{
    struct project p = project_new();
    struct mb_machinefile *mf = load_ok(&p, HEAD);
    char *real = realpath(p.dir, NULL);

    cr_assert_str_eq(mf->path, p.machinefile);
    cr_assert_str_eq(mf->project_dir, real);
    free(real);
    mb_machinefile_free(mf);
    project_free(&p);
}

Test(machinefile, binary_size_spellings_are_equal)
{
    static const char *const spellings[] = {"2G", "2GiB", "2048MiB", "2048M", "2097152K"};
    struct project p = project_new();

    for (size_t i = 0; i < ARRAY_LEN(spellings); i++) {
        char yaml[256];
        struct mb_machinefile *mf;

        snprintf(yaml, sizeof(yaml),
                 HEAD "memory: %s\ndisk: %s\nvolumes: [{name: v, target: /v, size: %s}]\n",
                 spellings[i], spellings[i], spellings[i]);
        mf = load_ok(&p, yaml);
        cr_expect_eq(mf->memory, 2 * GIB, "memory: %s", spellings[i]);
        cr_expect_eq(mf->disk, 2 * GIB, "disk: %s", spellings[i]);
        cr_expect_eq(mf->volumes[0].size, 2 * GIB, "size: %s", spellings[i]);
        mb_machinefile_free(mf);
    }
    project_free(&p);
}

Test(machinefile, every_field_as_written)
{
    struct project p = project_new();
    struct mb_machinefile *mf =
        load_ok(&p, "version: 1\n"
                    "base: {url: https://example.com/b.qcow2, digest: sha256:" HEX64 "}\n"
                    "arch: aarch64\n"
                    "cpus: 4\n"
                    "memory: 512M\n"
                    "disk: 1T\n"
                    "env: {NODE_ENV: development, B: \"two words\"}\n"
                    "packages: [git, nodejs]\n"
                    "steps:\n"
                    "  - name: deps\n"
                    "    copy: [data.txt, {source: conf, target: /etc/app}]\n"
                    "    run: cd /work && make\n"
                    "    env: {CI: \"1\", NODE_ENV: test}\n"
                    "    network: false\n"
                    "    timeout: 2h\n"
                    "ports: [\"3000:3000\", 8080]\n"
                    "mounts: [{source: ., target: /work/, writable: true}]\n"
                    "volumes: [{name: pgdata, target: /var/lib/postgresql, size: 4GiB}]\n"
                    "persistent: true\n"
                    "secrets: [npm_token]\n");
    const struct mb_step *s = &mf->steps[0];
    struct mb_env env;
    struct mb_error err = {0};

    cr_assert_str_eq(mf->base, "https://example.com/b.qcow2");
    cr_assert_str_eq(mf->base_digest, "sha256:" HEX64);
    cr_assert_eq(mf->base_mark.line, 2);
    cr_assert_eq(mf->base_mark.column, 7);
    cr_assert_str_eq(mf->arch, "aarch64");
    cr_assert_eq(mf->cpus, 4);
    cr_assert_eq(mf->memory, 512ULL << 20);
    cr_assert_eq(mf->disk, 1ULL << 40);
    cr_assert_eq(mf->env.count, 2);
    cr_assert_str_eq(mf->env.vars[0].name, "NODE_ENV");
    cr_assert_str_eq(mf->env.vars[1].value, "two words");
    cr_assert_eq(mf->package_count, 2);
    cr_assert_str_eq(mf->packages[1], "nodejs");
    cr_assert_eq(mf->packages_mark.line, 8);
    cr_assert_eq(mf->packages_mark.column, 11);
    cr_assert_eq(mf->step_count, 1);
    cr_assert_str_eq(s->name, "deps");
    cr_assert_str_eq(s->run, "cd /work && make");
    cr_assert_eq(s->copy_count, 2);
    cr_assert_str_eq(s->copies[0].source, "data.txt");
    cr_assert_str_eq(s->copies[0].target, "/work/data.txt");
    cr_assert_eq(s->copies[0].mark.line, 11);
    cr_assert_eq(s->copies[0].mark.column, 12);
    cr_assert_str_eq(s->copies[1].source, "conf");
    cr_assert_str_eq(s->copies[1].target, "/etc/app");
    cr_assert(!s->network);
    cr_assert_eq(s->timeout_seconds, 7200);
    cr_assert_eq(mf->port_count, 2);
    cr_assert_eq(mf->ports[0].host, 3000);
    cr_assert_eq(mf->ports[0].guest, 3000);
    cr_assert_eq(mf->ports[1].host, 8080);
    cr_assert_eq(mf->ports[1].guest, 8080);
    cr_assert_eq(mf->mount_count, 1);
    cr_assert_str_eq(mf->mounts[0].source, ".");
    cr_assert_str_eq(mf->mounts[0].target, "/work");
    cr_assert(mf->mounts[0].writable);
    cr_assert_eq(mf->volume_count, 1);
    cr_assert_str_eq(mf->volumes[0].name, "pgdata");
    cr_assert_str_eq(mf->volumes[0].target, "/var/lib/postgresql");
    cr_assert_eq(mf->volumes[0].size, 4 * GIB);
    cr_assert(mf->persistent);
    cr_assert_eq(mf->secret_count, 1);
    cr_assert_str_eq(mf->secrets[0], "npm_token");

    cr_assert_eq(mb_machinefile_step_env(mf, s, &env, &err), 0, "%s", err.msg);
    cr_assert_eq(env.count, 3);
    cr_assert_str_eq(env.vars[0].name, "B");
    cr_assert_str_eq(env.vars[1].name, "CI");
    cr_assert_str_eq(env.vars[2].name, "NODE_ENV");
    cr_assert_str_eq(env.vars[2].value, "test");
    mb_env_free(&env);
    mb_machinefile_free(mf);
    project_free(&p);
}

/* ---- large and hostile files ------------------------------------------ */

#define LARGE_STEPS 500

/* A growing text buffer; aborts the test on failure. */
struct text {
    char *s;
    size_t len;
    size_t cap;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cr_assert_geq(n, 0);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        cr_assert_not_null(t->s);
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* Where the generator wrote step i, to compare with the parser's marks. */
static unsigned step_line[LARGE_STEPS];

static char *large_machinefile(void)
{
    struct text t = {0};
    unsigned line = 1;

    text_add(&t, "version: 1\nbase: tiny\nenv: {TOP: top}\nsteps:\n");
    line += 4;
    for (unsigned i = 0; i < LARGE_STEPS; i++) {
        step_line[i] = line;
        if (i % 3 == 0) {
            text_add(&t, "  - run: echo %u\n", i);
            line += 1;
            continue;
        }
        text_add(&t,
                 "  - name: step-%03u\n"
                 "    run: |\n"
                 "      echo %u\n"
                 "      touch /done-%u\n"
                 "    copy: [data.txt, {source: conf, target: /opt/c%u}]\n"
                 "    env: {N: \"%u\", TOP: step}\n"
                 "    network: %s\n"
                 "    timeout: %um\n",
                 i, i, i, i, i, i % 2 ? "false" : "true", i + 1);
        line += 8;
    }
    return t.s;
}

Test(machinefile, five_hundred_steps_parse_field_for_field)
{
    struct project p = project_new();
    char *yaml = large_machinefile();
    struct mb_machinefile *mf = load_ok(&p, yaml);
    static const unsigned samples[] = {0, 1, 2, 249, 250, 497, 498, 499};

    cr_assert_eq(mf->step_count, LARGE_STEPS);
    for (size_t k = 0; k < ARRAY_LEN(samples); k++) {
        unsigned i = samples[k];
        const struct mb_step *s = &mf->steps[i];
        char want[128];

        cr_expect_eq(s->mark.line, step_line[i], "step %u", i);
        cr_expect_eq(s->mark.column, 5, "step %u", i);
        if (i % 3 == 0) {
            snprintf(want, sizeof(want), "step %u", i + 1);
            cr_expect_str_eq(s->name, want);
            snprintf(want, sizeof(want), "echo %u", i);
            cr_expect_str_eq(s->run, want);
            cr_expect_eq(s->copy_count, 0, "step %u", i);
            cr_expect_eq(s->env.count, 0, "step %u", i);
            cr_expect(s->network, "step %u", i);
            cr_expect_eq(s->timeout_seconds, 1800, "step %u", i);
            continue;
        }
        snprintf(want, sizeof(want), "step-%03u", i);
        cr_expect_str_eq(s->name, want);
        snprintf(want, sizeof(want), "echo %u\ntouch /done-%u\n", i, i);
        cr_expect_str_eq(s->run, want);
        cr_assert_eq(s->copy_count, 2, "step %u", i);
        cr_expect_str_eq(s->copies[0].source, "data.txt");
        cr_expect_str_eq(s->copies[0].target, "/work/data.txt");
        cr_expect_eq(s->copies[0].mark.line, step_line[i] + 4, "step %u", i);
        cr_expect_eq(s->copies[0].mark.column, 12, "step %u", i);
        cr_expect_str_eq(s->copies[1].source, "conf");
        snprintf(want, sizeof(want), "/opt/c%u", i);
        cr_expect_str_eq(s->copies[1].target, want);
        cr_assert_eq(s->env.count, 2, "step %u", i);
        cr_expect_str_eq(s->env.vars[0].name, "N");
        snprintf(want, sizeof(want), "%u", i);
        cr_expect_str_eq(s->env.vars[0].value, want);
        cr_expect_str_eq(s->env.vars[1].value, "step");
        cr_expect_eq(s->network, i % 2 == 0, "step %u", i);
        cr_expect_eq(s->timeout_seconds, (uint64_t)(i + 1) * 60, "step %u", i);
    }
    mb_machinefile_free(mf);
    free(yaml);
    project_free(&p);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Nine levels of nine aliases each: 9^9 (387 million) strings if ever expanded. */
static char *alias_bomb(const char *before, const char *sep)
{
    struct text t = {0};

    text_add(&t, "%sa: &a [\"lol\"", before);
    for (int j = 1; j < 9; j++)
        text_add(&t, ",%s\"lol\"", sep);
    text_add(&t, "]\n");
    for (char level = 'b'; level <= 'i'; level++) {
        text_add(&t, "%c: &%c [*%c", level, level, level - 1);
        for (int j = 1; j < 9; j++)
            text_add(&t, ",%s*%c", sep, level - 1);
        text_add(&t, "]\n");
    }
    return t.s;
}

Test(machinefile, alias_bomb_is_refused_at_its_first_anchor)
{
    static const struct {
        const char *before;
        const char *sep;
        unsigned line;
    } bombs[] = {
        {"", "", 1},
        {HEAD, " ", 3},
        {"# a comment\n\n" HEAD "steps: []\n", " ", 6},
    };
    struct project p = project_new();

    for (size_t i = 0; i < ARRAY_LEN(bombs); i++) {
        char *yaml = alias_bomb(bombs[i].before, bombs[i].sep);
        struct mb_machinefile *mf;
        struct mb_error err = {0};
        struct timespec start;
        char prefix[4096];

        snprintf(prefix, sizeof(prefix), "%s:%u:4: ", p.machinefile, bombs[i].line);
        clock_gettime(CLOCK_MONOTONIC, &start);
        cr_assert_eq(load_text(&p, yaml, &mf, &err), -1, "bomb %zu accepted", i);
        cr_expect_lt(seconds_since(&start), 1.0, "bomb %zu took too long", i);
        cr_expect_eq(err.code, MB_ERR_INPUT);
        cr_expect(strncmp(err.msg, prefix, strlen(prefix)) == 0, "bomb %zu: %s", i, err.msg);
        cr_expect_not_null(strstr(err.msg, "anchors and aliases are not allowed"), "%s", err.msg);
        cr_expect_not_null(strstr(err.msg, "'&a'"), "%s", err.msg);
        free(yaml);
    }
    project_free(&p);
}

/* A Machinefile of exactly `size` bytes: the two required keys, then comment lines. */
static void write_padded(const char *path, size_t size)
{
    static const char head[] = HEAD;
    FILE *f = fopen(path, "w");
    size_t left = size - (sizeof(head) - 1);
    struct stat st;

    cr_assert_not_null(f);
    fputs(head, f);
    while (left > 0) {
        size_t line = left < 80 ? left : 80;

        fputc('#', f);
        for (size_t i = 2; i < line; i++)
            fputc('x', f);
        if (line > 1)
            fputc('\n', f);
        left -= line;
    }
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((size_t)st.st_size, size);
}

static void expect_too_large(const struct mb_error *err, const char *path)
{
    char want[4096];

    snprintf(want, sizeof(want), "'%s' is larger than %d bytes", path, MB_MACHINEFILE_MAX_SIZE);
    cr_expect_eq(err->code, MB_ERR_INPUT);
    cr_expect_not_null(strstr(err->msg, want), "%s", err->msg);
}

Test(machinefile, files_over_the_size_cap_are_refused_naming_the_file)
{
    struct project p = project_new();
    struct mb_machinefile *mf;
    struct mb_error err = {0};
    size_t big = 10 * 1024 * 1024;
    char *text;

    write_padded(p.machinefile, MB_MACHINEFILE_MAX_SIZE);
    cr_assert_eq(mb_machinefile_load(p.machinefile, &mf, &err), 0, "%s", err.msg);
    mb_machinefile_free(mf);

    write_padded(p.machinefile, MB_MACHINEFILE_MAX_SIZE + 1);
    cr_assert_eq(mb_machinefile_load(p.machinefile, &mf, &err), -1);
    cr_assert_null(mf);
    expect_too_large(&err, p.machinefile);

    write_padded(p.machinefile, big);
    mb_error_clear(&err);
    cr_assert_eq(mb_machinefile_load(p.machinefile, &mf, &err), -1);
    cr_assert_null(mf);
    expect_too_large(&err, p.machinefile);

    /* The same cap holds for text already in memory. */
    text = malloc(big);
    cr_assert_not_null(text);
    memset(text, '#', big);
    memcpy(text, HEAD, strlen(HEAD));
    mb_error_clear(&err);
    cr_assert_eq(mb_machinefile_parse(p.machinefile, text, big, &mf, &err), -1);
    cr_assert_null(mf);
    expect_too_large(&err, p.machinefile);
    free(text);
    project_free(&p);
}

Test(machinefile, parse_names_the_given_path_in_errors)
{
    struct project p = project_new();
    static const char text[] = HEAD "cpus: many\n";
    struct mb_machinefile *mf;
    struct mb_error err = {0};

    cr_assert_eq(mb_machinefile_parse(p.machinefile, text, strlen(text), &mf, &err), -1);
    cr_assert_null(mf);
    cr_assert_eq(err.code, MB_ERR_INPUT);
    cr_assert(strncmp(err.msg, p.machinefile, strlen(p.machinefile)) == 0, "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ":3:7: 'cpus' must be"), "%s", err.msg);
    project_free(&p);
}

/* ---- mb_size_parse and mb_duration_parse -------------------------------- */

struct number_case {
    const char *text;
    uint64_t value;      /* when accepted */
    const char *message; /* when refused: a key part of the message */
};

static const struct number_case size_cases[] = {
    {"1K", 1024, NULL},
    {"1KiB", 1024, NULL},
    {"512M", 512ULL << 20, NULL},
    {"512MiB", 512ULL << 20, NULL},
    {"2G", 2 * GIB, NULL},
    {"2GiB", 2 * GIB, NULL},
    {"2048MiB", 2 * GIB, NULL},
    {"1T", 1ULL << 40, NULL},
    {"1TiB", 1ULL << 40, NULL},
    {"16777215T", 16777215ULL << 40, NULL},
    {"18014398509481983K", 18014398509481983ULL << 10, NULL},
    {"", 0, "invalid size '': expected a whole number and a unit"},
    {"G", 0, "invalid size 'G': expected a whole number"},
    {"-1G", 0, "invalid size '-1G': expected a whole number"},
    {"+1G", 0, "invalid size '+1G'"},
    {" 2G", 0, "invalid size ' 2G'"},
    {"2", 0, "size '2' needs a unit: K, M, G, T, KiB, MiB, GiB or TiB"},
    {"2048", 0, "size '2048' needs a unit"},
    {"2GB", 0, "invalid size '2GB': write G or GiB (units are binary: 1G is 1024^3 bytes)"},
    {"2MB", 0, "write M or MiB"},
    {"2g", 0, "write G or GiB"},
    {"2gib", 0, "write G or GiB"},
    {"2KB", 0, "write K or KiB (units are binary: 1K is 1024^1 bytes)"},
    {"2 G", 0, "invalid size '2 G': the unit must be K, M, G, T, KiB, MiB, GiB or TiB"},
    {"2G ", 0, "invalid size '2G '"},
    {"2B", 0, "invalid size '2B': the unit must be"},
    {"2.5G", 0, "invalid size '2.5G': sizes are whole numbers"},
    {"0G", 0, "size '0G' must be greater than zero"},
    {"0x10G", 0, "invalid size '0x10G'"},
    {"16777216T", 0, "size '16777216T' is too large"},
    {"99999999999T", 0, "size '99999999999T' is too large"},
    {"18014398509481984K", 0, "is too large"},
    {"99999999999999999999G", 0, "size '99999999999999999999G' is too large"},
};

static const struct number_case duration_cases[] = {
    {"1s", 1, NULL},
    {"90s", 90, NULL},
    {"30m", 1800, NULL},
    {"2h", 7200, NULL},
    {"5124095576030431h", 5124095576030431ULL * 3600, NULL},
    {"18446744073709551615s", UINT64_MAX, NULL},
    {"", 0, "invalid duration '': expected a whole number and s, m or h"},
    {"m", 0, "invalid duration 'm'"},
    {"-5m", 0, "invalid duration '-5m'"},
    {"30", 0, "duration '30' needs a unit: s, m or h"},
    {"30d", 0, "invalid duration '30d': the unit must be s, m or h"},
    {"30M", 0, "invalid duration '30M'"},
    {"30 m", 0, "invalid duration '30 m'"},
    {"1.5h", 0, "invalid duration '1.5h'"},
    {"30min", 0, "invalid duration '30min'"},
    {"0s", 0, "duration '0s' must be greater than zero"},
    {"0h", 0, "must be greater than zero"},
    {"5124095576030432h", 0, "duration '5124095576030432h' is too long"},
    {"18446744073709551616s", 0, "is too long"},
    {"99999999999999999999s", 0, "duration '99999999999999999999s' is too long"},
};

typedef int (*number_fn)(const char *text, uint64_t *out, struct mb_error *err);

static void check_numbers(number_fn parse, const struct number_case *cases, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct number_case *c = &cases[i];
        struct mb_error err = {0};
        uint64_t value = 12345;
        int rc = parse(c->text, &value, &err);

        if (c->message == NULL) {
            cr_expect_eq(rc, 0, "case %zu '%s' refused: %s", i, c->text, err.msg);
            cr_expect_eq(value, c->value, "case %zu '%s': %" PRIu64 ", not %" PRIu64, i, c->text,
                         value, c->value);
            continue;
        }
        cr_expect_eq(rc, -1, "case %zu '%s' accepted as %" PRIu64, i, c->text, value);
        cr_expect_eq(value, 12345, "case %zu '%s': output written on failure", i, c->text);
        cr_expect_eq(err.code, MB_ERR_INPUT, "case %zu '%s'", i, c->text);
        cr_expect_not_null(strstr(err.msg, c->message), "case %zu '%s': expected \"%s\", got: %s",
                           i, c->text, c->message, err.msg);
    }
}

Test(machinefile, size_parse)
{
    check_numbers(mb_size_parse, size_cases, ARRAY_LEN(size_cases));
}

Test(machinefile, duration_parse)
{
    check_numbers(mb_duration_parse, duration_cases, ARRAY_LEN(duration_cases));
}
