/* examples/preference.h — the preference stage, as the paper runs it, top to bottom:
 *   1. sample     N answers per prompt from the SFT model, each scored by the task reward;
 *   2. filter     keep the lists whose best and worst answers differ by at least --margin;
 *   3. reference  log pi_ref of every kept answer under the frozen SFT model, once;
 *   4. control    SFT continued on the same prompts' true answers, for the same steps;
 *   5. objectives DPO, PerPO (and LiPO, ListMLE), each from the SFT weights on those lists, in
 *                 --rounds rounds (later rounds sample their lists from the current policy);
 * then run_preference: the whole stage for one seed, each trained model scored and diagnosed.
 * Part of the experiment headers (examples/experiment.h lists them); needs perpo.h
 * (declarations) first. */
#ifndef PERPO_EXAMPLES_PREFERENCE_H
#define PERPO_EXAMPLES_PREFERENCE_H

#include "common.h"
#include "options.h"
#include "progress.h"
#include "task.h"
#include "diagnostics.h"

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

/* What one preference stage gives: each method's scores, diagnostics and curve. */
#define EX_MAX_METHODS (EX_MAX_OBJECTIVES + 3) /* SFT, control, objectives, Best-of-N */
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

/* ---- 1. Sample: N answers per prompt, each scored by the task reward -------------------- */
/* N answers from `policy` for items [first, first+n) of prefs (top-p sampling at the options'
   temperature), with their rewards and the mean reward of all of them. */
static perpo_status sample_answers(perpo_model *policy, const task *tk, const dataset *prefs,
                                   size_t first, size_t n, const options *o, uint64_t seed,
                                   perpo_pref_set *set, double *mean_reward) {
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
    return PERPO_OK;
}

/* ---- 2. Filter: lists whose rewards differ enough to rank ------------------------------- */
/* Moves the lists whose best-minus-worst reward is at least --margin to the front of set and
   returns how many there are; each learns its prompt's true answer (for --nll-truth). */
static size_t filter_lists(perpo_pref_set *set, const dataset *prefs, const options *o) {
    size_t i, kept = perpo_pref_filter(set->lists, set->n_lists, (float)o->margin);
    for (i = 0; i < kept; i++)
        set->lists[i].truth = prefs->examples[list_item(prefs, &set->lists[i])].response;
    return kept;
}

/* ---- 3. Reference: log pi_ref of the kept answers, once --------------------------------- */
/* Steps 1 to 3: lists sampled from `policy` for items [first, first+n) of prefs, scored,
   filtered by the margin, with reference log-probs from the frozen `ref` model. */
static perpo_status sample_lists(perpo_model *policy, perpo_model *ref, const task *tk,
                                 const dataset *prefs, size_t first, size_t n, const options *o,
                                 uint64_t seed, perpo_pref_set *set, size_t *kept,
                                 double *mean_reward) {
    perpo_status st = sample_answers(policy, tk, prefs, first, n, o, seed, set, mean_reward);
    if (st != PERPO_OK) return st;
    *kept = filter_lists(set, prefs, o);
    if (*kept == 0) return PERPO_OK;
    return perpo_pref_reference(ref, set->lists, *kept);
}

/* ---- 4. The control: the same prompts' true answers ------------------------------------- */
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

/* ---- 5. The objectives, in rounds ------------------------------------------------------- */
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

/* ---- The stage: lists once, then the control and each objective from the SFT weights ---- */
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
        fail_why("sampling", st, perpo_model_last_error(sft));
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
    if ((st = create_model(&pol, perpo_model_config(sft), (uint64_t)seed)) != PERPO_OK) goto done;
    for (k = -1; k < EX_MAX_OBJECTIVES; k++) { /* -1: the control */
        if (k < 0 ? o->no_control : !objective_wanted(o->objective, ex_objective_kinds[k]))
            continue;
        mr = &r->m[r->n_methods];
        snprintf(mr->name, sizeof mr->name, "%s",
                 k < 0 ? "control (SFT continued)" : perpo_objective_name(ex_objective_kinds[k]));
        run_log_start(&log, k < 0 ? "control" : perpo_objective_name(ex_objective_kinds[k]),
                      o->verbose, &mr->loss_curve);
        t = log.t0;
        st = k < 0 ? train_control(pol, sft, prefs, set.lists, kept, o, seed, &log)
                   : train_objective(pol, sft, tk, prefs, o, seed, k, &set, kept, &log);
        if (st != PERPO_OK) {
            fail_why(mr->name, st, perpo_model_last_error(pol));
            goto done;
        }
        mr->train_s = wall_seconds() - t;
        if (k >= 0 && ex_objective_kinds[k] == PERPO_OBJ_PERPO) r->perpo_index = r->n_methods;
        if ((st = evaluate(pol, tk, test, &mr->s,
                           r->perpo_index == r->n_methods ? r->perpo_text : NULL)) != PERPO_OK) {
            fail_why("evaluation", st, perpo_model_last_error(pol));
            goto done;
        }
        if ((st = diagnose(pol, 0, tk, dg, set.lists, kept, &mr->diag)) != PERPO_OK) {
            fail_why("diagnostics", st, perpo_model_last_error(pol));
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

#endif /* PERPO_EXAMPLES_PREFERENCE_H */
