/* examples/options.h — the experiments' command line: the options every experiment takes (with
 * the defaults they share; each program's set_defaults sets its own on top), the objectives
 * they compare, and experiment_start: parse the command line, set the thread count, create the
 * output folder. Part of the experiment headers (examples/experiment.h lists them); needs
 * perpo.h (declarations) first. Uses POSIX mkdir (define _POSIX_C_SOURCE before any include). */
#ifndef PERPO_EXAMPLES_OPTIONS_H
#define PERPO_EXAMPLES_OPTIONS_H

#include <errno.h>
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
#include "common.h"

/* ---- Options shared by the experiments (defaults: options_default, then each program's) -- */
typedef struct options {
    const char *description; /* first lines of --help */
    int seed, test_seed, seeds, n_samples, sft_steps, pref_steps, n_pref, n_test;
    int threads, batch, lists_per_step, verbose, mean_logp, max_batch;
    int test_shift, pretrain, n_val, val_seed, save_every, sft_warmup, rounds, bon_test,
        from_scratch, accum, nll_truth, n_diag, scenes, val_every, patience, pref_data_seed;
    int no_control; /* 1: the preference stage trains no control (examples/repro.c) */
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

/* ---- Comma-separated lists of names (--objective; repro's --only) ---------------------------- */
/* Is the word w[0..len) name, in lower case ("perpo" for the objective PerPO)? */
static int word_is(const char *w, size_t len, const char *name) {
    size_t i;
    if (strlen(name) != len) return 0;
    for (i = 0; i < len; i++)
        if (w[i] != (name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i])) return 0;
    return 1;
}

/* Is name a word of the comma-separated list (or is the list "all")? */
static int list_has(const char *list, const char *name) {
    if (strcmp(list, "all") == 0) return 1;
    while (*list) {
        size_t len = strcspn(list, ",");
        if (word_is(list, len, name)) return 1;
        list += len + (list[len] == ',');
    }
    return 0;
}

/* Is every word of the comma-separated list one of names[0..n) (or is the list "all")? */
static int list_known(const char *list, const char *const *names, int n) {
    if (strcmp(list, "all") == 0) return 1;
    while (*list) {
        size_t len = strcspn(list, ",");
        int k;
        for (k = 0; k < n && !word_is(list, len, names[k]); k++) {}
        if (k == n) return 0;
        list += len + (list[len] == ',');
    }
    return 1;
}

/* Is the objective's flag in the comma-separated list (or is the list "all")? */
static int objective_wanted(const char *list, perpo_objective kind) {
    return list_has(list, perpo_objective_name(kind));
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
        const char *names[EX_MAX_OBJECTIVES];
        int k;
        for (k = 0; k < EX_MAX_OBJECTIVES; k++)
            names[k] = perpo_objective_name(ex_objective_kinds[k]);
        if (!list_known(o->objective, names, EX_MAX_OBJECTIVES)) {
            fprintf(stderr,
                    "bad --objective \"%s\" (comma-separated dpo, perpo, lipo, listmle, or all)\n",
                    o->objective);
            return -1;
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

#endif /* PERPO_EXAMPLES_OPTIONS_H */
