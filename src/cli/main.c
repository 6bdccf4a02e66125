/* The sluice command line: run, check a config, register / deregister in Consul, help, version. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "daemon.h"
#include "cli_register.h"

#define DEFAULT_CONFIG "/etc/sluice/sluice.ini"

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice [-t] [-c FILE] [--takeover]\n"
                 "       sluice register [-c FILE] --name NAME ... (see sluice register -h)\n"
                 "       sluice deregister [-c FILE] --id ID\n"
                 "       sluice -h | --version\n"
                 "\n"
                 "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
                 "  -t, --test         check the configuration, print every problem as\n"
                 "                     FILE:LINE: key: what is wrong, and exit (0 ok, 1 bad)\n"
                 "      --takeover     take the listeners of the sluice running on the same\n"
                 "                     addresses (its sockets, nothing refused or reset), then\n"
                 "                     tell it to drain: a binary upgrade without downtime\n"
                 "  -h, --help         this help\n"
                 "      --version      print the version\n"
                 "\n"
                 "Signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the configuration,\n"
                 "SIGUSR1 logs the counters.\n");
}

static void print_errors(const struct ini_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "%s\n", errs->lines[i]);
}

/* What the command line asks for. */
struct cli {
    const char *path; /* -c FILE */
    int check_only;   /* -t */
    int takeover;     /* --takeover */
    int exit_now;     /* >= 0: exit with this status (help, version, usage error) */
};

static struct cli parse_args(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {"takeover", no_argument, NULL, 'T'},     {NULL, 0, NULL, 0},
    };
    struct cli cli = {.path = DEFAULT_CONFIG, .exit_now = -1};
    int opt;
    while (cli.exit_now < 0 && (opt = getopt_long(argc, argv, "c:th", options, NULL)) != -1) {
        if (opt == 'c') {
            cli.path = optarg;
        } else if (opt == 't') {
            cli.check_only = 1;
        } else if (opt == 'T') {
            cli.takeover = 1;
        } else if (opt == 'h') {
            usage(stdout);
            cli.exit_now = 0;
        } else if (opt == 'V') {
            printf("sluice %s\n", SLUICE_VERSION);
            cli.exit_now = 0;
        } else {
            usage(stderr);
            cli.exit_now = 2;
        }
    }
    if (cli.exit_now < 0 && optind < argc) {
        fprintf(stderr, "sluice: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        cli.exit_now = 2;
    }
    return cli;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "register") == 0 || strcmp(argv[1], "deregister") == 0))
        return cli_register(argc - 1, argv + 1);
    struct cli cli = parse_args(argc, argv);
    if (cli.exit_now >= 0)
        return cli.exit_now;

    struct config *cfg = NULL;
    struct ini_errors errs = {0};
    if (config_load(cli.path, &cfg, &errs) != 0) {
        print_errors(&errs);
        ini_errors_clear(&errs);
        return 1;
    }
    if (cli.check_only) {
        printf("%s: configuration OK\n", cli.path);
        config_destroy(cfg);
        return 0;
    }
    /* splice(2) into a socket the peer reset raises SIGPIPE; the error code is enough */
    (void)signal(SIGPIPE, SIG_IGN); /* cannot fail for a valid signal and handler */
    return daemon_run(cfg, cli.takeover);
}
