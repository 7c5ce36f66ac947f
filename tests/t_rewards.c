/* Rewards: box parsing, IoU/GIoU, grounding reward, edit distance, word-level OCR metrics. */
#include <stdlib.h>
#include "../perpo.h"
#include "test.h"

/* ---- Box parser ---- */

/* Deterministic test randomness (64-bit LCG, top bits). */
static unsigned lcg(uint64_t *state) {
    *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return (unsigned)(*state >> 33);
}

#define S(lit) lit, sizeof(lit) - 1 /* literal with its exact length (embedded NULs count) */

typedef struct {
    const char *text;
    size_t len;
    float w, h;
    int ok;
    float box[4];
} box_case;

static const box_case box_cases[] = {
    /* well-formed */
    { S("[0.12,0.05,0.40,0.33]"), 640, 480, 1, { 0.12f, 0.05f, 0.40f, 0.33f } },
    { S("The box is [ 0.1 , 0.2 , 0.3 , 0.4 ] ."), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[ 0.1\t,\n0.2 ,\r0.3,0.4 ]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[10,20,30,40]"), 100, 200, 1, { 0.1f, 0.1f, 0.3f, 0.2f } },
    { S("[10,20,100,100]"), 100, 100, 1, { 0.1f, 0.2f, 1.0f, 1.0f } }, /* on the image border */
    { S("[0, 0.5, 1, 1]"), 1, 1, 1, { 0.0f, 0.5f, 1.0f, 1.0f } },      /* any '.' => normalized */
    { S("[1.0,1.0,1.0,1.0]"), 1, 1, 1, { 1.0f, 1.0f, 1.0f, 1.0f } },
    { S("[0,0,0,0]"), 64, 64, 1, { 0, 0, 0, 0 } }, /* degenerate but valid */
    { S("[0.10000000000000000000000000001,0.2,0.3,0.4]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[000000000000000000000000012,0,20,20]"), 40, 40, 1, { 0.3f, 0.0f, 0.5f, 0.5f } },
    { S("\xe6\xa1\x86: [0.1,0.2,0.3,0.4]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } }, /* UTF-8 */
    { S("ab\0[0.1,0.2,0.3,0.4]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } }, /* NUL is a plain byte */
    /* first box wins; malformed or invalid brackets before it are skipped */
    { S("[0.1,0.2,0.3,0.4] [0.5,0.5,0.6,0.6]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[image] [0.1,0.2,0.3,0.4]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[0.9,0.2,0.3,0.4] then [0.1,0.2,0.3,0.4]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[[0.1,0.2,0.3,0.4]]"), 1, 1, 1, { 0.1f, 0.2f, 0.3f, 0.4f } },
    { S("[0.1,0.2,[0.5,0.6,0.7,0.8]"), 1, 1, 1, { 0.5f, 0.6f, 0.7f, 0.8f } },
    /* no box */
    { S(""), 1, 1, 0, { 0 } },
    { S("no box here"), 1, 1, 0, { 0 } },
    { S("["), 1, 1, 0, { 0 } },
    { S("]"), 1, 1, 0, { 0 } },
    { S("[ ]"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3]"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3,0.4,0.5]"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3,0.4"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3,0.4)"), 1, 1, 0, { 0 } },
    { S("[nan,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[inf,0,1,1]"), 10, 10, 0, { 0 } },
    { S("[0.1,0.2,NaN,0.4]"), 1, 1, 0, { 0 } },
    { S("[1e999,0,1,1]"), 10, 10, 0, { 0 } },
    { S("[1e-1,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[-0.1,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[-0,0,1,1]"), 10, 10, 0, { 0 } },
    { S("[+0.1,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[0x10,0,1,1]"), 100, 100, 0, { 0 } },
    { S("[.5,0.2,0.6,0.4]"), 1, 1, 0, { 0 } },
    { S("[1.,0,2,2]"), 10, 10, 0, { 0 } },
    { S("[0.1.2,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[0.5,0.2,0.3,0.4]"), 1, 1, 0, { 0 } }, /* x2 < x1 */
    { S("[0.1,0.5,0.3,0.4]"), 1, 1, 0, { 0 } }, /* y2 < y1 */
    { S("[0.1,0.2,1.5,0.4]"), 1, 1, 0, { 0 } }, /* decimal beyond 1 */
    { S("[1.0000001,0,1,1]"), 1, 1, 0, { 0 } },
    { S("[10,20,300,40]"), 100, 100, 0, { 0 } }, /* outside the image */
    { S("[10,20,30,101]"), 100, 100, 0, { 0 } },
    { S("[0,0,99999999999999999999999,1]"), 1e30f, 1e30f, 0, { 0 } }, /* huge, even if in image */
    { S("[0,0,10000000,10]"), 2e7f, 20, 0, { 0 } },                   /* integer part >= 1e7 */
    { S("[0,0,9999999,10]"), 2e7f, 20, 1, { 0, 0, 0.49999995f, 0.5f } },
    { S("[1,2,3,4]"), 0, 10, 0, { 0 } }, /* no image size for pixels */
    { S("[0.1,,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[,0.1,0.2,0.3,0.4]"), 1, 1, 0, { 0 } },
    { S("[0.1 0.2 0.3 0.4]"), 1, 1, 0, { 0 } },
    { S("[0.1;0.2;0.3;0.4]"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3,0.4\0]"), 1, 1, 0, { 0 } },
    { S("[0.1,0.2,0.3,0.4 ,]"), 1, 1, 0, { 0 } },
};

static void test_parse_box_table(perpo_test *t) {
    size_t c, k;
    for (c = 0; c < sizeof box_cases / sizeof box_cases[0]; c++) {
        const box_case *bc = &box_cases[c];
        /* exact-size heap copy: ASan flags any read past len */
        char *buf = (char *)malloc(bc->len ? bc->len : 1);
        float box[4] = { 9, 9, 9, 9 };
        int ok;
        if (!buf) {
            CHECK(buf != NULL);
            return;
        }
        memcpy(buf, bc->text, bc->len);
        ok = perpo_parse_box(buf, bc->len, bc->w, bc->h, box);
        CHECK_MSG(ok == bc->ok, "case %u \"%s\": got %d", (unsigned)c, bc->text, ok);
        for (k = 0; k < 4; k++) /* on failure the box is zeroed */
            CHECK_MSG(fabsf(box[k] - bc->box[k]) <= 1e-7f, "case %u \"%s\": box[%u] = %.9g",
                      (unsigned)c, bc->text, (unsigned)k, box[k]);
        free(buf);
    }
}

static void test_parse_box_len_is_authoritative(perpo_test *t) {
    static const char txt[] = "[0.1,0.2,0.3,0.4]";
    float box[4];
    CHECK(perpo_parse_box(txt, sizeof txt - 1, 1, 1, box) == 1);
    CHECK(perpo_parse_box(txt, sizeof txt - 2, 1, 1, box) == 0); /* ']' is beyond len */
    CHECK(perpo_parse_box(txt, 0, 1, 1, box) == 0);
    CHECK(perpo_parse_box(NULL, 5, 1, 1, box) == 0);
    CHECK(perpo_parse_box(txt, sizeof txt - 1, 1, 1, NULL) == 0);
}

/* Random near-boxes: four numbers (x1,y1 from lo, x2,y2 from hi; good and bad forms), random
 * separators, sometimes a byte mutation or two and a truncation. An accepted box must be finite,
 * ordered and inside [0,1]; a rejected one must come back zeroed. */
static void test_parse_box_fuzz(perpo_test *t) {
    static const char *const lo[] = { "0",   "0.1", "0.25", "0.5", "12", "0",
                                      "1e5", "-1",  ".5",   "nan", "" };
    static const char *const hi[] = { "1",   "0.5", "0.75", "0.999999999", "480", "100",
                                      "1e5", "-1",  "1.",   "inf",         "" };
    static const char *const seps[] = { ",", " , ", ", ", ",", ";" };
    static const char noise[] = "[]0123456789.,- e\0";
    uint64_t rng = 12345;
    int it, accepted = 0, rejected = 0;
    for (it = 0; it < 20000; it++) {
        char buf[96];
        size_t len = 0, k, m;
        float box[4];
        buf[len++] = '[';
        for (k = 0; k < 4; k++) {
            const char *num = k < 2 ? lo[lcg(&rng) % (sizeof lo / sizeof lo[0])]
                                    : hi[lcg(&rng) % (sizeof hi / sizeof hi[0])];
            const char *sep = k < 3 ? seps[lcg(&rng) % (sizeof seps / sizeof seps[0])] : "]";
            memcpy(buf + len, num, strlen(num));
            len += strlen(num);
            memcpy(buf + len, sep, strlen(sep));
            len += strlen(sep);
        }
        m = lcg(&rng) % 8; /* 2 mutations with p = 1/8, 1 with p = 1/8 */
        for (m = m == 0 ? 2 : m == 1 ? 1 : 0; m > 0; m--)
            buf[lcg(&rng) % len] = noise[lcg(&rng) % (sizeof noise - 1)];
        if (lcg(&rng) % 4 == 0) len = lcg(&rng) % (len + 1); /* truncation */
        if (perpo_parse_box(buf, len, 640, 480, box)) {
            accepted++;
            CHECK(isfinite(box[0]) && isfinite(box[1]) && isfinite(box[2]) && isfinite(box[3]));
            CHECK(0 <= box[0] && box[0] <= box[2] && box[2] <= 1);
            CHECK(0 <= box[1] && box[1] <= box[3] && box[3] <= 1);
        } else {
            rejected++;
            CHECK(box[0] == 0 && box[1] == 0 && box[2] == 0 && box[3] == 0);
        }
    }
    CHECK_MSG(accepted > 100 && rejected > 100, "accepted %d rejected %d", accepted, rejected);
}

/* ---- IoU / GIoU ---- */

static void test_iou_giou_hand(perpo_test *t) {
    const float a[4] = { 0, 0, 2, 2 }, b[4] = { 1, 1, 3, 3 };    /* I = 1, U = 7, C = 9 */
    const float c[4] = { 0, 0, 1, 1 }, d[4] = { 2, 0, 3, 1 };    /* disjoint: U = 2, C = 3 */
    const float big[4] = { 0, 0, 4, 4 }, in[4] = { 1, 1, 2, 2 }; /* nested: I = 1, U = C = 16 */
    const float e[4] = { 1, 0, 2, 1 };                           /* touches c: U = C = 2 */
    const float f1[4] = { 0.1f, 0.1f, 0.5f, 0.5f }, f2[4] = { 0.3f, 0.3f, 0.7f, 0.7f };
    CHECK_NEAR(perpo_box_iou(a, b), 1.0 / 7.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_giou(a, b), 1.0 / 7.0 - 2.0 / 9.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_iou(b, a), 1.0 / 7.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_iou(a, a), 1.0, 0, 0);
    CHECK_NEAR(perpo_box_giou(a, a), 1.0, 0, 0);
    CHECK_NEAR(perpo_box_iou(c, d), 0.0, 0, 0);
    CHECK_NEAR(perpo_box_giou(c, d), -1.0 / 3.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_iou(big, in), 1.0 / 16.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_giou(big, in), 1.0 / 16.0, 1e-7, 0);
    CHECK_NEAR(perpo_box_iou(c, e), 0.0, 0, 0);
    CHECK_NEAR(perpo_box_giou(c, e), 0.0, 1e-7, 0);
    /* 0.2 x 0.2 overlap of two 0.4 x 0.4 boxes: 0.04 / (0.16 + 0.16 - 0.04) = 1/7 */
    CHECK_NEAR(perpo_box_iou(f1, f2), 1.0 / 7.0, 1e-6, 0);
}

static void test_iou_degenerate(perpo_test *t) {
    const float ok[4] = { 0, 0, 1, 1 }, pt[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
    const float inv[4] = { 1, 0, 0, 1 }, huge[4] = { -3e38f, -3e38f, 3e38f, 3e38f };
    float bad[4] = { 0, 0, 1, 1 };
    CHECK(perpo_box_iou(pt, pt) == 0.0f); /* empty union */
    CHECK(perpo_box_giou(pt, pt) == -1.0f);
    CHECK(perpo_box_iou(ok, pt) == 0.0f);
    CHECK_NEAR(perpo_box_giou(ok, pt), 0.0, 0, 0); /* pt inside ok: C = U = 1 */
    CHECK(perpo_box_iou(ok, inv) == 0.0f);
    CHECK(perpo_box_giou(ok, inv) == -1.0f);
    CHECK(perpo_box_iou(huge, huge) == 1.0f); /* areas would overflow in float */
    CHECK(perpo_box_iou(huge, ok) == 0.0f);   /* 1 / 3.6e77 underflows float: 0, not NaN */
    bad[2] = NAN;
    CHECK(perpo_box_iou(ok, bad) == 0.0f);
    CHECK(perpo_box_giou(bad, ok) == -1.0f);
    bad[2] = INFINITY;
    CHECK(perpo_box_iou(bad, ok) == 0.0f);
    CHECK(perpo_box_giou(ok, bad) == -1.0f);
}

static void test_grounding_reward(perpo_test *t) {
    const float gt[4] = { 0.12f, 0.05f, 0.40f, 0.33f }, half[4] = { 0.12f, 0.05f, 0.26f, 0.33f };
    CHECK_NEAR(perpo_grounding_reward(S("[0.12,0.05,0.40,0.33]"), gt, 640, 480), 1.0, 1e-6, 0);
    CHECK_NEAR(perpo_grounding_reward(S("box: [0.12, 0.05, 0.26, 0.33]"), gt, 640, 480), 0.5, 1e-5,
               0);
    /* pixels: 64x64 image, [16,8,32,40] = [0.25,0.125,0.5,0.625] */
    {
        const float g2[4] = { 0.25f, 0.125f, 0.5f, 0.625f };
        CHECK_NEAR(perpo_grounding_reward(S("[16,8,32,40]"), g2, 64, 64), 1.0, 1e-6, 0);
    }
    CHECK(perpo_grounding_reward(S("I cannot see it"), gt, 640, 480) == 0.0f);
    CHECK(perpo_grounding_reward(S("[nan,0,1,1]"), gt, 640, 480) == 0.0f);
    CHECK(perpo_grounding_reward(S("[0.12,0.05,0.40,0.33]"), NULL, 640, 480) == 0.0f);
    CHECK_NEAR(perpo_box_iou(half, gt), 0.5, 1e-5, 0);
}

/* ---- Edit distance ---- */

static void test_levenshtein_classic(perpo_test *t) {
    static const struct {
        const char *a;
        size_t na;
        const char *b;
        size_t nb;
        size_t d;
    } c[] = {
        { S("kitten"), S("sitting"), 3 },
        { S("sitting"), S("kitten"), 3 },
        { S("flaw"), S("lawn"), 2 },
        { S("saturday"), S("sunday"), 3 },
        { S("intention"), S("execution"), 5 },
        { S("gumbo"), S("gambol"), 2 },
        { S(""), S(""), 0 },
        { S(""), S("abc"), 3 },
        { S("abc"), S(""), 3 },
        { S("abc"), S("abc"), 0 },
        { S("abc"), S("cba"), 2 },
        { S("a"), S("b"), 1 },
        { S("ab"), S("ba"), 2 },
        { S("abcdef"), S("azced"), 3 },
        { S("a\0b"), S("a\0c"), 1 },
        { S("a\0b"), S("ab"), 1 }, /* NULs are bytes */
        { S("\0\0\0"), S(""), 3 },
        { S("caf\xc3\xa9"), S("cafe"), 2 }, /* byte level: UTF-8 e-acute is 2 bytes */
        { S("\xff\xfe"), S("\xfe\xff"), 2 },
    };
    size_t i, d;
    for (i = 0; i < sizeof c / sizeof c[0]; i++) {
        d = 12345;
        CHECK_OK(perpo_edit_distance(c[i].a, c[i].na, c[i].b, c[i].nb, &d, NULL));
        CHECK_MSG(d == c[i].d, "case %u: distance %u, expected %u", (unsigned)i, (unsigned)d,
                  (unsigned)c[i].d);
    }
    CHECK_OK(perpo_edit_distance(NULL, 0, "abc", 3, &d, NULL));
    CHECK(d == 3);
    CHECK(perpo_edit_distance(NULL, 1, "abc", 3, &d, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_edit_distance("abc", 3, "abc", 3, NULL, NULL) == PERPO_ERR_ARG);
}

static void test_normalized_edit_distance(perpo_test *t) {
    float ned = -1, r = -1;
    CHECK_OK(perpo_normalized_edit_distance(S("kitten"), S("sitting"), &ned, NULL));
    CHECK_NEAR(ned, 3.0 / 7.0, 1e-7, 0);
    CHECK_OK(perpo_normalized_edit_distance(S(""), S(""), &ned, NULL));
    CHECK(ned == 0.0f);
    CHECK_OK(perpo_normalized_edit_distance(S(""), S("xyz"), &ned, NULL));
    CHECK(ned == 1.0f);
    CHECK_OK(perpo_ocr_reward(S("flaw"), S("lawn"), &r, NULL)); /* 1 - 2/4 */
    CHECK_NEAR(r, 0.5, 1e-7, 0);
    CHECK(perpo_normalized_edit_distance(S("a"), S("b"), NULL, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_ocr_reward(S("a"), S("b"), NULL, NULL) == PERPO_ERR_ARG);
}

/* ---- Word-level metrics ---- */

static void test_word_prf(perpo_test *t) {
    float p = -1, r = -1, f = -1, b = -1;
    /* sets {a,b,c,d} vs {a,b,e}: 2 common, P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7 */
    CHECK_OK(perpo_word_scores(S("a b c d"), S("a b e"), &p, &r, &f, NULL, NULL));
    CHECK_NEAR(p, 0.5, 1e-7, 0);
    CHECK_NEAR(r, 2.0 / 3.0, 1e-7, 0);
    CHECK_NEAR(f, 4.0 / 7.0, 1e-7, 0);
    /* duplicates count once: {a,b} vs {a,b,c}: P = 1, R = 2/3, F1 = 0.8 */
    CHECK_OK(perpo_word_scores(S("a a b"), S(" a\tb b\n c "), &p, &r, &f, NULL, NULL));
    CHECK_NEAR(p, 1.0, 1e-7, 0);
    CHECK_NEAR(r, 2.0 / 3.0, 1e-7, 0);
    CHECK_NEAR(f, 0.8, 1e-7, 0);
    /* nothing in common */
    CHECK_OK(perpo_word_scores(S("a b"), S("c d"), &p, &r, &f, &b, NULL));
    CHECK(p == 0.0f && r == 0.0f && f == 0.0f && b == 0.0f);
    /* words are byte strings: NUL and UTF-8 are part of a word, case matters */
    CHECK_OK(perpo_word_scores(S("a\0b \xc3\xa9t\xc3\xa9 Word"), S("a\0b \xc3\xa9t\xc3\xa9 word"),
                               &p, &r, &f, NULL, NULL));
    CHECK_NEAR(p, 2.0 / 3.0, 1e-7, 0);
    CHECK_OK(perpo_word_scores(S("a\0b"), S("a"), &p, NULL, NULL, NULL, NULL));
    CHECK(p == 0.0f);
}

static void test_word_empty_conventions(perpo_test *t) {
    float p = -1, r = -1, f = -1, b = -1;
    CHECK_OK(perpo_word_scores(S(""), S(" \t\n"), &p, &r, &f, &b, NULL)); /* both without words */
    CHECK(p == 1.0f && r == 1.0f && f == 1.0f && b == 1.0f);
    CHECK_OK(perpo_word_scores(NULL, 0, NULL, 0, &p, &r, &f, &b, NULL));
    CHECK(p == 1.0f && r == 1.0f && f == 1.0f && b == 1.0f);
    CHECK_OK(perpo_word_scores(S(""), S("a b"), &p, &r, &f, &b, NULL));
    CHECK(p == 0.0f && r == 0.0f && f == 0.0f && b == 0.0f);
    CHECK_OK(perpo_word_scores(S("a b"), S("  "), &p, &r, &f, &b, NULL));
    CHECK(p == 0.0f && r == 0.0f && f == 0.0f && b == 0.0f);
    CHECK(perpo_word_scores(NULL, 3, S("a"), &p, &r, &f, &b, NULL) == PERPO_ERR_ARG);
}

static void test_bleu_hand(perpo_test *t) {
    float b = -1;
    /* hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 words each, BP = 1):
     *   1-grams: the x2, cat, on, mat match (clipped)         p1 = 5/6
     *   2-grams: "the cat", "on the", "the mat" of 5          p2 = (3+1)/(5+1) = 4/6
     *   3-grams: "on the mat" of 4                            p3 = (1+1)/(4+1) = 2/5
     *   4-grams: none of 3                                    p4 = (0+1)/(3+1) = 1/4
     *   BLEU = (5/6 * 4/6 * 2/5 * 1/4)^(1/4) = (1/18)^(1/4) = 0.48549... */
    CHECK_OK(perpo_word_scores(S("the cat sat on the mat"), S("the cat is on the mat"), NULL, NULL,
                               NULL, &b, NULL));
    CHECK_NEAR(b, pow(1.0 / 18.0, 0.25), 1e-6, 0);
    /* clipping: "the" x4 vs ref "the cat": p1 = 1/4, p2 = (0+1)/(3+1), p3 = (0+1)/(2+1),
     * p4 = (0+1)/(1+1); c = 4 > r = 2 so BP = 1; BLEU = (1/96)^(1/4) */
    CHECK_OK(perpo_word_scores(S("the the the the"), S("the cat"), NULL, NULL, NULL, &b, NULL));
    CHECK_NEAR(b, pow(1.0 / 96.0, 0.25), 1e-6, 0);
    /* brevity: 2 of 6 words, all n-gram precisions 1 (pn = 1/1 when too short): BP = e^(1-6/2) */
    CHECK_OK(
        perpo_word_scores(S("the cat"), S("the cat sat on the mat"), NULL, NULL, NULL, &b, NULL));
    CHECK_NEAR(b, exp(-2.0), 1e-6, 0);
    CHECK_OK(perpo_word_scores(S("the cat sat on the mat"), S("the cat sat on the mat"), NULL, NULL,
                               NULL, &b, NULL));
    CHECK_NEAR(b, 1.0, 1e-6, 0);
    CHECK_OK(perpo_word_scores(S("hello"), S("hello"), NULL, NULL, NULL, &b, NULL));
    CHECK_NEAR(b, 1.0, 1e-6, 0);
}

static void test_ocr_score_struct(perpo_test *t) {
    perpo_ocr_scores s = { -1.0f, -1.0f, -1.0f, -1.0f, -1.0f };
    CHECK_OK(perpo_ocr_score(S("a b c d"), S("a b e"), &s, NULL));
    CHECK_NEAR(s.edit_distance, 3.0 / 7.0, 1e-7, 0); /* "c d" -> "e": 1 substitution, 2 deletions */
    CHECK_NEAR(s.precision, 0.5, 1e-7, 0);
    CHECK_NEAR(s.recall, 2.0 / 3.0, 1e-7, 0);
    CHECK_NEAR(s.f1, 4.0 / 7.0, 1e-7, 0);
    CHECK(s.bleu > 0.0f && s.bleu < 1.0f);
    CHECK(perpo_ocr_score(S("a"), S("a"), NULL, NULL) == PERPO_ERR_ARG);
}

/* 100 kB strings: linear memory, prefix/suffix stripping, no overflow. */
static void test_ocr_long(perpo_test *t) {
    const size_t n = 100000;
    char *a = (char *)malloc(n), *b = (char *)malloc(n);
    size_t i, d = 0;
    uint64_t rng = 7;
    float p = 0, r = 0, f = 0, bl = 0;
    if (!a || !b) {
        CHECK(a && b);
        free(a);
        free(b);
        return;
    }
    for (i = 0; i < n; i++) { /* lowercase words of 1..8 letters */
        unsigned u = lcg(&rng);
        a[i] = u % 5 == 0 ? ' ' : (char)('a' + (u >> 8) % 26);
    }
    /* b = a with one substitution ('#' never occurs in a) and one deletion: distance 2 */
    memcpy(b, a, n);
    b[50000] = '#';
    memmove(b + 70000, b + 70001, n - 70001);
    CHECK_OK(perpo_edit_distance(a, n, b, n - 1, &d, NULL));
    CHECK(d == 2);
    CHECK_OK(perpo_word_scores(a, n, a, n, &p, &r, &f, &bl, NULL));
    CHECK(p == 1.0f && r == 1.0f && f == 1.0f);
    CHECK_NEAR(bl, 1.0, 1e-6, 0);
    CHECK_OK(perpo_word_scores(a, n, b, n - 1, &p, &r, &f, &bl, NULL));
    CHECK(p > 0.99f && r > 0.99f && bl > 0.99f && bl < 1.0f);
    /* full DP over 100000 x 300: 300 substitutions + 99700 deletions */
    memset(a, 'x', n);
    memset(b, 'y', 300);
    CHECK_OK(perpo_edit_distance(a, n, b, 300, &d, NULL));
    CHECK(d == n);
    CHECK_OK(perpo_edit_distance(b, 300, a, n, &d, NULL));
    CHECK(d == n);
    free(a);
    free(b);
}

extern const perpo_test_case perpo_tests_rewards[];
const perpo_test_case perpo_tests_rewards[] = {
    { "parse_box_table", test_parse_box_table },
    { "parse_box_len_is_authoritative", test_parse_box_len_is_authoritative },
    { "parse_box_fuzz", test_parse_box_fuzz },
    { "iou_giou_hand", test_iou_giou_hand },
    { "iou_degenerate", test_iou_degenerate },
    { "grounding_reward", test_grounding_reward },
    { "levenshtein_classic", test_levenshtein_classic },
    { "normalized_edit_distance", test_normalized_edit_distance },
    { "word_prf", test_word_prf },
    { "word_empty_conventions", test_word_empty_conventions },
    { "bleu_hand", test_bleu_hand },
    { "ocr_score_struct", test_ocr_score_struct },
    { "ocr_long", test_ocr_long },
    { NULL, NULL },
};
