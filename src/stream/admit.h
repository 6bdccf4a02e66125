/* Admission of a client by a listener version: allow/deny first, then the per-client limits.
 * One decision for every place that learns a client's address: right after accept, and (with a
 * PROXY header) once the header named the real client. Any thread. */
#ifndef SLUICE_ADMIT_H
#define SLUICE_ADMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "listener.h"
#include "session.h"

/* Whether client (the effective address: the peer's, or a PROXY header's) may come in on rt.
 * true with *slot the client-table entry it holds (CLIENT_LIMIT_NONE: none), which the caller
 * gives back with admit_release when the connection ends, into the same rt (rt's table, which
 * the listener version holds); false with *why, and nothing held. Reads the clock only when rt
 * has a connection rate. */
bool admit_check(const struct listener_rt *rt, const struct sockaddr *client, uint32_t *slot,
                 enum listener_reject *why);

/* Gives back what admit_check took on rt; CLIENT_LIMIT_NONE is fine. */
void admit_release(const struct listener_rt *rt, uint32_t slot);

#endif
