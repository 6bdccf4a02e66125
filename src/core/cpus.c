/* Counting the CPUs this process may run on: affinity mask and cgroup v2 cpu.max. */
#include "cpus.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "inifile.h"

#define CGROUP_ROOT    "/sys/fs/cgroup"
#define CGROUP_TEXT    4096      /* bytes of /proc/self/cgroup or cpu.max read; both are small */
#define AFFINITY_LIMIT (1 << 20) /* largest CPU set size tried: far beyond any kernel's NR_CPUS */

int cpus_parse_cpu_max(const char *text, uint32_t *cpus)
{
    uint64_t quota, period;
    const char *end;

    if (strncmp(text, "max", 3) == 0 && (text[3] == ' ' || text[3] == '\t')) {
        *cpus = 0;
        return 0;
    }
    if (ini_digits(text, &quota, &end) != 0 || (*end != ' ' && *end != '\t'))
        return -EINVAL;
    while (*end == ' ' || *end == '\t')
        end++;
    if (ini_digits(end, &period, &end) != 0 || period == 0 || (*end != '\0' && *end != '\n'))
        return -EINVAL;
    /* a fraction of a CPU still needs a thread: 1.5 CPUs of quota keep two workers busy */
    uint64_t n = quota / period + (quota % period != 0);
    *cpus = n == 0 ? 1 : n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    return 0;
}

int cpus_parse_cgroup(const char *text, char *out, size_t out_len)
{
    /* the analyzer lets open(2) fail with errno 0 in read_text, leaving text unread */
    // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
        /* v1 lines are "ID:CONTROLLERS:PATH"; the unified (v2) hierarchy is ID 0, no controllers */
        if (len >= 3 && strncmp(line, "0::", 3) == 0) {
            if (len - 3 >= out_len)
                return -ENAMETOOLONG;
            memcpy(out, line + 3, len - 3);
            out[len - 3] = '\0';
            return 0;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return -ENOENT;
}

uint32_t cpus_choose(uint32_t affinity, uint32_t cpu_max, uint32_t cap)
{
    uint32_t n = cpu_max != 0 && cpu_max < affinity ? cpu_max : affinity;

    if (n < 1)
        n = 1;
    return n > cap ? cap : n;
}

/* Reads a small file into buf as a string. 0 or -errno. */
static int read_text(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = read(fd, buf, len - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = '\0';
    return 0;
}

/* CPUs in this thread's affinity mask; the set grows until it holds the kernel's mask (hosts
 * with more than CPU_SETSIZE CPUs). 0 when it cannot be read. */
static uint32_t affinity_count(void)
{
    for (int ncpus = CPU_SETSIZE; ncpus <= AFFINITY_LIMIT; ncpus *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)ncpus);
        size_t size = CPU_ALLOC_SIZE((size_t)ncpus);
        if (set == NULL)
            return 0;
        int rc = sched_getaffinity(0, size, set);
        int e = errno;
        int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
        CPU_FREE(set);
        if (rc == 0)
            return (uint32_t)count;
        if (e != EINVAL)
            return 0;
    }
    return 0;
}

/* The tightest cpu.max from the process's cgroup up to the root of the mount: a parent's limit
 * binds its children too (systemd slices, nested containers). 0 = none. */
static uint32_t cgroup_cpu_max(void)
{
    char text[CGROUP_TEXT], path[CGROUP_TEXT], file[CGROUP_TEXT + 64];
    uint32_t best = 0;

    if (read_text("/proc/self/cgroup", text, sizeof(text)) != 0 ||
        cpus_parse_cgroup(text, path, sizeof(path)) != 0)
        return 0;
    if (strcmp(path, "/") == 0)
        path[0] = '\0';
    for (;;) {
        uint32_t cpus;
        snprintf(file, sizeof(file), CGROUP_ROOT "%s/cpu.max", path);
        if (read_text(file, text, sizeof(text)) == 0 && cpus_parse_cpu_max(text, &cpus) == 0 &&
            cpus != 0 && (best == 0 || cpus < best))
            best = cpus;
        char *slash = strrchr(path, '/');
        if (slash == NULL)
            break;
        *slash = '\0'; /* "/a/b" -> "/a" -> "" (the mount's root: a cgroup namespace's own) */
    }
    return best;
}

void cpus_usable(struct cpus_usable *out, uint32_t cap)
{
    out->affinity = affinity_count();
    if (out->affinity == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        out->affinity = online > 0 && online <= UINT32_MAX ? (uint32_t)online : 1;
    }
    out->cpu_max = cgroup_cpu_max();
    out->count = cpus_choose(out->affinity, out->cpu_max, cap);
}
