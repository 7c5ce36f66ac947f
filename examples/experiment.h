/* examples/experiment.h — the experiment, the same for every task, in four stages that each
 * program's main() calls in order:
 *
 *   experiment_load        the pretrained SFT model (or fine-tuned on --data) and the test items
 *   experiment_baselines   what no preference seed changes: the SFT model's greedy scores, the
 *                          diagnostics' held-out lists, the Best-of-N oracle
 *   experiment_preference  per seed: N samples per preference prompt, task rewards, margin
 *                          filter, reference log-probs -> the control (SFT continued on the same
 *                          prompts' true answers), DPO, PerPO and any other objective, each from
 *                          the SFT weights with the same steps, lists per step and schedule ->
 *                          greedy evaluation and diagnostics of each
 *   experiment_report      the table, results.json, the picture, the curves
 *
 * A task (grounding.c, dense_ocr.c) supplies only what it owns: its data, reward and metrics.
 * The experiment headers, each one concern, included here in the order they build on each
 * other:
 *
 *   options.h      the command line, the objectives compared, experiment_start
 *   progress.h     progress lines, training curves, error lines
 *   task.h         the task interface; data (synthetic splits, --data); greedy evaluation,
 *                  Best-of-N
 *   diagnostics.h  what preference training changed, on held-out items
 *   preference.h   the preference stage: sample, filter, reference, control, objectives
 *   results.h      the table, results.json and the figures
 *   pretrain.h     pretraining the SFT checkpoint (--pretrain 1, make pretrain)
 *
 * They need perpo.h (declarations) and use POSIX clock_gettime and mkdir: a program defines
 * _POSIX_C_SOURCE before any include, PERPO_IMPLEMENTATION, includes ../perpo.h, then this. */
#ifndef PERPO_EXAMPLES_EXPERIMENT_H
#define PERPO_EXAMPLES_EXPERIMENT_H

#include "common.h"
#include "options.h"
#include "progress.h"
#include "task.h"
#include "diagnostics.h"
#include "preference.h"
#include "results.h"
#include "pretrain.h"

/* The SFT model the preference stage starts from: the pretrained checkpoint (never a silent
   retrain when it is missing or damaged), fine-tuned on --data's examples for --sft-steps when
   there are any, or with --from-scratch 1 a new model trained on them. */
static perpo_model *sft_model(const task *tk, const options *o, const dataset *train) {
    perpo_model *m = NULL;
    perpo_status st;
    char why[PERPO_ERROR_MAX];
    if (o->from_scratch) {
        if ((st = create_model(&m, &tk->cfg, (uint64_t)o->seed)) != PERPO_OK) return NULL;
    } else if ((st = perpo_model_load_err(&m, o->sft_ckpt, NULL, why, sizeof why)) != PERPO_OK) {
        fprintf(stderr,
                "error: cannot load the SFT checkpoint: %s (%s).\n"
                "       Run `make %s` to train it (or pass --sft-checkpoint FILE).\n",
                why, perpo_status_string(st), tk->pretrain_make);
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
            fail_why("SFT on --data", st, perpo_model_last_error(m));
            perpo_model_free(m);
            return NULL;
        }
    }
    return m;
}

/* What the stages share. experiment_load sets it up; experiment_free frees whatever of it was
   made, after any stage. */
typedef struct experiment {
    const task *tk;
    options *o;
    perpo_model *sft;
    dataset test, train, diag_items;
    int diag_owned; /* diag_items has storage of its own (else it is test's) */
    diag_ctx dg;
    run_result *runs; /* one per preference seed */
    method_result sft_row, bon_row;
    curve *pre; /* the pretraining loss, the curves' first panel */
    int n_bon;
} experiment;

/* 1. The SFT model (the checkpoint, fine-tuned on --data's train.tsv when given) and the test
   items (the synthetic split of --test-seed, or --data's test.tsv). 0 on success. */
static int experiment_load(experiment *ex, const task *tk, options *o) {
    int s;
    memset(ex, 0, sizeof *ex);
    ex->tk = tk;
    ex->o = o;
    if (o->test_shift > 0 && (!tk->make_shifted || o->test_shift > tk->max_shift || o->data)) {
        fprintf(stderr, "error: --test-shift %d: %s\n", o->test_shift,
                o->data ? "the test data of --data is what it is"
                        : "this task has no shifted test distribution of that number");
        return 1;
    }
    if (o->data && dataset_load(&ex->train, tk, &tk->cfg, o->data, "train.tsv") != 0) return 1;
    if (!(ex->sft = sft_model(tk, o, o->data ? &ex->train : NULL))) return 1;
    if (o->data ? dataset_load(&ex->test, tk, perpo_model_config(ex->sft), o->data, "test.tsv") != 0
                : dataset_make_shifted(&ex->test, tk, perpo_model_config(ex->sft),
                                       split_test_base(o->test_seed), 0, o->n_test,
                                       o->test_shift) != 0) {
        fprintf(stderr, "error: test data\n");
        return 1;
    }
    o->n_test = ex->test.n;
    ex->runs = (run_result *)calloc((size_t)o->seeds, sizeof *ex->runs);
    ex->pre = (curve *)calloc(1, sizeof *ex->pre);
    if (!ex->runs || !ex->pre) return fail("results", PERPO_ERR_NOMEM);
    for (s = 0; s < o->seeds; s++) {
        ex->runs[s].sft_text = (char *)calloc((size_t)ex->test.n, ex->test.cap);
        ex->runs[s].perpo_text = (char *)calloc((size_t)ex->test.n, ex->test.cap);
        if (!ex->runs[s].sft_text || !ex->runs[s].perpo_text)
            return fail("results", PERPO_ERR_NOMEM);
    }
    return 0;
}

/* 2. What does not depend on the preference seed: the SFT model's greedy scores, the
   diagnostics' held-out lists (the SFT model's samples) with its own diagnostics, and the
   Best-of-N oracle. 0 on success. */
static int experiment_baselines(experiment *ex) {
    const task *tk = ex->tk;
    options *o = ex->o;
    snprintf(ex->sft_row.name, sizeof ex->sft_row.name, "SFT");
    if (evaluate(ex->sft, tk, &ex->test, &ex->sft_row.s, ex->runs[0].sft_text) != PERPO_OK) {
        fprintf(stderr, "error: evaluating SFT\n");
        return 1;
    }
    if (o->verbose)
        fprintf(stderr, "[sft] test %s %.4g\n", tk->metric_key[tk->main_metric],
                ex->sft_row.s.v[tk->main_metric]);
    if (o->n_diag > 0) { /* --data: the first --diag test items; else a split of their own */
        if (o->data) {
            ex->diag_items = ex->test;
            if (o->n_diag < ex->diag_items.n) ex->diag_items.n = o->n_diag;
        } else if (dataset_make_shifted(&ex->diag_items, tk, perpo_model_config(ex->sft),
                                        split_diag_base(o->test_seed), 0, o->n_diag,
                                        o->test_shift) != 0) {
            return fail("diagnostic items", PERPO_ERR_NOMEM);
        } else
            ex->diag_owned = 1;
        o->n_diag = ex->diag_items.n;
        if (diag_init(&ex->dg, ex->sft, tk, &ex->diag_items,
                      (uint64_t)o->test_seed * 7919u + 11u) != PERPO_OK ||
            diagnose(ex->sft, 1, tk, &ex->dg, NULL, 0, &ex->sft_row.diag) != PERPO_OK) {
            fprintf(stderr, "error: diagnostics of the SFT model\n");
            return 1;
        }
        if (o->verbose)
            fprintf(stderr,
                    "[sft] %d held-out items: sampled %s %.4g, log p(truth) %.2f, %.2f "
                    "with a blank image\n",
                    o->n_diag, tk->metric_key[tk->main_metric],
                    ex->sft_row.diag.sampled[tk->main_metric], ex->sft_row.diag.truth_real,
                    ex->sft_row.diag.truth_blank);
    }
    ex->n_bon = o->bon_test < ex->test.n ? o->bon_test : ex->test.n;
    snprintf(ex->bon_row.name, sizeof ex->bon_row.name, "Best-of-%d (oracle)*", o->n_samples);
    {
        dataset head = ex->test;
        head.n = ex->n_bon;
        if (best_of_n(ex->sft, tk, &head, o, (uint64_t)o->seed * 7919u + 5u, &ex->bon_row.s) !=
            PERPO_OK) {
            fprintf(stderr, "error: best-of-N\n");
            return 1;
        }
    }
    if (o->verbose)
        fprintf(stderr, "[best-of-%d] %s %.4g on %d test items\n", o->n_samples,
                tk->metric_key[tk->main_metric], ex->bon_row.s.v[tk->main_metric], ex->n_bon);
    return 0;
}

/* The synthetic preference prompts of preference seed `seed`: the first --pref-prompts
   pretraining examples of --pref-data-seed, or (-1) prompts of the seed's own. 0 on success. */
static int make_pref_prompts(dataset *prefs, const task *tk, const options *o,
                             const perpo_config *cfg, int seed) {
    return dataset_make(prefs, tk, cfg,
                        o->pref_data_seed >= 0 ? split_train_base(o->pref_data_seed)
                                               : split_pref_base(seed),
                        0, o->n_pref);
}

/* 3. The preference stage (preference.h) once per seed: seed s samples the lists of its own
   preference prompts (--data: train.tsv's; --pref-data-seed: pretraining examples) and trains
   the control and every objective from the SFT weights. 0 on success. */
static int experiment_preference(experiment *ex) {
    const task *tk = ex->tk;
    const options *o = ex->o;
    run_result *runs = ex->runs;
    int s;
    for (s = 0; s < o->seeds; s++) {
        dataset prefs;
        int seed = o->seed + s, ok;
        if (o->verbose)
            fprintf(stderr, "=== preference seed %d (%d of %d) ===\n", seed, s + 1, o->seeds);
        if (o->data)
            prefs = ex->train;
        else if (make_pref_prompts(&prefs, tk, o, perpo_model_config(ex->sft), seed) != 0)
            return fail("preference prompts", PERPO_ERR_NOMEM);
        if (o->data && o->n_pref < prefs.n) prefs.n = o->n_pref;
        runs[s].m[0] = ex->sft_row;
        if (s > 0) memcpy(runs[s].sft_text, runs[0].sft_text, (size_t)ex->test.n * ex->test.cap);
        ok = run_preference(tk, o, seed, ex->sft, &ex->test, &prefs, &ex->dg, &runs[s], 1) == 0;
        if (!o->data) dataset_free(&prefs);
        if (!ok) return 1;
        runs[s].m[runs[s].n_methods++] = ex->bon_row;
    }
    return 0;
}

/* 4. The table (stdout), results.json, the per-group figure, the picture of test items with
   the SFT and PerPO answers, and the training curves. 0 on success. */
static int experiment_report(experiment *ex) {
    const task *tk = ex->tk;
    const options *o = ex->o;
    const run_result *runs = ex->runs;
    char path[1024];
    print_table(tk, o, runs);
    printf("* Best-of-%d: the highest-reward of %d samples of the SFT model, on the first %d test "
           "items\n",
           o->n_samples, o->n_samples, ex->n_bon);
    if (write_results(tk, o, runs) != 0) return 1;
    group_figure(tk, o, runs);
    snprintf(path, sizeof path, "%s/%s_examples.png", o->out, tk->name);
    if (tk->picture(path, &ex->test, runs[0].sft_text,
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
        read_pretrain_curve(o->sft_ckpt, ex->pre);
        snprintf(path, sizeof path, "%s: training curves", tk->title);
        curves_output(o, path, ex->pre, n, names, curves);
    }
    return 0;
}

static void experiment_free(experiment *ex) {
    int s;
    if (ex->runs)
        for (s = 0; s < ex->o->seeds; s++) {
            free(ex->runs[s].sft_text);
            free(ex->runs[s].perpo_text);
        }
    free(ex->runs);
    free(ex->pre);
    diag_free(&ex->dg);
    if (ex->diag_owned) dataset_free(&ex->diag_items);
    dataset_free(&ex->test);
    dataset_free(&ex->train);
    perpo_model_free(ex->sft);
    memset(ex, 0, sizeof *ex);
}

#endif /* PERPO_EXAMPLES_EXPERIMENT_H */
