/* Allocation-failure test: a separate program (its own main) that builds perpo.h with a
 * counting allocator which fails the k-th allocation, for k = 1, 2, ... until a whole run
 * needs no failure. The run creates a small model, trains 2 SFT steps, saves and loads a
 * checkpoint, generates, samples preference lists, computes reference log-probs, trains 2
 * preference steps, scores OCR text (and, when perpo.h has them, loads a manifest and a PPM
 * file). For every k:
 *   - the call that meets the failure returns PERPO_ERR_NOMEM (no other status, no crash);
 *   - model creation, checkpoint loading and the OCR metrics, called through their _err
 *     variants, say in their message which allocation of how many bytes failed ("" on success);
 *   - an injected failure is never swallowed: some call must report it;
 *   - the same call, repeated right away without a failure, succeeds (no half-updated state);
 *   - after cleanup no block is live, and every block was freed with the ctx it was
 *     allocated with.
 * Model allocations carry perpo_config.alloc_ctx, and every other call here (perpo_model_load,
 * the OCR metrics, the data loaders) is given the same context; an allocation that still came
 * with ctx NULL would be counted by a file-static fallback that shares the same sequence of
 * call numbers, and fails the test.
 * Prints one line per k, a summary, and "N passed, N failed" last; exits non-zero on failure.
 *   cc -std=c99 -O1 -o build/alloc_fail tests/alloc_fail.c -lm && ./build/alloc_fail [-v] */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the counting allocator ---------------------------------------------------------------- */
typedef struct af_counts {
    long calls;             /* allocation calls (malloc, and realloc) so far in this run */
    long fail_at;           /* the call number that fails; <= 0: none */
    long failed;            /* failures injected */
    long live[2];           /* blocks alive: [0] through a context, [1] through ctx NULL */
    long calls_by[2];       /* calls: [0] through a context, [1] through ctx NULL */
    long bad_free;          /* frees of unknown blocks or with another ctx than the allocation's */
    const char *stage;      /* what the run is doing, for the report */
    long null_calls_in[16]; /* ctx NULL calls per stage index */
    int stage_index;
} af_counts;

typedef struct af_ctx {
    af_counts *counts;
    const char *name;
} af_ctx;

static af_counts af_state; /* one run's counters */
static af_ctx af_model_ctx = { &af_state, "perpo_config.alloc_ctx" };
static af_ctx af_null_fallback = { &af_state, "ctx NULL" }; /* where no ctx reaches */

/* Every block carries a header: its size, the ctx it was allocated with, a magic. 32 bytes keep
   the user pointer as aligned as malloc's. */
typedef struct af_header {
    size_t size;
    void *owner;
    unsigned long magic;
} af_header;
#define AF_HDR   32
#define AF_MAGIC 0xA110CA7EUL
typedef char af_header_fits[sizeof(af_header) <= AF_HDR ? 1 : -1];

static af_ctx *af_resolve(void *ctx) { return ctx ? (af_ctx *)ctx : &af_null_fallback; }

static int af_should_fail(af_ctx *c, int null_ctx) {
    af_counts *s = c->counts;
    s->calls++;
    s->calls_by[null_ctx]++;
    if (null_ctx && s->stage_index >= 0 && s->stage_index < 16) s->null_calls_in[s->stage_index]++;
    if (s->calls == s->fail_at) {
        s->failed++;
        return 1;
    }
    return 0;
}

static void *af_malloc(void *ctx, size_t n) {
    af_ctx *c = af_resolve(ctx);
    af_header *h;
    if (af_should_fail(c, ctx == NULL)) return NULL;
    if (n > (size_t)-1 - AF_HDR) return NULL;
    h = (af_header *)malloc(AF_HDR + (n ? n : 1));
    if (!h) return NULL;
    h->size = n;
    h->owner = ctx;
    h->magic = AF_MAGIC;
    c->counts->live[ctx == NULL]++;
    return (char *)h + AF_HDR;
}

static void af_free(void *ctx, void *p) {
    af_ctx *c = af_resolve(ctx);
    af_header *h;
    if (!p) return;
    h = (af_header *)(void *)((char *)p - AF_HDR);
    if (h->magic != AF_MAGIC || h->owner != ctx) {
        c->counts->bad_free++;
        return;
    } /* leak it: safer */
    h->magic = 0;
    c->counts->live[ctx == NULL]--;
    free(h);
}

static void *af_realloc(void *ctx, void *p, size_t n) {
    af_ctx *c = af_resolve(ctx);
    af_header *h, *nh;
    if (!p) return af_malloc(ctx, n);
    h = (af_header *)(void *)((char *)p - AF_HDR);
    if (h->magic != AF_MAGIC || h->owner != ctx) {
        c->counts->bad_free++;
        return NULL;
    }
    if (af_should_fail(c, ctx == NULL)) return NULL; /* the old block stays valid */
    if (n > (size_t)-1 - AF_HDR) return NULL;
    nh = (af_header *)realloc(h, AF_HDR + (n ? n : 1));
    if (!nh) return NULL;
    nh->size = n;
    return (char *)nh + AF_HDR;
}

#define PERPO_MALLOC(ctx, n)     af_malloc((ctx), (n))
#define PERPO_REALLOC(ctx, p, n) af_realloc((ctx), (p), (n))
#define PERPO_FREE(ctx, p)       af_free((ctx), (p))
#define PERPO_IMPLEMENTATION
#include "../perpo.h"

/* perpo.h with the data loaders defines these limits */
#if defined(PERPO_MANIFEST_MAX_LINE) && defined(PERPO_PNM_MAX_HEADER)
#define AF_HAVE_DATA 1
#else
#define AF_HAVE_DATA 0
#endif

/* ---- the scenario ---------------------------------------------------------------------------- */
#define AF_W   8
#define AF_PIX (AF_W * AF_W * 3)
static const char *const af_ckpt = "alloc_fail_tmp.ckpt";
static const char *const af_ppm = "alloc_fail_tmp.ppm";
static const char *const af_tsv = "alloc_fail_tmp.tsv";

enum {
    ST_CREATE,
    ST_SFT,
    ST_SAVE,
    ST_LOAD,
    ST_GENERATE,
    ST_PREF_SAMPLE,
    ST_PREF_REFERENCE,
    ST_PREF_TRAIN,
    ST_OCR,
    ST_MANIFEST,
    ST_PNM,
    ST_COUNT
};
static const char *const af_stage_names[ST_COUNT] = {
    "perpo_model_create", "perpo_sft_train",     "perpo_checkpoint_save", "perpo_model_load",
    "perpo_generate",     "perpo_pref_sample",   "perpo_pref_reference",  "perpo_pref_train",
    "perpo_ocr_score",    "perpo_manifest_load", "perpo_image_load_pnm"
};

typedef struct af_world {
    float img[2][AF_PIX];
    perpo_example ex[2];
    perpo_model *model, *loaded;
    perpo_pref_set set;
#if AF_HAVE_DATA
    perpo_manifest manifest;
    float pnm[AF_PIX];
#endif
} af_world;

static float af_reward(const char *r, size_t len, size_t item, void *user) {
    (void)r;
    (void)user;
    return (float)((len + item) % 3) * 0.5f;
}

/* A call with an error buffer that met the injected failure must say so: PERPO_ERR_NOMEM with a
   message that starts with the call's name and says which allocation of how many bytes failed;
   after success the message is "". */
static int af_says_nomem(perpo_status st, const char *err, const char *call) {
    size_t n = strlen(call);
    if (st == PERPO_OK) return err[0] == 0;
    if (st != PERPO_ERR_NOMEM) return 1; /* the harness reports the status itself */
    if (strncmp(err, call, n) == 0 && err[n] == ':' && strstr(err, "out of memory allocating") &&
        strstr(err, " bytes"))
        return 1;
    printf("alloc_fail: %s: out of memory, but the message is \"%s\" (wanted \"%s: ... out of "
           "memory allocating ... bytes ...\")\n",
           call, err, call);
    return 0;
}

static perpo_status af_stage(af_world *w, int stage) {
    perpo_status st = PERPO_OK;
    switch (stage) {
    case ST_CREATE: {
        perpo_config c = perpo_config_default();
        char err[PERPO_ERROR_MAX];
        c.image_h = c.image_w = AF_W;
        c.channels = 3;
        c.patch_h = c.patch_w = 4;
        c.d_model = 8;
        c.n_heads = 2;
        c.n_vis_layers = 1;
        c.n_dec_layers = 1;
        c.mlp_mult = 1;
        c.max_text = 16;
        c.max_batch = 4;
        c.alloc_ctx = &af_model_ctx;
        st = perpo_model_create_err(&w->model, &c, 7, err, sizeof err);
        if (st == PERPO_OK && !w->model) st = PERPO_ERR_ARG;
        if (!af_says_nomem(st, err, "perpo_model_create")) st = PERPO_ERR_ARG;
        if (st != PERPO_OK && w->model) {
            perpo_model_free(w->model);
            w->model = NULL;
            return PERPO_ERR_ARG;
        }
        break;
    }
    case ST_SFT: {
        perpo_sft_config tc = perpo_sft_default();
        tc.batch_size = 2;
        tc.optim.total_steps = 2;
        tc.optim.warmup_steps = 1;
        tc.log_every = 1;
        st = perpo_sft_train(w->model, w->ex, 2, &tc, NULL, NULL);
        break;
    }
    case ST_SAVE: st = perpo_checkpoint_save(w->model, af_ckpt, 0); break;
    case ST_LOAD: {
        char err[PERPO_ERROR_MAX];
        st = perpo_model_load_err(&w->loaded, af_ckpt, &af_model_ctx, err, sizeof err);
        if (st != PERPO_OK && w->loaded) return PERPO_ERR_ARG; /* must stay NULL on error */
        if (!af_says_nomem(st, err, "perpo_model_load")) return PERPO_ERR_ARG;
        break;
    }
    case ST_GENERATE: {
        const float *images[1];
        const char *prompts[1] = { "where?" };
        perpo_gen_request req = { 1, 1, NULL, NULL, NULL };
        perpo_sample_config sc = perpo_sample_default();
        char out[32];
        images[0] = w->img[0];
        req.images = images;
        req.prompts = prompts;
        sc.max_new_tokens = 4;
        st = perpo_generate(w->loaded, &req, &sc, out, sizeof out, NULL);
        if (st == PERPO_OK) {
            sc.no_cache = 1;
            st = perpo_generate(w->loaded, &req, &sc, out, sizeof out, NULL);
        }
        break;
    }
    case ST_PREF_SAMPLE: {
        perpo_sample_config sc = perpo_sample_default();
        sc.temperature = 1.0f;
        sc.max_new_tokens = 5;
        sc.seed = 3;
        st = perpo_pref_sample(w->model, w->ex, 2, 2, &sc, af_reward, NULL, &w->set);
        if (st != PERPO_OK && (w->set.lists || w->set.n_lists)) return PERPO_ERR_ARG;
        break;
    }
    case ST_PREF_REFERENCE:
        st = perpo_pref_reference(w->model, w->set.lists, w->set.n_lists);
        break;
    case ST_PREF_TRAIN: {
        perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
        pc.optim.lr = 1e-4f; /* the rate this test was written with (the default is 1e-5) */
        pc.optim.min_lr = 1e-5f;
        pc.lists_per_step = 2;
        pc.optim.total_steps = 2;
        pc.optim.warmup_steps = 1;
        pc.log_every = 1;
        pc.nll_weight = 0.1f;
        st = perpo_pref_train(w->model, w->set.lists, w->set.n_lists, &pc, NULL, NULL);
        break;
    }
    case ST_OCR: {
        perpo_ocr_scores s;
        static const char hyp[] = "the quick brown fox jumps", ref[] = "the quick red fox jumped";
        char err[PERPO_ERROR_MAX];
        st = perpo_ocr_score_err(hyp, sizeof hyp - 1, ref, sizeof ref - 1, &s, err, sizeof err,
                                 &af_model_ctx);
        if (!af_says_nomem(st, err, "perpo_ocr_score")) return PERPO_ERR_ARG;
        break;
    }
#if AF_HAVE_DATA
    case ST_MANIFEST: {
        char err[128];
        st = perpo_manifest_load(af_tsv, &w->manifest, err, sizeof err, &af_model_ctx);
        if (st != PERPO_OK && (w->manifest.entries || w->manifest.n)) return PERPO_ERR_ARG;
        break;
    }
    case ST_PNM: {
        char err[128];
        st = perpo_image_load_pnm(af_ppm, AF_W, AF_W, 3, w->pnm, err, sizeof err, &af_model_ctx);
        break;
    }
#endif
    default: break;
    }
    return st;
}

static void af_cleanup(af_world *w) {
    perpo_pref_set_free(&w->set);
    perpo_model_free(w->loaded);
    w->loaded = NULL;
    perpo_model_free(w->model);
    w->model = NULL;
#if AF_HAVE_DATA
    perpo_manifest_free(&w->manifest);
#endif
    remove(af_ckpt);
}

typedef struct af_result {
    long calls, failed, leaked, bad_free;
    int stage; /* stage that failed, or -1 */
    perpo_status st, retry;
    const char *problem; /* NULL when this k passed */
} af_result;

static af_result af_run(af_world *w, long k, long *null_calls_in) {
    af_result r;
    int s;
    memset(&af_state, 0, sizeof af_state);
    af_state.fail_at = k;
    r.stage = -1;
    r.st = PERPO_OK;
    r.retry = PERPO_OK;
    r.problem = NULL;
    for (s = 0; s < ST_COUNT; s++) {
        perpo_status st;
        if (!AF_HAVE_DATA && (s == ST_MANIFEST || s == ST_PNM)) continue;
        af_state.stage = af_stage_names[s];
        af_state.stage_index = s;
        st = af_stage(w, s);
        if (st != PERPO_OK) {
            r.stage = s;
            r.st = st;
            if (st != PERPO_ERR_NOMEM)
                r.problem = "a status other than PERPO_ERR_NOMEM";
            else if (!af_state.failed)
                r.problem = "PERPO_ERR_NOMEM without an injected failure";
            af_state.fail_at = 0; /* the same call again, nothing failing: must succeed */
            r.retry = af_stage(w, s);
            if (!r.problem && r.retry != PERPO_OK) r.problem = "the repeated call failed";
            break;
        }
    }
    if (r.stage < 0 && af_state.failed)
        r.problem = "an injected failure was swallowed (every call returned OK)";
    af_state.stage = "cleanup";
    af_state.stage_index = -1;
    af_cleanup(w);
    r.calls = af_state.calls;
    r.failed = af_state.failed;
    r.leaked = af_state.live[0] + af_state.live[1];
    r.bad_free = af_state.bad_free;
    if (!r.problem && r.bad_free)
        r.problem = "a block was freed with another ctx than its own (or twice)";
    if (!r.problem && r.leaked) r.problem = "blocks leaked";
    if (null_calls_in)
        for (s = 0; s < ST_COUNT; s++) null_calls_in[s] = af_state.null_calls_in[s];
    return r;
}

int main(int argc, char **argv) {
    static af_world w;
    long k, passed = 0, failed = 0, max_k = 100000, null_calls_in[ST_COUNT];
    long fails_per_stage[ST_COUNT];
    int verbose = argc > 1 && strcmp(argv[1], "-v") == 0, i, s;
    af_result r;
    memset(&w, 0, sizeof w);
    memset(fails_per_stage, 0, sizeof fails_per_stage);
    for (i = 0; i < AF_PIX; i++) {
        w.img[0][i] = (float)(i % 7) / 7.0f;
        w.img[1][i] = (float)(i % 5) / 5.0f;
    }
    w.ex[0].image = w.img[0];
    w.ex[0].prompt = "where?";
    w.ex[0].response = "left";
    w.ex[1].image = w.img[1];
    w.ex[1].prompt = "where?";
    w.ex[1].response = "right";
#if AF_HAVE_DATA
    {
        FILE *f = fopen(af_ppm, "wb");
        int ok = f != NULL;
        if (f) {
            ok = fprintf(f, "P6\n%d %d\n255\n", AF_W, AF_W) > 0;
            for (i = 0; ok && i < AF_PIX; i++) ok = fputc(i & 255, f) != EOF;
            ok = (fclose(f) == 0) && ok;
        }
        f = ok ? fopen(af_tsv, "wb") : NULL;
        ok = f != NULL;
        if (f) {
            ok = fputs("# image\tprompt\tanswer\r\na.ppm\twhere?\tleft\r\nb.ppm\twhere?\tright\n",
                       f) >= 0;
            ok = (fclose(f) == 0) && ok;
        }
        if (!ok) {
            printf("cannot write %s or %s\n0 passed, 1 failed\n", af_ppm, af_tsv);
            return 1;
        }
    }
#endif
    { /* the allocator itself: counts, realloc keeps the block, frees balance */
        char *p, *q;
        memset(&af_state, 0, sizeof af_state);
        p = (char *)af_malloc(NULL, 10);
        if (p) memcpy(p, "123456789", 10);
        q = (char *)af_realloc(NULL, p, 100000);
        if (!p || !q || strcmp(q, "123456789") != 0 || af_state.live[1] != 1 ||
            af_state.calls != 2) {
            printf("alloc_fail: the counting allocator is broken\n0 passed, 1 failed\n");
            return 1;
        }
        af_free(NULL, q);
        if (af_state.live[1] != 0 || af_state.bad_free) {
            printf("alloc_fail: free is broken\n0 passed, 1 failed\n");
            return 1;
        }
    }
    for (k = 1; k <= max_k; k++) {
        r = af_run(&w, k, null_calls_in);
        if (r.problem)
            failed++;
        else
            passed++;
        if (r.stage >= 0) fails_per_stage[r.stage]++;
        if (r.problem || verbose)
            printf("k=%-4ld %s: %s, retry %s, %ld leaked%s%s\n", k,
                   r.stage >= 0 ? af_stage_names[r.stage] : "(none)",
                   r.stage >= 0 ? perpo_status_string(r.st) : "ok",
                   r.stage >= 0 ? perpo_status_string(r.retry) : "-", r.leaked,
                   r.problem ? "  <- FAIL: " : "", r.problem ? r.problem : "");
        if (!r.failed) break; /* k beyond the last allocation: this was the clean full run */
    }
    remove(af_ppm);
    remove(af_tsv);
    printf("alloc_fail: %ld allocation calls in a full run (%ld through perpo_config.alloc_ctx, "
           "%ld with ctx NULL)\n",
           r.calls, af_state.calls_by[0], af_state.calls_by[1]);
    printf("alloc_fail: the full run %s\n",
           r.problem ? r.problem : (r.stage < 0 ? "succeeded, nothing leaked" : "failed"));
    if (r.stage >= 0 || r.failed) {
        failed++;
        printf("alloc_fail: FAIL: the run with no injected failure did not succeed\n");
    }
    printf("alloc_fail: failures landed in:");
    for (s = 0; s < ST_COUNT; s++)
        if (fails_per_stage[s]) printf(" %s x%ld", af_stage_names[s], fails_per_stage[s]);
    printf("\nalloc_fail: calls with ctx NULL (every call here passes a context, so none):");
    for (s = 0; s < ST_COUNT; s++)
        if (null_calls_in[s]) printf(" %s x%ld", af_stage_names[s], null_calls_in[s]);
    if (af_state.calls_by[1]) {
        failed++;
        printf("\nalloc_fail: FAIL: an allocation did not get the caller's context");
    }
    printf("\n%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
