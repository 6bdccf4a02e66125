/* The daemon: turns a config into services, listeners and workers; handles signals (SIGTERM and
 * SIGINT drain, SIGHUP reloads, SIGUSR1 logs counters) and the shutdown sequence. */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include "config.h"

/* Runs sluice with cfg until a signal ends it. Takes ownership of cfg. Returns the process exit
 * status: 0 after a clean shutdown, 1 when startup failed (reason logged). Main thread. */
int proxy_run(struct config *cfg);

#endif
