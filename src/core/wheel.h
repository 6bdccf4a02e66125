/* A hashed timer wheel: one loop timer drives every session deadline of a worker, instead of a
 * heap-ordered timer per connection. Single-threaded. */
#ifndef SLUICE_WHEEL_H
#define SLUICE_WHEEL_H

#include <stddef.h>
#include <stdint.h>

#define WHEEL_SLOTS 512 /* power of two; deadlines further out wait for later rounds */

/* Embed one in whatever needs a deadline; recover the owner with container_of. */
struct wheel_entry {
    struct wheel_entry *prev; /* ring links; NULL when not scheduled */
    struct wheel_entry *next; /* ring links */
    uint64_t due;             /* deadline, ms on the loop clock */
};

struct wheel {
    struct wheel_entry slots[WHEEL_SLOTS]; /* ring heads */
    uint64_t tick_ms;                      /* resolution */
    uint64_t done_tick;                    /* last tick whose slot was collected */
    size_t n;                              /* scheduled entries */
};

/* Empty wheel with tick_ms resolution, starting at now (ms). */
void wheel_init(struct wheel *w, uint64_t tick_ms, uint64_t now);

/* Schedules e (not scheduled yet, or rescheduled) for due ms. Never fires before due. */
void wheel_add(struct wheel *w, struct wheel_entry *e, uint64_t due);

/* Unschedules e; harmless when it is not scheduled. */
void wheel_remove(struct wheel *w, struct wheel_entry *e);

/* Non-zero while e is scheduled. */
int wheel_scheduled(const struct wheel_entry *e);

/* Unschedules the first entry due by now and returns it, or NULL when none is. Call in a loop;
 * the caller may add or remove any entry between calls. */
struct wheel_entry *wheel_expire_next(struct wheel *w, uint64_t now);

#endif
