/* Claims on bind addresses: one holder per address, the holder's pid told to the next one, the
 * name free again once released, other addresses independent, and queued knocks drained. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "listen_lock.h"

/* An address no other test run uses: the claim names live in the network namespace. */
static struct net_addr test_addr(int port)
{
    struct net_addr a;
    char text[64];
    snprintf(text, sizeof(text), "127.0.0.%d:%d", 1 + getpid() % 250, port);
    assert_null(net_addr_parse(text, &a));
    return a;
}

static void test_second_claim_names_the_holder(void **state)
{
    (void)state;
    struct net_addr a = test_addr(1);
    pid_t holder = -1;
    int fd = listen_lock_acquire(&a, &holder);
    assert_true(fd >= 0);
    assert_int_equal(holder, 0);
    for (int i = 0; i < 3; i++) { /* asked again and again: the pid each time */
        assert_int_equal(listen_lock_acquire(&a, &holder), -EADDRINUSE);
        assert_int_equal(holder, getpid());
    }
    listen_lock_release(fd);
    fd = listen_lock_acquire(&a, &holder); /* released: free at once, nothing stale */
    assert_true(fd >= 0);
    listen_lock_release(fd);
    listen_lock_release(-1); /* nothing claimed: fine */
}

static void test_other_addresses_do_not_collide(void **state)
{
    (void)state;
    struct net_addr a = test_addr(2), b = test_addr(3);
    pid_t holder;
    int fa = listen_lock_acquire(&a, &holder), fb = listen_lock_acquire(&b, &holder);
    assert_true(fa >= 0);
    assert_true(fb >= 0);
    listen_lock_release(fa);
    listen_lock_release(fb);
}

/* Knocks pile up in the backlog until drained: afterwards nothing is left queued. */
static void test_drain_empties_the_backlog(void **state)
{
    (void)state;
    struct net_addr a = test_addr(4);
    pid_t holder;
    int fd = listen_lock_acquire(&a, &holder);
    assert_true(fd >= 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(listen_lock_acquire(&a, &holder), -EADDRINUSE);
        assert_int_equal(holder, getpid());
    }
    listen_lock_drain(fd);
    assert_int_equal(accept(fd, NULL, NULL), -1); /* non-blocking and empty */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    listen_lock_release(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_claim_names_the_holder),
        cmocka_unit_test(test_other_addresses_do_not_collide),
        cmocka_unit_test(test_drain_empties_the_backlog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
