/* discovery = file end to end: the JSON list is watched with inotify; adding, removing and
 * reweighting instances (rename into place and in-place writes) reach the traffic; a broken write
 * keeps the last good set and logs the line of the error; an instance that refuses connections is
 * ejected and stays ejected across rewrites (its id is stable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define N_BACKENDS 3

static struct proc backends[N_BACKENDS], sluice;
static int ports[N_BACKENDS], admin_port, web_port;
static char list_path[512];

static int setup(void **state)
{
    (void)state;
    return hello_backends_start(backends, ports, N_BACKENDS);
}

static int teardown(void **state)
{
    (void)state;
    hello_backends_stop(backends, N_BACKENDS);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    if (sluice.pid != 0)
        proc_stop(&sluice, SIGTERM);
    unlink(list_path);
    return 0;
}

/* The list with backend i at weights[i] (-1: left out), each with id "b<i>". */
static void list_text(char *out, size_t len, const int *weights)
{
    snprintf(out, len, "[\n");
    for (int i = 0; i < N_BACKENDS; i++)
        if (weights[i] >= 0)
            snprintf(out + strlen(out), len - strlen(out),
                     "%s  {\"address\": \"127.0.0.1:%d\", \"weight\": %d, \"id\": \"b%d\"}",
                     out[2] != '\0' ? ",\n" : "", ports[i], weights[i], i);
    snprintf(out + strlen(out), len - strlen(out), "\n]\n");
}

/* Rename into place (what a deploy tool does). */
static void list_rename(const int *weights)
{
    char text[2048];
    list_text(text, sizeof(text), weights);
    zone_write(list_path, text);
}

/* Truncate and write in place (what an editor or `cat >` does). */
static void list_in_place(const char *text)
{
    config_write(list_path, text);
}

static void start_sluice(const char *service_extra)
{
    char conf[2048];
    static int n;
    snprintf(list_path, sizeof(list_path), "%s/instances-%d-%d.json", harness_tmpdir(), getpid(),
             n++);
    admin_port = harness_free_port();
    web_port = harness_free_port();
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[service:api]\ndiscovery = file\nfile = %s\n%s\n",
             admin_port, web_port, list_path, service_extra);
    assert_int_equal(sluice_start(&sluice, conf), 0);
}

static void wait_published(size_t *from, int n)
{
    char want[32];
    snprintf(want, sizeof(want), "\"instances\":%d,", n);
    const char *needles[] = {"\"event\":\"registry_published\"", want, NULL};
    assert_int_equal(log_wait(&sluice, from, NULL, 0, needles), 0);
}

/* A file that appears after the start, then add, remove and reweight. */
static void test_add_remove_reweight(void **state)
{
    (void)state;
    int counts[N_BACKENDS];
    char text[2048];
    size_t from = 0;
    const char *failed[] = {"\"event\":\"registry_failed\"", "cannot read", NULL};

    start_sluice("balance = weighted");
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, failed), 0); /* not there yet */
    list_rename((int[]){1, 1, -1});
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 20, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);

    list_text(text, sizeof(text), (int[]){1, 1, 1}); /* add, written in place */
    list_in_place(text);
    wait_published(&from, 3);
    assert_int_equal(count_hellos(web_port, 30, counts, N_BACKENDS), 0);
    assert_int_equal(counts[2], 10);

    list_rename((int[]){3, 1, -1}); /* reweight and remove */
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 400, counts, N_BACKENDS), 0);
    print_message("file weights 3:1 -> %d / %d of 400 connections\n", counts[0], counts[1]);
    assert_in_range(counts[0], 260, 340);
    assert_in_range(counts[1], 60, 140);
    assert_int_equal(counts[2], 0);
}

/* A broken write keeps the set, names the line; the next good write recovers. */
static void test_broken_write_keeps_last_set(void **state)
{
    (void)state;
    int counts[N_BACKENDS];
    char text[2048], line[4096];
    size_t from = 0;

    start_sluice("balance = round_robin");
    list_rename((int[]){1, 1, -1});
    wait_published(&from, 2);
    /* line 3 breaks off */
    snprintf(text, sizeof(text), "[\n  {\"address\": \"127.0.0.1:%d\"},\n  {\"address\": \n",
             ports[2]);
    list_in_place(text);
    const char *failed[] = {"\"event\":\"registry_failed\"", NULL};
    assert_int_equal(log_wait(&sluice, &from, line, sizeof(line), failed), 0);
    if (strstr(line, "line 3: not valid JSON") == NULL)
        fail_msg("no line number in: %s", line);
    assert_int_equal(count_hellos(web_port, 20, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);
    assert_true(status_registry_field(admin_port, "failing") == 1);

    list_in_place("[{\"address\": \"127.0.0.1:99999\"}]"); /* valid JSON, bad entry */
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    /* errors: the file missing at start (the first outage), the syntax error, the bad entry */
    while (status_registry_field(admin_port, "errors") < 3 && harness_now_ms() < deadline)
        sleep_ms(50);
    assert_true(status_registry_field(admin_port, "errors") == 3);
    assert_true(status_registry_field(admin_port, "outages") == 2);
    assert_int_equal(log_count_all(&sluice, failed), 2); /* once per outage */

    list_rename((int[]){-1, -1, 1});
    const char *recovered[] = {"\"event\":\"registry_recovered\"", NULL};
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, recovered), 0);
    wait_published(&from, 1);
    assert_int_equal(count_hellos(web_port, 5, counts, N_BACKENDS), 0);
    assert_int_equal(counts[2], 5);
}

/* An instance that refuses connections is ejected; rewriting the file (a weight change of
 * another instance) keeps it ejected: the state follows the id. */
static void test_instance_ejected_across_rewrites(void **state)
{
    (void)state;
    char text[1024], st[32];
    int dead = harness_free_port(), counts[N_BACKENDS];
    size_t from = 0;

    start_sluice("balance = round_robin\neject_after = 2\neject_time = 1m");
    snprintf(text, sizeof(text),
             "[{\"address\": \"127.0.0.1:%d\", \"id\": \"live\"},"
             " {\"address\": \"127.0.0.1:%d\", \"id\": \"dead\"}]",
             ports[0], dead);
    zone_write(list_path, text);
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    do {
        status_instance_state(admin_port, "dead", st, sizeof(st));
    } while (strcmp(st, "ejected") != 0 && harness_now_ms() < deadline && (sleep_ms(50), 1));
    assert_string_equal(st, "ejected");
    snprintf(text, sizeof(text),
             "[{\"address\": \"127.0.0.1:%d\", \"id\": \"live\", \"weight\": 5},"
             " {\"address\": \"127.0.0.1:%d\", \"id\": \"dead\"}]",
             ports[0], dead);
    zone_write(list_path, text);
    const char *published[] = {"\"event\":\"registry_published\"", NULL};
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, published), 0);
    status_instance_state(admin_port, "dead", st, sizeof(st));
    assert_string_equal(st, "ejected");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_add_remove_reweight, test_teardown),
        cmocka_unit_test_teardown(test_broken_write_keeps_last_set, test_teardown),
        cmocka_unit_test_teardown(test_instance_ejected_across_rewrites, test_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
