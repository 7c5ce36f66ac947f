/* examples/pretrain.h — pretraining: the SFT model the preference stage starts from, trained
 * from scratch, resumable, with a JSON record (`grounding --pretrain 1`, what `make pretrain`
 * runs; likewise dense_ocr).
 *
 * Every step draws new examples: example g of the run is example g of the training split, so a
 * resumed run sees exactly the data of an uninterrupted one. The run saves CKPT.partial (with
 * the optimizer state) every --save-every steps and continues from it when started again; at
 * the end it writes CKPT (parameters only), evaluates greedy answers on a validation split and
 * writes CKPT.json: how the model was made and what it scores, with the loss curve (kept
 * meanwhile in CKPT.curve, one "step loss seconds" line per report, so that a resumed run's
 * record still starts at step 1).
 *
 * With --scenes K the examples are instead a fixed set of K, in shuffled epochs (the order of
 * each epoch a function of the seed and the epoch, so resume still sees the same data); with
 * --val-every V the model is scored on the validation split every V steps and the best one is
 * kept (early stopping, after --patience validations without a new best; CKPT.early and
 * CKPT.best hold its state meanwhile).
 *
 * Part of the experiment headers (examples/experiment.h lists them); needs perpo.h
 * (declarations) first. */
#ifndef PERPO_EXAMPLES_PRETRAIN_H
#define PERPO_EXAMPLES_PRETRAIN_H

#include "common.h"
#include "options.h"
#include "progress.h"
#include "task.h"

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
    } else if ((st = create_model(&m, &task->cfg, (uint64_t)o->seed)) != PERPO_OK) {
        free(full);
        free(seconds);
        return 1;
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
            fail_why("pretraining", st, perpo_model_last_error(m));
            goto done;
        }
        last = perpo_optim_step_count(m);
        if (o->val_every && n_early < EX_MAX_VALIDATIONS) {
            scores vs;
            FILE *ef;
            if ((st = evaluate(m, task, &val, &vs, NULL)) != PERPO_OK) {
                fail_why("validation", st, perpo_model_last_error(m));
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
        char why[PERPO_ERROR_MAX];
        perpo_model_free(m);
        m = NULL;
        if ((st = perpo_model_load_err(&m, best_path, NULL, why, sizeof why)) != PERPO_OK) {
            fail_why("loading the best model", st, why);
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

#endif /* PERPO_EXAMPLES_PRETRAIN_H */
