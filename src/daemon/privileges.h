/* [sluice] user and group: who sluice runs as once its sockets and pid file are set up. The drop
 * leaves no supplementary group, then sets the group, then the user, and is checked in the
 * kernel's own words (getresuid/getresgid, /proc/self/task/N/status) before sluice serves. */
#ifndef SLUICE_PRIVILEGES_H
#define SLUICE_PRIVILEGES_H

#include <stddef.h>
#include <sys/types.h>

/* Whom to become. */
struct privileges {
    uid_t uid;      /* real, effective, saved and filesystem uid after the drop */
    gid_t gid;      /* the same four gids */
    char user[64];  /* the user as named (or numbered) in the file, for logs */
    char group[64]; /* the group, or the user's primary group's name or number */
};

/* Checks for the config rows: NULL when value names a user (group) known to the system's
 * databases or is a number, else a phrase such as "is not a known user" for the caller to
 * prefix with FILE:LINE. Any thread. */
const char *privileges_user_check(const char *value);
const char *privileges_group_check(const char *value);

/* Resolves user (a name or a number) and group (a name, a number, or NULL for the user's primary
 * group from the user database). 0, or -errno with the reason in err. Any thread. */
int privileges_resolve(const char *user, const char *group, struct privileges *out, char *err,
                       size_t err_len);

/* Drops to p for the whole process (glibc applies each set*id call to every thread): no
 * supplementary groups (setgroups), then setgid, then setuid, then privileges_verify. 0, or
 * -errno with the failed step in err. Main thread, once. */
int privileges_drop(const struct privileges *p, char *err, size_t err_len);

/* Checks that every uid and gid of the process (getresuid, getresgid, and the Uid:, Gid: and
 * Groups: lines of each thread's /proc/self/task/N/status) is p's, with no supplementary group,
 * and that root cannot be regained. 0, or -EPERM with what differs in err. Any thread. */
int privileges_verify(const struct privileges *p, char *err, size_t err_len);

#endif
