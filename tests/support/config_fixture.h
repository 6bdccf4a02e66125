/* Unit-test fixture for config files: INI text written to a temporary file and loaded, and
 * cmocka assertions on the "FILE:LINE: key: phrase" error lines that loading produces. */
#ifndef SLUICE_TEST_CONFIG_FIXTURE_H
#define SLUICE_TEST_CONFIG_FIXTURE_H

#include <stddef.h>

#include "config.h"

/* A config loader: config_load or config_load_consul. */
typedef int (*config_loader_fn)(const char *path, struct config **out, struct ini_errors *errs);

/* One expected error line: "FILE:LINE: KEY: " exactly, then a phrase containing PHRASE. */
struct want {
    int line;           /* LINE the error names */
    const char *key;    /* KEY (or "[section]") the error names */
    const char *phrase; /* text that must appear after the prefix */
};

/* Writes text to a fresh temporary file and loads it with config_load; the file is gone
 * afterwards. Returns what config_load returned; *cfg and errs as config_load leaves them. */
int load_text(const char *text, struct config **cfg, struct ini_errors *errs);

/* Like load_text with another loader (config_load_consul). */
int load_text_with(config_loader_fn load, const char *text, struct config **cfg,
                   struct ini_errors *errs);

/* Path of the file the last load_text() wrote; error lines start with it. Valid until the
 * next load_text(). */
const char *load_text_path(void);

/* Loads text that must be valid (no error line either); returns the config, which the caller
 * frees with config_destroy. Fails the test otherwise. */
struct config *load_ok(const char *text);

/* Fails the test unless got is "PATH:LINE: KEY: " followed by text containing w's phrase. */
void assert_error_line(const char *path, const char *got, const struct want *w);

/* Loads text, which must fail with exactly the n errors of w, in this order. */
void expect_errors(const char *text, const struct want *w, size_t n);

/* EXPECT_ERRORS(text, {line, key, phrase}, ...): expect_errors with the list written inline. */
#define EXPECT_ERRORS(text, ...)                                                                   \
    do {                                                                                           \
        const struct want want_[] = {__VA_ARGS__};                                                 \
        expect_errors((text), want_, sizeof(want_) / sizeof(want_[0]));                            \
    } while (0)

#endif
