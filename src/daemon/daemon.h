/* The daemon: turns a config into services, listeners and workers; handles signals (SIGTERM and
 * SIGINT drain, SIGHUP reloads, SIGUSR1 logs counters) and the shutdown sequence. */
#ifndef SLUICE_DAEMON_H
#define SLUICE_DAEMON_H

#include "config.h"

/* Runs sluice with cfg until a signal ends it (or a successor's takeover). Takes ownership of
 * cfg. With takeover, the listeners a running sluice serves on the same addresses are taken
 * from it (sockets and claims) and it is told to drain once this one is ready; the others are
 * bound as usual. Returns the process exit
 * status: 0 after a clean shutdown, 1 when start-up failed (the failed step is logged, and every
 * step before it undone). Main thread; the daemon's state is its own, not the process's. */
int daemon_run(struct config *cfg, int takeover);

#endif
