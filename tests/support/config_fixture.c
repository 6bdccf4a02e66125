/* Unit-test fixture for config files: temporary files, load_ok and the EXPECT_ERRORS checks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_fixture.h"

/* Path of the file the last load_text_with() wrote, kept for the error-line prefixes. */
static char cfg_path[64];

int load_text(const char *text, struct config **cfg, struct ini_errors *errs)
{
    return load_text_with(config_load, text, cfg, errs);
}

int load_text_with(config_loader_fn load, const char *text, struct config **cfg,
                   struct ini_errors *errs)
{
    size_t len = strlen(text);
    int fd, rc;

    snprintf(cfg_path, sizeof(cfg_path), "/tmp/sluice_test_config_XXXXXX");
    fd = mkstemp(cfg_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    rc = load(cfg_path, cfg, errs);
    unlink(cfg_path);
    return rc;
}

const char *load_text_path(void)
{
    return cfg_path;
}

struct config *load_ok(const char *text)
{
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    int rc = load_text(text, &cfg, &errs);

    for (size_t i = 0; i < errs.n; i++) {
        print_message("unexpected: %s\n", errs.lines[i]);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(errs.n, 0);
    assert_non_null(cfg);
    return cfg;
}

void assert_error_line(const char *path, const char *got, const struct want *w)
{
    char prefix[256];
    size_t len = (size_t)snprintf(prefix, sizeof(prefix), "%s:%d: %s: ", path, w->line, w->key);

    if (strncmp(got, prefix, len) != 0 || strstr(got + len, w->phrase) == NULL) {
        print_message("got:  %s\nwant: %s...%s...\n", got, prefix, w->phrase);
        fail();
    }
}

void expect_errors(const char *text, const struct want *w, size_t n)
{
    struct ini_errors errs = {0};
    struct config *cfg = (struct config *)&errs; /* must be reset to NULL */
    int rc = load_text(text, &cfg, &errs);

    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    if (errs.n != n) {
        for (size_t i = 0; i < errs.n; i++) {
            print_message("error %zu: %s\n", i, errs.lines[i]);
        }
    }
    assert_int_equal(errs.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_error_line(cfg_path, errs.lines[i], &w[i]);
    }
    ini_errors_clear(&errs);
    assert_null(errs.lines);
    assert_int_equal(errs.n, 0);
}
