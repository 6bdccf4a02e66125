/* CPU counting for workers = auto: cpu.max and /proc/self/cgroup parsing, the choice between
 * affinity and quota, and the count of this very process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>

#include "cpus.h"

static void test_cpu_max_quota_rounds_up(void **state)
{
    (void)state;
    uint32_t n = 99;
    assert_int_equal(cpus_parse_cpu_max("200000 100000\n", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cpus_parse_cpu_max("150000 100000\n", &n), 0);
    assert_int_equal(n, 2); /* 1.5 CPUs */
    assert_int_equal(cpus_parse_cpu_max("100001 100000", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cpus_parse_cpu_max("50000 100000\n", &n), 0);
    assert_int_equal(n, 1); /* half a CPU still runs one worker */
    assert_int_equal(cpus_parse_cpu_max("1000 100000\n", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cpus_parse_cpu_max("400000\t100000\n", &n), 0);
    assert_int_equal(n, 4);
}

static void test_cpu_max_unlimited(void **state)
{
    (void)state;
    uint32_t n = 99;
    assert_int_equal(cpus_parse_cpu_max("max 100000\n", &n), 0);
    assert_int_equal(n, 0);
}

static void test_cpu_max_rejects_garbage(void **state)
{
    (void)state;
    uint32_t n = 99;
    const char *bad[] = {"",
                         "\n",
                         "max",
                         "maxi 100000",
                         "100000",
                         "100000 0\n",
                         "-1 100000",
                         "100000 100000 7",
                         "abc 100000",
                         "100000 x",
                         "99999999999999999999999 100000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cpus_parse_cpu_max(bad[i], &n) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(n, 99);
}

static void test_cgroup_v2_line(void **state)
{
    (void)state;
    char path[64];
    assert_int_equal(cpus_parse_cgroup("0::/system.slice/sluice.service\n", path, sizeof(path)), 0);
    assert_string_equal(path, "/system.slice/sluice.service");
    assert_int_equal(cpus_parse_cgroup("0::/\n", path, sizeof(path)), 0);
    assert_string_equal(path, "/");
    /* hybrid hosts list the v1 hierarchies first; only the unified one has cpu.max */
    assert_int_equal(cpus_parse_cgroup("12:cpu,cpuacct:/docker/abc\n4:memory:/x\n0::/docker/abc",
                                       path, sizeof(path)),
                     0);
    assert_string_equal(path, "/docker/abc");
}

static void test_cgroup_without_v2(void **state)
{
    (void)state;
    char path[8];
    assert_int_equal(cpus_parse_cgroup("", path, sizeof(path)), -ENOENT);
    assert_int_equal(cpus_parse_cgroup("3:cpu:/a\n10:0::/b\n", path, sizeof(path)), -ENOENT);
    assert_int_equal(cpus_parse_cgroup("0::/far/too/long/for/eight\n", path, sizeof(path)),
                     -ENAMETOOLONG);
}

static void test_choose_smaller_at_least_one_capped(void **state)
{
    (void)state;
    assert_int_equal(cpus_choose(8, 0, 256), 8);     /* no quota: the affinity mask */
    assert_int_equal(cpus_choose(8, 2, 256), 2);     /* a container limit below it */
    assert_int_equal(cpus_choose(1, 4, 256), 1);     /* taskset -c 0 in a 4-CPU container */
    assert_int_equal(cpus_choose(0, 0, 256), 1);     /* never no worker */
    assert_int_equal(cpus_choose(512, 0, 256), 256); /* WORKERS_MAX */
    assert_int_equal(cpus_choose(512, 300, 256), 256);
}

/* This process: the count agrees with its own affinity mask (the test may itself run under
 * taskset, which is the point of counting it). */
static void test_this_process(void **state)
{
    (void)state;
    cpu_set_t set;
    struct cpus_usable u;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    cpus_usable(&u, 256);
    assert_int_equal(u.affinity, (uint32_t)CPU_COUNT(&set));
    assert_int_equal(u.count, cpus_choose(u.affinity, u.cpu_max, 256));
    cpus_usable(&u, 1);
    assert_int_equal(u.count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_max_quota_rounds_up),
        cmocka_unit_test(test_cpu_max_unlimited),
        cmocka_unit_test(test_cpu_max_rejects_garbage),
        cmocka_unit_test(test_cgroup_v2_line),
        cmocka_unit_test(test_cgroup_without_v2),
        cmocka_unit_test(test_choose_smaller_at_least_one_capped),
        cmocka_unit_test(test_this_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
