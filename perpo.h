/* perpo.h — Perceptual Preference Optimization (PerPO) in one C99 header.

   PerPO (Zhu et al., "Perceptual Preference Optimization via Discriminative Rewarding",
   arXiv 2502.04371) aligns a multimodal LLM on perception tasks: sample N answers per
   image+question, score each with a discriminative metric (IoU for a box, 1 - normalized edit
   distance for text), then train on every pair of the ranked list, each pair weighted by its
   reward gap. This header holds everything that needs: tensor kernels with their backward
   passes, a compact LLaVA-shaped multimodal LLM, SFT training, sampling with a KV cache,
   task rewards, the listwise preference objectives and checkpoints.

   USAGE (stb style)
     In exactly one C or C++ file:
         #define PERPO_IMPLEMENTATION
         #include "perpo.h"
     Everywhere else just #include "perpo.h". Link with -lm.

   QUICK START (tests/t_readme.c compiles and runs this same code)
         perpo_config cfg = perpo_config_default();
         perpo_model *model = NULL;
         perpo_status st = perpo_model_create(&model, &cfg, 42);
         if (st != PERPO_OK) { fprintf(stderr, "%s\n", perpo_status_string(st)); return 1; }
         ... perpo_sft_train(model, examples, n_examples, &train_cfg, on_progress, NULL);
         ... perpo_generate(model, &request, &sample_cfg, out, sizeof out, out_len);
         perpo_model_free(model);

   OPTIONS (define before the #include that has PERPO_IMPLEMENTATION)
     PERPO_STATIC            make every function static (private copy in one file)
     PERPO_USE_CBLAS         use cblas_sgemm for matrix products (link -lopenblas or -lblas)
     PERPO_MALLOC(ctx, n), PERPO_REALLOC(ctx, p, n), PERPO_FREE(ctx, p)
                             allocator, all three or none; ctx is perpo_config.alloc_ctx
     PERPO_ASSERT(x)         checks of programmer error (never of input); default assert()
     Build with -fopenmp to spread kernels over cores. Results are bit-identical from run to
     run for a given build and thread count.

   CONVENTIONS
     Every fallible function returns a perpo_status (PERPO_OK == 0); perpo_status_string()
     explains it. The library never prints, exits or aborts, and has no mutable global state.
     Sizes are size_t and every size product is overflow-checked. Parameters, gradients and
     optimizer moments live in flat buffers with one layout; activations live in one arena
     sized when the model is created, so a training step allocates nothing.

   LICENSE: MIT, see the end of this file.
*/
#ifndef PERPO_H
#define PERPO_H

#include <stddef.h>
#include <stdint.h>

#ifndef PERPODEF
#if defined(PERPO_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define PERPODEF static __attribute__((unused)) /* unused ones are fine: no warning */
#elif defined(PERPO_STATIC)
#define PERPODEF static
#else
#define PERPODEF extern
#endif
#endif

#define PERPO_VERSION_MAJOR 0
#define PERPO_VERSION_MINOR 1

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================================
   PUBLIC API
   ========================================================================================== */

/* ---- Status codes ----------------------------------------------------------------------- */
typedef enum perpo_status {
    PERPO_OK = 0,
    PERPO_ERR_ARG,        /* invalid argument (NULL, size out of range, inconsistent config) */
    PERPO_ERR_NOMEM,      /* an allocation failed */
    PERPO_ERR_OVERFLOW,   /* a size computation would overflow size_t */
    PERPO_ERR_IO,         /* open/read/write/rename failed */
    PERPO_ERR_FORMAT,     /* a file or text is malformed */
    PERPO_ERR_NONFINITE   /* NaN or Inf in an input, loss or gradient */
} perpo_status;

/* A short English explanation of a status; never NULL. */
PERPODEF const char *perpo_status_string(perpo_status status);

/* ---- Model configuration ---------------------------------------------------------------- */
/* Token ids: bytes 0..255 are themselves; four specials follow. */
#define PERPO_TOK_PAD 256
#define PERPO_TOK_BOS 257
#define PERPO_TOK_SEP 258 /* ends the prompt: the response starts after it */
#define PERPO_TOK_EOS 259
#define PERPO_VOCAB   260

typedef struct perpo_config {
    int image_h, image_w, channels; /* input image, float [H][W][C] in [0,1] */
    int patch;                      /* P: non-overlapping P x P patches become vision tokens */
    int d_model;                    /* width of every token */
    int n_heads;                    /* attention heads (d_model % n_heads == 0) */
    int n_vis_layers;               /* bidirectional blocks of the vision encoder */
    int n_dec_layers;               /* causal blocks of the language decoder */
    int mlp_mult;                   /* MLP hidden width = mlp_mult * d_model */
    int max_text;                   /* text positions: BOS + prompt + SEP + response + EOS */
    int vocab;                      /* must be PERPO_VOCAB */
    int max_batch;                  /* most sequences (and images) per forward; sizes the arena */
    void *alloc_ctx;                /* passed to PERPO_MALLOC/FREE; not saved in checkpoints */
} perpo_config;

/* 64x64 RGB, 8x8 patches, width 128, 4 heads, 2 vision + 4 decoder blocks, 48 text positions. */
PERPODEF perpo_config perpo_config_default(void);
/* PERPO_OK when every field is in range and the derived sizes fit in memory arithmetic. */
PERPODEF perpo_status perpo_config_validate(const perpo_config *cfg);

/* ---- Model lifetime --------------------------------------------------------------------- */
typedef struct perpo_model perpo_model;

/* Allocates parameters, gradients, AdamW moments and the activation arena; weights are
   initialised from seed (GPT-2 style: N(0, 0.02), residual projections scaled down). */
PERPODEF perpo_status perpo_model_create(perpo_model **out, const perpo_config *cfg, uint64_t seed);
PERPODEF void perpo_model_free(perpo_model *model);
PERPODEF const perpo_config *perpo_model_config(const perpo_model *model);
/* Saves config and parameters (little-endian, CRC32-checked) via a temporary file + rename. */
PERPODEF perpo_status perpo_model_save(const perpo_model *model, const char *path);
/* Creates a model from a checkpoint; PERPO_ERR_IO / PERPO_ERR_FORMAT on a bad file. */
PERPODEF perpo_status perpo_model_load(perpo_model **out, const char *path);

/* Flat views for tools and tests: parameters and gradients share one layout. */
PERPODEF size_t perpo_model_num_params(const perpo_model *model);
PERPODEF float *perpo_model_params(perpo_model *model);
PERPODEF float *perpo_model_grads(perpo_model *model);
PERPODEF size_t perpo_model_num_tensors(const perpo_model *model);
/* Name, offset into the flat buffer, and shape (cols == 0 for a vector) of tensor i. */
PERPODEF perpo_status perpo_model_tensor(const perpo_model *model, size_t i, const char **name,
                                         size_t *offset, size_t *rows, size_t *cols);

/* ---- Forward and backward --------------------------------------------------------------- */
/* A batch of n_seq sequences over n_img images. Sequence b sees image image_of[b]; several
   sequences may share one image, which is then encoded once. Text rows are max_text ints. */
typedef struct perpo_batch {
    size_t n_seq, n_img;
    const float *const *images; /* n_img pointers to image_h*image_w*channels floats */
    const size_t *image_of;     /* n_seq image indices; NULL means image_of[b] = b */
    const int *tokens;          /* (n_seq, max_text) inputs, PAD after the end */
    const int *targets;         /* (n_seq, max_text) next token where the loss counts, else -1 */
} perpo_batch;

/* Builds one text row: tokens = BOS prompt SEP response EOS PAD..., targets = the response
   bytes and EOS at the positions that predict them, -1 elsewhere. PERPO_ERR_ARG if it does
   not fit in max_text. n_targets (may be NULL) gets the number of counted targets. */
PERPODEF perpo_status perpo_text_encode(const perpo_config *cfg, const char *prompt, size_t prompt_len,
                                        const char *response, size_t response_len,
                                        int *tokens, int *targets, size_t *n_targets);

/* Runs the model and keeps what backward needs. logp (n_seq, may be NULL) gets each sequence's
   summed response log-probability; mean_ce (may be NULL) the mean token cross-entropy over all
   counted targets of the batch. */
PERPODEF perpo_status perpo_forward(perpo_model *model, const perpo_batch *batch,
                                    float *logp, float *mean_ce);
/* Adds dLoss/dparams into the gradient buffer, given dlogp[b] = dLoss/dlogp[b] for every
   sequence of the last forward. SFT passes -1/n_targets for each; preference objectives pass
   the gradient of their listwise loss. */
PERPODEF perpo_status perpo_backward(perpo_model *model, const float *dlogp);
PERPODEF void perpo_zero_grad(perpo_model *model);
/* Logits (n_seq, max_text, vocab) of the last forward; valid until the next call. */
PERPODEF const float *perpo_last_logits(const perpo_model *model);

/* ---- Optimizer -------------------------------------------------------------------------- */
typedef struct perpo_optim_config {
    float lr, min_lr;        /* peak and final learning rate of the cosine schedule */
    int warmup_steps;        /* linear warmup from lr/warmup to lr */
    int total_steps;         /* schedule length */
    float beta1, beta2, eps; /* AdamW moments */
    float weight_decay;      /* decoupled, on matrices only (no biases, no LayerNorm) */
    float clip_norm;         /* global gradient norm clip; <= 0 disables */
} perpo_optim_config;

PERPODEF perpo_optim_config perpo_optim_default(void);
/* Learning rate at 0-based step: linear warmup, then cosine decay to min_lr. */
PERPODEF float perpo_lr_at(const perpo_optim_config *oc, int step);
/* One AdamW update from the accumulated gradients, scaled by grad_scale first (1/accum for
   gradient accumulation). Refuses a non-finite gradient with PERPO_ERR_NONFINITE and changes
   nothing. grad_norm (may be NULL) gets the global norm before clipping. */
PERPODEF perpo_status perpo_optimizer_step(perpo_model *model, const perpo_optim_config *oc,
                                           float grad_scale, float *grad_norm);
/* Number of optimizer steps taken so far (drives the schedule and bias correction). */
PERPODEF int perpo_optimizer_steps(const perpo_model *model);
/* Forget the AdamW moments and step count (e.g. before a new training phase). */
PERPODEF void perpo_optimizer_reset(perpo_model *model);

/* ---- Training: progress reports -------------------------------------------------------- */
typedef struct perpo_progress {
    const char *phase;        /* "sft", "perpo", ... */
    int step, total_steps;    /* 1-based step just finished */
    float loss, lr, grad_norm;
    double tokens;            /* target tokens processed so far in this phase */
    double elapsed_s, eta_s;  /* wall clock when the build has it (C11 timespec_get), else CPU */
} perpo_progress;
/* Return non-zero to stop training early (the trainer then returns PERPO_OK). */
typedef int (*perpo_progress_fn)(const perpo_progress *p, void *user);

/* ---- SFT -------------------------------------------------------------------------------- */
typedef struct perpo_example {
    const float *image;       /* image_h*image_w*channels floats */
    const char *prompt;       /* NUL-terminated */
    const char *response;     /* NUL-terminated; the text the model learns to answer */
} perpo_example;

typedef struct perpo_train_config {
    perpo_optim_config optim;
    int batch_size;           /* sequences per micro-batch (<= max_batch) */
    int accum_steps;          /* micro-batches per optimizer step */
    uint64_t seed;            /* shuffling */
    int log_every;            /* call the progress callback every this many steps (>= 1) */
} perpo_train_config;

PERPODEF perpo_train_config perpo_train_default(void);
/* Cross-entropy on the responses, AdamW, cosine schedule: optim.total_steps steps over
   shuffled epochs of the examples. */
PERPODEF perpo_status perpo_sft_train(perpo_model *model, const perpo_example *examples, size_t n,
                                      const perpo_train_config *tc, perpo_progress_fn progress,
                                      void *user);

/* ---- Sampling --------------------------------------------------------------------------- */
typedef struct perpo_sample_config {
    float temperature;  /* 0 = greedy */
    int top_k;          /* keep the k most likely tokens; 0 = off */
    float top_p;        /* nucleus: smallest set with mass >= top_p; 1 = off */
    int max_new_tokens; /* cap on response bytes (also capped by max_text) */
    uint64_t seed;      /* same seed, same model, same request -> same text */
    int no_cache;       /* 1 = recompute the whole sequence per token (slow; for checking) */
} perpo_sample_config;

PERPODEF perpo_sample_config perpo_sample_default(void);

/* n_seq responses; sequence b answers prompts[b] about images[image_of[b]]. Each image is
   encoded once, and consecutive sequences with the same image and prompt share one prefill. */
typedef struct perpo_gen_request {
    size_t n_seq, n_img;
    const float *const *images;
    const size_t *image_of;     /* NULL means image_of[b] = b */
    const char *const *prompts; /* n_seq NUL-terminated prompts */
} perpo_gen_request;

/* out holds n_seq strings of out_cap bytes each (NUL-terminated, truncated to fit); out_len
   (may be NULL) gets each response's length. Stops at EOS, max_new_tokens or max_text. */
PERPODEF perpo_status perpo_generate(perpo_model *model, const perpo_gen_request *req,
                                     const perpo_sample_config *sc, char *out, size_t out_cap,
                                     size_t *out_len);

/* ---- Small utilities shared with the examples ------------------------------------------- */
/* CRC-32 (IEEE 802.3, as zlib/PNG) continued from crc (start with 0). */
PERPODEF uint32_t perpo_crc32(uint32_t crc, const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* PERPO_H */

/* ==========================================================================================
   IMPLEMENTATION
   ========================================================================================== */
#ifdef PERPO_IMPLEMENTATION
#ifndef PERPO_IMPLEMENTATION_DONE
#define PERPO_IMPLEMENTATION_DONE

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(PERPO_MALLOC) && defined(PERPO_REALLOC) && defined(PERPO_FREE)
#elif !defined(PERPO_MALLOC) && !defined(PERPO_REALLOC) && !defined(PERPO_FREE)
#define PERPO_MALLOC(ctx, size) ((void)(ctx), malloc(size))
#define PERPO_REALLOC(ctx, p, size) ((void)(ctx), realloc((p), (size)))
#define PERPO_FREE(ctx, p) ((void)(ctx), free(p))
#else
#error "perpo.h: define all of PERPO_MALLOC, PERPO_REALLOC and PERPO_FREE, or none"
#endif

#ifndef PERPO_ASSERT
#include <assert.h>
#define PERPO_ASSERT(x) assert(x)
#endif

#ifdef PERPO_USE_CBLAS
#include <cblas.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#define PERPO__PRAGMA(x) _Pragma(#x)
#define PERPO__OMP(x) PERPO__PRAGMA(omp x)
#else
#define PERPO__OMP(x)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================================
   1. Utilities: status strings, checked sizes, RNG, clock, CRC32
   ========================================================================================== */

PERPODEF const char *perpo_status_string(perpo_status status) {
    switch (status) {
    case PERPO_OK: return "ok";
    case PERPO_ERR_ARG: return "invalid argument";
    case PERPO_ERR_NOMEM: return "out of memory";
    case PERPO_ERR_OVERFLOW: return "size overflow";
    case PERPO_ERR_IO: return "i/o error";
    case PERPO_ERR_FORMAT: return "malformed input";
    case PERPO_ERR_NONFINITE: return "non-finite value (NaN or Inf)";
    }
    return "unknown status";
}

/* a * b into *out; 0 on overflow. */
static int perpo__size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}
static int perpo__size_add(size_t a, size_t b, size_t *out) {
    if (b > (size_t)-1 - a) return 0;
    *out = a + b;
    return 1;
}

/* xoshiro256** seeded through splitmix64: small, fast, and the state lives in its owner. */
typedef struct perpo__rng { uint64_t s[4]; } perpo__rng;

static uint64_t perpo__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static void perpo__rng_seed(perpo__rng *r, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) r->s[i] = perpo__splitmix64(&seed);
}
static uint64_t perpo__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t perpo__rng_u64(perpo__rng *r) {
    uint64_t *s = r->s, out = perpo__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = perpo__rotl(s[3], 45);
    return out;
}
/* Uniform in [0, 1) with 53 random bits. */
static double perpo__rng_uniform(perpo__rng *r) { return (double)(perpo__rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
/* Uniform integer in [0, n) without modulo bias worth noticing (n << 2^64). */
static size_t perpo__rng_below(perpo__rng *r, size_t n) { return (size_t)(perpo__rng_uniform(r) * (double)n) % n; }
static double perpo__rng_normal(perpo__rng *r) {
    double u1 = perpo__rng_uniform(r), u2 = perpo__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Seconds from an arbitrary origin: wall clock where C11 gives it, CPU time otherwise. */
static double perpo__now(void) {
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && defined(TIME_UTC)
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) == TIME_UTC) return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
    return (double)clock() / (double)CLOCKS_PER_SEC;
}

PERPODEF uint32_t perpo_crc32(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int perpo__all_finite(const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}

/* ==========================================================================================
   2. Tensor kernels. Row-major float arrays with explicit sizes. Each op is a forward /
      backward pair; backward ADDS into gradients that the caller zeroed.
   ========================================================================================== */

/* ---- Matrix product --------------------------------------------------------------------- *
 * C (M,N) = [C +] op(A) (M,K) . op(B) (K,N). ta: A is stored (K,M); tb: B is stored (N,K).
 * The built-in path packs K-blocks of B into NR-wide panels and runs an MR x NR register tile
 * that compilers vectorize; every element of C is summed in the same order whatever the
 * thread count, so results are bit-identical across runs and thread counts. */
#define PERPO__MR 6
#define PERPO__NR 16
#define PERPO__KC 256

/* Floats of packing workspace a product with N columns needs. */
static size_t perpo__gemm_ws_floats(size_t n_max) {
    return (size_t)PERPO__KC * ((n_max + PERPO__NR - 1) / PERPO__NR) * PERPO__NR;
}

#ifndef PERPO_USE_CBLAS
/* Full MR x NR tile: acc = A-rows (stride sai between rows, sak between k) . packed panel. */
static void perpo__gemm_tile_full(size_t kc, const float *a, size_t sai, size_t sak,
                                  const float *bp, float acc[PERPO__MR][PERPO__NR]) {
    size_t k;
    int i, j;
    for (i = 0; i < PERPO__MR; i++)
        for (j = 0; j < PERPO__NR; j++) acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++) {
        const float *b = bp + k * PERPO__NR;
        for (i = 0; i < PERPO__MR; i++) {
            float av = a[(size_t)i * sai + k * sak];
            for (j = 0; j < PERPO__NR; j++) acc[i][j] += av * b[j];
        }
    }
}
/* Edge tile with mr < MR valid rows (reads no row past mr). */
static void perpo__gemm_tile_edge(size_t kc, size_t mr, const float *a, size_t sai, size_t sak,
                                  const float *bp, float acc[PERPO__MR][PERPO__NR]) {
    size_t k, i;
    int j;
    for (i = 0; i < PERPO__MR; i++)
        for (j = 0; j < PERPO__NR; j++) acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++) {
        const float *b = bp + k * PERPO__NR;
        for (i = 0; i < mr; i++) {
            float av = a[i * sai + k * sak];
            for (j = 0; j < PERPO__NR; j++) acc[i][j] += av * b[j];
        }
    }
}
#endif

static void perpo__gemm(int ta, int tb, size_t M, size_t N, size_t K,
                        const float *A, size_t lda, const float *B, size_t ldb,
                        int accumulate, float *C, size_t ldc, float *ws) {
#ifdef PERPO_USE_CBLAS
    (void)ws;
    if (M == 0 || N == 0) return;
    if (K == 0) {
        size_t i;
        if (!accumulate) for (i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, accumulate ? 1.0f : 0.0f,
                C, (int)ldc);
#else
    size_t sai = ta ? 1 : lda, sak = ta ? lda : 1; /* A(i,k) = A[i*sai + k*sak] */
    size_t n_panels = (N + PERPO__NR - 1) / PERPO__NR, m_blocks = (M + PERPO__MR - 1) / PERPO__MR;
    size_t k0;
    if (M == 0 || N == 0) return;
    if (!accumulate) {
        size_t i;
        for (i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof(float));
    }
    for (k0 = 0; k0 < K; k0 += PERPO__KC) {
        size_t kc = K - k0 < PERPO__KC ? K - k0 : PERPO__KC;
        long p, t, n_tiles = (long)(m_blocks * n_panels);
        /* pack B[k0:k0+kc, :] into panels: ws[p][k][0..NR), zero-padded past N */
        PERPO__OMP(parallel for schedule(static))
        for (p = 0; p < (long)n_panels; p++) {
            float *dst = ws + (size_t)p * PERPO__KC * PERPO__NR;
            size_t j0 = (size_t)p * PERPO__NR, nr = N - j0 < PERPO__NR ? N - j0 : PERPO__NR, k, j;
            for (k = 0; k < kc; k++) {
                float *d = dst + k * PERPO__NR;
                for (j = 0; j < nr; j++)
                    d[j] = tb ? B[(j0 + j) * ldb + k0 + k] : B[(k0 + k) * ldb + j0 + j];
                for (; j < PERPO__NR; j++) d[j] = 0.0f;
            }
        }
        PERPO__OMP(parallel for schedule(static))
        for (t = 0; t < n_tiles; t++) {
            float acc[PERPO__MR][PERPO__NR];
            size_t ib = (size_t)t / n_panels, jp = (size_t)t % n_panels;
            size_t i0 = ib * PERPO__MR, j0 = jp * PERPO__NR;
            size_t mr = M - i0 < PERPO__MR ? M - i0 : PERPO__MR, nr = N - j0 < PERPO__NR ? N - j0 : PERPO__NR;
            const float *a = A + i0 * sai + k0 * sak;
            const float *bp = ws + jp * PERPO__KC * PERPO__NR;
            size_t i, j;
            if (mr == PERPO__MR) perpo__gemm_tile_full(kc, a, sai, sak, bp, acc);
            else perpo__gemm_tile_edge(kc, mr, a, sai, sak, bp, acc);
            for (i = 0; i < mr; i++) {
                float *c = C + (i0 + i) * ldc + j0;
                for (j = 0; j < nr; j++) c[j] += acc[i][j];
            }
        }
    }
#endif
}

/* Linear layer, PyTorch layout. out (N,OC) = inp (N,C) . W^T + b;  W: (OC,C), b: (OC) or NULL */
static void perpo__linear_forward(float *out, const float *inp, const float *W, const float *b,
                                  size_t N, size_t C, size_t OC, float *ws) {
    perpo__gemm(0, 1, N, OC, C, inp, C, W, C, 0, out, OC, ws);
    if (b) {
        size_t i, o;
        for (i = 0; i < N; i++)
            for (o = 0; o < OC; o++) out[i * OC + o] += b[o];
    }
}
/* dinp (N,C) += dout . W;  dW (OC,C) += dout^T . inp;  db (OC) += column sums of dout.
   dinp may be NULL (the input is data, e.g. image patches). */
static void perpo__linear_backward(float *dinp, float *dW, float *db, const float *dout,
                                   const float *inp, const float *W, size_t N, size_t C, size_t OC,
                                   float *ws) {
    if (dinp) perpo__gemm(0, 0, N, C, OC, dout, OC, W, C, 1, dinp, C, ws);
    perpo__gemm(1, 0, OC, C, N, dout, OC, inp, C, 1, dW, C, ws);
    if (db) {
        size_t i, o;
        for (i = 0; i < N; i++)
            for (o = 0; o < OC; o++) db[o] += dout[i * OC + o];
    }
}

/* ---- LayerNorm over the last dimension (eps 1e-5, biased variance, as PyTorch) ---------- */
static void perpo__layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                     const float *w, const float *b, size_t N, size_t D) {
    long r;
    PERPO__OMP(parallel for schedule(static))
    for (r = 0; r < (long)N; r++) {
        const float *x = inp + (size_t)r * D;
        float *y = out + (size_t)r * D;
        float m = 0.0f, v = 0.0f, s;
        size_t i;
        for (i = 0; i < D; i++) m += x[i];
        m /= (float)D;
        for (i = 0; i < D; i++) { float d = x[i] - m; v += d * d; }
        v /= (float)D;
        s = 1.0f / sqrtf(v + 1e-5f);
        for (i = 0; i < D; i++) y[i] = (x[i] - m) * s * w[i] + b[i];
        mean[r] = m;
        rstd[r] = s;
    }
}
static void perpo__layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                      const float *inp, const float *w, const float *mean,
                                      const float *rstd, size_t N, size_t D) {
    size_t r, i;
    for (r = 0; r < N; r++) {
        const float *x = inp + r * D, *dy = dout + r * D;
        float *dx = dinp + r * D, m = mean[r], s = rstd[r];
        float mean_dn = 0.0f, mean_dn_xh = 0.0f;
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s, dn = dy[i] * w[i];
            mean_dn += dn;
            mean_dn_xh += dn * xh;
            dw[i] += dy[i] * xh;
            db[i] += dy[i];
        }
        mean_dn /= (float)D;
        mean_dn_xh /= (float)D;
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s;
            dx[i] += s * (dy[i] * w[i] - mean_dn - xh * mean_dn_xh);
        }
    }
}

/* ---- GELU, tanh approximation (PyTorch approximate='tanh') ------------------------------ */
#define PERPO__GELU_S 0.7978845608028654f /* sqrt(2/pi) */
static void perpo__gelu_forward(float *out, const float *inp, size_t n) {
    long i;
    PERPO__OMP(parallel for schedule(static))
    for (i = 0; i < (long)n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(PERPO__GELU_S * (x + 0.044715f * x * x * x)));
    }
}
/* dinp = dout * gelu'(inp); dinp may alias dout. */
static void perpo__gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    long i;
    PERPO__OMP(parallel for schedule(static))
    for (i = 0; i < (long)n; i++) {
        float x = inp[i], th = tanhf(PERPO__GELU_S * (x + 0.044715f * x * x * x));
        float d = 0.5f * (1.0f + th) +
                  0.5f * x * (1.0f - th * th) * PERPO__GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * d;
    }
}

/* ---- Multi-head self-attention core ----------------------------------------------------- *
 * qkv: (B,T,3D) holding q | k | v; head h uses columns h*hd..(h+1)*hd of each. out: (B,T,D).
 * att: (B,H,T,T) softmax probabilities kept for backward (zero above the diagonal if causal). */
static void perpo__attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T,
                                     size_t D, size_t H, int causal) {
    size_t hd = D / H;
    float scale = 1.0f / sqrtf((float)hd);
    long bh;
    PERPO__OMP(parallel for schedule(static))
    for (bh = 0; bh < (long)(B * H); bh++) {
        size_t b = (size_t)bh / H, h = (size_t)bh % H, t, t2, i;
        for (t = 0; t < T; t++) {
            const float *q = qkv + (b * T + t) * 3 * D + h * hd;
            float *p = att + ((size_t)bh * T + t) * T, *o = out + (b * T + t) * D + h * hd;
            size_t n = causal ? t + 1 : T;
            float mx = -INFINITY, sum = 0.0f;
            for (t2 = 0; t2 < n; t2++) {
                const float *k = qkv + (b * T + t2) * 3 * D + D + h * hd;
                float s = 0.0f;
                for (i = 0; i < hd; i++) s += q[i] * k[i];
                p[t2] = s * scale;
                if (p[t2] > mx) mx = p[t2];
            }
            for (t2 = 0; t2 < n; t2++) { p[t2] = expf(p[t2] - mx); sum += p[t2]; }
            for (t2 = 0; t2 < n; t2++) p[t2] /= sum;
            for (t2 = n; t2 < T; t2++) p[t2] = 0.0f;
            for (i = 0; i < hd; i++) o[i] = 0.0f;
            for (t2 = 0; t2 < n; t2++) {
                const float *v = qkv + (b * T + t2) * 3 * D + 2 * D + h * hd;
                for (i = 0; i < hd; i++) o[i] += p[t2] * v[i];
            }
        }
    }
}
/* dqkv (B,T,3D) += gradient from dout (B,T,D). scratch: B*H*T floats. */
static void perpo__attention_backward(float *dqkv, const float *dout, const float *att,
                                      const float *qkv, size_t B, size_t T, size_t D, size_t H,
                                      int causal, float *scratch) {
    size_t hd = D / H;
    float scale = 1.0f / sqrtf((float)hd);
    long bh;
    PERPO__OMP(parallel for schedule(static))
    for (bh = 0; bh < (long)(B * H); bh++) {
        size_t b = (size_t)bh / H, h = (size_t)bh % H, t, t2, i;
        float *dp = scratch + (size_t)bh * T;
        for (t = 0; t < T; t++) {
            const float *p = att + ((size_t)bh * T + t) * T, *dy = dout + (b * T + t) * D + h * hd;
            const float *q = qkv + (b * T + t) * 3 * D + h * hd;
            float *dq = dqkv + (b * T + t) * 3 * D + h * hd;
            size_t n = causal ? t + 1 : T;
            float dot = 0.0f;
            for (t2 = 0; t2 < n; t2++) { /* dp = dy . v ; dv += p dy */
                const float *v = qkv + (b * T + t2) * 3 * D + 2 * D + h * hd;
                float *dv = dqkv + (b * T + t2) * 3 * D + 2 * D + h * hd, s = 0.0f;
                for (i = 0; i < hd; i++) { s += dy[i] * v[i]; dv[i] += p[t2] * dy[i]; }
                dp[t2] = s;
                dot += s * p[t2];
            }
            for (t2 = 0; t2 < n; t2++) { /* softmax backward, then through q.k */
                const float *k = qkv + (b * T + t2) * 3 * D + D + h * hd;
                float *dk = dqkv + (b * T + t2) * 3 * D + D + h * hd;
                float ds = p[t2] * (dp[t2] - dot) * scale;
                for (i = 0; i < hd; i++) { dq[i] += ds * k[i]; dk[i] += ds * q[i]; }
            }
        }
    }
}

/* ---- Residual add and log-softmax --------------------------------------------------------- */
static void perpo__add_inplace(float *acc, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) acc[i] += x[i];
}
/* log(sum(exp(x))) of one row, stable. */
static float perpo__logsumexp(const float *x, size_t n) {
    float mx = -INFINITY;
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    for (i = 0; i < n; i++) s += exp((double)(x[i] - mx));
    return mx + (float)log(s);
}

/* ---- Patchify: image (H,W,C) -> (NP, P*P*C) rows, patches row-major, pixels (dy,dx,c) --- */
static void perpo__patchify(float *out, const float *img, size_t H, size_t W, size_t C, size_t P) {
    size_t py, px, dy, dx, c, r = 0, npx = W / P;
    for (py = 0; py < H / P; py++)
        for (px = 0; px < npx; px++, r++) {
            float *o = out + r * P * P * C;
            for (dy = 0; dy < P; dy++)
                for (dx = 0; dx < P; dx++)
                    for (c = 0; c < C; c++) *o++ = img[((py * P + dy) * W + px * P + dx) * C + c];
        }
}

/* ==========================================================================================
   3. The compact MLLM (LLaVA-shaped). Image -> P x P patches -> linear embedding + position ->
      bidirectional blocks (vision encoder) -> LayerNorm -> 2-layer GELU MLP projector (as
      LLaVA-1.5) -> image tokens. Decoder: pre-LN causal blocks over [image tokens ; text
      tokens] + learned positions -> LayerNorm -> untied head on the text positions.
   ========================================================================================== */

/* One tensor of the flat parameter buffer. */
typedef struct perpo__tensor {
    const char *name;
    size_t offset, rows, cols; /* cols == 0: a vector of rows elements */
} perpo__tensor;

/* Offsets of the 12 tensors of one transformer block. */
typedef struct perpo__block {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, attn_w, attn_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
} perpo__block;

/* What one block's forward keeps for backward. */
typedef struct perpo__block_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N,D), (N), (N) */
    float *qkv;                       /* (N,3D) */
    float *att;                       /* (B,H,T,T) softmax probabilities */
    float *atty;                      /* (N,D) attention output before the projection */
    float *mid;                       /* (N,D) residual stream after attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fcg;                 /* (N,M) MLP hidden before / after GELU */
} perpo__block_acts;

struct perpo_model {
    perpo_config cfg;
    /* derived sizes */
    size_t NP, T, L, D, H, M, V, PPC; /* patches, text positions, NP+T, width, heads, MLP hidden,
                                         vocab, patch vector length */
    size_t max_batch;
    /* parameters, gradients, AdamW moments: same layout, described by the tensor table */
    perpo__tensor *tensors;
    size_t n_tensors, n_params;
    size_t patch_w, patch_b, vis_pos, vis_lnf_w, vis_lnf_b, proj1_w, proj1_b, proj2_w, proj2_b;
    size_t wte, dec_pos, lnf_w, lnf_b, head_w;
    perpo__block *vis, *dec;
    float *params, *grads, *adam_m, *adam_v;
    int opt_step;
    /* activation arena */
    float *arena;
    size_t arena_floats;
    float *patches;                      /* (maxB*NP, PPC) */
    float **vis_x;                       /* LV+1 residual streams (maxB*NP, D) */
    perpo__block_acts *vis_acts;
    float *vis_lnf, *vis_lnf_mean, *vis_lnf_rstd, *proj_h, *proj_g, *img_tok;
    float **dec_x;                       /* LD+1 residual streams (maxB*L, D) */
    perpo__block_acts *dec_acts;
    float *txt, *lnf, *lnf_mean, *lnf_rstd; /* final stream's text rows (maxB*T, D) and their LN */
    float *logits, *lse, *dlogits;       /* (maxB*T, V), (maxB*T), (maxB*T, V) */
    float *d_res, *d_tmp, *d_atty, *d_qkv, *d_fc, *d_att, *d_img; /* backward scratch */
    float *gemm_ws;
    /* generation: KV cache per decoder layer (maxB, L, D) and per-row scratch */
    float *kcache, *vcache;
    size_t g_rows;                       /* max(maxB, L) */
    float *g_x, *g_ln, *g_mean, *g_rstd, *g_qkv, *g_atty, *g_tmp, *g_fch, *g_scores, *g_logits;
    /* the batch of the last forward, kept for backward */
    int *tokens, *targets;
    size_t *image_of;
    size_t n_seq, n_img;
    int have_forward;
    struct perpo__token_score *sort_buf; /* (V) for top-k / top-p */
};

typedef struct perpo__token_score { float score; int token; } perpo__token_score;

PERPODEF perpo_config perpo_config_default(void) {
    perpo_config c;
    memset(&c, 0, sizeof c);
    c.image_h = 64; c.image_w = 64; c.channels = 3; c.patch = 8;
    c.d_model = 128; c.n_heads = 4; c.n_vis_layers = 2; c.n_dec_layers = 4; c.mlp_mult = 4;
    c.max_text = 48; c.vocab = PERPO_VOCAB; c.max_batch = 32;
    return c;
}

PERPODEF perpo_status perpo_config_validate(const perpo_config *c) {
    if (!c) return PERPO_ERR_ARG;
    /* generous caps: they keep every derived size product far from overflow */
    if (c->image_h < 1 || c->image_h > 4096 || c->image_w < 1 || c->image_w > 4096) return PERPO_ERR_ARG;
    if (c->channels < 1 || c->channels > 4 || c->patch < 1 || c->patch > 256) return PERPO_ERR_ARG;
    if (c->image_h % c->patch || c->image_w % c->patch) return PERPO_ERR_ARG;
    if ((c->image_h / c->patch) * (c->image_w / c->patch) > 4096) return PERPO_ERR_ARG;
    if (c->d_model < 1 || c->d_model > 8192 || c->n_heads < 1 || c->d_model % c->n_heads) return PERPO_ERR_ARG;
    if (c->n_vis_layers < 0 || c->n_vis_layers > 64 || c->n_dec_layers < 1 || c->n_dec_layers > 64) return PERPO_ERR_ARG;
    if (c->mlp_mult < 1 || c->mlp_mult > 16) return PERPO_ERR_ARG;
    if (c->max_text < 4 || c->max_text > 4096) return PERPO_ERR_ARG;
    if (c->vocab != PERPO_VOCAB) return PERPO_ERR_ARG;
    if (c->max_batch < 1 || c->max_batch > 65536) return PERPO_ERR_ARG;
    return PERPO_OK;
}

static size_t perpo__add_tensor(perpo_model *m, const char *name, size_t rows, size_t cols) {
    perpo__tensor *t = &m->tensors[m->n_tensors++];
    t->name = name; t->rows = rows; t->cols = cols; t->offset = m->n_params;
    m->n_params += rows * (cols ? cols : 1); /* bounded by perpo_config_validate's caps */
    return t->offset;
}
static void perpo__add_block(perpo_model *m, perpo__block *b, int vision) {
    size_t D = m->D, M = m->M;
    b->ln1_w = perpo__add_tensor(m, vision ? "vis.ln1_w" : "dec.ln1_w", D, 0);
    b->ln1_b = perpo__add_tensor(m, vision ? "vis.ln1_b" : "dec.ln1_b", D, 0);
    b->qkv_w = perpo__add_tensor(m, vision ? "vis.qkv_w" : "dec.qkv_w", 3 * D, D);
    b->qkv_b = perpo__add_tensor(m, vision ? "vis.qkv_b" : "dec.qkv_b", 3 * D, 0);
    b->attn_w = perpo__add_tensor(m, vision ? "vis.attn_w" : "dec.attn_w", D, D);
    b->attn_b = perpo__add_tensor(m, vision ? "vis.attn_b" : "dec.attn_b", D, 0);
    b->ln2_w = perpo__add_tensor(m, vision ? "vis.ln2_w" : "dec.ln2_w", D, 0);
    b->ln2_b = perpo__add_tensor(m, vision ? "vis.ln2_b" : "dec.ln2_b", D, 0);
    b->fc_w = perpo__add_tensor(m, vision ? "vis.fc_w" : "dec.fc_w", M, D);
    b->fc_b = perpo__add_tensor(m, vision ? "vis.fc_b" : "dec.fc_b", M, 0);
    b->fc2_w = perpo__add_tensor(m, vision ? "vis.fc2_w" : "dec.fc2_w", D, M);
    b->fc2_b = perpo__add_tensor(m, vision ? "vis.fc2_b" : "dec.fc2_b", D, 0);
}
/* The parameter table, in the order of the flat buffer (tests/ref/make_reference.py mirrors it). */
static void perpo__build_tensor_table(perpo_model *m) {
    size_t l;
    m->n_tensors = 0; m->n_params = 0;
    m->patch_w = perpo__add_tensor(m, "patch_w", m->D, m->PPC);
    m->patch_b = perpo__add_tensor(m, "patch_b", m->D, 0);
    m->vis_pos = perpo__add_tensor(m, "vis_pos", m->NP, m->D);
    for (l = 0; l < (size_t)m->cfg.n_vis_layers; l++) perpo__add_block(m, &m->vis[l], 1);
    m->vis_lnf_w = perpo__add_tensor(m, "vis_lnf_w", m->D, 0);
    m->vis_lnf_b = perpo__add_tensor(m, "vis_lnf_b", m->D, 0);
    m->proj1_w = perpo__add_tensor(m, "proj1_w", m->D, m->D);
    m->proj1_b = perpo__add_tensor(m, "proj1_b", m->D, 0);
    m->proj2_w = perpo__add_tensor(m, "proj2_w", m->D, m->D);
    m->proj2_b = perpo__add_tensor(m, "proj2_b", m->D, 0);
    m->wte = perpo__add_tensor(m, "wte", m->V, m->D);
    m->dec_pos = perpo__add_tensor(m, "dec_pos", m->L, m->D);
    for (l = 0; l < (size_t)m->cfg.n_dec_layers; l++) perpo__add_block(m, &m->dec[l], 0);
    m->lnf_w = perpo__add_tensor(m, "lnf_w", m->D, 0);
    m->lnf_b = perpo__add_tensor(m, "lnf_b", m->D, 0);
    m->head_w = perpo__add_tensor(m, "head_w", m->V, m->D);
}

/* Arena carving: run once with base == NULL to size, once more to hand out pointers. */
typedef struct perpo__carver { float *base; size_t used; int ok; } perpo__carver;
static float *perpo__carve(perpo__carver *c, size_t a, size_t b) {
    size_t n, start = c->used;
    if (!c->ok || !perpo__size_mul(a, b, &n) || !perpo__size_add(start, n, &c->used) ||
        !perpo__size_add(c->used, 15, &c->used)) {
        c->ok = 0;
        return NULL;
    }
    c->used &= ~(size_t)15; /* keep every buffer 64-byte aligned relative to the base */
    return c->base ? c->base + start : NULL;
}
static void perpo__carve_block(perpo__carver *c, perpo__block_acts *a, size_t N, size_t B, size_t T,
                               size_t D, size_t H, size_t M) {
    a->ln1 = perpo__carve(c, N, D); a->ln1_mean = perpo__carve(c, N, 1); a->ln1_rstd = perpo__carve(c, N, 1);
    a->qkv = perpo__carve(c, N, 3 * D);
    a->att = perpo__carve(c, B * H, T * T); /* caps of perpo_config_validate bound B*H and T*T */
    a->atty = perpo__carve(c, N, D); a->mid = perpo__carve(c, N, D);
    a->ln2 = perpo__carve(c, N, D); a->ln2_mean = perpo__carve(c, N, 1); a->ln2_rstd = perpo__carve(c, N, 1);
    a->fch = perpo__carve(c, N, M); a->fcg = perpo__carve(c, N, M);
}
static void perpo__layout_arena(perpo_model *m, perpo__carver *c) {
    size_t B = m->max_batch, D = m->D, Nv = B * m->NP, Nd = B * m->L, Nt = B * m->T, l;
    size_t LV = (size_t)m->cfg.n_vis_layers, LD = (size_t)m->cfg.n_dec_layers, R = m->g_rows;
    size_t n_max = m->V;
    if (3 * D > n_max) n_max = 3 * D;
    if (m->M > n_max) n_max = m->M;
    if (m->PPC > n_max) n_max = m->PPC;
    m->patches = perpo__carve(c, Nv, m->PPC);
    for (l = 0; l <= LV; l++) m->vis_x[l] = perpo__carve(c, Nv, D);
    for (l = 0; l < LV; l++) perpo__carve_block(c, &m->vis_acts[l], Nv, B, m->NP, D, m->H, m->M);
    m->vis_lnf = perpo__carve(c, Nv, D); m->vis_lnf_mean = perpo__carve(c, Nv, 1);
    m->vis_lnf_rstd = perpo__carve(c, Nv, 1);
    m->proj_h = perpo__carve(c, Nv, D); m->proj_g = perpo__carve(c, Nv, D); m->img_tok = perpo__carve(c, Nv, D);
    for (l = 0; l <= LD; l++) m->dec_x[l] = perpo__carve(c, Nd, D);
    for (l = 0; l < LD; l++) perpo__carve_block(c, &m->dec_acts[l], Nd, B, m->L, D, m->H, m->M);
    m->txt = perpo__carve(c, Nt, D); m->lnf = perpo__carve(c, Nt, D);
    m->lnf_mean = perpo__carve(c, Nt, 1); m->lnf_rstd = perpo__carve(c, Nt, 1);
    m->logits = perpo__carve(c, Nt, m->V); m->lse = perpo__carve(c, Nt, 1); m->dlogits = perpo__carve(c, Nt, m->V);
    /* backward scratch is sized for the decoder, the larger of the two stacks */
    m->d_res = perpo__carve(c, Nd, D); m->d_tmp = perpo__carve(c, Nd, D); m->d_atty = perpo__carve(c, Nd, D);
    m->d_qkv = perpo__carve(c, Nd, 3 * D); m->d_fc = perpo__carve(c, Nd, m->M);
    m->d_att = perpo__carve(c, B * m->H, m->L); m->d_img = perpo__carve(c, Nv, D);
    m->gemm_ws = perpo__carve(c, perpo__gemm_ws_floats(n_max), 1);
    m->kcache = perpo__carve(c, LD * B, m->L * D); m->vcache = perpo__carve(c, LD * B, m->L * D);
    m->g_x = perpo__carve(c, R, D); m->g_ln = perpo__carve(c, R, D);
    m->g_mean = perpo__carve(c, R, 1); m->g_rstd = perpo__carve(c, R, 1);
    m->g_qkv = perpo__carve(c, R, 3 * D); m->g_atty = perpo__carve(c, R, D); m->g_tmp = perpo__carve(c, R, D);
    m->g_fch = perpo__carve(c, R, m->M); m->g_scores = perpo__carve(c, R * m->H, m->L);
    m->g_logits = perpo__carve(c, B, m->V);
}

static void perpo__free_parts(perpo_model *m) {
    void *ctx = m->cfg.alloc_ctx;
    PERPO_FREE(ctx, m->tensors); PERPO_FREE(ctx, m->vis); PERPO_FREE(ctx, m->dec);
    PERPO_FREE(ctx, m->params); PERPO_FREE(ctx, m->grads); PERPO_FREE(ctx, m->adam_m); PERPO_FREE(ctx, m->adam_v);
    PERPO_FREE(ctx, m->arena); PERPO_FREE(ctx, m->vis_x); PERPO_FREE(ctx, m->dec_x);
    PERPO_FREE(ctx, m->vis_acts); PERPO_FREE(ctx, m->dec_acts);
    PERPO_FREE(ctx, m->tokens); PERPO_FREE(ctx, m->targets); PERPO_FREE(ctx, m->image_of);
    PERPO_FREE(ctx, m->sort_buf);
}

PERPODEF void perpo_model_free(perpo_model *m) {
    if (!m) return;
    perpo__free_parts(m);
    PERPO_FREE(m->cfg.alloc_ctx, m);
}

/* calloc through the user allocator, with an overflow-checked n * size. */
static void *perpo__calloc(void *ctx, size_t n, size_t size) {
    size_t bytes;
    void *p;
    if (!perpo__size_mul(n, size, &bytes)) return NULL;
    p = PERPO_MALLOC(ctx, bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}

/* GPT-2 style initialisation: matrices N(0, 0.02), the two projections that write into the
   residual stream scaled by 1/sqrt(2 * layers), LayerNorm gains 1, biases 0. */
static void perpo__init_params(perpo_model *m, uint64_t seed) {
    perpo__rng rng;
    size_t i, j;
    perpo__rng_seed(&rng, seed);
    for (i = 0; i < m->n_tensors; i++) {
        const perpo__tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        size_t n = t->rows * (t->cols ? t->cols : 1);
        int is_gain = strstr(t->name, "ln") != NULL && t->name[strlen(t->name) - 1] == 'w';
        double std = 0.02;
        if (t->cols == 0) {
            for (j = 0; j < n; j++) p[j] = is_gain ? 1.0f : 0.0f;
            continue;
        }
        if (strstr(t->name, "attn_w") || strstr(t->name, "fc2_w")) {
            int layers = t->name[0] == 'v' ? m->cfg.n_vis_layers : m->cfg.n_dec_layers;
            std /= sqrt(2.0 * (layers > 0 ? layers : 1));
        }
        for (j = 0; j < n; j++) p[j] = (float)(std * perpo__rng_normal(&rng));
    }
}

PERPODEF perpo_status perpo_model_create(perpo_model **out, const perpo_config *cfg, uint64_t seed) {
    perpo_model *m;
    perpo__carver c;
    void *ctx;
    size_t LV, LD, n_tensors;
    perpo_status st;
    if (!out) return PERPO_ERR_ARG;
    *out = NULL;
    if ((st = perpo_config_validate(cfg)) != PERPO_OK) return st;
    ctx = cfg->alloc_ctx;
    m = (perpo_model *)perpo__calloc(ctx, 1, sizeof *m);
    if (!m) return PERPO_ERR_NOMEM;
    m->cfg = *cfg;
    m->NP = (size_t)(cfg->image_h / cfg->patch) * (size_t)(cfg->image_w / cfg->patch);
    m->T = (size_t)cfg->max_text; m->L = m->NP + m->T; m->D = (size_t)cfg->d_model;
    m->H = (size_t)cfg->n_heads; m->M = (size_t)cfg->mlp_mult * m->D; m->V = (size_t)cfg->vocab;
    m->PPC = (size_t)cfg->patch * (size_t)cfg->patch * (size_t)cfg->channels;
    m->max_batch = (size_t)cfg->max_batch;
    m->g_rows = m->max_batch > m->L ? m->max_batch : m->L;
    LV = (size_t)cfg->n_vis_layers; LD = (size_t)cfg->n_dec_layers;
    n_tensors = 3 + 12 * LV + 2 + 4 + 2 + 12 * LD + 2 + 1;
    m->tensors = (perpo__tensor *)perpo__calloc(ctx, n_tensors, sizeof *m->tensors);
    m->vis = (perpo__block *)perpo__calloc(ctx, LV + 1, sizeof *m->vis);
    m->dec = (perpo__block *)perpo__calloc(ctx, LD, sizeof *m->dec);
    m->vis_x = (float **)perpo__calloc(ctx, LV + 1, sizeof *m->vis_x);
    m->dec_x = (float **)perpo__calloc(ctx, LD + 1, sizeof *m->dec_x);
    m->vis_acts = (perpo__block_acts *)perpo__calloc(ctx, LV + 1, sizeof *m->vis_acts);
    m->dec_acts = (perpo__block_acts *)perpo__calloc(ctx, LD, sizeof *m->dec_acts);
    m->sort_buf = (perpo__token_score *)perpo__calloc(ctx, m->V, sizeof *m->sort_buf);
    m->tokens = (int *)perpo__calloc(ctx, m->max_batch * m->T, sizeof(int));
    m->targets = (int *)perpo__calloc(ctx, m->max_batch * m->T, sizeof(int));
    m->image_of = (size_t *)perpo__calloc(ctx, m->max_batch, sizeof(size_t));
    if (!m->tensors || !m->vis || !m->dec || !m->vis_x || !m->dec_x || !m->vis_acts || !m->dec_acts ||
        !m->sort_buf || !m->tokens || !m->targets || !m->image_of) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    perpo__build_tensor_table(m);
    PERPO_ASSERT(m->n_tensors == n_tensors);
    m->params = (float *)perpo__calloc(ctx, m->n_params, sizeof(float));
    m->grads = (float *)perpo__calloc(ctx, m->n_params, sizeof(float));
    m->adam_m = (float *)perpo__calloc(ctx, m->n_params, sizeof(float));
    m->adam_v = (float *)perpo__calloc(ctx, m->n_params, sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    c.base = NULL; c.used = 0; c.ok = 1;
    perpo__layout_arena(m, &c);
    if (!c.ok) {
        perpo_model_free(m);
        return PERPO_ERR_OVERFLOW;
    }
    m->arena_floats = c.used;
    m->arena = (float *)perpo__calloc(ctx, c.used + 16, sizeof(float));
    if (!m->arena) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    c.base = m->arena; c.used = 0; c.ok = 1;
    perpo__layout_arena(m, &c);
    perpo__init_params(m, seed);
    *out = m;
    return PERPO_OK;
}

PERPODEF const perpo_config *perpo_model_config(const perpo_model *m) { return m ? &m->cfg : NULL; }
PERPODEF size_t perpo_model_num_params(const perpo_model *m) { return m ? m->n_params : 0; }
PERPODEF float *perpo_model_params(perpo_model *m) { return m ? m->params : NULL; }
PERPODEF float *perpo_model_grads(perpo_model *m) { return m ? m->grads : NULL; }
PERPODEF size_t perpo_model_num_tensors(const perpo_model *m) { return m ? m->n_tensors : 0; }
PERPODEF perpo_status perpo_model_tensor(const perpo_model *m, size_t i, const char **name,
                                         size_t *offset, size_t *rows, size_t *cols) {
    if (!m || i >= m->n_tensors) return PERPO_ERR_ARG;
    if (name) *name = m->tensors[i].name;
    if (offset) *offset = m->tensors[i].offset;
    if (rows) *rows = m->tensors[i].rows;
    if (cols) *cols = m->tensors[i].cols;
    return PERPO_OK;
}
PERPODEF void perpo_zero_grad(perpo_model *m) {
    if (m) memset(m->grads, 0, m->n_params * sizeof(float));
}
PERPODEF const float *perpo_last_logits(const perpo_model *m) {
    return m && m->have_forward ? m->logits : NULL;
}

/* ---- Forward and backward of one pre-LN transformer block --------------------------------- *
 * out = mid + MLP(LN2(mid)),  mid = x + Attn(LN1(x)).  x, out: (B*T, D). */
static void perpo__block_forward(perpo_model *m, const perpo__block *p, perpo__block_acts *a,
                                 const float *x, float *out, size_t B, size_t T, int causal) {
    const float *P = m->params;
    size_t N = B * T, D = m->D, M = m->M;
    perpo__layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, P + p->ln1_w, P + p->ln1_b, N, D);
    perpo__linear_forward(a->qkv, a->ln1, P + p->qkv_w, P + p->qkv_b, N, D, 3 * D, m->gemm_ws);
    perpo__attention_forward(a->atty, a->att, a->qkv, B, T, D, m->H, causal);
    perpo__linear_forward(a->mid, a->atty, P + p->attn_w, P + p->attn_b, N, D, D, m->gemm_ws);
    perpo__add_inplace(a->mid, x, N * D);
    perpo__layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, P + p->ln2_w, P + p->ln2_b, N, D);
    perpo__linear_forward(a->fch, a->ln2, P + p->fc_w, P + p->fc_b, N, D, M, m->gemm_ws);
    perpo__gelu_forward(a->fcg, a->fch, N * M);
    perpo__linear_forward(out, a->fcg, P + p->fc2_w, P + p->fc2_b, N, M, D, m->gemm_ws);
    perpo__add_inplace(out, a->mid, N * D);
}
/* dres: on entry dL/d(out), on return dL/dx. Parameter gradients are added into m->grads. */
static void perpo__block_backward(perpo_model *m, const perpo__block *p, const perpo__block_acts *a,
                                  const float *x, float *dres, size_t B, size_t T, int causal) {
    const float *P = m->params;
    float *G = m->grads;
    size_t N = B * T, D = m->D, M = m->M;
    /* MLP branch */
    memset(m->d_fc, 0, N * M * sizeof(float));
    perpo__linear_backward(m->d_fc, G + p->fc2_w, G + p->fc2_b, dres, a->fcg, P + p->fc2_w, N, M, D, m->gemm_ws);
    perpo__gelu_backward(m->d_fc, a->fch, m->d_fc, N * M);
    memset(m->d_tmp, 0, N * D * sizeof(float));
    perpo__linear_backward(m->d_tmp, G + p->fc_w, G + p->fc_b, m->d_fc, a->ln2, P + p->fc_w, N, D, M, m->gemm_ws);
    perpo__layernorm_backward(dres, G + p->ln2_w, G + p->ln2_b, m->d_tmp, a->mid, P + p->ln2_w,
                              a->ln2_mean, a->ln2_rstd, N, D); /* dres is now dL/dmid */
    /* attention branch */
    memset(m->d_atty, 0, N * D * sizeof(float));
    perpo__linear_backward(m->d_atty, G + p->attn_w, G + p->attn_b, dres, a->atty, P + p->attn_w, N, D, D, m->gemm_ws);
    memset(m->d_qkv, 0, N * 3 * D * sizeof(float));
    perpo__attention_backward(m->d_qkv, m->d_atty, a->att, a->qkv, B, T, D, m->H, causal, m->d_att);
    memset(m->d_tmp, 0, N * D * sizeof(float));
    perpo__linear_backward(m->d_tmp, G + p->qkv_w, G + p->qkv_b, m->d_qkv, a->ln1, P + p->qkv_w, N, D, 3 * D, m->gemm_ws);
    perpo__layernorm_backward(dres, G + p->ln1_w, G + p->ln1_b, m->d_tmp, x, P + p->ln1_w,
                              a->ln1_mean, a->ln1_rstd, N, D);
}

/* Vision encoder and projector: n_img images -> img_tok (n_img*NP, D). */
static void perpo__encode_images(perpo_model *m, const float *const *images, size_t n_img) {
    const float *P = m->params;
    size_t D = m->D, NP = m->NP, Nv = n_img * NP, i, r, l, LV = (size_t)m->cfg.n_vis_layers;
    for (i = 0; i < n_img; i++)
        perpo__patchify(m->patches + i * NP * m->PPC, images[i], (size_t)m->cfg.image_h,
                        (size_t)m->cfg.image_w, (size_t)m->cfg.channels, (size_t)m->cfg.patch);
    perpo__linear_forward(m->vis_x[0], m->patches, P + m->patch_w, P + m->patch_b, Nv, m->PPC, D, m->gemm_ws);
    for (i = 0; i < n_img; i++)
        for (r = 0; r < NP; r++) perpo__add_inplace(m->vis_x[0] + (i * NP + r) * D, P + m->vis_pos + r * D, D);
    for (l = 0; l < LV; l++) perpo__block_forward(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->vis_x[l + 1], n_img, NP, 0);
    perpo__layernorm_forward(m->vis_lnf, m->vis_lnf_mean, m->vis_lnf_rstd, m->vis_x[LV],
                             P + m->vis_lnf_w, P + m->vis_lnf_b, Nv, D);
    perpo__linear_forward(m->proj_h, m->vis_lnf, P + m->proj1_w, P + m->proj1_b, Nv, D, D, m->gemm_ws);
    perpo__gelu_forward(m->proj_g, m->proj_h, Nv * D);
    perpo__linear_forward(m->img_tok, m->proj_g, P + m->proj2_w, P + m->proj2_b, Nv, D, D, m->gemm_ws);
}

/* Decoder input row: image token or token embedding, plus the learned position. */
static void perpo__embed_image_row(const perpo_model *m, float *dst, size_t img, size_t r) {
    size_t i, D = m->D;
    const float *a = m->img_tok + (img * m->NP + r) * D, *pos = m->params + m->dec_pos + r * D;
    for (i = 0; i < D; i++) dst[i] = a[i] + pos[i];
}
static void perpo__embed_token_row(const perpo_model *m, float *dst, int tok, size_t t) {
    size_t i, D = m->D;
    const float *e = m->params + m->wte + (size_t)tok * D, *pos = m->params + m->dec_pos + (m->NP + t) * D;
    for (i = 0; i < D; i++) dst[i] = e[i] + pos[i];
}

static perpo_status perpo__check_batch(const perpo_model *m, const perpo_batch *b) {
    size_t i, n;
    if (!b || b->n_seq < 1 || b->n_seq > m->max_batch || b->n_img < 1 || b->n_img > m->max_batch ||
        !b->images || !b->tokens || !b->targets)
        return PERPO_ERR_ARG;
    if (!b->image_of && b->n_img != b->n_seq) return PERPO_ERR_ARG;
    for (i = 0; i < b->n_img; i++) if (!b->images[i]) return PERPO_ERR_ARG;
    for (i = 0; i < b->n_seq; i++) if (b->image_of && b->image_of[i] >= b->n_img) return PERPO_ERR_ARG;
    n = b->n_seq * m->T;
    for (i = 0; i < n; i++)
        if (b->tokens[i] < 0 || (size_t)b->tokens[i] >= m->V || b->targets[i] < -1 || b->targets[i] >= (int)m->V)
            return PERPO_ERR_ARG;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_forward(perpo_model *m, const perpo_batch *batch, float *logp, float *mean_ce) {
    size_t B, T, D, L, NP, V, b, t, r, l, LD;
    double total = 0.0;
    size_t count = 0;
    int finite = 1;
    perpo_status st;
    if (!m) return PERPO_ERR_ARG;
    if ((st = perpo__check_batch(m, batch)) != PERPO_OK) return st;
    B = batch->n_seq; T = m->T; D = m->D; L = m->L; NP = m->NP; V = m->V; LD = (size_t)m->cfg.n_dec_layers;
    m->have_forward = 0;
    m->n_seq = B; m->n_img = batch->n_img;
    memcpy(m->tokens, batch->tokens, B * T * sizeof(int));
    memcpy(m->targets, batch->targets, B * T * sizeof(int));
    for (b = 0; b < B; b++) m->image_of[b] = batch->image_of ? batch->image_of[b] : b;
    for (b = 0; b < batch->n_img; b++)
        if (!perpo__all_finite(batch->images[b], m->PPC * NP)) return PERPO_ERR_NONFINITE;

    perpo__encode_images(m, batch->images, batch->n_img);
    for (b = 0; b < B; b++) {
        float *x = m->dec_x[0] + b * L * D;
        for (r = 0; r < NP; r++) perpo__embed_image_row(m, x + r * D, m->image_of[b], r);
        for (t = 0; t < T; t++) perpo__embed_token_row(m, x + (NP + t) * D, m->tokens[b * T + t], t);
    }
    for (l = 0; l < LD; l++) perpo__block_forward(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->dec_x[l + 1], B, L, 1);
    for (b = 0; b < B; b++) memcpy(m->txt + b * T * D, m->dec_x[LD] + (b * L + NP) * D, T * D * sizeof(float));
    perpo__layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, m->txt, m->params + m->lnf_w,
                             m->params + m->lnf_b, B * T, D);
    perpo__linear_forward(m->logits, m->lnf, m->params + m->head_w, NULL, B * T, D, V, m->gemm_ws);
    for (b = 0; b < B; b++) {
        double lp = 0.0;
        for (t = 0; t < T; t++) {
            const float *z = m->logits + (b * T + t) * V;
            int tgt = m->targets[b * T + t];
            m->lse[b * T + t] = perpo__logsumexp(z, V);
            if (tgt >= 0) {
                lp += (double)z[tgt] - (double)m->lse[b * T + t];
                count++;
            }
        }
        if (logp) logp[b] = (float)lp;
        if (!isfinite(lp)) finite = 0;
        total += lp;
    }
    if (mean_ce) *mean_ce = count ? (float)(-total / (double)count) : 0.0f;
    m->have_forward = 1;
    return finite ? PERPO_OK : PERPO_ERR_NONFINITE;
}

PERPODEF perpo_status perpo_backward(perpo_model *m, const float *dlogp) {
    size_t B, T, D, L, NP, V, Nv, b, t, r, l, v, LD, LV;
    float *G;
    const float *P;
    if (!m || !dlogp) return PERPO_ERR_ARG;
    if (!m->have_forward) return PERPO_ERR_ARG;
    B = m->n_seq; T = m->T; D = m->D; L = m->L; NP = m->NP; V = m->V; Nv = m->n_img * NP;
    LD = (size_t)m->cfg.n_dec_layers; LV = (size_t)m->cfg.n_vis_layers;
    G = m->grads; P = m->params;
    if (!perpo__all_finite(dlogp, B)) return PERPO_ERR_NONFINITE;
    /* d logp_b / d logits at a counted position = onehot(target) - softmax */
    for (b = 0; b < B; b++)
        for (t = 0; t < T; t++) {
            size_t row = b * T + t;
            const float *z = m->logits + row * V;
            float *dz = m->dlogits + row * V, g = dlogp[b], lse = m->lse[row];
            int tgt = m->targets[row];
            if (tgt < 0) { memset(dz, 0, V * sizeof(float)); continue; }
            for (v = 0; v < V; v++) dz[v] = -g * expf(z[v] - lse);
            dz[tgt] += g;
        }
    /* head and final LayerNorm (text rows only) */
    memset(m->d_atty, 0, B * T * D * sizeof(float));
    perpo__linear_backward(m->d_atty, G + m->head_w, NULL, m->dlogits, m->lnf, P + m->head_w, B * T, D, V, m->gemm_ws);
    memset(m->d_tmp, 0, B * T * D * sizeof(float));
    perpo__layernorm_backward(m->d_tmp, G + m->lnf_w, G + m->lnf_b, m->d_atty, m->txt, P + m->lnf_w,
                              m->lnf_mean, m->lnf_rstd, B * T, D);
    memset(m->d_res, 0, B * L * D * sizeof(float));
    for (b = 0; b < B; b++) memcpy(m->d_res + (b * L + NP) * D, m->d_tmp + b * T * D, T * D * sizeof(float));
    /* decoder blocks, last to first */
    for (l = LD; l-- > 0;) perpo__block_backward(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->d_res, B, L, 1);
    /* embeddings: positions, token table, and the image tokens each sequence read */
    memset(m->d_img, 0, Nv * D * sizeof(float));
    for (b = 0; b < B; b++) {
        const float *d = m->d_res + b * L * D;
        for (r = 0; r < NP; r++) {
            perpo__add_inplace(m->d_img + (m->image_of[b] * NP + r) * D, d + r * D, D);
            perpo__add_inplace(G + m->dec_pos + r * D, d + r * D, D);
        }
        for (t = 0; t < T; t++) {
            perpo__add_inplace(G + m->wte + (size_t)m->tokens[b * T + t] * D, d + (NP + t) * D, D);
            perpo__add_inplace(G + m->dec_pos + (NP + t) * D, d + (NP + t) * D, D);
        }
    }
    /* projector: img_tok = proj2(GELU(proj1(LN(x)))) */
    memset(m->d_atty, 0, Nv * D * sizeof(float));
    perpo__linear_backward(m->d_atty, G + m->proj2_w, G + m->proj2_b, m->d_img, m->proj_g, P + m->proj2_w, Nv, D, D, m->gemm_ws);
    perpo__gelu_backward(m->d_atty, m->proj_h, m->d_atty, Nv * D);
    memset(m->d_tmp, 0, Nv * D * sizeof(float));
    perpo__linear_backward(m->d_tmp, G + m->proj1_w, G + m->proj1_b, m->d_atty, m->vis_lnf, P + m->proj1_w, Nv, D, D, m->gemm_ws);
    memset(m->d_res, 0, Nv * D * sizeof(float));
    perpo__layernorm_backward(m->d_res, G + m->vis_lnf_w, G + m->vis_lnf_b, m->d_tmp, m->vis_x[LV],
                              P + m->vis_lnf_w, m->vis_lnf_mean, m->vis_lnf_rstd, Nv, D);
    /* vision blocks, then the patch embedding (its input is data: no input gradient) */
    for (l = LV; l-- > 0;) perpo__block_backward(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->d_res, m->n_img, NP, 0);
    for (b = 0; b < m->n_img; b++)
        for (r = 0; r < NP; r++) perpo__add_inplace(G + m->vis_pos + r * D, m->d_res + (b * NP + r) * D, D);
    perpo__linear_backward(NULL, G + m->patch_w, G + m->patch_b, m->d_res, m->patches, P + m->patch_w, Nv, m->PPC, D, m->gemm_ws);
    return PERPO_OK;
}

PERPODEF perpo_status perpo_text_encode(const perpo_config *cfg, const char *prompt, size_t prompt_len,
                                        const char *response, size_t response_len,
                                        int *tokens, int *targets, size_t *n_targets) {
    size_t T, i, n, pos = 0;
    if (!cfg || !tokens || !targets || (prompt_len && !prompt) || (response_len && !response)) return PERPO_ERR_ARG;
    if (cfg->max_text < 4) return PERPO_ERR_ARG;
    T = (size_t)cfg->max_text;
    if (prompt_len > T || response_len > T || prompt_len + response_len + 3 > T) return PERPO_ERR_ARG;
    tokens[pos++] = PERPO_TOK_BOS;
    for (i = 0; i < prompt_len; i++) tokens[pos++] = (unsigned char)prompt[i];
    tokens[pos++] = PERPO_TOK_SEP;
    for (i = 0; i < response_len; i++) tokens[pos++] = (unsigned char)response[i];
    tokens[pos++] = PERPO_TOK_EOS;
    n = pos;
    for (; pos < T; pos++) tokens[pos] = PERPO_TOK_PAD;
    /* position t predicts token t+1: targets run from SEP's position to the one before EOS */
    for (i = 0; i < T; i++) targets[i] = -1;
    for (i = prompt_len + 1; i + 1 < n; i++) targets[i] = tokens[i + 1];
    if (n_targets) *n_targets = response_len + 1;
    return PERPO_OK;
}

/* ==========================================================================================
   4. Sampling: greedy, temperature, top-k, top-p, with a KV cache. The image is encoded once
      per request and sequences that share an image and prompt share one prefill.
   ========================================================================================== */

PERPODEF perpo_sample_config perpo_sample_default(void) {
    perpo_sample_config s;
    memset(&s, 0, sizeof s);
    s.temperature = 0.0f; s.top_k = 0; s.top_p = 1.0f; s.max_new_tokens = 1 << 20; s.seed = 1;
    return s;
}

/* Runs the decoder with the KV cache over n sequences x Lr new rows each. x (n*Lr, D) holds the
   input rows (embedding + position) and is overwritten. Sequence s writes K/V at positions
   pos[s] .. pos[s]+Lr-1 of cache slot slot[s] and attends to everything before. The logits of
   each sequence's last row go to logits (n, V). Same kernels, same order of operations as
   the training forward, so the two agree bit for bit. */
static void perpo__decode_cached(perpo_model *m, size_t n, size_t Lr, const size_t *slot,
                                 const size_t *pos, float *x, float *logits) {
    const float *P = m->params;
    size_t D = m->D, H = m->H, hd = D / H, M = m->M, L = m->L, R = n * Lr, l, i, LD = (size_t)m->cfg.n_dec_layers;
    float scale = 1.0f / sqrtf((float)hd);
    for (l = 0; l < LD; l++) {
        const perpo__block *p = &m->dec[l];
        float *K = m->kcache + l * m->max_batch * L * D, *Vc = m->vcache + l * m->max_batch * L * D;
        long rr;
        perpo__layernorm_forward(m->g_ln, m->g_mean, m->g_rstd, x, P + p->ln1_w, P + p->ln1_b, R, D);
        perpo__linear_forward(m->g_qkv, m->g_ln, P + p->qkv_w, P + p->qkv_b, R, D, 3 * D, m->gemm_ws);
        for (i = 0; i < R; i++) {
            size_t s = i / Lr, at = (slot[s] * L + pos[s] + i % Lr) * D;
            memcpy(K + at, m->g_qkv + i * 3 * D + D, D * sizeof(float));
            memcpy(Vc + at, m->g_qkv + i * 3 * D + 2 * D, D * sizeof(float));
        }
        PERPO__OMP(parallel for schedule(static))
        for (rr = 0; rr < (long)R; rr++) {
            size_t s = (size_t)rr / Lr, n_keys = pos[s] + (size_t)rr % Lr + 1, h, t2, j;
            const float *Ks = K + slot[s] * L * D, *Vs = Vc + slot[s] * L * D;
            float *sc = m->g_scores + (size_t)rr * L;
            for (h = 0; h < H; h++) {
                const float *q = m->g_qkv + (size_t)rr * 3 * D + h * hd;
                float *o = m->g_atty + (size_t)rr * D + h * hd, mx = -INFINITY, sum = 0.0f;
                for (t2 = 0; t2 < n_keys; t2++) {
                    const float *k = Ks + t2 * D + h * hd;
                    float d = 0.0f;
                    for (j = 0; j < hd; j++) d += q[j] * k[j];
                    sc[t2] = d * scale;
                    if (sc[t2] > mx) mx = sc[t2];
                }
                for (t2 = 0; t2 < n_keys; t2++) { sc[t2] = expf(sc[t2] - mx); sum += sc[t2]; }
                for (t2 = 0; t2 < n_keys; t2++) sc[t2] /= sum;
                for (j = 0; j < hd; j++) o[j] = 0.0f;
                for (t2 = 0; t2 < n_keys; t2++) {
                    const float *v = Vs + t2 * D + h * hd;
                    for (j = 0; j < hd; j++) o[j] += sc[t2] * v[j];
                }
            }
        }
        perpo__linear_forward(m->g_tmp, m->g_atty, P + p->attn_w, P + p->attn_b, R, D, D, m->gemm_ws);
        perpo__add_inplace(x, m->g_tmp, R * D);
        perpo__layernorm_forward(m->g_ln, m->g_mean, m->g_rstd, x, P + p->ln2_w, P + p->ln2_b, R, D);
        perpo__linear_forward(m->g_fch, m->g_ln, P + p->fc_w, P + p->fc_b, R, D, M, m->gemm_ws);
        perpo__gelu_forward(m->g_fch, m->g_fch, R * M);
        perpo__linear_forward(m->g_tmp, m->g_fch, P + p->fc2_w, P + p->fc2_b, R, M, D, m->gemm_ws);
        perpo__add_inplace(x, m->g_tmp, R * D);
    }
    for (i = 0; i < n; i++) memcpy(m->g_tmp + i * D, x + (i * Lr + Lr - 1) * D, D * sizeof(float));
    perpo__layernorm_forward(m->g_ln, m->g_mean, m->g_rstd, m->g_tmp, P + m->lnf_w, P + m->lnf_b, n, D);
    perpo__linear_forward(logits, m->g_ln, P + m->head_w, NULL, n, D, m->V, m->gemm_ws);
}

static int perpo__score_desc(const void *a, const void *b) {
    const perpo__token_score *x = (const perpo__token_score *)a, *y = (const perpo__token_score *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->token - y->token; /* ties: lower token first, so sorting is deterministic */
}

/* Next token from one row of logits. Only bytes and EOS can be produced. */
static int perpo__sample_token(perpo_model *m, const float *logits, const perpo_sample_config *sc, perpo__rng *rng) {
    perpo__token_score *cand = m->sort_buf;
    size_t n = 0, keep, i;
    double total = 0.0, u, acc = 0.0;
    int tok;
    for (tok = 0; tok < (int)m->V; tok++) {
        if (tok > 255 && tok != PERPO_TOK_EOS) continue;
        cand[n].score = logits[tok]; cand[n].token = tok; n++;
    }
    if (sc->temperature <= 0.0f) { /* greedy: first maximum */
        size_t best = 0;
        for (i = 1; i < n; i++) if (cand[i].score > cand[best].score) best = i;
        return cand[best].token;
    }
    qsort(cand, n, sizeof *cand, perpo__score_desc);
    keep = (sc->top_k > 0 && (size_t)sc->top_k < n) ? (size_t)sc->top_k : n;
    for (i = 0; i < keep; i++) { /* softmax over the kept tokens, at the temperature */
        cand[i].score = (float)exp((double)(cand[i].score - cand[0].score) / (double)sc->temperature);
        total += cand[i].score;
    }
    if (sc->top_p > 0.0f && sc->top_p < 1.0f) { /* nucleus: smallest prefix with mass >= top_p */
        double mass = 0.0;
        for (i = 0; i < keep; i++) {
            mass += cand[i].score;
            if (mass >= sc->top_p * total) { keep = i + 1; break; }
        }
        total = 0.0;
        for (i = 0; i < keep; i++) total += cand[i].score;
    }
    u = perpo__rng_uniform(rng) * total;
    for (i = 0; i < keep; i++) {
        acc += cand[i].score;
        if (u < acc) return cand[i].token;
    }
    return cand[keep - 1].token;
}

static perpo_status perpo__check_request(const perpo_model *m, const perpo_gen_request *req,
                                         const perpo_sample_config *sc, const char *out, size_t out_cap) {
    size_t i;
    if (!req || !sc || !out || out_cap < 1 || req->n_seq < 1 || req->n_seq > m->max_batch ||
        req->n_img < 1 || req->n_img > m->max_batch || !req->images || !req->prompts)
        return PERPO_ERR_ARG;
    if (!req->image_of && req->n_img != req->n_seq) return PERPO_ERR_ARG;
    if (!(sc->temperature >= 0.0f) || !(sc->top_p >= 0.0f) || sc->top_k < 0 || sc->max_new_tokens < 0)
        return PERPO_ERR_ARG;
    for (i = 0; i < req->n_img; i++) {
        if (!req->images[i]) return PERPO_ERR_ARG;
        if (!perpo__all_finite(req->images[i], m->NP * m->PPC)) return PERPO_ERR_NONFINITE;
    }
    for (i = 0; i < req->n_seq; i++) {
        if (!req->prompts[i] || (req->image_of && req->image_of[i] >= req->n_img)) return PERPO_ERR_ARG;
        if (strlen(req->prompts[i]) + 4 > m->T) return PERPO_ERR_ARG; /* BOS SEP, >= 1 byte, EOS */
    }
    return PERPO_OK;
}

/* Per-sequence state of one perpo_generate call. */
typedef struct perpo__gen_seq {
    size_t prompt_len, len, cap; /* response bytes so far and the most allowed */
    int done;
} perpo__gen_seq;

/* Reference path without the cache: re-runs perpo_forward over the whole text every token. */
static perpo_status perpo__generate_nocache(perpo_model *m, const perpo_gen_request *req,
                                            const perpo_sample_config *sc, perpo__gen_seq *seq,
                                            char *out, size_t out_cap) {
    size_t n = req->n_seq, T = m->T, s;
    int *tok, *tgt;
    perpo__rng rng;
    perpo_batch b;
    perpo_status st = PERPO_OK;
    tok = (int *)perpo__calloc(m->cfg.alloc_ctx, 2 * n * T, sizeof(int));
    if (!tok) return PERPO_ERR_NOMEM;
    tgt = tok + n * T;
    for (s = 0; s < n; s++) {
        perpo_text_encode(&m->cfg, req->prompts[s], seq[s].prompt_len, "", 0, tok + s * T, tgt + s * T, NULL);
        tok[s * T + seq[s].prompt_len + 2] = PERPO_TOK_PAD; /* drop the EOS: the text ends after SEP */
    }
    for (s = 0; s < n * T; s++) tgt[s] = -1;
    perpo__rng_seed(&rng, sc->seed);
    b.n_seq = n; b.n_img = req->n_img; b.images = req->images; b.image_of = req->image_of;
    b.tokens = tok; b.targets = tgt;
    for (;;) {
        int active = 0;
        for (s = 0; s < n; s++) if (!seq[s].done) active = 1;
        if (!active) break;
        st = perpo_forward(m, &b, NULL, NULL);
        if (st != PERPO_OK && st != PERPO_ERR_NONFINITE) break;
        st = PERPO_OK;
        for (s = 0; s < n; s++) {
            size_t at = seq[s].prompt_len + 1 + seq[s].len; /* text position that predicts next */
            int next;
            if (seq[s].done) continue;
            next = perpo__sample_token(m, m->logits + (s * T + at) * m->V, sc, &rng);
            if (next == PERPO_TOK_EOS) { seq[s].done = 1; continue; }
            tok[s * T + at + 1] = next;
            if (seq[s].len + 1 < out_cap) out[s * out_cap + seq[s].len] = (char)next;
            if (++seq[s].len >= seq[s].cap) seq[s].done = 1;
        }
    }
    m->have_forward = 0;
    PERPO_FREE(m->cfg.alloc_ctx, tok);
    return st;
}

/* Cached path: encode images once, prefill each distinct (image, prompt), then decode all
   live sequences together, one token per step. */
static void perpo__generate_cached(perpo_model *m, const perpo_gen_request *req,
                                   const perpo_sample_config *sc, perpo__gen_seq *seq,
                                   size_t *slot, size_t *pos, char *out, size_t out_cap) {
    size_t n = req->n_seq, D = m->D, NP = m->NP, V = m->V, s, r, i, k, n_live;
    size_t LD = (size_t)m->cfg.n_dec_layers, stride = m->max_batch * m->L * D, zero = 0;
    perpo__rng rng;
    m->have_forward = 0; /* the vision encoder reuses the training activations */
    perpo__encode_images(m, req->images, req->n_img);
    for (s = 0; s < n; s++) {
        size_t img = req->image_of ? req->image_of[s] : s, pl = seq[s].prompt_len, Lp = NP + pl + 2;
        size_t prev = s > 0 ? (req->image_of ? req->image_of[s - 1] : s - 1) : (size_t)-1;
        if (prev == img && strcmp(req->prompts[s], req->prompts[s - 1]) == 0) {
            size_t l; /* same image and prompt as the previous sequence: copy its cache rows */
            for (l = 0; l < LD; l++) {
                memcpy(m->kcache + l * stride + s * m->L * D, m->kcache + l * stride + (s - 1) * m->L * D, Lp * D * sizeof(float));
                memcpy(m->vcache + l * stride + s * m->L * D, m->vcache + l * stride + (s - 1) * m->L * D, Lp * D * sizeof(float));
            }
            memcpy(m->g_logits + s * V, m->g_logits + (s - 1) * V, V * sizeof(float));
            continue;
        }
        for (r = 0; r < NP; r++) perpo__embed_image_row(m, m->g_x + r * D, img, r);
        perpo__embed_token_row(m, m->g_x + NP * D, PERPO_TOK_BOS, 0);
        for (i = 0; i < pl; i++) perpo__embed_token_row(m, m->g_x + (NP + 1 + i) * D, (unsigned char)req->prompts[s][i], 1 + i);
        perpo__embed_token_row(m, m->g_x + (NP + 1 + pl) * D, PERPO_TOK_SEP, 1 + pl);
        perpo__decode_cached(m, 1, Lp, &s, &zero, m->g_x, m->g_logits + s * V);
    }
    perpo__rng_seed(&rng, sc->seed);
    for (;;) {
        /* sample for every live sequence (in order, so the RNG stream matches the no-cache path) */
        n_live = 0;
        for (s = 0; s < n; s++) {
            int next;
            if (seq[s].done) continue;
            next = perpo__sample_token(m, m->g_logits + s * V, sc, &rng);
            if (next == PERPO_TOK_EOS) { seq[s].done = 1; continue; }
            if (seq[s].len + 1 < out_cap) out[s * out_cap + seq[s].len] = (char)next;
            if (++seq[s].len >= seq[s].cap) { seq[s].done = 1; continue; }
            slot[n_live] = s;
            pos[n_live] = NP + seq[s].prompt_len + 1 + seq[s].len; /* where the new token sits */
            perpo__embed_token_row(m, m->g_x + n_live * D, next, pos[n_live] - NP);
            n_live++;
        }
        if (!n_live) break;
        perpo__decode_cached(m, n_live, 1, slot, pos, m->g_x, m->g_logits);
        /* row k belongs to sequence slot[k] >= k: move rows into place, last first */
        for (k = n_live; k-- > 0;)
            if (slot[k] != k) memcpy(m->g_logits + slot[k] * V, m->g_logits + k * V, V * sizeof(float));
    }
}

PERPODEF perpo_status perpo_generate(perpo_model *m, const perpo_gen_request *req,
                                     const perpo_sample_config *sc, char *out, size_t out_cap,
                                     size_t *out_len) {
    size_t n, s, *slot, *pos;
    perpo__gen_seq *seq;
    perpo_status st = PERPO_OK;
    if (!m) return PERPO_ERR_ARG;
    if ((st = perpo__check_request(m, req, sc, out, out_cap)) != PERPO_OK) return st;
    n = req->n_seq;
    seq = (perpo__gen_seq *)perpo__calloc(m->cfg.alloc_ctx, n, sizeof *seq + 2 * sizeof(size_t));
    if (!seq) return PERPO_ERR_NOMEM;
    slot = (size_t *)(seq + n);
    pos = slot + n;
    memset(out, 0, n * out_cap);
    for (s = 0; s < n; s++) {
        size_t room;
        seq[s].prompt_len = strlen(req->prompts[s]);
        room = m->T - seq[s].prompt_len - 3; /* BOS prompt SEP response EOS fits in max_text */
        seq[s].cap = (size_t)sc->max_new_tokens < room ? (size_t)sc->max_new_tokens : room;
        seq[s].done = seq[s].cap == 0;
    }
    if (sc->no_cache) st = perpo__generate_nocache(m, req, sc, seq, out, out_cap);
    else perpo__generate_cached(m, req, sc, seq, slot, pos, out, out_cap);
    if (out_len) for (s = 0; s < n; s++) out_len[s] = seq[s].len < out_cap ? seq[s].len : out_cap - 1;
    PERPO_FREE(m->cfg.alloc_ctx, seq);
    return st;
}

/* ==========================================================================================
   5. Optimizer (AdamW, cosine schedule, clipping) and the SFT trainer
   ========================================================================================== */

PERPODEF perpo_optim_config perpo_optim_default(void) {
    perpo_optim_config o;
    o.lr = 1e-3f; o.min_lr = 1e-4f; o.warmup_steps = 20; o.total_steps = 1000;
    o.beta1 = 0.9f; o.beta2 = 0.95f; o.eps = 1e-8f; o.weight_decay = 0.1f; o.clip_norm = 1.0f;
    return o;
}

PERPODEF float perpo_lr_at(const perpo_optim_config *oc, int step) {
    double progress;
    if (!oc) return 0.0f;
    if (oc->warmup_steps > 0 && step < oc->warmup_steps)
        return (float)((double)oc->lr * (double)(step + 1) / (double)oc->warmup_steps);
    progress = (double)(step - oc->warmup_steps) /
               (double)(oc->total_steps - oc->warmup_steps > 1 ? oc->total_steps - oc->warmup_steps : 1);
    if (progress > 1.0) progress = 1.0;
    if (progress < 0.0) progress = 0.0;
    return (float)(oc->min_lr + 0.5 * (oc->lr - oc->min_lr) * (1.0 + cos(3.141592653589793 * progress)));
}

PERPODEF perpo_status perpo_optimizer_step(perpo_model *m, const perpo_optim_config *oc,
                                           float grad_scale, float *grad_norm) {
    double sumsq = 0.0, norm, bc1, bc2;
    float mult, lr, step_size, bc2_sqrt;
    size_t i, k;
    int t;
    if (!m || !oc || !(grad_scale > 0.0f) || !(oc->lr >= 0.0f) || !(oc->beta1 >= 0.0f && oc->beta1 < 1.0f) ||
        !(oc->beta2 >= 0.0f && oc->beta2 < 1.0f) || !(oc->eps > 0.0f))
        return PERPO_ERR_ARG;
    for (i = 0; i < m->n_params; i++) {
        double g = (double)m->grads[i] * grad_scale;
        sumsq += g * g;
    }
    norm = sqrt(sumsq);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm)) return PERPO_ERR_NONFINITE; /* refuse the step, change nothing */
    mult = grad_scale;
    if (oc->clip_norm > 0.0f && norm > oc->clip_norm) mult *= (float)(oc->clip_norm / (norm + 1e-6));
    t = m->opt_step + 1;
    lr = perpo_lr_at(oc, m->opt_step);
    bc1 = 1.0 - pow((double)oc->beta1, (double)t);
    bc2 = 1.0 - pow((double)oc->beta2, (double)t);
    step_size = (float)(lr / bc1);
    bc2_sqrt = (float)sqrt(bc2);
    for (k = 0; k < m->n_tensors; k++) {
        const perpo__tensor *tn = &m->tensors[k];
        size_t n = tn->rows * (tn->cols ? tn->cols : 1), o = tn->offset;
        float decay = tn->cols ? 1.0f - lr * oc->weight_decay : 1.0f; /* matrices only */
        for (i = o; i < o + n; i++) {
            float g = m->grads[i] * mult;
            float mm = oc->beta1 * m->adam_m[i] + (1.0f - oc->beta1) * g;
            float vv = oc->beta2 * m->adam_v[i] + (1.0f - oc->beta2) * g * g;
            m->adam_m[i] = mm;
            m->adam_v[i] = vv;
            m->params[i] = m->params[i] * decay - step_size * mm / (sqrtf(vv) / bc2_sqrt + oc->eps);
        }
    }
    m->opt_step = t;
    return PERPO_OK;
}

PERPODEF int perpo_optimizer_steps(const perpo_model *m) { return m ? m->opt_step : 0; }
PERPODEF void perpo_optimizer_reset(perpo_model *m) {
    if (!m) return;
    memset(m->adam_m, 0, m->n_params * sizeof(float));
    memset(m->adam_v, 0, m->n_params * sizeof(float));
    m->opt_step = 0;
}

PERPODEF perpo_train_config perpo_train_default(void) {
    perpo_train_config t;
    t.optim = perpo_optim_default();
    t.batch_size = 32; t.accum_steps = 1; t.seed = 1; t.log_every = 10;
    return t;
}

static int perpo__check_train_config(const perpo_model *m, const perpo_train_config *tc) {
    return tc && tc->batch_size >= 1 && (size_t)tc->batch_size <= m->max_batch && tc->accum_steps >= 1 &&
           tc->log_every >= 1 && tc->optim.total_steps >= 1;
}

/* Fisher-Yates shuffle of 0..n-1. */
static void perpo__shuffle(size_t *perm, size_t n, perpo__rng *rng) {
    size_t i;
    for (i = 0; i < n; i++) perm[i] = i;
    for (i = n; i > 1; i--) {
        size_t j = perpo__rng_below(rng, i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

PERPODEF perpo_status perpo_sft_train(perpo_model *m, const perpo_example *ex, size_t n,
                                      const perpo_train_config *tc, perpo_progress_fn progress,
                                      void *user) {
    size_t B, T, i, b, next = 0, *perm;
    int *tok, *tgt, step;
    const float **imgs;
    float *logp, *dlogp;
    double tokens = 0.0, t0 = perpo__now();
    perpo__rng rng;
    perpo_status st = PERPO_OK;
    void *ctx;
    if (!m || !ex || n == 0 || !perpo__check_train_config(m, tc)) return PERPO_ERR_ARG;
    B = (size_t)tc->batch_size; T = m->T; ctx = m->cfg.alloc_ctx;
    for (i = 0; i < n; i++) { /* reject bad examples before touching the model */
        if (!ex[i].image || !ex[i].prompt || !ex[i].response) return PERPO_ERR_ARG;
        if (strlen(ex[i].prompt) + strlen(ex[i].response) + 3 > T) return PERPO_ERR_ARG;
    }
    /* everything a step needs is allocated here, once */
    perm = (size_t *)perpo__calloc(ctx, n, sizeof(size_t));
    tok = (int *)perpo__calloc(ctx, 2 * B * T, sizeof(int));
    imgs = (const float **)perpo__calloc(ctx, B, sizeof(float *));
    logp = (float *)perpo__calloc(ctx, 2 * B, sizeof(float));
    if (!perm || !tok || !imgs || !logp) { st = PERPO_ERR_NOMEM; goto done; }
    tgt = tok + B * T;
    dlogp = logp + B;
    perpo__rng_seed(&rng, tc->seed);
    perpo__shuffle(perm, n, &rng);
    for (step = 0; step < tc->optim.total_steps; step++) {
        float loss = 0.0f, gnorm = 0.0f;
        int a;
        perpo_zero_grad(m);
        for (a = 0; a < tc->accum_steps; a++) {
            perpo_batch batch;
            size_t count = 0, nt;
            float ce;
            for (b = 0; b < B; b++) {
                const perpo_example *e;
                if (next == n) { perpo__shuffle(perm, n, &rng); next = 0; }
                e = &ex[perm[next++]];
                imgs[b] = e->image;
                perpo_text_encode(&m->cfg, e->prompt, strlen(e->prompt), e->response, strlen(e->response),
                                  tok + b * T, tgt + b * T, &nt);
                count += nt;
            }
            batch.n_seq = B; batch.n_img = B; batch.images = imgs; batch.image_of = NULL;
            batch.tokens = tok; batch.targets = tgt;
            if ((st = perpo_forward(m, &batch, logp, &ce)) != PERPO_OK) goto done;
            for (b = 0; b < B; b++) dlogp[b] = -1.0f / (float)count; /* mean token cross-entropy */
            if ((st = perpo_backward(m, dlogp)) != PERPO_OK) goto done;
            loss += ce / (float)tc->accum_steps;
            tokens += (double)count;
        }
        if ((st = perpo_optimizer_step(m, &tc->optim, 1.0f / (float)tc->accum_steps, &gnorm)) != PERPO_OK) goto done;
        if (progress && ((step + 1) % tc->log_every == 0 || step + 1 == tc->optim.total_steps)) {
            perpo_progress p;
            p.phase = "sft"; p.step = step + 1; p.total_steps = tc->optim.total_steps;
            p.loss = loss; p.lr = perpo_lr_at(&tc->optim, m->opt_step - 1); p.grad_norm = gnorm;
            p.tokens = tokens; p.elapsed_s = perpo__now() - t0;
            p.eta_s = p.elapsed_s / (double)(step + 1) * (double)(tc->optim.total_steps - step - 1);
            if (progress(&p, user)) break;
        }
    }
done:
    PERPO_FREE(ctx, perm); PERPO_FREE(ctx, tok); PERPO_FREE(ctx, (void *)imgs); PERPO_FREE(ctx, logp);
    return st;
}

/* ==========================================================================================
   6. Checkpoints: little-endian, magic + format version + config + parameters + CRC32.
      Written to "<path>.tmp" and renamed into place, so a crash never leaves a half-written
      file under the real name. Loading checks every size against the file before allocating.
   ========================================================================================== */
#define PERPO__CKPT_MAGIC "PERPOCKP"
#define PERPO__CKPT_VERSION 1u
#define PERPO__CKPT_NCFG 12 /* config integers stored */
#define PERPO__CKPT_HEADER (8 + 4 + 4 + 4 * PERPO__CKPT_NCFG + 8)

static void perpo__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static uint32_t perpo__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void perpo__config_ints(const perpo_config *c, int *v) {
    v[0] = c->image_h; v[1] = c->image_w; v[2] = c->channels; v[3] = c->patch; v[4] = c->d_model;
    v[5] = c->n_heads; v[6] = c->n_vis_layers; v[7] = c->n_dec_layers; v[8] = c->mlp_mult;
    v[9] = c->max_text; v[10] = c->vocab; v[11] = c->max_batch;
}

PERPODEF perpo_status perpo_model_save(const perpo_model *m, const char *path) {
    unsigned char head[PERPO__CKPT_HEADER], buf[4096];
    int cfgv[PERPO__CKPT_NCFG], k, ok;
    size_t i, plen, used = 0;
    uint32_t crc;
    char *tmp;
    FILE *f;
    if (!m || !path) return PERPO_ERR_ARG;
    plen = strlen(path);
    tmp = (char *)PERPO_MALLOC(m->cfg.alloc_ctx, plen + 5);
    if (!tmp) return PERPO_ERR_NOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    memcpy(head, PERPO__CKPT_MAGIC, 8);
    perpo__put_u32(head + 8, PERPO__CKPT_VERSION);
    perpo__put_u32(head + 12, 0); /* flags: reserved */
    perpo__config_ints(&m->cfg, cfgv);
    for (k = 0; k < PERPO__CKPT_NCFG; k++) perpo__put_u32(head + 16 + 4 * k, (uint32_t)cfgv[k]);
    perpo__put_u32(head + 16 + 4 * PERPO__CKPT_NCFG, (uint32_t)m->n_params);
    perpo__put_u32(head + 20 + 4 * PERPO__CKPT_NCFG, (uint32_t)((uint64_t)m->n_params >> 32));
    f = fopen(tmp, "wb");
    if (!f) { PERPO_FREE(m->cfg.alloc_ctx, tmp); return PERPO_ERR_IO; }
    ok = fwrite(head, 1, sizeof head, f) == sizeof head;
    crc = perpo_crc32(0, head, sizeof head);
    for (i = 0; ok && i < m->n_params; i++) {
        uint32_t u;
        memcpy(&u, &m->params[i], 4);
        perpo__put_u32(buf + used, u);
        used += 4;
        if (used == sizeof buf || i + 1 == m->n_params) {
            crc = perpo_crc32(crc, buf, used);
            ok = fwrite(buf, 1, used, f) == used;
            used = 0;
        }
    }
    perpo__put_u32(buf, crc);
    ok = ok && fwrite(buf, 1, 4, f) == 4;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) != 0) { /* some systems refuse to rename over a file */
        remove(path);
        ok = rename(tmp, path) == 0;
    }
    if (!ok) remove(tmp);
    PERPO_FREE(m->cfg.alloc_ctx, tmp);
    return ok ? PERPO_OK : PERPO_ERR_IO;
}

PERPODEF perpo_status perpo_model_load(perpo_model **out, const char *path) {
    unsigned char head[PERPO__CKPT_HEADER], buf[4096];
    int cfgv[PERPO__CKPT_NCFG], k;
    perpo_config c;
    perpo_model *m = NULL;
    uint64_t n_params;
    size_t i, got;
    uint32_t crc;
    long fsize;
    perpo_status st;
    FILE *f;
    if (!out || !path) return PERPO_ERR_ARG;
    *out = NULL;
    f = fopen(path, "rb");
    if (!f) return PERPO_ERR_IO;
    if (fseek(f, 0, SEEK_END) != 0 || (fsize = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return PERPO_ERR_IO; }
    if ((size_t)fsize < sizeof head + 4 || fread(head, 1, sizeof head, f) != sizeof head ||
        memcmp(head, PERPO__CKPT_MAGIC, 8) != 0 || perpo__get_u32(head + 8) != PERPO__CKPT_VERSION ||
        perpo__get_u32(head + 12) != 0) {
        fclose(f);
        return PERPO_ERR_FORMAT;
    }
    for (k = 0; k < PERPO__CKPT_NCFG; k++) {
        uint32_t v = perpo__get_u32(head + 16 + 4 * k);
        if (v > 1000000u) { fclose(f); return PERPO_ERR_FORMAT; }
        cfgv[k] = (int)v;
    }
    memset(&c, 0, sizeof c);
    c.image_h = cfgv[0]; c.image_w = cfgv[1]; c.channels = cfgv[2]; c.patch = cfgv[3]; c.d_model = cfgv[4];
    c.n_heads = cfgv[5]; c.n_vis_layers = cfgv[6]; c.n_dec_layers = cfgv[7]; c.mlp_mult = cfgv[8];
    c.max_text = cfgv[9]; c.vocab = cfgv[10]; c.max_batch = cfgv[11];
    n_params = (uint64_t)perpo__get_u32(head + 16 + 4 * PERPO__CKPT_NCFG) |
               ((uint64_t)perpo__get_u32(head + 20 + 4 * PERPO__CKPT_NCFG) << 32);
    /* the size the file must have follows from the header alone: check it before allocating */
    if (perpo_config_validate(&c) != PERPO_OK || n_params > ((uint64_t)(size_t)-1) / 8 ||
        (uint64_t)fsize != (uint64_t)sizeof head + 4 * n_params + 4) {
        fclose(f);
        return PERPO_ERR_FORMAT;
    }
    if ((st = perpo_model_create(&m, &c, 0)) != PERPO_OK) { fclose(f); return st; }
    if ((uint64_t)m->n_params != n_params) { perpo_model_free(m); fclose(f); return PERPO_ERR_FORMAT; }
    crc = perpo_crc32(0, head, sizeof head);
    for (i = 0; i < m->n_params; i += got / 4) {
        size_t want = (m->n_params - i) * 4 < sizeof buf ? (m->n_params - i) * 4 : sizeof buf, j;
        got = fread(buf, 1, want, f);
        if (got != want) { perpo_model_free(m); fclose(f); return PERPO_ERR_FORMAT; }
        crc = perpo_crc32(crc, buf, got);
        for (j = 0; j < got / 4; j++) {
            uint32_t u = perpo__get_u32(buf + 4 * j);
            memcpy(&m->params[i + j], &u, 4);
        }
    }
    if (fread(buf, 1, 4, f) != 4 || perpo__get_u32(buf) != crc) { perpo_model_free(m); fclose(f); return PERPO_ERR_FORMAT; }
    fclose(f);
    if (!perpo__all_finite(m->params, m->n_params)) { perpo_model_free(m); return PERPO_ERR_FORMAT; }
    *out = m;
    return PERPO_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* PERPO_IMPLEMENTATION_DONE */
#endif /* PERPO_IMPLEMENTATION */

/*
   VERSION HISTORY
     0.1  compact MLLM, SFT, sampling with KV cache, checkpoints.

   LICENSE (MIT)
   Copyright (c) 2026 the perpo.h authors
   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:
   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.
   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
