/* bench.c — benchmarks of perpo.h. Prints one JSON object per line:
 *   {"name":..., "value":..., "unit":..., "min":..., "max":..., "config":{...}}
 * value is the median over --rounds rounds, min/max the extremes of the same metric (for a
 * time the best round is min, for a rate it is max). bench/README.md explains every number.
 *
 *   build/bench [--threads K] [--rounds R] [--quick] [--only gemm,sft,perpo,generate,sample]
 *
 * Everything but the matrix-product micro-benchmark goes through the public API. The GEMM
 * lines call the private perpo__gemm, isolated in bench_gemm_call / bench_gemm_ws below. */
#define _POSIX_C_SOURCE 200809L
#define PERPO_IMPLEMENTATION
#include "../perpo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef PERPO_USE_CBLAS
#define BENCH_GEMM_KIND "cblas"
#elif defined(PERPO_USE_BF16)
#define BENCH_GEMM_KIND "builtin-bf16"
#else
#define BENCH_GEMM_KIND "builtin"
#endif
#ifdef _OPENMP
#define BENCH_OMP_KIND "openmp"
#else
#define BENCH_OMP_KIND "serial"
#endif
#define BENCH_BUILD BENCH_GEMM_KIND "+" BENCH_OMP_KIND
/* A product's allowed error relative to the sum of |a*b|: bfloat16 inputs carry 2^-9 each */
#ifdef PERPO_USE_BF16
#define BENCH_GEMM_TOL 8e-3
#else
#define BENCH_GEMM_TOL 1e-4
#endif

/* ---- The only use of perpo.h internals: its matrix product and the workspace it needs.
 * C (M,N) = [C +] op(A) . op(B); ta: A stored (K,M); tb: B stored (N,K). In a
 * -DPERPO_USE_CBLAS build perpo__gemm is cblas_sgemm. Adjust here if the signature changes. */
static size_t bench_gemm_ws(size_t n_max) { return perpo__gemm_ws_floats(n_max); }
static void bench_gemm_call(int ta, int tb, size_t M, size_t N, size_t K, const float *A,
                            size_t lda, const float *B, size_t ldb, int accumulate, float *C,
                            size_t ldc, float *ws) {
    perpo__gemm(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc, ws);
}

/* ---- Options, clock, statistics, output --------------------------------------------------- */
typedef struct {
    int threads, rounds, quick, batch;
    char only[256];
} bench_opts;
static bench_opts g_opt;
static double g_best_gemm; /* best GFLOP/s of any gemm line so far (0: none measured) */
static double g_sft_ms;    /* median SFT step of this run (0: not measured) */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* Median (mean of the two middle values for an even count), min and max of v[0..n). */
static void stats(const double *v, int n, double *med, double *mn, double *mx) {
    double s[256];
    int i;
    if (n > 256) n = 256;
    for (i = 0; i < n; i++) s[i] = v[i];
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    *med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    *mn = s[0];
    *mx = s[n - 1];
}

/* One JSON line. extra: more config members, already formatted ("\"k\":v,..."), or "". */
static void emit(const char *name, const double *v, int n, const char *unit, const char *extra) {
    double med, mn, mx;
    stats(v, n, &med, &mn, &mx);
    const char *wait = getenv("OMP_WAIT_POLICY");
    printf(
        "{\"name\":\"%s\",\"value\":%.6g,\"unit\":\"%s\",\"min\":%.6g,\"max\":%.6g,\"rounds\":%d,"
        "\"config\":{\"threads\":%d,\"batch\":%d,\"build\":\"%s\",\"omp_wait_policy\":\"%s\"%s%s}}"
        "\n",
        name, med, unit, mn, mx, n, g_opt.threads, g_opt.batch, BENCH_BUILD,
        wait && wait[0] && strlen(wait) < 16 && !strchr(wait, '"') && !strchr(wait, '\\')
            ? wait
            : "default",
        extra[0] ? "," : "", extra);
    fflush(stdout);
}

static int wanted(const char *group) {
    const char *p = g_opt.only;
    size_t n = strlen(group);
    if (!p[0]) return 1;
    while (*p) {
        if (strncmp(p, group, n) == 0 && (p[n] == ',' || p[n] == '\0')) return 1;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return 0;
}

static void die(const char *what, perpo_status st) {
    fprintf(stderr, "bench: %s: %s\n", what, perpo_status_string(st));
    exit(1);
}

/* Deterministic filler (no dependence on libc rand). */
static uint64_t g_seed = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    g_seed ^= g_seed << 13;
    g_seed ^= g_seed >> 7;
    g_seed ^= g_seed << 17;
    return (float)((g_seed >> 40) & 0xFFFFFF) / 16777216.0f;
}

#include "profile.h" /* kernel replay: where a step's time goes */

/* ---- GEMM on the model's shapes ------------------------------------------------------------ */
typedef struct {
    const char *what;
    int ta, tb;
    size_t M, N, K;
    int acc;
} gemm_shape;

static void bench_gemm(const perpo_config *c) {
    size_t NP = (size_t)(c->image_h / c->patch_h) * (size_t)(c->image_w / c->patch_w);
    size_t B = (size_t)g_opt.batch, D = (size_t)c->d_model, Mh = (size_t)c->mlp_mult * D;
    size_t Nd = B * (NP + (size_t)c->max_text), Nt = B * (size_t)c->max_text, V = (size_t)c->vocab;
    gemm_shape shapes[] = {
        /* forward of a linear layer: x (rows, in) . W^T, W (out, in) */
        { "dec.qkv.fwd", 0, 1, Nd, 3 * D, D, 0 },
        { "dec.attn_proj.fwd", 0, 1, Nd, D, D, 0 },
        { "dec.fc.fwd", 0, 1, Nd, Mh, D, 0 },
        { "dec.fc2.fwd", 0, 1, Nd, D, Mh, 0 },
        { "head.fwd", 0, 1, Nt, V, D, 0 },
        /* backward, input gradient: dx += dout . W */
        { "dec.qkv.dx", 0, 0, Nd, D, 3 * D, 1 },
        { "dec.fc2.dx", 0, 0, Nd, Mh, D, 1 },
        /* backward, weight gradient: dW += dout^T . x */
        { "dec.qkv.dW", 1, 0, 3 * D, D, Nd, 1 },
        { "dec.fc.dW", 1, 0, Mh, D, Nd, 1 },
        { "dec.fc2.dW", 1, 0, D, Mh, Nd, 1 },
        { "head.dW", 1, 0, V, D, Nt, 1 },
        /* a large square product: the machine's FP32 peak proxy (with CBLAS) */
        { "square", 0, 0, 1024, 1024, 1024, 0 },
    };
    size_t ns = sizeof shapes / sizeof shapes[0], s, maxA = 0, maxB = 0, maxC = 0, maxN = 0, i;
    float *A, *Bm, *C, *ws;
    double target = g_opt.quick ? 0.02 : 0.1; /* seconds per timed round */
    for (s = 0; s < ns; s++) {
        gemm_shape *g = &shapes[s];
        if (g->M * g->K > maxA) maxA = g->M * g->K;
        if (g->K * g->N > maxB) maxB = g->K * g->N;
        if (g->M * g->N > maxC) maxC = g->M * g->N;
        if (g->N > maxN) maxN = g->N;
    }
    A = (float *)malloc(maxA * sizeof(float));
    Bm = (float *)malloc(maxB * sizeof(float));
    C = (float *)malloc(maxC * sizeof(float));
    ws = (float *)malloc((bench_gemm_ws(maxN) + 16) * sizeof(float));
    if (!A || !Bm || !C || !ws) die("gemm buffers", PERPO_ERR_NOMEM);
    for (i = 0; i < maxA; i++) A[i] = frand() - 0.5f;
    for (i = 0; i < maxB; i++) Bm[i] = frand() - 0.5f;
    for (s = 0; s < ns; s++) {
        gemm_shape *g = &shapes[s];
        size_t lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N, ldc = g->N;
        double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K, t0, t1, one;
        double rate[256], err = 0.0;
        int r, reps, k;
        char extra[256];
        size_t probe;
        memset(C, 0, g->M * g->N * sizeof(float));
        /* warm-up and check: a few entries against a plain dot product */
        t0 = now_s();
        bench_gemm_call(g->ta, g->tb, g->M, g->N, g->K, A, lda, Bm, ldb, 0, C, ldc, ws);
        one = now_s() - t0;
        for (probe = 0; probe < 5; probe++) {
            size_t pi = (probe * 7919) % g->M, pj = (probe * 104729) % g->N, kk;
            double ref = 0.0, mag = 0.0;
            for (kk = 0; kk < g->K; kk++) {
                double a = g->ta ? A[kk * lda + pi] : A[pi * lda + kk];
                double b = g->tb ? Bm[pj * ldb + kk] : Bm[kk * ldb + pj];
                ref += a * b;
                mag += fabs(a * b);
            }
            if (fabs(C[pi * ldc + pj] - ref) > BENCH_GEMM_TOL * mag + 1e-6)
                err = fabs(C[pi * ldc + pj] - ref);
        }
        if (err > 0.0) {
            fprintf(stderr, "bench: gemm %s gives a wrong result (error %g)\n", g->what, err);
            exit(1);
        }
        reps = one > 0.0 ? (int)(target / one) : 1000;
        if (reps < 1) reps = 1;
        if (reps > 1000) reps = 1000;
        for (r = 0; r < g_opt.rounds; r++) {
            t0 = now_s();
            for (k = 0; k < reps; k++)
                bench_gemm_call(g->ta, g->tb, g->M, g->N, g->K, A, lda, Bm, ldb, g->acc, C, ldc,
                                ws);
            t1 = now_s();
            rate[r] = flops * reps / (t1 - t0) / 1e9;
            if (rate[r] > g_best_gemm) g_best_gemm = rate[r];
        }
        snprintf(extra, sizeof extra,
                 "\"shape\":\"%zux%zux%zu\",\"op\":\"%s\",\"ta\":%d,\"tb\":%d,\"accumulate\":%d,"
                 "\"gemm\":\"%s\"",
                 g->M, g->N, g->K, g->what, g->ta, g->tb, g->acc, BENCH_GEMM_KIND);
        emit("gemm_gflops", rate, g_opt.rounds, "GFLOP/s", extra);
    }
    free(A);
    free(Bm);
    free(C);
    free(ws);
}

/* ---- Model FLOPs of one training step (bench/README.md states the formula) ----------------- */
/* Forward FLOPs for n_seq sequences over n_img images, matmuls and attention only. */
static double model_forward_flops(const perpo_config *c, double n_seq, double n_img,
                                  double *patch_part) {
    double NP = (double)(c->image_h / c->patch_h) * (double)(c->image_w / c->patch_w);
    double T = c->max_text, L = NP + T, D = c->d_model, M = (double)c->mlp_mult * D, V = c->vocab;
    double PPC = (double)c->patch_h * c->patch_w * (c->channels + 2 * c->pos_channels);
    double Rv = n_img * NP, Rd = n_seq * L;
    double block = 2.0 * D * (3.0 * D + D + 2.0 * M); /* per row: qkv, out proj, fc, fc2 */
    double patch = 2.0 * Rv * PPC * D;
    double vis = c->n_vis_layers * (Rv * block + 4.0 * n_img * NP * NP * D); /* QK^T + PV, full */
    double proj = 2.0 * 2.0 * Rv * D * D;
    double dec = c->n_dec_layers *
                 (Rd * block + 2.0 * n_seq * D * L * (L + 1.0)); /* causal: L(L+1)/2 pairs */
    double head = 2.0 * n_seq * T * D * V;
    *patch_part = patch;
    return patch + vis + proj + dec + head;
}
/* forward + backward (2x forward; the patch embedding has no input gradient, so 1x). */
static double model_step_flops(const perpo_config *c, double n_seq, double n_img) {
    double patch, fwd = model_forward_flops(c, n_seq, n_img, &patch);
    return 3.0 * fwd - patch;
}

/* ---- Shared test data ----------------------------------------------------------------------- */
#define PROMPT_TRAIN   "where is the red square?" /* 24 bytes */
#define RESPONSE_TRAIN "[0.12,0.34,0.56,0.78]"    /* 21 bytes: 1+24+1+21+1 = 48 */
#define PROMPT_GEN     "box?"                     /* 4 bytes: room for 41 new tokens */
#define GEN_NEW_TOKENS 40

static float *make_images(const perpo_config *c, size_t n) {
    size_t per = (size_t)c->image_h * (size_t)c->image_w * (size_t)c->channels, i;
    float *img = (float *)malloc(n * per * sizeof(float));
    if (!img) die("images", PERPO_ERR_NOMEM);
    for (i = 0; i < n * per; i++) img[i] = frand();
    return img;
}

/* ---- SFT step: forward + backward + AdamW over batch sequences, one image each ------------ */
static void bench_sft(perpo_model *m, const perpo_config *c) {
    size_t B = (size_t)g_opt.batch, T = (size_t)c->max_text,
           per = (size_t)(c->image_h * c->image_w * c->channels);
    size_t b, count = 0, nt;
    float *img = make_images(c, B), *logp, *dlogp;
    const float **imgs = (const float **)malloc(B * sizeof *imgs);
    int *tok = (int *)malloc(2 * B * T * sizeof(int)), r;
    perpo_optim_config oc = perpo_optim_default();
    perpo_batch batch;
    perpo_status st;
    double ms[256], gf[256], fw[256], bw[256], op[256],
        flops = model_step_flops(c, (double)B, (double)B);
    char extra[256];
    logp = (float *)malloc(2 * B * sizeof(float));
    if (!imgs || !tok || !logp) die("sft buffers", PERPO_ERR_NOMEM);
    dlogp = logp + B;
    for (b = 0; b < B; b++) {
        char resp[32];
        imgs[b] = img + b * per;
        snprintf(resp, sizeof resp, "[0.%02d,0.34,0.56,0.78]", (int)(b % 100)); /* 21 bytes */
        if ((st = perpo_text_encode(c, PROMPT_TRAIN, strlen(PROMPT_TRAIN), resp, strlen(resp),
                                    tok + b * T, tok + B * T + b * T, &nt)) != PERPO_OK)
            die("text encode", st);
        count += nt;
    }
    batch.n_seq = B;
    batch.n_img = B;
    batch.images = imgs;
    batch.image_of = NULL;
    batch.tokens = tok;
    batch.targets = tok + B * T;
    oc.total_steps = 100000;
    oc.warmup_steps = 1;
    for (r = -1; r < g_opt.rounds; r++) { /* r = -1: warm-up */
        double t0 = now_s(), dt, t1, t2, t3;
        float ce;
        perpo_zero_grad(m);
        if ((st = perpo_forward(m, &batch, logp, &ce)) != PERPO_OK) die("forward", st);
        t1 = now_s();
        for (b = 0; b < B; b++) dlogp[b] = -1.0f / (float)count;
        if ((st = perpo_backward(m, dlogp)) != PERPO_OK) die("backward", st);
        t2 = now_s();
        if ((st = perpo_optim_step(m, &oc, 1.0f, NULL)) != PERPO_OK) die("optimizer", st);
        t3 = now_s();
        dt = t3 - t0;
        if (r < 0) {
            fprintf(stderr, "bench: sft warm-up step %.1f ms, loss %.3f\n", 1e3 * dt, ce);
            continue;
        }
        ms[r] = 1e3 * dt;
        fw[r] = 1e3 * (t1 - t0);
        bw[r] = 1e3 * (t2 - t1);
        op[r] = 1e3 * (t3 - t2);
        gf[r] = flops / dt / 1e9;
    }
    snprintf(extra, sizeof extra,
             "\"images\":%zu,\"image_tokens\":%d,\"text_positions\":%zu,\"step_gflop\":%.4g", B,
             (c->image_h / c->patch_h) * (c->image_w / c->patch_w), T - 1, flops / 1e9);
    emit("sft_step_ms", ms, g_opt.rounds, "ms", extra);
    emit("sft_step_gflops", gf, g_opt.rounds, "GFLOP/s", extra);
    /* where the step's time goes: forward (zero_grad included), backward, optimizer */
    emit("sft_forward_ms", fw, g_opt.rounds, "ms", "");
    emit("sft_backward_ms", bw, g_opt.rounds, "ms", "");
    emit("sft_optimizer_ms", op, g_opt.rounds, "ms", "");
    {
        double med, mn, mx, gmed;
        stats(ms, g_opt.rounds, &med, &mn, &mx);
        g_sft_ms = med;
        stats(gf, g_opt.rounds, &gmed, &mn, &mx);
        if (g_best_gemm > 0) { /* the step's FLOP rate against the best product rate of this run */
            double frac[1];
            frac[0] = gmed / g_best_gemm;
            snprintf(extra, sizeof extra, "\"best_gemm_gflops\":%.4g", g_best_gemm);
            emit("sft_step_fraction_of_best_gemm", frac, 1, "ratio", extra);
        }
    }
    free(img);
    free(imgs);
    free(tok);
    free(logp);
}

/* ---- PerPO step: lists x n responses, forward + listwise loss + backward + AdamW ---------- */
static void bench_perpo(perpo_model *m, const perpo_config *c) {
    enum { N_RESP = 8 };
    size_t n_lists = (size_t)g_opt.batch / N_RESP, B = n_lists * N_RESP, T = (size_t)c->max_text;
    size_t per = (size_t)(c->image_h * c->image_w * c->channels), b, j;
    float *img = make_images(c, n_lists), reward[256], ref[256], logp[256], dlogp[256];
    const float *imgs[64];
    size_t image_of[256];
    int *tok = (int *)malloc(2 * B * T * sizeof(int)), r, k;
    perpo_optim_config oc = perpo_optim_default();
    perpo_objective_config obj = perpo_objective_default(PERPO_OBJ_PERPO);
    perpo_batch batch;
    perpo_status st;
    double ms[256], gf[256], flops = model_step_flops(c, (double)B, (double)n_lists);
    char extra[256];
    if (!tok || n_lists < 1 || n_lists > 64) die("perpo buffers", PERPO_ERR_ARG);
    for (j = 0; j < n_lists; j++) imgs[j] = img + j * per;
    for (b = 0; b < B; b++) {
        char resp[32];
        snprintf(resp, sizeof resp, "[0.%02d,0.%02d,0.56,0.78]", (int)(b % 8) * 11,
                 (int)(b / 8) % 100);
        if ((st = perpo_text_encode(c, PROMPT_TRAIN, strlen(PROMPT_TRAIN), resp, strlen(resp),
                                    tok + b * T, tok + B * T + b * T, NULL)) != PERPO_OK)
            die("text encode", st);
        image_of[b] = b / N_RESP;
        reward[b] = (float)(b % N_RESP) / (float)N_RESP; /* distinct rewards within a list */
    }
    batch.n_seq = B;
    batch.n_img = n_lists;
    batch.images = imgs;
    batch.image_of = image_of;
    batch.tokens = tok;
    batch.targets = tok + B * T;
    /* reference log-probs: computed once, as perpo_pref_reference does, outside the timing */
    if ((st = perpo_forward(m, &batch, ref, NULL)) != PERPO_OK) die("reference forward", st);
    oc.total_steps = 100000;
    oc.warmup_steps = 1;
    oc.lr = 1e-5f;
    oc.min_lr = 1e-6f; /* min_lr <= lr */
    for (r = -1; r < g_opt.rounds; r++) {
        double t0 = now_s(), dt, total = 0.0;
        perpo_zero_grad(m);
        if ((st = perpo_forward(m, &batch, logp, NULL)) != PERPO_OK) die("forward", st);
        for (j = 0; j < n_lists; j++) {
            float loss;
            if ((st = perpo_listwise_loss(&obj, N_RESP, logp + j * N_RESP, ref + j * N_RESP,
                                          reward + j * N_RESP, &loss, dlogp + j * N_RESP)) !=
                PERPO_OK)
                die("listwise loss", st);
            for (k = 0; k < N_RESP; k++)
                dlogp[j * N_RESP + (size_t)k] /= (float)n_lists; /* mean over lists */
            total += loss / (double)n_lists;
        }
        if ((st = perpo_backward(m, dlogp)) != PERPO_OK) die("backward", st);
        if ((st = perpo_optim_step(m, &oc, 1.0f, NULL)) != PERPO_OK) die("optimizer", st);
        dt = now_s() - t0;
        if (r < 0) {
            fprintf(stderr, "bench: perpo warm-up step %.1f ms, loss %.4f\n", 1e3 * dt, total);
            continue;
        }
        ms[r] = 1e3 * dt;
        gf[r] = flops / dt / 1e9;
    }
    snprintf(
        extra, sizeof extra,
        "\"lists\":%zu,\"responses\":%d,\"images\":%zu,\"objective\":\"perpo\",\"step_gflop\":%.4g",
        n_lists, N_RESP, n_lists, flops / 1e9);
    emit("perpo_step_ms", ms, g_opt.rounds, "ms", extra);
    emit("perpo_step_gflops", gf, g_opt.rounds, "GFLOP/s", extra);
    free(img);
    free(tok);
}

/* ---- Generation ------------------------------------------------------------------------------ *
 * With random weights EOS could come at any step. So that every run decodes exactly the same
 * number of tokens, one LayerNorm output feature is pinned to 1 (gain 0, bias 1) and its head
 * column gives every byte +20 and EOS 0: EOS then has probability ~e^-20 per token. The cost of
 * a step does not change; bench/torch_reference.py does the same. Actual counts are reported. */
static void suppress_eos(perpo_model *m) {
    size_t i, n = perpo_model_num_tensors(m), off = 0, rows = 0, cols = 0, v;
    const char *name = "";
    float *p = perpo_model_params(m);
    for (i = 0; i < n; i++) {
        if (perpo_model_tensor(m, i, &name, &off, &rows, &cols) != PERPO_OK) continue;
        if (strcmp(name, "lnf_w") == 0) p[off] = 0.0f;
        if (strcmp(name, "lnf_b") == 0) p[off] = 1.0f;
        if (strcmp(name, "head_w") == 0)
            for (v = 0; v < rows; v++) p[off + v * cols] = v < 256 ? 20.0f : 0.0f;
    }
}

static void bench_generate(perpo_model *m, const perpo_config *c) {
    enum { NSEQ = 8 };
    size_t per = (size_t)(c->image_h * c->image_w * c->channels), s, len[NSEQ], total = 0, cap = 64;
    float *img = make_images(c, NSEQ);
    const float *imgs[NSEQ];
    const char *prompts[NSEQ];
    char *out = (char *)malloc(NSEQ * cap);
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    perpo_status st;
    double tps[256];
    char extra[256];
    int r;
    if (!out) die("generate buffers", PERPO_ERR_NOMEM);
    for (s = 0; s < NSEQ; s++) {
        imgs[s] = img + s * per;
        prompts[s] = PROMPT_GEN;
    }
    req.n_seq = NSEQ;
    req.n_img = NSEQ;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    sc.max_new_tokens = GEN_NEW_TOKENS; /* greedy (temperature 0) */
    for (r = -1; r < g_opt.rounds; r++) {
        double t0 = now_s(), dt;
        if ((st = perpo_generate(m, &req, &sc, out, cap, len)) != PERPO_OK) die("generate", st);
        dt = now_s() - t0;
        for (total = 0, s = 0; s < NSEQ; s++) total += len[s];
        if (r >= 0) tps[r] = (double)total / dt;
    }
    if (total != NSEQ * GEN_NEW_TOKENS)
        fprintf(stderr, "bench: note: greedy generation produced %zu tokens, not %d\n", total,
                NSEQ * GEN_NEW_TOKENS);
    snprintf(extra, sizeof extra,
             "\"seqs\":%d,\"images\":%d,\"new_tokens\":%d,\"tokens_generated\":%zu,\"prompt\":\"%"
             "s\",\"kv_cache\":true",
             NSEQ, NSEQ, GEN_NEW_TOKENS, total, PROMPT_GEN);
    emit("generate_tokens_per_s", tps, g_opt.rounds, "tokens/s", extra);
    free(img);
    free(out);
}

static void bench_sample(perpo_model *m, const perpo_config *c) {
    enum { NSEQ = 8 };
    size_t s, len[NSEQ], total = 0, image_of[NSEQ], cap = 64, sum = 0;
    float *img = make_images(c, 1);
    const float *imgs[1];
    const char *prompts[NSEQ];
    char *out = (char *)malloc(NSEQ * cap);
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    perpo_status st;
    double ms[256];
    char extra[256];
    int r;
    if (!out) die("sample buffers", PERPO_ERR_NOMEM);
    imgs[0] = img;
    for (s = 0; s < NSEQ; s++) {
        prompts[s] = PROMPT_GEN;
        image_of[s] = 0;
    }
    req.n_seq = NSEQ;
    req.n_img = 1;
    req.images = imgs;
    req.image_of = image_of;
    req.prompts = prompts;
    sc.temperature = 1.0f;
    sc.max_new_tokens = GEN_NEW_TOKENS;
    for (r = -1; r < g_opt.rounds; r++) {
        double t0 = now_s(), dt;
        sc.seed = (uint64_t)(r + 2);
        if ((st = perpo_generate(m, &req, &sc, out, cap, len)) != PERPO_OK) die("generate", st);
        dt = now_s() - t0;
        for (total = 0, s = 0; s < NSEQ; s++) total += len[s];
        if (r >= 0) {
            ms[r] = 1e3 * dt;
            sum += total;
        }
    }
    snprintf(extra, sizeof extra,
             "\"n\":%d,\"images\":1,\"temperature\":1,\"max_new_tokens\":%d,\"tokens_per_call\":%."
             "1f,\"prompt\":\"%s\"",
             NSEQ, GEN_NEW_TOKENS, (double)sum / g_opt.rounds, PROMPT_GEN);
    emit("sample_n8_ms", ms, g_opt.rounds, "ms", extra);
    free(img);
    free(out);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench [--threads K] [--rounds R] [--quick] [--only LIST]\n"
            "  --threads K  OpenMP (and OpenBLAS) threads; default: the runtime's default\n"
            "  --rounds R   timed repetitions of each measurement (median, min, max); default 5, 3 "
            "with --quick\n"
            "  --quick      fewer rounds and shorter GEMM rounds\n"
            "  --only LIST  comma-separated subset of gemm,sft,profile,perpo,generate,sample\n"
            "Prints one JSON object per line on stdout; progress notes go to stderr.\n");
}

int main(int argc, char **argv) {
    perpo_config cfg = perpo_config_default();
    perpo_model *m = NULL;
    perpo_status st;
    struct rusage ru;
    double rss[1];
    int i, rounds = 0;
    memset(&g_opt, 0, sizeof g_opt);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            g_opt.threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            g_opt.quick = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            strncpy(g_opt.only, argv[++i], sizeof g_opt.only - 1);
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    g_opt.rounds = rounds > 0 ? rounds : (g_opt.quick ? 3 : 5);
    if (g_opt.rounds > 256) g_opt.rounds = 256;
#ifdef _OPENMP
    if (g_opt.threads > 0) omp_set_num_threads(g_opt.threads);
    g_opt.threads = omp_get_max_threads();
#else
    g_opt.threads = 1;
#endif
#if defined(PERPO_USE_CBLAS) && defined(OPENBLAS_VERSION)
    openblas_set_num_threads(g_opt.threads);
#endif
    g_opt.batch = cfg.max_batch; /* 32 */
    if (wanted("gemm")) bench_gemm(&cfg);
    if (wanted("sft") || wanted("perpo") || wanted("generate") || wanted("sample") ||
        wanted("profile")) {
        if ((st = perpo_model_create(&m, &cfg, 42)) != PERPO_OK) die("model create", st);
        fprintf(stderr, "bench: %zu parameters, build %s, %d threads\n", perpo_model_num_params(m),
                BENCH_BUILD, g_opt.threads);
        if (wanted("sft")) bench_sft(m, &cfg);
        if (wanted("perpo")) bench_perpo(m, &cfg);
        suppress_eos(m);
        if (wanted("generate")) bench_generate(m, &cfg);
        if (wanted("sample")) bench_sample(m, &cfg);
    }
    getrusage(RUSAGE_SELF, &ru);            /* before the profile's own buffers */
    rss[0] = (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
    if (m && wanted("profile")) bench_profile(m, (size_t)g_opt.batch, g_sft_ms, g_best_gemm);
    perpo_model_free(m);
    emit("peak_rss_mb", rss, 1, "MB", "");
    return 0;
}
