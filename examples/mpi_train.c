/* mpi_train.c — grounding SFT and PerPO, data-parallel over MPI.
 *
 * perpo.h has no transport of its own: its trainers call a reduction hook (perpo_parallel)
 * that sums a float buffer over the workers, and here that hook is MPI_Allreduce. Every rank
 * builds the same model from the same seed (or loads the same checkpoint) and runs the same
 * trainer calls; rank r computes the gradient of its share of every batch, the hook sums
 * gradients, counts and metrics, and every rank takes the same AdamW step. So N ranks with
 * --batch B (--lists L) train the model one process trains with N*B (N*L), up to the order of
 * the float sums. The preference data is split the same way without any exchange: rank r
 * samples, scores, filters and references the lists of its own block of the prompts
 * (perpo_share, perpo_pref_sample_range), and the trainer sees the whole set as the ranks'
 * parts in rank order. Rank 0 alone writes checkpoints; every rank holds the same weights
 * (checked at the end: a hash of the parameters of every rank).
 *
 *   OMP_NUM_THREADS=1 mpirun -np 2 build/mpi_train
 *       from the committed SFT checkpoint (--init, default examples/models/grounding_sft.ckpt):
 *       SFT continued on fresh scenes, then PerPO on lists sampled from that model
 *   OMP_NUM_THREADS=1 mpirun -np 2 build/mpi_train --scratch 1 --sft-steps 2000
 *       SFT of a new small model (--image 32 --width 64) from scratch, then PerPO
 *   build/mpi_train --compare A.ckpt B.ckpt [--base C.ckpt] [--tol T]
 *       how far apart two checkpoints' parameters are (see compare below); exit 1 above T
 *
 * Flags (sizes per rank; the global batch is ranks x these): --batch 8 --accum 1
 * --sft-steps 50 --sft-lr 1e-4 (1e-3 with --scratch) --prompts 64 --n 8 --margin 0.3
 * --lists 2 --pref-steps 40 --pref-lr 1e-5 --beta 0.1 --nll 0 --seed 1 --threads T (OpenMP
 * threads per rank) --out DIR (checkpoints, written by rank 0 alone: sft.ckpt, perpo.ckpt, and
 * <phase>.partial every --save-every steps; default results/mpi) --verbose 1; --help lists
 * them.
 */
#define _POSIX_C_SOURCE 200809L /* mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TEXT_CAP 48

/* ---- The hook: perpo.h's only contact with MPI -------------------------------------------- */
static perpo_status mpi_sum(float *buf, size_t n, void *user) {
    MPI_Comm comm = *(MPI_Comm *)user;
    while (n > 0) { /* MPI counts are int */
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (MPI_Allreduce(MPI_IN_PLACE, buf, k, MPI_FLOAT, MPI_SUM, comm) != MPI_SUCCESS)
            return PERPO_ERR_IO;
        buf += k;
        n -= (size_t)k;
    }
    return PERPO_OK;
}

typedef struct run {
    int rank, world, verbose, save_every, img;
    MPI_Comm comm;
    const char *out;
    perpo_model *model; /* the one being trained (for partial checkpoints) */
    char path[1024];
} run;

/* The model's own line says why, when the failed call was on it (perpo_model_last_error). */
static void fail(const run *r, const char *what, perpo_status st) {
    const char *why = r->model ? perpo_model_last_error(r->model) : "";
    fprintf(stderr, "rank %d: %s: %s%s%s\n", r->rank, what, perpo_status_string(st),
            why[0] ? ": " : "", why);
    MPI_Abort(r->comm, 1); /* the other ranks may be waiting in a reduction */
    exit(1);
}

/* Rank 0 alone writes checkpoints: the weights are the same on every rank. */
static void save(run *r, const char *name) {
    perpo_status st;
    if (r->rank != 0) return;
    snprintf(r->path, sizeof r->path, "%s/%s", r->out, name);
    if ((st = perpo_checkpoint_save(r->model, r->path, PERPO_CKPT_OPTIMIZER)) != PERPO_OK)
        fail(r, r->path, st);
    if (r->verbose)
        printf("rank 0 saved %s (step %d)\n", r->path, perpo_optim_step_count(r->model));
}

/* Every rank gets every report (the metrics are global); rank 0 prints and saves. */
static int on_progress(const perpo_progress *p, void *user) {
    run *r = (run *)user;
    if (r->rank == 0 && r->verbose)
        printf("%s step %d/%d loss %.4f lr %.2e grad_norm %.3f%s%.3f %.1f s\n", p->phase, p->step,
               p->total_steps, p->loss, p->lr, p->grad_norm,
               p->reward_accuracy != 0.0f ? " rewards/accuracies " : " tokens/step ",
               p->reward_accuracy != 0.0f ? p->reward_accuracy : p->tokens / p->step, p->elapsed_s);
    if (r->save_every > 0 && p->step % r->save_every == 0 && p->step < p->total_steps) {
        char name[64];
        snprintf(name, sizeof name, "%s.partial", p->phase);
        save(r, name);
    }
    fflush(stdout);
    return 0;
}

/* ---- Data: synthetic scenes, a pure function of (seed, index) ------------------------------ */
typedef struct scenes {
    int img;
    uint64_t base;
    float *images; /* slots x img*img*3 */
    char (*prompt)[TEXT_CAP], (*answer)[TEXT_CAP];
} scenes;

static int scene_at(scenes *s, uint64_t index, size_t slot) {
    ex_scene sc;
    if (ex_scene_from_index(s->base, index, s->img, s->img, &sc) != 0) return -1;
    ex_scene_render(&sc, s->images + slot * (size_t)s->img * (size_t)s->img * 3);
    ex_scene_prompt(&sc, s->prompt[slot], TEXT_CAP);
    ex_scene_answer(&sc, s->answer[slot], TEXT_CAP);
    return 0;
}

static int scenes_alloc(scenes *s, int img, uint64_t base, size_t slots) {
    s->img = img;
    s->base = base;
    s->images = (float *)calloc(slots * (size_t)img * (size_t)img * 3, sizeof(float));
    s->prompt = (char(*)[TEXT_CAP])calloc(slots, TEXT_CAP);
    s->answer = (char(*)[TEXT_CAP])calloc(slots, TEXT_CAP);
    return s->images && s->prompt && s->answer ? 0 : -1;
}
static void scenes_free(scenes *s) {
    free(s->images);
    free(s->prompt);
    free(s->answer);
}

/* SFT stream: example `index` is fresh scene `index`, rendered into batch slot `slot`. */
static perpo_status scene_next(size_t index, size_t slot, perpo_example *out, void *user) {
    scenes *s = (scenes *)user;
    if (scene_at(s, (uint64_t)index, slot) != 0) return PERPO_ERR_ARG;
    out->image = s->images + slot * (size_t)s->img * (size_t)s->img * 3;
    out->prompt = s->prompt[slot];
    out->response = s->answer[slot];
    return PERPO_OK;
}

/* IoU of the response's first box with the true box of prompt `item`. */
static float iou_reward(const char *response, size_t len, size_t item, void *user) {
    const scenes *s = (const scenes *)user;
    float truth[4];
    if (!perpo_parse_box(s->answer[item], strlen(s->answer[item]), (float)s->img, (float)s->img,
                         truth))
        return 0.0f;
    return perpo_grounding_reward(response, len, truth, (float)s->img, (float)s->img);
}

static uint64_t params_hash(perpo_model *m) {
    const float *p = perpo_model_params(m);
    uint64_t h = 0xCBF29CE484222325ull;
    size_t i, n = perpo_model_num_params(m);
    for (i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, &p[i], 4);
        h = (h ^ w) * 0x100000001B3ull;
    }
    return h;
}

/* --compare A B [--base C]: how far apart two checkpoints' parameters are. With a base (the
   weights both runs started from), the measure is ||A - B|| / ||A - C||: the difference
   relative to how far training moved; else the largest |difference|. Exit 1 above tol. The
   relative measure is the one to use for runs that differ only in the order of float sums:
   a few parameters whose gradient is zero in exact arithmetic (the attention key biases:
   softmax ignores a constant added to every score) get gradients of pure rounding noise, which
   AdamW turns into steps of about lr either way, so their largest difference grows with lr and
   steps while the whole vector stays within ~0.1% (docs/scaling-out.md). No MPI needed. */
static int compare(const char *a, const char *b, const char *base, double tol) {
    perpo_model *x = NULL, *y = NULL, *z = NULL;
    perpo_status st = PERPO_OK;
    double worst = 0.0, d2 = 0.0, u2 = 0.0, rel = 0.0;
    size_t i, n;
    int rc = 1;
    if ((st = perpo_model_load(&x, a, NULL)) != PERPO_OK ||
        (st = perpo_model_load(&y, b, NULL)) != PERPO_OK ||
        (base && (st = perpo_model_load(&z, base, NULL)) != PERPO_OK)) {
        fprintf(stderr, "compare: %s\n", perpo_status_string(st));
        goto done;
    }
    n = perpo_model_num_params(x);
    if (n != perpo_model_num_params(y) || (z && n != perpo_model_num_params(z))) {
        fprintf(stderr, "compare: the checkpoints hold different models\n");
        goto done;
    }
    for (i = 0; i < n; i++) {
        double d = (double)perpo_model_params(x)[i] - (double)perpo_model_params(y)[i];
        double u = z ? (double)perpo_model_params(x)[i] - (double)perpo_model_params(z)[i] : 0.0;
        if (!(fabs(d) <= worst)) worst = fabs(d);
        d2 += d * d;
        u2 += u * u;
    }
    if (z) {
        rel = u2 > 0.0 ? sqrt(d2 / u2) : (d2 > 0.0 ? INFINITY : 0.0);
        printf("compare: %zu parameters, ||A - B|| / ||A - base|| = %.3g (tolerance %g), max |A - "
               "B| %.3g, "
               "||A - base|| %.3g\n",
               n, rel, tol, worst, sqrt(u2));
        rc = rel <= tol ? 0 : 1;
    } else {
        printf("compare: %zu parameters, max |A - B| %.3g (tolerance %g), ||A - B|| %.3g\n", n,
               worst, tol, sqrt(d2));
        rc = worst <= tol ? 0 : 1;
    }
done:
    perpo_model_free(x);
    perpo_model_free(y);
    perpo_model_free(z);
    return rc;
}

int main(int argc, char **argv) {
    run r;
    perpo_status st;
    perpo_config cfg = perpo_config_default();
    perpo_model *sft = NULL, *policy = NULL;
    perpo_pref_set set;
    scenes stream, prompts;
    perpo_parallel par;
    size_t first = 0, count = 0, kept = 0, total_kept = 0, n_prompts, i;
    double t0, t_sft = 0.0, t_sample = 0.0, t_pref = 0.0;
    unsigned long long my_hash, *hashes = NULL;
    int all_same = 1;
    int batch = 8, accum = 1, sft_steps = 50, n = 8, lists = 2, pref_steps = 40, threads = 0;
    int scratch = 0, width = 64, prompts_arg = 64, seed_arg = 1;
    double sft_lr = -1.0, pref_lr = 1e-5, margin = 0.3, beta = 0.1, nll = 0.0;
    const char *init = "examples/models/grounding_sft.ckpt";
    uint64_t seed;

    if (argc >= 2 && strcmp(argv[1], "--compare") == 0) {
        const char *base = NULL;
        double tol = 1e-4;
        const ex_option spec[] = {
            { "--base", "the checkpoint both started from (relative distance)", 's', &base, 0, 0 },
            { "--tol", "the largest distance that passes", 'd', &tol, 0, 1e30 },
        };
        if (argc < 4) {
            fprintf(stderr, "usage: mpi_train --compare A.ckpt B.ckpt [--base C.ckpt] [--tol T]\n");
            return 2;
        } /* the options after the two paths: argv[3] stands in for the program name */
        if (ex_options_parse(argc - 3, argv + 3, spec, sizeof spec / sizeof spec[0],
                             "mpi_train --compare A.ckpt B.ckpt: how far apart two checkpoints' "
                             "parameters are",
                             stderr) != 0)
            return 2; /* also after --help: no comparison was made */
        return compare(argv[2], argv[3], base, tol);
    }
    memset(&r, 0, sizeof r);
    memset(&set, 0, sizeof set);
    memset(&stream, 0, sizeof stream);
    memset(&prompts, 0, sizeof prompts);
    MPI_Init(&argc, &argv);
    r.comm = MPI_COMM_WORLD;
    MPI_Comm_rank(r.comm, &r.rank);
    MPI_Comm_size(r.comm, &r.world);
    r.verbose = 1;
    r.out = "results/mpi";
    r.img = 32;
    {
        const ex_option spec[] = {
            { "--batch", "SFT scenes per step and rank", 'i', &batch, -2e9, 2e9 },
            { "--accum", "SFT micro-batches per optimizer step", 'i', &accum, -2e9, 2e9 },
            { "--sft-steps", "SFT steps (0 = none)", 'i', &sft_steps, -2e9, 2e9 },
            { "--sft-lr", "SFT peak learning rate (default 1e-4, 1e-3 with --scratch)", 'd',
              &sft_lr, 0, 1e30 },
            { "--prompts", "preference prompts over all ranks", 'i', &prompts_arg, -2e9, 2e9 },
            { "--n", "responses sampled per prompt (list size)", 'i', &n, -2e9, 2e9 },
            { "--margin", "keep lists whose best-minus-worst reward is at least this", 'd', &margin,
              -1e30, 1e30 },
            { "--lists", "lists per preference step and rank", 'i', &lists, -2e9, 2e9 },
            { "--pref-steps", "PerPO steps (0 = none)", 'i', &pref_steps, -2e9, 2e9 },
            { "--pref-lr", "PerPO peak learning rate", 'd', &pref_lr, -1e30, 1e30 },
            { "--beta", "beta of the objective", 'd', &beta, -1e30, 1e30 },
            { "--nll", "weight of the NLL term on each list's best answer", 'd', &nll, -1e30,
              1e30 },
            { "--seed", "seed of the model, the data and the samples", 'i', &seed_arg, -2e9, 2e9 },
            { "--threads", "OpenMP threads per rank (0 = the runtime's default)", 'i', &threads,
              -2e9, 2e9 },
            { "--init", "the SFT checkpoint to start from", 's', &init, 0, 0 },
            { "--scratch", "1: a new model instead of --init", 'i', &scratch, -2e9, 2e9 },
            { "--image", "scene size with --scratch (a multiple of 8)", 'i', &r.img, -2e9, 2e9 },
            { "--width", "model width with --scratch", 'i', &width, -2e9, 2e9 },
            { "--out", "checkpoint folder (rank 0 writes it)", 's', &r.out, 0, 0 },
            { "--save-every", "save <phase>.partial every this many steps (0 = never)", 'i',
              &r.save_every, -2e9, 2e9 },
            { "--verbose", "0 quiet, 1 progress", 'i', &r.verbose, -2e9, 2e9 },
        };
        int rc = ex_options_parse(argc, argv, spec, sizeof spec / sizeof spec[0],
                                  "Grounding SFT and PerPO, data-parallel over MPI (see the top "
                                  "of examples/mpi_train.c).",
                                  stderr);
        if (rc != 0) {
            MPI_Finalize();
            return rc > 0 ? 0 : 2;
        }
    }
    if (scratch) init = NULL;
    if (sft_lr < 0) sft_lr = scratch ? 1e-3 : 1e-4;
    n_prompts = (size_t)prompts_arg;
    seed = (uint64_t)(long)seed_arg;
    if (batch < 1 || accum < 1 || sft_steps < 0 || n < 2 || lists < 1 || pref_steps < 0 ||
        n_prompts < 1 || r.img < 8 || r.img % 8 != 0) {
        if (r.rank == 0)
            fprintf(stderr,
                    "mpi_train: --batch, --accum, --lists >= 1, --n >= 2, --prompts >= 1, "
                    "--image a multiple of 8; steps >= 0 (see the top of examples/mpi_train.c)\n");
        MPI_Finalize();
        return 2;
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
    threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    if (r.rank == 0) mkdir(r.out, 0777); /* an existing folder is fine; a failed save says why */
    par.reduce = mpi_sum;
    par.user = &r.comm;
    par.rank = r.rank;
    par.world = r.world;

    /* ---- The model: the same on every rank ---- */
    if (init) {
        if ((st = perpo_model_load(&sft, init, NULL)) != PERPO_OK) {
            if (r.rank == 0)
                fprintf(stderr,
                        "mpi_train: cannot load %s (%s): run `make pretrain-stream`, pass --init PATH, or "
                        "--scratch 1\n",
                        init, perpo_status_string(st));
            MPI_Finalize(); /* every rank fails the same way here */
            return 1;
        }
        cfg = *perpo_model_config(sft);
        r.img = cfg.image_w;
    } else {
        cfg.image_h = cfg.image_w = r.img;
        cfg.patch_h = cfg.patch_w = 8;
        cfg.d_model = width;
        cfg.n_heads = 4;
        cfg.n_vis_layers = 1;
        cfg.n_dec_layers = 2;
        cfg.max_text = 40;
        cfg.pos_channels = 1;
        cfg.vis_sincos = 1;
        cfg.max_batch = 32;
        if ((st = perpo_model_create(&sft, &cfg, seed)) != PERPO_OK) fail(&r, "create", st);
    }
    if (r.rank == 0)
        printf("mpi_train: %d ranks x %d OpenMP threads; %zu parameters, %dx%d scenes; SFT %d "
               "steps of %d x %d x %d, "
               "PerPO %d steps of %d x %d lists of %d\n",
               r.world, threads, perpo_model_num_params(sft), r.img, r.img, sft_steps, r.world,
               batch, accum, pref_steps, r.world, lists, n);

    /* ---- SFT on fresh scenes: rank r renders and trains on its share of every batch ---- */
    if (sft_steps > 0) {
        perpo_sft_config tc = perpo_sft_default();
        if (scenes_alloc(&stream, r.img, 1000 + seed, (size_t)batch) != 0)
            fail(&r, "scenes", PERPO_ERR_NOMEM);
        tc.batch_size = batch;
        tc.accum_steps = accum;
        tc.seed = seed;
        tc.optim.lr = (float)sft_lr;
        tc.optim.min_lr = tc.optim.lr * 0.1f;
        tc.optim.total_steps = sft_steps;
        tc.optim.warmup_steps = sft_steps < 20 ? sft_steps / 4 : 20;
        tc.log_every = sft_steps < 10 ? 1 : sft_steps / 10;
        tc.parallel = par;
        r.model = sft;
        t0 = MPI_Wtime();
        if ((st = perpo_sft_train_stream(sft, scene_next, &stream, &tc, on_progress, &r)) !=
            PERPO_OK)
            fail(&r, "SFT", st);
        t_sft = MPI_Wtime() - t0;
        save(&r, "sft.ckpt");
    }

    /* ---- PerPO: rank r samples its own block of the prompts, no lists are exchanged ---- */
    if (pref_steps > 0) {
        perpo_sample_config sc = perpo_sample_default();
        perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
        perpo_example *items = (perpo_example *)calloc(n_prompts, sizeof *items);
        unsigned long long k_mine, k_all = 0;
        if (!items || scenes_alloc(&prompts, r.img, 2000 + seed, n_prompts) != 0)
            fail(&r, "prompts", PERPO_ERR_NOMEM);
        for (i = 0; i < n_prompts;
             i++) { /* every rank knows every prompt; it samples only its block */
            if (scene_at(&prompts, (uint64_t)i, i) != 0) fail(&r, "scene", PERPO_ERR_ARG);
            items[i].image = prompts.images + i * (size_t)r.img * (size_t)r.img * 3;
            items[i].prompt = prompts.prompt[i];
            items[i].response = prompts.answer[i];
        }
        if ((st = perpo_share(n_prompts, r.rank, r.world, &first, &count)) != PERPO_OK)
            fail(&r, "share", st);
        sc.temperature = 1.0f;
        sc.top_p = 0.8f;
        sc.seed = seed + 7;
        t0 = MPI_Wtime();
        if (count > 0) {
            if ((st = perpo_pref_sample_range(sft, items, first, count, n, &sc, iou_reward,
                                              &prompts, &set)) != PERPO_OK)
                fail(&r, "sample", st);
            kept = perpo_pref_filter(set.lists, set.n_lists, (float)margin);
            if (kept > 0 && (st = perpo_pref_reference(sft, set.lists, kept)) != PERPO_OK)
                fail(&r, "reference", st);
        }
        t_sample = MPI_Wtime() - t0;
        k_mine = (unsigned long long)kept;
        MPI_Allreduce(&k_mine, &k_all, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, r.comm);
        total_kept = (size_t)k_all;
        if (r.rank == 0)
            printf("PerPO data: %zu prompts x %d samples, %zu lists kept over all ranks (rank 0 "
                   "holds %zu)\n",
                   n_prompts, n, total_kept, kept);
        if (total_kept == 0) { /* every rank knows: all skip together */
            if (r.rank == 0)
                printf("PerPO skipped: no list has a reward margin of --margin (a model that finds "
                       "no box?)\n");
            pref_steps = 0;
            free(items);
            goto end;
        }
        if ((st = perpo_model_create(&policy, &cfg, seed)) != PERPO_OK ||
            (st = perpo_model_copy_params(policy, sft)) != PERPO_OK)
            fail(&r, "policy", st);
        pc.lists_per_step = lists;
        pc.optim.total_steps = pref_steps;
        pc.optim.lr = (float)pref_lr;
        pc.optim.min_lr = pc.optim.lr * 0.1f;
        pc.optim.warmup_steps = pref_steps < 10 ? pref_steps / 4 : 5;
        pc.objective.beta = (float)beta;
        pc.nll_weight = (float)nll;
        pc.seed = seed;
        pc.log_every = pref_steps < 10 ? 1 : pref_steps / 10;
        pc.parallel = par;
        r.model = policy;
        t0 = MPI_Wtime();
        st = perpo_pref_train(policy, kept ? set.lists : NULL, kept, &pc, on_progress, &r);
        if (st != PERPO_OK) fail(&r, "PerPO", st);
        t_pref = MPI_Wtime() - t0;
        save(&r, "perpo.ckpt");
        free(items);
    }

end:
    /* ---- Every rank holds the same weights ---- */
    my_hash = (unsigned long long)params_hash(policy ? policy : sft);
    hashes = (unsigned long long *)calloc((size_t)r.world, sizeof *hashes);
    if (!hashes) fail(&r, "hashes", PERPO_ERR_NOMEM);
    MPI_Gather(&my_hash, 1, MPI_UNSIGNED_LONG_LONG, hashes, 1, MPI_UNSIGNED_LONG_LONG, 0, r.comm);
    if (r.rank == 0) {
        for (i = 1; i < (size_t)r.world; i++) all_same &= hashes[i] == hashes[0];
        printf("ranks bit-identical: %s (parameter hash %016llx)\n", all_same ? "yes" : "NO",
               hashes[0]);
        printf("time: SFT %.2f s (%.1f ms/step), sampling %.2f s, PerPO %.2f s (%.1f ms/step) on "
               "%d ranks\n",
               t_sft, sft_steps ? 1000.0 * t_sft / sft_steps : 0.0, t_sample, t_pref,
               pref_steps ? 1000.0 * t_pref / pref_steps : 0.0, r.world);
        printf("{\"ranks\": %d, \"threads\": %d, \"sft_steps\": %d, \"sft_s\": %.3f, \"sample_s\": "
               "%.3f, \"pref_steps\": %d, "
               "\"pref_s\": %.3f, \"lists_kept\": %zu, \"bit_identical\": %s}\n",
               r.world, threads, sft_steps, t_sft, t_sample, pref_steps, t_pref, total_kept,
               all_same ? "true" : "false");
    }
    free(hashes);
    perpo_pref_set_free(&set);
    scenes_free(&stream);
    scenes_free(&prompts);
    perpo_model_free(policy);
    perpo_model_free(sft);
    MPI_Finalize();
    return all_same ? 0 : 1;
}
