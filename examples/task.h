/* examples/task.h — what a task supplies and what is done with it, whatever the task: the task
 * interface (its model, data, reward and metrics: grounding.c and dense_ocr.c each fill one),
 * the data (synthetic splits drawn by seed, or the user's files with --data), and greedy
 * evaluation and the Best-of-N oracle on it. Part of the experiment headers
 * (examples/experiment.h lists them); needs perpo.h (declarations) first. */
#ifndef PERPO_EXAMPLES_TASK_H
#define PERPO_EXAMPLES_TASK_H

#include "common.h"
#include "options.h"

/* ---- The task interface ------------------------------------------------------------------ */
#define EX_MAX_METRICS 24
typedef struct dataset dataset;

typedef struct task {
    const char *name;          /* results.json's "task"; examples/models/NAME_sft.ckpt */
    const char *title;         /* heading of the table */
    const char *pretrain_make; /* the make target that writes the default SFT checkpoint */
    perpo_config cfg;          /* the model trained from scratch (a checkpoint has its own) */
    size_t text_cap;           /* bytes of a prompt, answer or response buffer (> max_text) */
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

/* ---- Data splits: seed bases that never meet -------------------------------------------- */
/* Training examples of a seed (pretraining; --pref-data-seed), and a validation split that no
   training run and no test set draws from. */
static uint64_t split_train_base(int seed) { return ex_hash64((uint64_t)seed, 0x7072657472ull); }
static uint64_t split_val_base(int val_seed) {
    return ex_hash64((uint64_t)val_seed, 0x76616c6964ull);
}
/* The preference prompts of a seed, and the held-out test items of a test seed. */
static uint64_t split_pref_base(int seed) { return ex_hash64((uint64_t)seed, 0x70726566ull); }
static uint64_t split_test_base(int test_seed) {
    return ex_hash64((uint64_t)test_seed, 0x74657374ull);
}
/* The diagnostics' held-out items: drawn like the test items, never the same ones. */
static uint64_t split_diag_base(int test_seed) {
    return ex_hash64((uint64_t)test_seed, 0x64696167ull);
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

/* Scores, for every item of set (sampled from d in order), its highest-reward answer among its
   first k samples (the first one on ties). */
static void score_best_of(const task *tk, const dataset *d, const perpo_pref_set *set, int k,
                          scores *out) {
    double sum[EX_MAX_METRICS] = { 0 }, weight[EX_MAX_METRICS] = { 0 };
    size_t i;
    int j;
    for (i = 0; i < set->n_lists; i++) {
        const perpo_pref_list *l = &set->lists[i];
        int best = 0;
        for (j = 1; j < k; j++)
            if (l->rewards[j] > l->rewards[best]) best = j;
        tk->score(l->responses[best], strlen(l->responses[best]), ds_answer(d, (int)i), d->group[i],
                  sum, weight);
    }
    scores_finish(tk, sum, weight, out);
}

/* Best-of-N with the oracle reward: n_samples answers per item, the highest-reward one scored. */
static perpo_status best_of_n(perpo_model *m, const task *tk, const dataset *d, const options *o,
                              uint64_t seed, scores *out) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    reward_ctx rc;
    perpo_status st;
    sc.temperature = (float)o->temperature;
    sc.top_p = (float)o->top_p;
    sc.seed = seed;
    rc.tk = tk;
    rc.d = d;
    if ((st = perpo_pref_sample(m, d->examples, (size_t)d->n, o->n_samples, &sc, task_reward, &rc,
                                &set)) != PERPO_OK)
        return st;
    score_best_of(tk, d, &set, o->n_samples, out);
    perpo_pref_set_free(&set);
    return PERPO_OK;
}

#endif /* PERPO_EXAMPLES_TASK_H */
