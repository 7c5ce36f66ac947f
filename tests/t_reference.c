/* The reference path (perpo.h: "Reference kernels: the math in plain C" and "The reference
 * model") against the fast path, and each reference backward against finite differences.
 *
 * Kernels: every fast kernel against its reference on random inputs of awkward sizes (1, 7, 17,
 * 33, 130 rows and columns: edge tiles of the product, K past one K-block of 256). Where the
 * fast kernel sums the reference's terms in the reference's order (the products, linear,
 * LayerNorm, softmax, attention, log-sum-exp), the two must agree bit for bit. That needs both
 * to round each multiply-add the same way: the fast products run explicit FMAs in AVX2 and
 * AVX-512 builds, and the reference's perpo__ref_madd fuses exactly there. rf_same_rounding()
 * checks it on a case where fusing shows; were it to fail (a build whose compiler contracts one
 * side only), and in CBLAS builds (another order), the comparison falls back to a stated
 * tolerance and says so. GELU's reference is the tanh form 0.5 x (1 + tanh u), the fast kernel
 * x sigmoid(2u) (the same function): always to a tolerance. bfloat16 builds round the products'
 * inputs: t_kernels.c holds those products against their own definition; here they are skipped.
 *
 * Finite differences reuse t_kernels.c's kx_check: central differences of sum(out * w) with
 * eps 1e-2, |fd - analytic| <= 1e-2 x the tensor's largest |gradient| + 1e-5. */

typedef struct rf_stats {
    size_t n, differ;
    double worst; /* largest |fast - ref| / (atol + rtol |ref|) */
} rf_stats;

/* 1 when the fast products and the reference round a multiply-add the same way: the chain
   -1 + a a with a = 1 + 2^-12 is 2^-11 + 2^-24 fused but 2^-11 when a a is rounded first. Probed
   on the built-in register tile (perpo__gemm_head), which every build has: attention runs on it
   in CBLAS builds too. */
static int rf_same_rounding(void) {
    float A[2] = { -1.0f, 1.0f + 1.0f / 4096.0f }, B[2] = { 1.0f, 1.0f + 1.0f / 4096.0f };
    float c_fast = 0.0f, c_ref = 0.0f;
    perpo__gemm_head(1, 1, 2, A, 2, 1, B, 1, 1, 0, &c_fast, 1, 0);
    perpo__ref_matmul_forward(&c_ref, A, B, 1, 1, 2, 0, 0, 0);
    return memcmp(&c_fast, &c_ref, sizeof(float)) == 0;
}
/* Whether this build's matrix products (perpo__gemm and what calls it) must match the reference
   bit for bit: not in CBLAS builds (another order) nor bfloat16 builds (rounded inputs). */
static int rf_products_exact(void) {
#if defined(PERPO_USE_CBLAS) || defined(PERPO_USE_BF16)
    return 0;
#else
    return rf_same_rounding();
#endif
}

/* Compares fast with ref (n values): bit for bit when exact, else |fast - ref| <= atol + rtol
   |ref|. Accumulates into *s; reports the first few offenders. */
static void rf_compare(perpo_test *t, const char *what, const float *fast, const float *ref,
                       size_t n, int exact, double atol, double rtol, rf_stats *s) {
    size_t i, bad = 0;
    for (i = 0; i < n; i++) {
        double d = fabs((double)fast[i] - (double)ref[i]), r = d / (atol + rtol * fabs(ref[i]));
        int same = memcmp(&fast[i], &ref[i], sizeof(float)) == 0;
        int ok = exact ? same : (isfinite(fast[i]) && r <= 1.0);
        if (!same) s->differ++;
        if (!exact && r > s->worst) s->worst = r;
        if (!ok && bad++ < 3)
            fprintf(stderr, "  FAIL %s[%zu]: fast %.9g, reference %.9g%s\n", what, i, fast[i],
                    ref[i], exact ? " (bit for bit expected)" : "");
    }
    s->n += n;
    if (bad) t->failures++;
}
static void rf_report(const char *what, const rf_stats *s, int exact, const char *why) {
    if (exact)
        fprintf(stderr, "    %s: %zu values, bit for bit\n", what, s->n);
    else
        fprintf(stderr,
                "    %s: %zu values, %zu not bit-identical, worst error / tolerance %.3g (%s)\n",
                what, s->n, s->differ, s->worst, why);
}
/* Why a comparison that could be exact is not, in this build. */
#if defined(PERPO_USE_CBLAS)
#define RF_WHY "CBLAS sums in its own order: to a tolerance"
#else
#define RF_WHY "this build's products round multiply-adds unlike the reference: to a tolerance"
#endif
static float *rf_alloc(size_t n) {
    float *p = (float *)calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- the matrix product: all four transposes, with and without accumulation ---- */
static void test_ref_matmul(perpo_test *t) {
    static const size_t shapes[][3] = { { 1, 1, 1 },     { 7, 17, 33 },   { 17, 33, 7 },
                                        { 33, 130, 17 }, { 130, 7, 300 }, { 6, 16, 256 },
                                        { 13, 45, 513 } };
    kx_rng r = { 21 };
    rf_stats st;
    size_t sh;
    int ta, tb, acc, exact = rf_products_exact();
    memset(&st, 0, sizeof st);
#ifdef PERPO_USE_BF16
    fprintf(stderr, "    skipped: bfloat16 products round their inputs (t_kernels.c holds them "
                    "against their own definition)\n");
    return;
#endif
    for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        size_t M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
        float *A = rf_alloc(M * K), *B = rf_alloc(K * N), *C = rf_alloc(M * N),
              *R = rf_alloc(M * N), *ws = rf_alloc(perpo__gemm_ws_floats(N));
        kx_fill(&r, A, M * K, 1.0f);
        kx_fill(&r, B, K * N, 1.0f);
        for (ta = 0; ta < 2; ta++)
            for (tb = 0; tb < 2; tb++)
                for (acc = 0; acc < 2; acc++) {
                    kx_fill(&r, C, M * N, 1.0f);
                    memcpy(R, C, M * N * sizeof(float));
                    perpo__gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, acc, C, N, ws);
                    perpo__ref_matmul_forward(R, A, B, M, N, K, ta, tb, acc);
                    rf_compare(t, "matmul", C, R, M * N, exact, 1e-6 * (double)K, 0.0, &st);
                }
        free(A);
        free(B);
        free(C);
        free(R);
        free(ws);
    }
    rf_report("perpo__gemm vs perpo__ref_matmul_forward", &st, exact, RF_WHY);
}

/* ---- linear: the plain product with bias, the forward's prepacked rows with each epilogue,
   and the backward (adding into gradients that are not zero) ---- */
static void test_ref_linear(perpo_test *t) {
    static const size_t shapes[][3] = { { 1, 1, 1 },     { 7, 17, 33 },  { 17, 33, 7 },
                                        { 33, 130, 17 }, { 130, 7, 33 }, { 9, 300, 40 } };
    kx_rng r = { 22 };
    rf_stats fw, pk, ep, bw;
    size_t sh;
    int exact = rf_products_exact();
    memset(&fw, 0, sizeof fw);
    memset(&pk, 0, sizeof pk);
    memset(&ep, 0, sizeof ep);
    memset(&bw, 0, sizeof bw);
#ifdef PERPO_USE_BF16
    fprintf(stderr, "    skipped: bfloat16 products round their inputs\n");
    return;
#endif
    for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        size_t N = shapes[sh][0], C = shapes[sh][1], OC = shapes[sh][2];
        float *x = rf_alloc(N * C), *W = rf_alloc(OC * C), *b = rf_alloc(OC),
              *res = rf_alloc(N * OC), *out = rf_alloc(N * OC), *ref = rf_alloc(N * OC),
              *gel = rf_alloc(N * OC), *gref = rf_alloc(N * OC), *dout = rf_alloc(N * OC);
        float *dx = rf_alloc(N * C), *dW = rf_alloc(OC * C), *db = rf_alloc(OC),
              *rdx = rf_alloc(N * C), *rdW = rf_alloc(OC * C), *rdb = rf_alloc(OC);
        float *ws = rf_alloc(perpo__gemm_ws_floats(OC > C ? OC : C)),
              *bpk = rf_alloc(perpo__gemm_packed_floats(OC, C));
        perpo__epi e;
        kx_fill(&r, x, N * C, 1.0f);
        kx_fill(&r, W, OC * C, 0.5f);
        kx_fill(&r, b, OC, 0.5f);
        kx_fill(&r, res, N * OC, 1.0f);
        kx_fill(&r, dout, N * OC, 1.0f);
        /* forward: perpo__linear_forward (with and without bias) */
        perpo__linear_forward(out, x, W, b, N, C, OC, ws);
        perpo__ref_linear_forward(ref, x, W, b, N, C, OC);
        rf_compare(t, "linear forward", out, ref, N * OC, exact, 1e-6 * (double)C, 0.0, &fw);
        perpo__linear_forward(out, x, W, NULL, N, C, OC, ws);
        perpo__ref_linear_forward(ref, x, W, NULL, N, C, OC);
        rf_compare(t, "linear forward, no bias", out, ref, N * OC, exact, 1e-6 * (double)C, 0.0,
                   &fw);
#ifndef PERPO_USE_CBLAS
        perpo__gemm_prepack(bpk, 1, OC, C, W, C);
#endif
        /* the model's forward rows: prepacked W, bias then residual in the epilogue */
        memset(&e, 0, sizeof e);
        e.bias = b;
        e.res = res;
        e.ldr = OC;
#ifdef PERPO_USE_CBLAS
        perpo__gemm_rows(0, N, 1, OC, C, x, W, NULL, out, &e);
#else
        perpo__gemm_rows(0, N, 1, OC, C, x, W, bpk, out, &e);
#endif
        perpo__ref_linear_forward(ref, x, W, b, N, C, OC);
        perpo__ref_residual_forward(ref, res, N * OC);
        rf_compare(t, "prepacked rows + bias + residual", out, ref, N * OC, exact, 1e-6 * (double)C,
                   0.0, &pk);
        /* bias then GELU in the epilogue (the MLP's first layer): the GELU to a tolerance */
        memset(&e, 0, sizeof e);
        e.bias = b;
        e.gel = gel;
        e.ldg = OC;
#ifdef PERPO_USE_CBLAS
        perpo__gemm_rows(0, N, 1, OC, C, x, W, NULL, out, &e);
#else
        perpo__gemm_rows(0, N, 1, OC, C, x, W, bpk, out, &e);
#endif
        perpo__ref_linear_forward(ref, x, W, b, N, C, OC);
        perpo__ref_gelu_forward(gref, ref, N * OC);
        rf_compare(t, "prepacked rows + bias (pre-GELU)", out, ref, N * OC, exact, 1e-6 * (double)C,
                   0.0, &pk);
        rf_compare(t, "prepacked rows + bias + GELU", gel, gref, N * OC, 0, 1e-6, 1e-6, &ep);
        /* backward, into gradients that already hold values */
        kx_fill(&r, dx, N * C, 1.0f);
        kx_fill(&r, dW, OC * C, 1.0f);
        kx_fill(&r, db, OC, 1.0f);
        memcpy(rdx, dx, N * C * sizeof(float));
        memcpy(rdW, dW, OC * C * sizeof(float));
        memcpy(rdb, db, OC * sizeof(float));
        perpo__linear_backward(dx, dW, db, dout, x, W, N, C, OC, ws);
        perpo__ref_linear_backward(rdx, rdW, rdb, dout, x, W, N, C, OC);
        rf_compare(t, "linear backward dinp", dx, rdx, N * C, exact, 1e-6 * (double)OC, 0.0, &bw);
        rf_compare(t, "linear backward dW", dW, rdW, OC * C, exact, 1e-6 * (double)N, 0.0, &bw);
        rf_compare(t, "linear backward db", db, rdb, OC, exact, 1e-6 * (double)N, 0.0, &bw);
        free(x);
        free(W);
        free(b);
        free(res);
        free(out);
        free(ref);
        free(gel);
        free(gref);
        free(dout);
        free(dx);
        free(dW);
        free(db);
        free(rdx);
        free(rdW);
        free(rdb);
        free(ws);
        free(bpk);
    }
    rf_report("perpo__linear_forward vs perpo__ref_linear_forward", &fw, exact, RF_WHY);
    rf_report("perpo__gemm_rows (prepacked, epilogue) vs linear + residual", &pk, exact, RF_WHY);
    rf_report("epilogue GELU vs perpo__ref_gelu_forward", &ep, 0,
              "x sigmoid(2u) against the tanh form: 1e-6 + 1e-6 |ref|");
    rf_report("perpo__linear_backward vs perpo__ref_linear_backward", &bw, exact, RF_WHY);
}

/* ---- LayerNorm: rows in groups of 8 in the fast kernel, one at a time in the reference ---- */
static void test_ref_layernorm(perpo_test *t) {
    static const size_t shapes[][2] = { { 1, 1 }, { 7, 17 }, { 17, 33 }, { 33, 130 }, { 130, 7 } };
    kx_rng r = { 23 };
    rf_stats fw, bw;
    size_t sh;
    int exact = rf_same_rounding(); /* (plain C on both sides, compiled alike) */
    memset(&fw, 0, sizeof fw);
    memset(&bw, 0, sizeof bw);
    for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        size_t N = shapes[sh][0], D = shapes[sh][1];
        float *x = rf_alloc(N * D), *w = rf_alloc(D), *b = rf_alloc(D), *out = rf_alloc(N * D),
              *ref = rf_alloc(N * D), *mean = rf_alloc(N), *rstd = rf_alloc(N),
              *rmean = rf_alloc(N), *rrstd = rf_alloc(N), *dout = rf_alloc(N * D);
        float *dx = rf_alloc(N * D), *dw = rf_alloc(D), *db = rf_alloc(D), *rdx = rf_alloc(N * D),
              *rdw = rf_alloc(D), *rdb = rf_alloc(D);
        kx_fill(&r, x, N * D, 2.0f);
        kx_fill(&r, w, D, 1.0f);
        kx_fill(&r, b, D, 1.0f);
        kx_fill(&r, dout, N * D, 1.0f);
        perpo__layernorm_forward(out, mean, rstd, x, w, b, N, D);
        perpo__ref_layernorm_forward(ref, rmean, rrstd, x, w, b, N, D);
        rf_compare(t, "layernorm out", out, ref, N * D, exact, 1e-5, 1e-5, &fw);
        rf_compare(t, "layernorm mean", mean, rmean, N, exact, 1e-6, 1e-5, &fw);
        rf_compare(t, "layernorm rstd", rstd, rrstd, N, exact, 1e-6, 1e-5, &fw);
        kx_fill(&r, dx, N * D, 1.0f);
        kx_fill(&r, dw, D, 1.0f);
        kx_fill(&r, db, D, 1.0f);
        memcpy(rdx, dx, N * D * sizeof(float));
        memcpy(rdw, dw, D * sizeof(float));
        memcpy(rdb, db, D * sizeof(float));
        perpo__layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, D);
        perpo__ref_layernorm_backward(rdx, rdw, rdb, dout, x, w, mean, rstd, N, D);
        rf_compare(t, "layernorm dinp", dx, rdx, N * D, exact, 1e-5, 1e-5, &bw);
        rf_compare(t, "layernorm dw", dw, rdw, D, exact, 1e-5, 1e-5, &bw);
        rf_compare(t, "layernorm db", db, rdb, D, exact, 1e-5, 1e-5, &bw);
        free(x);
        free(w);
        free(b);
        free(out);
        free(ref);
        free(mean);
        free(rstd);
        free(rmean);
        free(rrstd);
        free(dout);
        free(dx);
        free(dw);
        free(db);
        free(rdx);
        free(rdw);
        free(rdb);
    }
    rf_report("perpo__layernorm_forward vs reference", &fw, exact, RF_WHY);
    rf_report("perpo__layernorm_backward vs reference", &bw, exact, RF_WHY);
}

/* ---- GELU: x sigmoid(2u) (fast) against 0.5 x (1 + tanh u) (reference), the same function:
   |fast - ref| <= 1e-6 (1 + |x|) for values, 2e-6 (1 + |x|) for the backward ---- */
static void test_ref_gelu(perpo_test *t) {
    enum { N = 1030 };
    static float x[N], y[N], ry[N], dout[N], dx[N], rdx[N];
    kx_rng r = { 24 };
    size_t i, bad = 0;
    double worst = 0.0, worst_d = 0.0;
    kx_fill(&r, x, N, 6.0f);
    x[0] = 0.0f;
    x[1] = 30.0f;
    x[2] = -30.0f;
    x[3] = 1e-20f;
    x[4] = -9.5f;
    kx_fill(&r, dout, N, 1.0f);
    perpo__gelu_forward(y, x, N);
    perpo__ref_gelu_forward(ry, x, N);
    perpo__gelu_backward(dx, x, dout, N);
    perpo__ref_gelu_backward(rdx, x, dout, N);
    for (i = 0; i < N; i++) {
        double e = fabs((double)y[i] - ry[i]) / (1e-6 * (1.0 + fabs(x[i])));
        double ed = fabs((double)dx[i] - rdx[i]) / (2e-6 * (1.0 + fabs(x[i])));
        if (e > worst) worst = e;
        if (ed > worst_d) worst_d = ed;
        if (!(e <= 1.0 && ed <= 1.0) && bad++ < 3)
            fprintf(stderr, "  FAIL gelu(%.9g): fast %.9g / %.9g, reference %.9g / %.9g\n", x[i],
                    y[i], dx[i], ry[i], rdx[i]);
    }
    CHECK(bad == 0);
    /* in place, as the model calls the backward */
    memcpy(dx, dout, sizeof dx);
    perpo__ref_gelu_backward(dx, x, dx, N);
    CHECK(memcmp(dx, rdx, sizeof dx) == 0);
    fprintf(stderr,
            "    %d values: worst error / tolerance %.3g (forward), %.3g (backward); "
            "tolerances 1e-6 (1 + |x|), 2e-6 (1 + |x|)\n",
            N, worst, worst_d);
}

/* ---- softmax: the fast rows (groups of 4, vector exp in AVX-512 builds) ---- */
static void test_ref_softmax(perpo_test *t) {
    static const size_t lens[] = { 1, 7, 17, 33, 130, 260 };
    kx_rng r = { 25 };
    rf_stats st;
    size_t li, k;
    memset(&st, 0, sizeof st);
    for (li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = lens[li], rows = 5;
        float *x = rf_alloc(rows * n), *p = rf_alloc(rows * n), *ref = rf_alloc(rows * n);
        kx_fill(&r, x, rows * n, 8.0f);
        memcpy(p, x, rows * n * sizeof(float));
        perpo__softmax_rows(p, n, rows, n, 0, 1.0f);
        for (k = 0; k < rows; k++) perpo__ref_softmax_forward(ref + k * n, x + k * n, n);
        rf_compare(t, "softmax", p, ref, rows * n, 1, 0.0, 0.0, &st);
        free(x);
        free(p);
        free(ref);
    }
    rf_report("perpo__softmax_rows vs perpo__ref_softmax_forward", &st, 1, "");
}

/* ---- attention: causal and bidirectional, forward (output and probabilities) and backward,
   adding into a dqkv that holds values ---- */
static void test_ref_attention(perpo_test *t) {
    static const size_t shapes[][4] = { /* B, T, D, H */
                                        { 1, 1, 4, 1 },
                                        { 2, 7, 12, 3 },
                                        { 1, 17, 16, 2 },
                                        { 2, 33, 8, 1 },
                                        { 1, 130, 32, 4 }
    };
    kx_rng r = { 26 };
    rf_stats fw, bw;
    size_t sh;
    int causal, exact = rf_same_rounding(); /* (the built-in tile in every build) */
    memset(&fw, 0, sizeof fw);
    memset(&bw, 0, sizeof bw);
    for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (causal = 0; causal < 2; causal++) {
            size_t B = shapes[sh][0], T = shapes[sh][1], D = shapes[sh][2], H = shapes[sh][3];
            float *qkv = rf_alloc(B * T * 3 * D), *out = rf_alloc(B * T * D),
                  *ref = rf_alloc(B * T * D), *att = rf_alloc(B * H * T * T),
                  *ratt = rf_alloc(B * H * T * T), *dout = rf_alloc(B * T * D),
                  *dq = rf_alloc(B * T * 3 * D), *rdq = rf_alloc(B * T * 3 * D),
                  *ws = rf_alloc(B * H * perpo__attention_ws_per_head(T)), *rws = rf_alloc(2 * T);
            kx_fill(&r, qkv, B * T * 3 * D, 1.5f);
            kx_fill(&r, dout, B * T * D, 1.0f);
            kx_fill(&r, dq, B * T * 3 * D, 1.0f);
            memcpy(rdq, dq, B * T * 3 * D * sizeof(float));
            perpo__attention_forward(out, att, qkv, B, T, D, H, causal);
            perpo__ref_attention_forward(ref, ratt, qkv, B, T, D, H, causal);
            rf_compare(t, "attention out", out, ref, B * T * D, exact, 1e-5, 1e-5, &fw);
            rf_compare(t, "attention probabilities", att, ratt, B * H * T * T, exact, 1e-6, 1e-5,
                       &fw);
            perpo__attention_backward(dq, dout, att, qkv, B, T, D, H, causal, ws);
            perpo__ref_attention_backward(rdq, dout, att, qkv, B, T, D, H, causal, rws);
            rf_compare(t, "attention dqkv", dq, rdq, B * T * 3 * D, exact, 1e-5, 1e-5, &bw);
            free(qkv);
            free(out);
            free(ref);
            free(att);
            free(ratt);
            free(dout);
            free(dq);
            free(rdq);
            free(ws);
            free(rws);
        }
    rf_report("perpo__attention_forward vs reference", &fw, exact, RF_WHY);
    rf_report("perpo__attention_backward vs reference", &bw, exact, RF_WHY);
}

/* ---- log-sum-exp of the logits ---- */
static void test_ref_logsumexp(perpo_test *t) {
    enum { N = 7, V = 260 };
    static float z[N * V], lse[N];
    int tg[N] = { 3, -1, 259, 0, 100, -1, 7 };
    kx_rng r = { 27 };
    size_t n;
    double total, want = 0.0;
    kx_fill(&r, z, N * V, 10.0f);
    z[V] = 1e4f; /* a row with one huge logit */
    total = perpo__ref_logsoftmax_forward(lse, z, tg, N, V);
    for (n = 0; n < N; n++) {
        float f = perpo__logsumexp(z + n * V, V);
        CHECK_MSG(memcmp(&f, &lse[n], sizeof f) == 0, "row %zu: perpo__logsumexp %.9g, ref %.9g", n,
                  f, lse[n]);
        if (tg[n] >= 0) want += (double)z[n * V + tg[n]] - (double)f;
    }
    CHECK(total == want);
}

/* ---- every reference backward against finite differences ---- */
typedef struct rf_fd {
    int op; /* 0 matmul, 1 linear, 2 layernorm, 3 gelu, 4 softmax, 5 attention, 6 log-softmax */
    size_t a, b, c, d;
    int f1, f2, causal;
    float *x, *y, *z, *out, *w, *s1, *s2;
    int *tg;
} rf_fd;
static double rf_fd_loss(void *p) {
    rf_fd *k = (rf_fd *)p;
    size_t n = 0;
    switch (k->op) {
    case 0:
        perpo__ref_matmul_forward(k->out, k->x, k->y, k->a, k->b, k->c, k->f1, k->f2, 0);
        n = k->a * k->b;
        break;
    case 1:
        perpo__ref_linear_forward(k->out, k->x, k->y, k->z, k->a, k->b, k->c);
        n = k->a * k->c;
        break;
    case 2:
        perpo__ref_layernorm_forward(k->out, k->s1, k->s2, k->x, k->y, k->z, k->a, k->b);
        n = k->a * k->b;
        break;
    case 3:
        perpo__ref_gelu_forward(k->out, k->x, k->a);
        n = k->a;
        break;
    case 4:
        perpo__ref_softmax_forward(k->out, k->x, k->a);
        n = k->a;
        break;
    case 5:
        perpo__ref_attention_forward(k->out, k->s1, k->x, k->a, k->b, k->c, k->d, k->causal);
        n = k->a * k->b * k->c;
        break;
    default: return 0.7 * perpo__ref_logsoftmax_forward(k->s1, k->x, k->tg, k->a, k->b);
    }
    return kx_dot(k->out, k->w, n);
}
static void test_ref_finite_differences(perpo_test *t) {
    kx_rng r = { 28 };
    rf_fd k;
    float x[4 * 45 * 3], y[300], z[64], out[300], w[300], s1[600], s2[64];
    float dx[4 * 45 * 3], dy[300], dz[64], ws[64];
    int tg[6] = { 2, -1, 0, 10, 4, -1 };
    int ta, tb, causal;
    memset(&k, 0, sizeof k);
    k.x = x;
    k.y = y;
    k.z = z;
    k.out = out;
    k.w = w;
    k.s1 = s1;
    k.s2 = s2;
    k.tg = tg;
    kx_fill(&r, w, 300, 1.0f);
    /* matmul (5,7) = op(A) (5,6) op(B) (6,7), all transposes */
    k.op = 0;
    k.a = 5;
    k.b = 7;
    k.c = 6;
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++) {
            k.f1 = ta;
            k.f2 = tb;
            kx_fill(&r, x, 30, 1.0f);
            kx_fill(&r, y, 42, 1.0f);
            memset(dx, 0, sizeof dx);
            memset(dy, 0, sizeof dy);
            perpo__ref_matmul_backward(dx, dy, w, x, y, 5, 7, 6, ta, tb);
            kx_check(t, "matmul dA", x, dx, 30, rf_fd_loss, &k);
            kx_check(t, "matmul dB", y, dy, 42, rf_fd_loss, &k);
        }
    /* linear (7,5) -> (7,9) */
    k.op = 1;
    k.a = 7;
    k.b = 5;
    k.c = 9;
    kx_fill(&r, x, 35, 1.0f);
    kx_fill(&r, y, 45, 0.5f);
    kx_fill(&r, z, 9, 0.5f);
    memset(dx, 0, sizeof dx);
    memset(dy, 0, sizeof dy);
    memset(dz, 0, sizeof dz);
    perpo__ref_linear_backward(dx, dy, dz, w, x, y, 7, 5, 9);
    kx_check(t, "linear dinp", x, dx, 35, rf_fd_loss, &k);
    kx_check(t, "linear dW", y, dy, 45, rf_fd_loss, &k);
    kx_check(t, "linear db", z, dz, 9, rf_fd_loss, &k);
    /* layernorm (6,11) */
    k.op = 2;
    k.a = 6;
    k.b = 11;
    kx_fill(&r, x, 66, 2.0f);
    kx_fill(&r, y, 11, 1.0f);
    kx_fill(&r, z, 11, 1.0f);
    rf_fd_loss(&k);
    memset(dx, 0, sizeof dx);
    memset(dy, 0, sizeof dy);
    memset(dz, 0, sizeof dz);
    perpo__ref_layernorm_backward(dx, dy, dz, w, x, y, s1, s2, 6, 11);
    kx_check(t, "layernorm dinp", x, dx, 66, rf_fd_loss, &k);
    kx_check(t, "layernorm dw", y, dy, 11, rf_fd_loss, &k);
    kx_check(t, "layernorm db", z, dz, 11, rf_fd_loss, &k);
    /* GELU (40) over [-4, 4] */
    k.op = 3;
    k.a = 40;
    kx_fill(&r, x, 40, 4.0f);
    perpo__ref_gelu_backward(dx, x, w, 40);
    kx_check(t, "gelu dinp", x, dx, 40, rf_fd_loss, &k);
    /* softmax (13) */
    k.op = 4;
    k.a = 13;
    kx_fill(&r, x, 13, 3.0f);
    rf_fd_loss(&k);
    memset(dx, 0, sizeof dx);
    perpo__ref_softmax_backward(dx, out, w, 13);
    kx_check(t, "softmax dx", x, dx, 13, rf_fd_loss, &k);
    /* attention: B 2, T 5, D 6, H 2 (hd 3), bidirectional and causal */
    k.op = 5;
    k.a = 2;
    k.b = 5;
    k.c = 6;
    k.d = 2;
    for (causal = 0; causal < 2; causal++) {
        k.causal = causal;
        kx_fill(&r, x, 2 * 5 * 18, 1.5f);
        rf_fd_loss(&k);
        memset(dx, 0, sizeof dx);
        perpo__ref_attention_backward(dx, w, s1, x, 2, 5, 6, 2, causal, ws);
        kx_check(t, causal ? "causal attention dqkv" : "attention dqkv", x, dx, 180, rf_fd_loss,
                 &k);
    }
    /* log-softmax at the targets: 6 rows of 11 logits, two without a target */
    k.op = 6;
    k.a = 6;
    k.b = 11;
    kx_fill(&r, x, 66, 3.0f);
    rf_fd_loss(&k);
    memset(dx, 0, sizeof dx);
    perpo__ref_logsoftmax_backward(dx, 0.7f, x, s1, tg, 6, 11);
    kx_check(t, "log-softmax dlogits", x, dx, 66, rf_fd_loss, &k);
}

const perpo_test_case perpo_tests_reference[] = {
    { "reference kernels: matrix product, 4 transposes, accumulate, awkward sizes",
      test_ref_matmul },
    { "reference kernels: linear forward (prepacked, epilogues) and backward", test_ref_linear },
    { "reference kernels: LayerNorm forward and backward", test_ref_layernorm },
    { "reference kernels: GELU forward and backward, tanh form to 1e-6", test_ref_gelu },
    { "reference kernels: softmax rows", test_ref_softmax },
    { "reference kernels: attention forward and backward, causal and bidirectional",
      test_ref_attention },
    { "reference kernels: log-sum-exp and the targets' log-probabilities", test_ref_logsumexp },
    { "reference kernels: every backward = finite differences", test_ref_finite_differences },
    { NULL, NULL }
};
