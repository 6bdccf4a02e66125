/* Structured event logging, as JSON or text lines, through a logger handle; safe from any
 * thread. Each daemon (or library instance) owns its logger: nothing here is process-wide. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdatomic.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

/* One key/value pair of an event; build with LOG_STR / LOG_INT, never by hand. */
struct log_field {
    const char *key; /* field name, a JSON-safe identifier */
    const char *str; /* string value, or NULL when the value is numeric */
    long long num;   /* numeric value, used when str is NULL */
};

static inline struct log_field log_field_str(const char *key, const char *value)
{
    return (struct log_field){.key = key, .str = value != NULL ? value : "", .num = 0};
}

#define LOG_STR(k, v) log_field_str((k), (v))
#define LOG_INT(k, v) ((struct log_field){.key = (k), .str = NULL, .num = (long long)(v)})

/* Where lines go and which ones. Level and format may change while threads log (a reload), so
 * they are relaxed atomics; the descriptor is fixed at log_init. */
struct logger {
    atomic_int min_level; /* enum log_level: lower levels are dropped */
    atomic_int format;    /* enum log_format */
    int fd;               /* descriptor every line is written to; -1 drops every line */
};

/* Prepares lg to write to fd at level info in JSON. The caller owns fd. */
void log_init(struct logger *lg, int fd);

/* Sets the minimum level and the line format; any thread, takes effect for the next line. */
void log_configure(struct logger *lg, enum log_level min_level, enum log_format format);

/* Non-zero when lg writes events of this level (cheap; use before costly fields). lg may be
 * NULL: nothing is written then. */
int log_enabled(const struct logger *lg, enum log_level level);

/* Writes one line: ts, level, event, then the fields in order. One write(2) per line, so
 * lines from several threads never interleave. Any thread. */
void log_emit(const struct logger *lg, enum log_level level, const char *event,
              const struct log_field *fields, size_t n_fields);

/* Builds the line log_emit would write (lg's format; the level is not filtered) into out and
 * returns its length, or 0 when it does not fit out_len (LOG_LINE_BYTES always does). */
size_t log_format(const struct logger *lg, enum log_level level, const char *event,
                  const struct log_field *fields, size_t n_fields, char *out, size_t out_len);

#define LOG_LINE_BYTES 4096 /* the longest line: a buffer this size always holds one */

/* log_event(lg, LOG_LEVEL_INFO, "listener_started", LOG_STR("listener", name), ...) */
#define log_event(lg, level, event, ...)                                                           \
    do {                                                                                           \
        if (log_enabled((lg), (level))) {                                                          \
            const struct log_field log_fields_[] = {__VA_ARGS__};                                  \
            log_emit((lg), (level), (event), log_fields_,                                          \
                     sizeof(log_fields_) / sizeof(log_fields_[0]));                                \
        }                                                                                          \
    } while (0)

/* Parses "debug" | "info" | "warn" | "error"; returns 0 or -EINVAL. */
int log_level_parse(const char *text, enum log_level *out);

/* Parses "json" | "text"; returns 0 or -EINVAL. */
int log_format_parse(const char *text, enum log_format *out);

#endif
