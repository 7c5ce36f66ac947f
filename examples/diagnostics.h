/* examples/diagnostics.h — what preference training changed, read on held-out items: sampled
 * metrics, the rank correlation of the implicit reward with the task reward, the shifts of the
 * chosen and rejected answers, and how much the true answer relies on the image. Part of the
 * experiment headers (examples/experiment.h lists them); needs perpo.h (declarations) first. */
#ifndef PERPO_EXAMPLES_DIAGNOSTICS_H
#define PERPO_EXAMPLES_DIAGNOSTICS_H

#include "task.h"

/* ---- Diagnostics: what preference training changed, read on held-out items ------------------
 * Greedy accuracy alone cannot tell a model that learned to rank its answers from one that
 * moved every answer down. For each trained model, on `--diag` held-out items:
 *   sampled   the task metrics of DIAG_SAMPLES answers sampled at temperature 1 (no top-p);
 *   rho       per list, Spearman's rank correlation between the implicit reward
 *             s = log pi(y) - log pi_sft(y) of the list's answers and their task reward, averaged
 *             over lists (lists sampled once from the SFT model; ties share their mean rank;
 *             lists where s or the reward is constant are skipped, so SFT itself has none);
 *   shifts    the mean s of each list's best-reward (chosen) and worst-reward (rejected) answer,
 *             in nats, on those held-out lists and on the lists the model was trained on;
 *   truth     the mean log-prob of the true answer with the real image and with an all-zero
 *             one: the drop between them is how much the answer relies on the image;
 *   greedy    optional (diag_ctx.greedy = 1; examples/repro.c): the task metrics of the greedy
 *             answers on the same items, with the real images and with all-zero ones. */
#define DIAG_SAMPLES 8
typedef struct diag_stats {
    int has; /* 0: not measured (Best-of-N, or --diag 0) */
    double sampled[EX_MAX_METRICS];
    double rho_heldout, rho_train;
    double chosen_heldout, rejected_heldout, chosen_train, rejected_train;
    double truth_real, truth_blank;
    int has_greedy; /* greedy_real and greedy_blank measured (diag_ctx.greedy) */
    double greedy_real[EX_MAX_METRICS], greedy_blank[EX_MAX_METRICS];
} diag_stats;

/* What every model's diagnostics are measured against, made once from the SFT model. */
typedef struct diag_ctx {
    const dataset *items; /* the held-out items (NULL: no diagnostics) */
    perpo_pref_set lists; /* DIAG_SAMPLES answers of the SFT model per item, ref_logp = SFT's */
    perpo_pref_list *truth_real, *truth_blank; /* one list per item: its true answer */
    float *blank, *logp; /* the all-zero image; room for the log-probs of every answer */
    const char **truth_resp;
    float *truth_reward;
    uint64_t seed;
    int greedy; /* 1: also the greedy metrics with real and blank images (set after diag_init) */
} diag_ctx;

/* rho and the chosen/rejected shifts of `model` on lists whose ref_logp is the SFT model's;
   logp: room for the log-prob of every answer of the lists. */
static perpo_status list_shifts(perpo_model *model, const perpo_pref_list *lists, size_t n_lists,
                                float *logp, double *rho, double *chosen, double *rejected) {
    size_t i, n_rho = 0, n_shift = 0, off = 0;
    perpo_status st;
    perpo_pref_list *mine;
    *rho = *chosen = *rejected = 0.0;
    if (n_lists == 0) return PERPO_OK;
    if (!(mine = (perpo_pref_list *)malloc(n_lists * sizeof *mine))) return PERPO_ERR_NOMEM;
    for (i = 0; i < n_lists; i++) { /* the same lists, log-probs into logp */
        mine[i] = lists[i];
        mine[i].ref_logp = logp + off;
        off += (size_t)lists[i].n;
    }
    st = perpo_pref_reference(model, mine, n_lists);
    for (i = 0; st == PERPO_OK && i < n_lists; i++) {
        double sv[PERPO_MAX_LIST], rv[PERPO_MAX_LIST], r;
        int k, n = lists[i].n, best = 0, worst = 0, ok;
        for (k = 0; k < n; k++) {
            sv[k] = (double)mine[i].ref_logp[k] - lists[i].ref_logp[k];
            rv[k] = lists[i].rewards[k];
            if (rv[k] > rv[best]) best = k;
            if (rv[k] < rv[worst]) worst = k;
        }
        r = ex_spearman(sv, rv, n, &ok);
        if (ok) {
            *rho += r;
            n_rho++;
        }
        if (rv[best] > rv[worst]) {
            *chosen += sv[best];
            *rejected += sv[worst];
            n_shift++;
        }
    }
    free(mine);
    if (n_rho) *rho /= (double)n_rho;
    if (n_shift) {
        *chosen /= (double)n_shift;
        *rejected /= (double)n_shift;
    }
    return st;
}

static size_t lists_responses(const perpo_pref_list *lists, size_t n) {
    size_t i, total = 0;
    for (i = 0; i < n; i++) total += (size_t)lists[i].n;
    return total;
}

static void diag_free(diag_ctx *d) {
    perpo_pref_set_free(&d->lists);
    free(d->truth_real);
    free(d->truth_blank);
    free(d->blank);
    free(d->logp);
    free((void *)d->truth_resp);
    free(d->truth_reward);
    memset(d, 0, sizeof *d);
}

/* The sampled metrics of `model` on the items: DIAG_SAMPLES answers each at temperature 1. */
static perpo_status diag_sampled(perpo_model *model, const task *tk, const diag_ctx *d,
                                 const perpo_pref_set *given, double *out) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set own;
    const perpo_pref_set *set = given;
    double sum[EX_MAX_METRICS] = { 0 }, weight[EX_MAX_METRICS] = { 0 };
    reward_ctx rc;
    scores sco;
    perpo_status st;
    size_t i;
    int k;
    memset(&own, 0, sizeof own);
    if (!set) {
        sc.temperature = 1.0f;
        sc.seed = d->seed;
        rc.tk = tk;
        rc.d = d->items;
        if ((st = perpo_pref_sample(model, d->items->examples, (size_t)d->items->n, DIAG_SAMPLES,
                                    &sc, task_reward, &rc, &own)) != PERPO_OK)
            return st;
        set = &own;
    }
    for (i = 0; i < set->n_lists; i++)
        for (k = 0; k < set->lists[i].n; k++)
            tk->score(set->lists[i].responses[k], strlen(set->lists[i].responses[k]),
                      ds_answer(d->items, (int)i), d->items->group[i], sum, weight);
    scores_finish(tk, sum, weight, &sco);
    memcpy(out, sco.v, sizeof sco.v);
    perpo_pref_set_free(&own);
    return PERPO_OK;
}

/* The held-out lists (the SFT model's samples, with its log-probs) and the true answers. */
static perpo_status diag_init(diag_ctx *d, perpo_model *sft, const task *tk, const dataset *items,
                              uint64_t seed) {
    perpo_sample_config sc = perpo_sample_default();
    reward_ctx rc;
    perpo_status st;
    size_t i, n = (size_t)items->n;
    memset(d, 0, sizeof *d);
    d->items = items;
    d->seed = seed;
    sc.temperature = 1.0f;
    sc.seed = seed;
    rc.tk = tk;
    rc.d = items;
    if ((st = perpo_pref_sample(sft, items->examples, n, DIAG_SAMPLES, &sc, task_reward, &rc,
                                &d->lists)) != PERPO_OK ||
        (st = perpo_pref_reference(sft, d->lists.lists, d->lists.n_lists)) != PERPO_OK)
        return st;
    d->truth_real = (perpo_pref_list *)calloc(n, sizeof *d->truth_real);
    d->truth_blank = (perpo_pref_list *)calloc(n, sizeof *d->truth_blank);
    d->blank = (float *)calloc(items->image_floats, sizeof(float));
    d->truth_resp = (const char **)calloc(n, sizeof(char *));
    d->truth_reward = (float *)calloc(n, sizeof(float));
    d->logp = (float *)malloc(n * DIAG_SAMPLES * sizeof(float)); /* the truths use n of them */
    if (!d->truth_real || !d->truth_blank || !d->blank || !d->truth_resp || !d->truth_reward ||
        !d->logp)
        return PERPO_ERR_NOMEM;
    for (i = 0; i < n; i++) {
        perpo_pref_list *r = &d->truth_real[i];
        d->truth_resp[i] = ds_answer(items, (int)i);
        r->image = items->examples[i].image;
        r->prompt = items->examples[i].prompt;
        r->n = 1;
        r->responses = d->truth_resp + i;
        r->rewards = d->truth_reward + i;
        d->truth_blank[i] = *r; /* ref_logp: set where they are scored */
        d->truth_blank[i].image = d->blank;
    }
    return PERPO_OK;
}

/* The mean log-prob of the true answers under model (real images, then blank ones). */
static perpo_status diag_truth(perpo_model *model, const diag_ctx *d, double *real, double *blank) {
    size_t i, n = (size_t)d->items->n;
    int b;
    perpo_status st = PERPO_OK;
    for (b = 0; b < 2 && st == PERPO_OK; b++) {
        perpo_pref_list *mine = (perpo_pref_list *)malloc(n * sizeof *mine);
        double sum = 0.0;
        if (!mine) return PERPO_ERR_NOMEM;
        for (i = 0; i < n; i++) {
            mine[i] = (b ? d->truth_blank : d->truth_real)[i];
            mine[i].ref_logp = d->logp + i;
        }
        st = perpo_pref_reference(model, mine, n);
        for (i = 0; i < n; i++) sum += d->logp[i];
        *(b ? blank : real) = sum / (double)n;
        free(mine);
    }
    return st;
}

/* The greedy metrics of `model` on the items with their images, then with all-zero ones. */
static perpo_status diag_greedy(perpo_model *model, const task *tk, const diag_ctx *d, double *real,
                                double *blank) {
    dataset view = *d->items; /* the same items, each image the blank one */
    scores sc;
    perpo_status st;
    int i;
    if ((st = evaluate(model, tk, d->items, &sc, NULL)) != PERPO_OK) return st;
    memcpy(real, sc.v, sizeof sc.v);
    view.examples = (perpo_example *)malloc((size_t)view.n * sizeof *view.examples);
    if (!view.examples) return PERPO_ERR_NOMEM;
    for (i = 0; i < view.n; i++) {
        view.examples[i] = d->items->examples[i];
        view.examples[i].image = d->blank;
    }
    st = evaluate(model, tk, &view, &sc, NULL);
    free(view.examples);
    if (st == PERPO_OK) memcpy(blank, sc.v, sizeof sc.v);
    return st;
}

/* Every diagnostic of `model` (is_sft: the SFT model itself, whose samples are the lists). */
static perpo_status diagnose(perpo_model *model, int is_sft, const task *tk, const diag_ctx *d,
                             const perpo_pref_list *train, size_t n_train, diag_stats *out) {
    perpo_status st;
    float *scratch;
    memset(out, 0, sizeof *out);
    if (!d->items) return PERPO_OK;
    if ((st = diag_sampled(model, tk, d, is_sft ? &d->lists : NULL, out->sampled)) != PERPO_OK ||
        (st = list_shifts(model, d->lists.lists, d->lists.n_lists, d->logp, &out->rho_heldout,
                          &out->chosen_heldout, &out->rejected_heldout)) != PERPO_OK ||
        (st = diag_truth(model, d, &out->truth_real, &out->truth_blank)) != PERPO_OK ||
        (d->greedy &&
         (st = diag_greedy(model, tk, d, out->greedy_real, out->greedy_blank)) != PERPO_OK))
        return st;
    out->has_greedy = d->greedy;
    if (n_train) {
        if (!(scratch = (float *)malloc(lists_responses(train, n_train) * sizeof(float))))
            return PERPO_ERR_NOMEM;
        st = list_shifts(model, train, n_train, scratch, &out->rho_train, &out->chosen_train,
                         &out->rejected_train);
        free(scratch);
        if (st != PERPO_OK) return st;
    }
    out->has = 1;
    return PERPO_OK;
}

#endif /* PERPO_EXAMPLES_DIAGNOSTICS_H */
