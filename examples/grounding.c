/* grounding.c — PerPO end to end on object grounding, on synthetic scenes.
 *
 * One run: SFT from scratch -> N samples per training prompt -> IoU rewards -> lists with a
 * large enough reward margin -> reference log-probs of the frozen SFT model -> DPO and PerPO
 * (optionally LiPO) trained from the same SFT weights on the same lists for the same number
 * of steps -> greedy evaluation on held-out scenes -> a table of Acc@0.5, mean IoU and parse
 * failures, with the Best-of-N oracle as the upper reference. Writes results.json, a picture
 * of test scenes with the true, SFT and PerPO boxes, and the training curves as SVG.
 *
 *   grounding [--seed S] [--test-seed T] [--seeds K] [--n N] [--beta B] [--gamma G]
 *             [--sft-steps S] [--pref-steps S] [--objective all|perpo|dpo|lipo|listmle]
 *             [--threads K] [--out DIR] [--help]   (all flags: --help)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include "pipeline.h"


#define IMG 64                 /* scenes are IMG x IMG RGB */
#define IMG_FLOATS (IMG * IMG * 3)
#define TEXT_CAP 48            /* >= perpo_config.max_text */

/* ---- Options ------------------------------------------------------------------------------ */
static void set_defaults(options *o) {
    o->description = "PerPO on synthetic object grounding: SFT, then DPO and PerPO from the same SFT\n"
                     "weights on the same sampled lists, evaluated on held-out scenes.";
    o->max_batch = 32;
    o->seed = 1; o->test_seed = 777; o->seeds = 1;
    /* sized so that `make demo` (one seed) stays within 10 minutes on 2 cores */
    o->n_samples = 8; o->sft_steps = 500; o->pref_steps = 100;
    o->n_train = 4000; o->n_pref = 320; o->n_test = 500;
    o->threads = 0; o->batch = 32; o->lists_per_step = 4; o->verbose = 1;
    /* preference defaults for a model this small (README, "What we learned"): the paper's
       beta 0.1 without an NLL term displaces the likelihood of every sampled answer here */
    o->beta = 1.0; o->gamma = 0.5; o->temperature = 1.0; o->top_p = 0.8; o->margin = 0.3;
    o->nll = 1.0; o->mean_logp = 1;
    o->sft_lr = 2e-3; o->pref_lr = 3e-4;
    o->objective = "dpo,perpo"; o->out = "results/grounding"; o->sft_ckpt = NULL; o->data = NULL;
    o->pretrain = 0; o->n_val = 2000; o->val_seed = 555; o->save_every = 250; o->sft_warmup = 200;
}

/* ---- The model ---------------------------------------------------------------------------- */
static perpo_config model_config(void) {
    perpo_config c = perpo_config_default(); /* 64x64, 8x8 patches, width 128, 2+4 blocks */
    c.max_text = 40;                         /* BOS + "yellow triangle" + SEP + box + EOS fits */
    c.max_batch = 32;
    c.pos_channels = 1;                      /* x/y channels and the sin-cos code: the vision */
    c.vis_sincos = 1;                        /* encoder learns where things are 2-3x sooner */
    return c;
}

/* ---- Data: scenes, their images, prompts and answers ------------------------------------- */
typedef struct dataset {
    int n;
    float *images;            /* n * IMG_FLOATS */
    char (*prompt)[TEXT_CAP];
    char (*answer)[TEXT_CAP];
    float (*box)[4];
    perpo_example *examples;  /* image + prompt + answer, as the trainers take them */
} dataset;

static void dataset_free(dataset *d) {
    free(d->images); free(d->prompt); free(d->answer); free(d->box); free(d->examples);
    memset(d, 0, sizeof *d);
}

static int dataset_alloc(dataset *d, int n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->images = (float *)malloc((size_t)n * IMG_FLOATS * sizeof(float));
    d->prompt = (char (*)[TEXT_CAP])calloc((size_t)n, sizeof *d->prompt);
    d->answer = (char (*)[TEXT_CAP])calloc((size_t)n, sizeof *d->answer);
    d->box = (float (*)[4])calloc((size_t)n, sizeof *d->box);
    d->examples = (perpo_example *)calloc((size_t)n, sizeof *d->examples);
    if (!d->images || !d->prompt || !d->answer || !d->box || !d->examples) { dataset_free(d); return -1; }
    return 0;
}

static void dataset_link(dataset *d, int i) {
    d->examples[i].image = d->images + (size_t)i * IMG_FLOATS;
    d->examples[i].prompt = d->prompt[i];
    d->examples[i].response = d->answer[i];
}

/* n synthetic scenes drawn from seed base. */
static int dataset_make(dataset *d, uint64_t base, int n) {
    int i;
    if (dataset_alloc(d, n) != 0) return -1;
    for (i = 0; i < n; i++) {
        ex_scene s;
        if (ex_scene_from_index(base, (uint64_t)i, IMG, IMG, &s) != 0) { dataset_free(d); return -1; }
        ex_scene_render(&s, d->images + (size_t)i * IMG_FLOATS);
        ex_scene_prompt(&s, d->prompt[i], sizeof d->prompt[i]);
        ex_scene_answer(&s, d->answer[i], sizeof d->answer[i]);
        memcpy(d->box[i], s.box, sizeof s.box);
        dataset_link(d, i);
    }
    return 0;
}

/* The examples of DIR/NAME (--data): 64x64 images, answers that hold a box. */
static int dataset_load(dataset *d, const char *dir, const char *name) {
    user_data u;
    int i;
    if (user_data_load(&u, dir, name, IMG, IMG) != 0) return -1;
    if (dataset_alloc(d, (int)u.manifest.n) != 0) { user_data_free(&u); return -1; }
    memcpy(d->images, u.images, u.manifest.n * IMG_FLOATS * sizeof(float));
    for (i = 0; i < d->n; i++) {
        const perpo_manifest_entry *e = &u.manifest.entries[i];
        size_t lp = strlen(e->prompt), la = strlen(e->answer);
        if (lp + la + 3 > (size_t)model_config().max_text) {
            fprintf(stderr, "error: %s/%s line %zu: prompt and answer are %zu bytes, at most %d fit\n", dir, name,
                    e->line, lp + la, model_config().max_text - 3);
            break;
        }
        if (!perpo_parse_box(e->answer, la, (float)IMG, (float)IMG, d->box[i])) {
            fprintf(stderr, "error: %s/%s line %zu: the answer \"%s\" holds no box [x1,y1,x2,y2]\n", dir, name, e->line, e->answer);
            break;
        }
        memcpy(d->prompt[i], e->prompt, lp + 1);
        memcpy(d->answer[i], e->answer, la + 1);
        dataset_link(d, i);
    }
    user_data_free(&u);
    if (i < d->n) { dataset_free(d); return -1; }
    return 0;
}

/* IoU of a response with the true box of item `item` of the dataset in user. */
static float iou_reward(const char *response, size_t len, size_t item, void *user) {
    const dataset *d = (const dataset *)user;
    return perpo_grounding_reward(response, len, d->box[item], (float)IMG, (float)IMG);
}

/* ---- Evaluation ------------------------------------------------------------------------------ */
typedef struct metrics {
    double acc, miou, fail; /* Acc@0.5 and parse failures as fractions */
} metrics;

/* Greedy answers for every item; responses (may be NULL) gets them (n x TEXT_CAP). */
static perpo_status evaluate(perpo_model *m, const dataset *d, metrics *out, char *responses) {
    const perpo_config *cfg = perpo_model_config(m);
    perpo_sample_config sc = perpo_sample_default();
    size_t B = (size_t)cfg->max_batch, i, j;
    double hits = 0, iou_sum = 0, fails = 0;
    char text[32][TEXT_CAP];
    for (i = 0; i < (size_t)d->n; i += B) {
        size_t cnt = (size_t)d->n - i < B ? (size_t)d->n - i : B, lens[32];
        const float *imgs[32];
        const char *prompts[32];
        perpo_gen_request req;
        perpo_status st;
        for (j = 0; j < cnt; j++) { imgs[j] = d->examples[i + j].image; prompts[j] = d->prompt[i + j]; }
        req.n_seq = cnt; req.n_img = cnt; req.images = imgs; req.image_of = NULL; req.prompts = prompts;
        if ((st = perpo_generate(m, &req, &sc, &text[0][0], TEXT_CAP, lens)) != PERPO_OK) return st;
        for (j = 0; j < cnt; j++) {
            float box[4], iou = 0.0f;
            if (perpo_parse_box(text[j], lens[j], (float)IMG, (float)IMG, box)) iou = perpo_box_iou(box, d->box[i + j]);
            else fails++;
            hits += iou >= 0.5f;
            iou_sum += iou;
            if (responses) memcpy(responses + (i + j) * TEXT_CAP, text[j], TEXT_CAP);
        }
    }
    out->acc = hits / d->n; out->miou = iou_sum / d->n; out->fail = fails / d->n;
    return PERPO_OK;
}

/* Best-of-N with the oracle reward: the best IoU among N samples of the SFT model. */
static perpo_status best_of_n(perpo_model *m, const dataset *d, int n, double temperature, double top_p, uint64_t seed,
                              metrics *out) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    perpo_status st;
    size_t i;
    int k;
    double hits = 0, iou_sum = 0, fails = 0;
    sc.temperature = (float)temperature; sc.top_p = (float)top_p; sc.seed = seed;
    if ((st = perpo_pref_sample(m, d->examples, (size_t)d->n, n, &sc, iou_reward, (void *)d, &set)) != PERPO_OK) return st;
    for (i = 0; i < set.n_lists; i++) {
        float best = 0.0f;
        for (k = 0; k < n; k++) if (set.lists[i].rewards[k] > best) best = set.lists[i].rewards[k];
        hits += best >= 0.5f;
        iou_sum += best;
        fails += best == 0.0f;
    }
    out->acc = hits / d->n; out->miou = iou_sum / d->n; out->fail = fails / d->n;
    perpo_pref_set_free(&set);
    return PERPO_OK;
}

/* ---- Pretraining (make pretrain): the task's hooks ---------------------------------------- */
static int pretrain_make(uint64_t base, uint64_t index, float *image, char *prompt, char *answer) {
    ex_scene s;
    if (ex_scene_from_index(base, index, IMG, IMG, &s) != 0) return -1;
    ex_scene_render(&s, image);
    ex_scene_prompt(&s, prompt, TEXT_CAP);
    ex_scene_answer(&s, answer, TEXT_CAP);
    return 0;
}
static int pretrain_validate(perpo_model *m, uint64_t base, int n, ex_json *j, char *line, size_t cap) {
    dataset d;
    metrics mt;
    perpo_status st;
    if (dataset_make(&d, base, n) != 0) return -1;
    st = evaluate(m, &d, &mt, NULL);
    dataset_free(&d);
    if (st != PERPO_OK) return fail("validation", st);
    if (j) {
        ex_json_kv_number(j, "acc_at_0.5", mt.acc);
        ex_json_kv_number(j, "mean_iou", mt.miou);
        ex_json_kv_number(j, "parse_failure_rate", mt.fail);
    }
    snprintf(line, cap, "Acc@0.5 %.1f%%, mean IoU %.3f, parse failures %.1f%%", 100 * mt.acc, mt.miou, 100 * mt.fail);
    return 0;
}

/* ---- One full run (one seed) ------------------------------------------------------------------ */
typedef struct method_result {
    const char *name;
    metrics m;
    double train_s;
    curve curve;
} method_result;

typedef struct run_result {
    method_result sft, bon, obj[EX_MAX_OBJECTIVES];
    int n_obj;
    size_t lists_sampled, lists_kept;
    double mean_list_reward, sample_s, total_s;
    char *sft_text, *best_text; /* greedy answers on the test set (n_test x TEXT_CAP) */
    int best_obj;               /* index of PerPO in obj[] (for the picture), or -1 */
} run_result;

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
    r->best_obj = -1;
    r->sft_text = (char *)calloc((size_t)test->n, TEXT_CAP);
    r->best_text = (char *)calloc((size_t)test->n, TEXT_CAP);
    if (!r->sft_text || !r->best_text) return fail("results", PERPO_ERR_NOMEM);
    if (o->data ? dataset_load(&train, o->data, "train.tsv") != 0
                : dataset_make(&train, ex_hash64((uint64_t)seed, 0x7261696eull), o->n_train) != 0)
        return fail("training data", o->data ? PERPO_ERR_FORMAT : PERPO_ERR_NOMEM);

    /* 1. SFT from scratch (or from --sft-checkpoint, to iterate on the preference stage) */
    r->sft.name = "SFT";
    if (o->sft_ckpt && (st = perpo_model_load(&sft, o->sft_ckpt)) == PERPO_OK) {
        if (o->verbose) fprintf(stderr, "[sft] loaded %s\n", o->sft_ckpt);
        goto trained;
    }
    if ((st = perpo_model_create(&sft, &cfg, (uint64_t)seed)) != PERPO_OK) { fail("model", st); goto done; }
    tc.batch_size = o->batch; tc.seed = (uint64_t)seed; tc.log_every = 50;
    tc.optim.lr = (float)o->sft_lr; tc.optim.min_lr = (float)o->sft_lr * 0.05f;
    tc.optim.warmup_steps = o->sft_steps / 20 + 1; tc.optim.total_steps = o->sft_steps;
    log.label = "sft"; log.verbose = o->verbose; log.t0 = t = wall_seconds(); log.c = &r->sft.curve;
    if ((st = perpo_sft_train(sft, train.examples, (size_t)train.n, &tc, on_progress, &log)) != PERPO_OK) { fail("SFT", st); goto done; }
    r->sft.train_s = wall_seconds() - t;
    if (o->sft_ckpt && (st = perpo_model_save(sft, o->sft_ckpt)) != PERPO_OK) { fail("saving the SFT checkpoint", st); goto done; }
trained:
    if ((st = evaluate(sft, test, &r->sft.m, r->sft_text)) != PERPO_OK) { fail("evaluate SFT", st); goto done; }
    if (o->verbose) fprintf(stderr, "[sft] test Acc@0.5 %.1f%%  mean IoU %.3f  parse failures %.1f%%\n",
                            100 * r->sft.m.acc, r->sft.m.miou, 100 * r->sft.m.fail);

    /* 2. N samples per training prompt, IoU rewards, margin filter, reference log-probs */
    t = wall_seconds();
    sc.temperature = (float)o->temperature; sc.top_p = (float)o->top_p; sc.seed = (uint64_t)seed * 1000003u + 17u;
    if ((st = perpo_pref_sample(sft, train.examples, (size_t)(o->n_pref < train.n ? o->n_pref : train.n), o->n_samples,
                                &sc, iou_reward, &train, &set)) != PERPO_OK) { fail("sampling", st); goto done; }
    r->lists_sampled = set.n_lists;
    for (i = 0; i < set.n_lists; i++)
        for (k = 0; k < o->n_samples; k++) r->mean_list_reward += set.lists[i].rewards[k] / (set.n_lists * o->n_samples);
    kept = perpo_pref_filter(set.lists, set.n_lists, (float)o->margin);
    r->lists_kept = kept;
    if (kept == 0) { fprintf(stderr, "error: no list has a reward margin >= %.2f; lower --margin\n", o->margin); goto done; }
    if ((st = perpo_pref_reference(sft, set.lists, kept)) != PERPO_OK) { fail("reference log-probs", st); goto done; }
    r->sample_s = wall_seconds() - t;
    if (o->verbose) fprintf(stderr, "[lists] %zu prompts x %d samples, mean IoU %.3f, %zu lists with margin >= %.2f (%.0fs)\n",
                            set.n_lists, o->n_samples, r->mean_list_reward, kept, o->margin, r->sample_s);
    if ((st = best_of_n(sft, test, o->n_samples, o->temperature, o->top_p, (uint64_t)seed * 7919u + 5u, &r->bon.m)) != PERPO_OK) {
        fail("best-of-N", st);
        goto done;
    }
    r->bon.name = "Best-of-N";

    /* 3. every objective from the same SFT weights, same lists, same steps */
    if ((st = perpo_model_create(&pol, &cfg, (uint64_t)seed)) != PERPO_OK) { fail("model", st); goto done; }
    for (k = 0; k < EX_MAX_OBJECTIVES; k++) {
        perpo_pref_config pc = pref_config(o, ex_objective_kinds[k], seed);
        method_result *mr;
        if (!objective_wanted(o->objective, ex_objective_flags[k])) continue;
        mr = &r->obj[r->n_obj];
        if (ex_objective_kinds[k] == PERPO_OBJ_PERPO) r->best_obj = r->n_obj;
        if ((st = perpo_model_copy_params(pol, sft)) != PERPO_OK) { fail("copy", st); goto done; }
        log.label = ex_objective_names[k]; log.t0 = t = wall_seconds(); log.c = &mr->curve;
        if ((st = perpo_pref_train(pol, set.lists, kept, &pc, on_progress, &log)) != PERPO_OK) { fail(ex_objective_names[k], st); goto done; }
        mr->name = ex_objective_names[k]; mr->train_s = wall_seconds() - t;
        if ((st = evaluate(pol, test, &mr->m, ex_objective_kinds[k] == PERPO_OBJ_PERPO ? r->best_text : NULL)) != PERPO_OK) {
            fail("evaluate", st);
            goto done;
        }
        if (o->verbose) fprintf(stderr, "[%s] test Acc@0.5 %.1f%%  mean IoU %.3f  parse failures %.1f%%\n", ex_objective_names[k],
                                100 * mr->m.acc, mr->m.miou, 100 * mr->m.fail);
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

/* ---- Reporting ---------------------------------------------------------------------------------- */
static void print_row(const char *name, const metrics *m) {
    printf("| %-22s | %7.1f | %8.3f | %10.1f |\n", name, 100 * m->acc, m->miou, 100 * m->fail);
}

static void json_metrics(ex_json *j, const metrics *m) {
    ex_json_kv_number(j, "acc_at_0.5", m->acc);
    ex_json_kv_number(j, "mean_iou", m->miou);
    ex_json_kv_number(j, "parse_failure_rate", m->fail);
}

/* A grid of test scenes, zoomed, with the true (green), SFT (red) and PerPO (yellow) boxes. */
static int write_picture(const char *path, const dataset *test, const run_result *r) {
    enum { N_SHOW = 16, ZOOM = 4 };
    static float tiles[N_SHOW][IMG * ZOOM * IMG * ZOOM * 3];
    const float *ptr[N_SHOW];
    char labels[N_SHOW][48];
    const char *lab[N_SHOW];
    const float green[3] = {0.1f, 1.0f, 0.2f}, red[3] = {1.0f, 0.15f, 0.1f}, yellow[3] = {1.0f, 0.9f, 0.1f};
    ex_grid g = ex_grid_default();
    int i, n = test->n < N_SHOW ? test->n : N_SHOW;
    for (i = 0; i < n; i++) {
        float b[4];
        const char *pt = r->best_text + (size_t)i * TEXT_CAP, *st = r->sft_text + (size_t)i * TEXT_CAP;
        ex_upscale(test->examples[i].image, IMG, IMG, ZOOM, tiles[i]);
        ex_draw_rect(tiles[i], IMG * ZOOM, IMG * ZOOM, test->box[i], green, 2);
        if (perpo_parse_box(st, strlen(st), (float)IMG, (float)IMG, b)) ex_draw_rect(tiles[i], IMG * ZOOM, IMG * ZOOM, b, red, 1);
        if (r->best_obj >= 0 && perpo_parse_box(pt, strlen(pt), (float)IMG, (float)IMG, b))
            ex_draw_rect(tiles[i], IMG * ZOOM, IMG * ZOOM, b, yellow, 1);
        snprintf(labels[i], sizeof labels[i], "%s", test->prompt[i]);
        ptr[i] = tiles[i];
        lab[i] = labels[i];
    }
    g.cols = 4; g.zoom = 1; g.label_lines = 1; g.label_scale = 2;
    g.bg[0] = g.bg[1] = g.bg[2] = 0.12f; g.fg[0] = g.fg[1] = g.fg[2] = 0.95f;
    return ex_grid_write_png(path, &g, n, ptr, IMG * ZOOM, IMG * ZOOM, lab);
}

int main(int argc, char **argv) {
    options o;
    dataset test;
    run_result *runs;
    int s, k, rc;
    char path[1024];
    FILE *f;
    ex_json j;
    set_defaults(&o);
    if ((rc = experiment_start(argc, argv, &o)) != 0) return rc > 0 ? 0 : 2;
    if (o.pretrain) {
        pretrain_task task;
        task.name = "grounding"; task.cfg = model_config(); task.text_cap = TEXT_CAP;
        task.make = pretrain_make; task.validate = pretrain_validate;
        if (!o.sft_ckpt) o.sft_ckpt = "examples/models/grounding_sft.ckpt";
        return pretrain(&task, &o, argc, argv);
    }
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

    /* the table: one seed, or mean and standard deviation over seeds */
    printf("\nPerPO on synthetic grounding: %d held-out scenes (test seed %d), N = %d, %d seed%s\n\n", o.n_test,
           o.test_seed, o.n_samples, o.seeds, o.seeds > 1 ? "s" : "");
    if (o.seeds == 1) {
        printf("| %-22s | %7s | %8s | %10s |\n|%s|%s|%s|%s|\n", "method", "Acc@0.5", "mean IoU", "parse fail",
               "------------------------", "---------", "----------", "------------");
        print_row("SFT", &runs[0].sft.m);
        for (k = 0; k < runs[0].n_obj; k++) print_row(runs[0].obj[k].name, &runs[0].obj[k].m);
        snprintf(path, sizeof path, "Best-of-%d (oracle)", o.n_samples);
        print_row(path, &runs[0].bon.m);
    } else {
        double v[100], mean, sd;
        printf("| %-22s | %-15s | %-15s |\n|------------------------|-----------------|-----------------|\n", "method",
               "Acc@0.5 (mean±sd)", "mean IoU");
        for (k = -2; k < runs[0].n_obj; k++) {
            double am, as;
            const char *name = k == -2 ? "SFT" : k == -1 ? "Best-of-N (oracle)" : runs[0].obj[k].name;
            for (s = 0; s < o.seeds; s++) v[s] = 100 * (k == -2 ? runs[s].sft.m.acc : k == -1 ? runs[s].bon.m.acc : runs[s].obj[k].m.acc);
            mean_std(v, o.seeds, &am, &as);
            for (s = 0; s < o.seeds; s++) v[s] = k == -2 ? runs[s].sft.m.miou : k == -1 ? runs[s].bon.m.miou : runs[s].obj[k].m.miou;
            mean_std(v, o.seeds, &mean, &sd);
            printf("| %-22s | %6.1f ± %-6.1f | %.3f ± %.3f   |\n", name, am, as, mean, sd);
        }
    }
    printf("\nlists: %zu sampled, %zu kept (margin >= %.2f); time: %.0fs for the first seed\n", runs[0].lists_sampled,
           runs[0].lists_kept, o.margin, runs[0].total_s);

    /* results.json */
    if (!(f = results_begin(&j, &o, "grounding", path, sizeof path))) return 1;
    for (s = 0; s < o.seeds; s++) {
        results_run_begin(&j, o.seed + s, runs[s].lists_sampled, runs[s].lists_kept, runs[s].mean_list_reward,
                          runs[s].total_s);
        for (k = -2; k < runs[s].n_obj; k++) {
            const method_result *mr = k == -2 ? &runs[s].sft : k == -1 ? &runs[s].bon : &runs[s].obj[k];
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "method", k == -1 ? "Best-of-N (oracle)" : mr->name);
            json_metrics(&j, &mr->m);
            ex_json_kv_number(&j, "train_seconds", mr->train_s);
            ex_json_object_end(&j);
        }
        results_run_end(&j);
    }
    if (results_end(&j, f, path) != 0) return 1;
    snprintf(path, sizeof path, "%s/grounding_examples.png", o.out);
    if (write_picture(path, &test, &runs[0]) != 0) fprintf(stderr, "warning: cannot write %s\n", path);
    else printf("wrote %s (green: truth, red: SFT, yellow: PerPO)\n", path);
    {
        const char *names[EX_MAX_OBJECTIVES];
        const curve *curves[EX_MAX_OBJECTIVES];
        for (k = 0; k < runs[0].n_obj; k++) { names[k] = runs[0].obj[k].name; curves[k] = &runs[0].obj[k].curve; }
        curves_output(&o, "PerPO on synthetic grounding: training curves", &runs[0].sft.curve, runs[0].n_obj, names, curves);
    }
    for (s = 0; s < o.seeds; s++) { free(runs[s].sft_text); free(runs[s].best_text); }
    free(runs);
    dataset_free(&test);
    return 0;
}
