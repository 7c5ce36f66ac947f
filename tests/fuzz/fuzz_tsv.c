/* libFuzzer target: perpo_manifest_parse on arbitrary bytes. Invariants: success gives entries
 * whose fields hold no TAB, CR, LF or NUL, non-empty image and answer, and strictly increasing
 * 1-based line numbers; failure gives an empty manifest and a "manifest line N:" message.
 * Build: tests/fuzz/run.sh. */
#define PERPO_IMPLEMENTATION
#include "perpo.h"
#include <stdint.h>
#include <string.h>

static void fz_field(const char *s, int nonempty) {
    if (!s || (nonempty && !s[0]) || strpbrk(s, "\t\r\n")) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    perpo_manifest m;
    char err[160];
    size_t i, last = 0;
    perpo_status st = perpo_manifest_parse((const char *)data, size, &m, err, sizeof err, NULL);
    if (st == PERPO_OK) {
        if (err[0] || (m.n && !m.entries)) __builtin_trap();
        for (i = 0; i < m.n; i++) {
            const perpo_manifest_entry *e = &m.entries[i];
            fz_field(e->image, 1);
            fz_field(e->prompt, 0);
            fz_field(e->answer, 1);
            if (e->line <= last) __builtin_trap();
            last = e->line;
        }
        perpo_manifest_free(&m);
    } else {
        if (st != PERPO_ERR_FORMAT || m.entries || m.n || strncmp(err, "manifest line ", 14) != 0) __builtin_trap();
    }
    return 0;
}
