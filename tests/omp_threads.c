/* Thread-count independence: perpo.h built with OpenMP must give bit-identical results with 1
 * and with 2 threads. Trains a default-size model (batch 8, large enough that every kernel takes
 * its parallel path) for a few SFT steps, plus one preference-style backward with per-sequence
 * weights, once per thread count from the same seed, and compares every parameter bit for bit;
 * then greedy and sampled generation (KV cache; token steps split sequences over threads).
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
    char text[2][NSEQ * 64];
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
    free(img);
    free(tok);
    perpo_model_free(m);
    o->ok = 1;
}

int main(void) {
    run_out a, b;
    run(1, &a);
    run(2, &b);
    check(a.ok && b.ok, "both runs completed (3 SFT steps, a weighted backward, generation)");
    if (a.ok && b.ok) {
        check(a.n_params == b.n_params &&
                  memcmp(a.params, b.params, a.n_params * sizeof(float)) == 0,
              "parameters after the steps: 1 and 2 threads bit-identical");
        check(memcmp(a.text[0], b.text[0], sizeof a.text[0]) == 0,
              "greedy generation: 1 and 2 threads identical");
        check(memcmp(a.text[1], b.text[1], sizeof a.text[1]) == 0,
              "sampled generation: 1 and 2 threads identical");
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
