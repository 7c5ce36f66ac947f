/* Errors that say what to do: every trap a user's trial found gets a message naming the
 * argument or field, its value and the rule (see "WHY A CALL FAILED" in perpo.h). Each test
 * checks the status (unchanged) and substrings of the message. */

#define TE_FLOATS (8 * 8 * 3)

/* The message must contain every string of the NULL-terminated list. */
static void te_says(perpo_test *t, const char *msg, const char *const *want, int line) {
    for (; *want; want++)
        if (!strstr(msg, *want)) {
            t->failures++;
            fprintf(stderr, "  FAIL tests/t_errors.c:%d: message \"%s\" lacks \"%s\"\n", line, msg,
                    *want);
        }
}
#define TE_SAYS(msg, ...)                                                                          \
    do {                                                                                           \
        const char *const want_[] = { __VA_ARGS__, NULL };                                         \
        te_says(t, (msg), want_, __LINE__);                                                        \
    } while (0)

typedef struct te_data {
    float img[2][TE_FLOATS];
    perpo_example ex[2];
    size_t nan_item; /* te_reward returns NaN for this item's responses */
} te_data;

static void te_make(te_data *d) {
    size_t i, k;
    for (i = 0; i < 2; i++) {
        for (k = 0; k < TE_FLOATS; k++) d->img[i][k] = (float)((k * 7 + i * 3) % 11) / 10.0f;
        d->ex[i].image = d->img[i];
        d->ex[i].prompt = "ab";
        d->ex[i].response = "cd";
    }
    d->nan_item = (size_t)-1;
}

static float te_reward(const char *r, size_t len, size_t item, void *user) {
    const te_data *d = (const te_data *)user;
    (void)r;
    if (item == d->nan_item) return NAN;
    return (float)len; /* equal answers, equal rewards */
}

static perpo_model *te_model(perpo_test *t) {
    perpo_config c = small_config(); /* max_text 8, max_batch 3 */
    perpo_model *m = NULL;
    CHECK_OK(perpo_model_create(&m, &c, 3));
    return m;
}

/* A short SFT run: batches of the 2 examples, no warmup. */
static perpo_sft_config te_sft(int total_steps) {
    perpo_sft_config tc = perpo_sft_default();
    tc.batch_size = 2;
    tc.optim.total_steps = total_steps;
    tc.optim.warmup_steps = 0;
    return tc;
}

/* Default sample config (greedy): N equal answers, the filter keeps no list, and the next call
   says why. */
static void test_error_greedy_sampling(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_pref_set set;
    size_t kept;
    if (!m) return;
    te_make(&d);
    CHECK_OK(perpo_pref_sample(m, d.ex, 2, 3, &sc, te_reward, &d, &set));
    CHECK(strcmp(perpo_model_last_error(m), "") == 0);
    kept = perpo_pref_filter(set.lists, set.n_lists, 0.01f);
    CHECK(kept == 0);
    CHECK(perpo_pref_reference(m, set.lists, kept) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_reference", "no lists", "greedy",
            "set a temperature");
    pc.optim.total_steps = 20;
    CHECK(perpo_pref_train(m, set.lists, kept, &pc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_train", "set a temperature");
    perpo_pref_set_free(&set);
    perpo_model_free(m);
}

/* n x lists_per_step beyond max_batch, at training, sampling and generation. */
static void test_error_max_batch(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_pref_set set;
    char out[4 * 8];
    const float *imgs[4];
    const char *prompts[4] = { "a", "a", "a", "a" };
    perpo_gen_request req;
    if (!m) return;
    te_make(&d);
    sc.temperature = 1.0f;
    CHECK_OK(perpo_pref_sample(m, d.ex, 2, 3, &sc, te_reward, &d, &set));
    CHECK_OK(perpo_pref_reference(m, set.lists, set.n_lists));
    pc.lists_per_step = 2;
    pc.optim.total_steps = 20;
    CHECK(perpo_pref_train(m, set.lists, set.n_lists, &pc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_train", "n 3", "lists_per_step 2", "= 6",
            "max_batch 3", "lower lists_per_step or raise max_batch");
    perpo_pref_set_free(&set);
    CHECK(perpo_pref_sample(m, d.ex, 2, 4, &sc, te_reward, &d, &set) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_sample", "n 4", "max_batch 3");
    imgs[0] = imgs[1] = imgs[2] = imgs[3] = d.img[0];
    req.n_seq = 4;
    req.n_img = 4;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    CHECK(perpo_generate(m, &req, &sc, out, 8, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_generate", "n_seq 4", "max_batch 3");
    perpo_model_free(m);
}

/* A short run with the default warmup; SFT batch_size beyond max_batch. */
static void test_error_schedule_and_batch(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_sft_config tc = perpo_sft_default();
    perpo_pref_set set;
    if (!m) return;
    te_make(&d);
    sc.temperature = 1.0f;
    CHECK_OK(perpo_pref_sample(m, d.ex, 2, 3, &sc, te_reward, &d, &set));
    CHECK_OK(perpo_pref_reference(m, set.lists, set.n_lists));
    pc.lists_per_step = 1;
    pc.optim.total_steps = 3;
    CHECK(perpo_pref_train(m, set.lists, set.n_lists, &pc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_train", "optim.warmup_steps 10", "total_steps 3",
            "lower warmup_steps");
    perpo_pref_set_free(&set);
    tc.batch_size = 2;
    tc.optim.total_steps = 4;
    CHECK(perpo_sft_train(m, d.ex, 2, &tc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_sft_train", "optim.warmup_steps 20", "total_steps 4");
    tc.optim.warmup_steps = 0;
    tc.batch_size = 32;
    CHECK(perpo_sft_train(m, d.ex, 2, &tc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_sft_train", "batch_size 32", "max_batch 3");
    CHECK(perpo_optim_step_count(m) == 0);
    perpo_model_free(m);
}

/* The prompt limit is max_text - 4 bytes: one byte more is refused, saying so. */
static void test_error_prompt_limit(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    char out[8];
    const float *imgs[1];
    const char *prompts[1];
    perpo_gen_request req;
    if (!m) return;
    te_make(&d);
    imgs[0] = d.img[0];
    req.n_seq = 1;
    req.n_img = 1;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    prompts[0] = "abcd"; /* max_text 8 - 4 */
    CHECK_OK(perpo_generate(m, &req, &sc, out, sizeof out, NULL));
    CHECK(strcmp(perpo_model_last_error(m), "") == 0);
    prompts[0] = "abcde"; /* max_text 8 - 3 */
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_generate", "prompts[0] of 5 bytes", "max_text 8 - 4");
    d.ex[1].prompt = "abcde";
    CHECK(perpo_pref_sample(m, d.ex, 2, 2, &sc, te_reward, &d, NULL) == PERPO_ERR_ARG);
    {
        perpo_pref_set set;
        CHECK(perpo_pref_sample(m, d.ex, 2, 2, &sc, te_reward, &d, &set) == PERPO_ERR_ARG);
        TE_SAYS(perpo_model_last_error(m), "perpo_pref_sample", "item 1", "5 bytes",
                "max_text 8 - 4");
    }
    perpo_model_free(m);
}

/* Config fields: which one, its value and the rule; perpo_model_create refuses the same. */
static void test_error_config_fields(perpo_test *t) {
    perpo_config c = perpo_config_default();
    perpo_model *m = NULL;
    char err[PERPO_ERROR_MAX];
    c.image_h = c.image_w = 18;
    c.patch_h = c.patch_w = 4;
    CHECK(perpo_config_validate(&c) == PERPO_ERR_ARG);
    CHECK(perpo_config_validate_err(&c, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "patch_h 4", "image_h 18", "divide");
    CHECK(perpo_model_create(&m, &c, 1) == PERPO_ERR_ARG && !m);
    c = perpo_config_default();
    c.n_heads = 3;
    CHECK(perpo_config_validate_err(&c, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "n_heads 3", "divide d_model 128");
    c = perpo_config_default();
    CHECK_OK(perpo_config_validate_err(&c, err, sizeof err));
    CHECK(err[0] == 0);
    CHECK_OK(perpo_config_validate_err(&c, NULL, 0));
    /* a buffer too small still gets a NUL-terminated start of the line */
    c.max_text = 2;
    CHECK(perpo_config_validate_err(&c, err, 8) == PERPO_ERR_ARG);
    CHECK(strlen(err) == 7);
}

/* A reward callback returning NaN: which item and which response. */
static void test_error_reward_nan(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    if (!m) return;
    te_make(&d);
    d.nan_item = 1;
    set.n_lists = 7; /* a failed call leaves the set empty, also for a NULL model */
    CHECK(perpo_pref_sample(NULL, d.ex, 2, 2, &sc, te_reward, &d, &set) == PERPO_ERR_ARG);
    CHECK(set.n_lists == 0 && set.lists == NULL);
    CHECK(perpo_pref_sample(m, d.ex, 2, 2, &sc, te_reward, &d, &set) == PERPO_ERR_NONFINITE);
    CHECK(!strchr(perpo_model_last_error(m), '\n')); /* one line, whatever the response held */
    CHECK(set.n_lists == 0 && set.lists == NULL);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_sample", "reward callback", "nan",
            "item 1 response 0");
    perpo_model_free(m);
}

/* A missing checkpoint: the path and the system's reason. A weights-only checkpoint cannot be
   resumed. */
static void test_error_checkpoints(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t), *l = NULL;
    perpo_sft_config tc = perpo_sft_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    char err[PERPO_ERROR_MAX];
    const char *path = "tests_tmp_errors.ckpt";
    if (!m) return;
    te_make(&d);
    CHECK(perpo_model_load_err(&l, "no_such_dir/none.ckpt", NULL, err, sizeof err) == PERPO_ERR_IO);
    CHECK(!l);
    TE_SAYS(err, "perpo_model_load", "no_such_dir/none.ckpt", strerror(ENOENT));
    CHECK(perpo_model_load(&l, "no_such_dir/none.ckpt", NULL) == PERPO_ERR_IO);
    /* saving: the path and the system's reason; a folder is never replaced; unknown flags */
    CHECK(perpo_checkpoint_save_err(m, "no_such_dir/new.ckpt", 0, err, sizeof err) == PERPO_ERR_IO);
    TE_SAYS(err, "perpo_checkpoint_save", "no_such_dir/new.ckpt", "cannot create",
            strerror(ENOENT));
    CHECK(perpo_checkpoint_save_err(m, ".", 0, err, sizeof err) == PERPO_ERR_IO);
    TE_SAYS(err, "perpo_checkpoint_save", ". exists and is not a regular file", "nothing written");
    CHECK(perpo_checkpoint_save_err(m, path, 4u, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "flags 0x4", "PERPO_CKPT_OPTIMIZER");
    CHECK_OK(perpo_checkpoint_save_err(m, path, 0, err, sizeof err));
    CHECK(err[0] == 0);
    CHECK_OK(perpo_model_load_err(&l, path, NULL, err, sizeof err));
    CHECK(err[0] == 0);
    if (l) {
        tc = te_sft(2);
        tc.resume = 1;
        CHECK(perpo_sft_train(l, d.ex, 2, &tc, NULL, NULL) == PERPO_ERR_ARG);
        TE_SAYS(perpo_model_last_error(l), "perpo_sft_train", "resume 1", "without optimizer state",
                "PERPO_CKPT_OPTIMIZER");
        sc.temperature = 1.0f;
        CHECK_OK(perpo_pref_sample(l, d.ex, 2, 3, &sc, te_reward, &d, &set));
        CHECK_OK(perpo_pref_reference(l, set.lists, set.n_lists));
        pc.lists_per_step = 1;
        pc.optim.total_steps = 2;
        pc.optim.warmup_steps = 0;
        pc.resume = 1;
        CHECK(perpo_pref_train(l, set.lists, set.n_lists, &pc, NULL, NULL) == PERPO_ERR_ARG);
        TE_SAYS(perpo_model_last_error(l), "perpo_pref_train", "without optimizer state");
        perpo_pref_set_free(&set);
        tc.resume = 0; /* a fresh schedule is fine, and resume is then allowed again */
        CHECK_OK(perpo_sft_train(l, d.ex, 2, &tc, NULL, NULL));
        CHECK(strcmp(perpo_model_last_error(l), "") == 0);
        tc.resume = 1;
        tc.optim.total_steps = 3;
        CHECK_OK(perpo_sft_train(l, d.ex, 2, &tc, NULL, NULL));
        CHECK(perpo_optim_step_count(l) == 3);
        perpo_model_free(l);
        l = NULL;
    }
    /* with the optimizer state, resume is fine */
    CHECK_OK(perpo_checkpoint_save(m, path, PERPO_CKPT_OPTIMIZER));
    CHECK_OK(perpo_model_load(&l, path, NULL));
    remove(path);
    if (l) {
        tc.resume = 1;
        tc.optim.total_steps = 2;
        CHECK_OK(perpo_sft_train(l, d.ex, 2, &tc, NULL, NULL));
        perpo_model_free(l);
    }
    perpo_model_free(m);
}

/* Images are [0,1]: a 0-255 image is refused, naming the example. */
static void test_error_image_range(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_sft_config tc = perpo_sft_default();
    perpo_pref_set set;
    char out[8];
    const float *imgs[1];
    const char *prompts[1] = { "a" };
    perpo_gen_request req;
    if (!m) return;
    te_make(&d);
    d.img[1][5] = 7.0f;
    tc = te_sft(2);
    CHECK(perpo_sft_train(m, d.ex, 2, &tc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_sft_train", "example 1", "value 7", "[0,1]");
    CHECK(perpo_optim_step_count(m) == 0);
    CHECK(perpo_pref_sample(m, d.ex, 2, 2, &sc, te_reward, &d, &set) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_sample", "item 1", "value 7");
    imgs[0] = d.img[1];
    req.n_seq = 1;
    req.n_img = 1;
    req.images = imgs;
    req.image_of = NULL;
    req.prompts = prompts;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_generate", "images[0]", "value 7");
    d.img[1][5] = -0.5f;
    CHECK(perpo_generate(m, &req, &sc, out, sizeof out, NULL) == PERPO_ERR_ARG);
    d.img[1][5] = 1.0f; /* the ends of the range are fine */
    d.img[1][6] = 0.0f;
    CHECK_OK(perpo_generate(m, &req, &sc, out, sizeof out, NULL));
    perpo_model_free(m);
}

/* A stream whose example 3 has a 0-255 image (slot 1 of the second batch of 2): the message
   names the example index the trainer passed to next, never the batch slot. */
static perpo_status te_stream(size_t index, size_t slot, perpo_example *out, void *user) {
    const te_data *d = (const te_data *)user;
    (void)slot;
    *out = d->ex[index == 3 ? 1 : 0];
    return PERPO_OK;
}

/* Images the user passed are named by the user's index: a stream's example index, an item of
   perpo_pref_sample_range (not its place in a generation chunk), with NaN as with 0-255 values;
   every call that takes an image says it in the same words. */
static void test_error_image_item_index(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sft_config tc = te_sft(3);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_set set;
    const char *msg;
    if (!m) return;
    te_make(&d);
    d.img[1][9] = 255.0f;
    CHECK(perpo_sft_train_stream(m, te_stream, &d, &tc, NULL, NULL) == PERPO_ERR_ARG);
    msg = perpo_model_last_error(m);
    TE_SAYS(msg, "perpo_sft_train_stream", "example 3: image value 255 at float 9", "outside [0,1]",
            "divide 0-255 values by 255");
    CHECK(!strstr(msg, "images[1]") && !strstr(msg, "slot"));
    CHECK(perpo_optim_step_count(m) == 1); /* the step before example 3 was taken */
    d.img[1][9] = NAN;
    CHECK(perpo_sft_train_stream(m, te_stream, &d, &tc, NULL, NULL) == PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_sft_train_stream", "example 3: image value nan",
            "not finite");
    /* items[1] alone: the first list of its chunk, named as item 1 */
    CHECK(perpo_pref_sample_range(m, d.ex, 1, 1, 2, &sc, te_reward, &d, &set) ==
          PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_sample", "item 1: image value nan at float 9");
    CHECK(perpo_sft_train(m, d.ex, 2, &tc, NULL, NULL) == PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_sft_train", "example 1: image value nan");
    CHECK(perpo_optim_step_count(m) == 1); /* refused before the model was touched */
    perpo_model_free(m);
}

/* The objective alone: each refused input named, with its value and the rule; NaN by array
   and index; "" after success; a trainer names its objective's fields as objective.x. */
static void test_error_objectives(perpo_test *t) {
    perpo_objective_config oc = perpo_objective_default(PERPO_OBJ_PERPO);
    const float lp[3] = { -1.0f, -2.0f, -3.0f }, rw[3] = { 1.0f, 0.5f, 0.0f };
    float ref[3] = { -1.5f, -2.5f, -3.5f }, loss, grad[3];
    perpo_pref_metrics pm;
    char err[PERPO_ERROR_MAX];
    CHECK_OK(perpo_listwise_loss_err(&oc, 3, lp, ref, rw, &loss, grad, err, sizeof err));
    CHECK(err[0] == 0);
    oc.beta = 0.0f;
    CHECK(perpo_listwise_loss_err(&oc, 3, lp, ref, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_listwise_loss", "beta 0", "(0, 1000]");
    CHECK(perpo_listwise_loss(&oc, 3, lp, ref, rw, &loss, grad) == PERPO_ERR_ARG);
    oc = perpo_objective_default(PERPO_OBJ_DPO);
    oc.label_smoothing = 0.7f;
    CHECK(perpo_listwise_loss_err(&oc, 3, lp, ref, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "label_smoothing 0.7", "[0, 0.5]");
    oc = perpo_objective_default(PERPO_OBJ_PERPO);
    CHECK(perpo_listwise_loss_err(&oc, 300, lp, ref, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "n 300", "PERPO_MAX_LIST 256");
    ref[2] = NAN;
    CHECK(perpo_listwise_loss_err(&oc, 3, lp, ref, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_NONFINITE);
    TE_SAYS(err, "perpo_listwise_loss", "ref_logp[2] is nan", "finite");
    CHECK(perpo_listwise_loss_err(&oc, 3, lp, NULL, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "ref_logp is NULL");
    ref[2] = -3.5f;
    ref[0] = 3e38f; /* the best response at s_0 = -3e38, times beta 1000: beyond float range */
    oc.beta = 1000.0f;
    CHECK(perpo_listwise_loss_err(&oc, 3, lp, ref, rw, &loss, grad, err, sizeof err) ==
          PERPO_ERR_NONFINITE);
    TE_SAYS(err, "beyond float range", "lower beta (1000)");
    CHECK(perpo_preference_metrics_err(1000.0f, 3, lp, ref, rw, &pm, err, sizeof err) ==
          PERPO_ERR_NONFINITE);
    TE_SAYS(err, "perpo_preference_metrics", "beyond float range");
    ref[0] = -1.5f;
    CHECK(perpo_preference_metrics_err(-1.0f, 3, lp, ref, rw, &pm, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_preference_metrics", "beta -1", "(0, 1000]");
    CHECK(perpo_preference_metrics_err(0.1f, 3, lp, ref, rw, NULL, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "out is NULL");
    CHECK_OK(perpo_preference_metrics_err(0.1f, 3, lp, ref, rw, &pm, err, sizeof err));
    CHECK(err[0] == 0);
    CHECK_OK(perpo_preference_metrics(0.1f, 3, lp, ref, rw, &pm));
}

/* perpo_pref_train names the objective's field, and lists without reference log-probs. */
static void test_error_pref_train_objective(perpo_test *t) {
    te_data d;
    perpo_model *m = te_model(t);
    perpo_sample_config sc = perpo_sample_default();
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    perpo_pref_set set;
    if (!m) return;
    te_make(&d);
    sc.temperature = 1.0f;
    CHECK_OK(perpo_pref_sample(m, d.ex, 2, 3, &sc, te_reward, &d, &set));
    pc.lists_per_step = 1;
    pc.optim.total_steps = 20;
    pc.objective.gamma = -1.0f;
    CHECK(perpo_pref_train(m, set.lists, set.n_lists, &pc, NULL, NULL) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_train", "objective.gamma -1", "[0, 100]");
    pc.objective.gamma = 0.5f;
    ((float *)set.lists[1].ref_logp)[2] = NAN; /* (sampling leaves them 0: not computed yet) */
    CHECK(perpo_pref_train(m, set.lists, set.n_lists, &pc, NULL, NULL) == PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_pref_train", "list 1", "ref_logp[2] is nan",
            "perpo_pref_reference");
    CHECK(perpo_optim_step_count(m) == 0);
    perpo_pref_set_free(&set);
    perpo_model_free(m);
}

/* Your own loop: text encoding, the optimizer's config and step, and copying weights between
   models say which argument or field, its value and the rule. */
static void test_error_own_loop(perpo_test *t) {
    perpo_config c = small_config(), c2; /* max_text 8 */
    perpo_model *m = te_model(t), *o = NULL;
    perpo_optim_config oc = perpo_optim_default();
    int tok[8], tgt[8];
    char err[PERPO_ERROR_MAX];
    float gn;
    if (!m) return;
    CHECK(perpo_text_encode_err(&c, "abc", 3, "toolong", 7, tok, tgt, NULL, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_text_encode", "prompt 3 + response 7 bytes", "max_text 8 - 3",
            "raise max_text");
    CHECK(perpo_text_encode_err(&c, NULL, 2, "x", 1, tok, tgt, NULL, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "prompt (2 bytes)", "NULL only with length 0");
    c.max_text = 3;
    CHECK(perpo_text_encode_err(&c, "", 0, "", 0, tok, tgt, NULL, err, sizeof err) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "max_text 3", ">= 4");
    c.max_text = 8;
    CHECK_OK(perpo_text_encode_err(&c, "ab", 2, "xyz", 3, tok, tgt, NULL, err, sizeof err));
    CHECK(err[0] == 0);

    oc.min_lr = 0.01f;
    CHECK(perpo_optim_validate_err(&oc, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_optim_validate", "min_lr 0.01", "[0, lr 0.001]");
    CHECK(perpo_optim_step(m, &oc, 1.0f, &gn) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_optim_step", "min_lr 0.01");
    oc = perpo_optim_default();
    CHECK_OK(perpo_optim_validate_err(&oc, err, sizeof err));
    CHECK(err[0] == 0);
    CHECK(perpo_optim_step(m, &oc, 0.0f, &gn) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_optim_step", "grad_scale 0", "> 0");
    perpo_zero_grad(m);
    perpo_model_grads(m)[11] = NAN;
    CHECK(perpo_optim_step(m, &oc, 1.0f, &gn) == PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_optim_step", "step 0", "gradient norm is nan",
            "nothing changed");
    perpo_zero_grad(m);
    CHECK_OK(perpo_optim_step(m, &oc, 1.0f, &gn));
    CHECK(strcmp(perpo_model_last_error(m), "") == 0);

    c2 = small_config();
    c2.max_batch = 5; /* may differ */
    c2.mlp_mult = 3;
    CHECK_OK(perpo_model_create(&o, &c2, 4));
    if (o) {
        CHECK(perpo_model_copy_params(o, m) == PERPO_ERR_ARG);
        TE_SAYS(perpo_model_last_error(o), "perpo_model_copy_params", "mlp_mult differs",
                "dst 3, src", "but max_batch and alloc_ctx");
        CHECK(perpo_model_copy_params(o, NULL) == PERPO_ERR_ARG);
        TE_SAYS(perpo_model_last_error(o), "src is NULL");
        perpo_model_free(o);
        o = NULL;
    }
    c2.mlp_mult = small_config().mlp_mult;
    CHECK_OK(perpo_model_create(&o, &c2, 4));
    if (o) {
        CHECK_OK(perpo_model_copy_params(o, m));
        CHECK(strcmp(perpo_model_last_error(o), "") == 0);
        perpo_model_free(o);
    }
    perpo_model_free(m);
}

/* perpo_share: which of world and rank is out of range. */
/* perpo_backward: a backward needs its forward, and finite upstream gradients. */
static void test_error_backward(perpo_test *t) {
    perpo_model *m = te_model(t);
    const perpo_config *c;
    float img[TE_FLOATS], dlogp[2] = { 1.0f, NAN }, lp[2];
    const float *imgs[2];
    int tok[2][8], tgt[2][8];
    perpo_batch b;
    size_t k;
    if (!m) return;
    c = perpo_model_config(m);
    CHECK(perpo_backward(m, dlogp) == PERPO_ERR_ARG);
    TE_SAYS(perpo_model_last_error(m), "perpo_backward", "call perpo_forward first");
    for (k = 0; k < TE_FLOATS; k++) img[k] = (float)(k % 5) / 4.0f;
    imgs[0] = imgs[1] = img;
    for (k = 0; k < 2; k++) CHECK_OK(perpo_text_encode(c, "ab", 2, "cd", 2, tok[k], tgt[k], NULL));
    b.n_seq = 2;
    b.n_img = 2;
    b.images = imgs;
    b.image_of = NULL;
    b.tokens = &tok[0][0];
    b.targets = &tgt[0][0];
    CHECK_OK(perpo_forward(m, &b, lp, NULL));
    CHECK(perpo_backward(m, dlogp) == PERPO_ERR_NONFINITE);
    TE_SAYS(perpo_model_last_error(m), "perpo_backward", "dlogp[1] is nan", "finite");
    dlogp[1] = 0.5f;
    CHECK_OK(perpo_backward(m, dlogp));
    CHECK(strcmp(perpo_model_last_error(m), "") == 0);
    perpo_model_free(m);
}

static void test_error_share(perpo_test *t) {
    size_t first = 0, count = 0;
    char err[PERPO_ERROR_MAX];
    CHECK(perpo_share_err(10, 4, 4, &first, &count, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_share", "rank 4", "[0, world 4)");
    CHECK(perpo_share_err(10, 0, 0, &first, &count, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_share", "world 0", "[1, PERPO_MAX_WORLD 4096]");
    CHECK(perpo_share_err(10, 0, 1, NULL, &count, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "first or count is NULL");
    CHECK(perpo_share(10, 4, 4, &first, &count) == PERPO_ERR_ARG);
    CHECK_OK(perpo_share_err(10, 3, 4, &first, &count, err, sizeof err));
    CHECK(err[0] == 0 && first == 8 && count == 2);
}

/* The OCR metrics: which output or string, and its length. */
static void test_error_ocr_metrics(perpo_test *t) {
    char err[PERPO_ERROR_MAX];
    size_t dist;
    float v, p;
    perpo_ocr_scores sc;
    CHECK(perpo_ocr_reward_err("abc", 3, NULL, 5, &v, err, sizeof err, NULL) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_ocr_reward", "ref is NULL with length 5", "NULL only with length 0");
    CHECK(perpo_ocr_reward_err("abc", 3, "abd", 3, NULL, err, sizeof err, NULL) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_ocr_reward", "reward is NULL");
    CHECK(perpo_edit_distance_err(NULL, 2, "ab", 2, &dist, err, sizeof err, NULL) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_edit_distance", "a is NULL with length 2");
    CHECK(perpo_normalized_edit_distance_err("a", 1, "ab", 2, NULL, err, sizeof err, NULL) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_normalized_edit_distance", "ned is NULL");
    CHECK(perpo_word_scores_err("a b", 3, NULL, 1, &p, NULL, NULL, NULL, err, sizeof err, NULL) ==
          PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_word_scores", "ref is NULL with length 1");
    CHECK(perpo_ocr_score_err(NULL, 4, "x", 1, &sc, err, sizeof err, NULL) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_ocr_score", "hyp is NULL with length 4");
    CHECK(perpo_ocr_score_err("a", 1, "x", 1, NULL, err, sizeof err, NULL) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_ocr_score", "out is NULL");
    CHECK_OK(perpo_ocr_score_err("a cat", 5, "a cap", 5, &sc, err, sizeof err, NULL));
    CHECK(err[0] == 0);
    CHECK_OK(perpo_edit_distance_err("kitten", 6, "sitting", 7, &dist, err, sizeof err, NULL));
    CHECK(dist == 3 && err[0] == 0);
    CHECK_OK(perpo_ocr_reward("abc", 3, "abd", 3, &v, NULL));
}

/* perpo_model_create_err says why create refused: the config field as perpo_config_validate_err
   words it, under the call's name; "" on success. (Which allocation of how many bytes failed:
   tests/alloc_fail.c, which fails each one in turn.) */
static void test_error_model_create(perpo_test *t) {
    perpo_config c = small_config();
    perpo_model *m = NULL;
    char err[PERPO_ERROR_MAX];
    c.max_batch = 0;
    CHECK(perpo_model_create_err(&m, &c, 1, err, sizeof err) == PERPO_ERR_ARG && !m);
    TE_SAYS(err, "perpo_model_create: max_batch 0", "[1, 65536]");
    CHECK(perpo_model_create_err(NULL, &c, 1, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_model_create: out is NULL");
    CHECK(perpo_model_create_err(&m, NULL, 1, err, sizeof err) == PERPO_ERR_ARG);
    TE_SAYS(err, "perpo_model_create: cfg is NULL");
    c.max_batch = 3;
    CHECK_OK(perpo_model_create_err(&m, &c, 1, err, sizeof err));
    CHECK(m && err[0] == 0);
    perpo_model_free(m);
}

/* The preference default's learning rate is the one the project's experiments use. */
static void test_error_pref_default_lr(perpo_test *t) {
    perpo_pref_config pc = perpo_pref_default(PERPO_OBJ_PERPO);
    CHECK(pc.optim.lr == 1e-5f);
    CHECK(pc.optim.min_lr <= pc.optim.lr);
    CHECK_OK(perpo_optim_validate(&pc.optim));
}

const perpo_test_case perpo_tests_errors[] = {
    { "errors: perpo_backward without its forward, or with a NaN gradient, says which",
      test_error_backward },
    { "errors: greedy sampling leaves no lists, and the message says set a temperature",
      test_error_greedy_sampling },
    { "errors: n x lists_per_step, n and n_seq beyond max_batch are named", test_error_max_batch },
    { "errors: warmup beyond total_steps (PerPO, SFT), SFT batch_size beyond max_batch",
      test_error_schedule_and_batch },
    { "errors: the prompt limit is max_text - 4 bytes, and the message says so",
      test_error_prompt_limit },
    { "errors: config validation names the field, its value and the rule",
      test_error_config_fields },
    { "errors: a NaN reward names its item and response", test_error_reward_nan },
    { "errors: missing checkpoint path and reason; resume without optimizer state refused",
      test_error_checkpoints },
    { "errors: images outside [0,1] refused, naming the example", test_error_image_range },
    { "errors: images outside [0,1] or NaN named by the user's index (stream example, item)",
      test_error_image_item_index },
    { "errors: listwise loss and preference metrics name the field, array and index",
      test_error_objectives },
    { "errors: perpo_pref_train names objective fields and a non-finite ref_logp",
      test_error_pref_train_objective },
    { "errors: text encoding, optimizer config and step, copying weights: what and why",
      test_error_own_loop },
    { "errors: perpo_share names world or rank", test_error_share },
    { "errors: OCR metrics name the NULL output or string and its length", test_error_ocr_metrics },
    { "errors: perpo_model_create_err names the config field", test_error_model_create },
    { "errors: perpo_pref_default's learning rate is 1e-5", test_error_pref_default_lr },
    { NULL, NULL }
};
