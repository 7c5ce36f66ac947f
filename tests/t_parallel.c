/* Data-parallel training through the reduction hook (perpo_parallel), without MPI: two
 * processes (fork) joined by pipes stand in for two MPI ranks, with a hook that sums their
 * buffers in rank order. Checked here:
 *   - a hook in a world of one changes no bit of SFT or preference training, and is called as
 *     documented (handshake, counts, metrics, gradients, reports);
 *   - sampling a block of the prompts (perpo_pref_sample_range on perpo_share blocks) gives
 *     exactly the lists the whole set gives, with the same reference log-probs;
 *   - 2 workers with batch B (lists L) train the same model as 1 process with 2B (2L), SFT and
 *     PerPO, within TPAR_TOL (the summation order of the gradients differs), while a run with
 *     only half the batch lands far outside it; both workers end bit-identical;
 *   - a preference run stopped (by one worker), saved by rank 0, reloaded by both and resumed
 *     ends bit-identical to the uninterrupted 2-worker run;
 *   - workers that disagree (steps, weights, world, rank) are refused by every worker, and a
 *     failure on one worker (a stream error, a NaN reward) stops both at the same step: it
 *     returns its error, the other PERPO_ERR_PEER; no one waits forever (each read has a
 *     timeout, so a broken protocol fails the test instead of hanging it);
 *   - a hook that hands back NaN or Inf in any float of any call (handshake, counts, loss,
 *     metrics, flags, gradients, stop requests) stops training with PERPO_ERR_NONFINITE, on
 *     both workers of a pair too. */
#include "test.h"

#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#define TPAR_POSIX 1
#endif

#define TPAR_W          32
#define TPAR_N          24   /* scenes: SFT examples and preference prompts */
#define TPAR_TOL        1e-4 /* parameters of 2 workers vs 1 process after 20 steps, max |diff| */
#define TPAR_TIMEOUT_MS 300000

typedef struct tpar_data {
    float img[TPAR_N][TPAR_W * TPAR_W * 3];
    char prompt[TPAR_N][24], answer[TPAR_N][32];
    perpo_example ex[TPAR_N];
} tpar_data;

static void tpar_make(tpar_data *d) {
    int i;
    for (i = 0; i < TPAR_N; i++) {
        ex_scene s;
        ex_scene_from_index(9090, (uint64_t)i, TPAR_W, TPAR_W, &s);
        ex_scene_render(&s, d->img[i]);
        ex_scene_prompt(&s, d->prompt[i], sizeof d->prompt[i]);
        ex_scene_answer(&s, d->answer[i], sizeof d->answer[i]);
        d->ex[i].image = d->img[i];
        d->ex[i].prompt = d->prompt[i];
        d->ex[i].response = d->answer[i];
    }
}

/* 1 - normalized edit distance to the true box's text: varied rewards even from a barely
   trained model, which is all these tests need */
static float tpar_reward(const char *r, size_t len, size_t item, void *user) {
    const tpar_data *d = (const tpar_data *)user;
    float v = 0.0f;
    perpo_ocr_reward(r, len, d->answer[item], strlen(d->answer[item]), &v, NULL);
    return v;
}

static perpo_config tpar_config(void) {
    perpo_config c = perpo_config_default();
    c.image_h = c.image_w = TPAR_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 32;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.max_text = 40;
    c.max_batch = 16;
    return c;
}

static uint64_t tpar_hash(const float *x, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, &x[i], 4);
        h = (h ^ w) * 0x100000001B3ull;
    }
    return h;
}

static double tpar_max_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst)) worst = d; /* NaN sticks */
    }
    return worst;
}

/* A world of one: the hook has nothing to add; it counts its calls. */
static perpo_status tpar_reduce_one(float *buf, size_t n, void *user) {
    (void)buf;
    (void)n;
    ++*(long *)user;
    return PERPO_OK;
}

/* A hook that sums like another (inner; NULL: a world of one) and then, at its call number
   `at` (1-based), writes value into buf[index] (past the end: into the last float), as a
   broken transport or reduction would. */
typedef struct tpar_poison {
    perpo_parallel inner;
    long calls, at;
    size_t index, n_at; /* n_at: the length of the poisoned call's buffer */
    float value;
} tpar_poison;
static perpo_status tpar_reduce_poison(float *buf, size_t n, void *user) {
    tpar_poison *p = (tpar_poison *)user;
    if (p->inner.reduce) {
        perpo_status st = p->inner.reduce(buf, n, p->inner.user);
        if (st != PERPO_OK) return st;
    }
    if (++p->calls == p->at) {
        buf[p->index < n ? p->index : n - 1] = p->value;
        p->n_at = n;
    }
    return PERPO_OK;
}

/* ---- Two workers: a hook over pipes ------------------------------------------------------- */
#ifdef TPAR_POSIX
typedef struct tpar_link {
    int rd, wr, rank;
    float *other; /* the other worker's buffer */
    size_t cap;
    long calls;
} tpar_link;

/* Reads or writes all n bytes, waiting at most TPAR_TIMEOUT_MS for each piece. */
static int tpar_io(int fd, void *p, size_t n, int writing) {
    char *c = (char *)p;
    while (n > 0) {
        struct pollfd pfd;
        ssize_t k;
        pfd.fd = fd;
        pfd.events = writing ? POLLOUT : POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, TPAR_TIMEOUT_MS) != 1) return 0;
        k = writing ? write(fd, c, n) : read(fd, c, n);
        if (k <= 0) return 0;
        c += k;
        n -= (size_t)k;
    }
    return 1;
}

/* Rank 0 sends, then receives; rank 1 receives, then sends; both then add in rank order
   (a + b: the same bits on both). A message is its length, then its floats. */
static perpo_status tpar_reduce_pipe(float *buf, size_t n, void *user) {
    tpar_link *l = (tpar_link *)user;
    uint64_t len = (uint64_t)n, other_len = 0;
    size_t i;
    int ok;
    l->calls++;
    if (n > l->cap) return PERPO_ERR_ARG;
    if (l->rank == 0)
        ok = tpar_io(l->wr, &len, sizeof len, 1) && tpar_io(l->wr, buf, n * sizeof(float), 1) &&
             tpar_io(l->rd, &other_len, sizeof other_len, 0) && other_len == len &&
             tpar_io(l->rd, l->other, n * sizeof(float), 0);
    else
        ok = tpar_io(l->rd, &other_len, sizeof other_len, 0) && other_len == len &&
             tpar_io(l->rd, l->other, n * sizeof(float), 0) &&
             tpar_io(l->wr, &len, sizeof len, 1) && tpar_io(l->wr, buf, n * sizeof(float), 1);
    if (!ok) return PERPO_ERR_IO;
    for (i = 0; i < n; i++) buf[i] = l->rank == 0 ? buf[i] + l->other[i] : l->other[i] + buf[i];
    return PERPO_OK;
}

#define TPAR_LOGGED 24 /* steps whose reports a worker keeps */
typedef struct tpar_out {
    int status, steps;
    uint64_t hash;                                   /* of the final parameters */
    long calls;                                      /* of the hook */
    float grad_norm[TPAR_LOGGED], loss[TPAR_LOGGED]; /* as reported at steps 1, 2, ... */
} tpar_out;
typedef void (*tpar_job)(int rank, perpo_parallel *par, void *arg, tpar_out *out);

/* Runs job as rank 0 in this process and as rank 1 in a child; out[r] is rank r's result.
   Returns 0 when both ran to the end (whatever their status). */
static int tpar_run2(tpar_job job, void *arg, tpar_out out[2]) {
    int to1[2], to0[2], res[2], wstatus = 0, ok;
    pid_t pid;
    tpar_link l;
    perpo_parallel par;
    memset(out, 0, 2 * sizeof *out);
    out[0].status = out[1].status = -1;
    if (pipe(to1) != 0 || pipe(to0) != 0 || pipe(res) != 0) return -1;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) return -1;
    memset(&l, 0, sizeof l);
    l.cap = 1u << 22;
    l.other = (float *)malloc(l.cap * sizeof(float));
    if (pid == 0) { /* rank 1 */
        tpar_out o;
        memset(&o, 0, sizeof o);
        close(to1[1]);
        close(to0[0]);
        close(res[0]);
        l.rd = to1[0];
        l.wr = to0[1];
        l.rank = 1;
        par.reduce = tpar_reduce_pipe;
        par.user = &l;
        par.rank = 1;
        par.world = 2;
        if (l.other) job(1, &par, arg, &o);
        o.calls = l.calls;
        close(l.wr); /* rank 0, if still waiting, sees the end instead of hanging */
        ok = tpar_io(res[1], &o, sizeof o, 1);
        _exit(ok && l.other ? 0 : 1);
    }
    close(to1[0]);
    close(to0[1]);
    close(res[1]);
    l.rd = to0[0];
    l.wr = to1[1];
    l.rank = 0;
    par.reduce = tpar_reduce_pipe;
    par.user = &l;
    par.rank = 0;
    par.world = 2;
    if (l.other) job(0, &par, arg, &out[0]);
    out[0].calls = l.calls;
    close(l.wr);
    ok = tpar_io(res[0], &out[1], sizeof out[1], 0);
    close(l.rd);
    close(res[0]);
    if (!ok) kill(pid, SIGKILL);
    waitpid(pid, &wstatus, 0);
    free(l.other);
    return ok && l.other && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 ? 0 : -1;
}
#endif

/* ---- SFT ------------------------------------------------------------------------------------ */
typedef struct tpar_sft_job {
    const tpar_data *d;
    int batch, steps, accum;
    int rank1_steps;    /* rank 1's total_steps when not 0: a disagreement */
    long rank1_fail_at; /* rank 1's stream fails from this example index on; -1: never */
    int rank1_stop_at;  /* rank 1's progress callback asks to stop after this step; 0: never */
    int rank1_seed;     /* rank 1's weights from another seed when not 0 */
    int rank1_world;    /* rank 1 claims this world when not 0 */
    int rank1_rank;     /* rank 1 claims this rank when >= 0 */
    int no_clip;        /* clip_norm 0 instead of 0.5 */
    long poison_at;     /* both workers' hooks write poison into buf[poison_index] of this call */
    size_t poison_index;
    float poison;
    float *params; /* rank 0 copies its final parameters here (may be NULL) */
} tpar_sft_job;

typedef struct tpar_stream {
    const tpar_data *d;
    long fail_at;
} tpar_stream;
static perpo_status tpar_next(size_t index, size_t slot, perpo_example *out, void *user) {
    const tpar_stream *s = (const tpar_stream *)user;
    (void)slot;
    if (s->fail_at >= 0 && (long)index >= s->fail_at) return PERPO_ERR_IO;
    *out = s->d->ex[(index * 7) % TPAR_N];
    return PERPO_OK;
}
static int tpar_stop_at(const perpo_progress *p, void *user) {
    return p->step == *(const int *)user;
}
/* Keeps each report's gradient norm and loss; stops after step stop_at (0: never). */
typedef struct tpar_log {
    tpar_out *out;
    int stop_at;
} tpar_log;
static int tpar_log_report(const perpo_progress *p, void *user) {
    const tpar_log *l = (const tpar_log *)user;
    if (p->step >= 1 && p->step <= TPAR_LOGGED) {
        l->out->grad_norm[p->step - 1] = p->grad_norm;
        l->out->loss[p->step - 1] = p->loss;
    }
    return p->step == l->stop_at;
}

static perpo_sft_config tpar_sft_config(int batch, int steps, int accum) {
    perpo_sft_config tc = perpo_sft_default();
    tc.batch_size = batch;
    tc.accum_steps = accum;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 3;
    tc.optim.total_steps = steps;
    tc.optim.clip_norm = 0.5f;
    tc.seed = 5;
    tc.log_every = 1;
    return tc;
}

static void tpar_sft(int rank, perpo_parallel *par, void *arg, tpar_out *out) {
    const tpar_sft_job *j = (const tpar_sft_job *)arg;
    perpo_config c = tpar_config();
    perpo_model *m = NULL;
    perpo_sft_config tc = tpar_sft_config(j->batch, j->steps, j->accum);
    tpar_stream stream;
    tpar_poison poison;
    tpar_log log;
    out->status =
        (int)perpo_model_create(&m, &c, rank == 1 && j->rank1_seed ? (uint64_t)j->rank1_seed : 1u);
    if (!m) return;
    if (par) tc.parallel = *par;
    if (par && j->poison_at > 0) { /* the pipe hook, then the poison */
        memset(&poison, 0, sizeof poison);
        poison.inner = *par;
        poison.at = j->poison_at;
        poison.index = j->poison_index;
        poison.value = j->poison;
        tc.parallel.reduce = tpar_reduce_poison;
        tc.parallel.user = &poison;
    }
    if (j->no_clip) tc.optim.clip_norm = 0.0f;
    if (rank == 1 && j->rank1_steps) tc.optim.total_steps = j->rank1_steps;
    if (rank == 1 && j->rank1_world) tc.parallel.world = j->rank1_world;
    if (rank == 1 && j->rank1_rank >= 0) tc.parallel.rank = j->rank1_rank;
    stream.d = j->d;
    stream.fail_at = rank == 1 ? j->rank1_fail_at : -1;
    if (j->rank1_fail_at >= 0) /* both over the stream; rank 1's fails */
        out->status = (int)perpo_sft_train_stream(m, tpar_next, &stream, &tc, NULL, NULL);
    else {
        log.out = out;
        log.stop_at = rank == 1 ? j->rank1_stop_at : 0;
        out->status = (int)perpo_sft_train(m, j->d->ex, TPAR_N, &tc, tpar_log_report, &log);
    }
    out->steps = perpo_optim_step_count(m);
    out->hash = tpar_hash(perpo_model_params(m), perpo_model_num_params(m));
    if (rank == 0 && j->params)
        memcpy(j->params, perpo_model_params(m), perpo_model_num_params(m) * sizeof(float));
    perpo_model_free(m);
}

/* ---- Preference training ----------------------------------------------------------------- */
typedef struct tpar_pref_job {
    const tpar_data *d;
    const perpo_model *sft; /* the starting weights and the sampler (the child has its copy) */
    int lists, steps;
    int rank1_nan;     /* rank 1 puts a NaN reward into its first list */
    int rank1_stop_at; /* rank 1 stops the run after this step; rank 0 saves, both resume */
    const char *ckpt;
    float *params;
} tpar_pref_job;

static perpo_pref_config tpar_pref_config(int lists, int steps) {
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    pc.lists_per_step = lists;
    pc.accum_steps = 2;
    pc.optim.total_steps = steps;
    pc.optim.warmup_steps = 3;
    pc.optim.lr = 1e-3f;
    pc.optim.min_lr = 1e-4f;
    pc.optim.clip_norm = 0.5f;
    pc.nll_weight = 0.5f;
    pc.mean_logp = 1;
    pc.objective.beta = 1.0f;
    pc.seed = 7;
    pc.log_every = 1;
    return pc;
}

/* This worker's lists: its perpo_share block of the prompts, sampled, filtered, referenced. */
static perpo_status tpar_lists(perpo_model *m, const tpar_data *d, int rank, int world,
                               perpo_pref_set *set, size_t *kept) {
    perpo_sample_config sc = perpo_sample_default();
    size_t first, count;
    perpo_status st;
    sc.temperature = 1.0f;
    sc.top_p = 0.9f;
    sc.seed = 21;
    if ((st = perpo_share(TPAR_N, rank, world, &first, &count)) != PERPO_OK) return st;
    if ((st = perpo_pref_sample_range(m, d->ex, first, count, 4, &sc, tpar_reward, (void *)d,
                                      set)) != PERPO_OK)
        return st;
    *kept = perpo_pref_filter(set->lists, set->n_lists, 0.05f);
    return *kept ? perpo_pref_reference(m, set->lists, *kept) : PERPO_OK;
}

static void tpar_pref(int rank, perpo_parallel *par, void *arg, tpar_out *out) {
    const tpar_pref_job *j = (const tpar_pref_job *)arg;
    perpo_config c = tpar_config();
    perpo_model *m = NULL, *sampler = NULL;
    perpo_pref_config pc = tpar_pref_config(j->lists, j->steps);
    perpo_pref_set set;
    size_t kept = 0;
    int world = par ? par->world : 1, stop = j->rank1_stop_at;
    memset(&set, 0, sizeof set);
    out->status = (int)perpo_model_create(&m, &c, 99);
    if (!m) return;
    /* the sampler is a copy of the SFT model: sampling in the child never touches shared state */
    if ((out->status = (int)perpo_model_create(&sampler, &c, 99)) != PERPO_OK ||
        (out->status = (int)perpo_model_copy_params(sampler, j->sft)) != PERPO_OK ||
        (out->status = (int)perpo_model_copy_params(m, j->sft)) != PERPO_OK ||
        (out->status = (int)tpar_lists(sampler, j->d, rank, world, &set, &kept)) != PERPO_OK)
        goto done;
    if (par) pc.parallel = *par;
    if (rank == 1 && j->rank1_nan && kept > 0) ((float *)set.lists[0].rewards)[1] = NAN;
    out->status = (int)perpo_pref_train(m, set.lists, kept, &pc,
                                        rank == 1 && stop ? tpar_stop_at : NULL, &stop);
    if (out->status == PERPO_OK && j->ckpt &&
        stop) { /* stopped: rank 0 saves, both reload and resume */
        perpo_model *r = NULL;
        float barrier[1] = { 0.0f };
        if (rank == 0) out->status = (int)perpo_checkpoint_save(m, j->ckpt, PERPO_CKPT_OPTIMIZER);
        barrier[0] = (float)out->status;
        if (par->reduce(barrier, 1, par->user) != PERPO_OK || barrier[0] != 0.0f) {
            out->status = -2;
            goto done;
        }
        if ((out->status = (int)perpo_model_load(&r, j->ckpt, NULL)) != PERPO_OK) goto done;
        perpo_model_free(m);
        m = r;
        pc.resume = 1;
        out->status = (int)perpo_pref_train(m, set.lists, kept, &pc, NULL, NULL);
    }
done:
    out->steps = perpo_optim_step_count(m);
    out->hash = tpar_hash(perpo_model_params(m), perpo_model_num_params(m));
    if (rank == 0 && j->params)
        memcpy(j->params, perpo_model_params(m), perpo_model_num_params(m) * sizeof(float));
    perpo_pref_set_free(&set);
    perpo_model_free(sampler);
    perpo_model_free(m);
}

/* ---- The tests ------------------------------------------------------------------------------ */

/* A hook in a world of one: bit-identical to no hook, and called as perpo.h documents. */
static void test_parallel_world_of_one(perpo_test *t) {
    static tpar_data d;
    perpo_config c = tpar_config();
    perpo_model *a = NULL, *b = NULL, *sampler = NULL;
    perpo_sft_config tc = tpar_sft_config(6, 6, 2);
    perpo_pref_config pc = tpar_pref_config(3, 6);
    perpo_pref_set set;
    size_t kept = 0, n;
    long calls = 0;
    tpar_make(&d);
    memset(&set, 0, sizeof set);
    CHECK_OK(perpo_model_create(&a, &c, 3));
    CHECK_OK(perpo_model_create(&b, &c, 3));
    CHECK_OK(perpo_model_create(&sampler, &c, 3));
    if (!a || !b || !sampler) goto done;
    n = perpo_model_num_params(a);
    tc.log_every = 3;
    CHECK_OK(perpo_sft_train(a, d.ex, TPAR_N, &tc, NULL, NULL));
    tc.parallel.reduce = tpar_reduce_one;
    tc.parallel.user = &calls;
    CHECK_OK(perpo_sft_train(b, d.ex, TPAR_N, &tc, NULL, NULL));
    CHECK(memcmp(perpo_model_params(a), perpo_model_params(b), n * sizeof(float)) == 0);
    /* entry: 2; each step: 2 counts (accumulation 2), 1 failure flag, 1 gradient; 2 reports */
    CHECK_MSG(calls == 2 + 6 * 4 + 2, "SFT called the hook %ld times, expected 28", calls);
    CHECK_OK(perpo_model_copy_params(sampler, a));
    CHECK_OK(tpar_lists(sampler, &d, 0, 1, &set, &kept));
    CHECK_MSG(kept >= 4, "kept %zu lists", kept);
    pc.log_every = 3;
    if (kept >= 4) {
        CHECK_OK(perpo_model_copy_params(b, a));
        CHECK_OK(perpo_pref_train(a, set.lists, kept, &pc, NULL, NULL));
        calls = 0;
        pc.parallel.reduce = tpar_reduce_one;
        pc.parallel.user = &calls;
        CHECK_OK(perpo_pref_train(b, set.lists, kept, &pc, NULL, NULL));
        CHECK(memcmp(perpo_model_params(a), perpo_model_params(b), n * sizeof(float)) == 0);
        /* entry: 2; each step: 1 metrics, 1 gradient; 2 reports */
        CHECK_MSG(calls == 2 + 6 * 2 + 2,
                  "preference training called the hook %ld times, expected 16", calls);
    }
    /* the parallel fields are checked */
    tc.parallel.reduce = NULL;
    tc.parallel.world = 2;
    CHECK(perpo_sft_train(b, d.ex, TPAR_N, &tc, NULL, NULL) ==
          PERPO_ERR_ARG); /* no hook, 2 workers */
    tc.parallel.reduce = tpar_reduce_one;
    tc.parallel.world = 2;
    tc.parallel.rank = 2;
    CHECK(perpo_sft_train(b, d.ex, TPAR_N, &tc, NULL, NULL) == PERPO_ERR_ARG);
    tc.parallel.rank = 0;
    tc.parallel.world = PERPO_MAX_WORLD + 1;
    CHECK(perpo_sft_train(b, d.ex, TPAR_N, &tc, NULL, NULL) == PERPO_ERR_ARG);
    tc.parallel.world = 1; /* the hook alone catches a world that is not what it claims: */
    pc.parallel.world = 2;
    pc.parallel.rank = 1; /* a "world of 2" where only this worker answers */
    calls = 0;
    CHECK(perpo_pref_train(b, set.lists, kept, &pc, NULL, NULL) == PERPO_ERR_ARG);
    CHECK(calls == 1); /* refused at the first reduction of the handshake */
    {                  /* perpo_share: contiguous blocks in rank order, sizes within one */
        size_t first = 0, count = 0, next = 0;
        int r;
        for (r = 0; r < 5; r++) {
            CHECK_OK(perpo_share(23, r, 5, &first, &count));
            CHECK(first == next && (count == 4 || count == 5) && (r < 3) == (count == 5));
            next = first + count;
        }
        CHECK(next == 23);
        CHECK_OK(perpo_share(0, 1, 2, &first, &count));
        CHECK(count == 0);
        CHECK(perpo_share(5, 2, 2, &first, &count) == PERPO_ERR_ARG);
        CHECK(perpo_share(5, -1, 2, &first, &count) == PERPO_ERR_ARG);
        CHECK(perpo_share(5, 0, 0, &first, &count) == PERPO_ERR_ARG);
        CHECK(perpo_share(5, 0, 1, NULL, &count) == PERPO_ERR_ARG);
    }
done:
    perpo_pref_set_free(&set);
    perpo_model_free(a);
    perpo_model_free(b);
    perpo_model_free(sampler);
}

/* Each prompt's samples come from its own stream: a block of the prompts gives exactly the lists
   (texts, rewards) the whole set gives, and the same reference log-probs. */
static void test_parallel_sampling_split(perpo_test *t) {
    static tpar_data d;
    perpo_config c = tpar_config();
    perpo_model *m = NULL;
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set all, part[5];
    size_t r, i, first[5], count[5], differ = 0;
    int k, w;
    tpar_make(&d);
    memset(&all, 0, sizeof all);
    memset(part, 0, sizeof part);
    CHECK_OK(perpo_model_create(&m, &c, 5));
    if (!m) return;
    sc.temperature = 1.0f;
    sc.seed = 3;
    CHECK_OK(perpo_pref_sample(m, d.ex, TPAR_N, 4, &sc, tpar_reward, &d, &all));
    CHECK_OK(perpo_pref_reference(m, all.lists, all.n_lists));
    for (r = 0; r < 5;
         r++) { /* blocks of 5, 5, 5, 5, 4 prompts: not those of the 4 lists per call */
        CHECK_OK(perpo_share(TPAR_N, (int)r, 5, &first[r], &count[r]));
        CHECK_OK(perpo_pref_sample_range(m, d.ex, first[r], count[r], 4, &sc, tpar_reward, &d,
                                         &part[r]));
        CHECK(part[r].n_lists == count[r]);
        if (part[r].n_lists != count[r] || all.n_lists != TPAR_N) continue;
        CHECK_OK(perpo_pref_reference(m, part[r].lists, part[r].n_lists));
        for (i = 0; i < count[r]; i++) {
            const perpo_pref_list *x = &all.lists[first[r] + i], *y = &part[r].lists[i];
            CHECK(x->image == y->image && x->prompt == y->prompt);
            for (k = 0; k < 4; k++) {
                CHECK_MSG(strcmp(x->responses[k], y->responses[k]) == 0,
                          "prompt %zu sample %d: \"%s\" vs \"%s\"", first[r] + i, k,
                          x->responses[k], y->responses[k]);
                CHECK(memcmp(&x->rewards[k], &y->rewards[k], sizeof(float)) == 0);
                CHECK(memcmp(&x->ref_logp[k], &y->ref_logp[k], sizeof(float)) == 0);
            }
        }
    }
    /* the streams really are per prompt: samples of one prompt differ from sample to sample */
    for (i = 0; i < all.n_lists; i++)
        for (k = 1; k < 4; k++)
            differ += strcmp(all.lists[i].responses[k], all.lists[i].responses[0]) != 0;
    CHECK_MSG(differ > 24, "only %zu of 72 samples differ from their list's first", differ);
    /* a range outside size_t, an empty range (into a freed set: out is overwritten, not freed) */
    perpo_pref_set_free(&part[0]);
    CHECK(perpo_pref_sample_range(m, d.ex, (size_t)-1, 2, 4, &sc, tpar_reward, &d, &part[0]) ==
          PERPO_ERR_ARG);
    CHECK(perpo_pref_sample_range(m, d.ex, 3, 0, 4, &sc, tpar_reward, &d, &part[0]) ==
          PERPO_ERR_ARG);
    for (w = 0; w < 5; w++) perpo_pref_set_free(&part[w]);
    perpo_pref_set_free(&all);
    perpo_model_free(m);
}

/* The hook's sums are checked like any input: NaN, +Inf or -Inf written into any float of any
   of its calls (the handshake, SFT's token counts, loss and failure flags, preference metrics
   and token counts, the gradients, a report's stop request) stops training with
   PERPO_ERR_NONFINITE, never PERPO_OK (with a NaN loss in the report, or a NaN stop request
   taken as a stop) and never another code. A world of one: every call of the first step. */
static void test_parallel_hook_nonfinite(perpo_test *t) {
    static tpar_data d;
    static const float bad[3] = { NAN, INFINITY, -INFINITY };
    perpo_config c = tpar_config();
    perpo_model *m = NULL, *sampler = NULL;
    perpo_sft_config tc = tpar_sft_config(4, 2, 2);
    perpo_pref_config pc = tpar_pref_config(3, 2);
    perpo_pref_set set;
    size_t kept = 0;
    int trainer, runs = 0, wrong = 0;
    tpar_make(&d);
    memset(&set, 0, sizeof set);
    CHECK_OK(perpo_model_create(&sampler, &c, 3));
    if (!sampler) return;
    CHECK_OK(tpar_lists(sampler, &d, 0, 1, &set, &kept));
    CHECK(kept >= 3);
    tc.log_every = pc.log_every = 1;
    tc.optim.warmup_steps = pc.optim.warmup_steps = 1;
    tc.parallel.world = pc.parallel.world = 1;
    /* SFT, accumulation 2: handshake (2 calls), counts and loss (2), failure flag, gradients,
       report = 7 calls in step 1; preference: handshake (2), metrics, gradients, report = 5 */
    for (trainer = 0; trainer < 2 && kept >= 3; trainer++) {
        long at, calls = trainer == 0 ? 7 : 5;
        for (at = 1; at <= calls; at++) {
            size_t index, n = 0;
            for (index = 0; index < 9; index++) { /* floats 0..7, then the last one */
                int v;
                if (index > 0 && index >= n && index != 8) continue;
                for (v = 0; v < 3; v++) {
                    tpar_poison poison;
                    perpo_status st;
                    memset(&poison, 0, sizeof poison);
                    poison.at = at;
                    poison.index = index == 8 ? (size_t)-1 : index;
                    poison.value = bad[v];
                    CHECK_OK(perpo_model_create(&m, &c, 3));
                    if (!m) return;
                    if (trainer == 0) {
                        tc.parallel.reduce = tpar_reduce_poison;
                        tc.parallel.user = &poison;
                        st = perpo_sft_train(m, d.ex, TPAR_N, &tc, NULL, NULL);
                    } else {
                        pc.parallel.reduce = tpar_reduce_poison;
                        pc.parallel.user = &poison;
                        st = perpo_pref_train(m, set.lists, kept, &pc, NULL, NULL);
                    }
                    perpo_model_free(m);
                    m = NULL;
                    n = poison.n_at;
                    runs++;
                    if (st != PERPO_ERR_NONFINITE && wrong++ < 40)
                        CHECK_MSG(
                            0, "%s: %g in float %zu of %zu of the hook's call %ld: status %d (%s)",
                            trainer == 0 ? "SFT" : "preference", (double)bad[v],
                            index == 8 ? n - 1 : index, n, at, (int)st, perpo_status_string(st));
                    if (poison.n_at == 0) CHECK_MSG(0, "call %ld never came", at);
                }
            }
        }
    }
    CHECK_MSG(wrong == 0, "%d of %d poisoned runs did not end with PERPO_ERR_NONFINITE", wrong,
              runs);
    perpo_pref_set_free(&set);
    perpo_model_free(sampler);
}

#ifdef TPAR_POSIX
/* 2 workers with batch 4 = 1 process with batch 8 (SFT over a shuffled set, accumulation 2,
   clipping at 0.5 so the global norm matters). */
static void test_parallel_sft_two_workers(perpo_test *t) {
    static tpar_data d;
    perpo_config c = tpar_config();
    perpo_model *probe = NULL;
    tpar_sft_job j;
    tpar_out one[2], two[2], half[2];
    float *p1 = NULL, *p2 = NULL, *ph = NULL;
    size_t n;
    double diff, diff_half;
    tpar_make(&d);
    CHECK_OK(perpo_model_create(&probe, &c, 1));
    if (!probe) return;
    n = perpo_model_num_params(probe);
    perpo_model_free(probe);
    p1 = (float *)malloc(n * sizeof(float));
    p2 = (float *)malloc(n * sizeof(float));
    ph = (float *)malloc(n * sizeof(float));
    if (!p1 || !p2 || !ph) {
        CHECK(0);
        goto done;
    }
    memset(&j, 0, sizeof j);
    j.d = &d;
    j.steps = 20;
    j.accum = 2;
    j.rank1_fail_at = -1;
    j.rank1_rank = -1;
    j.batch = 8;
    j.params = p1;
    tpar_sft(0, NULL, &j, &one[0]);
    CHECK_OK(one[0].status);
    j.batch = 4;
    j.params = p2;
    CHECK(tpar_run2(tpar_sft, &j, two) == 0);
    CHECK_OK(two[0].status);
    CHECK_OK(two[1].status);
    CHECK(two[0].steps == 20 && two[1].steps == 20);
    CHECK_MSG(two[0].hash == two[1].hash, "the two workers ended with different parameters");
    j.params = ph; /* control: one process with only one worker's batch */
    tpar_sft(0, NULL, &j, &half[0]);
    diff = tpar_max_diff(p1, p2, n);
    diff_half = tpar_max_diff(p1, ph, n);
    fprintf(stderr,
            "    SFT, 20 steps: 2 workers x batch 4 vs 1 process x batch 8: max |param diff| %.3g "
            "(tolerance %g); "
            "1 process x batch 4: %.3g\n",
            diff, TPAR_TOL, diff_half);
    CHECK_MSG(diff <= TPAR_TOL, "2 workers differ from 1 process by %.3g", diff);
    CHECK_MSG(diff_half > 100 * TPAR_TOL, "half the batch lands within %.3g: the check cannot tell",
              diff_half);
    CHECK(two[0].calls == two[1].calls && two[0].calls == 2 + 20 * 4 + 20);
done:
    free(p1);
    free(p2);
    free(ph);
}

/* The reported gradient norm (before clipping) and loss of every step: 2 workers x batch 4 =
   1 process x batch 8, SFT with accumulation 2, clipped at 0.5 and not clipped. The
   parameters alone cannot show a gradient's scale: clipping and Adam's normalization hide it
   (a gradient `world` times too large trains nearly the same model), the norm does not. */
static void test_parallel_sft_grad_norms(perpo_test *t) {
    static tpar_data d;
    tpar_sft_job j;
    tpar_out one, two[2];
    int clip, k;
    tpar_make(&d);
    for (clip = 0; clip < 2; clip++) {
        double worst_norm = 0.0, worst_loss = 0.0;
        memset(&j, 0, sizeof j);
        j.d = &d;
        j.steps = 10;
        j.accum = 2;
        j.rank1_fail_at = -1;
        j.rank1_rank = -1;
        j.no_clip = clip == 0;
        j.batch = 8;
        memset(&one, 0, sizeof one);
        tpar_sft(0, NULL, &j, &one);
        CHECK_OK(one.status);
        j.batch = 4;
        CHECK(tpar_run2(tpar_sft, &j, two) == 0);
        CHECK_OK(two[0].status);
        CHECK_OK(two[1].status);
        for (k = 0; k < j.steps; k++) {
            double g1 = one.grad_norm[k], l1 = one.loss[k];
            double dn = fabs(two[0].grad_norm[k] - g1) / g1, dl = fabs(two[0].loss[k] - l1) / l1;
            CHECK_MSG(g1 > 0.0 && dn <= 1e-4,
                      "%s, step %d: 2 workers report gradient norm %.7g, 1 process %.7g",
                      clip ? "clipped" : "not clipped", k + 1, (double)two[0].grad_norm[k], g1);
            CHECK_MSG(l1 > 0.0 && dl <= 1e-4,
                      "%s, step %d: 2 workers report loss %.7g, 1 process %.7g",
                      clip ? "clipped" : "not clipped", k + 1, (double)two[0].loss[k], l1);
            CHECK(memcmp(&two[0].grad_norm[k], &two[1].grad_norm[k], sizeof(float)) == 0 &&
                  memcmp(&two[0].loss[k], &two[1].loss[k], sizeof(float)) == 0);
            if (!(dn <= worst_norm)) worst_norm = dn;
            if (!(dl <= worst_loss)) worst_loss = dl;
        }
        fprintf(stderr,
                "    SFT %s, 10 steps: 2 workers x batch 4 vs 1 process x batch 8: largest "
                "relative difference of the reported gradient norm %.3g, of the loss %.3g\n",
                clip ? "clipped at 0.5" : "not clipped", worst_norm, worst_loss);
    }
}

/* Disagreements are refused by both workers; a failure on one stops both at the same step. */
static void test_parallel_sft_failures(perpo_test *t) {
    static tpar_data d;
    tpar_sft_job j;
    tpar_out o[2];
    tpar_make(&d);
    memset(&j, 0, sizeof j);
    j.d = &d;
    j.steps = 8;
    j.accum = 1;
    j.batch = 4;
    j.rank1_fail_at = -1;
    j.rank1_rank = -1;
    j.rank1_steps = 9; /* different schedules */
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK(o[0].status == PERPO_ERR_ARG && o[1].status == PERPO_ERR_ARG && o[0].steps == 0 &&
          o[1].steps == 0);
    j.rank1_steps = 0;
    j.rank1_seed = 2; /* different weights */
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK(o[0].status == PERPO_ERR_ARG && o[1].status == PERPO_ERR_ARG && o[0].steps == 0 &&
          o[1].steps == 0);
    j.rank1_seed = 0;
    j.rank1_rank = 0; /* two workers claim rank 0 */
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK(o[0].status == PERPO_ERR_ARG && o[1].status == PERPO_ERR_ARG);
    j.rank1_rank = -1;
    j.rank1_world = 3; /* a world of 3 with 2 workers */
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK(o[0].status == PERPO_ERR_ARG && o[1].status == PERPO_ERR_ARG);
    /* rank 1's examples of step s (0-based) are indices 8s + 4 .. 8s + 7: its stream fails in
       step 3, after 3 steps */
    j.rank1_world = 0;
    j.rank1_fail_at = 8 * 3 + 4 + 2;
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK_MSG(o[1].status == PERPO_ERR_IO && o[0].status == PERPO_ERR_PEER, "statuses %d, %d",
              o[0].status, o[1].status);
    CHECK_MSG(o[0].steps == 3 && o[1].steps == 3 && o[0].hash == o[1].hash, "steps %d, %d",
              o[0].steps, o[1].steps);
    j.rank1_fail_at = -1;
    j.rank1_stop_at = 5; /* rank 1's callback stops the run */
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK_OK(o[0].status);
    CHECK_OK(o[1].status);
    CHECK(o[0].steps == 5 && o[1].steps == 5 && o[0].hash == o[1].hash);
    /* the hook hands both workers a NaN: in step 1's summed loss (call 3, float 1), in its
       report's stop request (call 6, float 0); both stop with PERPO_ERR_NONFINITE, together */
    j.rank1_stop_at = 0;
    j.poison = NAN;
    j.poison_at = 3;
    j.poison_index = 1;
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK_MSG(o[0].status == PERPO_ERR_NONFINITE && o[1].status == PERPO_ERR_NONFINITE,
              "a NaN summed loss: statuses %d, %d", o[0].status, o[1].status);
    CHECK(o[0].steps == 0 && o[1].steps == 0);
    j.poison_at = 6;
    j.poison_index = 0;
    CHECK(tpar_run2(tpar_sft, &j, o) == 0);
    CHECK_MSG(o[0].status == PERPO_ERR_NONFINITE && o[1].status == PERPO_ERR_NONFINITE,
              "a NaN stop request: statuses %d, %d", o[0].status, o[1].status);
    CHECK(o[0].steps == 1 && o[1].steps == 1 && o[0].hash == o[1].hash);
}

/* 2 workers with 2 lists each = 1 process with 4 lists (PerPO with its NLL term, accumulation
   2, clipping), each worker holding only the lists of its own prompts; then a run stopped by
   rank 1 at step 10, saved by rank 0, reloaded by both and resumed ends bit-identical; then a
   NaN reward on rank 1 stops both before any step. */
static void test_parallel_pref_two_workers(perpo_test *t) {
    static tpar_data d;
    perpo_config c = tpar_config();
    perpo_model *sft = NULL;
    perpo_sft_config tc = tpar_sft_config(8, 40, 1);
    tpar_pref_job j;
    tpar_out one[2], two[2], half[2], resumed[2], nan_run[2];
    float *p1 = NULL, *p2 = NULL, *ph = NULL;
    size_t n;
    double diff, diff_half;
    const char *path = "tests_tmp_parallel_resume.ckpt";
    tpar_make(&d);
    CHECK_OK(perpo_model_create(&sft, &c, 99));
    if (!sft) return;
    n = perpo_model_num_params(sft);
    CHECK_OK(perpo_sft_train(sft, d.ex, TPAR_N, &tc, NULL,
                             NULL)); /* a model whose samples vary in reward */
    p1 = (float *)malloc(n * sizeof(float));
    p2 = (float *)malloc(n * sizeof(float));
    ph = (float *)malloc(n * sizeof(float));
    if (!p1 || !p2 || !ph) {
        CHECK(0);
        goto done;
    }
    memset(&j, 0, sizeof j);
    j.d = &d;
    j.sft = sft;
    j.steps = 20;
    j.lists = 4;
    j.params = p1;
    tpar_pref(0, NULL, &j, &one[0]);
    CHECK_OK(one[0].status);
    j.lists = 2;
    j.params = p2;
    CHECK(tpar_run2(tpar_pref, &j, two) == 0);
    CHECK_OK(two[0].status);
    CHECK_OK(two[1].status);
    CHECK(two[0].steps == 20 && two[1].steps == 20 && two[0].hash == two[1].hash);
    j.params = ph;
    tpar_pref(0, NULL, &j, &half[0]);
    diff = tpar_max_diff(p1, p2, n);
    diff_half = tpar_max_diff(p1, ph, n);
    fprintf(stderr,
            "    PerPO, 20 steps: 2 workers x 2 lists vs 1 process x 4 lists: max |param diff| "
            "%.3g (tolerance %g); "
            "1 process x 2 lists: %.3g\n",
            diff, TPAR_TOL, diff_half);
    CHECK_MSG(diff <= TPAR_TOL, "2 workers differ from 1 process by %.3g", diff);
    CHECK_MSG(diff_half > 100 * TPAR_TOL, "half the lists land within %.3g: the check cannot tell",
              diff_half);
    j.params = NULL;
    j.rank1_stop_at = 10;
    j.ckpt = path;
    CHECK(tpar_run2(tpar_pref, &j, resumed) == 0);
    remove(path);
    CHECK_OK(resumed[0].status);
    CHECK_OK(resumed[1].status);
    CHECK_MSG(resumed[0].steps == 20 && resumed[0].hash == two[0].hash &&
                  resumed[1].hash == two[0].hash,
              "stopped at 10, saved, resumed: not the uninterrupted run's parameters");
    j.rank1_stop_at = 0;
    j.ckpt = NULL;
    j.rank1_nan = 1;
    CHECK(tpar_run2(tpar_pref, &j, nan_run) == 0);
    CHECK_MSG(nan_run[1].status == PERPO_ERR_NONFINITE && nan_run[0].status == PERPO_ERR_PEER,
              "statuses %d, %d", nan_run[0].status, nan_run[1].status);
    CHECK(nan_run[0].steps == 0 && nan_run[1].steps == 0);
done:
    free(p1);
    free(p2);
    free(ph);
    perpo_model_free(sft);
}
#endif

const perpo_test_case perpo_tests_parallel[] = {
    { "data-parallel: a hook in a world of one changes no bit; the hook's calls",
      test_parallel_world_of_one },
    { "data-parallel: a block of the prompts samples exactly the whole set's lists",
      test_parallel_sampling_split },
    { "data-parallel: NaN or Inf in any sum the hook returns stops training (NONFINITE)",
      test_parallel_hook_nonfinite },
#ifdef TPAR_POSIX
    { "data-parallel: 2 workers x batch 4 = 1 process x batch 8 (SFT)",
      test_parallel_sft_two_workers },
    { "data-parallel: 2 workers report 1 process's gradient norm and loss each step (SFT)",
      test_parallel_sft_grad_norms },
    { "data-parallel: disagreeing workers refused; a failure or stop on one stops both",
      test_parallel_sft_failures },
    { "data-parallel: 2 workers x 2 lists = 1 process x 4 lists (PerPO); stop, save, resume",
      test_parallel_pref_two_workers },
#endif
    { NULL, NULL }
};
