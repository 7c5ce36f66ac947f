/* examples/pipeline.h — what the PerPO experiment programs share beyond common.h: the command
 * line they accept, progress lines and training curves, the list of objectives to compare,
 * and mean/std over seeds. Needs perpo.h (declarations) and common.h first; each program
 * defines PERPO_IMPLEMENTATION itself. Uses POSIX clock_gettime and mkdir (define
 * _POSIX_C_SOURCE before any include). */
#ifndef PERPO_EXAMPLES_PIPELINE_H
#define PERPO_EXAMPLES_PIPELINE_H

#include <errno.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef _WIN32
#include <direct.h>
#define ex_mkdir(p) _mkdir(p)
#else
#include <sys/stat.h>
#define ex_mkdir(p) mkdir((p), 0755)
#endif

/* ---- Options shared by the experiments (defaults: options_default, then each program's) -- */
typedef struct options {
    const char *description; /* first lines of --help */
    int seed, test_seed, seeds, n_samples, sft_steps, pref_steps, n_pref, n_test;
    int threads, batch, lists_per_step, verbose, mean_logp, max_batch;
    int test_shift, pretrain, n_val, val_seed, save_every, sft_warmup, rounds, bon_test,
        from_scratch, accum, nll_truth, n_diag, scenes, val_every, patience, pref_data_seed;
    double beta, gamma, temperature, top_p, margin, sft_lr, pref_lr, nll, positive;
    const char *objective, *out, *sft_ckpt, *data;
} options;

/* What the experiments share by default; each program's set_defaults then sets its own (list
   size, lists per step, margin, learning rate, splits, paths). The paper's recipe: beta 0.1,
   gamma 0.5, summed log-probs, no NLL term, top-p 0.8 sampling; DPO and PerPO for 100 steps.
   --data fine-tunes the checkpoint for sft_steps; --pretrain trains from scratch (make
   pretrain). */
static void options_default(options *o) {
    memset(o, 0, sizeof *o);
    o->max_batch = 32;
    o->seed = 1;
    o->seeds = 1;
    o->pref_steps = 100;
    o->rounds = 1;
    o->accum = 1;
    o->threads = 0;
    o->batch = 32;
    o->verbose = 1;
    o->beta = 0.1;
    o->gamma = 0.5;
    o->temperature = 1.0;
    o->top_p = 0.8;
    o->nll = 0.0;
    o->mean_logp = 0;
    o->objective = "dpo,perpo";
    o->data = NULL;
    o->sft_steps = 300;
    o->sft_lr = 1e-4;
    o->from_scratch = 0;
    o->pretrain = 0;
    o->save_every = 250;
    o->n_diag = 256;
    o->positive = 0.0;
    o->pref_data_seed = -1;
}

/* ---- Objectives compared ---------------------------------------------------------------- */
#define EX_MAX_OBJECTIVES 4
static const perpo_objective ex_objective_kinds[EX_MAX_OBJECTIVES] = {
    PERPO_OBJ_DPO, PERPO_OBJ_PERPO, PERPO_OBJ_LIPO, PERPO_OBJ_LISTMLE
};

/* Is the word w[0..len) the objective's flag, its name in lower case ("perpo" for PerPO)? */
static int objective_flag_is(const char *w, size_t len, perpo_objective kind) {
    const char *name = perpo_objective_name(kind);
    size_t i;
    if (strlen(name) != len) return 0;
    for (i = 0; i < len; i++)
        if (w[i] != (name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i])) return 0;
    return 1;
}

/* Is the objective's flag in the comma-separated list (or is the list "all")? */
static int objective_wanted(const char *list, perpo_objective kind) {
    if (strcmp(list, "all") == 0) return 1;
    while (*list) {
        size_t len = strcspn(list, ",");
        if (objective_flag_is(list, len, kind)) return 1;
        list += len + (list[len] == ',');
    }
    return 0;
}

static int parse_options(int argc, char **argv, options *o) {
    ex_option spec[] = {
        { "--seed", "seed of the training data, the model and the samples", 'i', &o->seed, 0, 2e9 },
        { "--test-seed", "seed of the held-out test examples", 'i', &o->test_seed, 0, 2e9 },
        { "--test-shift",
          "test and diagnostic examples from a shifted distribution the SFT model never saw (0 = "
          "none; grounding: 1 = objects of 6-14 px instead of 10-28)",
          'i', &o->test_shift, 0, 9 },
        { "--seeds", "run this many seeds (seed, seed+1, ...) and report mean and std", 'i',
          &o->seeds, 1, 100 },
        { "--n", "responses sampled per training prompt (list size N)", 'i', &o->n_samples, 2, 32 },
        { "--beta", "beta of the preference objectives", 'd', &o->beta, 1e-6, 1000 },
        { "--gamma", "PerPO's reward-gap exponent (0 = LiPO-style uniform weights)", 'd', &o->gamma,
          0, 100 },
        { "--temperature", "sampling temperature for the lists and Best-of-N", 'd', &o->temperature,
          0.01, 10 },
        { "--top-p", "nucleus sampling for the lists and Best-of-N (1 = off)", 'd', &o->top_p, 0.01,
          1 },
        { "--nll", "weight of the NLL term on each list's best answer (0 = off, as the paper)", 'd',
          &o->nll, 0, 100 },
        { "--positive",
          "DPO-Positive's lambda: each pair's margin loses lambda max(0, -s_chosen) (0 = off, as "
          "the paper)",
          'd', &o->positive, 0, 1000 },
        { "--diag",
          "held-out items the diagnostics are read on (sampled metric, rho, log-prob shifts, "
          "image reliance; 0 = none)",
          'i', &o->n_diag, 0, 1e6 },
        { "--mean-logp", "1: per-token mean log-probs in the objectives, 0: sums (as the paper)",
          'i', &o->mean_logp, 0, 1 },
        { "--margin", "keep lists whose best-minus-worst reward is at least this", 'd', &o->margin,
          0, 1 },
        { "--sft-steps", "SFT steps: of pretraining, or of fine-tuning on --data (0 = none)", 'i',
          &o->sft_steps, 0, 1e7 },
        { "--pref-steps", "preference optimizer steps, the same for every objective", 'i',
          &o->pref_steps, 1, 1e7 },
        { "--sft-lr", "SFT peak learning rate", 'd', &o->sft_lr, 1e-9, 1 },
        { "--pref-lr", "preference peak learning rate", 'd', &o->pref_lr, 1e-9, 1 },
        { "--pref-prompts", "training prompts sampled for preference lists", 'i', &o->n_pref, 1,
          1e7 },
        { "--test", "held-out test examples", 'i', &o->n_test, 1, 1e7 },
        { "--batch", "SFT sequences per step", 'i', &o->batch, 1, 32 },
        { "--lists", "lists per preference step (lists x N <= 32)", 'i', &o->lists_per_step, 1,
          32 },
        { "--objective", "comma-separated: dpo,perpo,lipo,listmle (or all)", 's', &o->objective, 0,
          0 },
        { "--threads", "OpenMP threads (0 = the runtime's default)", 'i', &o->threads, 0, 256 },
        { "--verbose", "0 quiet, 1 progress on stderr", 'i', &o->verbose, 0, 2 },
        { "--out", "output folder for results.json, the picture and the curves", 's', &o->out, 0,
          0 },
        { "--data",
          "a folder with train.tsv and test.tsv (image path, prompt, answer; 8-bit PPM/PGM images) "
          "to use instead of the built-in synthetic data",
          's', &o->data, 0, 0 },
        { "--sft-checkpoint",
          "the pretrained SFT model the preference stage starts from (make pretrain writes it)",
          's', &o->sft_ckpt, 0, 0 },
        { "--nll-truth",
          "1: the NLL term trains on each list's true answer instead of its best sample (needs "
          "--lists x (--n + 1) <= 32)",
          'i', &o->nll_truth, 0, 1 },
        { "--accum", "preference micro-batches (of --lists lists) per optimizer step", 'i',
          &o->accum, 1, 1024 },
        { "--rounds",
          "iterative PerPO: lists sampled again from the current policy this many times (1 = once, "
          "from SFT)",
          'i', &o->rounds, 1, 100 },
        { "--bon-test", "test examples the Best-of-N oracle row is measured on", 'i', &o->bon_test,
          1, 1e7 },
        { "--from-scratch",
          "1: with --data, train a new model on it instead of fine-tuning the checkpoint", 'i',
          &o->from_scratch, 0, 1 },
        { "--pretrain",
          "1: SFT from scratch on fresh examples into --sft-checkpoint (make pretrain), resuming "
          "its .partial file",
          'i', &o->pretrain, 0, 1 },
        { "--sft-warmup", "SFT warmup steps (pretraining)", 'i', &o->sft_warmup, 0, 1e7 },
        { "--save-every",
          "pretraining: save the resumable .partial checkpoint every this many steps (at the next "
          "50-step report)",
          'i', &o->save_every, 50, 1e7 },
        { "--val", "validation examples scored after pretraining", 'i', &o->n_val, 1, 1e7 },
        { "--scenes",
          "pretraining: a fixed set of this many labelled examples, in shuffled epochs (0 = fresh "
          "examples every step)",
          'i', &o->scenes, 0, 1e8 },
        { "--val-every",
          "pretraining: score --val validation examples every this many steps and keep the best "
          "model (early stopping; 0 = off)",
          'i', &o->val_every, 0, 1e7 },
        { "--patience",
          "early stopping: stop after this many validations without a new best (0 = never stop "
          "early, still keep the best)",
          'i', &o->patience, 0, 1e6 },
        { "--pref-data-seed",
          "preference prompts from the pretraining examples of this seed (the first "
          "--pref-prompts of a --scenes set) instead of prompts of their own (-1)",
          'i', &o->pref_data_seed, -1, 2e9 },
        { "--val-seed", "seed of the validation split (never the test seed)", 'i', &o->val_seed, 0,
          2e9 },
    };
    int rc =
        ex_options_parse(argc, argv, spec, sizeof spec / sizeof spec[0], o->description, stderr);
    if (rc) return rc;
    {
        const char *p = o->objective;
        while (strcmp(o->objective, "all") != 0 && *p) { /* every comma-separated name known */
            size_t len = strcspn(p, ","), k2;
            for (k2 = 0; k2 < EX_MAX_OBJECTIVES; k2++)
                if (objective_flag_is(p, len, ex_objective_kinds[k2])) break;
            if (k2 == EX_MAX_OBJECTIVES) {
                fprintf(
                    stderr,
                    "bad --objective \"%s\" (comma-separated dpo, perpo, lipo, listmle, or all)\n",
                    o->objective);
                return -1;
            }
            p += len + (p[len] == ',');
        }
    }
    if (o->lists_per_step * (o->n_samples + o->nll_truth) > o->max_batch) {
        fprintf(stderr, "--lists x --n%s must be at most %d (the model's batch), got %d x %d\n",
                o->nll_truth ? " (+1 for the truth)" : "", o->max_batch, o->lists_per_step,
                o->n_samples + o->nll_truth);
        return -1;
    }
    return 0;
}

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Progress lines and training curves --------------------------------------------------- */
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

/* The preference configuration the options describe, for one objective. */
static perpo_pref_config pref_config(const options *o, perpo_objective kind, int seed) {
    perpo_pref_config pc = perpo_pref_default(kind);
    pc.objective.beta = (float)o->beta;
    pc.objective.gamma = (float)o->gamma;
    pc.lists_per_step = o->lists_per_step;
    pc.accum_steps = o->accum;
    pc.seed = (uint64_t)seed;
    pc.objective.positive = (float)o->positive;
    pc.nll_weight = (float)o->nll;
    pc.mean_logp = o->mean_logp;
    pc.nll_on_truth = o->nll_truth;
    pc.optim.lr = (float)o->pref_lr;
    pc.optim.min_lr = (float)o->pref_lr * 0.1f;
    pc.optim.warmup_steps = o->pref_steps / 10 + 1;
    pc.optim.total_steps = o->pref_steps;
    pc.log_every = 10;
    return pc;
}

/* Creates dir and its parent (results/task); 0 on success. */
static int make_dirs(const char *dir) {
    char parent[1024];
    char *slash;
    if (ex_mkdir(dir) == 0 || errno == EEXIST) return 0;
    snprintf(parent, sizeof parent, "%s", dir);
    slash = strrchr(parent, '/');
    if (slash) {
        *slash = 0;
        ex_mkdir(parent);
    }
    return ex_mkdir(dir) == 0 || errno == EEXIST ? 0 : -1;
}

static void mean_std(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    int i;
    for (i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

static int fail(const char *what, perpo_status st) {
    fprintf(stderr, "error: %s: %s\n", what, perpo_status_string(st));
    return 1;
}

static void json_options(ex_json *j, const options *o) {
    ex_json_key(j, "flags");
    ex_json_object_begin(j);
    ex_json_kv_int(j, "seed", o->seed);
    ex_json_kv_int(j, "test_seed", o->test_seed);
    ex_json_kv_int(j, "test_shift", o->test_shift);
    ex_json_kv_int(j, "seeds", o->seeds);
    ex_json_kv_int(j, "n", o->n_samples);
    ex_json_kv_number(j, "beta", o->beta);
    ex_json_kv_number(j, "gamma", o->gamma);
    ex_json_kv_number(j, "temperature", o->temperature);
    ex_json_kv_number(j, "top_p", o->top_p);
    ex_json_kv_number(j, "margin", o->margin);
    ex_json_kv_number(j, "nll", o->nll);
    ex_json_kv_number(j, "positive", o->positive);
    ex_json_kv_int(j, "diag", o->n_diag);
    ex_json_kv_int(j, "pref_data_seed", o->pref_data_seed);
    ex_json_kv_int(j, "mean_logp", o->mean_logp);
    ex_json_kv_int(j, "nll_truth", o->nll_truth);
    ex_json_kv_int(j, "sft_steps", o->sft_steps);
    ex_json_kv_int(j, "pref_steps", o->pref_steps);
    ex_json_kv_number(j, "sft_lr", o->sft_lr);
    ex_json_kv_number(j, "pref_lr", o->pref_lr);
    ex_json_kv_int(j, "pref_prompts", o->n_pref);
    ex_json_kv_int(j, "test", o->n_test);
    ex_json_kv_int(j, "rounds", o->rounds);
    ex_json_kv_int(j, "batch", o->batch);
    ex_json_kv_int(j, "lists", o->lists_per_step);
    ex_json_kv_int(j, "accum", o->accum);
    ex_json_kv_string(j, "objective", o->objective);
    ex_json_kv_int(j, "threads", o->threads);
    if (o->data) ex_json_kv_string(j, "data", o->data);
    if (o->sft_ckpt) ex_json_kv_string(j, "sft_checkpoint", o->sft_ckpt);
    ex_json_object_end(j);
}

/* Five panels: the SFT loss, then each preference run's loss, rewards/accuracies,
   rewards/chosen and rewards/rejected against the step (chosen and rejected falling together
   is likelihood displacement: the pairs are ranked by pushing every answer down). */
static int write_curves(const char *path, const char *title, const curve *sft, int n,
                        const char *const *names, const curve *const *runs) {
    const float *xs[EX_MAX_OBJECTIVES], *loss[EX_MAX_OBJECTIVES], *acc[EX_MAX_OBJECTIVES],
        *cho[EX_MAX_OBJECTIVES], *rej[EX_MAX_OBJECTIVES];
    const float *sx[1], *sy[1];
    int counts[EX_MAX_OBJECTIVES], sc[1], k;
    ex_plot_panel p[5];
    const char *sft_name[1] = { "SFT" };
    for (k = 0; k < n && k < EX_MAX_OBJECTIVES; k++) {
        xs[k] = runs[k]->step;
        loss[k] = runs[k]->loss;
        acc[k] = runs[k]->acc;
        cho[k] = runs[k]->chosen;
        rej[k] = runs[k]->rejected;
        counts[k] = runs[k]->n;
    }
    sx[0] = sft->step;
    sy[0] = sft->loss;
    sc[0] = sft->n;
    p[0].title = "SFT";
    p[0].xlabel = "step";
    p[0].ylabel = "token cross-entropy";
    p[0].n_series = 1;
    p[0].names = sft_name;
    p[0].xs = sx;
    p[0].ys = sy;
    p[0].counts = sc;
    p[1].title = "preference loss";
    p[1].xlabel = "step";
    p[1].ylabel = "loss";
    p[1].n_series = k;
    p[1].names = names;
    p[1].xs = xs;
    p[1].ys = loss;
    p[1].counts = counts;
    p[2] = p[1];
    p[2].title = "rewards/accuracies";
    p[2].ylabel = "pairs ranked right";
    p[2].ys = acc;
    p[3] = p[1];
    p[3].title = "rewards/chosen";
    p[3].ylabel = "beta s of the best answer";
    p[3].ys = cho;
    p[4] = p[1];
    p[4].title = "rewards/rejected";
    p[4].ylabel = "beta s of the worst answer";
    p[4].ys = rej;
    return ex_svg_plot_panels(path, title, n ? 5 : 1, p);
}

/* What every experiment does first: the command line, the thread count, the output folder.
   0 to go on, 1 after --help, -1 on an error (already reported). */
static int experiment_start(int argc, char **argv, options *o) {
    int rc = parse_options(argc, argv, o);
    if (rc) return rc;
#ifdef _OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
#endif
    if (make_dirs(o->out) != 0) {
        fprintf(stderr, "error: cannot create %s\n", o->out);
        return -1;
    }
    return 0;
}

/* ---- results.json and the training curves ------------------------------------------------ */
/* Opens DIR/results.json and writes {"task": ..., "flags": {...}, "runs": [ ; NULL (with a
   message) when the file cannot be created. path gets the file's name. */
static FILE *results_begin(ex_json *j, const options *o, const char *task, char *path, size_t cap) {
    FILE *f;
    snprintf(path, cap, "%s/results.json", o->out);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return NULL;
    }
    ex_json_init(j, f);
    ex_json_object_begin(j);
    ex_json_kv_string(j, "task", task);
    json_options(j, o);
    ex_json_key(j, "runs");
    ex_json_array_begin(j);
    return f;
}
/* One run's common fields, then opens its "methods" array. */
static void results_run_begin(ex_json *j, int seed, size_t sampled, size_t kept, double mean_reward,
                              double seconds) {
    ex_json_object_begin(j);
    ex_json_kv_int(j, "seed", seed);
    ex_json_kv_int(j, "lists_sampled", (long long)sampled);
    ex_json_kv_int(j, "lists_kept", (long long)kept);
    ex_json_kv_number(j, "mean_sample_reward", mean_reward);
    ex_json_kv_number(j, "seconds", seconds);
    ex_json_key(j, "methods");
    ex_json_array_begin(j);
}
static void results_run_end(ex_json *j) {
    ex_json_array_end(j);
    ex_json_object_end(j);
}
/* Closes the document and the file; 0 on success. */
static int results_end(ex_json *j, FILE *f, const char *path) {
    ex_json_array_end(j);
    ex_json_object_end(j);
    if (ex_json_finish(j) != 0 || fclose(f) != 0) {
        fprintf(stderr, "error: writing %s failed\n", path);
        return -1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* DIR/training_curves.svg from the first seed's curves. */
static void curves_output(const options *o, const char *title, const curve *sft, int n,
                          const char *const *names, const curve *const *runs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/training_curves.svg", o->out);
    if (write_curves(path, title, sft, n, names, runs) != 0)
        fprintf(stderr, "warning: cannot write %s\n", path);
    else
        printf("wrote %s\n", path);
}

/* ---- Bring your own data: DIR/NAME.tsv lists image, prompt and answer per line ---------- */
typedef struct user_data {
    perpo_manifest manifest; /* owns the prompt and answer strings */
    float *images;           /* manifest.n * W * H * 3 */
} user_data;

static void user_data_free(user_data *u) {
    perpo_manifest_free(&u->manifest);
    free(u->images);
    u->images = NULL;
}

/* Loads DIR/NAME and its images (W x H, paths relative to DIR unless absolute). Prints what is
   wrong, with the file and line, and returns -1 on any error. */
static int user_data_load(user_data *u, const char *dir, const char *name, int W, int H) {
    char path[2048], err[512];
    size_t i, floats = (size_t)W * (size_t)H * 3;
    perpo_status st;
    memset(u, 0, sizeof *u);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((st = perpo_manifest_load(path, &u->manifest, err, sizeof err, NULL)) != PERPO_OK) {
        fprintf(stderr, "error: %s (%s)\n", err[0] ? err : path, perpo_status_string(st));
        return -1;
    }
    if (u->manifest.n == 0) {
        fprintf(stderr, "error: %s has no examples\n", path);
        return -1;
    }
    u->images = (float *)malloc(u->manifest.n * floats * sizeof(float));
    if (!u->images) {
        fprintf(stderr, "error: out of memory for %zu images\n", u->manifest.n);
        return -1;
    }
    for (i = 0; i < u->manifest.n; i++) {
        const perpo_manifest_entry *e = &u->manifest.entries[i];
        char img_path[2048];
        if (e->image[0] == '/')
            snprintf(img_path, sizeof img_path, "%s", e->image);
        else
            snprintf(img_path, sizeof img_path, "%s/%s", dir, e->image);
        if ((st = perpo_image_load_pnm(img_path, W, H, 3, u->images + i * floats, err, sizeof err,
                                       NULL)) != PERPO_OK) {
            fprintf(stderr, "error: %s line %zu: %s\n", path, e->line, err);
            user_data_free(u);
            return -1;
        }
    }
    return 0;
}

/* ==========================================================================================
 * The experiment, the same for every task: load the pretrained SFT model (or fine-tune it on
 * --data) -> greedy evaluation -> N samples per preference prompt, task rewards, margin filter,
 * reference log-probs -> the control (SFT continued on the same prompts' true answers), DPO,
 * PerPO and any other objective, each from the SFT weights with the same steps, lists per step
 * and schedule -> greedy evaluation of each -> Best-of-N -> table, results.json, picture, curves.
 * A task (grounding.c, dense_ocr.c) supplies only what it owns: its data, reward and metrics.
 * ========================================================================================== */
#define EX_MAX_METRICS 24
#define EX_MAX_METHODS (EX_MAX_OBJECTIVES + 3) /* SFT, control, objectives, Best-of-N */
typedef struct dataset dataset;

typedef struct task {
    const char *name;  /* results.json's "task"; examples/models/NAME_sft.ckpt */
    const char *title; /* heading of the table */
    perpo_config cfg;  /* the model trained from scratch (a checkpoint has its own) */
    size_t text_cap;   /* bytes of a prompt, answer or response buffer (> max_text) */
    int n_metrics;
    const char *metric_key[EX_MAX_METRICS];  /* results.json keys, e.g. "acc_at_0.5" */
    const char *metric_head[EX_MAX_METRICS]; /* table column, NULL: only in results.json */
    double metric_scale[EX_MAX_METRICS];     /* table shows value * scale (100 for percents) */
    int main_metric, higher_is_better;       /* the metric the summary line compares */
    /* Example `index` of the split with seed base `base`: image, prompt and answer (text_cap
       bytes each) and a group (e.g. OCR text density) that score() may use. 0 on success. */
    int (*make)(uint64_t base, uint64_t index, float *image, char *prompt, char *answer,
                int *group);
    /* Optional (NULL: none): the same for a test distribution shifted away from the training
       one (`--test-shift`; 1..max_shift, what each means is the task's). */
    int (*make_shifted)(uint64_t base, uint64_t index, int shift, float *image, char *prompt,
                        char *answer, int *group);
    int max_shift;
    /* The task reward of a response against the true answer (IoU, 1 - edit distance). */
    float (*reward)(const char *response, size_t len, const char *answer);
    /* Adds one item's metrics: sum[k] += value * w and weight[k] += w (w = 0: not counted). */
    void (*score)(const char *response, size_t len, const char *answer, int group, double *sum,
                  double *weight);
    /* --data: NULL if the answer suits the task, else why not; and its group (NULL: 0). */
    const char *(*check_answer)(const char *answer);
    int (*group_of)(const char *answer);
    /* The picture of the first test items with the SFT and PerPO answers; 0 on success. */
    int (*picture)(const char *path, const dataset *test, const char *sft_text,
                   const char *perpo_text);
    /* Optional figure of one metric per group (the paper's Figure 5: edit distance at each text
       density): metrics group_metric .. group_metric + n_groups - 1 hold groups 0 .. n_groups - 1,
       plotted against group_axis for every method (mean over seeds) into DIR/NAME_by_group.svg.
       n_groups = 0: none. */
    int group_metric, n_groups;
    const char *group_axis, *group_ylabel;
    /* --data: 1 if answers may span lines, written in the TSV as the two characters \n (and a
       backslash as \\), since a manifest field cannot hold a line break */
    int answer_escapes;
} task;

/* ---- Data: images, prompts, answers (synthetic splits or --data) ------------------------- */
struct dataset {
    int n;
    size_t image_floats, cap;
    float *images;         /* n images */
    char *prompt, *answer; /* n strings of cap bytes each */
    int *group;
    perpo_example *examples; /* image + prompt + answer, as the trainers take them */
};

EX_FN const char *ds_prompt(const dataset *d, int i) { return d->prompt + (size_t)i * d->cap; }
EX_FN const char *ds_answer(const dataset *d, int i) { return d->answer + (size_t)i * d->cap; }

static void dataset_free(dataset *d) {
    free(d->images);
    free(d->prompt);
    free(d->answer);
    free(d->group);
    free(d->examples);
    memset(d, 0, sizeof *d);
}
static int dataset_alloc(dataset *d, const task *tk, const perpo_config *cfg, int n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->cap = tk->text_cap;
    d->image_floats = (size_t)cfg->image_h * (size_t)cfg->image_w * (size_t)cfg->channels;
    d->images = (float *)malloc((size_t)n * d->image_floats * sizeof(float));
    d->prompt = (char *)calloc((size_t)n, d->cap);
    d->answer = (char *)calloc((size_t)n, d->cap);
    d->group = (int *)calloc((size_t)n, sizeof(int));
    d->examples = (perpo_example *)calloc((size_t)n, sizeof *d->examples);
    if (!d->images || !d->prompt || !d->answer || !d->group || !d->examples) {
        dataset_free(d);
        return -1;
    }
    return 0;
}
static void dataset_link(dataset *d, int i) {
    d->examples[i].image = d->images + (size_t)i * d->image_floats;
    d->examples[i].prompt = d->prompt + (size_t)i * d->cap;
    d->examples[i].response = d->answer + (size_t)i * d->cap;
}
/* Items first .. first+n-1 of the synthetic split with seed base `base`, drawn from the task's
   shifted distribution `shift` (0: the training one). */
static int dataset_make_shifted(dataset *d, const task *tk, const perpo_config *cfg, uint64_t base,
                                uint64_t first, int n, int shift) {
    int i;
    if (dataset_alloc(d, tk, cfg, n) != 0) return -1;
    for (i = 0; i < n; i++) {
        float *image = d->images + (size_t)i * d->image_floats;
        char *prompt = d->prompt + (size_t)i * d->cap, *answer = d->answer + (size_t)i * d->cap;
        dataset_link(d, i);
        if ((shift
                 ? tk->make_shifted(base, first + (uint64_t)i, shift, image, prompt, answer,
                                    &d->group[i])
                 : tk->make(base, first + (uint64_t)i, image, prompt, answer, &d->group[i])) != 0) {
            dataset_free(d);
            return -1;
        }
    }
    return 0;
}
/* Items first .. first+n-1 of the synthetic split with seed base `base`. */
static int dataset_make(dataset *d, const task *tk, const perpo_config *cfg, uint64_t base,
                        uint64_t first, int n) {
    return dataset_make_shifted(d, tk, cfg, base, first, n, 0);
}
/* In place: the two characters \n become a line break and \\ a backslash (--data answers of
   a task with answer_escapes). */
static void unescape_lines(char *s) {
    char *w = s;
    for (; *s; s++) {
        if (s[0] == '\\' && (s[1] == 'n' || s[1] == '\\')) {
            *w++ = s[1] == 'n' ? '\n' : '\\';
            s++;
        } else
            *w++ = *s;
    }
    *w = 0;
}
/* DIR/NAME (--data): image paths, prompts and answers; images of the model's size. */
static int dataset_load(dataset *d, const task *tk, const perpo_config *cfg, const char *dir,
                        const char *name) {
    user_data u;
    int i;
    if (user_data_load(&u, dir, name, cfg->image_w, cfg->image_h) != 0) return -1;
    if (dataset_alloc(d, tk, cfg, (int)u.manifest.n) != 0) {
        user_data_free(&u);
        return -1;
    }
    memcpy(d->images, u.images, u.manifest.n * d->image_floats * sizeof(float));
    for (i = 0; i < d->n; i++) {
        const perpo_manifest_entry *e = &u.manifest.entries[i];
        char *answer = d->answer + (size_t)i * d->cap;
        size_t lp = strlen(e->prompt), la = strlen(e->answer);
        const char *why;
        if (la < d->cap) {
            memcpy(answer, e->answer, la + 1);
            if (tk->answer_escapes) unescape_lines(answer);
            la = strlen(answer);
        }
        if (lp + la + 3 > (size_t)cfg->max_text) {
            fprintf(stderr,
                    "error: %s/%s line %zu: prompt and answer are %zu bytes, at most %d fit\n", dir,
                    name, e->line, lp + la, cfg->max_text - 3);
            break;
        }
        if ((why = tk->check_answer(answer)) != NULL) {
            fprintf(stderr, "error: %s/%s line %zu: the answer \"%s\" %s\n", dir, name, e->line,
                    e->answer, why);
            break;
        }
        memcpy(d->prompt + (size_t)i * d->cap, e->prompt, lp + 1);
        d->group[i] = tk->group_of ? tk->group_of(answer) : 0;
        dataset_link(d, i);
    }
    user_data_free(&u);
    if (i < d->n) {
        dataset_free(d);
        return -1;
    }
    return 0;
}

/* ---- Evaluation ------------------------------------------------------------------------- */
typedef struct scores {
    double v[EX_MAX_METRICS];
} scores;

static void scores_finish(const task *tk, const double *sum, const double *weight, scores *out) {
    int k;
    for (k = 0; k < tk->n_metrics; k++) out->v[k] = weight[k] > 0 ? sum[k] / weight[k] : 0.0;
}

/* Greedy answers for every item of d; responses (may be NULL) gets them (n x d->cap). */
static perpo_status evaluate(perpo_model *m, const task *tk, const dataset *d, scores *out,
                             char *responses) {
    perpo_sample_config sc = perpo_sample_default();
    size_t B = (size_t)perpo_model_config(m)->max_batch, i, j, cap = d->cap;
    double sum[EX_MAX_METRICS] = { 0 }, weight[EX_MAX_METRICS] = { 0 };
    char *text = (char *)malloc(B * cap);
    size_t *lens = (size_t *)malloc(B * sizeof(size_t));
    const float **imgs = (const float **)malloc(B * sizeof(float *));
    const char **prompts = (const char **)malloc(B * sizeof(char *));
    perpo_status st = PERPO_OK;
    if (!text || !lens || !imgs || !prompts) st = PERPO_ERR_NOMEM;
    for (i = 0; st == PERPO_OK && i < (size_t)d->n; i += B) {
        size_t cnt = (size_t)d->n - i < B ? (size_t)d->n - i : B;
        perpo_gen_request req;
        for (j = 0; j < cnt; j++) {
            imgs[j] = d->examples[i + j].image;
            prompts[j] = d->examples[i + j].prompt;
        }
        req.n_seq = cnt;
        req.n_img = cnt;
        req.images = imgs;
        req.image_of = NULL;
        req.prompts = prompts;
        if ((st = perpo_generate(m, &req, &sc, text, cap, lens)) != PERPO_OK) break;
        for (j = 0; j < cnt; j++) {
            tk->score(text + j * cap, lens[j], ds_answer(d, (int)(i + j)), d->group[i + j], sum,
                      weight);
            if (responses) memcpy(responses + (i + j) * cap, text + j * cap, cap);
        }
    }
    if (st == PERPO_OK) scores_finish(tk, sum, weight, out);
    free(text);
    free(lens);
    free((void *)imgs);
    free((void *)prompts);
    return st;
}

/* Reward callback of perpo_pref_sample: the task reward against item's true answer. */
typedef struct reward_ctx {
    const task *tk;
    const dataset *d;
} reward_ctx;
static float task_reward(const char *response, size_t len, size_t item, void *user) {
    const reward_ctx *r = (const reward_ctx *)user;
    return r->tk->reward(response, len, ds_answer(r->d, (int)item));
}

/* Best-of-N with the oracle reward: each item's highest-reward sample, scored. */
static perpo_status best_of_n(perpo_model *m, const task *tk, const dataset *d, const options *o,
                              uint64_t seed, scores *out) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    reward_ctx rc;
    double sum[EX_MAX_METRICS] = { 0 }, weight[EX_MAX_METRICS] = { 0 };
    perpo_status st;
    size_t i;
    int k;
    sc.temperature = (float)o->temperature;
    sc.top_p = (float)o->top_p;
    sc.seed = seed;
    rc.tk = tk;
    rc.d = d;
    if ((st = perpo_pref_sample(m, d->examples, (size_t)d->n, o->n_samples, &sc, task_reward, &rc,
                                &set)) != PERPO_OK)
        return st;
    for (i = 0; i < set.n_lists; i++) {
        int best = 0;
        for (k = 1; k < o->n_samples; k++)
            if (set.lists[i].rewards[k] > set.lists[i].rewards[best]) best = k;
        tk->score(set.lists[i].responses[best], strlen(set.lists[i].responses[best]),
                  ds_answer(d, (int)i), d->group[i], sum, weight);
    }
    scores_finish(tk, sum, weight, out);
    perpo_pref_set_free(&set);
    return PERPO_OK;
}

/* ---- Diagnostics: what preference training changed, read on held-out items ------------------
 * Greedy accuracy alone cannot tell a model that learned to rank its answers from one that
 * moved every answer down. For each trained model, on `--diag` held-out items:
 *   sampled   the task metrics of DIAG_SAMPLES answers sampled at temperature 1 (no top-p);
 *   rho       per list, Spearman's rank correlation between the implicit reward
 *             s = log pi(y) - log pi_sft(y) of the list's answers and their task reward, averaged
 *             over lists (lists sampled once from the SFT model; ties share their mean rank;
 *             lists where s or the reward is constant are skipped, so SFT itself has none);
 *   shifts    the mean s of each list's best-reward (chosen) and worst-reward (rejected) answer,
 *             in nats, on those held-out lists and on the lists the model was trained on;
 *   truth     the mean log-prob of the true answer with the real image and with an all-zero
 *             one: the drop between them is how much the answer relies on the image. */
#define DIAG_SAMPLES 8
typedef struct diag_stats {
    int has; /* 0: not measured (Best-of-N, or --diag 0) */
    double sampled[EX_MAX_METRICS];
    double rho_heldout, rho_train;
    double chosen_heldout, rejected_heldout, chosen_train, rejected_train;
    double truth_real, truth_blank;
} diag_stats;

/* What every model's diagnostics are measured against, made once from the SFT model. */
typedef struct diag_ctx {
    const dataset *items; /* the held-out items (NULL: no diagnostics) */
    perpo_pref_set lists; /* DIAG_SAMPLES answers of the SFT model per item, ref_logp = SFT's */
    perpo_pref_list *truth_real, *truth_blank; /* one list per item: its true answer */
    float *blank, *logp; /* the all-zero image; room for the log-probs of every answer */
    const char **truth_resp;
    float *truth_reward;
    uint64_t seed;
} diag_ctx;

/* rho and the chosen/rejected shifts of `model` on lists whose ref_logp is the SFT model's;
   logp: room for the log-prob of every answer of the lists. */
static perpo_status list_shifts(perpo_model *model, const perpo_pref_list *lists, size_t n_lists,
                                float *logp, double *rho, double *chosen, double *rejected) {
    size_t i, n_rho = 0, n_shift = 0, off = 0;
    perpo_status st;
    perpo_pref_list *mine;
    *rho = *chosen = *rejected = 0.0;
    if (n_lists == 0) return PERPO_OK;
    if (!(mine = (perpo_pref_list *)malloc(n_lists * sizeof *mine))) return PERPO_ERR_NOMEM;
    for (i = 0; i < n_lists; i++) { /* the same lists, log-probs into logp */
        mine[i] = lists[i];
        mine[i].ref_logp = logp + off;
        off += (size_t)lists[i].n;
    }
    st = perpo_pref_reference(model, mine, n_lists);
    for (i = 0; st == PERPO_OK && i < n_lists; i++) {
        double sv[PERPO_MAX_LIST], rv[PERPO_MAX_LIST], r;
        int k, n = lists[i].n, best = 0, worst = 0, ok;
        for (k = 0; k < n; k++) {
            sv[k] = (double)mine[i].ref_logp[k] - lists[i].ref_logp[k];
            rv[k] = lists[i].rewards[k];
            if (rv[k] > rv[best]) best = k;
            if (rv[k] < rv[worst]) worst = k;
        }
        r = ex_spearman(sv, rv, n, &ok);
        if (ok) {
            *rho += r;
            n_rho++;
        }
        if (rv[best] > rv[worst]) {
            *chosen += sv[best];
            *rejected += sv[worst];
            n_shift++;
        }
    }
    free(mine);
    if (n_rho) *rho /= (double)n_rho;
    if (n_shift) {
        *chosen /= (double)n_shift;
        *rejected /= (double)n_shift;
    }
    return st;
}

static size_t lists_responses(const perpo_pref_list *lists, size_t n) {
    size_t i, total = 0;
    for (i = 0; i < n; i++) total += (size_t)lists[i].n;
    return total;
}

static void diag_free(diag_ctx *d) {
    perpo_pref_set_free(&d->lists);
    free(d->truth_real);
    free(d->truth_blank);
    free(d->blank);
    free(d->logp);
    free((void *)d->truth_resp);
    free(d->truth_reward);
    memset(d, 0, sizeof *d);
}

/* The sampled metrics of `model` on the items: DIAG_SAMPLES answers each at temperature 1. */
static perpo_status diag_sampled(perpo_model *model, const task *tk, const diag_ctx *d,
                                 const perpo_pref_set *given, double *out) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set own;
    const perpo_pref_set *set = given;
    double sum[EX_MAX_METRICS] = { 0 }, weight[EX_MAX_METRICS] = { 0 };
    reward_ctx rc;
    scores sco;
    perpo_status st;
    size_t i;
    int k;
    memset(&own, 0, sizeof own);
    if (!set) {
        sc.temperature = 1.0f;
        sc.seed = d->seed;
        rc.tk = tk;
        rc.d = d->items;
        if ((st = perpo_pref_sample(model, d->items->examples, (size_t)d->items->n, DIAG_SAMPLES,
                                    &sc, task_reward, &rc, &own)) != PERPO_OK)
            return st;
        set = &own;
    }
    for (i = 0; i < set->n_lists; i++)
        for (k = 0; k < set->lists[i].n; k++)
            tk->score(set->lists[i].responses[k], strlen(set->lists[i].responses[k]),
                      ds_answer(d->items, (int)i), d->items->group[i], sum, weight);
    scores_finish(tk, sum, weight, &sco);
    memcpy(out, sco.v, sizeof sco.v);
    perpo_pref_set_free(&own);
    return PERPO_OK;
}

/* The held-out lists (the SFT model's samples, with its log-probs) and the true answers. */
static perpo_status diag_init(diag_ctx *d, perpo_model *sft, const task *tk, const dataset *items,
                              uint64_t seed) {
    perpo_sample_config sc = perpo_sample_default();
    reward_ctx rc;
    perpo_status st;
    size_t i, n = (size_t)items->n;
    memset(d, 0, sizeof *d);
    d->items = items;
    d->seed = seed;
    sc.temperature = 1.0f;
    sc.seed = seed;
    rc.tk = tk;
    rc.d = items;
    if ((st = perpo_pref_sample(sft, items->examples, n, DIAG_SAMPLES, &sc, task_reward, &rc,
                                &d->lists)) != PERPO_OK ||
        (st = perpo_pref_reference(sft, d->lists.lists, d->lists.n_lists)) != PERPO_OK)
        return st;
    d->truth_real = (perpo_pref_list *)calloc(n, sizeof *d->truth_real);
    d->truth_blank = (perpo_pref_list *)calloc(n, sizeof *d->truth_blank);
    d->blank = (float *)calloc(items->image_floats, sizeof(float));
    d->truth_resp = (const char **)calloc(n, sizeof(char *));
    d->truth_reward = (float *)calloc(n, sizeof(float));
    d->logp = (float *)malloc(n * DIAG_SAMPLES * sizeof(float)); /* the truths use n of them */
    if (!d->truth_real || !d->truth_blank || !d->blank || !d->truth_resp || !d->truth_reward ||
        !d->logp)
        return PERPO_ERR_NOMEM;
    for (i = 0; i < n; i++) {
        perpo_pref_list *r = &d->truth_real[i];
        d->truth_resp[i] = ds_answer(items, (int)i);
        r->image = items->examples[i].image;
        r->prompt = items->examples[i].prompt;
        r->n = 1;
        r->responses = d->truth_resp + i;
        r->rewards = d->truth_reward + i;
        d->truth_blank[i] = *r; /* ref_logp: set where they are scored */
        d->truth_blank[i].image = d->blank;
    }
    return PERPO_OK;
}

/* The mean log-prob of the true answers under model (real images, then blank ones). */
static perpo_status diag_truth(perpo_model *model, const diag_ctx *d, double *real, double *blank) {
    size_t i, n = (size_t)d->items->n;
    int b;
    perpo_status st = PERPO_OK;
    for (b = 0; b < 2 && st == PERPO_OK; b++) {
        perpo_pref_list *mine = (perpo_pref_list *)malloc(n * sizeof *mine);
        double sum = 0.0;
        if (!mine) return PERPO_ERR_NOMEM;
        for (i = 0; i < n; i++) {
            mine[i] = (b ? d->truth_blank : d->truth_real)[i];
            mine[i].ref_logp = d->logp + i;
        }
        st = perpo_pref_reference(model, mine, n);
        for (i = 0; i < n; i++) sum += d->logp[i];
        *(b ? blank : real) = sum / (double)n;
        free(mine);
    }
    return st;
}

/* Every diagnostic of `model` (is_sft: the SFT model itself, whose samples are the lists). */
static perpo_status diagnose(perpo_model *model, int is_sft, const task *tk, const diag_ctx *d,
                             const perpo_pref_list *train, size_t n_train, diag_stats *out) {
    perpo_status st;
    float *scratch;
    memset(out, 0, sizeof *out);
    if (!d->items) return PERPO_OK;
    if ((st = diag_sampled(model, tk, d, is_sft ? &d->lists : NULL, out->sampled)) != PERPO_OK ||
        (st = list_shifts(model, d->lists.lists, d->lists.n_lists, d->logp, &out->rho_heldout,
                          &out->chosen_heldout, &out->rejected_heldout)) != PERPO_OK ||
        (st = diag_truth(model, d, &out->truth_real, &out->truth_blank)) != PERPO_OK)
        return st;
    if (n_train) {
        if (!(scratch = (float *)malloc(lists_responses(train, n_train) * sizeof(float))))
            return PERPO_ERR_NOMEM;
        st = list_shifts(model, train, n_train, scratch, &out->rho_train, &out->chosen_train,
                         &out->rejected_train);
        free(scratch);
        if (st != PERPO_OK) return st;
    }
    out->has = 1;
    return PERPO_OK;
}

/* ---- The preference stage --------------------------------------------------------------- */
typedef struct method_result {
    char name[48];
    scores s;
    diag_stats diag;
    double train_s;
    curve loss_curve;
} method_result;

typedef struct run_result {
    method_result m[EX_MAX_METHODS]; /* SFT, control, the objectives, Best-of-N */
    int n_methods, perpo_index;      /* perpo_index: -1 without a PerPO run */
    size_t lists_sampled, lists_kept;
    double mean_list_reward, total_s;
    char *sft_text, *perpo_text; /* greedy answers on the test set */
} run_result;

/* Which item of prefs a sampled list belongs to (its image is that item's). */
static size_t list_item(const dataset *prefs, const perpo_pref_list *l) {
    return (size_t)(l->image - prefs->images) / prefs->image_floats;
}

/* Lists sampled from `policy` for items [first, first+n) of prefs, scored, filtered by the
   margin, with reference log-probs from the frozen `ref` model. */
static perpo_status sample_lists(perpo_model *policy, perpo_model *ref, const task *tk,
                                 const dataset *prefs, size_t first, size_t n, const options *o,
                                 uint64_t seed, perpo_pref_set *set, size_t *kept,
                                 double *mean_reward) {
    perpo_sample_config sc = perpo_sample_default();
    reward_ctx rc;
    dataset view = *prefs; /* the same storage, shifted to the first item */
    perpo_status st;
    size_t i;
    int k;
    view.n = (int)n;
    view.examples = prefs->examples + first;
    view.answer = prefs->answer + first * prefs->cap;
    view.group = prefs->group + first;
    rc.tk = tk;
    rc.d = &view;
    sc.temperature = (float)o->temperature;
    sc.top_p = (float)o->top_p;
    sc.seed = seed;
    if ((st = perpo_pref_sample(policy, view.examples, n, o->n_samples, &sc, task_reward, &rc,
                                set)) != PERPO_OK)
        return st;
    *mean_reward = 0.0;
    for (i = 0; i < set->n_lists; i++)
        for (k = 0; k < o->n_samples; k++)
            *mean_reward += set->lists[i].rewards[k] / ((double)set->n_lists * o->n_samples);
    *kept = perpo_pref_filter(set->lists, set->n_lists, (float)o->margin);
    for (i = 0; i < *kept; i++)
        set->lists[i].truth = prefs->examples[list_item(prefs, &set->lists[i])].response;
    if (*kept == 0) return PERPO_OK;
    return perpo_pref_reference(ref, set->lists, *kept);
}

/* DPO reads only the best and the worst response of a list: two-response lists of those, so
   a DPO step forwards 2 sequences per list instead of N (the loss is the same). */
typedef struct pair_lists {
    perpo_pref_list *lists;
    const char **resp;
    float *reward, *ref;
} pair_lists;
static void pair_lists_free(pair_lists *p) {
    free(p->lists);
    free((void *)p->resp);
    free(p->reward);
    free(p->ref);
    memset(p, 0, sizeof *p);
}
static int pair_lists_make(pair_lists *p, const perpo_pref_list *l, size_t n) {
    size_t i;
    p->lists = (perpo_pref_list *)calloc(n, sizeof *p->lists);
    p->resp = (const char **)calloc(2 * n, sizeof(char *));
    p->reward = (float *)calloc(2 * n, sizeof(float));
    p->ref = (float *)calloc(2 * n, sizeof(float));
    if (!p->lists || !p->resp || !p->reward || !p->ref) {
        pair_lists_free(p);
        return -1;
    }
    for (i = 0; i < n; i++) {
        int k, best = 0, worst = 0, pick[2];
        for (k = 1; k < l[i].n; k++) {
            if (l[i].rewards[k] > l[i].rewards[best]) best = k;
            if (l[i].rewards[k] < l[i].rewards[worst]) worst = k;
        }
        pick[0] = best;
        pick[1] = worst;
        for (k = 0; k < 2; k++) {
            p->resp[2 * i + k] = l[i].responses[pick[k]];
            p->reward[2 * i + k] = l[i].rewards[pick[k]];
            p->ref[2 * i + k] = l[i].ref_logp[pick[k]];
        }
        p->lists[i] = l[i];
        p->lists[i].n = 2;
        p->lists[i].responses = p->resp + 2 * i;
        p->lists[i].rewards = p->reward + 2 * i;
        p->lists[i].ref_logp = p->ref + 2 * i;
    }
    return 0;
}

/* Progress of one round of a longer schedule: reports every 10 steps, stops at `until`. */
typedef struct round_log {
    run_log *log;
    int until;
} round_log;
static int round_progress(const perpo_progress *p, void *user) {
    round_log *r = (round_log *)user;
    if (p->step % 10 == 0 || p->step == p->total_steps) on_progress(p, r->log);
    return p->step >= r->until;
}

/* One objective from the SFT weights: `rounds` rounds of lists (round 0's are `first`,
   sampled from the SFT model; later ones from the current policy on the next prompts), each
   trained for its share of the steps of one cosine schedule. */
static perpo_status train_objective(perpo_model *pol, perpo_model *sft, const task *tk,
                                    const dataset *prefs, const options *o, int seed, int k,
                                    const perpo_pref_set *first, size_t first_kept, run_log *log) {
    perpo_pref_config pc = pref_config(o, ex_objective_kinds[k], seed);
    perpo_status st = PERPO_OK;
    int r;
    pc.log_every = 1;
    if ((st = perpo_model_copy_params(pol, sft)) != PERPO_OK) return st;
    for (r = 0; r < o->rounds && st == PERPO_OK; r++) {
        perpo_pref_set set;
        const perpo_pref_list *lists = first->lists;
        size_t kept = first_kept, per = (size_t)prefs->n / (size_t)o->rounds;
        double mean;
        pair_lists pairs;
        round_log rl;
        memset(&set, 0, sizeof set);
        memset(&pairs, 0, sizeof pairs);
        if (r > 0) { /* iterative: lists sampled again from the current policy */
            st = sample_lists(pol, sft, tk, prefs, (size_t)r * per, per, o,
                              (uint64_t)seed * 1000003u + 17u + 7919u * (uint64_t)r, &set, &kept,
                              &mean);
            lists = set.lists;
        }
        if (st == PERPO_OK && kept == 0) {
            fprintf(stderr, "warning: round %d: no list has a reward margin >= %.2f\n", r + 1,
                    o->margin);
        } else if (st == PERPO_OK) {
            if (ex_objective_kinds[k] == PERPO_OBJ_DPO) {
                if (pair_lists_make(&pairs, lists, kept) != 0)
                    st = PERPO_ERR_NOMEM;
                else
                    lists = pairs.lists;
            }
            pc.resume = r > 0;
            rl.log = log;
            rl.until = (int)((long long)o->pref_steps * (r + 1) / o->rounds);
            if (st == PERPO_OK) st = perpo_pref_train(pol, lists, kept, &pc, round_progress, &rl);
        }
        pair_lists_free(&pairs);
        perpo_pref_set_free(&set);
    }
    return st;
}

/* The control: SFT continued on the true answers of the same prompts, with the preference
   runs' steps, examples per step (one per list) and schedule. */
static perpo_status train_control(perpo_model *pol, perpo_model *sft, const dataset *prefs,
                                  const perpo_pref_list *lists, size_t kept, const options *o,
                                  int seed, run_log *log) {
    perpo_pref_config pc = pref_config(o, PERPO_OBJ_PERPO, seed);
    perpo_sft_config tc = perpo_sft_default();
    perpo_example *ex;
    perpo_status st;
    size_t i, n = o->rounds > 1 ? (size_t)prefs->n : kept;
    if ((st = perpo_model_copy_params(pol, sft)) != PERPO_OK) return st;
    if (!(ex = (perpo_example *)calloc(n, sizeof *ex))) return PERPO_ERR_NOMEM;
    for (i = 0; i < n; i++)
        ex[i] = prefs->examples[o->rounds > 1 ? i : list_item(prefs, &lists[i])];
    tc.optim = pc.optim;
    tc.batch_size = o->lists_per_step;
    tc.accum_steps = o->accum;
    tc.seed = (uint64_t)seed;
    tc.log_every = 10;
    st = perpo_sft_train(pol, ex, n, &tc, on_progress, log);
    free(ex);
    return st;
}

/* One preference stage from `sft`: round-0 lists, the control, every wanted objective. Fills
   r->m from index first_method on (SFT and Best-of-N are the caller's). */
static int run_preference(const task *tk, const options *o, int seed, perpo_model *sft,
                          const dataset *test, const dataset *prefs, const diag_ctx *dg,
                          run_result *r, int first_method) {
    perpo_model *pol = NULL;
    perpo_pref_set set;
    perpo_status st;
    run_log log;
    size_t kept = 0, per = (size_t)prefs->n / (size_t)o->rounds;
    double t0 = wall_seconds(), t;
    int k, ret = 1;
    method_result *mr;
    memset(&set, 0, sizeof set);
    r->n_methods = first_method;
    r->perpo_index = -1;
    t = wall_seconds();
    if ((st = sample_lists(sft, sft, tk, prefs, 0, per, o, (uint64_t)seed * 1000003u + 17u, &set,
                           &kept, &r->mean_list_reward)) != PERPO_OK) {
        fail("sampling", st);
        goto done;
    }
    r->lists_sampled = set.n_lists;
    r->lists_kept = kept;
    if (o->verbose)
        fprintf(stderr,
                "[lists] %zu prompts x %d samples, mean reward %.3f, %zu lists with margin >= %.2f "
                "(%.0fs)\n",
                set.n_lists, o->n_samples, r->mean_list_reward, kept, o->margin,
                wall_seconds() - t);
    if (kept == 0) {
        fprintf(stderr, "error: no list has a reward margin >= %.2f; lower --margin\n", o->margin);
        goto done;
    }
    if ((st = perpo_model_create(&pol, perpo_model_config(sft), (uint64_t)seed)) != PERPO_OK) {
        fail("model", st);
        goto done;
    }
    for (k = -1; k < EX_MAX_OBJECTIVES; k++) { /* -1: the control */
        if (k >= 0 && !objective_wanted(o->objective, ex_objective_kinds[k])) continue;
        mr = &r->m[r->n_methods];
        snprintf(mr->name, sizeof mr->name, "%s",
                 k < 0 ? "control (SFT continued)" : perpo_objective_name(ex_objective_kinds[k]));
        run_log_start(&log, k < 0 ? "control" : perpo_objective_name(ex_objective_kinds[k]),
                      o->verbose, &mr->loss_curve);
        t = log.t0;
        st = k < 0 ? train_control(pol, sft, prefs, set.lists, kept, o, seed, &log)
                   : train_objective(pol, sft, tk, prefs, o, seed, k, &set, kept, &log);
        if (st != PERPO_OK) {
            fail(mr->name, st);
            goto done;
        }
        mr->train_s = wall_seconds() - t;
        if (k >= 0 && ex_objective_kinds[k] == PERPO_OBJ_PERPO) r->perpo_index = r->n_methods;
        if ((st = evaluate(pol, tk, test, &mr->s,
                           r->perpo_index == r->n_methods ? r->perpo_text : NULL)) != PERPO_OK) {
            fail("evaluation", st);
            goto done;
        }
        if ((st = diagnose(pol, 0, tk, dg, set.lists, kept, &mr->diag)) != PERPO_OK) {
            fail("diagnostics", st);
            goto done;
        }
        if (o->verbose) {
            fprintf(stderr, "[%s] test %s %.4g (%.0fs of training)\n", log.label,
                    tk->metric_key[tk->main_metric], mr->s.v[tk->main_metric], mr->train_s);
            if (mr->diag.has)
                fprintf(stderr,
                        "[%s] held-out: sampled %s %.4g, rho %+.3f, chosen %+.2f rejected %+.2f "
                        "nats; training lists: chosen %+.2f rejected %+.2f\n",
                        log.label, tk->metric_key[tk->main_metric],
                        mr->diag.sampled[tk->main_metric], mr->diag.rho_heldout,
                        mr->diag.chosen_heldout, mr->diag.rejected_heldout, mr->diag.chosen_train,
                        mr->diag.rejected_train);
        }
        r->n_methods++;
    }
    ret = 0;
done:
    r->total_s = wall_seconds() - t0;
    perpo_pref_set_free(&set);
    perpo_model_free(pol);
    return ret;
}

/* ---- Reporting ---------------------------------------------------------------------------- */
static int table_width(const task *tk, int k, int seeds) {
    int w = (int)strlen(tk->metric_head[k]), cell = seeds > 1 ? 13 : 7;
    return w > cell ? w : cell;
}
/* One cell: mean (± sd over the seeds) of the diagnostic at `offset` in diag_stats, with
   `digits` decimals, signed or not. */
static void diag_cell(const run_result *runs, int n, int i, size_t offset, int digits, int sign,
                      char *cell, size_t cap) {
    double v[100], mean, sd;
    int s;
    for (s = 0; s < n; s++) v[s] = *(const double *)((const char *)&runs[s].m[i].diag + offset);
    mean_std(v, n, &mean, &sd);
    if (n > 1)
        snprintf(cell, cap, sign ? "%+.*f ± %.*f" : "%.*f ± %.*f", digits, mean, digits, sd);
    else
        snprintf(cell, cap, sign ? "%+.*f" : "%.*f", digits, mean);
}

/* The diagnostics table (see "Diagnostics"): one row per trained model. */
static void print_diagnostics(const task *tk, const options *o, const run_result *runs) {
    static const struct {
        const char *head;
        size_t offset;
        int digits, sign;
    } col[] = {
        { "rho held-out", offsetof(diag_stats, rho_heldout), 3, 1 },
        { "chosen held-out", offsetof(diag_stats, chosen_heldout), 2, 1 },
        { "rejected held-out", offsetof(diag_stats, rejected_heldout), 2, 1 },
        { "chosen train", offsetof(diag_stats, chosen_train), 2, 1 },
        { "rejected train", offsetof(diag_stats, rejected_train), 2, 1 },
        { "log p(truth)", offsetof(diag_stats, truth_real), 2, 0 },
        { "blank image", offsetof(diag_stats, truth_blank), 2, 0 },
    };
    const int n = o->seeds, mm = tk->main_metric, w = 17;
    char cell[64], head[64];
    int i, c, k;
    if (!runs[0].m[0].diag.has) return;
    printf(
        "\nDiagnostics on %d held-out items, %d answers each sampled at temperature 1:\n"
        "  sampled: their %s; rho: rank correlation, within a list of the SFT model's\n"
        "  answers, of s = log pi - log pi_sft with the reward; chosen/rejected: mean s of each\n"
        "  list's best/worst answer (nats); log p of the true answer, real and blank image\n\n",
        o->n_diag, DIAG_SAMPLES, tk->metric_key[mm]);
    snprintf(head, sizeof head, "sampled %s", tk->metric_head[mm] ? tk->metric_head[mm] : "");
    printf("| %-24s | %-*s |", "method", w, head);
    for (c = 0; c < (int)(sizeof col / sizeof col[0]); c++) printf(" %-*s |", w, col[c].head);
    printf("\n|--------------------------|");
    for (c = 0; c <= (int)(sizeof col / sizeof col[0]); c++) {
        for (k = 0; k < w + 2; k++) putchar('-');
        putchar('|');
    }
    printf("\n");
    for (i = 0; i < runs[0].n_methods; i++) {
        double v[100], mean, sd;
        int s;
        if (!runs[0].m[i].diag.has) continue;
        printf("| %-24s |", runs[0].m[i].name);
        for (s = 0; s < n; s++) v[s] = runs[s].m[i].diag.sampled[mm] * tk->metric_scale[mm];
        mean_std(v, n, &mean, &sd);
        if (n > 1)
            snprintf(cell, sizeof cell, tk->metric_scale[mm] == 100 ? "%.1f ± %.1f" : "%.3f ± %.3f",
                     mean, sd);
        else
            snprintf(cell, sizeof cell, tk->metric_scale[mm] == 100 ? "%.1f" : "%.3f", mean);
        printf(" %-*s |", w + (n > 1 ? 1 : 0), cell);
        for (c = 0; c < (int)(sizeof col / sizeof col[0]); c++) {
            diag_cell(runs, n, i, col[c].offset, col[c].digits, col[c].sign, cell, sizeof cell);
            printf(" %-*s |", w + (n > 1 ? 1 : 0), cell);
        }
        printf("\n");
    }
}

static void print_table(const task *tk, const options *o, const run_result *runs) {
    int i, k, s, n = o->seeds;
    char cell[64];
    printf("\n%s: %d held-out examples (test seed %d%s), N = %d, %d preference seed%s\n\n",
           tk->title, o->n_test, o->test_seed, o->test_shift ? ", shifted" : "", o->n_samples, n,
           n > 1 ? "s (mean ± sd)" : "");
    printf("| %-24s |", "method");
    for (k = 0; k < tk->n_metrics; k++)
        if (tk->metric_head[k]) printf(" %-*s |", table_width(tk, k, n), tk->metric_head[k]);
    printf("\n|--------------------------|");
    for (k = 0; k < tk->n_metrics; k++)
        if (tk->metric_head[k]) {
            int w;
            for (w = 0; w < table_width(tk, k, n) + 2; w++) putchar('-');
            putchar('|');
        }
    printf("\n");
    for (i = 0; i < runs[0].n_methods; i++) {
        printf("| %-24s |", runs[0].m[i].name);
        for (k = 0; k < tk->n_metrics; k++) {
            double v[100], mean, sd;
            if (!tk->metric_head[k]) continue;
            for (s = 0; s < n; s++) v[s] = runs[s].m[i].s.v[k] * tk->metric_scale[k];
            mean_std(v, n, &mean, &sd);
            if (n > 1)
                snprintf(cell, sizeof cell,
                         tk->metric_scale[k] == 100 ? "%.1f ± %.1f" : "%.3f ± %.3f", mean, sd);
            else
                snprintf(cell, sizeof cell, tk->metric_scale[k] == 100 ? "%.1f" : "%.3f", mean);
            printf(" %-*s |", table_width(tk, k, n) + (n > 1 ? 1 : 0), cell); /* ± is 2 bytes */
        }
        printf("\n");
    }
    /* paired differences over the seeds: PerPO against each other row */
    if (runs[0].perpo_index >= 0) {
        int p = runs[0].perpo_index, mm = tk->main_metric;
        printf("\nPerPO minus each method, %s, paired over the seeds:",
               tk->metric_head[mm] ? tk->metric_head[mm] : tk->metric_key[mm]);
        for (i = 0; i < runs[0].n_methods - 1; i++) { /* the last row is Best-of-N */
            double v[100], mean, sd;
            if (i == p) continue;
            for (s = 0; s < n; s++)
                v[s] = (runs[s].m[p].s.v[mm] - runs[s].m[i].s.v[mm]) * tk->metric_scale[mm];
            mean_std(v, n, &mean, &sd);
            printf("%s %s %+.2f", i ? "," : "", runs[0].m[i].name, mean);
            if (n > 1) printf(" ± %.2f", sd);
        }
        printf("\n");
    }
    printf("lists: %zu sampled, %zu kept (margin >= %.2f); preference stage: %.0fs for the first "
           "seed\n",
           runs[0].lists_sampled, runs[0].lists_kept, o->margin, runs[0].total_s);
    print_diagnostics(tk, o, runs);
}

static int write_results(const task *tk, const options *o, const run_result *runs) {
    char path[1024];
    FILE *f;
    ex_json j;
    int s, i, k;
    if (!(f = results_begin(&j, o, tk->name, path, sizeof path))) return -1;
    for (s = 0; s < o->seeds; s++) {
        results_run_begin(&j, o->seed + s, runs[s].lists_sampled, runs[s].lists_kept,
                          runs[s].mean_list_reward, runs[s].total_s);
        for (i = 0; i < runs[s].n_methods; i++) {
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "method", runs[s].m[i].name);
            for (k = 0; k < tk->n_metrics; k++)
                ex_json_kv_number(&j, tk->metric_key[k], runs[s].m[i].s.v[k]);
            ex_json_kv_number(&j, "train_seconds", runs[s].m[i].train_s);
            if (runs[s].m[i].diag.has) {
                const diag_stats *d = &runs[s].m[i].diag;
                ex_json_key(&j, "diagnostics");
                ex_json_object_begin(&j);
                ex_json_key(&j, "sampled");
                ex_json_object_begin(&j);
                for (k = 0; k < tk->n_metrics; k++)
                    ex_json_kv_number(&j, tk->metric_key[k], d->sampled[k]);
                ex_json_object_end(&j);
                ex_json_kv_number(&j, "rho_heldout", d->rho_heldout);
                ex_json_kv_number(&j, "rho_train", d->rho_train);
                ex_json_kv_number(&j, "chosen_shift_heldout", d->chosen_heldout);
                ex_json_kv_number(&j, "rejected_shift_heldout", d->rejected_heldout);
                ex_json_kv_number(&j, "chosen_shift_train", d->chosen_train);
                ex_json_kv_number(&j, "rejected_shift_train", d->rejected_train);
                ex_json_kv_number(&j, "truth_logp", d->truth_real);
                ex_json_kv_number(&j, "truth_logp_blank_image", d->truth_blank);
                ex_json_object_end(&j);
            }
            ex_json_object_end(&j);
        }
        results_run_end(&j);
    }
    return results_end(&j, f, path);
}

/* The pretraining loss curve from CKPT.json ("loss_curve": [[step, loss], ...]), for the
   curves' first panel; empty when there is none. */
static void read_pretrain_curve(const char *ckpt, curve *c) {
    char path[1024], *buf, *p;
    FILE *f;
    long n;
    c->n = 0;
    snprintf(path, sizeof path, "%s.json", ckpt);
    if (!(f = fopen(path, "rb"))) return;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = n > 0 ? (char *)malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        p = strstr(buf, "\"loss_curve\"");
        while (p && c->n < CURVE_MAX && (p = strchr(p + 1, '[')) != NULL) {
            float step, loss;
            if (sscanf(p, "[%f, %f]", &step, &loss) == 2) {
                c->step[c->n] = step;
                c->loss[c->n] = loss;
                c->n++;
            }
        }
    }
    free(buf);
    fclose(f);
}

/* ---- Pretraining: SFT from scratch on fresh examples, resumable, with a JSON record ------- *
 * What `make pretrain` runs. Every step draws new examples: example g of the run is example g
 * of the training split, so a resumed run sees exactly the data of an uninterrupted one. The
 * run saves CKPT.partial (with the optimizer state) every --save-every steps and continues
 * from it when started again; at the end it writes CKPT (parameters only), evaluates greedy
 * answers on a validation split and writes CKPT.json: how the model was made and what it
 * scores, with the loss curve (kept meanwhile in CKPT.curve, one "step loss seconds" line per
 * report, so that a resumed run's record still starts at step 1). */
#ifndef EX_COMMIT
#define EX_COMMIT "unknown" /* the Makefile passes the git commit */
#endif
#ifndef EX_BUILD_FLAGS
#define EX_BUILD_FLAGS "unknown" /* and the compiler flags */
#endif
#if defined(__clang__)
#define EX_COMPILER "clang " __VERSION__
#elif defined(__GNUC__)
#define EX_COMPILER "gcc " __VERSION__
#else
#define EX_COMPILER "unknown"
#endif

/* Seed bases of the splits: training examples of a seed, and a validation split that no
   training run and no test set draws from. */
static uint64_t split_train_base(int seed) { return ex_hash64((uint64_t)seed, 0x7072657472ull); }
static uint64_t split_val_base(int val_seed) {
    return ex_hash64((uint64_t)val_seed, 0x76616c6964ull);
}

#define EX_REGRESSION_N 200 /* validation examples the checkpoint's regression test scores */

typedef struct pretrain_stream {
    const task *def;
    uint64_t base;
    size_t image_floats;
    float *images; /* one image per batch slot */
    char *text;    /* prompt and answer per batch slot, text_cap bytes each */
    size_t
        scenes;   /* > 0: a fixed set of examples 0 .. scenes-1, one shuffled epoch after another */
    size_t *perm; /* the order of epoch perm_epoch (scenes entries) */
    size_t perm_epoch;
} pretrain_stream;

/* The order of the fixed set's examples in epoch e: a Fisher-Yates shuffle seeded by (base, e),
   so the example at any stream index is a pure function of the index (resume sees the same). */
static void epoch_order(pretrain_stream *s, size_t e) {
    size_t i;
    uint64_t key = ex_hash64(s->base, 0x65706f6368ull + (uint64_t)e);
    for (i = 0; i < s->scenes; i++) s->perm[i] = i;
    for (i = s->scenes - 1; i > 0; i--) {
        size_t j = (size_t)(ex_hash64(key, (uint64_t)i) % (uint64_t)(i + 1)), t = s->perm[i];
        s->perm[i] = s->perm[j];
        s->perm[j] = t;
    }
    s->perm_epoch = e;
}

static perpo_status pretrain_next(size_t index, size_t slot, perpo_example *out, void *user) {
    pretrain_stream *s = (pretrain_stream *)user;
    float *img = s->images + slot * s->image_floats;
    char *prompt = s->text + slot * 2 * s->def->text_cap, *answer = prompt + s->def->text_cap;
    int group;
    if (s->scenes) { /* the fixed set: epoch index / scenes, position index % scenes */
        if (index / s->scenes != s->perm_epoch) epoch_order(s, index / s->scenes);
        index = s->perm[index % s->scenes];
    }
    if (s->def->make(s->base, (uint64_t)index, img, prompt, answer, &group) != 0)
        return PERPO_ERR_ARG;
    out->image = img;
    out->prompt = prompt;
    out->response = answer;
    return PERPO_OK;
}

typedef struct pretrain_log {
    run_log log;
    perpo_model *model;
    char partial[1024], curve_path[1024];
    int save_every, saved_at; /* saved_at: the step of the last .partial (or of the resume) */
    int until;                /* stop at this step (the next validation, or the end) */
    double seconds_before;    /* training time of the runs this one resumed */
    perpo_status save_status;
} pretrain_log;

static int pretrain_progress(const perpo_progress *p, void *user) {
    pretrain_log *l = (pretrain_log *)user;
    FILE *f = fopen(l->curve_path, "a");
    on_progress(p, &l->log);
    if (f) {
        fprintf(f, "%d %.6g %.1f\n", p->step, (double)p->loss,
                l->seconds_before + wall_seconds() - l->log.t0);
        fclose(f);
    }
    /* reports come every 50 steps: save at the first one past each multiple of save_every */
    if (p->step / l->save_every > l->saved_at / l->save_every && p->step < p->total_steps) {
        l->saved_at = p->step;
        l->save_status = perpo_checkpoint_save(l->model, l->partial, PERPO_CKPT_OPTIMIZER);
        if (l->save_status != PERPO_OK) return 1; /* stop: reported by the caller */
    }
    return p->step >= l->until;
}

/* Early stopping's record, CKPT.early: one "step metric" line per validation. Keeps the lines
   up to step `upto` (a resumed run redoes the later steps); returns how many there are, with
   the best one's index in *best (-1: none). */
#define EX_MAX_VALIDATIONS 4096
static int early_load(const char *path, int upto, int higher_is_better, int *steps, double *vals,
                      int *best) {
    FILE *f = fopen(path, "r");
    int n = 0, i, step;
    double v;
    *best = -1;
    if (f) {
        while (n < EX_MAX_VALIDATIONS && fscanf(f, "%d %lf", &step, &v) == 2)
            if (step <= upto) {
                steps[n] = step;
                vals[n++] = v;
            }
        fclose(f);
    }
    if ((f = fopen(path, "w")) != NULL) {
        for (i = 0; i < n; i++) fprintf(f, "%d %.6g\n", steps[i], vals[i]);
        fclose(f);
    }
    for (i = 0; i < n; i++)
        if (*best < 0 || (higher_is_better ? vals[i] > vals[*best] : vals[i] < vals[*best]))
            *best = i;
    return n;
}

/* Keeps the curve lines up to step `upto` (a resumed run redoes the steps after it) in the
   file and in c; returns the training seconds recorded at `upto`. */
static double pretrain_curve_load(const char *path, int upto, curve *c, float *seconds) {
    FILE *f = fopen(path, "r");
    int step;
    float loss, secs;
    double last = 0.0;
    c->n = 0;
    if (f) {
        while (c->n < CURVE_MAX && fscanf(f, "%d %f %f", &step, &loss, &secs) == 3)
            if (step <= upto) {
                c->step[c->n] = (float)step;
                c->loss[c->n] = loss;
                seconds[c->n] = secs;
                last = secs;
                c->n++;
            }
        fclose(f);
    }
    if ((f = fopen(path, "w")) != NULL) {
        int i;
        for (i = 0; i < c->n; i++)
            fprintf(f, "%d %.6g %.1f\n", (int)c->step[i], (double)c->loss[i], (double)seconds[i]);
        fclose(f);
    }
    return last;
}

static const char *instruction_set(void) {
#if defined(__AVX512F__)
    return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2+FMA";
#else
    return "portable C";
#endif
}

static int pretrain(const task *task, const options *o, int argc, char **argv) {
    perpo_model *m = NULL;
    perpo_sft_config tc = perpo_sft_default();
    pretrain_stream stream;
    pretrain_log pl;
    curve *full = (curve *)calloc(1, sizeof *full);
    float *seconds = (float *)calloc(CURVE_MAX, sizeof(float));
    char json_path[1024], line[256], early_path[1024], best_path[1024];
    const char *ckpt = o->sft_ckpt;
    perpo_status st;
    FILE *f;
    ex_json j;
    dataset val; /* early stopping's validation items */
    int *e_steps = (int *)calloc(EX_MAX_VALIDATIONS, sizeof(int));
    double *e_vals = (double *)calloc(EX_MAX_VALIDATIONS, sizeof(double));
    double t_train, t_val;
    int start = 0, i, rc = 1, n_early = 0, best = -1, last = 0, stop_early = 0;
    memset(&stream, 0, sizeof stream);
    memset(&pl, 0, sizeof pl);
    memset(&val, 0, sizeof val);
    if (!full || !seconds || !e_steps || !e_vals) {
        free(full);
        free(seconds);
        free(e_steps);
        free(e_vals);
        return fail("pretraining buffers", PERPO_ERR_NOMEM);
    }
    if (o->val_every % 50 != 0) { /* progress reports, where a segment can stop, come every 50 */
        fprintf(stderr, "error: --val-every must be a multiple of 50, got %d\n", o->val_every);
        free(full);
        free(seconds);
        free(e_steps);
        free(e_vals);
        return 1;
    }
    snprintf(early_path, sizeof early_path, "%s.early", ckpt);
    snprintf(best_path, sizeof best_path, "%s.best", ckpt);
    snprintf(pl.partial, sizeof pl.partial, "%s.partial", ckpt);
    snprintf(pl.curve_path, sizeof pl.curve_path, "%s.curve", ckpt);
    snprintf(json_path, sizeof json_path, "%s.json", ckpt);
    if (perpo_model_load(&m, pl.partial, NULL) == PERPO_OK) {
        start = perpo_optim_step_count(m);
        if (o->verbose) fprintf(stderr, "[pretrain] resuming %s at step %d\n", pl.partial, start);
    } else if ((st = perpo_model_create(&m, &task->cfg, (uint64_t)o->seed)) != PERPO_OK) {
        free(full);
        free(seconds);
        return fail("model", st);
    }
    pl.seconds_before = pretrain_curve_load(pl.curve_path, start, full, seconds);
    tc.batch_size = o->batch;
    tc.seed = (uint64_t)o->seed;
    tc.log_every = 50;
    tc.resume = start > 0;
    tc.optim.lr = (float)o->sft_lr;
    tc.optim.min_lr = (float)o->sft_lr * 0.05f;
    tc.optim.warmup_steps = o->sft_warmup < o->sft_steps ? o->sft_warmup : o->sft_steps / 10;
    tc.optim.total_steps = o->sft_steps;
    stream.def = task;
    stream.base = split_train_base(o->seed);
    stream.image_floats =
        (size_t)task->cfg.image_h * (size_t)task->cfg.image_w * (size_t)task->cfg.channels;
    stream.images = (float *)malloc((size_t)o->batch * stream.image_floats * sizeof(float));
    stream.text = (char *)calloc((size_t)o->batch * 2, task->text_cap);
    stream.scenes = (size_t)o->scenes;
    stream.perm_epoch = (size_t)-1;
    if (o->scenes && !(stream.perm = (size_t *)malloc((size_t)o->scenes * sizeof(size_t)))) {
        fail("pretraining buffers", PERPO_ERR_NOMEM);
        goto done;
    }
    if (!stream.images || !stream.text) {
        fail("pretraining buffers", PERPO_ERR_NOMEM);
        goto done;
    }
    if (o->val_every && dataset_make(&val, task, perpo_model_config(m), split_val_base(o->val_seed),
                                     0, o->n_val) != 0) {
        fail("validation items", PERPO_ERR_NOMEM);
        goto done;
    }
    run_log_start(&pl.log, "pretrain", o->verbose, NULL);
    pl.model = m;
    pl.save_every = o->save_every;
    pl.saved_at = start;
    pl.save_status = PERPO_OK;
    if (o->verbose)
        fprintf(stderr,
                "[pretrain] %s: %d steps of %d %s examples, lr %.2g (warmup %d, cosine to "
                "%.2g), saving %s every %d steps\n",
                task->name, o->sft_steps, o->batch, o->scenes ? "fixed-set" : "fresh", o->sft_lr,
                tc.optim.warmup_steps, (double)tc.optim.min_lr, pl.partial, o->save_every);
    if (o->verbose && o->scenes)
        fprintf(stderr, "[pretrain] the fixed set: %d examples, %.1f epochs at most\n", o->scenes,
                (double)o->sft_steps * o->batch / o->scenes);
    /* segments up to each validation (or one to the end), each resuming the schedule */
    n_early = early_load(early_path, start, task->higher_is_better, e_steps, e_vals, &best);
    for (last = start; last < o->sft_steps && !stop_early;) {
        pl.until = o->val_every ? (last / o->val_every + 1) * o->val_every : o->sft_steps;
        if (pl.until > o->sft_steps) pl.until = o->sft_steps;
        tc.resume = last > 0;
        st = perpo_sft_train_stream(m, pretrain_next, &stream, &tc, pretrain_progress, &pl);
        if (st == PERPO_OK && pl.save_status != PERPO_OK) st = pl.save_status;
        if (st != PERPO_OK) {
            fail("pretraining", st);
            goto done;
        }
        last = perpo_optim_step_count(m);
        if (o->val_every && n_early < EX_MAX_VALIDATIONS) {
            scores vs;
            FILE *ef;
            if ((st = evaluate(m, task, &val, &vs, NULL)) != PERPO_OK) {
                fail("validation", st);
                goto done;
            }
            e_steps[n_early] = last;
            e_vals[n_early] = vs.v[task->main_metric];
            if ((ef = fopen(early_path, "a")) != NULL) {
                fprintf(ef, "%d %.6g\n", last, e_vals[n_early]);
                fclose(ef);
            }
            if (best < 0 || (task->higher_is_better ? e_vals[n_early] > e_vals[best]
                                                    : e_vals[n_early] < e_vals[best])) {
                best = n_early;
                if ((st = perpo_checkpoint_save(m, best_path, 0)) != PERPO_OK) {
                    fail("saving the best model", st);
                    goto done;
                }
            }
            n_early++;
            if (o->verbose)
                fprintf(stderr,
                        "[early stopping] step %d: validation %s %.4g (best %.4g at step %d)\n",
                        last, task->metric_key[task->main_metric], e_vals[n_early - 1],
                        e_vals[best], e_steps[best]);
            stop_early = o->patience > 0 && n_early - 1 - best >= o->patience;
        }
    }
    t_train = pl.seconds_before + wall_seconds() - pl.log.t0;
    if (o->val_every && best >= 0) { /* the best validated model is the checkpoint */
        perpo_model_free(m);
        m = NULL;
        if ((st = perpo_model_load(&m, best_path, NULL)) != PERPO_OK) {
            fail("loading the best model", st);
            goto done;
        }
    }
    if ((st = perpo_checkpoint_save(m, ckpt, 0)) != PERPO_OK) {
        fail("saving the checkpoint", st);
        goto done;
    }
    printf("wrote %s (%d steps, %.0f s of training)\n", ckpt,
           o->val_every && best >= 0 ? e_steps[best] : o->sft_steps, t_train);

    /* the record: how it was made, what it scores */
    pretrain_curve_load(pl.curve_path, o->sft_steps, full, seconds);
    if (!(f = fopen(json_path, "w"))) {
        fprintf(stderr, "error: cannot write %s\n", json_path);
        goto done;
    }
    ex_json_init(&j, f);
    ex_json_object_begin(&j);
    ex_json_kv_string(&j, "task", task->name);
    ex_json_key(&j, "command");
    ex_json_array_begin(&j);
    for (i = 0; i < argc; i++) ex_json_string(&j, argv[i]);
    ex_json_array_end(&j);
    ex_json_kv_int(&j, "seed", o->seed);
    ex_json_kv_int(&j, "steps", o->sft_steps);
    ex_json_kv_int(&j, "scenes", o->scenes); /* 0: fresh examples every step */
    if (o->val_every) {
        ex_json_key(&j, "early_stopping");
        ex_json_object_begin(&j);
        ex_json_kv_int(&j, "val_every", o->val_every);
        ex_json_kv_int(&j, "patience", o->patience);
        ex_json_kv_int(&j, "best_step", best >= 0 ? e_steps[best] : 0);
        ex_json_kv_int(&j, "last_step", last);
        ex_json_key(&j, "validation_curve");
        ex_json_array_begin(&j);
        for (i = 0; i < n_early; i++) {
            ex_json_array_begin(&j);
            ex_json_int(&j, e_steps[i]);
            ex_json_number(&j, e_vals[i]);
            ex_json_array_end(&j);
        }
        ex_json_array_end(&j);
        ex_json_object_end(&j);
    }
    ex_json_kv_int(&j, "batch", o->batch);
    ex_json_kv_number(&j, "lr", o->sft_lr);
    ex_json_kv_int(&j, "warmup_steps", tc.optim.warmup_steps);
    ex_json_kv_number(&j, "min_lr", (double)tc.optim.min_lr);
    ex_json_kv_number(&j, "train_seconds", t_train);
    ex_json_kv_int(&j, "threads", o->threads);
    ex_json_kv_string(&j, "compiler", EX_COMPILER);
    ex_json_kv_string(&j, "flags", EX_BUILD_FLAGS);
    ex_json_kv_string(&j, "instruction_set", instruction_set());
    ex_json_kv_string(&j, "commit", EX_COMMIT);
    ex_json_key(&j, "config");
    ex_json_object_begin(&j);
    {
        const perpo_config *c = perpo_model_config(m);
        ex_json_kv_int(&j, "image_h", c->image_h);
        ex_json_kv_int(&j, "image_w", c->image_w);
        ex_json_kv_int(&j, "channels", c->channels);
        ex_json_kv_int(&j, "patch_h", c->patch_h);
        ex_json_kv_int(&j, "patch_w", c->patch_w);
        ex_json_kv_int(&j, "pos_channels", c->pos_channels);
        ex_json_kv_int(&j, "vis_sincos", c->vis_sincos);
        ex_json_kv_int(&j, "d_model", c->d_model);
        ex_json_kv_int(&j, "n_heads", c->n_heads);
        ex_json_kv_int(&j, "n_vis_layers", c->n_vis_layers);
        ex_json_kv_int(&j, "n_dec_layers", c->n_dec_layers);
        ex_json_kv_int(&j, "mlp_mult", c->mlp_mult);
        ex_json_kv_int(&j, "max_text", c->max_text);
        ex_json_kv_int(&j, "max_batch", c->max_batch);
    }
    ex_json_object_end(&j);
    ex_json_key(&j, "validation");
    ex_json_object_begin(&j);
    ex_json_kv_int(&j, "val_seed", o->val_seed);
    ex_json_kv_int(&j, "examples", o->n_val);
    t_val = wall_seconds();
    {
        dataset val;
        scores sc;
        int k;
        if (dataset_make(&val, task, perpo_model_config(m), split_val_base(o->val_seed), 0,
                         o->n_val) != 0 ||
            evaluate(m, task, &val, &sc, NULL) != PERPO_OK) {
            fprintf(stderr, "error: validation failed\n");
            dataset_free(&val);
            fclose(f);
            goto done;
        }
        /* the first EX_REGRESSION_N of them again, for the regression test of make test
           (tests/t_checkpoints.c reads these keys) */
        {
            dataset head = val;
            scores hs;
            char base[32];
            head.n = o->n_val < EX_REGRESSION_N ? o->n_val : EX_REGRESSION_N;
            if (evaluate(m, task, &head, &hs, NULL) != PERPO_OK) {
                fprintf(stderr, "error: validation failed\n");
                dataset_free(&val);
                fclose(f);
                goto done;
            }
            snprintf(base, sizeof base, "%llu", (unsigned long long)split_val_base(o->val_seed));
            ex_json_key(&j, "regression");
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "split_base", base);
            ex_json_kv_int(&j, "examples", head.n);
            ex_json_kv_number(&j, task->metric_key[task->main_metric], hs.v[task->main_metric]);
            ex_json_object_end(&j);
        }
        dataset_free(&val);
        line[0] = 0;
        for (k = 0; k < task->n_metrics; k++) {
            size_t used = strlen(line);
            ex_json_kv_number(&j, task->metric_key[k], sc.v[k]);
            if (task->metric_head[k])
                snprintf(line + used, sizeof line - used, "%s%s %.4g", used ? ", " : "",
                         task->metric_head[k], sc.v[k] * task->metric_scale[k]);
        }
    }
    ex_json_kv_number(&j, "seconds", wall_seconds() - t_val);
    ex_json_object_end(&j);
    ex_json_key(&j, "loss_curve");
    ex_json_array_begin(&j);
    for (i = 0; i < full->n; i++) {
        ex_json_array_begin(&j);
        ex_json_int(&j, (long long)full->step[i]);
        ex_json_number(&j, (double)full->loss[i]);
        ex_json_array_end(&j);
    }
    ex_json_array_end(&j);
    ex_json_object_end(&j);
    if (ex_json_finish(&j) != 0 || fclose(f) != 0) {
        fprintf(stderr, "error: writing %s failed\n", json_path);
        goto done;
    }
    printf("validation (%d examples, seed %d): %s\nwrote %s\n", o->n_val, o->val_seed, line,
           json_path);
    remove(pl.partial);
    remove(pl.curve_path);
    remove(early_path);
    remove(best_path);
    rc = 0;
done:
    free(stream.images);
    free(stream.text);
    free(stream.perm);
    free(e_steps);
    free(e_vals);
    dataset_free(&val);
    free(full);
    free(seconds);
    perpo_model_free(m);
    return rc;
}

/* ---- The program: every experiment's main() ----------------------------------------------- */
static uint64_t split_pref_base(int seed) { return ex_hash64((uint64_t)seed, 0x70726566ull); }
static uint64_t split_test_base(int test_seed) {
    return ex_hash64((uint64_t)test_seed, 0x74657374ull);
}
/* The diagnostics' held-out items: drawn like the test items, never the same ones. */
static uint64_t split_diag_base(int test_seed) {
    return ex_hash64((uint64_t)test_seed, 0x64696167ull);
}

/* The SFT model the preference stage starts from: the pretrained checkpoint (never a silent
   retrain when it is missing or damaged), fine-tuned on --data's examples for --sft-steps when
   there are any, or with --from-scratch 1 a new model trained on them. */
static perpo_model *sft_model(const task *tk, const options *o, const dataset *train) {
    perpo_model *m = NULL;
    perpo_status st;
    if (o->from_scratch) {
        if ((st = perpo_model_create(&m, &tk->cfg, (uint64_t)o->seed)) != PERPO_OK) {
            fail("model", st);
            return NULL;
        }
    } else if ((st = perpo_model_load(&m, o->sft_ckpt, NULL)) != PERPO_OK) {
        fprintf(stderr,
                "error: cannot load the SFT checkpoint %s (%s).\n"
                "       Run `make pretrain` to train it (or pass --sft-checkpoint FILE).\n",
                o->sft_ckpt, perpo_status_string(st));
        return NULL;
    } else if (o->verbose) {
        fprintf(stderr, "[sft] loaded %s\n", o->sft_ckpt);
    }
    if (train && (o->from_scratch || o->sft_steps > 0)) {
        perpo_sft_config tc = perpo_sft_default();
        run_log log;
        tc.batch_size = o->batch;
        tc.seed = (uint64_t)o->seed;
        tc.log_every = 50;
        tc.optim.lr = (float)o->sft_lr;
        tc.optim.min_lr = (float)o->sft_lr * 0.05f;
        tc.optim.warmup_steps = o->sft_steps / 20 + 1;
        tc.optim.total_steps = o->sft_steps;
        run_log_start(&log, "sft", o->verbose, NULL);
        if ((st = perpo_sft_train(m, train->examples, (size_t)train->n, &tc, on_progress, &log)) !=
            PERPO_OK) {
            fail("SFT on --data", st);
            perpo_model_free(m);
            return NULL;
        }
    }
    return m;
}

/* DIR/NAME_by_group.svg: the task's per-group metric for each method but the Best-of-N row,
   averaged over the seeds. */
static void group_figure(const task *tk, const options *o, const run_result *runs) {
    float xs[EX_MAX_METHODS][EX_MAX_METRICS], ys[EX_MAX_METHODS][EX_MAX_METRICS];
    const float *px[EX_MAX_METHODS], *py[EX_MAX_METHODS];
    const char *names[EX_MAX_METHODS];
    int counts[EX_MAX_METHODS], k, g, s, n = runs[0].n_methods - 1; /* the last row is Best-of-N */
    char path[1024], title[256];
    if (tk->n_groups < 1 || tk->group_metric + tk->n_groups > tk->n_metrics) return;
    for (k = 0; k < n; k++) {
        for (g = 0; g < tk->n_groups; g++) {
            double sum = 0;
            for (s = 0; s < o->seeds; s++) sum += runs[s].m[k].s.v[tk->group_metric + g];
            xs[k][g] = (float)g;
            ys[k][g] = (float)(sum / o->seeds);
        }
        px[k] = xs[k];
        py[k] = ys[k];
        names[k] = runs[0].m[k].name;
        counts[k] = tk->n_groups;
    }
    snprintf(path, sizeof path, "%s/%s_by_group.svg", o->out, tk->name);
    snprintf(title, sizeof title, "%s by %s (%d test items, mean of %d seed%s)", tk->group_ylabel,
             tk->group_axis, o->n_test, o->seeds, o->seeds > 1 ? "s" : "");
    if (ex_svg_plot(path, title, tk->group_axis, tk->group_ylabel, n, names, px, py, counts) != 0)
        fprintf(stderr, "warning: cannot write %s\n", path);
    else
        printf("wrote %s\n", path);
}

static int experiment_main(const task *tk, options *o, int argc, char **argv) {
    perpo_model *sft = NULL;
    dataset test, train, diag_items;
    diag_ctx dg;
    int diag_owned = 0; /* diag_items has storage of its own (else it is test's) */
    run_result *runs = NULL;
    method_result sft_row, bon_row;
    curve *pre = NULL;
    int s, rc = 1, n_bon;
    char path[1024];
    memset(&test, 0, sizeof test);
    memset(&train, 0, sizeof train);
    memset(&diag_items, 0, sizeof diag_items);
    memset(&dg, 0, sizeof dg);
    if ((rc = experiment_start(argc, argv, o)) != 0) return rc > 0 ? 0 : 2;
    rc = 1;
    if (o->test_shift > 0 && (!tk->make_shifted || o->test_shift > tk->max_shift || o->data)) {
        fprintf(stderr, "error: --test-shift %d: %s\n", o->test_shift,
                o->data ? "the test data of --data is what it is"
                        : "this task has no shifted test distribution of that number");
        return 2;
    }
    if (o->pretrain) return pretrain(tk, o, argc, argv);
    if (o->data && dataset_load(&train, tk, &tk->cfg, o->data, "train.tsv") != 0) return 1;
    if (!(sft = sft_model(tk, o, o->data ? &train : NULL))) goto done;
    if (o->data ? dataset_load(&test, tk, perpo_model_config(sft), o->data, "test.tsv") != 0
                : dataset_make_shifted(&test, tk, perpo_model_config(sft),
                                       split_test_base(o->test_seed), 0, o->n_test,
                                       o->test_shift) != 0) {
        fprintf(stderr, "error: test data\n");
        goto done;
    }
    o->n_test = test.n;
    runs = (run_result *)calloc((size_t)o->seeds, sizeof *runs);
    pre = (curve *)calloc(1, sizeof *pre);
    if (!runs || !pre) {
        fail("results", PERPO_ERR_NOMEM);
        goto done;
    }
    for (s = 0; s < o->seeds; s++) {
        runs[s].sft_text = (char *)calloc((size_t)test.n, test.cap);
        runs[s].perpo_text = (char *)calloc((size_t)test.n, test.cap);
        if (!runs[s].sft_text || !runs[s].perpo_text) {
            fail("results", PERPO_ERR_NOMEM);
            goto done;
        }
    }

    /* the SFT model and the Best-of-N oracle do not depend on the preference seed */
    memset(&sft_row, 0, sizeof sft_row);
    memset(&bon_row, 0, sizeof bon_row);
    snprintf(sft_row.name, sizeof sft_row.name, "SFT");
    if (evaluate(sft, tk, &test, &sft_row.s, runs[0].sft_text) != PERPO_OK) {
        fprintf(stderr, "error: evaluating SFT\n");
        goto done;
    }
    if (o->verbose)
        fprintf(stderr, "[sft] test %s %.4g\n", tk->metric_key[tk->main_metric],
                sft_row.s.v[tk->main_metric]);
    if (o->n_diag > 0) { /* --data: the first --diag test items; else a split of their own */
        if (o->data) {
            diag_items = test;
            if (o->n_diag < diag_items.n) diag_items.n = o->n_diag;
        } else if (dataset_make_shifted(&diag_items, tk, perpo_model_config(sft),
                                        split_diag_base(o->test_seed), 0, o->n_diag,
                                        o->test_shift) != 0) {
            fail("diagnostic items", PERPO_ERR_NOMEM);
            goto done;
        } else
            diag_owned = 1;
        o->n_diag = diag_items.n;
        if (diag_init(&dg, sft, tk, &diag_items, (uint64_t)o->test_seed * 7919u + 11u) !=
                PERPO_OK ||
            diagnose(sft, 1, tk, &dg, NULL, 0, &sft_row.diag) != PERPO_OK) {
            fprintf(stderr, "error: diagnostics of the SFT model\n");
            goto done;
        }
        if (o->verbose)
            fprintf(stderr,
                    "[sft] %d held-out items: sampled %s %.4g, log p(truth) %.2f, %.2f "
                    "with a blank image\n",
                    o->n_diag, tk->metric_key[tk->main_metric],
                    sft_row.diag.sampled[tk->main_metric], sft_row.diag.truth_real,
                    sft_row.diag.truth_blank);
    }
    n_bon = o->bon_test < test.n ? o->bon_test : test.n;
    snprintf(bon_row.name, sizeof bon_row.name, "Best-of-%d (oracle)*", o->n_samples);
    {
        dataset head = test;
        head.n = n_bon;
        if (best_of_n(sft, tk, &head, o, (uint64_t)o->seed * 7919u + 5u, &bon_row.s) != PERPO_OK) {
            fprintf(stderr, "error: best-of-N\n");
            goto done;
        }
    }
    if (o->verbose)
        fprintf(stderr, "[best-of-%d] %s %.4g on %d test items\n", o->n_samples,
                tk->metric_key[tk->main_metric], bon_row.s.v[tk->main_metric], n_bon);

    for (s = 0; s < o->seeds; s++) {
        dataset prefs;
        int seed = o->seed + s, ok;
        if (o->verbose)
            fprintf(stderr, "=== preference seed %d (%d of %d) ===\n", seed, s + 1, o->seeds);
        if (o->data)
            prefs = train;
        else if (dataset_make(&prefs, tk, perpo_model_config(sft),
                              o->pref_data_seed >= 0 ? split_train_base(o->pref_data_seed)
                                                     : split_pref_base(seed),
                              0, o->n_pref) != 0) {
            fail("preference prompts", PERPO_ERR_NOMEM);
            goto done;
        }
        if (o->data && o->n_pref < prefs.n) prefs.n = o->n_pref;
        runs[s].m[0] = sft_row;
        if (s > 0) memcpy(runs[s].sft_text, runs[0].sft_text, (size_t)test.n * test.cap);
        ok = run_preference(tk, o, seed, sft, &test, &prefs, &dg, &runs[s], 1) == 0;
        if (!o->data) dataset_free(&prefs);
        if (!ok) goto done;
        runs[s].m[runs[s].n_methods++] = bon_row;
    }
    print_table(tk, o, runs);
    printf("* Best-of-%d: the highest-reward of %d samples of the SFT model, on the first %d test "
           "items\n",
           o->n_samples, o->n_samples, n_bon);
    if (write_results(tk, o, runs) != 0) goto done;
    group_figure(tk, o, runs);
    snprintf(path, sizeof path, "%s/%s_examples.png", o->out, tk->name);
    if (tk->picture(path, &test, runs[0].sft_text,
                    runs[0].perpo_index >= 0 ? runs[0].perpo_text : NULL) != 0)
        fprintf(stderr, "warning: cannot write %s\n", path);
    else
        printf("wrote %s\n", path);
    {
        const char *names[EX_MAX_METHODS];
        const curve *curves[EX_MAX_METHODS];
        int k, n = 0;
        for (k = 2; k < runs[0].n_methods - 1 && n < EX_MAX_OBJECTIVES; k++, n++) {
            names[n] = runs[0].m[k].name;
            curves[n] = &runs[0].m[k].loss_curve;
        }
        read_pretrain_curve(o->sft_ckpt, pre);
        snprintf(path, sizeof path, "%s: training curves", tk->title);
        curves_output(o, path, pre, n, names, curves);
    }
    rc = 0;
done:
    if (runs)
        for (s = 0; s < o->seeds; s++) {
            free(runs[s].sft_text);
            free(runs[s].perpo_text);
        }
    free(runs);
    free(pre);
    diag_free(&dg);
    if (diag_owned) dataset_free(&diag_items);
    dataset_free(&test);
    dataset_free(&train);
    perpo_model_free(sft);
    return rc;
}

#endif
