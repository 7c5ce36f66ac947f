/* The compact MLLM end to end: PyTorch reference values, whole-model finite differences,
 * SFT that memorizes, KV-cache sampling equal to full recomputation, determinism, and
 * checkpoints that round-trip or fail cleanly. */

/* ---- reading tests/ref/model_ref.bin (format in tests/ref/README.md) ---------------------- */
typedef struct ref_record {
    char name[32];
    size_t n;
    float *f;
    int32_t *i;
} ref_record;
typedef struct ref_file {
    ref_record rec[32];
    int n;
} ref_file;

static uint32_t ref_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void ref_free(ref_file *rf) {
    int i;
    for (i = 0; i < rf->n; i++) {
        free(rf->rec[i].f);
        free(rf->rec[i].i);
    }
    rf->n = 0;
}
static int ref_load(ref_file *rf, const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char b[8];
    memset(rf, 0, sizeof *rf);
    if (!f) return 0;
    if (fread(b, 1, 8, f) != 8 || memcmp(b, "PREF", 4) || ref_u32(b + 4) != 1) {
        fclose(f);
        return 0;
    }
    while (rf->n < 32 && fread(b, 1, 4, f) == 4) {
        ref_record *r = &rf->rec[rf->n];
        uint32_t len = ref_u32(b), nd, d, k;
        size_t n = 1, j;
        unsigned char *raw;
        if (len >= sizeof r->name || fread(r->name, 1, len, f) != len) break;
        r->name[len] = 0;
        if (fread(b, 1, 4, f) != 4) break;
        nd = ref_u32(b);
        for (k = 0; k < nd; k++) {
            if (fread(b, 1, 4, f) != 4) break;
            d = ref_u32(b);
            n *= d;
        }
        raw = (unsigned char *)malloc(4 * n + 1);
        if (!raw || fread(raw, 1, 4 * n, f) != 4 * n) {
            free(raw);
            break;
        }
        r->n = n;
        if (r->name[0] == 'i' && r->name[1] == '_') {
            r->i = (int32_t *)malloc(4 * n + 1);
            for (j = 0; j < n; j++) r->i[j] = (int32_t)ref_u32(raw + 4 * j);
        } else {
            r->f = (float *)malloc(4 * n + 1);
            for (j = 0; j < n; j++) {
                uint32_t u = ref_u32(raw + 4 * j);
                memcpy(&r->f[j], &u, 4);
            }
        }
        free(raw);
        rf->n++;
    }
    fclose(f);
    return rf->n > 0;
}
static ref_record *ref_get(ref_file *rf, const char *name) {
    int i;
    for (i = 0; i < rf->n; i++)
        if (strcmp(rf->rec[i].name, name) == 0) return &rf->rec[i];
    return NULL;
}
/* Largest |a-b| / (atol + rtol*|b|) over n values; <= 1 means within tolerance. */
static double ref_worst(const float *a, const float *b, size_t n, double atol, double rtol,
                        size_t *at) {
    double worst = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= worst)) {
            worst = e;
            if (at) *at = i;
        } /* NaN counts as worst */
    }
    return worst;
}

/* The plain model (square patches, learned vision positions) and one with every vision option
   (6 x 4-style non-square patches, x/y position channels, the 2D sin-cos code). */
#define REF_PATH      "tests/ref/model_ref.bin"
#define REF_OPTS_PATH "tests/ref/model_ref_opts.bin"

typedef struct ref_setup {
    ref_file rf;
    perpo_model *m;
    perpo_batch batch;
    const float *imgs[2];
    size_t n_targets;
} ref_setup;

static int ref_setup_open(perpo_test *t, ref_setup *s, const char *path) {
    ref_record *c, *sizes;
    perpo_config cfg = perpo_config_default();
    size_t i, off;
    memset(s, 0, sizeof *s);
    if (!ref_load(&s->rf, path)) {
        CHECK_MSG(0, "cannot read %s (run from the repository root)", path);
        return 0;
    }
    c = ref_get(&s->rf, "i_config");
    sizes = ref_get(&s->rf, "i_param_sizes");
    CHECK(c && c->n == 14 && sizes);
    if (!c || c->n != 14 || !sizes) return 0;
    cfg.image_h = c->i[0];
    cfg.image_w = c->i[1];
    cfg.channels = c->i[2];
    cfg.patch_h = c->i[3];
    cfg.patch_w = c->i[4];
    cfg.d_model = c->i[5];
    cfg.n_heads = c->i[6];
    cfg.n_vis_layers = c->i[7];
    cfg.n_dec_layers = c->i[8];
    cfg.mlp_mult = c->i[9];
    cfg.max_text = c->i[10];
    cfg.vocab = c->i[11];
    cfg.pos_channels = c->i[12];
    cfg.vis_sincos = c->i[13];
    cfg.max_batch = 3;
    CHECK_OK(perpo_model_create(&s->m, &cfg, 1));
    if (!s->m) return 0;
    /* the parameter table must match PyTorch's tensor by tensor */
    CHECK(perpo_model_num_tensors(s->m) == sizes->n);
    for (i = 0, off = 0; i < sizes->n && i < perpo_model_num_tensors(s->m); i++) {
        size_t o, r, cc;
        perpo_model_tensor(s->m, i, NULL, &o, &r, &cc);
        CHECK_MSG(o == off && r * (cc ? cc : 1) == (size_t)sizes->i[i], "tensor %zu layout differs",
                  i);
        off += (size_t)sizes->i[i];
    }
    CHECK(ref_get(&s->rf, "params")->n == perpo_model_num_params(s->m));
    memcpy(perpo_model_params(s->m), ref_get(&s->rf, "params")->f,
           perpo_model_num_params(s->m) * sizeof(float));
    s->imgs[0] = ref_get(&s->rf, "images")->f;
    s->imgs[1] = s->imgs[0] + cfg.image_h * cfg.image_w * cfg.channels;
    s->batch.n_seq = 3;
    s->batch.n_img = 2;
    s->batch.images = s->imgs;
    s->batch.image_of = NULL;
    s->batch.tokens = ref_get(&s->rf, "i_tokens")->i;
    s->batch.targets = ref_get(&s->rf, "i_targets")->i;
    for (i = 0; i < 3 * (size_t)cfg.max_text; i++) s->n_targets += s->batch.targets[i] >= 0;
    return 1;
}
static void ref_setup_close(ref_setup *s) {
    perpo_model_free(s->m);
    ref_free(&s->rf);
}

/* Tolerances against PyTorch (float32 both sides, different summation orders):
 *   logits, logp, loss: 1e-5 absolute + 1e-5 relative
 *   gradients: 2e-6 absolute + 1e-3 relative (the key-bias slice of qkv_b is exactly zero in
 *   exact arithmetic, rounding noise on both sides, hence the absolute part)
 *   5 AdamW steps: losses 1e-5 relative; parameters 1e-5 absolute, key biases excluded. */
static void check_reference_forward_backward(perpo_test *t, const char *path) {
    ref_setup s;
    size_t image_of[3];
    float logp[3], ce, dlogp[3];
    size_t at = 0, i, n;
    double w;
    if (!ref_setup_open(t, &s, path)) {
        ref_setup_close(&s);
        return;
    }
    n = perpo_model_num_params(s.m);
    for (i = 0; i < 3; i++) image_of[i] = (size_t)ref_get(&s.rf, "i_image_of")->i[i];
    s.batch.image_of = image_of;
    CHECK_OK(perpo_forward(s.m, &s.batch, logp, &ce));
    w = ref_worst(perpo_last_logits(s.m), ref_get(&s.rf, "logits")->f, 3 * 12 * 260, 1e-5, 1e-5,
                  &at);
    CHECK_MSG(w <= 1.0, "logits differ from PyTorch at %zu (error ratio %.3g)", at, w);
    CHECK(ref_worst(logp, ref_get(&s.rf, "logp")->f, 3, 1e-5, 1e-5, NULL) <= 1.0);
    CHECK_NEAR(ce, ref_get(&s.rf, "mean_ce")->f[0], 1e-5, 1e-5);
    fprintf(stderr, "    logp %.7g %.7g %.7g (torch %.7g %.7g %.7g), max logits ratio %.3g\n",
            logp[0], logp[1], logp[2], ref_get(&s.rf, "logp")->f[0], ref_get(&s.rf, "logp")->f[1],
            ref_get(&s.rf, "logp")->f[2], w);
    /* mean cross-entropy backward = every sequence gets dlogp = -1/n_targets */
    for (i = 0; i < 3; i++) dlogp[i] = -1.0f / (float)s.n_targets;
    perpo_zero_grad(s.m);
    CHECK_OK(perpo_backward(s.m, dlogp));
    w = ref_worst(perpo_model_grads(s.m), ref_get(&s.rf, "grad_ce")->f, n, 2e-6, 1e-3, &at);
    CHECK_MSG(w <= 1.0, "grad_ce differs from PyTorch at param %zu: %.7g vs %.7g", at,
              perpo_model_grads(s.m)[at], ref_get(&s.rf, "grad_ce")->f[at]);
    fprintf(stderr, "    grad_ce worst error ratio %.3g (tolerance 2e-6 + 1e-3 rel)\n", w);
    /* a generic dlogp: the entry point every preference objective uses */
    perpo_zero_grad(s.m);
    CHECK_OK(perpo_backward(s.m, ref_get(&s.rf, "dlogp_w")->f));
    w = ref_worst(perpo_model_grads(s.m), ref_get(&s.rf, "grad_w")->f, n, 2e-6, 1e-3, &at);
    CHECK_MSG(w <= 1.0, "grad_w differs from PyTorch at param %zu: %.7g vs %.7g", at,
              perpo_model_grads(s.m)[at], ref_get(&s.rf, "grad_w")->f[at]);
    fprintf(stderr, "    grad_w worst error ratio %.3g\n", w);
    ref_setup_close(&s);
}
static void test_reference_forward_backward(perpo_test *t) {
    check_reference_forward_backward(t, REF_PATH);
}
static void test_reference_forward_backward_opts(perpo_test *t) {
    check_reference_forward_backward(t, REF_OPTS_PATH);
}

static void check_reference_adamw(perpo_test *t, const char *path) {
    ref_setup s;
    size_t image_of[3], i, k, n, at = 0;
    float *hp;
    perpo_optim_config oc;
    unsigned char *skip;
    double worst = 0.0;
    if (!ref_setup_open(t, &s, path)) {
        ref_setup_close(&s);
        return;
    }
    n = perpo_model_num_params(s.m);
    for (i = 0; i < 3; i++) image_of[i] = (size_t)ref_get(&s.rf, "i_image_of")->i[i];
    s.batch.image_of = image_of;
    hp = ref_get(&s.rf, "adam_hparams")->f;
    oc.lr = hp[0];
    oc.min_lr = hp[1];
    oc.warmup_steps = (int)hp[2];
    oc.total_steps = (int)hp[3];
    oc.beta1 = hp[4];
    oc.beta2 = hp[5];
    oc.eps = hp[6];
    oc.weight_decay = hp[7];
    oc.clip_norm = hp[8];
    for (k = 0; k < 5; k++) {
        float ce, gn, dlogp[3];
        CHECK_OK(perpo_forward(s.m, &s.batch, NULL, &ce));
        for (i = 0; i < 3; i++) dlogp[i] = -1.0f / (float)s.n_targets;
        perpo_zero_grad(s.m);
        CHECK_OK(perpo_backward(s.m, dlogp));
        CHECK_NEAR(perpo_lr_at(&oc, (int)k), ref_get(&s.rf, "adam_lrs")->f[k], 0, 1e-6);
        CHECK_OK(perpo_optim_step(s.m, &oc, 1.0f, &gn));
        CHECK_NEAR(ce, ref_get(&s.rf, "adam_losses")->f[k], 0, 1e-5);
        CHECK_NEAR(gn, ref_get(&s.rf, "adam_gnorms")->f[k], 0, 1e-4);
    }
    /* exclude the key-bias slice (see make_reference.py: its gradient is rounding noise) */
    skip = (unsigned char *)calloc(n, 1);
    for (i = 0; i < perpo_model_num_tensors(s.m); i++) {
        const char *name;
        size_t o, r, c;
        perpo_model_tensor(s.m, i, &name, &o, &r, &c);
        if (strstr(name, "qkv_b")) memset(skip + o + r / 3, 1, r / 3);
    }
    for (i = 0; i < n; i++) {
        double e;
        if (skip[i]) continue;
        e = fabs((double)perpo_model_params(s.m)[i] - (double)ref_get(&s.rf, "adam_params")->f[i]);
        if (e > worst) {
            worst = e;
            at = i;
        }
    }
    CHECK_MSG(worst <= 1e-5, "params after 5 AdamW steps differ by %.3g at %zu", worst, at);
    fprintf(stderr, "    after 5 AdamW steps: max |param - torch| = %.3g (key biases excluded)\n",
            worst);
    free(skip);
    ref_setup_close(&s);
}
static void test_reference_adamw(perpo_test *t) { check_reference_adamw(t, REF_PATH); }
static void test_reference_adamw_opts(perpo_test *t) { check_reference_adamw(t, REF_OPTS_PATH); }

/* ---- whole-model finite differences ------------------------------------------------------ */
static perpo_config small_config(void) {
    perpo_config c = perpo_config_default();
    c.image_h = 8;
    c.image_w = 8;
    c.channels = 3;
    c.patch_h = c.patch_w = 4;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 2;
    c.mlp_mult = 2;
    c.max_text = 8;
    c.max_batch = 3;
    return c;
}

static double model_loss(perpo_model *m, const perpo_batch *b, const float *w) {
    float lp[3];
    perpo_forward(m, b, lp, NULL);
    return (double)w[0] * lp[0] + (double)w[1] * lp[1] + (double)w[2] * lp[2];
}

/* Every parameter tensor, at its 4 elements of largest |gradient| (random elements are mostly
 * tiny, and a broken gradient shows first where it is large), perturbed by +-h (float32, h
 * 1e-2). The error is relative to the tensor's scale: max |fd - an| over the 4 elements must be
 * at most 2e-2 x the largest |an| of the tensor, plus the noise floor of a float32 loss
 * difference (1e-4): no absolute tolerance that could hide a whole tensor, such as the vision
 * LayerNorms whose gradients are ~1e-3. The worst ratio is printed. */
static void check_model_finite_differences(perpo_test *t, perpo_config c) {
    perpo_model *m = NULL;
    float img[2][8 * 8 * 3], *grad, *P;
    const float *imgs[2] = { img[0], img[1] };
    size_t image_of[3] = { 0, 1, 1 }, i, k, n_checked = 0;
    int tok[3 * 8], tgt[3 * 8];
    float w[3] = { 0.7f, -0.4f, 0.3f };
    perpo_batch b;
    kx_rng r = { 11 };
    double worst = 0.0, smallest_scale = 1e30;
    const char *worst_name = "";
    CHECK_OK(perpo_model_create(&m, &c, 5));
    if (!m) return;
    P = perpo_model_params(m);
    /* larger weights than the default init so every path carries signal */
    for (i = 0; i < perpo_model_num_params(m); i++) P[i] += 0.15f * kx_uniform(&r);
    for (i = 0; i < 8 * 8 * 3; i++) {
        img[0][i] = 0.5f + 0.5f * kx_uniform(&r);
        img[1][i] = 0.5f + 0.5f * kx_uniform(&r);
    }
    perpo_text_encode(&c, "ab", 2, "xyz", 3, tok, tgt, NULL);
    perpo_text_encode(&c, "q", 1, "42", 2, tok + 8, tgt + 8, NULL);
    perpo_text_encode(&c, "", 0, "hello", 5, tok + 16, tgt + 16, NULL);
    b.n_seq = 3;
    b.n_img = 2;
    b.images = imgs;
    b.image_of = image_of;
    b.tokens = tok;
    b.targets = tgt;
    model_loss(m, &b, w);
    perpo_zero_grad(m);
    CHECK_OK(perpo_backward(m, w));
    grad = (float *)malloc(perpo_model_num_params(m) * sizeof(float));
    memcpy(grad, perpo_model_grads(m), perpo_model_num_params(m) * sizeof(float));
    for (k = 0; k < perpo_model_num_tensors(m); k++) {
        const char *name;
        size_t o, rows, cols, n, j, q, pick[4], npick;
        double scale = 0.0, err = 0.0, ratio;
        perpo_model_tensor(m, k, &name, &o, &rows, &cols);
        n = rows * (cols ? cols : 1);
        npick = n < 4 ? n : 4;
        for (q = 0; q < npick; q++) { /* the npick largest |gradient|, distinct */
            size_t best = (size_t)-1;
            for (j = 0; j < n; j++) {
                size_t u, taken = 0;
                for (u = 0; u < q; u++) taken |= pick[u] == o + j;
                if (!taken && (best == (size_t)-1 || fabsf(grad[o + j]) > fabsf(grad[best])))
                    best = o + j;
            }
            pick[q] = best;
        }
        for (q = 0; q < npick; q++) {
            float keep = P[pick[q]];
            double lp, lm, fd, an = grad[pick[q]];
            P[pick[q]] = keep + 1e-2f;
            lp = model_loss(m, &b, w);
            P[pick[q]] = keep - 1e-2f;
            lm = model_loss(m, &b, w);
            P[pick[q]] = keep;
            fd = (lp - lm) / (((double)(keep + 1e-2f) - (double)(keep - 1e-2f)));
            if (fabs(an) > scale) scale = fabs(an);
            if (fabs(fd - an) > err) err = fabs(fd - an);
            n_checked++;
        }
        ratio = err / (2e-2 * scale + 1e-4);
        if (ratio > worst) {
            worst = ratio;
            worst_name = name;
        }
        if (scale < smallest_scale) smallest_scale = scale;
        CHECK_MSG(ratio <= 1.0 && scale > 0.0,
                  "%s: largest |gradient| %.3g, worst |fd - analytic| %.3g", name, scale, err);
    }
    fprintf(stderr,
            "    %zu parameters over %zu tensors, worst error ratio %.3g (%s), smallest tensor "
            "scale %.3g\n",
            n_checked, perpo_model_num_tensors(m), worst, worst_name, smallest_scale);
    free(grad);
    perpo_model_free(m);
}
static void test_model_finite_differences(perpo_test *t) {
    check_model_finite_differences(t, small_config());
}
/* The same with 2 x 4 patches, x/y position channels and the sin-cos vision positions. */
static void test_model_finite_differences_opts(perpo_test *t) {
    perpo_config c = small_config();
    c.patch_h = 2;
    c.patch_w = 4;
    c.pos_channels = 1;
    c.vis_sincos = 1;
    check_model_finite_differences(t, c);
}

/* ---- SFT memorizes, greedy reproduces ----------------------------------------------------- */
typedef struct sft_log {
    float last_loss;
    int calls, other_phase;
} sft_log;
static int sft_on_progress(const perpo_progress *p, void *user) {
    sft_log *l = (sft_log *)user;
    l->last_loss = p->loss;
    l->calls++;
    l->other_phase += strcmp(p->phase, "sft") != 0; /* the phase perpo_progress documents */
    return 0;
}
static perpo_config memo_config(void) {
    perpo_config c = perpo_config_default();
    c.image_h = 16;
    c.image_w = 16;
    c.patch_h = c.patch_w = 4;
    c.d_model = 48;
    c.n_heads = 4;
    c.n_vis_layers = 1;
    c.n_dec_layers = 2;
    c.mlp_mult = 4;
    c.max_text = 20;
    c.max_batch = 8;
    return c;
}
/* 6 images (a bright square at different places), all with the same prompt: the answer can
 * only come from the image. */
static void memo_data(float img[6][16 * 16 * 3], perpo_example ex[6]) {
    static const char *answers[6] = {
        "top left", "top right", "bottom", "center", "[1,2]", "none"
    };
    int i, y, x, ch;
    for (i = 0; i < 6; i++) {
        for (y = 0; y < 16; y++)
            for (x = 0; x < 16; x++)
                for (ch = 0; ch < 3; ch++) {
                    int inside = y >= (i / 3) * 8 && y < (i / 3) * 8 + 6 && x >= (i % 3) * 5 &&
                                 x < (i % 3) * 5 + 5;
                    img[i][(y * 16 + x) * 3 + ch] = inside ? (ch == i % 3 ? 1.0f : 0.3f) : 0.05f;
                }
        ex[i].image = img[i];
        ex[i].prompt = "where?";
        ex[i].response = answers[i];
    }
}
static void test_sft_memorizes(perpo_test *t) {
    perpo_config c = memo_config();
    perpo_model *m = NULL;
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_gen_request req;
    const float *imgs[6];
    const char *prompts[6];
    char out[6][32];
    size_t lens[6];
    sft_log log = { 0.0f, 0, 0 };
    int i;
    memo_data(img, ex);
    CHECK_OK(perpo_model_create(&m, &c, 3));
    if (!m) return;
    tc.batch_size = 6;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 10;
    tc.optim.total_steps = 150;
    tc.optim.weight_decay = 0.0f;
    tc.log_every = 25;
    CHECK_OK(perpo_sft_train(m, ex, 6, &tc, sft_on_progress, &log));
    CHECK(log.calls == 6 && log.other_phase == 0);
    CHECK_MSG(log.last_loss < 0.05f, "SFT loss after 150 steps %.4f, bound 0.05", log.last_loss);
    fprintf(stderr, "    final SFT loss %.5f\n", log.last_loss);
    for (i = 0; i < 6; i++) {
        imgs[i] = img[i];
        prompts[i] = "where?";
    }
    req.n_seq = 6;
    req.n_img = 6;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    CHECK_OK(perpo_generate(m, &req, &sc, &out[0][0], 32, lens));
    for (i = 0; i < 6; i++)
        CHECK_MSG(strcmp(out[i], ex[i].response) == 0 && lens[i] == strlen(ex[i].response),
                  "image %d: generated \"%s\", expected \"%s\"", i, out[i], ex[i].response);
    perpo_model_free(m);
}

/* ---- KV cache = recomputation; determinism -------------------------------------------------- */
static void test_cache_matches_recompute(perpo_test *t) {
    perpo_config c = memo_config();
    perpo_model *m = NULL;
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    const float *imgs[2];
    const char *prompts[5] = { "where?", "where?", "where?", "x", "a longer prompt" };
    size_t image_of[5] = { 0, 0, 0, 1, 1 }, la[5], lb[5];
    char a[5][24], bb[5][24];
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    int mode, i;
    memo_data(img, ex);
    CHECK_OK(perpo_model_create(&m, &c, 9));
    if (!m) return;
    imgs[0] = img[0];
    imgs[1] = img[4];
    req.n_seq = 5;
    req.n_img = 2;
    req.images = imgs;
    req.image_of = image_of;
    req.prompts = prompts;
    /* untrained weights give long, varied samples: a hard case for the cache bookkeeping */
    for (mode = 0; mode < 3; mode++) {
        sc.temperature = mode == 0 ? 0.0f : 1.0f;
        sc.top_k = mode == 2 ? 20 : 0;
        sc.top_p = mode == 2 ? 0.9f : 1.0f;
        sc.seed = 77;
        sc.no_cache = 0;
        CHECK_OK(perpo_generate(m, &req, &sc, &a[0][0], 24, la));
        sc.no_cache = 1;
        CHECK_OK(perpo_generate(m, &req, &sc, &bb[0][0], 24, lb));
        for (i = 0; i < 5; i++)
            CHECK_MSG(la[i] == lb[i] && memcmp(a[i], bb[i], la[i]) == 0,
                      "mode %d seq %d: cache \"%s\" vs recompute \"%s\"", mode, i, a[i], bb[i]);
    }
    /* sampling differs across the 3 sequences sharing one prefix (else the RNG is not used) */
    CHECK(la[0] != la[1] || memcmp(a[0], a[1], la[0]) != 0 || la[1] != la[2] ||
          memcmp(a[1], a[2], la[1]) != 0);
    /* the same seed again gives the same text; the response length respects the caps */
    sc.no_cache = 0;
    CHECK_OK(perpo_generate(m, &req, &sc, &bb[0][0], 24, lb));
    for (i = 0; i < 5; i++) CHECK(la[i] == lb[i] && memcmp(a[i], bb[i], la[i]) == 0);
    for (i = 0; i < 5; i++) CHECK(strlen(prompts[i]) + lb[i] + 3 <= 20);
    sc.max_new_tokens = 2;
    CHECK_OK(perpo_generate(m, &req, &sc, &bb[0][0], 24, lb));
    for (i = 0; i < 5; i++) CHECK(lb[i] <= 2);
    perpo_model_free(m);
}

/* Several images sharing one prompt (image_of = {0, 0, 1, 1}, one prompt for all): sequences
   that share an image and prompt share one prefill, but two images never do. A model briefly
   trained on the memo pairs answers from the image (the prompt is the same for all), so a
   prefill wrongly shared across the two images would give image 1 image 0's answers: cached
   generation must equal recomputation for every sequence, greedy and sampled, and greedy
   answers must differ between the images (else the check could not tell). */
static void test_cache_images_share_prompt(perpo_test *t) {
    perpo_config c = memo_config();
    perpo_model *m = NULL;
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    perpo_sft_config tc = perpo_sft_default();
    const float *imgs[2];
    const char *prompts[4] = { "where?", "where?", "where?", "where?" };
    size_t image_of[4] = { 0, 0, 1, 1 }, la[4], lb[4];
    char a[4][24], bb[4][24];
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    int mode, i;
    memo_data(img, ex);
    CHECK_OK(perpo_model_create(&m, &c, 3));
    if (!m) return;
    tc.batch_size = 6;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 10;
    tc.optim.total_steps = 60;
    tc.optim.weight_decay = 0.0f;
    CHECK_OK(perpo_sft_train(m, ex, 6, &tc, NULL, NULL));
    imgs[0] = img[0];
    imgs[1] = img[4];
    req.n_seq = 4;
    req.n_img = 2;
    req.images = imgs;
    req.image_of = image_of;
    req.prompts = prompts;
    for (mode = 0; mode < 3; mode++) {
        sc.temperature = mode == 0 ? 0.0f : 1.0f;
        sc.top_k = mode == 2 ? 20 : 0;
        sc.top_p = mode == 2 ? 0.9f : 1.0f;
        sc.seed = 78;
        sc.no_cache = 0;
        CHECK_OK(perpo_generate(m, &req, &sc, &a[0][0], 24, la));
        sc.no_cache = 1;
        CHECK_OK(perpo_generate(m, &req, &sc, &bb[0][0], 24, lb));
        for (i = 0; i < 4; i++)
            CHECK_MSG(la[i] == lb[i] && memcmp(a[i], bb[i], la[i]) == 0,
                      "mode %d seq %d (image %zu): cache \"%s\" vs recompute \"%s\"", mode, i,
                      image_of[i], a[i], bb[i]);
        if (mode == 0)
            CHECK_MSG(lb[0] != lb[2] || memcmp(bb[0], bb[2], lb[0]) != 0,
                      "both images answer \"%s\" greedily: the test cannot tell them apart", bb[0]);
    }
    perpo_model_free(m);
}

static void train_20_steps(perpo_model **out, int *status) {
    perpo_config c = memo_config();
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    perpo_sft_config tc = perpo_sft_default();
    memo_data(img, ex);
    *status = perpo_model_create(out, &c, 21);
    if (*status) return;
    tc.batch_size = 4;
    tc.optim.total_steps = 20;
    tc.optim.warmup_steps = 5;
    tc.seed = 5;
    *status = perpo_sft_train(*out, ex, 6, &tc, NULL, NULL);
}
static void test_bit_identical_training(perpo_test *t) {
    perpo_model *a = NULL, *b = NULL;
    int sa, sb;
    train_20_steps(&a, &sa);
    train_20_steps(&b, &sb);
    CHECK_OK(sa);
    CHECK_OK(sb);
    if (a && b) {
        CHECK(memcmp(perpo_model_params(a), perpo_model_params(b),
                     perpo_model_num_params(a) * sizeof(float)) == 0);
        CHECK(perpo_optim_step_count(a) == 20);
    }
    perpo_model_free(a);
    perpo_model_free(b);
}

/* ---- the sampler: frequencies follow softmax(z / T), top-k and top-p cut the tail ---------- */
static void test_sampler_distribution(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    perpo_sample_config sc = perpo_sample_default();
    perpo__rng rng;
    float z[PERPO_VOCAB];
    int counts[PERPO_VOCAB], i, v, draws = 40000;
    double p[4], norm = 0.0;
    CHECK_OK(perpo_model_create(&m, &c, 1));
    if (!m) return;
    for (v = 0; v < PERPO_VOCAB; v++) z[v] = -1e9f;
    z[(int)'a'] = 2.0f;
    z[(int)'b'] = 1.0f;
    z[(int)'c'] = 0.0f;
    z[PERPO_TOK_EOS] = 1.5f;
    z[PERPO_TOK_BOS] = 50.0f; /* specials other than EOS are never produced */
    sc.temperature = 0.7f;
    perpo__rng_seed(&rng, 5);
    memset(counts, 0, sizeof counts);
    for (i = 0; i < draws; i++) counts[perpo__sample_token(m, z, &sc, &rng)]++;
    p[0] = exp(2.0 / 0.7);
    p[1] = exp(1.0 / 0.7);
    p[2] = 1.0;
    p[3] = exp(1.5 / 0.7);
    for (i = 0; i < 4; i++) norm += p[i];
    /* 40000 draws: the standard error of a frequency is below 0.0025; allow 4 of them */
    CHECK_NEAR(counts[(int)'a'] / (double)draws, p[0] / norm, 0.01, 0);
    CHECK_NEAR(counts[(int)'b'] / (double)draws, p[1] / norm, 0.01, 0);
    CHECK_NEAR(counts[(int)'c'] / (double)draws, p[2] / norm, 0.01, 0);
    CHECK_NEAR(counts[PERPO_TOK_EOS] / (double)draws, p[3] / norm, 0.01, 0);
    CHECK(counts[PERPO_TOK_BOS] == 0);
    /* top-k = 2 keeps a and EOS only, in their relative proportion */
    sc.top_k = 2;
    memset(counts, 0, sizeof counts);
    for (i = 0; i < draws; i++) counts[perpo__sample_token(m, z, &sc, &rng)]++;
    CHECK(counts[(int)'b'] == 0 && counts[(int)'c'] == 0);
    CHECK_NEAR(counts[(int)'a'] / (double)draws, p[0] / (p[0] + p[3]), 0.01, 0);
    /* top-p = 0.5: a alone holds more than half the mass */
    sc.top_k = 0;
    sc.top_p = 0.5f;
    memset(counts, 0, sizeof counts);
    for (i = 0; i < 1000; i++) counts[perpo__sample_token(m, z, &sc, &rng)]++;
    CHECK(counts[(int)'a'] == 1000);
    /* top-p = 0.7: a holds 0.559 of the mass, a and EOS 0.833, so the nucleus is exactly those
       two, drawn in their relative proportion (0.671 and 0.329); b and c never */
    sc.top_p = 0.7f;
    CHECK(p[0] / norm < 0.7 && (p[0] + p[3]) / norm >= 0.7);
    memset(counts, 0, sizeof counts);
    for (i = 0; i < draws; i++) counts[perpo__sample_token(m, z, &sc, &rng)]++;
    CHECK_MSG(counts[(int)'b'] == 0 && counts[(int)'c'] == 0, "top-p 0.7 drew b %d, c %d times",
              counts[(int)'b'], counts[(int)'c']);
    CHECK_NEAR(counts[(int)'a'] / (double)draws, p[0] / (p[0] + p[3]), 0.01, 0);
    CHECK_NEAR(counts[PERPO_TOK_EOS] / (double)draws, p[3] / (p[0] + p[3]), 0.01, 0);
    /* greedy takes the first maximum */
    sc.temperature = 0.0f;
    z[(int)'b'] = 2.0f;
    CHECK(perpo__sample_token(m, z, &sc, &rng) == 'a');
    perpo_model_free(m);
}

/* ---- exact resume: stop at step 10, save with the optimizer, load, continue to 20 ---------- */
static int stop_at_10(const perpo_progress *p, void *user) {
    (void)user;
    return p->step == 10;
}
static void test_sft_resume_exact(perpo_test *t) {
    perpo_model *a = NULL, *b = NULL, *c = NULL;
    perpo_config cfg = memo_config();
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    perpo_sft_config tc = perpo_sft_default();
    const char *path = "tests_tmp_resume.ckpt";
    int st;
    memo_data(img, ex);
    train_20_steps(&a, &st); /* uninterrupted */
    CHECK_OK(st);
    CHECK_OK(perpo_model_create(&b, &cfg, 21));
    if (!a || !b) {
        perpo_model_free(a);
        perpo_model_free(b);
        return;
    }
    tc.batch_size = 4;
    tc.optim.total_steps = 20;
    tc.optim.warmup_steps = 5;
    tc.seed = 5;
    tc.log_every = 1;
    CHECK_OK(perpo_sft_train(b, ex, 6, &tc, stop_at_10, NULL));
    CHECK(perpo_optim_step_count(b) == 10);
    CHECK_OK(perpo_checkpoint_save(b, path, PERPO_CKPT_OPTIMIZER));
    perpo_model_free(b);
    CHECK_OK(perpo_model_load(&c, path, NULL));
    remove(path);
    if (!c) {
        perpo_model_free(a);
        return;
    }
    CHECK(perpo_optim_step_count(c) == 10);
    tc.resume = 1;
    CHECK_OK(perpo_sft_train(c, ex, 6, &tc, NULL, NULL));
    CHECK(perpo_optim_step_count(c) == 20);
    CHECK(memcmp(perpo_model_params(a), perpo_model_params(c),
                 perpo_model_num_params(a) * sizeof(float)) == 0);
    /* without the optimizer state there is nothing to resume: resume 1 is refused (it used to
       restart the schedule at step 0 silently), and a fresh schedule differs: the test can tell */
    perpo_model_free(c);
    c = NULL;
    CHECK_OK(perpo_model_create(&b, &cfg, 21));
    tc.resume = 0;
    CHECK_OK(perpo_sft_train(b, ex, 6, &tc, stop_at_10, NULL));
    CHECK_OK(perpo_checkpoint_save(b, path, 0));
    CHECK_OK(perpo_model_load(&c, path, NULL));
    remove(path);
    if (c) {
        CHECK(perpo_optim_step_count(c) == 0);
        tc.resume = 1;
        CHECK(perpo_sft_train(c, ex, 6, &tc, NULL, NULL) == PERPO_ERR_ARG);
        CHECK(strstr(perpo_model_last_error(c), "without optimizer state") != NULL);
        CHECK(perpo_optim_step_count(c) == 0);
        tc.resume = 0;
        CHECK_OK(perpo_sft_train(c, ex, 6, &tc, NULL, NULL));
        CHECK(memcmp(perpo_model_params(a), perpo_model_params(c),
                     perpo_model_num_params(a) * sizeof(float)) != 0);
    }
    perpo_model_free(a);
    perpo_model_free(b);
    perpo_model_free(c);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */
static void test_checkpoint_roundtrip(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL, *l = NULL;
    const char *path = "tests_tmp_model.ckpt";
    FILE *f;
    CHECK_OK(perpo_model_create(&m, &c, 8));
    if (!m) return;
    CHECK_OK(perpo_checkpoint_save(m, path, 0));
    CHECK_OK(perpo_model_load(&l, path, NULL));
    if (l) {
        CHECK(perpo_model_num_params(l) == perpo_model_num_params(m));
        CHECK(memcmp(perpo_model_params(l), perpo_model_params(m),
                     perpo_model_num_params(m) * sizeof(float)) == 0);
        CHECK(perpo_model_config(l)->d_model == c.d_model &&
              perpo_model_config(l)->max_text == c.max_text);
    }
    perpo_model_free(l);
    l = NULL;
    /* missing file, short file, flipped byte: errors, no model, no crash */
    CHECK(perpo_model_load(&l, "no/such/file.ckpt", NULL) == PERPO_ERR_IO && l == NULL);
    f = fopen(path, "r+b"); /* flip byte 100: C needs a seek between a read and a write */
    CHECK(f != NULL);
    if (f) {
        int was = (fseek(f, 100, SEEK_SET), fgetc(f)), now;
        CHECK(was != EOF && fseek(f, 100, SEEK_SET) == 0 && fputc(0x5A ^ was, f) != EOF);
        CHECK(fseek(f, 100, SEEK_SET) == 0 &&
              (now = fgetc(f)) == (0x5A ^ was)); /* flipped for sure */
        fclose(f);
    }
    {
        perpo_status st = perpo_model_load(&l, path, NULL);
        CHECK(st == PERPO_ERR_FORMAT && l == NULL);
    }
    f = fopen(path, "wb");
    if (f) {
        fwrite("PERPOCKP", 1, 8, f);
        fclose(f);
    }
    CHECK(perpo_model_load(&l, path, NULL) == PERPO_ERR_FORMAT && l == NULL);
    remove(path);
    CHECK(perpo_checkpoint_save(m, "no/such/dir/x.ckpt", 0) == PERPO_ERR_IO);
    perpo_model_free(m);
}

/* ---- corrupted checkpoints: every kind fails with PERPO_ERR_FORMAT and no model ------------- */
static unsigned char *ck_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)sz + 1);
    *n = buf && fread(buf, 1, (size_t)sz, f) == (size_t)sz ? (size_t)sz : 0;
    fclose(f);
    return buf;
}
static perpo_status ck_load_bytes(const unsigned char *b, size_t n) {
    const char *path = "tests_tmp_corrupt.ckpt";
    perpo_model *m = NULL;
    perpo_status st;
    FILE *f = fopen(path, "wb");
    if (!f) return PERPO_ERR_IO;
    fwrite(b, 1, n, f);
    fclose(f);
    st = perpo_model_load(&m, path, NULL);
    remove(path);
    if (m) {
        perpo_model_free(m);
        return PERPO_OK;
    }
    return st;
}
/* ---- SFT over a stream of examples ---------------------------------------------------------- */
typedef struct stream_src {
    const perpo_example *ex;
    size_t n, fail_at, calls, bad_slot;
    int oversize;
} stream_src;
static perpo_status stream_next(size_t index, size_t slot, perpo_example *out, void *user) {
    stream_src *s = (stream_src *)user;
    s->calls++;
    if (slot >= 4) s->bad_slot++;
    if (index == s->fail_at) return PERPO_ERR_IO;
    *out = s->ex[index % s->n];
    if (s->oversize && index == 9)
        out->response = "this answer is far too long to fit in twenty positions";
    return PERPO_OK;
}
static void test_sft_stream(perpo_test *t) {
    perpo_config c = memo_config();
    static float img[6][16 * 16 * 3];
    perpo_example ex[6];
    perpo_model *a = NULL, *b = NULL;
    perpo_sft_config tc = perpo_sft_default();
    stream_src src;
    size_t np;
    memo_data(img, ex);
    tc.batch_size = 4;
    tc.optim.total_steps = 6;
    tc.optim.warmup_steps = 2;
    tc.log_every = 100;
    CHECK_OK(perpo_model_create(&a, &c, 3));
    CHECK_OK(perpo_model_create(&b, &c, 3));
    if (!a || !b) {
        perpo_model_free(a);
        perpo_model_free(b);
        return;
    }
    np = perpo_model_num_params(a);
    /* a one-example set and a stream that always gives that example train the same model */
    CHECK_OK(perpo_sft_train(a, ex, 1, &tc, NULL, NULL));
    memset(&src, 0, sizeof src);
    src.ex = ex;
    src.n = 1;
    src.fail_at = (size_t)-1;
    CHECK_OK(perpo_sft_train_stream(b, stream_next, &src, &tc, NULL, NULL));
    CHECK(memcmp(perpo_model_params(a), perpo_model_params(b), np * sizeof(float)) == 0);
    CHECK(src.calls == 6 * 4 && src.bad_slot == 0);
    /* the stream's error stops training with it, after the steps before it */
    memset(&src, 0, sizeof src);
    src.ex = ex;
    src.n = 6;
    src.fail_at = 10;
    CHECK(perpo_sft_train_stream(b, stream_next, &src, &tc, NULL, NULL) == PERPO_ERR_IO);
    CHECK(perpo_optim_step_count(b) == 2);
    /* an example that does not fit: PERPO_ERR_ARG, the steps before it kept */
    memset(&src, 0, sizeof src);
    src.ex = ex;
    src.n = 6;
    src.fail_at = (size_t)-1;
    src.oversize = 1;
    CHECK(perpo_sft_train_stream(b, stream_next, &src, &tc, NULL, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_optim_step_count(b) == 2);
    CHECK(perpo_sft_train_stream(b, NULL, &src, &tc, NULL, NULL) == PERPO_ERR_ARG);
    perpo_model_free(a);
    perpo_model_free(b);
}

/* ---- every config field outside its documented range is refused --------------------------- */
static void test_config_ranges(perpo_test *t) {
    perpo_config c;
    int k;
    for (k = 0; k < 16; k++) {
        c = small_config();
        switch (k) {
        case 0: c.image_h = 0; break;
        case 1: c.image_w = 4097; break;
        case 2: c.channels = 5; break;
        case 3: c.patch_h = 3; break; /* does not divide 8 */
        case 4: c.patch_w = 0; break;
        case 5: c.patch_h = 257; break;
        case 6: c.pos_channels = 2; break;
        case 7: c.vis_sincos = -1; break;
        case 8:
            c.vis_sincos = 1;
            c.d_model = 18;
            break; /* needs d_model % 4 == 0 */
        case 9: c.d_model = 8193; break;
        case 10: c.n_heads = 3; break; /* does not divide 16 */
        case 11: c.n_vis_layers = 65; break;
        case 12: c.n_dec_layers = 0; break;
        case 13: c.mlp_mult = 17; break;
        case 14: c.max_text = 3; break;
        default: c.max_batch = 65537; break;
        }
        CHECK_MSG(perpo_config_validate(&c) == PERPO_ERR_ARG, "out-of-range case %d accepted", k);
    }
    c = small_config();
    c.patch_h = 2;
    c.patch_w = 8;
    c.pos_channels = 1;
    c.vis_sincos = 1;
    c.n_vis_layers = 0;
    CHECK_OK(perpo_config_validate(&c));
}

/* ---- checkpoint format v2 keeps every config field; version 1 files still load ------------- */
static void put_u32_le(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static void test_checkpoint_config_versions(perpo_test *t) {
    perpo_config c = small_config(), plain = small_config(), other;
    perpo_model *m = NULL, *l = NULL, *p = NULL;
    const char *path = "tests_tmp_v2.ckpt";
    unsigned char *v2 = NULL, *v1 = NULL;
    size_t n = 0, np, k;
    float img[8 * 8 * 3];
    const float *imgs[1] = { img };
    int tok[8], tgt[8];
    perpo_batch b;
    FILE *f;
    c.patch_h = 2;
    c.patch_w = 4;
    c.pos_channels = 1;
    c.vis_sincos = 1;
    CHECK_OK(perpo_model_create(&m, &c, 21));
    if (!m) return;
    CHECK_OK(perpo_checkpoint_save(m, path, 0));
    CHECK_OK(perpo_model_load(&l, path, NULL));
    if (l) {
        const perpo_config *lc = perpo_model_config(l);
        float lp_m, lp_l;
        CHECK(lc->image_h == c.image_h && lc->image_w == c.image_w && lc->channels == c.channels &&
              lc->patch_h == 2 && lc->patch_w == 4 && lc->pos_channels == 1 &&
              lc->vis_sincos == 1 && lc->d_model == c.d_model && lc->n_heads == c.n_heads &&
              lc->n_vis_layers == c.n_vis_layers && lc->n_dec_layers == c.n_dec_layers &&
              lc->mlp_mult == c.mlp_mult && lc->max_text == c.max_text && lc->vocab == c.vocab &&
              lc->max_batch == c.max_batch);
        /* the loaded model computes exactly what the saved one did (sin-cos code rebuilt) */
        for (k = 0; k < 8 * 8 * 3; k++) img[k] = (float)(k % 7) / 7.0f;
        perpo_text_encode(&c, "ab", 2, "xyz", 3, tok, tgt, NULL);
        b.n_seq = 1;
        b.n_img = 1;
        b.images = imgs;
        b.image_of = NULL;
        b.tokens = tok;
        b.targets = tgt;
        CHECK_OK(perpo_forward(m, &b, &lp_m, NULL));
        CHECK_OK(perpo_forward(l, &b, &lp_l, NULL));
        CHECK(lp_m == lp_l);
    }
    /* copying parameters needs the same architecture; max_batch may differ */
    other = c;
    other.pos_channels = 0;
    CHECK_OK(perpo_model_create(&p, &other, 1));
    if (p) CHECK(perpo_model_copy_params(p, m) == PERPO_ERR_ARG);
    perpo_model_free(p);
    p = NULL;
    other = c;
    other.vis_sincos = 0;
    CHECK_OK(perpo_model_create(&p, &other, 1));
    if (p) CHECK(perpo_model_copy_params(p, m) == PERPO_ERR_ARG);
    perpo_model_free(p);
    p = NULL;
    other = c;
    other.max_batch = 1;
    CHECK_OK(perpo_model_create(&p, &other, 1));
    if (p) CHECK_OK(perpo_model_copy_params(p, m));
    perpo_model_free(p);
    p = NULL;
    perpo_model_free(l);
    l = NULL;
    perpo_model_free(m);
    m = NULL;

    /* a version-1 file (12 config words, one square patch size) of a plain model */
    CHECK_OK(perpo_model_create(&m, &plain, 22));
    if (!m) return;
    CHECK_OK(perpo_checkpoint_save(m, path, 0));
    v2 = ck_read(path, &n);
    np = perpo_model_num_params(m);
    CHECK(v2 && n == 16 + 4 * 15 + 8 + 4 * np + 4);
    if (v2 && n == 16 + 4 * 15 + 8 + 4 * np + 4) {
        static const int from_v2[12] = { 0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14 };
        size_t n1 = 16 + 4 * 12 + 8 + 4 * np + 4;
        v1 = (unsigned char *)malloc(n1);
        memcpy(v1, v2, 16);
        put_u32_le(v1 + 8, 1);
        for (k = 0; k < 12; k++) memcpy(v1 + 16 + 4 * k, v2 + 16 + 4 * (size_t)from_v2[k], 4);
        memcpy(v1 + 16 + 48, v2 + 16 + 60, 8 + 4 * np);
        put_u32_le(v1 + n1 - 4, perpo_crc32(0, v1, n1 - 4));
        f = fopen(path, "wb");
        if (f) {
            fwrite(v1, 1, n1, f);
            fclose(f);
        }
        CHECK_OK(perpo_model_load(&l, path, NULL));
        if (l) {
            const perpo_config *lc = perpo_model_config(l);
            CHECK(lc->patch_h == 4 && lc->patch_w == 4 && lc->pos_channels == 0 &&
                  lc->vis_sincos == 0 && lc->d_model == plain.d_model &&
                  lc->max_batch == plain.max_batch);
            CHECK(memcmp(perpo_model_params(l), perpo_model_params(m), np * sizeof(float)) == 0);
        }
        /* an unknown version is refused */
        put_u32_le(v1 + 8, 3);
        put_u32_le(v1 + n1 - 4, perpo_crc32(0, v1, n1 - 4));
        CHECK(ck_load_bytes(v1, n1) == PERPO_ERR_FORMAT);
    }
    remove(path);
    free(v1);
    free(v2);
    perpo_model_free(l);
    perpo_model_free(m);
}

static void test_checkpoint_corruption(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    const char *path = "tests_tmp_good.ckpt";
    unsigned char *good, *bad;
    size_t n = 0, i, cut;
    int bit_fails = 0, bits = 0;
    CHECK_OK(perpo_model_create(&m, &c, 8));
    if (!m) return;
    perpo_model_grads(m)[0] = 1.0f;
    CHECK_OK(perpo_optim_step(
        m, &(perpo_optim_config){ 1e-3f, 1e-4f, 1, 10, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f }, 1.0f,
        NULL));
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER));
    perpo_model_free(m);
    good = ck_read(path, &n);
    remove(path);
    CHECK(good && n > 200);
    if (!good || n <= 200) {
        free(good);
        return;
    }
    CHECK_OK(ck_load_bytes(good, n));
    bad = (unsigned char *)malloc(n + 8);
    /* truncated anywhere (header, parameters, moments, CRC) */
    for (cut = 0; cut < n; cut += cut < 100 ? 1 : 997)
        CHECK(ck_load_bytes(good, cut) == PERPO_ERR_FORMAT);
    /* one extra byte */
    memcpy(bad, good, n);
    bad[n] = 0;
    CHECK(ck_load_bytes(bad, n + 1) == PERPO_ERR_FORMAT);
    /* one flipped bit in every 61st byte: the CRC (or a size check) catches all of them */
    for (i = 0; i < n; i += 61) {
        memcpy(bad, good, n);
        bad[i] ^= (unsigned char)(1u << (i % 8));
        bits++;
        bit_fails += ck_load_bytes(bad, n) == PERPO_ERR_FORMAT;
    }
    CHECK_MSG(bit_fails == bits, "%d of %d bit flips loaded without an error", bits - bit_fails,
              bits);
    /* wrong magic, wrong version, unknown flag, absurd config values */
    memcpy(bad, good, n);
    bad[0] = 'X';
    CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
    memcpy(bad, good, n);
    bad[8] = 3;
    CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
    memcpy(bad, good, n);
    bad[12] |= 2;
    CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
    for (i = 0; i < 15; i++) { /* each config word set to 0 (2 for the 0/1 switches) and 2^31 - 1 */
        memcpy(bad, good, n);
        memset(bad + 16 + 4 * i, 0, 4);
        if (i == 5 || i == 6) bad[16 + 4 * i] = 2; /* pos_channels, vis_sincos: 0 is valid */
        CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
        memset(bad + 16 + 4 * i, 0xFF, 3);
        bad[16 + 4 * i + 3] = 0x7F;
        CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
    }
    memcpy(bad, good, n);
    memset(bad + 16 + 60, 0xFF, 8); /* n_params = 2^64 - 1 */
    CHECK(ck_load_bytes(bad, n) == PERPO_ERR_FORMAT);
    free(good);
    free(bad);
}

/* ---- argument checking ------------------------------------------------------------------- */
static void test_model_bad_arguments(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    int tok[8], tgt[8];
    float img[8 * 8 * 3];
    const float *imgs[1] = { img };
    perpo_batch b;
    float lp;
    memset(img, 0, sizeof img);
    c.d_model = 15; /* not divisible by the heads */
    CHECK(perpo_model_create(&m, &c, 1) == PERPO_ERR_ARG && m == NULL);
    c = small_config();
    c.patch_h = c.patch_w = 3;
    CHECK(perpo_model_create(&m, &c, 1) == PERPO_ERR_ARG);
    c = small_config();
    CHECK_OK(perpo_model_create(&m, &c, 1));
    if (!m) return;
    CHECK(perpo_text_encode(&c, "abc", 3, "toolong", 7, tok, tgt, NULL) == PERPO_ERR_ARG);
    CHECK_OK(perpo_text_encode(&c, "ab", 2, "xyz", 3, tok, tgt, NULL)); /* exactly 8 */
    b.n_seq = 1;
    b.n_img = 1;
    b.images = imgs;
    b.image_of = NULL;
    b.tokens = tok;
    b.targets = tgt;
    CHECK_OK(perpo_forward(m, &b, &lp, NULL));
    tok[3] = 999;
    CHECK(perpo_forward(m, &b, &lp, NULL) == PERPO_ERR_ARG);
    tok[3] = 'x';
    b.n_seq = 4;
    CHECK(perpo_forward(m, &b, &lp, NULL) == PERPO_ERR_ARG);
    b.n_seq = 1;
    img[5] = NAN;
    CHECK(perpo_forward(m, &b, &lp, NULL) == PERPO_ERR_NONFINITE);
    img[5] = 0.0f;
    CHECK_OK(perpo_forward(m, &b, &lp, NULL));
    lp = NAN;
    CHECK(perpo_backward(m, &lp) == PERPO_ERR_NONFINITE);
    CHECK(strcmp(perpo_status_string(PERPO_ERR_FORMAT), "malformed input") == 0);
    perpo_model_free(m);
}

/* A NaN gradient is refused and changes nothing. */
static void test_nonfinite_step_refused(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    perpo_optim_config oc = perpo_optim_default();
    float *before, gn;
    size_t n;
    CHECK_OK(perpo_model_create(&m, &c, 2));
    if (!m) return;
    n = perpo_model_num_params(m);
    before = (float *)malloc(n * sizeof(float));
    memcpy(before, perpo_model_params(m), n * sizeof(float));
    perpo_zero_grad(m);
    perpo_model_grads(m)[17] = INFINITY;
    CHECK(perpo_optim_step(m, &oc, 1.0f, &gn) == PERPO_ERR_NONFINITE);
    CHECK(memcmp(before, perpo_model_params(m), n * sizeof(float)) == 0);
    CHECK(perpo_optim_step_count(m) == 0);
    free(before);
    perpo_model_free(m);
}

const perpo_test_case perpo_tests_model[] = {
    { "forward, logits, log-probs and both backward entries match PyTorch",
      test_reference_forward_backward },
    { "5 AdamW steps (clip, decay, cosine warmup) match PyTorch", test_reference_adamw },
    { "non-square patches, position channels, sin-cos positions: forward and backward match "
      "PyTorch",
      test_reference_forward_backward_opts },
    { "non-square patches, position channels, sin-cos positions: 5 AdamW steps match PyTorch",
      test_reference_adamw_opts },
    { "whole-model gradient = finite differences, every tensor", test_model_finite_differences },
    { "every config field outside its documented range is refused", test_config_ranges },
    { "SFT over a stream: same model as a set, its errors stop training", test_sft_stream },
    { "checkpoints keep every config field (v2); version-1 files load; copies need one "
      "architecture",
      test_checkpoint_config_versions },
    { "whole model with non-square patches, position channels and sin-cos positions = finite "
      "differences",
      test_model_finite_differences_opts },
    { "SFT memorizes 6 image->text pairs; greedy reproduces them", test_sft_memorizes },
    { "sampling with the KV cache = sampling by recomputation", test_cache_matches_recompute },
    { "KV cache = recomputation for two images sharing one prompt (image_of 0,0,1,1)",
      test_cache_images_share_prompt },
    { "same seed -> bit-identical parameters after 20 steps", test_bit_identical_training },
    { "sampler frequencies follow softmax(z/T); top-k, top-p, greedy", test_sampler_distribution },
    { "SFT stopped at step 10, saved, loaded and resumed = uninterrupted, bit for bit",
      test_sft_resume_exact },
    { "checkpoint round trip; missing, corrupt, short files fail cleanly",
      test_checkpoint_roundtrip },
    { "corrupted checkpoints (truncation, bit flips, magic, version, sizes) fail cleanly",
      test_checkpoint_corruption },
    { "bad arguments get a status", test_model_bad_arguments },
    { "a non-finite gradient is refused, nothing changes", test_nonfinite_step_refused },
    { NULL, NULL }
};
