/* ThreadSanitizer annotations for orderings made inside libraries it cannot see (they are not
 * instrumented: liburcu, libuv, libcurl, libmicrohttpd). Only in -fsanitize=thread builds
 * (GCC's __SANITIZE_THREAD__, clang's __has_feature); elsewhere every macro is ((void)0), so
 * the Release and ASan builds compile to the same code as without this header.
 *
 * What TSan sees already and needs no annotation: pthread mutexes and condition variables,
 * C11 and GCC atomics, and write(2)/read(2) pairs on an eventfd or a pipe (its interceptors
 * order them), which is how uv_async_send wakes a loop, even from inside libuv. */
#ifndef SLUICE_TSAN_H
#define SLUICE_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define SLUICE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SLUICE_TSAN 1
#endif
#endif

#ifdef SLUICE_TSAN
#include <sanitizer/tsan_interface.h>
/* What this thread did so far happens before whatever follows a later SLUICE_TSAN_ACQUIRE of
 * the same address (any address works as a name; nothing is read or written there). */
#define SLUICE_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
/* Orders what follows after every SLUICE_TSAN_RELEASE of addr that TSan has seen so far. */
#define SLUICE_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define SLUICE_TSAN_RELEASE(addr) ((void)0)
#define SLUICE_TSAN_ACQUIRE(addr) ((void)0)
#endif

#endif
