/* --takeover: a new sluice takes the running one's listening sockets over its listen-lock claims
 * (SCM_RIGHTS), serves them, then tells it to drain. Both sides live here: the old process
 * answers on each claim it holds, the new one asks on each claim it finds taken. Main thread.
 *
 * The exchange on a claim (a unix stream socket): the new process sends "TAKEOVER\n"; the old one
 * answers a struct takeover_hello carrying its claim's descriptor, then one byte per listening
 * socket of that address, each carrying the socket. The new process keeps the connection open
 * until it is ready and then sends "DRAIN\n"; a connection that closes without it (the new
 * process failed) leaves the old one serving as before. */
#ifndef SLUICE_TAKEOVER_H
#define SLUICE_TAKEOVER_H

#include <stddef.h>
#include <sys/types.h>

struct daemon;
struct listen_claim;

#define TAKEOVER_WAIT_MS 5000 /* how long the new process waits for an answer, or a busy one */

/* What a --takeover start received for one listener of its file. */
struct takeover_in {
    int conn;   /* connection to the old process, kept until it is told to drain; -1 if none */
    pid_t from; /* the old process */
};

/* Old side: claim c turned readable. Accepts what is queued on it: a starter that only learnt
 * our pid and left, or a takeover, which is answered and watched until it says DRAIN. */
void takeover_on_knock(struct daemon *d, struct listen_claim *c);

/* Old side: closes every takeover connection still watched (shutdown). */
void takeover_peers_close(struct daemon *d);

/* New side, for listener i of the file: asks whoever holds its claim for its sockets. Returns 1
 * with *claim set (ours now) and d->inherited[i] / d->takeovers[i] filled, 0 when nobody holds
 * it (the caller claims and binds as usual), or a negative error with d->step_error set. */
int takeover_listener(struct daemon *d, size_t i, int *claim);

/* New side, once ready: tells every old process it took from to drain, and says so. */
void takeover_finish(struct daemon *d);

/* New side: closes what takeover_listener kept and the workers did not take (a start that
 * failed: the old process, seeing its connection close without DRAIN, keeps serving). */
void takeover_release(struct daemon *d);

#endif
