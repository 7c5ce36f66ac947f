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
        /* (where the sums differ, GELU's input does too: its tolerance, times GELU' <= 1.13) */
        rf_compare(t, "prepacked rows + bias + GELU", gel, gref, N * OC, 0,
                   1e-6 + (exact ? 0.0 : 1.2e-6 * (double)C), 1e-6, &ep);
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
              "x sigmoid(2u) against the tanh form: 1e-6 + 1e-6 |ref|, + 1.2e-6 C where the "
              "sums differ");
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

/* ---- the reference model against the fast path ---- */

/* A batch the tests share: 4 sequences over 3 images (sequences 1 and 2 share image 1), texts of
   different lengths, an empty prompt. */
typedef struct rf_batch {
    float *img[3];
    const float *imgs[3];
    size_t image_of[4];
    int tok[4 * 16], tgt[4 * 16];
    perpo_batch b;
} rf_batch;
static void rf_batch_make(rf_batch *rb, const perpo_config *c, kx_rng *r) {
    static const char *const prompts[4] = { "ab", "q", "", "at?" };
    static const char *const answers[4] = { "xyz", "42", "hello", "[1,2]" }; /* fit in 12 */
    size_t n = (size_t)c->image_h * (size_t)c->image_w * (size_t)c->channels, i, j,
           T = (size_t)c->max_text;
    for (i = 0; i < 3; i++) {
        rb->img[i] = rf_alloc(n);
        for (j = 0; j < n; j++) rb->img[i][j] = 0.5f + 0.5f * kx_uniform(r);
        rb->imgs[i] = rb->img[i];
    }
    rb->image_of[0] = 0;
    rb->image_of[1] = rb->image_of[2] = 1;
    rb->image_of[3] = 2;
    for (i = 0; i < 4; i++)
        if (perpo_text_encode(c, prompts[i], strlen(prompts[i]), answers[i], strlen(answers[i]),
                              rb->tok + i * T, rb->tgt + i * T, NULL) != PERPO_OK) {
            fprintf(stderr, "rf_batch_make: text %zu does not fit\n", i);
            exit(2);
        }
    rb->b.n_seq = 4;
    rb->b.n_img = 3;
    rb->b.images = rb->imgs;
    rb->b.image_of = rb->image_of;
    rb->b.tokens = rb->tok;
    rb->b.targets = rb->tgt;
}
static void rf_batch_free(rf_batch *rb) {
    size_t i;
    for (i = 0; i < 3; i++) free(rb->img[i]);
}
/* 2x4 patches with position channels and the sin-cos code, 2 vision and 2 decoder blocks. */
static perpo_config rf_model_config(void) {
    perpo_config c = perpo_config_default();
    c.image_h = 8;
    c.image_w = 12;
    c.channels = 3;
    c.patch_h = 2;
    c.patch_w = 4;
    c.pos_channels = 1;
    c.vis_sincos = 1;
    c.d_model = 24;
    c.n_heads = 3;
    c.n_vis_layers = 2;
    c.n_dec_layers = 2;
    c.mlp_mult = 3;
    c.max_text = 16;
    c.max_batch = 4;
    return c;
}
/* A model with weights larger than the initialisation's, so every path carries signal. */
static perpo_model *rf_model_make(perpo_test *t, const perpo_config *c, kx_rng *r) {
    perpo_model *m = NULL;
    size_t i;
    float *P;
    CHECK_OK(perpo_model_create(&m, c, 3));
    if (!m) return NULL;
    P = perpo_model_params(m);
    for (i = 0; i < perpo_model_num_params(m); i++) P[i] += 0.15f * kx_uniform(r);
    return m;
}
/* The batch into m as perpo_forward stores it, without running anything. */
static void rf_set_batch(perpo_model *m, const perpo_batch *b) {
    size_t i;
    m->n_seq = b->n_seq;
    m->n_img = b->n_img;
    memcpy(m->tokens, b->tokens, b->n_seq * m->T * sizeof(int));
    memcpy(m->targets, b->targets, b->n_seq * m->T * sizeof(int));
    for (i = 0; i < b->n_seq; i++) m->image_of[i] = b->image_of ? b->image_of[i] : i;
    m->have_forward = 1;
}
/* The fast path whatever the build's switch says: perpo_forward's team and its log-probs. */
static void rf_fast_forward(perpo_model *m, const perpo_batch *b, float *logp) {
    size_t s, t, V = m->V, T = m->T;
    rf_set_batch(m, b);
    (void)perpo__wpack_stale(m);
    perpo__forward_team(m, b->images, b->n_img);
    for (s = 0; s < b->n_seq; s++) {
        double lp = 0.0;
        for (t = 0; t < T; t++)
            if (m->targets[s * T + t] >= 0)
                lp += (double)m->logits[(s * T + t) * V + m->targets[s * T + t]] -
                      (double)m->lse[s * T + t];
        logp[s] = (float)lp;
    }
}
static void rf_ref_forward(perpo_model *m, const perpo_batch *b, float *logp) {
    rf_set_batch(m, b);
    perpo__ref_model_forward(m, b->images, b->n_img, logp);
}

/* Loss (log-probs), logits and every parameter gradient: the fast path against the reference on
 * the same model and batch. GELU's two forms differ in the last bits, so the paths agree to a
 * tolerance: log-probs and logits 1e-5 (1 + |ref|); each tensor's gradient 1e-5 x its largest
 * |gradient| + 1e-8. Then each backward after the other path's forward: the paths keep the same
 * activations, so either may follow either (exactly the same gradient as after its own forward
 * when the forwards agree to the last bit; here to the same tolerance). */
static void test_ref_model_matches_fast(perpo_test *t) {
    perpo_config c = rf_model_config();
    kx_rng r = { 31 };
    rf_batch rb;
    perpo_model *m;
    float lp_fast[4], lp_ref[4], dlogp[4] = { -0.25f, 0.7f, -1.3f, 0.4f }, *logits, *g_fast, *g_ref;
    size_t n, nl, i, k, worst_at = 0;
    double worst = 0.0, worst_logit = 0.0;
    const char *worst_name = "";
    int pass;
#ifdef PERPO_USE_BF16
    fprintf(stderr, "    skipped: this build's fast products round their inputs to bfloat16 (the "
                    "reference's are float32); the bfloat16 tests hold it\n");
    return;
#endif
    rf_batch_make(&rb, &c, &r);
    m = rf_model_make(t, &c, &r);
    if (!m) return;
    n = perpo_model_num_params(m);
    nl = 4 * m->T * m->V;
    logits = rf_alloc(nl);
    g_fast = rf_alloc(n);
    g_ref = rf_alloc(n);
    rf_fast_forward(m, &rb.b, lp_fast);
    memcpy(logits, m->logits, nl * sizeof(float));
    perpo_zero_grad(m);
    perpo__backward_team(m, dlogp);
    memcpy(g_fast, m->grads, n * sizeof(float));
    rf_ref_forward(m, &rb.b, lp_ref);
    for (i = 0; i < 4; i++) CHECK_NEAR(lp_fast[i], lp_ref[i], 1e-5, 1e-5);
    for (i = 0; i < nl; i++) {
        double e = fabs((double)logits[i] - m->logits[i]) / (1e-5 * (1.0 + fabs(m->logits[i])));
        if (e > worst_logit) worst_logit = e;
    }
    CHECK_MSG(worst_logit <= 1.0, "logits: worst error / tolerance %.3g", worst_logit);
    for (pass = 0; pass < 2; pass++) {
        /* pass 0: the reference backward after the reference forward; pass 1: the fast backward
           after the reference forward (g_ref from pass 0 stays the comparison) */
        perpo_zero_grad(m);
        if (pass == 0) {
            perpo__ref_model_backward(m, dlogp);
            memcpy(g_ref, m->grads, n * sizeof(float));
        } else
            perpo__backward_team(m, dlogp);
        for (k = 0; k < perpo_model_num_tensors(m); k++) {
            const char *name;
            size_t o, rows, cols, cnt, j;
            double scale = 0.0, err = 0.0;
            const float *a = pass == 0 ? g_fast : m->grads;
            perpo_model_tensor(m, k, &name, &o, &rows, &cols);
            cnt = rows * (cols ? cols : 1);
            for (j = o; j < o + cnt; j++) {
                if (fabs(g_ref[j]) > scale) scale = fabs(g_ref[j]);
                if (fabs((double)a[j] - g_ref[j]) > err) err = fabs((double)a[j] - g_ref[j]);
            }
            CHECK_MSG(scale > 0.0 && err <= 1e-5 * scale + 1e-8,
                      "%s (pass %d): largest |gradient| %.3g, worst |fast - ref| %.3g", name, pass,
                      scale, err);
            if (pass == 0 && err / (1e-5 * scale + 1e-8) > worst) {
                worst = err / (1e-5 * scale + 1e-8);
                worst_name = name;
                worst_at = k;
            }
        }
    }
    fprintf(stderr,
            "    %zu parameters in %zu tensors: worst gradient error / tolerance %.3g (%s, tensor "
            "%zu); logits %.3g; logp %.9g vs %.9g\n",
            n, perpo_model_num_tensors(m), worst, worst_name, worst_at, worst_logit, lp_fast[0],
            lp_ref[0]);
    free(logits);
    free(g_fast);
    free(g_ref);
    perpo_model_free(m);
    rf_batch_free(&rb);
}

/* A training step: two copies of one model, each a forward, a backward (gradients to the rule
 * above) and an AdamW step (clipping, decay), one on each path. A first AdamW step moves each
 * parameter by u = lr x / (|x| + eps), x its clipped gradient: about lr whatever |x|, except where
 * |x| is near eps (1e-8), where the last bits of x matter. So each parameter must agree to
 * 1e-6 + 1e-5 |p|, plus the most the two paths' difference in its gradient can move u there:
 * 2 lr |x_fast - x_ref| / (min |x| + eps), which is negligible unless |x| is tiny. The key biases
 * are left out: their exact gradient is zero (softmax does not see them), both paths hold
 * rounding noise there. A gradient wrong in sign or size moves its parameter by about 2 lr. */
static void test_ref_model_adamw_step(perpo_test *t) {
    perpo_config c = rf_model_config();
    kx_rng r = { 32 };
    rf_batch rb;
    perpo_model *a, *b = NULL;
    perpo_optim_config oc = perpo_optim_default();
    float lp[4], dlogp[4] = { -0.2f, -0.2f, -0.2f, -0.2f }, gn_fast = 0.0f, gn_ref = 0.0f, *ga, *gb;
    size_t n, i, k, bad = 0, bad_g = 0, skipped = 0, widened = 0;
    double worst = 0.0, mult;
    unsigned char *skip;
#ifdef PERPO_USE_BF16
    fprintf(stderr, "    skipped: this build's fast products round their inputs to bfloat16 (the "
                    "reference's are float32); the bfloat16 tests hold it\n");
    return;
#endif
    rf_batch_make(&rb, &c, &r);
    a = rf_model_make(t, &c, &r);
    CHECK_OK(perpo_model_create(&b, &c, 9));
    if (!a || !b) return;
    CHECK_OK(perpo_model_copy_params(b, a));
    n = perpo_model_num_params(a);
    oc.lr = 1e-3f;
    oc.warmup_steps = 0;
    rf_fast_forward(a, &rb.b, lp);
    perpo_zero_grad(a);
    perpo__backward_team(a, dlogp);
    rf_ref_forward(b, &rb.b, lp);
    perpo_zero_grad(b);
    perpo__ref_model_backward(b, dlogp);
    ga = rf_alloc(n);
    gb = rf_alloc(n);
    skip = (unsigned char *)calloc(n, 1);
    memcpy(ga, a->grads, n * sizeof(float));
    memcpy(gb, b->grads, n * sizeof(float));
    CHECK_OK(perpo_optim_step(a, &oc, 1.0f, &gn_fast));
    CHECK_OK(perpo_optim_step(b, &oc, 1.0f, &gn_ref));
    CHECK_NEAR(gn_fast, gn_ref, 0, 1e-5);
    mult = gn_ref > oc.clip_norm ? oc.clip_norm / (gn_ref + 1e-6) : 1.0;
    for (k = 0; skip && k < perpo_model_num_tensors(a); k++) {
        const char *name;
        size_t o, rows, cols, cnt, j;
        double scale = 0.0;
        perpo_model_tensor(a, k, &name, &o, &rows, &cols);
        cnt = rows * (cols ? cols : 1);
        for (j = o; j < o + cnt; j++)
            if (fabs(gb[j]) > scale) scale = fabs(gb[j]);
        for (j = o; j < o + cnt; j++)
            bad_g += !(fabs((double)ga[j] - gb[j]) <= 1e-5 * scale + 1e-8);
        if (strstr(name, "qkv_b")) memset(skip + o + rows / 3, 1, rows / 3);
    }
    CHECK_MSG(bad_g == 0, "%zu gradient elements differ by more than 1e-5 of their tensor's scale",
              bad_g);
    for (i = 0; skip && i < n; i++) {
        double pa = a->params[i], pb = b->params[i], xa = fabs(ga[i] * mult),
               xb = fabs(gb[i] * mult), lo = xa < xb ? xa : xb;
        double sens = 2.0 * oc.lr * fabs((double)ga[i] - gb[i]) * mult / (lo + oc.eps);
        double tol = 1e-6 + 1e-5 * fabs(pb) + sens, e = fabs(pa - pb) / tol;
        if (skip[i]) {
            skipped++;
            continue;
        }
        widened += sens > 1e-6 + 1e-5 * fabs(pb);
        if (e > worst) worst = e;
        if (e > 1.0 && bad++ < 3)
            fprintf(stderr,
                    "  FAIL param %zu: fast path %.9g, reference %.9g (gradients %.3g, %.3g)\n", i,
                    pa, pb, ga[i], gb[i]);
    }
    CHECK(skip && bad == 0);
    fprintf(stderr,
            "    one AdamW step: gradient norm %.7g (fast) vs %.7g (reference); %zu parameters "
            "compared (%zu key biases left out; %zu with a gradient so small that its last bits "
            "widened the tolerance), worst error / tolerance %.3g\n",
            gn_fast, gn_ref, n - skipped, skipped, widened, worst);
    free(ga);
    free(gb);
    free(skip);
    perpo_model_free(a);
    perpo_model_free(b);
    rf_batch_free(&rb);
}

/* The reference model's gradient against finite differences of its own loss sum_b w_b logp_b,
 * on a tiny config: in every tensor the 3 elements of largest |gradient|, perturbed by +-2e-2;
 * max |fd - analytic| <= 2e-2 x the tensor's largest |gradient| + 1e-4 (t_model.c's rule). */
#define RF_H 2e-2f /* the step (1e-2 leaves float32 rounding noise at the tolerance's edge) */
static double rf_ref_loss(perpo_model *m, const perpo_batch *b, const float *w) {
    float lp[4];
    rf_ref_forward(m, b, lp);
    return (double)w[0] * lp[0] + (double)w[1] * lp[1] + (double)w[2] * lp[2] +
           (double)w[3] * lp[3];
}
static void test_ref_model_finite_differences(perpo_test *t) {
    perpo_config c = rf_model_config();
    kx_rng r = { 33 };
    rf_batch rb;
    perpo_model *m;
    float w[4] = { 0.7f, -0.4f, 0.3f, 0.5f }, *grad, *P;
    size_t k, n_checked = 0;
    double worst = 0.0;
    const char *worst_name = "";
    c.image_w = 8;
    c.d_model = 12;
    c.n_vis_layers = 1;
    c.mlp_mult = 2;
    c.max_text = 12;
    rf_batch_make(&rb, &c, &r);
    m = rf_model_make(t, &c, &r);
    if (!m) return;
    P = m->params;
    rf_ref_loss(m, &rb.b, w);
    perpo_zero_grad(m);
    perpo__ref_model_backward(m, w);
    grad = rf_alloc(perpo_model_num_params(m));
    memcpy(grad, m->grads, perpo_model_num_params(m) * sizeof(float));
    for (k = 0; k < perpo_model_num_tensors(m); k++) {
        const char *name;
        size_t o, rows, cols, cnt, j, q, pick[3] = { 0, 0, 0 }, npick;
        double scale = 0.0, err = 0.0;
        perpo_model_tensor(m, k, &name, &o, &rows, &cols);
        cnt = rows * (cols ? cols : 1);
        npick = cnt < 3 ? cnt : 3;
        for (q = 0; q < npick; q++) { /* the npick largest |gradient|, distinct */
            size_t best = (size_t)-1, u;
            for (j = o; j < o + cnt; j++) {
                int taken = 0;
                for (u = 0; u < q; u++) taken |= pick[u] == j;
                if (!taken && (best == (size_t)-1 || fabsf(grad[j]) > fabsf(grad[best]))) best = j;
            }
            pick[q] = best;
        }
        for (q = 0; q < npick; q++) {
            float keep = P[pick[q]];
            double lp, lm, fd, an = grad[pick[q]];
            P[pick[q]] = keep + RF_H;
            lp = rf_ref_loss(m, &rb.b, w);
            P[pick[q]] = keep - RF_H;
            lm = rf_ref_loss(m, &rb.b, w);
            P[pick[q]] = keep;
            fd = (lp - lm) / ((double)(keep + RF_H) - (double)(keep - RF_H));
            if (fabs(an) > scale) scale = fabs(an);
            if (fabs(fd - an) > err) err = fabs(fd - an);
            n_checked++;
        }
        CHECK_MSG(scale > 0.0 && err <= 2e-2 * scale + 1e-4,
                  "%s: largest |gradient| %.3g, worst |fd - analytic| %.3g", name, scale, err);
        if (err / (2e-2 * scale + 1e-4) > worst) {
            worst = err / (2e-2 * scale + 1e-4);
            worst_name = name;
        }
    }
    fprintf(stderr, "    %zu parameters over %zu tensors, worst error / tolerance %.3g (%s)\n",
            n_checked, perpo_model_num_tensors(m), worst, worst_name);
    free(grad);
    perpo_model_free(m);
    rf_batch_free(&rb);
}

/* ---- a small preference run on whichever path the build runs (PERPO_REFERENCE: the
   reference) ---- */

/* Reward of an answer about image `item`: 1 - normalized edit distance to its word. */
static const char *const rf_words[4] = { "red", "blue", "green", "gray" };
static float rf_word_reward(const char *r, size_t len, size_t item, void *user) {
    float reward = 0.0f;
    (void)user;
    return perpo_ocr_reward(r, len, rf_words[item], strlen(rf_words[item]), &reward, NULL) ==
                   PERPO_OK
               ? reward
               : 0.0f;
}
static int rf_keep_progress(const perpo_progress *p, void *user) {
    perpo_progress *log = (perpo_progress *)user;
    log[p->step - 1] = *p;
    return 0;
}
/* The whole preference pipeline through the public API on a tiny model: SFT for a few steps
 * (the answers are still uncertain), 6 answers per image sampled at temperature 1, rewards,
 * filter, reference log-probs, 30 PerPO steps. Training must rank the lists: before it every
 * implicit reward is 0 (the policy is the reference); after it, on the training lists, the
 * pairs ranked right (rewards/accuracies of the last 5 steps) average at least 0.6 and the
 * margins and the loss improve on the first 5 steps'. Checks properties of optimization on
 * fixed lists, not a trajectory: it holds on either path. */
static void test_ref_small_preference_run(perpo_test *t) {
    enum { NI = 4, NR = 6, STEPS = 30 };
    static float img[NI][8 * 8 * 3];
    perpo_config c = perpo_config_default();
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_example ex[NI];
    perpo_model *sft = NULL, *policy = NULL;
    perpo_pref_set set;
    perpo_progress log[STEPS];
    size_t kept = 0, i, j;
    double acc0 = 0, acc1 = 0, mar0 = 0, mar1 = 0, loss0 = 0, loss1 = 0;
    kx_rng r = { 41 };
    pc.optim.lr = 1e-4f; /* the rate this test was tuned with (the default is 1e-5) */
    pc.optim.min_lr = 1e-5f;
    memset(&set, 0, sizeof set);
    memset(log, 0, sizeof log);
    for (i = 0; i < NI; i++) { /* a colour per image, with noise */
        for (j = 0; j < 8 * 8 * 3; j++)
            img[i][j] = 0.5f + 0.4f * (float)(((j % 3) + i) % 4 == 0) - 0.2f * (float)(i == 3) +
                        0.1f * kx_uniform(&r);
        ex[i].image = img[i];
        ex[i].prompt = "colour?";
        ex[i].response = rf_words[i];
    }
    c.image_h = c.image_w = 8;
    c.patch_h = c.patch_w = 4;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.mlp_mult = 2;
    c.max_text = 16;
    c.max_batch = 12;
    CHECK_OK(perpo_model_create(&sft, &c, 7));
    CHECK_OK(perpo_model_create(&policy, &c, 8));
    if (!sft || !policy) return;
    tc.batch_size = NI;
    tc.optim.lr = 3e-3f;
    tc.optim.warmup_steps = 5;
    tc.optim.total_steps = 40;
    tc.log_every = 1000;
    CHECK_OK(perpo_sft_train(sft, ex, NI, &tc, NULL, NULL));
    sc.temperature = 1.0f;
    sc.max_new_tokens = 8;
    sc.seed = 3;
    CHECK_OK(perpo_pref_sample(sft, ex, NI, NR, &sc, rf_word_reward, NULL, &set));
    kept = perpo_pref_filter(set.lists, set.n_lists, 0.1f);
    CHECK_MSG(kept >= 2, "only %zu of %zu lists have a reward gap", kept, set.n_lists);
    CHECK_OK(perpo_pref_reference(sft, set.lists, kept));
    CHECK_OK(perpo_model_copy_params(policy, sft));
    pc.objective.beta = 1.0f;
    pc.lists_per_step = 2;
    pc.optim.lr = 2e-3f;
    pc.optim.min_lr = 2e-4f;
    pc.optim.warmup_steps = 2;
    pc.optim.total_steps = STEPS;
    pc.log_every = 1;
    CHECK_OK(perpo_pref_train(policy, set.lists, kept, &pc, rf_keep_progress, log));
    for (i = 0; i < 5; i++) {
        acc0 += log[i].reward_accuracy / 5;
        acc1 += log[STEPS - 1 - i].reward_accuracy / 5;
        mar0 += log[i].reward_margin / 5;
        mar1 += log[STEPS - 1 - i].reward_margin / 5;
        loss0 += log[i].loss / 5;
        loss1 += log[STEPS - 1 - i].loss / 5;
    }
    CHECK_MSG(log[STEPS - 1].step == STEPS && acc1 >= 0.6 && mar1 > mar0 && loss1 < loss0,
              "steps %d; accuracy %.3f -> %.3f, margin %.3f -> %.3f, loss %.4f -> %.4f",
              log[STEPS - 1].step, acc0, acc1, mar0, mar1, loss0, loss1);
    fprintf(stderr,
            "    %s path, %zu lists of %d: first 5 steps -> last 5: pairs ranked right %.3f -> "
            "%.3f, margin %.3f -> %.3f, loss %.4f -> %.4f\n",
            PERPO__REFERENCE ? "reference" : "fast", kept, NR, acc0, acc1, mar0, mar1, loss0,
            loss1);
    perpo_pref_set_free(&set);
    perpo_model_free(sft);
    perpo_model_free(policy);
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
    { "reference model = fast path: log-probs, logits, every parameter gradient",
      test_ref_model_matches_fast },
    { "reference model = fast path after one AdamW step", test_ref_model_adamw_step },
    { "reference model: every tensor's gradient = finite differences",
      test_ref_model_finite_differences },
    { "reference path (or fast, as built): a small preference run ranks its lists",
      test_ref_small_preference_run },
    { NULL, NULL }
};
