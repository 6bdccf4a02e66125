/* One client/upstream pair: pick an instance, connect with retries and timeouts, pump both ways,
 * end through one finalize path. Worker thread only. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdint.h>

#include "pump.h"
#include "wheel.h"
#include "worker.h"

enum session_state {
    SESSION_CONNECTING,  /* waiting for the upstream connect */
    SESSION_ESTABLISHED, /* pumping */
    SESSION_CLOSED,      /* finalized, waiting to be freed after the epoll batch */
};

struct session {
    struct worker *worker;         /* owner */
    const struct listener_rt *lst; /* listener it came in on */
    struct watch client;           /* client socket */
    struct watch upstream;         /* upstream socket, fd -1 before the first connect */
    struct pump_dir up;            /* client -> upstream */
    struct pump_dir down;          /* upstream -> client */
    struct wheel_entry timer;      /* connect or idle deadline */
    uint64_t last_active;          /* loop time of the last byte moved */
    uint64_t fd_wait_since;        /* loop time it first found no descriptor to connect; 0 */
    struct instance_state *inst;   /* instance in use (held, counted in active) */
    struct instance_state **tried; /* instances that failed a connect (held); NULL if none */
    uint32_t n_tried;              /* entries in tried */
    uint32_t attempts;             /* connect attempts made */
    uint8_t state;                 /* enum session_state */
    struct session *prev;          /* worker's session list */
    struct session *next;          /* worker's session list, or graveyard link */
};

/* Takes over an accepted client socket and starts connecting upstream. On failure the socket is
 * closed. Returns 0 or -ENOMEM. */
int session_start(struct worker *w, const struct listener_rt *lst, int client_fd);

/* Ends a session at once (shutdown timeout): both sockets are reset. */
void session_abort(struct session *s);

/* Handles an expired wheel entry of a session. */
void session_on_timer(struct wheel_entry *e);

/* Frees sessions closed during the last epoll batch (events may still have named them). */
void session_free_closed(struct worker *w);

#endif
