/* libFuzzer target: the OCR metrics. The input is split at its first 0xFF byte into hyp and ref
 * (no 0xFF: all of it is hyp, ref is empty). Invariants: every score finite and in [0,1]; edit
 * distance symmetric, between |na - nb| and max(na, nb), 0 iff equal; a string against itself
 * scores perfectly. Build: tests/fuzz/run.sh. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

static int fz_in01(float x) { return x >= 0.0f && x <= 1.0f; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *cut = (const uint8_t *)memchr(data, 0xFF, size);
    const char *hyp = (const char *)data, *ref = cut ? (const char *)cut + 1 : NULL;
    size_t nh = cut ? (size_t)(cut - data) : size, nr = cut ? size - nh - 1 : 0, d1, d2, lo, hi;
    perpo_ocr_scores s, self;
    float rw;
    if (size > 8192) return 0; /* O(nh * nr) time: keep executions fast */
    if (perpo_ocr_score(hyp, nh, ref, nr, &s, NULL) != PERPO_OK) __builtin_trap();
    if (!fz_in01(s.edit_distance) || !fz_in01(s.precision) || !fz_in01(s.recall) || !fz_in01(s.f1) ||
        !fz_in01(s.bleu))
        __builtin_trap();
    if (perpo_edit_distance(hyp, nh, ref, nr, &d1, NULL) != PERPO_OK || perpo_edit_distance(ref, nr, hyp, nh, &d2, NULL) != PERPO_OK)
        __builtin_trap();
    lo = nh > nr ? nh - nr : nr - nh;
    hi = nh > nr ? nh : nr;
    if (d1 != d2 || d1 < lo || d1 > hi) __builtin_trap();
    if ((d1 == 0) != (nh == nr && (nh == 0 || memcmp(hyp, ref, nh) == 0))) __builtin_trap();
    if (perpo_ocr_reward(hyp, nh, ref, nr, &rw, NULL) != PERPO_OK || rw != 1.0f - s.edit_distance) __builtin_trap();
    if (perpo_ocr_score(hyp, nh, hyp, nh, &self, NULL) != PERPO_OK) __builtin_trap();
    if (self.edit_distance != 0.0f || self.precision != 1.0f || self.recall != 1.0f || self.f1 != 1.0f)
        __builtin_trap();
    if (fabsf(self.bleu - 1.0f) > 1e-6f) __builtin_trap();
    return 0;
}
