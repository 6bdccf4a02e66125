/* libFuzzer target: the whole config loader as `sluice -t` runs it (the INI engine, every
 * section's key rows and the checks across sections), on a file made of the input. It must never
 * crash, leak or hang, and every problem must read "FILE:LINE: key: what" with a line of the
 * file. The file is a memfd reached through /proc/self/fd, so the loader opens, stats and reads
 * it exactly as it does a file on disk. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_check.h"

static char path[64];
static int fd = -1;

/* Replaces the memfd's content with data. */
static void file_set(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        fd = memfd_create("fuzz.ini", MFD_CLOEXEC);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
}

/* Lines of data as the loader counts them: a last line needs no newline. */
static long line_count(const uint8_t *data, size_t size)
{
    long n = 0;

    for (size_t i = 0; i < size; i++) {
        n += data[i] == '\n';
    }
    return n + (size > 0 && data[size - 1] != '\n');
}

/* "PATH:LINE: key: what", LINE from 0 (the whole file) to the last line. */
static void error_check(const char *line, long lines)
{
    size_t plen = strlen(path);
    char *end;

    if (strncmp(line, path, plen) != 0 || line[plen] != ':') {
        fprintf(stderr, "error without the file name: %s\n", line);
        abort();
    }
    long n = strtol(line + plen + 1, &end, 10);
    if (end == line + plen + 1 || n < 0 || n > lines || strncmp(end, ": ", 2) != 0 ||
        strstr(end + 2, ": ") == NULL) {
        fprintf(stderr, "error is not FILE:LINE: key: what (file has %ld lines): %s\n", lines,
                line);
        abort();
    }
}

/* One load; returns its result after checking what it handed back. */
static int load_check(int (*load)(const char *, struct config **, struct ini_errors *), long lines)
{
    struct config *cfg = NULL;
    struct ini_errors errs = {0};
    int rc = load(path, &cfg, &errs);

    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL && errs.n == 0);
        FUZZ_CHECK(cfg->workers >= 1 && cfg->workers <= 256);
        for (size_t i = 0; i < cfg->n_listeners; i++) {
            /* check_listener resolved the service: it names one of the file's */
            FUZZ_CHECK(cfg->listeners[i].service_index <= cfg->n_services);
        }
    } else {
        FUZZ_CHECK(cfg == NULL);
        FUZZ_CHECK(rc == -EINVAL ? errs.n > 0 : rc == -ENOMEM);
    }
    for (size_t i = 0; i < errs.n; i++) {
        error_check(errs.lines[i], lines);
    }
    ini_errors_clear(&errs);
    config_destroy(cfg);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long lines = line_count(data, size);

    file_set(data, size);
    int daemon_rc = load_check(config_load, lines);
    int consul_rc = load_check(config_load_consul, lines);
    /* register/deregister need less (no listener) than the daemon, never more */
    FUZZ_CHECK(daemon_rc != 0 || consul_rc == 0);
    return 0;
}
