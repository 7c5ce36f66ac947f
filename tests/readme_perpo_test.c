/* The README's "PerPO in a few calls" on a tiny model: make test-readme cuts the code between
 * <!-- perpo begin --> and <!-- perpo end --> out of README.md into build/readme_perpo.c, and
 * this file includes it as it stands. A model learns briefly (SFT) which corner of a 16x16
 * image holds a bright square, so that its sampled answers still differ; perpo_stage, the
 * README's function, must then return a policy whose answers, sampled at temperature 1 on
 * held-out images, score higher than the SFT model's. */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include <stdio.h>
#include <string.h>

#include "readme_perpo.c" /* the README's code, from build/ */

enum { SIDE = 16, ITEMS = 64, DRAWS = 16 };
static const char *const corner[4] = { "top left", "top right", "bottom left", "bottom right" };

/* Reward of an answer to item i: 1 - normalized edit distance to corner[i % 4]. */
static float corner_reward(const char *answer, size_t len, size_t i, void *user) {
    float r = 0.0f;
    (void)user;
    perpo_ocr_reward(answer, len, corner[i % 4], strlen(corner[i % 4]), &r, NULL);
    return r;
}

/* Mean reward of DRAWS answers per item, sampled at temperature 1 (-1 on failure). */
static double sampled_reward(perpo_model *m, const perpo_example *items) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    double total = 0.0;
    size_t i;
    int k;
    sc.temperature = 1.0f;
    sc.seed = 5;
    if (perpo_pref_sample(m, items, ITEMS, DRAWS, &sc, corner_reward, NULL, &set) != PERPO_OK)
        return -1.0;
    for (i = 0; i < set.n_lists; i++)
        for (k = 0; k < DRAWS; k++) total += set.lists[i].rewards[k];
    perpo_pref_set_free(&set);
    return total / (ITEMS * DRAWS);
}

int main(void) {
    static float pixels[2 * ITEMS][SIDE * SIDE * 3];
    perpo_example items[2 * ITEMS]; /* ITEMS to train on, then ITEMS held out */
    perpo_config cfg = perpo_config_default();
    perpo_sft_config tc = perpo_sft_default();
    perpo_model *sft = NULL, *policy = NULL;
    perpo_status st;
    double before, after = -1.0;
    int i, p;

    for (i = 0; i < 2 * ITEMS; i++) { /* a 4x4 white square near corner i % 4, on dark grey */
        int x0 = (i % 2) * 9 + 1 + i / 4 % 3, y0 = (i / 2 % 2) * 9 + 1 + i / 12 % 3;
        for (p = 0; p < SIDE * SIDE; p++) {
            int on = p % SIDE >= x0 && p % SIDE < x0 + 4 && p / SIDE >= y0 && p / SIDE < y0 + 4;
            pixels[i][3 * p] = pixels[i][3 * p + 1] = pixels[i][3 * p + 2] = on ? 1.0f : 0.25f;
        }
        items[i].image = pixels[i];
        items[i].prompt = "where?";
        items[i].response = corner[i % 4];
    }
    cfg.image_h = cfg.image_w = SIDE;
    cfg.patch_h = cfg.patch_w = 4;
    cfg.d_model = 32;
    cfg.n_heads = 2;
    cfg.n_vis_layers = 1;
    cfg.n_dec_layers = 2;
    cfg.max_text = 24;
    cfg.max_batch = 32; /* the README's 4 lists x 8 answers */
    tc.batch_size = 8;
    tc.optim.lr = 3e-3f;
    tc.optim.warmup_steps = 5;
    tc.optim.total_steps = 100; /* stopped early: the answers still differ */
    if ((st = perpo_model_create(&sft, &cfg, 1)) != PERPO_OK ||
        (st = perpo_sft_train(sft, items, ITEMS, &tc, NULL, NULL)) != PERPO_OK) {
        fprintf(stderr, "README PerPO: SFT failed: %s\n", perpo_status_string(st));
        return 1;
    }
    before = sampled_reward(sft, items + ITEMS);
    st = perpo_stage(sft, items, ITEMS, corner_reward, NULL, &policy);
    if (st == PERPO_OK) after = sampled_reward(policy, items + ITEMS);
    printf("README PerPO in a few calls: %s; held-out sampled reward SFT %.3f -> PerPO %.3f\n",
           perpo_status_string(st), before, after);
    perpo_model_free(policy);
    perpo_model_free(sft);
    return st == PERPO_OK && after > before ? 0 : 1;
}
