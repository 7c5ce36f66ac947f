/* examples/common.h - what the PerPO example programs share, one header per concern:
 *
 *   synth.h    RNG, synthetic grounding scenes and dense-OCR pages
 *   font.h     a 5x7 bitmap font for printable ASCII and text drawn with it
 *   image.h    PPM and PNG writers, upscaling, box outlines, labelled image grids
 *   report.h   SVG line plots and the JSON writer of results.json
 *   cmdline.h  the option table the programs parse their command line with
 *
 * Include this file, not the parts: it holds what they share (EX_FN, EX_PI, the C headers)
 * and includes them in the order they build on each other.
 *
 * Header-only, C99 (also compiles as C++), libc and libm only, independent of perpo.h.
 * Every function is `static inline`, so including it in several files is fine and unused
 * helpers cost nothing. Nothing here exits or keeps global state: randomness comes from an
 * `ex_rng` passed by pointer, and functions that can fail return 0 on success (the option
 * parser prints what is wrong).
 *
 * Images are float arrays [H][W][3], row-major, channel fastest, values in [0,1].
 * Boxes are normalized [x1,y1,x2,y2]; a tight pixel box with inclusive pixel corners
 * (px0,py0)-(px1,py1) is x1 = px0/W, y1 = py0/H, x2 = (px1+1)/W, y2 = (py1+1)/H.
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

#include "font.h"
#include "synth.h"
#include "image.h"
#include "report.h"
#include "cmdline.h"

#endif /* PERPO_EXAMPLES_COMMON_H */
