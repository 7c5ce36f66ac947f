/* examples/results.h — what an experiment reports when it is done: the results table on stdout
 * (mean ± sd over the seeds, PerPO's paired differences, the diagnostics table), results.json
 * (every method's metrics and diagnostics, with the flags; other tools read its keys), and the
 * figures: training curves and the per-group metric. The generic writers it uses (SVG plots,
 * JSON) are examples/report.h. Part of the experiment headers (examples/experiment.h lists
 * them); needs perpo.h (declarations) first. */
#ifndef PERPO_EXAMPLES_RESULTS_H
#define PERPO_EXAMPLES_RESULTS_H

#include "common.h"
#include "options.h"
#include "progress.h"
#include "task.h"
#include "diagnostics.h"
#include "preference.h"

/* ---- The table ----------------------------------------------------------------------------- */
static int table_width(const task *tk, int k, int seeds) {
    int w = (int)strlen(tk->metric_head[k]), cell = seeds > 1 ? 13 : 7;
    return w > cell ? w : cell;
}
/* One cell: mean (± sd over the seeds) of the diagnostic at `offset` in diag_stats, with
   `digits` decimals, signed or not. */
static void diag_cell(const run_result *runs, int n, int i, size_t offset, int digits, int sign,
                      char *cell, size_t cap) {
    double v[100];
    int s;
    for (s = 0; s < n; s++) v[s] = *(const double *)((const char *)&runs[s].m[i].diag + offset);
    ex_format_mean_sd(v, n, 1, digits, sign, cell, cap);
}

/* The diagnostics table (see "Diagnostics"): one row per trained model. */
static void print_diagnostics(const task *tk, const options *o, const run_result *runs) {
    static const struct {
        const char *head;
        size_t offset;
        int digits, sign;
    } col[] = {
        { "rho held-out", offsetof(diag_stats, rho_heldout), 3, 1 },
        { "chosen held-out", offsetof(diag_stats, chosen_heldout), 2, 1 },
        { "rejected held-out", offsetof(diag_stats, rejected_heldout), 2, 1 },
        { "chosen train", offsetof(diag_stats, chosen_train), 2, 1 },
        { "rejected train", offsetof(diag_stats, rejected_train), 2, 1 },
        { "log p(truth)", offsetof(diag_stats, truth_real), 2, 0 },
        { "blank image", offsetof(diag_stats, truth_blank), 2, 0 },
    };
    const int n = o->seeds, mm = tk->main_metric, w = 17;
    char cell[64], head[64];
    int i, c, k;
    if (!runs[0].m[0].diag.has) return;
    printf(
        "\nDiagnostics on %d held-out items, %d answers each sampled at temperature 1:\n"
        "  sampled: their %s; rho: rank correlation, within a list of the SFT model's\n"
        "  answers, of s = log pi - log pi_sft with the reward; chosen/rejected: mean s of each\n"
        "  list's best/worst answer (nats); log p of the true answer, real and blank image\n\n",
        o->n_diag, DIAG_SAMPLES, tk->metric_key[mm]);
    snprintf(head, sizeof head, "sampled %s", tk->metric_head[mm] ? tk->metric_head[mm] : "");
    printf("| %-24s | %-*s |", "method", w, head);
    for (c = 0; c < (int)(sizeof col / sizeof col[0]); c++) printf(" %-*s |", w, col[c].head);
    printf("\n|--------------------------|");
    for (c = 0; c <= (int)(sizeof col / sizeof col[0]); c++) {
        for (k = 0; k < w + 2; k++) putchar('-');
        putchar('|');
    }
    printf("\n");
    for (i = 0; i < runs[0].n_methods; i++) {
        double v[100];
        int s;
        if (!runs[0].m[i].diag.has) continue;
        printf("| %-24s |", runs[0].m[i].name);
        for (s = 0; s < n; s++) v[s] = runs[s].m[i].diag.sampled[mm] * tk->metric_scale[mm];
        ex_format_mean_sd(v, n, 1, tk->metric_scale[mm] == 100 ? 1 : 3, 0, cell, sizeof cell);
        printf(" %-*s |", w + (n > 1 ? 1 : 0), cell);
        for (c = 0; c < (int)(sizeof col / sizeof col[0]); c++) {
            diag_cell(runs, n, i, col[c].offset, col[c].digits, col[c].sign, cell, sizeof cell);
            printf(" %-*s |", w + (n > 1 ? 1 : 0), cell);
        }
        printf("\n");
    }
}

/* The regime a run is in, named from its flags: where the preference prompts come from (fresh
   ones, the SFT model's own labelled training examples, or --data) and whether the lists are
   sampled once from the SFT model or again from the policy each round. In the table's title and
   results.json, so that no number is read without it. */
static void regime_name(const options *o, char *buf, size_t cap) {
    char prompts[160];
    if (o->data)
        snprintf(prompts, sizeof prompts, "the prompts of %s", o->data);
    else if (o->pref_data_seed >= 0) /* pretraining's --scenes set of that --seed */
        snprintf(prompts, sizeof prompts, "%d labelled training examples of data seed %d",
                 o->n_pref, o->pref_data_seed);
    else
        snprintf(prompts, sizeof prompts, "%d fresh prompts", o->n_pref);
    if (o->rounds > 1)
        snprintf(buf, cap, "on-policy, %d rounds (lists sampled again from the policy), on %s",
                 o->rounds, prompts);
    else
        snprintf(buf, cap, "offline (lists sampled once from the SFT model), on %s", prompts);
}

static void print_table(const task *tk, const options *o, const run_result *runs) {
    int i, k, s, n = o->seeds;
    char cell[64], regime[400];
    printf("\n%s: %d held-out examples (test seed %d%s), N = %d, %d preference seed%s\n", tk->title,
           o->n_test, o->test_seed, o->test_shift ? ", shifted" : "", o->n_samples, n,
           n > 1 ? "s (mean ± sd)" : "");
    regime_name(o, regime, sizeof regime);
    printf("Regime: %s; from %s\n\n", regime, o->sft_ckpt ? o->sft_ckpt : "(no checkpoint)");
    printf("| %-24s |", "method");
    for (k = 0; k < tk->n_metrics; k++)
        if (tk->metric_head[k]) printf(" %-*s |", table_width(tk, k, n), tk->metric_head[k]);
    printf("\n|--------------------------|");
    for (k = 0; k < tk->n_metrics; k++)
        if (tk->metric_head[k]) {
            int w;
            for (w = 0; w < table_width(tk, k, n) + 2; w++) putchar('-');
            putchar('|');
        }
    printf("\n");
    for (i = 0; i < runs[0].n_methods; i++) {
        printf("| %-24s |", runs[0].m[i].name);
        for (k = 0; k < tk->n_metrics; k++) {
            double v[100];
            if (!tk->metric_head[k]) continue;
            for (s = 0; s < n; s++) v[s] = runs[s].m[i].s.v[k] * tk->metric_scale[k];
            ex_format_mean_sd(v, n, 1, tk->metric_scale[k] == 100 ? 1 : 3, 0, cell, sizeof cell);
            printf(" %-*s |", table_width(tk, k, n) + (n > 1 ? 1 : 0), cell); /* ± is 2 bytes */
        }
        printf("\n");
    }
    /* paired differences over the seeds: PerPO against each other row */
    if (runs[0].perpo_index >= 0) {
        int p = runs[0].perpo_index, mm = tk->main_metric;
        printf("\nPerPO minus each method, %s, paired over the seeds:",
               tk->metric_head[mm] ? tk->metric_head[mm] : tk->metric_key[mm]);
        for (i = 0; i < runs[0].n_methods - 1; i++) { /* the last row is Best-of-N */
            double v[100], mean, sd;
            if (i == p) continue;
            for (s = 0; s < n; s++)
                v[s] = (runs[s].m[p].s.v[mm] - runs[s].m[i].s.v[mm]) * tk->metric_scale[mm];
            ex_mean_sd(v, n, &mean, &sd);
            printf("%s %s %+.2f", i ? "," : "", runs[0].m[i].name, mean);
            if (n > 1) printf(" ± %.2f", sd);
        }
        printf("\n");
    }
    printf("lists: %zu sampled, %zu kept (margin >= %.2f); preference stage: %.0fs for the first "
           "seed\n",
           runs[0].lists_sampled, runs[0].lists_kept, o->margin, runs[0].total_s);
    print_diagnostics(tk, o, runs);
}

/* ---- results.json ------------------------------------------------------------------------- */
static void json_options(ex_json *j, const options *o) {
    ex_json_key(j, "flags");
    ex_json_object_begin(j);
    ex_json_kv_int(j, "seed", o->seed);
    ex_json_kv_int(j, "test_seed", o->test_seed);
    ex_json_kv_int(j, "test_shift", o->test_shift);
    ex_json_kv_int(j, "seeds", o->seeds);
    ex_json_kv_int(j, "n", o->n_samples);
    ex_json_kv_number(j, "beta", o->beta);
    ex_json_kv_number(j, "gamma", o->gamma);
    ex_json_kv_number(j, "temperature", o->temperature);
    ex_json_kv_number(j, "top_p", o->top_p);
    ex_json_kv_number(j, "margin", o->margin);
    ex_json_kv_number(j, "nll", o->nll);
    ex_json_kv_number(j, "positive", o->positive);
    ex_json_kv_int(j, "diag", o->n_diag);
    ex_json_kv_int(j, "pref_data_seed", o->pref_data_seed);
    ex_json_kv_int(j, "mean_logp", o->mean_logp);
    ex_json_kv_int(j, "nll_truth", o->nll_truth);
    ex_json_kv_int(j, "sft_steps", o->sft_steps);
    ex_json_kv_int(j, "pref_steps", o->pref_steps);
    ex_json_kv_number(j, "sft_lr", o->sft_lr);
    ex_json_kv_number(j, "pref_lr", o->pref_lr);
    ex_json_kv_int(j, "pref_prompts", o->n_pref);
    ex_json_kv_int(j, "test", o->n_test);
    ex_json_kv_int(j, "rounds", o->rounds);
    ex_json_kv_int(j, "batch", o->batch);
    ex_json_kv_int(j, "lists", o->lists_per_step);
    ex_json_kv_int(j, "accum", o->accum);
    ex_json_kv_string(j, "objective", o->objective);
    ex_json_kv_int(j, "threads", o->threads);
    if (o->data) ex_json_kv_string(j, "data", o->data);
    if (o->sft_ckpt) ex_json_kv_string(j, "sft_checkpoint", o->sft_ckpt);
    ex_json_object_end(j);
}

/* Opens DIR/results.json and writes {"task": ..., "flags": {...}, "runs": [ ; NULL (with a
   message) when the file cannot be created. path gets the file's name. */
static FILE *results_begin(ex_json *j, const options *o, const char *task, char *path, size_t cap) {
    FILE *f;
    char regime[400];
    snprintf(path, cap, "%s/results.json", o->out);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return NULL;
    }
    ex_json_init(j, f);
    ex_json_object_begin(j);
    ex_json_kv_string(j, "task", task);
    regime_name(o, regime, sizeof regime);
    ex_json_kv_string(j, "regime", regime);
    json_options(j, o);
    ex_json_key(j, "runs");
    ex_json_array_begin(j);
    return f;
}
/* One run's common fields, then opens its "methods" array. */
static void results_run_begin(ex_json *j, int seed, size_t sampled, size_t kept, double mean_reward,
                              double seconds) {
    ex_json_object_begin(j);
    ex_json_kv_int(j, "seed", seed);
    ex_json_kv_int(j, "lists_sampled", (long long)sampled);
    ex_json_kv_int(j, "lists_kept", (long long)kept);
    ex_json_kv_number(j, "mean_sample_reward", mean_reward);
    ex_json_kv_number(j, "seconds", seconds);
    ex_json_key(j, "methods");
    ex_json_array_begin(j);
}
static void results_run_end(ex_json *j) {
    ex_json_array_end(j);
    ex_json_object_end(j);
}
/* Closes the document and the file; 0 on success. */
static int results_end(ex_json *j, FILE *f, const char *path) {
    ex_json_array_end(j);
    ex_json_object_end(j);
    if (ex_json_finish(j) != 0 || fclose(f) != 0) {
        fprintf(stderr, "error: writing %s failed\n", path);
        return -1;
    }
    printf("wrote %s\n", path);
    return 0;
}

static int write_results(const task *tk, const options *o, const run_result *runs) {
    char path[1024];
    FILE *f;
    ex_json j;
    int s, i, k;
    if (!(f = results_begin(&j, o, tk->name, path, sizeof path))) return -1;
    for (s = 0; s < o->seeds; s++) {
        results_run_begin(&j, o->seed + s, runs[s].lists_sampled, runs[s].lists_kept,
                          runs[s].mean_list_reward, runs[s].total_s);
        for (i = 0; i < runs[s].n_methods; i++) {
            ex_json_object_begin(&j);
            ex_json_kv_string(&j, "method", runs[s].m[i].name);
            for (k = 0; k < tk->n_metrics; k++)
                ex_json_kv_number(&j, tk->metric_key[k], runs[s].m[i].s.v[k]);
            ex_json_kv_number(&j, "train_seconds", runs[s].m[i].train_s);
            if (runs[s].m[i].diag.has) {
                const diag_stats *d = &runs[s].m[i].diag;
                ex_json_key(&j, "diagnostics");
                ex_json_object_begin(&j);
                ex_json_key(&j, "sampled");
                ex_json_object_begin(&j);
                for (k = 0; k < tk->n_metrics; k++)
                    ex_json_kv_number(&j, tk->metric_key[k], d->sampled[k]);
                ex_json_object_end(&j);
                ex_json_kv_number(&j, "rho_heldout", d->rho_heldout);
                ex_json_kv_number(&j, "rho_train", d->rho_train);
                ex_json_kv_number(&j, "chosen_shift_heldout", d->chosen_heldout);
                ex_json_kv_number(&j, "rejected_shift_heldout", d->rejected_heldout);
                ex_json_kv_number(&j, "chosen_shift_train", d->chosen_train);
                ex_json_kv_number(&j, "rejected_shift_train", d->rejected_train);
                ex_json_kv_number(&j, "truth_logp", d->truth_real);
                ex_json_kv_number(&j, "truth_logp_blank_image", d->truth_blank);
                ex_json_object_end(&j);
            }
            ex_json_object_end(&j);
        }
        results_run_end(&j);
    }
    return results_end(&j, f, path);
}

/* ---- Figures: the training curves and the metric per group -------------------------------- */
/* Five panels: the SFT loss, then each preference run's loss, rewards/accuracies,
   rewards/chosen and rewards/rejected against the step (chosen and rejected falling together
   is likelihood displacement: the pairs are ranked by pushing every answer down). */
static int write_curves(const char *path, const char *title, const curve *sft, int n,
                        const char *const *names, const curve *const *runs) {
    const float *xs[EX_MAX_OBJECTIVES], *loss[EX_MAX_OBJECTIVES], *acc[EX_MAX_OBJECTIVES],
        *cho[EX_MAX_OBJECTIVES], *rej[EX_MAX_OBJECTIVES];
    const float *sx[1], *sy[1];
    int counts[EX_MAX_OBJECTIVES], sc[1], k;
    ex_plot_panel p[5];
    const char *sft_name[1] = { "SFT" };
    for (k = 0; k < n && k < EX_MAX_OBJECTIVES; k++) {
        xs[k] = runs[k]->step;
        loss[k] = runs[k]->loss;
        acc[k] = runs[k]->acc;
        cho[k] = runs[k]->chosen;
        rej[k] = runs[k]->rejected;
        counts[k] = runs[k]->n;
    }
    sx[0] = sft->step;
    sy[0] = sft->loss;
    sc[0] = sft->n;
    p[0].title = "SFT";
    p[0].xlabel = "step";
    p[0].ylabel = "token cross-entropy";
    p[0].n_series = 1;
    p[0].names = sft_name;
    p[0].xs = sx;
    p[0].ys = sy;
    p[0].counts = sc;
    p[1].title = "preference loss";
    p[1].xlabel = "step";
    p[1].ylabel = "loss";
    p[1].n_series = k;
    p[1].names = names;
    p[1].xs = xs;
    p[1].ys = loss;
    p[1].counts = counts;
    p[2] = p[1];
    p[2].title = "rewards/accuracies";
    p[2].ylabel = "pairs ranked right";
    p[2].ys = acc;
    p[3] = p[1];
    p[3].title = "rewards/chosen";
    p[3].ylabel = "beta s of the best answer";
    p[3].ys = cho;
    p[4] = p[1];
    p[4].title = "rewards/rejected";
    p[4].ylabel = "beta s of the worst answer";
    p[4].ys = rej;
    return ex_svg_plot_panels(path, title, n ? 5 : 1, p);
}

/* The pretraining loss curve from CKPT.json ("loss_curve": [[step, loss], ...]), for the
   curves' first panel; empty when there is none. */
static void read_pretrain_curve(const char *ckpt, curve *c) {
    char path[1024], *buf, *p;
    FILE *f;
    long n;
    c->n = 0;
    snprintf(path, sizeof path, "%s.json", ckpt);
    if (!(f = fopen(path, "rb"))) return;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = n > 0 ? (char *)malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        p = strstr(buf, "\"loss_curve\"");
        while (p && c->n < CURVE_MAX && (p = strchr(p + 1, '[')) != NULL) {
            float step, loss;
            if (sscanf(p, "[%f, %f]", &step, &loss) == 2) {
                c->step[c->n] = step;
                c->loss[c->n] = loss;
                c->n++;
            }
        }
    }
    free(buf);
    fclose(f);
}

/* DIR/training_curves.svg from the first seed's curves. */
static void curves_output(const options *o, const char *title, const curve *sft, int n,
                          const char *const *names, const curve *const *runs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/training_curves.svg", o->out);
    if (write_curves(path, title, sft, n, names, runs) != 0)
        fprintf(stderr, "warning: cannot write %s\n", path);
    else
        printf("wrote %s\n", path);
}

/* DIR/NAME_by_group.svg: the task's per-group metric for each method but the Best-of-N row,
   averaged over the seeds. */
static void group_figure(const task *tk, const options *o, const run_result *runs) {
    float xs[EX_MAX_METHODS][EX_MAX_METRICS], ys[EX_MAX_METHODS][EX_MAX_METRICS];
    const float *px[EX_MAX_METHODS], *py[EX_MAX_METHODS];
    const char *names[EX_MAX_METHODS];
    int counts[EX_MAX_METHODS], k, g, s, n = runs[0].n_methods - 1; /* the last row is Best-of-N */
    char path[1024], title[256];
    if (tk->n_groups < 1 || tk->group_metric + tk->n_groups > tk->n_metrics) return;
    for (k = 0; k < n; k++) {
        for (g = 0; g < tk->n_groups; g++) {
            double sum = 0;
            for (s = 0; s < o->seeds; s++) sum += runs[s].m[k].s.v[tk->group_metric + g];
            xs[k][g] = (float)g;
            ys[k][g] = (float)(sum / o->seeds);
        }
        px[k] = xs[k];
        py[k] = ys[k];
        names[k] = runs[0].m[k].name;
        counts[k] = tk->n_groups;
    }
    snprintf(path, sizeof path, "%s/%s_by_group.svg", o->out, tk->name);
    snprintf(title, sizeof title, "%s by %s (%d test items, mean of %d seed%s)", tk->group_ylabel,
             tk->group_axis, o->n_test, o->seeds, o->seeds > 1 ? "s" : "");
    if (ex_svg_plot(path, title, tk->group_axis, tk->group_ylabel, n, names, px, py, counts) != 0)
        fprintf(stderr, "warning: cannot write %s\n", path);
    else
        printf("wrote %s\n", path);
}

#endif /* PERPO_EXAMPLES_RESULTS_H */
