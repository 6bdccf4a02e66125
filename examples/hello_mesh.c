/* libsluice in one page: register a service, look it up, connect to the instance the balancer
 * picks, say how it went, deregister.
 *
 *   hello_mesh SERVICE HOST PORT      (Consul: CONSUL_HTTP_ADDR, default 127.0.0.1:8500)
 *
 * Registers SERVICE at HOST:PORT with a TCP check, waits until Consul lists it as passing,
 * connects to the instance it gets, sends "hello\n", prints what comes back, and deregisters.
 * Exit status 0 when all of that worked. */
#define _POSIX_C_SOURCE 200809L /* nanosleep; the example builds as strict C11 */

#include <sluice.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void nap_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Connects to inst, sends a line and prints the answer. 0 when it answered. */
static int say_hello(const struct sluice_instance *inst)
{
    char answer[256];
    int fd = socket(inst->addr.ss_family, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (const struct sockaddr *)&inst->addr, inst->addr_len) != 0) {
        perror("connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ssize_t n = write(fd, "hello\n", 6) == 6 ? read(fd, answer, sizeof(answer) - 1) : -1;
    close(fd);
    if (n <= 0)
        return 1;
    answer[n] = '\0';
    printf("%s:%u answered: %s", inst->host, (unsigned)inst->port, answer);
    return 0;
}

/* Picks until Consul lists the service as passing (its first check may take a moment). */
static int pick_when_passing(struct sluice_mesh *mesh, const char *service,
                             struct sluice_instance *inst)
{
    int rc = SLUICE_ERR_NO_INSTANCE;

    for (int i = 0; i < 100 && rc == SLUICE_ERR_NO_INSTANCE; i++) {
        rc = sluice_get_service_instance(mesh, service, NULL, inst);
        if (rc == SLUICE_ERR_NO_INSTANCE)
            nap_ms(100);
    }
    return rc;
}

int main(int argc, char **argv)
{
    char err[256], id[SLUICE_ID_MAX];
    struct sluice_instance inst;

    if (argc != 4) {
        fprintf(stderr, "usage: %s SERVICE HOST PORT\n", argv[0]);
        return 2;
    }
    struct sluice_mesh_options opts = {.passing_only = 1};
    struct sluice_mesh *mesh = sluice_mesh_create(&opts, err, sizeof(err));
    if (mesh == NULL) {
        fprintf(stderr, "mesh: %s\n", err);
        return 1;
    }
    struct sluice_check check = {.kind = SLUICE_CHECK_TCP, .interval_ms = 200};
    struct sluice_service_config svc = {
        .name = argv[1], .host = argv[2], .port = (uint16_t)atoi(argv[3]), .check = &check};
    int rc = sluice_register_service(mesh, &svc, id, sizeof(id));
    if (rc != 0) {
        fprintf(stderr, "register: %s: %s\n", sluice_strerror(rc), sluice_mesh_last_error());
        sluice_mesh_destroy(mesh);
        return 1;
    }
    printf("registered %s\n", id);
    rc = pick_when_passing(mesh, argv[1], &inst);
    if (rc == 0) {
        int failed = say_hello(&inst);
        sluice_release_instance(mesh, &inst,
                                failed < 0 ? SLUICE_CONNECT_FAILED
                                : failed   ? SLUICE_REQUEST_FAILED
                                           : SLUICE_CONNECTED);
        rc = failed != 0;
    } else {
        fprintf(stderr, "pick: %s: %s\n", sluice_strerror(rc), sluice_mesh_last_error());
    }
    if (sluice_deregister_service(mesh, id) == 0)
        printf("deregistered %s\n", id);
    sluice_mesh_destroy(mesh);
    return rc == 0 ? 0 : 1;
}
