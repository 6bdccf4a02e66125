/* The INI engine: sections, lines and errors. It reads a file through inih, hands each
 * "key = value" to the setter of the row that owns the key, and collects every problem as
 * "FILE:LINE: key: what is wrong". It knows no key itself: each subsystem declares its keys in
 * a table of rows {name, offset, setter, limits, default} for the sections it configures (the way
 * nginx modules own their ngx_command_t), and a composer lists which tables make up which
 * section. Any thread; no globals. */
#ifndef SLUICE_INIFILE_H
#define SLUICE_INIFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INI_NAME_MAX   64          /* longest section NAME ([listener:NAME]) or service name + 1 */
#define INI_PHRASE_MAX 512         /* longest phrase a setter or check writes */
#define INI_FILE_MAX   (64u << 20) /* largest config file read: bounds the memory a load takes */

struct ini_key;

/* Parses value into field (the row's field inside the section's struct). Returns NULL, or a
 * phrase (static, or written into msg, which holds INI_PHRASE_MAX bytes) that reads well after
 * "key: ", such as "\"5x\" is not a duration (use ms, s, m, h)". */
typedef const char *(*ini_setter)(void *field, const struct ini_key *key, const char *value,
                                  char *msg);

/* Frees what a setter stored in field. */
typedef void (*ini_release)(void *field);

/* Why one item (of a list, or a string) is refused, or NULL. */
typedef const char *(*ini_check)(const char *item);

/* One word an enum key accepts, and the value it stores. */
struct ini_choice {
    const char *word; /* as written in the file */
    int value;        /* the enum value stored */
};

/* One key a subsystem understands. */
struct ini_key {
    const char *name;    /* as written in the file */
    size_t offset;       /* of the field within the table's struct */
    ini_setter set;      /* parses and stores the value */
    uint64_t min;        /* smallest number, duration (ms), size or weight accepted */
    uint64_t max;        /* largest one (lists: most entries, 0 = no cap; paths: 1 = directory) */
    const char *def;     /* default, stored through set before the file is read; or NULL */
    ini_release release; /* frees what set stored; NULL when it stores nothing owned */
    ini_check check;     /* extra rule for each list item or string; NULL = none */
    const struct ini_choice *choices; /* ini_set_enum: the words, ended by a NULL word */
    const char *noun; /* ini_set_enum: what the words are ("splice mode"), for messages */
    bool required;    /* the section is incomplete without it */
    bool secret;      /* the value is a secret: ini_value_text never shows it */
};

/* A row: INI_KEY("name", offset, setter, min, max, default, required[, .release = ..., ...]). */
#define INI_KEY(key, off, setter, lo, hi, dflt, req, ...)                                          \
    {                                                                                              \
        .name = (key), .offset = (off), .set = (setter), .min = (lo), .max = (hi), .def = (dflt),  \
        .required = (req), __VA_ARGS__                                                             \
    }

/* A subsystem's rows for one kind of section, and where its struct sits in the section's. */
struct ini_table {
    const struct ini_key *keys; /* rows, ended by one whose name is NULL */
    size_t base;                /* offset of the subsystem's struct in the section's struct */
};

struct ini_file;
struct ini_section;

/* One kind of section: [NAME] once, or [NAME:X] any number of times. */
struct ini_kind {
    const char *name;               /* "sluice", "listener", ... */
    bool named;                     /* [listener:X] sections: an array in the root */
    const struct ini_table *tables; /* whose keys it takes */
    size_t n_tables;                /* entries in tables */
    size_t offset;                  /* single: the struct in the root; named: the array pointer */
    size_t count_offset;            /* named: the size_t element count in the root */
    size_t size;                    /* named: bytes of one element */
    size_t name_offset;             /* named: char[INI_NAME_MAX] in the element for X */
    size_t line_offset;             /* int in the element (single: in its struct) for the header
                                     * line; SIZE_MAX = not kept */
    /* Rules within one section, run once the whole file is read; NULL = none. */
    void (*check)(struct ini_file *f, const struct ini_section *sec, void *section);
};

/* What a file is made of. */
struct ini_schema {
    const struct ini_kind *kinds; /* in the order messages list them */
    size_t n_kinds;               /* entries in kinds */
    /* Rules across sections, run after every kind's check; NULL = none. */
    void (*check)(struct ini_file *f, void *root);
};

/* Every problem found in one file, each "FILE:LINE: key: what is wrong". */
struct ini_errors {
    char **lines; /* owned strings, sorted by line */
    size_t n;     /* entries in lines */
};

/* Reads path into root (a zeroed struct of the schema's root type; defaults are stored first).
 * Returns 0; -EINVAL with every problem appended to errs (never stops at the first one);
 * -ENOMEM; or -errno with one error line when the file cannot be read whole (see ini_read_file;
 * -EINVAL for a NUL byte). user is handed to checks. On failure the caller still frees root with
 * ini_release_all. */
int ini_load(const struct ini_schema *schema, const char *path, void *root, void *user,
             struct ini_errors *errs);

/* Frees what the setters stored in root and the arrays of named sections (not root itself). */
void ini_release_all(const struct ini_schema *schema, void *root);

/* Frees the lines of errs and empties it. */
void ini_errors_clear(struct ini_errors *errs);

/* --- for checks ---------------------------------------------------------------------------- */

/* Adds "FILE:LINE: key: <fmt>"; line 0 means the whole file. */
__attribute__((format(printf, 4, 5))) void ini_error(struct ini_file *f, int line, const char *key,
                                                     const char *fmt, ...);

/* The user pointer given to ini_load. */
void *ini_user(const struct ini_file *f);

/* Number of accepted sections and the i-th, in file order. */
size_t ini_section_count(const struct ini_file *f);
const struct ini_section *ini_section_at(const struct ini_file *f, size_t i);

/* Kind (index into schema->kinds), element index (named kinds), header line and text
 * ("[listener:web]") of a section. */
size_t ini_section_kind(const struct ini_section *sec);
size_t ini_section_index(const struct ini_section *sec);
int ini_section_line(const struct ini_section *sec);
const char *ini_section_header(const struct ini_section *sec);

/* The line key was set on in sec, or 0 when the file does not set it. */
int ini_key_line(const struct ini_section *sec, const char *key);

/* The first section of kind, or NULL. */
const struct ini_section *ini_section_of_kind(const struct ini_file *f, size_t kind);

/* --- value grammar, shared by setters, the CLI and other parsers -------------------------- */

/* "250ms", "2s", "5m", "1h", "0" -> milliseconds. NULL, or a phrase ("is too large"). */
const char *ini_parse_duration(const char *text, uint64_t *ms);

/* Section, service and label names: [A-Za-z0-9_.-], 1 to INI_NAME_MAX - 1 characters. NULL or
 * why not. */
const char *ini_name_check(const char *name);

/* Leading decimal digits of text; *end points past all of them even on overflow. -ERANGE when
 * they overflow, -EINVAL when there are none (no signs: every value read is unsigned). */
int ini_digits(const char *text, uint64_t *out, const char **end);

/* "true/yes/on/1" 1, "false/no/off/0" 0, else -1. */
int ini_bool(const char *value);

/* Index of text in names, or -1. */
int ini_name_index(const char *const *names, size_t n, const char *text);

/* Reads the whole of path into *data (owned by the caller, NUL-terminated, *len bytes without
 * the NUL) and its permission bits into *mode (may be NULL). Only a regular file of at most max
 * bytes is read, and it is opened without blocking, so a FIFO or a device can neither hang the
 * caller nor be half read. NULL, or a phrase for "PATH: " ("is not a regular file", "cannot be
 * read: ..."), written into msg (INI_PHRASE_MAX bytes), with errno set (EISDIR, EINVAL for
 * another kind of file, EFBIG, ENOMEM, EIO or open's). Any thread. */
const char *ini_read_file(const char *path, size_t max, char **data, size_t *len, unsigned *mode,
                          char *msg);

/* Formats a phrase into msg (INI_PHRASE_MAX bytes) and returns msg. */
__attribute__((format(printf, 2, 3))) const char *ini_phrase(char *msg, const char *fmt, ...);

/* Returned by setters when an allocation failed, so the loader can answer -ENOMEM. */
extern const char ini_phrase_oom[];

/* --- setters every subsystem may use in its rows ------------------------------------------ */

/* A yes/no key that may be left unset, so that something else (an environment variable) can
 * decide instead. */
enum ini_flag {
    INI_FLAG_UNSET, /* not in the file */
    INI_FLAG_OFF,   /* false, no, off, 0 */
    INI_FLAG_ON,    /* true, yes, on, 1 */
};

/* A comma-separated list of non-empty, unique strings, in file order. */
struct ini_list {
    char **items; /* owned strings */
    size_t n;     /* entries in items */
};

void ini_list_free(struct ini_list *list);

const char *ini_set_u32(void *field, const struct ini_key *key, const char *value, char *msg);
const char *ini_set_int(void *field, const struct ini_key *key, const char *value, char *msg);
const char *ini_set_duration(void *field, const struct ini_key *key, const char *value,
                             char *msg); /* uint64_t ms */
const char *ini_set_size(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* uint32_t, k/m suffix */
const char *ini_set_bool(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* int 0/1 */
const char *ini_set_flag(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* enum ini_flag */
const char *ini_set_string(void *field, const struct ini_key *key, const char *value,
                           char *msg); /* char *, owned */
const char *ini_set_path(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* char *, readable now */
const char *ini_set_name(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* char[INI_NAME_MAX] */
const char *ini_set_label(void *field, const struct ini_key *key, const char *value,
                          char *msg); /* char[INI_NAME_MAX] */
const char *ini_set_list(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* struct ini_list */
const char *ini_set_addr(void *field, const struct ini_key *key, const char *value,
                         char *msg); /* struct net_addr */
const char *ini_set_ip(void *field, const struct ini_key *key, const char *value,
                       char *msg); /* char[NET_ADDR_MAX] */
/* One of key->choices into an int-sized enum; otherwise "is not a <noun> (use ...)". */
const char *ini_set_enum(void *field, const struct ini_key *key, const char *value, char *msg);

/* The value of key's field in conf (a struct of the key's table) as a config would write it
 * ("2s", "16k", "auto", "127.0.0.1:80"); "(secret)" for a secret row. 0, or -ENOTSUP for a
 * row with a setter of its own (lists, custom parsers). Pure. */
int ini_value_text(const struct ini_key *key, const void *conf, char *out, size_t len);

/* Told one key whose value differs, with both values as text. */
typedef void (*ini_change_fn)(void *ctx, const char *key, const char *from, const char *to);

/* Calls changed for every row of keys whose text differs between the structs a and b, and
 * returns how many did. Rows ini_value_text cannot show are the caller's to compare. */
size_t ini_keys_diff(const struct ini_key *keys, const void *a, const void *b,
                     ini_change_fn changed, void *ctx);

/* Release functions for the owned setters. */
void ini_release_string(void *field);
void ini_release_list(void *field);

#endif
