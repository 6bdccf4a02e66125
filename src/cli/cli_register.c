/* The "sluice register" and "sluice deregister" commands: one registration (with rollback) or
 * deregistration through the same code the daemon uses. */
#include "cli_register.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "inifile.h"
#include "registrar.h"

#define DEFAULT_INTERVAL_MS 10000 /* check interval when --interval is not given */

/* Command-line state of one register / deregister run. */
struct cli {
    const char *config;         /* -c FILE, or NULL: environment only */
    struct registrar_spec spec; /* what to register */
    char *tags[64];             /* --tag values */
    char *meta[64];             /* --meta values */
    char id[REGISTRAR_ID_MAX];  /* --id, or the generated one */
    int id_given;               /* --id was on the command line */
};

static void cli_usage(FILE *out)
{
    fprintf(out,
            "usage: sluice register [-c FILE] --name NAME [--id ID] [--address IP] [--port N]\n"
            "                       [--tag TAG]... [--meta KEY=VALUE]...\n"
            "                       [--http-check URL] [--tcp-check HOST:PORT] [--interval D]\n"
            "                       [--timeout D] [--deregister-after D]\n"
            "       sluice deregister [-c FILE] --id ID\n"
            "\n"
            "  -c FILE   take the [consul] settings (address, token, TLS) from FILE; unset ones\n"
            "            fall back to CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and friends\n"
            "  --id      service ID (default NAME-HOSTNAME-PORT); printed on success\n"
            "  D         durations such as 5s, 1m (default interval 10s); --interval at least\n"
            "            1s, --deregister-after 0 (never) or at least 1m, as in [registration]\n"
            "            calls to Consul are bounded by [consul] timeout (default 10s)\n"
            "\n"
            "Exit status: 0 done, 1 rejected by Consul (reason printed), 2 Consul unreachable\n"
            "or temporarily failing (429, 5xx, incomplete answer: try again), 64 bad arguments\n"
            "or configuration. A registration that fails half-way is rolled back: no service\n"
            "is left registered without its checks.\n");
}

static int cli_duration(const char *opt, const char *text, uint64_t *ms)
{
    if (ini_parse_duration(text, ms) != NULL) {
        fprintf(stderr, "sluice: %s: \"%s\" is not a duration (use ms, s, m, h)\n", opt, text);
        return -1;
    }
    return 0;
}

/* A duration that must also obey the daemon's own rule for it (registration_*_error). */
static int cli_rule(const char *opt, const char *text, uint64_t *ms,
                    const char *(*rule)(uint64_t ms))
{
    if (cli_duration(opt, text, ms) != 0) {
        return -1;
    }
    const char *why = rule(*ms);
    if (why != NULL) {
        fprintf(stderr, "sluice: %s: \"%s\" %s, as in [registration]\n", opt, text, why);
        return -1;
    }
    return 0;
}

/* Consul takes service IDs of up to 255 bytes; a longer one is refused, never cut. */
static int cli_id(struct cli *cl, const char *text)
{
    size_t len = strlen(text);

    if (len == 0 || len >= sizeof(cl->id)) {
        fprintf(stderr, "sluice: --id: %s (1 to %zu characters)\n",
                len == 0 ? "is empty" : "is too long", sizeof(cl->id) - 1);
        return -1;
    }
    memcpy(cl->id, text, len + 1);
    cl->id_given = 1;
    return 0;
}

static int cli_push(char **list, size_t *n, const char *opt, char *value)
{
    if (*n >= 64) {
        fprintf(stderr, "sluice: at most 64 %s options\n", opt);
        return -1;
    }
    if (strcmp(opt, "--meta") == 0 && (strchr(value, '=') == NULL || value[0] == '=')) {
        fprintf(stderr, "sluice: --meta: \"%s\" is not KEY=VALUE\n", value);
        return -1;
    }
    list[(*n)++] = value;
    return 0;
}

static int cli_port(const char *text, int *port)
{
    char *end;
    long v = strtol(text, &end, 10);

    if (*text == '\0' || *end != '\0' || v < 1 || v > 65535) {
        fprintf(stderr, "sluice: --port: \"%s\" is not a port (1..65535)\n", text);
        return -1;
    }
    *port = (int)v;
    return 0;
}

/* One option of the register command; -1 on a bad value. */
static int cli_option(struct cli *cl, int opt, char *arg)
{
    struct registrar_spec *s = &cl->spec;

    switch (opt) {
    case 'c':
        cl->config = arg;
        return 0;
    case 'n':
        s->name = arg;
        return 0;
    case 'i':
        return cli_id(cl, arg);
    case 'a':
        s->address = arg;
        return 0;
    case 'p':
        return cli_port(arg, &s->port);
    case 't':
        return cli_push(cl->tags, &s->n_tags, "--tag", arg);
    case 'm':
        return cli_push(cl->meta, &s->n_meta, "--meta", arg);
    case 'H':
        s->http_check = arg;
        return 0;
    case 'T':
        s->tcp_check = arg;
        return 0;
    case 'I':
        return cli_rule("--interval", arg, &s->interval_ms, registration_interval_error);
    case 'O':
        return cli_duration("--timeout", arg, &s->timeout_ms);
    case 'D':
        return cli_rule("--deregister-after", arg, &s->deregister_after_ms,
                        registration_deregister_error);
    default:
        return -1;
    }
}

static int cli_parse(struct cli *cl, int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"name", required_argument, NULL, 'n'},
        {"id", required_argument, NULL, 'i'},
        {"address", required_argument, NULL, 'a'},
        {"port", required_argument, NULL, 'p'},
        {"tag", required_argument, NULL, 't'},
        {"meta", required_argument, NULL, 'm'},
        {"http-check", required_argument, NULL, 'H'},
        {"tcp-check", required_argument, NULL, 'T'},
        {"interval", required_argument, NULL, 'I'},
        {"timeout", required_argument, NULL, 'O'},
        {"deregister-after", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    cl->spec.interval_ms = DEFAULT_INTERVAL_MS;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage(stdout);
            return 1;
        }
        if (opt == '?' || cli_option(cl, opt, optarg) != 0) {
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluice: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    cl->spec.tags = cl->tags;
    cl->spec.meta = cl->meta;
    return 0;
}

/* NAME-HOSTNAME-PORT (or NAME-HOSTNAME): stable, so registering again updates in place. */
static void cli_make_id(struct cli *cl)
{
    char host[128] = "localhost";

    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
        snprintf(host, sizeof(host), "localhost");
    }
    if (cl->spec.port != 0) {
        snprintf(cl->id, sizeof(cl->id), "%.100s-%.100s-%d", cl->spec.name, host, cl->spec.port);
    } else {
        snprintf(cl->id, sizeof(cl->id), "%.100s-%.100s", cl->spec.name, host);
    }
}

/* The client for -c FILE (or the environment alone). */
static int cli_client(const struct cli *cl, struct consul_client **client)
{
    struct config *cfg = NULL;
    struct ini_errors errs = {0};
    char err[512];
    int rc;

    if (cl->config != NULL && config_load_consul(cl->config, &cfg, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        ini_errors_clear(&errs);
        return -1;
    }
    rc = consul_client_create(cfg != NULL ? &cfg->consul : NULL, client, err, sizeof(err));
    config_destroy(cfg);
    if (rc != 0) {
        fprintf(stderr, "sluice: %s\n", err);
        return -1;
    }
    return 0;
}

static int cli_run(struct cli *cl, int do_register)
{
    struct consul_client *client = NULL;
    char msg[REGISTRAR_MSG_MAX * 2];
    enum registrar_result res;

    if (cli_client(cl, &client) != 0) {
        return CLI_EXIT_USAGE;
    }
    if (do_register) {
        res = registrar_register(client, &cl->spec, NULL, NULL, msg, sizeof(msg));
    } else {
        res = registrar_deregister(client, cl->id, consul_client_timeout_ms(client), msg,
                                   sizeof(msg));
    }
    consul_client_destroy(client);
    if (res != REGISTRAR_DONE) {
        fprintf(stderr, "sluice: %s failed: %s\n", do_register ? "register" : "deregister", msg);
        return (int)res;
    }
    fprintf(stderr, "sluice: %s\n", msg);
    if (do_register) {
        printf("%s\n", cl->id);
    }
    return 0;
}

static int cli_has_service_options(const struct registrar_spec *s)
{
    return s->name != NULL || s->address != NULL || s->port != 0 || s->n_tags != 0 ||
           s->n_meta != 0 || s->http_check != NULL || s->tcp_check != NULL ||
           s->interval_ms != DEFAULT_INTERVAL_MS || s->timeout_ms != 0 ||
           s->deregister_after_ms != 0;
}

int cli_register(int argc, char **argv)
{
    struct cli cl;
    int do_register = strcmp(argv[0], "register") == 0;
    int rc;

    memset(&cl, 0, sizeof(cl));
    rc = cli_parse(&cl, argc, argv);
    if (rc != 0) {
        if (rc < 0) {
            cli_usage(stderr);
        }
        return rc < 0 ? CLI_EXIT_USAGE : 0;
    }
    if (do_register && (cl.spec.name == NULL || cl.spec.name[0] == '\0')) {
        fprintf(stderr, "sluice: register needs --name\n");
        return CLI_EXIT_USAGE;
    }
    if (!do_register && !cl.id_given) {
        fprintf(stderr, "sluice: deregister needs --id\n");
        return CLI_EXIT_USAGE;
    }
    if (!do_register && cli_has_service_options(&cl.spec)) {
        fprintf(stderr, "sluice: deregister takes only -c and --id\n");
        return CLI_EXIT_USAGE;
    }
    if (do_register && !cl.id_given) {
        cli_make_id(&cl);
    }
    cl.spec.id = cl.id;
    return cli_run(&cl, do_register);
}
