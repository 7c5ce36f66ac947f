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

/* ---- Options shared by the experiments (defaults are each program's) ---------------------- */
typedef struct options {
    const char *description; /* first lines of --help */
    int seed, test_seed, seeds, n_samples, sft_steps, pref_steps, n_train, n_pref, n_test;
    int threads, batch, lists_per_step, verbose, mean_logp, max_batch;
    double beta, gamma, temperature, top_p, margin, sft_lr, pref_lr, nll;
    const char *objective, *out, *sft_ckpt, *data;
} options;

typedef struct option_spec {
    const char *name, *help;
    char kind; /* 'i' int, 'd' double, 's' string */
    void *dst;
    double lo, hi;
} option_spec;

/* ---- Objectives compared ---------------------------------------------------------------- */
#define EX_MAX_OBJECTIVES 4
static const perpo_objective ex_objective_kinds[EX_MAX_OBJECTIVES] = {PERPO_OBJ_DPO, PERPO_OBJ_PERPO, PERPO_OBJ_LIPO, PERPO_OBJ_LISTMLE};
static const char *const ex_objective_names[EX_MAX_OBJECTIVES] = {"DPO", "PerPO", "LiPO", "ListMLE"};
static const char *const ex_objective_flags[EX_MAX_OBJECTIVES] = {"dpo", "perpo", "lipo", "listmle"};

/* Is name in the comma-separated list (or is the list "all")? */
static int objective_wanted(const char *list, const char *name) {
    size_t n = strlen(name);
    if (strcmp(list, "all") == 0) return 1;
    while (*list) {
        size_t len = strcspn(list, ",");
        if (len == n && strncmp(list, name, n) == 0) return 1;
        list += len + (list[len] == ',');
    }
    return 0;
}

static int parse_options(int argc, char **argv, options *o) {
    option_spec spec[] = {
        {"--seed", "seed of the training data, the model and the samples", 'i', &o->seed, 0, 2e9},
        {"--test-seed", "seed of the held-out test examples", 'i', &o->test_seed, 0, 2e9},
        {"--seeds", "run this many seeds (seed, seed+1, ...) and report mean and std", 'i', &o->seeds, 1, 100},
        {"--n", "responses sampled per training prompt (list size N)", 'i', &o->n_samples, 2, 32},
        {"--beta", "beta of the preference objectives", 'd', &o->beta, 1e-6, 1000},
        {"--gamma", "PerPO's reward-gap exponent (0 = LiPO-style uniform weights)", 'd', &o->gamma, 0, 100},
        {"--temperature", "sampling temperature for the lists and Best-of-N", 'd', &o->temperature, 0.01, 10},
        {"--top-p", "nucleus sampling for the lists and Best-of-N (1 = off)", 'd', &o->top_p, 0.01, 1},
        {"--nll", "weight of the NLL term on each list's best answer (0 = off, as the paper)", 'd', &o->nll, 0, 100},
        {"--mean-logp", "1: per-token mean log-probs in the objectives, 0: sums (as the paper)", 'i', &o->mean_logp, 0, 1},
        {"--margin", "keep lists whose best-minus-worst reward is at least this", 'd', &o->margin, 0, 1},
        {"--sft-steps", "SFT optimizer steps (batch --batch)", 'i', &o->sft_steps, 1, 1e7},
        {"--pref-steps", "preference optimizer steps, the same for every objective", 'i', &o->pref_steps, 1, 1e7},
        {"--sft-lr", "SFT peak learning rate", 'd', &o->sft_lr, 1e-9, 1},
        {"--pref-lr", "preference peak learning rate", 'd', &o->pref_lr, 1e-9, 1},
        {"--train", "training examples for SFT", 'i', &o->n_train, 1, 1e7},
        {"--pref-prompts", "training prompts sampled for preference lists", 'i', &o->n_pref, 1, 1e7},
        {"--test", "held-out test examples", 'i', &o->n_test, 1, 1e7},
        {"--batch", "SFT sequences per step", 'i', &o->batch, 1, 32},
        {"--lists", "lists per preference step (lists x N <= 32)", 'i', &o->lists_per_step, 1, 32},
        {"--objective", "comma-separated: dpo,perpo,lipo,listmle (or all)", 's', &o->objective, 0, 0},
        {"--threads", "OpenMP threads (0 = the runtime's default)", 'i', &o->threads, 0, 256},
        {"--verbose", "0 quiet, 1 progress on stderr", 'i', &o->verbose, 0, 2},
        {"--out", "output folder for results.json, the picture and the curves", 's', &o->out, 0, 0},
        {"--data", "a folder with train.tsv and test.tsv (image path, prompt, answer; 8-bit PPM/PGM images) to use instead of the built-in synthetic data", 's', &o->data, 0, 0},
        {"--sft-checkpoint", "load the SFT model from this file if it exists, else train and save it there", 's', &o->sft_ckpt, 0, 0},
    };
    size_t n = sizeof spec / sizeof spec[0], k;
    int i;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL, *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            printf("usage: %s [options]\n\n%s\n\n", argv[0], o->description);
            for (k = 0; k < n; k++) printf("  %-15s %s\n", spec[k].name, spec[k].help);
            return 1;
        }
        for (k = 0; k < n; k++)
            if (strlen(spec[k].name) == name_len && strncmp(arg, spec[k].name, name_len) == 0) break;
        if (k == n) { fprintf(stderr, "unknown option %s (see --help)\n", arg); return -1; }
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else { fprintf(stderr, "option %s needs a value\n", arg); return -1; }
        if (spec[k].kind == 's') {
            *(const char **)spec[k].dst = val;
        } else {
            char *end;
            double v = strtod(val, &end);
            if (*val == '\0' || *end != '\0' || !(v >= spec[k].lo && v <= spec[k].hi) ||
                (spec[k].kind == 'i' && v != floor(v))) {
                fprintf(stderr, "bad value \"%s\" for %s (expected %s in [%g, %g])\n", val, spec[k].name,
                        spec[k].kind == 'i' ? "an integer" : "a number", spec[k].lo, spec[k].hi);
                return -1;
            }
            if (spec[k].kind == 'i') *(int *)spec[k].dst = (int)v;
            else *(double *)spec[k].dst = v;
        }
    }
    {
        const char *p = o->objective;
        while (strcmp(o->objective, "all") != 0 && *p) { /* every comma-separated name known */
            size_t len = strcspn(p, ","), k2;
            for (k2 = 0; k2 < EX_MAX_OBJECTIVES; k2++)
                if (strlen(ex_objective_flags[k2]) == len && strncmp(p, ex_objective_flags[k2], len) == 0) break;
            if (k2 == EX_MAX_OBJECTIVES) {
                fprintf(stderr, "bad --objective \"%s\" (comma-separated dpo, perpo, lipo, listmle, or all)\n", o->objective);
                return -1;
            }
            p += len + (p[len] == ',');
        }
    }
    if (o->lists_per_step * o->n_samples > o->max_batch) {
        fprintf(stderr, "--lists x --n must be at most %d (the model's batch), got %d x %d\n", o->max_batch, o->lists_per_step, o->n_samples);
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
    float step[CURVE_MAX], loss[CURVE_MAX], acc[CURVE_MAX], margin[CURVE_MAX];
} curve;

typedef struct run_log {
    const char *label;
    int verbose;
    double t0;
    curve *c;
} run_log;

static void fmt_duration(double s, char *buf, size_t cap) {
    if (s < 0) s = 0;
    if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static int on_progress(const perpo_progress *p, void *user) {
    run_log *l = (run_log *)user;
    double el = wall_seconds() - l->t0, eta = el / p->step * (p->total_steps - p->step);
    char e1[32], e2[32];
    if (l->c && l->c->n < CURVE_MAX) {
        curve *c = l->c;
        c->step[c->n] = (float)p->step; c->loss[c->n] = p->loss;
        c->acc[c->n] = p->reward_accuracy; c->margin[c->n] = p->reward_margin;
        c->n++;
    }
    if (l->verbose) {
        fmt_duration(el, e1, sizeof e1);
        fmt_duration(eta, e2, sizeof e2);
        if (strcmp(p->phase, "sft") == 0)
            fprintf(stderr, "[%s] step %5d/%d  loss %.4f  lr %.2e  |g| %.3f  %6.0f tok/s  %s elapsed, eta %s\n",
                    l->label, p->step, p->total_steps, p->loss, p->lr, p->grad_norm, p->tokens / (el > 0 ? el : 1), e1, e2);
        else
            fprintf(stderr, "[%s] step %4d/%d  loss %.4f  rewards/chosen %+.3f rejected %+.3f margins %+.3f accuracies %.2f  %s elapsed, eta %s\n",
                    l->label, p->step, p->total_steps, p->loss, p->reward_chosen, p->reward_rejected,
                    p->reward_margin, p->reward_accuracy, e1, e2);
    }
    return 0;
}

/* The preference configuration the options describe, for one objective. */
static perpo_pref_config pref_config(const options *o, perpo_objective kind, int seed) {
    perpo_pref_config pc = perpo_pref_default(kind);
    pc.objective.beta = (float)o->beta; pc.objective.gamma = (float)o->gamma;
    pc.lists_per_step = o->lists_per_step; pc.seed = (uint64_t)seed;
    pc.nll_weight = (float)o->nll; pc.mean_logp = o->mean_logp;
    pc.optim.lr = (float)o->pref_lr; pc.optim.min_lr = (float)o->pref_lr * 0.1f;
    pc.optim.warmup_steps = o->pref_steps / 10 + 1; pc.optim.total_steps = o->pref_steps;
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
    if (slash) { *slash = 0; ex_mkdir(parent); }
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
    ex_json_kv_int(j, "seed", o->seed); ex_json_kv_int(j, "test_seed", o->test_seed); ex_json_kv_int(j, "seeds", o->seeds);
    ex_json_kv_int(j, "n", o->n_samples); ex_json_kv_number(j, "beta", o->beta); ex_json_kv_number(j, "gamma", o->gamma);
    ex_json_kv_number(j, "temperature", o->temperature); ex_json_kv_number(j, "top_p", o->top_p);
    ex_json_kv_number(j, "margin", o->margin); ex_json_kv_number(j, "nll", o->nll); ex_json_kv_int(j, "mean_logp", o->mean_logp);
    ex_json_kv_int(j, "sft_steps", o->sft_steps); ex_json_kv_int(j, "pref_steps", o->pref_steps);
    ex_json_kv_number(j, "sft_lr", o->sft_lr); ex_json_kv_number(j, "pref_lr", o->pref_lr);
    ex_json_kv_int(j, "train", o->n_train); ex_json_kv_int(j, "pref_prompts", o->n_pref); ex_json_kv_int(j, "test", o->n_test);
    ex_json_kv_int(j, "batch", o->batch); ex_json_kv_int(j, "lists", o->lists_per_step);
    ex_json_kv_string(j, "objective", o->objective); ex_json_kv_int(j, "threads", o->threads);
    if (o->data) ex_json_kv_string(j, "data", o->data);
    if (o->sft_ckpt) ex_json_kv_string(j, "sft_checkpoint", o->sft_ckpt);
    ex_json_object_end(j);
}

/* Four panels: the SFT loss, then each preference run's loss, rewards/accuracies and
   rewards/margins against the step. */
static int write_curves(const char *path, const char *title, const curve *sft, int n, const char *const *names,
                        const curve *const *runs) {
    const float *xs[EX_MAX_OBJECTIVES], *loss[EX_MAX_OBJECTIVES], *acc[EX_MAX_OBJECTIVES], *mar[EX_MAX_OBJECTIVES];
    const float *sx[1], *sy[1];
    int counts[EX_MAX_OBJECTIVES], sc[1], k;
    ex_plot_panel p[4];
    const char *sft_name[1] = {"SFT"};
    for (k = 0; k < n && k < EX_MAX_OBJECTIVES; k++) {
        xs[k] = runs[k]->step; loss[k] = runs[k]->loss; acc[k] = runs[k]->acc; mar[k] = runs[k]->margin;
        counts[k] = runs[k]->n;
    }
    sx[0] = sft->step; sy[0] = sft->loss; sc[0] = sft->n;
    p[0].title = "SFT"; p[0].xlabel = "step"; p[0].ylabel = "token cross-entropy"; p[0].n_series = 1;
    p[0].names = sft_name; p[0].xs = sx; p[0].ys = sy; p[0].counts = sc;
    p[1].title = "preference loss"; p[1].xlabel = "step"; p[1].ylabel = "loss"; p[1].n_series = k;
    p[1].names = names; p[1].xs = xs; p[1].ys = loss; p[1].counts = counts;
    p[2] = p[1]; p[2].title = "rewards/accuracies"; p[2].ylabel = "pairs ranked right"; p[2].ys = acc;
    p[3] = p[1]; p[3].title = "rewards/margins"; p[3].ylabel = "beta (s_best - s_worst)"; p[3].ys = mar;
    return ex_svg_plot_panels(path, title, n ? 4 : 1, p);
}

/* What every experiment does first: the command line, the thread count, the output folder.
   0 to go on, 1 after --help, -1 on an error (already reported). */
static int experiment_start(int argc, char **argv, options *o) {
    int rc = parse_options(argc, argv, o);
    if (rc) return rc;
#ifdef _OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
#endif
    if (make_dirs(o->out) != 0) { fprintf(stderr, "error: cannot create %s\n", o->out); return -1; }
    return 0;
}

/* ---- results.json and the training curves ------------------------------------------------ */
/* Opens DIR/results.json and writes {"task": ..., "flags": {...}, "runs": [ ; NULL (with a
   message) when the file cannot be created. path gets the file's name. */
static FILE *results_begin(ex_json *j, const options *o, const char *task, char *path, size_t cap) {
    FILE *f;
    snprintf(path, cap, "%s/results.json", o->out);
    f = fopen(path, "w");
    if (!f) { fprintf(stderr, "error: cannot write %s\n", path); return NULL; }
    ex_json_init(j, f);
    ex_json_object_begin(j);
    ex_json_kv_string(j, "task", task);
    json_options(j, o);
    ex_json_key(j, "runs");
    ex_json_array_begin(j);
    return f;
}
/* One run's common fields, then opens its "methods" array. */
static void results_run_begin(ex_json *j, int seed, size_t sampled, size_t kept, double mean_reward, double seconds) {
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
    if (ex_json_finish(j) != 0 || fclose(f) != 0) { fprintf(stderr, "error: writing %s failed\n", path); return -1; }
    printf("wrote %s\n", path);
    return 0;
}

/* DIR/training_curves.svg from the first seed's curves. */
static void curves_output(const options *o, const char *title, const curve *sft, int n, const char *const *names,
                          const curve *const *runs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/training_curves.svg", o->out);
    if (write_curves(path, title, sft, n, names, runs) != 0) fprintf(stderr, "warning: cannot write %s\n", path);
    else printf("wrote %s\n", path);
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
    if ((st = perpo_manifest_load(path, &u->manifest, err, sizeof err)) != PERPO_OK) {
        fprintf(stderr, "error: %s (%s)\n", err[0] ? err : path, perpo_status_string(st));
        return -1;
    }
    if (u->manifest.n == 0) { fprintf(stderr, "error: %s has no examples\n", path); return -1; }
    u->images = (float *)malloc(u->manifest.n * floats * sizeof(float));
    if (!u->images) { fprintf(stderr, "error: out of memory for %zu images\n", u->manifest.n); return -1; }
    for (i = 0; i < u->manifest.n; i++) {
        const perpo_manifest_entry *e = &u->manifest.entries[i];
        char img_path[2048];
        if (e->image[0] == '/') snprintf(img_path, sizeof img_path, "%s", e->image);
        else snprintf(img_path, sizeof img_path, "%s/%s", dir, e->image);
        if ((st = perpo_image_load_pnm(img_path, W, H, 3, u->images + i * floats, err, sizeof err)) != PERPO_OK) {
            fprintf(stderr, "error: %s line %zu: %s\n", path, e->line, err);
            user_data_free(u);
            return -1;
        }
    }
    return 0;
}

#endif
