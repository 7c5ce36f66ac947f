/* dense_ocr.c — PerPO end to end on dense OCR, on rendered synthetic pages.
 *
 * One run: SFT from scratch on pages at four text densities (one short line up to a page that
 * fills the image) -> N transcriptions sampled per training page -> reward 1 - normalized
 * edit distance -> lists with a large enough reward margin -> reference log-probs of the frozen
 * SFT model -> DPO and PerPO from the same SFT weights on the same lists for the same number
 * of steps -> greedy transcription of held-out pages -> edit distance, F1, precision, recall
 * and BLEU for each method, overall and per density. Writes results.json, a picture of test
 * pages with the SFT and PerPO transcriptions, and the training curves as SVG.
 *
 *   dense_ocr [--seed S] [--test-seed T] [--seeds K] [--n N] [--out DIR] ...   (--help)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include "pipeline.h"


#define IMG 64                  /* pages are IMG x IMG RGB: a 10 x 7 character grid */
#define IMG_FLOATS (IMG * IMG * 3)
#define N_DENSITY 4             /* densities 0..3; page i has density i % 4 */
#define MAX_CHARS 60            /* the densest page's transcription (common.h's default cap) */
#define MAX_TEXT 68             /* BOS + prompt + SEP + 60 characters + EOS */
#define TEXT_CAP 72
#define PROMPT "read"

static void set_defaults(options *o) {
    o->description = "PerPO on synthetic dense OCR: SFT, then DPO and PerPO from the same SFT weights on\n"
                     "the same sampled lists (reward 1 - normalized edit distance), evaluated on held-out pages.";
    o->max_batch = 32;
    o->seed = 1; o->test_seed = 555; o->seeds = 1;
    /* sized so that one seed stays within 15 minutes on 2 cores; N = 5 as in the paper */
    o->n_samples = 5; o->sft_steps = 600; o->pref_steps = 100;
    o->n_train = 4000; o->n_pref = 320; o->n_test = 300;
    o->threads = 0; o->batch = 32; o->lists_per_step = 6; o->verbose = 1;
    /* the same preference settings as grounding.c (README, "What we learned") */
    o->beta = 1.0; o->gamma = 0.5; o->temperature = 1.0; o->top_p = 0.8; o->margin = 0.04;
    o->nll = 1.0; o->mean_logp = 1;
    o->sft_lr = 2e-3; o->pref_lr = 3e-4;
    o->objective = "dpo,perpo"; o->out = "results/dense_ocr"; o->sft_ckpt = NULL; o->data = NULL;
}

/* ---- Data: pages, their images and transcriptions --------------------------------------- */
typedef struct dataset {
    int n;
    float *images;               /* n * IMG_FLOATS */
    char (*text)[MAX_CHARS + 1]; /* ground-truth transcription, '\n' between lines */
    int *density;
    perpo_example *examples;
} dataset;

static void dataset_free(dataset *d) {
    free(d->images); free(d->text); free(d->density); free(d->examples);
    memset(d, 0, sizeof *d);
}

static int dataset_alloc(dataset *d, int n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->images = (float *)malloc((size_t)n * IMG_FLOATS * sizeof(float));
    d->text = (char (*)[MAX_CHARS + 1])calloc((size_t)n, sizeof *d->text);
    d->density = (int *)calloc((size_t)n, sizeof(int));
    d->examples = (perpo_example *)calloc((size_t)n, sizeof *d->examples);
    if (!d->images || !d->text || !d->density || !d->examples) { dataset_free(d); return -1; }
    return 0;
}

static void dataset_link(dataset *d, int i) {
    d->examples[i].image = d->images + (size_t)i * IMG_FLOATS;
    d->examples[i].prompt = PROMPT;
    d->examples[i].response = d->text[i];
}

/* n synthetic pages drawn from seed base; page i has density i % 4. */
static int dataset_make(dataset *d, uint64_t base, int n) {
    int i;
    if (dataset_alloc(d, n) != 0) return -1;
    for (i = 0; i < n; i++) {
        ex_page page;
        d->density[i] = i % N_DENSITY;
        if (ex_page_from_index(base, (uint64_t)i, IMG, IMG, d->density[i], &page) != 0 || page.len > MAX_CHARS) {
            dataset_free(d);
            return -1;
        }
        ex_page_render(&page, d->images + (size_t)i * IMG_FLOATS);
        memcpy(d->text[i], page.text, (size_t)page.len + 1);
        dataset_link(d, i);
    }
    return 0;
}

/* The pages of DIR/NAME (--data): 64x64 images, the answer is the transcription (the prompt
   column is ignored: the model is always asked PROMPT). Density is read off the length with
   the caps of the synthetic pages: <= 12, 24, 44 and 60 characters. */
static int dataset_load(dataset *d, const char *dir, const char *name) {
    user_data u;
    int i;
    if (user_data_load(&u, dir, name, IMG, IMG) != 0) return -1;
    if (dataset_alloc(d, (int)u.manifest.n) != 0) { user_data_free(&u); return -1; }
    memcpy(d->images, u.images, u.manifest.n * IMG_FLOATS * sizeof(float));
    for (i = 0; i < d->n; i++) {
        const perpo_manifest_entry *e = &u.manifest.entries[i];
        size_t len = strlen(e->answer);
        if (len > MAX_CHARS) {
            fprintf(stderr, "error: %s/%s line %zu: the transcription has %zu bytes, at most %d fit\n", dir, name,
                    e->line, len, MAX_CHARS);
            break;
        }
        memcpy(d->text[i], e->answer, len + 1);
        d->density[i] = len <= 12 ? 0 : len <= 24 ? 1 : len <= 44 ? 2 : 3;
        dataset_link(d, i);
    }
    user_data_free(&u);
    if (i < d->n) { dataset_free(d); return -1; }
    return 0;
}

/* 1 - normalized edit distance to the true transcription of item `item`. */
static float ocr_reward(const char *response, size_t len, size_t item, void *user) {
    const dataset *d = (const dataset *)user;
    float r = 0.0f;
    return perpo_ocr_reward(response, len, d->text[item], strlen(d->text[item]), &r) == PERPO_OK ? r : 0.0f;
}

/* ---- Evaluation ---------------------------------------------------------------------------- */
typedef struct metrics {
    double ned, f1, precision, recall, bleu; /* means over pages */
    int n;
} metrics;

static void metrics_add(metrics *m, const perpo_ocr_scores *s) {
    m->ned += s->edit_distance; m->f1 += s->f1; m->precision += s->precision; m->recall += s->recall;
    m->bleu += s->bleu; m->n++;
}
static void metrics_finish(metrics *m) {
    if (!m->n) return;
    m->ned /= m->n; m->f1 /= m->n; m->precision /= m->n; m->recall /= m->n; m->bleu /= m->n;
}

/* Greedy transcriptions of every page: overall and per-density means; responses (may be
   NULL) gets the text (n x TEXT_CAP). */
static perpo_status evaluate(perpo_model *m, const dataset *d, metrics *all, metrics *by_density, char *responses) {
    perpo_sample_config sc = perpo_sample_default();
    size_t B = (size_t)perpo_model_config(m)->max_batch, i, j;
    char text[32][TEXT_CAP];
    int k;
    memset(all, 0, sizeof *all);
    for (k = 0; k < N_DENSITY; k++) memset(&by_density[k], 0, sizeof by_density[k]);
    for (i = 0; i < (size_t)d->n; i += B) {
        size_t cnt = (size_t)d->n - i < B ? (size_t)d->n - i : B, lens[32];
        const float *imgs[32];
        const char *prompts[32];
        perpo_gen_request req;
        perpo_status st;
        for (j = 0; j < cnt; j++) { imgs[j] = d->examples[i + j].image; prompts[j] = PROMPT; }
        req.n_seq = cnt; req.n_img = cnt; req.images = imgs; req.image_of = NULL; req.prompts = prompts;
        if ((st = perpo_generate(m, &req, &sc, &text[0][0], TEXT_CAP, lens)) != PERPO_OK) return st;
        for (j = 0; j < cnt; j++) {
            perpo_ocr_scores s;
            const char *ref = d->text[i + j];
            if ((st = perpo_ocr_score(text[j], lens[j], ref, strlen(ref), &s)) != PERPO_OK) return st;
            metrics_add(all, &s);
            metrics_add(&by_density[d->density[i + j]], &s);
            if (responses) memcpy(responses + (i + j) * TEXT_CAP, text[j], TEXT_CAP);
        }
    }
    metrics_finish(all);
    for (k = 0; k < N_DENSITY; k++) metrics_finish(&by_density[k]);
    return PERPO_OK;
}

/* ---- One full run (one seed) ---------------------------------------------------------------- */
typedef struct method_result {
    const char *name;
    metrics all, by_density[N_DENSITY];
    double train_s;
    curve curve;
} method_result;

typedef struct run_result {
    method_result sft, obj[EX_MAX_OBJECTIVES];
    int n_obj;
    size_t lists_sampled, lists_kept;
    double mean_list_reward, total_s;
    char *sft_text, *perpo_text; /* greedy transcriptions of the test pages */
    int has_perpo;
} run_result;

static perpo_config model_config(void) {
    perpo_config c = perpo_config_default(); /* 64x64, 8x8 patches, width 128, 2+4 blocks */
    c.max_text = MAX_TEXT;
    c.max_batch = 32;
    return c;
}

static int run_one(const options *o, int seed, const dataset *test, run_result *r) {
    perpo_config cfg = model_config();
    perpo_model *sft = NULL, *pol = NULL;
    perpo_train_config tc = perpo_train_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    dataset train;
    run_log log;
    perpo_status st;
    double t0 = wall_seconds(), t;
    size_t i, kept;
    int k, ret = 1;
    memset(r, 0, sizeof *r);
    memset(&set, 0, sizeof set);
    r->sft_text = (char *)calloc((size_t)test->n, TEXT_CAP);
    r->perpo_text = (char *)calloc((size_t)test->n, TEXT_CAP);
    if (!r->sft_text || !r->perpo_text) return fail("results", PERPO_ERR_NOMEM);
    if (o->data ? dataset_load(&train, o->data, "train.tsv") != 0
                : dataset_make(&train, ex_hash64((uint64_t)seed, 0x6f637274ull), o->n_train) != 0)
        return fail("training data", o->data ? PERPO_ERR_FORMAT : PERPO_ERR_NOMEM);

    /* 1. SFT from scratch (or from --sft-checkpoint) */
    r->sft.name = "SFT";
    if (o->sft_ckpt && (st = perpo_model_load(&sft, o->sft_ckpt)) == PERPO_OK) {
        if (o->verbose) fprintf(stderr, "[sft] loaded %s\n", o->sft_ckpt);
    } else {
        if ((st = perpo_model_create(&sft, &cfg, (uint64_t)seed)) != PERPO_OK) { fail("model", st); goto done; }
        tc.batch_size = o->batch; tc.seed = (uint64_t)seed; tc.log_every = 50;
        tc.optim.lr = (float)o->sft_lr; tc.optim.min_lr = (float)o->sft_lr * 0.05f;
        tc.optim.warmup_steps = o->sft_steps / 20 + 1; tc.optim.total_steps = o->sft_steps;
        log.label = "sft"; log.verbose = o->verbose; log.t0 = t = wall_seconds(); log.c = &r->sft.curve;
        if ((st = perpo_sft_train(sft, train.examples, (size_t)train.n, &tc, on_progress, &log)) != PERPO_OK) { fail("SFT", st); goto done; }
        r->sft.train_s = wall_seconds() - t;
        if (o->sft_ckpt && (st = perpo_model_save(sft, o->sft_ckpt)) != PERPO_OK) { fail("saving the SFT checkpoint", st); goto done; }
    }
    if ((st = evaluate(sft, test, &r->sft.all, r->sft.by_density, r->sft_text)) != PERPO_OK) { fail("evaluate SFT", st); goto done; }
    if (o->verbose) fprintf(stderr, "[sft] test edit distance %.3f  F1 %.3f  BLEU %.3f\n", r->sft.all.ned, r->sft.all.f1, r->sft.all.bleu);

    /* 2. N transcriptions per training page, rewards 1 - NED, margin filter, reference log-probs */
    t = wall_seconds();
    sc.temperature = (float)o->temperature; sc.top_p = (float)o->top_p; sc.seed = (uint64_t)seed * 1000003u + 17u;
    if ((st = perpo_pref_sample(sft, train.examples, (size_t)(o->n_pref < train.n ? o->n_pref : train.n), o->n_samples,
                                &sc, ocr_reward, &train, &set)) != PERPO_OK) { fail("sampling", st); goto done; }
    r->lists_sampled = set.n_lists;
    for (i = 0; i < set.n_lists; i++)
        for (k = 0; k < o->n_samples; k++) r->mean_list_reward += set.lists[i].rewards[k] / (set.n_lists * o->n_samples);
    kept = perpo_pref_filter(set.lists, set.n_lists, (float)o->margin);
    r->lists_kept = kept;
    if (kept == 0) { fprintf(stderr, "error: no list has a reward margin >= %.2f; lower --margin\n", o->margin); goto done; }
    if ((st = perpo_pref_reference(sft, set.lists, kept)) != PERPO_OK) { fail("reference log-probs", st); goto done; }
    if (o->verbose) fprintf(stderr, "[lists] %zu pages x %d samples, mean reward %.3f, %zu lists with margin >= %.2f (%.0fs)\n",
                            set.n_lists, o->n_samples, r->mean_list_reward, kept, o->margin, wall_seconds() - t);

    /* 3. every objective from the same SFT weights, same lists, same steps */
    if ((st = perpo_model_create(&pol, &cfg, (uint64_t)seed)) != PERPO_OK) { fail("model", st); goto done; }
    for (k = 0; k < EX_MAX_OBJECTIVES; k++) {
        perpo_pref_config pc = pref_config(o, ex_objective_kinds[k], seed);
        method_result *mr;
        int is_perpo = ex_objective_kinds[k] == PERPO_OBJ_PERPO;
        if (!objective_wanted(o->objective, ex_objective_flags[k])) continue;
        mr = &r->obj[r->n_obj];
        if ((st = perpo_model_copy_params(pol, sft)) != PERPO_OK) { fail("copy", st); goto done; }
        log.label = ex_objective_names[k]; log.verbose = o->verbose; log.t0 = t = wall_seconds(); log.c = &mr->curve;
        if ((st = perpo_pref_train(pol, set.lists, kept, &pc, on_progress, &log)) != PERPO_OK) { fail(ex_objective_names[k], st); goto done; }
        mr->name = ex_objective_names[k]; mr->train_s = wall_seconds() - t;
        if ((st = evaluate(pol, test, &mr->all, mr->by_density, is_perpo ? r->perpo_text : NULL)) != PERPO_OK) {
            fail("evaluate", st);
            goto done;
        }
        r->has_perpo |= is_perpo;
        if (o->verbose) fprintf(stderr, "[%s] test edit distance %.3f  F1 %.3f  BLEU %.3f\n", mr->name, mr->all.ned,
                                mr->all.f1, mr->all.bleu);
        r->n_obj++;
    }
    ret = 0;
done:
    r->total_s = wall_seconds() - t0;
    perpo_pref_set_free(&set);
    perpo_model_free(sft);
    perpo_model_free(pol);
    dataset_free(&train);
    return ret;
}

/* ---- Reporting ------------------------------------------------------------------------------- */
static void print_row(const char *name, const metrics *m) {
    printf("| %-8s | %9.3f | %6.3f | %9.3f | %6.3f | %6.3f |\n", name, m->ned, m->f1, m->precision, m->recall, m->bleu);
}

static void json_metrics(ex_json *j, const metrics *m) {
    ex_json_kv_number(j, "edit_distance", m->ned);
    ex_json_kv_number(j, "f1", m->f1);
    ex_json_kv_number(j, "precision", m->precision);
    ex_json_kv_number(j, "recall", m->recall);
    ex_json_kv_number(j, "bleu", m->bleu);
    ex_json_kv_int(j, "pages", m->n);
}

/* Test pages (zoomed) with the true, SFT and PerPO transcriptions under each. */
static int write_picture(const char *path, const dataset *test, const run_result *r) {
    enum { N_SHOW = 8, ZOOM = 3 };
    static float page[IMG * ZOOM * IMG * ZOOM * 3], tiles[N_SHOW][2 * IMG * ZOOM * IMG * ZOOM * 3];
    static char labels[N_SHOW][3 * (TEXT_CAP + 8)];
    const float *ptr[N_SHOW];
    const char *lab[N_SHOW];
    ex_grid g = ex_grid_default();
    int i, n = test->n < N_SHOW ? test->n : N_SHOW;
    for (i = 0; i < n; i++) { /* one line each: newlines of the transcriptions shown as '|' */
        char t[3][TEXT_CAP];
        int k;
        size_t c;
        snprintf(t[0], TEXT_CAP, "%s", test->text[i]);
        snprintf(t[1], TEXT_CAP, "%s", r->sft_text + (size_t)i * TEXT_CAP);
        snprintf(t[2], TEXT_CAP, "%s", r->has_perpo ? r->perpo_text + (size_t)i * TEXT_CAP : "");
        for (k = 0; k < 3; k++)
            for (c = 0; t[k][c]; c++) if (t[k][c] == '\n') t[k][c] = '|';
        snprintf(labels[i], sizeof labels[i], "true: %s\nSFT:  %s\nPerPO:%s", t[0], t[1], t[2]);
        { /* the page on the left half of a tile twice as wide, so the labels have room */
            int y;
            ex_upscale(test->examples[i].image, IMG, IMG, ZOOM, page);
            for (y = 0; y < IMG * ZOOM; y++) {
                float *row = tiles[i] + (size_t)y * 2 * IMG * ZOOM * 3;
                memcpy(row, page + (size_t)y * IMG * ZOOM * 3, IMG * ZOOM * 3 * sizeof(float));
                for (k = IMG * ZOOM * 3; k < 2 * IMG * ZOOM * 3; k++) row[k] = 1.0f;
            }
        }
        ptr[i] = tiles[i];
        lab[i] = labels[i];
    }
    g.cols = 2; g.zoom = 1; g.label_lines = 3; g.label_scale = 1; g.margin = 10;
    return ex_grid_write_png(path, &g, n, ptr, IMG * ZOOM * 2, IMG * ZOOM, lab) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    options o;
    dataset test;
    run_result *runs;
    int s, k, rc, dn;
    char path[1024];
    FILE *f;
    ex_json j;
    set_defaults(&o);
    if ((rc = experiment_start(argc, argv, &o)) != 0) return rc > 0 ? 0 : 2;
    if (o.data ? dataset_load(&test, o.data, "test.tsv") != 0
               : dataset_make(&test, ex_hash64((uint64_t)o.test_seed, 0x74657374ull), o.n_test) != 0)
        return fail("test data", o.data ? PERPO_ERR_FORMAT : PERPO_ERR_NOMEM);
    o.n_test = test.n;
    runs = (run_result *)calloc((size_t)o.seeds, sizeof *runs);
    if (!runs) return fail("results", PERPO_ERR_NOMEM);
    for (s = 0; s < o.seeds; s++) {
        if (o.verbose) fprintf(stderr, "=== seed %d (%d of %d) ===\n", o.seed + s, s + 1, o.seeds);
        if (run_one(&o, o.seed + s, &test, &runs[s]) != 0) return 1;
    }

    printf("\nPerPO on synthetic dense OCR: %d held-out pages (test seed %d), N = %d, %d seed%s\n", o.n_test,
           o.test_seed, o.n_samples, o.seeds, o.seeds > 1 ? "s" : "");
    printf("edit distance is normalized (lower is better); F1, precision, recall over word sets; BLEU-4\n\n");
    if (o.seeds == 1) {
        printf("| method   | edit dist |     F1 | precision | recall |   BLEU |\n|----------|-----------|--------|-----------|--------|--------|\n");
        print_row("SFT", &runs[0].sft.all);
        for (k = 0; k < runs[0].n_obj; k++) print_row(runs[0].obj[k].name, &runs[0].obj[k].all);
        printf("\nedit distance by density (0: one short line ... 3: full page)\n\n| method   |");
        for (dn = 0; dn < N_DENSITY; dn++) printf("     d%d |", dn);
        printf("\n|----------|");
        for (dn = 0; dn < N_DENSITY; dn++) printf("--------|");
        printf("\n| %-8s |", "SFT");
        for (dn = 0; dn < N_DENSITY; dn++) printf(" %6.3f |", runs[0].sft.by_density[dn].ned);
        for (k = 0; k < runs[0].n_obj; k++) {
            printf("\n| %-8s |", runs[0].obj[k].name);
            for (dn = 0; dn < N_DENSITY; dn++) printf(" %6.3f |", runs[0].obj[k].by_density[dn].ned);
        }
        printf("\n");
    } else {
        double v[100], am, as, fm, fs;
        printf("| method   | edit distance (mean±sd) | F1 (mean±sd)    |\n|----------|-------------------------|-----------------|\n");
        for (k = -1; k < runs[0].n_obj; k++) {
            for (s = 0; s < o.seeds; s++) v[s] = k < 0 ? runs[s].sft.all.ned : runs[s].obj[k].all.ned;
            mean_std(v, o.seeds, &am, &as);
            for (s = 0; s < o.seeds; s++) v[s] = k < 0 ? runs[s].sft.all.f1 : runs[s].obj[k].all.f1;
            mean_std(v, o.seeds, &fm, &fs);
            printf("| %-8s | %.3f ± %.3f           | %.3f ± %.3f   |\n", k < 0 ? "SFT" : runs[0].obj[k].name, am, as, fm, fs);
        }
    }
    printf("\nlists: %zu sampled, %zu kept (margin >= %.2f); time: %.0fs for the first seed\n", runs[0].lists_sampled,
           runs[0].lists_kept, o.margin, runs[0].total_s);

    if (!(f = results_begin(&j, &o, "dense_ocr", path, sizeof path))) return 1;
    for (s = 0; s < o.seeds; s++) {
        results_run_begin(&j, o.seed + s, runs[s].lists_sampled, runs[s].lists_kept, runs[s].mean_list_reward,
                          runs[s].total_s);
        for (k = -1; k < runs[s].n_obj; k++) {
            const method_result *mr = k < 0 ? &runs[s].sft : &runs[s].obj[k];
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "method", mr->name);
            json_metrics(&j, &mr->all);
            ex_json_key(&j, "by_density");
            ex_json_array_begin(&j);
            for (dn = 0; dn < N_DENSITY; dn++) {
                ex_json_object_begin(&j);
                ex_json_kv_int(&j, "density", dn);
                json_metrics(&j, &mr->by_density[dn]);
                ex_json_object_end(&j);
            }
            ex_json_array_end(&j);
            ex_json_kv_number(&j, "train_seconds", mr->train_s);
            ex_json_object_end(&j);
        }
        results_run_end(&j);
    }
    if (results_end(&j, f, path) != 0) return 1;
    snprintf(path, sizeof path, "%s/dense_ocr_examples.png", o.out);
    if (write_picture(path, &test, &runs[0]) != 0) fprintf(stderr, "warning: cannot write %s\n", path);
    else printf("wrote %s\n", path);
    {
        const char *names[EX_MAX_OBJECTIVES];
        const curve *curves[EX_MAX_OBJECTIVES];
        for (k = 0; k < runs[0].n_obj; k++) { names[k] = runs[0].obj[k].name; curves[k] = &runs[0].obj[k].curve; }
        curves_output(&o, "PerPO on synthetic dense OCR: training curves", &runs[0].sft.curve, runs[0].n_obj, names, curves);
    }
    for (s = 0; s < o.seeds; s++) { free(runs[s].sft_text); free(runs[s].perpo_text); }
    free(runs);
    dataset_free(&test);
    return 0;
}
