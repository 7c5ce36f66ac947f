/* Listwise objectives (PerPO, DPO, LiPO-lambda, ListMLE) and the preference metrics. */
#include "../perpo.h"
#include "test.h"
#include "ref/listwise_ref.h"

static const perpo_objective all_kinds[4] = { PERPO_OBJ_PERPO, PERPO_OBJ_DPO, PERPO_OBJ_LIPO,
                                              PERPO_OBJ_LISTMLE };

static perpo_objective_config config(perpo_objective kind, float beta, float gamma, float eps) {
    perpo_objective_config c = perpo_objective_default(kind);
    c.beta = beta;
    c.gamma = gamma;
    c.label_smoothing = eps;
    return c;
}

/* The pair loss l(x) = -(1-eps) log sigmoid(x) - eps log sigmoid(-x), written directly. */
static double pair_loss(double x, double eps) {
    return -(1.0 - eps) * log(1.0 / (1.0 + exp(-x))) - eps * log(1.0 / (1.0 + exp(x)));
}

/* Against tests/ref/listwise_ref.h (PyTorch float64 autograd). The C code computes in double
 * and rounds to float, so |got - ref| <= 1e-6 + 1e-5 |ref| for the loss and every gradient. */
static void test_reference(perpo_test *t) {
    size_t c;
    int k;
    for (c = 0; c < sizeof perpo_ref_lw_cases / sizeof perpo_ref_lw_cases[0]; c++) {
        const perpo_ref_lw_case *rc = &perpo_ref_lw_cases[c];
        const float *in = perpo_ref_lw_inputs + rc->input;
        const double *want = perpo_ref_lw_grads + rc->grad;
        perpo_objective_config cfg = config(rc->kind, rc->beta, rc->gamma, rc->label_smoothing);
        float loss = -1.0f, loss2 = -1.0f, g[PERPO_MAX_LIST];
        cfg.positive = rc->positive;
        perpo_status st =
            perpo_listwise_loss(&cfg, rc->n, in, in + rc->n, in + 2 * rc->n, &loss, g);
        CHECK_MSG(st == PERPO_OK, "case %u (%s, kind %d): status %d", (unsigned)c, rc->name,
                  (int)rc->kind, (int)st);
        if (st != PERPO_OK) continue;
        CHECK_MSG(fabs(loss - rc->loss) <= 1e-6 + 1e-5 * fabs(rc->loss),
                  "case %u (%s, kind %d, beta %g, gamma %g, eps %g): loss %.9g, want %.9g",
                  (unsigned)c, rc->name, (int)rc->kind, rc->beta, rc->gamma, rc->label_smoothing,
                  loss, rc->loss);
        for (k = 0; k < rc->n; k++)
            CHECK_MSG(fabs(g[k] - want[k]) <= 1e-6 + 1e-5 * fabs(want[k]),
                      "case %u (%s, kind %d): grad[%d] %.9g, want %.9g", (unsigned)c, rc->name,
                      (int)rc->kind, k, g[k], want[k]);
        /* the gradient is optional and does not change the loss */
        CHECK_OK(perpo_listwise_loss(&cfg, rc->n, in, in + rc->n, in + 2 * rc->n, &loss2, NULL));
        CHECK(loss2 == loss);
    }
}

/* Central finite differences in logp. Inputs are floats, so h is the step actually taken
 * after rounding. s = (1.5, -2.25, 1.75, -3.75, -2.5, 2.5) has gaps >= 0.25 >> h = 1e-2, so
 * LiPO's ranks stay fixed within +-h; the error is ~1e-5; tolerance 2e-4 + 1e-3 |g|. */
static void test_finite_differences(perpo_test *t) {
    static const float logp[6] = { -12.5f, -20.25f, -8.0f, -15.75f, -30.5f, -11.0f };
    static const float ref[6] = { -14.0f, -18.0f, -9.75f, -12.0f, -28.0f, -13.5f };
    static const float reward[6] = { 0.3f, 0.9f, 0.1f, 0.55f, 0.7f, 0.3f }; /* one tie */
    static const float betas[2] = { 0.1f, 1.0f };
    int kind, b, k, pos;
    for (kind = 0; kind < 4; kind++)
        for (b = 0; b < 2; b++)
            for (pos = 0; pos < 2; pos++) { /* without and with DPO-Positive's penalty */
                perpo_objective_config cfg = config(all_kinds[kind], betas[b], 0.5f, 0.1f);
                float g[6], lp[6], lo, hi, h;
                cfg.positive =
                    pos ? 2.0f : 0.0f; /* s has both signs, none within h of the kink 0 */
                memcpy(lp, logp, sizeof lp);
                CHECK_OK(perpo_listwise_loss(&cfg, 6, lp, ref, reward, &lo, g));
                for (k = 0; k < 6; k++) {
                    float up, down;
                    lp[k] = logp[k] + 1e-2f;
                    up = lp[k];
                    CHECK_OK(perpo_listwise_loss(&cfg, 6, lp, ref, reward, &hi, NULL));
                    lp[k] = logp[k] - 1e-2f;
                    down = lp[k];
                    CHECK_OK(perpo_listwise_loss(&cfg, 6, lp, ref, reward, &lo, NULL));
                    lp[k] = logp[k];
                    h = up - down;
                    CHECK_MSG(fabs((hi - lo) / h - g[k]) <= 2e-4 + 1e-3 * fabs(g[k]),
                              "kind %d beta %g positive %g: d/dlogp[%d] fd %.6g vs analytic %.6g",
                              kind, betas[b], cfg.positive, k, (hi - lo) / h, g[k]);
                }
            }
}

/* PerPO on a hand-worked list: R = (1, 0, 0.5), s = 0, gamma = 1. Gaps 1, 0.5, 0.5 give
 * weights 1/2, 1/4, 1/4; every pair loss is log 2 and dl/dx = -1/2 at x = 0, so
 * dL/ds = beta * (-(1/2 + 1/4), +(1/2 + 1/4), -1/4 + 1/4) / 2. */
static void test_perpo_hand(perpo_test *t) {
    const float lp[3] = { -5, -5, -5 }, ref[3] = { -5, -5, -5 }, r[3] = { 1.0f, 0.0f, 0.5f };
    perpo_objective_config cfg = config(PERPO_OBJ_PERPO, 0.1f, 1.0f, 0.0f);
    float loss, g[3];
    CHECK_OK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, g));
    CHECK_NEAR(loss, log(2.0), 1e-7, 0);
    CHECK_NEAR(g[0], -0.0375, 1e-8, 0);
    CHECK_NEAR(g[1], 0.0375, 1e-8, 0);
    CHECK_NEAR(g[2], 0.0, 1e-8, 0);
    /* weights are normalized: with s = 0 every objective built on l() gives log 2 */
    cfg = config(PERPO_OBJ_LIPO, 0.1f, 1.0f, 0.1f);
    CHECK_OK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, g));
    CHECK_NEAR(loss, log(2.0), 1e-7, 0);
    /* gamma = 0: uniform weights over pairs with distinct rewards */
    {
        const float s_lp[4] = { 1.0f, -0.5f, 2.0f, 0.25f }, zero[4] = { 0, 0, 0, 0 };
        const float rr[4] = { 0.2f, 0.8f, 0.2f, 0.5f }; /* pairs: (1,0) (1,2) (1,3) (3,0) (3,2) */
        const int wi[5] = { 1, 1, 1, 3, 3 }, lj[5] = { 0, 2, 3, 0, 2 };
        double want = 0.0;
        int p;
        cfg = config(PERPO_OBJ_PERPO, 1.0f, 0.0f, 0.1f);
        for (p = 0; p < 5; p++) want += pair_loss(s_lp[wi[p]] - s_lp[lj[p]], 0.1) / 5.0;
        CHECK_OK(perpo_listwise_loss(&cfg, 4, s_lp, zero, rr, &loss, NULL));
        CHECK_NEAR(loss, want, 1e-7, 1e-6);
    }
}

/* The formula that perpo_listwise_loss's declaration states for PERPO, computed as written
 * there (P = {(i, j) : r_i > r_j}, w_ij = |r_i - r_j|^gamma / sum over P, x_ij = s_i - s_j -
 * positive max(0, -s_i) with s = beta (logp - ref_logp), L = sum w_ij l(x_ij) and
 * dL/dlogp_k = beta (sum_{(k,j)} w l'(x) (1 + positive [s_k < 0]) - sum_{(i,k)} w l'(x))) on
 * lists of 3 with every term on: label smoothing 0.1, DPO-Positive 1.5 with a preferred response
 * below the reference, gamma 0.5; then a tie, also at gamma 0, where counting the tie as a pair
 * would change every weight. */
static void test_documented_formula(perpo_test *t) {
    static const float lp[3][3] = { { -4.0f, -6.5f, -5.5f },
                                    { -7.0f, -3.0f, -5.5f },
                                    { -7.0f, -3.0f, -5.5f } };
    static const float ref[3][3] = { { -4.5f, -6.0f, -5.25f },
                                     { -6.0f, -3.5f, -5.0f },
                                     { -6.0f, -3.5f, -5.0f } };
    static const float r[3][3] = { { 0.8f, 0.2f, 0.5f },
                                   { 0.7f, 0.7f, 0.1f },
                                   { 0.7f, 0.7f, 0.1f } };
    static const float gammas[3] = { 0.5f, 0.5f, 0.0f };
    const double beta = 0.2f, eps = 0.1f, positive = 1.5; /* (the config's floats) */
    int c, i, j, k;
    for (c = 0; c < 3; c++) {
        perpo_objective_config cfg = config(PERPO_OBJ_PERPO, (float)beta, gammas[c], (float)eps);
        double s[3], g[3] = { 0.0, 0.0, 0.0 }, wsum = 0.0, L = 0.0;
        float loss, grad[3];
        cfg.positive = (float)positive;
        for (k = 0; k < 3; k++) s[k] = beta * ((double)lp[c][k] - (double)ref[c][k]);
        for (i = 0; i < 3; i++)
            for (j = 0; j < 3; j++)
                if (r[c][i] > r[c][j]) wsum += pow(fabs((double)r[c][i] - r[c][j]), gammas[c]);
        for (i = 0; i < 3; i++)
            for (j = 0; j < 3; j++) {
                double w, x, dl;
                if (!(r[c][i] > r[c][j])) continue; /* a tie, or the other order: no pair */
                w = pow(fabs((double)r[c][i] - r[c][j]), gammas[c]) / wsum;
                x = s[i] - s[j] - positive * (s[i] < 0.0 ? -s[i] : 0.0);
                L += w *
                     (-(1.0 - eps) * log(1.0 / (1.0 + exp(-x))) - eps * log(1.0 / (1.0 + exp(x))));
                dl = -(1.0 - eps) / (1.0 + exp(x)) + eps / (1.0 + exp(-x)); /* l'(x) */
                g[i] += beta * w * dl * (1.0 + (s[i] < 0.0 ? positive : 0.0));
                g[j] -= beta * w * dl;
            }
        CHECK_OK(perpo_listwise_loss(&cfg, 3, lp[c], ref[c], r[c], &loss, grad));
        CHECK_NEAR(loss, L, 1e-7, 1e-6);
        for (k = 0; k < 3; k++) CHECK_NEAR(grad[k], g[k], 1e-8, 1e-6);
    }
}

/* DPO-Positive by hand, one pair: s = (-2, -5), beta 0.5, lambda 3. The preferred response is
 * 2 nats below the reference, so the margin is 0.5 (-2 + 5 - 3 * 2) = -1.5: loss softplus(1.5),
 * dL/ds_0 = -sigma(1.5) * 0.5 * (1 + 3), dL/ds_1 = +sigma(1.5) * 0.5. Above the reference
 * (s_0 = +1) the penalty is 0 and the pair is plain DPO. ListMLE ignores lambda. */
static void test_positive_hand(perpo_test *t) {
    const float lp[2] = { -12.0f, -25.0f }, ref[2] = { -10.0f, -20.0f }, r[2] = { 0.9f, 0.1f };
    const float lp_up[2] = { -9.0f, -25.0f };
    double sig = 1.0 / (1.0 + exp(-1.5));
    float loss, plain, g[2];
    int kind;
    for (kind = 0; kind < 3; kind++) { /* PerPO, DPO, LiPO: one pair, the same loss */
        perpo_objective_config cfg = config(all_kinds[kind], 0.5f, 0.5f, 0.0f);
        cfg.positive = 3.0f;
        CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &loss, g));
        CHECK_NEAR(loss, log1p(exp(1.5)), 1e-7, 1e-6);
        CHECK_NEAR(g[0], -sig * 0.5 * 4.0, 1e-7, 1e-6);
        CHECK_NEAR(g[1], sig * 0.5, 1e-7, 1e-6);
        CHECK_OK(perpo_listwise_loss(&cfg, 2, lp_up, ref, r, &loss, g));
        cfg.positive = 0.0f;
        CHECK_OK(perpo_listwise_loss(&cfg, 2, lp_up, ref, r, &plain, NULL));
        CHECK(loss == plain);
    }
    {
        perpo_objective_config cfg = config(PERPO_OBJ_LISTMLE, 0.5f, 0.5f, 0.0f);
        CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &plain, NULL));
        cfg.positive = 3.0f;
        CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &loss, NULL));
        CHECK(loss == plain);
    }
}

/* ListMLE with n = 2 is softplus(z_worse - z_better); label smoothing is ignored. */
static void test_listmle_hand(perpo_test *t) {
    const float lp[2] = { -3.0f, -1.0f }, ref[2] = { -2.0f, -2.5f }, r[2] = { 0.0f, 1.0f };
    perpo_objective_config cfg = config(PERPO_OBJ_LISTMLE, 0.5f, 0.5f, 0.0f);
    float loss, loss_eps, g[2];
    double z0 = 0.5 * (-1.0), z1 = 0.5 * 1.5, sig = 1.0 / (1.0 + exp(-(z0 - z1)));
    CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &loss, g));
    CHECK_NEAR(loss, log1p(exp(z0 - z1)), 1e-7, 1e-6);
    CHECK_NEAR(g[0], 0.5 * sig, 1e-7, 1e-6);
    CHECK_NEAR(g[1], -0.5 * sig, 1e-7, 1e-6);
    cfg.label_smoothing = 0.3f;
    CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &loss_eps, NULL));
    CHECK(loss_eps == loss);
}

/* With two responses DPO, PerPO (any gamma) and LiPO are the same single pair loss. */
static void test_dpo_equals_perpo_n2(perpo_test *t) {
    static const float gammas[4] = { 0.0f, 0.5f, 1.0f, 2.0f }, epss[2] = { 0.0f, 0.1f };
    const float lp[2] = { -7.5f, -4.0f }, ref[2] = { -6.0f, -6.5f };
    const float r_a[2] = { 0.9f, 0.1f }, r_b[2] = { 0.25f, 0.75f };
    int gi, ei, o;
    for (o = 0; o < 2; o++)
        for (gi = 0; gi < 4; gi++)
            for (ei = 0; ei < 2; ei++) {
                const float *r = o ? r_b : r_a;
                perpo_objective_config cp = config(PERPO_OBJ_PERPO, 0.1f, gammas[gi], epss[ei]);
                perpo_objective_config cd = config(PERPO_OBJ_DPO, 0.1f, gammas[gi], epss[ei]);
                perpo_objective_config cl = config(PERPO_OBJ_LIPO, 0.1f, gammas[gi], epss[ei]);
                float lp_, ld, ll, gp[2], gd[2], gl[2];
                CHECK_OK(perpo_listwise_loss(&cp, 2, lp, ref, r, &lp_, gp));
                CHECK_OK(perpo_listwise_loss(&cd, 2, lp, ref, r, &ld, gd));
                CHECK_OK(perpo_listwise_loss(&cl, 2, lp, ref, r, &ll, gl));
                CHECK_NEAR(lp_, ld, 0, 1e-7);
                CHECK_NEAR(ll, ld, 0, 1e-7);
                CHECK_NEAR(gp[0], gd[0], 0, 1e-7);
                CHECK_NEAR(gp[1], gd[1], 0, 1e-7);
                CHECK_NEAR(gl[0], gd[0], 0, 1e-7);
                CHECK_NEAR(gl[1], gd[1], 0, 1e-7);
                /* and it is the textbook formula */
                {
                    double sw = o ? (lp[1] - ref[1]) : (lp[0] - ref[0]);
                    double sl = o ? (lp[0] - ref[0]) : (lp[1] - ref[1]);
                    CHECK_NEAR(ld, pair_loss(0.1 * (sw - sl), epss[ei]), 1e-7, 1e-6);
                }
            }
}

/* Tied rewards: equal pairs carry no weight; DPO takes the first best / first worst. */
static void test_ties(perpo_test *t) {
    const float lp[4] = { -3.0f, -1.0f, -2.0f, -4.0f }, ref[4] = { 0, 0, 0, 0 };
    const float r[4] = { 0.5f, 0.5f, 0.2f, 0.2f };
    perpo_objective_config cfg = config(PERPO_OBJ_PERPO, 1.0f, 0.5f, 0.0f);
    float loss, g[4];
    /* four pairs (0,2) (0,3) (1,2) (1,3), all with gap 0.3: uniform weights 1/4 */
    double want = (pair_loss(-3 + 2, 0) + pair_loss(-3 + 4, 0) + pair_loss(-1 + 2, 0) +
                   pair_loss(-1 + 4, 0)) /
                  4.0;
    CHECK_OK(perpo_listwise_loss(&cfg, 4, lp, ref, r, &loss, g));
    CHECK_NEAR(loss, want, 1e-7, 1e-6);
    cfg = config(PERPO_OBJ_DPO, 1.0f, 0.5f, 0.0f);
    CHECK_OK(perpo_listwise_loss(&cfg, 4, lp, ref, r, &loss, g));
    CHECK_NEAR(loss, pair_loss(-3.0 - (-2.0), 0), 1e-7, 1e-6); /* index 0 vs index 2 */
    CHECK(g[1] == 0.0f && g[3] == 0.0f);
    CHECK(g[0] < 0.0f && g[2] > 0.0f);
}

/* All-equal rewards and n == 1: loss 0 and gradient 0 exactly, whatever the logits. */
static void test_no_preference(perpo_test *t) {
    const float lp[7] = { -1, -50, 3, -1e6f, 1e30f, -2, 0 }, ref[7] = { 0, 1, 2, 3, 4, 5, 6 };
    const float r[7] = { 0.4f, 0.4f, 0.4f, 0.4f, 0.4f, 0.4f, 0.4f };
    int kind, k;
    for (kind = 0; kind < 4; kind++) {
        perpo_objective_config cfg = config(all_kinds[kind], 1.0f, 0.5f, 0.1f);
        float loss = 123.0f, g[7] = { 9, 9, 9, 9, 9, 9, 9 };
        CHECK_OK(perpo_listwise_loss(&cfg, 7, lp, ref, r, &loss, g));
        CHECK(loss == 0.0f);
        for (k = 0; k < 7; k++) CHECK(g[k] == 0.0f);
        loss = 123.0f;
        g[0] = 9.0f;
        CHECK_OK(perpo_listwise_loss(&cfg, 1, lp + 2, ref, r, &loss, g));
        CHECK(loss == 0.0f && g[0] == 0.0f);
    }
}

/* Sizes: PERPO_MAX_LIST is accepted, one more is not; outputs untouched on error. */
static void test_sizes(perpo_test *t) {
    static float lp[PERPO_MAX_LIST + 1], ref[PERPO_MAX_LIST + 1], r[PERPO_MAX_LIST + 1];
    static float g[PERPO_MAX_LIST + 1];
    int kind, k;
    for (k = 0; k <= PERPO_MAX_LIST; k++) {
        lp[k] = -10.0f - (float)((k * 37) % 101) * 0.25f;
        ref[k] = -12.0f - (float)((k * 53) % 89) * 0.25f;
        r[k] = (float)((k * 71) % 97) / 96.0f;
    }
    for (kind = 0; kind < 4; kind++) {
        perpo_objective_config cfg = config(all_kinds[kind], 0.1f, 0.5f, 0.0f);
        float loss = -1.0f, gsum = 0.0f;
        CHECK_OK(perpo_listwise_loss(&cfg, PERPO_MAX_LIST, lp, ref, r, &loss, g));
        CHECK(isfinite(loss) && loss > 0.0f);
        for (k = 0; k < PERPO_MAX_LIST; k++) gsum += g[k];
        CHECK_NEAR(gsum, 0.0, 1e-5, 0); /* every objective depends on score differences only */
        loss = -1.0f;
        g[0] = 77.0f;
        CHECK(perpo_listwise_loss(&cfg, PERPO_MAX_LIST + 1, lp, ref, r, &loss, g) == PERPO_ERR_ARG);
        CHECK(perpo_listwise_loss(&cfg, 0, lp, ref, r, &loss, g) == PERPO_ERR_ARG);
        CHECK(perpo_listwise_loss(&cfg, -3, lp, ref, r, &loss, g) == PERPO_ERR_ARG);
        CHECK(loss == -1.0f && g[0] == 77.0f);
    }
}

static void test_bad_arguments(perpo_test *t) {
    const float lp[3] = { -1, -2, -3 }, ref[3] = { -1, -1, -1 }, r[3] = { 0.1f, 0.5f, 0.9f };
    perpo_objective_config ok = perpo_objective_default(PERPO_OBJ_PERPO), cfg;
    float loss = -1.0f;
    CHECK(ok.kind == PERPO_OBJ_PERPO && ok.beta == 0.1f && ok.gamma == 0.5f &&
          ok.label_smoothing == 0.0f && ok.positive == 0.0f);
    CHECK(perpo_listwise_loss(NULL, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_listwise_loss(&ok, 3, NULL, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_listwise_loss(&ok, 3, lp, NULL, r, &loss, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_listwise_loss(&ok, 3, lp, ref, NULL, &loss, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_listwise_loss(&ok, 3, lp, ref, r, NULL, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.beta = 0.0f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.beta = -0.1f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.beta = NAN;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.gamma = -1.0f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.gamma = INFINITY;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.label_smoothing = 0.6f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.label_smoothing = -0.1f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg = ok;
    cfg.positive = -0.5f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg.positive = NAN;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
    cfg.positive = PERPO_MAX_POSITIVE * 2.0f;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
#ifndef __cplusplus /* in C++ an enum value outside 0..3 is itself undefined behaviour */
    cfg = ok;
    cfg.kind = (perpo_objective)7;
    CHECK(perpo_listwise_loss(&cfg, 3, lp, ref, r, &loss, NULL) == PERPO_ERR_ARG);
#endif
    CHECK(loss == -1.0f);
}

static void test_nonfinite_inputs(perpo_test *t) {
    const float bad[3] = { NAN, INFINITY, -INFINITY };
    int kind, which, b, pos;
    for (kind = 0; kind < 4; kind++)
        for (which = 0; which < 3; which++)
            for (b = 0; b < 3; b++)
                for (pos = 0; pos < 3; pos++) {
                    float in[3][3] = { { -1, -2, -3 }, { -1, -1, -1 }, { 0.1f, 0.5f, 0.9f } };
                    perpo_objective_config cfg = perpo_objective_default(all_kinds[kind]);
                    float loss = -1.0f, g[3] = { 5, 5, 5 };
                    perpo_pref_metrics m;
                    in[which][pos] = bad[b];
                    CHECK(perpo_listwise_loss(&cfg, 3, in[0], in[1], in[2], &loss, g) ==
                          PERPO_ERR_NONFINITE);
                    CHECK(loss == -1.0f && g[0] == 5.0f && g[1] == 5.0f && g[2] == 5.0f);
                    CHECK(perpo_preference_metrics(0.1f, 3, in[0], in[1], in[2], &m) ==
                          PERPO_ERR_NONFINITE);
                }
}

/* Log-ratios of +-1e30 and gaps of 1e6: finite loss and gradient, in both rankings. A loss
 * beyond float range is reported, not returned as Inf. */
static void test_extreme_logits(perpo_test *t) {
    const float big[4] = { 1e30f, -1e30f, 0.0f, 1e6f }, gap[4] = { -1e6f, 0.0f, -2e6f, 5e5f };
    const float zero[4] = { 0, 0, 0, 0 }, up[4] = { 0.9f, 0.1f, 0.5f, 0.7f };
    const float down[4] = { 0.1f, 0.9f, 0.5f, 0.3f };
    const float *lps[2] = { big, gap }, *rs[2] = { up, down };
    int kind, a, b, k;
    for (kind = 0; kind < 4; kind++)
        for (a = 0; a < 2; a++)
            for (b = 0; b < 2; b++) {
                perpo_objective_config cfg = config(all_kinds[kind], 1.0f, 0.5f, 0.1f);
                float loss = NAN, g[4] = { NAN, NAN, NAN, NAN };
                CHECK_OK(perpo_listwise_loss(&cfg, 4, lps[a], zero, rs[b], &loss, g));
                CHECK(isfinite(loss) && loss >= 0.0f);
                for (k = 0; k < 4; k++) CHECK(isfinite(g[k]));
            }
    {
        /* s gap of 1.2e39 exceeds float: PERPO_ERR_NONFINITE, outputs untouched */
        const float lp[2] = { -3e38f, 3e38f }, ref[2] = { 3e38f, -3e38f }, r[2] = { 1.0f, 0.0f };
        perpo_objective_config cfg = config(PERPO_OBJ_DPO, 1.0f, 0.5f, 0.0f);
        float loss = -1.0f;
        CHECK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &loss, NULL) == PERPO_ERR_NONFINITE);
        CHECK(loss == -1.0f);
    }
}

/* Rewards may come in any order: permuting the list permutes the gradient, same loss. */
static void test_permutation(perpo_test *t) {
    const float lp[5] = { -3.5f, -1.25f, -8.0f, -2.0f, -5.5f }, ref[5] = { -4, -2, -6, -3, -5 };
    const float r[5] = { 0.2f, 0.9f, 0.4f, 0.6f, 0.1f };
    static const int perm[5] = { 3, 0, 4, 1, 2 };
    float plp[5], pref[5], pr[5];
    int kind, k;
    for (k = 0; k < 5; k++) {
        plp[k] = lp[perm[k]];
        pref[k] = ref[perm[k]];
        pr[k] = r[perm[k]];
    }
    for (kind = 0; kind < 4; kind++) {
        perpo_objective_config cfg = config(all_kinds[kind], 1.0f, 0.5f, 0.1f);
        float l1, l2, g1[5], g2[5];
        CHECK_OK(perpo_listwise_loss(&cfg, 5, lp, ref, r, &l1, g1));
        CHECK_OK(perpo_listwise_loss(&cfg, 5, plp, pref, pr, &l2, g2));
        CHECK_NEAR(l2, l1, 0, 1e-6);
        for (k = 0; k < 5; k++) CHECK_NEAR(g2[k], g1[perm[k]], 1e-7, 1e-6);
    }
}

/* rewards/chosen, /rejected, /margins, /accuracies worked by hand. */
static void test_preference_metrics(perpo_test *t) {
    /* s = (1, 0, -1), R = (0.2, 0.9, 0.5): best is 1, worst is 0. Pairs R_i > R_j:
     * (1,0) s 0 > 1 no, (1,2) 0 > -1 yes, (2,0) -1 > 1 no -> accuracy 1/3. */
    const float lp[3] = { -1, -2, -3 }, ref[3] = { -2, -2, -2 }, r[3] = { 0.2f, 0.9f, 0.5f };
    const float rt[4] = { 0.5f, 0.5f, 0.1f, 0.5f }, lpt[4] = { -1, -4, -2, -3 },
                zt[4] = { 0, 0, 0, 0 };
    perpo_pref_metrics m;
    CHECK_OK(perpo_preference_metrics(0.5f, 3, lp, ref, r, &m));
    CHECK_NEAR(m.chosen, 0.0, 1e-7, 0);
    CHECK_NEAR(m.rejected, 0.5, 1e-7, 0);
    CHECK_NEAR(m.margin, -0.5, 1e-7, 0);
    CHECK_NEAR(m.accuracy, 1.0 / 3.0, 1e-7, 0);
    /* ties: best = first of the 0.5s (index 0); 3 pairs (0,2) (1,2) (3,2), s2 = -2 beats
     * s1 = -4 and s3 = -3 only: accuracy 1/3 */
    CHECK_OK(perpo_preference_metrics(1.0f, 4, lpt, zt, rt, &m));
    CHECK_NEAR(m.chosen, -1.0, 1e-7, 0);
    CHECK_NEAR(m.rejected, -2.0, 1e-7, 0);
    CHECK_NEAR(m.margin, 1.0, 1e-7, 0);
    CHECK_NEAR(m.accuracy, 1.0 / 3.0, 1e-7, 0);
    /* equal log-ratios do not count as ranked right (TRL: chosen > rejected, strictly) */
    CHECK_OK(perpo_preference_metrics(1.0f, 2, zt, zt, r, &m));
    CHECK(m.accuracy == 0.0f && m.margin == 0.0f);
    /* n = 1: no pairs, accuracy 0 */
    CHECK_OK(perpo_preference_metrics(0.1f, 1, lp, ref, r, &m));
    CHECK_NEAR(m.chosen, 0.1, 1e-7, 0);
    CHECK(m.margin == 0.0f && m.accuracy == 0.0f);
    CHECK(perpo_preference_metrics(0.0f, 3, lp, ref, r, &m) == PERPO_ERR_ARG);
    CHECK(perpo_preference_metrics(0.1f, 0, lp, ref, r, &m) == PERPO_ERR_ARG);
    CHECK(perpo_preference_metrics(0.1f, PERPO_MAX_LIST + 1, lp, ref, r, &m) == PERPO_ERR_ARG);
    CHECK(perpo_preference_metrics(0.1f, 3, lp, ref, r, NULL) == PERPO_ERR_ARG);
}

extern const perpo_test_case perpo_tests_objectives[];
const perpo_test_case perpo_tests_objectives[] = {
    { "reference_pytorch", test_reference },
    { "finite_differences", test_finite_differences },
    { "perpo_hand", test_perpo_hand },
    { "documented_formula", test_documented_formula },
    { "positive_hand", test_positive_hand },
    { "listmle_hand", test_listmle_hand },
    { "dpo_equals_perpo_n2", test_dpo_equals_perpo_n2 },
    { "ties", test_ties },
    { "no_preference", test_no_preference },
    { "sizes", test_sizes },
    { "bad_arguments", test_bad_arguments },
    { "nonfinite_inputs", test_nonfinite_inputs },
    { "extreme_logits", test_extreme_logits },
    { "permutation", test_permutation },
    { "preference_metrics", test_preference_metrics },
    { NULL, NULL },
};
