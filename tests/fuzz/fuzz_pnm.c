/* libFuzzer target: perpo_image_parse_pnm on arbitrary bytes (a raw PGM/PPM file). Each input
 * is parsed against a 1x1 request; when the error names the file's real size (small enough) it
 * is parsed again at that size, so the raster code is reached. Invariants: success writes only
 * values in [0,1]; failure writes nothing and leaves a non-empty one-line message.
 * Build: tests/fuzz/run.sh. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FZ_MAX_PIXELS 65536

static void fz_parse(const uint8_t *data, size_t size, int w, int h, int ch, char *err, size_t cap) {
    size_t n = (size_t)w * (size_t)h * (size_t)ch, i;
    float *out = (float *)malloc(n * sizeof(float));
    perpo_status st;
    if (!out) return;
    for (i = 0; i < n; i++) out[i] = -3.0f;
    st = perpo_image_parse_pnm(data, size, w, h, ch, out, err, cap);
    if (!memchr(err, 0, cap) || strchr(err, '\n')) __builtin_trap();
    if (st == PERPO_OK) {
        if (err[0]) __builtin_trap();
        for (i = 0; i < n; i++) if (!(out[i] >= 0.0f && out[i] <= 1.0f)) __builtin_trap();
    } else {
        if (st != PERPO_ERR_FORMAT || !err[0]) __builtin_trap();
        for (i = 0; i < n; i++) if (out[i] != -3.0f) __builtin_trap();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[200], tiny[7];
    unsigned long w = 0, h = 0;
    int ch;
    for (ch = 1; ch <= 3; ch += 2) {
        const char *at;
        fz_parse(data, size, 1, 1, ch, err, sizeof err);
        fz_parse(data, size, 1, 1, ch, tiny, sizeof tiny); /* truncated messages stay terminated */
        at = strstr(err, "image is ");
        if (at && sscanf(at, "image is %lux%lu", &w, &h) == 2 && w >= 1 && h >= 1 && w <= FZ_MAX_PIXELS &&
            h <= FZ_MAX_PIXELS / w)
            fz_parse(data, size, (int)w, (int)h, ch, err, sizeof err);
    }
    return 0;
}
