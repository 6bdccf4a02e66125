/* sluice-load: multi-connection load client that verifies every byte it gets back. */
#include "load.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_THREADS 64

static const char *const mode_names[] = {"connrate", "rr", "bulk", "idle"};

/* Parses one option's value into *o; returns 0 or -EINVAL. */
typedef int (*opt_setter)(struct load_opts *o, const char *arg);

static int parse_count(const char *arg, unsigned *out)
{
    uint64_t v;

    if (util_parse_u64(arg, &v) < 0 || v == 0 || v > 1000000)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

static int set_target(struct load_opts *o, const char *arg)
{
    o->target_text = arg;
    return util_parse_addr(arg, &o->target);
}

static int set_mode(struct load_opts *o, const char *arg)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
        if (strcmp(arg, mode_names[i]) == 0) {
            o->mode = (enum load_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

static int set_duration(struct load_opts *o, const char *arg)
{
    return util_parse_seconds(arg, &o->duration);
}

static int set_hold(struct load_opts *o, const char *arg)
{
    return util_parse_seconds(arg, &o->hold);
}

static int set_connect_timeout(struct load_opts *o, const char *arg)
{
    int r = util_parse_seconds(arg, &o->connect_timeout);
    return r < 0 || o->connect_timeout <= 0 ? -EINVAL : 0;
}

static int set_concurrency(struct load_opts *o, const char *arg)
{
    return parse_count(arg, &o->concurrency);
}

static int set_connections(struct load_opts *o, const char *arg)
{
    return parse_count(arg, &o->connections);
}

static int set_streams(struct load_opts *o, const char *arg)
{
    return parse_count(arg, &o->streams);
}

static int set_threads(struct load_opts *o, const char *arg)
{
    return parse_count(arg, &o->threads) < 0 || o->threads > MAX_THREADS ? -EINVAL : 0;
}

static int set_size(struct load_opts *o, const char *arg)
{
    return parse_count(arg, &o->size);
}

static int set_direction(struct load_opts *o, const char *arg)
{
    if (strcmp(arg, "up") != 0 && strcmp(arg, "down") != 0)
        return -EINVAL;
    o->upload = strcmp(arg, "up") == 0;
    return 0;
}

static int set_verify(struct load_opts *o, const char *arg)
{
    if (strcmp(arg, "fnv") != 0 && strcmp(arg, "pattern") != 0)
        return -EINVAL;
    o->verify_pattern = strcmp(arg, "pattern") == 0;
    return 0;
}

static int set_seed(struct load_opts *o, const char *arg)
{
    return util_parse_u64(arg, &o->seed);
}

/* Every option: its name and the setter that parses its value. */
static const struct {
    const char *name;
    opt_setter set;
} opt_table[] = {
    {"target", set_target},
    {"mode", set_mode},
    {"duration", set_duration},
    {"hold", set_hold},
    {"connect-timeout", set_connect_timeout},
    {"concurrency", set_concurrency},
    {"connections", set_connections},
    {"streams", set_streams},
    {"threads", set_threads},
    {"size", set_size},
    {"direction", set_direction},
    {"verify", set_verify},
    {"seed", set_seed},
};
#define OPT_COUNT (sizeof(opt_table) / sizeof(opt_table[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice-load --target HOST:PORT --mode connrate|rr|bulk|idle [options]\n"
               "  connrate: --duration S --concurrency C [--size B]\n"
               "  rr:       --duration S --connections N [--size B]\n"
               "  bulk:     --duration S --streams S --direction up|down [--verify fnv|pattern]\n"
               "  idle:     --connections N --hold S (0 = until SIGTERM or stdin EOF)"
               " [--concurrency C]\n"
               "  common:   --threads N --connect-timeout S --seed N\n");
}

static int parse_args(struct load_opts *o, int argc, char **argv)
{
    struct option longs[OPT_COUNT + 2];
    int opt, idx = 0, have_target = 0, have_mode = 0;

    for (size_t i = 0; i < OPT_COUNT; i++)
        longs[i] = (struct option){opt_table[i].name, required_argument, NULL, (int)i};
    longs[OPT_COUNT] = (struct option){"help", no_argument, NULL, 'h'};
    longs[OPT_COUNT + 1] = (struct option){NULL, 0, NULL, 0};
    while ((opt = getopt_long(argc, argv, "", longs, &idx)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (opt < 0 || (size_t)opt >= OPT_COUNT)
            return -1;
        if (opt_table[opt].set(o, optarg) < 0) {
            fprintf(stderr, "sluice-load: --%s: bad value '%s'\n", opt_table[opt].name, optarg);
            return -1;
        }
        have_target |= opt_table[opt].set == set_target;
        have_mode |= opt_table[opt].set == set_mode;
    }
    return have_target && have_mode && optind == argc ? 0 : -1;
}

/* How many connections (or streams, or parallel attempts) the whole run uses. */
static unsigned total_units(const struct load_opts *o)
{
    switch (o->mode) {
    case LOAD_CONNRATE:
        return o->concurrency;
    case LOAD_BULK:
        return o->streams;
    default:
        return o->connections;
    }
}

static int worker_start(struct load_worker *w, const struct load_opts *o,
                        struct load_shared *shared, unsigned id)
{
    unsigned total = total_units(o);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->wake_fd};

    w->o = o;
    w->ops = load_mode_ops(o->mode);
    w->shared = shared;
    w->id = id;
    w->share = total / o->threads + (id < total % o->threads);
    w->phase = LOAD_SETUP;
    util_list_init(&w->conns);
    util_list_init(&w->ready);
    hist_init(&w->st.latency);
    w->buf = malloc(LOAD_BUF);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->buf == NULL || w->ep < 0 || w->wake_fd < 0 ||
        epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
        return -1;
    return pthread_create(&w->thread, NULL, load_worker_run, w) == 0 ? 0 : -1;
}

static void set_phase(struct load_worker *workers, unsigned n, struct load_shared *shared,
                      enum load_phase phase)
{
    uint64_t one = 1;

    __atomic_store_n(&shared->phase, (int)phase, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < n; i++)
        if (write(workers[i].wake_fd, &one, sizeof(one)) < 0)
            perror("sluice-load: wake worker");
}

/* stdin ends an indefinite idle hold only if it is something a harness can close. */
static int stdin_watchable(void)
{
    struct stat st;

    if (fstat(0, &st) < 0)
        return 0;
    return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(0);
}

/*
 * Waits until `deadline_ns` (0 = forever), a signal, stdin EOF when `watch_stdin`, or (when
 * `ready_want` > 0) until that many workers finished their setup. Returns 1 if interrupted.
 */
static int wait_for(struct load_shared *shared, int sigfd, uint64_t deadline_ns, int watch_stdin,
                    unsigned ready_want)
{
    struct pollfd fds[3] = {{.fd = sigfd, .events = POLLIN},
                            {.fd = shared->main_wake_fd, .events = POLLIN},
                            {.fd = watch_stdin ? 0 : -1, .events = POLLIN}};
    char drain[4096];

    for (;;) {
        if (ready_want > 0 && __atomic_load_n(&shared->ready, __ATOMIC_ACQUIRE) >= ready_want)
            return 0;
        uint64_t now = util_now_ns();
        if (deadline_ns != 0 && now >= deadline_ns)
            return 0;
        int timeout = deadline_ns == 0 ? -1 : (int)((deadline_ns - now) / 1000000 + 1);
        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            return 1;
        if (fds[0].revents)
            return 1;
        if (fds[1].revents && read(shared->main_wake_fd, drain, 8) < 0)
            perror("sluice-load: wake");
        if (fds[2].revents && read(0, drain, sizeof(drain)) <= 0)
            return 1;
    }
}

static int open_signalfd(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static void print_latency(const struct hist *h)
{
    printf(",\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"mean\":%.1f,"
           "\"min\":%.1f,\"max\":%.1f}",
           (double)hist_quantile(h, 0.50) / 1e3, (double)hist_quantile(h, 0.99) / 1e3,
           (double)hist_quantile(h, 0.999) / 1e3,
           h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0,
           h->count ? (double)h->min / 1e3 : 0.0, (double)h->max / 1e3);
}

static double quantile_us(const struct hist *h, double q)
{
    return (double)hist_quantile(h, q) / 1e3;
}

static void report_connrate(const struct load_opts *o, const struct load_stats *t, double rate)
{
    printf(",\"concurrency\":%u,\"size\":%u,\"connections\":%" PRIu64 ",\"conn_per_s\":%.1f",
           o->concurrency, o->size, t->ops, rate);
    print_latency(&t->latency);
    fprintf(stderr, "connrate: %" PRIu64 " connections = %.0f conn/s, p50 %.1f us p99 %.1f us\n",
            t->ops, rate, quantile_us(&t->latency, 0.5), quantile_us(&t->latency, 0.99));
}

static void report_rr(const struct load_opts *o, const struct load_stats *t, double rate)
{
    printf(",\"connections\":%u,\"established\":%" PRIu64 ",\"size\":%u,\"requests\":%" PRIu64
           ",\"req_per_s\":%.1f",
           o->connections, t->established, o->size, t->ops, rate);
    print_latency(&t->latency);
    fprintf(stderr,
            "rr: %" PRIu64 " requests = %.0f req/s, p50 %.1f us p99 %.1f us p99.9 %.1f us\n",
            t->ops, rate, quantile_us(&t->latency, 0.5), quantile_us(&t->latency, 0.99),
            quantile_us(&t->latency, 0.999));
}

static void report_bulk(const struct load_opts *o, const struct load_stats *t, double secs)
{
    double gbps = secs > 0 ? (double)t->bytes * 8 / secs / 1e9 : 0;
    const char *dir = o->upload ? "up" : "down";

    printf(",\"streams\":%u,\"established\":%" PRIu64 ",\"direction\":\"%s\",\"verify\":\"%s\","
           "\"streams_verified\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"gbit_per_s\":%.3f",
           o->streams, t->established, dir, o->upload && !o->verify_pattern ? "fnv" : "pattern",
           t->ops, t->bytes, gbps);
    fprintf(stderr, "bulk %s: %" PRIu64 " bytes in %.2f s over %u streams = %.2f Gbit/s\n", dir,
            t->bytes, secs, o->streams, gbps);
}

static void report_idle(const struct load_opts *o, const struct load_stats *t, double secs)
{
    printf(",\"connections\":%u,\"established\":%" PRIu64 ",\"held_s\":%.3f,\"dropped\":%" PRIu64
           ",\"verified_after_hold\":%" PRIu64,
           o->connections, t->established, secs, t->dropped, t->ops);
    fprintf(stderr,
            "idle: %" PRIu64 " of %u established, held %.2f s, %" PRIu64 " dropped, %" PRIu64
            " verified after the hold\n",
            t->established, o->connections, secs, t->dropped, t->ops);
}

static void report(const struct load_opts *o, const struct load_stats *t, double secs)
{
    double rate = secs > 0 ? (double)t->ops / secs : 0;

    printf("{\"tool\":\"sluice-load\",\"mode\":\"%s\",\"target\":\"%s\",\"threads\":%u,"
           "\"elapsed_s\":%.3f",
           mode_names[o->mode], o->target_text, o->threads, secs);
    if (o->mode == LOAD_CONNRATE)
        report_connrate(o, t, rate);
    else if (o->mode == LOAD_RR)
        report_rr(o, t, rate);
    else if (o->mode == LOAD_BULK)
        report_bulk(o, t, secs);
    else
        report_idle(o, t, secs);
    printf(",\"errors\":%" PRIu64 ",\"connect_errors\":%" PRIu64 ",\"timeouts\":%" PRIu64 "}\n",
           t->errors, t->connect_errors, t->timeouts);
    fflush(stdout);
    fprintf(stderr, "errors %" PRIu64 ", connect errors %" PRIu64 ", timeouts %" PRIu64 "\n",
            t->errors, t->connect_errors, t->timeouts);
}

static void merge(struct load_stats *to, const struct load_stats *from)
{
    to->ops += from->ops;
    to->bytes += from->bytes;
    to->errors += from->errors;
    to->connect_errors += from->connect_errors;
    to->timeouts += from->timeouts;
    to->established += from->established;
    to->dropped += from->dropped;
    hist_merge(&to->latency, &from->latency);
}

/* Moves the workers through setup, the measured run and the stop; returns the seconds measured. */
static double drive_phases(const struct load_opts *o, struct load_worker *workers,
                           struct load_shared *shared, int sigfd)
{
    int stopped = wait_for(shared, sigfd, 0, 0, o->threads);
    uint64_t t_go = util_now_ns(), t_stop, t_end = 0;
    double span = o->mode == LOAD_IDLE ? o->hold : o->duration;

    set_phase(workers, o->threads, shared, LOAD_RUN);
    if (o->mode == LOAD_IDLE && !stopped) {
        printf("ready %" PRIu64 "\n", __atomic_load_n(&shared->established, __ATOMIC_RELAXED));
        fflush(stdout);
    }
    if (!stopped && (span > 0 || o->mode == LOAD_IDLE))
        wait_for(shared, sigfd, span > 0 ? t_go + (uint64_t)(span * 1e9) : 0,
                 span == 0 && stdin_watchable(), 0);
    t_stop = util_now_ns();
    set_phase(workers, o->threads, shared, LOAD_STOP);
    for (unsigned i = 0; i < o->threads; i++) {
        pthread_join(workers[i].thread, NULL);
        if (workers[i].t_done > t_end)
            t_end = workers[i].t_done;
    }
    /* An upload has only moved its bytes once the backend has confirmed them. */
    if (o->mode == LOAD_BULK && o->upload)
        t_stop = t_end;
    return (double)(t_stop - t_go) / 1e9;
}

static int run(const struct load_opts *o)
{
    struct load_shared shared = {.phase = LOAD_SETUP};
    struct load_worker *workers = calloc(o->threads, sizeof(*workers));
    struct load_stats total = {0};
    int sigfd = open_signalfd();
    double secs;

    shared.main_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (workers == NULL || sigfd < 0 || shared.main_wake_fd < 0)
        return 2;
    for (unsigned i = 0; i < o->threads; i++) {
        if (worker_start(&workers[i], o, &shared, i) < 0) {
            fprintf(stderr, "sluice-load: cannot start worker %u\n", i);
            exit(2);
        }
    }
    secs = drive_phases(o, workers, &shared, sigfd);
    hist_init(&total.latency);
    for (unsigned i = 0; i < o->threads; i++) {
        merge(&total, &workers[i].st);
        close(workers[i].ep);
        close(workers[i].wake_fd);
        free(workers[i].buf);
    }
    report(o, &total, secs);
    free(workers);
    if (total.errors || total.connect_errors || total.timeouts)
        return 1;
    /* A run that measured nothing (e.g. a backend that never answers) must not look green. */
    if ((o->mode == LOAD_BULK ? total.bytes : total.ops) == 0) {
        fprintf(stderr, "sluice-load: nothing completed\n");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct load_opts o = {
        .duration = 10, .connect_timeout = 5, .threads = 1, .size = 64, .streams = 1, .seed = 1};
    uint64_t nofile;

    if (parse_args(&o, argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    if (o.concurrency == 0)
        o.concurrency = o.mode == LOAD_IDLE ? 256 : 50;
    if (o.connections == 0)
        o.connections = o.mode == LOAD_IDLE ? 1000 : 50;
    nofile = util_raise_nofile();
    if (o.mode == LOAD_IDLE && o.connections + 16 > nofile)
        fprintf(stderr, "sluice-load: warning: %u connections but only %" PRIu64 " descriptors\n",
                o.connections, nofile);
    /* Workers inherit the mask, so SIGINT/SIGTERM reach only main's signalfd. */
    util_block_signals();
    return run(&o);
}
