/* Telling the service manager how the daemon is doing: systemd's sd_notify protocol (a datagram
 * to $NOTIFY_SOCKET, through libsystemd) for a unit of Type=notify. */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

#include "log.h"

/* READY=1 with MAINPID and a STATUS= line: every listener accepts and every worker runs (at
 * start), or a reload is over (whatever its outcome: the daemon serves either way). status is
 * shown by `systemctl status`. Without $NOTIFY_SOCKET nothing is sent; a failed send is logged
 * to log as notify_failed and changes nothing else. Main thread. */
void notify_ready(const struct logger *log, const char *status);

/* RELOADING=1 with MONOTONIC_USEC (systemd's reload protocol): a reload has begun; notify_ready
 * ends it. Main thread. */
void notify_reloading(const struct logger *log);

/* STOPPING=1: the drain has begun, the process exits when it is over. Main thread. */
void notify_stopping(const struct logger *log, const char *status);

#endif
