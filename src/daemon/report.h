/* What the daemon reports about itself: the /status JSON document, the /metrics Prometheus text
 * and the one-word /healthz state. Built on the admin thread from the workers' counters (summed
 * when read: no shared writes on the data path), the owners' instance lists, discovery, health
 * and registrar status. */
#ifndef SLUICE_REPORT_H
#define SLUICE_REPORT_H

#include <stddef.h>

struct daemon;

/* The /status document, a malloc'd NUL-terminated JSON string, or NULL on ENOMEM. */
char *report_status_json(struct daemon *d);

/* The /metrics text (Prometheus exposition format 0.0.4), malloc'd, its length in *len; NULL on
 * ENOMEM. */
char *report_metrics(struct daemon *d, size_t *len);

/* "ok" while serving with fresh discovery; otherwise "starting", "draining" or "degraded". */
const char *report_health_word(struct daemon *d);

#endif
