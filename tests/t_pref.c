/* The preference pipeline end to end on small grounding scenes: SFT -> N samples per prompt
 * -> IoU rewards -> margin filter -> reference log-probs -> PerPO. The mean IoU of greedy
 * answers on the training prompts must go up. Sizes are small so this runs in seconds. */

#define TP_W      32
#define TP_FLOATS (TP_W * TP_W * 3)
#define TP_SCENES 96
/* The preference stage of the test below (overridable with -D to explore it). What we found
 * at this size: the listwise term alone (TP_NLL 0) raises rewards/accuracies on the training
 * lists but displaces the likelihood of every sampled answer, and the greedy answers fall
 * apart; an NLL term on each list's best answer with per-token mean log-probs keeps the
 * model anchored while the ranking moves it. */
#ifndef TP_LR
#define TP_LR        3e-4f
#define TP_STEPS     120
#define TP_NLL       1.0f
#define TP_BETA      1.0f
#define TP_TEMP      1.0f
#define TP_TOPP      0.8f
#define TP_MEAN      1
#define TP_SFT       100
#define TP_INIT      7
#define TP_MIXED_SFT 150
#endif
#define TP_SHIFT 0.08f /* every SFT label is the true box moved right and down by this */

/* The preference stage every pipeline test below runs (see the settings above). */
static void tp_pref_stage(perpo_pref_config *pc) {
    pc->lists_per_step = 4;
    pc->optim.lr = TP_LR;
    pc->optim.min_lr = TP_LR * 0.1f;
    pc->optim.warmup_steps = 5;
    pc->optim.total_steps = TP_STEPS;
    pc->nll_weight = TP_NLL;
    pc->objective.beta = TP_BETA;
    pc->mean_logp = TP_MEAN;
}

typedef struct tp_data {
    float img[TP_SCENES][TP_FLOATS];
    char prompt[TP_SCENES][24], answer[TP_SCENES][32], wrong[TP_SCENES][32];
    float box[TP_SCENES][4];
    perpo_example ex[TP_SCENES];
} tp_data;

static void tp_make(tp_data *d) {
    int i;
    for (i = 0; i < TP_SCENES; i++) {
        ex_scene s;
        ex_scene_from_index(4242, (uint64_t)i, TP_W, TP_W, &s);
        ex_scene_render(&s, d->img[i]);
        ex_scene_prompt(&s, d->prompt[i], sizeof d->prompt[i]);
        ex_scene_answer(&s, d->answer[i], sizeof d->answer[i]);
        memcpy(d->box[i], s.box, sizeof s.box);
        { /* the box of another object of the scene: a plausible wrong answer */
            const ex_object *o = &s.obj[(s.target + 1) % s.n_objects];
            float b[4];
            b[0] = (float)o->px0 / TP_W;
            b[1] = (float)o->py0 / TP_W;
            b[2] = (float)(o->px1 + 1) / TP_W;
            b[3] = (float)(o->py1 + 1) / TP_W;
            ex_format_box(b, d->wrong[i], sizeof d->wrong[i]);
        }
        d->ex[i].image = d->img[i];
        d->ex[i].prompt = d->prompt[i];
        d->ex[i].response = d->answer[i];
    }
}

static float tp_reward(const char *r, size_t len, size_t item, void *user) {
    const tp_data *d = (const tp_data *)user;
    return perpo_grounding_reward(r, len, d->box[item], (float)TP_W, (float)TP_W);
}

/* Mean IoU over the first n scenes of answers sampled with sc (greedy by default). */
static double tp_mean_iou(perpo_model *m, const tp_data *d, int n, const perpo_sample_config *sc);
static double tp_greedy_iou(perpo_model *m, const tp_data *d, int n) {
    perpo_sample_config sc = perpo_sample_default();
    return tp_mean_iou(m, d, n, &sc);
}
static double tp_mean_iou(perpo_model *m, const tp_data *d, int n, const perpo_sample_config *sc) {
    double sum = 0.0;
    int i, j;
    for (i = 0; i < n; i += 16) {
        const float *imgs[16];
        const char *prompts[16];
        char out[16][40];
        size_t lens[16];
        perpo_gen_request req;
        int cnt = n - i < 16 ? n - i : 16;
        for (j = 0; j < cnt; j++) {
            imgs[j] = d->img[i + j];
            prompts[j] = d->prompt[i + j];
        }
        req.n_seq = (size_t)cnt;
        req.n_img = (size_t)cnt;
        req.images = imgs;
        req.image_of = NULL;
        req.prompts = prompts;
        if (perpo_generate(m, &req, sc, &out[0][0], 40, lens) != PERPO_OK) return -1.0;
        for (j = 0; j < cnt; j++) sum += tp_reward(out[j], lens[j], (size_t)(i + j), (void *)d);
    }
    return sum / n;
}

/* ---- PerPO against its NLL term alone and against reversed rewards ---------------------- */
#define TP_MAX_LISTS 16 /* lists of at most 8 answers in the three-way runs below */
/* score: the test's measure after training; ranked: share of pairs (R_i > R_j) the trained
   model orders right by s = log pi - log pi_ref (summed log-probs); ranked_rest: the same over
   the pairs that do not involve a list's best answer, the part an NLL term on the best answer
   does not aim at. */
typedef struct tp_flip {
    double score, ranked, ranked_rest;
} tp_flip;
typedef double (*tp_score_fn)(perpo_model *m, void *data);
/* One preference run of the three-way comparison, from the SFT weights `sft` copied into m:
   PerPO at `beta` (1e-6: the NLL term alone), with the rewards reversed (1 - R) if asked.
   Returns score(m) after training and the share of pairs the trained model ranks right. */
static tp_flip tp_pref_variant(perpo_model *m, const perpo_model *sft, perpo_pref_list *lists,
                               size_t n, float beta, float nll, int nll_on_truth, int reverse,
                               tp_score_fn score, void *data) {
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_pref_list after[TP_MAX_LISTS];
    float saved[TP_MAX_LISTS][8], logp[TP_MAX_LISTS][8];
    tp_flip r = { -1.0, -1.0, -1.0 };
    size_t i;
    int k, j, best, right = 0, pairs = 0;
    if (n > TP_MAX_LISTS || perpo_model_copy_params(m, sft) != PERPO_OK) return r;
    for (i = 0; i < n; i++)
        if (lists[i].n > 8) return r;
    for (i = 0; i < n; i++)
        for (k = 0; k < lists[i].n; k++) {
            saved[i][k] = lists[i].rewards[k];
            if (reverse) ((float *)lists[i].rewards)[k] = 1.0f - saved[i][k];
        }
    tp_pref_stage(&pc);
    pc.objective.beta = beta;
    pc.nll_weight = nll;
    pc.nll_on_truth = nll_on_truth;
    if (perpo_pref_train(m, lists, n, &pc, NULL, NULL) != PERPO_OK) return r;
    for (i = 0; i < n; i++)
        for (k = 0; k < lists[i].n; k++) ((float *)lists[i].rewards)[k] = saved[i][k];
    /* the trained model's log-probs of every listed answer, ranked against the true rewards */
    for (i = 0; i < n; i++) {
        after[i] = lists[i];
        after[i].ref_logp = logp[i];
    }
    if (perpo_pref_reference(m, after, n) != PERPO_OK) return r;
    r.ranked = 0.0;
    for (i = 0; i < n; i++) {
        perpo_pref_metrics pm;
        if (perpo_preference_metrics(1.0f, lists[i].n, logp[i], lists[i].ref_logp, lists[i].rewards,
                                     &pm) != PERPO_OK)
            return r;
        r.ranked += pm.accuracy / (double)n;
        for (best = 0, k = 1; k < lists[i].n; k++)
            if (lists[i].rewards[k] > lists[i].rewards[best]) best = k;
        for (k = 0; k < lists[i].n; k++)
            for (j = 0; j < lists[i].n; j++) {
                if (k == best || j == best || !(lists[i].rewards[k] > lists[i].rewards[j]))
                    continue;
                pairs++;
                right += logp[i][k] - lists[i].ref_logp[k] > logp[i][j] - lists[i].ref_logp[j];
            }
    }
    r.ranked_rest = pairs > 0 ? (double)right / pairs : -1.0;
    r.score = score(m, data);
    return r;
}

static void tp_report(const char *what, size_t n_lists, double before, tp_flip perpo,
                      tp_flip nll_only, tp_flip reversed) {
    fprintf(stderr,
            "    %s (%zu lists): %.3f -> PerPO %.3f, NLL term alone %.3f, rewards reversed %.3f\n"
            "      pairs ranked right: PerPO %.2f, NLL term alone %.2f, reversed %.2f; without the "
            "best answer: %.2f, %.2f, %.2f\n",
            what, n_lists, before, perpo.score, nll_only.score, reversed.score, perpo.ranked,
            nll_only.ranked, reversed.ranked, perpo.ranked_rest, nll_only.ranked_rest,
            reversed.ranked_rest);
}

/* The SFT labels are the true boxes shifted by TP_SHIFT, so SFT learns a systematic error.
 * Sampling around the SFT answers and rewarding IoU with the TRUE box tells the model which
 * way to move: the paper's point in miniature, the discriminative reward carries information
 * the SFT labels lack. The IoU of sampled answers on the training prompts must rise.
 * Beside PerPO, from the same SFT weights and lists: its NLL term alone (beta 1e-6; the NLL is
 * on each list's best sample) and PerPO with the rewards reversed. Measured: sampled IoU
 * 0.067 -> PerPO 0.163, NLL term alone 0.172, reversed 0.010; pairs ranked right 0.96 / 0.80 /
 * 0.05, and among the pairs without the list's best answer 0.92 / 0.58 / 0.08. So here the NLL
 * term on the best sample raises the reward of samples as much as PerPO does (this is the
 * rejection-sampling baseline, and docs/experiments.md, "What we learned", finds the same on
 * held-out scenes); what the listwise term adds is the order of the whole list, which the test
 * requires, with the reversed run moving both the other way. */
#define TP_NOISY 16

/* The reward of answers sampled from the policy (8 draws per prompt), the shifted-label test's score. */
static double tp_score_sampled_noisy(perpo_model *m, void *data) {
    perpo_sample_config sc = perpo_sample_default();
    double sum = 0.0;
    int k;
    sc.temperature = TP_TEMP;
    sc.top_p = TP_TOPP;
    for (k = 0; k < 8; k++) {
        sc.seed = 100 + (uint64_t)k;
        sum += tp_mean_iou(m, (const tp_data *)data, TP_NOISY, &sc) / 8;
    }
    return sum;
}
static void test_perpo_raises_reward(perpo_test *t) {
    static tp_data d;
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL, *pol = NULL;
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    double before, after, sampled_before;
    tp_flip perpo, nll_only, reversed;
    size_t kept;
    int i, k;
    tp_make(&d);
    for (i = 0; i < TP_NOISY; i++) { /* biased label: the box shifted right and down */
        float bx[4];
        for (k = 0; k < 4; k++) {
            bx[k] = d.box[i][k] + TP_SHIFT;
            bx[k] = bx[k] > 1.0f ? 1.0f : bx[k];
        }
        ex_format_box(bx, d.answer[i], sizeof d.answer[i]);
    }
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 48;
    c.n_heads = 4;
    c.n_vis_layers = 1;
    c.n_dec_layers = 2;
    c.max_text = 40;
    c.max_batch = 32;
    CHECK_OK(perpo_model_create(&m, &c, TP_INIT));
    CHECK_OK(perpo_model_create(&pol, &c, TP_INIT));
    if (!m || !pol) {
        perpo_model_free(m);
        perpo_model_free(pol);
        return;
    }
    tc.batch_size = TP_NOISY;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 10;
    tc.optim.total_steps = TP_SFT;
    tc.seed = 3;
    CHECK_OK(perpo_sft_train(m, d.ex, TP_NOISY, &tc, NULL, NULL));
    before = tp_greedy_iou(m, &d, TP_NOISY);
    sampled_before = tp_score_sampled_noisy(m, &d);
    sc.temperature = TP_TEMP;
    sc.top_p = TP_TOPP;
    sc.seed = 11;
    CHECK_OK(perpo_pref_sample(m, d.ex, TP_NOISY, 8, &sc, tp_reward, &d, &set));
    kept = perpo_pref_filter(set.lists, set.n_lists, 0.05f);
    CHECK(kept >= TP_NOISY / 2);
    CHECK_OK(perpo_pref_reference(m, set.lists, kept));
    perpo =
        tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TP_NLL, 0, 0, tp_score_sampled_noisy, &d);
    after = tp_greedy_iou(pol, &d, TP_NOISY);
    nll_only =
        tp_pref_variant(pol, m, set.lists, kept, 1e-6f, TP_NLL, 0, 0, tp_score_sampled_noisy, &d);
    reversed =
        tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TP_NLL, 0, 1, tp_score_sampled_noisy, &d);
    fprintf(stderr, "    greedy IoU on %d prompts with shifted labels: %.3f -> PerPO %.3f\n",
            TP_NOISY, before, after);
    tp_report("sampled IoU", kept, sampled_before, perpo, nll_only, reversed);
    /* What this run shows robustly (model inits 7, 8, 9 all agree): the reward of answers
       sampled from the policy rises by 0.05 to 0.08. The greedy answer moved by -0.02 to +0.02
       across those inits, so it is only required not to fall apart. */
    CHECK_MSG(perpo.score > sampled_before + 0.04,
              "PerPO did not raise the sampled reward: %.3f -> %.3f", sampled_before, perpo.score);
    CHECK_MSG(after > before - 0.05, "PerPO broke the greedy answers: %.3f -> %.3f", before, after);
    CHECK_MSG(perpo.ranked > nll_only.ranked + 0.05 &&
                  perpo.ranked_rest > nll_only.ranked_rest + 0.2,
              "PerPO ranks no better than its NLL term alone: %.2f vs %.2f (without the best "
              "answer %.2f vs %.2f)",
              perpo.ranked, nll_only.ranked, perpo.ranked_rest, nll_only.ranked_rest);
    CHECK_MSG(reversed.ranked < 0.5 && reversed.score < sampled_before,
              "reversed rewards did not move the ranking and the samples the other way: %.2f, %.3f "
              "-> %.3f",
              reversed.ranked, sampled_before, reversed.score);
    perpo_pref_set_free(&set);
    perpo_model_free(m);
    perpo_model_free(pol);
}

/* SFT data where every prompt appears twice, once with the right box and once with the box of
 * another object: SFT learns both answers and its greedy pick is a coin flip per prompt. The
 * IoU reward separates the two modes. Three preference runs start from the same SFT weights
 * and the same lists, and each is judged by its greedy IoU and by how it ranks the listed
 * answers (the share of pairs with R_i > R_j whose log-ratio s_i = log pi - log pi_ref is
 * larger, over summed log-probs):
 *   PerPO (listwise term + NLL on each list's best answer) must move the greedy answers to
 *   the right box and rank the lists right;
 *   the NLL term alone (beta 1e-6: the listwise gradient vanishes next to the NLL's) moves the
 *   greedy answers as far (measured 0.552 -> 0.730 for PerPO, 0.760 for the NLL term alone: at
 *   this size the anchor does that part), but ranks the pairs worse (0.87 of the pairs right
 *   against 0.95; without each list's best answer 0.76 against 0.90): the ranking is what the
 *   listwise term adds;
 *   PerPO with the rewards reversed (1 - IoU) must rank the pairs the other way and move the
 *   greedy answers away from the right box. */
#define TP_MIXED 16
static double tp_score_greedy_mixed(perpo_model *m, void *data) {
    return tp_greedy_iou(m, (const tp_data *)data, TP_MIXED);
}
static void test_perpo_fixes_greedy_answers(perpo_test *t) {
    static tp_data d;
    perpo_example ex[2 * TP_MIXED];
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL, *pol = NULL;
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    double before;
    tp_flip perpo, nll_only, reversed;
    size_t kept;
    int i;
    tp_make(&d);
    for (i = 0; i < TP_MIXED; i++) {
        ex[2 * i] = d.ex[i];
        ex[2 * i + 1] = d.ex[i];
        ex[2 * i + 1].response = d.wrong[i];
    }
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 48;
    c.n_heads = 4;
    c.n_vis_layers = 1;
    c.n_dec_layers = 2;
    c.max_text = 40;
    c.max_batch = 32;
    CHECK_OK(perpo_model_create(&m, &c, TP_INIT));
    CHECK_OK(perpo_model_create(&pol, &c, TP_INIT));
    if (!m || !pol) {
        perpo_model_free(m);
        perpo_model_free(pol);
        return;
    }
    tc.batch_size = 2 * TP_MIXED;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 10;
    tc.optim.total_steps = TP_MIXED_SFT;
    tc.seed = 3;
    CHECK_OK(perpo_sft_train(m, ex, 2 * TP_MIXED, &tc, NULL, NULL));
    before = tp_greedy_iou(m, &d, TP_MIXED);
    sc.temperature = 1.0f;
    sc.top_p = TP_TOPP;
    sc.seed = 11;
    CHECK_OK(perpo_pref_sample(m, d.ex, TP_MIXED, 8, &sc, tp_reward, &d, &set));
    kept = perpo_pref_filter(set.lists, set.n_lists, 0.3f);
    CHECK(kept >= TP_MIXED / 2);
    CHECK_OK(perpo_pref_reference(m, set.lists, kept));
    perpo =
        tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TP_NLL, 0, 0, tp_score_greedy_mixed, &d);
    nll_only =
        tp_pref_variant(pol, m, set.lists, kept, 1e-6f, TP_NLL, 0, 0, tp_score_greedy_mixed, &d);
    reversed =
        tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TP_NLL, 0, 1, tp_score_greedy_mixed, &d);
    tp_report("greedy IoU on 16 prompts trained half on wrong boxes", kept, before, perpo, nll_only,
              reversed);
    CHECK_MSG(perpo.score > before + 0.1,
              "PerPO did not move the greedy answers to the right boxes: %.3f -> %.3f", before,
              perpo.score);
    CHECK_MSG(perpo.ranked > nll_only.ranked + 0.05,
              "PerPO ranks no better than its NLL term alone: %.2f vs %.2f", perpo.ranked,
              nll_only.ranked);
    CHECK_MSG(reversed.ranked < 0.5 && reversed.score < before - 0.1,
              "reversed rewards did not move the ranking and the answers the other way: %.2f, %.3f "
              "-> %.3f",
              reversed.ranked, before, reversed.score);
    perpo_pref_set_free(&set);
    perpo_model_free(m);
    perpo_model_free(pol);
}

/* Reference log-probs equal the policy's own log-probs before training, so the first step of
 * every objective starts from s_k = 0 (loss log 2 for a pair), and bad lists are refused. */
static void test_pref_reference_and_arguments(perpo_test *t) {
    static tp_data d;
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL;
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_DPO);
    perpo_pref_set set;
    float lp[4], loss, rewards[2] = { 1.0f, 0.0f }, ref[2];
    const char *resp[2] = { "[0.10,0.10,0.50,0.50]", "garbage" };
    perpo_pref_list l;
    size_t i;
    int k;
    pc.optim.lr = 1e-4f; /* the rate this test was tuned with (the default is 1e-5) */
    pc.optim.min_lr = 1e-5f;
    tp_make(&d);
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.max_text = 40;
    c.max_batch = 8;
    CHECK_OK(perpo_model_create(&m, &c, 1));
    if (!m) return;
    sc.temperature = 1.0f;
    CHECK_OK(perpo_pref_sample(m, d.ex, 3, 4, &sc, tp_reward, &d, &set));
    CHECK(set.n_lists == 3);
    CHECK_OK(perpo_pref_reference(m, set.lists, set.n_lists));
    /* each reference log-prob = the summed response log-prob of that response alone, computed
       here by a forward of one sequence: an independent value, not the array compared with
       itself; responses that differ have log-probs that differ */
    for (i = 0; i < set.n_lists; i++) {
        for (k = 0; k < 4; k++) {
            const perpo_pref_list *pl = &set.lists[i];
            int tok[40], tgt[40];
            const float *img1[1];
            perpo_batch one;
            img1[0] = pl->image;
            CHECK_OK(perpo_text_encode(&c, pl->prompt, strlen(pl->prompt), pl->responses[k],
                                       strlen(pl->responses[k]), tok, tgt, NULL));
            one.n_seq = 1;
            one.n_img = 1;
            one.images = img1;
            one.image_of = NULL;
            one.tokens = tok;
            one.targets = tgt;
            CHECK_OK(perpo_forward(m, &one, &lp[k], NULL));
            CHECK_NEAR(pl->ref_logp[k], lp[k], 1e-4, 1e-5);
            CHECK(pl->ref_logp[k] < 0.0f && pl->rewards[k] >= 0.0f);
            if (k > 0 && strcmp(pl->responses[k], pl->responses[0]) != 0)
                CHECK(pl->ref_logp[k] != pl->ref_logp[0]);
        }
        /* and the loss against a policy equal to the reference is the untrained one */
        CHECK_OK(perpo_listwise_loss(&pc.objective, 4, lp, set.lists[i].ref_logp,
                                     set.lists[i].rewards, &loss, NULL));
        CHECK_NEAR(loss,
                   (set.lists[i].rewards[0] == set.lists[i].rewards[1] &&
                    set.lists[i].rewards[1] == set.lists[i].rewards[2] &&
                    set.lists[i].rewards[2] == set.lists[i].rewards[3])
                       ? 0.0
                       : 0.6931472,
                   1e-4, 0);
    }
    perpo_pref_set_free(&set);
    CHECK(set.lists == NULL);
    /* filtering keeps the lists whose best-minus-worst reward reaches the margin, in order */
    {
        static const float r4[4][3] = { { 0.75f, 0.25f, 0.5f },
                                        { 0.375f, 0.25f, 0.3125f },
                                        { 0.0f, 0.875f, 0.5f },
                                        { 0.625f, 0.625f, 0.625f } };
        perpo_pref_list ls[4];
        int q;
        memset(ls, 0, sizeof ls);
        for (q = 0; q < 4; q++) {
            ls[q].n = 3;
            ls[q].rewards = r4[q];
            ls[q].prompt = resp[q % 2];
        }
        CHECK(perpo_pref_filter(ls, 4, 0.5f) ==
              2); /* margins 0.5, 0.125, 0.875, 0 (exact in float): keeps 0 and 2 */
        CHECK(ls[0].rewards == r4[0] && ls[1].rewards == r4[2]);
        CHECK(perpo_pref_filter(ls, 2, 0.0f) == 2 && ls[0].rewards == r4[0] &&
              ls[1].rewards == r4[2]);
        CHECK(perpo_pref_filter(ls, 2, 0.6f) == 1 && ls[0].rewards == r4[2]);
        CHECK(perpo_pref_filter(ls, 1, 0.9f) == 0);
    }
    /* a response that does not fit, a NaN reward, too many lists per step */
    l.image = d.img[0];
    l.prompt = "red square";
    l.n = 2;
    l.responses = resp;
    l.rewards = rewards;
    l.ref_logp = ref;
    l.truth = NULL;
    ref[0] = ref[1] = -10.0f;
    pc.lists_per_step = 5;
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) ==
          PERPO_ERR_ARG); /* 5 lists x 2 > max_batch 8 */
    pc.lists_per_step = 1;
    pc.optim.total_steps = 1;
    pc.optim.warmup_steps = 1; /* warmup_steps <= total_steps */
    CHECK_OK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL));
    rewards[1] = NAN;
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_NONFINITE);
    rewards[1] = 0.0f;
    resp[1] = "a response far too long to fit in forty text positions with its prompt";
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
    perpo_model_free(m);
}

/* The NLL term on each list's true answer (nll_on_truth): the loss of a step is the listwise
 * loss plus the truth's per-token NLL, the truth is required, and its row must fit. */
static int tp_keep_loss(const perpo_progress *p, void *user) {
    *(float *)user = p->loss;
    return 0;
}
static void test_pref_nll_on_truth(perpo_test *t) {
    static tp_data d;
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL;
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    const char *resp[2] = { "[0.10,0.10,0.50,0.50]", "[0.60,0.60,0.90,0.90]" };
    float rewards[2] = { 0.8f, 0.1f }, ref[2], logp[3], loss = -1.0f, want;
    int tok[3 * 40], tgt[3 * 40];
    size_t nt[3];
    const float *imgs[1];
    perpo_batch b;
    perpo_pref_list l;
    int k;
    pc.optim.lr = 1e-4f; /* the rate this test was tuned with (the default is 1e-5) */
    pc.optim.min_lr = 1e-5f;
    tp_make(&d);
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.max_text = 40;
    c.max_batch = 6;
    CHECK_OK(perpo_model_create(&m, &c, 9));
    if (!m) return;
    /* the log-probs of the two answers and of the truth before the step */
    imgs[0] = d.img[0];
    for (k = 0; k < 3; k++) {
        const char *r = k < 2 ? resp[k] : d.answer[0];
        perpo_text_encode(&c, d.prompt[0], strlen(d.prompt[0]), r, strlen(r), tok + k * 40,
                          tgt + k * 40, &nt[k]);
    }
    b.n_seq = 3;
    b.n_img = 1;
    b.images = imgs;
    b.image_of = (const size_t[]){ 0, 0, 0 };
    b.tokens = tok;
    b.targets = tgt;
    CHECK_OK(perpo_forward(m, &b, logp, NULL));
    ref[0] = logp[0] + 0.5f;
    ref[1] = logp[1] - 0.25f; /* s = (-0.5, 0.25): a non-trivial pair loss */
    l.image = d.img[0];
    l.prompt = d.prompt[0];
    l.n = 2;
    l.responses = resp;
    l.rewards = rewards;
    l.ref_logp = ref;
    l.truth = d.answer[0];
    pc.nll_weight = 0.7f;
    pc.nll_on_truth = 1;
    pc.lists_per_step = 1;
    pc.log_every = 1;
    pc.optim.total_steps = 1;
    pc.optim.warmup_steps = 0;
    CHECK_OK(perpo_listwise_loss(&pc.objective, 2, logp, ref, rewards, &want, NULL));
    want += 0.7f * -logp[2] / (float)nt[2];
    CHECK_OK(perpo_pref_train(m, &l, 1, &pc, tp_keep_loss, &loss));
    CHECK_MSG(fabsf(loss - want) < 1e-4f * (1.0f + fabsf(want)),
              "step loss %.6g, listwise + NLL on the truth %.6g", loss, want);
    pc.lists_per_step = 2; /* 2 x (2 + 1) = 6 fits, 3 lists would not */
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_OK);
    pc.lists_per_step = 3;
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
    pc.lists_per_step = 1;
    l.truth = NULL;
    CHECK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL) == PERPO_ERR_ARG);
    pc.nll_on_truth = 0; /* without the flag the truth is not needed */
    CHECK_OK(perpo_pref_train(m, &l, 1, &pc, NULL, NULL));
    perpo_model_free(m);
}

/* One preference step with per-token mean log-probs (mean_logp = 1) against its definition:
 * two lists of three answers of different lengths; the step's loss must be the mean over the
 * lists of perpo_listwise_loss on logp / length and ref_logp / length (length: the answer's
 * target tokens, as perpo_text_encode counts them), and its gradient the model's backward of
 * dlogp_k = dloss/ds_k / length_k / 2 (2 lists per step), computed here from the same weights. */
static void test_pref_mean_logp_step(perpo_test *t) {
    static tp_data d;
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL, *ref_model = NULL;
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    static const char *resp[2][3] = { { "[0.10,0.10,0.50,0.50]", "[0.6,0.6,0.9,0.9]", "x" },
                                      { "[0.2,0.3]", "[0.25,0.30,0.75,0.80] [0.2,0.3]",
                                        "[0.20,0.30,0.70,0.80]" } };
    static const float rewards[2][3] = { { 0.8f, 0.1f, 0.3f }, { 0.2f, 0.05f, 0.9f } };
    float ref[2][3], logp[6], lp[3], rf[3], g[3], dlogp[6], want = 0.0f, loss = -1.0f, l1;
    int tok[6 * 48], tgt[6 * 48];
    size_t nt[6], i, n;
    const float *imgs[2];
    perpo_batch b;
    perpo_pref_list l[2];
    double worst = 0.0, scale = 0.0;
    int j, k;
    pc.optim.lr = 1e-4f; /* the rate this test was tuned with (the default is 1e-5) */
    pc.optim.min_lr = 1e-5f;
    tp_make(&d);
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.max_text = 48;
    c.max_batch = 6;
    CHECK_OK(perpo_model_create(&m, &c, 11));
    CHECK_OK(perpo_model_create(&ref_model, &c, 11)); /* the same weights */
    if (!m || !ref_model) goto done;
    n = perpo_model_num_params(m);
    /* the log-probs of the six answers under the starting weights, and their lengths */
    for (j = 0; j < 2; j++) {
        imgs[j] = d.img[j];
        for (k = 0; k < 3; k++)
            CHECK_OK(perpo_text_encode(&c, d.prompt[j], strlen(d.prompt[j]), resp[j][k],
                                       strlen(resp[j][k]), tok + (3 * j + k) * 48,
                                       tgt + (3 * j + k) * 48, &nt[3 * j + k]));
    }
    CHECK(nt[2] < nt[0] && nt[0] < nt[4]); /* lengths differ: the mean is not the sum */
    b.n_seq = 6;
    b.n_img = 2;
    b.images = imgs;
    b.image_of = (const size_t[]){ 0, 0, 0, 1, 1, 1 };
    b.tokens = tok;
    b.targets = tgt;
    perpo_zero_grad(ref_model);
    CHECK_OK(perpo_forward(ref_model, &b, logp, NULL));
    for (j = 0; j < 2; j++) {
        for (k = 0; k < 3; k++) { /* s = (-0.5, 0.25, 0.1) per token, times the length */
            float off = k == 0 ? 0.5f : k == 1 ? -0.25f : -0.1f;
            ref[j][k] = logp[3 * j + k] + off * (float)nt[3 * j + k];
            lp[k] = logp[3 * j + k] / (float)nt[3 * j + k];
            rf[k] = ref[j][k] / (float)nt[3 * j + k];
        }
        CHECK_OK(perpo_listwise_loss(&pc.objective, 3, lp, rf, rewards[j], &l1, g));
        want += 0.5f * l1;
        for (k = 0; k < 3; k++) dlogp[3 * j + k] = 0.5f * g[k] / (float)nt[3 * j + k];
        l[j].image = d.img[j];
        l[j].prompt = d.prompt[j];
        l[j].n = 3;
        l[j].responses = resp[j];
        l[j].rewards = rewards[j];
        l[j].ref_logp = ref[j];
        l[j].truth = NULL;
    }
    CHECK_OK(perpo_backward(ref_model, dlogp));
    /* the trainer: one step over both lists; its gradient stays in the model's buffer */
    pc.mean_logp = 1;
    pc.nll_weight = 0.0f;
    pc.lists_per_step = 2;
    pc.log_every = 1;
    pc.optim.total_steps = 1;
    pc.optim.warmup_steps = 0;
    CHECK_OK(perpo_pref_train(m, l, 2, &pc, tp_keep_loss, &loss));
    CHECK_MSG(fabsf(loss - want) <= 1e-5f * (1.0f + fabsf(want)),
              "step loss %.7g, mean of perpo_listwise_loss on logp / length %.7g", loss, want);
    for (i = 0; i < n; i++) {
        double gi = perpo_model_grads(ref_model)[i], di = perpo_model_grads(m)[i] - gi;
        if (fabs(gi) > scale) scale = fabs(gi);
        if (!(fabs(di) <= worst)) worst = fabs(di);
    }
    fprintf(stderr,
            "    mean log-probs, 2 lists x 3 answers of %zu-%zu tokens: loss %.7g vs %.7g, "
            "gradient max |diff| %.3g of %.3g\n",
            nt[2], nt[4], (double)loss, (double)want, worst, scale);
    CHECK_MSG(scale > 0.0 && worst <= 1e-5 * scale,
              "gradient of the step vs backward of dlogp / length: max |diff| %.3g (largest "
              "|gradient| %.3g)",
              worst, scale);
done:
    perpo_model_free(m);
    perpo_model_free(ref_model);
}

/* Preference training stopped at step 10, checkpointed with its optimizer, reloaded and
 * resumed ends bit-identical to the uninterrupted run. */
static int tp_stop_at_10(const perpo_progress *p, void *user) {
    (void)user;
    return p->step == 10;
}
static void test_pref_resume_exact(perpo_test *t) {
    static tp_data d;
    perpo_config c = perpo_config_default();
    perpo_model *base = NULL, *a = NULL, *b = NULL;
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_pref_set set;
    const char *path = "tests_tmp_pref_resume.ckpt";
    pc.optim.lr = 1e-4f; /* the rate this test was tuned with (the default is 1e-5) */
    pc.optim.min_lr = 1e-5f;
    tp_make(&d);
    c.image_h = c.image_w = TP_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 16;
    c.n_heads = 2;
    c.n_vis_layers = 1;
    c.n_dec_layers = 1;
    c.max_text = 40;
    c.max_batch = 16;
    CHECK_OK(perpo_model_create(&base, &c, 4));
    CHECK_OK(perpo_model_create(&a, &c, 4));
    if (!base || !a) {
        perpo_model_free(base);
        perpo_model_free(a);
        return;
    }
    sc.temperature = 1.0f;
    sc.seed = 2;
    CHECK_OK(perpo_pref_sample(base, d.ex, 12, 4, &sc, tp_reward, &d, &set));
    CHECK_OK(perpo_pref_reference(base, set.lists, set.n_lists));
    pc.lists_per_step = 3;
    pc.optim.total_steps = 20;
    pc.optim.warmup_steps = 3;
    pc.optim.lr = 1e-3f;
    pc.nll_weight = 0.5f;
    pc.log_every = 1;
    CHECK_OK(perpo_model_copy_params(a, base));
    CHECK_OK(perpo_pref_train(a, set.lists, set.n_lists, &pc, NULL, NULL));
    CHECK_OK(perpo_pref_train(base, set.lists, set.n_lists, &pc, tp_stop_at_10, NULL));
    CHECK(perpo_optim_step_count(base) == 10); /* the first run really stopped half way */
    CHECK(memcmp(perpo_model_params(a), perpo_model_params(base),
                 perpo_model_num_params(a) * sizeof(float)) != 0);
    CHECK_OK(perpo_checkpoint_save(base, path, PERPO_CKPT_OPTIMIZER));
    CHECK_OK(perpo_model_load(&b, path, NULL));
    remove(path);
    if (b) {
        CHECK(perpo_optim_step_count(b) == 10);
        pc.resume = 1;
        CHECK_OK(perpo_pref_train(b, set.lists, set.n_lists, &pc, NULL, NULL));
        CHECK(perpo_optim_step_count(b) == 20);
        CHECK(memcmp(perpo_model_params(a), perpo_model_params(b),
                     perpo_model_num_params(a) * sizeof(float)) == 0);
    }
    perpo_pref_set_free(&set);
    perpo_model_free(base);
    perpo_model_free(a);
    perpo_model_free(b);
}

const perpo_test_case perpo_tests_pref[] = {
    { "preference pipeline: PerPO moves greedy answers to the rewarded mode",
      test_perpo_fixes_greedy_answers },
    { "the NLL term on each list's true answer: loss, required truth, batch size",
      test_pref_nll_on_truth },
    { "preference step with per-token mean log-probs = perpo_listwise_loss on logp / length",
      test_pref_mean_logp_step },
    { "preference training stopped, saved, loaded, resumed = uninterrupted",
      test_pref_resume_exact },
    { "preference pipeline: PerPO raises the sampled reward on training prompts",
      test_perpo_raises_reward },
    { "reference log-probs, filtering and bad lists", test_pref_reference_and_arguments },
    { NULL, NULL }
};

/* ---- Dense OCR: the same mode flip with transcriptions and the reward 1 - NED ------------- */
#define TO_W       48
#define TO_DENSITY 1  /* two lines of one or two words */
#define TO_TEXT    40 /* buffers and max_text: density 1 holds at most 24 characters */
#define TO_PAGES   16
#ifndef TO_SFT
#define TO_SFT 400
#endif
#ifndef TO_NLL
#define TO_NLL TP_NLL
#endif

typedef struct to_data {
    float img[TO_PAGES][TO_W * TO_W * 3];
    char text[TO_PAGES][TO_TEXT];
    perpo_example ex[2 * TO_PAGES];
} to_data;

static float to_reward(const char *r, size_t len, size_t item, void *user) {
    const to_data *d = (const to_data *)user;
    float v = 0.0f;
    perpo_ocr_reward(r, len, d->text[item], strlen(d->text[item]), &v, NULL);
    return v;
}

/* Mean reward of greedy transcriptions of the pages. */
static double to_greedy_reward(perpo_model *m, to_data *d) {
    perpo_sample_config sc = perpo_sample_default();
    const float *imgs[TO_PAGES];
    const char *prompts[TO_PAGES];
    char out[TO_PAGES][TO_TEXT];
    size_t lens[TO_PAGES];
    perpo_gen_request req;
    double sum = 0.0;
    int i;
    for (i = 0; i < TO_PAGES; i++) {
        imgs[i] = d->img[i];
        prompts[i] = "read";
    }
    req.n_seq = TO_PAGES;
    req.n_img = TO_PAGES;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    if (perpo_generate(m, &req, &sc, &out[0][0], TO_TEXT, lens) != PERPO_OK) return -1.0;
    for (i = 0; i < TO_PAGES; i++) sum += to_reward(out[i], lens[i], (size_t)i, d);
    return sum / TO_PAGES;
}

static double to_score_greedy(perpo_model *m, void *data) {
    return to_greedy_reward(m, (to_data *)data);
}

/* Every page is labelled twice in SFT, once with its transcription and once with another
 * page's. The NLL term here trains on each page's true text (nll_on_truth), the same anchor in
 * all three runs, so what differs between them is the listwise term alone:
 *   PerPO must raise the mean reward (1 - normalized edit distance) of the greedy
 *   transcriptions of those training pages by more than 0.2, and do no worse than the anchor
 *   alone (both reach the same transcriptions at this size: measured 0.563 -> 0.887 for both,
 *   every listed pair ranked right);
 *   with the rewards reversed, the listwise term pulls against the same anchor and must cost
 *   more than 0.1 of reward and 0.3 of the pairs ranked right (measured 0.625, pairs 0.50).
 * On lists like these (a right and a wrong mode) an NLL term on each list's best sample ranks
 * every pair right by itself, so this test anchors on the truth to see the listwise term. */
static void test_perpo_fixes_greedy_transcriptions(perpo_test *t) {
    static to_data d;
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL, *pol = NULL;
    perpo_sft_config tc = perpo_sft_default();
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    double before;
    tp_flip perpo, nll_only, reversed;
    size_t kept;
    int i;
    for (i = 0; i < TO_PAGES; i++) {
        ex_page page;
        ex_page_from_index(31337, (uint64_t)i, TO_W, TO_W, TO_DENSITY, &page);
        ex_page_render(&page, d.img[i]);
        CHECK(page.len < (int)sizeof d.text[i]);
        memcpy(d.text[i], page.text, sizeof d.text[i] - 1);
        d.text[i][sizeof d.text[i] - 1] = 0;
    }
    for (i = 0; i < TO_PAGES; i++) {
        d.ex[2 * i].image = d.img[i];
        d.ex[2 * i].prompt = "read";
        d.ex[2 * i].response = d.text[i];
        d.ex[2 * i + 1] = d.ex[2 * i];
        d.ex[2 * i + 1].response = d.text[(i + 1) % TO_PAGES]; /* the wrong page's text */
    }
    c.image_h = c.image_w = TO_W;
    c.patch_h = c.patch_w = 8;
    c.d_model = 48;
    c.n_heads = 4;
    c.n_vis_layers = 1;
    c.n_dec_layers = 2;
    c.max_text = TO_TEXT;
    c.max_batch = 32;
    CHECK_OK(perpo_model_create(&m, &c, TP_INIT));
    CHECK_OK(perpo_model_create(&pol, &c, TP_INIT));
    if (!m || !pol) {
        perpo_model_free(m);
        perpo_model_free(pol);
        return;
    }
    tc.batch_size = 2 * TO_PAGES;
    tc.optim.lr = 3e-3f;
    tc.optim.min_lr = 3e-4f;
    tc.optim.warmup_steps = 10;
    tc.optim.total_steps = TO_SFT;
    tc.seed = 3;
    CHECK_OK(perpo_sft_train(m, d.ex, 2 * TO_PAGES, &tc, NULL, NULL));
    before = to_greedy_reward(m, &d);
    sc.temperature = 1.0f;
    sc.top_p = TP_TOPP;
    sc.seed = 11;
    {
        perpo_example items[TO_PAGES];
        for (i = 0; i < TO_PAGES; i++) items[i] = d.ex[2 * i];
        CHECK_OK(perpo_pref_sample(m, items, TO_PAGES, 5, &sc, to_reward, &d, &set));
    }
    kept = perpo_pref_filter(set.lists, set.n_lists, 0.05f);
    CHECK(kept >= TO_PAGES / 2);
    CHECK_OK(perpo_pref_reference(m, set.lists, kept));
    for (i = 0; i < (int)kept; i++) /* the NLL term trains on each page's true text */
        set.lists[i].truth = d.text[(size_t)(set.lists[i].image - d.img[0]) / (TO_W * TO_W * 3)];
    perpo = tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TO_NLL, 1, 0, to_score_greedy, &d);
    nll_only = tp_pref_variant(pol, m, set.lists, kept, 1e-6f, TO_NLL, 1, 0, to_score_greedy, &d);
    reversed = tp_pref_variant(pol, m, set.lists, kept, TP_BETA, TO_NLL, 1, 1, to_score_greedy, &d);
    tp_report("greedy 1 - NED on 16 pages trained half on wrong text", kept, before, perpo,
              nll_only, reversed);
    CHECK_MSG(perpo.score > before + 0.2,
              "PerPO did not move the greedy transcriptions: %.3f -> %.3f", before, perpo.score);
    CHECK_MSG(
        perpo.score >= nll_only.score - 0.02 && perpo.ranked >= nll_only.ranked,
        "PerPO does worse than its NLL anchor alone: reward %.3f vs %.3f, ranked %.2f vs %.2f",
        perpo.score, nll_only.score, perpo.ranked, nll_only.ranked);
    CHECK_MSG(reversed.ranked < nll_only.ranked - 0.3 && reversed.score < nll_only.score - 0.1,
              "the listwise term with reversed rewards did not pull against the anchor: ranked "
              "%.2f, reward %.3f vs %.3f",
              reversed.ranked, reversed.score, nll_only.score);
    perpo_pref_set_free(&set);
    perpo_model_free(m);
    perpo_model_free(pol);
}

const perpo_test_case perpo_tests_pref_ocr[] = {
    { "dense OCR: PerPO moves greedy transcriptions to the rewarded text",
      test_perpo_fixes_greedy_transcriptions },
    { NULL, NULL }
};
