/* scaling.c — how a training step's time grows with batch, list size, text length and model
 * width, and which part dominates. Prints a Markdown table (and one JSON object per line with
 * --json). Each row varies one thing from the default model (batch 32, width 128, 48 text
 * positions); the time is the median of --reps steps after one warm-up.
 *
 *   make bench-scaling            (or: build/scaling [--reps R] [--threads K] [--json])
 */
#define _POSIX_C_SOURCE 200809L
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct row {
    const char *what;
    int batch, width, text, lists, n; /* lists > 0: a preference step over lists x n sequences */
} row;

/* Median milliseconds of forward, backward, and the whole step (with AdamW) for one row. */
static int measure(const row *r, int reps, double ms[3]) {
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL;
    perpo_optim_config oc = perpo_optim_default();
    int n_seq = r->lists ? r->lists * r->n : r->batch, n_img = r->lists ? r->lists : r->batch, i, k;
    float *img = NULL, *lp = NULL, *dl = NULL, *t_f = NULL;
    const float **imgs = NULL;
    size_t *image_of = NULL;
    int *tok = NULL, *tgt = NULL;
    perpo_batch b;
    char response[256];
    c.d_model = r->width;
    c.max_text = r->text;
    c.max_batch = n_seq;
    if (perpo_model_create(&m, &c, 1) != PERPO_OK) return -1;
    img = (float *)malloc((size_t)n_img * 64 * 64 * 3 * sizeof(float));
    imgs = (const float **)malloc((size_t)n_img * sizeof *imgs);
    image_of = (size_t *)malloc((size_t)n_seq * sizeof *image_of);
    tok = (int *)malloc((size_t)n_seq * (size_t)r->text * 2 * sizeof(int));
    lp = (float *)malloc((size_t)n_seq * 2 * sizeof(float));
    t_f = (float *)malloc((size_t)reps * 3 * sizeof(float) * 2);
    if (!img || !imgs || !image_of || !tok || !lp || !t_f) {
        perpo_model_free(m);
        return -1;
    }
    tgt = tok + (size_t)n_seq * (size_t)r->text;
    dl = lp + n_seq;
    for (i = 0; i < n_img * 64 * 64 * 3; i++) img[i] = (float)((i * 7919) % 256) / 255.0f;
    for (i = 0; i < n_img; i++) imgs[i] = img + (size_t)i * 64 * 64 * 3;
    memset(response, 'x', sizeof response);
    for (i = 0; i < n_seq; i++) { /* the response fills the text positions */
        image_of[i] = r->lists ? (size_t)(i / r->n) : (size_t)i;
        perpo_text_encode(&c, "red circle", 10, response, (size_t)(r->text - 13),
                          tok + (size_t)i * r->text, tgt + (size_t)i * r->text, NULL);
        dl[i] = -1.0f / (float)(n_seq * (r->text - 12));
    }
    b.n_seq = (size_t)n_seq;
    b.n_img = (size_t)n_img;
    b.images = imgs;
    b.image_of = image_of;
    b.tokens = tok;
    b.targets = tgt;
    for (k = 0; k <= reps; k++) { /* k = 0 warms up */
        double t0 = now_s(), t1, t2, t3;
        perpo_forward(m, &b, lp, NULL);
        t1 = now_s();
        perpo_zero_grad(m);
        perpo_backward(m, dl);
        t2 = now_s();
        perpo_optim_step(m, &oc, 1.0f, NULL);
        t3 = now_s();
        if (k) {
            t_f[k - 1] = (float)(t1 - t0);
            t_f[reps + k - 1] = (float)(t2 - t1);
            t_f[2 * reps + k - 1] = (float)(t3 - t0);
        }
    }
    for (i = 0; i < 3; i++) {
        double v[64];
        for (k = 0; k < reps && k < 64; k++) v[k] = t_f[i * reps + k];
        qsort(v, (size_t)(reps < 64 ? reps : 64), sizeof v[0], cmp_double);
        ms[i] = 1e3 * v[(reps < 64 ? reps : 64) / 2];
    }
    free(img);
    free(imgs);
    free(image_of);
    free(tok);
    free(lp);
    free(t_f);
    perpo_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    static const row rows[] = {
        { "default SFT step", 32, 128, 48, 0, 0 },
        { "batch 8", 8, 128, 48, 0, 0 },
        { "batch 16", 16, 128, 48, 0, 0 },
        { "batch 64", 64, 128, 48, 0, 0 },
        { "PerPO, 4 lists x N=4", 0, 128, 48, 4, 4 },
        { "PerPO, 4 lists x N=8", 0, 128, 48, 4, 8 },
        { "PerPO, 2 lists x N=16", 0, 128, 48, 2, 16 },
        { "text 24", 32, 128, 24, 0, 0 },
        { "text 96", 32, 128, 96, 0, 0 },
        { "width 64", 32, 64, 48, 0, 0 },
        { "width 256", 32, 256, 48, 0, 0 },
    };
    int reps = 5, json = 0, i;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
#ifdef _OPENMP
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            omp_set_num_threads(atoi(argv[++i]));
#endif
        else {
            fprintf(stderr, "usage: %s [--reps R] [--threads K] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 64) reps = 5;
    if (!json)
        printf("| configuration | forward ms | backward ms | step ms | backward / forward "
               "|\n|---|---|---|---|---|\n");
    for (i = 0; i < (int)(sizeof rows / sizeof rows[0]); i++) {
        double ms[3];
        if (measure(&rows[i], reps, ms) != 0) {
            fprintf(stderr, "%s: failed\n", rows[i].what);
            return 1;
        }
        if (json)
            printf("{\"name\":\"step_ms\",\"value\":%.2f,\"unit\":\"ms\",\"config\":{\"what\":\"%"
                   "s\",\"forward_ms\":%.2f,\"backward_ms\":%.2f}}\n",
                   ms[2], rows[i].what, ms[0], ms[1]);
        else
            printf("| %s | %.1f | %.1f | %.1f | %.2f |\n", rows[i].what, ms[0], ms[1], ms[2],
                   ms[1] / ms[0]);
        fflush(stdout);
    }
    return 0;
}
