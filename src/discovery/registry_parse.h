/* Pure parts of the DNS and file registries: the JSON instance file, the TTL of a DNS answer,
 * and the order and uniqueness of an instance list. No I/O, no clock; fuzzable. */
#ifndef SLUICE_REGISTRY_PARSE_H
#define SLUICE_REGISTRY_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "snapshot.h"

#define REGISTRY_WEIGHT_MAX 1000000 /* largest weight of one instance (LB_WEIGHT_MAX) */

/* One instance of an answer or a file. */
struct registry_entry {
    char id[SNAPSHOT_ID_MAX]; /* stable identity across answers */
    struct net_addr addr;     /* where to connect */
    uint32_t weight;          /* relative weight; 0 = listed but drained */
};

/* Parses a file's text: a JSON list of {"address": "IP:PORT", "weight": N, "id": "..."}, weight
 * (default 1) and id (default the address) optional. Returns 0 with *out (malloc'd, *n entries,
 * sorted by id; the caller frees it), -EINVAL with a reason in err ("line 3: ..." for a syntax
 * error, "entry 2: ..." for a bad entry, "id ... is listed twice"), or -ENOMEM. */
int registry_file_parse(const char *text, size_t len, struct registry_entry **out, size_t *n,
                        char *err, size_t err_len);

/* Sorts list by id and checks the ids are unique: 0, or -EINVAL naming the first duplicate. */
int registry_entries_sort(struct registry_entry *list, size_t n, char *err, size_t err_len);

/* The smallest TTL (seconds) of the answer section of a DNS message, UINT32_MAX when it has no
 * answer record or cannot be read. */
uint32_t registry_dns_answer_ttl(const unsigned char *msg, size_t len);

/* 1-based line of offset pos in text. */
unsigned registry_line_of(const char *text, size_t len, size_t pos);

#endif
