/* The "sluice register" and "sluice deregister" subcommands. */
#ifndef SLUICE_CLI_REGISTER_H
#define SLUICE_CLI_REGISTER_H

#define CLI_EXIT_USAGE 64 /* bad arguments or configuration (EX_USAGE) */

/* "sluice register ..." and "sluice deregister ..." (argv[0] is the subcommand). Prints the
 * outcome and returns the exit status: 0 done, 1 rejected by the agent, 2 Consul unreachable or
 * temporarily failing (429, 5xx),
 * CLI_EXIT_USAGE for bad arguments or a bad -c file. Main thread, before other threads. */
int cli_register(int argc, char **argv);

#endif
