/* perpo_min.c: PerPO from start to end in one page, on the public API alone.
 *
 * A tiny model learns (SFT) to say where a bright square sits in a 16x16 image ("top left" ...
 * "bottom right"), briefly, so that it is still unsure. Then PerPO as the paper runs it: sample
 * N answers per image at a temperature, score each with a discriminative reward (here 1 -
 * normalized edit distance to the true answer), keep the lists whose rewards differ, take the
 * frozen SFT model's log-probs of them, and train the policy on every pair of each list, each
 * pair weighted by its reward gap. The training loop is written out (forward, listwise loss,
 * backward, AdamW) and runs in rounds, each on lists sampled again from the current policy (one
 * round on the SFT model's lists helps too, less: the policy soon fits answers it no longer
 * samples). Prints the mean sampled reward on held-out images before and after; exits 1 unless
 * PerPO raised it.    cc -std=c99 -O2 examples/perpo_min.c -lm && ./a.out */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include <stdio.h>
#include <string.h>

#define W       16
#define TEXT    24 /* text positions: BOS "where?" SEP answer EOS */
#define N_ITEMS 32 /* training images, and as many held-out ones */
#define N_SAMP  8  /* answers per list */
#define N_EVAL  16 /* answers sampled per held-out image to score a model */
#define ROUNDS  5  /* PerPO rounds, each on lists sampled from the current policy */
#define STEPS   60 /* optimizer steps per round, one list each */
static const char *const where[4] = { "top left", "top right", "bottom left", "bottom right" };

/* Image `seed` of kind k: a 5x5 white square in quadrant k, jittered, on grey noise. */
static void make_image(float *img, int k, unsigned seed) {
    int x, y, x0 = (k % 2) * 8 + 1 + (int)(seed % 3), y0 = (k / 2) * 8 + 1 + (int)(seed / 3 % 3);
    for (x = 0; x < W * W * 3; x++) {
        seed = seed * 1103515245u + 12345u;
        img[x] = 0.2f + 0.2f * (float)(seed >> 16 & 255) / 255.0f;
    }
    for (y = y0; y < y0 + 5; y++)
        for (x = x0; x < x0 + 5; x++)
            img[(y * W + x) * 3] = img[(y * W + x) * 3 + 1] = img[(y * W + x) * 3 + 2] = 1.0f;
}

/* The task reward of an answer to item i (its true answer is where[i % 4]). */
static float reward(const char *text, size_t len, size_t i, void *user) {
    float r = 0.0f;
    (void)user;
    perpo_ocr_reward(text, len, where[i % 4], strlen(where[i % 4]), &r, NULL);
    return r;
}

/* Mean reward of N_EVAL answers sampled at temperature 1 for each item. */
/* A refused call on m: its one-line reason (perpo_model_last_error) on stderr; returns 1. */
static int failed(const char *what, const perpo_model *m) {
    fprintf(stderr, "error: %s: %s\n", what, perpo_model_last_error(m));
    return 1;
}

static float evaluate(perpo_model *m, const perpo_example *items) {
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    double sum = 0.0;
    size_t i;
    int k;
    sc.temperature = 1.0f;
    sc.seed = 99;
    if (perpo_pref_sample(m, items, N_ITEMS, N_EVAL, &sc, reward, NULL, &set) != PERPO_OK)
        return -1.0f;
    for (i = 0; i < set.n_lists; i++)
        for (k = 0; k < N_EVAL; k++) sum += set.lists[i].rewards[k];
    perpo_pref_set_free(&set);
    return (float)(sum / (N_ITEMS * N_EVAL));
}

int main(void) {
    static float img[2 * N_ITEMS][W * W * 3];
    static int tok[N_SAMP][TEXT], tgt[N_SAMP][TEXT]; /* one list's answers as token rows */
    static const size_t same_image[N_SAMP] = { 0 };  /* every answer sees image 0 */
    perpo_example train[N_ITEMS], test[N_ITEMS];
    perpo_config cfg = perpo_config_default();
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_objective_config obj = perpo_objective_default(PERPO_OBJ_PERPO);
    perpo_optim_config oc = perpo_optim_default();
    perpo_model *sft = NULL, *policy = NULL;
    perpo_pref_set set;
    float before, after;
    size_t kept, i;
    int round, step, k;

    for (i = 0; i < 2 * N_ITEMS; i++) { /* the first N_ITEMS train, the others are held out */
        perpo_example *e = i < N_ITEMS ? &train[i] : &test[i - N_ITEMS];
        make_image(img[i], (int)(i % 4), (unsigned)i);
        e->image = img[i];
        e->prompt = "where?";
        e->response = where[i % 4];
    }
    cfg.image_h = cfg.image_w = W;
    cfg.patch_h = cfg.patch_w = 4;
    cfg.d_model = 32;
    cfg.n_heads = 2;
    cfg.n_vis_layers = 1;
    cfg.n_dec_layers = 2;
    cfg.max_text = TEXT;
    cfg.max_batch = N_ITEMS;
    if (perpo_model_create(&sft, &cfg, 1) != PERPO_OK ||
        perpo_model_create(&policy, &cfg, 2) != PERPO_OK)
        return 1;

    /* 1. SFT: cross-entropy on the true answers, stopped early on purpose */
    tc.batch_size = 8;
    tc.optim.lr = 3e-3f;
    tc.optim.warmup_steps = 5;
    tc.optim.total_steps = 100;
    if (perpo_sft_train(sft, train, N_ITEMS, &tc, NULL, NULL) != PERPO_OK)
        return failed("SFT", sft);
    before = evaluate(sft, test);

    /* 2. PerPO: the policy starts from the SFT weights, which stay frozen as the reference */
    perpo_model_copy_params(policy, sft);
    obj.beta = 0.5f;
    oc.lr = 1e-3f;
    oc.warmup_steps = 5;
    oc.total_steps = ROUNDS * STEPS;
    oc.weight_decay = 0.0f;
    sc.temperature = 1.0f; /* (greedy decoding would give one answer N times: no pairs) */
    for (round = 0; round < ROUNDS; round++) {
        double mean_reward = 0.0, mean_loss = 0.0;
        /* N answers per image from the current policy, their rewards, the lists whose rewards
           differ, and log pi_ref of each answer under the frozen SFT model */
        sc.seed = 7 + (uint64_t)round;
        if (perpo_pref_sample(policy, train, N_ITEMS, N_SAMP, &sc, reward, NULL, &set) != PERPO_OK)
            return failed("sampling", policy);
        for (i = 0; i < set.n_lists; i++)
            for (k = 0; k < N_SAMP; k++)
                mean_reward += set.lists[i].rewards[k] / (N_ITEMS * N_SAMP);
        kept = perpo_pref_filter(set.lists, set.n_lists, 0.1f);
        if (perpo_pref_reference(sft, set.lists, kept) != PERPO_OK)
            return failed("reference log-probs", sft);
        for (step = 0; step < STEPS && kept > 0; step++) {
            const perpo_pref_list *l = &set.lists[(size_t)step % kept];
            const float *images[1];
            float logp[N_SAMP], dlogp[N_SAMP], loss;
            perpo_batch b;
            for (k = 0; k < l->n; k++) /* the list's answers as rows, all about one image */
                if (perpo_text_encode(&cfg, l->prompt, strlen(l->prompt), l->responses[k],
                                      strlen(l->responses[k]), tok[k], tgt[k], NULL) != PERPO_OK)
                    return 1;
            images[0] = l->image;
            b.n_seq = (size_t)l->n;
            b.n_img = 1;
            b.images = images;
            b.image_of = same_image;
            b.tokens = &tok[0][0];
            b.targets = &tgt[0][0];
            perpo_zero_grad(policy);
            if (perpo_forward(policy, &b, logp, NULL) != PERPO_OK) /* log pi(y_k|x) */
                return failed("forward", policy);
            /* PerPO over the list: every pair with R_i > R_j, weighted by |R_i - R_j|^gamma, on
               its margin beta (log pi/pi_ref (y_i) - log pi/pi_ref (y_j)); dLoss/dlogp back */
            if (perpo_listwise_loss(&obj, l->n, logp, l->ref_logp, l->rewards, &loss, dlogp) !=
                PERPO_OK)
                return 1;
            if (perpo_backward(policy, dlogp) != PERPO_OK) return 1;
            if (perpo_optim_step(policy, &oc, 1.0f, NULL) != PERPO_OK) return 1;
            mean_loss += loss / STEPS;
        }
        printf("round %d: sampled reward %.3f, %zu of %d lists kept, mean PerPO loss %.4f\n",
               round + 1, mean_reward, kept, N_ITEMS, mean_loss);
        perpo_pref_set_free(&set);
    }
    after = evaluate(policy, test);

    printf("held-out sampled reward: SFT %.3f -> PerPO %.3f\n", before, after);
    perpo_model_free(sft);
    perpo_model_free(policy);
    return after > before ? 0 : 1;
}
