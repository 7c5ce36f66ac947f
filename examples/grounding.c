/* grounding.c — PerPO end to end on object grounding, on synthetic scenes.
 *
 * The paper's setting in miniature: start from a pretrained SFT model (`make pretrain` trains
 * it on a fixed set of 2,048 labelled scenes and writes examples/models/grounding_sft_k2048.ckpt)
 * -> N answers sampled per training prompt (those same scenes) -> IoU rewards -> lists with a
 * large enough reward margin -> reference log-probs of the frozen SFT model -> the control (SFT
 * continued on the same prompts' true boxes), DPO and PerPO, each from the same SFT weights for
 * the same steps, the lists sampled again from the current policy each round ->
 * greedy evaluation on held-out scenes: Acc@0.5, mean IoU, parse failures, with the Best-of-N
 * oracle as the upper reference. Writes results.json, a picture of test scenes with the true,
 * SFT and PerPO boxes, and the training curves as SVG. The run itself is examples/experiment.h,
 * whose stages main() below calls in order; this file holds what belongs to grounding: scenes,
 * the IoU reward and the metrics.
 *
 *   grounding [--seed S] [--seeds K] [--test 2000] [--test-seed 777] [--n 8] [--out DIR] ...
 *   grounding --pretrain 1 ...            (what `make pretrain` runs; all flags: --help)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include "experiment.h" /* the stages main() runs, the same for every task */

#define IMG      64 /* scenes are IMG x IMG RGB */
#define TEXT_CAP 48 /* > perpo_config.max_text */

/* ---- Options ------------------------------------------------------------------------------ */
static void set_defaults(options *o) {
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
static perpo_config model_config(void) {
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
    if (ex_scene_from_index_sized(base, index, IMG, IMG, shift ? 6 : 10, shift ? 14 : 28, &s) != 0)
        return -1;
    ex_scene_render(&s, image);
    ex_scene_prompt(&s, prompt, TEXT_CAP);
    ex_scene_answer(&s, answer, TEXT_CAP);
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
    if (!perpo_parse_box(answer, strlen(answer), (float)IMG, (float)IMG, truth)) return 0.0f;
    return perpo_grounding_reward(response, len, truth, (float)IMG, (float)IMG);
}

enum { M_ACC, M_IOU, M_FAIL, N_METRICS };
static void box_score(const char *response, size_t len, const char *answer, int group, double *sum,
                      double *weight) {
    float box[4];
    int parsed = perpo_parse_box(response, len, (float)IMG, (float)IMG, box);
    double iou = iou_reward(response, len, answer);
    (void)group;
    sum[M_ACC] += iou >= 0.5;
    sum[M_IOU] += iou;
    sum[M_FAIL] += !parsed;
    weight[M_ACC] += 1;
    weight[M_IOU] += 1;
    weight[M_FAIL] += 1;
}

static const char *box_check(const char *answer) {
    float box[4];
    return perpo_parse_box(answer, strlen(answer), (float)IMG, (float)IMG, box)
               ? NULL
               : "holds no box [x1,y1,x2,y2]";
}

/* A grid of test scenes, zoomed, with the true (green), SFT (red) and PerPO (yellow) boxes. */
static int write_picture(const char *path, const dataset *test, const char *sft_text,
                         const char *perpo_text) {
    enum { N_SHOW = 16, ZOOM = 4 };
    const size_t tile = (size_t)IMG * ZOOM * IMG * ZOOM * 3; /* floats of a zoomed scene */
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
        ex_upscale(test->examples[i].image, IMG, IMG, ZOOM, im);
        if (perpo_parse_box(ans, strlen(ans), (float)IMG, (float)IMG, b))
            ex_draw_rect(im, IMG * ZOOM, IMG * ZOOM, b, green, 2);
        if (perpo_parse_box(st, strlen(st), (float)IMG, (float)IMG, b))
            ex_draw_rect(im, IMG * ZOOM, IMG * ZOOM, b, red, 1);
        if (perpo_text) {
            const char *pt = perpo_text + (size_t)i * test->cap;
            if (perpo_parse_box(pt, strlen(pt), (float)IMG, (float)IMG, b))
                ex_draw_rect(im, IMG * ZOOM, IMG * ZOOM, b, yellow, 1);
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
    rc = ex_grid_write_png(path, &g, n, ptr, IMG * ZOOM, IMG * ZOOM, lab);
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
    tk.cfg = model_config();
    tk.text_cap = TEXT_CAP;
    tk.n_metrics = N_METRICS;
    tk.metric_key[M_ACC] = "acc_at_0.5";
    tk.metric_head[M_ACC] = "Acc@0.5";
    tk.metric_scale[M_ACC] = 100;
    tk.metric_key[M_IOU] = "mean_iou";
    tk.metric_head[M_IOU] = "mean IoU";
    tk.metric_scale[M_IOU] = 1;
    tk.metric_key[M_FAIL] = "parse_failure_rate";
    tk.metric_head[M_FAIL] = "parse fail %";
    tk.metric_scale[M_FAIL] = 100;
    tk.main_metric = M_ACC;
    tk.higher_is_better = 1;
    tk.make = scene_make;
    tk.make_shifted = scene_make_shifted;
    tk.max_shift = 1;
    tk.reward = iou_reward;
    tk.score = box_score;
    tk.check_answer = box_check;
    tk.picture = write_picture;
    return tk;
}

int main(int argc, char **argv) {
    task tk = grounding_task();
    options o;
    experiment ex;
    int rc;
    set_defaults(&o);
    if ((rc = experiment_start(argc, argv, &o)) != 0) return rc > 0 ? 0 : 2; /* --help; bad flags */
    if (o.pretrain) return pretrain(&tk, &o, argc, argv); /* make pretrain: the SFT checkpoint */

    rc = experiment_load(&ex, &tk, &o) || /* the SFT checkpoint, the test scenes */
         experiment_baselines(&ex) ||     /* SFT scored; diagnostics; Best-of-N */
         experiment_preference(&ex) ||    /* per seed: lists; control, DPO, PerPO */
         experiment_report(&ex);          /* table, results.json, picture, curves */
    experiment_free(&ex);
    return rc;
}
