/*
 * The Machinefile reader: YAML text to a checked struct mb_machinefile.
 *
 * Three passes, each refusing as early as it can. A scan of the raw text
 * refuses tabs in indentation, which libyaml reports late or not at all.
 * libyaml's event parser then builds a small tree of our own, with marks,
 * refusing anchors, aliases and tags the moment they appear (so an alias
 * bomb costs nothing) and duplicate keys as each mapping closes. Last,
 * table-driven schemas turn the tree into the struct, checking types and
 * ranges, and checking every path the file names against the project
 * directory with openat2(RESOLVE_BENEATH), which no symlink can fool.
 *
 * The text is hostile until checked: every error reads
 * "PATH:LINE:COLUMN: message", and user text is quoted in messages only
 * shortened and with control characters masked, so that a Machinefile
 * cannot write escape sequences to the user's terminal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <yaml.h>

#include "mbuild/fsutil.h"
#include "mbuild/machinefile.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Far deeper than any valid Machinefile; bounds the recursion of the tree builder. */
#define MAX_DEPTH 32
/* The most keys a schema has; parse_fields tracks them in a fixed array. */
#define MAX_FIELDS 16
/* How much of a user's string an error message quotes. */
#define SHOW_MAX 64
/* Keys longer than this get no "did you mean" suggestion. */
#define SUGGEST_MAX 32

#define DEFAULT_CPUS    2
#define MAX_CPUS        256
#define DEFAULT_MEMORY  (2ULL << 30)
#define DEFAULT_DISK    (20ULL << 30)
#define DEFAULT_TIMEOUT 1800

/* ---- messages ---------------------------------------------------------- */

/* A buffer for one quoted piece of user text. */
struct shown {
    char s[SHOW_MAX + 4];
};

/*
 * The length in bytes of the control character text starts with, else 0:
 * C0 and DEL, and C1 (U+0080 to U+009F) in UTF-8, which terminals may
 * obey too (U+009B is CSI).
 */
static size_t control_length(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;

    if (p[0] != '\0' && (p[0] < 0x20 || p[0] == 0x7f))
        return 1;
    if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
        return 2;
    return 0;
}

/* User text fit for a message: shortened, each control character masked as one '?'. */
static const char *show(const char *text, struct shown *buf)
{
    size_t i = 0, n = 0;

    while (text[i] != '\0' && n < SHOW_MAX) {
        size_t control = control_length(text + i);

        buf->s[n++] = control > 0 ? '?' : text[i];
        i += control > 0 ? control : 1;
    }
    strcpy(buf->s + n, text[i] != '\0' ? "..." : "");
    return buf->s;
}

enum node_kind {
    NODE_SCALAR,
    NODE_SEQUENCE,
    NODE_MAPPING,
};

/* A YAML node as written. A mapping's kids alternate key, value. */
struct node {
    enum node_kind kind;
    struct mb_mark mark;
    bool plain; /* a scalar written bare: no quotes, no block indicator */
    char *text; /* a scalar's text; never contains NUL */
    struct node **kids;
    size_t count;
    size_t cap;
};

/* What a parse is working on, and what to blame in errors. */
struct ctx {
    const char *path;
    int project_fd;
    struct mb_error *err;
    char label[128]; /* the value being checked, quoted: "'cpus'", "an entry of 'ports'" */
    const struct node *mounts;
    const struct node *volumes;
};

static int fail(struct ctx *c, struct mb_mark m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct ctx *c, struct mb_mark m, const char *fmt, ...)
{
    char msg[MB_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return mb_error_set(c->err, MB_ERR_INPUT, "%s:%u:%u: %s", c->path, m.line, m.column, msg);
}

static int oom(struct ctx *c)
{
    return mb_error_set(c->err, MB_ERR_GENERAL, "out of memory");
}

static void set_label(struct ctx *c, const char *fmt, const char *what)
{
    struct shown s;

    snprintf(c->label, sizeof(c->label), fmt, show(what, &s));
}

/* Put the place and the label in front of an error from a helper such as mb_size_parse. */
static int locate(struct ctx *c, struct mb_mark m)
{
    return mb_error_prefix(c->err, "%s:%u:%u: %s", c->path, m.line, m.column, c->label);
}

static struct mb_mark first_mark(void)
{
    return (struct mb_mark){1, 1};
}

/* ---- the tab scan ------------------------------------------------------ */

static bool is_break(char ch)
{
    return ch == '\n' || ch == '\r';
}

/* The offset just past the line break ending the line that holds offset i. */
static size_t next_line(const char *text, size_t len, size_t i)
{
    while (i < len && !is_break(text[i]))
        i++;
    if (i + 1 < len && text[i] == '\r' && text[i + 1] == '\n')
        i++;
    return i < len ? i + 1 : len;
}

/*
 * A tab in indentation means different things to different editors, and
 * YAML forbids it; say so plainly rather than let libyaml report a puzzle
 * lines later. Blank lines carry no indentation and pass.
 * NEEDSWORK: a tab leading a line inside a block scalar is content, not
 * indentation, yet is refused too; scripts must indent with spaces.
 */
static int scan_tabs(struct ctx *c, const char *text, size_t len)
{
    unsigned line = 1;

    for (size_t i = 0; i < len; i = next_line(text, len, i), line++) {
        size_t start = i, tab = SIZE_MAX;

        for (; i < len && (text[i] == ' ' || text[i] == '\t'); i++)
            if (text[i] == '\t' && tab == SIZE_MAX)
                tab = i - start;
        if (tab != SIZE_MAX && i < len && !is_break(text[i]))
            return fail(c, (struct mb_mark){line, (unsigned)tab + 1},
                        "tab in indentation; use spaces");
    }
    return 0;
}

/* ---- the tree ---------------------------------------------------------- */

static void node_free(struct node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->count; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static int add_kid(struct node *n, struct node *kid)
{
    if (n->count == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 4;
        struct node **grown = realloc(n->kids, cap * sizeof(*grown));

        if (grown == NULL)
            return -1;
        n->kids = grown;
        n->cap = cap;
    }
    n->kids[n->count++] = kid;
    return 0;
}

static const struct node *map_get(const struct node *map, const char *key)
{
    for (size_t i = 0; map->kind == NODE_MAPPING && i < map->count; i += 2)
        if (strcmp(map->kids[i]->text, key) == 0)
            return map->kids[i + 1];
    return NULL;
}

/* Null as YAML spells it: an empty plain scalar, ~ or null. */
static bool is_null(const struct node *n)
{
    static const char *const spellings[] = {"", "~", "null", "Null", "NULL"};

    if (n->kind != NODE_SCALAR || !n->plain)
        return false;
    for (size_t i = 0; i < ARRAY_LEN(spellings); i++)
        if (strcmp(n->text, spellings[i]) == 0)
            return true;
    return false;
}

struct named {
    const char *name;
    struct mb_mark mark;
};

static int mark_cmp(struct mb_mark a, struct mb_mark b)
{
    if (a.line != b.line)
        return a.line < b.line ? -1 : 1;
    if (a.column != b.column)
        return a.column < b.column ? -1 : 1;
    return 0;
}

static int named_cmp(const void *pa, const void *pb)
{
    const struct named *a = pa, *b = pb;
    int by_name = strcmp(a->name, b->name);

    return by_name != 0 ? by_name : mark_cmp(a->mark, b->mark);
}

/*
 * Refuse a name written twice, pointing at the second writing. Of several
 * such names, the one whose second writing comes first in the file is
 * blamed, so the message does not depend on the sort. Sorting rather than
 * comparing pairs keeps a hostile file of 100,000 keys fast.
 */
static int check_unique(struct ctx *c, struct named *v, size_t count, const char *what)
{
    const struct named *first = NULL, *second = NULL;
    struct shown s;

    qsort(v, count, sizeof(*v), named_cmp);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(v[i].name, v[i - 1].name) != 0)
            continue;
        if (i >= 2 && strcmp(v[i].name, v[i - 2].name) == 0)
            continue;
        if (second == NULL || mark_cmp(v[i].mark, second->mark) < 0) {
            first = &v[i - 1];
            second = &v[i];
        }
    }
    if (second == NULL)
        return 0;
    return fail(c, second->mark, "duplicate %s '%s' (first at line %u, column %u)", what,
                show(second->name, &s), first->mark.line, first->mark.column);
}

/* Mapping keys must be scalars, each written once. */
static int check_mapping(struct ctx *c, const struct node *map)
{
    size_t pairs = map->count / 2;
    struct named *keys;
    int rc;

    for (size_t i = 0; i < map->count; i += 2)
        if (map->kids[i]->kind != NODE_SCALAR)
            return fail(c, map->kids[i]->mark, "keys must be strings, not lists or mappings");
    if (pairs < 2)
        return 0;
    keys = malloc(pairs * sizeof(*keys));
    if (keys == NULL)
        return oom(c);
    for (size_t i = 0; i < pairs; i++)
        keys[i] = (struct named){map->kids[2 * i]->text, map->kids[2 * i]->mark};
    rc = check_unique(c, keys, pairs, "key");
    free(keys);
    return rc;
}

/* The parser and the text it reads, for the tree builder. */
struct builder {
    struct ctx *c;
    yaml_parser_t parser;
    const char *text;
    size_t len;
};

static struct mb_mark mark_of(yaml_mark_t m)
{
    return (struct mb_mark){(unsigned)m.line + 1, (unsigned)m.column + 1};
}

/* Reader errors carry a byte offset, not a mark: count lines and characters up to it. */
static struct mb_mark mark_at(const char *text, size_t len, size_t offset)
{
    struct mb_mark m = {1, 1};

    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 >= len || text[i + 1] != '\n'))) {
            m.line++;
            m.column = 1;
        } else if (text[i] != '\r' && ((unsigned char)text[i] & 0xc0) != 0x80) {
            m.column++;
        }
    }
    return m;
}

static int yaml_failure(struct builder *b)
{
    const yaml_parser_t *p = &b->parser;
    const char *problem = p->problem ? p->problem : "unknown problem";

    if (p->error == YAML_MEMORY_ERROR)
        return oom(b->c);
    if (p->error == YAML_READER_ERROR && p->problem_value >= 0)
        return fail(b->c, mark_at(b->text, b->len, p->problem_offset), "%s (byte 0x%02x)", problem,
                    (unsigned)p->problem_value);
    if (p->error == YAML_READER_ERROR)
        return fail(b->c, mark_at(b->text, b->len, p->problem_offset), "%s", problem);
    if (p->context != NULL)
        return fail(b->c, mark_of(p->problem_mark), "%s (%s at line %u)", problem, p->context,
                    (unsigned)p->context_mark.line + 1);
    return fail(b->c, mark_of(p->problem_mark), "%s", problem);
}

/*
 * Anchors and aliases let a few lines expand into gigabytes ("billion
 * laughs") and make a file mean more than it shows; tags change what a
 * scalar is. A Machinefile has no use for any of them.
 */
static int refuse_properties(struct builder *b, const yaml_event_t *ev)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    struct mb_mark m = mark_of(ev->start_mark);
    struct shown s;

    if (ev->type == YAML_ALIAS_EVENT)
        return fail(b->c, m, "anchors and aliases are not allowed (found alias '*%s')",
                    show((const char *)ev->data.alias.anchor, &s));
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (anchor != NULL)
        return fail(b->c, m, "anchors and aliases are not allowed (found anchor '&%s')",
                    show((const char *)anchor, &s));
    if (tag != NULL)
        return fail(b->c, m, "tags are not allowed (found '%s')", show((const char *)tag, &s));
    return 0;
}

static int next_event(struct builder *b, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&b->parser, ev))
        return yaml_failure(b);
    if (refuse_properties(b, ev) < 0) {
        yaml_event_delete(ev);
        return -1;
    }
    return 0;
}

static int fill_scalar(struct builder *b, struct node *n, const yaml_event_t *ev)
{
    const char *value = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;

    /* "\0" in a double-quoted string would silently cut every C string made from it. */
    if (memchr(value, '\0', len) != NULL)
        return fail(b->c, n->mark, "strings must not contain NUL characters");
    n->kind = NODE_SCALAR;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->text = strndup(value, len);
    return n->text == NULL ? oom(b->c) : 0;
}

static int build_node(struct builder *b, yaml_event_t *ev, unsigned depth, struct node **out);

/* Add nodes to n until the event that closes it. */
static int build_kids(struct builder *b, struct node *n, yaml_event_type_t end, unsigned depth)
{
    for (;;) {
        yaml_event_t ev;
        struct node *kid;

        if (next_event(b, &ev) < 0)
            return -1;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (build_node(b, &ev, depth + 1, &kid) < 0)
            return -1;
        if (add_kid(n, kid) < 0) {
            node_free(kid);
            return oom(b->c);
        }
    }
}

/* Build the node that ev starts, consuming ev. */
static int build_node(struct builder *b, yaml_event_t *ev, unsigned depth, struct node **out)
{
    yaml_event_type_t type = ev->type;
    struct node *n = calloc(1, sizeof(*n));
    int rc;

    if (n == NULL) {
        yaml_event_delete(ev);
        return oom(b->c);
    }
    n->mark = mark_of(ev->start_mark);
    if (depth > MAX_DEPTH)
        rc = fail(b->c, n->mark, "nesting deeper than %d levels", MAX_DEPTH);
    else if (type == YAML_SCALAR_EVENT)
        rc = fill_scalar(b, n, ev);
    else if (type != YAML_SEQUENCE_START_EVENT && type != YAML_MAPPING_START_EVENT)
        rc = fail(b->c, n->mark, "unexpected YAML event %d", (int)type);
    else
        rc = 0;
    yaml_event_delete(ev);
    if (rc == 0 && type == YAML_SEQUENCE_START_EVENT) {
        n->kind = NODE_SEQUENCE;
        rc = build_kids(b, n, YAML_SEQUENCE_END_EVENT, depth);
    } else if (rc == 0 && type == YAML_MAPPING_START_EVENT) {
        n->kind = NODE_MAPPING;
        rc = build_kids(b, n, YAML_MAPPING_END_EVENT, depth);
        if (rc == 0)
            rc = check_mapping(b->c, n);
    }
    if (rc < 0) {
        node_free(n);
        return -1;
    }
    *out = n;
    return 0;
}

/* The one document of the stream; a second one is refused where it starts. */
static int build_stream(struct builder *b, struct node **root)
{
    bool had_document = false;

    for (;;) {
        yaml_event_t ev;

        if (next_event(b, &ev) < 0)
            return -1;
        if (ev.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT && had_document) {
            struct mb_mark m = mark_of(ev.start_mark);

            yaml_event_delete(&ev);
            return fail(b->c, m, "a second YAML document; a Machinefile holds exactly one");
        }
        if (ev.type != YAML_DOCUMENT_START_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        had_document = true;
        yaml_event_delete(&ev);
        if (next_event(b, &ev) < 0 || build_node(b, &ev, 0, root) < 0)
            return -1;
    }
}

static int build_tree(struct ctx *c, const char *text, size_t len, struct node **root)
{
    struct builder b = {.c = c, .text = text, .len = len};
    int rc;

    *root = NULL;
    if (!yaml_parser_initialize(&b.parser))
        return oom(c);
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&b.parser, YAML_UTF8_ENCODING);
    rc = build_stream(&b, root);
    yaml_parser_delete(&b.parser);
    if (rc < 0) {
        node_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ---- scalars ----------------------------------------------------------- */

static int type_error(struct ctx *c, const struct node *n, const char *expected)
{
    struct shown s;

    if (n->kind == NODE_SEQUENCE)
        return fail(c, n->mark, "%s must be %s, got a list", c->label, expected);
    if (n->kind == NODE_MAPPING)
        return fail(c, n->mark, "%s must be %s, got a mapping", c->label, expected);
    if (is_null(n))
        return fail(c, n->mark, "%s must be %s, got %s", c->label, expected,
                    n->text[0] == '\0' ? "no value" : "null");
    return fail(c, n->mark, "%s must be %s, got %s'%s'", c->label, expected,
                n->plain ? "" : "the quoted string ", show(n->text, &s));
}

/* Any non-null scalar, as written. */
static int get_string(struct ctx *c, const struct node *n, const char *expected, const char **text)
{
    if (n->kind != NODE_SCALAR || is_null(n))
        return type_error(c, n, expected);
    *text = n->text;
    return 0;
}

static int dup_into(struct ctx *c, const char *text, char **slot)
{
    *slot = strdup(text);
    return *slot == NULL ? oom(c) : 0;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

enum number {
    NUMBER_OK,
    NUMBER_NONE,
    NUMBER_OVERFLOW,
};

/* Leading decimal digits of text; *end is set past them. */
static enum number parse_digits(const char *text, uint64_t *value, const char **end)
{
    uint64_t v = 0;
    const char *p = text;

    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');

        if (v > (UINT64_MAX - d) / 10)
            return NUMBER_OVERFLOW;
        v = v * 10 + d;
    }
    *end = p;
    *value = v;
    return p == text ? NUMBER_NONE : NUMBER_OK;
}

/*
 * An integer as a plain decimal scalar only: YAML's other spellings (0x1f,
 * 0o17, +1, 1_000) and quoted numbers are refused, and so is a leading zero,
 * which some YAML readers take as octal.
 */
static bool plain_decimal(const struct node *n, uint64_t *out)
{
    const char *end;

    if (n->kind != NODE_SCALAR || !n->plain || (n->text[0] == '0' && n->text[1] != '\0'))
        return false;
    return parse_digits(n->text, out, &end) == NUMBER_OK && *end == '\0';
}

static bool is_blank(const char *text)
{
    return text[strspn(text, " \t\r\n")] == '\0';
}

static bool has_control(const char *text)
{
    for (; *text != '\0'; text++)
        if (control_length(text) > 0)
            return true;
    return false;
}

/* ---- names ------------------------------------------------------------- */

static bool is_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_alnum(char ch)
{
    return is_alpha(ch) || is_digit(ch);
}

static bool is_lower_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || is_digit(ch);
}

static bool is_env_first(char ch)
{
    return is_alpha(ch) || ch == '_';
}

static bool is_env_char(char ch)
{
    return is_alnum(ch) || ch == '_';
}

static bool is_package_char(char ch)
{
    return is_alnum(ch) || (ch != '\0' && strchr("+.:=~_-", ch) != NULL);
}

static bool is_secret_char(char ch)
{
    return is_alnum(ch) || (ch != '\0' && strchr("_.-", ch) != NULL);
}

static bool is_volume_char(char ch)
{
    return is_lower_alnum(ch) || (ch != '\0' && strchr("_.-", ch) != NULL);
}

static bool is_recipe_char(char ch)
{
    return is_lower_alnum(ch) || ch == '.' || ch == '-';
}

/* What a kind of name may be spelled with: its first character, then the rest. */
struct name_rule {
    const char *what;
    bool (*first)(char);
    bool (*rest)(char);
    bool not_only_dots; /* "." and ".." would name directories where the name becomes a file */
    const char *hint;
};

static const struct name_rule env_rule = {"env name", is_env_first, is_env_char, false,
                                          "letters, digits and '_', not starting with a digit"};
/* Package names reach a shell command line: nothing that a shell or apt reads as syntax. */
static const struct name_rule package_rule = {
    "package name", is_alnum, is_package_char, false,
    "letters, digits and + . : = ~ _ -, starting with a letter or digit"};
static const struct name_rule secret_rule = {"secret name", is_secret_char, is_secret_char, true,
                                             "letters, digits, '_', '.' and '-', not only dots"};
static const struct name_rule volume_rule = {
    "volume name", is_lower_alnum, is_volume_char, false,
    "lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"};
static const struct name_rule recipe_rule = {
    "base recipe name", is_lower_alnum, is_recipe_char, false,
    "lowercase letters, digits, '.' and '-', starting with a letter or digit"};

static bool name_matches(const char *name, const struct name_rule *rule)
{
    if (!rule->first(name[0]))
        return false;
    for (const char *p = name + 1; *p != '\0'; p++)
        if (!rule->rest(*p))
            return false;
    return !rule->not_only_dots || name[strspn(name, ".")] != '\0';
}

static int check_name(struct ctx *c, const struct node *n, const struct name_rule *rule)
{
    struct shown s;

    if (name_matches(n->text, rule))
        return 0;
    return fail(c, n->mark, "invalid %s '%s' (allowed: %s)", rule->what, show(n->text, &s),
                rule->hint);
}

/* A string list entry that must be a valid name, copied into *slot. */
static int parse_name(struct ctx *c, const struct node *n, const struct name_rule *rule,
                      char **slot)
{
    const char *text;

    if (get_string(c, n, "a string", &text) < 0 || check_name(c, n, rule) < 0)
        return -1;
    return dup_into(c, text, slot);
}

/* ---- sizes and durations ----------------------------------------------- */

struct unit {
    const char *name;
    uint64_t scale;
};

static const struct unit size_units[] = {
    {"K", 1ULL << 10}, {"KiB", 1ULL << 10}, {"M", 1ULL << 20}, {"MiB", 1ULL << 20},
    {"G", 1ULL << 30}, {"GiB", 1ULL << 30}, {"T", 1ULL << 40}, {"TiB", 1ULL << 40},
};

static const struct unit duration_units[] = {
    {"s", 1},
    {"m", 60},
    {"h", 3600},
};

static const struct unit *find_unit(const struct unit *units, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(units[i].name, name) == 0)
            return &units[i];
    return NULL;
}

/*
 * "GB", "g", "gib": the user meant a unit we have under another spelling.
 * Decimal units are refused rather than read as 10^9, which is not what
 * QEMU or a disk image means by G.
 */
static int size_unit_error(const char *text, const char *unit, struct mb_error *err)
{
    static const char prefixes[] = "KMGT";
    char upper = unit[0] >= 'a' && unit[0] <= 'z' ? (char)(unit[0] - 'a' + 'A') : unit[0];
    const char *prefix = upper != '\0' ? strchr(prefixes, upper) : NULL;
    struct shown s;

    if (unit[0] == '.')
        return mb_error_set(err, MB_ERR_INPUT, "invalid size '%s': sizes are whole numbers",
                            show(text, &s));
    if (prefix != NULL)
        return mb_error_set(err, MB_ERR_INPUT,
                            "invalid size '%s': write %c or %ciB (units are binary: 1%c is "
                            "1024^%d bytes)",
                            show(text, &s), upper, upper, upper, (int)(prefix - prefixes) + 1);
    return mb_error_set(err, MB_ERR_INPUT,
                        "invalid size '%s': the unit must be K, M, G, T, KiB, MiB, GiB or TiB",
                        show(text, &s));
}

int mb_size_parse(const char *text, uint64_t *out, struct mb_error *err)
{
    const struct unit *unit;
    const char *rest;
    struct shown s;
    uint64_t n;

    switch (parse_digits(text, &n, &rest)) {
    case NUMBER_NONE:
        return mb_error_set(err, MB_ERR_INPUT,
                            "invalid size '%s': expected a whole number and a unit, as in 2GiB",
                            show(text, &s));
    case NUMBER_OVERFLOW:
        return mb_error_set(err, MB_ERR_INPUT, "size '%s' is too large", show(text, &s));
    case NUMBER_OK:
        break;
    }
    if (*rest == '\0')
        return mb_error_set(err, MB_ERR_INPUT,
                            "size '%s' needs a unit: K, M, G, T, KiB, MiB, GiB or TiB",
                            show(text, &s));
    unit = find_unit(size_units, ARRAY_LEN(size_units), rest);
    if (unit == NULL)
        return size_unit_error(text, rest, err);
    if (n == 0)
        return mb_error_set(err, MB_ERR_INPUT, "size '%s' must be greater than zero",
                            show(text, &s));
    if (n > UINT64_MAX / unit->scale)
        return mb_error_set(err, MB_ERR_INPUT, "size '%s' is too large", show(text, &s));
    *out = n * unit->scale;
    return 0;
}

int mb_duration_parse(const char *text, uint64_t *seconds, struct mb_error *err)
{
    const struct unit *unit;
    const char *rest;
    struct shown s;
    uint64_t n;

    switch (parse_digits(text, &n, &rest)) {
    case NUMBER_NONE:
        return mb_error_set(err, MB_ERR_INPUT,
                            "invalid duration '%s': expected a whole number and s, m or h, "
                            "as in 90s, 30m or 2h",
                            show(text, &s));
    case NUMBER_OVERFLOW:
        return mb_error_set(err, MB_ERR_INPUT, "duration '%s' is too long", show(text, &s));
    case NUMBER_OK:
        break;
    }
    if (*rest == '\0')
        return mb_error_set(err, MB_ERR_INPUT, "duration '%s' needs a unit: s, m or h",
                            show(text, &s));
    unit = find_unit(duration_units, ARRAY_LEN(duration_units), rest);
    if (unit == NULL)
        return mb_error_set(err, MB_ERR_INPUT,
                            "invalid duration '%s': the unit must be s, m or h, as in 90s, 30m "
                            "or 2h",
                            show(text, &s));
    if (n == 0)
        return mb_error_set(err, MB_ERR_INPUT, "duration '%s' must be greater than zero",
                            show(text, &s));
    if (n > UINT64_MAX / unit->scale)
        return mb_error_set(err, MB_ERR_INPUT, "duration '%s' is too long", show(text, &s));
    *seconds = n * unit->scale;
    return 0;
}

/* ---- paths ------------------------------------------------------------- */

enum normal {
    NORMAL_OK,
    NORMAL_DOTDOT,
    NORMAL_NOMEM,
};

/*
 * Drop empty and "." components, so "./a//b/" and "a/b" are one string.
 * Any ".." is refused rather than folded: "a/../b" is not obviously inside
 * the project when "a" is a symlink. An empty result is "." (or "/").
 */
static enum normal normalise(const char *path, char **out)
{
    bool absolute = path[0] == '/';
    char *buf = malloc(strlen(path) + 2);
    size_t len = 0;

    if (buf == NULL)
        return NORMAL_NOMEM;
    for (const char *p = path; *p != '\0';) {
        size_t n = strcspn(p, "/");

        if (n == 2 && p[0] == '.' && p[1] == '.') {
            free(buf);
            return NORMAL_DOTDOT;
        }
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (len > 0 || absolute)
                buf[len++] = '/';
            memcpy(buf + len, p, n);
            len += n;
        }
        p += n + (p[n] == '/');
    }
    if (len == 0)
        buf[len++] = absolute ? '/' : '.';
    buf[len] = '\0';
    *out = buf;
    return NORMAL_OK;
}

/* How a path in the project is used, and so what it must be. */
struct path_use {
    const char *what; /* "copy source" */
    bool want_dir;    /* a mount shares a directory */
    bool want_file;   /* a base image is a file */
    bool walk;        /* a copied directory is checked entry by entry */
};

static const struct path_use copy_use = {"copy source", false, false, true};
static const struct path_use mount_use = {"mount source", true, false, false};
static const struct path_use base_use = {"base image", false, true, false};

static const char *path_problem(int errnum)
{
    static const struct {
        int errnum;
        const char *problem;
    } problems[] = {
        {EXDEV, "resolves outside the project directory"},
        {ENOENT, "does not exist"},
        {ELOOP, "goes through a symlink loop or too many symlinks"},
        {ENOTDIR, "goes through something that is not a directory"},
        {ENAMETOOLONG, "is too long"},
        {ENOSYS, "cannot be checked: openat2 needs Linux 5.6 or later"},
    };

    for (size_t i = 0; i < ARRAY_LEN(problems); i++)
        if (problems[i].errnum == errnum)
            return problems[i].problem;
    return strerror(errnum);
}

/* openat2 beneath the project; EAGAIN means a rename raced the lookup, so look again. */
static int open_beneath(struct ctx *c, const char *path, int flags)
{
    int fd, tries = 0;

    do
        fd = mb_fs_open_beneath(c->project_fd, path, flags);
    while (fd < 0 && errno == EAGAIN && ++tries < 16);
    return fd;
}

/* An error about n's path, or about `inner`, something found beneath it. */
static int path_error(struct ctx *c, const struct node *n, const struct path_use *use,
                      const char *inner, const char *problem)
{
    struct shown s, t;

    if (inner == NULL)
        return fail(c, n->mark, "%s '%s' %s", use->what, show(n->text, &s), problem);
    return fail(c, n->mark, "%s '%s' contains '%s', which %s", use->what, show(n->text, &s),
                show(inner, &t), problem);
}

static int walk_dir(struct ctx *c, const struct node *n, const struct path_use *use,
                    const char *dir);

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strings(char **v, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(v[i]);
    free(v);
}

/* The names in a directory beneath the project, sorted so errors do not depend on readdir. */
static int list_dir(struct ctx *c, const struct node *n, const struct path_use *use,
                    const char *dir, char ***names, size_t *count)
{
    int fd = open_beneath(c, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    size_t cap = 0;
    struct dirent *e;
    DIR *d;

    *names = NULL;
    *count = 0;
    d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        int errnum = errno;

        if (fd >= 0)
            close(fd);
        return path_error(c, n, use, dir, path_problem(errnum));
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (*count == cap) {
            char **grown = realloc(*names, (cap = cap ? cap * 2 : 16) * sizeof(*grown));

            if (grown == NULL)
                break;
            *names = grown;
        }
        if (((*names)[*count] = strdup(e->d_name)) == NULL)
            break;
        (*count)++;
    }
    closedir(d);
    if (e != NULL)
        return oom(c);
    qsort(*names, *count, sizeof(**names), by_string);
    return 0;
}

/*
 * One entry of a copied directory. Directories are walked; a symlink must
 * resolve beneath the project, or not at all (a dangling link is copied as
 * a link and never followed on the host).
 */
static int check_entry(struct ctx *c, const struct node *n, const struct path_use *use,
                       const char *path)
{
    struct stat st;
    int fd = open_beneath(c, path, O_PATH | O_NOFOLLOW);

    if (fd < 0)
        return path_error(c, n, use, path, path_problem(errno));
    if (fstat(fd, &st) < 0) {
        int errnum = errno;

        close(fd);
        return path_error(c, n, use, path, strerror(errnum));
    }
    close(fd);
    if (S_ISDIR(st.st_mode))
        return walk_dir(c, n, use, path);
    if (S_ISREG(st.st_mode))
        return 0;
    if (!S_ISLNK(st.st_mode))
        return path_error(c, n, use, path, "is not a regular file, directory or symlink");
    fd = open_beneath(c, path, O_PATH);
    if (fd < 0 && errno != ENOENT)
        return path_error(c, n, use, path, path_problem(errno));
    if (fd >= 0)
        close(fd);
    return 0;
}

/* Only one directory is open at a time, so depth costs no descriptors. */
static int walk_dir(struct ctx *c, const struct node *n, const struct path_use *use,
                    const char *dir)
{
    char **names;
    size_t count;
    int rc = list_dir(c, n, use, dir, &names, &count);

    for (size_t i = 0; rc == 0 && i < count; i++) {
        char *path = strcmp(dir, ".") == 0 ? strdup(names[i]) : mb_path_join(dir, names[i]);

        rc = path == NULL ? oom(c) : check_entry(c, n, use, path);
        free(path);
    }
    free_strings(names, count);
    return rc;
}

static int check_kind(struct ctx *c, const struct node *n, const struct path_use *use,
                      const char *path, mode_t mode)
{
    if (use->want_dir && !S_ISDIR(mode))
        return path_error(c, n, use, NULL, "is not a directory");
    if (use->want_file && !S_ISREG(mode))
        return path_error(c, n, use, NULL, "is not a regular file");
    if (!S_ISDIR(mode) && !S_ISREG(mode))
        return path_error(c, n, use, NULL, "is not a regular file or directory");
    if (use->walk && S_ISDIR(mode))
        return walk_dir(c, n, use, path);
    return 0;
}

/* The path n names must lie inside the project, through every symlink. */
static int resolve_in_project(struct ctx *c, const struct node *n, const struct path_use *use,
                              const char *path)
{
    struct stat st;
    int fd = open_beneath(c, path, O_PATH);

    if (fd < 0)
        return path_error(c, n, use, NULL, path_problem(errno));
    if (fstat(fd, &st) < 0) {
        int errnum = errno;

        close(fd);
        return path_error(c, n, use, NULL, strerror(errnum));
    }
    close(fd);
    return check_kind(c, n, use, path, st.st_mode);
}

/* Check a project path; on success *out (if wanted) is its normalised form. */
static int check_path(struct ctx *c, const struct node *n, const struct path_use *use, char **out)
{
    char *path = NULL;
    int rc;

    if (n->text[0] == '\0')
        return fail(c, n->mark, "%s is empty", use->what);
    if (n->text[0] == '/')
        return path_error(c, n, use, NULL,
                          "is absolute; paths are relative to the project directory");
    switch (normalise(n->text, &path)) {
    case NORMAL_NOMEM:
        return oom(c);
    case NORMAL_DOTDOT:
        return path_error(c, n, use, NULL,
                          "contains '..'; paths stay inside the project directory");
    case NORMAL_OK:
        break;
    }
    rc = resolve_in_project(c, n, use, path);
    if (rc == 0 && out != NULL)
        *out = path;
    else
        free(path);
    return rc;
}

/* ---- schemas ----------------------------------------------------------- */

typedef int (*parse_fn)(struct ctx *c, const struct node *value, void *slot);

/* Parsers that fill several members of the object get the object itself. */
#define WHOLE 0

struct field {
    const char *key;
    parse_fn parse;
    size_t offset; /* of the member filled in the object, or WHOLE */
    bool required;
};

struct schema {
    const char *where; /* " in a step", for "missing required key" */
    const struct field *fields;
    size_t count;
};

/* Optimal string alignment distance: edits, and swaps of neighbours, each cost one. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[SUGGEST_MAX + 1][SUGGEST_MAX + 1];

    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

/* The known key nearest to `key`, when it is near enough to be a typo. */
static const char *suggest(const struct schema *s, const char *key)
{
    size_t len = strlen(key), best = 3;
    const char *found = NULL;

    if (len > SUGGEST_MAX)
        return NULL;
    for (size_t i = 0; i < s->count; i++) {
        size_t d;

        if (strlen(s->fields[i].key) > SUGGEST_MAX)
            continue;
        d = edit_distance(key, s->fields[i].key);
        if (d < best) {
            best = d;
            found = s->fields[i].key;
        }
    }
    /* Two edits turn any two-letter key into any other: no advice then. */
    return best < len ? found : NULL;
}

static int unknown_key(struct ctx *c, const struct node *key, const struct schema *s)
{
    const char *near = suggest(s, key->text);
    struct shown k;

    if (near != NULL)
        return fail(c, key->mark, "unknown key '%s' (did you mean '%s'?)", show(key->text, &k),
                    near);
    return fail(c, key->mark, "unknown key '%s'", show(key->text, &k));
}

static const struct field *find_field(const struct schema *s, const char *key)
{
    for (size_t i = 0; i < s->count; i++)
        if (strcmp(s->fields[i].key, key) == 0)
            return &s->fields[i];
    return NULL;
}

/* Fill obj from a mapping: keys in file order, each by its field's parser. */
static int parse_fields(struct ctx *c, const struct node *map, const struct schema *s, void *obj)
{
    bool seen[MAX_FIELDS] = {false};

    if (map->kind != NODE_MAPPING)
        return type_error(c, map, "a mapping");
    for (size_t i = 0; i < map->count; i += 2) {
        const struct field *f = find_field(s, map->kids[i]->text);

        if (f == NULL)
            return unknown_key(c, map->kids[i], s);
        seen[f - s->fields] = true;
        set_label(c, "'%s'", f->key);
        if (f->parse(c, map->kids[i + 1], (char *)obj + f->offset) < 0)
            return -1;
    }
    for (size_t i = 0; i < s->count; i++)
        if (s->fields[i].required && !seen[i])
            return fail(c, map->mark, "missing required key '%s'%s", s->fields[i].key, s->where);
    return 0;
}

typedef int (*item_fn)(struct ctx *c, const struct node *item, void *elem, size_t index);

/*
 * Parse a sequence into a new zeroed array of elements of `size` bytes.
 * *items and *count are set even on failure, so the caller frees what was
 * filled.
 */
static int parse_list(struct ctx *c, const struct node *n, size_t size, item_fn item, void **items,
                      size_t *count)
{
    char parent[sizeof(c->label)];
    char *array;

    *items = NULL;
    *count = 0;
    if (n->kind != NODE_SEQUENCE)
        return type_error(c, n, "a list");
    if (n->count == 0)
        return 0;
    array = calloc(n->count, size);
    if (array == NULL)
        return oom(c);
    *items = array;
    *count = n->count;
    memcpy(parent, c->label, sizeof(parent));
    for (size_t i = 0; i < n->count; i++) {
        /* A label cut short only shortens a message, so the length is not checked. */
        if (snprintf(c->label, sizeof(c->label), "an entry of %s", parent) < 0)
            return oom(c);
        if (item(c, n->kids[i], array + i * size, i) < 0)
            return -1;
    }
    return 0;
}

/* ---- field parsers ----------------------------------------------------- */

static int parse_version(struct ctx *c, const struct node *n, void *slot)
{
    uint64_t v;

    if (!plain_decimal(n, &v))
        return type_error(c, n, "an integer");
    if (v != 1)
        return fail(c, n->mark,
                    "unsupported Machinefile version %" PRIu64 " (this mbuild reads version 1)", v);
    *(int *)slot = 1;
    return 0;
}

static int parse_cpus(struct ctx *c, const struct node *n, void *slot)
{
    uint64_t v;

    if (!plain_decimal(n, &v) || v < 1 || v > MAX_CPUS)
        return type_error(c, n, "an integer from 1 to 256");
    *(unsigned *)slot = (unsigned)v;
    return 0;
}

static int parse_bool(struct ctx *c, const struct node *n, void *slot)
{
    bool is_scalar = n->kind == NODE_SCALAR && n->plain;

    if (is_scalar && strcmp(n->text, "true") == 0)
        *(bool *)slot = true;
    else if (is_scalar && strcmp(n->text, "false") == 0)
        *(bool *)slot = false;
    else
        return type_error(c, n, "true or false");
    return 0;
}

static int parse_size_value(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;

    if (get_string(c, n, "a size such as 512M or 2GiB", &text) < 0)
        return -1;
    return mb_size_parse(text, slot, c->err) < 0 ? locate(c, n->mark) : 0;
}

static int parse_timeout(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;

    if (get_string(c, n, "a duration such as 90s, 30m or 2h", &text) < 0)
        return -1;
    return mb_duration_parse(text, slot, c->err) < 0 ? locate(c, n->mark) : 0;
}

static const struct {
    const char *name;
    const char *arch;
} arch_names[] = {
    {"x86_64", "x86_64"},
    {"aarch64", "aarch64"},
    {"amd64", "x86_64"},
    {"arm64", "aarch64"},
};

static const char *arch_for(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(arch_names); i++)
        if (strcmp(arch_names[i].name, name) == 0)
            return arch_names[i].arch;
    return NULL;
}

static int parse_arch(struct ctx *c, const struct node *n, void *slot)
{
    const char *text, *arch;
    struct shown s;

    if (get_string(c, n, "x86_64 or aarch64", &text) < 0)
        return -1;
    arch = arch_for(text);
    if (arch != NULL && strcmp(arch, text) == 0)
        return dup_into(c, text, slot);
    if (arch != NULL)
        return fail(c, n->mark, "unsupported arch '%s' (did you mean '%s'?)", text, arch);
    return fail(c, n->mark, "unsupported arch '%s' (expected x86_64 or aarch64)", show(text, &s));
}

/* The host's arch by the Machinefile's names; uname -m as is when it has none. */
static char *host_arch(void)
{
    struct utsname u;
    const char *arch;

    if (uname(&u) < 0)
        return strdup("x86_64");
    arch = arch_for(u.machine);
    return strdup(arch != NULL ? arch : u.machine);
}

static int parse_env(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_env *env = slot;

    if (n->kind != NODE_MAPPING)
        return type_error(c, n, "a mapping of names to strings");
    if (n->count == 0)
        return 0;
    env->vars = calloc(n->count / 2, sizeof(*env->vars));
    if (env->vars == NULL)
        return oom(c);
    env->count = n->count / 2;
    for (size_t i = 0; i < env->count; i++) {
        const struct node *key = n->kids[2 * i], *value = n->kids[2 * i + 1];
        struct mb_env_var *var = &env->vars[i];
        const char *text;

        if (check_name(c, key, &env_rule) < 0)
            return -1;
        set_label(c, "env '%s'", key->text);
        if (get_string(c, value, "a string", &text) < 0 || dup_into(c, key->text, &var->name) < 0 ||
            dup_into(c, text, &var->value) < 0)
            return -1;
    }
    return 0;
}

static int package_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    (void)index;
    return parse_name(c, n, &package_rule, elem);
}

static int parse_packages(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(char *), package_item, &items, &mf->package_count);

    mf->packages = items;
    mf->packages_mark = n->mark;
    return rc;
}

static int secret_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    (void)index;
    return parse_name(c, n, &secret_rule, elem);
}

static int parse_secrets(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    struct named *names;
    void *items;
    int rc = parse_list(c, n, sizeof(char *), secret_item, &items, &mf->secret_count);

    mf->secrets = items;
    if (rc < 0 || mf->secret_count < 2)
        return rc;
    names = malloc(mf->secret_count * sizeof(*names));
    if (names == NULL)
        return oom(c);
    for (size_t i = 0; i < mf->secret_count; i++)
        names[i] = (struct named){mf->secrets[i], n->kids[i]->mark};
    rc = check_unique(c, names, mf->secret_count, "secret");
    free(names);
    return rc;
}

enum port_parse {
    PORT_OK,
    PORT_MALFORMED,
    PORT_OUT_OF_RANGE,
};

/* One port number of len characters: decimal digits, no leading zero. */
static enum port_parse port_number(const char *text, size_t len, uint16_t *port)
{
    uint32_t v = 0;

    if (len == 0)
        return PORT_MALFORMED;
    for (size_t i = 0; i < len; i++)
        if (!is_digit(text[i]))
            return PORT_MALFORMED;
    if (text[0] == '0')
        return len == 1 ? PORT_OUT_OF_RANGE : PORT_MALFORMED;
    if (len > 5)
        return PORT_OUT_OF_RANGE;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (uint32_t)(text[i] - '0');
    if (v > 65535)
        return PORT_OUT_OF_RANGE;
    *port = (uint16_t)v;
    return PORT_OK;
}

static int port_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    struct mb_port *port = elem;
    const char *text, *colon;
    enum port_parse host, guest;
    struct shown s;

    (void)index;
    if (get_string(c, n, "a port or \"host:guest\"", &text) < 0)
        return -1;
    colon = strchr(text, ':');
    if (colon == NULL) {
        host = port_number(text, strlen(text), &port->host);
        port->guest = port->host;
        guest = PORT_OK;
    } else {
        host = port_number(text, (size_t)(colon - text), &port->host);
        guest = port_number(colon + 1, strlen(colon + 1), &port->guest);
    }
    if (host == PORT_MALFORMED || guest == PORT_MALFORMED)
        return fail(c, n->mark, "invalid port '%s': expected \"host:guest\" or \"port\"",
                    show(text, &s));
    if (host == PORT_OUT_OF_RANGE || guest == PORT_OUT_OF_RANGE)
        return fail(c, n->mark, "port '%s' is out of range (1 to 65535)", show(text, &s));
    return 0;
}

/* Two forwards from one host port cannot both listen. */
static int check_host_ports(struct ctx *c, const struct node *n, const struct mb_machinefile *mf)
{
    uint8_t seen[65536 / 8] = {0};

    for (size_t i = 0; i < mf->port_count; i++) {
        uint16_t p = mf->ports[i].host;
        size_t first = 0;

        if (!(seen[p / 8] & (1u << (p % 8)))) {
            seen[p / 8] |= (uint8_t)(1u << (p % 8));
            continue;
        }
        while (mf->ports[first].host != p)
            first++;
        return fail(c, n->kids[i]->mark, "duplicate host port %u (first at line %u, column %u)", p,
                    n->kids[first]->mark.line, n->kids[first]->mark.column);
    }
    return 0;
}

static int parse_ports(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(struct mb_port), port_item, &items, &mf->port_count);

    mf->ports = items;
    return rc < 0 ? rc : check_host_ports(c, n, mf);
}

/* A path in the VM: absolute, normalised, without "..". */
static int parse_target(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;
    struct shown s;

    if (get_string(c, n, "an absolute path", &text) < 0)
        return -1;
    if (text[0] != '/')
        return fail(c, n->mark, "%s must be an absolute path, got '%s'", c->label, show(text, &s));
    switch (normalise(text, slot)) {
    case NORMAL_NOMEM:
        return oom(c);
    case NORMAL_DOTDOT:
        return fail(c, n->mark, "%s '%s' contains '..'", c->label, show(text, &s));
    case NORMAL_OK:
        break;
    }
    return 0;
}

static int parse_mount_target(struct ctx *c, const struct node *n, void *slot)
{
    if (parse_target(c, n, slot) < 0)
        return -1;
    if (strcmp(*(char **)slot, "/") == 0)
        return fail(c, n->mark, "%s cannot be '/': nothing may be mounted over the root", c->label);
    return 0;
}

static int parse_copy_source(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_copy *copy = slot;
    const char *text;

    copy->mark = n->mark;
    if (get_string(c, n, "a path", &text) < 0)
        return -1;
    return check_path(c, n, &copy_use, &copy->source);
}

static const struct field copy_fields[] = {
    {"source", parse_copy_source, WHOLE, true},
    {"target", parse_target, offsetof(struct mb_copy, target), false},
};
static const struct schema copy_schema = {" in a copy entry", copy_fields, ARRAY_LEN(copy_fields)};

/* A bare string is a source copied to the same place under /work. */
static int copy_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    struct mb_copy *copy = elem;

    (void)index;
    if (n->kind == NODE_MAPPING && parse_fields(c, n, &copy_schema, copy) < 0)
        return -1;
    if (n->kind != NODE_MAPPING && parse_copy_source(c, n, copy) < 0)
        return -1;
    if (copy->target != NULL)
        return 0;
    if (strcmp(copy->source, ".") == 0)
        return dup_into(c, "/work", &copy->target);
    copy->target = mb_path_join("/work", copy->source);
    return copy->target == NULL ? oom(c) : 0;
}

static int parse_copies(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_step *step = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(struct mb_copy), copy_item, &items, &step->copy_count);

    step->copies = items;
    return rc;
}

static int parse_step_name(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;

    if (get_string(c, n, "a string", &text) < 0)
        return -1;
    if (is_blank(text))
        return fail(c, n->mark, "%s is empty", c->label);
    if (has_control(text))
        return fail(c, n->mark, "%s must not contain control characters", c->label);
    return dup_into(c, text, slot);
}

static int parse_run(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;

    if (get_string(c, n, "a shell script", &text) < 0)
        return -1;
    if (is_blank(text))
        return fail(c, n->mark, "%s is empty", c->label);
    return dup_into(c, text, slot);
}

static const struct field step_fields[] = {
    {"name", parse_step_name, offsetof(struct mb_step, name), false},
    {"copy", parse_copies, WHOLE, false},
    {"run", parse_run, offsetof(struct mb_step, run), true},
    {"env", parse_env, offsetof(struct mb_step, env), false},
    {"network", parse_bool, offsetof(struct mb_step, network), false},
    {"timeout", parse_timeout, offsetof(struct mb_step, timeout_seconds), false},
};
static const struct schema step_schema = {" in a step", step_fields, ARRAY_LEN(step_fields)};

static int step_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    struct mb_step *step = elem;

    step->mark = n->mark;
    step->network = true;
    step->timeout_seconds = DEFAULT_TIMEOUT;
    if (parse_fields(c, n, &step_schema, step) < 0)
        return -1;
    if (step->name == NULL && asprintf(&step->name, "step %zu", index + 1) < 0) {
        step->name = NULL;
        return oom(c);
    }
    return 0;
}

/* Where an item's `key` is written, or the item itself when it has none (a default). */
static struct mb_mark mark_of_key(const struct node *item, const char *key)
{
    const struct node *at = map_get(item, key);

    return at != NULL ? at->mark : item->mark;
}

/* No two items of the list `n` share the string at `name_offset` of their structs. */
static int check_unique_names(struct ctx *c, const struct node *n, const void *items, size_t size,
                              size_t count, size_t name_offset, const char *what)
{
    struct named *names;
    int rc;

    if (count < 2)
        return 0;
    names = malloc(count * sizeof(*names));
    if (names == NULL)
        return oom(c);
    for (size_t i = 0; i < count; i++) {
        const char *item = (const char *)items + i * size;

        names[i] =
            (struct named){*(char *const *)(item + name_offset), mark_of_key(n->kids[i], "name")};
    }
    rc = check_unique(c, names, count, what);
    free(names);
    return rc;
}

static int parse_steps(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(struct mb_step), step_item, &items, &mf->step_count);

    mf->steps = items;
    if (rc < 0)
        return rc;
    return check_unique_names(c, n, mf->steps, sizeof(struct mb_step), mf->step_count,
                              offsetof(struct mb_step, name), "step name");
}

static int parse_mount_source(struct ctx *c, const struct node *n, void *slot)
{
    const char *text;

    if (get_string(c, n, "a path", &text) < 0)
        return -1;
    return check_path(c, n, &mount_use, slot);
}

static const struct field mount_fields[] = {
    {"source", parse_mount_source, offsetof(struct mb_mount, source), true},
    {"target", parse_mount_target, offsetof(struct mb_mount, target), true},
    {"writable", parse_bool, offsetof(struct mb_mount, writable), false},
};
static const struct schema mount_schema = {" in a mount", mount_fields, ARRAY_LEN(mount_fields)};

static int mount_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    (void)index;
    return parse_fields(c, n, &mount_schema, elem);
}

static int parse_mounts(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(struct mb_mount), mount_item, &items, &mf->mount_count);

    mf->mounts = items;
    c->mounts = n;
    return rc;
}

static int parse_volume_name(struct ctx *c, const struct node *n, void *slot)
{
    return parse_name(c, n, &volume_rule, slot);
}

static const struct field volume_fields[] = {
    {"name", parse_volume_name, offsetof(struct mb_volume, name), true},
    {"target", parse_mount_target, offsetof(struct mb_volume, target), true},
    {"size", parse_size_value, offsetof(struct mb_volume, size), true},
};
static const struct schema volume_schema = {" in a volume", volume_fields,
                                            ARRAY_LEN(volume_fields)};

static int volume_item(struct ctx *c, const struct node *n, void *elem, size_t index)
{
    (void)index;
    return parse_fields(c, n, &volume_schema, elem);
}

static int parse_volumes(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    void *items;
    int rc = parse_list(c, n, sizeof(struct mb_volume), volume_item, &items, &mf->volume_count);

    mf->volumes = items;
    c->volumes = n;
    if (rc < 0)
        return rc;
    return check_unique_names(c, n, mf->volumes, sizeof(struct mb_volume), mf->volume_count,
                              offsetof(struct mb_volume, name), "volume name");
}

/* Two mounts or volumes on one target: one would hide the other. */
static int check_targets(struct ctx *c, const struct mb_machinefile *mf)
{
    size_t count = mf->mount_count + mf->volume_count;
    struct named *names;
    int rc;

    if (count < 2)
        return 0;
    names = malloc(count * sizeof(*names));
    if (names == NULL)
        return oom(c);
    for (size_t i = 0; i < mf->mount_count; i++)
        names[i] = (struct named){mf->mounts[i].target, mark_of_key(c->mounts->kids[i], "target")};
    for (size_t i = 0; i < mf->volume_count; i++)
        names[mf->mount_count + i] =
            (struct named){mf->volumes[i].target, mark_of_key(c->volumes->kids[i], "target")};
    rc = check_unique(c, names, count, "mount target");
    free(names);
    return rc;
}

/*
 * The part of a URL after its scheme: https:// anywhere, or plain http://
 * to this machine's loopback only (a local mirror or a test server; the
 * digest pins the content either way). NULL for anything else.
 */
static const char *url_rest(const char *text)
{
    static const char *const loopback[] = {"http://127.0.0.1", "http://localhost", "http://[::1]"};

    if (strncmp(text, "https://", 8) == 0)
        return text + 8;
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        size_t len = strlen(loopback[i]);

        if (strncmp(text, loopback[i], len) == 0 && strchr(":/", text[len]) != NULL &&
            text[len] != '\0')
            return text + 7;
    }
    return NULL;
}

static int parse_url(struct ctx *c, const struct node *n, void *slot)
{
    const char *text, *rest;
    struct shown s;
    bool clean = true;

    if (get_string(c, n, "an https:// URL", &text) < 0)
        return -1;
    for (const char *p = text; *p != '\0'; p++)
        clean = clean && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f;
    rest = url_rest(text);
    if (rest == NULL || !clean || rest[0] == '\0' || rest[0] == '/')
        return fail(c, n->mark, "%s must be an https:// URL, got '%s'", c->label, show(text, &s));
    return dup_into(c, text, slot);
}

static int parse_digest(struct ctx *c, const struct node *n, void *slot)
{
    static const char algo[] = "sha256:";
    const char *text;
    struct shown s;

    if (get_string(c, n, "a sha256: digest", &text) < 0)
        return -1;
    if (strncmp(text, algo, strlen(algo)) != 0 || strlen(text) != strlen(algo) + 64 ||
        strspn(text + strlen(algo), "0123456789abcdef") != 64)
        return fail(c, n->mark, "%s must be 'sha256:' and 64 lowercase hex digits, got '%s'",
                    c->label, show(text, &s));
    return dup_into(c, text, slot);
}

/* A base fetched over https, pinned by the digest of its content. */
struct remote_base {
    char *url;
    char *digest;
};

static const struct field remote_fields[] = {
    {"url", parse_url, offsetof(struct remote_base, url), true},
    {"digest", parse_digest, offsetof(struct remote_base, digest), true},
};
static const struct schema remote_schema = {" in base", remote_fields, ARRAY_LEN(remote_fields)};

/* The rule layers.c applies too: a '/' or an image suffix makes a base a path. */
static bool base_is_path(const char *base)
{
    static const char *const suffixes[] = {".qcow2", ".img", ".raw"};
    size_t len = strlen(base);

    if (strchr(base, '/') != NULL)
        return true;
    for (size_t i = 0; i < ARRAY_LEN(suffixes); i++) {
        size_t n = strlen(suffixes[i]);

        if (len >= n && strcmp(base + len - n, suffixes[i]) == 0)
            return true;
    }
    return false;
}

static int parse_remote_base(struct ctx *c, const struct node *n, struct mb_machinefile *mf)
{
    struct remote_base remote = {NULL, NULL};

    if (parse_fields(c, n, &remote_schema, &remote) < 0) {
        free(remote.url);
        free(remote.digest);
        return -1;
    }
    mf->base = remote.url;
    mf->base_digest = remote.digest;
    return 0;
}

/*
 * A local image path is kept as written: its key comes from its content,
 * and layers.c must still see it as a path, which "./x" normalised to "x"
 * would not be.
 */
static int parse_base(struct ctx *c, const struct node *n, void *slot)
{
    struct mb_machinefile *mf = slot;
    const char *text;
    int rc;

    mf->base_mark = n->mark;
    if (n->kind == NODE_MAPPING)
        return parse_remote_base(c, n, mf);
    if (get_string(c, n, "a recipe name, an image path or {url, digest}", &text) < 0)
        return -1;
    if (strstr(text, "://") != NULL)
        return fail(c, n->mark,
                    "a URL base needs a digest: write base: {url: https://..., "
                    "digest: sha256:...}");
    if (base_is_path(text))
        rc = check_path(c, n, &base_use, NULL);
    else
        rc = check_name(c, n, &recipe_rule);
    return rc < 0 ? rc : dup_into(c, text, &mf->base);
}

static const struct field top_fields[] = {
    {"version", parse_version, offsetof(struct mb_machinefile, version), true},
    {"base", parse_base, WHOLE, true},
    {"arch", parse_arch, offsetof(struct mb_machinefile, arch), false},
    {"cpus", parse_cpus, offsetof(struct mb_machinefile, cpus), false},
    {"memory", parse_size_value, offsetof(struct mb_machinefile, memory), false},
    {"disk", parse_size_value, offsetof(struct mb_machinefile, disk), false},
    {"env", parse_env, offsetof(struct mb_machinefile, env), false},
    {"packages", parse_packages, WHOLE, false},
    {"steps", parse_steps, WHOLE, false},
    {"ports", parse_ports, WHOLE, false},
    {"mounts", parse_mounts, WHOLE, false},
    {"volumes", parse_volumes, WHOLE, false},
    {"persistent", parse_bool, offsetof(struct mb_machinefile, persistent), false},
    {"secrets", parse_secrets, WHOLE, false},
};
static const struct schema top_schema = {"", top_fields, ARRAY_LEN(top_fields)};

_Static_assert(ARRAY_LEN(top_fields) <= MAX_FIELDS, "parse_fields tracks at most MAX_FIELDS");

/* ---- the whole file ---------------------------------------------------- */

static void env_clear(struct mb_env *env)
{
    for (size_t i = 0; i < env->count; i++) {
        free(env->vars[i].name);
        free(env->vars[i].value);
    }
    free(env->vars);
    env->vars = NULL;
    env->count = 0;
}

void mb_env_free(struct mb_env *env)
{
    if (env != NULL)
        env_clear(env);
}

static void step_clear(struct mb_step *step)
{
    free(step->name);
    free(step->run);
    for (size_t i = 0; i < step->copy_count; i++) {
        free(step->copies[i].source);
        free(step->copies[i].target);
    }
    free(step->copies);
    env_clear(&step->env);
}

void mb_machinefile_free(struct mb_machinefile *mf)
{
    if (mf == NULL)
        return;
    for (size_t i = 0; i < mf->step_count; i++)
        step_clear(&mf->steps[i]);
    for (size_t i = 0; i < mf->mount_count; i++) {
        free(mf->mounts[i].source);
        free(mf->mounts[i].target);
    }
    for (size_t i = 0; i < mf->volume_count; i++) {
        free(mf->volumes[i].name);
        free(mf->volumes[i].target);
    }
    free_strings(mf->packages, mf->package_count);
    free_strings(mf->secrets, mf->secret_count);
    env_clear(&mf->env);
    free(mf->steps);
    free(mf->mounts);
    free(mf->volumes);
    free(mf->ports);
    free(mf->path);
    free(mf->project_dir);
    free(mf->base);
    free(mf->base_digest);
    free(mf->arch);
    free(mf);
}

/* The directory holding the Machinefile, absolute and with symlinks resolved. */
static int find_project_dir(struct ctx *c, const char *path, char **out)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? strdup(".") : strndup(path, (size_t)(slash - path));

    if (dir == NULL)
        return oom(c);
    if (dir[0] == '\0') {
        free(dir);
        dir = strdup("/");
        if (dir == NULL)
            return oom(c);
    }
    *out = realpath(dir, NULL);
    if (*out == NULL) {
        int errnum = errno;

        mb_error_errno(c->err, MB_ERR_INPUT, errnum, "%s: project directory '%s'", path, dir);
        free(dir);
        return -1;
    }
    free(dir);
    return 0;
}

static int new_machinefile(struct ctx *c, const char *path, struct mb_machinefile **out)
{
    struct mb_machinefile *mf = calloc(1, sizeof(*mf));

    *out = mf;
    if (mf == NULL)
        return oom(c);
    mf->cpus = DEFAULT_CPUS;
    mf->memory = DEFAULT_MEMORY;
    mf->disk = DEFAULT_DISK;
    mf->path = strdup(path);
    if (mf->path == NULL)
        return oom(c);
    if (find_project_dir(c, path, &mf->project_dir) < 0)
        return -1;
    c->project_fd = open(mf->project_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (c->project_fd < 0)
        return mb_error_errno(c->err, MB_ERR_INPUT, errno, "%s: open project directory '%s'", path,
                              mf->project_dir);
    return 0;
}

static int interpret(struct ctx *c, const struct node *root, struct mb_machinefile *mf)
{
    snprintf(c->label, sizeof(c->label), "a Machinefile");
    if (parse_fields(c, root, &top_schema, mf) < 0 || check_targets(c, mf) < 0)
        return -1;
    if (mf->arch == NULL && (mf->arch = host_arch()) == NULL)
        return oom(c);
    return 0;
}

int mb_machinefile_parse(const char *path, const char *text, size_t len,
                         struct mb_machinefile **out, struct mb_error *err)
{
    struct ctx c = {.path = path, .project_fd = -1, .err = err};
    struct mb_machinefile *mf = NULL;
    struct node *root;
    int rc;

    *out = NULL;
    if (len > MB_MACHINEFILE_MAX_SIZE)
        return mb_error_set(err, MB_ERR_INPUT, "'%s' is larger than %d bytes", path,
                            MB_MACHINEFILE_MAX_SIZE);
    /*
     * Editors on Windows start UTF-8 files with a byte order mark. libyaml,
     * told the encoding, counts it as a column, and the first line then
     * reads as indented: drop it here, it is not text.
     */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3;
        len -= 3;
    }
    if (scan_tabs(&c, text, len) < 0 || build_tree(&c, text, len, &root) < 0)
        return -1;
    if (root == NULL || is_null(root))
        rc = fail(&c, first_mark(), "empty Machinefile");
    else
        rc = new_machinefile(&c, path, &mf);
    if (rc == 0)
        rc = interpret(&c, root, mf);
    if (c.project_fd >= 0)
        close(c.project_fd);
    node_free(root);
    if (rc < 0) {
        mb_machinefile_free(mf);
        return -1;
    }
    *out = mf;
    return 0;
}

int mb_machinefile_load(const char *path, struct mb_machinefile **out, struct mb_error *err)
{
    char *text;
    size_t len;
    int rc;

    *out = NULL;
    if (mb_fs_read_file(path, MB_MACHINEFILE_MAX_SIZE, &text, &len, err) < 0)
        return -1;
    rc = mb_machinefile_parse(path, text, len, out, err);
    free(text);
    return rc;
}

/* ---- env in effect ----------------------------------------------------- */

struct env_ref {
    const struct mb_env_var *var;
    size_t order; /* the step's vars come after the file's */
};

static int env_ref_cmp(const void *pa, const void *pb)
{
    const struct env_ref *a = pa, *b = pb;
    int by_name = strcmp(a->var->name, b->var->name);

    if (by_name != 0)
        return by_name;
    return a->order < b->order ? -1 : a->order > b->order;
}

int mb_machinefile_step_env(const struct mb_machinefile *mf, const struct mb_step *step,
                            struct mb_env *out, struct mb_error *err)
{
    size_t total = mf->env.count + step->env.count;
    struct env_ref *refs;

    out->vars = NULL;
    out->count = 0;
    if (total == 0)
        return 0;
    refs = malloc(total * sizeof(*refs));
    out->vars = calloc(total, sizeof(*out->vars));
    if (refs == NULL || out->vars == NULL)
        goto nomem;
    for (size_t i = 0; i < total; i++) {
        bool own = i >= mf->env.count;

        refs[i].var = own ? &step->env.vars[i - mf->env.count] : &mf->env.vars[i];
        refs[i].order = i;
    }
    qsort(refs, total, sizeof(*refs), env_ref_cmp);
    for (size_t i = 0; i < total; i++) {
        struct mb_env_var *var = &out->vars[out->count];

        /* Of vars sharing a name the last sorts last: the step's, which wins. */
        if (i + 1 < total && strcmp(refs[i].var->name, refs[i + 1].var->name) == 0)
            continue;
        out->count++;
        var->name = strdup(refs[i].var->name);
        var->value = strdup(refs[i].var->value);
        if (var->name == NULL || var->value == NULL)
            goto nomem;
    }
    free(refs);
    return 0;
nomem:
    free(refs);
    env_clear(out);
    return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
}
