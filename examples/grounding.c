/* grounding.c — PerPO end to end on object grounding, on synthetic scenes.
 *
 * The paper's setting in miniature: start from a pretrained SFT model (`make pretrain` trains
 * it on a fixed set of 2,048 labelled scenes and writes examples/models/grounding_sft_k2048.ckpt)
 * -> N answers sampled per training prompt (those same scenes) -> IoU rewards -> lists with a
 * large enough reward margin -> reference log-probs of the frozen SFT model -> the control (SFT
 * continued on the same prompts' true boxes), DPO and PerPO, each from the same SFT weights for
 * the same steps, the lists sampled again from the current policy each round ->
 * greedy evaluation on held-out scenes: Acc@0.5, mean IoU, parse failures, with the Best-of-N
 * oracle as the upper reference. Writes results.json, a picture of test scenes with the true,
 * SFT and PerPO boxes, and the training curves as SVG. The run itself is examples/experiment.h,
 * whose stages main() below calls in order; what belongs to grounding (scenes, the IoU reward,
 * the metrics, the defaults) is examples/grounding_task.h, which examples/repro.c shares.
 *
 *   grounding [--seed S] [--seeds K] [--test 2000] [--test-seed 777] [--n 8] [--out DIR] ...
 *   grounding --pretrain 1 ...            (what `make pretrain` runs; all flags: --help)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and mkdir; the library itself is plain C99 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include "common.h"
#include "experiment.h"     /* the stages main() runs, the same for every task */
#include "grounding_task.h" /* scenes, the IoU reward, the metrics, the defaults */

int main(int argc, char **argv) {
    task tk = grounding_task();
    options o;
    experiment ex;
    int rc;
    grounding_defaults(&o);
    if ((rc = experiment_start(argc, argv, &o)) != 0) return rc > 0 ? 0 : 2; /* --help; bad flags */
    if (o.pretrain) return pretrain(&tk, &o, argc, argv); /* make pretrain: the SFT checkpoint */

    rc = experiment_load(&ex, &tk, &o) || /* the SFT checkpoint, the test scenes */
         experiment_baselines(&ex) ||     /* SFT scored; diagnostics; Best-of-N */
         experiment_preference(&ex) ||    /* per seed: lists; control, DPO, PerPO */
         experiment_report(&ex);          /* table, results.json, picture, curves */
    experiment_free(&ex);
    return rc;
}
