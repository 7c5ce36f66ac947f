/* The test runner: one translation unit holding the implementation and every suite, so the
 * kernel tests can reach the header's private functions. Prints "N passed, N failed" last and
 * exits non-zero on any failure. Run from the repository root (reference files are read from
 * tests/ref/). Arguments select tests by name: NAME runs those containing it, -NAME skips them. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE                                                                            \
    200809L /* fork, kill, pipe, nanosleep, symlink for the file and crash tests */
#endif
/* Checkpoint saves call this test hook (tests/t_crash.c) instead of the default sync; it calls
   the default (perpo__sync_default) unless a test asks it to fail or to kill the process. */
static int perpo_test_sync_hook(const char *path, int is_dir);
#define PERPO_SYNC(path, is_dir) perpo_test_sync_hook((path), (is_dir))
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "test.h"
#include "../examples/common.h"

#include <stdlib.h>

#include "t_kernels.c"
#include "t_model.c"
#include "t_rewards.c"
#include "t_objectives.c"
#include "t_examples.c"
#include "t_pref.c"
#include "t_data.c"
#include "t_checkpoints.c"
#include "t_reliability.c"
#include "t_crash.c"
#include "t_parallel.c"
#include "t_reference.c"
#include "t_errors.c"

static const perpo_test_case *const suites[] = {
    perpo_tests_kernels,     perpo_tests_model, perpo_tests_rewards,     perpo_tests_objectives,
    perpo_tests_examples,    perpo_tests_pref,  perpo_tests_pref_ocr,    perpo_tests_data,
    perpo_tests_reliability, perpo_tests_crash, perpo_tests_checkpoints, perpo_tests_parallel,
    perpo_tests_reference,   perpo_tests_errors
};

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    size_t s;
    int a;
    for (s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        const perpo_test_case *c;
        for (c = suites[s]; c->name; c++) {
            perpo_test t;
            int wanted = 1, any_include = 0;
            for (a = 1; a < argc; a++) { /* NAME includes, -NAME excludes */
                if (argv[a][0] == '-') {
                    if (strstr(c->name, argv[a] + 1)) wanted = 0;
                } else
                    any_include = 1;
            }
            if (any_include) {
                int hit = 0;
                for (a = 1; a < argc; a++)
                    hit |= argv[a][0] != '-' && strstr(c->name, argv[a]) != NULL;
                wanted &= hit;
            }
            if (!wanted) continue;
            t.name = c->name;
            t.failures = 0;
            c->fn(&t);
            if (t.failures)
                failed++;
            else
                passed++;
            fprintf(stderr, "%s %s\n", t.failures ? "FAIL" : "ok  ", c->name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
