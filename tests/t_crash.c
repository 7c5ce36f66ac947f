/* Crash safety with real crashes (POSIX): a child process trains with a checkpoint every
 * CR_EVERY steps and is killed with SIGKILL on a seeded schedule of moments, then a new child
 * resumes from the checkpoint. Three kinds of moment, in turn:
 *   - inside a save, by the child itself: the test's PERPO_SYNC hook (tests/main.c) raises
 *     SIGKILL at its j-th call, i.e. with the save's temporary file ("<path>.<pid>.<hex>.tmp")
 *     complete but not yet renamed (odd j), or renamed but its folder not yet synced (even j);
 *   - after a save began: the parent waits for the child's k-th "saving" note on a pipe, sleeps
 *     0-2 ms (the write and fsync take about that) and kills it, often mid-write;
 *   - at a random time, 0-30 ms after the start (mostly between saves).
 * After every kill the checkpoint must load (PERPO_OK), and its step never goes back. When a run
 * finishes, its final checkpoint must be byte-identical to an uninterrupted run's (parameters,
 * AdamW moments, step). CR_KILLS kills by default; PERPO_CRASH_KILLS=N (make soak) asks for
 * more. The training loop is the library's forward/backward/step, resumed from opt_step; the
 * data of step k is a function of k, as in the library's trainers. */
#include <stdlib.h>
#include "test.h"

#define CR_STEPS 60
#define CR_EVERY 3
#define CR_KILLS 20

#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define CR_POSIX 1
#endif

static int cr_kill_at_sync; /* in a child: SIGKILL at this PERPO_SYNC call (1-based); 0 = never */

/* tests/main.c routes PERPO_SYNC here: a failure on request (t_reliability.c), a kill on
   request (above), else the library's default (fsync of the file and of its folder). */
static int perpo_test_sync_hook(const char *path, int is_dir) {
    if (!is_dir && strlen(path) < sizeof tr_synced_file) strcpy(tr_synced_file, path);
    if (tr_sync_fail_at > 0 && --tr_sync_fail_at == 0) return -1;
#ifdef CR_POSIX
    if (cr_kill_at_sync > 0 && --cr_kill_at_sync == 0) kill(getpid(), SIGKILL);
#endif
    return perpo__sync_default(path, is_dir);
}

#ifdef CR_POSIX
static const char *cr_answers[4] = { "ab", "cd", "e", "fgh" };

static perpo_optim_config cr_optim(void) {
    perpo_optim_config oc = perpo_optim_default();
    oc.lr = 1e-2f;
    oc.min_lr = 1e-3f;
    oc.warmup_steps = 5;
    oc.total_steps = CR_STEPS;
    return oc;
}

/* One optimizer step on the batch of step k = the model's step counter. */
static perpo_status cr_step(perpo_model *m, const float *img) {
    const perpo_config *c = perpo_model_config(m);
    perpo_optim_config oc = cr_optim();
    size_t T = (size_t)c->max_text, px = (size_t)(c->image_h * c->image_w * c->channels), b,
           count = 0, nt;
    int tok[3 * 64], tgt[3 * 64], k = perpo_optim_step_count(m);
    const float *imgs[3];
    float logp[3], dlogp[3];
    perpo_batch batch;
    perpo_status st;
    if (T > 64) return PERPO_ERR_ARG;
    for (b = 0; b < 3; b++) {
        size_t e = ((size_t)k * 3 + b) % 4;
        imgs[b] = img + e * px;
        if ((st = perpo_text_encode(c, "q", 1, cr_answers[e], strlen(cr_answers[e]), tok + b * T,
                                    tgt + b * T, &nt)))
            return st;
        count += nt;
    }
    batch.n_seq = 3;
    batch.n_img = 3;
    batch.images = imgs;
    batch.image_of = NULL;
    batch.tokens = tok;
    batch.targets = tgt;
    perpo_zero_grad(m);
    if ((st = perpo_forward(m, &batch, logp, NULL)) != PERPO_OK) return st;
    for (b = 0; b < 3; b++) dlogp[b] = -1.0f / (float)count;
    if ((st = perpo_backward(m, dlogp)) != PERPO_OK) return st;
    return perpo_optim_step(m, &oc, 1.0f, NULL);
}

/* Trains to CR_STEPS from path (or from scratch when there is no file), saving every CR_EVERY
   steps; notify >= 0 gets one byte before each save. 0 on success, else a code. */
static int cr_train(const char *path, const float *img, int notify) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    perpo_status st;
    FILE *f = fopen(path, "rb");
    c.max_batch = 3;
    if (f) {
        fclose(f);
        if (perpo_model_load(&m, path, NULL) != PERPO_OK)
            return 3; /* a checkpoint that does not load */
    } else if (perpo_model_create(&m, &c, 7) != PERPO_OK) {
        return 2;
    }
    while (perpo_optim_step_count(m) < CR_STEPS) {
        int k;
        if ((st = cr_step(m, img)) != PERPO_OK) {
            perpo_model_free(m);
            return 4;
        }
        k = perpo_optim_step_count(m);
        if (k % CR_EVERY == 0 || k == CR_STEPS) {
            if (notify >= 0 && write(notify, "s", 1) != 1) {
                perpo_model_free(m);
                return 6;
            }
            if (perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER) != PERPO_OK) {
                perpo_model_free(m);
                return 5;
            }
        }
    }
    perpo_model_free(m);
    return 0;
}

static void cr_sleep_us(long us) {
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

static void test_crash_resume(perpo_test *t) {
    const char *path = "tests_tmp_crash.ckpt", *ref_path = "tests_tmp_crash_ref.ckpt";
    const char *env = getenv("PERPO_CRASH_KILLS");
    int want = env && atoi(env) > 0 ? atoi(env) : CR_KILLS;
    int kills = 0, runs = 0, loads = 0, by_kind[4] = { 0, 0, 0, 0 }, failed = 0, last_step = 0;
    uint64_t rs = 2026;
    static float img[4 * 16 * 16 * 4];
    unsigned char *ref = NULL;
    size_t nref = 0, i;
    perpo_config c = small_config();
    if ((size_t)(c.image_h * c.image_w * c.channels) * 4 > sizeof img / sizeof img[0]) {
        CHECK(0);
        return;
    }
    for (i = 0; i < sizeof img / sizeof img[0]; i++) img[i] = (float)((i * 37) % 101) / 100.0f;
    /* the uninterrupted run, in this process */
    remove(ref_path);
    CHECK(cr_train(ref_path, img, -1) == 0);
    ref = tr_read(ref_path, &nref);
    remove(ref_path);
    if (!ref || nref == 0) {
        CHECK(0);
        free(ref);
        return;
    }
    remove(path);
    tr_tmps(path, 1);
    fflush(stdout);
    fflush(stderr);
    while (!failed) {
        int fds[2], status, kind = kills < want ? (int)(tr_rng(&rs) % 3) : 3,
                            k = 1 + (int)(tr_rng(&rs) % 3);
        long delay = 0;
        pid_t pid;
        char buf[64];
        if (kind == 1) delay = (long)(tr_rng(&rs) % 2000);
        if (kind == 2) delay = (long)(tr_rng(&rs) % 30000);
        if (pipe(fds) != 0) {
            CHECK(0);
            break;
        }
        pid = fork();
        if (pid < 0) {
            CHECK(0);
            close(fds[0]);
            close(fds[1]);
            break;
        }
        if (pid == 0) {
            close(fds[0]);
            cr_kill_at_sync = kind == 0 ? 1 + (int)(tr_rng(&rs) % 6) : 0;
            _exit(cr_train(path, img, fds[1]));
        }
        close(fds[1]);
        if (kind == 1) { /* k-th "saving" note, then a short sleep, then the kill */
            int seen = 0;
            while (seen < k && read(fds[0], buf, 1) == 1) seen++;
            if (seen == k) {
                cr_sleep_us(delay);
                kill(pid, SIGKILL);
            }
        } else if (kind == 2) {
            cr_sleep_us(delay);
            kill(pid, SIGKILL);
        }
        while (read(fds[0], buf, sizeof buf) > 0) {} /* until the child is gone */
        close(fds[0]);
        if (waitpid(pid, &status, 0) != pid) {
            CHECK(0);
            break;
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
            perpo_model *m = NULL;
            FILE *f = fopen(path, "rb");
            kills++;
            by_kind[kind]++;
            if (f) { /* whatever moment it died at, the checkpoint loads and has not gone back */
                perpo_status st;
                fclose(f);
                st = perpo_model_load(&m, path, NULL);
                loads++;
                CHECK_MSG(st == PERPO_OK,
                          "kill %d (kind %d): the checkpoint does not load (status %d)", kills,
                          kind, (int)st);
                if (m) {
                    CHECK_MSG(perpo_optim_step_count(m) >= last_step,
                              "kill %d: step went back from %d to %d", kills, last_step,
                              perpo_optim_step_count(m));
                    last_step = perpo_optim_step_count(m);
                }
                perpo_model_free(m);
                if (st != PERPO_OK) failed = 1;
            }
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) { /* a run finished */
            unsigned char *got;
            size_t ngot = 0;
            runs++;
            got = tr_read(path, &ngot);
            CHECK_MSG(got && ngot == nref && memcmp(got, ref, nref) == 0,
                      "run %d, after %d kills: final checkpoint differs from the uninterrupted run",
                      runs, kills);
            if (!(got && ngot == nref && memcmp(got, ref, nref) == 0)) failed = 1;
            free(got);
            remove(path);
            last_step = 0;
            if (kills >= want) break;
        } else {
            CHECK_MSG(0, "child ended with status 0x%x (exit code %d)", (unsigned)status,
                      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            failed = 1;
        }
    }
    { /* the temporary files of saves that were killed: at most one per kill, never reused */
        int left = tr_tmps(path, 1);
        CHECK_MSG(left >= 0 && left <= kills, "%d temporary files left by %d kills", left, kills);
    }
    remove(path);
    free(ref);
    fprintf(
        stderr,
        "    %d SIGKILLs (%d inside a save by the sync hook, %d after a save began, %d at random), "
        "%d checkpoints loaded after a kill, %d runs finished bit-identical\n",
        kills, by_kind[0], by_kind[1], by_kind[2], loads, runs);
    CHECK(kills >= want && runs >= 1 && by_kind[0] > 0);
}
#else
static void test_crash_resume(perpo_test *t) {
    (void)t;
    fprintf(stderr, "    skipped: the crash test needs POSIX fork and kill\n");
}
#endif

const perpo_test_case perpo_tests_crash[] = {
    { "crash: SIGKILL at seeded moments (some inside a save), resumed: no checkpoint lost, "
      "bit-identical end",
      test_crash_resume },
    { NULL, NULL }
};
