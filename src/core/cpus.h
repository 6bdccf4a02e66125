/* How many CPUs this process may run on: its affinity mask (taskset, cpusets) and a cgroup v2
 * cpu.max quota (a container's CPU limit), as container-aware runtimes count them. The parsers
 * are pure so that tests feed them text; cpus_usable reads /proc and /sys. Any thread. */
#ifndef SLUICE_CPUS_H
#define SLUICE_CPUS_H

#include <stddef.h>
#include <stdint.h>

/* What cpus_usable found, and what it chose. */
struct cpus_usable {
    uint32_t affinity; /* CPUs in the sched_getaffinity mask (the online count if unreadable) */
    uint32_t cpu_max;  /* smallest cpu.max quota of the cgroup and its ancestors in CPUs, rounded
                        * up; 0 = no quota (every one says "max", or no cgroup v2) */
    uint32_t count;    /* the smaller of the two, at least 1, at most the caller's cap */
};

/* Fills out for this process, count capped at cap (>= 1). Reads /proc/self/cgroup and
 * /sys/fs/cgroup; a file that cannot be read counts as no limit. */
void cpus_usable(struct cpus_usable *out, uint32_t cap);

/* Parses a cpu.max file ("QUOTA PERIOD", or "max PERIOD"). Returns 0 with *cpus = QUOTA / PERIOD
 * rounded up (at least 1), or 0 for "max"; -EINVAL when text is not that. */
int cpus_parse_cpu_max(const char *text, uint32_t *cpus);

/* Finds the cgroup v2 path (the "0::PATH" line) in the text of /proc/self/cgroup and copies
 * PATH into out. 0; -ENOENT when there is no such line (cgroup v1 only); -ENAMETOOLONG. */
int cpus_parse_cgroup(const char *text, char *out, size_t out_len);

/* The rule of cpus_usable: min(affinity, cpu_max when not 0), then clamped to 1..cap. */
uint32_t cpus_choose(uint32_t affinity, uint32_t cpu_max, uint32_t cap);

#endif
