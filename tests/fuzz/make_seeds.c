/* Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (run from the
 * repository root; the committed files came from this program):
 *   cc -std=c99 -I. -o build/make_seeds tests/fuzz/make_seeds.c -lm && ./build/make_seeds
 * Checkpoints are real ones saved by perpo_checkpoint_save from tiny configs (10-30 KB: the
 * 260-token embedding and head dominate), one with the optimizer state. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <stdio.h>
#include <string.h>

static int seed_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[256];
    FILE *f;
    int ok;
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); return 0; }
    ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    return ok;
}
#define SEED(dir, name, lit) seed_file(dir, name, lit, sizeof(lit) - 1)

static int seed_model(const char *name, const perpo_config *c, uint64_t seed, unsigned flags) {
    char path[256];
    perpo_model *m = NULL;
    perpo_status st;
    snprintf(path, sizeof path, "tests/fuzz/corpus/checkpoint/%s", name);
    if ((st = perpo_model_create(&m, c, seed)) != PERPO_OK || (st = perpo_checkpoint_save(m, path, flags)) != PERPO_OK) {
        fprintf(stderr, "%s: %s\n", name, perpo_status_string(st));
        perpo_model_free(m);
        return 0;
    }
    perpo_model_free(m);
    return 1;
}

int main(void) {
    perpo_config c = perpo_config_default();
    int ok = 1;
    /* checkpoints: the smallest useful config (4x4 grey, one patch, width 4, no vision block)
       and the 8x8 RGB config of the fuzzing notes */
    c.image_h = c.image_w = 4; c.channels = 1; c.patch_h = c.patch_w = 4; c.d_model = 4; c.n_heads = 1;
    c.n_vis_layers = 0; c.n_dec_layers = 1; c.mlp_mult = 1; c.max_text = 4; c.max_batch = 1;
    ok &= seed_model("tiny_4x4_d4.ckpt", &c, 1, 0);
    ok &= seed_model("tiny_4x4_d4_optimizer.ckpt", &c, 4, PERPO_CKPT_OPTIMIZER);
    c.image_h = c.image_w = 8; c.channels = 3; c.patch_h = c.patch_w = 4; c.d_model = 8; c.n_heads = 1;
    c.n_vis_layers = 1; c.n_dec_layers = 1; c.mlp_mult = 1; c.max_text = 4; c.max_batch = 1;
    ok &= seed_model("tiny_8x8_d8.ckpt", &c, 2, 0);
    ok &= SEED("checkpoint", "magic_only", "PERPOCKP");

    ok &= SEED("box", "normalized", "The box is [0.12, 0.05, 0.40, 0.33].");
    ok &= SEED("box", "pixels", "[10,20,30,40]");
    ok &= SEED("box", "junk_then_box", "[[1,2] [1,2,3, [0.5,0.5,0.6,0.6] [1,1,1,1]");
    ok &= SEED("box", "long_fraction", "[0.1000000000000000001,0.2,0.3,0.4]");
    ok &= SEED("box", "spaces", "[ 0.1\t,\n0.2 ,\r0.3,0.4 ]");

    ok &= SEED("ocr", "equal", "the quick brown fox\xffthe quick brown fox");
    ok &= SEED("ocr", "differ", "the quick brown fox jumps\xffthe quick red fox jumped over");
    ok &= SEED("ocr", "empty_ref", "some words here\xff");
    ok &= SEED("ocr", "repeats", "a a a a b b a a\xff" "a b a b a b a b a");
    ok &= SEED("ocr", "utf8", "\xe6\xa1\x86 \xe5\xad\x97 x\xff\xe6\xa1\x86 y");

    ok &= SEED("pnm", "p5_2x2", "P5\n2 2\n255\n\x00\x40\x80\xff");
    ok &= SEED("pnm", "p6_2x1_comments", "P6\n# comment\n2 1 # more\n15\n\x01\x02\x03\x0f\x0e\x0d");
    ok &= SEED("pnm", "p5_comment_after_maxval", "P5 1 1 200#c\n\xc8");
    ok &= SEED("pnm", "p6_3x3", "P6 3 3 255\n"
               "\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf0\x01\x02\x03"
               "\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c");
    ok &= SEED("pnm", "p5_truncated", "P5 4 4 255\n\x01\x02");

    ok &= SEED("tsv", "basic", "# image\tprompt\tanswer\nimg/a.ppm\twhere?\t[1,2,3,4]\nb.pgm\t\ttext\n");
    ok &= SEED("tsv", "crlf_bom", "\xef\xbb\xbfimg/a.ppm\tq\ta\r\n\r\n#c\r\nc.ppm\tq2\ta2");
    ok &= SEED("tsv", "bad_fields", "a\tb\tc\n\nx\ty\n");
    ok &= SEED("tsv", "blank_tabs", "  \t \n\t\t\nz\tq\ta\n");
    if (!ok) return 1;
    printf("seed corpora written to tests/fuzz/corpus/\n");
    return 0;
}
