/* Integration-test harness: real sluice and backend processes on 127.0.0.1, their logs, and
 * blocking socket helpers with bounded waits (a wait that runs out fails the test, it never
 * measures anything). */
#ifndef SLUICE_TEST_HARNESS_H
#define SLUICE_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HARNESS_WAIT_MS 20000 /* upper bound for anything a test waits for */

/* A child process and the file its stderr (and stdout, for sluice) goes to. */
struct proc {
    pid_t pid;           /* 0 when not running */
    char log_path[512];  /* stderr of the child */
    char conf_path[512]; /* config written for a sluice child */
};

/* Directory for test files (SLUICE_TEST_TMP or /tmp), created on demand. */
const char *harness_tmpdir(void);

/* Path of a binary from the environment (SLUICE_BIN, SLUICE_BACKEND_BIN); fails the test if
 * unset. */
const char *harness_bin(const char *env_name);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int harness_free_port(void);

/* Scale factor for big transfers: 1, or smaller under sanitizers (SLUICE_SANITIZED=1). */
uint64_t harness_scale(uint64_t bytes);

/* Starts sluice-backend --mode MODE on a free port with extra args (NULL-terminated, may be
 * NULL) and returns its port; waits until it listens. */
int backend_start(struct proc *p, const char *mode, const char *const *extra);

/* Like backend_start on the given port (to bring a stopped backend back where it was). Returns
 * the port, or -1. */
int backend_start_on(struct proc *p, int port, const char *mode, const char *const *extra);

/* Like backend_start on listen ("127.0.0.2:9000": any loopback address). The port, or -1. */
int backend_start_listen(struct proc *p, const char *listen, const char *mode,
                         const char *const *extra);

/* Writes config text to a file (the "%PORT" style is the caller's job) and starts sluice -c on it;
 * waits until its log says "started". Returns 0, or -1 when it exited first (log kept). */
int sluice_start(struct proc *p, const char *config_text);

/* Like sluice_start, with the command line prefixed by wrapper (NULL-terminated, e.g.
 * {"/usr/bin/prlimit", "--nofile=64:64", NULL}). */
int sluice_start_wrapped(struct proc *p, const char *config_text, const char *const *wrapper);

/* Like sluice_start_wrapped without waiting for "started": for a test that watches start-up
 * itself. 0, or -1 when the config could not be written or the fork failed. */
int sluice_spawn(struct proc *p, const char *config_text, const char *const *wrapper);

/* Like sluice_spawn, with args (NULL-terminated, may be NULL) after "-c FILE". */
int sluice_spawn_args(struct proc *p, const char *config_text, const char *const *wrapper,
                      const char *const *args);

/* Like sluice_start_wrapped, with args (NULL-terminated, may be NULL) after "-c FILE", e.g.
 * {"--takeover", NULL}. */
int sluice_start_args(struct proc *p, const char *config_text, const char *const *args,
                      const char *const *wrapper);

/* Starts any program (argv[0] a path, NULL-terminated) with its stdout and stderr to p's log;
 * the harness kills it at exit if the test does not stop it. 0, or -1 when the fork failed. */
int proc_spawn(struct proc *p, const char *const *argv);

/* Waits until something listens on TCP port (any address, IPv4 or IPv6), as /proc/net/tcp{,6}
 * shows, without connecting. 0, or -1 after HARNESS_WAIT_MS. */
int wait_listening(int port);

/* Sends sig and waits for the exit; returns the exit status (or 128+signal). */
int proc_stop(struct proc *p, int sig);

/* Waits for the process to exit by itself within timeout_ms; returns status, or -1 on timeout. */
int proc_wait(struct proc *p, int timeout_ms);

/* Sends a signal without waiting. */
void proc_signal(const struct proc *p, int sig);

/* Waits until the log holds a line containing every needle (NULL-terminated list) that was not
 * there before offset *from (updated to past that line). Copies the line to out. 0 or -1. */
int log_wait(struct proc *p, size_t *from, char *out, size_t out_len, const char *const *needles);

/* Number of lines of the log that hold every needle (NULL-terminated list). */
int log_count_all(const struct proc *p, const char *const *needles);

/* Current size of the log, to wait for lines written after now. */
size_t log_size(const struct proc *p);

/* Asks a running sluice for its counters (SIGUSR1) and copies the fresh "stats" line to out.
 * 0 or -1. */
int sluice_stats(struct proc *p, char *out, size_t out_len);

/* Numeric field "key":N from a JSON log line; -1 when absent. */
long long log_field_int(const char *line, const char *key);

/* Runs a command (argv, NULL-terminated), collects stdout+stderr into out, returns exit status. */
int run_capture(char *const argv[], char *out, size_t out_len);

/* Blocking connect to 127.0.0.1:port with a receive timeout of HARNESS_WAIT_MS. -1 on failure. */
int tcp_connect(int port);

/* A blocking connection to dst:port (IPv4 or IPv6 text) bound to source address src (any
 * 127/8 address, or ::1), with the harness's receive timeout; fails the test when it cannot. */
int tcp_connect_from(const char *src, const char *dst, int port);

/* The value of series (a whole sample name with its labels) in the /metrics of the admin server
 * on admin_port; fails the test when there is no such sample. */
double metrics_scrape(int admin_port, const char *series);

/* The registries[0] object of the admin server's /status: field as a number (bools as 0/1);
 * fails the test when there is no such field. */
double status_registry_field(int admin_port, const char *field);

/* The state of instance id of the first service in the admin server's /status into out ("" when
 * the set does not list it). */
void status_instance_state(int admin_port, const char *id, char *out, size_t len);

/* Writes all of buf. 0 or -1. */
int write_all(int fd, const void *buf, size_t len);

/* Reads exactly len bytes. 0, or -1 on EOF/error first. */
int read_exact(int fd, void *buf, size_t len);

/* Reads one line (without '\n') into out. Returns its length or -1. */
int read_line(int fd, char *out, size_t out_len);

/* Reads until EOF; returns bytes read or -1 on error (reset counts as error). */
ssize_t read_to_eof(int fd, void *buf, size_t cap);

/* Returns 1 if the peer closed (EOF or reset) within timeout_ms, 0 if still open. */
int wait_closed(int fd, int timeout_ms);

/* Connects through sluice to a --hello echo backend and returns the hello line's text. */
int hello_of(int port, char *out, size_t out_len);

/* Starts n echo backends saying hello "b0".."b<n-1>" (backend_start with --hello), ports in
 * ports[n]. 0, or -1 when one did not come up. Stop them with hello_backends_stop. */
int hello_backends_start(struct proc *procs, int *ports, int n);

/* Stops the n backends of hello_backends_start with SIGTERM. */
void hello_backends_stop(struct proc *procs, int n);

/* Connects through sluice at port to hello_backends_start backends and returns the index i of
 * the "b<i>" that answered, or -1 when no hello came or it names no backend below n_backends. */
int hello_index(int port, int n_backends);

/* Makes n sequential connections through port and counts in counts[n_backends] (zeroed first)
 * which backend answered each, as hello_index does. 0, or -1 when one got no valid hello. */
int count_hellos(int port, int n, int *counts, int n_backends);

/* Opens n connections through port to hello_backends_start backends b0..b<n> and keeps them open
 * in held[n]; returns the index of the first of those n + 1 backends that answered none of them,
 * or -1 when a connection or its hello failed (the test fails then; held may be incomplete). */
int hold_connections(int port, int *held, int n);

/* Asks a source backend for total bytes of the pattern stream of seed. 0 or -1. */
int source_request(int fd, uint64_t total, uint64_t seed);

/* Reads the pattern stream of seed from offset off until EOF, checking every byte. Returns the
 * offset reached, or -1 on a wrong byte or a socket error. */
int64_t read_pattern_to_eof(int fd, uint64_t seed, uint64_t off);

/* Starts sluice (one worker, debug log) in front of one backend on 127.0.0.1:backend_port;
 * returns its listener port, or -1. */
int sluice_in_front_of(struct proc *p, int backend_port);

/* RSS of a process in KiB, from /proc/PID/status. */
long proc_rss_kib(pid_t pid);

/* Sleeps ms milliseconds. */
void sleep_ms(int ms);

/* A sluice config with one listener "web" on port proxying to service "api" with the given
 * backends line and extra [sluice]/[listener]/[service] lines (may be ""). Writes into out. */
void config_simple(char *out, size_t out_len, int port, const char *backends,
                   const char *sluice_extra, const char *listener_extra, const char *service_extra);

/* --- Consul emulator and plain HTTP (tests/consul/emulator) -------------------------------- */

/* Starts the emulator named by SLUICE_CONSUL_EMULATOR with --port 0 and extra arguments
 * (NULL-terminated, may be NULL); returns its port, or -1 when it did not come up. Stop it with
 * proc_stop(p, SIGTERM). */
int emulator_start(struct proc *p, const char *const *extra);

/* --- the test DNS server (tests/dns/dns_server.py) ----------------------------------------- */

/* Starts the server named by SLUICE_DNS_SERVER on a free UDP+TCP port of 127.0.0.1, answering
 * from the JSON zone file zone_path (read for every query; see the script), appending each query
 * to query_log (may be NULL). Returns the port, or -1. Stop it with proc_stop(p, SIGTERM). */
int dns_server_start(struct proc *p, const char *zone_path, const char *query_log);

/* Replaces the file at path with text by a rename, so no reader sees half of it. */
void zone_write(const char *path, const char *text);

/* One HTTP/1.1 request to 127.0.0.1:port with Connection: close and an optional body (JSON).
 * Returns the status code, or -1 without an answer. The body goes to out (NUL-terminated, cut
 * at out_len - 1); out may be NULL. */
int http_request(int port, const char *method, const char *path, const char *body, char *out,
                 size_t out_len);

/* Like http_request with extra header lines (each ending in "\r\n", e.g. "Authorization: Bearer
 * T\r\n"; may be NULL) and a body of blen bytes (may hold NULs). */
int http_request_with(int port, const char *method, const char *path, const char *headers,
                      const char *body, size_t blen, char *out, size_t out_len);

/* One connection to 127.0.0.1:port that must say one of the hello lines in hellos (NULL
 * ended), then echo len pattern bytes of seed back intact. 0, or -1 with *why naming the part
 * that failed ("connect", "hello", "echo", "bytes"). Any thread. */
int echo_verified(int port, unsigned long long seed, size_t len, const char *const *hellos,
                  const char **why);

/* Writes text to path (a config file, whole); fails the test when it cannot. */
void config_write(const char *path, const char *text);

/* The value of the sample whose series text (name and labels, as written) is exactly series in
 * a Prometheus text body, or -1 when there is none. */
double metrics_sample(const char *body, const char *series);

/* Wall-clock time in seconds, comparable with the emulator's request log "time". */
double harness_wall_time(void);

/* Monotonic milliseconds, for measuring (never for asserting tight bounds). */
uint64_t harness_now_ms(void);

#endif
