/* The committed pretrained checkpoints still do what their records say. examples/models/
 * TASK_sft*.ckpt.json (written by `make pretrain`, `pretrain-stream`, `pretrain-ocr`) holds, under
 * "regression", the seed base of the validation split and the checkpoint's greedy score on its
 * first 200 examples; these tests score the same examples again with this build. Builds round
 * differently (instruction set, thread count, compiler), which moves a few borderline answers,
 * hence some slack (1.5 points of Acc@0.5; 0.02 of mean edit distance); a kernel change that
 * breaks a trained model lands far outside it. */

#define TC_CKPT       "examples/models/grounding_sft.ckpt"       /* make pretrain-stream */
#define TC_CKPT_K2048 "examples/models/grounding_sft_k2048.ckpt" /* make pretrain: the demo's */
#define TC_W          64
#define TC_OCR_CKPT   "examples/models/dense_ocr_sft.ckpt"
#define TC_OCR_W      60 /* examples/dense_ocr.c: 60x64 pages, density = index % 4, prompt "read" */
#define TC_OCR_H      64

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
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = n > 0 ? (char *)malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

/* The checkpoint at path and its record's "regression" entry: the value of `key`, the number
   of examples and the split's seed base. Returns the model, or NULL (with a failed check). */
static perpo_model *tc_load_with_record(perpo_test *t, const char *path, const char *key,
                                        double *recorded, int *n, uint64_t *base) {
    perpo_model *m = NULL;
    char json[256];
    char *record;
    snprintf(json, sizeof json, "%s.json", path);
    record = tc_read_text(json);
    CHECK_MSG(record != NULL, "cannot read %s (run from the repository root)", json);
    if (!record) return NULL;
    *recorded = tc_json_number(record, "\"regression\"", key);
    *n = (int)tc_json_number(record, "\"regression\"", "examples");
    { /* the base is a 64-bit integer written as a string: read it exactly */
        const char *p = strstr(record, "\"split_base\"");
        unsigned long long b = 0;
        CHECK(p && sscanf(p, "\"split_base\": \"%llu\"", &b) == 1);
        *base = (uint64_t)b;
    }
    free(record);
    CHECK(*recorded >= 0.0 && *n > 0);
    CHECK_OK(perpo_model_load(&m, path, NULL));
    if (m && (*recorded < 0.0 || *n <= 0)) {
        perpo_model_free(m);
        m = NULL;
    }
    return m;
}

static void tc_grounding_regression(perpo_test *t, const char *path) {
    double recorded;
    uint64_t base;
    int n, i, j, hits = 0;
    static float img[32][TC_W * TC_W * 3];
    perpo_model *m = tc_load_with_record(t, path, "acc_at_0.5", &recorded, &n, &base);
    if (!m) return;
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
            imgs[j] = img[j];
            prompts[j] = prompt[j];
        }
        req.n_seq = (size_t)cnt;
        req.n_img = (size_t)cnt;
        req.images = imgs;
        req.image_of = NULL;
        req.prompts = prompts;
        CHECK_OK(perpo_generate(m, &req, &sc, &out[0][0], sizeof out[0], lens));
        for (j = 0; j < cnt; j++)
            hits += perpo_grounding_reward(out[j], lens[j], box[j], TC_W, TC_W) >= 0.5f;
    }
    fprintf(stderr, "    greedy Acc@0.5 on %d validation scenes: %.1f%% (recorded %.1f%%)\n", n,
            100.0 * hits / n, 100.0 * recorded);
    CHECK_MSG(fabs((double)hits / n - recorded) <= 0.015,
              "the checkpoint scores %.1f%%, its record says %.1f%%", 100.0 * hits / n,
              100.0 * recorded);
    perpo_model_free(m);
}

static void test_grounding_checkpoint_regression(perpo_test *t) {
    tc_grounding_regression(t, TC_CKPT);
}
static void test_grounding_k2048_checkpoint_regression(perpo_test *t) {
    tc_grounding_regression(t, TC_CKPT_K2048);
}

static void test_ocr_checkpoint_regression(perpo_test *t) {
    double recorded, ned = 0.0;
    uint64_t base;
    int n, i, j;
    static float img[32][TC_OCR_W * TC_OCR_H * 3];
    static char text[32][96];
    perpo_model *m = tc_load_with_record(t, TC_OCR_CKPT, "edit_distance", &recorded, &n, &base);
    if (!m) return;
    CHECK(perpo_model_config(m)->image_w == TC_OCR_W && perpo_model_config(m)->image_h == TC_OCR_H);
    for (i = 0; i < n; i += 32) {
        int cnt = n - i < 32 ? n - i : 32;
        const float *imgs[32];
        const char *prompts[32];
        static char out[32][96];
        size_t lens[32];
        perpo_gen_request req;
        perpo_sample_config sc = perpo_sample_default();
        for (j = 0; j < cnt; j++) {
            ex_page p;
            CHECK_OK(
                ex_page_from_index(base, (uint64_t)(i + j), TC_OCR_W, TC_OCR_H, (i + j) % 4, &p));
            ex_page_render(&p, img[j]);
            CHECK(p.len < (int)sizeof text[j]);
            memcpy(text[j], p.text, sizeof text[j] - 1);
            text[j][sizeof text[j] - 1] = 0;
            imgs[j] = img[j];
            prompts[j] = "read";
        }
        req.n_seq = (size_t)cnt;
        req.n_img = (size_t)cnt;
        req.images = imgs;
        req.image_of = NULL;
        req.prompts = prompts;
        CHECK_OK(perpo_generate(m, &req, &sc, &out[0][0], sizeof out[0], lens));
        for (j = 0; j < cnt; j++) {
            perpo_ocr_scores s;
            CHECK_OK(perpo_ocr_score(out[j], lens[j], text[j], strlen(text[j]), &s, NULL));
            ned += s.edit_distance;
        }
    }
    ned /= n;
    fprintf(stderr, "    greedy edit distance on %d validation pages: %.4f (recorded %.4f)\n", n,
            ned, recorded);
    CHECK_MSG(fabs(ned - recorded) <= 0.02,
              "the checkpoint's edit distance is %.4f, its record says %.4f", ned, recorded);
    perpo_model_free(m);
}

const perpo_test_case perpo_tests_checkpoints[] = {
    { "the committed grounding checkpoint scores what its record says (200 validation scenes)",
      test_grounding_checkpoint_regression },
    { "the demo's grounding checkpoint (2,048 fixed scenes) scores what its record says",
      test_grounding_k2048_checkpoint_regression },
    { "the committed dense-OCR checkpoint scores what its record says (200 validation pages)",
      test_ocr_checkpoint_regression },
    { NULL, NULL }
};
