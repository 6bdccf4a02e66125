/* One thread's event loop: its own epoll set of watched descriptors with a libuv loop embedded in
 * it (libuv's backend descriptor sits in the set, so one epoll_wait serves both), and a timer
 * wheel driven by one libuv timer. Every watched descriptor carries a generation, so an event
 * harvested for a descriptor that was since replaced (a connect retry) is recognised and dropped
 * without asking the kernel. Single-threaded: everything here runs on the loop's thread, except
 * evloop_init/evloop_close before and after it. */
#ifndef SLUICE_EVLOOP_H
#define SLUICE_EVLOOP_H

#include <stdint.h>
#include <uv.h>

#include "wheel.h"

struct watch;

/* Called with the epoll events of a watched descriptor. */
typedef void (*watch_cb)(struct watch *wt, uint32_t events);

/* A descriptor in the loop's epoll set. Embed it; the callback recovers the owner. 16 bytes: it
 * sits twice in every session. */
struct watch {
    int fd;          /* descriptor, -1 when closed */
    uint16_t events; /* interest currently registered (EPOLLIN, EPOLLOUT); 0 = not in the set */
    uint8_t gen;     /* generation of fd: changes whenever the watch gets a new descriptor */
    uint8_t spare;   /* unused */
    watch_cb cb;     /* handler */
};

/* The loop. Embed it in the thread's own struct. */
struct evloop {
    int epfd;                                 /* epoll set */
    uv_loop_t uv;                             /* libuv: timers, async wake-ups */
    struct watch uv_watch;                    /* libuv's backend descriptor inside epfd */
    uv_timer_t tick;                          /* drives the wheel */
    struct wheel wheel;                       /* deadlines of the thread's watched things */
    void (*on_expire)(struct wheel_entry *e); /* called for each expired wheel entry */
    void (*after_batch)(void *data);          /* called after each batch of events and ticks */
    void *data;                               /* for after_batch */
    int stopping;                             /* evloop_stop was called: leave the loop */
    int steps;                                /* init steps done, for evloop_close */
};

/* Sets up the epoll set, the libuv loop inside it and the wheel (tick_ms resolution). Returns 0
 * or a negative errno / libuv code; on failure everything it did is undone. */
int evloop_init(struct evloop *ev, uint64_t tick_ms, void (*on_expire)(struct wheel_entry *),
                void (*after_batch)(void *), void *data);

/* Frees what evloop_init made; the caller has closed its own libuv handles (their close
 * callbacks run here). Safe after a failed evloop_init. */
void evloop_close(struct evloop *ev);

/* The embedded libuv loop, for the thread's own handles (timers, async). */
uv_loop_t *evloop_uv(struct evloop *ev);

/* Runs until evloop_stop, then lets closed handles finish. */
void evloop_run(struct evloop *ev);

/* Makes evloop_run return once the current turn ends; closes the wheel's tick. */
void evloop_stop(struct evloop *ev);

/* Prepares wt for descriptor fd (not yet in the set) with handler cb. */
void watch_init(struct watch *wt, int fd, watch_cb cb);

/* Gives wt a new descriptor (after the old one was closed): a new generation, so events still
 * queued for the old one are dropped. */
void watch_set_fd(struct watch *wt, int fd);

/* Registers wt with the given interest (0 removes it). Only issues epoll_ctl when the interest
 * changes. Returns 0 or -errno. */
int evloop_watch(struct evloop *ev, struct watch *wt, uint32_t events);

/* Closes wt's descriptor; close(2) also takes it out of the epoll set, so no EPOLL_CTL_DEL. */
void watch_close(struct watch *wt);

/* Schedules a wheel entry for due (ms on the loop clock) and starts the tick when needed. */
void evloop_timer_add(struct evloop *ev, struct wheel_entry *e, uint64_t due);

/* Unschedules a wheel entry; harmless when it is not scheduled. */
void evloop_timer_remove(struct evloop *ev, struct wheel_entry *e);

/* Current loop time, ms. */
uint64_t evloop_now(const struct evloop *ev);

#endif
