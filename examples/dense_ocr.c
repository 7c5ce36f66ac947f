/* dense_ocr.c — PerPO end to end on dense OCR, on rendered synthetic pages.
 *
 * From the pretrained SFT model (`make pretrain-ocr` writes examples/models/dense_ocr_sft.ckpt)
 * -> N transcriptions sampled per training page -> reward 1 - normalized edit distance ->
 * lists with a large enough reward margin -> reference log-probs of the frozen SFT model -> the
 * control (SFT continued on the true transcriptions), DPO and PerPO from the same SFT weights
 * for the same steps -> greedy transcription of held-out pages at four text densities (one
 * short line up to a full page): edit distance, F1, precision, recall and BLEU, overall and
 * per density. The run itself is examples/experiment.h, whose stages main() below calls in
 * order; what belongs to OCR (pages, the edit-distance reward, the metrics, the defaults) is
 * examples/ocr_task.h, which examples/repro.c shares.
 *
 *   dense_ocr [--seed S] [--seeds K] [--test T] [--test-seed T] [--n N] [--out DIR] ...   (--help)
 *   dense_ocr --pretrain 1 ...            (what `make pretrain-ocr` runs)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include "experiment.h" /* the stages main() runs, the same for every task */
#include "ocr_task.h"   /* pages, the edit-distance reward, the metrics, the defaults */

int main(int argc, char **argv) {
    task tk = dense_ocr_task();
    options o;
    experiment ex;
    int rc;
    ocr_defaults(&o);
    if ((rc = experiment_start(argc, argv, &o)) != 0) return rc > 0 ? 0 : 2; /* --help; bad flags */
    if (o.pretrain) return pretrain(&tk, &o, argc, argv); /* make pretrain-ocr: the SFT reader */

    rc = experiment_load(&ex, &tk, &o) || /* the SFT reader, the test pages */
         experiment_baselines(&ex) ||     /* SFT scored; diagnostics; Best-of-N */
         experiment_preference(&ex) ||    /* per seed: lists; control, DPO, PerPO */
         experiment_report(&ex);          /* table, results.json, picture, curves */
    experiment_free(&ex);
    return rc;
}
