/* Key rows and rules of [admin]. */
#include "admin_conf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>

#define ADMIN(field) offsetof(struct admin_conf, field)

const struct ini_key admin_keys[] = {
    INI_KEY("bind", ADMIN(bind), ini_set_addr, 0, 0, NULL, true),
    INI_KEY("token", ADMIN(token), ini_set_string, 0, 0, NULL, false, .release = ini_release_string,
            .secret = true),
    INI_KEY("token_file", ADMIN(token_file), ini_set_path, 0, 0, NULL, false,
            .release = ini_release_string),
    INI_KEY("read_auth", ADMIN(read_auth), ini_set_flag, 0, 0, NULL, false),
    {.name = NULL},
};

bool admin_bind_is_loopback(const struct net_addr *a)
{
    if (a->sa.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    return (ntohl(((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr) >> 24) == 127;
}

int admin_conf_read_auth(const struct admin_conf *c)
{
    if (c->read_auth != INI_FLAG_UNSET)
        return c->read_auth == INI_FLAG_ON;
    return !admin_bind_is_loopback(&c->bind);
}

void admin_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf)
{
    const struct admin_conf *c = conf;
    int has_token = c->token != NULL || c->token_file != NULL;

    if (c->token != NULL && c->token_file != NULL)
        ini_error(f, ini_key_line(sec, "token_file"), "token_file",
                  "token is already set (line %d); use one of them", ini_key_line(sec, "token"));
    if (c->bind.len != 0 && !admin_bind_is_loopback(&c->bind) && !has_token)
        ini_error(f, ini_key_line(sec, "bind"), "bind",
                  "%s can be reached from other hosts: set token or token_file (or bind "
                  "127.0.0.1)",
                  c->bind.text);
    if (c->read_auth == INI_FLAG_ON && !has_token)
        ini_error(f, ini_key_line(sec, "read_auth"), "read_auth",
                  "needs token or token_file to check");
}
