/* sd_notify for a Type=notify unit: READY, RELOADING and STOPPING around the daemon's life. */
#include "notify.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

/* One message; state names its first line for the log. The socket stays in the environment
 * (unset_environment 0): reloads and the drain notify again later. */
static void notify_send(const struct logger *log, const char *state, const char *message)
{
    int rc = sd_notify(0, message);

    if (rc < 0)
        log_event(log, LOG_LEVEL_WARN, "notify_failed", LOG_STR("state", state),
                  LOG_STR("error", strerror(-rc)));
    else if (rc > 0)
        log_event(log, LOG_LEVEL_DEBUG, "notified", LOG_STR("state", state));
}

void notify_ready(const struct logger *log, const char *status)
{
    char message[256];

    /* MAINPID: the manager then knows the pid even when sluice was started through a wrapper */
    snprintf(message, sizeof(message), "READY=1\nMAINPID=%ld\nSTATUS=%s", (long)getpid(), status);
    notify_send(log, "READY", message);
}

void notify_reloading(const struct logger *log)
{
    char message[128];
    struct timespec ts;

    /* systemd 253's Type=notify-reload wants the clock of the reload's start; older ones skip it */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(message, sizeof(message), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify_send(log, "RELOADING", message);
}

void notify_stopping(const struct logger *log, const char *status)
{
    char message[256];

    snprintf(message, sizeof(message), "STOPPING=1\nSTATUS=%s", status);
    notify_send(log, "STOPPING", message);
}
