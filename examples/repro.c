/* repro.c — the paper's analyses in miniature (make repro), from the committed SFT checkpoints:
 *
 *   list_size    N in {2, 4, 8, 12, 16, 20}: SFT, DPO, PerPO and Best-of-N against N (Fig. 1b)
 *   reliance     SFT, DPO and PerPO with the real and a blank (all-zero) image: the drop in
 *                greedy mean IoU and in log p(true answer) (Fig. 1c)
 *   beta         beta in {0.05, 0.1, 0.2, 0.5, 1}, DPO and PerPO
 *   gamma        gamma in {0, 0.25, 0.5, 1, 2} (0: uniform pair weights, "LiPO"), PerPO
 *   margin       the reward margin that keeps a list, {0, 0.3, 0.5, 0.8}, PerPO
 *   data         preference prompts {256, 512, 1024, 2048} (the first of the SFT model's own
 *                2,048 scenes), PerPO
 *   ocr_density  dense OCR, edit distance at each text density, SFT, DPO, PerPO (Fig. 5)
 *
 * Grounding runs the demo's regime (grounding_defaults: 3 on-policy rounds over the checkpoint's
 * own scenes, 4 lists a step at lr 3e-5, N 8, margin 0.3, beta 0.1, gamma 0.5) at 300 preference
 * steps instead of its 600, so that 3 seeds fit in 2 hours, and each sweep changes one of those;
 * OCR runs dense_ocr's defaults (offline, N 5). Every point is run for --seeds preference seeds
 * and read on the same held-out test items (grounding: test seed 777), with the diagnostics of
 * examples/diagnostics.h beside the main metric. A point that two sweeps share (N 8 = beta 0.1 =
 * gamma 0.5 = margin 0.3 = all prompts) is computed once.
 *
 * The work is a list of units: the SFT model's scores (one per task), the Best-of-N samples of
 * a seed (all N at once: the best of the first N of 20 samples per item), and a point's
 * preference stage for one seed (no control: SFT, DPO and PerPO are what the figures compare).
 * Each finished unit is a file under OUT/points/, written to a temporary name and renamed, its
 * first line naming the unit and every setting it depends on and its last line a CRC-32 of the
 * rest; a file that is missing, cut short, damaged or made with other settings is computed
 * again, a good one never. The figures and tables are written from the files alone, so a run
 * that was killed and started again ends with the same bytes as one that never stopped (each
 * unit is deterministic given its seed, whatever the thread count).
 *
 *   repro [--out results/repro] [--seeds 2] [--threads T] [--only list_size,beta,...]
 *   repro --quick           every experiment at a tiny size (make test)
 *   repro --plan 1          the units and the estimated time, nothing run (all flags: --help)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, mkdir, getpid; the library is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#if defined(__GNUC__) || defined(__clang__) /* the stages grounding.c's main() runs, unused here */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "common.h"
#include "experiment.h"
#include "grounding_task.h"
#include "ocr_task.h"
#include <unistd.h>

#define MAX_SEEDS  16
#define MAX_X      8
#define MAX_POINTS 48
#define MAX_UNITS  (MAX_POINTS * MAX_SEEDS + 2 + MAX_SEEDS)
#define BON_MAX    20 /* Best-of-N: 20 samples per item, the best of the first N */

enum { T_GROUNDING, T_OCR, N_TASKS };
enum { F_N, F_BETA, F_GAMMA, F_MARGIN, F_PREF }; /* what a sweep varies */

/* ---- Settings ------------------------------------------------------------------------------ */
typedef struct repro_opts {
    const char *out, *only;
    int quick, seeds, seed, threads, verbose, plan, n_test, n_diag, pref_steps, ocr_test,
        ocr_pref_steps;
} repro_opts;

#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))
static const int list_sizes[] = { 2, 4, 8, 12, 16, 20 };
#define N_SIZES COUNT(list_sizes)
static const double betas[] = { 0.05, 0.1, 0.2, 0.5, 1 };
static const double gammas[] = { 0, 0.25, 0.5, 1, 2 };
static const double margins[] = { 0, 0.3, 0.5, 0.8 };
static const int data_fraction[] = { 8, 4, 2, 1 }; /* all prompts / this */
/* every sweep fits a figure's MAX_X points (a compile error otherwise) */
typedef char repro_sweeps_fit[COUNT(list_sizes) <= MAX_X && COUNT(betas) <= MAX_X &&
                                      COUNT(gammas) <= MAX_X && COUNT(margins) <= MAX_X &&
                                      COUNT(data_fraction) <= MAX_X
                                  ? 1
                                  : -1];

/* A sweep of one setting of the grounding regime. */
typedef struct sweep {
    const char *id, *title, *xlabel;
    int field, dpo, bon; /* DPO beside PerPO; the Best-of-N series (list_size) */
} sweep;
static const sweep sweeps[] = {
    { "list_size", "Grounding: Acc@0.5 against the list size N (paper Fig. 1b)", "list size N", F_N,
      1, 1 },
    { "beta", "Grounding: Acc@0.5 against beta", "beta", F_BETA, 1, 0 },
    { "gamma", "Grounding: PerPO's Acc@0.5 against gamma (0: uniform pair weights, LiPO)", "gamma",
      F_GAMMA, 0, 0 },
    { "margin", "Grounding: PerPO's Acc@0.5 against the margin that keeps a list", "reward margin",
      F_MARGIN, 0, 0 },
    { "data", "Grounding: PerPO's Acc@0.5 against the number of preference prompts",
      "preference prompts", F_PREF, 0, 0 },
};
#define N_SWEEPS (int)(sizeof sweeps / sizeof sweeps[0])

/* ---- Points and units ---------------------------------------------------------------------- */
typedef struct point {
    int task, n, n_pref, dpo, perpo;
    double beta, gamma, margin;
} point;

enum { U_SFT, U_BON, U_PREF };
typedef struct unit {
    int task, kind, point, seed;
    char name[160]; /* its file under OUT/points/ */
    double cost;    /* estimated seconds */
} unit;

/* What a unit's file holds, read back: one record per method (U_SFT: the SFT model; U_BON: one
   per list size; U_PREF: DPO, then PerPO), NULL-like (present = 0) where a method was not run
   or no list passed the margin. */
#define UNIT_RECORDS N_SIZES
typedef struct mres {
    int present;
    scores s;
    diag_stats d;
    double train_s;
} mres;
typedef struct unit_res {
    int ok, nolists;
    double lists_kept, seconds;
    mres m[UNIT_RECORDS];
} unit_res;

/* A task as repro runs it: its defaults, and (loaded when a unit of it must be computed) the SFT
   model, the test items and the diagnostics' lists. */
typedef struct task_ctx {
    task tk;
    options base;
    char sig[1024]; /* the settings every unit of the task depends on, the checkpoint's CRC too */
    int loaded;
    perpo_model *sft;
    dataset test, diag_items;
    diag_ctx dg;
} task_ctx;

typedef struct repro {
    repro_opts ro;
    task_ctx t[N_TASKS];
    point pts[MAX_POINTS];
    int n_pts;
    unit units[MAX_UNITS];
    unit_res res[MAX_UNITS];
    int need[MAX_UNITS]; /* this run computes the unit */
    int n_units;
    char dir[1024];
} repro;

/* The regime's defaults with repro's sizes: the options every unit of the task starts from. */
static void task_options(const repro_opts *ro, int t, options *o) {
    if (t == T_GROUNDING) {
        grounding_defaults(o);
        o->n_test = ro->n_test;
        o->pref_steps = ro->pref_steps;
        if (ro->quick) { /* tiny: one round over 8 prompts */
            o->n_pref = 8;
            o->rounds = 1;
        }
    } else {
        ocr_defaults(o);
        o->n_test = ro->ocr_test;
        o->pref_steps = ro->ocr_pref_steps;
        if (ro->quick) o->n_pref = 6;
    }
    o->n_diag = ro->n_diag;
    o->no_control = 1;
    o->verbose = ro->verbose > 1;
    o->threads = ro->threads;
}

/* The point's options: the task's, with the point's list size, objective and data settings. N
   above 8 keeps 4 lists per optimizer step in micro-batches of what one forward holds. */
static void point_options(const repro *r, const point *p, options *o) {
    const int want = r->ro.quick ? 2 : 4; /* lists per optimizer step (the regime's 4) */
    *o = r->t[p->task].base;
    if (p->task == T_OCR) {
        o->objective = "dpo,perpo";
        return;
    }
    o->n_samples = p->n;
    o->beta = p->beta;
    o->gamma = p->gamma;
    o->margin = p->margin;
    o->n_pref = p->n_pref;
    o->lists_per_step = p->n * want <= o->max_batch ? want : o->max_batch / p->n;
    o->accum = (want + o->lists_per_step - 1) / o->lists_per_step;
    o->objective = p->dpo && p->perpo ? "dpo,perpo" : p->dpo ? "dpo" : "perpo";
}

/* The grounding point a sweep reads at x (the others at the regime's defaults). */
static point sweep_point(const repro *r, const sweep *sw, double x) {
    const options *b = &r->t[T_GROUNDING].base;
    point p;
    memset(&p, 0, sizeof p);
    p.task = T_GROUNDING;
    p.n = sw->field == F_N ? (int)x : b->n_samples;
    p.beta = sw->field == F_BETA ? x : b->beta;
    p.gamma = sw->field == F_GAMMA ? x : b->gamma;
    p.margin = sw->field == F_MARGIN ? x : b->margin;
    p.n_pref = sw->field == F_PREF ? (int)x : b->n_pref;
    return p;
}

/* The x values of a sweep. */
static int sweep_xs(const repro *r, const sweep *sw, double *xs) {
    int i, n = 0;
    const int full = r->t[T_GROUNDING].base.n_pref;
    switch (sw->field) {
    case F_N:
        for (i = 0; i < N_SIZES; i++) xs[n++] = list_sizes[i];
        break;
    case F_BETA:
        for (i = 0; i < COUNT(betas); i++) xs[n++] = betas[i];
        break;
    case F_GAMMA:
        for (i = 0; i < COUNT(gammas); i++) xs[n++] = gammas[i];
        break;
    case F_MARGIN:
        for (i = 0; i < COUNT(margins); i++) xs[n++] = margins[i];
        break;
    default:
        for (i = 0; i < COUNT(data_fraction); i++) xs[n++] = full / data_fraction[i];
        break;
    }
    return n;
}

/* The index of the point with p's settings, or -1. */
static int point_index(const repro *r, const point *p) {
    int i;
    for (i = 0; i < r->n_pts; i++) {
        const point *q = &r->pts[i];
        if (q->task == p->task && q->n == p->n && q->beta == p->beta && q->gamma == p->gamma &&
            q->margin == p->margin && q->n_pref == p->n_pref)
            return i;
    }
    return -1;
}

/* The index of the point (added when new), its objectives widened to what the caller needs. */
static int find_point(repro *r, const point *p, int dpo, int perpo) {
    int i = point_index(r, p);
    if (i < 0) {
        i = r->n_pts;
        r->pts[r->n_pts++] = *p;
    }
    r->pts[i].dpo |= dpo;
    r->pts[i].perpo |= perpo;
    return i;
}

/* Every point of every experiment (whatever --only says, so that a point's file is the same
   for any selection): the sweeps' grounding points, then OCR's one. */
static void make_points(repro *r) {
    int s, i;
    point p;
    for (s = 0; s < N_SWEEPS; s++) {
        double xs[MAX_X];
        int nx = sweep_xs(r, &sweeps[s], xs);
        for (i = 0; i < nx; i++) {
            p = sweep_point(r, &sweeps[s], xs[i]);
            find_point(r, &p, sweeps[s].dpo, 1);
        }
    }
    p = sweep_point(r, &sweeps[0], r->t[T_GROUNDING].base.n_samples); /* reliance: the default */
    find_point(r, &p, 1, 1);
    memset(&p, 0, sizeof p);
    p.task = T_OCR;
    find_point(r, &p, 1, 1);
}

/* Estimated seconds of a unit on 2 idle cores at full size: samples drawn, sequences trained,
   items evaluated, at rates fitted to the demo's point measured on 1 thread (86% of a core) and
   sped up 1.8x for 2 threads (docs/repro.md, "Time"). Only for --plan and the ETA. */
static double unit_cost(const repro *r, const unit *u) {
    const double per_sample = 1.7e-3, per_seq = 4.0e-3, per_item = 7.4e-3;
    options o;
    double c = 0;
    const double scale = u->task == T_OCR ? 2.0 : 1.0; /* OCR: longer sequences */
    if (u->kind == U_SFT) return scale * per_item * (r->t[u->task].base.n_test + 3 * r->ro.n_diag);
    if (u->kind == U_BON) return per_sample * BON_MAX * r->t[u->task].base.n_test;
    point_options(r, &r->pts[u->point], &o);
    c = per_sample * o.n_pref / o.rounds * o.n_samples; /* round 0 */
    if (r->pts[u->point].dpo)
        c += per_sample * (o.rounds - 1) * o.n_pref / o.rounds * o.n_samples +
             per_seq * o.pref_steps * 4 * 2 + per_item * (o.n_test + 3 * o.n_diag);
    if (r->pts[u->point].perpo)
        c += per_sample * (o.rounds - 1) * o.n_pref / o.rounds * o.n_samples +
             per_seq * o.pref_steps * 4 * o.n_samples + per_item * (o.n_test + 3 * o.n_diag);
    return scale * c;
}

/* The units, seed by seed (a run stopped early has every point at its first seeds). */
static void make_units(repro *r) {
    int s, i, t;
    unit *u;
    for (t = 0; t < N_TASKS; t++) {
        u = &r->units[r->n_units++];
        memset(u, 0, sizeof *u);
        u->task = t;
        u->kind = U_SFT;
        snprintf(u->name, sizeof u->name, "%s_sft.txt", t == T_GROUNDING ? "grounding" : "ocr");
    }
    for (s = 0; s < r->ro.seeds; s++) {
        int seed = r->ro.seed + s;
        u = &r->units[r->n_units++];
        memset(u, 0, sizeof *u);
        u->task = T_GROUNDING;
        u->kind = U_BON;
        u->seed = seed;
        snprintf(u->name, sizeof u->name, "grounding_best_of_n_s%d.txt", seed);
        for (i = 0; i < r->n_pts; i++) {
            const point *p = &r->pts[i];
            u = &r->units[r->n_units++];
            memset(u, 0, sizeof *u);
            u->task = p->task;
            u->kind = U_PREF;
            u->point = i;
            u->seed = seed;
            if (p->task == T_OCR)
                snprintf(u->name, sizeof u->name, "ocr_dpo-perpo_s%d.txt", seed);
            else
                snprintf(u->name, sizeof u->name,
                         "grounding_n%d_beta%g_gamma%g_margin%g_p%d_%s_s%d.txt", p->n, p->beta,
                         p->gamma, p->margin, p->n_pref,
                         p->dpo && p->perpo ? "dpo-perpo"
                         : p->dpo           ? "dpo"
                                            : "perpo",
                         seed);
        }
    }
    for (i = 0; i < r->n_units; i++) r->units[i].cost = unit_cost(r, &r->units[i]);
}

/* ---- Unit files: "key value" lines between a header and a CRC ------------------------------ */
typedef struct text {
    char *p;
    size_t n, cap;
    int err;
} text;
static void text_add(text *t, const char *fmt, ...) {
    va_list ap;
    int len;
    for (;;) {
        size_t room = t->cap - t->n;
        va_start(ap, fmt);
        len = t->p ? vsnprintf(t->p + t->n, room, fmt, ap) : -1;
        va_end(ap);
        if (t->p && len >= 0 && (size_t)len < room) break;
        if ((t->p && len < 0) || t->cap > (1u << 26)) { /* a format error, or runaway */
            t->err = 1;
            return;
        }
        {
            size_t cap = t->cap ? 2 * t->cap : 4096;
            char *q = (char *)realloc(t->p, cap);
            if (!q) {
                t->err = 1;
                return;
            }
            t->p = q;
            t->cap = cap;
        }
    }
    t->n += (size_t)len;
}

/* The diagnostics' scalars (results.json's names): FV_SCALAR + k in a table, key k in files. */
static const struct {
    const char *name;
    size_t offset; /* of the double in diag_stats */
} diag_scalars[8] = {
    { "rho_heldout", offsetof(diag_stats, rho_heldout) },
    { "rho_train", offsetof(diag_stats, rho_train) },
    { "chosen_shift_heldout", offsetof(diag_stats, chosen_heldout) },
    { "rejected_shift_heldout", offsetof(diag_stats, rejected_heldout) },
    { "chosen_shift_train", offsetof(diag_stats, chosen_train) },
    { "rejected_shift_train", offsetof(diag_stats, rejected_train) },
    { "truth_logp", offsetof(diag_stats, truth_real) },
    { "truth_logp_blank_image", offsetof(diag_stats, truth_blank) },
};
static double *diag_scalar(diag_stats *d, int k) {
    return (double *)(void *)((char *)d + diag_scalars[k].offset);
}

/* The named fields of a method record (the same list writes and reads it). */
#define MAX_FIELDS (6 * EX_MAX_METRICS + 16)
typedef struct field {
    char name[64];
    double *v;
} field;
static int record_fields(const task *tk, mres *m, field *f) {
    int n = 0, k;
    for (k = 0; k < tk->n_metrics; k++) {
        snprintf(f[n].name, sizeof f[n].name, "%s", tk->metric_key[k]);
        f[n++].v = &m->s.v[k];
    }
    snprintf(f[n].name, sizeof f[n].name, "train_seconds");
    f[n++].v = &m->train_s;
    for (k = 0; k < tk->n_metrics; k++) {
        snprintf(f[n].name, sizeof f[n].name, "sampled.%s", tk->metric_key[k]);
        f[n++].v = &m->d.sampled[k];
        snprintf(f[n].name, sizeof f[n].name, "greedy_real_image.%s", tk->metric_key[k]);
        f[n++].v = &m->d.greedy_real[k];
        snprintf(f[n].name, sizeof f[n].name, "greedy_blank_image.%s", tk->metric_key[k]);
        f[n++].v = &m->d.greedy_blank[k];
    }
    for (k = 0; k < 8; k++) {
        snprintf(f[n].name, sizeof f[n].name, "%s", diag_scalars[k].name);
        f[n++].v = diag_scalar(&m->d, k);
    }
    return n;
}

static void record_put(text *t, const task *tk, const char *prefix, const mres *m) {
    field f[MAX_FIELDS];
    mres copy = *m;
    int i, n = record_fields(tk, &copy, f);
    for (i = 0; i < n; i++) text_add(t, "%s.%s %.17g\n", prefix, f[i].name, *f[i].v);
    text_add(t, "%s.diagnostics %d\n", prefix, m->d.has);
    text_add(t, "%s.greedy %d\n", prefix, m->d.has_greedy);
}

/* A file's "key value" lines, parsed. */
typedef struct kv_file {
    char *buf;
    char **key;
    double *val;
    int n;
} kv_file;
static void kv_free(kv_file *k) {
    free(k->buf);
    free((void *)k->key);
    free(k->val);
    memset(k, 0, sizeof *k);
}
static int kv_get(const kv_file *k, const char *key, double *v) {
    int i;
    for (i = 0; i < k->n; i++)
        if (strcmp(k->key[i], key) == 0) {
            *v = k->val[i];
            return 0;
        }
    return -1;
}
static int record_get(const kv_file *kv, const task *tk, const char *prefix, mres *m) {
    field f[MAX_FIELDS];
    char key[128];
    double has, has_greedy;
    int i, n;
    memset(m, 0, sizeof *m);
    n = record_fields(tk, m, f);
    for (i = 0; i < n; i++) {
        if (snprintf(key, sizeof key, "%s.%s", prefix, f[i].name) >= (int)sizeof key ||
            kv_get(kv, key, f[i].v) != 0)
            return -1;
    }
    snprintf(key, sizeof key, "%s.diagnostics", prefix);
    if (kv_get(kv, key, &has) != 0) return -1;
    snprintf(key, sizeof key, "%s.greedy", prefix);
    if (kv_get(kv, key, &has_greedy) != 0) return -1;
    m->d.has = has != 0;
    m->d.has_greedy = has_greedy != 0;
    m->present = 1;
    return 0;
}

/* Every option the preference stage, the sampling or the scoring reads, printed (a unit made
   with any of them different is not this unit). */
static void options_sig(const options *o, char *buf, size_t cap) {
    snprintf(buf, cap,
             "test=%d test_seed=%d test_shift=%d diag=%d steps=%d rounds=%d lr=%.17g lists=%d "
             "accum=%d max_batch=%d temperature=%.17g top_p=%.17g pref_data_seed=%d n_pref=%d "
             "n=%d beta=%.17g gamma=%.17g margin=%.17g positive=%.17g nll=%.17g nll_truth=%d "
             "mean_logp=%d objective=%s",
             o->n_test, o->test_seed, o->test_shift, o->n_diag, o->pref_steps, o->rounds,
             o->pref_lr, o->lists_per_step, o->accum, o->max_batch, o->temperature, o->top_p,
             o->pref_data_seed, o->n_pref, o->n_samples, o->beta, o->gamma, o->margin, o->positive,
             o->nll, o->nll_truth, o->mean_logp, o->objective);
}

/* The first line of a unit's file: the unit and the settings it depends on: the task's (its
   checkpoint and that file's CRC, its defaults) and, for a preference unit, its point's. */
static void unit_header(const repro *r, const unit *u, char *buf, size_t cap) {
    char point_sig[800] = "";
    if (u->kind == U_PREF) {
        options o;
        point_options(r, &r->pts[u->point], &o);
        options_sig(&o, point_sig, sizeof point_sig);
    }
    snprintf(buf, cap, "perpo-repro-unit 3 %s %s%s%s\n", u->name, r->t[u->task].sig,
             u->kind == U_PREF ? " point " : "", point_sig);
}

/* Reads OUT/points/NAME into res: 0 when it is whole, its CRC right and its header this unit's
   with these settings; -1 when missing, -2 when anything is off (damaged, other settings). */
static int unit_read(const repro *r, const unit *u, unit_res *res) {
    char path[1400], head[2400], *p, *line;
    FILE *f;
    long size;
    size_t body;
    unsigned crc;
    kv_file kv;
    int i, rc = -2, nkeys = 0;
    memset(res, 0, sizeof *res);
    memset(&kv, 0, sizeof kv);
    snprintf(path, sizeof path, "%s/points/%s", r->dir, u->name);
    if (!(f = fopen(path, "rb"))) return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > (1L << 24) ||
        fseek(f, 0, SEEK_SET) != 0 || !(kv.buf = (char *)malloc((size_t)size + 1)) ||
        fread(kv.buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        kv_free(&kv);
        return -2;
    }
    fclose(f);
    kv.buf[size] = 0;
    /* the last line: "crc XXXXXXXX\n", over every byte before it */
    if (size < 14 || kv.buf[size - 1] != '\n') goto done;
    body = (size_t)size - 13;
    if (strncmp(kv.buf + body, "crc ", 4) != 0 || sscanf(kv.buf + body + 4, "%8x", &crc) != 1 ||
        crc != perpo_crc32(0, kv.buf, body) || strlen(kv.buf) != (size_t)size)
        goto done;
    kv.buf[body] = 0;
    unit_header(r, u, head, sizeof head);
    if (strncmp(kv.buf, head, strlen(head)) != 0) goto done;
    for (p = kv.buf + strlen(head); *p; p++) nkeys += *p == '\n';
    kv.key = (char **)calloc((size_t)nkeys + 1, sizeof(char *));
    kv.val = (double *)calloc((size_t)nkeys + 1, sizeof(double));
    if (!kv.key || !kv.val) goto done;
    for (line = kv.buf + strlen(head); *line; line = p + 1) {
        char *sp, *end;
        if (!(p = strchr(line, '\n'))) goto done;
        *p = 0;
        sp = strchr(line, ' ');
        if (!sp) goto done;
        *sp = 0;
        kv.key[kv.n] = line;
        kv.val[kv.n++] = strtod(sp + 1, &end); /* "a b" lines keep their first number */
    }
    {
        const task *tk = &r->t[u->task].tk;
        double v;
        if (kv_get(&kv, "seconds", &res->seconds) != 0 ||
            kv_get(&kv, "lists_kept", &res->lists_kept) != 0 || kv_get(&kv, "nolists", &v) != 0)
            goto done;
        res->nolists = v != 0;
        if (u->kind == U_SFT) {
            if (record_get(&kv, tk, "SFT", &res->m[0]) != 0) goto done;
        } else if (u->kind == U_BON) {
            for (i = 0; i < N_SIZES; i++) {
                char prefix[32];
                snprintf(prefix, sizeof prefix, "best_of_%d", list_sizes[i]);
                if (record_get(&kv, tk, prefix, &res->m[i]) != 0) goto done;
            }
        } else if (!res->nolists) {
            const point *pt = &r->pts[u->point];
            if ((pt->dpo && record_get(&kv, tk, "DPO", &res->m[0]) != 0) ||
                (pt->perpo && record_get(&kv, tk, "PerPO", &res->m[1]) != 0))
                goto done;
        }
    }
    res->ok = 1;
    rc = 0;
done:
    kv_free(&kv);
    return rc;
}

/* Writes text to path through a temporary file in the same folder, renamed into place. */
static int write_atomic(const char *path, const char *data, size_t n) {
    char tmp[1500];
    FILE *f;
    int ok;
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    if (!(f = fopen(tmp, "wb"))) return -1;
    ok = fwrite(data, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

/* The unit's file from its text (header and CRC added). */
static int unit_write(const repro *r, const unit *u, text *body) {
    char path[1400], head[2400];
    text all;
    int rc;
    memset(&all, 0, sizeof all);
    unit_header(r, u, head, sizeof head);
    text_add(&all, "%s", head);
    if (body->p) text_add(&all, "%s", body->p);
    if (all.err || body->err) {
        free(all.p);
        return -1;
    }
    text_add(&all, "crc %08x\n", (unsigned)perpo_crc32(0, all.p, all.n));
    snprintf(path, sizeof path, "%s/points/%s", r->dir, u->name);
    rc = all.err ? -1 : write_atomic(path, all.p, all.n);
    free(all.p);
    return rc;
}

/* ---- Computing a unit ---------------------------------------------------------------------- */
/* The task's SFT model, test items and diagnostics (greedy with real and blank images too). */
static int task_load(repro *r, int t) {
    task_ctx *c = &r->t[t];
    options *o = &c->base;
    const perpo_config *cfg;
    if (c->loaded) return 0;
    if (!(c->sft = sft_model(&c->tk, o, NULL))) return -1;
    cfg = perpo_model_config(c->sft);
    if (dataset_make(&c->test, &c->tk, cfg, split_test_base(o->test_seed), 0, o->n_test) != 0 ||
        dataset_make(&c->diag_items, &c->tk, cfg, split_diag_base(o->test_seed), 0, o->n_diag) !=
            0) {
        fail("test items", PERPO_ERR_NOMEM);
        return -1;
    }
    if (diag_init(&c->dg, c->sft, &c->tk, &c->diag_items, (uint64_t)o->test_seed * 7919u + 11u) !=
        PERPO_OK) {
        fprintf(stderr, "error: the diagnostics' lists of the %s SFT model\n", c->tk.name);
        return -1;
    }
    c->dg.greedy = 1;
    c->loaded = 1;
    return 0;
}

static void task_free(task_ctx *c) {
    diag_free(&c->dg);
    dataset_free(&c->diag_items);
    dataset_free(&c->test);
    perpo_model_free(c->sft);
    c->sft = NULL;
    c->loaded = 0;
}

static void put_common(text *t, double seconds, double kept, int nolists) {
    text_add(t, "seconds %.17g\n", seconds);
    text_add(t, "lists_kept %.17g\n", kept);
    text_add(t, "nolists %d\n", nolists);
}

/* Best-of-N: BON_MAX samples per test item; for each N the best-reward one of the first N. */
static int compute_bon(repro *r, const unit *u, text *out) {
    task_ctx *c = &r->t[u->task];
    const task *tk = &c->tk;
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    reward_ctx rc;
    double t0 = wall_seconds();
    perpo_status st;
    int i;
    sc.temperature = (float)c->base.temperature;
    sc.top_p = (float)c->base.top_p;
    sc.seed = (uint64_t)u->seed * 7919u + 5u;
    rc.tk = tk;
    rc.d = &c->test;
    if ((st = perpo_pref_sample(c->sft, c->test.examples, (size_t)c->test.n, BON_MAX, &sc,
                                task_reward, &rc, &set)) != PERPO_OK)
        return fail("Best-of-N samples", st);
    put_common(out, wall_seconds() - t0, 0, 0);
    for (i = 0; i < N_SIZES; i++) {
        mres m;
        char prefix[32];
        memset(&m, 0, sizeof m);
        score_best_of(tk, &c->test, &set, list_sizes[i], &m.s);
        snprintf(prefix, sizeof prefix, "best_of_%d", list_sizes[i]);
        record_put(out, tk, prefix, &m);
    }
    perpo_pref_set_free(&set);
    return 0;
}

static int compute_sft(repro *r, const unit *u, text *out) {
    task_ctx *c = &r->t[u->task];
    double t0 = wall_seconds();
    mres m;
    memset(&m, 0, sizeof m);
    if (evaluate(c->sft, &c->tk, &c->test, &m.s, NULL) != PERPO_OK ||
        diagnose(c->sft, 1, &c->tk, &c->dg, NULL, 0, &m.d) != PERPO_OK) {
        fprintf(stderr, "error: scoring the %s SFT model\n", c->tk.name);
        return 1;
    }
    put_common(out, wall_seconds() - t0, 0, 0);
    record_put(out, &c->tk, "SFT", &m);
    return 0;
}

/* One point's preference stage for one seed: the lists, then DPO and/or PerPO from the SFT
   weights, each scored and diagnosed. No list passing the margin is a result, not an error. */
static int compute_pref(repro *r, const unit *u, text *out) {
    task_ctx *c = &r->t[u->task];
    const point *p = &r->pts[u->point];
    options o;
    dataset prefs;
    run_result *rr;
    int i, rc = 1;
    point_options(r, p, &o);
    if (make_pref_prompts(&prefs, &c->tk, &o, perpo_model_config(c->sft), u->seed) != 0)
        return fail("preference prompts", PERPO_ERR_NOMEM);
    rr = (run_result *)calloc(1, sizeof *rr); /* perpo_text NULL: the answers are not kept */
    if (!rr) {
        rc = fail("results", PERPO_ERR_NOMEM);
    } else if (run_preference(&c->tk, &o, u->seed, c->sft, &c->test, &prefs, &c->dg, rr, 0) != 0) {
        if (rr->lists_sampled > 0 && rr->lists_kept == 0) { /* the margin kept no list */
            put_common(out, rr->total_s, 0, 1);
            rc = 0;
        }
    } else {
        put_common(out, rr->total_s, (double)rr->lists_kept, 0);
        for (i = 0; i < rr->n_methods; i++) {
            mres m;
            memset(&m, 0, sizeof m);
            m.s = rr->m[i].s;
            m.d = rr->m[i].diag;
            m.train_s = rr->m[i].train_s;
            record_put(out, &c->tk, rr->m[i].name, &m);
        }
        rc = 0;
    }
    free(rr);
    dataset_free(&prefs);
    return rc;
}

static const char *unit_label(const repro *r, const unit *u, char *buf, size_t cap) {
    const point *p = &r->pts[u->point];
    if (u->kind == U_SFT)
        snprintf(buf, cap, "%s SFT scores", r->t[u->task].tk.name);
    else if (u->kind == U_BON)
        snprintf(buf, cap, "grounding Best-of-N, seed %d", u->seed);
    else if (p->task == T_OCR)
        snprintf(buf, cap, "dense OCR DPO+PerPO, seed %d", u->seed);
    else
        snprintf(buf, cap, "grounding N %d beta %g gamma %g margin %g prompts %d (%s), seed %d",
                 p->n, p->beta, p->gamma, p->margin, p->n_pref,
                 p->dpo && p->perpo ? "DPO+PerPO"
                 : p->dpo           ? "DPO"
                                    : "PerPO",
                 u->seed);
    return buf;
}

/* Is experiment id in --only's comma-separated list (every one when it is empty or "all")? */
static int experiment_selected(const repro *r, const char *id) {
    return !r->ro.only || !*r->ro.only || list_has(r->ro.only, id);
}

/* Does a selected experiment read the unit? */
static int unit_needed(const repro *r, const unit *u) {
    point p;
    int s, i;
    if (u->task == T_OCR) return experiment_selected(r, "ocr_density");
    if (u->kind == U_BON) return experiment_selected(r, "list_size");
    p = sweep_point(r, &sweeps[0], r->t[T_GROUNDING].base.n_samples); /* the default point */
    if (experiment_selected(r, "reliance") && (u->kind == U_SFT || u->point == point_index(r, &p)))
        return 1;
    for (s = 0; s < N_SWEEPS; s++) {
        double xs[MAX_X];
        int nx = sweep_xs(r, &sweeps[s], xs);
        if (!experiment_selected(r, sweeps[s].id)) continue;
        if (u->kind == U_SFT) return 1;
        for (i = 0; i < nx; i++) {
            p = sweep_point(r, &sweeps[s], xs[i]);
            if (u->point == point_index(r, &p)) return 1;
        }
    }
    return 0;
}

/* Every needed unit whose file is not good, computed and written; progress with an ETA. */
static int run_units(repro *r) {
    double todo = 0, done_cost = 0, t0, spent = 0;
    int i, n_todo = 0, n_done = 0, n_have = 0, failed = 0;
    char label[256], e1[32], e2[32];
    int *need = r->need;
    for (i = 0; i < r->n_units; i++) {
        int rc;
        if (!unit_needed(r, &r->units[i])) continue;
        rc = unit_read(r, &r->units[i], &r->res[i]);
        if (rc == 0) {
            n_have++;
            continue;
        }
        if (rc == -2 && !r->ro.plan)
            fprintf(stderr, "[repro] %s: damaged or made with other settings; computing it again\n",
                    r->units[i].name);
        need[i] = 1;
        n_todo++;
        todo += r->units[i].cost;
    }
    fmt_duration(todo, e1, sizeof e1);
    fprintf(stderr,
            "[repro] %d units: %d done before, %d to compute (estimated %s on 2 idle cores)\n",
            n_have + n_todo, n_have, n_todo, e1);
    if (r->ro.plan) {
        for (i = 0; i < r->n_units; i++)
            if (need[i]) {
                fmt_duration(r->units[i].cost, e1, sizeof e1);
                printf("%-8s %s\n", e1, unit_label(r, &r->units[i], label, sizeof label));
            }
        return 0;
    }
    t0 = wall_seconds();
    for (i = 0; i < r->n_units; i++) {
        const unit *u = &r->units[i];
        text body;
        double t1;
        int rc;
        if (!need[i]) continue;
        if (r->ro.verbose)
            fprintf(stderr, "[repro] %d/%d %s ...\n", n_done + 1, n_todo,
                    unit_label(r, u, label, sizeof label));
        if (task_load(r, u->task) != 0) { return 1; }
        memset(&body, 0, sizeof body);
        t1 = wall_seconds();
        rc = u->kind == U_SFT   ? compute_sft(r, u, &body)
             : u->kind == U_BON ? compute_bon(r, u, &body)
                                : compute_pref(r, u, &body);
        if (rc == 0 && unit_write(r, u, &body) != 0) {
            fprintf(stderr, "error: cannot write %s/points/%s\n", r->dir, u->name);
            rc = 1;
        }
        free(body.p);
        if (rc == 0 && unit_read(r, u, &r->res[i]) != 0) rc = 1; /* reports read the files */
        n_done++;
        done_cost += u->cost;
        spent = wall_seconds() - t0;
        if (rc != 0) {
            failed++;
            fprintf(stderr, "error: %s failed\n", unit_label(r, u, label, sizeof label));
        }
        if (r->ro.verbose) { /* the ETA: the estimate, scaled by how this run's units went */
            char e3[32];
            fmt_duration(wall_seconds() - t1, e1, sizeof e1);
            fmt_duration(spent, e2, sizeof e2);
            fmt_duration(done_cost > 0 ? spent / done_cost * (todo - done_cost) : 0, e3, sizeof e3);
            fprintf(stderr, "[repro] %d/%d done in %s%s; %s elapsed, eta %s\n", n_done, n_todo, e1,
                    r->res[i].nolists ? " (no list passed the margin)" : "", e2, e3);
        }
    }
    return failed ? 1 : 0;
}

/* ---- Reports: read from the unit files alone ------------------------------------------------ */
static const unit_res *find_res(const repro *r, int kind, int task, int point, int seed) {
    int i;
    for (i = 0; i < r->n_units; i++) {
        const unit *u = &r->units[i];
        if (u->kind == kind && u->task == task && (kind == U_SFT || u->seed == seed) &&
            (kind != U_PREF || u->point == point))
            return r->res[i].ok ? &r->res[i] : NULL;
    }
    return NULL;
}

/* What a table cell reads from a method's record: a metric (0 ..), or a diagnostic. */
enum { FV_SAMPLED = 100, FV_GREAL = 200, FV_GBLANK = 300, FV_SCALAR = 400 };
static double mval(const mres *m, int f) {
    if (!m || !m->present) return NAN;
    if (f < FV_SAMPLED) return m->s.v[f];
    if (f >= FV_SCALAR) return m->d.has ? *diag_scalar((diag_stats *)&m->d, f - FV_SCALAR) : NAN;
    if (f >= FV_GREAL && !m->d.has_greedy) return NAN;
    return f < FV_GREAL    ? (m->d.has ? m->d.sampled[f - FV_SAMPLED] : NAN)
           : f < FV_GBLANK ? m->d.greedy_real[f - FV_GREAL]
                           : m->d.greedy_blank[f - FV_GBLANK];
}

/* An experiment's table: methods x points x seeds of records, and the two panels' fields. */
#define MAX_METHODS 4
typedef struct xtab {
    const char *id, *title, *xlabel;
    const task *tk;
    int nx, nm, seeds, drop; /* drop: x = 0, 1 are real and blank images (reliance) */
    int diag_once;           /* every x reads the same units (OCR's densities) */
    double x[MAX_X];
    const char *method[MAX_METHODS];
    const mres *m[MAX_METHODS][MAX_X][MAX_SEEDS];
    int nolists[MAX_X][MAX_SEEDS]; /* the seed's margin kept no list at the point */
    int field[2][MAX_X];
    const char *panel[2];
    double scale[2];
} xtab;

static void cell_values(const xtab *t, int mi, int xi, int f, double *v) {
    int s;
    for (s = 0; s < t->seeds; s++) v[s] = mval(t->m[mi][xi][s], f);
}
static int method_index(const xtab *t, const char *name) {
    int i;
    for (i = 0; i < t->nm; i++)
        if (strcmp(t->method[i], name) == 0) return i;
    return -1;
}

/* How many seeds' margin kept no list at point xi. */
static int nolist_seeds(const xtab *t, int xi) {
    int s, c = 0;
    for (s = 0; s < t->seeds; s++) c += t->nolists[xi][s];
    return c;
}
/* The first seed's record of method mi at point xi that has diagnostics, or NULL. */
static const mres *diag_record(const xtab *t, int mi, int xi) {
    int s;
    for (s = 0; s < t->seeds; s++)
        if (t->m[mi][xi][s] && t->m[mi][xi][s]->d.has) return t->m[mi][xi][s];
    return NULL;
}

static void json_stat(ex_json *j, const char *key, const double *v, int n) {
    double mean, sd;
    int i, c;
    c = ex_mean_sd(v, n, &mean, &sd);
    ex_json_key(j, key);
    ex_json_object_begin(j);
    ex_json_kv_number(j, "mean", mean);
    ex_json_kv_number(j, "sd", sd);
    ex_json_kv_int(j, "n", c); /* the seeds with a value (null: no model, no list kept) */
    ex_json_key(j, "values");
    ex_json_array_begin(j);
    for (i = 0; i < n; i++) ex_json_number(j, v[i]);
    ex_json_array_end(j);
    ex_json_object_end(j);
}

/* "a - b" of field f at point xi, paired over the seeds. */
static void paired(const xtab *t, int a, int b, int xi, int f, double *d) {
    double va[MAX_SEEDS], vb[MAX_SEEDS];
    int s;
    cell_values(t, a, xi, f, va);
    cell_values(t, b, xi, f, vb);
    for (s = 0; s < t->seeds; s++) d[s] = va[s] - vb[s];
}
/* The method pairs compared: PerPO against each other method but Best-of-N, DPO against SFT. */
static int pair_list(const xtab *t, int pa[][2]) {
    int n = 0, p = method_index(t, "PerPO"), d = method_index(t, "DPO"), s = method_index(t, "SFT");
    if (p >= 0 && d >= 0) pa[n][0] = p, pa[n++][1] = d;
    if (p >= 0 && s >= 0) pa[n][0] = p, pa[n++][1] = s;
    if (d >= 0 && s >= 0) pa[n][0] = d, pa[n++][1] = s;
    return n;
}

static void json_settings(ex_json *j, const repro *r, const task_ctx *c) {
    const options *o = &c->base;
    int s;
    ex_json_key(j, "settings");
    ex_json_object_begin(j);
    ex_json_kv_int(j, "quick", r->ro.quick);
    ex_json_key(j, "seeds");
    ex_json_array_begin(j);
    for (s = 0; s < r->ro.seeds; s++) ex_json_int(j, r->ro.seed + s);
    ex_json_array_end(j);
    ex_json_kv_string(j, "sft_checkpoint", o->sft_ckpt);
    ex_json_kv_int(j, "test", o->n_test);
    ex_json_kv_int(j, "test_seed", o->test_seed);
    ex_json_kv_int(j, "diag", o->n_diag);
    ex_json_kv_int(j, "n", o->n_samples);
    ex_json_kv_number(j, "beta", o->beta);
    ex_json_kv_number(j, "gamma", o->gamma);
    ex_json_kv_number(j, "margin", o->margin);
    ex_json_kv_int(j, "pref_prompts", o->n_pref);
    ex_json_kv_int(j, "pref_data_seed", o->pref_data_seed);
    ex_json_kv_int(j, "rounds", o->rounds);
    ex_json_kv_int(j, "pref_steps", o->pref_steps);
    ex_json_kv_number(j, "pref_lr", o->pref_lr);
    ex_json_kv_int(j, "lists_per_step", o->lists_per_step);
    ex_json_kv_number(j, "temperature", o->temperature);
    ex_json_kv_number(j, "top_p", o->top_p);
    ex_json_object_end(j);
}

/* OUT/ID.json: every point, method and seed, with the diagnostics and the paired differences. */
static int write_json(const repro *r, const xtab *t, const task_ctx *c, const char *path) {
    const task *tk = t->tk;
    char *buf = NULL, key[96];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ex_json j;
    double v[MAX_SEEDS];
    int xi, mi, k, pa[3][2], np = pair_list(t, pa), rc;
    if (!f) return -1;
    ex_json_init(&j, f);
    ex_json_object_begin(&j);
    ex_json_kv_string(&j, "experiment", t->id);
    ex_json_kv_string(&j, "title", t->title);
    ex_json_kv_string(&j, "task", tk->name);
    ex_json_kv_string(&j, "x", t->xlabel);
    ex_json_kv_string(&j, "main_metric", t->panel[0]);
    json_settings(&j, r, c);
    ex_json_key(&j, "points");
    ex_json_array_begin(&j);
    for (xi = 0; xi < t->nx; xi++) {
        ex_json_object_begin(&j);
        ex_json_kv_number(&j, "x", t->x[xi]);
        ex_json_kv_int(&j, "seeds_where_no_list_passed_the_margin", nolist_seeds(t, xi));
        ex_json_key(&j, "methods");
        ex_json_array_begin(&j);
        for (mi = 0; mi < t->nm; mi++) {
            const mres *m0 = diag_record(t, mi, xi);
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "method", t->method[mi]);
            cell_values(t, mi, xi, t->field[0][xi], v);
            json_stat(&j, "value", v, t->seeds);
            for (k = 0; k < tk->n_metrics; k++) {
                cell_values(t, mi, xi, k, v);
                json_stat(&j, tk->metric_key[k], v, t->seeds);
            }
            if (m0) {
                ex_json_key(&j, "diagnostics");
                ex_json_object_begin(&j);
                for (k = 0; k < tk->n_metrics; k++) {
                    snprintf(key, sizeof key, "sampled_%s", tk->metric_key[k]);
                    cell_values(t, mi, xi, FV_SAMPLED + k, v);
                    json_stat(&j, key, v, t->seeds);
                }
                for (k = 0; k < tk->n_metrics && m0->d.has_greedy; k++) {
                    snprintf(key, sizeof key, "greedy_real_image_%s", tk->metric_key[k]);
                    cell_values(t, mi, xi, FV_GREAL + k, v);
                    json_stat(&j, key, v, t->seeds);
                    snprintf(key, sizeof key, "greedy_blank_image_%s", tk->metric_key[k]);
                    cell_values(t, mi, xi, FV_GBLANK + k, v);
                    json_stat(&j, key, v, t->seeds);
                }
                for (k = 0; k < 8; k++) {
                    cell_values(t, mi, xi, FV_SCALAR + k, v);
                    json_stat(&j, diag_scalars[k].name, v, t->seeds);
                }
                ex_json_object_end(&j);
            }
            ex_json_object_end(&j);
        }
        ex_json_array_end(&j);
        ex_json_key(&j, "paired");
        ex_json_object_begin(&j);
        for (k = 0; k < np; k++) {
            snprintf(key, sizeof key, "%s - %s", t->method[pa[k][0]], t->method[pa[k][1]]);
            paired(t, pa[k][0], pa[k][1], xi, t->field[0][xi], v);
            json_stat(&j, key, v, t->seeds);
        }
        ex_json_object_end(&j);
        ex_json_object_end(&j);
    }
    ex_json_array_end(&j);
    if (t->drop) { /* reliance: real minus blank, per method and paired */
        int pn;
        ex_json_key(&j, "drop_real_minus_blank");
        ex_json_object_begin(&j);
        for (pn = 0; pn < 2; pn++) {
            ex_json_key(&j, t->panel[pn]);
            ex_json_object_begin(&j);
            for (mi = 0; mi < t->nm; mi++) {
                double a[MAX_SEEDS], b[MAX_SEEDS];
                int s;
                cell_values(t, mi, 0, t->field[pn][0], a);
                cell_values(t, mi, 1, t->field[pn][1], b);
                for (s = 0; s < t->seeds; s++) v[s] = a[s] - b[s];
                json_stat(&j, t->method[mi], v, t->seeds);
            }
            for (k = 0; k < np; k++) {
                double a0[MAX_SEEDS], a1[MAX_SEEDS];
                int s;
                paired(t, pa[k][0], pa[k][1], 0, t->field[pn][0], a0);
                paired(t, pa[k][0], pa[k][1], 1, t->field[pn][1], a1);
                for (s = 0; s < t->seeds; s++) v[s] = a0[s] - a1[s];
                snprintf(key, sizeof key, "%s - %s", t->method[pa[k][0]], t->method[pa[k][1]]);
                json_stat(&j, key, v, t->seeds);
            }
            ex_json_object_end(&j);
        }
        ex_json_object_end(&j);
    }
    ex_json_object_end(&j);
    rc = ex_json_finish(&j);
    rc = fclose(f) != 0 || rc ? -1 : write_atomic(path, buf, len);
    free(buf);
    return rc;
}

/* OUT/ID.svg: the two panels, mean over the seeds with their sd as error bars. */
static int write_svg(const xtab *t, const char *path) {
    float xs[MAX_METHODS][MAX_X], ys[2][MAX_METHODS][MAX_X], sd[2][MAX_METHODS][MAX_X];
    const float *px[MAX_METHODS], *py[2][MAX_METHODS], *ps[2][MAX_METHODS];
    const float *const *sds[2];
    int counts[MAX_METHODS], pn, mi, xi;
    ex_plot_panel p[2];
    char *buf = NULL;
    size_t len = 0;
    FILE *f;
    int rc;
    for (pn = 0; pn < 2; pn++)
        for (mi = 0; mi < t->nm; mi++) {
            for (xi = 0; xi < t->nx; xi++) {
                double v[MAX_SEEDS], mean, s;
                cell_values(t, mi, xi, t->field[pn][xi], v);
                ex_mean_sd(v, t->seeds, &mean, &s);
                xs[mi][xi] = (float)t->x[xi];
                ys[pn][mi][xi] = (float)(mean * t->scale[pn]);
                sd[pn][mi][xi] = (float)(s * t->scale[pn]);
            }
            px[mi] = xs[mi];
            py[pn][mi] = ys[pn][mi];
            ps[pn][mi] = sd[pn][mi];
            counts[mi] = t->nx;
        }
    for (pn = 0; pn < 2; pn++) {
        p[pn].title = t->panel[pn];
        p[pn].xlabel = t->xlabel;
        p[pn].ylabel = t->panel[pn];
        p[pn].n_series = t->nm;
        p[pn].names = t->method;
        p[pn].xs = px;
        p[pn].ys = py[pn];
        p[pn].counts = counts;
        sds[pn] = ps[pn];
    }
    if (!(f = open_memstream(&buf, &len))) return -1;
    rc = ex_svg_plot_panels_sd_file(f, t->title, 2, p, sds);
    rc = fclose(f) != 0 || rc ? -1 : write_atomic(path, buf, len);
    free(buf);
    return rc;
}

/* The experiment's section of OUT/README.md. */
static void write_md(const xtab *t, text *md) {
    static const struct {
        const char *head;
        int f, digits, sign;
    } dcol[] = { { "rho held-out", FV_SCALAR + 0, 3, 1 },
                 { "chosen held-out", FV_SCALAR + 2, 2, 1 },
                 { "rejected held-out", FV_SCALAR + 3, 2, 1 },
                 { "log p(truth)", FV_SCALAR + 6, 2, 0 },
                 { "blank image", FV_SCALAR + 7, 2, 0 } };
    const task *tk = t->tk;
    char cell[96];
    double v[MAX_SEEDS];
    int xi, mi, k, pa[3][2], np = pair_list(t, pa), mm = tk->main_metric,
                             dg = t->scale[0] == 100 ? 1 : 3;
    text_add(md,
             "\n## %s\n\n%s (mean ± sd over %d seed%s; differences paired over the seeds). "
             "Data: [%s.json](%s.json), figure: [%s.svg](%s.svg).\n\n",
             t->title, t->panel[0], t->seeds, t->seeds > 1 ? "s" : "", t->id, t->id, t->id, t->id);
    text_add(md, "| %s |", t->xlabel);
    for (mi = 0; mi < t->nm; mi++) text_add(md, " %s |", t->method[mi]);
    for (k = 0; k < np; k++) text_add(md, " %s − %s |", t->method[pa[k][0]], t->method[pa[k][1]]);
    text_add(md, "\n|---|");
    for (k = 0; k < t->nm + np; k++) text_add(md, "---|");
    text_add(md, "\n");
    for (xi = 0; xi < t->nx; xi++) {
        int nl = nolist_seeds(t, xi);
        if (nl == t->seeds)
            text_add(md, "| %g (no list kept) |", t->x[xi]);
        else if (nl)
            text_add(md, "| %g (no list kept for %d of %d seeds) |", t->x[xi], nl, t->seeds);
        else
            text_add(md, "| %g |", t->x[xi]);
        for (mi = 0; mi < t->nm; mi++) {
            cell_values(t, mi, xi, t->field[0][xi], v);
            ex_format_mean_sd(v, t->seeds, t->scale[0], dg, 0, cell, sizeof cell);
            text_add(md, " %s |", cell);
        }
        for (k = 0; k < np; k++) {
            paired(t, pa[k][0], pa[k][1], xi, t->field[0][xi], v);
            ex_format_mean_sd(v, t->seeds, t->scale[0], dg, 1, cell, sizeof cell);
            text_add(md, " %s |", cell);
        }
        text_add(md, "\n");
    }
    if (t->drop) return;
    /* the diagnostics of the trained models */
    text_add(md,
             "\nWhat training changed, on the diagnostics' held-out items (examples/diagnostics.h):"
             "\n\n| %s | method | sampled %s |",
             t->xlabel, tk->metric_head[mm]);
    for (k = 0; k < (int)(sizeof dcol / sizeof dcol[0]); k++) text_add(md, " %s |", dcol[k].head);
    text_add(md, "\n|---|---|---|");
    for (k = 0; k < (int)(sizeof dcol / sizeof dcol[0]); k++) text_add(md, "---|");
    text_add(md, "\n");
    for (xi = 0; xi < t->nx; xi++)
        for (mi = 0; mi < t->nm; mi++) {
            const mres *m0 = diag_record(t, mi, xi);
            if (!m0 || (xi > 0 && (t->diag_once || strcmp(t->method[mi], "SFT") == 0))) continue;
            if (t->diag_once)
                text_add(md, "| all | %s |", t->method[mi]);
            else
                text_add(md, "| %g | %s |", t->x[xi], t->method[mi]);
            cell_values(t, mi, xi, FV_SAMPLED + mm, v);
            ex_format_mean_sd(v, t->seeds, tk->metric_scale[mm],
                              tk->metric_scale[mm] == 100 ? 1 : 3, 0, cell, sizeof cell);
            text_add(md, " %s |", cell);
            for (k = 0; k < (int)(sizeof dcol / sizeof dcol[0]); k++) {
                cell_values(t, mi, xi, dcol[k].f, v);
                ex_format_mean_sd(v, t->seeds, 1, dcol[k].digits, dcol[k].sign, cell, sizeof cell);
                text_add(md, " %s |", cell);
            }
            text_add(md, "\n");
        }
}

/* The records of a grounding point (NULL where a unit or a method is missing) into column mi. */
static void fill_point(const repro *r, xtab *t, int mi, int xi, const point *p, int which) {
    int s, pi = point_index(r, p);
    for (s = 0; s < t->seeds; s++) {
        const unit_res *u = pi < 0 ? NULL : find_res(r, U_PREF, p->task, pi, r->ro.seed + s);
        t->m[mi][xi][s] = u && u->m[which].present ? &u->m[which] : NULL;
        if (u && u->nolists) t->nolists[xi][s] = 1;
    }
}
static void fill_sft(const repro *r, xtab *t, int mi, int xi, int task) {
    const unit_res *u = find_res(r, U_SFT, task, 0, 0);
    int s;
    for (s = 0; s < t->seeds; s++) t->m[mi][xi][s] = u ? &u->m[0] : NULL;
}

static void table_init(xtab *t, const char *id, const char *title, const char *xlabel,
                       const task *tk, int seeds, const char *panel0, double scale0,
                       const char *panel1, double scale1) {
    memset(t, 0, sizeof *t);
    t->id = id;
    t->title = title;
    t->xlabel = xlabel;
    t->tk = tk;
    t->seeds = seeds;
    t->panel[0] = panel0;
    t->panel[1] = panel1;
    t->scale[0] = scale0;
    t->scale[1] = scale1;
}
/* Columns SFT, DPO and PerPO, all of point p, at each of the table's nx points. */
static void table_three(const repro *r, xtab *t, int task, const point *p) {
    int xi;
    t->method[0] = "SFT";
    t->method[1] = "DPO";
    t->method[2] = "PerPO";
    t->nm = 3;
    for (xi = 0; xi < t->nx; xi++) {
        fill_sft(r, t, 0, xi, task);
        fill_point(r, t, 1, xi, p, 0);
        fill_point(r, t, 2, xi, p, 1);
    }
}

/* A complete table has every record it reads (a point whose margin kept no list counts). */
static int table_complete(const xtab *t) {
    int mi, xi, s;
    for (mi = 0; mi < t->nm; mi++)
        for (xi = 0; xi < t->nx; xi++)
            for (s = 0; s < t->seeds; s++)
                if (!t->m[mi][xi][s] && !t->nolists[xi][s]) return 0;
    return 1;
}

static int write_experiment(const repro *r, const xtab *t, const task_ctx *c, text *md) {
    char path[1400];
    if (!table_complete(t)) {
        fprintf(stderr, "[repro] %s: incomplete (a unit failed); not written\n", t->id);
        return 1;
    }
    snprintf(path, sizeof path, "%s/%s.json", r->dir, t->id);
    if (write_json(r, t, c, path) != 0) return fail(path, PERPO_ERR_IO);
    snprintf(path, sizeof path, "%s/%s.svg", r->dir, t->id);
    if (write_svg(t, path) != 0) return fail(path, PERPO_ERR_IO);
    write_md(t, md);
    printf("wrote %s/%s.json, %s.svg\n", r->dir, t->id, t->id);
    return 0;
}

static int write_reports(repro *r) {
    const task *gt = &r->t[T_GROUNDING].tk, *ot = &r->t[T_OCR].tk;
    const options *gb = &r->t[T_GROUNDING].base;
    xtab *t = (xtab *)calloc(1, sizeof *t);
    text md;
    char path[1400];
    int s, xi, bad = 0;
    if (!t) return fail("tables", PERPO_ERR_NOMEM);
    memset(&md, 0, sizeof md);
    text_add(&md,
             "# PerPO's analyses in miniature (make repro)\n\n"
             "Written by examples/repro.c (docs/repro.md says what each experiment is). Grounding: "
             "from %s, %d held-out scenes (test seed %d), the regime of `grounding`'s defaults "
             "(rounds %d over the checkpoint's own first %d scenes, %d steps of %d lists at "
             "lr %g, N %d, margin %g, beta %g, gamma %g), each sweep changing one setting. "
             "Diagnostics on %d other held-out scenes. Best-of-N: the best of the first N of %d "
             "samples of the SFT model per test scene (oracle reward).%s\n",
             gb->sft_ckpt, gb->n_test, gb->test_seed, gb->rounds, gb->n_pref, gb->pref_steps,
             r->ro.quick ? 2 : 4, gb->pref_lr, gb->n_samples, gb->margin, gb->beta, gb->gamma,
             gb->n_diag, BON_MAX,
             r->ro.quick ? "\n\n**--quick: a tiny run that tests the machinery; the numbers mean "
                           "nothing.**"
                         : "");
    for (s = 0; s < N_SWEEPS; s++) {
        const sweep *sw = &sweeps[s];
        if (!experiment_selected(r, sw->id)) continue;
        table_init(t, sw->id, sw->title, sw->xlabel, gt, r->ro.seeds, "Acc@0.5 (%)", 100,
                   "mean IoU", 1);
        t->nx = sweep_xs(r, sw, t->x);
        t->method[t->nm++] = "SFT";
        if (sw->dpo) t->method[t->nm++] = "DPO";
        t->method[t->nm++] = "PerPO";
        if (sw->bon) t->method[t->nm++] = "Best-of-N (oracle)";
        for (xi = 0; xi < t->nx; xi++) {
            point p = sweep_point(r, sw, t->x[xi]);
            int mi = 0, k;
            t->field[0][xi] = GR_ACC;
            t->field[1][xi] = GR_IOU;
            fill_sft(r, t, mi++, xi, T_GROUNDING);
            if (sw->dpo) fill_point(r, t, mi++, xi, &p, 0);
            fill_point(r, t, mi++, xi, &p, 1);
            if (sw->bon) {
                int si;
                for (k = 0; k < N_SIZES; k++)
                    if (list_sizes[k] == (int)t->x[xi]) break;
                for (si = 0; si < t->seeds; si++) {
                    const unit_res *u = find_res(r, U_BON, T_GROUNDING, 0, r->ro.seed + si);
                    t->m[mi][xi][si] = u ? &u->m[k] : NULL;
                }
            }
        }
        bad |= write_experiment(r, t, &r->t[T_GROUNDING], &md);
    }
    if (experiment_selected(r, "reliance")) {
        point p = sweep_point(r, &sweeps[0], gb->n_samples);
        table_init(t, "reliance",
                   "Grounding: reliance on the image, real (0) vs blank (1) image (paper Fig. 1c)",
                   "image: 0 real, 1 blank", gt, r->ro.seeds, "greedy mean IoU", 1,
                   "log p(true answer)", 1);
        t->drop = 1;
        t->nx = 2;
        t->x[1] = 1;
        t->field[0][0] = FV_GREAL + GR_IOU;
        t->field[0][1] = FV_GBLANK + GR_IOU;
        t->field[1][0] = FV_SCALAR + 6; /* truth_logp */
        t->field[1][1] = FV_SCALAR + 7; /* with a blank image */
        table_three(r, t, T_GROUNDING, &p);
        if (!write_experiment(r, t, &r->t[T_GROUNDING], &md)) { /* the drops, as a table */
            int pn, mi;
            text_add(&md,
                     "\nThe drop from the real to the blank image (real − blank; larger: "
                     "relies more on the image):\n\n| method | %s drop | %s drop |\n|---|---|"
                     "---|\n",
                     t->panel[0], t->panel[1]);
            for (mi = 0; mi < t->nm; mi++) {
                text_add(&md, "| %s |", t->method[mi]);
                for (pn = 0; pn < 2; pn++) {
                    double a[MAX_SEEDS], b[MAX_SEEDS], v[MAX_SEEDS];
                    char cell[96];
                    cell_values(t, mi, 0, t->field[pn][0], a);
                    cell_values(t, mi, 1, t->field[pn][1], b);
                    for (s = 0; s < t->seeds; s++) v[s] = a[s] - b[s];
                    ex_format_mean_sd(v, t->seeds, 1, pn ? 2 : 3, 0, cell, sizeof cell);
                    text_add(&md, " %s |", cell);
                }
                text_add(&md, "\n");
            }
        } else
            bad = 1;
    }
    if (experiment_selected(r, "ocr_density")) {
        point p;
        memset(&p, 0, sizeof p);
        p.task = T_OCR;
        table_init(t, "ocr_density",
                   "Dense OCR: edit distance by text density (paper Fig. 5; lower is better)",
                   "text density (0: one short line ... 3: a full page)", ot, r->ro.seeds,
                   "edit distance", 1, "F1", 1);
        t->nx = OCR_N_DENSITY;
        t->diag_once = 1;
        for (xi = 0; xi < t->nx; xi++) {
            t->x[xi] = xi;
            t->field[0][xi] = OCR_NED_D0 + xi;
            t->field[1][xi] = OCR_F1_D0 + xi;
        }
        table_three(r, t, T_OCR, &p);
        bad |= write_experiment(r, t, &r->t[T_OCR], &md);
    }
    snprintf(path, sizeof path, "%s/README.md", r->dir);
    if (md.err || write_atomic(path, md.p, md.n) != 0)
        bad = fail(path, PERPO_ERR_IO);
    else
        printf("wrote %s\n", path);
    free(md.p);
    free(t);
    return bad;
}

/* ---- main ---------------------------------------------------------------------------------- */
/* The CRC-32 of a whole file, or 0 when it cannot be read (loading it fails later, loudly). */
static uint32_t file_crc(const char *path) {
    unsigned char chunk[1 << 16];
    uint32_t crc = 0;
    size_t n;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) crc = perpo_crc32(crc, chunk, n);
    if (ferror(f)) crc = 0;
    fclose(f);
    return crc;
}

/* The settings every unit of the task depends on: its checkpoint (path and contents: `make
   pretrain` rewrites it in place) and what the SFT scores and Best-of-N read (the held-out items
   and the sampling). A preference unit adds its point's options (unit_header). */
static void task_sig(repro *r, int t) {
    const options *o = &r->t[t].base;
    snprintf(r->t[t].sig, sizeof r->t[t].sig,
             "ckpt=%s ckpt_crc=%08x test=%d test_seed=%d test_shift=%d diag=%d temperature=%.17g "
             "top_p=%.17g bon=%d",
             o->sft_ckpt, (unsigned)file_crc(o->sft_ckpt), o->n_test, o->test_seed, o->test_shift,
             o->n_diag, o->temperature, o->top_p, BON_MAX);
}

int main(int argc, char **argv) {
    static repro r; /* large: the units' records */
    repro_opts *ro = &r.ro;
    const char *description =
        "The paper's analyses in miniature, from the committed SFT checkpoints: list size,\n"
        "reliance on the image, beta, gamma, margin, data size (grounding) and text density\n"
        "(dense OCR), each point for several preference seeds. Resumable: finished units are\n"
        "files under OUT/points/ that a later run reuses (docs/repro.md).\n"
        "--quick (no value): every experiment at a tiny size, seconds.";
    char **args = (char **)malloc(((size_t)argc + 1) * sizeof(char *));
    int i, n = 0, rc;
    ex_option spec[] = {
        { "--out", "output folder (OUT/points/: one file per finished unit)", 's', &ro->out, 0, 0 },
        { "--only",
          "comma-separated experiments to run and report: list_size, reliance, beta, gamma, "
          "margin, data, ocr_density (default all)",
          's', &ro->only, 0, 0 },
        { "--seeds", "preference seeds per point (seed, seed+1, ...)", 'i', &ro->seeds, 1,
          MAX_SEEDS },
        { "--seed", "the first preference seed", 'i', &ro->seed, 0, 1e6 },
        { "--test", "grounding: held-out test scenes per point", 'i', &ro->n_test, 1, 1e6 },
        { "--ocr-test", "dense OCR: held-out test pages", 'i', &ro->ocr_test, 4, 1e6 },
        { "--diag", "held-out items of the diagnostics", 'i', &ro->n_diag, 1, 1e6 },
        { "--pref-steps", "grounding: preference steps of every point", 'i', &ro->pref_steps, 1,
          1e7 },
        { "--ocr-pref-steps", "dense OCR: preference steps", 'i', &ro->ocr_pref_steps, 1, 1e7 },
        { "--threads", "OpenMP threads (0 = the runtime's default)", 'i', &ro->threads, 0, 256 },
        { "--verbose", "0 quiet, 1 a line per unit with the ETA, 2 the training progress too", 'i',
          &ro->verbose, 0, 2 },
        { "--plan", "1: list the units still to compute with their estimated time, run none", 'i',
          &ro->plan, 0, 1 },
    };
    if (!args) return 2;
    memset(ro, 0, sizeof *ro);
    for (i = 0; i < argc; i++) /* --quick takes no value */
        if (i > 0 && strcmp(argv[i], "--quick") == 0)
            ro->quick = 1;
        else
            args[n++] = argv[i];
    args[n] = NULL;
    ro->out = ro->quick ? "build/repro_quick" : "results/repro";
    ro->seeds = ro->quick ? 2 : 3;
    ro->seed = 1;
    ro->n_test = ro->quick ? 8 : 1000;
    ro->ocr_test = ro->quick ? 8 : 1000;
    ro->n_diag = ro->quick ? 2 : 256;
    ro->pref_steps = ro->quick ? 2 : 300; /* the demo's 600 with 3 seeds: 2.6 h (docs/repro.md) */
    ro->ocr_pref_steps = ro->quick ? 1 : 100;
    ro->verbose = 1;
    rc = ex_options_parse(n, args, spec, sizeof spec / sizeof spec[0], description, stderr);
    free(args);
    if (rc) return rc > 0 ? 0 : 2;
    {
        static const char *const ids[] = { "list_size", "reliance", "beta",       "gamma",
                                           "margin",    "data",     "ocr_density" };
        if (ro->only && !list_known(ro->only, ids, (int)(sizeof ids / sizeof ids[0]))) {
            fprintf(stderr,
                    "bad --only \"%s\" (comma-separated: list_size, reliance, beta, gamma, "
                    "margin, data, ocr_density)\n",
                    ro->only);
            return 2;
        }
    }
#ifdef _OPENMP
    if (ro->threads > 0) omp_set_num_threads(ro->threads);
#endif
    r.t[T_GROUNDING].tk = grounding_task();
    r.t[T_OCR].tk = dense_ocr_task();
    for (i = 0; i < N_TASKS; i++) {
        task_options(ro, i, &r.t[i].base);
        task_sig(&r, i);
    }
    if (strlen(ro->out) >= sizeof r.dir) {
        fprintf(stderr, "error: --out: a folder name of at most %d characters\n",
                (int)sizeof r.dir - 1);
        return 2;
    }
    snprintf(r.dir, sizeof r.dir, "%s", ro->out);
    {
        char points[1100];
        snprintf(points, sizeof points, "%s/points", r.dir);
        if (!ro->plan && (make_dirs(r.dir) != 0 || make_dirs(points) != 0)) {
            fprintf(stderr, "error: cannot create %s\n", points);
            return 1;
        }
    }
    make_points(&r);
    make_units(&r);
    rc = run_units(&r);
    for (i = 0; i < N_TASKS; i++) task_free(&r.t[i]);
    if (ro->plan) return 0;
    rc |= write_reports(&r);
    return rc ? 1 : 0;
}
