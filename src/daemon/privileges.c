/* Dropping root after start-up: resolve [sluice] user and group, change ids, and verify. */
#include "privileges.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_BUF 16384 /* getpwnam_r/getgrnam_r scratch; ERANGE beyond it is reported */

/* value as an id when it is all digits (and fits), else -1. */
static long long id_number(const char *value)
{
    char *end;

    if (value[0] < '0' || value[0] > '9')
        return -1;
    errno = 0;
    unsigned long long n = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || n >= (unsigned long long)(uid_t)-1)
        return -1;
    return (long long)n;
}

/* The passwd entry of a user name or number; 0, or -ENOENT / -errno. */
static int user_lookup(const char *value, struct passwd *pw, char *buf, size_t len)
{
    struct passwd *found = NULL;
    long long n = id_number(value);
    int rc = n >= 0 ? getpwuid_r((uid_t)n, pw, buf, len, &found)
                    : getpwnam_r(value, pw, buf, len, &found);

    if (rc != 0)
        return -rc;
    return found != NULL ? 0 : -ENOENT;
}

static int group_lookup(const char *value, struct group *gr, char *buf, size_t len)
{
    struct group *found = NULL;
    long long n = id_number(value);
    int rc = n >= 0 ? getgrgid_r((gid_t)n, gr, buf, len, &found)
                    : getgrnam_r(value, gr, buf, len, &found);

    if (rc != 0)
        return -rc;
    return found != NULL ? 0 : -ENOENT;
}

const char *privileges_user_check(const char *value)
{
    char buf[DB_BUF]; /* on the stack: config_load may run on any thread */
    struct passwd pw;

    if (id_number(value) >= 0)
        return NULL; /* a number needs no entry (group must then be given: privileges_resolve) */
    return user_lookup(value, &pw, buf, sizeof(buf)) == 0
               ? NULL
               : "is not a known user (no such name in the user database; a number is taken "
                 "as a uid)";
}

const char *privileges_group_check(const char *value)
{
    char buf[DB_BUF];
    struct group gr;

    if (id_number(value) >= 0)
        return NULL;
    return group_lookup(value, &gr, buf, sizeof(buf)) == 0
               ? NULL
               : "is not a known group (no such name in the group database; a number is taken "
                 "as a gid)";
}

static int resolve_user(const char *user, int need_group, struct privileges *out, char *err,
                        size_t err_len)
{
    char *buf = malloc(DB_BUF);
    struct passwd pw;
    long long n = id_number(user);
    int rc = buf != NULL ? user_lookup(user, &pw, buf, DB_BUF) : -ENOMEM;

    if (rc == 0) {
        out->uid = pw.pw_uid;
        out->gid = pw.pw_gid;
        snprintf(out->group, sizeof(out->group), "%u", (unsigned)pw.pw_gid);
    } else if (rc == -ENOENT && n >= 0 && !need_group) {
        out->uid = (uid_t)n;
        rc = 0;
    } else {
        snprintf(err, err_len, "user %s: %s", user,
                 rc == -ENOENT ? (n >= 0 ? "uid without a user database entry: set group too"
                                         : "is not a known user")
                               : strerror(-rc));
    }
    free(buf);
    return rc;
}

static int resolve_group(const char *group, struct privileges *out, char *err, size_t err_len)
{
    char *buf = malloc(DB_BUF);
    struct group gr;
    long long n = id_number(group);
    int rc = buf != NULL ? group_lookup(group, &gr, buf, DB_BUF) : -ENOMEM;

    if (rc == 0 || (rc == -ENOENT && n >= 0)) {
        out->gid = rc == 0 ? gr.gr_gid : (gid_t)n;
        rc = 0;
    } else {
        snprintf(err, err_len, "group %s: %s", group,
                 rc == -ENOENT ? "is not a known group" : strerror(-rc));
    }
    free(buf);
    return rc;
}

int privileges_resolve(const char *user, const char *group, struct privileges *out, char *err,
                       size_t err_len)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->user, sizeof(out->user), "%s", user);
    int rc = resolve_user(user, group == NULL, out, err, err_len);
    if (rc == 0 && group != NULL) {
        snprintf(out->group, sizeof(out->group), "%s", group);
        rc = resolve_group(group, out, err, err_len);
    }
    return rc;
}

/* "Uid:\t1\t2\t3\t4" holds want four times (no more numbers); for "Groups:", none at all. */
static int status_line_is(const char *line, const char *tag, unsigned want, int fields)
{
    size_t n = strlen(tag);
    const char *s = line + n;
    int seen = 0;

    if (strncmp(line, tag, n) != 0)
        return -1; /* not this line */
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (*s == '\0')
            return seen == fields;
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v != want)
            return 0;
        seen++;
        s = end;
    }
}

/* One thread's status file: Uid:, Gid: (four fields each) and Groups: (empty). */
static int task_status_ok(const char *path, const struct privileges *p, char *err, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int uid_ok = 0, gid_ok = 0, groups_ok = 0;

    if (f == NULL) {
        snprintf(err, len, "cannot read %s: %s", path, strerror(errno));
        return -EPERM;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        int r;
        if ((r = status_line_is(line, "Uid:", (unsigned)p->uid, 4)) >= 0)
            uid_ok = r;
        else if ((r = status_line_is(line, "Gid:", (unsigned)p->gid, 4)) >= 0)
            gid_ok = r;
        else if ((r = status_line_is(line, "Groups:", 0, 0)) >= 0)
            groups_ok = r;
    }
    (void)fclose(f); /* read-only: nothing to lose */
    if (uid_ok && gid_ok && groups_ok)
        return 0;
    snprintf(err, len, "%s shows %s other than %u/%u with no supplementary group", path,
             !uid_ok   ? "a uid"
             : !gid_ok ? "a gid"
                       : "groups",
             (unsigned)p->uid, (unsigned)p->gid);
    return -EPERM;
}

/* Every thread of the process, since a thread that kept root would be a way back. */
static int tasks_ok(const struct privileges *p, char *err, size_t len)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    char path[300];
    int rc = 0, n = 0;

    if (dir == NULL) {
        snprintf(err, len, "cannot read /proc/self/task: %s", strerror(errno));
        return -EPERM;
    }
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        rc = task_status_ok(path, p, err, len);
        n++;
    }
    closedir(dir);
    if (rc == 0 && n == 0) {
        snprintf(err, len, "/proc/self/task lists no thread");
        rc = -EPERM;
    }
    return rc;
}

int privileges_verify(const struct privileges *p, char *err, size_t err_len)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) {
        snprintf(err, err_len, "getresuid/getresgid: %s", strerror(errno));
        return -EPERM;
    }
    if (ru != p->uid || eu != p->uid || su != p->uid || rg != p->gid || eg != p->gid ||
        sg != p->gid) {
        snprintf(err, err_len,
                 "ids are uid %u/%u/%u gid %u/%u/%u (real/effective/saved), not %u/%u",
                 (unsigned)ru, (unsigned)eu, (unsigned)su, (unsigned)rg, (unsigned)eg, (unsigned)sg,
                 (unsigned)p->uid, (unsigned)p->gid);
        return -EPERM;
    }
    if (getgroups(0, NULL) != 0) {
        snprintf(err, err_len, "supplementary groups remain (%d)", getgroups(0, NULL));
        return -EPERM;
    }
    if (p->uid != 0 && setuid(0) == 0) {
        snprintf(err, err_len, "setuid(0) still succeeds: root can be regained");
        return -EPERM;
    }
    return tasks_ok(p, err, err_len);
}

int privileges_drop(const struct privileges *p, char *err, size_t err_len)
{
    /* order matters: groups and gid can only be changed while still root */
    if (setgroups(0, NULL) != 0) {
        int rc = -errno;
        snprintf(err, err_len, "setgroups(0): %s", strerror(errno));
        return rc;
    }
    if (setgid(p->gid) != 0) {
        int rc = -errno;
        snprintf(err, err_len, "setgid(%u): %s", (unsigned)p->gid, strerror(errno));
        return rc;
    }
    if (setuid(p->uid) != 0) {
        int rc = -errno;
        snprintf(err, err_len, "setuid(%u): %s", (unsigned)p->uid, strerror(errno));
        return rc;
    }
    return privileges_verify(p, err, err_len);
}
