/* examples/image.h - float RGB images out to files and pictures: PPM and PNG writers (with
 * the CRC-32 and Adler-32 the PNG needs), nearest-neighbour upscaling, box outlines and
 * labelled image grids. Part of the example helpers: include examples/common.h (grid labels
 * are drawn with font.h).
 */
#ifndef PERPO_EXAMPLES_IMAGE_H
#define PERPO_EXAMPLES_IMAGE_H

/* Float in [0,1] to a byte, rounding; NaN becomes 0. */
EX_FN unsigned char ex_float_to_u8(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 1.0f) return 255;
    return (unsigned char)(v * 255.0f + 0.5f);
}

/* ======================================================================================
 * Images: writers, upscaling, rectangles, grids
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

#endif /* PERPO_EXAMPLES_IMAGE_H */
