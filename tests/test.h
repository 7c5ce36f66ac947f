/* Minimal test harness shared by every tests/t_*.c file.
 * A test is `static void name(perpo_test *t)`; checks record failures in t and never abort,
 * so one run reports every broken assertion. tests/main.c lists the suites and prints
 * "N passed, N failed" as its last line. */
#ifndef PERPO_TEST_H
#define PERPO_TEST_H
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct perpo_test {
    const char *name; /* current test */
    int failures;     /* failed checks in the current test */
} perpo_test;

typedef void (*perpo_test_fn)(perpo_test *t);
typedef struct {
    const char *name;
    perpo_test_fn fn;
} perpo_test_case;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            t->failures++;                                                                         \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
        }                                                                                          \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            t->failures++;                                                                         \
            fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                                 \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)
/* |a - b| <= atol + rtol * |b|, and both finite */
#define CHECK_NEAR(a, b, atol, rtol)                                                               \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(isfinite(a_) && isfinite(b_) && fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_))) {        \
            t->failures++;                                                                         \
            fprintf(stderr, "  FAIL %s:%d: %s = %.9g, expected %s = %.9g\n", __FILE__, __LINE__,   \
                    #a, a_, #b, b_);                                                               \
        }                                                                                          \
    } while (0)
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int s_ = (int)(expr);                                                                      \
        if (s_ != 0) {                                                                             \
            t->failures++;                                                                         \
            fprintf(stderr, "  FAIL %s:%d: %s returned %d\n", __FILE__, __LINE__, #expr, s_);      \
        }                                                                                          \
    } while (0)

#endif
