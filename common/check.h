/*
 * check: the two ways maskps handles faults that are not the outside world's.
 *
 * CHECK(cond, fmt, ...) is for our own bugs (an impossible state, a shape
 * mismatch between two of our modules). It stays on in release builds and
 * aborts with file:line, the condition and the values the format prints.
 *
 * xmalloc and friends are for out-of-memory: they abort with the size asked
 * for, so call sites never test for NULL.
 *
 * Outside faults (bad config, bad data, a peer gone, a RocksDB error) are not
 * handled here: those return -1/NULL with a message, see STYLE.md rule 4;
 * errorf writes that message.
 */
#ifndef MASKPS_CHECK_H
#define MASKPS_CHECK_H

#include <stddef.h>
#include <stdint.h>

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond))                                                               \
      check_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                   \
  } while (0)

/* Prints "file:line: CHECK(cond) failed: <fmt...>" to stderr and aborts. */
_Noreturn void check_fail(const char *file, int line, const char *cond,
                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Formats an outside fault's message into err[errlen] (truncated, never
 * overflowing; err may be NULL when errlen is 0) and returns -1, so a
 * caller reports and fails in one statement: return errorf(err, errlen,
 * "%s: no such file", path). */
int errorf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Never return NULL: abort with the size on failure. xmalloc(0) returns a
 * unique pointer that must still be freed. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* A 64-byte aligned block (for SIMD-friendly float buffers); free with free().
 */
void *xaligned(size_t n);

/* Monotonic clock in nanoseconds / seconds. */
uint64_t clock_ns(void);
double clock_sec(void);

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
