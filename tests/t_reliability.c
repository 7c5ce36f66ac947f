/* Reliability (issue 12): each finding of the adversarial pass has a test here that failed
 * before its fix; then property tests of the objectives (thousands of random lists against
 * their definitions in long double, shift and permutation invariance, finite differences) and
 * of the metrics (IoU/GIoU, edit distance). Checkpoints are crafted from a real save: fields
 * are found from the END of the file (params, step, moments, CRC), and the CRC is recomputed,
 * so each corruption reaches the check it targets instead of failing the CRC first. */
#include <limits.h>
#include <stdlib.h>
#include "test.h"

#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#define TR_POSIX 1
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

static uint64_t tr_rng(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int tr_below(uint64_t *s, int n) { return (int)(tr_rng(s) % (uint64_t)n); }

/* ---- helpers: a small model and checkpoint bytes ------------------------------------------ */
static perpo_model *tr_model(perpo_test *t, int max_batch) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    c.max_batch = max_batch;
    CHECK_OK(perpo_model_create(&m, &c, 3));
    return m;
}
/* One optimizer step from a made-up gradient, so the moments are non-zero. */
static void tr_one_step(perpo_test *t, perpo_model *m) {
    perpo_optim_config oc = perpo_optim_default();
    size_t i, n = perpo_model_num_params(m);
    for (i = 0; i < n; i++) perpo_model_grads(m)[i] = (float)((int)(i % 7) - 3) * 1e-3f;
    CHECK_OK(perpo_optim_step(m, &oc, 1.0f, NULL));
}
static unsigned char *tr_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long sz;
    *n = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    b = (unsigned char *)malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) == (size_t)sz) *n = (size_t)sz;
    fclose(f);
    return b;
}
static int tr_write(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(b, 1, n, f) == n;
    return (fclose(f) == 0) && ok;
}
/* The temporary files of saves to path (a bare name in the current folder): the entries named
   "<path>.<something>.tmp". Counts them and, with remove_them, removes them. */
static int tr_tmps(const char *path, int remove_them) {
    int n = 0;
#ifdef TR_POSIX
    size_t plen = strlen(path);
    DIR *d = opendir(".");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > plen + 5 && strncmp(e->d_name, path, plen) == 0 && e->d_name[plen] == '.' &&
            strcmp(e->d_name + len - 4, ".tmp") == 0) {
            n++;
            if (remove_them) remove(e->d_name);
        }
    }
    closedir(d);
#else
    (void)path;
    (void)remove_them;
#endif
    return n;
}
static uint32_t tr_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void tr_put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static void tr_put_f32(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    tr_put_u32(p, u);
}
static void tr_fix_crc(unsigned char *b, size_t n) {
    tr_put_u32(b + n - 4, perpo_crc32(0, b, n - 4));
}

/* The tail of a checkpoint saved with PERPO_CKPT_OPTIMIZER: ... params | step | m | v | CRC. */
typedef struct {
    size_t params, step, adam_m, adam_v, crc;
} tr_tail;
static tr_tail tr_layout(size_t n, size_t np) {
    tr_tail l;
    l.crc = n - 4;
    l.adam_v = l.crc - 4 * np;
    l.adam_m = l.adam_v - 4 * np;
    l.step = l.adam_m - 4;
    l.params = l.step - 4 * np;
    return l;
}
/* Writes bytes to a file and loads it: the status, and the model when it loaded. */
static perpo_status tr_load_bytes(const unsigned char *b, size_t n, perpo_model **out) {
    const char *path = "tests_tmp_rel_crafted.ckpt";
    perpo_model *m = NULL;
    perpo_status st;
    if (!tr_write(path, b, n)) return PERPO_ERR_IO;
    st = perpo_model_load(&m, path, NULL);
    remove(path);
    if (out)
        *out = m;
    else
        perpo_model_free(m);
    return st;
}

/* ---- finding: signed overflow in the schedule and the step counter ------------------------ */
static void test_schedule_extremes(perpo_test *t) {
    static const int v[] = {
        INT_MIN,         INT_MIN + 1,         -1000,       -1,     0, 1, 7, 1000,
        PERPO_MAX_STEPS, PERPO_MAX_STEPS + 1, INT_MAX - 1, INT_MAX
    };
    const int nv = (int)(sizeof v / sizeof v[0]);
    int a, b, c, valid = 0, refused = 0;
    perpo_model *m = tr_model(t, 3);
    for (a = 0; a < nv; a++)
        for (b = 0; b < nv; b++) {
            perpo_optim_config oc = perpo_optim_default();
            int ok;
            oc.warmup_steps = v[a];
            oc.total_steps = v[b];
            ok = v[b] >= 1 && v[b] <= PERPO_MAX_STEPS && v[a] >= 0 && v[a] <= v[b];
            CHECK_MSG((perpo_optim_validate(&oc) == PERPO_OK) == ok, "warmup %d total %d", v[a],
                      v[b]);
            valid += ok;
            for (c = 0; c < nv; c++) { /* every step: finite, in [min_lr, lr] when valid, else 0 */
                float lr = perpo_lr_at(&oc, v[c]);
                if (ok)
                    CHECK_MSG(lr >= 0.0f && lr <= oc.lr &&
                                  (v[c] < v[a] || lr >= oc.min_lr * (1 - 1e-6f)),
                              "lr_at(warmup %d, total %d, step %d) = %g", v[a], v[b], v[c], lr);
                else
                    CHECK_MSG(lr == 0.0f, "lr_at(warmup %d, total %d) = %g for an invalid config",
                              v[a], v[b], lr);
            }
            if (m && !ok) {
                perpo_zero_grad(m);
                refused += perpo_optim_step(m, &oc, 1.0f, NULL) == PERPO_ERR_ARG;
            }
        }
    CHECK(valid > 10);
    CHECK_MSG(refused == nv * nv - valid, "%d of %d invalid schedules stepped",
              nv * nv - valid - refused, nv * nv - valid);
    if (m) CHECK(perpo_optim_step_count(m) == 0);
    perpo_model_free(m);
}

/* A checkpoint whose step counter is near INT_MAX behind a valid CRC is malformed; 2^30 loads
   but cannot step (the counter would leave its range). */
static void test_checkpoint_step_counter(perpo_test *t) {
    const char *path = "tests_tmp_rel_step.ckpt";
    static const uint32_t bad[] = { (uint32_t)PERPO_MAX_STEPS + 1, 0x7FFFFFFFu, 0x80000000u,
                                    0xFFFFFFFFu };
    perpo_model *m = tr_model(t, 3), *l = NULL;
    unsigned char *b;
    size_t n, np, i;
    tr_tail tl;
    if (!m) return;
    tr_one_step(t, m);
    np = perpo_model_num_params(m);
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER));
    perpo_model_free(m);
    b = tr_read(path, &n);
    remove(path);
    if (!b || n < 12 * np + 8) {
        CHECK(0);
        free(b);
        return;
    }
    tl = tr_layout(n, np);
    CHECK_MSG(tr_u32(b + tl.step) == 1 && tr_u32(b + tl.crc) == perpo_crc32(0, b, n - 4),
              "checkpoint tail layout changed: step %u", (unsigned)tr_u32(b + tl.step));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tr_put_u32(b + tl.step, bad[i]);
        tr_fix_crc(b, n);
        CHECK_MSG(tr_load_bytes(b, n, NULL) == PERPO_ERR_FORMAT, "step counter %u loaded",
                  (unsigned)bad[i]);
    }
    tr_put_u32(b + tl.step, (uint32_t)PERPO_MAX_STEPS);
    tr_fix_crc(b, n);
    CHECK_OK(tr_load_bytes(b, n, &l));
    if (l) {
        perpo_optim_config oc = perpo_optim_default();
        CHECK(perpo_optim_step_count(l) == PERPO_MAX_STEPS);
        perpo_zero_grad(l);
        CHECK(perpo_optim_step(l, &oc, 1.0f, NULL) == PERPO_ERR_ARG);
        CHECK(perpo_optim_step_count(l) == PERPO_MAX_STEPS);
        perpo_model_free(l);
    }
    free(b);
}

/* ---- finding: OK returned with a ruined model --------------------------------------------- */
static void test_bad_optimizer_values_refused(perpo_test *t) {
    perpo_model *m = tr_model(t, 3);
    float *before;
    size_t n, k;
    struct {
        const char *what;
        perpo_optim_config oc;
    } cases[24];
    int nc = 0, i;
    if (!m) return;
#define TR_CASE(field, value)                                                                      \
    do {                                                                                           \
        cases[nc].what = #field " = " #value;                                                      \
        cases[nc].oc = perpo_optim_default();                                                      \
        cases[nc].oc.field = value;                                                                \
        nc++;                                                                                      \
    } while (0)
    TR_CASE(min_lr, NAN);
    TR_CASE(min_lr, INFINITY);
    TR_CASE(min_lr, -1e-4f);
    TR_CASE(min_lr, 2e-3f);
    TR_CASE(weight_decay, NAN);
    TR_CASE(weight_decay, INFINITY);
    TR_CASE(weight_decay, -0.1f);
    TR_CASE(weight_decay, 1.5f);
    TR_CASE(lr, INFINITY);
    TR_CASE(lr, 1e30f);
    TR_CASE(lr, 2.0f);
    TR_CASE(lr, 0.0f);
    TR_CASE(lr, NAN);
    TR_CASE(beta1, 1.0f);
    TR_CASE(beta2, -0.5f);
    TR_CASE(eps, 0.0f);
    TR_CASE(eps, INFINITY);
    TR_CASE(eps, 1.0f);
    TR_CASE(clip_norm, -1.0f);
    TR_CASE(clip_norm, NAN);
    TR_CASE(clip_norm, INFINITY);
    TR_CASE(warmup_steps, -1);
    TR_CASE(total_steps, 0);
    TR_CASE(total_steps, PERPO_MAX_STEPS + 1);
#undef TR_CASE
    n = perpo_model_num_params(m);
    before = (float *)malloc(n * sizeof(float));
    memcpy(before, perpo_model_params(m), n * sizeof(float));
    for (i = 0; i < nc; i++) {
        for (k = 0; k < n; k++) perpo_model_grads(m)[k] = 1e-3f;
        CHECK_MSG(perpo_optim_validate(&cases[i].oc) == PERPO_ERR_ARG, "%s validates",
                  cases[i].what);
        CHECK_MSG(perpo_optim_step(m, &cases[i].oc, 1.0f, NULL) == PERPO_ERR_ARG, "%s: step taken",
                  cases[i].what);
    }
    CHECK(memcmp(before, perpo_model_params(m), n * sizeof(float)) == 0 &&
          perpo_optim_step_count(m) == 0);
    /* a valid config, but a gradient scale so large that the update overflows: refused whole */
    {
        perpo_optim_config oc = perpo_optim_default();
        oc.clip_norm = 0.0f;
        for (k = 0; k < n; k++) perpo_model_grads(m)[k] = 1e-3f;
        perpo_model_grads(m)[n / 2] = 3e38f;
        CHECK(perpo_optim_step(m, &oc, 1e30f, NULL) == PERPO_ERR_NONFINITE);
        CHECK(perpo_optim_step(m, &oc, INFINITY, NULL) == PERPO_ERR_ARG);
        CHECK(memcmp(before, perpo_model_params(m), n * sizeof(float)) == 0 &&
              perpo_optim_step_count(m) == 0);
        for (k = 0; k < n; k++) perpo_model_grads(m)[k] = 1e-3f;
        CHECK_OK(perpo_optim_step(m, &oc, 1.0f, NULL)); /* and an ordinary step still works */
    }
    /* the trainers check the same ranges before touching the model */
    {
        perpo_sft_config tc = perpo_sft_default();
        perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
        perpo_example ex;
        static float img[8 * 8 * 3];
        perpo_pref_list l;
        const char *resp[2] = { "a", "b" };
        float rw[2] = { 1.0f, 0.0f }, ref[2] = { -1.0f, -1.0f };
        ex.image = img;
        ex.prompt = "p";
        ex.response = "ab";
        tc.batch_size = 2;
        tc.optim.weight_decay = NAN;
        CHECK(perpo_sft_train(m, &ex, 1, &tc, NULL, NULL) == PERPO_ERR_ARG);
        tc = perpo_sft_default();
        tc.batch_size = 2;
        tc.resume = 2;
        CHECK(perpo_sft_train(m, &ex, 1, &tc, NULL, NULL) == PERPO_ERR_ARG);
        tc = perpo_sft_default();
        tc.batch_size = 2;
        tc.accum_steps = PERPO_MAX_ACCUM + 1;
        CHECK(perpo_sft_train(m, &ex, 1, &tc, NULL, NULL) == PERPO_ERR_ARG);
        l.image = img;
        l.prompt = "p";
        l.n = 2;
        l.responses = resp;
        l.rewards = rw;
        l.ref_logp = ref;
        pc.lists_per_step = 1;
        pc.optim.min_lr = NAN;
        CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
        pc = perpo_pref_default(PERPO_OBJ_PERPO);
        pc.lists_per_step = 1;
        pc.nll_weight = INFINITY;
        CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
        pc = perpo_pref_default(PERPO_OBJ_PERPO);
        pc.lists_per_step = 1;
        pc.objective.beta = 1e30f;
        CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
        pc = perpo_pref_default(PERPO_OBJ_PERPO);
        pc.lists_per_step = 1;
        pc.objective.gamma = NAN;
        CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
        pc = perpo_pref_default(PERPO_OBJ_PERPO);
        pc.lists_per_step = 1;
        pc.mean_logp = 3;
        CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
    }
    free(before);
    perpo_model_free(m);
}

/* Non-finite weights never flow silently: generation and save refuse them, a checkpoint with a
   negative second moment or a NaN weight behind a valid CRC does not load. */
static void test_nonfinite_model_refused(perpo_test *t) {
    const char *path = "tests_tmp_rel_nonfinite.ckpt";
    perpo_model *m = tr_model(t, 3);
    static float img[8 * 8 * 3];
    const float *imgs[1] = { img };
    const char *prompts[1] = { "a" };
    perpo_gen_request req;
    perpo_sample_config sc = perpo_sample_default();
    char out[16];
    unsigned char *b;
    size_t n, np, len = 99;
    tr_tail tl;
    FILE *f;
    if (!m) return;
    req.n_seq = 1;
    req.n_img = 1;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    CHECK_OK(perpo_generate(m, &req, &sc, out, sizeof out, &len));
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER));
    perpo_model_params(m)[5] = NAN;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, &len) == PERPO_ERR_NONFINITE);
    sc.no_cache = 1;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, &len) == PERPO_ERR_NONFINITE);
    CHECK(perpo_checkpoint_save(m, path, 0) == PERPO_ERR_NONFINITE);
    perpo_model_params(m)[5] = INFINITY;
    CHECK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) == PERPO_ERR_NONFINITE);
    f = fopen("tests_tmp_rel_nonfinite.ckpt.tmp", "rb");
    CHECK(f == NULL); /* refused before writing anything */
    if (f) fclose(f);
    CHECK(tr_tmps(path, 1) == 0);
    perpo_model_params(m)[5] = 0.0f;
    CHECK_OK(perpo_generate(m, &req, &sc, out, sizeof out, &len));
    sc.temperature = NAN;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, &len) == PERPO_ERR_ARG);
    sc = perpo_sample_default();
    sc.top_p = 1.5f;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, &len) == PERPO_ERR_ARG);
    sc = perpo_sample_default();
    sc.top_k = PERPO_VOCAB + 1;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, &len) == PERPO_ERR_ARG);
    np = perpo_model_num_params(m);
    perpo_model_free(m);
    /* the saved (good) checkpoint, then crafted with valid CRCs */
    b = tr_read(path, &n);
    remove(path);
    if (!b || n < 12 * np + 8) {
        CHECK(0);
        free(b);
        return;
    }
    tl = tr_layout(n, np);
    CHECK_OK(tr_load_bytes(b, n, NULL));
    {
        static const struct {
            const char *what;
            int region;
            size_t at;
            float v;
        } c[] = { { "NaN weight", 0, 3, NAN },
                  { "Inf weight", 0, 0, INFINITY },
                  { "-Inf first moment", 1, 7, -INFINITY },
                  { "NaN second moment", 2, 1, NAN },
                  { "negative second moment", 2, 11, -1e-6f },
                  { "negative second moment (last)", 2, (size_t)-1, -1.0f } };
        size_t i;
        for (i = 0; i < sizeof c / sizeof c[0]; i++) {
            unsigned char *x = (unsigned char *)malloc(n);
            size_t base = c[i].region == 0 ? tl.params : c[i].region == 1 ? tl.adam_m : tl.adam_v;
            size_t at = c[i].at == (size_t)-1 ? np - 1 : c[i].at;
            memcpy(x, b, n);
            tr_put_f32(x + base + 4 * at, c[i].v);
            tr_fix_crc(x, n);
            CHECK_MSG(tr_load_bytes(x, n, NULL) == PERPO_ERR_FORMAT, "%s behind a valid CRC loaded",
                      c[i].what);
            free(x);
        }
    }
    free(b);
}

/* The arena limit: a header whose max_batch asks for an arena over PERPO_LOAD_MAX_ARENA_BYTES
   (the parameter count does not depend on max_batch, so sizes and CRC stay consistent). */
static void test_checkpoint_arena_limit(perpo_test *t) {
    const char *path = "tests_tmp_rel_arena.ckpt";
    const int marker = 29; /* a max_batch no other header field holds */
    perpo_model *m = tr_model(t, marker);
    perpo_config big;
    unsigned char *b;
    size_t n, i, found = 0, at = 0;
    uint32_t huge = 1;
    if (!m) return;
    big = *perpo_model_config(m);
    CHECK_OK(perpo_checkpoint_save(m, path, 0));
    perpo_model_free(m);
    b = tr_read(path, &n);
    remove(path);
    if (!b || n < 200) {
        CHECK(0);
        free(b);
        return;
    }
    for (i = 8; i + 4 <= 256 && i + 4 <= n; i += 4)
        if (tr_u32(b + i) == (uint32_t)marker) {
            found++;
            at = i;
        }
    CHECK_MSG(found == 1, "max_batch %d found %u times in the header", marker, (unsigned)found);
    /* the smallest power of two whose arena is over the limit, as long as the config is valid */
    do {
        huge *= 2;
        big.max_batch = (int)huge;
    } while (perpo_config_validate(&big) == PERPO_OK &&
             perpo__arena_floats(&big) <= (size_t)PERPO_LOAD_MAX_ARENA_BYTES / sizeof(float));
    CHECK_MSG(perpo_config_validate(&big) == PERPO_OK,
              "no valid max_batch reaches the arena limit");
    if (found == 1 && perpo_config_validate(&big) == PERPO_OK) {
        tr_put_u32(b + at, huge);
        tr_fix_crc(b, n);
        CHECK_MSG(tr_load_bytes(b, n, NULL) == PERPO_ERR_FORMAT, "arena of max_batch %u loaded",
                  (unsigned)huge);
        tr_put_u32(b + at, 4); /* and a small one loads: only the arena was wrong */
        tr_fix_crc(b, n);
        CHECK_OK(tr_load_bytes(b, n, NULL));
    }
    free(b);
}

/* ---- finding: numerics at finite extremes ------------------------------------------------- */
static void test_objectives_extreme_shift(perpo_test *t) {
    /* s = logp - ref with ref = -2^50: every s is shifted by exactly 2^50 (multiples of 1/4) */
    const float lp[5] = { -3.5f, -1.25f, -8.0f, -2.0f, -5.5f },
                r[5] = { 0.2f, 0.9f, 0.4f, 0.6f, 0.1f };
    const float zero[5] = { 0, 0, 0, 0, 0 };
    float shifted_ref[5], big_lp[5];
    int kind, k, e;
    for (e = 20; e <= 50; e += 5) { /* s + 2^e stays exact in double up to 2^50 */
        float c = ldexpf(1.0f, e);
        for (k = 0; k < 5; k++) shifted_ref[k] = -c;
        for (kind = 0; kind < 4; kind++) {
            perpo_objective_config cfg = perpo_objective_default((perpo_objective)kind);
            float l1 = -1, l2 = -1, g1[5], g2[5];
            cfg.beta = 1.0f;
            cfg.label_smoothing = kind == PERPO_OBJ_LISTMLE ? 0.0f : 0.1f;
            CHECK_OK(perpo_listwise_loss(&cfg, 5, lp, zero, r, &l1, g1));
            CHECK_OK(perpo_listwise_loss(&cfg, 5, lp, shifted_ref, r, &l2, g2));
            CHECK_MSG(l1 == l2 && l1 > 0.0f, "kind %d shift 2^%d: loss %.9g, unshifted %.9g", kind,
                      e, l2, l1);
            for (k = 0; k < 5; k++)
                CHECK_MSG(g1[k] == g2[k], "kind %d shift 2^%d: grad[%d] %.9g, unshifted %.9g", kind,
                          e, k, g2[k], g1[k]);
        }
    }
    /* log-prob differences of 1e15 in magnitude: ListMLE's terms are softplus of them */
    for (k = 0; k < 5; k++) big_lp[k] = lp[k] * 1e14f;
    {
        perpo_objective_config cfg = perpo_objective_default(PERPO_OBJ_LISTMLE);
        float loss = -1, g[5];
        double want = 0.0;
        cfg.beta = 1.0f;
        /* reward order 1, 3, 2, 0, 4 has s = (-1.25, -2, -8, -3.5, -5.5) x 1e14: the definition
           in double is accurate here (relative error ~1e-16 of a loss of 4.5e14) */
        {
            static const int pi[5] = { 1, 3, 2, 0, 4 };
            int m, l;
            for (m = 0; m < 4; m++) {
                double hi = -INFINITY, sum = 0.0;
                for (l = m; l < 5; l++)
                    if ((double)big_lp[pi[l]] > hi) hi = big_lp[pi[l]];
                for (l = m; l < 5; l++) sum += exp((double)big_lp[pi[l]] - hi);
                want += hi + log(sum) - (double)big_lp[pi[m]];
            }
        }
        CHECK_OK(perpo_listwise_loss(&cfg, 5, big_lp, zero, r, &loss, g));
        CHECK_NEAR(loss, want, 0, 1e-6);
        CHECK_NEAR(g[2], -1.0, 1e-6, 0); /* pi(2) = 2 loses to 0 by 4.5e14: gradient -1 ... */
        CHECK_NEAR(g[0], 1.0, 1e-6, 0);  /* ... and 0 takes its mass */
    }
}

static void test_lipo_tiny_reward_gaps(perpo_test *t) {
    const float lp[2] = { -1.0f, -2.5f }, ref[2] = { -1.5f, -1.5f };
    static const float gaps[] = { 1e-20f, 1e-30f, 1e-38f, 1e-45f, 1e-10f, 1.0f };
    size_t i;
    for (i = 0; i < sizeof gaps / sizeof gaps[0]; i++) {
        float r[2] = { gaps[i], 0.0f }, lo[3], go[3][2];
        int kind;
        for (kind = 0; kind < 3; kind++) { /* PerPO, DPO, LiPO: one pair, weight 1: the pair loss */
            perpo_objective_config cfg = perpo_objective_default((perpo_objective)kind);
            cfg.beta = 0.5f;
            CHECK_OK(perpo_listwise_loss(&cfg, 2, lp, ref, r, &lo[kind], go[kind]));
        }
        CHECK_MSG(lo[2] == lo[0] && lo[1] == lo[0] && go[2][0] == go[0][0] &&
                      go[2][1] == go[0][1] && lo[0] > 0.0f,
                  "reward gap %g: PerPO %.9g, DPO %.9g, LiPO %.9g (grad %.9g, %.9g)", gaps[i],
                  lo[0], lo[1], lo[2], go[2][0], go[2][1]);
    }
}

/* ---- finding: files ----------------------------------------------------------------------- */
/* Test hook state (tests/main.c routes PERPO_SYNC through perpo_test_sync_hook). */
static int tr_sync_fail_at;      /* n > 0: the n-th PERPO_SYNC call from now fails */
static char tr_synced_file[512]; /* the path of the last PERPO_SYNC call on a file */

static void test_files_not_regular(perpo_test *t) {
#ifdef TR_POSIX
    const char *dir = "tests_tmp_rel_dir";
    perpo_model *m = tr_model(t, 3), *l = NULL;
    perpo_manifest man;
    char err[256];
    float img[4 * 4];
    struct stat st;
    if (!m) return;
    rmdir(dir);
    CHECK(mkdir(dir, 0700) == 0);
    CHECK(perpo_model_load(&l, dir, NULL) == PERPO_ERR_IO && l == NULL);
    CHECK(perpo_manifest_load(dir, &man, err, sizeof err, NULL) == PERPO_ERR_IO && man.n == 0);
    CHECK_MSG(strstr(err, "not a regular file") != NULL, "err '%s'", err);
    CHECK(perpo_image_load_pnm(dir, 4, 4, 1, img, err, sizeof err, NULL) == PERPO_ERR_IO);
    CHECK_MSG(strstr(err, "not a regular file") != NULL, "err '%s'", err);
    /* saving onto an (empty) folder fails and leaves it there, with no temporary file */
    CHECK(perpo_checkpoint_save(m, dir, 0) == PERPO_ERR_IO);
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(stat("tests_tmp_rel_dir.tmp", &st) != 0);
    CHECK(tr_tmps(dir, 1) == 0);
    CHECK(rmdir(dir) == 0);
    /* a device: not a regular file either */
    if (stat("/dev/null", &st) == 0) {
        CHECK(perpo_model_load(&l, "/dev/null", NULL) == PERPO_ERR_IO && l == NULL);
        CHECK(perpo_manifest_load("/dev/null", &man, err, sizeof err, NULL) == PERPO_ERR_IO);
    }
    perpo_model_free(m);
#else
    (void)t;
    fprintf(stderr, "    skipped: needs POSIX mkdir/stat\n");
#endif
}

/* A failed save (the sync before the rename fails; a write error) leaves the previous
   checkpoint loadable, byte for byte, and no temporary file. */
static void test_failed_save_keeps_old(perpo_test *t) {
    const char *path = "tests_tmp_rel_keep.ckpt", *tmp = "tests_tmp_rel_keep.ckpt.tmp";
    perpo_model *m = tr_model(t, 3), *l = NULL;
    unsigned char *before, *after;
    size_t nb = 0, na = 0;
    FILE *f;
    if (!m) return;
    tr_tmps(path, 1);
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER));
    before = tr_read(path, &nb);
    tr_one_step(t, m); /* the model changes: a successful save would change the file */
    tr_sync_fail_at = 1;
    tr_synced_file[0] = 0;
    CHECK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) == PERPO_ERR_IO);
    CHECK(tr_sync_fail_at == 0); /* the hook was reached */
    /* on the temporary file, named "<path>.<pid>.<8 hex digits>.tmp" (POSIX) */
    CHECK_MSG(strncmp(tr_synced_file, path, strlen(path)) == 0 &&
                  strcmp(tr_synced_file + strlen(tr_synced_file) - 4, ".tmp") == 0,
              "PERPO_SYNC was called on \"%s\"", tr_synced_file);
#ifdef TR_POSIX
    {
        char want[256];
        size_t k, n = (size_t)snprintf(want, sizeof want, "%s.%lu.", path, (unsigned long)getpid());
        int hex = strlen(tr_synced_file) == n + 12 && strncmp(tr_synced_file, want, n) == 0;
        for (k = n; hex && k < n + 8; k++)
            hex = strchr("0123456789abcdef", tr_synced_file[k]) != NULL;
        CHECK_MSG(hex, "PERPO_SYNC was called on \"%s\", not \"%s<8 hex digits>.tmp\"",
                  tr_synced_file, want);
    }
#endif
    after = tr_read(path, &na);
    CHECK(before && after && na == nb && memcmp(before, after, nb) == 0);
    f = fopen(tr_synced_file, "rb");
    CHECK_MSG(f == NULL, "%s left behind", tr_synced_file);
    if (f) fclose(f);
    CHECK(tr_tmps(path, 1) == 0);
    CHECK_OK(perpo_model_load(&l, path, NULL));
    if (l) CHECK(perpo_optim_step_count(l) == 0);
    perpo_model_free(l);
    free(after);
#ifdef TR_POSIX
    /* a real write error: a child whose files may not grow past half a checkpoint (RLIMIT_FSIZE,
       SIGXFSZ ignored: the write fails with EFBIG) */
    {
        struct rlimit rl;
        pid_t pid;
        int status = 0;
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid == 0) {
            rl.rlim_cur = rl.rlim_max = (rlim_t)(nb / 2);
            signal(SIGXFSZ, SIG_IGN);
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(2);
            _exit(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) == PERPO_ERR_IO ? 0 : 1);
        }
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "a save past the file size limit: child status 0x%x", (unsigned)status);
        after = tr_read(path, &na);
        CHECK(after && na == nb && memcmp(before, after, nb) == 0);
        free(after);
        CHECK_MSG(tr_tmps(path, 1) == 0, "a temporary file left behind after a write error");
    }
#endif
    /* the folder's sync after the rename fails: PERPO_ERR_IO, but the new file is in place (the
       rename is done; only its durability is in doubt) and nothing else is removed */
    tr_sync_fail_at = 2;
    CHECK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) == PERPO_ERR_IO);
    CHECK(tr_sync_fail_at == 0);
    CHECK_OK(perpo_model_load(&l, path, NULL));
    if (l) CHECK(perpo_optim_step_count(l) == 1);
    perpo_model_free(l);
    l = NULL;
    CHECK(tr_tmps(path, 0) == 0);
    f = fopen(tmp, "rb");
    CHECK(f == NULL);
    if (f) fclose(f);
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER)); /* and then it saves */
    CHECK_OK(perpo_model_load(&l, path, NULL));
    if (l) CHECK(perpo_optim_step_count(l) == 1);
    perpo_model_free(l);
    free(before);
    remove(path);
    perpo_model_free(m);
}

#ifdef TR_POSIX
/* Saves m to path in a child that alarm() kills after 5 s: a save that blocks (opening a FIFO
   waits for a reader) fails the test instead of hanging it. The child's exit code: 0 when the
   save returned PERPO_OK, 1 otherwise; 128 + the signal that killed it. */
static int tr_save_in_child(const perpo_model *m, const char *path) {
    pid_t pid;
    int status = 0;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        alarm(5);
        _exit(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) == PERPO_OK ? 0 : 1);
    }
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void tr_clear_old_tmp(const char *old) {
    chmod(old, 0600);
    if (remove(old) != 0) rmdir(old);
}
#endif

/* Whatever sits at "<path>.tmp" (the temporary name of earlier versions, or anyone's file) is
   never opened, followed or renamed: a FIFO (opening it for writing would wait forever), a link
   to an unrelated file (which would be overwritten, and the link renamed over path), a folder
   and a read-only file (either would fail the save). Each save succeeds, path is afterwards a
   regular file that loads, the thing at "<path>.tmp" is as it was (the victim's bytes too), and
   no temporary file is left. */
static void test_checkpoint_hostile_tmp(perpo_test *t) {
#ifdef TR_POSIX
    static const char *what[4] = { "a FIFO", "a link to another file", "a folder",
                                   "a read-only file" };
    static const unsigned char bytes[] = "not a checkpoint: somebody else's file";
    const char *path = "tests_tmp_rel_hostile.ckpt", *old = "tests_tmp_rel_hostile.ckpt.tmp";
    const char *victim = "tests_tmp_rel_victim";
    perpo_model *m = tr_model(t, 3), *l = NULL;
    int kind;
    if (!m) return;
    tr_one_step(t, m);
    for (kind = 0; kind < 4; kind++) {
        struct stat st;
        unsigned char *b;
        size_t n = 0;
        int made = 0, r;
        remove(path);
        remove(victim);
        tr_clear_old_tmp(old);
        tr_tmps(path, 1);
        if (kind == 0) made = mkfifo(old, 0600) == 0;
        if (kind == 1) made = tr_write(victim, bytes, sizeof bytes) && symlink(victim, old) == 0;
        if (kind == 2) made = mkdir(old, 0700) == 0;
        if (kind == 3) made = tr_write(old, bytes, sizeof bytes) && chmod(old, 0400) == 0;
        CHECK_MSG(made, "cannot make %s at %s", what[kind], old);
        if (!made) continue;
        r = tr_save_in_child(m, path);
        CHECK_MSG(r == 0, "%s at %s: the save %s (child status %d)", what[kind], old,
                  r == 128 + SIGALRM ? "hung: killed by alarm() after 5 s" : "failed", r);
        CHECK_MSG(lstat(path, &st) == 0 && S_ISREG(st.st_mode),
                  "%s at %s: %s is not a regular file afterwards", what[kind], old, path);
        CHECK_MSG(perpo_model_load(&l, path, NULL) == PERPO_OK, "%s at %s: %s does not load",
                  what[kind], old, path);
        if (l) CHECK(perpo_optim_step_count(l) == 1);
        perpo_model_free(l);
        l = NULL;
        /* what sat at the old name is still there, as it was */
        CHECK_MSG(lstat(old, &st) == 0, "%s at %s: gone after the save", what[kind], old);
        if (kind == 0) CHECK(S_ISFIFO(st.st_mode));
        if (kind == 1) CHECK(S_ISLNK(st.st_mode));
        if (kind == 2) CHECK(S_ISDIR(st.st_mode));
        if (kind == 3) CHECK(S_ISREG(st.st_mode));
        if (kind == 1 || kind == 3) { /* (reading the FIFO would wait for a writer) */
            b = tr_read(kind == 1 ? victim : old, &n);
            CHECK_MSG(b && n == sizeof bytes && memcmp(b, bytes, n) == 0,
                      "%s at %s: the file's bytes changed", what[kind], old);
            free(b);
        }
        CHECK_MSG(tr_tmps(path, 1) == 0, "%s at %s: a temporary file was left", what[kind], old);
    }
    tr_clear_old_tmp(old);
    remove(victim);
    remove(path);
    perpo_model_free(m);
#else
    (void)t;
    fprintf(stderr, "    skipped: needs POSIX mkfifo, symlink and fork\n");
#endif
}

/* Two processes save one path 100 times each, at once, and load it after every save: every
   save succeeds, every load finds a whole checkpoint (one of the two models), the file left is
   one of the two checkpoints byte for byte, and no temporary file is left. */
static void test_checkpoint_concurrent_saves(perpo_test *t) {
#ifdef TR_POSIX
    const char *path = "tests_tmp_rel_race.ckpt";
    const char *ref_path[2] = { "tests_tmp_rel_race0.ckpt", "tests_tmp_rel_race1.ckpt" };
    perpo_model *m[2];
    unsigned char *ref[2] = { NULL, NULL }, *got;
    size_t nref[2] = { 0, 0 }, ngot = 0;
    pid_t pid[2] = { -1, -1 };
    int go[2], w, status[2] = { -1, -1 };
    m[0] = tr_model(t, 3);
    m[1] = tr_model(t, 3);
    if (!m[0] || !m[1] || pipe(go) != 0) {
        CHECK(0);
        perpo_model_free(m[0]);
        perpo_model_free(m[1]);
        return;
    }
    tr_one_step(t, m[1]); /* two different checkpoints */
    for (w = 0; w < 2; w++) {
        CHECK_OK(perpo_checkpoint_save(m[w], ref_path[w], PERPO_CKPT_OPTIMIZER));
        ref[w] = tr_read(ref_path[w], &nref[w]);
        remove(ref_path[w]);
    }
    CHECK(ref[0] && ref[1] && nref[0] == nref[1] && memcmp(ref[0], ref[1], nref[0]) != 0);
    remove(path);
    tr_tmps(path, 1);
    fflush(stdout);
    fflush(stderr);
    for (w = 0; w < 2; w++) {
        pid[w] = fork();
        if (pid[w] == 0) { /* bits: 1 a save failed, 2 a load failed or found neither model */
            char c;
            int i, code = 0;
            close(go[1]);
            alarm(60);
            if (read(go[0], &c, 1) != 0) _exit(4); /* both start when the parent closes it */
            for (i = 0; i < 100; i++) {
                perpo_model *l = NULL;
                int steps;
                if (perpo_checkpoint_save(m[w], path, PERPO_CKPT_OPTIMIZER) != PERPO_OK) code |= 1;
                if (perpo_model_load(&l, path, NULL) != PERPO_OK) {
                    code |= 2;
                    continue;
                }
                steps = perpo_optim_step_count(l);
                if (steps != 0 && steps != 1) code |= 2;
                perpo_model_free(l);
            }
            _exit(code);
        }
    }
    close(go[0]);
    close(go[1]);
    for (w = 0; w < 2; w++) {
        int st = 0;
        if (pid[w] > 0 && waitpid(pid[w], &st, 0) == pid[w])
            status[w] =
                WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        CHECK_MSG(status[w] == 0, "process %d:%s%s%s (status %d)", w,
                  status[w] > 0 && (status[w] & 1) ? " a save failed" : "",
                  status[w] > 0 && (status[w] & 2) ? " a load failed" : "",
                  status[w] < 0 || status[w] > 3 ? " did not run to the end" : "", status[w]);
    }
    got = tr_read(path, &ngot);
    CHECK_MSG(got && ((ngot == nref[0] && memcmp(got, ref[0], ngot) == 0) ||
                      (ngot == nref[1] && memcmp(got, ref[1], ngot) == 0)),
              "the file left is neither process's checkpoint");
    CHECK_MSG(tr_tmps(path, 1) == 0, "temporary files were left");
    remove(path);
    remove("tests_tmp_rel_race.ckpt.tmp");
    free(got);
    free(ref[0]);
    free(ref[1]);
    perpo_model_free(m[0]);
    perpo_model_free(m[1]);
#else
    (void)t;
    fprintf(stderr, "    skipped: needs POSIX fork\n");
#endif
}

/* ---- property tests: objectives ------------------------------------------------------------ */
static long double tr_softplus(long double x) {
    return x > 0 ? x + log1pl(expl(-x)) : log1pl(expl(x));
}
static long double tr_pair(long double x, long double eps) {
    return (1 - eps) * tr_softplus(-x) + eps * tr_softplus(x);
}

/* Each objective from its definition, in long double, straight from the formulas. */
static long double tr_reference(const perpo_objective_config *c, int n, const float *lp,
                                const float *ref, const float *r) {
    long double s[PERPO_MAX_LIST], beta = c->beta, eps = c->label_smoothing, L = 0;
    long double lam = c->positive; /* DPO-Positive: a pair's margin loses lam max(0, -s_i) */
    int i, j, k, all_equal = 1;
    for (k = 0; k < n; k++) {
        s[k] = (long double)lp[k] - (long double)ref[k];
        if (r[k] != r[0]) all_equal = 0;
    }
    if (all_equal) return 0;
    if (c->kind == PERPO_OBJ_PERPO) {
        long double wsum = 0;
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++)
                if (r[i] > r[j]) wsum += powl((long double)r[i] - r[j], c->gamma);
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++)
                if (r[i] > r[j])
                    L += powl((long double)r[i] - r[j], c->gamma) / wsum *
                         tr_pair(beta * (s[i] - s[j] - lam * fmaxl(0, -s[i])), eps);
    } else if (c->kind == PERPO_OBJ_DPO) {
        int b = 0, w = 0;
        for (k = 1; k < n; k++) {
            if (r[k] > r[b]) b = k;
            if (r[k] < r[w]) w = k;
        }
        L = tr_pair(beta * (s[b] - s[w] - lam * fmaxl(0, -s[b])), eps);
    } else if (c->kind == PERPO_OBJ_LIPO) {
        long double dsum = 0, inv_d[PERPO_MAX_LIST], G[PERPO_MAX_LIST];
        for (i = 0; i < n; i++) { /* tau_i: 1 + how many rank above i (z desc, ties by index) */
            int tau = 1;
            for (j = 0; j < n; j++) tau += s[j] > s[i] || (s[j] == s[i] && j < i);
            inv_d[i] = 1 / log2l(1 + (long double)tau);
            G[i] = exp2l(r[i]) - 1;
        }
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++)
                if (r[i] > r[j]) dsum += (G[i] - G[j]) * fabsl(inv_d[i] - inv_d[j]);
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++)
                if (r[i] > r[j])
                    L += (G[i] - G[j]) * fabsl(inv_d[i] - inv_d[j]) / dsum *
                         tr_pair(beta * (s[i] - s[j] - lam * fmaxl(0, -s[i])), eps);
    } else {
        int pi[PERPO_MAX_LIST], m;
        for (i = 0; i < n; i++) { /* reward order, ties by index: stable insertion */
            for (j = i; j > 0 && r[pi[j - 1]] < r[i]; j--) pi[j] = pi[j - 1];
            pi[j] = i;
        }
        for (m = 0; m < n - 1; m++) {
            long double hi = -INFINITY, sum = 0;
            for (k = m; k < n; k++)
                if (beta * s[pi[k]] > hi) hi = beta * s[pi[k]];
            for (k = m; k < n; k++) sum += expl(beta * s[pi[k]] - hi);
            L += hi + logl(sum) - beta * s[pi[m]];
        }
    }
    return L;
}

/* A random list: log-probs on a 1/16 grid (so shifting them by an integer is exact), distinct
   log-ratios (LiPO's ranks and finite differences stay put within +-h), rewards from a small
   set (ties happen) or continuous. */
static int tr_random_list(uint64_t *rs, float *lp, float *ref, float *r, int distinct_r) {
    int n = 2 + tr_below(rs, 11), k, j, again;
    do {
        again = 0;
        for (k = 0; k < n; k++) {
            lp[k] = (float)(-tr_below(rs, 1024)) / 16.0f;
            ref[k] = (float)(-tr_below(rs, 1024)) / 16.0f;
            r[k] = distinct_r ? (float)tr_below(rs, 1 << 20) / (float)(1 << 20)
                              : (float)tr_below(rs, 4) / 4.0f;
        }
        for (k = 0; k < n; k++)
            for (j = 0; j < k; j++) {
                if (fabsf((lp[k] - ref[k]) - (lp[j] - ref[j])) < 0.1f) again = 1;
                if (distinct_r && r[k] == r[j]) again = 1;
            }
    } while (again);
    return n;
}

static void test_objective_properties(perpo_test *t) {
    static const float betas[3] = { 0.1f, 1.0f, 3.0f }, gammas[3] = { 0.0f, 0.5f, 2.0f };
    uint64_t rs = 12;
    int it, fails[4][5] = { { 0 } }, kind, lists = 0;
    for (it = 0; it < 3000; it++) {
        float lp[16], ref[16], r[16], plp[16], pref[16], pr[16], slp[16], loss, ploss, sloss, g[16],
            pg[16], sg[16];
        int perm[16], n, k, distinct = it % 3 != 0, shift = tr_below(&rs, 1 << 10) - (1 << 9);
        n = tr_random_list(&rs, lp, ref, r, distinct);
        lists++;
        for (k = 0; k < n; k++) perm[k] = k;
        for (k = n - 1; k > 0; k--) {
            int j = tr_below(&rs, k + 1), x = perm[k];
            perm[k] = perm[j];
            perm[j] = x;
        }
        for (k = 0; k < n; k++) {
            plp[k] = lp[perm[k]];
            pref[k] = ref[perm[k]];
            pr[k] = r[perm[k]];
            slp[k] = lp[k] + (float)shift; /* exact: on the 1/16 grid and below 2^20 */
        }
        for (kind = 0; kind < 4; kind++) {
            perpo_objective_config c = perpo_objective_default((perpo_objective)kind);
            long double want;
            c.beta = betas[tr_below(&rs, 3)];
            c.gamma = gammas[tr_below(&rs, 3)];
            c.label_smoothing = tr_below(&rs, 2) ? 0.0f : 0.2f;
            /* DPO-Positive's lambda on a third of the lists with no s_k at its kink 0 (it is not
               shift-invariant, so property 2 is skipped for it) */
            c.positive = 0.0f;
            if (it % 3 == 1) {
                int at_kink = 0;
                for (k = 0; k < n; k++) at_kink |= lp[k] == ref[k];
                if (!at_kink) c.positive = 0.5f + (float)(it % 4); /* ListMLE ignores it */
            }
            if (perpo_listwise_loss(&c, n, lp, ref, r, &loss, g) != PERPO_OK) {
                fails[kind][0]++;
                continue;
            }
            /* 1. the definition in long double */
            want = tr_reference(&c, n, lp, ref, r);
            if (!(fabsl((long double)loss - want) <= 1e-6L + 1e-6L * fabsl(want))) {
                if (fails[kind][1]++ < 3)
                    fprintf(stderr, "  kind %d n %d: loss %.9g, definition %.12Lg\n", kind, n, loss,
                            want);
            }
            /* 2. shift invariance: bit for bit (every objective sees differences of s only) */
            if (c.positive == 0.0f &&
                (perpo_listwise_loss(&c, n, slp, ref, r, &sloss, sg) != PERPO_OK || sloss != loss ||
                 memcmp(sg, g, (size_t)n * sizeof(float)) != 0)) {
                if (fails[kind][2]++ < 3)
                    fprintf(stderr, "  kind %d n %d shift %d: loss %.9g vs %.9g\n", kind, n, shift,
                            sloss, loss);
            }
            /* 3. permutation: same loss, permuted gradient (PerPO and the others with distinct
               rewards; DPO, LiPO and ListMLE break reward ties by position) */
            if (distinct || kind == PERPO_OBJ_PERPO) {
                int bad = perpo_listwise_loss(&c, n, plp, pref, pr, &ploss, pg) != PERPO_OK ||
                          !(fabsf(ploss - loss) <= 1e-6f * (1.0f + fabsf(loss)));
                for (k = 0; k < n && !bad; k++)
                    bad = !(fabsf(pg[k] - g[perm[k]]) <= 1e-6f * (1.0f + fabsf(g[perm[k]])));
                if (bad && fails[kind][3]++ < 3)
                    fprintf(stderr, "  kind %d n %d: permuted loss %.9g vs %.9g\n", kind, n, ploss,
                            loss);
            }
            /* 4. gradient = central differences of the long double definition */
            for (k = 0; k < n; k++) {
                float lpu[16], lpd[16];
                long double fd;
                memcpy(lpu, lp, sizeof lpu);
                memcpy(lpd, lp, sizeof lpd);
                lpu[k] = lp[k] + 1.0f / 1024.0f; /* exact on the grid, far below every gap of 0.1 */
                lpd[k] = lp[k] - 1.0f / 1024.0f;
                fd = (tr_reference(&c, n, lpu, ref, r) - tr_reference(&c, n, lpd, ref, r)) /
                     (2.0L / 1024.0L);
                if (!(fabsl((long double)g[k] - fd) <= 2e-5L + 1e-4L * fabsl(fd))) {
                    if (fails[kind][4]++ < 3)
                        fprintf(stderr, "  kind %d n %d: grad[%d] %.9g, finite differences %.9Lg\n",
                                kind, n, k, g[k], fd);
                }
            }
        }
    }
    for (kind = 0; kind < 4; kind++)
        CHECK_MSG(
            fails[kind][0] + fails[kind][1] + fails[kind][2] + fails[kind][3] + fails[kind][4] == 0,
            "kind %d over %d lists: %d errors, %d from the definition, %d not shift-invariant, %d "
            "not "
            "permutation-invariant, %d gradients off",
            kind, lists, fails[kind][0], fails[kind][1], fails[kind][2], fails[kind][3],
            fails[kind][4]);
}

/* ---- property tests: metrics --------------------------------------------------------------- */
static void test_metric_properties(perpo_test *t) {
    uint64_t rs = 99;
    int it, bad_iou = 0, bad_giou = 0, bad_ed = 0;
    for (it = 0; it < 5000; it++) {
        float a[4], b[4];
        float ia, ib, iab, iba, ga, gab, gba;
        int k;
        for (k = 0; k < 2; k++) { /* random boxes, some degenerate, some identical */
            float x1 = (float)tr_below(&rs, 65) / 64.0f, x2 = (float)tr_below(&rs, 65) / 64.0f;
            float y1 = (float)tr_below(&rs, 65) / 64.0f, y2 = (float)tr_below(&rs, 65) / 64.0f;
            float *box = k ? b : a;
            box[0] = x1 < x2 ? x1 : x2;
            box[2] = x1 < x2 ? x2 : x1;
            box[1] = y1 < y2 ? y1 : y2;
            box[3] = y1 < y2 ? y2 : y1;
        }
        if (it % 10 == 0) memcpy(b, a, sizeof a);
        ia = perpo_box_iou(a, a);
        ib = perpo_box_iou(b, b);
        iab = perpo_box_iou(a, b);
        iba = perpo_box_iou(b, a);
        ga = perpo_box_giou(a, a);
        gab = perpo_box_giou(a, b);
        gba = perpo_box_giou(b, a);
        {
            int pos_a = a[2] > a[0] && a[3] > a[1];
            int pos_b = b[2] > b[0] && b[3] > b[1];
            if (iab != iba || !(iab >= 0.0f && iab <= 1.0f) || ia != (pos_a ? 1.0f : 0.0f) ||
                ib != (pos_b ? 1.0f : 0.0f) || (memcmp(a, b, sizeof a) == 0 && iab != ia))
                bad_iou++;
            if (gab != gba || !(gab >= -1.0f && gab <= 1.0f) || gab > iab + 1e-6f ||
                (pos_a && ga != 1.0f))
                bad_giou++;
        }
    }
    for (it = 0; it < 3000; it++) {
        char s[3][24];
        size_t n[3], dab, dba, dbc, dac, daa;
        float ned;
        int k, i;
        for (k = 0; k < 3; k++) {
            n[k] = (size_t)tr_below(&rs, 24);
            for (i = 0; i < (int)n[k]; i++) s[k][i] = (char)("abc\0"[tr_below(&rs, 4)]);
        }
        if (it % 7 == 0) {
            memcpy(s[1], s[0], n[0]);
            n[1] = n[0];
        }
        if (perpo_edit_distance(s[0], n[0], s[1], n[1], &dab, NULL) ||
            perpo_edit_distance(s[1], n[1], s[0], n[0], &dba, NULL) ||
            perpo_edit_distance(s[1], n[1], s[2], n[2], &dbc, NULL) ||
            perpo_edit_distance(s[0], n[0], s[2], n[2], &dac, NULL) ||
            perpo_edit_distance(s[0], n[0], s[0], n[0], &daa, NULL) ||
            perpo_normalized_edit_distance(s[0], n[0], s[1], n[1], &ned, NULL)) {
            bad_ed++;
            continue;
        }
        if (dab != dba || daa != 0 ||
            (dab == 0) != (n[0] == n[1] && memcmp(s[0], s[1], n[0]) == 0) || dac > dab + dbc ||
            dab < (n[0] > n[1] ? n[0] - n[1] : n[1] - n[0]) || dab > (n[0] > n[1] ? n[0] : n[1]) ||
            !(ned >= 0.0f && ned <= 1.0f) ||
            (n[0] + n[1] > 0 && ned != (float)dab / (float)(n[0] > n[1] ? n[0] : n[1])))
            bad_ed++;
    }
    CHECK_MSG(bad_iou == 0, "%d IoU property violations", bad_iou);
    CHECK_MSG(bad_giou == 0, "%d GIoU property violations", bad_giou);
    CHECK_MSG(bad_ed == 0, "%d edit distance property violations", bad_ed);
}

const perpo_test_case perpo_tests_reliability[] = {
    { "schedule: extreme warmup/total/step are refused or finite, never overflow",
      test_schedule_extremes },
    { "checkpoint: a step counter beyond 2^30 behind a valid CRC is malformed",
      test_checkpoint_step_counter },
    { "optimizer: NaN/Inf/out-of-range values refused; an overflowing step changes nothing",
      test_bad_optimizer_values_refused },
    { "non-finite weights: generate and save refuse; NaN/negative moments behind a valid CRC",
      test_nonfinite_model_refused },
    { "checkpoint: an arena over the load limit behind a valid CRC is malformed",
      test_checkpoint_arena_limit },
    { "objectives: exact under shifts of 2^20..2^50 and log-ratio gaps of 1e15",
      test_objectives_extreme_shift },
    { "objectives: LiPO keeps reward gaps down to 1e-45 like PerPO and DPO",
      test_lipo_tiny_reward_gaps },
    { "files: folders and devices are IO errors; saving onto a folder keeps it",
      test_files_not_regular },
    { "files: a failed save keeps the old checkpoint and leaves no temporary file",
      test_failed_save_keeps_old },
    { "checkpoint: a FIFO, link, folder or read-only file at <path>.tmp is left alone",
      test_checkpoint_hostile_tmp },
    { "checkpoint: two processes saving one path at once, 100 times each",
      test_checkpoint_concurrent_saves },
    { "property: 3000 random lists x 4 objectives = definition, shift, permutation, gradient",
      test_objective_properties },
    { "property: IoU/GIoU and edit distance symmetry, identity, bounds, triangle",
      test_metric_properties },
    { NULL, NULL }
};
