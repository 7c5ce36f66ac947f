/* libFuzzer target: perpo_model_load on arbitrary bytes. The input is written to a file named
 * by the pid in /tmp and loaded twice: as it is (mostly stopped by the CRC) and with its last 4
 * bytes replaced by the CRC-32 of the rest, so mutations of the header and the parameters reach
 * the code behind the CRC check. A load must fail with IO/FORMAT/NOMEM/OVERFLOW and no model, or
 * succeed with a model whose saved bytes (perpo_checkpoint_save with the input's flags) are the
 * input. Build: tests/fuzz/run.sh. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_path[64], fz_path2[80];

static void fz_check(const char *path, const uint8_t *data, size_t size) {
    perpo_model *m = (perpo_model *)(void *)&m; /* must come back NULL on error */
    perpo_status st = perpo_model_load(&m, path, NULL);
    unsigned flags;
    int step_top;
    if (st != PERPO_OK) {
        if (m != NULL) __builtin_trap();
        if (st != PERPO_ERR_FORMAT && st != PERPO_ERR_NOMEM && st != PERPO_ERR_OVERFLOW && st != PERPO_ERR_IO)
            __builtin_trap();
        return;
    }
    if (!m || !perpo_model_config(m) || perpo_config_validate(perpo_model_config(m)) != PERPO_OK) __builtin_trap();
    /* what loads must save back to the same bytes (with the optimizer state when it had it; the
       loader masks the step to 31 bits, so a step with the top bit set cannot round-trip) */
    flags = size >= 16 ? (unsigned)data[12] | (unsigned)data[13] << 8 : 0;
    step_top = (flags & PERPO_CKPT_OPTIMIZER) && size > 75 + 4 * perpo_model_num_params(m) &&
               (data[75 + 4 * perpo_model_num_params(m)] & 0x80);
    if (perpo_checkpoint_save(m, fz_path2, flags & PERPO_CKPT_OPTIMIZER) == PERPO_OK) {
        FILE *f = step_top ? NULL : fopen(fz_path2, "rb");
        if (f) {
            unsigned char *back = (unsigned char *)malloc(size + 1);
            size_t got = back ? fread(back, 1, size + 1, f) : 0;
            fclose(f);
            if (back && (got != size || memcmp(back, data, size) != 0)) __builtin_trap();
            free(back);
        }
        remove(fz_path2);
    }
    perpo_model_free(m);
}

static int fz_write(const uint8_t *data, size_t size) {
    FILE *f = fopen(fz_path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(data, 1, size, f) == size;
    return (fclose(f) == 0) && ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fz_path[0]) {
        snprintf(fz_path, sizeof fz_path, "/tmp/perpo_fuzz_ckpt_%ld.bin", (long)getpid());
        snprintf(fz_path2, sizeof fz_path2, "/tmp/perpo_fuzz_ckpt_%ld.save.bin", (long)getpid());
    }
    if (!fz_write(data, size)) return 0;
    fz_check(fz_path, data, size);
    if (size >= 4) { /* again with a valid CRC */
        uint8_t *fixed = (uint8_t *)malloc(size);
        uint32_t crc;
        if (fixed) {
            memcpy(fixed, data, size);
            crc = perpo_crc32(0, fixed, size - 4);
            fixed[size - 4] = (uint8_t)crc; fixed[size - 3] = (uint8_t)(crc >> 8);
            fixed[size - 2] = (uint8_t)(crc >> 16); fixed[size - 1] = (uint8_t)(crc >> 24);
            if (fz_write(fixed, size)) fz_check(fz_path, fixed, size);
            free(fixed);
        }
    }
    remove(fz_path);
    return 0;
}
