/* examples/cmdline.h - the command line of the example programs: a table of options
 * (name, help, kind, destination, range) parsed by ex_options_parse, with --help.
 * Part of the example helpers: include examples/common.h.
 */
#ifndef PERPO_EXAMPLES_CMDLINE_H
#define PERPO_EXAMPLES_CMDLINE_H

/* ======================================================================================
 * Command line: a table of options, "--name value" or "--name=value"
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
 * (an unknown option, a missing value, a value that is not a number or out of range) to err
 * (stderr in the programs). */
EX_FN int ex_options_parse(int argc, char **argv, const ex_option *spec, size_t n,
                           const char *description, FILE *err) {
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
            fprintf(err, "unknown option %s (see --help)\n", arg);
            return -1;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(err, "option %s needs a value\n", arg);
            return -1;
        }
        if (spec[k].kind == 's') {
            *(const char **)spec[k].dst = val;
        } else {
            char *end;
            double v = strtod(val, &end);
            if (*val == '\0' || *end != '\0' || !(v >= spec[k].lo && v <= spec[k].hi) ||
                (spec[k].kind == 'i' && v != floor(v))) {
                fprintf(err, "bad value \"%s\" for %s (expected %s in [%g, %g])\n", val,
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

#endif /* PERPO_EXAMPLES_CMDLINE_H */
