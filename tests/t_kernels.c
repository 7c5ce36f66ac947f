/* Finite-difference checks of every tensor kernel's backward against its forward.
 * Each check builds a scalar loss = sum(out * w) with fixed random w, perturbs one input at a
 * time by +-eps (float32, eps = 1e-2) and compares the central difference with the analytic
 * gradient at every element. The error is relative to the tensor: |fd - an| <= 1e-2 * S + 1e-5
 * with S the largest |an| of that tensor, so a tensor with small gradients (a LayerNorm gain)
 * gets a tolerance as small as they are, where a fixed absolute one could hide it whole. The
 * kernels compute in float32: rounding in the forward (about 1e-6 relative of losses of order
 * 1, divided by 2*eps) plus the O(eps^2) truncation of the central difference stay below that. */

typedef struct kx_rng {
    uint64_t s;
} kx_rng;
static float kx_uniform(kx_rng *r) { /* in [-1, 1) */
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((r->s >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static void kx_fill(kx_rng *r, float *x, size_t n, float scale) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * kx_uniform(r);
}
static double kx_dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

#define KX_EPS   1e-2f
#define KX_RTOL  1e-2 /* of the tensor's largest |gradient| */
#define KX_FLOOR 1e-5

/* Compares an analytic gradient (n values) with central differences of loss_fn over x. */
typedef double (*kx_loss_fn)(void *ctx);
static int kx_check(perpo_test *t, const char *what, float *x, const float *grad, size_t n,
                    kx_loss_fn f, void *ctx) {
    size_t i;
    int bad = 0;
    double scale = 0.0;
    for (i = 0; i < n; i++)
        if (fabs(grad[i]) > scale) scale = fabs(grad[i]);
    if (!(scale > 0.0)) { /* an all-zero gradient checks nothing: every kernel here has signal */
        fprintf(stderr, "  FAIL %s: the analytic gradient is all zero\n", what);
        t->failures++;
        return 1;
    }
    for (i = 0; i < n; i++) {
        float keep = x[i];
        double lp, lm, fd;
        x[i] = keep + KX_EPS;
        lp = f(ctx);
        x[i] = keep - KX_EPS;
        lm = f(ctx);
        x[i] = keep;
        fd = (lp - lm) / ((double)(keep + KX_EPS) - (double)(keep - KX_EPS));
        if (!(fabs(fd - grad[i]) <= KX_FLOOR + KX_RTOL * scale)) {
            if (bad < 3)
                fprintf(stderr, "  FAIL %s[%zu]: analytic %.6g, finite difference %.6g\n", what, i,
                        grad[i], fd);
            bad++;
        }
    }
    if (bad) t->failures++;
    return bad;
}

/* ---- linear ---- */
typedef struct {
    size_t N, C, OC;
    float *x, *W, *b, *out, *w, *ws;
} kx_linear;
static double kx_linear_loss(void *p) {
    kx_linear *k = (kx_linear *)p;
    perpo__linear_forward(k->out, k->x, k->W, k->b, k->N, k->C, k->OC, k->ws);
    return kx_dot(k->out, k->w, k->N * k->OC);
}
static void test_linear_grad(perpo_test *t) {
    /* sizes that exercise full and edge tiles of the matrix product (MR = 6, NR = 16) */
    kx_linear k;
    kx_rng r = { 1 };
    float x[7 * 19], W[21 * 19], b[21], out[7 * 21], w[7 * 21],
        *ws = (float *)malloc(perpo__gemm_ws_floats(21) * sizeof(float));
    float dx[7 * 19], dW[21 * 19], db[21];
    k.N = 7;
    k.C = 19;
    k.OC = 21;
    k.x = x;
    k.W = W;
    k.b = b;
    k.out = out;
    k.w = w;
    k.ws = ws;
    kx_fill(&r, x, sizeof x / 4, 1.0f);
    kx_fill(&r, W, sizeof W / 4, 0.5f);
    kx_fill(&r, b, 21, 0.5f);
    kx_fill(&r, w, sizeof w / 4, 1.0f);
    memset(dx, 0, sizeof dx);
    memset(dW, 0, sizeof dW);
    memset(db, 0, sizeof db);
    perpo__linear_backward(dx, dW, db, w, x, W, 7, 19, 21, ws);
    kx_check(t, "linear dx", x, dx, 7 * 19, kx_linear_loss, &k);
    kx_check(t, "linear dW", W, dW, 21 * 19, kx_linear_loss, &k);
    kx_check(t, "linear db", b, db, 21, kx_linear_loss, &k);
    free(ws);
}

/* The matrix product against a plain triple loop, all four transpose cases, sizes beyond one
 * K block (KC = 256) and with accumulation. */
static void test_gemm_matches_naive(perpo_test *t) {
    static float A[300 * 37], B[300 * 45], C[37 * 45], R[37 * 45];
    float *ws = (float *)malloc(perpo__gemm_ws_floats(45) * sizeof(float));
    kx_rng r = { 7 };
    size_t M = 37, N = 45, K = 300, i, j, k;
    int ta, tb, acc;
    double worst = 0.0;
    kx_fill(&r, A, M * K, 1.0f);
    kx_fill(&r, B, K * N, 1.0f);
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++)
            for (acc = 0; acc < 2; acc++) {
                for (i = 0; i < M * N; i++) C[i] = R[i] = acc ? (float)i * 0.01f : 123.0f;
                for (i = 0; i < M; i++)
                    for (j = 0; j < N; j++) {
                        double s = acc ? R[i * N + j] : 0.0;
                        for (k = 0; k < K; k++)
                            s += (double)(ta ? A[k * M + i] : A[i * K + k]) *
                                 (double)(tb ? B[j * K + k] : B[k * N + j]);
                        R[i * N + j] = (float)s;
                    }
                perpo__gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, acc, C, N, ws);
                for (i = 0; i < M * N; i++) {
                    double e = fabs((double)C[i] - (double)R[i]);
                    if (e > worst) worst = e;
                }
            }
    CHECK_MSG(worst < 1e-4, "gemm max abs error %.3g (sums of 300 products of values in [-1,1])",
              worst);
    free(ws);
}

#ifdef PERPO_USE_BF16
/* x rounded to bfloat16 as the packing rounds it: to nearest even, subnormals read as zero. */
static float kx_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (fabsf(x) < FLT_MIN)
        u &= 0x80000000u;
    else
        u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* The bfloat16 products against their definition, bit for bit: each C(i,j) is [C +] the chain
 * over pairs (k, k+1) of (acc + a[k+1] b[k+1]) + a[k] b[k] on the rounded inputs, every
 * product exact. All transposes, accumulation, odd K, K over two K-blocks, edge tiles, subnormal
 * inputs; then the prepacked-weight path the forward and decoding use. */
static void test_gemm_bf16_exact(perpo_test *t) {
    static const size_t shapes[][3] = {
        { 1, 1, 1 }, { 9, 33, 7 }, { 8, 32, 256 }, { 37, 45, 513 }, { 3, 70, 300 }
    };
    kx_rng r = { 11 };
    size_t sh, i, j, k, bad = 0, total = 0;
    int ta, tb, acc, pre;
    for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (pre = 0; pre < 2; pre++)
            for (ta = 0; ta < 2 - pre; ta++)
                for (tb = pre; tb < 2; tb++)
                    for (acc = 0; acc < 2 - pre; acc++) {
                        size_t M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
                        size_t lda = ta ? M : K, ldb = tb ? K : N;
                        float *A = (float *)malloc(M * K * sizeof(float));
                        float *B = (float *)malloc(N * K * sizeof(float));
                        float *C = (float *)malloc(M * N * sizeof(float));
                        float *R = (float *)malloc(M * N * sizeof(float));
                        float *ws = (float *)malloc(
                            (perpo__gemm_ws_floats(N) + perpo__gemm_packed_floats(N, K)) *
                            sizeof(float));
                        if (!A || !B || !C || !R || !ws) {
                            CHECK(!"out of memory");
                            return;
                        }
                        kx_fill(&r, A, M * K, 1.0f);
                        kx_fill(&r, B, K * N, 3.0f);
                        A[0] = 1e-39f; /* subnormal: read as zero */
                        B[K * N - 1] = -3e-39f;
                        for (i = 0; i < M * N; i++) C[i] = R[i] = (float)i * 0.01f - 1.0f;
                        if (pre) {
                            float *bpk = ws + perpo__gemm_ws_floats(N);
                            perpo__gemm_prepack(bpk, tb, N, K, B, ldb);
                            perpo__gemm_rows(0, M, tb, N, K, A, B, bpk, C, NULL);
                        } else
                            perpo__gemm(ta, tb, M, N, K, A, lda, B, ldb, acc, C, N, ws);
                        for (i = 0; i < M; i++)
                            for (j = 0; j < N; j++) {
                                volatile float s = acc ? R[i * N + j] : 0.0f;
                                for (k = 0; k < K; k += 2) {
                                    float a0 = kx_bf16(ta ? A[k * lda + i] : A[i * lda + k]);
                                    float b0 = kx_bf16(tb ? B[j * ldb + k] : B[k * ldb + j]);
                                    float a1 = 0.0f, b1 = 0.0f;
                                    if (k + 1 < K) {
                                        a1 =
                                            kx_bf16(ta ? A[(k + 1) * lda + i] : A[i * lda + k + 1]);
                                        b1 =
                                            kx_bf16(tb ? B[j * ldb + k + 1] : B[(k + 1) * ldb + j]);
                                    }
                                    s = s + a1 * b1; /* (volatile: each sum rounds to float) */
                                    s = s + a0 * b0;
                                }
                                total++;
                                bad += memcmp((const void *)&s, &C[i * N + j], sizeof(float)) != 0;
                            }
                        free(A);
                        free(B);
                        free(C);
                        free(R);
                        free(ws);
                    }
    CHECK_MSG(bad == 0, "%zu of %zu bfloat16 product elements differ from their definition", bad,
              total);
}
#endif

/* ---- layernorm ---- */
typedef struct {
    size_t N, D;
    float *x, *g, *b, *out, *mean, *rstd, *w;
} kx_ln;
static double kx_ln_loss(void *p) {
    kx_ln *k = (kx_ln *)p;
    perpo__layernorm_forward(k->out, k->mean, k->rstd, k->x, k->g, k->b, k->N, k->D);
    return kx_dot(k->out, k->w, k->N * k->D);
}
static void test_layernorm_grad(perpo_test *t) {
    kx_ln k;
    kx_rng r = { 2 };
    float x[5 * 12], g[12], b[12], out[60], mean[5], rstd[5], w[60], dx[60], dg[12], db[12];
    k.N = 5;
    k.D = 12;
    k.x = x;
    k.g = g;
    k.b = b;
    k.out = out;
    k.mean = mean;
    k.rstd = rstd;
    k.w = w;
    kx_fill(&r, x, 60, 2.0f);
    kx_fill(&r, g, 12, 1.0f);
    kx_fill(&r, b, 12, 1.0f);
    kx_fill(&r, w, 60, 1.0f);
    memset(dx, 0, sizeof dx);
    memset(dg, 0, sizeof dg);
    memset(db, 0, sizeof db);
    kx_ln_loss(&k);
    perpo__layernorm_backward(dx, dg, db, w, x, g, mean, rstd, 5, 12);
    kx_check(t, "layernorm dx", x, dx, 60, kx_ln_loss, &k);
    kx_check(t, "layernorm dgain", g, dg, 12, kx_ln_loss, &k);
    kx_check(t, "layernorm dbias", b, db, 12, kx_ln_loss, &k);
    /* the forward itself: each output row has mean b and (for unit gain) variance ~1 */
    {
        float one[12], zero[12], o2[60];
        size_t i;
        double m = 0.0, v = 0.0;
        for (i = 0; i < 12; i++) {
            one[i] = 1.0f;
            zero[i] = 0.0f;
        }
        perpo__layernorm_forward(o2, mean, rstd, x, one, zero, 5, 12);
        for (i = 0; i < 12; i++) m += o2[i];
        m /= 12;
        for (i = 0; i < 12; i++) v += (o2[i] - m) * (o2[i] - m);
        v /= 12;
        CHECK_NEAR(m, 0.0, 1e-6, 0);
        CHECK_NEAR(v, 1.0, 1e-3, 0);
    }
}

/* ---- GELU ---- */
typedef struct {
    size_t n;
    float *x, *out, *w;
} kx_gelu;
static double kx_gelu_loss(void *p) {
    kx_gelu *k = (kx_gelu *)p;
    perpo__gelu_forward(k->out, k->x, k->n);
    return kx_dot(k->out, k->w, k->n);
}
static void test_gelu(perpo_test *t) {
    kx_gelu k;
    kx_rng r = { 3 };
    float x[40], out[40], w[40], dx[40], y;
    k.n = 40;
    k.x = x;
    k.out = out;
    k.w = w;
    kx_fill(&r, x, 40, 4.0f);
    kx_fill(&r, w, 40, 1.0f);
    perpo__gelu_backward(dx, x, w, 40);
    kx_check(t, "gelu dx", x, dx, 40, kx_gelu_loss, &k);
    /* values of the tanh approximation, computed by hand: gelu(1) = 0.841192, gelu(-1) = -0.158808 */
    x[0] = 1.0f;
    x[1] = -1.0f;
    x[2] = 0.0f;
    perpo__gelu_forward(out, x, 3);
    CHECK_NEAR(out[0], 0.8411920f, 1e-6, 0);
    CHECK_NEAR(out[1], -0.1588080f, 1e-6, 0);
    CHECK_NEAR(out[2], 0.0f, 0, 0);
    x[0] = 30.0f;
    perpo__gelu_forward(&y, x, 1);
    CHECK_NEAR(y, 30.0f, 0, 1e-6);
}

/* ---- attention ---- */
typedef struct {
    size_t B, T, D, H;
    int causal;
    float *qkv, *att, *out, *w, *ws;
} kx_att;
static double kx_att_loss(void *p) {
    kx_att *k = (kx_att *)p;
    perpo__attention_forward(k->out, k->att, k->qkv, k->B, k->T, k->D, k->H, k->causal);
    return kx_dot(k->out, k->w, k->B * k->T * k->D);
}
/* Cached attention (perpo__combine_rows, one row at a time) against the training attention's
 * products (perpo__gemm_head), bit for bit: the scores Q K^T and the weighted values P V. The KV
 * cache equals recomputation only if both round every multiply-add the same way, in every build
 * (the AVX2 tile uses explicit FMAs, so must the row path). */
static void test_cached_attention_products(perpo_test *t) {
    enum { T = 37, HD = 24 };
    static float Q[T * HD], K[T * HD], KT[HD * T], V[T * HD], P[T * T];
    static float S1[T * T], S2[T * T], O1[T * HD], O2[T * HD];
    kx_rng r = { 5 };
    size_t i, j, bad = 0;
    kx_fill(&r, Q, T * HD, 1.0f);
    kx_fill(&r, K, T * HD, 1.0f);
    kx_fill(&r, V, T * HD, 1.0f);
    kx_fill(&r, P, T * T, 1.0f);
    for (i = 0; i < T; i++)
        for (j = 0; j < HD; j++) KT[j * T + i] = K[i * HD + j];
    perpo__gemm_head(T, T, HD, Q, HD, 1, K, 1, HD, 0, S1, T, 0);
    perpo__gemm_head(T, HD, T, P, T, 1, V, HD, 1, 0, O1, HD, 0);
    for (i = 0; i < T; i++) {
        perpo__combine_rows(S2 + i * T, 0, Q + i * HD, 0, KT, 0, T, HD, T, 1, 1);
        perpo__combine_rows(O2 + i * HD, 0, P + i * T, 0, V, 0, HD, T, HD, 1, 1);
    }
    for (i = 0; i < T * T; i++) bad += memcmp(&S1[i], &S2[i], sizeof(float)) != 0;
    for (i = 0; i < T * HD; i++) bad += memcmp(&O1[i], &O2[i], sizeof(float)) != 0;
    CHECK_MSG(bad == 0, "%zu of %d cached-attention values differ from the training attention's",
              bad, T * T + T * HD);
}

static void test_attention_grad(perpo_test *t) {
    int causal;
    for (causal = 0; causal < 2; causal++) {
        kx_att k;
        kx_rng r = { 4 };
        float qkv[2 * 5 * 3 * 8], att[2 * 2 * 5 * 5], out[2 * 5 * 8], w[2 * 5 * 8],
            dqkv[2 * 5 * 24], ws[2 * 2 * 5 * 5]; /* B*H*perpo__attention_ws_per_head(T) */
        size_t i, q;
        k.B = 2;
        k.T = 5;
        k.D = 8;
        k.H = 2;
        k.causal = causal;
        k.qkv = qkv;
        k.att = att;
        k.out = out;
        k.w = w;
        k.ws = ws;
        kx_fill(&r, qkv, sizeof qkv / 4, 1.5f);
        kx_fill(&r, w, sizeof w / 4, 1.0f);
        kx_att_loss(&k);
        memset(dqkv, 0, sizeof dqkv);
        perpo__attention_backward(dqkv, w, att, qkv, 2, 5, 8, 2, causal, k.ws);
        kx_check(t, causal ? "causal attention dqkv" : "attention dqkv", qkv, dqkv, sizeof qkv / 4,
                 kx_att_loss, &k);
        /* probabilities: rows sum to 1, and causal rows put no mass on the future */
        for (i = 0; i < 2 * 2 * 5; i++) {
            double s = 0.0;
            for (q = 0; q < 5; q++) s += att[i * 5 + q];
            CHECK_NEAR(s, 1.0, 1e-5, 0);
            if (causal)
                for (q = i % 5 + 1; q < 5; q++) CHECK(att[i * 5 + q] == 0.0f);
        }
    }
}

/* ---- log-softmax: the stable logsumexp ---- */
static void test_logsumexp(perpo_test *t) {
    float z[4] = { 1.0f, 2.0f, 3.0f, 4.0f }, big[3] = { 1000.0f, 1000.0f, -1000.0f };
    CHECK_NEAR(perpo__logsumexp(z, 4), 4.4401897f, 1e-6, 0); /* log(e+e^2+e^3+e^4) */
    CHECK_NEAR(perpo__logsumexp(big, 3), 1000.0f + 0.6931472f, 1e-4, 0);
}

/* ---- patchify: (dy, dx, c) order inside a patch, patches row-major ---- */
static void test_patchify(perpo_test *t) {
    float img[4 * 4 * 2], out[4 * 8];
    perpo_config c = perpo_config_default();
    size_t i;
    for (i = 0; i < 32; i++) img[i] = (float)i;
    c.image_h = c.image_w = 4;
    c.channels = 2;
    c.patch_h = c.patch_w = 2;
    perpo__patchify(out, img, &c);
    /* patch 1 (top right) starts at pixel (0,2): img[(0*4+2)*2] = 4, then (0,2,c1)=5, (0,3,c0)=6 */
    CHECK(out[8] == 4.0f && out[9] == 5.0f && out[10] == 6.0f && out[12] == 12.0f);
    /* patch 2 (bottom left) starts at pixel (2,0) = 16 */
    CHECK(out[16] == 16.0f && out[31] == 31.0f);
}

/* Non-square patches with position channels: a 4x6 grey image in 2x3 patches (2 rows of 2),
   each pixel followed by its x and y in [-1, 1]. */
static void test_patchify_rect_pos(perpo_test *t) {
    float img[4 * 6], out[4 * 2 * 3 * 3];
    perpo_config c = perpo_config_default();
    size_t i;
    for (i = 0; i < 24; i++) img[i] = (float)i;
    c.image_h = 4;
    c.image_w = 6;
    c.channels = 1;
    c.patch_h = 2;
    c.patch_w = 3;
    c.pos_channels = 1;
    perpo__patchify(out, img, &c);
    /* patch 0, pixel (0,0): value 0, x = -1, y = -1; pixel (1,2) is the 6th of the patch */
    CHECK(out[0] == 0.0f && out[1] == -1.0f && out[2] == -1.0f);
    CHECK(out[5 * 3] == 8.0f && fabsf(out[5 * 3 + 1] - (-1.0f + 2.0f * 2.0f / 5.0f)) < 1e-7f &&
          fabsf(out[5 * 3 + 2] - (-1.0f + 2.0f / 3.0f)) < 1e-7f);
    /* patch 1 (top right) starts at pixel (0,3); patch 3 ends at pixel (3,5): x = y = 1 */
    CHECK(out[18] == 3.0f && fabsf(out[19] - 0.2f) < 1e-7f);
    CHECK(out[71] == 1.0f && out[70] == 1.0f && out[69] == 23.0f);
}

/* The 2D sin-cos code: D = 8 (q = 2, w = 1, 1/10); patch (px, py) = (2, 1) is row 1 * 3 + 2. */
static void test_sincos_2d(perpo_test *t) {
    float pe[2 * 3 * 8];
    perpo__sincos_2d(pe, 3, 2, 8);
    CHECK(pe[0] == 0.0f && pe[2] == 1.0f && pe[4] == 0.0f && pe[6] == 1.0f); /* (0,0) */
    CHECK_NEAR(pe[5 * 8 + 0], sin(2.0), 1e-7, 0);
    CHECK_NEAR(pe[5 * 8 + 1], sin(0.2), 1e-7, 0);
    CHECK_NEAR(pe[5 * 8 + 3], cos(0.2), 1e-7, 0);
    CHECK_NEAR(pe[5 * 8 + 4], sin(1.0), 1e-7, 0);
    CHECK_NEAR(pe[5 * 8 + 7], cos(0.1), 1e-7, 0);
}

const perpo_test_case perpo_tests_kernels[] = {
    { "gemm matches a naive product (all transposes, accumulate)", test_gemm_matches_naive },
#ifdef PERPO_USE_BF16
    { "bfloat16 products = their definition, bit for bit", test_gemm_bf16_exact },
#endif
    { "linear backward = finite differences", test_linear_grad },
    { "layernorm backward = finite differences", test_layernorm_grad },
    { "gelu values and backward", test_gelu },
    { "attention backward (bidirectional, causal) = finite differences", test_attention_grad },
    { "cached attention's products = the training attention's, bit for bit (KV cache)",
      test_cached_attention_products },
    { "logsumexp is stable", test_logsumexp },
    { "patchify layout", test_patchify },
    { "patchify: non-square patches with x/y position channels", test_patchify_rect_pos },
    { "2D sin-cos vision positions", test_sincos_2d },
    { NULL, NULL }
};
