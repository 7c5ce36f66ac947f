/* examples/synth.h - the synthetic data of the examples: a seeded RNG, grounding scenes
 * ("red circle" -> "[0.12,0.05,0.40,0.33]") and dense-OCR pages with their transcription.
 * Part of the example helpers: include examples/common.h, which includes this after the
 * shared definitions and font.h (pages are drawn with its glyphs).
 *
 *   1. RNG     ex_rng (xoshiro256** seeded by splitmix64), ex_hash64 for (base, index)
 *   2. Scenes  synthetic grounding images: 2 to 4 shapes, one named by colour and kind
 *   3. Pages   synthetic dense-OCR images at density 0..3 with their transcription
 *
 * Train / validation / test splits: ex_scene_from_index and ex_page_from_index seed each
 * sample from a hash of (seed_base, index), so samples are independent of each other and of
 * the order they are made in; give each split its own seed_base.
 */
#ifndef PERPO_EXAMPLES_SYNTH_H
#define PERPO_EXAMPLES_SYNTH_H

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

/* Random placement of an object of the given kind and colour, lo..hi px at 64x64, that does
 * not collide with the first n_placed objects. Returns 0 on success. */
EX_FN int ex__scene_place(ex_rng *r, ex_scene *s, int n_placed, int kind, int color, int lo,
                          int hi64) {
    double scale = (s->W < s->H ? s->W : s->H) / 64.0;
    int smin = (int)(lo * scale + 0.5), smax = (int)(hi64 * scale + 0.5), attempt, i, k;
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

/* Draws a random scene of size W x H whose objects are lo..hi px at 64x64 (scaled with
 * min(W,H)/64; at least 6 px): ex_scene_generate's are 10..28, and a test of how a model carries
 * over to objects it never saw takes smaller ones. Returns 0, or nonzero for unsupported
 * arguments. */
EX_FN int ex_scene_generate_sized(ex_rng *r, int W, int H, int lo, int hi, ex_scene *out) {
    int kinds[EX_SCENE_MAX_OBJECTS], colors[EX_SCENE_MAX_OBJECTS];
    int n, i, k, tk, tc, placed;
    float base;
    if (!r || !out || W < EX_SCENE_MIN_SIZE || H < EX_SCENE_MIN_SIZE || W > EX_SCENE_MAX_SIZE ||
        H > EX_SCENE_MAX_SIZE || lo < 1 || hi < lo || hi > 28)
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
        if (ex__scene_place(r, out, placed, kinds[placed], colors[placed], lo, hi) != 0) break;
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

/* Draws a random scene of size W x H. Returns 0, or nonzero for unsupported arguments. */
EX_FN int ex_scene_generate(ex_rng *r, int W, int H, ex_scene *out) {
    return ex_scene_generate_sized(r, W, H, 10, 28, out);
}

/* Scene number `index` of the split whose seed base is `seed_base`, objects lo..hi px. */
EX_FN int ex_scene_from_index_sized(uint64_t seed_base, uint64_t index, int W, int H, int lo,
                                    int hi, ex_scene *out) {
    ex_rng r;
    ex_rng_seed(&r, ex_hash64(seed_base, index));
    return ex_scene_generate_sized(&r, W, H, lo, hi, out);
}

/* Scene number `index` of the split whose seed base is `seed_base`. */
EX_FN int ex_scene_from_index(uint64_t seed_base, uint64_t index, int W, int H, ex_scene *out) {
    return ex_scene_from_index_sized(seed_base, index, W, H, 10, 28, out);
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
 * 3. Dense-OCR pages
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

#endif /* PERPO_EXAMPLES_SYNTH_H */
