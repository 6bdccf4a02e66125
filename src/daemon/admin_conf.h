/* [admin]: where the admin HTTP server listens and how callers prove who they are. */
#ifndef SLUICE_ADMIN_CONF_H
#define SLUICE_ADMIN_CONF_H

#include "addr.h"
#include "inifile.h"

/* [admin]: the admin API, metrics and status page. */
struct admin_conf {
    int line;                /* line of the [admin] header; 0 = no admin server */
    struct net_addr bind;    /* bind: IP:PORT (required) */
    char *token;             /* token: the secret callers send (Bearer, or Basic's password) */
    char *token_file;        /* token_file: a file holding it instead */
    enum ini_flag read_auth; /* read_auth: reads need the token too; unset = on unless loopback */
};

/* Rows and rules, for the composer's [admin] kind. */
extern const struct ini_key admin_keys[];
void admin_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf);

/* Whether the admin server must check the token on reads. */
int admin_conf_read_auth(const struct admin_conf *c);

/* True for 127.0.0.0/8 and ::1: only this host can connect. */
bool admin_bind_is_loopback(const struct net_addr *a);

#endif
