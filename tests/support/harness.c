/* Integration-test harness: spawning, logs and blocking sockets. */
#include "harness.h"
#include "pattern.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int spawn_counter;
static pid_t children[256]; /* every child spawned, so a failed test cannot leak one */
static size_t n_children;
static char child_logs[256][512]; /* the log of each, searched for sanitizer reports at exit */
static int sanitizer_reported;    /* run_capture saw a report in a command's output */

/* What a sanitizer writes first in a report. A ThreadSanitizer report does not stop the
 * process (halt_on_error=0 keeps the test's own checks meaningful), and a child stopped by
 * SIGKILL or whose exit status a test ignores would otherwise hide any report. */
static const char *const sanitizer_marks[] = {"WARNING: ThreadSanitizer:", "FATAL: ThreadSanitizer",
                                              "ERROR: AddressSanitizer",   "ERROR: LeakSanitizer",
                                              ": runtime error: ",         NULL};

static const char *sanitizer_mark_in(const char *text)
{
    for (size_t i = 0; sanitizer_marks[i] != NULL; i++)
        if (strstr(text, sanitizer_marks[i]) != NULL)
            return sanitizer_marks[i];
    return NULL;
}

/* Prints the report's first line with the log's name; 1 when the log holds a report. */
static int log_has_sanitizer_report(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[16384];
    int found = 0;
    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL)
        if (sanitizer_mark_in(line) != NULL) {
            fprintf(stderr, "harness: sanitizer report in %s: %s", path, line);
            found = 1;
        }
    if (f != NULL)
        fclose(f);
    return found;
}

/* atexit: a cmocka assertion leaves the test function early; whatever it started dies here.
 * Then a sanitizer report in any child's log fails the test executable. */
static void kill_children(void)
{
    int reports = sanitizer_reported;
    for (size_t i = 0; i < n_children; i++)
        if (children[i] > 0 && kill(children[i], SIGKILL) == 0)
            waitpid(children[i], NULL, 0);
    for (size_t i = 0; i < n_children; i++)
        reports += log_has_sanitizer_report(child_logs[i]);
    if (reports > 0) {
        fprintf(stderr, "harness: FAILED: %d sanitizer report(s) from the processes above\n",
                reports);
        fflush(NULL);
        _exit(1);
    }
}

static void forget_child(pid_t pid)
{
    for (size_t i = 0; i < n_children; i++)
        if (children[i] == pid)
            children[i] = 0;
}

static void check_children_at_exit(void)
{
    static int registered;
    if (!registered)
        atexit(kill_children);
    registered = 1;
}

static void remember_child(pid_t pid, const char *log_path)
{
    check_children_at_exit();
    if (n_children < sizeof(children) / sizeof(children[0])) {
        snprintf(child_logs[n_children], sizeof(child_logs[0]), "%s", log_path);
        children[n_children++] = pid;
    }
}
static FILE *child_outputs[64]; /* stdout pipes of started servers, kept open */
static size_t n_child_outputs;

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *harness_tmpdir(void)
{
    static char dir[256];
    if (dir[0] == '\0') {
        const char *base = getenv("SLUICE_TEST_TMP");
        snprintf(dir, sizeof(dir), "%s", base != NULL && *base ? base : "/tmp/sluice-tests");
        mkdir(dir, 0755);
    }
    return dir;
}

const char *harness_bin(const char *env_name)
{
    const char *path = getenv(env_name);
    if (path == NULL || *path == '\0') {
        fprintf(stderr, "harness: %s is not set (run the tests through ctest)\n", env_name);
        exit(1);
    }
    return path;
}

uint64_t harness_scale(uint64_t bytes)
{
    const char *san = getenv("SLUICE_SANITIZED");
    return san != NULL && *san == '1' ? bytes / 4 : bytes;
}

/* Ports are handed out below the kernel's ephemeral range and claimed with a lock file that
 * lives as long as the test process. A port the kernel picked for bind(port 0) and freed again
 * could be the next connect()'s source port of any process, or the next test's pick when
 * ctest runs tests in parallel; both happened (a sluice that could not bind its admin port,
 * two listeners sharing a port through SO_REUSEPORT). */
#define PORT_LOCK_DIR "/tmp/sluice-test-ports"
#define PORT_SPAN     12000

static int ephemeral_low(void)
{
    int low = 32768, high;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    return low;
}

/* 1 when port is free to bind on 127.0.0.1 now (nothing listens, no TIME_WAIT holds it). */
static int port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* The descriptor of port's lock file, now held by this process (until it exits or closes it),
 * or -1 when another process holds it. */
static int port_claim(int port)
{
    char path[64];
    snprintf(path, sizeof(path), PORT_LOCK_DIR "/%d", port);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int harness_free_port(void)
{
    static int next;
    int high = ephemeral_low(), low = high - PORT_SPAN > 1024 ? high - PORT_SPAN : 1024;
    int span = high - low;

    if (mkdir(PORT_LOCK_DIR, 01777) == 0)
        (void)chmod(PORT_LOCK_DIR, 01777); /* past the umask: any user's tests share it */
    if (next == 0)
        next = (int)(((unsigned)getpid() * 2654435761u) % (unsigned)span);
    for (int tries = 0; tries < span; tries++) {
        int port = low + next;
        next = (next + 1) % span;
        int lock = port_claim(port);
        if (lock >= 0 && port_bindable(port))
            return port; /* the lock stays held */
        if (lock >= 0)
            close(lock);
    }
    fprintf(stderr, "harness_free_port: no free port in %d-%d\n", low, high - 1);
    exit(1);
}

/* Child side of a spawn: stdin from /dev/null, stdout to out_fd, stderr to the log. */
static void child_exec(char *const argv[], int out_fd, int log_fd)
{
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out_fd >= 0 ? out_fd : log_fd, 1);
    dup2(log_fd, 2);
    /* a suite run under a service manager must not have every test's sluice report to it;
     * test_notify hands its own socket over with env(1) */
    unsetenv("NOTIFY_SOCKET");
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static pid_t spawn(struct proc *p, char *const argv[], int out_fd)
{
    snprintf(p->log_path, sizeof(p->log_path), "%s/%d-%d-%s.log", harness_tmpdir(), getpid(),
             spawn_counter++, strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0]);
    int log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0)
        child_exec(argv, out_fd, log_fd);
    close(log_fd);
    p->pid = pid > 0 ? pid : 0;
    if (pid > 0)
        remember_child(pid, p->log_path);
    return pid;
}

/* Starts argv (head, then extra; both NULL-terminated) and reads the "listening HOST:PORT" line
 * every server of ours prints once ready; returns the port, or -1. The stdout pipe stays open
 * so a later write by the child never meets SIGPIPE. */
static int spawn_listening(struct proc *p, const char *const *head, const char *const *extra)
{
    const char *argv[32];
    size_t n = 0;
    for (; head[n] != NULL && n < 31; n++)
        argv[n] = head[n];
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = spawn(p, (char *const *)argv, pipefd[1]);
    close(pipefd[1]);
    char line[256];
    int port = -1;
    FILE *f = pid > 0 ? fdopen(pipefd[0], "r") : NULL;
    if (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strrchr(line, ':');
        if (strncmp(line, "listening ", 10) == 0 && colon != NULL)
            port = atoi(colon + 1);
    }
    if (f != NULL && n_child_outputs < sizeof(child_outputs) / sizeof(FILE *))
        child_outputs[n_child_outputs++] = f;
    else if (f != NULL)
        fclose(f);
    else
        close(pipefd[0]);
    return port;
}

int proc_spawn(struct proc *p, const char *const *argv)
{
    return spawn(p, (char *const *)argv, -1) > 0 ? 0 : -1;
}

/* Whether /proc/net/FILE has a socket in state LISTEN (0A) on port. */
static int proc_net_listens(const char *file, int port)
{
    char path[64], line[512], want[16];
    int found = 0;

    snprintf(path, sizeof(path), "/proc/net/%s", file);
    snprintf(want, sizeof(want), ":%04X", (unsigned)port);
    FILE *f = fopen(path, "r");
    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        char local[128], remote[128], st[8];
        if (sscanf(line, "%*d: %127s %127s %7s", local, remote, st) != 3)
            continue;
        const char *colon = strrchr(local, ':');
        found = colon != NULL && strcmp(colon, want) == 0 && strcmp(st, "0A") == 0;
    }
    if (f != NULL)
        fclose(f);
    return found;
}

int wait_listening(int port)
{
    uint64_t until = now_ms() + HARNESS_WAIT_MS;
    while (!proc_net_listens("tcp", port) && !proc_net_listens("tcp6", port)) {
        if (now_ms() > until)
            return -1;
        sleep_ms(10);
    }
    return 0;
}

int backend_start(struct proc *p, const char *mode, const char *const *extra)
{
    const char *head[] = {
        harness_bin("SLUICE_BACKEND_BIN"), "--listen", "127.0.0.1:0", "--mode", mode, NULL};
    return spawn_listening(p, head, extra);
}

int backend_start_on(struct proc *p, int port, const char *mode, const char *const *extra)
{
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *head[] = {
        harness_bin("SLUICE_BACKEND_BIN"), "--listen", listen, "--mode", mode, NULL};
    return spawn_listening(p, head, extra);
}

int backend_start_listen(struct proc *p, const char *listen, const char *mode,
                         const char *const *extra)
{
    const char *head[] = {
        harness_bin("SLUICE_BACKEND_BIN"), "--listen", listen, "--mode", mode, NULL};
    return spawn_listening(p, head, extra);
}

size_t log_size(const struct proc *p)
{
    struct stat st;
    return stat(p->log_path, &st) == 0 ? (size_t)st.st_size : 0;
}

static int line_has_all(const char *line, const char *const *needles)
{
    for (size_t i = 0; needles[i] != NULL; i++)
        if (strstr(line, needles[i]) == NULL)
            return 0;
    return 1;
}

/* One pass over the log from *from; returns 0 with the line when found. */
static int log_scan(struct proc *p, size_t *from, char *out, size_t out_len,
                    const char *const *needles)
{
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL)
        return -1;
    char line[16384];
    int found = -1;
    fseek(f, (long)*from, SEEK_SET);
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n')
            break; /* a line still being written */
        *from += len;
        if (line_has_all(line, needles)) {
            if (out != NULL)
                snprintf(out, out_len, "%s", line);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

int log_wait(struct proc *p, size_t *from, char *out, size_t out_len, const char *const *needles)
{
    size_t start = from != NULL ? *from : 0;
    uint64_t deadline = now_ms() + HARNESS_WAIT_MS;
    do {
        if (log_scan(p, &start, out, out_len, needles) == 0) {
            if (from != NULL)
                *from = start;
            return 0;
        }
        sleep_ms(10);
    } while (now_ms() < deadline);
    fprintf(stderr, "harness: log %s has no line with '%s' (waited %d ms)\n", p->log_path,
            needles[0], HARNESS_WAIT_MS);
    return -1;
}

int log_count_all(const struct proc *p, const char *const *needles)
{
    FILE *f = fopen(p->log_path, "r");
    char line[16384];
    int n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        n += line_has_all(line, needles);
    if (f != NULL)
        fclose(f);
    return n;
}

int sluice_stats(struct proc *p, char *out, size_t out_len)
{
    size_t from = log_size(p);
    const char *needles[] = {"\"event\":\"stats\"", NULL};
    proc_signal(p, SIGUSR1);
    return log_wait(p, &from, out, out_len, needles);
}

long long log_field_int(const char *line, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *at = strstr(line, pat);
    return at != NULL ? atoll(at + strlen(pat)) : -1;
}

int sluice_start(struct proc *p, const char *config_text)
{
    return sluice_start_wrapped(p, config_text, NULL);
}

int sluice_spawn(struct proc *p, const char *config_text, const char *const *wrapper)
{
    return sluice_spawn_args(p, config_text, wrapper, NULL);
}

int sluice_spawn_args(struct proc *p, const char *config_text, const char *const *wrapper,
                      const char *const *args)
{
    snprintf(p->conf_path, sizeof(p->conf_path), "%s/%d-%d.ini", harness_tmpdir(), getpid(),
             spawn_counter);
    FILE *f = fopen(p->conf_path, "w");
    if (f == NULL)
        return -1;
    fputs(config_text, f);
    fclose(f);
    const char *argv[16];
    size_t n = 0;
    for (; wrapper != NULL && wrapper[n] != NULL && n < 12; n++)
        argv[n] = wrapper[n];
    argv[n++] = harness_bin("SLUICE_BIN");
    argv[n++] = "-c";
    argv[n++] = p->conf_path;
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return spawn(p, (char *const *)argv, -1) > 0 ? 0 : -1;
}

int sluice_start_wrapped(struct proc *p, const char *config_text, const char *const *wrapper)
{
    return sluice_start_args(p, config_text, NULL, wrapper);
}

int sluice_start_args(struct proc *p, const char *config_text, const char *const *args,
                      const char *const *wrapper)
{
    if (sluice_spawn_args(p, config_text, wrapper, args) != 0)
        return -1;
    uint64_t deadline = now_ms() + HARNESS_WAIT_MS;
    const char *needles[] = {"\"event\":\"started\"", NULL};
    while (now_ms() < deadline) {
        size_t from = 0;
        if (log_scan(p, &from, NULL, 0, needles) == 0)
            return 0;
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            forget_child(p->pid);
            p->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

void proc_signal(const struct proc *p, int sig)
{
    if (p->pid > 0)
        kill(p->pid, sig);
}

int proc_wait(struct proc *p, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int status;
    while (p->pid > 0) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            forget_child(p->pid);
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
    return -1;
}

int proc_stop(struct proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int status = proc_wait(p, HARNESS_WAIT_MS * 3);
    if (status < 0 && p->pid > 0) {
        kill(p->pid, SIGKILL);
        status = proc_wait(p, HARNESS_WAIT_MS);
    }
    return status;
}

int run_capture(char *const argv[], char *out, size_t out_len)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        child_exec(argv, pipefd[1], pipefd[1]);
    }
    close(pipefd[1]);
    size_t used = 0;
    ssize_t n;
    while ((n = read(pipefd[0], out + used, out_len - 1 - used)) > 0 && used < out_len - 1)
        used += (size_t)n;
    out[used] = '\0';
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (sanitizer_mark_in(out) != NULL) {
        fprintf(stderr, "harness: sanitizer report from %s:\n%s\n", argv[0], out);
        sanitizer_reported++;
        check_children_at_exit();
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

double status_registry_field(int admin_port, const char *field)
{
    static char body[65536];
    assert_int_equal(http_request(admin_port, "GET", "/status", NULL, body, sizeof(body)), 200);
    cJSON *root = cJSON_Parse(body);
    cJSON *reg = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "registries"), 0);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(reg, field);
    assert_non_null(v);
    double out = cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
    cJSON_Delete(root);
    return out;
}

void status_instance_state(int admin_port, const char *id, char *out, size_t len)
{
    static char body[65536];
    assert_int_equal(http_request(admin_port, "GET", "/status", NULL, body, sizeof(body)), 200);
    cJSON *root = cJSON_Parse(body);
    cJSON *svc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "services"), 0);
    const cJSON *in;
    snprintf(out, len, "%s", "");
    cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(svc, "instances"))
    {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(in, "id")->valuestring, id) == 0)
            snprintf(out, len, "%s", cJSON_GetObjectItemCaseSensitive(in, "state")->valuestring);
    }
    cJSON_Delete(root);
}

double metrics_scrape(int admin_port, const char *series)
{
    static char body[1 << 18];
    assert_int_equal(http_request(admin_port, "GET", "/metrics", NULL, body, sizeof(body)), 200);
    double v = metrics_sample(body, series);
    if (v < 0)
        fail_msg("no sample %s in /metrics", series);
    return v;
}

/* A blocking connection to dst:port (IPv4 or IPv6 text) from source address src, with the
 * harness's receive timeout; fails the test when it cannot connect. */
int tcp_connect_from(const char *src, const char *dst, int port)
{
    struct sockaddr_storage from = {0}, to = {0};
    socklen_t len;
    int family = strchr(dst, ':') != NULL ? AF_INET6 : AF_INET;

    if (family == AF_INET) {
        struct sockaddr_in *f = (struct sockaddr_in *)&from, *t = (struct sockaddr_in *)&to;
        f->sin_family = t->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, src, &f->sin_addr), 1);
        assert_int_equal(inet_pton(AF_INET, dst, &t->sin_addr), 1);
        t->sin_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *f = (struct sockaddr_in6 *)&from, *t = (struct sockaddr_in6 *)&to;
        f->sin6_family = t->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, src, &f->sin6_addr), 1);
        assert_int_equal(inet_pton(AF_INET6, dst, &t->sin6_addr), 1);
        t->sin6_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in6);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = HARNESS_WAIT_MS / 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bind(fd, (struct sockaddr *)&from, len) != 0)
        fail_msg("bind %s: %s", src, strerror(errno));
    if (connect(fd, (struct sockaddr *)&to, len) != 0)
        fail_msg("connect %s -> %s:%d: %s", src, dst, port, strerror(errno));
    return fd;
}

int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = HARNESS_WAIT_MS / 1000};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_line(int fd, char *out, size_t out_len)
{
    size_t n = 0;
    while (n + 1 < out_len) {
        char c;
        ssize_t r = recv(fd, &c, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n')
            break;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

ssize_t read_to_eof(int fd, void *buf, size_t cap)
{
    size_t used = 0;
    for (;;) {
        ssize_t n = recv(fd, (char *)buf + used, cap - used, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return (ssize_t)used;
        used += (size_t)n;
        if (used == cap)
            return (ssize_t)used;
    }
}

int wait_closed(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

int hello_of(int port, char *out, size_t out_len)
{
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    int rc = read_line(fd, out, out_len);
    close(fd);
    return rc < 0 ? -1 : 0;
}

int hello_backends_start(struct proc *procs, int *ports, int n)
{
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "b%d", i);
        const char *extra[] = {"--hello", name, NULL};
        ports[i] = backend_start(&procs[i], "echo", extra);
        if (ports[i] <= 0)
            return -1;
    }
    return 0;
}

void hello_backends_stop(struct proc *procs, int n)
{
    for (int i = 0; i < n; i++)
        proc_stop(&procs[i], SIGTERM);
}

/* Index i of a hello line "b<i>" below n_backends, or -1. */
static int hello_line_index(const char *hello, int n_backends)
{
    if (hello[0] != 'b' || hello[1] < '0' || hello[1] >= '0' + n_backends)
        return -1;
    return hello[1] - '0';
}

int hello_index(int port, int n_backends)
{
    char hello[32];
    if (hello_of(port, hello, sizeof(hello)) != 0)
        return -1;
    return hello_line_index(hello, n_backends);
}

int count_hellos(int port, int n, int *counts, int n_backends)
{
    memset(counts, 0, sizeof(int) * (size_t)n_backends);
    for (int i = 0; i < n; i++) {
        int b = hello_index(port, n_backends);
        if (b < 0)
            return -1;
        counts[b]++;
    }
    return 0;
}

int hold_connections(int port, int *held, int n)
{
    int seen[10] = {0};
    if (n + 1 > (int)(sizeof(seen) / sizeof(seen[0])))
        return -1;
    for (int i = 0; i < n; i++) {
        char hello[32];
        held[i] = tcp_connect(port);
        if (held[i] < 0 || read_line(held[i], hello, sizeof(hello)) <= 0)
            return -1;
        int b = hello_line_index(hello, n + 1);
        if (b < 0)
            return -1;
        seen[b]++;
    }
    int empty = 0;
    while (seen[empty] != 0)
        empty++;
    return empty;
}

long proc_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f != NULL)
        fclose(f);
    return kib;
}

void config_simple(char *out, size_t out_len, int port, const char *backends,
                   const char *sluice_extra, const char *listener_extra, const char *service_extra)
{
    snprintf(out, out_len,
             "[sluice]\nworkers = 1\nlog_level = debug\nlog_format = json\n%s\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n%s\n"
             "[service:api]\nbackends = %s\n%s\n",
             sluice_extra, port, listener_extra, backends, service_extra);
}

/* --- Consul emulator and plain HTTP ------------------------------------------------------- */

int emulator_start(struct proc *p, const char *const *extra)
{
    const char *head[] = {harness_bin("SLUICE_CONSUL_EMULATOR"), "--port", "0", NULL};
    return spawn_listening(p, head, extra);
}

int dns_server_start(struct proc *p, const char *zone_path, const char *query_log)
{
    const char *head[] = {harness_bin("SLUICE_DNS_SERVER"), "--zone", zone_path, NULL};
    const char *extra[] = {"--log", query_log, NULL};
    return spawn_listening(p, head, query_log != NULL ? extra : NULL);
}

void zone_write(const char *path, const char *text)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    config_write(tmp, text);
    if (rename(tmp, path) != 0)
        fail_msg("rename %s: %s", tmp, strerror(errno));
}

/* Reads the whole answer (the server closes); returns bytes or -1. */
static ssize_t http_read_all(int fd, char **buf)
{
    size_t cap = 65536, used = 0;
    *buf = malloc(cap);
    while (*buf != NULL) {
        if (used + 1 == cap) {
            char *grown = realloc(*buf, cap * 2);
            if (grown == NULL)
                break;
            *buf = grown;
            cap *= 2;
        }
        ssize_t r = recv(fd, *buf + used, cap - 1 - used, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            (*buf)[used] = '\0';
            return r == 0 ? (ssize_t)used : -1;
        }
        used += (size_t)r;
    }
    return -1;
}

int http_request(int port, const char *method, const char *path, const char *body, char *out,
                 size_t out_len)
{
    return http_request_with(port, method, path, NULL, body, body != NULL ? strlen(body) : 0, out,
                             out_len);
}

int http_request_with(int port, const char *method, const char *path, const char *headers,
                      const char *body, size_t blen, char *out, size_t out_len)
{
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    char head[8192];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, headers != NULL ? headers : "", blen);
    char *resp = NULL;
    ssize_t len = -1;
    if (n > 0 && (size_t)n < sizeof(head) && write_all(fd, head, (size_t)n) == 0 &&
        (blen == 0 || write_all(fd, body, blen) == 0))
        len = http_read_all(fd, &resp);
    close(fd);
    int status = -1;
    if (len > 12 && strncmp(resp, "HTTP/1.", 7) == 0) {
        status = atoi(resp + 9);
        const char *start = strstr(resp, "\r\n\r\n");
        if (out != NULL && out_len > 0)
            snprintf(out, out_len, "%s", start != NULL ? start + 4 : "");
    }
    free(resp);
    return status;
}

double harness_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t harness_now_ms(void)
{
    return now_ms();
}

int source_request(int fd, uint64_t total, uint64_t seed)
{
    char req[64];
    int n = snprintf(req, sizeof(req), "%llu %llu\n", (unsigned long long)total,
                     (unsigned long long)seed);
    return write_all(fd, req, (size_t)n);
}

int64_t read_pattern_to_eof(int fd, uint64_t seed, uint64_t off)
{
    static unsigned char buf[256 * 1024];
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return (int64_t)off;
        if (pattern_check(seed, off, buf, (size_t)got) != -1) {
            fprintf(stderr, "harness: wrong byte near stream offset %llu\n",
                    (unsigned long long)off);
            return -1;
        }
        off += (uint64_t)got;
    }
}

int sluice_in_front_of(struct proc *p, int backend_port)
{
    char conf[1024], backends[64];
    int port = harness_free_port();
    snprintf(backends, sizeof(backends), "127.0.0.1:%d", backend_port);
    config_simple(conf, sizeof(conf), port, backends, "", "", "");
    return sluice_start(p, conf) == 0 ? port : -1;
}

double metrics_sample(const char *body, const char *series)
{
    size_t len = strlen(series);
    for (const char *p = body; p != NULL && *p != '\0';) {
        if (strncmp(p, series, len) == 0 && p[len] == ' ')
            return atof(p + len + 1);
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

void config_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int hello_is_one_of(const char *hello, const char *const *hellos)
{
    for (; *hellos != NULL; hellos++)
        if (strcmp(hello, *hellos) == 0)
            return 1;
    return 0;
}

int echo_verified(int port, unsigned long long seed, size_t len, const char *const *hellos,
                  const char **why)
{
    unsigned char *out = malloc(len), *back = malloc(len);
    char hello[16];
    int rc = -1, fd = out != NULL && back != NULL ? tcp_connect(port) : -1;

    *why = "connect";
    if (fd >= 0) {
        pattern_fill(seed, 0, out, len);
        if (read_line(fd, hello, sizeof(hello)) < 0 || !hello_is_one_of(hello, hellos))
            *why = "hello";
        else if (write_all(fd, out, len) != 0 || read_exact(fd, back, len) != 0)
            *why = "echo";
        else if (memcmp(out, back, len) != 0)
            *why = "bytes";
        else
            rc = 0;
        close(fd);
    }
    free(out);
    free(back);
    return rc;
}
