/* examples/report.h - what the experiments report through: SVG line plots (one or several
 * panels side by side) and a small streaming JSON writer for results.json.
 * Part of the example helpers: include examples/common.h.
 */
#ifndef PERPO_EXAMPLES_REPORT_H
#define PERPO_EXAMPLES_REPORT_H

/* ======================================================================================
 * 1. SVG line plots
 *
 * One or more panels side by side, each with a title, axis labels, "nice" ticks, light
 * grid lines, a legend to the right and one coloured line per series (8 colours, then
 * dashed variants). Non-finite points break the line. Series of at most 40 points also get
 * a dot per point. xs == NULL (or xs[i] == NULL) plots y against 0, 1, 2, ...
 * The *_sd variants add error bars: sds[k][i] is the half-height of the bar at point i of
 * series k (e.g. the sd over seeds; sds, sds[k] NULL or a non-finite or non-positive value:
 * no bar there), and the y axis covers the bars.
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

/* The half-height of the error bar at point i of series k; 0: none. */
EX_FN double ex__bar(const float *const *sds, int k, int i) {
    double e = sds && sds[k] ? sds[k][i] : 0.0;
    return isfinite(e) && e > 0 ? e : 0.0;
}

#define EX_PANEL_W 560
#define EX_PANEL_H 340

/* sds: NULL, or n_series arrays (each NULL or counts[k] half-heights) of error bars. */
EX_FN void ex__svg_panel(FILE *f, const ex_plot_panel *p, const float *const *sds, int ox, int oy) {
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
            double x = xs ? xs[i] : i, y = ys[i], e = ex__bar(sds, s, i);
            if (!isfinite(x) || !isfinite(y)) continue;
            if (!(x >= xmn)) xmn = x;
            if (!(x <= xmx)) xmx = x;
            if (!(y - e >= ymn)) ymn = y - e;
            if (!(y + e <= ymx)) ymx = y + e;
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
            for (i = 0; i < n; i++) { /* error bars, with caps */
                double x = xs ? xs[i] : i, y = ys[i], e = ex__bar(sds, s, i), px, lo, hi;
                if (!isfinite(x) || !isfinite(y) || e <= 0) continue;
                px = L + (x - xlo) / (xhi - xlo) * PW;
                lo = T + PH - (y - e - ylo) / (yhi - ylo) * PH;
                hi = T + PH - (y + e - ylo) / (yhi - ylo) * PH;
                fprintf(f,
                        "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"M%.2f %.2f "
                        "L%.2f %.2f M%.2f %.2f L%.2f %.2f M%.2f %.2f L%.2f %.2f\"/>\n",
                        col, px, lo, px, hi, px - 4, lo, px + 4, lo, px - 4, hi, px + 4, hi);
            }
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

/* Writes panels side by side to an open stream, with error bars where sds (NULL: none) has
   them: sds[p] is panel p's (NULL, or one array per series). Returns 0, or nonzero on error. */
EX_FN int ex_svg_plot_panels_sd_file(FILE *f, const char *title, int n_panels,
                                     const ex_plot_panel *panels, const float *const *const *sds) {
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
    for (i = 0; i < n_panels; i++)
        ex__svg_panel(f, &panels[i], sds ? sds[i] : NULL, i * EX_PANEL_W, top);
    fputs("</svg>\n", f);
    return ferror(f) ? 2 : 0;
}

/* Writes panels side by side to an open stream. Returns 0, or nonzero on error. */
EX_FN int ex_svg_plot_panels_file(FILE *f, const char *title, int n_panels,
                                  const ex_plot_panel *panels) {
    return ex_svg_plot_panels_sd_file(f, title, n_panels, panels, NULL);
}

EX_FN int ex_svg_plot_panels_sd(const char *path, const char *title, int n_panels,
                                const ex_plot_panel *panels, const float *const *const *sds) {
    FILE *f;
    int err;
    if (!path) return 1;
    f = fopen(path, "w");
    if (!f) return 2;
    err = ex_svg_plot_panels_sd_file(f, title, n_panels, panels, sds);
    if (fclose(f) != 0 && !err) err = 3;
    return err;
}

EX_FN int ex_svg_plot_panels(const char *path, const char *title, int n_panels,
                             const ex_plot_panel *panels) {
    return ex_svg_plot_panels_sd(path, title, n_panels, panels, NULL);
}

/* One panel: n_series lines, series k has counts[k] points (xs[k][i], ys[k][i]) with error
   bars of half-height sds[k][i] (sds NULL: none). */
EX_FN int ex_svg_plot_sd(const char *path, const char *title, const char *xlabel,
                         const char *ylabel, int n_series, const char *const *names,
                         const float *const *xs, const float *const *ys, const float *const *sds,
                         const int *counts) {
    ex_plot_panel p;
    p.title = title;
    p.xlabel = xlabel;
    p.ylabel = ylabel;
    p.n_series = n_series;
    p.names = names;
    p.xs = xs;
    p.ys = ys;
    p.counts = counts;
    return ex_svg_plot_panels_sd(path, NULL, 1, &p, &sds);
}

/* One panel: n_series lines, series k has counts[k] points (xs[k][i], ys[k][i]). */
EX_FN int ex_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                      int n_series, const char *const *names, const float *const *xs,
                      const float *const *ys, const int *counts) {
    return ex_svg_plot_sd(path, title, xlabel, ylabel, n_series, names, xs, ys, NULL, counts);
}

/* ======================================================================================
 * 2. JSON writer
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
 * 3. Statistics
 * ==================================================================================== */

/* Spearman's rank correlation of x and y (n values): Pearson's correlation of their ranks,
   tied values sharing the mean of their ranks. 0 with *ok = 0 when x or y is constant (or
   n < 2), where it is undefined. O(n^2): for short lists. */
EX_FN double ex_spearman(const double *x, const double *y, int n, int *ok) {
    double mx = (n - 1) / 2.0, sxy = 0, sxx = 0, syy = 0; /* mean rank, ties or not */
    int i, j;
    for (i = 0; i < n; i++) {
        double rx = 0, ry = 0; /* 0-based mean ranks: values below + (equal - 1) / 2 */
        for (j = 0; j < n; j++) {
            rx += x[j] < x[i] ? 1.0 : x[j] == x[i] && j != i ? 0.5 : 0.0;
            ry += y[j] < y[i] ? 1.0 : y[j] == y[i] && j != i ? 0.5 : 0.0;
        }
        sxy += (rx - mx) * (ry - mx);
        sxx += (rx - mx) * (rx - mx);
        syy += (ry - mx) * (ry - mx);
    }
    *ok = sxx > 0 && syy > 0;
    return *ok ? sxy / sqrt(sxx * syy) : 0.0;
}

/* Mean and sd (over n - 1) of the finite values of v[0..n); returns how many there are (mean and
   sd NaN when none, sd 0 for one). A non-finite value is a seed without a result (a run whose
   margin kept no list), left out rather than averaged in. */
EX_FN int ex_mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    int i, c = 0;
    for (i = 0; i < n; i++)
        if (isfinite(v[i])) {
            s += v[i];
            c++;
        }
    *mean = c ? s / c : NAN;
    for (i = 0; i < n; i++)
        if (isfinite(v[i])) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = c > 1 ? sqrt(q / (c - 1)) : c ? 0.0 : NAN;
    return c;
}

/* A table cell of v[0..n) times scale with `digits` decimals, signed or not: "mean ± sd", the
   mean alone for one value, " (c of n)" after it when only c of the values are finite, "n/a"
   when none is. */
EX_FN void ex_format_mean_sd(const double *v, int n, double scale, int digits, int sign, char *out,
                             size_t cap) {
    double mean, sd;
    int c = ex_mean_sd(v, n, &mean, &sd), len;
    if (!c) {
        snprintf(out, cap, "n/a");
        return;
    }
    if (c > 1)
        len = snprintf(out, cap, sign ? "%+.*f ± %.*f" : "%.*f ± %.*f", digits, mean * scale,
                       digits, sd * scale);
    else
        len = snprintf(out, cap, sign ? "%+.*f" : "%.*f", digits, mean * scale);
    if (c < n && len >= 0 && (size_t)len < cap)
        snprintf(out + len, cap - (size_t)len, " (%d of %d)", c, n);
}

#endif /* PERPO_EXAMPLES_REPORT_H */
