/* Writes a tiny user dataset of dense-OCR pages for `make test-examples`: DIR/pK.ppm (60 wide x
 * 64 high, the size examples/dense_ocr.c reads) and DIR/train.tsv, DIR/test.tsv with
 * `image<TAB>read<TAB>transcription` lines (newlines of a transcription written as \n).
 *   write_pages DIR N */
#define _POSIX_C_SOURCE 200809L
#include "../examples/common.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    static float img[60 * 64 * 3];
    int n, i, split;
    if (argc != 3 || (n = atoi(argv[2])) < 1) {
        fprintf(stderr, "usage: write_pages DIR N\n");
        return 2;
    }
    for (split = 0; split < 2; split++) {
        char path[1024];
        FILE *f;
        snprintf(path, sizeof path, "%s/%s.tsv", argv[1], split ? "test" : "train");
        if (!(f = fopen(path, "w"))) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
        for (i = 0; i < n; i++) {
            ex_page p;
            const char *c;
            char name[1024];
            if (ex_page_from_index(77 + (uint64_t)split, (uint64_t)i, 60, 64, i % 2, &p) != 0)
                return 1;
            ex_page_render(&p, img);
            snprintf(name, sizeof name, "%s/%c%d.ppm", argv[1], split ? 't' : 'p', i);
            if (ex_write_ppm(name, img, 60, 64) != 0) {
                fprintf(stderr, "cannot write %s\n", name);
                return 1;
            }
            fprintf(f, "%c%d.ppm\tread\t", split ? 't' : 'p', i);
            for (c = p.text; *c; c++) {
                if (*c == '\n')
                    fputs("\\n", f);
                else
                    fputc(*c, f);
            }
            fputc('\n', f);
        }
        if (fclose(f) != 0) return 1;
    }
    return 0;
}
