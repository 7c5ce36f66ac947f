/* libFuzzer target: perpo_parse_box, perpo_grounding_reward, IoU/GIoU on arbitrary text.
 * Invariants: a parsed box is finite, inside [0,1] and not inverted; no box means zeros; the
 * rewards stay in range. Build: tests/fuzz/run.sh. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <math.h>
#include <stdint.h>

static void fz_box(const char *s, size_t n, float w, float h) {
    static const float gt[4] = {0.25f, 0.25f, 0.75f, 0.75f};
    float box[4] = {-1.0f, -1.0f, -1.0f, -1.0f}, r, iou, giou;
    int k, ok = perpo_parse_box(s, n, w, h, box);
    if (ok != 0 && ok != 1) __builtin_trap();
    for (k = 0; k < 4; k++) {
        if (!isfinite(box[k]) || box[k] < 0.0f || box[k] > 1.0f) __builtin_trap();
        if (!ok && box[k] != 0.0f) __builtin_trap();
    }
    if (ok && (box[2] < box[0] || box[3] < box[1])) __builtin_trap();
    r = perpo_grounding_reward(s, n, gt, w, h);
    iou = perpo_box_iou(box, gt);
    giou = perpo_box_giou(box, gt);
    if (!(r >= 0.0f && r <= 1.0f) || r != (ok ? iou : 0.0f)) __builtin_trap();
    if (!(iou >= 0.0f && iou <= 1.0f) || !(giou >= -1.0f && giou <= 1.0f) || giou > iou) __builtin_trap();
    if (perpo_box_iou(box, box) != (box[2] > box[0] && box[3] > box[1] ? 1.0f : 0.0f)) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    fz_box(s, size, 64.0f, 64.0f);
    fz_box(s, size, 1.0f, 1.0f);
    fz_box(s, size, 640.0f, 480.0f);
    fz_box(s, size, 0.0f, 0.0f);
    fz_box(s, size, NAN, INFINITY);
    fz_box(s, size, 1e30f, 1e-30f);
    return 0;
}
