/* examples/progress.h — what an experiment says while it runs: progress lines on stderr (with
 * elapsed time and the trainer's estimate of the time left), the training curves they record
 * for the figures, and error lines. Part of the experiment headers (examples/experiment.h lists
 * them); needs perpo.h (declarations) first. Uses POSIX clock_gettime (define _POSIX_C_SOURCE
 * before any include). */
#ifndef PERPO_EXAMPLES_PROGRESS_H
#define PERPO_EXAMPLES_PROGRESS_H

#include <time.h>
#include "common.h"

/* Seconds on a monotonic clock. */
static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A training curve: one point per progress report (the loss; for preference runs also
   rewards/accuracies, rewards/chosen and rewards/rejected). */
#define CURVE_MAX 4096
typedef struct curve {
    int n;
    float step[CURVE_MAX], loss[CURVE_MAX], acc[CURVE_MAX], chosen[CURVE_MAX], rejected[CURVE_MAX];
} curve;

typedef struct run_log {
    const char *label;
    int verbose;
    double t0;
    curve *c; /* where the curve goes, or NULL */
} run_log;

/* A log that starts now. */
static void run_log_start(run_log *l, const char *label, int verbose, curve *c) {
    l->label = label;
    l->verbose = verbose;
    l->t0 = wall_seconds();
    l->c = c;
}

static void fmt_duration(double s, char *buf, size_t cap) {
    if (s < 0) s = 0;
    if (s < 60)
        snprintf(buf, cap, "%.0fs", s);
    else
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

/* The trainers' progress callback (user: a run_log): adds the point to the curve and prints a
   line on stderr when verbose; never stops training. */
static int on_progress(const perpo_progress *p, void *user) {
    run_log *l = (run_log *)user;
    double el = wall_seconds() - l->t0,
           eta = p->eta_s; /* the trainer's: right for resumed runs too */
    char e1[32], e2[32];
    if (l->c && l->c->n < CURVE_MAX) {
        curve *c = l->c;
        c->step[c->n] = (float)p->step;
        c->loss[c->n] = p->loss;
        c->acc[c->n] = p->reward_accuracy;
        c->chosen[c->n] = p->reward_chosen;
        c->rejected[c->n] = p->reward_rejected;
        c->n++;
    }
    if (l->verbose) {
        fmt_duration(el, e1, sizeof e1);
        fmt_duration(eta, e2, sizeof e2);
        if (strcmp(p->phase, "sft") == 0)
            fprintf(
                stderr,
                "[%s] step %5d/%d  loss %.4f  lr %.2e  |g| %.3f  %6.0f tok/s  %s elapsed, eta %s\n",
                l->label, p->step, p->total_steps, p->loss, p->lr, p->grad_norm,
                p->tokens / (el > 0 ? el : 1), e1, e2);
        else
            fprintf(stderr,
                    "[%s] step %4d/%d  loss %.4f  rewards/chosen %+.3f rejected %+.3f margins "
                    "%+.3f accuracies %.2f  %s elapsed, eta %s\n",
                    l->label, p->step, p->total_steps, p->loss, p->reward_chosen,
                    p->reward_rejected, p->reward_margin, p->reward_accuracy, e1, e2);
    }
    return 0;
}

/* An error line, "error: WHAT: why"; returns 1, the exit status of a failed run. */
static int fail(const char *what, perpo_status st) {
    fprintf(stderr, "error: %s: %s\n", what, perpo_status_string(st));
    return 1;
}

/* The same with the library's own line saying why (perpo_model_last_error, or the err of a
   *_err call): "error: WHAT: <why> (<status>)"; the status alone when why is empty. */
static int fail_why(const char *what, perpo_status st, const char *why) {
    if (!why || !why[0]) return fail(what, st);
    fprintf(stderr, "error: %s: %s (%s)\n", what, why, perpo_status_string(st));
    return 1;
}

/* perpo_model_create, saying why a config is refused. */
static perpo_status create_model(perpo_model **m, const perpo_config *cfg, uint64_t seed) {
    char why[PERPO_ERROR_MAX];
    perpo_status st = perpo_model_create(m, cfg, seed);
    if (st != PERPO_OK) {
        perpo_config_validate_err(cfg, why, sizeof why);
        fail_why("model", st, why);
    }
    return st;
}

#endif /* PERPO_EXAMPLES_PROGRESS_H */
