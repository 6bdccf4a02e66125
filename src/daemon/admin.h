/* The admin HTTP server (libmicrohttpd, its own thread): /healthz, /status (JSON), /metrics
 * (Prometheus text), / (the status page), and the calls that drain, enable, disable or reweight
 * an instance and reload the configuration. It never blocks a worker: it reads their atomics
 * and asks the service owners, which take their own locks. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>

struct daemon;

/* The running server; opaque. */
struct admin;

/* Starts the server of d's [admin] section (*out is NULL without one): reads the token file,
 * binds, starts its thread. 0, or -errno with a reason in err. Main thread. */
int admin_start(struct daemon *d, struct admin **out, char *err, size_t err_len);

/* Stops the server (requests in flight finish) and frees it; NULL is fine. Main thread. */
void admin_stop(struct admin *a);

#endif
