/* loss_only.c — the PerPO objective for a model of your own.
 *
 * perpo.h's listwise objectives need only numbers: each response's summed log-probability
 * under the policy and under the frozen reference, and its task reward. This program shows the
 * whole contract on one list of N = 5 box answers: rewards from IoU with the true box, then the
 * PerPO loss and dLoss/dlogp for each response (what you would feed to your framework's
 * backward as the gradient of the sequence log-probs), next to DPO, LiPO and ListMLE, and the
 * preference metrics trainers log.
 *
 *   cc -std=c99 -O2 -I.. loss_only.c -lm && ./a.out
 */
#define PERPO_IMPLEMENTATION
#include "../perpo.h"
#include <stdio.h>
#include <string.h>

int main(void) {
    const char *responses[5] = { "[0.10,0.20,0.50,0.60]", "[0.12,0.18,0.52,0.61]",
                                 "[0.30,0.30,0.70,0.80]", "[0.60,0.60,0.90,0.90]",
                                 "I cannot see it" };
    const float truth[4] = { 0.11f, 0.19f, 0.51f, 0.60f };
    /* log-probs of each response from your model (policy) and from the frozen SFT copy */
    const float logp[5] = { -14.2f, -15.0f, -13.1f, -12.7f, -30.5f };
    const float ref_logp[5] = { -14.0f, -15.5f, -13.0f, -12.0f, -29.0f };
    float reward[5], loss, grad[5];
    perpo_pref_metrics pm;
    perpo_status st;
    int i, k;

    printf("%-24s %7s %8s %8s\n", "response", "IoU", "logp", "ref");
    for (i = 0; i < 5; i++) {
        reward[i] = perpo_grounding_reward(responses[i], strlen(responses[i]), truth, 64.0f, 64.0f);
        printf("%-24s %7.3f %8.2f %8.2f\n", responses[i], reward[i], logp[i], ref_logp[i]);
    }
    printf("\n%-8s %9s   dLoss/dlogp for each response\n", "loss", "value");
    for (k = 0; k < PERPO_OBJ_COUNT; k++) {
        const char *name = perpo_objective_name((perpo_objective)k);
        perpo_objective_config oc =
            perpo_objective_default((perpo_objective)k); /* beta 0.1, gamma 0.5 */
        st = perpo_listwise_loss(&oc, 5, logp, ref_logp, reward, &loss, grad);
        if (st != PERPO_OK) {
            fprintf(stderr, "%s: %s\n", name, perpo_status_string(st));
            return 1;
        }
        printf("%-8s %9.5f  ", name, loss);
        for (i = 0; i < 5; i++) printf(" %+.5f", grad[i]);
        printf("\n");
    }
    st = perpo_preference_metrics(0.1f, 5, logp, ref_logp, reward, &pm);
    if (st != PERPO_OK) return 1;
    printf("\nrewards/chosen %+.4f  rewards/rejected %+.4f  rewards/margins %+.4f  "
           "rewards/accuracies %.2f\n",
           pm.chosen, pm.rejected, pm.margin, pm.accuracy);
    return 0;
}
