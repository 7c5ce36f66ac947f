/* examples/experiment.h — the experiment, the same for every task: load the pretrained SFT
 * model (or fine-tune it on --data) -> greedy evaluation -> N samples per preference prompt,
 * task rewards, margin filter, reference log-probs -> the control (SFT continued on the same
 * prompts' true answers), DPO, PerPO and any other objective, each from the SFT weights with
 * the same steps, lists per step and schedule -> greedy evaluation of each -> Best-of-N ->
 * table, results.json, picture, curves. A task (grounding.c, dense_ocr.c) supplies only what
 * it owns: its data, reward and metrics. The experiment headers, each one concern, included
 * here in the order they build on each other:
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
    if (o->pretrain) return pretrain(tk, o, argc, argv);
    if (o->data && dataset_load(&train, tk, &tk->cfg, o->data, "train.tsv") != 0) return 1;
    if (!(sft = sft_model(tk, o, o->data ? &train : NULL))) goto done;
    if (o->data ? dataset_load(&test, tk, perpo_model_config(sft), o->data, "test.tsv") != 0
                : dataset_make(&test, tk, perpo_model_config(sft), split_test_base(o->test_seed), 0,
                               o->n_test) != 0) {
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
        } else if (dataset_make(&diag_items, tk, perpo_model_config(sft),
                                split_diag_base(o->test_seed), 0, o->n_diag) != 0) {
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

#endif /* PERPO_EXAMPLES_EXPERIMENT_H */
