/* Where a training step's time goes, measured from bench/ (no hooks in the library): the
 * kernels of one SFT step are replayed one class at a time, at the model's sizes and batch,
 * through perpo.h's private kernel functions, in the order and with the buffers' sizes the
 * step uses them:
 *   products     every linear layer's forward, input gradient and weight gradient (patch
 *                embedding, vision and decoder blocks, projector, head), without epilogues
 *   attention    the attention core, forward and backward, of every block
 *   elementwise  LayerNorm forward and backward, GELU forward and backward, bias and residual
 *                adds, each as a separate pass over memory (in the step, GELU, bias and
 *                residual run inside the products' epilogues, so this class overstates them)
 * Each class is timed over R rounds (median). The step's own forward / backward / optimizer
 * split comes from bench_sft (public API). Included by bench.c, after perpo.h. */
#ifndef PERPO_BENCH_PROFILE_H
#define PERPO_BENCH_PROFILE_H

typedef struct prof_bufs {
    float *a, *b, *c, *w, *dw, *ws, *att, *mean, *rstd;
} prof_bufs;

/* one linear layer of n rows, C inputs, OC outputs: forward, then (backward) dx and dW */
static double prof_linear(const prof_bufs *p, size_t n, size_t C, size_t OC, int backward, int dx) {
    double f = 0.0;
    perpo__gemm(0, 1, n, OC, C, p->a, C, p->w, C, 0, p->c, OC, p->ws);
    f += 2.0 * (double)n * (double)C * (double)OC;
    if (backward) {
        if (dx) {
            perpo__gemm(0, 0, n, C, OC, p->c, OC, p->w, C, 0, p->b, C, p->ws);
            f += 2.0 * (double)n * C * OC;
        }
        perpo__gemm(1, 0, OC, C, n, p->c, OC, p->a, C, 0, p->dw, C,
                    p->ws); /* (= accumulating into zeros) */
        f += 2.0 * (double)n * C * OC;
    }
    return f;
}
static double prof_products(const perpo_model *m, const prof_bufs *p, size_t B, size_t n_img) {
    size_t D = m->D, M = m->M, Nv = n_img * m->NP, Nd = B * m->L, l;
    double f = prof_linear(p, Nv, m->PPC, D, 1, 0); /* patch embedding: no input gradient */
    for (l = 0; l < (size_t)m->cfg.n_vis_layers; l++)
        f += prof_linear(p, Nv, D, 3 * D, 1, 1) + prof_linear(p, Nv, D, D, 1, 1) +
             prof_linear(p, Nv, D, M, 1, 1) + prof_linear(p, Nv, M, D, 1, 1);
    f += 2.0 * prof_linear(p, Nv, D, D, 1, 1); /* projector */
    for (l = 0; l < (size_t)m->cfg.n_dec_layers; l++)
        f += prof_linear(p, Nd, D, 3 * D, 1, 1) + prof_linear(p, Nd, D, D, 1, 1) +
             prof_linear(p, Nd, D, M, 1, 1) + prof_linear(p, Nd, M, D, 1, 1);
    f += prof_linear(p, B * m->T, D, m->V, 1, 1); /* head */
    return f;
}
static void prof_attention(const perpo_model *m, const prof_bufs *p, size_t B, size_t n_img) {
    size_t l;
    for (l = 0; l < (size_t)m->cfg.n_vis_layers; l++) {
        perpo__attention_forward(p->c, p->att, p->a, n_img, m->NP, m->D, m->H, 0);
        perpo__attention_backward(p->b, p->c, p->att, p->a, n_img, m->NP, m->D, m->H, 0, p->ws);
    }
    for (l = 0; l < (size_t)m->cfg.n_dec_layers; l++) {
        perpo__attention_forward(p->c, p->att, p->a, B, m->L, m->D, m->H, 1);
        perpo__attention_backward(p->b, p->c, p->att, p->a, B, m->L, m->D, m->H, 1, p->ws);
    }
}
static void prof_add(float *y, const float *x, size_t n) {
    long i;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (i = 0; i < (long)n; i++) y[i] += x[i];
}
/* one block's element-wise passes over n rows */
static void prof_block_elementwise(const perpo_model *m, const prof_bufs *p, size_t n) {
    size_t D = m->D, M = m->M;
    const float *g = p->w, *bb = p->w + D;
    perpo__layernorm_forward(p->c, p->mean, p->rstd, p->a, g, bb, n, D); /* LN1 */
    prof_add(p->c, p->a, n * 3 * D);                                     /* qkv bias */
    prof_add(p->c, p->a, n * D);                                         /* out bias */
    prof_add(p->c, p->a, n * D);                                         /* residual */
    perpo__layernorm_forward(p->c, p->mean, p->rstd, p->a, g, bb, n, D); /* LN2 */
    prof_add(p->c, p->a, n * M);                                         /* fc bias */
    perpo__gelu_forward(p->b, p->a, n * M);
    prof_add(p->c, p->a, n * D); /* fc2 bias */
    prof_add(p->c, p->a, n * D); /* residual */
    perpo__gelu_backward(p->b, p->a, p->c, n * M);
    perpo__layernorm_backward(p->b, p->w + 2 * D, p->w + 3 * D, p->c, p->a, g, p->mean, p->rstd, n,
                              D);
    perpo__layernorm_backward(p->b, p->w + 2 * D, p->w + 3 * D, p->c, p->a, g, p->mean, p->rstd, n,
                              D);
}
static void prof_elementwise(const perpo_model *m, const prof_bufs *p, size_t B, size_t n_img) {
    size_t l, Nv = n_img * m->NP, Nd = B * m->L;
    for (l = 0; l < (size_t)m->cfg.n_vis_layers; l++) prof_block_elementwise(m, p, Nv);
    perpo__layernorm_forward(p->c, p->mean, p->rstd, p->a, p->w, p->w + m->D, Nv, m->D);
    perpo__gelu_forward(p->b, p->a, Nv * m->D);
    perpo__gelu_backward(p->b, p->a, p->c, Nv * m->D);
    perpo__layernorm_backward(p->b, p->w + 2 * m->D, p->w + 3 * m->D, p->c, p->a, p->w, p->mean,
                              p->rstd, Nv, m->D);
    for (l = 0; l < (size_t)m->cfg.n_dec_layers; l++) prof_block_elementwise(m, p, Nd);
    perpo__layernorm_forward(p->c, p->mean, p->rstd, p->a, p->w, p->w + m->D, B * m->T, m->D);
    perpo__layernorm_backward(p->b, p->w + 2 * m->D, p->w + 3 * m->D, p->c, p->a, p->w, p->mean,
                              p->rstd, B * m->T, m->D);
}

/* step_ms: the measured SFT step (median), best_gemm: the best GEMM rate of this run (0: none) */
static void bench_profile(const perpo_model *m, size_t B, double step_ms, double best_gemm) {
    size_t n_img = B, D = m->D, big, i, rows = B * m->L, wmax;
    prof_bufs p;
    double t_prod[256], t_att[256], t_ew[256], gf[256], flops = 0.0, med, mn, mx, prod_ms, att_ms,
                                                        ew_ms;
    char extra[512];
    int r;
    big = rows * (m->M > 3 * D ? m->M : 3 * D);
    if (B * m->T * m->V > big) big = B * m->T * m->V;
    wmax = m->M * D > m->V * D ? m->M * D : m->V * D;
    p.a = (float *)malloc(big * sizeof(float));
    p.b = (float *)malloc(big * sizeof(float));
    p.c = (float *)malloc(big * sizeof(float));
    p.w = (float *)malloc((wmax + 4 * D) * sizeof(float));
    p.dw = (float *)malloc(wmax * sizeof(float));
    p.ws = (float *)malloc((perpo__gemm_ws_floats(m->V > m->M ? m->V : m->M) +
                            B * m->H * perpo__attention_ws_per_head(m->L) + 16) *
                           sizeof(float));
    p.att = (float *)malloc(B * m->H * m->L * m->L * sizeof(float));
    p.mean = (float *)malloc(rows * sizeof(float));
    p.rstd = (float *)malloc(rows * sizeof(float));
    if (!p.a || !p.b || !p.c || !p.w || !p.dw || !p.ws || !p.att || !p.mean || !p.rstd)
        die("profile buffers", PERPO_ERR_NOMEM);
    for (i = 0; i < big; i++) {
        p.a[i] = frand() - 0.5f;
        p.b[i] = 0.0f;
        p.c[i] = frand() - 0.5f;
    }
    for (i = 0; i < wmax + 4 * D; i++) p.w[i] = 0.05f * (frand() - 0.5f);
    for (r = -1; r < g_opt.rounds; r++) {
        double t0 = now_s(), t1, t2, t3;
        flops = prof_products(m, &p, B, n_img);
        t1 = now_s();
        prof_attention(m, &p, B, n_img);
        t2 = now_s();
        prof_elementwise(m, &p, B, n_img);
        t3 = now_s();
        if (r < 0) continue;
        t_prod[r] = 1e3 * (t1 - t0);
        t_att[r] = 1e3 * (t2 - t1);
        t_ew[r] = 1e3 * (t3 - t2);
        gf[r] = flops / (t1 - t0) / 1e9;
    }
    stats(t_prod, g_opt.rounds, &prod_ms, &mn, &mx);
    stats(t_att, g_opt.rounds, &att_ms, &mn, &mx);
    stats(t_ew, g_opt.rounds, &ew_ms, &mn, &mx);
    snprintf(extra, sizeof extra, "\"step_ms\":%.4g,\"share_of_step\":%.3f", step_ms,
             step_ms > 0 ? prod_ms / step_ms : 0.0);
    emit("profile_products_ms", t_prod, g_opt.rounds, "ms", extra);
    snprintf(extra, sizeof extra, "\"step_ms\":%.4g,\"share_of_step\":%.3f", step_ms,
             step_ms > 0 ? att_ms / step_ms : 0.0);
    emit("profile_attention_ms", t_att, g_opt.rounds, "ms", extra);
    snprintf(extra, sizeof extra,
             "\"step_ms\":%.4g,\"share_of_step\":%.3f,\"note\":\"separate passes; fused into "
             "product epilogues in the step\"",
             step_ms, step_ms > 0 ? ew_ms / step_ms : 0.0);
    emit("profile_elementwise_ms", t_ew, g_opt.rounds, "ms", extra);
    stats(gf, g_opt.rounds, &med, &mn, &mx);
    snprintf(extra, sizeof extra,
             "\"product_gflop\":%.4g,\"best_gemm_gflops\":%.4g,\"fraction_of_best_gemm\":%.3f",
             flops / 1e9, best_gemm, best_gemm > 0 ? med / best_gemm : 0.0);
    emit("profile_products_gflops", gf, g_opt.rounds, "GFLOP/s", extra);
    free(p.a);
    free(p.b);
    free(p.c);
    free(p.w);
    free(p.dw);
    free(p.ws);
    free(p.att);
    free(p.mean);
    free(p.rstd);
}

#endif
