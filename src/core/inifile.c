/* The INI engine: inih underneath, a line-counting reader on top, rows of keys owned by the
 * subsystems, every problem reported as FILE:LINE: key: what. */
#include "inifile.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How the pieces fit:
 *  - inih splits "key = value" lines and calls on_key(). It does not report section headers
 *    without keys, line numbers (INI_HANDLER_LINENO is 0 in Debian's build) or lines longer
 *    than its 200-byte buffer, so inih reads through read_line(), which counts physical lines,
 *    strips comments (";" or "#" at the start or after a blank: Debian's inih only knows
 *    inline ";"), tracks sections itself and reports malformed lines.
 *  - A key is found in the tables of the current section's kind; its setter gets the address of
 *    its field. Defaults go through the same setters before the file (or the section) is read.
 *  - A setter returns NULL or a phrase; ini_error() prefixes it with "FILE:LINE: key: ".
 *    Section-level problems use the header text ("[listener:web]") as key; problems with the
 *    whole file use line 0.
 *  - Checks (per kind, then the schema's) run after the whole file is read. Errors are sorted
 *    by line before they are handed back.
 */

/* A section header that was accepted. */
struct ini_section {
    const struct ini_kind *k;       /* its kind, whose rows key_lines follows */
    size_t kind;                    /* index into schema->kinds */
    size_t index;                   /* element of a named kind */
    int line;                       /* line of the header */
    char header[INI_NAME_MAX + 32]; /* "[listener:web]", the key of section-level errors */
    int *key_lines;                 /* per row of the kind's tables: line it was set on, or 0 */
};

/* One problem, kept with its line so the list can be sorted. */
struct ini_problem {
    int line;   /* line it refers to; 0 = the whole file */
    size_t seq; /* order found, keeps the sort stable */
    char *text; /* "FILE:LINE: key: what", owned */
};

/* Where the reader is, between inih's calls to read_line() and on_key(). */
enum ini_current { CURRENT_NONE, CURRENT_SKIP, CURRENT_SECTION };

/* Everything one ini_load() call works on. */
struct ini_file {
    const struct ini_schema *schema; /* what the file may contain */
    const char *path;                /* file name for messages */
    char *data;                      /* the whole file, NUL-terminated, owned */
    size_t data_len;                 /* bytes of data without the NUL */
    size_t pos;                      /* offset in data of the next line */
    void *root;                      /* being filled */
    void *user;                      /* for checks */
    int line;                        /* physical line last handed to inih */
    const char *long_value;          /* value of this line when it did not fit inih's buffer */
    struct ini_section *sections;    /* accepted headers in file order, owned */
    size_t n_sections;               /* entries in sections */
    enum ini_current current;        /* no section yet, a rejected one, or sections[section] */
    size_t section;                  /* index into sections when current == CURRENT_SECTION */
    struct ini_problem *problems;    /* problems found, owned */
    size_t n_problems;               /* entries in problems */
    bool oom;                        /* an allocation failed: the result is -ENOMEM */
};

const char ini_phrase_oom[] = "cannot be stored: out of memory";

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *ini_phrase(char *msg, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, INI_PHRASE_MAX, fmt, ap);
    va_end(ap);
    return msg;
}

void ini_error(struct ini_file *f, int line, const char *key, const char *fmt, ...)
{
    struct ini_problem *grown;
    char what[INI_PHRASE_MAX];
    char *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    grown = realloc(f->problems, (f->n_problems + 1) * sizeof(*grown));
    if (grown == NULL || asprintf(&text, "%s:%d: %s: %s", f->path, line, key, what) < 0) {
        f->problems = grown != NULL ? grown : f->problems;
        f->oom = true;
        return;
    }
    f->problems = grown;
    f->problems[f->n_problems] =
        (struct ini_problem){.line = line, .seq = f->n_problems, .text = text};
    f->n_problems++;
}

/* Section and service names: the rule setters share too. */
const char *ini_name_check(const char *name)
{
    size_t len = strlen(name);

    if (len == 0) {
        return "name is empty";
    }
    if (len >= INI_NAME_MAX) {
        return "name is longer than 63 characters";
    }
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len) {
        return "name may only use letters, digits, '_', '.' and '-'";
    }
    return NULL;
}

/* --- schema geometry ----------------------------------------------------------------------- */

static size_t table_len(const struct ini_table *t)
{
    size_t n = 0;

    while (t->keys[n].name != NULL) {
        n++;
    }
    return n;
}

static size_t kind_key_count(const struct ini_kind *k)
{
    size_t n = 0;

    for (size_t t = 0; t < k->n_tables; t++) {
        n += table_len(&k->tables[t]);
    }
    return n;
}

/* Row number i (over all tables of k) -> table and key. */
static const struct ini_key *kind_key(const struct ini_kind *k, size_t i,
                                      const struct ini_table **table)
{
    *table = NULL;
    for (size_t t = 0; t < k->n_tables; t++) {
        size_t n = table_len(&k->tables[t]);
        if (i < n) {
            *table = &k->tables[t];
            return &k->tables[t].keys[i];
        }
        i -= n;
    }
    return NULL;
}

static long kind_key_find(const struct ini_kind *k, const char *name)
{
    const struct ini_table *table;

    for (size_t i = 0, n = kind_key_count(k); i < n; i++) {
        if (strcmp(kind_key(k, i, &table)->name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* The struct of the section that element index of kind k lives in. */
static void *kind_struct(const struct ini_kind *k, void *root, size_t index)
{
    if (!k->named) {
        return (char *)root + k->offset;
    }
    return *(char **)((char *)root + k->offset) + index * k->size;
}

static size_t *kind_count(const struct ini_kind *k, void *root)
{
    return (size_t *)((char *)root + k->count_offset);
}

/* "[listener:NAME]" or "[sluice]", for hints. */
static void kind_usage(const struct ini_kind *k, char *out, size_t len)
{
    snprintf(out, len, k->named ? "[%s:NAME]" : "[%s]", k->name);
}

/* "[a], [b] or [c]" over every kind. */
static void kinds_listed(const struct ini_schema *s, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < s->n_kinds && used < len; i++) {
        char usage[INI_NAME_MAX + 16];
        kind_usage(&s->kinds[i], usage, sizeof(usage));
        used += (size_t)snprintf(out + used, len - used, "%s%s",
                                 i == 0                ? ""
                                 : i + 1 == s->n_kinds ? " or "
                                                       : ", ",
                                 usage);
    }
}

/* Stores every default of kind k into its struct; a failure here is a bug in a table. */
static void apply_defaults(struct ini_file *f, const struct ini_kind *k, void *sec_struct)
{
    char msg[INI_PHRASE_MAX];
    const struct ini_table *table;

    for (size_t i = 0, n = kind_key_count(k); i < n; i++) {
        const struct ini_key *key = kind_key(k, i, &table);
        if (key->def == NULL) {
            continue;
        }
        const char *why =
            key->set((char *)sec_struct + table->base + key->offset, key, key->def, msg);
        if (why != NULL) {
            ini_error(f, 0, key->name, "built-in default %s", why);
        }
    }
}

/* --- sections ------------------------------------------------------------------------------ */

/* Appends a zeroed element with its defaults to named kind k; returns its index or -1. */
static long element_add(struct ini_file *f, const struct ini_kind *k, const char *name)
{
    char **items = (char **)((char *)f->root + k->offset);
    size_t *n = kind_count(k, f->root);
    char *grown = realloc(*items, (*n + 1) * k->size);

    if (grown == NULL) {
        f->oom = true;
        return -1;
    }
    *items = grown;
    char *el = grown + *n * k->size;
    memset(el, 0, k->size);
    snprintf(el + k->name_offset, INI_NAME_MAX, "%s", name);
    if (k->line_offset != SIZE_MAX) {
        *(int *)(el + k->line_offset) = f->line;
    }
    apply_defaults(f, k, el);
    return (long)(*n)++;
}

/* What kind of section inner ("listener:web") is, and its NAME; NULL or why not. */
static const char *section_classify(const struct ini_schema *s, const char *inner, size_t *kind,
                                    const char **name, char *msg)
{
    char listed[512];

    *name = "";
    for (size_t i = 0; i < s->n_kinds; i++) {
        const struct ini_kind *k = &s->kinds[i];
        size_t len = strlen(k->name);
        if (!k->named && strcmp(inner, k->name) == 0) {
            *kind = i;
            return NULL;
        }
        if (!k->named || strncmp(inner, k->name, len) != 0 || (inner[len] != ':' && inner[len])) {
            continue;
        }
        *kind = i;
        if (inner[len] == '\0' || inner[len + 1] == '\0') {
            return ini_phrase(msg, "needs a name, as in [%s:NAME]", k->name);
        }
        *name = inner + len + 1;
        return ini_name_check(*name);
    }
    kinds_listed(s, listed, sizeof(listed));
    return ini_phrase(msg, "is not a known section (use %s)", listed);
}

static struct ini_section *section_find(struct ini_file *f, const char *header)
{
    for (size_t i = 0; i < f->n_sections; i++) {
        if (strcmp(f->sections[i].header, header) == 0) {
            return &f->sections[i];
        }
    }
    return NULL;
}

/* Records an accepted header and makes it the current section. */
static void section_open(struct ini_file *f, size_t kind, const char *name, const char *header)
{
    const struct ini_kind *k = &f->schema->kinds[kind];
    struct ini_section *grown = realloc(f->sections, (f->n_sections + 1) * sizeof(*grown));
    int *lines = calloc(kind_key_count(k) + 1, sizeof(*lines));
    long index = 0;

    if (grown != NULL) {
        f->sections = grown;
    }
    if (grown == NULL || lines == NULL) {
        free(lines);
        f->oom = true;
        return;
    }
    if (k->named) {
        index = element_add(f, k, name);
    } else if (k->line_offset != SIZE_MAX) {
        *(int *)((char *)f->root + k->offset + k->line_offset) = f->line;
    }
    if (index < 0) {
        free(lines);
        return;
    }
    struct ini_section *sec = &f->sections[f->n_sections];
    memset(sec, 0, sizeof(*sec));
    sec->k = k;
    sec->kind = kind;
    sec->index = (size_t)index;
    sec->line = f->line;
    sec->key_lines = lines;
    snprintf(sec->header, sizeof(sec->header), "%s", header);
    f->section = f->n_sections++;
    f->current = CURRENT_SECTION;
}

/* text is a trimmed line starting with '['. Keys of a rejected section are ignored: their
 * section is already reported, and errors about them would only be noise. */
static void on_header(struct ini_file *f, char *text, char *out, size_t size)
{
    char header[INI_NAME_MAX + 32], msg[INI_PHRASE_MAX];
    char *close = strchr(text, ']');
    const char *name, *why;
    struct ini_section *first;
    size_t kind = 0;

    f->current = CURRENT_SKIP;
    if (close == NULL || close[1] != '\0') {
        ini_error(f, f->line, text, "%s",
                  close == NULL ? "is missing the closing \"]\""
                                : "has text after the closing \"]\"");
        return;
    }
    *close = '\0'; /* name points into text, so the ']' stays cut off */
    why = section_classify(f->schema, text + 1, &kind, &name, msg);
    snprintf(header, sizeof(header), "[%.*s]", (int)(sizeof(header) - 3), text + 1);
    if (why != NULL) {
        ini_error(f, f->line, header, "%s", why);
        return;
    }
    if ((first = section_find(f, header)) != NULL) {
        ini_error(f, f->line, header, "is defined twice (first at line %d)", first->line);
        return;
    }
    section_open(f, kind, name, header);
    if (strlen(header) < size) {
        memcpy(out, header, strlen(header) + 1);
    }
}

/* --- lines --------------------------------------------------------------------------------- */

/* Strips a UTF-8 byte order mark (line 1), comments and surrounding blanks, in place. A ';' or
 * '#' starts a comment at the start of a line or after a blank. */
static char *line_clean(char *s, bool first)
{
    size_t len;

    if (first && strncmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        if ((s[i] == ';' || s[i] == '#') && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
            s[i] = '\0';
            break;
        }
    }
    s += strspn(s, " \t\r\n\f\v");
    len = strlen(s);
    while (len > 0 && strchr(" \t\r\n\f\v", s[len - 1]) != NULL) {
        s[--len] = '\0';
    }
    return s;
}

/* text is a trimmed line that is not a header. Hands inih "key=value"; a value too long for
 * inih's buffer is kept in long_value and on_key() uses it instead. */
static void on_key_line(struct ini_file *f, char *text, char *out, size_t size)
{
    char *eq = strchr(text, '=');
    char *name = text, *value;
    size_t name_len;

    if (eq == NULL) {
        /* The text is not shown: "token: SECRET" would land in the log with the secret. */
        ini_error(f, f->line, "line", "is not a \"key = value\" line (its text is not shown)");
        return;
    }
    value = eq + 1 + strspn(eq + 1, " \t");
    name_len = (size_t)(eq - text);
    while (name_len > 0 && (name[name_len - 1] == ' ' || name[name_len - 1] == '\t')) {
        name_len--;
    }
    name[name_len] = '\0';
    if (name_len == 0 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != name_len) {
        /* A name of other characters is shown only when it looks like a word: "token: SECRET"
         * before an "=" must not reach the log. */
        bool word =
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
            name_len;
        ini_error(f, f->line,
                  name_len == 0 ? "="
                  : word        ? name
                                : "line",
                  "%s",
                  name_len == 0 ? "a key name is missing before \"=\""
                  : word        ? "is not a key name"
                                : "has no key name before \"=\" (its text is not shown)");
        return;
    }
    if (name_len + 2 + strlen(value) < size) {
        snprintf(out, size, "%s=%s", name, value);
    } else if (name_len + 2 < size) {
        snprintf(out, size, "%s=", name);
        f->long_value = value;
    } else {
        ini_error(f, f->line, name, "is not a known key");
    }
}

/* inih's reader: one physical line per call, so f->line is the line on_key() sees. Lines are
 * cut in place from the file read whole, so reading a line never allocates (and cannot fail). */
static char *read_line(char *out, int size, void *stream)
{
    struct ini_file *f = stream;
    char *text, *start = f->data + f->pos, *nl;

    if (f->pos >= f->data_len) {
        return NULL;
    }
    nl = memchr(start, '\n', f->data_len - f->pos);
    if (nl != NULL) {
        *nl = '\0';
    }
    f->pos = nl != NULL ? (size_t)(nl - f->data) + 1 : f->data_len;
    f->line++;
    f->long_value = NULL;
    out[0] = '\0';
    text = line_clean(start, f->line == 1);
    if (*text == '[') {
        on_header(f, text, out, (size_t)size);
    } else if (*text != '\0') {
        on_key_line(f, text, out, (size_t)size);
    }
    return out;
}

/* --- keys ---------------------------------------------------------------------------------- */

static void unknown_key(struct ini_file *f, const struct ini_section *sec, const char *name)
{
    const struct ini_schema *s = f->schema;
    char usage[INI_NAME_MAX + 16];

    for (size_t i = 0; i < s->n_kinds; i++) {
        if (i != sec->kind && kind_key_find(&s->kinds[i], name) >= 0) {
            kind_usage(&s->kinds[i], usage, sizeof(usage));
            ini_error(f, f->line, name, "does not belong in %s (it goes in %s)", sec->header,
                      usage);
            return;
        }
    }
    ini_error(f, f->line, name, "is not a known key in %s", sec->header);
}

/* How value may appear in a phrase: not at all for a secret row, and without the user:password@
 * of a URL for any row. Writes into out (INI_PHRASE_MAX bytes); returns value when it is safe. */
static const char *value_shown(const struct ini_key *key, const char *value, char *out)
{
    const char *scheme = strstr(value, "://"), *host, *at;

    if (key->secret) {
        return "(secret)";
    }
    if (scheme == NULL) {
        return value;
    }
    host = scheme + 3;
    at = memchr(host, '@', strcspn(host, "/?#"));
    if (at == NULL) {
        return value;
    }
    snprintf(out, INI_PHRASE_MAX, "%.*s(credentials)%s", (int)(host - value), value, at);
    return out;
}

/* why with every copy of value replaced by what value_shown() allows, into out. */
static const char *phrase_redact(const struct ini_key *key, const char *why, const char *value,
                                 char *out)
{
    char shown_buf[INI_PHRASE_MAX];
    const char *shown = value_shown(key, value, shown_buf), *hit;
    size_t used = 0, n = strlen(value);

    if (shown == value || n == 0) {
        return why;
    }
    out[0] = '\0';
    while ((hit = strstr(why, value)) != NULL && used < INI_PHRASE_MAX) {
        used += (size_t)snprintf(out + used, INI_PHRASE_MAX - used, "%.*s%s", (int)(hit - why), why,
                                 shown);
        why = hit + n;
    }
    /* A long value may have been cut short in the phrase: drop whatever starts like it. */
    hit = memmem(why, strlen(why), value, n < 8 ? n : 8);
    size_t keep = hit != NULL ? (size_t)(hit - why) : strlen(why);
    if (used < INI_PHRASE_MAX && snprintf(out + used, INI_PHRASE_MAX - used, "%.*s%s", (int)keep,
                                          why, hit != NULL ? shown : "") < 0) {
        out[used] = '\0';
    }
    return out;
}

/* Checks and stores one key of the current section. */
static void key_apply(struct ini_file *f, struct ini_section *sec, const char *name,
                      const char *value)
{
    const struct ini_kind *k = &f->schema->kinds[sec->kind];
    const struct ini_table *table = NULL;
    char msg[INI_PHRASE_MAX];
    long row = kind_key_find(k, name);

    if (row < 0) {
        unknown_key(f, sec, name);
        return;
    }
    if (sec->key_lines[row] != 0) {
        ini_error(f, f->line, name, "is set twice in %s (first at line %d)", sec->header,
                  sec->key_lines[row]);
        return;
    }
    sec->key_lines[row] = f->line;
    if (*value == '\0') {
        ini_error(f, f->line, name, "has no value");
        return;
    }
    const struct ini_key *key = kind_key(k, (size_t)row, &table);
    void *field = (char *)kind_struct(k, f->root, sec->index) + table->base + key->offset;
    if (key->release != NULL) {
        key->release(field); /* a default may have stored something owned */
    }
    const char *why = key->set(field, key, value, msg);
    if (why != NULL) {
        char redacted[INI_PHRASE_MAX];
        f->oom = f->oom || why == ini_phrase_oom;
        ini_error(f, f->line, name, "%s", phrase_redact(key, why, value, redacted));
    }
}

/* inih's handler. The section argument is ignored: read_line() tracks sections, including
 * rejected ones and ones without keys, which inih never reports. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct ini_file *f = user;
    char listed[512];

    (void)section;
    if (f->current == CURRENT_SECTION) {
        key_apply(f, &f->sections[f->section], name, f->long_value ? f->long_value : value);
    } else if (f->current == CURRENT_NONE) {
        kinds_listed(f->schema, listed, sizeof(listed));
        ini_error(f, f->line, name, "is outside any section (put it under %s)", listed);
    }
    return 1; /* problems are collected here; inih's own error count is not used */
}

/* --- checks -------------------------------------------------------------------------------- */

void *ini_user(const struct ini_file *f)
{
    return f->user;
}

size_t ini_section_count(const struct ini_file *f)
{
    return f->n_sections;
}

const struct ini_section *ini_section_at(const struct ini_file *f, size_t i)
{
    return &f->sections[i];
}

size_t ini_section_kind(const struct ini_section *sec)
{
    return sec->kind;
}

size_t ini_section_index(const struct ini_section *sec)
{
    return sec->index;
}

int ini_section_line(const struct ini_section *sec)
{
    return sec->line;
}

const char *ini_section_header(const struct ini_section *sec)
{
    return sec->header;
}

const struct ini_section *ini_section_of_kind(const struct ini_file *f, size_t kind)
{
    for (size_t i = 0; i < f->n_sections; i++) {
        if (f->sections[i].kind == kind) {
            return &f->sections[i];
        }
    }
    return NULL;
}

int ini_key_line(const struct ini_section *sec, const char *key)
{
    long row = kind_key_find(sec->k, key);

    return row < 0 ? 0 : sec->key_lines[row];
}

static void check_required(struct ini_file *f, const struct ini_section *sec)
{
    const struct ini_kind *k = &f->schema->kinds[sec->kind];
    const struct ini_table *table;

    for (size_t i = 0, n = kind_key_count(k); i < n; i++) {
        const struct ini_key *key = kind_key(k, i, &table);
        if (key->required && sec->key_lines[i] == 0) {
            ini_error(f, sec->line, sec->header, "%s is required", key->name);
        }
    }
}

static void validate(struct ini_file *f)
{
    for (size_t i = 0; i < f->n_sections; i++) {
        const struct ini_section *sec = &f->sections[i];
        const struct ini_kind *k = &f->schema->kinds[sec->kind];
        check_required(f, sec);
        if (k->check != NULL) {
            k->check(f, sec, kind_struct(k, f->root, sec->index));
        }
    }
    if (f->schema->check != NULL) {
        f->schema->check(f, f->root);
    }
}

/* --- loading ------------------------------------------------------------------------------- */

static int problem_order(const void *a, const void *b)
{
    const struct ini_problem *x = a, *y = b;

    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Moves the collected lines, sorted by line, to the end of errs. Without memory for them the
 * lines are dropped (and freed with the file); the return code still says what happened. */
static void problems_hand_over(struct ini_file *f, struct ini_errors *errs)
{
    char **grown;

    if (f->n_problems == 0 || errs == NULL) {
        return;
    }
    qsort(f->problems, f->n_problems, sizeof(*f->problems), problem_order);
    grown = realloc(errs->lines, (errs->n + f->n_problems) * sizeof(*grown));
    if (grown == NULL) {
        return;
    }
    errs->lines = grown;
    for (size_t i = 0; i < f->n_problems; i++) {
        errs->lines[errs->n++] = f->problems[i].text;
        f->problems[i].text = NULL;
    }
}

static void problems_drop(struct ini_file *f)
{
    for (size_t i = 0; i < f->n_problems; i++) {
        free(f->problems[i].text);
    }
    f->n_problems = 0;
}

static void file_free(struct ini_file *f)
{
    problems_drop(f);
    free(f->problems);
    for (size_t i = 0; i < f->n_sections; i++) {
        free(f->sections[i].key_lines);
    }
    free(f->sections);
    free(f->data);
}

/* The line of the first NUL byte in the file, or 0. A NUL would end a value early in inih and in
 * the setters, silently dropping what follows it. */
static int nul_line(const struct ini_file *f)
{
    const char *nul = memchr(f->data, '\0', f->data_len);
    int line = 1;

    if (nul == NULL) {
        return 0;
    }
    for (const char *s = f->data; (s = memchr(s, '\n', (size_t)(nul - s))) != NULL; s++) {
        line++;
    }
    return line;
}

/* Reads the whole file, then parses it through inih; returns 0 or a negative errno when it could
 * not be read (one error line: a partly read file is never taken for the whole one). */
static int parse_file(struct ini_file *f)
{
    char msg[INI_PHRASE_MAX];
    const char *why = ini_read_file(f->path, INI_FILE_MAX, &f->data, &f->data_len, NULL, msg);
    int rc, line;

    if (why != NULL) {
        rc = -errno;
        ini_error(f, 0, "file", "%s", why);
        return rc;
    }
    if ((line = nul_line(f)) != 0) {
        ini_error(f, line, "line", "contains a NUL byte");
        return -EINVAL;
    }
    rc = ini_parse_stream(read_line, f, on_key, f);
    if (rc == -2) {
        f->oom = true;
    } else if (rc > 0 && f->n_problems == 0) {
        ini_error(f, rc, "line", "cannot be parsed"); /* read_line() should have caught it */
    }
    return 0;
}

int ini_load(const struct ini_schema *schema, const char *path, void *root, void *user,
             struct ini_errors *errs)
{
    struct ini_file f = {.schema = schema, .path = path, .root = root, .user = user};
    int rc;

    for (size_t i = 0; i < schema->n_kinds; i++) {
        if (!schema->kinds[i].named) {
            apply_defaults(&f, &schema->kinds[i], (char *)root + schema->kinds[i].offset);
        }
    }
    rc = parse_file(&f);
    if (rc == 0) {
        validate(&f);
        rc = f.oom ? -ENOMEM : f.n_problems != 0 ? -EINVAL : 0;
    }
    problems_hand_over(&f, errs); /* rc is not 0 whenever there is anything to hand over */
    file_free(&f);
    return rc;
}

void ini_release_all(const struct ini_schema *schema, void *root)
{
    for (size_t i = 0; i < schema->n_kinds; i++) {
        const struct ini_kind *k = &schema->kinds[i];
        const struct ini_table *table;
        size_t n = k->named ? *kind_count(k, root) : 1;
        for (size_t e = 0; e < n; e++) {
            char *sec_struct = kind_struct(k, root, e);
            for (size_t r = 0, keys = kind_key_count(k); r < keys; r++) {
                const struct ini_key *key = kind_key(k, r, &table);
                if (key->release != NULL) {
                    key->release(sec_struct + table->base + key->offset);
                }
            }
        }
        if (k->named) {
            free(*(char **)((char *)root + k->offset));
            *(char **)((char *)root + k->offset) = NULL;
            *kind_count(k, root) = 0;
        }
    }
}

void ini_errors_clear(struct ini_errors *errs)
{
    if (errs == NULL) {
        return;
    }
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->lines[i]);
    }
    free(errs->lines);
    errs->lines = NULL;
    errs->n = 0;
}
