/* [sluice] user and group end to end: started as root, sluice drops to nobody:nogroup once it is
 * set up (every thread's four uids and gids, no supplementary group), still carries verified
 * bytes and still reloads; a reload adding a port below 1024 fails clearly; without user, root
 * is warned about; an unknown user is a -t error. The privileged cases need root: run as
 * another user they report a cmocka skip saying so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define BYTES 65536 /* echoed and verified per connection */

static struct proc echo;
static int echo_port;
static uid_t nobody_uid;
static gid_t nogroup_gid;

static int setup(void **state)
{
    (void)state;
    const char *hello[] = {"--hello", "E", NULL};
    const struct passwd *pw = getpwnam("nobody");
    const struct group *gr = getgrnam("nogroup");
    if (pw == NULL || gr == NULL)
        return -1; /* Debian always has both */
    nobody_uid = pw->pw_uid;
    nogroup_gid = gr->gr_gid;
    echo_port = backend_start(&echo, "echo", hello);
    return echo_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&echo, SIGTERM);
    return 0;
}

/* The privileged cases need root: run as another user, they fail and say why. */
static void need_root(void)
{
    if (geteuid() != 0) /* a failure, not a skip: the drop would go untested */
        fail_msg("not root (euid %u): dropping privileges needs root; run the suite as root "
                 "(CI does)",
                 (unsigned)geteuid());
}

static void config_text(char *out, size_t len, int port, const char *sluice_extra,
                        const char *extra_sections)
{
    snprintf(out, len,
             "[sluice]\nworkers = 2\nlog_format = json\n%s"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = echo\n"
             "[service:echo]\nbackends = 127.0.0.1:%d\n%s",
             sluice_extra, port, echo_port, extra_sections);
}

static void traffic_verified(int port, int connections)
{
    static const char *const hellos[] = {"E", NULL};
    for (int i = 0; i < connections; i++) {
        const char *why = "";
        if (echo_verified(port, (unsigned long long)i + 1, BYTES, hellos, &why) != 0)
            fail_msg("connection %d through sluice failed: %s", i, why);
    }
}

/* "Uid:" (or "Gid:") of a status file has want in all four fields; "Groups:" is empty. */
static void status_ids(const char *path, unsigned uid, unsigned gid)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int seen = 0;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned a, b, c, d;
        if (sscanf(line, "Uid: %u %u %u %u", &a, &b, &c, &d) == 4) {
            if (a != uid || b != uid || c != uid || d != uid)
                fail_msg("%s: %s", path, line);
            seen |= 1;
        } else if (sscanf(line, "Gid: %u %u %u %u", &a, &b, &c, &d) == 4) {
            if (a != gid || b != gid || c != gid || d != gid)
                fail_msg("%s: %s", path, line);
            seen |= 2;
        } else if (strncmp(line, "Groups:", 7) == 0) {
            if (strspn(line + 7, " \t\n") != strlen(line + 7))
                fail_msg("%s: supplementary groups left: %s", path, line);
            seen |= 4;
        }
    }
    fclose(f);
    if (seen != 7)
        fail_msg("%s lacks a Uid:, Gid: or Groups: line", path);
}

/* Every thread of pid, not only the main one. Returns how many there are. */
static int all_tasks_dropped(pid_t pid)
{
    char dir_path[64], path[400];
    snprintf(dir_path, sizeof(dir_path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(dir_path);
    struct dirent *e;
    int n = 0;
    assert_non_null(dir);
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/status", dir_path, e->d_name);
        status_ids(path, (unsigned)nobody_uid, (unsigned)nogroup_gid);
        n++;
    }
    closedir(dir);
    return n;
}

/* The config written by the harness must stay readable to nobody, or no reload could work. */
static void readable_by_all(const char *path)
{
    assert_int_equal(chmod(path, 0644), 0);
}

static void reload_and_wait(struct proc *p, const char *text)
{
    size_t from = log_size(p);
    config_write(p->conf_path, text);
    readable_by_all(p->conf_path);
    proc_signal(p, SIGHUP);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(p, &from, NULL, 0, done), 0);
}

static void test_drops_to_nobody(void **state)
{
    (void)state;
    need_root();
    struct proc p = {0};
    char conf[2048], pid_file[600];
    int port = harness_free_port();
    snprintf(pid_file, sizeof(pid_file), "%s/priv-%d.pid", harness_tmpdir(), getpid());
    char extra[800];
    snprintf(extra, sizeof(extra), "user = nobody\ngroup = nogroup\npid_file = %s\n", pid_file);
    config_text(conf, sizeof(conf), port, extra, "");
    assert_int_equal(sluice_start(&p, conf), 0);
    const char *dropped[] = {"\"event\":\"privileges_dropped\"", "\"user\":\"nobody\"",
                             "\"group\":\"nogroup\"", NULL};
    assert_int_equal(log_count_all(&p, dropped), 1);
    status_ids("/proc/self/status", (unsigned)geteuid(), (unsigned)getegid()); /* the checker */
    int threads = all_tasks_dropped(p.pid);
    print_message("%d threads of sluice all run as %u:%u without supplementary groups\n", threads,
                  (unsigned)nobody_uid, (unsigned)nogroup_gid);
    assert_true(threads >= 3); /* main, two workers at least */
    traffic_verified(port, 8);

    /* a reload still works: the file is re-read as nobody, and adds a listener */
    char changed[2048], web2[160];
    int port2 = harness_free_port();
    snprintf(web2, sizeof(web2), "[listener:web2]\nbind = 127.0.0.1:%d\nservice = echo\n", port2);
    config_text(changed, sizeof(changed), port, extra, web2);
    reload_and_wait(&p, changed);
    traffic_verified(port, 4);
    traffic_verified(port2, 4); /* the listener the reload added, on a high port */
    all_tasks_dropped(p.pid);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    /* the pid file's directory belongs to root: sluice says it could not remove the file */
    const char *left[] = {"\"event\":\"pid_file_not_removed\"", "Permission denied", NULL};
    assert_int_equal(access(pid_file, F_OK), 0);
    assert_int_equal(log_count_all(&p, left), 1);
    unlink(pid_file);
}

/* After the drop, a reload that adds a listener below 1024 fails with the reason and a hint;
 * the running listener keeps serving. */
static void test_reload_low_port_after_drop(void **state)
{
    (void)state;
    need_root();
    struct proc p = {0};
    char conf[2048], changed[2048], low[160];
    int port = harness_free_port();
    config_text(conf, sizeof(conf), port, "user = nobody\ngroup = nogroup\n", "");
    assert_int_equal(sluice_start(&p, conf), 0);
    readable_by_all(p.conf_path);
    int low_port = 1000 + (int)(getpid() % 20); /* below 1024: root's */
    snprintf(low, sizeof(low), "[listener:low]\nbind = 127.0.0.1:%d\nservice = echo\n", low_port);
    config_text(changed, sizeof(changed), port, "user = nobody\ngroup = nogroup\n", low);
    size_t from = log_size(&p);
    config_write(p.conf_path, changed);
    proc_signal(&p, SIGHUP);
    const char *failed[] = {"\"event\":\"reload_listener_failed\"", "\"listener\":\"low\"",
                            "permission denied", "ports below 1024 need a restart", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, failed), 0);
    traffic_verified(port, 2);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

static void test_root_without_user_warns(void **state)
{
    (void)state;
    need_root();
    struct proc p = {0};
    char conf[2048];
    int port = harness_free_port();
    config_text(conf, sizeof(conf), port, "", "");
    assert_int_equal(sluice_start(&p, conf), 0);
    const char *warned[] = {"\"level\":\"warn\"", "\"event\":\"running_as_root\"",
                            "[sluice] user is not set", NULL};
    assert_int_equal(log_count_all(&p, warned), 1);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)p.pid);
    status_ids(path, 0, (unsigned)getegid()); /* nothing dropped */
    traffic_verified(port, 2);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* sluice -t names the file, the line and the key of an unknown user or group. Needs no root. */
static void test_unknown_user_is_config_error(void **state)
{
    (void)state;
    char conf[2048], path[600], out[4096], want[700];
    int port = harness_free_port();
    config_text(conf, sizeof(conf), port, "user = no-such-user-x\ngroup = no-such-group-x\n", "");
    snprintf(path, sizeof(path), "%s/priv-bad-%d.ini", harness_tmpdir(), getpid());
    config_write(path, conf);
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:4: user: \"no-such-user-x\" is not a known user", path);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "%s:5: group: \"no-such-group-x\" is not a known group", path);
    assert_non_null(strstr(out, want));
    unlink(path);
}

/* sluice re-reads its config as nobody on reload, so every directory above it must let nobody
 * through; a checkout under a 0700 directory (mktemp -d) does not. The files of this test go to
 * a directory of their own under /tmp, which every user may traverse. */
static void use_traversable_tmpdir(void)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/sluice-privileges-%ld", (long)getuid());
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return;
    if (chmod(dir, 0755) == 0)
        setenv("SLUICE_TEST_TMP", dir, 1);
}

int main(void)
{
    use_traversable_tmpdir();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drops_to_nobody),
        cmocka_unit_test(test_reload_low_port_after_drop),
        cmocka_unit_test(test_root_without_user_warns),
        cmocka_unit_test(test_unknown_user_is_config_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
