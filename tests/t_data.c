/* Bring your own data: PGM/PPM images (valid files with comments, exact pixel values, a table
 * of malformed ones, files on disk) and the TSV manifest (comments, CRLF, blank lines, errors
 * with their exact line number, the size limits). Every malformed input is parsed from a heap
 * copy of exactly its length, so a sanitizer build catches any read past the end.
 * Files are written to the current directory and removed. Uses ex_write_ppm from
 * examples/common.h (included by tests/main.c). */
#include <limits.h>
#include <stdlib.h>
#include "test.h"

#define TD_S(lit)   lit, sizeof(lit) - 1 /* literal with its exact length (embedded NULs count) */
#define TD_SENTINEL (-7.0f)

/* Parses a heap copy of exactly len bytes (no slack for an over-read to hide in). */
static perpo_status td_parse(const char *bytes, size_t len, int w, int h, int ch, float *out,
                             char *err, size_t cap) {
    unsigned char *copy = (unsigned char *)malloc(len ? len : 1);
    perpo_status st;
    if (!copy) return PERPO_ERR_NOMEM;
    if (len) memcpy(copy, bytes, len);
    st = perpo_image_parse_pnm(len ? copy : NULL, len, w, h, ch, out, err, cap);
    free(copy);
    return st;
}

static int td_write(const char *path, const char *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(bytes, 1, len, f) == len;
    return (fclose(f) == 0) && ok;
}

/* ---- images: valid ---- */
static void td_pnm_valid(perpo_test *t) {
    /* P5, maxval 255, comments after the magic and between fields, CR LF and TAB as spaces */
    static const char pgm[] = "P5\n# made by hand\n# two comment lines\n3\t# width\r\n2 255\n"
                              "\x00\x01\x80\xfe\xff\x10";
    /* P6, maxval 15, a comment glued to the height, one space before the raster */
    static const char ppm[] = "P6 2#c\n1 15 \x00\x07\x0f\x01\x02\x03";
    /* a comment right after the maxval: its LF is the one whitespace before the raster */
    static const char pgm_cmt[] = "P5 1 1 200#last\n\xc8";
    static const unsigned char grey[6] = { 0, 1, 128, 254, 255, 16 };
    float out[3 * 2 * 3], g1[6];
    char err[128];
    int i;
    for (i = 0; i < 18; i++) out[i] = TD_SENTINEL;
    CHECK_OK(td_parse(pgm, sizeof pgm - 1, 3, 2, 3, out, err, sizeof err));
    CHECK_MSG(err[0] == 0, "err '%s' after success", err);
    for (i = 0; i < 6; i++) { /* grey replicated to the 3 channels, exactly v / 255 */
        float want = (float)grey[i] / 255.0f;
        CHECK_MSG(out[3 * i] == want && out[3 * i + 1] == want && out[3 * i + 2] == want,
                  "pixel %d = %g %g %g, want %g", i, out[3 * i], out[3 * i + 1], out[3 * i + 2],
                  want);
    }
    CHECK(out[0] == 0.0f && out[12] == 1.0f);
    CHECK_OK(td_parse(pgm, sizeof pgm - 1, 3, 2, 1, g1, err, sizeof err)); /* 1 channel: as is */
    for (i = 0; i < 6; i++) CHECK(g1[i] == (float)grey[i] / 255.0f);

    for (i = 0; i < 6; i++) out[i] = TD_SENTINEL;
    CHECK_OK(td_parse(ppm, sizeof ppm - 1, 2, 1, 3, out, err, sizeof err));
    CHECK(out[0] == 0.0f && out[1] == 7.0f / 15.0f && out[2] == 1.0f);
    CHECK(out[3] == 1.0f / 15.0f && out[4] == 2.0f / 15.0f && out[5] == 3.0f / 15.0f);

    CHECK_OK(td_parse(pgm_cmt, sizeof pgm_cmt - 1, 1, 1, 1, g1, err, sizeof err));
    CHECK(g1[0] == 1.0f);
    /* err may be NULL, or tiny */
    CHECK_OK(td_parse(ppm, sizeof ppm - 1, 2, 1, 3, out, NULL, 0));
    CHECK(td_parse("P5 2 2 0\n", 9, 2, 2, 3, out, err, 1) == PERPO_ERR_FORMAT && err[0] == 0);
    CHECK(td_parse("P5 2 2 0\n", 9, 2, 2, 3, out, err, 6) == PERPO_ERR_FORMAT &&
          strcmp(err, "maxva") == 0);
}

/* ---- images: malformed ---- */
typedef struct {
    const char *bytes;
    size_t len;
    int w, h, ch;
    perpo_status st;
    const char *msg; /* expected substring of err */
} td_pnm_case;

static const td_pnm_case td_pnm_bad[] = {
    { TD_S(""), 2, 2, 3, PERPO_ERR_FORMAT, "empty input" },
    { TD_S("X5 2 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "bad magic" },
    { TD_S("P"), 2, 2, 3, PERPO_ERR_FORMAT, "bad magic" },
    { TD_S("P55 2 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "bad magic" },
    { TD_S("\xef\xbb\xbfP5 2 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "bad magic" },
    { TD_S("P3\n2 2\n255\n1 2 3 4 5 6 7 8 9 10 11 12\n"), 2, 2, 3, PERPO_ERR_FORMAT,
      "unsupported format P3" },
    { TD_S("P4\n8 1\n\xff"), 8, 1, 3, PERPO_ERR_FORMAT, "unsupported format P4" },
    { TD_S("P7\nWIDTH 2\n"), 2, 2, 3, PERPO_ERR_FORMAT, "unsupported format P7" },
    { TD_S("P5"), 2, 2, 3, PERPO_ERR_FORMAT, "truncated header (no width)" },
    { TD_S("P5 2"), 2, 2, 3, PERPO_ERR_FORMAT, "truncated header (no height)" },
    { TD_S("P5 2 2"), 2, 2, 3, PERPO_ERR_FORMAT, "truncated header (no maxval)" },
    { TD_S("P5 2 2 255"), 2, 2, 3, PERPO_ERR_FORMAT, "truncated header (nothing after maxval)" },
    { TD_S("P5 # a comment that never ends"), 2, 2, 3, PERPO_ERR_FORMAT,
      "truncated header (no width)" },
    { TD_S("P5 2 2 255#no end"), 2, 2, 3, PERPO_ERR_FORMAT,
      "truncated header (nothing after maxval)" },
    { TD_S("P5 0 2 255\n"), 2, 2, 3, PERPO_ERR_FORMAT, "width 0" },
    { TD_S("P5 2 0 255\n"), 2, 2, 3, PERPO_ERR_FORMAT, "height 0" },
    { TD_S("P5 1000000000 1000000000 255\n"), 2, 2, 3, PERPO_ERR_FORMAT,
      "image is 1000000000x1000000000, expected 2x2" },
    { TD_S("P6 2147483647 2147483647 255\n\1\2\3"), 2, 2, 3, PERPO_ERR_FORMAT,
      "image is 2147483647x2147483647" },
    { TD_S("P5 99999999999999999999999 2 255\n"), 2, 2, 3, PERPO_ERR_FORMAT, "width too large" },
    { TD_S("P5 2 2147483648 255\n"), 2, 2, 3, PERPO_ERR_FORMAT, "height too large" },
    { TD_S("P5 3 2 255\n\1\2\3\4\5\6"), 2, 2, 3, PERPO_ERR_FORMAT, "image is 3x2, expected 2x2" },
    { TD_S("P5 2 2 0\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "maxval 0 (must be 1..255)" },
    { TD_S("P5 2 2 256\n\1\2\3\4\5\6\7\10"), 2, 2, 3, PERPO_ERR_FORMAT,
      "maxval 256: 16-bit samples are not supported" },
    { TD_S("P5 2 2 65535\n\1\2\3\4\5\6\7\10"), 2, 2, 3, PERPO_ERR_FORMAT, "maxval 65535: 16-bit" },
    { TD_S("P5 2 2 70000\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "maxval 70000 (must be 1..255)" },
    { TD_S("P5 2 2 99999999999999\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "maxval too large" },
    { TD_S("P5 -2 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "width: expected a decimal number, found '-'" },
    { TD_S("P5 2 +2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "height: expected a decimal number, found '+'" },
    { TD_S("P5 2 2 -1\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "maxval: expected a decimal number, found '-'" },
    { TD_S("P5 two 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "width: expected a decimal number, found 't'" },
    { TD_S("P5 2x2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "height: expected a decimal number, found 'x'" },
    { TD_S("P5 0x2 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT, "width 0" },
    { TD_S("P5 2\0 2 255\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "height: expected a decimal number, found \\x00" },
    { TD_S("P5 2 2 2.5\n\1\2\3\4"), 2, 2, 3, PERPO_ERR_FORMAT,
      "no whitespace after maxval (found '.')" },
    { TD_S("P5 2 2 255\n\1\2\3"), 2, 2, 3, PERPO_ERR_FORMAT,
      "truncated pixel data (need 4 bytes, have 3)" },
    { TD_S("P6 2 2 255\n\1\2\3\4\5\6\7\10\11\12\13"), 2, 2, 3, PERPO_ERR_FORMAT,
      "need 12 bytes, have 11" },
    { TD_S("P5 2 2 255\n"), 2, 2, 3, PERPO_ERR_FORMAT, "need 4 bytes, have 0" },
    /* trailing bytes are refused: a second image, or a newline some writer appended */
    { TD_S("P5 2 2 255\n\1\2\3\4\n"), 2, 2, 3, PERPO_ERR_FORMAT,
      "trailing data after the pixels: 1 bytes" },
    { TD_S("P5 1 1 255\n\1P5 1 1 255\n\2"), 1, 1, 3, PERPO_ERR_FORMAT,
      "trailing data after the pixels: 12 bytes" },
    { TD_S("P5 2 2 15\n\1\20\0\0"), 2, 2, 3, PERPO_ERR_FORMAT,
      "sample 16 at pixel 1 exceeds maxval 15" },
    { TD_S("P6 1 2 1\n\1\1\1\1\1\2"), 1, 2, 3, PERPO_ERR_FORMAT,
      "sample 2 at pixel 1 exceeds maxval 1" },
    { TD_S("P6 2 2 255\n\1\2\3\4\5\6\7\10\11\12\13\14"), 2, 2, 1, PERPO_ERR_FORMAT,
      "colour image (P6) but 1 channel" },
    /* bad arguments */
    { TD_S("P5 2 2 255\n\1\2\3\4"), 0, 2, 3, PERPO_ERR_ARG, "invalid arguments" },
    { TD_S("P5 2 2 255\n\1\2\3\4"), 2, -1, 3, PERPO_ERR_ARG, "invalid arguments" },
    { TD_S("P5 2 2 255\n\1\2\3\4"), 2, 2, 2, PERPO_ERR_ARG, "invalid arguments" },
    { TD_S("P5 2 2 255\n\1\2\3\4"), 2, 2, 4, PERPO_ERR_ARG, "invalid arguments" },
};

static void td_pnm_malformed(perpo_test *t) {
    size_t i, k, n = sizeof td_pnm_bad / sizeof td_pnm_bad[0];
    float out[2 * 2 * 3];
    char err[160];
    CHECK(n >= 20);
    for (i = 0; i < n; i++) {
        const td_pnm_case *c = &td_pnm_bad[i];
        perpo_status st;
        for (k = 0; k < 12; k++) out[k] = TD_SENTINEL;
        memset(err, 'Z', sizeof err);
        st = td_parse(c->bytes, c->len, c->w, c->h, c->ch, out, err, sizeof err);
        CHECK_MSG(st == c->st, "case %d: status %d, want %d (err '%s')", (int)i, (int)st,
                  (int)c->st, err);
        CHECK_MSG(memchr(err, 0, sizeof err) && strstr(err, c->msg) && !strchr(err, '\n'),
                  "case %d: err '%.100s', want it to contain '%s'", (int)i, err, c->msg);
        for (k = 0; k < 12; k++)
            CHECK_MSG(out[k] == TD_SENTINEL, "case %d: out[%d] written", (int)i, (int)k);
    }
    /* a header over 64 KiB: a long comment */
    {
        size_t len = 3 + 70000 + 1 + 9 + 4, pos = 0;
        char *b = (char *)malloc(len);
        if (b) {
            memcpy(b, "P5\n", 3);
            pos = 3;
            memset(b + pos, '#', 70000);
            pos += 70000;
            b[pos++] = '\n';
            memcpy(b + pos, "2 2 255\n", 8);
            pos += 8;
            memcpy(b + pos, "\1\2\3\4", 4);
            pos += 4;
            CHECK(td_parse(b, pos, 2, 2, 3, out, err, sizeof err) == PERPO_ERR_FORMAT);
            CHECK_MSG(strstr(err, "header longer than 65536 bytes") != NULL, "err '%s'", err);
            free(b);
        }
    }
    /* the largest wanted size: FORMAT (or OVERFLOW where size_t is 32 bits), nothing allocated */
    {
        perpo_status st =
            td_parse(TD_S("P5 2 2 255\n\1\2\3\4"), INT_MAX, INT_MAX, 3, out, err, sizeof err);
        CHECK_MSG(st == PERPO_ERR_OVERFLOW ||
                      (st == PERPO_ERR_FORMAT && strstr(err, "expected 2147483647x2147483647")),
                  "status %d err '%s'", (int)st, err);
    }
    /* data NULL with a length, out NULL */
    CHECK(perpo_image_parse_pnm(NULL, 4, 2, 2, 3, out, err, sizeof err) == PERPO_ERR_ARG);
    CHECK(perpo_image_parse_pnm((const unsigned char *)"P5 1 1 255\n\1", 12, 1, 1, 3, NULL, err,
                                sizeof err) == PERPO_ERR_ARG);
}

/* Every prefix of a valid file is an error, never a success or a crash; so is every one-byte
   change of a header byte into a space-free non-digit. */
static void td_pnm_prefixes(perpo_test *t) {
    static const char ok[] = "P6\n# c\n2 2\n255\n\1\2\3\4\5\6\7\10\11\12\13\14";
    size_t len = sizeof ok - 1, n, i;
    float out[12];
    char err[128], buf[64];
    int bad = 0;
    CHECK_OK(td_parse(ok, len, 2, 2, 3, out, err, sizeof err));
    for (n = 0; n < len; n++)
        if (td_parse(ok, n, 2, 2, 3, out, err, sizeof err) != PERPO_ERR_FORMAT) bad++;
    CHECK_MSG(bad == 0, "%d prefixes not refused", bad);
    for (i = 0; i < 15;
         i++) { /* header bytes: 'P','6','\n','#',' ','c','\n','2',' ','2','\n','2','5','5','\n' */
        memcpy(buf, ok, len);
        if (ok[i] == '#' || ok[i] == ' ' || ok[i] == 'c') continue; /* comment bytes may change */
        buf[i] = 'q';
        if (td_parse(buf, len, 2, 2, 3, out, err, sizeof err) != PERPO_ERR_FORMAT) bad++;
    }
    CHECK_MSG(bad == 0, "%d mutated headers not refused", bad);
}

/* ---- images: files ---- */
static void td_pnm_files(perpo_test *t) {
    const char *path = "perpo_t_data_tmp.ppm", *path2 = "perpo_t_data_tmp.pgm";
    float img[4 * 3 * 3], back[4 * 3 * 3];
    char err[256];
    int i;
    for (i = 0; i < 36; i++) img[i] = (float)((i * 37) % 256) / 255.0f;
    /* the examples' writer and this reader agree exactly on 8-bit values */
    CHECK(ex_write_ppm(path, img, 4, 3) == 0);
    CHECK_OK(perpo_image_load_pnm(path, 4, 3, 3, back, err, sizeof err, NULL));
    CHECK_MSG(err[0] == 0, "err '%s'", err);
    for (i = 0; i < 36; i++) CHECK_MSG(back[i] == img[i], "value %d: %g vs %g", i, back[i], img[i]);
    /* wrong size: the message names the file and both sizes */
    CHECK(perpo_image_load_pnm(path, 3, 4, 3, back, err, sizeof err, NULL) == PERPO_ERR_FORMAT);
    CHECK_MSG(strstr(err, path) == err && strstr(err, "image is 4x3, expected 3x4"), "err '%s'",
              err);
    /* trailing data, and a file much longer than any valid one of that size */
    CHECK(td_write(path2, TD_S("P5 2 1 255\n\1\2\n")));
    CHECK(perpo_image_load_pnm(path2, 2, 1, 3, back, err, sizeof err, NULL) == PERPO_ERR_FORMAT);
    CHECK_MSG(strstr(err, "trailing data"), "err '%s'", err);
    {
        size_t big = 200000;
        char *b = (char *)calloc(big, 1);
        if (b) {
            memcpy(b, "P5 2 1 255\n\1\2", 13);
            CHECK(td_write(path2, b, big));
            CHECK(perpo_image_load_pnm(path2, 2, 1, 3, back, err, sizeof err, NULL) ==
                  PERPO_ERR_FORMAT);
            CHECK_MSG(strstr(err, "trailing data"), "err '%s'", err);
            free(b);
        }
    }
    CHECK(td_write(path2, TD_S("P5\n# grey\n2 1\n255\n\x00\xff")));
    CHECK_OK(perpo_image_load_pnm(path2, 2, 1, 1, back, err, sizeof err, NULL));
    CHECK(back[0] == 0.0f && back[1] == 1.0f);
    remove(path);
    remove(path2);
    CHECK(perpo_image_load_pnm(path, 4, 3, 3, back, err, sizeof err, NULL) == PERPO_ERR_IO);
    CHECK_MSG(strstr(err, path) == err && strstr(err, "cannot open"), "err '%s'", err);
    CHECK(perpo_image_load_pnm(NULL, 4, 3, 3, back, err, sizeof err, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_image_load_pnm(path, 0, 3, 3, back, err, sizeof err, NULL) == PERPO_ERR_ARG);
}

/* ---- manifest ---- */
static void td_manifest_valid(perpo_test *t) {
    static const char text[] =
        "\xef\xbb\xbf# image\tprompt\tanswer\r\n" /* 1: BOM + comment (tabs in a comment are fine) */
        "\r\n"                                    /* 2: blank (CRLF) */
        "img/a.ppm\twhere is the cat?\t[1,2,3,4]\r\n" /* 3 */
        "   \t \n"                                    /* 4: only spaces and tabs: blank */
        "#\n"                                         /* 5 */
        "b.pgm\t\tdense text here\n"                  /* 6: empty prompt is fine */
        "\n"                                          /* 7 */
        "c d.ppm\tread it  \t  spaces kept ";         /* 8: no final newline; spaces are data */
    perpo_manifest m;
    char err[128];
    memset(&m, 0xAB, sizeof m);
    CHECK_OK(perpo_manifest_parse(text, sizeof text - 1, &m, err, sizeof err, NULL));
    CHECK_MSG(err[0] == 0, "err '%s'", err);
    CHECK(m.n == 3);
    if (m.n == 3) {
        CHECK(strcmp(m.entries[0].image, "img/a.ppm") == 0 &&
              strcmp(m.entries[0].prompt, "where is the cat?") == 0 &&
              strcmp(m.entries[0].answer, "[1,2,3,4]") == 0 && m.entries[0].line == 3);
        CHECK(strcmp(m.entries[1].image, "b.pgm") == 0 && m.entries[1].prompt[0] == 0 &&
              strcmp(m.entries[1].answer, "dense text here") == 0 && m.entries[1].line == 6);
        CHECK(strcmp(m.entries[2].image, "c d.ppm") == 0 &&
              strcmp(m.entries[2].prompt, "read it  ") == 0 &&
              strcmp(m.entries[2].answer, "  spaces kept ") == 0 && m.entries[2].line == 8);
    }
    perpo_manifest_free(&m);
    CHECK(m.entries == NULL && m.n == 0);
    perpo_manifest_free(&m); /* twice is fine */
    perpo_manifest_free(NULL);
    /* empty text and comments only: zero entries, a success */
    CHECK_OK(perpo_manifest_parse(NULL, 0, &m, err, sizeof err, NULL));
    CHECK(m.n == 0);
    perpo_manifest_free(&m);
    CHECK_OK(perpo_manifest_parse(TD_S("# nothing\n\n"), &m, err, sizeof err, NULL));
    CHECK(m.n == 0);
    perpo_manifest_free(&m);
    /* the copy is the manifest's own: the source may go away */
    {
        char src[] = "x.ppm\tp\ta\n";
        CHECK_OK(perpo_manifest_parse(src, strlen(src), &m, err, sizeof err, NULL));
        memset(src, 'Q', sizeof src - 1);
        CHECK(m.n == 1 && strcmp(m.entries[0].image, "x.ppm") == 0 &&
              strcmp(m.entries[0].answer, "a") == 0);
        perpo_manifest_free(&m);
    }
}

typedef struct {
    const char *text;
    size_t len;
    const char *msg;
} td_tsv_case;
static const td_tsv_case td_tsv_bad[] = {
    { TD_S("a.ppm\tq\n"), "manifest line 1: expected 3 tab-separated fields, found 2" },
    { TD_S("a.ppm\n"), "manifest line 1: expected 3 tab-separated fields, found 1" },
    { TD_S("# c\n\na.ppm\tq\ta\nb.ppm\tq\ta\textra\n"),
      "manifest line 4: expected 3 tab-separated fields, found 4" },
    { TD_S("a.ppm\tq\ta\r\n\r\n#\r\nb.ppm q a\r\n"),
      "manifest line 4: expected 3 tab-separated fields, found 1" },
    { TD_S("a\tb\tc\n\tq\ta\n"), "manifest line 2: empty image path" },
    { TD_S("a\tb\tc\n\n\nx.ppm\tq\t\n"), "manifest line 4: empty answer" },
    { TD_S("a\tb\tc\nx.ppm\tq\t\r\n"), "manifest line 2: empty answer" },
    { TD_S("a\tb\tc\nx.ppm\tq\ta\0b\n"), "manifest line 2: NUL byte at column 10" },
    { TD_S("x.ppm\tq\ra\tb\n"), "manifest line 1: carriage return inside the line (column 8)" },
    { TD_S("a\tb\tc\rd\te\tf\r\n"), "manifest line 1: carriage return inside the line" },
    { TD_S(" # not a comment\tq\n"), "manifest line 1: expected 3 tab-separated fields, found 2" },
    { TD_S("a\tb\tc\n\n\n\n\n\n\n\n\n\nz"),
      "manifest line 11: expected 3 tab-separated fields, found 1" },
};

static void td_manifest_malformed(perpo_test *t) {
    size_t i, n = sizeof td_tsv_bad / sizeof td_tsv_bad[0];
    perpo_manifest m;
    char err[160];
    for (i = 0; i < n; i++) {
        char *copy = (char *)malloc(td_tsv_bad[i].len);
        perpo_status st;
        if (!copy) continue;
        memcpy(copy, td_tsv_bad[i].text, td_tsv_bad[i].len);
        m.entries = (perpo_manifest_entry *)(void *)&m;
        m.n = 99; /* must be emptied */
        st = perpo_manifest_parse(copy, td_tsv_bad[i].len, &m, err, sizeof err, NULL);
        free(copy);
        CHECK_MSG(st == PERPO_ERR_FORMAT, "case %d: status %d", (int)i, (int)st);
        CHECK_MSG(strstr(err, td_tsv_bad[i].msg) == err, "case %d: err '%s', want '%s'", (int)i,
                  err, td_tsv_bad[i].msg);
        CHECK_MSG(m.entries == NULL && m.n == 0, "case %d: manifest not emptied", (int)i);
    }
    /* line length: 65536 bytes is fine (CRLF not counted), 65537 is not */
    {
        size_t L = PERPO_MANIFEST_MAX_LINE, len = 6 + L + 2 + 1 + 6 + L + 1;
        char *b = (char *)malloc(len);
        if (b) {
            size_t p = 0;
            memcpy(b, "ok\tq\ta\n", 7);
            p = 7;
            memset(b + p, 'x', L);
            b[p] = 'i';
            b[p + 1] = '\t';
            b[p + 3] = '\t';
            p += L;
            b[p++] = '\r';
            b[p++] = '\n';
            CHECK_OK(perpo_manifest_parse(b, p, &m, err, sizeof err, NULL));
            CHECK(m.n == 2 && m.entries[1].line == 2 && strlen(m.entries[1].answer) == L - 4);
            perpo_manifest_free(&m);
            memset(b + p, 'y', L + 1);
            b[p + 1] = '\t';
            b[p + 3] = '\t';
            p += L + 1;
            CHECK(perpo_manifest_parse(b, p, &m, err, sizeof err, NULL) == PERPO_ERR_FORMAT);
            CHECK_MSG(strcmp(err, "manifest line 3: longer than 65536 bytes") == 0, "err '%s'",
                      err);
            CHECK(m.n == 0 && m.entries == NULL);
            free(b);
        }
    }
    /* over 1 GiB: refused from the length alone, before the text is read */
    CHECK(perpo_manifest_parse("x", PERPO_MANIFEST_MAX_BYTES + 1, &m, err, sizeof err, NULL) ==
          PERPO_ERR_FORMAT);
    CHECK_MSG(strstr(err, "1 GiB") != NULL, "err '%s'", err);
    CHECK(perpo_manifest_parse(NULL, 3, &m, err, sizeof err, NULL) == PERPO_ERR_ARG);
    CHECK(perpo_manifest_parse("x", 1, NULL, err, sizeof err, NULL) == PERPO_ERR_ARG);
}

static void td_manifest_files(perpo_test *t) {
    const char *path = "perpo_t_data_tmp.tsv";
    perpo_manifest m;
    char err[256];
    FILE *f;
    CHECK(td_write(path,
                   TD_S("# train\r\nimgs/0.ppm\twhere?\tleft\r\nimgs/1.ppm\twhere?\tright\r\n")));
    CHECK_OK(perpo_manifest_load(path, &m, err, sizeof err, NULL));
    CHECK(m.n == 2);
    if (m.n == 2)
        CHECK(strcmp(m.entries[1].image, "imgs/1.ppm") == 0 &&
              strcmp(m.entries[1].answer, "right") == 0 && m.entries[1].line == 3);
    perpo_manifest_free(&m);
    CHECK(td_write(path, TD_S("a\tb\tc\n\nbroken line\n")));
    CHECK(perpo_manifest_load(path, &m, err, sizeof err, NULL) == PERPO_ERR_FORMAT && m.n == 0 &&
          !m.entries);
    CHECK_MSG(strstr(err, path) == err &&
                  strstr(err, ": manifest line 3: expected 3 tab-separated fields, found 1"),
              "err '%s'", err);
    /* over 1 GiB: refused from the file size, without reading it (the file is sparse) */
    f = fopen(path, "wb");
    if (f) {
        int ok = fseek(f, (long)PERPO_MANIFEST_MAX_BYTES, SEEK_SET) == 0 && fputc('x', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        if (ok) {
            CHECK(perpo_manifest_load(path, &m, err, sizeof err, NULL) == PERPO_ERR_FORMAT &&
                  m.n == 0);
            CHECK_MSG(strstr(err, "over the 1 GiB limit") != NULL, "err '%s'", err);
        }
    }
    remove(path);
    CHECK(perpo_manifest_load(path, &m, err, sizeof err, NULL) == PERPO_ERR_IO && m.n == 0 &&
          !m.entries);
    CHECK_MSG(strstr(err, path) == err && strstr(err, "cannot open"), "err '%s'", err);
    CHECK(perpo_manifest_load(NULL, &m, err, sizeof err, NULL) == PERPO_ERR_ARG);
}

const perpo_test_case perpo_tests_data[] = {
    { "PGM/PPM: comments, maxval 255 and 15, exact values, grey to RGB", td_pnm_valid },
    { "PGM/PPM: malformed headers and rasters get FORMAT and a reason", td_pnm_malformed },
    { "PGM/PPM: every prefix and header mutation of a valid file is refused", td_pnm_prefixes },
    { "PGM/PPM: files round-trip ex_write_ppm; wrong size, trailing, missing", td_pnm_files },
    { "manifest: comments, blank lines, CRLF, BOM, line numbers", td_manifest_valid },
    { "manifest: malformed lines report their exact line number; limits", td_manifest_malformed },
    { "manifest: load from a file; errors name the file; 1 GiB limit", td_manifest_files },
    { NULL, NULL }
};
