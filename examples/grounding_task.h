/* examples/grounding_task.h — the grounding task, what grounding.c and repro.c share: its
 * defaults (the demo's regime), the model, the synthetic scenes, the IoU reward, the metrics
 * (Acc@0.5, mean IoU, parse failures) and the picture of test scenes; grounding_task() hands
 * them to the experiment headers. Needs perpo.h (declarations) and examples/experiment.h first
 * (this file includes experiment.h itself). */
#ifndef PERPO_EXAMPLES_GROUNDING_TASK_H
#define PERPO_EXAMPLES_GROUNDING_TASK_H

#include "common.h"
#include "experiment.h"

#define GR_IMG      64 /* scenes are GR_IMG x GR_IMG RGB */
#define GR_TEXT_CAP 48 /* > perpo_config.max_text */

/* ---- Options ------------------------------------------------------------------------------ */
static void grounding_defaults(options *o) {
    options_default(o);
    o->description =
        "PerPO on synthetic object grounding: from the pretrained SFT model, the control\n"
        "(SFT continued), DPO and PerPO on the same sampled lists, evaluated on held-out scenes.";
    o->test_seed = 777;
    o->n_samples = 8;
    /* The regime where preference training measurably helps (docs/where-perpo-helps.md, H4):
       an SFT model early-stopped on a fixed set of 2,048 labelled scenes (make pretrain), then
       the control, DPO and PerPO on those same scenes (--pref-data-seed 11 = the checkpoint's
       training seed), the lists sampled again from the current policy in 3 rounds over 600
       steps at lr 3e-5 (lr 1e-4 collapsed). The earlier regime, an SFT
       model trained on fresh scenes every step, is make pretrain-stream plus
       --sft-checkpoint examples/models/grounding_sft.ckpt --pref-data-seed -1 --rounds 1
       --pref-prompts 512 --pref-steps 100 --pref-lr 1e-5 (docs/experiments.md). */
    o->n_test = 2000;
    o->bon_test = 500;
    o->n_pref = 2048;
    o->pref_data_seed = 11;
    o->rounds = 3;
    o->pref_steps = 600;
    o->lists_per_step = 4;
    o->margin = 0.3;
    o->pref_lr = 3e-5;
    o->out = "results/grounding";
    o->sft_ckpt = "examples/models/grounding_sft_k2048.ckpt";
    o->n_val = 2000;
    o->val_seed = 555;
    o->sft_warmup = 200;
}

/* ---- The model ---------------------------------------------------------------------------- */
static perpo_config grounding_model_config(void) {
    perpo_config c = perpo_config_default(); /* 64x64, 8x8 patches, width 128, 2+4 blocks */
    c.max_text = 40;                         /* BOS + "yellow triangle" + SEP + box + EOS fits */
    c.max_batch = 32;
    c.pos_channels = 1; /* x/y channels and the sin-cos code: the vision */
    c.vis_sincos = 1;   /* encoder learns where things are 2-3x sooner */
    return c;
}

/* ---- Data, reward, metrics ------------------------------------------------------------------ */
/* Scene `index` of split `base`; shift 1 (--test-shift): objects of 6-14 px instead of 10-28,
   a size the SFT model never saw. */
static int scene_make_shifted(uint64_t base, uint64_t index, int shift, float *image, char *prompt,
                              char *answer, int *group) {
    ex_scene s;
    if (ex_scene_from_index_sized(base, index, GR_IMG, GR_IMG, shift ? 6 : 10, shift ? 14 : 28,
                                  &s) != 0)
        return -1;
    ex_scene_render(&s, image);
    ex_scene_prompt(&s, prompt, GR_TEXT_CAP);
    ex_scene_answer(&s, answer, GR_TEXT_CAP);
    *group = 0;
    return 0;
}
static int scene_make(uint64_t base, uint64_t index, float *image, char *prompt, char *answer,
                      int *group) {
    return scene_make_shifted(base, index, 0, image, prompt, answer, group);
}

/* IoU of the first box in the response with the box of the true answer. */
static float iou_reward(const char *response, size_t len, const char *answer) {
    float truth[4];
    if (!perpo_parse_box(answer, strlen(answer), (float)GR_IMG, (float)GR_IMG, truth)) return 0.0f;
    return perpo_grounding_reward(response, len, truth, (float)GR_IMG, (float)GR_IMG);
}

enum { GR_ACC, GR_IOU, GR_FAIL, GR_N_METRICS };
static void box_score(const char *response, size_t len, const char *answer, int group, double *sum,
                      double *weight) {
    float box[4];
    int parsed = perpo_parse_box(response, len, (float)GR_IMG, (float)GR_IMG, box);
    double iou = iou_reward(response, len, answer);
    (void)group;
    sum[GR_ACC] += iou >= 0.5;
    sum[GR_IOU] += iou;
    sum[GR_FAIL] += !parsed;
    weight[GR_ACC] += 1;
    weight[GR_IOU] += 1;
    weight[GR_FAIL] += 1;
}

static const char *box_check(const char *answer) {
    float box[4];
    return perpo_parse_box(answer, strlen(answer), (float)GR_IMG, (float)GR_IMG, box)
               ? NULL
               : "holds no box [x1,y1,x2,y2]";
}

/* A grid of test scenes, zoomed, with the true (green), SFT (red) and PerPO (yellow) boxes. */
static int grounding_picture(const char *path, const dataset *test, const char *sft_text,
                             const char *perpo_text) {
    enum { N_SHOW = 16, ZOOM = 4 };
    const size_t tile = (size_t)GR_IMG * ZOOM * GR_IMG * ZOOM * 3; /* floats of a zoomed scene */
    float *tiles;
    const float *ptr[N_SHOW];
    char labels[N_SHOW][48];
    const char *lab[N_SHOW];
    const float green[3] = { 0.1f, 1.0f, 0.2f }, red[3] = { 1.0f, 0.15f, 0.1f },
                yellow[3] = { 1.0f, 0.9f, 0.1f };
    ex_grid g = ex_grid_default();
    int i, n = test->n < N_SHOW ? test->n : N_SHOW, rc;
    if (!(tiles = (float *)malloc((size_t)n * tile * sizeof(float)))) return 1;
    for (i = 0; i < n; i++) {
        float *im = tiles + (size_t)i * tile;
        float b[4];
        const char *st = sft_text + (size_t)i * test->cap, *ans = ds_answer(test, i);
        ex_upscale(test->examples[i].image, GR_IMG, GR_IMG, ZOOM, im);
        if (perpo_parse_box(ans, strlen(ans), (float)GR_IMG, (float)GR_IMG, b))
            ex_draw_rect(im, GR_IMG * ZOOM, GR_IMG * ZOOM, b, green, 2);
        if (perpo_parse_box(st, strlen(st), (float)GR_IMG, (float)GR_IMG, b))
            ex_draw_rect(im, GR_IMG * ZOOM, GR_IMG * ZOOM, b, red, 1);
        if (perpo_text) {
            const char *pt = perpo_text + (size_t)i * test->cap;
            if (perpo_parse_box(pt, strlen(pt), (float)GR_IMG, (float)GR_IMG, b))
                ex_draw_rect(im, GR_IMG * ZOOM, GR_IMG * ZOOM, b, yellow, 1);
        }
        snprintf(labels[i], sizeof labels[i], "%s", ds_prompt(test, i));
        ptr[i] = im;
        lab[i] = labels[i];
    }
    g.cols = 4;
    g.zoom = 1;
    g.label_lines = 1;
    g.label_scale = 2;
    g.bg[0] = g.bg[1] = g.bg[2] = 0.12f;
    g.fg[0] = g.fg[1] = g.fg[2] = 0.95f;
    rc = ex_grid_write_png(path, &g, n, ptr, GR_IMG * ZOOM, GR_IMG * ZOOM, lab);
    free(tiles);
    return rc;
}

/* ---- The task, as the experiment sees it --------------------------------------------------- */
static task grounding_task(void) {
    task tk;
    memset(&tk, 0, sizeof tk);
    tk.name = "grounding";
    tk.title = "PerPO on synthetic grounding";
    tk.pretrain_make = "pretrain";
    tk.cfg = grounding_model_config();
    tk.text_cap = GR_TEXT_CAP;
    tk.n_metrics = GR_N_METRICS;
    tk.metric_key[GR_ACC] = "acc_at_0.5";
    tk.metric_head[GR_ACC] = "Acc@0.5";
    tk.metric_scale[GR_ACC] = 100;
    tk.metric_key[GR_IOU] = "mean_iou";
    tk.metric_head[GR_IOU] = "mean IoU";
    tk.metric_scale[GR_IOU] = 1;
    tk.metric_key[GR_FAIL] = "parse_failure_rate";
    tk.metric_head[GR_FAIL] = "parse fail %";
    tk.metric_scale[GR_FAIL] = 100;
    tk.main_metric = GR_ACC;
    tk.higher_is_better = 1;
    tk.make = scene_make;
    tk.make_shifted = scene_make_shifted;
    tk.max_shift = 1;
    tk.reward = iou_reward;
    tk.score = box_score;
    tk.check_answer = box_check;
    tk.picture = grounding_picture;
    return tk;
}

#endif /* PERPO_EXAMPLES_GROUNDING_TASK_H */
