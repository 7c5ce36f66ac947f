/* examples/ocr_task.h — the dense OCR task, what dense_ocr.c and repro.c share: its defaults
 * (the offline regime of the demo), the model (one character cell per patch), the rendered pages
 * at four text densities, the edit-distance reward, the metrics overall and per density, and
 * the picture of test pages; dense_ocr_task() hands them to the experiment headers. Needs
 * perpo.h (declarations) and examples/experiment.h first (this file includes experiment.h
 * itself). */
#ifndef PERPO_EXAMPLES_OCR_TASK_H
#define PERPO_EXAMPLES_OCR_TASK_H

#include "common.h"
#include "experiment.h"

/* Pages are OCR_IMG_W x OCR_IMG_H RGB: 10 x 8 character cells of 6 x 8 pixels, no margin, so
   each 6 x 8 patch of the model sees one character. */
#define OCR_IMG_W     60
#define OCR_IMG_H     64
#define OCR_N_DENSITY 4 /* densities 0..3; page i of a split has density i % 4 */
/* The densest page's transcription (synth.h's default cap; a full page holds at most 87 with its
   newlines). */
#define OCR_MAX_CHARS 88
#define OCR_MAX_TEXT  94 /* BOS + prompt + SEP + 88 characters + EOS */
#define OCR_TEXT_CAP  96
#define OCR_PROMPT    "read"

static void ocr_defaults(options *o) {
    options_default(o);
    o->description = "PerPO on synthetic dense OCR: from the pretrained SFT model, the control "
                     "(SFT continued),\n"
                     "DPO and PerPO on the same sampled lists (reward 1 - normalized edit "
                     "distance), evaluated on\n"
                     "held-out pages.";
    o->test_seed = 555;
    o->n_samples = 5; /* N = 5 as in the paper */
    o->n_pref = 320;
    o->n_test = 1000;
    o->bon_test = 300;
    o->lists_per_step = 6;
    o->margin = 0.04;
    /* the paper's objective (beta 0.1, summed log-probs, no NLL term) at the learning rate that
       did least harm in the search on tuning seed 1002 (docs/experiments.md, "What we learned";
       examples/results/dense_ocr_search.jsonl): from a reader this good, every larger step of
       DPO or PerPO raised the edit distance */
    o->pref_lr = 1e-6;
    o->out = "results/dense_ocr";
    o->sft_ckpt = "examples/models/dense_ocr_sft.ckpt";
    o->n_val = 1000;
    o->val_seed = 556;
    o->sft_warmup = 100;
}

static perpo_config ocr_model_config(void) {
    perpo_config c = perpo_config_default(); /* width 128, 2 vision + 4 decoder blocks */
    c.image_h = OCR_IMG_H;
    c.image_w = OCR_IMG_W;
    c.patch_h = 8;
    c.patch_w = 6; /* one character cell per patch: 80 vision tokens */
    c.max_text = OCR_MAX_TEXT;
    c.max_batch = 32;
    c.pos_channels = 1;
    c.vis_sincos = 1;
    return c;
}

/* ---- Data, reward, metrics ------------------------------------------------------------------ */
/* Page `index` of a split has density index % 4. */
static int page_make(uint64_t base, uint64_t index, float *image, char *prompt, char *answer,
                     int *group) {
    ex_page page;
    int density = (int)(index % OCR_N_DENSITY);
    if (ex_page_from_index(base, index, OCR_IMG_W, OCR_IMG_H, density, &page) != 0 ||
        page.len > OCR_MAX_CHARS)
        return -1;
    ex_page_render(&page, image);
    memcpy(answer, page.text, (size_t)page.len + 1);
    snprintf(prompt, OCR_TEXT_CAP, "%s", OCR_PROMPT);
    *group = density;
    return 0;
}

/* --data pages: the density is read off the length with the caps of the synthetic pages
   (<= 12, 24, 56 and 88 characters). */
static int density_of(const char *answer) {
    size_t len = strlen(answer);
    return len <= 12 ? 0 : len <= 24 ? 1 : len <= 56 ? 2 : 3;
}

static float ocr_reward(const char *response, size_t len, const char *answer) {
    float r = 0.0f;
    return perpo_ocr_reward(response, len, answer, strlen(answer), &r, NULL) == PERPO_OK ? r : 0.0f;
}

/* Overall metrics, then the edit distance and F1 at each density. */
enum {
    OCR_NED,
    OCR_F1,
    OCR_PREC,
    OCR_REC,
    OCR_BLEU,
    OCR_NED_D0,
    OCR_F1_D0 = OCR_NED_D0 + OCR_N_DENSITY,
    OCR_N_METRICS = OCR_F1_D0 + OCR_N_DENSITY
};
static void ocr_score(const char *response, size_t len, const char *answer, int group, double *sum,
                      double *weight) {
    perpo_ocr_scores s;
    int k;
    if (perpo_ocr_score(response, len, answer, strlen(answer), &s, NULL) != PERPO_OK) {
        s.edit_distance = 1.0f;
        s.f1 = s.precision = s.recall = s.bleu = 0.0f;
    }
    sum[OCR_NED] += s.edit_distance;
    sum[OCR_F1] += s.f1;
    sum[OCR_PREC] += s.precision;
    sum[OCR_REC] += s.recall;
    sum[OCR_BLEU] += s.bleu;
    for (k = OCR_NED; k <= OCR_BLEU; k++) weight[k] += 1;
    if (group >= 0 && group < OCR_N_DENSITY) {
        sum[OCR_NED_D0 + group] += s.edit_distance;
        weight[OCR_NED_D0 + group] += 1;
        sum[OCR_F1_D0 + group] += s.f1;
        weight[OCR_F1_D0 + group] += 1;
    }
}

static const char *ocr_check(const char *answer) {
    return strlen(answer) > OCR_MAX_CHARS ? "is longer than the 88 characters a page holds" : NULL;
}

/* Test pages (zoomed) with the true, SFT and PerPO transcriptions under each. */
static int ocr_picture(const char *path, const dataset *test, const char *sft_text,
                       const char *perpo_text) {
    enum { N_SHOW = 8, ZOOM = 3 };
    const size_t page_floats = (size_t)OCR_IMG_W * ZOOM * OCR_IMG_H * ZOOM * 3; /* a zoomed page */
    float *page, *tiles; /* tiles: n of 2 * page_floats, the page and room for its labels */
    char labels[N_SHOW][3 * (OCR_TEXT_CAP + 8)];
    const float *ptr[N_SHOW];
    const char *lab[N_SHOW];
    ex_grid g = ex_grid_default();
    int i, n = test->n < N_SHOW ? test->n : N_SHOW, rc;
    page = (float *)malloc(page_floats * sizeof(float));
    tiles = (float *)malloc((size_t)n * 2 * page_floats * sizeof(float));
    if (!page || !tiles) {
        free(page);
        free(tiles);
        return 1;
    }
    for (i = 0; i < n; i++) { /* one line each: newlines of the transcriptions shown as '|' */
        char t[3][OCR_TEXT_CAP];
        int k;
        size_t c;
        snprintf(t[0], OCR_TEXT_CAP, "%s", ds_answer(test, i));
        snprintf(t[1], OCR_TEXT_CAP, "%s", sft_text + (size_t)i * test->cap);
        snprintf(t[2], OCR_TEXT_CAP, "%s", perpo_text ? perpo_text + (size_t)i * test->cap : "");
        for (k = 0; k < 3; k++)
            for (c = 0; t[k][c]; c++)
                if (t[k][c] == '\n') t[k][c] = '|';
        snprintf(labels[i], sizeof labels[i], "true: %s\nSFT:  %s\nPerPO:%s", t[0], t[1], t[2]);
        { /* the page on the left half of a tile twice as wide, so the labels have room */
            int y;
            ex_upscale(test->examples[i].image, OCR_IMG_W, OCR_IMG_H, ZOOM, page);
            for (y = 0; y < OCR_IMG_H * ZOOM; y++) {
                float *row =
                    tiles + (size_t)i * 2 * page_floats + (size_t)y * 2 * OCR_IMG_W * ZOOM * 3;
                memcpy(row, page + (size_t)y * OCR_IMG_W * ZOOM * 3,
                       OCR_IMG_W * ZOOM * 3 * sizeof(float));
                for (k = OCR_IMG_W * ZOOM * 3; k < 2 * OCR_IMG_W * ZOOM * 3; k++) row[k] = 1.0f;
            }
        }
        ptr[i] = tiles + (size_t)i * 2 * page_floats;
        lab[i] = labels[i];
    }
    g.cols = 2;
    g.zoom = 1;
    g.label_lines = 3;
    g.label_scale = 1;
    g.margin = 10;
    rc = ex_grid_write_png(path, &g, n, ptr, OCR_IMG_W * ZOOM * 2, OCR_IMG_H * ZOOM, lab) == 0 ? 0
                                                                                               : 1;
    free(page);
    free(tiles);
    return rc;
}

/* ---- The task, as the experiment sees it --------------------------------------------------- */
static task dense_ocr_task(void) {
    static const char *const ned_key[OCR_N_DENSITY] = { "edit_distance_d0", "edit_distance_d1",
                                                        "edit_distance_d2", "edit_distance_d3" };
    static const char *const ned_head[OCR_N_DENSITY] = { "ED d0", "ED d1", "ED d2", "ED d3" };
    static const char *const f1_key[OCR_N_DENSITY] = { "f1_d0", "f1_d1", "f1_d2", "f1_d3" };
    task tk;
    int k;
    memset(&tk, 0, sizeof tk);
    tk.name = "dense_ocr";
    tk.title = "PerPO on synthetic dense OCR (edit distance: lower is better; ED dK: at density K)";
    tk.pretrain_make = "pretrain-ocr";
    tk.cfg = ocr_model_config();
    tk.text_cap = OCR_TEXT_CAP;
    tk.n_metrics = OCR_N_METRICS;
    tk.metric_key[OCR_NED] = "edit_distance";
    tk.metric_head[OCR_NED] = "edit dist";
    tk.metric_key[OCR_F1] = "f1";
    tk.metric_head[OCR_F1] = "F1";
    tk.metric_key[OCR_PREC] = "precision";
    tk.metric_head[OCR_PREC] = "precision";
    tk.metric_key[OCR_REC] = "recall";
    tk.metric_head[OCR_REC] = "recall";
    tk.metric_key[OCR_BLEU] = "bleu";
    tk.metric_head[OCR_BLEU] = "BLEU";
    for (k = 0; k < OCR_N_DENSITY; k++) {
        tk.metric_key[OCR_NED_D0 + k] = ned_key[k];
        tk.metric_head[OCR_NED_D0 + k] = ned_head[k];
        tk.metric_key[OCR_F1_D0 + k] = f1_key[k];
    }
    for (k = 0; k < OCR_N_METRICS; k++) tk.metric_scale[k] = 1;
    tk.main_metric = OCR_NED;
    tk.higher_is_better = 0;
    tk.make = page_make;
    tk.reward = ocr_reward;
    tk.score = ocr_score;
    tk.check_answer = ocr_check;
    tk.group_of = density_of;
    tk.picture = ocr_picture;
    tk.answer_escapes = 1; /* --data transcriptions write their line breaks as \n */
    tk.group_metric = OCR_NED_D0;
    tk.n_groups = OCR_N_DENSITY; /* the paper's Figure 5 */
    tk.group_axis = "text density";
    tk.group_ylabel = "edit distance"; /* 0: one short line ... 3: a full page */
    return tk;
}

#endif /* PERPO_EXAMPLES_OCR_TASK_H */
