/* Hashed timer wheel with absolute deadlines: an entry sits in the slot of its due tick and is
 * skipped until a later round when it is more than one revolution away. */
#include "wheel.h"

static void ring_init(struct wheel_entry *head)
{
    head->prev = head->next = head;
}

void wheel_init(struct wheel *w, uint64_t tick_ms, uint64_t now)
{
    for (size_t i = 0; i < WHEEL_SLOTS; i++)
        ring_init(&w->slots[i]);
    w->tick_ms = tick_ms ? tick_ms : 1;
    w->done_tick = now / w->tick_ms;
    w->n = 0;
}

int wheel_scheduled(const struct wheel_entry *e)
{
    return e->next != NULL;
}

void wheel_remove(struct wheel *w, struct wheel_entry *e)
{
    if (!wheel_scheduled(e))
        return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
    w->n--;
}

void wheel_add(struct wheel *w, struct wheel_entry *e, uint64_t due)
{
    wheel_remove(w, e);
    /* round up, and never into a tick already collected, so nothing fires early or is lost */
    uint64_t tick = due / w->tick_ms + (due % w->tick_ms != 0); /* due + tick - 1 could wrap */
    if (tick <= w->done_tick)
        tick = w->done_tick + 1;
    struct wheel_entry *head = &w->slots[tick & (WHEEL_SLOTS - 1)];
    e->due = due;
    e->next = head;
    e->prev = head->prev;
    head->prev->next = e;
    head->prev = e;
    w->n++;
}

static struct wheel_entry *slot_take_due(struct wheel *w, struct wheel_entry *head, uint64_t now)
{
    for (struct wheel_entry *e = head->next; e != head; e = e->next) {
        if (e->due <= now) {
            wheel_remove(w, e);
            return e;
        }
    }
    return NULL;
}

struct wheel_entry *wheel_expire_next(struct wheel *w, uint64_t now)
{
    uint64_t now_tick = now / w->tick_ms;
    /* after a long stall one revolution visits every slot once; more would only repeat them */
    if (now_tick - w->done_tick > WHEEL_SLOTS && now_tick > w->done_tick)
        w->done_tick = now_tick - WHEEL_SLOTS;
    while (w->n > 0 && w->done_tick < now_tick) {
        uint64_t tick = w->done_tick + 1;
        struct wheel_entry *e = slot_take_due(w, &w->slots[tick & (WHEEL_SLOTS - 1)], now);
        if (e != NULL)
            return e;
        w->done_tick = tick;
    }
    if (w->n == 0)
        w->done_tick = now_tick;
    return NULL;
}
