/* One live sluice per bind address: a claim on an abstract unix socket named after the address,
 * so that a second sluice started by mistake on the same config is refused with the pid of the
 * one serving, instead of silently sharing the port through SO_REUSEPORT.
 *
 * The claim is per listener, not one pid file per process: two sluices with different listeners
 * never refuse each other. The kernel drops an abstract name when its last descriptor closes,
 * so a process that dies (even SIGKILLed) leaves nothing stale behind; names live in the network
 * namespace, as ports do.
 *
 * A deliberate takeover (a new process taking a running one's listeners, `--takeover`) is the one
 * start that must not be refused: it skips listen_lock_acquire for the addresses it takes over
 * and inherits the old process's claim instead — receiving the claim's descriptor with the
 * listening sockets (SCM_RIGHTS), or acquiring the name once the old process has released it.
 * Any thread; no state outside the returned descriptor. */
#ifndef SLUICE_LISTEN_LOCK_H
#define SLUICE_LISTEN_LOCK_H

#include <stddef.h>
#include <sys/types.h>

#include "addr.h"

#define LISTEN_LOCK_PREFIX "sluice-listen:" /* abstract name: prefix, then the address text */

/* Claims addr for this process: binds and listens on the abstract socket LISTEN_LOCK_PREFIX
 * addr->text. Returns the descriptor, which the caller keeps open for as long as it serves addr
 * and closes with listen_lock_release; or -EADDRINUSE when a live process holds the claim, with
 * *holder set to its pid (0 when it could not be learnt); or another -errno. */
int listen_lock_acquire(const struct net_addr *addr, pid_t *holder);

/* Accepts and closes the connections other starters left queued on a claim (they only wanted
 * its pid): unaccepted, they would stay in its backlog after their side closed, until a full
 * backlog hides the pid from the next one. For a poll on fd turning readable; never blocks. */
void listen_lock_drain(int fd);

/* Connects to the process that holds addr's claim, for a takeover (blocking, SOCK_CLOEXEC).
 * Returns the connected descriptor, -ECONNREFUSED when nobody holds it, or another -errno. */
int listen_lock_connect(const struct net_addr *addr);

/* Makes a claim received from another process (SCM_RIGHTS) name this one: listen(2) again sets
 * the credentials that SO_PEERCRED hands the next starter. Also how the old holder takes its
 * name back when a takeover is abandoned. 0 or -errno. */
int listen_lock_reclaim(int fd);

/* Gives a claim up; fd < 0 is fine (nothing claimed). */
void listen_lock_release(int fd);

#endif
