/* Tests of examples/common.h and the headers it includes: synthetic scenes and pages, the
 * bitmap font, the image, plot and JSON writers, the option table. Independent of perpo.h. */
#include "test.h"
#include "../examples/common.h"

#include <stdlib.h>

/* Everything here is prefixed tex_ / TEX_: tests/main.c includes all suites into one file. */
#define TEX_W 64
#define TEX_H 64

/* ---- helpers of the tests themselves ---- */

static int tex_find_color(const char *name) {
    int c;
    for (c = 0; c < EX_NUM_COLORS; c++)
        if (strcmp(ex_color_name(c), name) == 0) return c;
    return -1;
}

static int tex_find_kind(const char *name) {
    int k;
    for (k = 0; k < EX_NUM_KINDS; k++)
        if (strcmp(ex_kind_name(k), name) == 0) return k;
    return -1;
}

static double tex_box_iou(const ex_object *a, const ex_object *b) {
    double ix0 = a->px0 > b->px0 ? a->px0 : b->px0, iy0 = a->py0 > b->py0 ? a->py0 : b->py0;
    double ix1 = a->px1 < b->px1 ? a->px1 : b->px1, iy1 = a->py1 < b->py1 ? a->py1 : b->py1;
    double inter = (ix1 >= ix0 && iy1 >= iy0) ? (ix1 - ix0 + 1) * (iy1 - iy0 + 1) : 0;
    double aa = (double)(a->px1 - a->px0 + 1) * (a->py1 - a->py0 + 1);
    double ab = (double)(b->px1 - b->px0 + 1) * (b->py1 - b->py0 + 1);
    return inter / (aa + ab - inter);
}

/* Bitwise CRC-32, independent of the table version in examples/image.h. */
static uint32_t tex_crc32_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t tex_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Inflates a zlib stream made only of stored blocks; checks the Adler-32. Returns the
 * malloc'd payload and its length, or NULL when the stream is not what we expect. */
static unsigned char *tex_inflate_stored(const unsigned char *z, size_t n, size_t *out_n) {
    size_t pos = 2, len = 0, cap = 1024;
    unsigned char *out;
    uint32_t a = 1, b = 0;
    size_t i;
    int final = 0;
    if (n < 6 || (z[0] & 0x0F) != 8 || ((unsigned)z[0] * 256u + z[1]) % 31u != 0 || (z[1] & 0x20))
        return NULL;
    out = (unsigned char *)malloc(cap);
    if (!out) return NULL;
    while (!final) {
        unsigned blen, nlen;
        if (pos + 5 > n || ((z[pos] >> 1) & 3) != 0) {
            free(out);
            return NULL;
        }
        final = z[pos] & 1;
        blen = z[pos + 1] | ((unsigned)z[pos + 2] << 8);
        nlen = z[pos + 3] | ((unsigned)z[pos + 4] << 8);
        pos += 5;
        if ((blen ^ 0xFFFFu) != nlen || pos + blen > n) {
            free(out);
            return NULL;
        }
        while (len + blen > cap) {
            unsigned char *bigger = (unsigned char *)realloc(out, cap * 2);
            if (!bigger) {
                free(out);
                return NULL;
            }
            out = bigger;
            cap *= 2;
        }
        memcpy(out + len, z + pos, blen);
        len += blen;
        pos += blen;
    }
    if (pos + 4 != n) {
        free(out);
        return NULL;
    }
    for (i = 0; i < len; i++) {
        a = (a + out[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    if (((b << 16) | a) != tex_be32(z + pos)) {
        free(out);
        return NULL;
    }
    *out_n = len;
    return out;
}

/* Values k/255 (k random) so the expected byte is k whatever the float rounding mode and FMA
 * contraction; about 1 in 16 values lies outside [0,1] to exercise clamping. */
static void tex_random_image(float *img, int W, int H, uint64_t seed) {
    ex_rng r;
    int i;
    ex_rng_seed(&r, seed);
    for (i = 0; i < W * H * 3; i++) {
        int k = ex_rng_int(&r, 0, 255), e = ex_rng_int(&r, 0, 31);
        img[i] = e == 0 ? -0.25f : e == 1 ? 1.5f : (float)k / 255.0f;
    }
}

static int tex_expected_byte(float v) {
    return v <= 0 ? 0 : v >= 1 ? 255 : (int)floorf(v * 255 + 0.5f);
}

static unsigned char *tex_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long size;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = (unsigned char *)malloc((size_t)size + 1);
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)size;
    return buf;
}

/* ---- RNG ---- */

static void tex_rng_basics(perpo_test *t) {
    ex_rng a, b;
    int i, hist[5] = { 0, 0, 0, 0, 0 };
    double sum = 0, sum2 = 0;
    ex_rng_seed(&a, 42);
    ex_rng_seed(&b, 42);
    for (i = 0; i < 100; i++) CHECK(ex_rng_u64(&a) == ex_rng_u64(&b));
    ex_rng_seed(&b, 43);
    CHECK(ex_rng_u64(&a) != ex_rng_u64(&b));
    for (i = 0; i < 20000; i++) {
        float u = ex_rng_float(&a);
        int k = ex_rng_int(&a, -2, 2);
        float z = ex_rng_normal(&a);
        CHECK(u >= 0.0f && u < 1.0f);
        CHECK(k >= -2 && k <= 2);
        if (k >= -2 && k <= 2) hist[k + 2]++;
        sum += z;
        sum2 += (double)z * z;
    }
    for (i = 0; i < 5; i++) CHECK(hist[i] > 3500 && hist[i] < 4500);
    CHECK(fabs(sum / 20000) < 0.05);
    CHECK(fabs(sum2 / 20000 - 1.0) < 0.05);
    CHECK(ex_rng_int(&a, 7, 7) == 7);
    CHECK(ex_rng_int(&a, 9, 3) == 9);
    CHECK(ex_hash64(1, 2) != ex_hash64(2, 1));
    CHECK(ex_hash64(1, 2) == ex_hash64(1, 2));
}

/* ---- scenes ---- */

static void tex_scene_determinism(perpo_test *t) {
    static float a[TEX_W * TEX_H * 3], b[TEX_W * TEX_H * 3];
    ex_scene s1, s2, s3;
    char p1[64], p2[64], q1[64], q2[64];
    uint64_t i;
    for (i = 0; i < 20; i++) {
        CHECK_OK(ex_scene_from_index(1000, i, TEX_W, TEX_H, &s1));
        CHECK_OK(ex_scene_from_index(1000, i, TEX_W, TEX_H, &s2));
        ex_scene_render(&s1, a);
        ex_scene_render(&s2, b);
        CHECK(memcmp(a, b, sizeof a) == 0);
        ex_scene_prompt(&s1, p1, sizeof p1);
        ex_scene_prompt(&s2, p2, sizeof p2);
        ex_scene_answer(&s1, q1, sizeof q1);
        ex_scene_answer(&s2, q2, sizeof q2);
        CHECK(strcmp(p1, p2) == 0);
        CHECK(strcmp(q1, q2) == 0);
        /* the next index and another base give other scenes */
        CHECK_OK(ex_scene_from_index(1000, i + 1, TEX_W, TEX_H, &s3));
        ex_scene_render(&s3, b);
        CHECK(memcmp(a, b, sizeof a) != 0);
        CHECK_OK(ex_scene_from_index(2000, i, TEX_W, TEX_H, &s3));
        ex_scene_render(&s3, b);
        CHECK(memcmp(a, b, sizeof a) != 0);
    }
    CHECK(ex_scene_from_index(1, 0, 16, 64, &s1) != 0);
    CHECK(ex_scene_from_index(1, 0, 64, 2000, &s1) != 0);
}

/* ex_scene_generate_sized: objects of the asked sizes (the placement square, before a
   triangle's trimmed height), the default sizes give ex_scene_from_index's scenes, and a size
   range outside 1..28 or inverted is refused. */
static void tex_scene_sized(perpo_test *t) {
    ex_scene s, d;
    int i, k, small_seen = 0;
    for (i = 0; i < 300; i++) {
        CHECK_OK(ex_scene_from_index_sized(31, (uint64_t)i, 64, 64, 6, 14, &s));
        for (k = 0; k < s.n_objects; k++) {
            CHECK_MSG(s.obj[k].w >= 6 && s.obj[k].w <= 14, "scene %d object %d: %d px", i, k,
                      s.obj[k].w);
            small_seen += s.obj[k].w < 10;
        }
        CHECK_OK(ex_scene_from_index_sized(31, (uint64_t)i, 64, 64, 10, 28, &s));
        CHECK_OK(ex_scene_from_index(31, (uint64_t)i, 64, 64, &d));
        CHECK(memcmp(&s, &d, sizeof s) == 0);
        for (k = 0; k < s.n_objects; k++) CHECK(s.obj[k].w >= 10 && s.obj[k].w <= 28);
    }
    CHECK(small_seen > 100);
    CHECK(ex_scene_from_index_sized(1, 0, 64, 64, 0, 14, &s) != 0);
    CHECK(ex_scene_from_index_sized(1, 0, 64, 64, 15, 14, &s) != 0);
    CHECK(ex_scene_from_index_sized(1, 0, 64, 64, 10, 29, &s) != 0);
}

static void tex_scene_target_unique(perpo_test *t) {
    int i, k, m, counts[EX_SCENE_MAX_OBJECTS + 1] = { 0 };
    int kind_seen[EX_NUM_KINDS] = { 0 }, color_seen[EX_NUM_COLORS] = { 0 };
    for (i = 0; i < 1000; i++) {
        ex_scene s;
        char prompt[64], cname[32], kname[32];
        int c, kd, matches = 0, same_color = 0, same_kind = 0, ok;
        CHECK_OK(ex_scene_from_index(77, (uint64_t)i, TEX_W, TEX_H, &s));
        CHECK(s.n_objects >= 2 && s.n_objects <= EX_SCENE_MAX_OBJECTS);
        if (s.n_objects < 2 || s.n_objects > EX_SCENE_MAX_OBJECTS) continue;
        counts[s.n_objects]++;
        ex_scene_prompt(&s, prompt, sizeof prompt);
        ok = sscanf(prompt, "%31s %31s", cname, kname) == 2;
        CHECK_MSG(ok, "prompt '%s'", prompt);
        if (!ok) continue;
        c = tex_find_color(cname);
        kd = tex_find_kind(kname);
        CHECK(c >= 0 && kd >= 0);
        if (c >= 0) color_seen[c]++;
        if (kd >= 0) kind_seen[kd]++;
        for (k = 0; k < s.n_objects; k++) {
            const ex_object *o = &s.obj[k];
            if (o->color == c && o->kind == kd)
                matches++;
            else if (o->color == c)
                same_color++;
            else if (o->kind == kd)
                same_kind++;
            /* sizes and placement */
            CHECK(o->px0 >= 0 && o->py0 >= 0 && o->px1 < TEX_W && o->py1 < TEX_H);
            CHECK(o->px1 - o->px0 + 1 >= 6 && o->px1 - o->px0 + 1 <= 28);
            for (m = k + 1; m < s.n_objects; m++) CHECK(tex_box_iou(o, &s.obj[m]) < 0.1);
        }
        CHECK_MSG(matches == 1, "scene %d: %d objects match '%s'", i, matches, prompt);
        CHECK(s.obj[s.target].color == c && s.obj[s.target].kind == kd);
        /* distractors make both words necessary */
        if (s.n_objects >= 3)
            CHECK(same_color >= 1 && same_kind >= 1);
        else
            CHECK(same_color + same_kind == 1);
    }
    for (i = 2; i <= EX_SCENE_MAX_OBJECTS; i++) CHECK(counts[i] > 200);
    for (i = 0; i < EX_NUM_KINDS; i++) CHECK(kind_seen[i] > 100);
    for (i = 0; i < EX_NUM_COLORS; i++) CHECK(color_seen[i] > 80);
}

static void tex_box_format_roundtrip(perpo_test *t) {
    ex_rng r;
    int i, k;
    char buf[64];
    float b[4], p[4];
    ex_rng_seed(&r, 5);
    for (i = 0; i < 2000; i++) {
        for (k = 0; k < 4; k++) b[k] = i == 0 ? (float)(k & 1) : ex_rng_float(&r);
        if (i == 1) b[0] = b[1] = b[2] = b[3] = 1.0f;
        ex_format_box(b, buf, sizeof buf);
        CHECK(strchr(buf, ' ') == NULL);
        CHECK(strlen(buf) <= 25);
        CHECK(buf[0] == '[' && buf[strlen(buf) - 1] == ']');
        CHECK(sscanf(buf, "[%f,%f,%f,%f]", &p[0], &p[1], &p[2], &p[3]) == 4);
        for (k = 0; k < 4; k++) CHECK_NEAR(p[k], b[k], 0.005 + 1e-6, 0);
    }
    b[0] = 0.12f;
    b[1] = 0.05f;
    b[2] = 0.40f;
    b[3] = 0.33f;
    ex_format_box(b, buf, sizeof buf);
    CHECK(strcmp(buf, "[0.12,0.05,0.40,0.33]") == 0);
    /* the scene answer is its box */
    for (i = 0; i < 100; i++) {
        ex_scene s;
        CHECK_OK(ex_scene_from_index(9, (uint64_t)i, TEX_W, TEX_H, &s));
        ex_scene_answer(&s, buf, sizeof buf);
        CHECK(sscanf(buf, "[%f,%f,%f,%f]", &p[0], &p[1], &p[2], &p[3]) == 4);
        for (k = 0; k < 4; k++) CHECK_NEAR(p[k], s.box[k], 0.005 + 1e-6, 0);
        CHECK(s.box[0] < s.box[2] && s.box[1] < s.box[3]);
    }
}

static int tex_near_color(const float *px, const float rgb[3], float tol) {
    return fabsf(px[0] - rgb[0]) <= tol && fabsf(px[1] - rgb[1]) <= tol &&
           fabsf(px[2] - rgb[2]) <= tol;
}

static void tex_scene_target_pixels_in_box(perpo_test *t) {
    static float img[TEX_W * TEX_H * 3];
    int i, x, y;
    for (i = 0; i < 300; i++) {
        ex_scene s, alone;
        const ex_object *o;
        int bx0, by0, bx1, by1, minx = TEX_W, miny = TEX_H, maxx = -1, maxy = -1, outside = 0;
        CHECK_OK(ex_scene_from_index(31337, (uint64_t)i, TEX_W, TEX_H, &s));
        o = &s.obj[s.target];
        bx0 = (int)floorf(s.box[0] * TEX_W + 0.5f);
        by0 = (int)floorf(s.box[1] * TEX_H + 0.5f);
        bx1 = (int)floorf(s.box[2] * TEX_W + 0.5f) - 1;
        by1 = (int)floorf(s.box[3] * TEX_H + 0.5f) - 1;
        CHECK(bx0 == o->px0 && by0 == o->py0 && bx1 == o->px1 && by1 == o->py1);
        /* the target alone: its colour appears only inside its box, and touches every edge */
        alone = s;
        alone.obj[0] = s.obj[s.target];
        alone.n_objects = 1;
        alone.target = 0;
        ex_scene_render(&alone, img);
        for (y = 0; y < TEX_H; y++)
            for (x = 0; x < TEX_W; x++)
                if (tex_near_color(img + (y * TEX_W + x) * 3, o->rgb, 0.2f)) {
                    if (x < bx0 || x > bx1 || y < by0 || y > by1) outside++;
                    if (x < minx) minx = x;
                    if (x > maxx) maxx = x;
                    if (y < miny) miny = y;
                    if (y > maxy) maxy = y;
                }
        CHECK_MSG(outside == 0, "scene %d: %d target-coloured pixels outside the box", i, outside);
        CHECK_MSG(minx == bx0 && maxx == bx1 && miny == by0 && maxy == by1,
                  "scene %d: colour extent %d,%d-%d,%d vs box %d,%d-%d,%d", i, minx, miny, maxx,
                  maxy, bx0, by0, bx1, by1);
        /* in the full scene the target is drawn last: its whole mask shows its colour */
        ex_scene_render(&s, img);
        for (y = by0; y <= by1; y++)
            for (x = bx0; x <= bx1; x++)
                if (ex_object_contains(o, x, y))
                    CHECK(tex_near_color(img + (y * TEX_W + x) * 3, o->rgb, 0.3f));
    }
}

static void tex_scene_other_sizes(perpo_test *t) {
    static float img[96 * 128 * 3];
    ex_scene s;
    int i;
    for (i = 0; i < 50; i++) {
        CHECK_OK(ex_scene_from_index(3, (uint64_t)i, 128, 96, &s));
        CHECK(s.W == 128 && s.H == 96 && s.n_objects >= 2);
        ex_scene_render(&s, img);
        CHECK(s.box[2] <= 1.0f && s.box[3] <= 1.0f);
        CHECK_OK(ex_scene_from_index(3, (uint64_t)i, 32, 32, &s));
        CHECK(s.n_objects >= 2);
    }
}

/* ---- font ---- */

static void tex_font_glyphs(perpo_test *t) {
    unsigned char rows[95][EX_GLYPH_H];
    int c, d, n;
    for (c = 32; c <= 126; c++) {
        const char *art = ex_glyph_art(c);
        CHECK(strlen(art) == EX_GLYPH_W * EX_GLYPH_H);
        CHECK(strspn(art, "#.") == EX_GLYPH_W * EX_GLYPH_H);
        n = ex_glyph_rows(c, rows[c - 32]);
        if (c == ' ')
            CHECK(n == 0);
        else
            CHECK_MSG(n > 0, "glyph %d ('%c') is empty", c, c);
    }
    for (c = 33; c <= 126; c++)
        for (d = c + 1; d <= 126; d++)
            CHECK_MSG(memcmp(rows[c - 32], rows[d - 32], EX_GLYPH_H) != 0,
                      "glyphs '%c' and '%c' are equal", c, d);
    /* unprintable characters fall back to '?' */
    CHECK(ex_glyph_art(7) == ex_glyph_art('?'));
    CHECK(ex_glyph_art(200) == ex_glyph_art('?'));
}

static void tex_draw_text(perpo_test *t) {
    static float img[40 * 20 * 3];
    const float ink[3] = { 1, 0, 0 };
    unsigned char rows[EX_GLYPH_H];
    int x, y, ok = 1;
    memset(img, 0, sizeof img);
    ex_draw_text(img, 40, 20, 1, 2, "Ab\nc", ink, 1);
    ex_glyph_rows('b', rows);
    for (y = 0; y < EX_GLYPH_H; y++)
        for (x = 0; x < EX_GLYPH_W; x++) {
            int on = (rows[y] >> (EX_GLYPH_W - 1 - x)) & 1;
            if ((img[((2 + y) * 40 + 1 + 6 + x) * 3] == 1.0f) != on) ok = 0;
        }
    CHECK(ok);
    ex_glyph_rows('c', rows);
    CHECK((img[((2 + 8 + 2) * 40 + 1 + 1) * 3] == 1.0f) == ((rows[2] >> 3) & 1)); /* second line */
    CHECK(ex_text_width("ab\nabc", 1) == 17);
    CHECK(ex_text_width("ab", 2) == 22);
    CHECK(ex_text_width("", 1) == 0);
    ex_draw_text(img, 40, 20, 35, 15, "clipped at the border", ink, 3); /* must not crash */
    ex_draw_text(img, 40, 20, -20, -20, "neg", ink, 1);
}

/* ---- pages ---- */

static void tex_page_determinism(perpo_test *t) {
    static float a[TEX_W * TEX_H * 3], b[TEX_W * TEX_H * 3];
    ex_page p1, p2;
    int d;
    uint64_t i;
    for (d = 0; d <= EX_PAGE_MAX_DENSITY; d++)
        for (i = 0; i < 10; i++) {
            CHECK_OK(ex_page_from_index(500, i, TEX_W, TEX_H, d, &p1));
            CHECK_OK(ex_page_from_index(500, i, TEX_W, TEX_H, d, &p2));
            ex_page_render(&p1, a);
            ex_page_render(&p2, b);
            CHECK(memcmp(a, b, sizeof a) == 0);
            CHECK(strcmp(p1.text, p2.text) == 0);
            CHECK_OK(ex_page_from_index(500, i + 1, TEX_W, TEX_H, d, &p2));
            ex_page_render(&p2, b);
            CHECK(memcmp(a, b, sizeof a) != 0);
        }
    CHECK(ex_page_from_index(1, 0, 40, 64, 0, &p1) != 0);
    CHECK(ex_page_from_index(1, 0, 64, 64, 4, &p1) != 0);
    CHECK(ex_page_from_index(1, 0, 64, 64, -1, &p1) != 0);
}

/* Checks the structure of a transcription; returns its number of lines (0 if malformed). */
static int tex_page_lines_ok(perpo_test *t, const ex_page *p) {
    const char *s = p->text;
    int lines = 1, col = 0, i, n = (int)strlen(s);
    CHECK(n == p->len);
    if (n == 0) return 0;
    CHECK(s[0] != ' ' && s[0] != '\n' && s[n - 1] != ' ' && s[n - 1] != '\n');
    for (i = 0; i < n; i++) {
        char c = s[i];
        CHECK_MSG((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' || c == '\n',
                  "bad character %d in '%s'", c, s);
        if (i > 0 && (c == ' ' || c == '\n')) CHECK(s[i - 1] != ' ' && s[i - 1] != '\n');
        if (c == '\n') {
            lines++;
            col = 0;
        } else
            CHECK_MSG(++col <= p->cols, "line longer than %d columns in '%s'", p->cols, s);
    }
    CHECK(lines == p->n_lines);
    CHECK(p->first_row >= 0 && p->first_row + p->n_lines <= p->rows);
    return lines;
}

static void tex_page_length_bounds(perpo_test *t) {
    /* 64x64: 10 columns x 8 rows (measured over these 500 pages: lengths 1-9, 4-21, 21-53,
       79-87; means 5.3, 13.3, 40.4, 84.5) */
    static const int min_len[4] = { 1, 3, 15, 75 }, max_len[4] = { 10, 21, 56, 87 };
    static const double min_mean[4] = { 3, 8, 30, 80 }, max_mean[4] = { 8, 18, 48, 87 };
    static const int min_lines[4] = { 1, 2, 5, 8 }, max_lines[4] = { 1, 2, 5, 8 };
    int d, i;
    for (d = 0; d <= EX_PAGE_MAX_DENSITY; d++) {
        int lo = 1 << 30, hi = 0;
        double mean = 0;
        for (i = 0; i < 500; i++) {
            ex_page p;
            int lines;
            CHECK_OK(ex_page_from_index(42, (uint64_t)i, TEX_W, TEX_H, d, &p));
            CHECK(p.cols == 10 && p.rows == 8 && p.ox == 2 && p.oy == 0);
            lines = tex_page_lines_ok(t, &p);
            CHECK_MSG(lines >= min_lines[d] && lines <= max_lines[d],
                      "density %d: %d lines in '%s'", d, lines, p.text);
            CHECK(p.len <= ex_page_default_max_chars(d));
            if (p.len < lo) lo = p.len;
            if (p.len > hi) hi = p.len;
            mean += p.len;
        }
        mean /= 500;
        CHECK_MSG(lo >= min_len[d], "density %d: shortest %d", d, lo);
        CHECK_MSG(hi <= max_len[d], "density %d: longest %d", d, hi);
        CHECK_MSG(mean >= min_mean[d] && mean <= max_mean[d], "density %d: mean length %g", d,
                  mean);
    }
    /* a custom cap and a bigger page */
    for (i = 0; i < 200; i++) {
        ex_page p;
        ex_rng r;
        ex_rng_seed(&r, (uint64_t)i);
        CHECK_OK(ex_page_generate_ex(&r, 96, 96, 3, 150, &p));
        CHECK(p.cols == 16 && p.rows == 12);
        tex_page_lines_ok(t, &p);
        CHECK(p.len <= 150 && p.len > 100);
        CHECK_OK(ex_page_generate_ex(&r, 48, 48, 3, 25, &p));
        tex_page_lines_ok(t, &p);
        CHECK(p.len <= 25 && p.len > 10);
    }
}

static void tex_page_ink_where_text_is(perpo_test *t) {
    static float img[TEX_W * TEX_H * 3];
    int i, x, y;
    for (i = 0; i < 50; i++) {
        ex_page p;
        int dark_outside = 0, dark = 0, li;
        CHECK_OK(ex_page_from_index(8, (uint64_t)i, TEX_W, TEX_H, i % 4, &p));
        ex_page_render(&p, img);
        for (y = 0; y < TEX_H; y++)
            for (x = 0; x < TEX_W; x++) {
                float v = img[(y * TEX_W + x) * 3 + 1];
                int inside = 0;
                if (v > 0.5f) continue;
                dark++;
                for (li = 0; li < p.n_lines; li++) {
                    int x0 = p.ox + p.line_dx[li],
                        y0 = p.oy + (p.first_row + li) * 8 + p.line_dy[li];
                    if (x >= x0 && x < x0 + p.line_len[li] * 6 && y >= y0 && y < y0 + 7) inside = 1;
                }
                if (!inside) dark_outside++;
            }
        CHECK(dark > 3 * p.len / 2);
        CHECK_MSG(dark_outside == 0, "page %d: %d dark pixels outside the text", i, dark_outside);
    }
}

/* On a 60x64 page (10 x 8 cells, no margin) every ink pixel lies in the 6x8 cell of its own
   character: a model with 6-wide, 8-high patches sees one character per patch. */
static void tex_page_cells_align(perpo_test *t) {
    static float img[60 * 64 * 3];
    int i, x, y;
    for (i = 0; i < 200; i++) {
        ex_page p;
        int misplaced = 0, dark = 0;
        CHECK_OK(ex_page_from_index(9, (uint64_t)i, 60, 64, i % 4, &p));
        CHECK(p.cols == 10 && p.rows == 8 && p.ox == 0 && p.oy == 0);
        ex_page_render(&p, img);
        for (y = 0; y < 64; y++)
            for (x = 0; x < 60; x++) {
                int li = y / 8 - p.first_row, col = x / 6;
                if (img[(y * 60 + x) * 3 + 1] > 0.5f) continue;
                dark++;
                if (li < 0 || li >= p.n_lines || col >= p.line_len[li] ||
                    p.text[p.line_start[li] + col] == ' ')
                    misplaced++;
            }
        CHECK(dark > 3 * p.len / 2);
        CHECK_MSG(misplaced == 0, "page %d: %d ink pixels outside their character's cell", i,
                  misplaced);
    }
}

/* ---- image writers ---- */

static void tex_png_writer(perpo_test *t) {
    static const int sizes[3][2] = { { 1, 1 },
                                     { 7, 5 },
                                     { 150, 160 } }; /* the last needs 2 blocks */
    static float img[150 * 160 * 3];
    static const unsigned char sig[8] = { 137, 80, 78, 71, 13, 10, 26, 10 };
    int si;
    for (si = 0; si < 3; si++) {
        int W = sizes[si][0], H = sizes[si][1], x, y, c, bad = 0, saw_ihdr = 0, saw_iend = 0;
        size_t len = 0, pos, zlen = 0, raw_n = 0;
        unsigned char *png, *zbuf, *raw;
        tex_random_image(img, W, H, (uint64_t)si + 1);
        png = ex_png_encode(img, W, H, &len);
        CHECK(png != NULL);
        if (!png) continue;
        CHECK(len > 8 && memcmp(png, sig, 8) == 0);
        zbuf = (unsigned char *)malloc(len);
        pos = 8;
        while (pos + 12 <= len && zbuf) {
            uint32_t n = tex_be32(png + pos);
            const unsigned char *type = png + pos + 4;
            if (pos + 12 + n > len) {
                bad = 1;
                break;
            }
            CHECK_MSG(tex_be32(png + pos + 8 + n) == tex_crc32_bitwise(type, 4 + (size_t)n),
                      "bad CRC of %.4s", (const char *)type);
            if (memcmp(type, "IHDR", 4) == 0) {
                saw_ihdr = 1;
                CHECK(pos == 8 && n == 13);
                CHECK(tex_be32(type + 4) == (uint32_t)W && tex_be32(type + 8) == (uint32_t)H);
                CHECK(type[12] == 8 && type[13] == 2 && type[14] == 0 && type[15] == 0 &&
                      type[16] == 0);
            } else if (memcmp(type, "IDAT", 4) == 0) {
                memcpy(zbuf + zlen, type + 4, n);
                zlen += n;
            } else if (memcmp(type, "IEND", 4) == 0) {
                saw_iend = 1;
                CHECK(n == 0 && pos + 12 == len);
            }
            pos += 12 + n;
        }
        CHECK(!bad && saw_ihdr && saw_iend);
        raw = zbuf ? tex_inflate_stored(zbuf, zlen, &raw_n) : NULL;
        CHECK_MSG(raw != NULL, "%dx%d: zlib stream does not inflate", W, H);
        if (raw) {
            CHECK(raw_n == (size_t)H * (1 + 3 * (size_t)W));
            if (raw_n == (size_t)H * (1 + 3 * (size_t)W)) {
                int mismatches = 0;
                for (y = 0; y < H; y++) {
                    const unsigned char *r = raw + (size_t)y * (1 + 3 * (size_t)W);
                    if (r[0] != 0) mismatches++;
                    for (x = 0; x < W; x++)
                        for (c = 0; c < 3; c++) {
                            if (r[1 + x * 3 + c] != tex_expected_byte(img[(y * W + x) * 3 + c]))
                                mismatches++;
                        }
                }
                CHECK_MSG(mismatches == 0, "%dx%d: %d pixel bytes differ", W, H, mismatches);
            }
            free(raw);
        }
        free(zbuf);
        free(png);
    }
    { /* the file writer writes the same bytes */
        const char *path = "perpo_t_examples_tmp.png";
        size_t len = 0, flen = 0;
        unsigned char *png, *file;
        tex_random_image(img, 7, 5, 9);
        png = ex_png_encode(img, 7, 5, &len);
        CHECK_OK(ex_write_png(path, img, 7, 5));
        file = tex_read_file(path, &flen);
        CHECK(png && file && flen == len && memcmp(png, file, len) == 0);
        free(png);
        free(file);
        remove(path);
        CHECK(ex_write_png("/nonexistent-dir/x.png", img, 7, 5) != 0);
        CHECK(ex_png_encode(img, 0, 5, &len) == NULL && len == 0);
    }
}

static void tex_ppm_writer(perpo_test *t) {
    static float img[5 * 3 * 3];
    const char *path = "perpo_t_examples_tmp.ppm";
    const char *header = "P6\n5 3\n255\n";
    size_t n = 0, hl = strlen(header), i;
    unsigned char *file;
    tex_random_image(img, 5, 3, 3);
    CHECK_OK(ex_write_ppm(path, img, 5, 3));
    file = tex_read_file(path, &n);
    CHECK(file != NULL && n == hl + 5 * 3 * 3);
    if (file && n == hl + 5 * 3 * 3) {
        CHECK(memcmp(file, header, hl) == 0);
        for (i = 0; i < 5 * 3 * 3; i++) CHECK(file[hl + i] == tex_expected_byte(img[i]));
    }
    free(file);
    remove(path);
    CHECK(ex_write_ppm("/nonexistent-dir/x.ppm", img, 5, 3) != 0);
}

static void tex_checksums(perpo_test *t) {
    const unsigned char *s = (const unsigned char *)"123456789";
    static unsigned char big[100000];
    size_t i;
    CHECK(ex_crc32(0, s, 9) == 0xCBF43926u); /* the standard check value */
    CHECK(ex_adler32(1, s, 9) == 0x091E01DEu);
    CHECK(ex_crc32(ex_crc32(0, s, 4), s + 4, 5) == 0xCBF43926u);
    for (i = 0; i < sizeof big; i++) big[i] = 255;
    { /* long input exercises the deferred modulo */
        uint32_t a = 1, b = 0;
        for (i = 0; i < sizeof big; i++) {
            a = (a + big[i]) % 65521u;
            b = (b + a) % 65521u;
        }
        CHECK(ex_adler32(1, big, sizeof big) == ((b << 16) | a));
        CHECK(ex_crc32(0, big, sizeof big) == tex_crc32_bitwise(big, sizeof big));
    }
}

static void tex_upscale_rect_grid(perpo_test *t) {
    static float img[4 * 3 * 3], up[12 * 9 * 3], canvas[200 * 200 * 3];
    const float green[3] = { 0, 1, 0 };
    const float box[4] = { 0.25f, 0.0f, 0.75f, 2.0f / 3.0f };
    const float nanbox[4] = { NAN, 0, 1, 1 };
    const float *tiles[3];
    const char *labels[3] = { "first", NULL, "a very long label\nsecond line\nthird" };
    int x, y, c, ok = 1, OW = 0, OH = 0;
    ex_grid g = ex_grid_default();
    tex_random_image(img, 4, 3, 4);
    ex_upscale(img, 4, 3, 3, up);
    for (y = 0; y < 9; y++)
        for (x = 0; x < 12; x++)
            for (c = 0; c < 3; c++)
                if (up[(y * 12 + x) * 3 + c] != img[((y / 3) * 4 + x / 3) * 3 + c]) ok = 0;
    CHECK(ok);
    /* box over pixels x 1..2, y 0..1 of a 4x3 image, 1 px thick: all 4 are on the outline */
    for (x = 0; x < 4 * 3 * 3; x++) img[x] = 0;
    ex_draw_rect(img, 4, 3, box, green, 1);
    for (y = 0; y < 3; y++)
        for (x = 0; x < 4; x++) {
            int in = x >= 1 && x <= 2 && y <= 1;
            CHECK((img[(y * 4 + x) * 3 + 1] == 1.0f) == in);
        }
    ex_draw_rect(img, 4, 3, nanbox, green, 1); /* nothing, no crash */
    /* grid geometry and content */
    g.cols = 2;
    g.zoom = 2;
    g.margin = 3;
    g.label_lines = 2;
    CHECK_OK(ex_grid_size(&g, 3, 4, 3, &OW, &OH));
    CHECK(OW == 3 + 2 * (8 + 3));
    CHECK(OH == 3 + 2 * (6 + 2 * 8 + 2 + 3));
    tex_random_image(up, 4, 3, 5);
    tiles[0] = img;
    tiles[1] = up;
    tiles[2] = NULL;
    CHECK(OW * OH <= 200 * 200);
    CHECK_OK(ex_grid_compose(&g, 3, tiles, 4, 3, labels, canvas));
    /* tile 1 (second column) pixel (1,2) zoomed x2 at offset (3+11, 3) */
    for (c = 0; c < 3; c++)
        CHECK(canvas[((3 + 2 * 2 + 1) * OW + 14 + 2 * 1 + 1) * 3 + c] == up[(2 * 4 + 1) * 3 + c]);
    CHECK(ex_grid_size(&g, 0, 4, 3, &OW, &OH) != 0);
}

/* ---- SVG and JSON ---- */

static void tex_svg_plot(perpo_test *t) {
    const float x0[4] = { 0, 10, 20, 30 }, y0[4] = { 2.5f, 1.5f, NAN, 0.7f };
    const float y1[3] = { 0.1f, 0.4f, 0.45f };
    const float *xs[2] = { x0, NULL }, *ys[2] = { y0, y1 };
    const char *names[2] = { "PerPO <ours>", "DPO & co" };
    const int counts[2] = { 4, 3 };
    ex_plot_panel panels[2];
    const char *path = "perpo_t_examples_tmp.svg";
    unsigned char *file;
    size_t n = 0;
    CHECK_OK(ex_svg_plot(path, "loss", "step", "value", 2, names, xs, ys, counts));
    file = tex_read_file(path, &n);
    CHECK(file != NULL);
    if (file) {
        file[n] = 0;
        CHECK(strstr((char *)file, "<svg") != NULL && strstr((char *)file, "</svg>") != NULL);
        CHECK(strstr((char *)file, "PerPO &lt;ours&gt;") != NULL);
        CHECK(strstr((char *)file, "DPO &amp; co") != NULL);
        CHECK(strstr((char *)file, "nan") == NULL && strstr((char *)file, "inf") == NULL);
        free(file);
    }
    panels[0].title = "loss";
    panels[0].xlabel = "step";
    panels[0].ylabel = "loss";
    panels[0].n_series = 1;
    panels[0].names = names;
    panels[0].xs = xs;
    panels[0].ys = ys;
    panels[0].counts = counts;
    panels[1] = panels[0];
    panels[1].title = "empty";
    panels[1].n_series = 0;
    CHECK_OK(ex_svg_plot_panels(path, "two panels", 2, panels));
    remove(path);
    CHECK(ex_svg_plot("/nonexistent-dir/x.svg", "t", "x", "y", 2, names, xs, ys, counts) != 0);
}

/* Error bars: drawn where an sd is given (not where it is NULL, NaN or 0), the y axis covers
   them, and with no sds the plot is the plain one byte for byte. */
static void tex_svg_error_bars(perpo_test *t) {
    const float x0[3] = { 2, 4, 8 }, y0[3] = { 1.0f, 2.0f, 3.0f }, e0[3] = { 0.5f, NAN, 10.0f };
    const float y1[3] = { 1.5f, 1.5f, 1.5f };
    const float *xs[2] = { x0, x0 }, *ys[2] = { y0, y1 }, *sds[2] = { e0, NULL };
    const char *names[2] = { "PerPO", "DPO" };
    const int counts[2] = { 3, 3 };
    const char *path = "perpo_t_examples_sd_tmp.svg", *path2 = "perpo_t_examples_sd_tmp2.svg";
    unsigned char *file, *plain;
    size_t n = 0, n2 = 0, bars = 0;
    const char *p;
    CHECK_OK(ex_svg_plot_sd(path, "acc", "N", "acc", 2, names, xs, ys, sds, counts));
    file = tex_read_file(path, &n);
    CHECK(file != NULL);
    if (file) {
        file[n] = 0;
        for (p = (char *)file; (p = strstr(p, "stroke-width=\"1.5\"")) != NULL; p++) bars++;
        CHECK(bars == 2); /* point 0 and point 2 of the first series */
        /* the y axis covers 3 - 10 and 3 + 10: ticks -10 ... 15 */
        CHECK(strstr((char *)file, ">-10<") != NULL && strstr((char *)file, ">15<") != NULL);
        CHECK(strstr((char *)file, "nan") == NULL);
        free(file);
    }
    CHECK_OK(ex_svg_plot_sd(path, "acc", "N", "acc", 2, names, xs, ys, NULL, counts));
    CHECK_OK(ex_svg_plot(path2, "acc", "N", "acc", 2, names, xs, ys, counts));
    file = tex_read_file(path, &n);
    plain = tex_read_file(path2, &n2);
    CHECK(file && plain && n == n2 && memcmp(file, plain, n) == 0);
    free(file);
    free(plain);
    remove(path);
    remove(path2);
}

static void tex_json_writer(perpo_test *t) {
    FILE *f = tmpfile();
    ex_json j;
    char buf[1024];
    size_t n;
    const float arr[3] = { 1.5f, NAN, 2.0f };
    CHECK(f != NULL);
    if (!f) return;
    ex_json_init(&j, f);
    ex_json_object_begin(&j);
    ex_json_kv_string(&j, "name", "a \"quoted\"\\ line\nnext\x01");
    ex_json_kv_number(&j, "nan", NAN);
    ex_json_kv_number(&j, "inf", INFINITY);
    ex_json_kv_number(&j, "third", 1.0 / 3.0);
    ex_json_kv_int(&j, "big", 1234567890123LL);
    ex_json_kv_bool(&j, "ok", 1);
    ex_json_kv_floats(&j, "arr", arr, 3);
    ex_json_key(&j, "runs");
    ex_json_array_begin(&j);
    ex_json_object_begin(&j);
    ex_json_kv_number(&j, "acc", 0.5);
    ex_json_object_end(&j);
    ex_json_null(&j);
    ex_json_array_end(&j);
    ex_json_key(&j, "empty");
    ex_json_object_begin(&j);
    ex_json_object_end(&j);
    ex_json_object_end(&j);
    CHECK_OK(ex_json_finish(&j));
    rewind(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    CHECK(strstr(buf, "\"name\": \"a \\\"quoted\\\"\\\\ line\\nnext\\u0001\"") != NULL);
    CHECK(strstr(buf, "\"nan\": null") != NULL);
    CHECK(strstr(buf, "\"inf\": null") != NULL);
    CHECK(strstr(buf, "\"third\": 0.333333") != NULL);
    CHECK(strstr(buf, "\"big\": 1234567890123") != NULL);
    CHECK(strstr(buf, "\"ok\": true") != NULL);
    CHECK(strstr(buf, "\"arr\": [1.5, null, 2]") != NULL);
    CHECK(strstr(buf, "\"acc\": 0.5") != NULL);
    CHECK(strstr(buf, "\"empty\": {}") != NULL);
    CHECK(buf[0] == '{' && n >= 2 && buf[n - 2] == '}' && buf[n - 1] == '\n');
    /* misuse is reported */
    f = tmpfile();
    if (f) {
        ex_json_init(&j, f);
        ex_json_object_begin(&j);
        ex_json_number(&j, 1); /* no key */
        CHECK(ex_json_finish(&j) != 0);
        fclose(f);
    }
}

static void tex_options(perpo_test *t) {
    char a0[] = "prog", a1[] = "--steps", a2[] = "300", a3[] = "--lr=0.001", a4[] = "--out=dir",
         a5[] = "--steps=7", a6[] = "--steps", a7[] = "x", a8[] = "5000", a9[] = "--quick";
    char *argv[] = { a0, a1, a2, a3, a4, a5, a6, a7 };
    char *no_value[] = { a0, a6 }, *too_big[] = { a0, a6, a8 }, *unknown[] = { a0, a9 };
    int steps = 5;
    double lr = 1.0;
    const char *out = "x";
    const ex_option spec[] = {
        { "--steps", "steps", 'i', &steps, 0, 1000 },
        { "--lr", "learning rate", 'd', &lr, 0, 1 },
        { "--out", "folder", 's', &out, 0, 0 },
    };
    const size_t n = sizeof spec / sizeof spec[0];
    char msg[256];
    FILE *err = tmpfile();
    CHECK(err != NULL);
    if (!err) return;
    CHECK(ex_options_parse(1, argv, spec, n, "", err) == 0 && steps == 5 &&
          lr == 1.0); /* defaults */
    CHECK(ex_options_parse(3, argv, spec, n, "", err) == 0 && steps == 300);
    CHECK(ex_options_parse(6, argv, spec, n, "", err) == 0 && steps == 7); /* the last one wins */
    CHECK_NEAR(lr, 0.001, 1e-12, 0);
    CHECK(strcmp(out, "dir") == 0);
    CHECK(ex_options_parse(8, argv, spec, n, "", err) == -1 && steps == 7); /* not a number */
    CHECK(ex_options_parse(2, no_value, spec, n, "", err) == -1);
    CHECK(ex_options_parse(3, too_big, spec, n, "", err) == -1 && steps == 7);
    CHECK(ex_options_parse(2, unknown, spec, n, "", err) == -1);
    rewind(err); /* each failure said what was wrong, in this order */
    CHECK(fgets(msg, sizeof msg, err) && strstr(msg, "bad value \"x\" for --steps"));
    CHECK(fgets(msg, sizeof msg, err) && strstr(msg, "option --steps needs a value"));
    CHECK(fgets(msg, sizeof msg, err) && strstr(msg, "bad value \"5000\" for --steps"));
    CHECK(fgets(msg, sizeof msg, err) && strstr(msg, "unknown option --quick"));
    fclose(err);
}

/* Spearman's rho by hand: monotone = 1, reversed = -1; x = (1,2,2,3) against y = (1,2,3,4)
   has ranks (0, 1.5, 1.5, 3) and (0, 1, 2, 3): 4.5 / sqrt(4.5 * 5); constant input is
   undefined (ok = 0); invariant under any increasing transform. */
static void tex_spearman(perpo_test *t) {
    const double a[4] = { 1, 2, 3, 4 }, rev[4] = { 9, 7, 5, -1 }, tie[4] = { 1, 2, 2, 3 };
    const double flat[4] = { 2, 2, 2, 2 }, expo[4] = { exp(1.0), exp(2.0), exp(2.0), exp(3.0) };
    int ok = -1;
    CHECK_NEAR(ex_spearman(a, a, 4, &ok), 1.0, 1e-15, 0);
    CHECK(ok == 1);
    CHECK_NEAR(ex_spearman(a, rev, 4, &ok), -1.0, 1e-15, 0);
    CHECK_NEAR(ex_spearman(tie, a, 4, &ok), 4.5 / sqrt(22.5), 1e-15, 0);
    CHECK_NEAR(ex_spearman(a, tie, 4, &ok), 4.5 / sqrt(22.5), 1e-15, 0);
    CHECK(ex_spearman(expo, a, 4, &ok) == ex_spearman(tie, a, 4, &ok));
    CHECK(ex_spearman(flat, a, 4, &ok) == 0.0 && ok == 0);
    CHECK(ex_spearman(a, a, 1, &ok) == 0.0 && ok == 0);
}

/* Mean ± sd over seeds, leaving out the seeds without a value (NaN), and its table cell. */
static void tex_mean_sd(perpo_test *t) {
    const double three[3] = { 1, 2, 6 }, gap[3] = { 1, NAN, 3 }, one[2] = { NAN, 0.0525 };
    const double none[2] = { NAN, INFINITY };
    double mean, sd;
    char cell[64];
    CHECK(ex_mean_sd(three, 3, &mean, &sd) == 3);
    CHECK_NEAR(mean, 3.0, 1e-15, 0);
    CHECK_NEAR(sd, sqrt(7.0), 1e-15, 0);
    CHECK(ex_mean_sd(gap, 3, &mean, &sd) == 2);
    CHECK_NEAR(mean, 2.0, 1e-15, 0);
    CHECK_NEAR(sd, sqrt(2.0), 1e-15, 0);
    CHECK(ex_mean_sd(one, 2, &mean, &sd) == 1 && sd == 0.0);
    CHECK(ex_mean_sd(none, 2, &mean, &sd) == 0 && isnan(mean) && isnan(sd));
    ex_format_mean_sd(three, 3, 100, 1, 0, cell, sizeof cell);
    CHECK(strcmp(cell, "300.0 ± 264.6") == 0);
    ex_format_mean_sd(gap, 3, 1, 2, 1, cell, sizeof cell);
    CHECK(strcmp(cell, "+2.00 ± 1.41 (2 of 3)") == 0);
    ex_format_mean_sd(one, 2, 100, 1, 0, cell, sizeof cell); /* no "± 0" for one value */
    CHECK(strcmp(cell, "5.2 (1 of 2)") == 0 || strcmp(cell, "5.3 (1 of 2)") == 0);
    ex_format_mean_sd(none, 2, 1, 3, 0, cell, sizeof cell);
    CHECK(strcmp(cell, "n/a") == 0);
    ex_format_mean_sd(three, 1, 1, 3, 1, cell, sizeof cell);
    CHECK(strcmp(cell, "+1.000") == 0);
    ex_format_mean_sd(gap, 3, 1, 2, 1, cell, 12); /* cut short, still terminated */
    CHECK(strlen(cell) == 11);
}

extern const perpo_test_case perpo_tests_examples[];
const perpo_test_case perpo_tests_examples[] = {
    { "examples_rng_basics", tex_rng_basics },
    { "examples_scene_determinism", tex_scene_determinism },
    { "examples_scene_sized", tex_scene_sized },
    { "examples_scene_target_unique", tex_scene_target_unique },
    { "examples_box_format_roundtrip", tex_box_format_roundtrip },
    { "examples_scene_target_pixels_in_box", tex_scene_target_pixels_in_box },
    { "examples_scene_other_sizes", tex_scene_other_sizes },
    { "examples_font_glyphs", tex_font_glyphs },
    { "examples_draw_text", tex_draw_text },
    { "examples_page_determinism", tex_page_determinism },
    { "examples_page_length_bounds", tex_page_length_bounds },
    { "examples_page_ink_where_text_is", tex_page_ink_where_text_is },
    { "examples_page_cells_align", tex_page_cells_align },
    { "examples_png_writer", tex_png_writer },
    { "examples_ppm_writer", tex_ppm_writer },
    { "examples_checksums", tex_checksums },
    { "examples_upscale_rect_grid", tex_upscale_rect_grid },
    { "examples_svg_plot", tex_svg_plot },
    { "examples_svg_error_bars", tex_svg_error_bars },
    { "examples_json_writer", tex_json_writer },
    { "examples_options", tex_options },
    { "examples_spearman", tex_spearman },
    { "examples_mean_sd", tex_mean_sd },
    { NULL, NULL },
};

#undef TEX_W
#undef TEX_H
