/* Thread-count independence: perpo.h built with OpenMP must give bit-identical results with 1,
 * 2 and 3 threads (3: uneven splits, on 2 cores oversubscribed). Trains a default-size model (batch 8, large enough that every kernel takes
 * its parallel path) for a few SFT steps, plus one preference-style backward with per-sequence
 * weights, once per thread count from the same seed, and compares every parameter bit for bit;
 * then greedy and sampled generation (KV cache; token steps split sequences over threads), also
 * with sequences that share an image and prompt (one prefill read by sequences on other
 * threads).
 * Prints "N passed, N failed" last; exits non-zero on failure.
 *   cc -std=c99 -O2 -march=native -fopenmp -o build/omp_threads tests/omp_threads.c -lm */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSEQ  8
#define STEPS 3

static int g_pass, g_fail;
static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (ok)
        g_pass++;
    else
        g_fail++;
}

typedef struct run_out {
    float *params;
    size_t n_params;
    char text[4][NSEQ * 64]; /* greedy, sampled; both again with shared prefixes */
    int ok;
} run_out;

static void run(int threads, run_out *o) {
    static const char *answers[NSEQ] = {
        "[1,2,3,4]", "cat", "a long answer here", "x", "[10,20,30,40]", "hello world", "42", "zz"
    };
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL;
    perpo_optim_config oc = perpo_optim_default();
    size_t per, i, s, T;
    float *img, dlogp[NSEQ], logp[NSEQ];
    const float *imgs[NSEQ];
    const char *prompts[NSEQ];
    size_t shared_of[NSEQ] = { 0, 0, 0, 1, 1, 2, 2, 2 }; /* 3 images, each with one prompt */
    int *tok, *tgt, step;
    uint64_t x = 12345;
    perpo_batch b;
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    omp_set_num_threads(threads);
    o->ok = 0;
    c.max_batch = NSEQ;
    if (perpo_model_create(&m, &c, 7) != PERPO_OK) return;
    T = (size_t)c.max_text;
    per = (size_t)c.image_h * (size_t)c.image_w * (size_t)c.channels;
    img = (float *)malloc(NSEQ * per * sizeof(float));
    tok = (int *)malloc(2 * NSEQ * T * sizeof(int));
    if (!img || !tok) return;
    tgt = tok + NSEQ * T;
    for (i = 0; i < NSEQ * per; i++) { /* xorshift: the same pixels in every run */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        img[i] = (float)(x % 1000) / 1000.0f;
    }
    for (s = 0; s < NSEQ; s++) {
        imgs[s] = img + s * per;
        prompts[s] = "box?";
        perpo_text_encode(&c, "box?", 4, answers[s], strlen(answers[s]), tok + s * T, tgt + s * T,
                          NULL);
    }
    b.n_seq = NSEQ;
    b.n_img = NSEQ;
    b.images = imgs;
    b.image_of = NULL;
    b.tokens = tok;
    b.targets = tgt;
    oc.warmup_steps = 1;
    for (step = 0; step < STEPS; step++) {
        perpo_zero_grad(m);
        if (perpo_forward(m, &b, logp, NULL) != PERPO_OK) return;
        for (s = 0; s < NSEQ; s++)
            dlogp[s] = step == STEPS - 1 ? (float)s / NSEQ - 0.4f : -1.0f / NSEQ;
        if (perpo_backward(m, dlogp) != PERPO_OK) return;
        if (perpo_optim_step(m, &oc, 1.0f, NULL) != PERPO_OK) return;
    }
    o->n_params = perpo_model_num_params(m);
    o->params = (float *)malloc(o->n_params * sizeof(float));
    if (!o->params) return;
    memcpy(o->params, perpo_model_params(m), o->n_params * sizeof(float));
    req.n_seq = NSEQ;
    req.n_img = NSEQ;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    sc.max_new_tokens = 30;
    memset(o->text, 0, sizeof o->text);
    if (perpo_generate(m, &req, &sc, o->text[0], 64, NULL) != PERPO_OK) return;
    sc.temperature = 1.0f;
    sc.seed = 3;
    if (perpo_generate(m, &req, &sc, o->text[1], 64, NULL) != PERPO_OK) return;
    req.n_img = 3;
    req.image_of = shared_of;
    sc.temperature = 0.0f;
    if (perpo_generate(m, &req, &sc, o->text[2], 64, NULL) != PERPO_OK) return;
    sc.temperature = 1.0f;
    if (perpo_generate(m, &req, &sc, o->text[3], 64, NULL) != PERPO_OK) return;
    free(img);
    free(tok);
    perpo_model_free(m);
    o->ok = 1;
}

int main(void) {
    static const char *what[4] = { "greedy generation", "sampled generation",
                                   "greedy generation, shared prefixes",
                                   "sampled generation, shared prefixes" };
    run_out r[3];
    int t, k;
    char msg[128];
    for (t = 0; t < 3; t++) run(t + 1, &r[t]);
    check(r[0].ok && r[1].ok && r[2].ok,
          "runs with 1, 2, 3 threads completed (3 SFT steps, a weighted backward, generation)");
    for (t = 1; t < 3 && r[0].ok && r[1].ok && r[2].ok; t++) {
        snprintf(msg, sizeof msg, "parameters after the steps: 1 and %d threads bit-identical",
                 t + 1);
        check(r[0].n_params == r[t].n_params &&
                  memcmp(r[0].params, r[t].params, r[0].n_params * sizeof(float)) == 0,
              msg);
        for (k = 0; k < 4; k++) {
            snprintf(msg, sizeof msg, "%s: 1 and %d threads identical", what[k], t + 1);
            check(memcmp(r[0].text[k], r[t].text[k], sizeof r[0].text[k]) == 0, msg);
        }
    }
    /* the shared-prefix requests really share: sequences 0-2 have one image and prompt, so
       greedy gives them one answer */
    check(r[0].ok && strcmp(r[0].text[2], r[0].text[2] + 64) == 0,
          "shared prefixes: greedy sequences of one image and prompt agree");
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
