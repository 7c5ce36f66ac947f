/* The committed pretrained checkpoint still does what its record says. examples/models/
 * grounding_sft.ckpt.json (written by `make pretrain`) holds, under "regression", the seed base
 * of the validation split and the checkpoint's greedy Acc@0.5 on its first 200 scenes; this
 * test scores the same scenes again with this build. Builds round differently (instruction
 * set, thread count, compiler), which moves a few borderline boxes across IoU 0.5, hence 1.5
 * points of slack; a kernel change that breaks the trained model lands far below. */

#define TC_CKPT "examples/models/grounding_sft.ckpt"
#define TC_W 64

/* The number after "key": in text (the first one after from), or -1 when it is missing. */
static double tc_json_number(const char *text, const char *from, const char *key) {
    const char *p = strstr(text, from);
    char pattern[64];
    double v;
    if (!p) return -1.0;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    p = strstr(p, pattern);
    if (!p) return -1.0;
    p += strlen(pattern);
    while (*p == ' ' || *p == '"') p++;
    return sscanf(p, "%lf", &v) == 1 ? v : -1.0;
}

static char *tc_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    buf = n > 0 ? (char *)malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_grounding_checkpoint_regression(perpo_test *t) {
    perpo_model *m = NULL;
    char *record = tc_read_text(TC_CKPT ".json");
    double recorded;
    uint64_t base;
    int n, i, j, hits = 0;
    static float img[32][TC_W * TC_W * 3];
    CHECK_MSG(record != NULL, "cannot read %s.json (run from the repository root)", TC_CKPT);
    if (!record) return;
    recorded = tc_json_number(record, "\"regression\"", "acc_at_0.5");
    n = (int)tc_json_number(record, "\"regression\"", "examples");
    { /* the base is a 64-bit integer written as a string: read it exactly */
        const char *p = strstr(record, "\"split_base\"");
        unsigned long long b = 0;
        CHECK(p && sscanf(p, "\"split_base\": \"%llu\"", &b) == 1);
        base = (uint64_t)b;
    }
    CHECK(recorded >= 0.0 && n > 0);
    CHECK_OK(perpo_model_load(&m, TC_CKPT));
    if (!m || recorded < 0.0 || n <= 0) { perpo_model_free(m); free(record); return; }
    CHECK(perpo_model_config(m)->image_w == TC_W && perpo_model_config(m)->image_h == TC_W);
    for (i = 0; i < n; i += 32) {
        int cnt = n - i < 32 ? n - i : 32;
        const float *imgs[32];
        const char *prompts[32];
        char prompt[32][48], out[32][48];
        float box[32][4];
        size_t lens[32];
        perpo_gen_request req;
        perpo_sample_config sc = perpo_sample_default();
        for (j = 0; j < cnt; j++) {
            ex_scene s;
            ex_scene_from_index(base, (uint64_t)(i + j), TC_W, TC_W, &s);
            ex_scene_render(&s, img[j]);
            ex_scene_prompt(&s, prompt[j], sizeof prompt[j]);
            memcpy(box[j], s.box, sizeof s.box);
            imgs[j] = img[j]; prompts[j] = prompt[j];
        }
        req.n_seq = (size_t)cnt; req.n_img = (size_t)cnt; req.images = imgs; req.image_of = NULL; req.prompts = prompts;
        CHECK_OK(perpo_generate(m, &req, &sc, &out[0][0], sizeof out[0], lens));
        for (j = 0; j < cnt; j++) hits += perpo_grounding_reward(out[j], lens[j], box[j], TC_W, TC_W) >= 0.5f;
    }
    fprintf(stderr, "    greedy Acc@0.5 on %d validation scenes: %.1f%% (recorded %.1f%%)\n", n, 100.0 * hits / n, 100.0 * recorded);
    CHECK_MSG(fabs((double)hits / n - recorded) <= 0.015, "the checkpoint scores %.1f%%, its record says %.1f%%",
              100.0 * hits / n, 100.0 * recorded);
    perpo_model_free(m);
    free(record);
}

const perpo_test_case perpo_tests_checkpoints[] = {
    {"the committed grounding checkpoint scores what its record says (200 validation scenes)",
     test_grounding_checkpoint_regression},
    {NULL, NULL}};
