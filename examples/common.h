/* examples/common.h - what the PerPO example programs share.
 *
 * Header-only, C99 (also compiles as C++), libc and libm only, independent of perpo.h.
 * Every function is `static inline`, so including it in several files is fine and unused
 * helpers cost nothing. Nothing here prints, exits or keeps global state: randomness comes
 * from an `ex_rng` passed by pointer, and functions that can fail return 0 on success.
 *
 * Contents
 *   1. RNG            ex_rng (xoshiro256** seeded by splitmix64), ex_hash64 for (base, index)
 *   2. Scenes         synthetic grounding images: "red circle" -> "[0.12,0.05,0.40,0.33]"
 *   3. Font           a 5x7 bitmap font for printable ASCII (6x8 cell), drawn for this project
 *   4. Pages          synthetic dense-OCR images at density 0..3 with their transcription
 *   5. Images         PPM and PNG writers, upscaling, rectangles, labelled image grids
 *   6. Plots          SVG line plots, one or several panels side by side
 *   7. JSON           a small streaming writer for results.json
 *   8. Command line   a table of options: --name value / --name=value, --help
 *
 * Images are float arrays [H][W][3], row-major, channel fastest, values in [0,1].
 * Boxes are normalized [x1,y1,x2,y2]; a tight pixel box with inclusive pixel corners
 * (px0,py0)-(px1,py1) is x1 = px0/W, y1 = py0/H, x2 = (px1+1)/W, y2 = (py1+1)/H.
 *
 * Train / validation / test splits: ex_scene_from_index and ex_page_from_index seed each
 * sample from a hash of (seed_base, index), so samples are independent of each other and of
 * the order they are made in; give each split its own seed_base.
 */
#ifndef PERPO_EXAMPLES_COMMON_H
#define PERPO_EXAMPLES_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define EX_FN static inline __attribute__((unused))
#else
#define EX_FN static inline
#endif

#define EX_PI 3.14159265358979323846

/* ======================================================================================
 * 1. RNG
 * ==================================================================================== */

typedef struct ex_rng {
    uint64_t s[4];
} ex_rng;

/* One step of splitmix64: advances *state and returns a well-mixed 64-bit value. */
EX_FN uint64_t ex_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Mixes two 64-bit values into one seed; used for (seed_base, index). */
EX_FN uint64_t ex_hash64(uint64_t a, uint64_t b) {
    uint64_t st = a ^ 0x6A09E667F3BCC909ull;
    uint64_t h = ex_splitmix64(&st);
    st = h ^ (b * 0xD1342543DE82EF95ull + 0x2545F4914F6CDD1Dull);
    return ex_splitmix64(&st);
}

EX_FN void ex_rng_seed(ex_rng *r, uint64_t seed) {
    uint64_t st = seed;
    int i;
    for (i = 0; i < 4; i++) r->s[i] = ex_splitmix64(&st);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; /* all-zero state is stuck */
}

EX_FN uint64_t ex__rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** */
EX_FN uint64_t ex_rng_u64(ex_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = ex__rotl64(s[1] * 5u, 7) * 9u;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ex__rotl64(s[3], 45);
    return out;
}

EX_FN uint32_t ex_rng_u32(ex_rng *r) { return (uint32_t)(ex_rng_u64(r) >> 32); }

/* Uniform in [0,1), 24 random bits. */
EX_FN float ex_rng_float(ex_rng *r) { return (float)(ex_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

/* Uniform integer in [lo, hi] (both inclusive), without modulo bias; hi < lo gives lo. */
EX_FN int ex_rng_int(ex_rng *r, int lo, int hi) {
    uint32_t span, x, floor_;
    if (hi <= lo) return lo;
    span = (uint32_t)((int64_t)hi - (int64_t)lo) + 1u;
    if (span == 0) return (int)ex_rng_u32(r); /* the whole 32-bit range */
    floor_ = (0u - span) % span;              /* 2^32 mod span: values below it are rejected */
    do { x = ex_rng_u32(r); } while (x < floor_);
    return (int)((int64_t)lo + (int64_t)(x % span));
}

/* Standard normal (Box-Muller; one value per call, no cached state). */
EX_FN float ex_rng_normal(ex_rng *r) {
    double u1 = ((double)ex_rng_u32(r) + 1.0) * (1.0 / 4294967296.0); /* (0,1] */
    double u2 = (double)ex_rng_u32(r) * (1.0 / 4294967296.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * EX_PI * u2));
}

EX_FN float ex__clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* Float in [0,1] to a byte, rounding; NaN becomes 0. */
EX_FN unsigned char ex_float_to_u8(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 1.0f) return 255;
    return (unsigned char)(v * 255.0f + 0.5f);
}

/* ======================================================================================
 * 2. Grounding scenes
 *
 * 2 to 4 flat shapes on a dark noisy background. One is the target, named by colour and
 * kind ("red circle"); the others share its colour or its kind (with 3+ objects there is
 * always one of each), so only the pair identifies it, and no other object has both.
 * Sizes are 10..28 px at 64x64 (scaled with min(W,H)/64). Boxes of different objects
 * overlap by at most 5% of the smaller one (most scenes: not at all). The target is drawn
 * last, so none of its pixels is hidden. Supported sizes: 32 <= W,H <= 1024.
 * ==================================================================================== */

enum {
    EX_KIND_SQUARE,
    EX_KIND_CIRCLE,
    EX_KIND_TRIANGLE,
    EX_KIND_CROSS,
    EX_KIND_RING,
    EX_NUM_KINDS
};
enum {
    EX_COLOR_RED,
    EX_COLOR_GREEN,
    EX_COLOR_BLUE,
    EX_COLOR_YELLOW,
    EX_COLOR_WHITE,
    EX_COLOR_PURPLE,
    EX_COLOR_CYAN,
    EX_NUM_COLORS
};

#define EX_SCENE_MAX_OBJECTS 4
#define EX_SCENE_MIN_SIZE    32
#define EX_SCENE_MAX_SIZE    1024

typedef struct ex_object {
    int kind, color;        /* EX_KIND_*, EX_COLOR_* */
    int x, y, w, h;         /* placement rectangle in pixels; the shape is inscribed in it */
    int px0, py0, px1, py1; /* tight pixel box of the shape, inclusive corners */
    float rgb[3];           /* colour used: the named colour with a small jitter */
} ex_object;

typedef struct ex_scene {
    int W, H;
    int n_objects; /* 2..4 */
    int target;    /* index into obj[] */
    ex_object obj[EX_SCENE_MAX_OBJECTS];
    float bg[3];         /* background colour */
    float noise;         /* std of the per-pixel Gaussian noise */
    uint64_t noise_seed; /* rendering is a pure function of the scene */
    float box[4];        /* target's tight box, normalized x1,y1,x2,y2 */
} ex_scene;

EX_FN const char *ex_kind_name(int kind) {
    static const char *const names[EX_NUM_KINDS] = { "square", "circle", "triangle", "cross",
                                                     "ring" };
    return (kind >= 0 && kind < EX_NUM_KINDS) ? names[kind] : "?";
}

EX_FN const char *ex_color_name(int color) {
    static const char *const names[EX_NUM_COLORS] = { "red",   "green",  "blue", "yellow",
                                                      "white", "purple", "cyan" };
    return (color >= 0 && color < EX_NUM_COLORS) ? names[color] : "?";
}

/* The nominal colour (before jitter). Chosen far apart, and far from the dark background. */
EX_FN void ex_color_rgb(int color, float rgb[3]) {
    static const float table[EX_NUM_COLORS][3] = {
        { 0.92f, 0.16f, 0.12f }, /* red */
        { 0.16f, 0.78f, 0.22f }, /* green */
        { 0.24f, 0.42f, 1.00f }, /* blue */
        { 0.96f, 0.88f, 0.14f }, /* yellow */
        { 0.95f, 0.95f, 0.95f }, /* white */
        { 0.76f, 0.26f, 0.92f }, /* purple */
        { 0.12f, 0.86f, 0.90f }, /* cyan */
    };
    int i;
    if (color < 0 || color >= EX_NUM_COLORS) color = EX_COLOR_WHITE;
    for (i = 0; i < 3; i++) rgb[i] = table[color][i];
}

/* Is the centre of pixel (px,py) inside object o? Exact integer geometry in doubled
 * coordinates (pixel centres are odd), so masks are identical on every platform. */
EX_FN int ex_object_contains(const ex_object *o, int px, int py) {
    long X = 2L * px + 1, Y = 2L * py + 1;
    long x0 = 2L * o->x, y0 = 2L * o->y, w2 = 2L * o->w, h2 = 2L * o->h;
    if (X < x0 || X > x0 + w2 || Y < y0 || Y > y0 + h2) return 0;
    switch (o->kind) {
    case EX_KIND_SQUARE: return 1;
    case EX_KIND_CIRCLE:
    case EX_KIND_RING: {
        long dx = X - (x0 + o->w), dy = Y - (y0 + o->h); /* centre = 2x + w */
        long d2 = dx * dx + dy * dy, r2 = (long)o->w * o->w;
        if (d2 > r2) return 0;
        /* ring: inner radius 0.45 of the outer one, i.e. d^2 >= 0.2025 r^2 */
        return o->kind == EX_KIND_CIRCLE || 400 * d2 >= 81 * r2;
    }
    case EX_KIND_TRIANGLE: { /* apex at top centre, base along the bottom edge */
        long ax = x0 + o->w, ay = y0, bx = x0, by = y0 + h2, cx = x0 + w2, cy = y0 + h2;
        long e1 = (bx - ax) * (Y - ay) - (by - ay) * (X - ax);
        long e2 = (cx - bx) * (Y - by) - (cy - by) * (X - bx);
        long e3 = (ax - cx) * (Y - cy) - (ay - cy) * (X - cx);
        return (e1 >= 0 && e2 >= 0 && e3 >= 0) || (e1 <= 0 && e2 <= 0 && e3 <= 0);
    }
    case EX_KIND_CROSS: { /* plus sign, arms about a third of the size, centred */
        int tw = o->w / 3, th = o->h / 3, vx, hy;
        if (tw < 3) tw = 3;
        if (th < 3) th = 3;
        if ((o->w - tw) & 1) tw++;
        if ((o->h - th) & 1) th++;
        vx = o->x + (o->w - tw) / 2;
        hy = o->y + (o->h - th) / 2;
        return (px >= vx && px < vx + tw) || (py >= hy && py < hy + th);
    }
    default: return 0;
    }
}

/* Computes the tight pixel box of o from its mask. Returns 0 if the mask is empty. */
EX_FN int ex__object_tight_box(ex_object *o) {
    int px, py, any = 0;
    o->px0 = o->x + o->w;
    o->py0 = o->y + o->h;
    o->px1 = o->x - 1;
    o->py1 = o->y - 1;
    for (py = o->y; py < o->y + o->h; py++)
        for (px = o->x; px < o->x + o->w; px++)
            if (ex_object_contains(o, px, py)) {
                any = 1;
                if (px < o->px0) o->px0 = px;
                if (px > o->px1) o->px1 = px;
                if (py < o->py0) o->py0 = py;
                if (py > o->py1) o->py1 = py;
            }
    return any;
}

/* Intersection area of two inclusive pixel boxes, the first grown by `grow` pixels. */
EX_FN long ex__box_inter(const ex_object *a, const ex_object *b, int grow) {
    int x0 = a->px0 - grow > b->px0 ? a->px0 - grow : b->px0;
    int y0 = a->py0 - grow > b->py0 ? a->py0 - grow : b->py0;
    int x1 = a->px1 + grow < b->px1 ? a->px1 + grow : b->px1;
    int y1 = a->py1 + grow < b->py1 ? a->py1 + grow : b->py1;
    if (x1 < x0 || y1 < y0) return 0;
    return (long)(x1 - x0 + 1) * (long)(y1 - y0 + 1);
}

EX_FN long ex__box_area(const ex_object *a) {
    return (long)(a->px1 - a->px0 + 1) * (long)(a->py1 - a->py0 + 1);
}

/* Random placement of an object of the given kind and colour that does not collide with
 * the first n_placed objects. Returns 0 on success. */
EX_FN int ex__scene_place(ex_rng *r, ex_scene *s, int n_placed, int kind, int color) {
    double scale = (s->W < s->H ? s->W : s->H) / 64.0;
    int smin = (int)(10 * scale + 0.5), smax = (int)(28 * scale + 0.5), attempt, i, k;
    ex_object *o = &s->obj[n_placed];
    if (smin < 6) smin = 6;
    for (attempt = 0; attempt < 400; attempt++) {
        /* later attempts use smaller shapes and accept a slight box overlap */
        int hi = smax - (int)((attempt / 100) * 5 * scale);
        int size, ok = 1;
        if (hi < smin) hi = smin;
        size = ex_rng_int(r, smin, hi);
        o->kind = kind;
        o->color = color;
        o->w = size;
        o->h = size;
        if (kind == EX_KIND_TRIANGLE) o->h = size - ex_rng_int(r, 0, size / 5);
        if (o->w > s->W - 2 || o->h > s->H - 2) continue;
        o->x = ex_rng_int(r, 1, s->W - 1 - o->w);
        o->y = ex_rng_int(r, 1, s->H - 1 - o->h);
        if (!ex__object_tight_box(o)) continue;
        for (i = 0; i < n_placed && ok; i++) {
            long a0 = ex__box_area(o), a1 = ex__box_area(&s->obj[i]);
            long amin = a0 < a1 ? a0 : a1;
            if (attempt < 200)
                ok = ex__box_inter(o, &s->obj[i], 2) == 0; /* 2 px of air */
            else
                ok = 20 * ex__box_inter(o, &s->obj[i], 0) <= amin; /* <= 5% overlap */
        }
        if (!ok) continue;
        ex_color_rgb(color, o->rgb);
        for (k = 0; k < 3; k++)
            o->rgb[k] = ex__clamp01(o->rgb[k] + 0.1f * (ex_rng_float(r) - 0.5f));
        return 0;
    }
    return 1;
}

/* Draws a random scene of size W x H. Returns 0, or nonzero for unsupported arguments. */
EX_FN int ex_scene_generate(ex_rng *r, int W, int H, ex_scene *out) {
    int kinds[EX_SCENE_MAX_OBJECTS], colors[EX_SCENE_MAX_OBJECTS];
    int n, i, k, tk, tc, placed;
    float base;
    if (!r || !out || W < EX_SCENE_MIN_SIZE || H < EX_SCENE_MIN_SIZE || W > EX_SCENE_MAX_SIZE ||
        H > EX_SCENE_MAX_SIZE)
        return 1;
    memset(out, 0, sizeof *out);
    out->W = W;
    out->H = H;
    n = ex_rng_int(r, 2, EX_SCENE_MAX_OBJECTS);
    tk = ex_rng_int(r, 0, EX_NUM_KINDS - 1);
    tc = ex_rng_int(r, 0, EX_NUM_COLORS - 1);
    kinds[0] = tk;
    colors[0] = tc;
    for (i = 1; i < n; i++) {
        /* object 1 shares the colour, object 2 the kind (with only two objects: one of
         * the two at random); any further object is any other (colour, kind) pair */
        int mode = i == 1 ? (n == 2 ? ex_rng_int(r, 0, 1) : 0) : (i == 2 ? 1 : 2);
        int other_kind = (tk + ex_rng_int(r, 1, EX_NUM_KINDS - 1)) % EX_NUM_KINDS;
        int other_color = (tc + ex_rng_int(r, 1, EX_NUM_COLORS - 1)) % EX_NUM_COLORS;
        if (mode == 0) {
            kinds[i] = other_kind;
            colors[i] = tc;
        } else if (mode == 1) {
            kinds[i] = tk;
            colors[i] = other_color;
        } else {
            kinds[i] = ex_rng_int(r, 0, EX_NUM_KINDS - 1);
            colors[i] = ex_rng_int(r, 0, EX_NUM_COLORS - 1);
            if (kinds[i] == tk && colors[i] == tc) kinds[i] = other_kind;
        }
    }
    for (placed = 0; placed < n; placed++)
        if (ex__scene_place(r, out, placed, kinds[placed], colors[placed]) != 0) break;
    if (placed < 2) return 2; /* cannot happen at supported sizes */
    out->n_objects = placed;
    out->target = 0;
    /* shuffle so the target's position in obj[] carries no information */
    for (i = placed - 1; i > 0; i--) {
        int j = ex_rng_int(r, 0, i);
        ex_object tmp = out->obj[i];
        out->obj[i] = out->obj[j];
        out->obj[j] = tmp;
        if (out->target == i)
            out->target = j;
        else if (out->target == j)
            out->target = i;
    }
    base = 0.04f + 0.14f * ex_rng_float(r);
    for (k = 0; k < 3; k++) out->bg[k] = ex__clamp01(base + 0.06f * (ex_rng_float(r) - 0.5f));
    out->noise = 0.01f + 0.025f * ex_rng_float(r);
    out->noise_seed = ex_rng_u64(r);
    {
        const ex_object *t = &out->obj[out->target];
        out->box[0] = (float)t->px0 / (float)W;
        out->box[1] = (float)t->py0 / (float)H;
        out->box[2] = (float)(t->px1 + 1) / (float)W;
        out->box[3] = (float)(t->py1 + 1) / (float)H;
    }
    return 0;
}

/* Scene number `index` of the split whose seed base is `seed_base`. */
EX_FN int ex_scene_from_index(uint64_t seed_base, uint64_t index, int W, int H, ex_scene *out) {
    ex_rng r;
    ex_rng_seed(&r, ex_hash64(seed_base, index));
    return ex_scene_generate(&r, W, H, out);
}

EX_FN void ex__draw_object(const ex_object *o, float *img, int W, int H) {
    int px, py;
    for (py = o->y; py < o->y + o->h; py++) {
        if (py < 0 || py >= H) continue;
        for (px = o->x; px < o->x + o->w; px++) {
            float *p;
            if (px < 0 || px >= W || !ex_object_contains(o, px, py)) continue;
            p = img + ((size_t)py * (size_t)W + (size_t)px) * 3;
            p[0] = o->rgb[0];
            p[1] = o->rgb[1];
            p[2] = o->rgb[2];
        }
    }
}

/* Adds N(0, sigma) noise to every channel (seeded), clamping to [0,1]. */
EX_FN void ex_add_noise(float *img, int W, int H, float sigma, uint64_t seed) {
    ex_rng r;
    size_t i, n = (size_t)W * (size_t)H * 3;
    ex_rng_seed(&r, seed);
    for (i = 0; i < n; i++) img[i] = ex__clamp01(img[i] + sigma * ex_rng_normal(&r));
}

/* Renders the scene into img (W*H*3 floats). */
EX_FN void ex_scene_render(const ex_scene *s, float *img) {
    size_t i, n = (size_t)s->W * (size_t)s->H;
    int k;
    for (i = 0; i < n; i++) {
        img[3 * i + 0] = s->bg[0];
        img[3 * i + 1] = s->bg[1];
        img[3 * i + 2] = s->bg[2];
    }
    for (k = 0; k < s->n_objects; k++)
        if (k != s->target) ex__draw_object(&s->obj[k], img, s->W, s->H);
    if (s->target >= 0 && s->target < s->n_objects)
        ex__draw_object(&s->obj[s->target], img, s->W, s->H);
    ex_add_noise(img, s->W, s->H, s->noise, s->noise_seed);
}

/* Writes the target's description, e.g. "red circle". Returns what snprintf returns. */
EX_FN int ex_scene_prompt(const ex_scene *s, char *buf, size_t cap) {
    const ex_object *t = &s->obj[s->target];
    return snprintf(buf, cap, "%s %s", ex_color_name(t->color), ex_kind_name(t->kind));
}

/* Box as the answer text: "[0.12,0.05,0.40,0.33]" (2 decimals, no spaces, at most 25 bytes
 * plus the terminator for values in [0,1]). Returns what snprintf returns. */
EX_FN int ex_format_box(const float box[4], char *buf, size_t cap) {
    return snprintf(buf, cap, "[%.2f,%.2f,%.2f,%.2f]", (double)box[0], (double)box[1],
                    (double)box[2], (double)box[3]);
}

/* The ground-truth answer of the scene (ex_format_box of its box). */
EX_FN int ex_scene_answer(const ex_scene *s, char *buf, size_t cap) {
    return ex_format_box(s->box, buf, cap);
}

/* ======================================================================================
 * 3. Bitmap font: 5x7 glyphs in a 6x8 cell, printable ASCII 32..126
 *
 * Designed for this project. Each glyph is 7 rows of 5 columns, '#' = ink. Lowercase has
 * a 5-row x-height sharing the bottom row with capitals and digits; g, p, q, y have 3-row
 * bowls so their tails fit in the same 7 rows (there is no row below the baseline).
 * Zero is slashed so it differs from O; l, 1, I and | all differ.
 * ==================================================================================== */

#define EX_GLYPH_W 5
#define EX_GLYPH_H 7
#define EX_CELL_W  6
#define EX_CELL_H  8

/* The 35-character pattern of character c (row-major); anything unprintable maps to '?'. */
EX_FN const char *ex_glyph_art(int c) {
    static const char *const font[95] = {
        /*  32 ' ' */ "....."
                      "....."
                      "....."
                      "....."
                      "....."
                      "....."
                      ".....",
        /*  33 '!' */
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "....."
        "..#..",
        /*  34 '"' */
        ".#.#."
        ".#.#."
        ".#.#."
        "....."
        "....."
        "....."
        ".....",
        /*  35 '#' */
        ".#.#."
        ".#.#."
        "#####"
        ".#.#."
        "#####"
        ".#.#."
        ".#.#.",
        /*  36 '$' */
        "..#.."
        ".####"
        "#.#.."
        ".###."
        "..#.#"
        "####."
        "..#..",
        /*  37 '%' */
        "##..."
        "##..#"
        "...#."
        "..#.."
        ".#..."
        "#..##"
        "...##",
        /*  38 '&' */
        ".##.."
        "#..#."
        "#.#.."
        ".#..."
        "#.#.#"
        "#..#."
        ".##.#",
        /*  39 ''' */
        "..#.."
        "..#.."
        ".#..."
        "....."
        "....."
        "....."
        ".....",
        /*  40 '(' */
        "...#."
        "..#.."
        ".#..."
        ".#..."
        ".#..."
        "..#.."
        "...#.",
        /*  41 ')' */
        ".#..."
        "..#.."
        "...#."
        "...#."
        "...#."
        "..#.."
        ".#...",
        /*  42 '*' */
        "....."
        "..#.."
        "#.#.#"
        ".###."
        "#.#.#"
        "..#.."
        ".....",
        /*  43 '+' */
        "....."
        "..#.."
        "..#.."
        "#####"
        "..#.."
        "..#.."
        ".....",
        /*  44 ',' */
        "....."
        "....."
        "....."
        "....."
        "..##."
        "..#.."
        ".#...",
        /*  45 '-' */
        "....."
        "....."
        "....."
        "#####"
        "....."
        "....."
        ".....",
        /*  46 '.' */
        "....."
        "....."
        "....."
        "....."
        "....."
        ".##.."
        ".##..",
        /*  47 '/' */
        "....."
        "....#"
        "...#."
        "..#.."
        ".#..."
        "#...."
        ".....",
        /*  48 '0' */
        ".###."
        "#...#"
        "#..##"
        "#.#.#"
        "##..#"
        "#...#"
        ".###.",
        /*  49 '1' */
        "..#.."
        ".##.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        ".###.",
        /*  50 '2' */
        ".###."
        "#...#"
        "....#"
        "...#."
        "..#.."
        ".#..."
        "#####",
        /*  51 '3' */
        "#####"
        "...#."
        "..#.."
        "...#."
        "....#"
        "#...#"
        ".###.",
        /*  52 '4' */
        "...#."
        "..##."
        ".#.#."
        "#..#."
        "#####"
        "...#."
        "...#.",
        /*  53 '5' */
        "#####"
        "#...."
        "####."
        "....#"
        "....#"
        "#...#"
        ".###.",
        /*  54 '6' */
        "..##."
        ".#..."
        "#...."
        "####."
        "#...#"
        "#...#"
        ".###.",
        /*  55 '7' */
        "#####"
        "....#"
        "...#."
        "..#.."
        ".#..."
        ".#..."
        ".#...",
        /*  56 '8' */
        ".###."
        "#...#"
        "#...#"
        ".###."
        "#...#"
        "#...#"
        ".###.",
        /*  57 '9' */
        ".###."
        "#...#"
        "#...#"
        ".####"
        "....#"
        "...#."
        ".##..",
        /*  58 ':' */
        "....."
        ".##.."
        ".##.."
        "....."
        ".##.."
        ".##.."
        ".....",
        /*  59 ';' */
        "....."
        ".##.."
        ".##.."
        "....."
        ".##.."
        "..#.."
        ".#...",
        /*  60 '<' */
        "...#."
        "..#.."
        ".#..."
        "#...."
        ".#..."
        "..#.."
        "...#.",
        /*  61 '=' */
        "....."
        "....."
        "#####"
        "....."
        "#####"
        "....."
        ".....",
        /*  62 '>' */
        ".#..."
        "..#.."
        "...#."
        "....#"
        "...#."
        "..#.."
        ".#...",
        /*  63 '?' */
        ".###."
        "#...#"
        "....#"
        "...#."
        "..#.."
        "....."
        "..#..",
        /*  64 '@' */
        ".###."
        "#...#"
        "#.###"
        "#.#.#"
        "#.###"
        "#...."
        ".###.",
        /*  65 'A' */
        ".###."
        "#...#"
        "#...#"
        "#####"
        "#...#"
        "#...#"
        "#...#",
        /*  66 'B' */
        "####."
        "#...#"
        "#...#"
        "####."
        "#...#"
        "#...#"
        "####.",
        /*  67 'C' */
        ".###."
        "#...#"
        "#...."
        "#...."
        "#...."
        "#...#"
        ".###.",
        /*  68 'D' */
        "###.."
        "#..#."
        "#...#"
        "#...#"
        "#...#"
        "#..#."
        "###..",
        /*  69 'E' */
        "#####"
        "#...."
        "#...."
        "####."
        "#...."
        "#...."
        "#####",
        /*  70 'F' */
        "#####"
        "#...."
        "#...."
        "####."
        "#...."
        "#...."
        "#....",
        /*  71 'G' */
        ".###."
        "#...#"
        "#...."
        "#.###"
        "#...#"
        "#...#"
        ".####",
        /*  72 'H' */
        "#...#"
        "#...#"
        "#...#"
        "#####"
        "#...#"
        "#...#"
        "#...#",
        /*  73 'I' */
        ".###."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        ".###.",
        /*  74 'J' */
        "..###"
        "...#."
        "...#."
        "...#."
        "...#."
        "#..#."
        ".##..",
        /*  75 'K' */
        "#...#"
        "#..#."
        "#.#.."
        "##..."
        "#.#.."
        "#..#."
        "#...#",
        /*  76 'L' */
        "#...."
        "#...."
        "#...."
        "#...."
        "#...."
        "#...."
        "#####",
        /*  77 'M' */
        "#...#"
        "##.##"
        "#.#.#"
        "#.#.#"
        "#...#"
        "#...#"
        "#...#",
        /*  78 'N' */
        "#...#"
        "#...#"
        "##..#"
        "#.#.#"
        "#..##"
        "#...#"
        "#...#",
        /*  79 'O' */
        ".###."
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        ".###.",
        /*  80 'P' */
        "####."
        "#...#"
        "#...#"
        "####."
        "#...."
        "#...."
        "#....",
        /*  81 'Q' */
        ".###."
        "#...#"
        "#...#"
        "#...#"
        "#.#.#"
        "#..#."
        ".##.#",
        /*  82 'R' */
        "####."
        "#...#"
        "#...#"
        "####."
        "#.#.."
        "#..#."
        "#...#",
        /*  83 'S' */
        ".####"
        "#...."
        "#...."
        ".###."
        "....#"
        "....#"
        "####.",
        /*  84 'T' */
        "#####"
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#..",
        /*  85 'U' */
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        ".###.",
        /*  86 'V' */
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        "#...#"
        ".#.#."
        "..#..",
        /*  87 'W' */
        "#...#"
        "#...#"
        "#...#"
        "#.#.#"
        "#.#.#"
        "#.#.#"
        ".#.#.",
        /*  88 'X' */
        "#...#"
        "#...#"
        ".#.#."
        "..#.."
        ".#.#."
        "#...#"
        "#...#",
        /*  89 'Y' */
        "#...#"
        "#...#"
        ".#.#."
        "..#.."
        "..#.."
        "..#.."
        "..#..",
        /*  90 'Z' */
        "#####"
        "....#"
        "...#."
        "..#.."
        ".#..."
        "#...."
        "#####",
        /*  91 '[' */
        ".###."
        ".#..."
        ".#..."
        ".#..."
        ".#..."
        ".#..."
        ".###.",
        /*  92 back */
        "....."
        "#...."
        ".#..."
        "..#.."
        "...#."
        "....#"
        ".....",
        /*  93 ']' */
        ".###."
        "...#."
        "...#."
        "...#."
        "...#."
        "...#."
        ".###.",
        /*  94 '^' */
        "..#.."
        ".#.#."
        "#...#"
        "....."
        "....."
        "....."
        ".....",
        /*  95 '_' */
        "....."
        "....."
        "....."
        "....."
        "....."
        "....."
        "#####",
        /*  96 '`' */
        ".#..."
        "..#.."
        "...#."
        "....."
        "....."
        "....."
        ".....",
        /*  97 'a' */
        "....."
        "....."
        ".###."
        "....#"
        ".####"
        "#...#"
        ".####",
        /*  98 'b' */
        "#...."
        "#...."
        "#.##."
        "##..#"
        "#...#"
        "#...#"
        "####.",
        /*  99 'c' */
        "....."
        "....."
        ".###."
        "#...."
        "#...."
        "#...#"
        ".###.",
        /* 100 'd' */
        "....#"
        "....#"
        ".##.#"
        "#..##"
        "#...#"
        "#...#"
        ".####",
        /* 101 'e' */
        "....."
        "....."
        ".###."
        "#...#"
        "#####"
        "#...."
        ".###.",
        /* 102 'f' */
        "..##."
        ".#..#"
        ".#..."
        "###.."
        ".#..."
        ".#..."
        ".#...",
        /* 103 'g' */
        "....."
        "....."
        ".####"
        "#...#"
        ".####"
        "....#"
        ".###.",
        /* 104 'h' */
        "#...."
        "#...."
        "#.##."
        "##..#"
        "#...#"
        "#...#"
        "#...#",
        /* 105 'i' */
        "..#.."
        "....."
        ".##.."
        "..#.."
        "..#.."
        "..#.."
        ".###.",
        /* 106 'j' */
        "...#."
        "....."
        "..##."
        "...#."
        "...#."
        "#..#."
        ".##..",
        /* 107 'k' */
        "#...."
        "#...."
        "#..#."
        "#.#.."
        "##..."
        "#.#.."
        "#..#.",
        /* 108 'l' */
        ".##.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..##.",
        /* 109 'm' */
        "....."
        "....."
        "##.#."
        "#.#.#"
        "#.#.#"
        "#.#.#"
        "#.#.#",
        /* 110 'n' */
        "....."
        "....."
        "#.##."
        "##..#"
        "#...#"
        "#...#"
        "#...#",
        /* 111 'o' */
        "....."
        "....."
        ".###."
        "#...#"
        "#...#"
        "#...#"
        ".###.",
        /* 112 'p' */
        "....."
        "....."
        "####."
        "#...#"
        "####."
        "#...."
        "#....",
        /* 113 'q' */
        "....."
        "....."
        ".####"
        "#...#"
        ".####"
        "....#"
        "....#",
        /* 114 'r' */
        "....."
        "....."
        "#.##."
        "##..#"
        "#...."
        "#...."
        "#....",
        /* 115 's' */
        "....."
        "....."
        ".####"
        "#...."
        ".###."
        "....#"
        "####.",
        /* 116 't' */
        ".#..."
        ".#..."
        "###.."
        ".#..."
        ".#..."
        ".#..#"
        "..##.",
        /* 117 'u' */
        "....."
        "....."
        "#...#"
        "#...#"
        "#...#"
        "#..##"
        ".##.#",
        /* 118 'v' */
        "....."
        "....."
        "#...#"
        "#...#"
        "#...#"
        ".#.#."
        "..#..",
        /* 119 'w' */
        "....."
        "....."
        "#...#"
        "#...#"
        "#.#.#"
        "#.#.#"
        ".#.#.",
        /* 120 'x' */
        "....."
        "....."
        "#...#"
        ".#.#."
        "..#.."
        ".#.#."
        "#...#",
        /* 121 'y' */
        "....."
        "....."
        "#...#"
        "#...#"
        ".####"
        "....#"
        ".###.",
        /* 122 'z' */
        "....."
        "....."
        "#####"
        "...#."
        "..#.."
        ".#..."
        "#####",
        /* 123 '{' */
        "...##"
        "..#.."
        "..#.."
        ".#..."
        "..#.."
        "..#.."
        "...##",
        /* 124 '|' */
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#.."
        "..#..",
        /* 125 '}' */
        "##..."
        "..#.."
        "..#.."
        "...#."
        "..#.."
        "..#.."
        "##...",
        /* 126 '~' */
        "....."
        "....."
        ".#..."
        "#.#.#"
        "...#."
        "....."
        ".....",
    };
    if (c < 32 || c > 126) c = '?';
    return font[c - 32];
}

/* The glyph as 7 row bitmasks, bit 4 = leftmost column. Returns the number of ink pixels. */
EX_FN int ex_glyph_rows(int c, unsigned char rows[EX_GLYPH_H]) {
    const char *art = ex_glyph_art(c);
    int y, x, count = 0;
    for (y = 0; y < EX_GLYPH_H; y++) {
        rows[y] = 0;
        for (x = 0; x < EX_GLYPH_W; x++)
            if (art[y * EX_GLYPH_W + x] == '#') {
                rows[y] = (unsigned char)(rows[y] | (1u << (EX_GLYPH_W - 1 - x)));
                count++;
            }
    }
    return count;
}

EX_FN void ex__fill_block(float *img, int W, int H, int x, int y, int size, const float rgb[3]) {
    int i, j;
    for (j = y; j < y + size; j++) {
        if (j < 0 || j >= H) continue;
        for (i = x; i < x + size; i++) {
            float *p;
            if (i < 0 || i >= W) continue;
            p = img + ((size_t)j * (size_t)W + (size_t)i) * 3;
            p[0] = rgb[0];
            p[1] = rgb[1];
            p[2] = rgb[2];
        }
    }
}

/* Draws one character with its top-left corner at (x,y), each font pixel scale x scale. */
EX_FN void ex_draw_char(float *img, int W, int H, int x, int y, int c, const float rgb[3],
                        int scale) {
    const char *art = ex_glyph_art(c);
    int gx, gy;
    if (scale < 1) scale = 1;
    for (gy = 0; gy < EX_GLYPH_H; gy++)
        for (gx = 0; gx < EX_GLYPH_W; gx++)
            if (art[gy * EX_GLYPH_W + gx] == '#')
                ex__fill_block(img, W, H, x + gx * scale, y + gy * scale, scale, rgb);
}

/* Text at (x,y), clipped to the image; '\n' starts a new line. At most max_cols characters
 * per line and max_lines lines are drawn (negative = no limit). */
EX_FN void ex__draw_text_limited(float *img, int W, int H, int x, int y, const char *s,
                                 const float rgb[3], int scale, int max_cols, int max_lines) {
    int col = 0, line = 0;
    if (!s) return;
    if (scale < 1) scale = 1;
    for (; *s; s++) {
        if (*s == '\n') {
            col = 0;
            line++;
            if (max_lines >= 0 && line >= max_lines) return;
            continue;
        }
        if (max_cols < 0 || col < max_cols)
            ex_draw_char(img, W, H, x + col * EX_CELL_W * scale, y + line * EX_CELL_H * scale,
                         (unsigned char)*s, rgb, scale);
        col++;
    }
}

EX_FN void ex_draw_text(float *img, int W, int H, int x, int y, const char *s, const float rgb[3],
                        int scale) {
    ex__draw_text_limited(img, W, H, x, y, s, rgb, scale, -1, -1);
}

/* Pixel width of the widest line of s (0 for an empty string). */
EX_FN int ex_text_width(const char *s, int scale) {
    int col = 0, best = 0;
    if (scale < 1) scale = 1;
    for (; s && *s; s++) {
        if (*s == '\n')
            col = 0;
        else if (++col > best)
            best = col;
    }
    return best > 0 ? (best * EX_CELL_W - 1) * scale : 0;
}

/* ======================================================================================
 * 4. Dense-OCR pages
 *
 * Dark text on light paper in a fixed character grid of 6x8 cells:
 *     cols = W / 6, rows = H / 8, the grid centred (the leftover pixels, if any, as margin).
 * A glyph is 5x7 pixels in the top-left of its cell; each line is shifted by 0..1 px in x and
 * the whole text block by 0..1 px in y, so a glyph never leaves its cell: on a page whose
 * size is a multiple of the cell (60x64: 10 columns x 8 rows, the dense-OCR example) a model
 * with 6-wide, 8-high patches sees exactly one character per patch. Supported sizes:
 * 48 <= W,H <= 256 (64x64: 10 x 8 with a 2 px margin left and right; 96x96: 16 x 12).
 * Words come from a built-in list (2..6 lowercase letters), with an occasional 1..4 digit
 * number; words are separated by one space, lines by '\n', and the transcription has no
 * leading, trailing or doubled separators. Paper and ink colours vary a little and the image
 * gets mild Gaussian noise.
 *
 * Densities (lines counted for a grid of `rows` rows):
 *   0: 1 line of 1-2 short words (<= 4 letters each)           default cap 12 chars
 *   1: 2 lines of 1-2 words                                     default cap 24 chars
 *   2: rows/2+1 lines of 1-3 words (5 lines on 8 rows)          default cap 56 chars
 *   3: every row filled greedily, until the cap                 default cap 88 chars
 * Lines 0-2 start at a random row; density 3 starts at the top. A line never exceeds
 * `cols` characters. With 10 x 8 cells no cap binds (a full page holds at most 87
 * characters with its newlines); on bigger pages density 3 stops at the first word that
 * would pass the cap.
 * ex_page_generate_ex takes another cap (1..EX_PAGE_TEXT_CAP-1; 0 = the default).
 * ==================================================================================== */

#define EX_PAGE_MIN_SIZE    48
#define EX_PAGE_MAX_SIZE    256
#define EX_PAGE_TEXT_CAP    2048
#define EX_PAGE_MAX_LINES   32
#define EX_PAGE_MAX_DENSITY 3

typedef struct ex_page {
    int W, H, density;
    int cols, rows; /* character grid */
    int ox, oy;     /* pixel position of the grid's top-left cell */
    int first_row;  /* grid row of the first text line */
    int n_lines;
    int line_start[EX_PAGE_MAX_LINES]; /* offset of each line in text[] */
    int line_len[EX_PAGE_MAX_LINES];
    int line_dx[EX_PAGE_MAX_LINES]; /* per-line shift in pixels, 0..1 */
    int line_dy[EX_PAGE_MAX_LINES]; /* 0..1, the same for all lines */
    float paper[3], ink[3];
    float noise; /* std of the per-pixel noise */
    uint64_t noise_seed;
    int len;                     /* strlen(text) */
    char text[EX_PAGE_TEXT_CAP]; /* ground-truth transcription */
} ex_page;

/* Default transcription cap of a density (see above). */
EX_FN int ex_page_default_max_chars(int density) {
    static const int caps[EX_PAGE_MAX_DENSITY + 1] = { 12, 24, 56, 88 };
    if (density < 0) density = 0;
    if (density > EX_PAGE_MAX_DENSITY) density = EX_PAGE_MAX_DENSITY;
    return caps[density];
}

/* A random token of at most max_len characters into buf; returns its length. */
EX_FN int ex__page_token(ex_rng *r, int max_len, char *buf) {
    static const char *const words[] = {
        "the",    "cat",    "map",    "red",    "box",    "sun",    "ink",    "pen",    "cup",
        "key",    "hat",    "egg",    "owl",    "ice",    "jam",    "fox",    "zip",    "sky",
        "bus",    "log",    "net",    "oak",    "row",    "dew",    "data",   "line",   "page",
        "text",   "read",   "word",   "code",   "file",   "note",   "blue",   "tree",   "road",
        "fish",   "bird",   "milk",   "rain",   "star",   "moon",   "door",   "lamp",   "book",
        "quiz",   "gold",   "wave",   "hill",   "kite",   "yarn",   "vase",   "jump",   "grid",
        "oval",   "zero",   "dune",   "wolf",   "lucky",  "plant",  "river",  "stone",  "paper",
        "apple",  "quick",  "brown",  "light",  "north",  "south",  "table",  "chair",  "green",
        "seven",  "eight",  "cloud",  "vivid",  "zebra",  "jelly",  "mango",  "pixel",  "badge",
        "yellow", "window", "garden", "silver", "rocket", "forest", "bridge", "violet", "winter",
        "orange", "puzzle", "anchor", "jungle", "harbor", "oxygen", "fizzy",  "to",     "of",
        "in",     "on",     "at",     "by",     "up",     "we",     "is",     "go",     "no",
        "ox",
    };
    const int n_words = (int)(sizeof words / sizeof words[0]);
    int tries, len, i;
    if (max_len < 1) return 0;
    if (ex_rng_int(r, 0, 9) == 0) { /* a number, no leading zero */
        len = ex_rng_int(r, 1, max_len < 4 ? max_len : 4);
        for (i = 0; i < len; i++)
            buf[i] = (char)('0' + ex_rng_int(r, i == 0 && len > 1 ? 1 : 0, 9));
        buf[len] = '\0';
        return len;
    }
    for (tries = 0; tries < 64; tries++) {
        const char *w = words[ex_rng_int(r, 0, n_words - 1)];
        len = (int)strlen(w);
        if (len <= max_len) {
            memcpy(buf, w, (size_t)len + 1);
            return len;
        }
    }
    buf[0] = (char)('0' + ex_rng_int(r, 0, 9)); /* nothing short enough: a digit */
    buf[1] = '\0';
    return 1;
}

/* A random page of size W x H at the given density; max_chars = 0 selects the default cap.
 * Returns 0, or nonzero for unsupported arguments. */
EX_FN int ex_page_generate_ex(ex_rng *r, int W, int H, int density, int max_chars, ex_page *p) {
    int nl, wmin, wmax, word_len_max, li, k, block_dy;
    float base;
    if (!r || !p || W < EX_PAGE_MIN_SIZE || H < EX_PAGE_MIN_SIZE || W > EX_PAGE_MAX_SIZE ||
        H > EX_PAGE_MAX_SIZE || density < 0 || density > EX_PAGE_MAX_DENSITY || max_chars < 0 ||
        max_chars > EX_PAGE_TEXT_CAP - 1)
        return 1;
    if (max_chars == 0) max_chars = ex_page_default_max_chars(density);
    memset(p, 0, sizeof *p);
    p->W = W;
    p->H = H;
    p->density = density;
    p->cols = W / EX_CELL_W;
    p->rows = H / EX_CELL_H;
    if (p->rows > EX_PAGE_MAX_LINES) p->rows = EX_PAGE_MAX_LINES;
    p->ox = (W - p->cols * EX_CELL_W) / 2;
    p->oy = (H - p->rows * EX_CELL_H) / 2;
    word_len_max = 6;
    switch (density) {
    case 0:
        nl = 1;
        wmin = 1;
        wmax = 2;
        word_len_max = 4;
        break;
    case 1:
        nl = 2;
        wmin = 1;
        wmax = 2;
        break;
    case 2:
        nl = p->rows / 2 + 1;
        wmin = 1;
        wmax = 3;
        break;
    default:
        nl = p->rows;
        wmin = p->cols;
        wmax = p->cols;
        break; /* fill */
    }
    if (nl > p->rows) nl = p->rows;
    p->first_row = density == EX_PAGE_MAX_DENSITY ? 0 : ex_rng_int(r, 0, p->rows - nl);
    block_dy = ex_rng_int(r, 0, 1);
    for (li = 0; li < nl; li++) {
        int target_words = ex_rng_int(r, wmin, wmax), w, line_len = 0;
        int sep = li > 0 ? 1 : 0; /* the '\n' before this line */
        int start = p->len + sep;
        for (w = 0; w < target_words; w++) {
            char tok[16];
            int placed = 0, tries;
            for (tries = 0; tries < 8 && !placed; tries++) {
                int room = p->cols - line_len - (line_len > 0 ? 1 : 0);
                int budget = max_chars - p->len - (line_len > 0 ? 1 : sep);
                int lim = room < budget ? room : budget, L;
                if (lim > word_len_max) lim = word_len_max;
                if (lim < 1) break;
                L = ex__page_token(r, lim, tok);
                if (L < 1) break;
                if (line_len == 0 && sep)
                    p->text[p->len++] = '\n';
                else if (line_len > 0)
                    p->text[p->len++] = ' ';
                memcpy(p->text + p->len, tok, (size_t)L);
                p->len += L;
                line_len += (line_len > 0 ? 1 : 0) + L;
                placed = 1;
            }
            if (!placed) break;
        }
        if (line_len == 0) break; /* the cap is reached */
        p->line_start[li] = start;
        p->line_len[li] = line_len;
        p->line_dx[li] = ex_rng_int(r, 0, 1);
        p->line_dy[li] = block_dy; /* one shift for all lines: lines never touch */
        p->n_lines = li + 1;
    }
    p->text[p->len] = '\0';
    base = 0.80f + 0.18f * ex_rng_float(r);
    for (k = 0; k < 3; k++) p->paper[k] = ex__clamp01(base + 0.06f * (ex_rng_float(r) - 0.5f));
    base = 0.03f + 0.17f * ex_rng_float(r);
    for (k = 0; k < 3; k++) p->ink[k] = ex__clamp01(base + 0.08f * (ex_rng_float(r) - 0.5f));
    p->noise = 0.015f + 0.035f * ex_rng_float(r);
    p->noise_seed = ex_rng_u64(r);
    return 0;
}

EX_FN int ex_page_generate(ex_rng *r, int W, int H, int density, ex_page *out) {
    return ex_page_generate_ex(r, W, H, density, 0, out);
}

/* Page number `index` of the split whose seed base is `seed_base` (default cap). The density
 * enters the hash, so the same index at two densities gives unrelated pages. */
EX_FN int ex_page_from_index(uint64_t seed_base, uint64_t index, int W, int H, int density,
                             ex_page *out) {
    ex_rng r;
    ex_rng_seed(&r,
                ex_hash64(seed_base ^ (0x5851F42D4C957F2Dull * (uint64_t)(density + 1)), index));
    return ex_page_generate(&r, W, H, density, out);
}

/* Renders the page into img (W*H*3 floats). */
EX_FN void ex_page_render(const ex_page *p, float *img) {
    size_t i, n = (size_t)p->W * (size_t)p->H;
    int li, c;
    for (i = 0; i < n; i++) {
        img[3 * i + 0] = p->paper[0];
        img[3 * i + 1] = p->paper[1];
        img[3 * i + 2] = p->paper[2];
    }
    for (li = 0; li < p->n_lines; li++) {
        int x = p->ox + p->line_dx[li];
        int y = p->oy + (p->first_row + li) * EX_CELL_H + p->line_dy[li];
        for (c = 0; c < p->line_len[li]; c++)
            ex_draw_char(img, p->W, p->H, x + c * EX_CELL_W, y,
                         (unsigned char)p->text[p->line_start[li] + c], p->ink, 1);
    }
    ex_add_noise(img, p->W, p->H, p->noise, p->noise_seed);
}

/* ======================================================================================
 * 5. Images: writers, upscaling, rectangles, grids
 * ==================================================================================== */

/* Binary PPM (P6). Returns 0, or nonzero on bad arguments or an I/O error. */
EX_FN int ex_write_ppm(const char *path, const float *img, int W, int H) {
    FILE *f;
    size_t i, n;
    int err = 0;
    if (!path || !img || W <= 0 || H <= 0) return 1;
    f = fopen(path, "wb");
    if (!f) return 2;
    n = (size_t)W * (size_t)H * 3;
    if (fprintf(f, "P6\n%d %d\n255\n", W, H) < 0) err = 3;
    for (i = 0; i < n && !err; i++)
        if (fputc(ex_float_to_u8(img[i]), f) == EOF) err = 3;
    if (fclose(f) != 0 && !err) err = 3;
    return err;
}

/* CRC-32 (IEEE, reflected polynomial 0xEDB88320) as PNG uses it; pass 0 to start. */
EX_FN uint32_t ex_crc32(uint32_t crc, const unsigned char *data, size_t n) {
    uint32_t table[256];
    uint32_t c;
    size_t i;
    int k;
    for (i = 0; i < 256; i++) {
        c = (uint32_t)i;
        for (k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    crc = ~crc;
    for (i = 0; i < n; i++) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

/* Adler-32 as zlib uses it; pass 1 to start. */
EX_FN uint32_t ex_adler32(uint32_t adler, const unsigned char *data, size_t n) {
    uint32_t a = adler & 0xFFFFu, b = adler >> 16;
    size_t i = 0;
    while (i < n) {
        size_t chunk = n - i < 5552 ? n - i : 5552; /* no overflow before the modulo */
        size_t end = i + chunk;
        for (; i < end; i++) {
            a += data[i];
            b += a;
        }
        a %= 65521u;
        b %= 65521u;
    }
    return (b << 16) | a;
}

EX_FN void ex__put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Encodes img as an 8-bit RGB PNG in memory: filter 0 on every row, zlib stream of stored
 * (uncompressed) deflate blocks. Returns a malloc'd buffer (free() it) and its length in
 * *out_len, or NULL on bad arguments / out of memory. */
EX_FN unsigned char *ex_png_encode(const float *img, int W, int H, size_t *out_len) {
    static const unsigned char sig[8] = { 137, 80, 78, 71, 13, 10, 26, 10 };
    size_t row, raw_len, n_blocks, z_len, total, i, pos, off;
    unsigned char *png, *raw, *z;
    int x, y;
    if (out_len) *out_len = 0;
    if (!img || !out_len || W <= 0 || H <= 0 || W > 32768 || H > 32768) return NULL;
    row = 1 + 3 * (size_t)W;
    raw_len = row * (size_t)H;
    n_blocks = (raw_len + 65534) / 65535;
    z_len = 2 + raw_len + 5 * n_blocks + 4;
    if (z_len > 0x7FFFFFFFu) return NULL; /* a PNG chunk is at most 2^31-1 bytes */
    total = 8 + (12 + 13) + (12 + z_len) + 12;
    png = (unsigned char *)malloc(total);
    raw = (unsigned char *)malloc(raw_len);
    if (!png || !raw) {
        free(png);
        free(raw);
        return NULL;
    }
    for (y = 0; y < H; y++) {
        unsigned char *r = raw + (size_t)y * row;
        const float *src = img + (size_t)y * (size_t)W * 3;
        r[0] = 0; /* filter type None */
        for (x = 0; x < 3 * W; x++) r[1 + x] = ex_float_to_u8(src[x]);
    }
    memcpy(png, sig, 8);
    pos = 8;
    /* IHDR */
    ex__put_be32(png + pos, 13);
    memcpy(png + pos + 4, "IHDR", 4);
    ex__put_be32(png + pos + 8, (uint32_t)W);
    ex__put_be32(png + pos + 12, (uint32_t)H);
    png[pos + 16] = 8; /* bit depth */
    png[pos + 17] = 2; /* colour type RGB */
    png[pos + 18] = 0; /* compression: deflate */
    png[pos + 19] = 0; /* filter method 0 */
    png[pos + 20] = 0; /* no interlace */
    ex__put_be32(png + pos + 21, ex_crc32(0, png + pos + 4, 17));
    pos += 25;
    /* IDAT: one chunk holding the whole zlib stream */
    ex__put_be32(png + pos, (uint32_t)z_len);
    memcpy(png + pos + 4, "IDAT", 4);
    z = png + pos + 8;
    z[0] = 0x78; /* CM = 8 (deflate), CINFO = 7 (32K window) */
    z[1] = 0x01; /* FCHECK making 0x7801 a multiple of 31, no dictionary, level 0 */
    i = 2;
    for (off = 0; off < raw_len;) {
        size_t len = raw_len - off < 65535 ? raw_len - off : 65535;
        int last = off + len == raw_len;
        z[i++] = (unsigned char)(last ? 1 : 0); /* BFINAL, BTYPE = 00 (stored), padding */
        z[i++] = (unsigned char)(len & 0xFF);
        z[i++] = (unsigned char)(len >> 8);
        z[i++] = (unsigned char)(~len & 0xFF);
        z[i++] = (unsigned char)((~len >> 8) & 0xFF);
        memcpy(z + i, raw + off, len);
        i += len;
        off += len;
    }
    ex__put_be32(z + i, ex_adler32(1, raw, raw_len));
    ex__put_be32(png + pos + 8 + z_len, ex_crc32(0, png + pos + 4, 4 + z_len));
    pos += 12 + z_len;
    /* IEND */
    ex__put_be32(png + pos, 0);
    memcpy(png + pos + 4, "IEND", 4);
    ex__put_be32(png + pos + 8, ex_crc32(0, png + pos + 4, 4));
    pos += 12;
    free(raw);
    *out_len = pos;
    return png;
}

/* Writes img as a PNG file. Returns 0, or nonzero on bad arguments, out of memory or I/O. */
EX_FN int ex_write_png(const char *path, const float *img, int W, int H) {
    size_t len = 0;
    unsigned char *png;
    FILE *f;
    int err = 0;
    if (!path) return 1;
    png = ex_png_encode(img, W, H, &len);
    if (!png) return 1;
    f = fopen(path, "wb");
    if (!f) {
        free(png);
        return 2;
    }
    if (fwrite(png, 1, len, f) != len) err = 3;
    if (fclose(f) != 0 && !err) err = 3;
    free(png);
    return err;
}

/* Nearest-neighbour upscaling: out is (W*factor) x (H*factor) x 3. */
EX_FN void ex_upscale(const float *img, int W, int H, int factor, float *out) {
    int x, y, c;
    size_t OW;
    if (factor < 1) factor = 1;
    OW = (size_t)W * (size_t)factor;
    for (y = 0; y < H * factor; y++)
        for (x = 0; x < W * factor; x++)
            for (c = 0; c < 3; c++)
                out[((size_t)y * OW + (size_t)x) * 3 + (size_t)c] =
                    img[((size_t)(y / factor) * (size_t)W + (size_t)(x / factor)) * 3 + (size_t)c];
}

/* Outline of a normalized box [x1,y1,x2,y2] (the pixels it covers), `thickness` pixels
 * drawn inwards, clipped to the image. Reversed corners are swapped; NaN draws nothing. */
EX_FN void ex_draw_rect(float *img, int W, int H, const float box[4], const float rgb[3],
                        int thickness) {
    double fx0 = box[0], fy0 = box[1], fx1 = box[2], fy1 = box[3], t;
    int x0, y0, x1, y1, x, y;
    if (!(fx0 == fx0 && fy0 == fy0 && fx1 == fx1 && fy1 == fy1)) return;
    if (fx0 > fx1) {
        t = fx0;
        fx0 = fx1;
        fx1 = t;
    }
    if (fy0 > fy1) {
        t = fy0;
        fy0 = fy1;
        fy1 = t;
    }
    if (fx1 < 0 || fy1 < 0 || fx0 > 1 || fy0 > 1) return;
    if (fx0 < 0) fx0 = 0;
    if (fy0 < 0) fy0 = 0;
    if (fx1 > 1) fx1 = 1;
    if (fy1 > 1) fy1 = 1;
    if (thickness < 1) thickness = 1;
    x0 = (int)floor(fx0 * W + 0.5);
    y0 = (int)floor(fy0 * H + 0.5);
    x1 = (int)floor(fx1 * W + 0.5) - 1;
    y1 = (int)floor(fy1 * H + 0.5) - 1;
    if (x1 < x0) x1 = x0;
    if (y1 < y0) y1 = y0;
    if (x1 >= W) x1 = W - 1;
    if (y1 >= H) y1 = H - 1;
    for (y = y0; y <= y1; y++)
        for (x = x0; x <= x1; x++) {
            if (x - x0 < thickness || x1 - x < thickness || y - y0 < thickness ||
                y1 - y < thickness) {
                float *p = img + ((size_t)y * (size_t)W + (size_t)x) * 3;
                p[0] = rgb[0];
                p[1] = rgb[1];
                p[2] = rgb[2];
            }
        }
}

/* Layout of an image grid: tiles left to right, top to bottom, each zoomed, with
 * label_lines lines of text under it ('\n' separates lines; text is clipped to the tile). */
typedef struct ex_grid {
    int cols;        /* tiles per row */
    int margin;      /* pixels around and between tiles */
    int zoom;        /* nearest-neighbour zoom of each tile */
    int label_lines; /* text lines reserved under each tile (0: no labels) */
    int label_scale; /* font scale of the labels */
    float bg[3];     /* canvas colour */
    float fg[3];     /* label colour */
} ex_grid;

EX_FN ex_grid ex_grid_default(void) {
    ex_grid g;
    g.cols = 4;
    g.margin = 6;
    g.zoom = 3;
    g.label_lines = 1;
    g.label_scale = 1;
    g.bg[0] = g.bg[1] = g.bg[2] = 1.0f;
    g.fg[0] = g.fg[1] = g.fg[2] = 0.0f;
    return g;
}

EX_FN void ex__grid_norm(const ex_grid *in, int n, ex_grid *g) {
    *g = *in;
    if (g->cols < 1) g->cols = 1;
    if (g->cols > n) g->cols = n;
    if (g->margin < 0) g->margin = 0;
    if (g->zoom < 1) g->zoom = 1;
    if (g->label_lines < 0) g->label_lines = 0;
    if (g->label_scale < 1) g->label_scale = 1;
}

EX_FN int ex__grid_label_h(const ex_grid *g) {
    return g->label_lines > 0 ? g->label_lines * EX_CELL_H * g->label_scale + 2 : 0;
}

/* Canvas size for n tiles of W x H. Returns 0, or nonzero for bad arguments. */
EX_FN int ex_grid_size(const ex_grid *opts, int n, int W, int H, int *out_W, int *out_H) {
    ex_grid g;
    int rows;
    if (!opts || n < 1 || W < 1 || H < 1 || !out_W || !out_H) return 1;
    ex__grid_norm(opts, n, &g);
    rows = (n + g.cols - 1) / g.cols;
    *out_W = g.margin + g.cols * (W * g.zoom + g.margin);
    *out_H = g.margin + rows * (H * g.zoom + ex__grid_label_h(&g) + g.margin);
    return 0;
}

/* Composes n tiles (imgs[i] may be NULL: blank tile; labels or labels[i] may be NULL) into
 * out, sized by ex_grid_size. Returns 0, or nonzero for bad arguments. */
EX_FN int ex_grid_compose(const ex_grid *opts, int n, const float *const *imgs, int W, int H,
                          const char *const *labels, float *out) {
    ex_grid g;
    int OW, OH, i, x, y, c;
    size_t k;
    if (!imgs || !out || ex_grid_size(opts, n, W, H, &OW, &OH) != 0) return 1;
    ex__grid_norm(opts, n, &g);
    for (k = 0; k < (size_t)OW * (size_t)OH; k++)
        for (c = 0; c < 3; c++) out[k * 3 + (size_t)c] = g.bg[c];
    for (i = 0; i < n; i++) {
        int tx = g.margin + (i % g.cols) * (W * g.zoom + g.margin);
        int ty = g.margin + (i / g.cols) * (H * g.zoom + ex__grid_label_h(&g) + g.margin);
        if (imgs[i])
            for (y = 0; y < H * g.zoom; y++)
                for (x = 0; x < W * g.zoom; x++)
                    for (c = 0; c < 3; c++)
                        out[((size_t)(ty + y) * (size_t)OW + (size_t)(tx + x)) * 3 + (size_t)c] =
                            imgs[i][((size_t)(y / g.zoom) * (size_t)W + (size_t)(x / g.zoom)) * 3 +
                                    (size_t)c];
        if (labels && labels[i] && g.label_lines > 0) {
            int max_cols = (W * g.zoom + g.label_scale) / (EX_CELL_W * g.label_scale);
            ex__draw_text_limited(out, OW, OH, tx, ty + H * g.zoom + 2, labels[i], g.fg,
                                  g.label_scale, max_cols, g.label_lines);
        }
    }
    return 0;
}

/* ex_grid_compose straight to a PNG file. Returns 0, or nonzero on any failure. */
EX_FN int ex_grid_write_png(const char *path, const ex_grid *opts, int n, const float *const *imgs,
                            int W, int H, const char *const *labels) {
    int OW, OH, err;
    float *canvas;
    if (ex_grid_size(opts, n, W, H, &OW, &OH) != 0) return 1;
    canvas = (float *)malloc((size_t)OW * (size_t)OH * 3 * sizeof(float));
    if (!canvas) return 1;
    err = ex_grid_compose(opts, n, imgs, W, H, labels, canvas);
    if (!err) err = ex_write_png(path, canvas, OW, OH);
    free(canvas);
    return err;
}

/* ======================================================================================
 * 6. SVG line plots
 *
 * One or more panels side by side, each with a title, axis labels, "nice" ticks, light
 * grid lines, a legend to the right and one coloured line per series (8 colours, then
 * dashed variants). Non-finite points break the line. Series of at most 40 points also get
 * a dot per point. xs == NULL (or xs[i] == NULL) plots y against 0, 1, 2, ...
 * ==================================================================================== */

typedef struct ex_plot_panel {
    const char *title, *xlabel, *ylabel;
    int n_series;
    const char *const *names; /* n_series legend entries (NULL: "series k") */
    const float *const *xs;   /* n_series arrays, or NULL */
    const float *const *ys;   /* n_series arrays */
    const int *counts;        /* points per series */
} ex_plot_panel;

EX_FN void ex__xml_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
            break;
        }
    }
}

/* A 1, 2 or 5 times a power of ten, near range / target. */
EX_FN double ex__nice_step(double range, int target) {
    double raw = range / target, mag, f;
    if (!(raw > 0) || !isfinite(raw)) return 1.0;
    mag = pow(10.0, floor(log10(raw)));
    f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}

/* Axis range [lo,hi] snapped to the step, from the data range (NaN: nothing seen). */
EX_FN void ex__axis_range(double mn, double mx, double *lo, double *hi, double *step) {
    double pad;
    if (!(mn <= mx)) {
        mn = 0;
        mx = 1;
    }
    if (mx - mn <= 1e-12 * (fabs(mn) + fabs(mx)) || mx == mn) {
        pad = fabs(mn) > 0 ? 0.1 * fabs(mn) : 1.0;
        mn -= pad;
        mx += pad;
    }
    *step = ex__nice_step(mx - mn, 5);
    *lo = floor(mn / *step + 1e-9) * *step;
    *hi = ceil(mx / *step - 1e-9) * *step;
    if (*hi <= *lo) *hi = *lo + *step;
}

EX_FN void ex__tick_label(char *buf, size_t cap, double v, double step) {
    int dec = 0;
    if (fabs(v) < step * 1e-6) v = 0; /* no "-0" or 1e-17 */
    if (fabs(v) >= 1e5 || (step < 1e-4 && v != 0)) {
        snprintf(buf, cap, "%.3g", v);
        return;
    }
    if (step < 1) dec = (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(buf, cap, "%.*f", dec, v);
}

#define EX_PANEL_W 560
#define EX_PANEL_H 340

EX_FN void ex__svg_panel(FILE *f, const ex_plot_panel *p, int ox, int oy) {
    static const char *const colors[8] = { "#2565ae", "#e0601b", "#2e9b48", "#c8293c",
                                           "#7b4fc9", "#12939a", "#b58a00", "#5f6670" };
    const int L = 72, T = 36, PW = 330, PH = 240; /* plot area inside the panel */
    double xmn = NAN, xmx = NAN, ymn = NAN, ymx = NAN, xlo, xhi, xst, ylo, yhi, yst, v;
    int s, i, first;
    char buf[64];
    for (s = 0; s < p->n_series; s++) {
        const float *xs = p->xs ? p->xs[s] : NULL;
        const float *ys = p->ys ? p->ys[s] : NULL;
        int n = p->counts ? p->counts[s] : 0;
        if (!ys) continue;
        for (i = 0; i < n; i++) {
            double x = xs ? xs[i] : i, y = ys[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            if (!(x >= xmn)) xmn = x;
            if (!(x <= xmx)) xmx = x;
            if (!(y >= ymn)) ymn = y;
            if (!(y <= ymx)) ymx = y;
        }
    }
    ex__axis_range(xmn, xmx, &xlo, &xhi, &xst);
    ex__axis_range(ymn, ymx, &ylo, &yhi, &yst);
    fprintf(f, "<g transform=\"translate(%d,%d)\">\n", ox, oy);
    if (p->title) {
        fprintf(f,
                "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" "
                "font-weight=\"bold\">",
                L + PW / 2);
        ex__xml_text(f, p->title);
        fputs("</text>\n", f);
    }
    /* grid lines and ticks */
    for (v = xlo; v <= xhi + 0.5 * xst; v += xst) {
        double px = L + (v - xlo) / (xhi - xlo) * PW;
        ex__tick_label(buf, sizeof buf, v, xst);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e6e6e6\"/>\n", px,
                T, px, T + PH);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#333\"/>\n", px,
                T + PH, px, T + PH + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n",
                px, T + PH + 18, buf);
    }
    for (v = ylo; v <= yhi + 0.5 * yst; v += yst) {
        double py = T + PH - (v - ylo) / (yhi - ylo) * PH;
        ex__tick_label(buf, sizeof buf, v, yst);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", L,
                py, L + PW, py);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#333\"/>\n", L - 5,
                py, L, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n",
                L - 8, py + 4, buf);
    }
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n",
            L, T, PW, PH);
    if (p->xlabel) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">", L + PW / 2,
                T + PH + 38);
        ex__xml_text(f, p->xlabel);
        fputs("</text>\n", f);
    }
    if (p->ylabel) {
        fprintf(f,
                "<text transform=\"translate(%d,%d) rotate(-90)\" text-anchor=\"middle\" "
                "font-size=\"13\">",
                18, T + PH / 2);
        ex__xml_text(f, p->ylabel);
        fputs("</text>\n", f);
    }
    /* series */
    for (s = 0; s < p->n_series; s++) {
        const float *xs = p->xs ? p->xs[s] : NULL;
        const float *ys = p->ys ? p->ys[s] : NULL;
        int n = p->counts ? p->counts[s] : 0, ly = T + 8 + 20 * s;
        const char *col = colors[s % 8];
        const char *dash = s >= 8 ? " stroke-dasharray=\"6,3\"" : "";
        if (ys && n > 0) {
            fprintf(f,
                    "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s "
                    "stroke-linejoin=\"round\" d=\"",
                    col, dash);
            first = 1;
            for (i = 0; i < n; i++) {
                double x = xs ? xs[i] : i, y = ys[i];
                if (!isfinite(x) || !isfinite(y)) {
                    first = 1;
                    continue;
                }
                fprintf(f, "%s%.2f %.2f", first ? (i ? " M" : "M") : " L",
                        L + (x - xlo) / (xhi - xlo) * PW, T + PH - (y - ylo) / (yhi - ylo) * PH);
                first = 0;
            }
            fputs("\"/>\n", f);
            if (n <= 40)
                for (i = 0; i < n; i++) {
                    double x = xs ? xs[i] : i, y = ys[i];
                    if (!isfinite(x) || !isfinite(y)) continue;
                    fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
                            L + (x - xlo) / (xhi - xlo) * PW, T + PH - (y - ylo) / (yhi - ylo) * PH,
                            col);
                }
        }
        /* legend entry */
        fprintf(
            f,
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
            L + PW + 14, ly, L + PW + 38, ly, col, dash);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\">", L + PW + 44, ly + 4);
        if (p->names && p->names[s])
            ex__xml_text(f, p->names[s]);
        else
            fprintf(f, "series %d", s + 1);
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
}

/* Writes panels side by side to an open stream. Returns 0, or nonzero on error. */
EX_FN int ex_svg_plot_panels_file(FILE *f, const char *title, int n_panels,
                                  const ex_plot_panel *panels) {
    int i, top = title ? 30 : 0;
    if (!f || n_panels < 1 || !panels) return 1;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\">\n",
            n_panels * EX_PANEL_W, EX_PANEL_H + top, n_panels * EX_PANEL_W, EX_PANEL_H + top);
    fputs("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", f);
    if (title) {
        fprintf(f,
                "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"17\" "
                "font-weight=\"bold\">",
                n_panels * EX_PANEL_W / 2);
        ex__xml_text(f, title);
        fputs("</text>\n", f);
    }
    for (i = 0; i < n_panels; i++) ex__svg_panel(f, &panels[i], i * EX_PANEL_W, top);
    fputs("</svg>\n", f);
    return ferror(f) ? 2 : 0;
}

EX_FN int ex_svg_plot_panels(const char *path, const char *title, int n_panels,
                             const ex_plot_panel *panels) {
    FILE *f;
    int err;
    if (!path) return 1;
    f = fopen(path, "w");
    if (!f) return 2;
    err = ex_svg_plot_panels_file(f, title, n_panels, panels);
    if (fclose(f) != 0 && !err) err = 3;
    return err;
}

/* One panel: n_series lines, series k has counts[k] points (xs[k][i], ys[k][i]). */
EX_FN int ex_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                      int n_series, const char *const *names, const float *const *xs,
                      const float *const *ys, const int *counts) {
    ex_plot_panel p;
    p.title = title;
    p.xlabel = xlabel;
    p.ylabel = ylabel;
    p.n_series = n_series;
    p.names = names;
    p.xs = xs;
    p.ys = ys;
    p.counts = counts;
    return ex_svg_plot_panels(path, NULL, 1, &p);
}

/* ======================================================================================
 * 7. JSON writer
 *
 * Streaming: objects put one member per line, arrays of plain values stay on one line.
 * Numbers use %.6g (ex_json_int for exact integers); NaN and infinities become null.
 * Misuse (a value without a key inside an object, unbalanced ends) sets err, which
 * ex_json_finish returns together with stream errors.
 *     ex_json j; ex_json_init(&j, f); ex_json_object_begin(&j);
 *     ex_json_kv_number(&j, "acc", 0.61); ex_json_object_end(&j); ex_json_finish(&j);
 * ==================================================================================== */

#define EX_JSON_MAX_DEPTH 32

typedef struct ex_json {
    FILE *f;
    int depth;
    int after_key;
    int err;
    int count[EX_JSON_MAX_DEPTH]; /* values written at each depth */
    char kind[EX_JSON_MAX_DEPTH]; /* '{' or '[' */
    char multiline[EX_JSON_MAX_DEPTH];
} ex_json;

EX_FN void ex_json_init(ex_json *j, FILE *f) {
    memset(j, 0, sizeof *j);
    j->f = f;
    if (!f) j->err = 1;
}

EX_FN void ex__json_newline(ex_json *j, int depth) {
    int i;
    fputc('\n', j->f);
    for (i = 0; i < depth; i++) fputs("  ", j->f);
}

/* Separator and indentation before a value. Returns 0 when the value may be written. */
EX_FN int ex__json_pre(ex_json *j, int container) {
    int d = j->depth;
    if (!j->f) return 1;
    if (d == 0) {
        if (j->count[0]++ > 0) fputc('\n', j->f);
        return 0;
    }
    if (j->after_key) {
        j->after_key = 0;
        return 0;
    }
    if (j->kind[d] != '[') {
        j->err = 1; /* a value inside an object needs a key first */
        return 1;
    }
    if (j->count[d] > 0) fputc(',', j->f);
    if (container) j->multiline[d] = 1;
    if (j->multiline[d])
        ex__json_newline(j, d);
    else if (j->count[d] > 0)
        fputc(' ', j->f);
    j->count[d]++;
    return 0;
}

EX_FN void ex__json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", (unsigned)c);
            else
                fputc((int)c, f);
        }
    }
    fputc('"', f);
}

EX_FN void ex__json_open(ex_json *j, char kind) {
    if (ex__json_pre(j, 1)) return;
    fputc(kind, j->f);
    if (j->depth + 1 >= EX_JSON_MAX_DEPTH) {
        j->err = 1;
        return;
    }
    j->depth++;
    j->kind[j->depth] = kind;
    j->count[j->depth] = 0;
    j->multiline[j->depth] = (char)(kind == '{');
}

EX_FN void ex__json_close(ex_json *j, char kind) {
    if (!j->f) return;
    if (j->depth == 0 || j->kind[j->depth] != kind || j->after_key) {
        j->err = 1;
        return;
    }
    if (j->count[j->depth] > 0 && j->multiline[j->depth]) ex__json_newline(j, j->depth - 1);
    fputc(kind == '{' ? '}' : ']', j->f);
    j->depth--;
}

EX_FN void ex_json_object_begin(ex_json *j) { ex__json_open(j, '{'); }
EX_FN void ex_json_object_end(ex_json *j) { ex__json_close(j, '{'); }
EX_FN void ex_json_array_begin(ex_json *j) { ex__json_open(j, '['); }
EX_FN void ex_json_array_end(ex_json *j) { ex__json_close(j, '['); }

EX_FN void ex_json_key(ex_json *j, const char *key) {
    int d = j->depth;
    if (!j->f) return;
    if (d == 0 || j->kind[d] != '{' || j->after_key || !key) {
        j->err = 1;
        return;
    }
    if (j->count[d] > 0) fputc(',', j->f);
    ex__json_newline(j, d);
    ex__json_str(j->f, key);
    fputs(": ", j->f);
    j->count[d]++;
    j->after_key = 1;
}

EX_FN void ex_json_null(ex_json *j) {
    if (!ex__json_pre(j, 0)) fputs("null", j->f);
}

EX_FN void ex_json_string(ex_json *j, const char *s) {
    if (ex__json_pre(j, 0)) return;
    if (s)
        ex__json_str(j->f, s);
    else
        fputs("null", j->f);
}

EX_FN void ex_json_number(ex_json *j, double v) {
    if (ex__json_pre(j, 0)) return;
    if (isfinite(v))
        fprintf(j->f, "%.6g", v);
    else
        fputs("null", j->f);
}

EX_FN void ex_json_int(ex_json *j, long long v) {
    if (!ex__json_pre(j, 0)) fprintf(j->f, "%lld", v);
}

EX_FN void ex_json_bool(ex_json *j, int v) {
    if (!ex__json_pre(j, 0)) fputs(v ? "true" : "false", j->f);
}

EX_FN void ex_json_kv_string(ex_json *j, const char *k, const char *s) {
    ex_json_key(j, k);
    ex_json_string(j, s);
}
EX_FN void ex_json_kv_number(ex_json *j, const char *k, double v) {
    ex_json_key(j, k);
    ex_json_number(j, v);
}
EX_FN void ex_json_kv_int(ex_json *j, const char *k, long long v) {
    ex_json_key(j, k);
    ex_json_int(j, v);
}
EX_FN void ex_json_kv_bool(ex_json *j, const char *k, int v) {
    ex_json_key(j, k);
    ex_json_bool(j, v);
}

/* An array of n floats as the value of key k (k == NULL: a plain value, e.g. inside an array). */
EX_FN void ex_json_kv_floats(ex_json *j, const char *k, const float *v, int n) {
    int i;
    if (k) ex_json_key(j, k);
    ex_json_array_begin(j);
    for (i = 0; i < n; i++) ex_json_number(j, v[i]);
    ex_json_array_end(j);
}

/* Ends the document with a newline. Returns 0 if everything was balanced and written. */
EX_FN int ex_json_finish(ex_json *j) {
    if (!j->f) return 1;
    if (j->depth != 0 || j->after_key) j->err = 1;
    fputc('\n', j->f);
    if (ferror(j->f)) j->err = 2;
    return j->err;
}

/* ======================================================================================
 * 8. Command line: a table of options, "--name value" or "--name=value"
 *
 * Each entry names an option, says what it is for (printed by --help), its kind and where its
 * value goes: 'i' an int, 'd' a double (both within [lo, hi]), 's' a string (argv's own).
 * Options not given keep what the destination held; given twice, the last one wins.
 * ==================================================================================== */

typedef struct ex_option {
    const char *name, *help;
    char kind; /* 'i' int, 'd' double, 's' string */
    void *dst;
    double lo, hi;
} ex_option;

/* Parses argv[1..argc) against the n options of spec. Returns 0, or 1 after printing the
 * usage line, description and options for --help or -h, or -1 after printing what is wrong
 * (an unknown option, a missing value, a value that is not a number or out of range). */
EX_FN int ex_options_parse(int argc, char **argv, const ex_option *spec, size_t n,
                           const char *description) {
    size_t k;
    int i;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL, *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            printf("usage: %s [options]\n\n%s\n\n", argv[0], description);
            for (k = 0; k < n; k++) printf("  %-15s %s\n", spec[k].name, spec[k].help);
            return 1;
        }
        for (k = 0; k < n; k++)
            if (strlen(spec[k].name) == name_len && strncmp(arg, spec[k].name, name_len) == 0)
                break;
        if (k == n) {
            fprintf(stderr, "unknown option %s (see --help)\n", arg);
            return -1;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(stderr, "option %s needs a value\n", arg);
            return -1;
        }
        if (spec[k].kind == 's') {
            *(const char **)spec[k].dst = val;
        } else {
            char *end;
            double v = strtod(val, &end);
            if (*val == '\0' || *end != '\0' || !(v >= spec[k].lo && v <= spec[k].hi) ||
                (spec[k].kind == 'i' && v != floor(v))) {
                fprintf(stderr, "bad value \"%s\" for %s (expected %s in [%g, %g])\n", val,
                        spec[k].name, spec[k].kind == 'i' ? "an integer" : "a number", spec[k].lo,
                        spec[k].hi);
                return -1;
            }
            if (spec[k].kind == 'i')
                *(int *)spec[k].dst = (int)v;
            else
                *(double *)spec[k].dst = v;
        }
    }
    return 0;
}

#endif /* PERPO_EXAMPLES_COMMON_H */
