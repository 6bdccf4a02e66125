/* libsluice: registrations, through the registrar the daemon and the CLI use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mesh_int.h"
#include "registrar.h"

#define TARGET_MAX 320 /* http://host:port/ */

/* "<name>-<host>-<port>" (host: the node's name when none is advertised). Deterministic on
 * purpose: a program that restarts registers the same id again and replaces its own entry,
 * where a random id would leave the old one behind until its check reaps it. */
static void default_id(const struct sluice_service_config *cfg, char *out, size_t len)
{
    char node[256] = "node";

    if (cfg->host == NULL || cfg->host[0] == '\0')
        (void)gethostname(node, sizeof(node) - 1);
    snprintf(out, len, "%s-%s-%u", cfg->name,
             cfg->host != NULL && cfg->host[0] != '\0' ? cfg->host : node, (unsigned)cfg->port);
    for (char *c = out; *c != '\0'; c++) /* an IPv6 address's colons make poor id characters */
        if (*c == ':' || *c == '/' || *c == ' ')
            *c = '_';
}

/* The check's target: given, or built from the service's host and port. */
static const char *check_target(const struct sluice_service_config *cfg, char *buf, size_t len)
{
    const struct sluice_check *k = cfg->check;
    const char *host = cfg->host != NULL && cfg->host[0] != '\0' ? cfg->host : "127.0.0.1";
    int v6 = strchr(host, ':') != NULL;

    if (k->target != NULL)
        return k->target;
    if (k->kind == SLUICE_CHECK_HTTP)
        snprintf(buf, len, v6 ? "http://[%s]:%u/" : "http://%s:%u/", host, (unsigned)cfg->port);
    else
        snprintf(buf, len, v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)cfg->port);
    return buf;
}

static int config_check(const struct sluice_service_config *cfg)
{
    if (cfg == NULL || cfg->name == NULL || cfg->name[0] == '\0')
        return mesh_fail(SLUICE_ERR_INVALID, "the service needs a name");
    if ((cfg->n_tags > 0 && cfg->tags == NULL) || (cfg->n_meta > 0 && cfg->meta == NULL))
        return mesh_fail(SLUICE_ERR_INVALID, "n_tags or n_meta without their array");
    for (size_t i = 0; i < cfg->n_meta; i++)
        if (cfg->meta[i].key == NULL || cfg->meta[i].value == NULL)
            return mesh_fail(SLUICE_ERR_INVALID, "meta entry %zu needs a key and a value", i);
    const struct sluice_check *k = cfg->check;
    if (k != NULL && k->kind != SLUICE_CHECK_NONE && k->target == NULL && cfg->port == 0)
        return mesh_fail(SLUICE_ERR_INVALID, "a check without a target needs the service's port");
    return 0;
}

/* meta as the registrar takes it: "key=value" strings. NULL on ENOMEM. */
static char **meta_items(const struct sluice_service_config *cfg)
{
    char **items = calloc(cfg->n_meta + 1, sizeof(*items));

    for (size_t i = 0; items != NULL && i < cfg->n_meta; i++) {
        size_t n = strlen(cfg->meta[i].key) + strlen(cfg->meta[i].value) + 2;
        if ((items[i] = malloc(n)) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(items[k]);
            free(items);
            return NULL;
        }
        snprintf(items[i], n, "%s=%s", cfg->meta[i].key, cfg->meta[i].value);
    }
    return items;
}

static int result_code(enum registrar_result r)
{
    return r == REGISTRAR_DONE          ? SLUICE_OK
           : r == REGISTRAR_UNREACHABLE ? SLUICE_ERR_UNREACHABLE
                                        : SLUICE_ERR_REJECTED;
}

int sluice_register_service(struct sluice_mesh *mesh, const struct sluice_service_config *cfg,
                            char *id_out, size_t id_len)
{
    char id[SLUICE_ID_MAX], target[TARGET_MAX], msg[REGISTRAR_MSG_MAX];

    if (mesh == NULL)
        return mesh_fail(SLUICE_ERR_INVALID, "no mesh");
    int rc = config_check(cfg);
    if (rc != 0)
        return rc;
    if (cfg->id != NULL)
        snprintf(id, sizeof(id), "%s", cfg->id);
    else
        default_id(cfg, id, sizeof(id));
    char **meta = meta_items(cfg);
    if (meta == NULL)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    const struct sluice_check *k = cfg->check;
    int checked = k != NULL && k->kind != SLUICE_CHECK_NONE;
    const char *where = checked ? check_target(cfg, target, sizeof(target)) : NULL;
    struct registrar_spec spec = {
        .id = id,
        .name = cfg->name,
        .address = cfg->host,
        .port = cfg->port,
        .tags = (char *const *)cfg->tags, /* the registrar only reads them */
        .n_tags = cfg->n_tags,
        .meta = meta,
        .n_meta = cfg->n_meta,
        .http_check = checked && k->kind == SLUICE_CHECK_HTTP ? where : NULL,
        .tcp_check = checked && k->kind == SLUICE_CHECK_TCP ? where : NULL,
        .interval_ms = checked && k->interval_ms != 0 ? k->interval_ms : 10000,
        .timeout_ms = checked ? k->timeout_ms : 0,
        .deregister_after_ms = checked ? k->deregister_after_ms : 0,
    };
    int rolled_back = 0;
    atomic_fetch_add(&mesh->registrations, 1);
    enum registrar_result r =
        registrar_register(mesh->client, &spec, NULL, &rolled_back, msg, sizeof(msg));
    for (size_t i = 0; i < cfg->n_meta; i++)
        free(meta[i]);
    free(meta);
    atomic_fetch_add(r == REGISTRAR_DONE ? &mesh->registered : &mesh->register_failures, 1);
    if (rolled_back)
        atomic_fetch_add(&mesh->rollbacks, 1);
    if (r != REGISTRAR_DONE)
        return mesh_fail(result_code(r), "%s", msg);
    if (id_out != NULL && id_len > 0)
        snprintf(id_out, id_len, "%s", id);
    mesh_ok();
    return 0;
}

int sluice_deregister_service(struct sluice_mesh *mesh, const char *service_id)
{
    char msg[REGISTRAR_MSG_MAX];

    if (mesh == NULL || service_id == NULL || service_id[0] == '\0')
        return mesh_fail(SLUICE_ERR_INVALID, "mesh and service_id are required");
    enum registrar_result r = registrar_deregister(
        mesh->client, service_id, consul_client_timeout_ms(mesh->client), msg, sizeof(msg));
    if (r != REGISTRAR_DONE)
        return mesh_fail(result_code(r), "%s", msg);
    atomic_fetch_add(&mesh->deregistrations, 1);
    mesh_ok();
    return 0;
}
