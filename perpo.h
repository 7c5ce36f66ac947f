/* perpo.h — Perceptual Preference Optimization (PerPO) in one C99 header.

   PerPO (Zhu et al., "Perceptual Preference Optimization via Discriminative Rewarding",
   arXiv 2502.04371) aligns a multimodal LLM on perception tasks: sample N answers per
   image+question, score each with a discriminative metric (IoU for a box, 1 - normalized edit
   distance for text), then train on every pair of the ranked list, each pair weighted by its
   reward gap. This header holds everything that needs: tensor kernels with their backward
   passes, a compact LLaVA-shaped multimodal LLM, SFT training, sampling with a KV cache,
   task rewards, the listwise preference objectives and checkpoints.

   USAGE (stb style)
     In exactly one C or C++ file:
         #define PERPO_IMPLEMENTATION
         #include "perpo.h"
     Everywhere else just #include "perpo.h". Link with -lm.

   QUICK START (the README's complete version is compiled and run by `make test`)
         perpo_config cfg = perpo_config_default();
         perpo_model *model = NULL;
         perpo_status st = perpo_model_create(&model, &cfg, 42);
         if (st != PERPO_OK) { fprintf(stderr, "%s\n", perpo_status_string(st)); return 1; }
         ... perpo_sft_train(model, examples, n_examples, &sft_cfg, on_progress, NULL);
         ... perpo_generate(model, &request, &sample_cfg, out, sizeof out, out_len);
         perpo_model_free(model);

   OPTIONS (define before the #include that has PERPO_IMPLEMENTATION)
     PERPO_STATIC            make every function static (private copy in one file)
     PERPO_USE_CBLAS         use cblas_sgemm for matrix products (link -lopenblas or -lblas)
     PERPO_MALLOC(ctx, n), PERPO_REALLOC(ctx, p, n), PERPO_FREE(ctx, p)
                             allocator, all three or none; ctx is perpo_config.alloc_ctx
     PERPO_ASSERT(x)         checks of programmer error (never of input); default assert()
     PERPO_SYNC(path, is_dir) durability hook of checkpoint saves, an int expression that is 0
                             on success: called on the save's finished temporary file
                             "<path>.<pid>.<8 hex digits>.tmp" (is_dir 0) before it is renamed
                             over the checkpoint, and on the checkpoint's folder (is_dir 1)
                             after. Default: fsync() of each where <unistd.h> declares it
                             (POSIX: Linux, macOS, the BSDs), nothing elsewhere (Windows)
     PERPO_NO_POSIX          do not include <sys/stat.h>, <fcntl.h>, <unistd.h> even on POSIX
                             systems (no regular-file check by stat(), no default fsync, no
                             exclusive O_CREAT | O_EXCL create of a save's temporary file)
     PERPO_LOAD_MAX_ARENA_BYTES  perpo_model_load refuses (PERPO_ERR_FORMAT) a checkpoint whose
                             activation arena would exceed this many bytes; default 1 GiB
     PERPO_NO_VECTOR_EXP     AVX-512 builds: GELU and softmax on libm's expf instead of the
                             vector exp (the same results, slower)
     PERPO_USE_BF16          the built-in matrix products of the linear layers (forward,
                             both gradients, decoding) round their two inputs to bfloat16 and
                             sum in float32 (AVX512_BF16: twice the multiply-adds per cycle);
                             weights, gradients, optimizer state and attention stay float32.
                             Needs a CPU with AVX512_BF16 and -march=native (or -mavx512bf16
                             -mavx512bw); results differ from the float32 build's
     PERPO_REFERENCE         run the whole library on the reference path: the plain C kernels
                             (one row at a time) and the model's forward and backward as the
                             math reads, single-threaded; generation recomputes the whole
                             sequence for every token (no KV cache). Slow: for reading and
                             checking. Results differ from the fast path's in the last bits
     Build with -fopenmp to spread kernels over cores. Results are bit-identical from run to
     run for a given build and thread count.

   CONVENTIONS
     Every fallible function returns a perpo_status (PERPO_OK == 0); perpo_status_string()
     explains it. The library never prints, exits or aborts, and has no mutable global state.
     Sizes are size_t and every size product is overflow-checked. Parameters, gradients and
     optimizer moments live in flat buffers with one layout; activations live in one arena
     sized when the model is created, so a training step allocates nothing. Every allocation
     goes through PERPO_MALLOC with a context: a model's is perpo_config.alloc_ctx, and calls
     that allocate without a model take alloc_ctx as their last argument (NULL is fine).

   WHY A CALL FAILED
     A status says what kind of failure; a one-line message says which argument or field, its
     value, the rule and what to do, e.g. "perpo_pref_train: n 16 x lists_per_step 4 = 64
     sequences exceed max_batch 32: lower lists_per_step or raise max_batch". Messages live
     with what the call works on, never in global state, and are never printed:
       - calls that take a model clear the model's message when called and fill it when they
         fail: perpo_model_last_error(model). They are perpo_forward, perpo_backward,
         perpo_generate, perpo_pref_sample, perpo_pref_sample_range, perpo_pref_reference,
         perpo_pref_train, perpo_sft_train, perpo_sft_train_stream, perpo_optim_step and
         perpo_model_copy_params (the message is dst's);
       - calls without a model that can fail have a *_err variant taking (char *err,
         size_t err_cap) after their other arguments, before alloc_ctx where they take one;
         the plain call is the same with NULL, 0. err gets a NUL-terminated line of at most
         err_cap bytes ("" on success; err may be NULL). They are perpo_config_validate_err,
         perpo_model_create_err (a config field, or which allocation of how many bytes
         failed), perpo_model_load_err, perpo_checkpoint_save_err (a model is read, not
         changed, by a save), perpo_text_encode_err, perpo_optim_validate_err,
         perpo_listwise_loss_err, perpo_preference_metrics_err, perpo_share_err and the OCR
         metrics: perpo_edit_distance_err, perpo_normalized_edit_distance_err,
         perpo_ocr_reward_err, perpo_word_scores_err, perpo_ocr_score_err. The image and
         manifest loaders (perpo_image_parse_pnm, perpo_image_load_pnm, perpo_manifest_parse,
         perpo_manifest_load) take (err, err_cap) themselves;
       - the rest say nothing beyond their status: perpo_model_tensor (an index past
         perpo_model_num_tensors) and any call given a NULL model. perpo_parse_box and the box
         rewards cannot fail.
     Messages start with the call's name (a trainer's name for what fails inside it); an
     image is named as the caller passed it (images[i], item i, list i, example i: for a
     stream, the index the trainer asked next for). PERPO_ERROR_MAX bytes hold any message.

   API MAP: every public function, by job, in the order you call them ([n]: its section)
     A model [9]          perpo_config_default, (set fields), perpo_config_validate (optional:
                          create checks too; perpo_config_validate_err says why),
                          perpo_model_create (perpo_model_create_err) ... perpo_model_free,
                          perpo_model_last_error
     Supervised [8]       perpo_sft_default, perpo_sft_train (a fixed set of perpo_example) or
                          perpo_sft_train_stream (a perpo_example_fn)
     Answers [6]          perpo_sample_default, perpo_generate
     Rewards [7]          boxes: perpo_grounding_reward (= perpo_parse_box + perpo_box_iou),
                          perpo_box_giou; text: perpo_ocr_reward (1 minus
                          perpo_normalized_edit_distance), perpo_edit_distance,
                          perpo_word_scores, perpo_ocr_score; each text metric has an _err
                          variant: perpo_ocr_reward_err, perpo_normalized_edit_distance_err,
                          perpo_edit_distance_err, perpo_word_scores_err, perpo_ocr_score_err
     PerPO [5]            perpo_pref_sample (or perpo_pref_sample_range), perpo_pref_filter,
                          perpo_pref_reference, perpo_model_copy_params ([9]: policy := SFT),
                          perpo_pref_default, perpo_pref_train, perpo_pref_set_free
     The objective alone  perpo_objective_default, perpo_listwise_loss, perpo_preference_metrics,
       [4]                perpo_objective_name; perpo_listwise_loss_err and
                          perpo_preference_metrics_err say why they refused
     Checkpoints [12]     perpo_checkpoint_save (perpo_checkpoint_save_err), perpo_model_load
                          (perpo_model_load_err)
     Several processes    perpo_share (blocks of prompts; perpo_share_err); the hook is
       [8]                perpo_parallel in the trainers' configs
     Your own data [13]   perpo_manifest_load (or perpo_manifest_parse), perpo_image_load_pnm (or
                          perpo_image_parse_pnm) for each entry, perpo_manifest_free
     Your own loop [3,8]  perpo_optim_default (perpo_optim_validate, perpo_optim_validate_err);
                          per step: perpo_zero_grad, perpo_text_encode (perpo_text_encode_err),
                          perpo_forward, perpo_backward, perpo_optim_step; also
                          perpo_last_logits, perpo_lr_at, perpo_optim_step_count,
                          perpo_optim_reset
     Inspecting [9]       perpo_model_config, perpo_model_num_params, perpo_model_params,
                          perpo_model_grads, perpo_model_num_tensors, perpo_model_tensor
     Utilities [1]        perpo_status_string, perpo_crc32

   LICENSE: MIT, see the end of this file.
*/
#ifndef PERPO_H
#define PERPO_H

#include <stddef.h>
#include <stdint.h>

#ifndef PERPODEF
#if defined(PERPO_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define PERPODEF static __attribute__((unused)) /* unused ones are fine: no warning */
#elif defined(PERPO_STATIC)
#define PERPODEF static
#else
#define PERPODEF extern
#endif
#endif

#define PERPO_VERSION_MAJOR 0
#define PERPO_VERSION_MINOR 3

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================================
   PUBLIC API, by job. Each heading's number is the implementation section that defines it. The
   implementation puts the method first: utilities (1), reference kernels (2), the model with
   its reference forward and backward (3), the listwise objectives (4), preference optimization
   (5), sampling (6), rewards (7), the optimizer and SFT (8); then the model's memory and
   lifetime (9), the fast paths (10), files (11), checkpoints (12) and data (13). Sections 2, 10
   and 11 have no public calls.
   ========================================================================================== */

/* ==== 1. Status codes and utilities ======================================================= */

/* ---- Status codes ----------------------------------------------------------------------- */
typedef enum perpo_status {
    PERPO_OK = 0,
    PERPO_ERR_ARG,       /* invalid argument (NULL, size out of range, inconsistent config) */
    PERPO_ERR_NOMEM,     /* an allocation failed */
    PERPO_ERR_OVERFLOW,  /* a size computation would overflow size_t */
    PERPO_ERR_IO,        /* open/read/write/rename failed */
    PERPO_ERR_FORMAT,    /* a file or text is malformed */
    PERPO_ERR_NONFINITE, /* NaN or Inf in an input, loss or gradient (or in a data-parallel
                            reduction hook's sums) */
    PERPO_ERR_PEER       /* data-parallel training: another worker failed (its own call
                             returns the reason), so this one stopped with it */
} perpo_status;

/* A short English explanation of a status; never NULL. */
PERPODEF const char *perpo_status_string(perpo_status status);

/* ---- Small utilities shared with the examples ------------------------------------------- */
/* CRC-32 (IEEE 802.3, as zlib/PNG) continued from crc (start with 0). */
PERPODEF uint32_t perpo_crc32(uint32_t crc, const void *data, size_t n);

/* ==== 9. The compact MLLM: configuration and lifetime ===================================== */

/* ---- Model configuration ---------------------------------------------------------------- */
/* Token ids: bytes 0..255 are themselves; four specials follow. */
#define PERPO_TOK_PAD 256
#define PERPO_TOK_BOS 257
#define PERPO_TOK_SEP 258 /* ends the prompt: the response starts after it */
#define PERPO_TOK_EOS 259
#define PERPO_VOCAB   260

/* Limits of perpo_config (generous: they keep every derived size product far from overflow). */
#define PERPO_MAX_IMAGE_SIDE 4096 /* image_h, image_w */
#define PERPO_MAX_CHANNELS   4
#define PERPO_MAX_PATCH_SIDE 256  /* patch_h, patch_w */
#define PERPO_MAX_PATCHES    4096 /* vision tokens per image */
#define PERPO_MAX_D_MODEL    8192
#define PERPO_MAX_LAYERS     64 /* n_vis_layers, n_dec_layers */
#define PERPO_MAX_MLP_MULT   16
#define PERPO_MIN_TEXT       4 /* max_text: BOS, SEP, EOS and one byte */
#define PERPO_MAX_TEXT       4096
#define PERPO_MAX_BATCH      65536 /* max_batch */

typedef struct perpo_config {
    /* Ranges, as perpo_config_validate checks them (PERPO_ERR_ARG otherwise): */
    int image_h, image_w, channels; /* input image, float [H][W][C] in [0,1]; H, W in
                                       [1, PERPO_MAX_IMAGE_SIDE], channels in [1, PERPO_MAX_CHANNELS] */
    int patch_h, patch_w;           /* non-overlapping patch_h x patch_w patches become vision
                                       tokens (6 x 8 fits one character cell of a page); each in
                                       [1, PERPO_MAX_PATCH_SIDE], dividing image_h / image_w, at
                                       most PERPO_MAX_PATCHES patches */
    int pos_channels;               /* 1: the model appends x and y in [-1, 1] to every pixel
                                       (CoordConv); images stay `channels` wide. 0: off */
    int vis_sincos;                 /* 1: a fixed 2D sin-cos code of each patch's column and row
                                       is added to the learned vision positions (needs d_model
                                       % 4 == 0). 0: off */
    int d_model;                    /* width of every token, [1, PERPO_MAX_D_MODEL] */
    int n_heads;                    /* attention heads, >= 1, d_model % n_heads == 0 */
    int n_vis_layers; /* bidirectional blocks of the vision encoder, [0, PERPO_MAX_LAYERS] */
    int n_dec_layers; /* causal blocks of the language decoder, [1, PERPO_MAX_LAYERS] */
    int mlp_mult;     /* MLP hidden width = mlp_mult * d_model, in [1, PERPO_MAX_MLP_MULT] */
    int max_text;     /* text positions: BOS + prompt + SEP + response + EOS; in
                         [PERPO_MIN_TEXT, PERPO_MAX_TEXT]. So a prompt to answer (generation,
                         perpo_pref_sample) holds at most max_text - 4 bytes (room for one
                         answer byte), and a prompt + response pair to train on (SFT, lists,
                         perpo_text_encode) at most max_text - 3 bytes together */
    int vocab;        /* must be PERPO_VOCAB */
    int max_batch;    /* most sequences (and images) per forward; sizes the arena;
                                       [1, PERPO_MAX_BATCH] */
    void *alloc_ctx;  /* passed to PERPO_MALLOC/FREE; not saved in checkpoints */
} perpo_config;

/* 64x64 RGB, 8x8 patches, width 128, 4 heads, 2 vision + 4 decoder blocks, 48 text positions,
   position channels and sin-cos vision positions off (the examples turn both on: a vision
   encoder trained from scratch learns where things are 2-3x sooner with them). */
PERPODEF perpo_config perpo_config_default(void);
/* PERPO_OK when every field is in range and the derived sizes fit in memory arithmetic. */
PERPODEF perpo_status perpo_config_validate(const perpo_config *cfg);
/* The same, and err (may be NULL) gets a line naming the first field out of range, its value
   and the rule, e.g. "perpo_config: n_heads 3 must be >= 1 and divide d_model 128" ("" when
   valid). perpo_model_create refuses exactly these configs (perpo_model_create_err says the
   same under its own name). */
PERPODEF perpo_status perpo_config_validate_err(const perpo_config *cfg, char *err, size_t err_cap);

/* ---- Model lifetime --------------------------------------------------------------------- */
typedef struct perpo_model perpo_model;

/* Allocates parameters, gradients, AdamW moments and the activation arena; weights are
   initialised from seed (GPT-2 style: N(0, 0.02), residual projections scaled down).
   PERPO_ERR_ARG for a config perpo_config_validate refuses (perpo_config_validate_err says
   which field and why), PERPO_ERR_NOMEM when an allocation fails. */
PERPODEF perpo_status perpo_model_create(perpo_model **out, const perpo_config *cfg, uint64_t seed);
/* The same, and err (may be NULL) gets why it failed: the config field, its value and the rule,
   or which allocation of how many bytes failed and what to lower, e.g. "perpo_model_create: out
   of memory allocating the activation arena (3221225536 bytes): lower max_batch, max_text,
   d_model or the layers (max_batch 4096, ...)" ("" on success). */
PERPODEF perpo_status perpo_model_create_err(perpo_model **out, const perpo_config *cfg,
                                             uint64_t seed, char *err, size_t err_cap);
PERPODEF void perpo_model_free(perpo_model *model);
PERPODEF const perpo_config *perpo_model_config(const perpo_model *model);
/* Why the last checked call on the model failed, one line (see WHY A CALL FAILED at the top);
   "" when it succeeded or the model is NULL. Valid until the next call on the model. */
#define PERPO_ERROR_MAX 256
PERPODEF const char *perpo_model_last_error(const perpo_model *model);
/* Copies the parameters of src into dst and resets dst's optimizer: how the examples start DPO
   and PerPO from the same SFT weights. Every config field must match except max_batch and
   alloc_ctx (PERPO_ERR_ARG otherwise; perpo_model_last_error(dst) names the first that
   differs). */
PERPODEF perpo_status perpo_model_copy_params(perpo_model *dst, const perpo_model *src);
/* Flat views for tools and tests: parameters and gradients share one layout. The model knows
   its parameters are finite (creation, load and every optimizer step check them), so generation
   and saving refuse a non-finite model at no cost. perpo_model_params hands out a writable
   pointer, so each call marks the parameters as changed: generation repacks its weights, and
   until the next optimizer step or load, generation and saving check every parameter
   themselves (one pass per call, not per token). Call it again after writing through a pointer
   it returned earlier. */
PERPODEF size_t perpo_model_num_params(const perpo_model *model);
PERPODEF float *perpo_model_params(perpo_model *model);
PERPODEF float *perpo_model_grads(perpo_model *model);
PERPODEF size_t perpo_model_num_tensors(const perpo_model *model);
/* Name, offset into the flat buffer, and shape (cols == 0 for a vector) of tensor i. */
PERPODEF perpo_status perpo_model_tensor(const perpo_model *model, size_t i, const char **name,
                                         size_t *offset, size_t *rows, size_t *cols);

/* ==== 3. The compact MLLM: forward and backward =========================================== */
/* A batch of n_seq sequences over n_img images. Sequence b sees image image_of[b]; several
   sequences may share one image, which is then encoded once. Text rows are max_text ints. */
typedef struct perpo_batch {
    size_t n_seq, n_img;
    const float *const *images; /* n_img pointers to image_h*image_w*channels floats */
    const size_t *image_of;     /* n_seq image indices; NULL means image_of[b] = b */
    const int *tokens;          /* (n_seq, max_text) inputs, PAD after the end */
    const int *targets;         /* (n_seq, max_text) next token where the loss counts, else -1 */
} perpo_batch;

/* Builds one text row: tokens = BOS prompt SEP response EOS PAD..., targets = the response
   bytes and EOS at the positions that predict them, -1 elsewhere. PERPO_ERR_ARG if it does
   not fit in max_text (prompt_len + response_len <= max_text - 3). n_targets (may be NULL) gets the number of counted targets. */
PERPODEF perpo_status perpo_text_encode(const perpo_config *cfg, const char *prompt,
                                        size_t prompt_len, const char *response,
                                        size_t response_len, int *tokens, int *targets,
                                        size_t *n_targets);
/* The same, and err (may be NULL) gets why it refused, e.g. "perpo_text_encode: prompt 3 +
   response 7 bytes exceed max_text 8 - 3: shorten them or raise max_text". */
PERPODEF perpo_status perpo_text_encode_err(const perpo_config *cfg, const char *prompt,
                                            size_t prompt_len, const char *response,
                                            size_t response_len, int *tokens, int *targets,
                                            size_t *n_targets, char *err, size_t err_cap);

/* Runs the model and keeps what backward needs. logp (n_seq, may be NULL) gets each sequence's
   summed response log-probability; mean_ce (may be NULL) the mean token cross-entropy over all
   counted targets of the batch. */
PERPODEF perpo_status perpo_forward(perpo_model *model, const perpo_batch *batch, float *logp,
                                    float *mean_ce);
/* Adds dLoss/dparams into the gradient buffer, given dlogp[b] = dLoss/dlogp[b] for every
   sequence of the last forward. SFT passes -1/n_targets for each; preference objectives pass
   the gradient of their listwise loss. */
PERPODEF perpo_status perpo_backward(perpo_model *model, const float *dlogp);
PERPODEF void perpo_zero_grad(perpo_model *model);
/* Logits (n_seq, max_text, vocab) of the last forward; valid until the next call. */
PERPODEF const float *perpo_last_logits(const perpo_model *model);

/* ==== 6. Sampling ========================================================================= */
#define PERPO_MAX_TEMPERATURE 1000.0f
/* Out-of-range fields make generation return PERPO_ERR_ARG. */
typedef struct perpo_sample_config {
    float temperature;  /* in [0, PERPO_MAX_TEMPERATURE]; 0 = greedy */
    int top_k;          /* keep the k most likely tokens, k in [0, PERPO_VOCAB]; 0 = off */
    float top_p;        /* nucleus: smallest set with mass >= top_p, in [0, 1]; 1 = off */
    int max_new_tokens; /* cap on response bytes (also capped by max_text), >= 0 */
    uint64_t seed;      /* same seed, same model, same request -> same text; any value */
    int no_cache; /* 0 or 1; 1 = recompute the whole sequence per token (slow; for checking) */
} perpo_sample_config;

/* Greedy (temperature 0), no top-k or top-p, seed 1, max_new_tokens unbounded (max_text caps
   the answer). */
PERPODEF perpo_sample_config perpo_sample_default(void);

/* n_seq responses; sequence b answers prompts[b] about images[image_of[b]]. Each image is
   encoded once, and consecutive sequences with the same image and prompt share one prefill. */
typedef struct perpo_gen_request {
    size_t n_seq, n_img;
    const float *const *images;
    const size_t *image_of;     /* NULL means image_of[b] = b */
    const char *const *prompts; /* n_seq NUL-terminated prompts */
} perpo_gen_request;

/* out holds n_seq strings of out_cap bytes each (NUL-terminated, truncated to fit); out_len
   (may be NULL) gets each response's length. Stops at EOS, max_new_tokens or max_text.
   PERPO_ERR_ARG (with perpo_model_last_error saying which) unless n_seq and n_img are in
   [1, max_batch] (split a larger request), every prompt has at most max_text - 4 bytes and
   every image value is in [0,1]. PERPO_ERR_NONFINITE for a NaN or Inf image value, or a model
   with a non-finite parameter. */
PERPODEF perpo_status perpo_generate(perpo_model *model, const perpo_gen_request *req,
                                     const perpo_sample_config *sc, char *out, size_t out_cap,
                                     size_t *out_len);

/* ==== 7. Rewards ========================================================================== */

/* ---- Rewards: grounding. Boxes are float[4] = x1, y1, x2, y2, normalized to [0,1]. ---- */

/* Finds the first well-formed box "[a,b,c,d]" in text[0..len) (len is authoritative: no NUL
 * needed, NULs are ordinary bytes). All-integer boxes are pixels (divided by img_w/img_h, must lie
 * in the image); a box with any decimal point is normalized (all values in [0,1]). A '[' that does
 * not start a valid box is skipped and the scan goes on. Returns 1 and writes box, else 0 and
 * zeroes box. No signs, exponents, hex, nan or inf. Linear time, never reads past len. */
PERPODEF int perpo_parse_box(const char *text, size_t len, float img_w, float img_h, float box[4]);
/* Intersection over union in [0,1]. Non-finite, inverted (x2 < x1) or zero-area boxes give 0. */
PERPODEF float perpo_box_iou(const float a[4], const float b[4]);
/* Generalized IoU (IoU - |C \ (A u B)| / |C|, C the enclosing box) in [-1,1]. Non-finite or
 * inverted boxes, or a union of zero area (both boxes degenerate), give -1, the worst value. */
PERPODEF float perpo_box_giou(const float a[4], const float b[4]);
/* The PerPO grounding reward: IoU of the first box parsed from text with gt (normalized);
 * 0 when no box parses. */
PERPODEF float perpo_grounding_reward(const char *text, size_t len, const float gt[4], float img_w,
                                      float img_h);

/* ---- OCR metrics. Strings are (pointer, length) byte strings: NULs and UTF-8 are plain
 * bytes. Memory is linear in the lengths, allocated through alloc_ctx (may be NULL; see
 * PERPO_MALLOC). NULL strings are allowed only with length 0. Each has an _err variant whose
 * err (may be NULL) gets why it failed, e.g. "perpo_ocr_reward: ref is NULL with length 5:
 * NULL only with length 0", or which allocation of how many bytes failed ("" on success). ---- */

/* Byte-level Levenshtein distance, O(min(na, nb)) memory, O(na * nb) time after stripping the
 * common prefix and suffix. */
PERPODEF perpo_status perpo_edit_distance(const char *a, size_t na, const char *b, size_t nb,
                                          size_t *dist, void *alloc_ctx);
PERPODEF perpo_status perpo_edit_distance_err(const char *a, size_t na, const char *b, size_t nb,
                                              size_t *dist, char *err, size_t err_cap,
                                              void *alloc_ctx);
/* Edit distance / max(na, nb), in [0,1]; 0 when both are empty. */
PERPODEF perpo_status perpo_normalized_edit_distance(const char *a, size_t na, const char *b,
                                                     size_t nb, float *ned, void *alloc_ctx);
PERPODEF perpo_status perpo_normalized_edit_distance_err(const char *a, size_t na, const char *b,
                                                         size_t nb, float *ned, char *err,
                                                         size_t err_cap, void *alloc_ctx);
/* The PerPO dense-OCR reward: 1 - normalized edit distance of text against ref. */
PERPODEF perpo_status perpo_ocr_reward(const char *text, size_t len, const char *ref, size_t nref,
                                       float *reward, void *alloc_ctx);
PERPODEF perpo_status perpo_ocr_reward_err(const char *text, size_t len, const char *ref,
                                           size_t nref, float *reward, char *err, size_t err_cap,
                                           void *alloc_ctx);
/* Word-level scores of hyp against ref. Words split on ASCII whitespace. precision/recall/f1 are
 * over word SETS (duplicates count once). bleu is BLEU-4 (clipped n-gram counts, uniform weights,
 * brevity penalty) with add-one smoothing for n >= 2 only (Lin & Och 2004; nltk "method2"):
 * p1 = m1/t1, pn = (mn + 1)/(tn + 1). A hypothesis shorter than n words thus has pn = 1 (nltk
 * would use 1/2). Both without words: all 1; exactly one without words: all 0.
 * Any output pointer may be NULL. */
PERPODEF perpo_status perpo_word_scores(const char *hyp, size_t nh, const char *ref, size_t nr,
                                        float *precision, float *recall, float *f1, float *bleu,
                                        void *alloc_ctx);
PERPODEF perpo_status perpo_word_scores_err(const char *hyp, size_t nh, const char *ref, size_t nr,
                                            float *precision, float *recall, float *f1, float *bleu,
                                            char *err, size_t err_cap, void *alloc_ctx);
typedef struct {
    float edit_distance, precision, recall, f1, bleu;
} perpo_ocr_scores;
/* All OCR metrics at once; edit_distance is the NORMALIZED one (lower is better). */
PERPODEF perpo_status perpo_ocr_score(const char *hyp, size_t nh, const char *ref, size_t nr,
                                      perpo_ocr_scores *out, void *alloc_ctx);
PERPODEF perpo_status perpo_ocr_score_err(const char *hyp, size_t nh, const char *ref, size_t nr,
                                          perpo_ocr_scores *out, char *err, size_t err_cap,
                                          void *alloc_ctx);

/* ==== 4. The listwise objectives ========================================================== */

/* ---- Listwise preference objectives over one list of n sampled responses. ---- */

#define PERPO_MAX_LIST 256
typedef enum { PERPO_OBJ_PERPO, PERPO_OBJ_DPO, PERPO_OBJ_LIPO, PERPO_OBJ_LISTMLE } perpo_objective;
#define PERPO_OBJ_COUNT 4
/* The objective's usual name: "PerPO", "DPO", "LiPO", "ListMLE"; "unknown" otherwise (never NULL). */
PERPODEF const char *perpo_objective_name(perpo_objective kind);
/* Ranges (invalid values, NaN included: PERPO_ERR_ARG):
 *   beta in (0, PERPO_MAX_BETA] scales log-ratios: s_k = beta (logp_k - ref_logp_k);
 *   gamma in [0, PERPO_MAX_GAMMA] is PerPO's reward-gap exponent (others ignore it);
 *   label_smoothing in [0, PERPO_MAX_LABEL_SMOOTHING] is cDPO's eps (PERPO, DPO, LIPO; LISTMLE
 *   ignores it);
 *   positive in [0, PERPO_MAX_POSITIVE] is DPO-Positive's lambda (Pal et al. 2024, arXiv
 *   2402.13228): the margin of every pair (i preferred over j) becomes
 *   s_i - s_j - positive * max(0, -s_i), so a preferred response pushed below the
 *   reference costs loss of its own and cannot simply ride the pair down ("likelihood
 *   displacement"). 0 = off, the paper's objective (PERPO, DPO, LIPO; LISTMLE ignores it).
 * What each objective computes from them: at perpo_listwise_loss. */
#define PERPO_MAX_BETA            1000.0f
#define PERPO_MAX_GAMMA           100.0f
#define PERPO_MAX_LABEL_SMOOTHING 0.5f
#define PERPO_MAX_NLL_WEIGHT      1000.0f
#define PERPO_MAX_POSITIVE        1000.0f
typedef struct {
    perpo_objective kind;
    float beta, gamma, label_smoothing, positive;
} perpo_objective_config;

/* beta 0.1, gamma 0.5, label_smoothing 0, positive 0 (the released PerPO defaults). */
PERPODEF perpo_objective_config perpo_objective_default(perpo_objective kind);
/* Loss of one list and, if dloss_dlogp != NULL, its gradient w.r.t. each sequence log-prob.
 * logp/ref_logp: summed response log-probs under the policy and the frozen reference; reward:
 * task rewards r in any order. 1 <= n <= PERPO_MAX_LIST, else PERPO_ERR_ARG; NaN/Inf inputs, or a
 * result beyond float range: PERPO_ERR_NONFINITE. On error the outputs are untouched. A list
 * whose rewards are all equal (or n == 1) has loss 0 and gradient 0. No allocation.
 * With s_k = beta (logp_k - ref_logp_k) and eps = label_smoothing, PERPO computes
 *   pairs   P = {(i, j) : r_i > r_j}, every ordered pair of the list with the higher reward
 *           first; a tie (r_i == r_j) makes no pair
 *   weight  w_ij = |r_i - r_j|^gamma / sum_{(k,l) in P} |r_k - r_l|^gamma: the weights of a
 *           list sum to 1 (gamma 0: every pair alike)
 *   margin  x_ij = s_i - s_j - positive * max(0, -s_i)
 *   loss    L = sum_{(i,j) in P} w_ij l(x_ij),  l(x) = -(1 - eps) log sigmoid(x)
 *           - eps log sigmoid(-x); with eps 0, L = -sum_{(i,j) in P} w_ij log sigmoid(x_ij)
 *   grad    dL/dlogp_k = beta (sum_{(k,j) in P} w_kj l'(x_kj) (1 + positive [s_k < 0])
 *                              - sum_{(i,k) in P} w_ik l'(x_ik)),
 *           l'(x) = -(1 - eps) sigmoid(-x) + eps sigmoid(x)
 * DPO is l(x) of one pair: the first best-reward response over the first worst. LIPO is L with
 * LiPO-lambda's weights |2^r_i - 2^r_j| |1/log2(1 + t_i) - 1/log2(1 + t_j)| (t: rank by s,
 * 1 = highest), normalized to sum to 1. LISTMLE is the Plackett-Luce negative log-likelihood of
 * the reward order (ties by index) under softmax(s); it ignores gamma, eps and positive. There
 * is no NLL term here: perpo_pref_train adds nll_weight times the mean token NLL of each list's
 * first best-reward response (or of its truth) to the loss and its gradient
 * (perpo_pref_config.nll_weight). */
PERPODEF perpo_status perpo_listwise_loss(const perpo_objective_config *cfg, int n,
                                          const float *logp, const float *ref_logp,
                                          const float *reward, float *loss,
                                          float *dloss_dlogp /* may be NULL */);
/* The same, and err (may be NULL) gets why it refused, e.g. "perpo_listwise_loss: ref_logp[2]
   is nan: log-probs and rewards must be finite" ("" on success; see WHY A CALL FAILED). */
PERPODEF perpo_status perpo_listwise_loss_err(const perpo_objective_config *cfg, int n,
                                              const float *logp, const float *ref_logp,
                                              const float *reward, float *loss, float *dloss_dlogp,
                                              char *err, size_t err_cap);

/* What preference trainers log per list: rewards/chosen, /rejected, /margins, /accuracies. */
typedef struct {
    float chosen, rejected, margin, accuracy;
} perpo_pref_metrics;
/* chosen/rejected = s_k = beta (logp_k - ref_logp_k) of the first best/worst-reward response,
 * margin = chosen - rejected, accuracy = share of pairs R_i > R_j with s_i > s_j (0 if none).
 * beta in (0, PERPO_MAX_BETA]. */
PERPODEF perpo_status perpo_preference_metrics(float beta, int n, const float *logp,
                                               const float *ref_logp, const float *reward,
                                               perpo_pref_metrics *out);
/* The same, and err (may be NULL) gets why it refused. */
PERPODEF perpo_status perpo_preference_metrics_err(float beta, int n, const float *logp,
                                                   const float *ref_logp, const float *reward,
                                                   perpo_pref_metrics *out, char *err,
                                                   size_t err_cap);

/* ==== 8. Optimizer, data parallelism, progress reports and SFT ============================ */

/* ---- Optimizer -------------------------------------------------------------------------- */
/* Every field has a range (checked by perpo_optim_validate; NaN is outside every range). */
#define PERPO_MAX_STEPS (1 << 30) /* most steps of a schedule, and of a model's step counter */
typedef struct perpo_optim_config {
    float lr, min_lr;        /* peak and final learning rate of the cosine schedule:
                                lr in (0, 1], min_lr in [0, lr] */
    int warmup_steps;        /* linear warmup from lr/warmup to lr; in [0, total_steps] */
    int total_steps;         /* schedule length; in [1, PERPO_MAX_STEPS] */
    float beta1, beta2, eps; /* AdamW moments: beta1, beta2 in [0, 1); eps in (0, 1) */
    float weight_decay;      /* decoupled, on matrices only (no biases, no LayerNorm); in [0, 1] */
    float clip_norm;         /* global gradient norm clip, finite and >= 0; 0 disables */
} perpo_optim_config;

/* lr 1e-3 down to 1e-4 over 1,000 steps after 20 of warmup, betas 0.9 / 0.95, eps 1e-8, weight
   decay 0.1, clipping at norm 1. */
PERPODEF perpo_optim_config perpo_optim_default(void);
/* PERPO_OK when every field of oc is in its range, else PERPO_ERR_ARG. */
PERPODEF perpo_status perpo_optim_validate(const perpo_optim_config *oc);
/* The same, and err (may be NULL) gets the first field out of range, its value and the rule,
   e.g. "perpo_optim_validate: min_lr 0.01 must be in [0, lr 0.001]" ("" when valid). */
PERPODEF perpo_status perpo_optim_validate_err(const perpo_optim_config *oc, char *err,
                                               size_t err_cap);
/* Learning rate at 0-based step: linear warmup, then cosine decay to min_lr. Steps below 0
   count as 0 and steps past total_steps as total_steps; 0 for an invalid config. */
PERPODEF float perpo_lr_at(const perpo_optim_config *oc, int step);
/* One AdamW update from the accumulated gradients, scaled by grad_scale first (1/accum for
   gradient accumulation; finite, > 0). PERPO_ERR_ARG for an invalid config or scale, or when
   the model has taken PERPO_MAX_STEPS steps. Refuses with PERPO_ERR_NONFINITE, changing
   nothing, a non-finite gradient and a step that would make any parameter or moment
   non-finite. grad_norm (may be NULL) gets the global norm before clipping. Why it refused:
   perpo_model_last_error. */
PERPODEF perpo_status perpo_optim_step(perpo_model *model, const perpo_optim_config *oc,
                                       float grad_scale, float *grad_norm);
/* Number of optimizer steps taken so far (drives the schedule and bias correction). */
PERPODEF int perpo_optim_step_count(const perpo_model *model);
/* Forget the AdamW moments and step count (e.g. before a new training phase). */
PERPODEF void perpo_optim_reset(perpo_model *model);

/* ---- Data parallelism: several processes train one model ------------------------------
 * perpo.h has no transport of its own: its trainers call a reduction hook that you implement
 * with the one you have (MPI_Allreduce, NCCL, sockets; examples/mpi_train.c uses MPI). Every
 * worker holds the whole model, the same weights and the same trainer config except rank. At
 * each step every worker computes the gradient of its share of the batch; the hook sums those
 * gradients, the token and list counts and the step's metrics over the workers; then every
 * worker divides by the global count, clips by the global norm and takes the same AdamW step.
 * So world workers with batch_size B (lists_per_step L) train the same model as one process
 * with world * B (world * L), up to the order of the float sums in the reduction.
 *
 * The hook sums buf[0..n) over all workers in place and must leave the same values on every
 * worker: MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, comm) does (or, to be
 * certain of identical bits, MPI_Reduce to one rank and MPI_Bcast). Every worker calls it the
 * same number of times with the same n: twice on entry (a handshake: the workers must agree on
 * the schedule, batch, seed and weights, and on the AdamW state when resuming, else every one
 * returns PERPO_ERR_ARG before any step); in SFT once
 * per micro-batch (its token count and summed loss) and once per step (a failure flag); in
 * preference training once per step (the metrics); in both once per step on the gradients
 * (perpo_model_num_params floats) and once per progress report, every log_every steps (a stop
 * request by any worker's callback stops all). Return PERPO_OK, or an error that ends
 * training with it. What the hook returns is checked like any input: a NaN or Inf in any sum
 * (counts, loss, metrics, flags, stop requests, gradients) stops every worker with
 * PERPO_ERR_NONFINITE, never with PERPO_OK and a NaN loss in the report.
 * A worker that fails (bad data, NaN) still joins the next reduction with a failure flag, so
 * every worker stops at the same step: it returns its error, the others PERPO_ERR_PEER.
 * Progress reports carry the global loss, metrics and token counts, on every worker.
 * Checkpoints are the caller's: the weights are the same on every worker, so one of them
 * (rank 0) saves, and every worker loads that file to resume. */
typedef perpo_status (*perpo_reduce_fn)(float *buf, size_t n, void *user);
#define PERPO_MAX_WORLD 4096
typedef struct perpo_parallel {
    perpo_reduce_fn reduce; /* NULL: one process (rank 0, world 1), no call to anything */
    void *user;             /* passed to reduce */
    int rank, world;        /* this worker in [0, world); world in [1, PERPO_MAX_WORLD]. With
                               reduce NULL: rank 0 and world 1 (or 0: a zeroed struct is one
                               process) */
} perpo_parallel;

/* Worker rank's block of n items split over world workers: [*first, *first + *count), blocks
   in rank order, sizes differing by at most one. PERPO_ERR_ARG for NULL outputs, world outside
   [1, PERPO_MAX_WORLD] or rank outside [0, world). */
PERPODEF perpo_status perpo_share(size_t n, int rank, int world, size_t *first, size_t *count);
/* The same, and err (may be NULL) gets why it refused, e.g. "perpo_share: rank 4 must be in
   [0, world 4)". */
PERPODEF perpo_status perpo_share_err(size_t n, int rank, int world, size_t *first, size_t *count,
                                      char *err, size_t err_cap);

/* ---- Training: progress reports -------------------------------------------------------- */
typedef struct perpo_progress {
    const char *phase; /* "sft" (perpo_sft_train*) or "pref" (perpo_pref_train, any objective) */
    int step, total_steps; /* 1-based step just finished */
    float loss, lr, grad_norm;
    double tokens;           /* target tokens processed so far in this phase */
    double elapsed_s, eta_s; /* wall clock (omp_get_wtime or C11 timespec_get), else CPU time */
    /* preference phases only, averaged over the lists of the step (names as in TRL):
       rewards/chosen and rewards/rejected are beta * (logp - ref_logp) of the best and worst
       response, margins their difference, accuracies the fraction of pairs ranked right */
    float reward_chosen, reward_rejected, reward_margin, reward_accuracy;
    float logp_chosen; /* policy log-prob of the best response */
} perpo_progress;
/* Return non-zero to stop training early (the trainer then returns PERPO_OK). */
typedef int (*perpo_progress_fn)(const perpo_progress *p, void *user);

/* ---- SFT -------------------------------------------------------------------------------- */
typedef struct perpo_example {
    const float *image;   /* image_h*image_w*channels floats */
    const char *prompt;   /* NUL-terminated */
    const char *response; /* NUL-terminated; the text the model learns to answer */
} perpo_example;

#define PERPO_MAX_ACCUM 65536 /* most micro-batches per optimizer step */
/* Out-of-range fields make the trainer return PERPO_ERR_ARG before touching the model. */
typedef struct perpo_sft_config {
    perpo_optim_config optim; /* ranges at perpo_optim_config */
    int batch_size;           /* sequences per micro-batch, in [1, max_batch] */
    int accum_steps;          /* micro-batches per optimizer step, in [1, PERPO_MAX_ACCUM] */
    uint64_t seed;            /* shuffling; any value */
    int log_every;            /* call the progress callback every this many steps (>= 1) */
    int resume;               /* 0: fresh schedule (optimizer reset); 1: continue from the model's
                                 optimizer step, e.g. after loading a checkpoint saved mid-run
                                 with PERPO_CKPT_OPTIMIZER (a checkpoint without optimizer state
                                 has nothing to resume: PERPO_ERR_ARG) */
    perpo_parallel parallel;  /* data parallelism (see above); default: one process. With
                                 world workers, batch_size is this worker's share: a micro-batch
                                 is world * batch_size examples, worker r taking positions
                                 [r * batch_size, (r + 1) * batch_size) of it; the loss is the
                                 mean token cross-entropy over the whole micro-batch */
} perpo_sft_config;

/* perpo_optim_default's schedule (20 warmup steps: a shorter run lowers warmup_steps too),
   batches of 32 (a model with a smaller max_batch needs a smaller batch_size), no
   accumulation, seed 1, a report every 10 steps, a fresh start (no resume), one process. */
PERPODEF perpo_sft_config perpo_sft_default(void);
/* Cross-entropy on the responses, AdamW, cosine schedule: optim.total_steps steps over
   shuffled epochs of the examples. Each example's prompt + response holds at most
   max_text - 3 bytes and its image values lie in [0,1]; bad examples and out-of-range fields
   are refused (PERPO_ERR_ARG, perpo_model_last_error naming which) before the model is
   touched. */
PERPODEF perpo_status perpo_sft_train(perpo_model *model, const perpo_example *examples, size_t n,
                                      const perpo_sft_config *tc, perpo_progress_fn progress,
                                      void *user);
/* A stream of training examples instead of a fixed set (fresh data every step): the trainer asks
   for example `index` (0, 1, 2, ... over the whole run, accumulation included) into batch slot
   `slot` (0 .. batch_size-1). The example's image and strings must stay valid until that slot is
   asked for again. Make it a pure function of index and a resumed run sees exactly the data
   the uninterrupted one saw. Return PERPO_OK, or an error that stops training with it. */
typedef perpo_status (*perpo_example_fn)(size_t index, size_t slot, perpo_example *out, void *user);
/* perpo_sft_train over a stream. An example that does not fit max_text, or has a NULL field,
   stops training with PERPO_ERR_ARG (the steps already taken are kept). */
PERPODEF perpo_status perpo_sft_train_stream(perpo_model *model, perpo_example_fn next,
                                             void *next_user, const perpo_sft_config *tc,
                                             perpo_progress_fn progress, void *user);

/* ==== 5. Preference optimization: PerPO and the baselines over lists of samples =========== */
/* One prompt with n sampled responses and their task rewards. */
typedef struct perpo_pref_list {
    const float *image;
    const char *prompt; /* NUL-terminated */
    int n; /* responses, 1 .. PERPO_MAX_LIST (a list of one has no pair: only its NLL term) */
    const char *const *responses; /* n NUL-terminated responses */
    const float *rewards;         /* n task rewards, any order */
    float *ref_logp;              /* n summed log-probs under the frozen SFT model (see below) */
    const char *truth;            /* the true response where it is known, else NULL: what the
                                      NLL term trains on with nll_on_truth */
} perpo_pref_list;

/* Scores one sampled response of item `item` (higher is better), e.g. IoU with the true box. */
typedef float (*perpo_reward_fn)(const char *response, size_t len, size_t item, void *user);

/* Lists sampled from a model, with the storage they point into (one allocation). */
typedef struct perpo_pref_set {
    perpo_pref_list *lists;
    size_t n_lists;
    void *storage_;   /* private */
    void *alloc_ctx_; /* private */
} perpo_pref_set;

/* The first stage of PerPO: for every item (its image and prompt; the response is ignored),
   samples n responses with sc and scores them with reward. Each item's responses come from a
   random stream of its own, seeded by sc->seed and the item's index: the same call gives the
   same lists for any max_batch of at least n (n > max_batch is refused: one list is sampled
   in one call) and however the items are split (below). Each prompt holds at most max_text - 4
   bytes, each image's values lie in [0,1], and reward must return finite values
   (PERPO_ERR_NONFINITE, the message naming the item and the response). A greedy sc
   (temperature 0, perpo_sample_default) gives n equal answers: set a temperature. ref_logp is
   zeroed: call perpo_pref_reference next. *out is overwritten (free a set it held first) and
   holds nothing when the call fails. */
PERPODEF perpo_status perpo_pref_sample(perpo_model *model, const perpo_example *items,
                                        size_t n_items, int n, const perpo_sample_config *sc,
                                        perpo_reward_fn reward, void *user, perpo_pref_set *out);
/* The same for items [first, first + count) of items only: list j holds exactly the responses
   perpo_pref_sample gives item first + j, and reward sees that index. How data-parallel
   workers sample their own block of prompts (perpo_share) without any exchange. PERPO_ERR_ARG
   for an empty range (items must hold first + count examples). */
PERPODEF perpo_status perpo_pref_sample_range(perpo_model *model, const perpo_example *items,
                                              size_t first, size_t count, int n,
                                              const perpo_sample_config *sc, perpo_reward_fn reward,
                                              void *user, perpo_pref_set *out);
/* Keeps the lists of at least 2 responses whose best-minus-worst reward is at least min_margin
   (in place, order kept); returns how many remain. */
PERPODEF size_t perpo_pref_filter(perpo_pref_list *lists, size_t n_lists, float min_margin);
/* Fills every list's ref_logp with summed response log-probs under model (the frozen SFT
   weights): computed once, before preference training starts. PERPO_ERR_ARG for no lists
   (n_lists 0: e.g. perpo_pref_filter kept none), a list of more than max_batch responses, a
   prompt + response over max_text - 3 bytes or an image value outside [0,1]. */
PERPODEF perpo_status perpo_pref_reference(perpo_model *model, perpo_pref_list *lists,
                                           size_t n_lists);
/* Out-of-range fields make perpo_pref_train return PERPO_ERR_ARG before touching the model. */
typedef struct perpo_pref_config {
    perpo_objective_config objective; /* ranges at perpo_objective_config */
    perpo_optim_config optim;         /* ranges at perpo_optim_config */
    int lists_per_step; /* lists per micro-batch, >= 1; all their responses must fit in max_batch:
                           n x lists_per_step <= max_batch (n: the longest list) */
    int accum_steps;    /* micro-batches per optimizer step, in [1, PERPO_MAX_ACCUM] */
    float nll_weight;   /* adds nll_weight * token NLL of each list's best response; in
                            [0, PERPO_MAX_NLL_WEIGHT]; 0 = off */
    int mean_logp;      /* 0 or 1; 1: s_k uses mean per-token log-probs instead of sums */
    int nll_on_truth;   /* 0 or 1; 1: the NLL term is on each list's truth (every list needs
                            one, and lists_per_step x (n + 1) sequences must fit in max_batch) */
    uint64_t seed;      /* order of the lists; any value */
    int log_every;      /* progress callback period, in steps (>= 1) */
    int resume;         /* 0 or 1, as in perpo_sft_config */
    perpo_parallel parallel; /* data parallelism (see above and perpo_pref_train); default: one
                                process */
} perpo_pref_config;

/* The objective as the paper's released code sets it: beta 0.1, gamma 0.5, summed log-probs, no
   NLL term. Training: AdamW lr 1e-5 down to 1e-6 over 200 steps after 10 of warmup (so
   total_steps must stay >= 10, or lower warmup_steps), no weight decay, 4 lists per step, no
   accumulation, seed 1, a report every 10 steps, one process. The rate is the one the
   project's grounding experiments use (examples/grounding.c, make demo); 1e-4 swung held-out
   accuracy between -50 and +18 points on the toy task. */
PERPODEF perpo_pref_config perpo_pref_default(perpo_objective kind);
/* optim.total_steps optimizer steps of the chosen listwise objective over shuffled epochs of
   the lists. Progress reports carry rewards/chosen, rejected, margins and accuracies.
   PERPO_ERR_ARG, before touching the model and with perpo_model_last_error saying which,
   for a field out of range (warmup_steps > total_steps included), n x lists_per_step over
   max_batch, no lists, and resume 1 on a model loaded from a checkpoint without optimizer
   state (nothing to resume). Each list's prompt + response holds at most max_text - 3 bytes.
   Data-parallel (pc->parallel.reduce set): lists is this worker's part of the preference set,
   and the whole set is every worker's part concatenated in rank order, as perpo_share blocks of
   prompts sampled with perpo_pref_sample_range, then perpo_pref_filter and perpo_pref_reference
   on each worker give it (no exchange of lists). A part may be empty (lists NULL, n_lists 0),
   the whole set may not. A micro-batch is world * lists_per_step positions of the shuffled
   order of the whole set; each worker trains on those of its own lists, in forwards of at most
   lists_per_step lists (so it runs none, one or several per micro-batch), and the gradients,
   divided by the global list count, are summed by the hook. */
PERPODEF perpo_status perpo_pref_train(perpo_model *model, const perpo_pref_list *lists,
                                       size_t n_lists, const perpo_pref_config *pc,
                                       perpo_progress_fn progress, void *user);
/* Frees the lists and their text; the set is left empty. */
PERPODEF void perpo_pref_set_free(perpo_pref_set *set);

/* ==== 12. Checkpoints ===================================================================== */
/* Saves config and parameters (little-endian, CRC32-checked) via a temporary file + rename
   (see "Checkpoints" in the implementation and PERPO_SYNC); flags 0, or PERPO_CKPT_OPTIMIZER to
   add the AdamW moments and step: a model loaded from it and trained with resume = 1 continues
   bit for bit as if never stopped. The temporary file, "<path>.<pid>.<8 hex digits>.tmp" beside
   path, belongs to this call alone: it is created new (POSIX: O_CREAT | O_EXCL, so nothing that
   already sits at a name, a link, a FIFO or anyone's file, is opened or followed; without POSIX
   "<path>.<8 hex digits>.tmp", checked to be absent, then made by fopen), and saves of one path
   from several processes or threads at once each succeed, leaving one of their checkpoints
   whole. PERPO_ERR_NONFINITE, writing nothing, for a model with a non-finite parameter.
   PERPO_ERR_IO, leaving the previous file intact and no temporary file, when path exists and is
   not a regular file, when no fresh temporary name can be created, or on any write, sync or
   rename failure; except that when only the sync of the folder after the rename fails, the new
   file is in place but a power cut may still undo the rename. */
#define PERPO_CKPT_OPTIMIZER 1u
PERPODEF perpo_status perpo_checkpoint_save(const perpo_model *model, const char *path,
                                            unsigned flags);
/* The same, and err (may be NULL) gets why it failed: the path and the system's reason
   ("perpo_checkpoint_save: /x/ckpt.bin: cannot create a temporary file beside it: No such file
   or directory"), or which argument is wrong. */
PERPODEF perpo_status perpo_checkpoint_save_err(const perpo_model *model, const char *path,
                                                unsigned flags, char *err, size_t err_cap);
/* Creates a model from a checkpoint (with its optimizer state when saved); alloc_ctx (may be
   NULL) is what the loaded model passes to PERPO_MALLOC/FREE. PERPO_ERR_IO when the file
   cannot be read or is not a regular file, PERPO_ERR_FORMAT for anything malformed (size,
   magic, version, config, CRC, non-finite values, a step counter beyond PERPO_MAX_STEPS, a
   negative AdamW second moment, an activation arena over PERPO_LOAD_MAX_ARENA_BYTES). */
PERPODEF perpo_status perpo_model_load(perpo_model **out, const char *path, void *alloc_ctx);
/* The same, and err (may be NULL) gets why it failed: the path and the system's reason for an
   i/o error ("perpo_model_load: /x/ckpt.bin: cannot open: No such file or directory"), or what
   is malformed. */
PERPODEF perpo_status perpo_model_load_err(perpo_model **out, const char *path, void *alloc_ctx,
                                           char *err, size_t err_cap);

/* ==== 13. Bring your own data: images and manifests ======================================= */

/* Images: binary PGM (P5) and PPM (P6) with maxval 1..255, as written by netpbm, ImageMagick
 * (`convert x.png -resize 64x64! x.ppm`), GIMP or Pillow. The header follows the netpbm spec:
 * magic, width, height, maxval as ASCII decimals separated by whitespace (space, TAB, CR, LF,
 * VT, FF) and '#' comments (to the next CR or LF), then exactly one whitespace byte and the
 * raster (a comment right after the maxval ends in that byte, as libnetpbm reads it).
 * Refused with PERPO_ERR_FORMAT and a one-line reason in err: plain (ASCII) and bitmap
 * formats (P1-P4), 16-bit samples (maxval > 255), a sample above maxval, a size other than
 * want_w x want_h, a header over PERPO_PNM_MAX_HEADER bytes, and any byte after the raster
 * (multi-image streams included: trailing bytes usually mean the header lies about the size).
 * The output is float [H][W][channels] with sample / maxval in [0,1]; channels 3 takes PPM as
 * is and replicates PGM grey, channels 1 takes PGM only. On error out is left untouched. err
 * (may be NULL) gets a NUL-terminated line of at most err_cap bytes ("" on success). */
#define PERPO_PNM_MAX_HEADER 65536

/* From memory: reads nothing past data[len), allocates nothing. */
PERPODEF perpo_status perpo_image_parse_pnm(const unsigned char *data, size_t len, int want_w,
                                            int want_h, int channels, float *out, char *err,
                                            size_t err_cap);
/* From a file: PERPO_ERR_IO when it cannot be read or is not a regular file (a folder, a
 * device, a pipe); messages start with the path. Reads at most the bytes a valid file of that
 * size can have, into one allocation through alloc_ctx (may be NULL), freed before returning. */
PERPODEF perpo_status perpo_image_load_pnm(const char *path, int want_w, int want_h, int channels,
                                           float *out, char *err, size_t err_cap, void *alloc_ctx);

/* Manifest: UTF-8 text, one example per line `image_path<TAB>prompt<TAB>answer`. Lines end in
 * LF or CRLF (the last one may have no end); a UTF-8 byte order mark at the start is skipped.
 * Skipped: lines whose first byte is '#', and blank lines (empty, or only spaces and TABs).
 * Refused with PERPO_ERR_FORMAT and "manifest line N: <reason>" in err (N 1-based): a field
 * count other than 3, an empty image path or answer (an empty prompt is fine), a NUL byte, a
 * CR inside a line, a line over PERPO_MANIFEST_MAX_LINE bytes; and a text over
 * PERPO_MANIFEST_MAX_BYTES. Fields are taken as they are (no trimming, no quoting); paths are
 * returned as written, relative ones are the caller's to resolve. */
#define PERPO_MANIFEST_MAX_LINE  65536             /* bytes of one line, without its end */
#define PERPO_MANIFEST_MAX_BYTES ((size_t)1 << 30) /* 1 GiB */

typedef struct perpo_manifest_entry {
    const char *image, *prompt, *answer; /* NUL-terminated, inside the manifest's buffer */
    size_t line;                         /* 1-based line of the text it came from */
} perpo_manifest_entry;

/* n entries; entries and their strings live in one allocation owned by the manifest. */
typedef struct perpo_manifest {
    perpo_manifest_entry *entries;
    size_t n;
    void *alloc_ctx_; /* private: where the allocation came from */
} perpo_manifest;

/* Parses text[0..len) (no NUL needed). On success out owns a copy, allocated through alloc_ctx
 * (may be NULL; free it with perpo_manifest_free); zero entries is a success. On error out is
 * empty. */
PERPODEF perpo_status perpo_manifest_parse(const char *text, size_t len, perpo_manifest *out,
                                           char *err, size_t err_cap, void *alloc_ctx);
/* Reads and parses a file; PERPO_ERR_IO when it cannot be read or is not a regular file (a
 * folder, a device, a pipe); messages start with the path. */
PERPODEF perpo_status perpo_manifest_load(const char *path, perpo_manifest *out, char *err,
                                          size_t err_cap, void *alloc_ctx);
/* Frees what parse/load allocated and empties the manifest; NULL and empty are fine. */
PERPODEF void perpo_manifest_free(perpo_manifest *m);

#ifdef __cplusplus
}
#endif
#endif /* PERPO_H */

/* ==========================================================================================
   IMPLEMENTATION
   ========================================================================================== */
#ifdef PERPO_IMPLEMENTATION
#ifndef PERPO_IMPLEMENTATION_DONE
#define PERPO_IMPLEMENTATION_DONE

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* POSIX, where the platform has it: stat() tells a regular file from a folder or device, and
   fsync() makes a checkpoint durable. glibc declares both even under -std=c99. */
#if !defined(PERPO_NO_POSIX) &&                                                                    \
    (defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__)))
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define PERPO__POSIX 1
/* Flags of the checkpoint's temporary file that strict C99 modes of some libcs hide (O_CREAT |
   O_EXCL alone already refuses a symbolic link) */
#ifdef O_NOFOLLOW
#define PERPO__O_NOFOLLOW O_NOFOLLOW
#else
#define PERPO__O_NOFOLLOW 0
#endif
#ifdef O_CLOEXEC
#define PERPO__O_CLOEXEC O_CLOEXEC
#else
#define PERPO__O_CLOEXEC 0
#endif
#endif
#if defined(__GNUC__) || defined(__clang__)
#define PERPO__MAYBE_UNUSED __attribute__((unused))
#else
#define PERPO__MAYBE_UNUSED
#endif

#if defined(PERPO_MALLOC) && defined(PERPO_REALLOC) && defined(PERPO_FREE)
#elif !defined(PERPO_MALLOC) && !defined(PERPO_REALLOC) && !defined(PERPO_FREE)
#define PERPO_MALLOC(ctx, size)     ((void)(ctx), malloc(size))
#define PERPO_REALLOC(ctx, p, size) ((void)(ctx), realloc((p), (size)))
#define PERPO_FREE(ctx, p)          ((void)(ctx), free(p))
#else
#error "perpo.h: define all of PERPO_MALLOC, PERPO_REALLOC and PERPO_FREE, or none"
#endif

#ifndef PERPO_ASSERT
#include <assert.h>
#define PERPO_ASSERT(x) assert(x)
#endif

#ifdef PERPO_USE_CBLAS
#include <cblas.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
/* g++ 12's own AVX-512 header functions warn -Wmaybe-uninitialized once inlined at -O2 (GCC
   bug 105593, fixed in GCC 13): quiet for the implementation, the user's code unchanged */
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#define PERPO__GCC12_CXX_PRAGMAS
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h> /* the matrix product's register tile; portable C otherwise */
#endif
#ifdef PERPO_USE_BF16
#if !defined(__AVX512BF16__) || !defined(__AVX512BW__)
#error "PERPO_USE_BF16 needs AVX512_BF16 and AVX512BW: -march=native on a CPU that has them"
#endif
#ifdef PERPO_USE_CBLAS
#error "PERPO_USE_BF16 is a built-in product path: it excludes PERPO_USE_CBLAS"
#endif
#endif

#ifdef _OPENMP
#include <omp.h>
#define PERPO__PRAGMA(x) _Pragma(#x)
#define PERPO__OMP(x)    PERPO__PRAGMA(omp x)
#else
#define PERPO__OMP(x)
#endif
/* Work (in multiply-adds or elements) below which a loop stays on one thread: starting a
   parallel region costs more than it saves, most of all while decoding a few rows. */
#define PERPO__PAR_MIN 32768

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================================
   1. Utilities the method uses: status strings, checked sizes, RNG, clock, CRC32, character
      classes, finiteness, zeroed allocation (files: section 11)
   ========================================================================================== */

/* printf into err[0..cap) when err is given; always NUL-terminated, never more than one line.
   How every call says why it failed (see "WHY A CALL FAILED" at the top). perpo__errst is the
   same and returns st, so a check reads `return perpo__errst(err, cap, PERPO_ERR_ARG, ...)`. */
#if defined(__GNUC__) || defined(__clang__)
static void perpo__errf(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static perpo_status perpo__errst(char *err, size_t cap, perpo_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#endif
static void perpo__errf(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    if (!err || cap == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}
static perpo_status perpo__errst(char *err, size_t cap, perpo_status st, const char *fmt, ...) {
    va_list ap;
    if (!err || cap == 0) return st;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return st;
}

PERPODEF const char *perpo_status_string(perpo_status status) {
    switch (status) {
    case PERPO_OK: return "ok";
    case PERPO_ERR_ARG: return "invalid argument";
    case PERPO_ERR_NOMEM: return "out of memory";
    case PERPO_ERR_OVERFLOW: return "size overflow";
    case PERPO_ERR_IO: return "i/o error";
    case PERPO_ERR_FORMAT: return "malformed input";
    case PERPO_ERR_NONFINITE: return "non-finite value (NaN or Inf)";
    case PERPO_ERR_PEER: return "another worker of the data-parallel run failed";
    }
    return "unknown status";
}

/* a * b into *out; 0 on overflow. */
static int perpo__size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}
static int perpo__size_add(size_t a, size_t b, size_t *out) {
    if (b > (size_t)-1 - a) return 0;
    *out = a + b;
    return 1;
}

/* xoshiro256** seeded through splitmix64: small, fast, and the state lives in its owner. */
typedef struct perpo__rng {
    uint64_t s[4];
} perpo__rng;

static uint64_t perpo__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static void perpo__rng_seed(perpo__rng *r, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) r->s[i] = perpo__splitmix64(&seed);
}
static uint64_t perpo__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t perpo__rng_u64(perpo__rng *r) {
    uint64_t *s = r->s, out = perpo__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = perpo__rotl(s[3], 45);
    return out;
}
/* Uniform in [0, 1) with 53 random bits. */
static double perpo__rng_uniform(perpo__rng *r) {
    return (double)(perpo__rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}
/* Uniform integer in [0, n) without modulo bias worth noticing (n << 2^64). */
static size_t perpo__rng_below(perpo__rng *r, size_t n) {
    return (size_t)(perpo__rng_uniform(r) * (double)n) % n;
}
static double perpo__rng_normal(perpo__rng *r) {
    double u1 = perpo__rng_uniform(r), u2 = perpo__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Seconds from an arbitrary origin, for progress reports: wall clock from OpenMP or C11 when
   the build has them, else CPU time (equal to wall time for a single-threaded build). */
static double perpo__now(void) {
#if defined(_OPENMP)
    return omp_get_wtime();
#else
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && defined(TIME_UTC)
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) == TIME_UTC)
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
    return (double)clock() / (double)CLOCKS_PER_SEC;
#endif
}

PERPODEF uint32_t perpo_crc32(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ASCII whitespace as C's isspace() in the "C" locale: space, TAB, LF, CR, VT, FF. */
static int perpo__is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
/* An ASCII decimal digit (isdigit() in the "C" locale). */
static int perpo__is_digit(int c) { return c >= '0' && c <= '9'; }

/* FNV-1a, the 64-bit fingerprint of word n-grams (BLEU) and of what data-parallel workers must
   agree on: h = (h ^ next) * PRIME from h = BASIS. */
#define PERPO__FNV_BASIS UINT64_C(14695981039346656037)
#define PERPO__FNV_PRIME UINT64_C(1099511628211)

static int perpo__all_finite(const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Every call that takes an image checks it here and says why it refuses one, in one wording:
   a NaN or Inf is PERPO_ERR_NONFINITE, a value outside [0,1] PERPO_ERR_ARG (images are
   documented as [0,1]: a 0-255 image is the usual slip). fmt and what follows name the image
   as the caller's user knows it, e.g. ("%s: item %zu: image", w, i): the message names the
   argument or item the user passed, never an internal slot. */
#if defined(__GNUC__) || defined(__clang__)
static perpo_status perpo__check_image(const float *x, size_t n, char *err, size_t cap,
                                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#endif
static perpo_status perpo__check_image(const float *x, size_t n, char *err, size_t cap,
                                       const char *fmt, ...) {
    char who[PERPO_ERROR_MAX];
    va_list ap;
    size_t at;
    perpo_status st = PERPO_ERR_NONFINITE;
    for (at = 0; at < n && isfinite(x[at]); at++) {}
    if (at == n) { /* all finite: then the range, which a NaN would pass */
        st = PERPO_ERR_ARG;
        for (at = 0; at < n && x[at] >= 0.0f && x[at] <= 1.0f; at++) {}
    }
    if (at == n) return PERPO_OK;
    if (!err || cap == 0) return st;
    va_start(ap, fmt);
    vsnprintf(who, sizeof who, fmt, ap);
    va_end(ap);
    if (st == PERPO_ERR_NONFINITE)
        return perpo__errst(err, cap, st,
                            "%s value %g at float %zu is not finite: images hold numbers in [0,1]",
                            who, (double)x[at], at);
    return perpo__errst(err, cap, st,
                        "%s value %g at float %zu is outside [0,1]: scale pixels to [0,1] (divide "
                        "0-255 values by 255)",
                        who, (double)x[at], at);
}

/* calloc through the user allocator, with an overflow-checked n * size. */
static void *perpo__calloc(void *ctx, size_t n, size_t size) {
    size_t bytes;
    void *p;
    if (!perpo__size_mul(n, size, &bytes)) return NULL;
    p = PERPO_MALLOC(ctx, bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}

/* ==========================================================================================
   2. Reference kernels. Row-major float arrays with explicit sizes. Each op is a forward /
      backward pair; backward ADDS into gradients that the caller zeroed. The fast kernels that
      compute the same values (tiles, packing, intrinsics, threads) are in section 10.
   ========================================================================================== */

/* Arrays that do not overlap: saying so (restrict) is what lets compilers vectorize loops whose
   pointers all come from the same buffers. */
#if !defined(__cplusplus)
#define PERPO__RESTRICT restrict
#elif defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define PERPO__RESTRICT __restrict
#else
#define PERPO__RESTRICT
#endif
/* ---- Reference kernels: the math in plain C ----------------------------------------------- *
 * One plain function per operation, forward and backward, written as the math reads: loops over
 * rows, columns and the summed index, one row at a time; no packing, tiling, intrinsics or
 * threads. They define what the fast kernels after them compute: the tests hold every fast
 * kernel against its reference (tests/t_reference.c), and PERPO_REFERENCE runs the whole library
 * on them (section 3, "The reference model"). Arrays are row-major and dense; backward ADDS into
 * gradients that the caller zeroed (GELU's excepted: see there). Every sum runs over its index
 * in increasing order, from 0 or from what it adds to, as the fast kernels sum, and the
 * products' multiply-adds round as the fast products' do (perpo__ref_madd), so that the two
 * agree bit for bit where they sum the same terms. */

/* s + a b, the multiply-add of every product below: rounded once (fmaf) in AVX2 and AVX-512
   builds, whose fast products run explicit FMA instructions, else as written (portable builds
   multiply and add as this does). A plain s += a * b would leave it to the compiler, which
   fuses or not by its own rules (GCC tuned for AMD keeps a loop's running sum unfused). */
static PERPO__MAYBE_UNUSED float perpo__ref_madd(float s, float a, float b) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    return fmaf(a, b, s);
#else
    return s + a * b;
#endif
}

/* C (M,N) = [C +] op(A) . op(B), op(A): (M,K), op(B): (K,N). ta: A is stored (K,M), else (M,K);
   tb: B is stored (N,K), else (K,N). The model multiplies x W^T (tb), dy W, dy^T x (ta). */
static PERPO__MAYBE_UNUSED void perpo__ref_matmul_forward(float *C, const float *A, const float *B,
                                                          size_t M, size_t N, size_t K, int ta,
                                                          int tb, int accumulate) {
    size_t i, j, k;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            float s = accumulate ? C[i * N + j] : 0.0f;
            for (k = 0; k < K; k++)
                s = perpo__ref_madd(s, ta ? A[k * M + i] : A[i * K + k],
                                    tb ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = s;
        }
}
/* dA += dC . op(B)^T and dB += op(A)^T . dC, each stored as its matrix is; dA or dB may be NULL.
   dC: (M,N). */
static PERPO__MAYBE_UNUSED void perpo__ref_matmul_backward(float *dA, float *dB, const float *dC,
                                                           const float *A, const float *B, size_t M,
                                                           size_t N, size_t K, int ta, int tb) {
    size_t i, j, k;
    for (i = 0; dA && i < M; i++)
        for (k = 0; k < K; k++) {
            float *d = ta ? &dA[k * M + i] : &dA[i * K + k];
            for (j = 0; j < N; j++)
                *d = perpo__ref_madd(*d, dC[i * N + j], tb ? B[j * K + k] : B[k * N + j]);
        }
    for (k = 0; dB && k < K; k++)
        for (j = 0; j < N; j++) {
            float *d = tb ? &dB[j * K + k] : &dB[k * N + j];
            for (i = 0; i < M; i++)
                *d = perpo__ref_madd(*d, ta ? A[k * M + i] : A[i * K + k], dC[i * N + j]);
        }
}

/* Linear layer, PyTorch layout: out (N,OC) = inp (N,C) . W^T + b.  W: (OC,C), b: (OC) or NULL. */
static PERPO__MAYBE_UNUSED void perpo__ref_linear_forward(float *out, const float *inp,
                                                          const float *W, const float *b, size_t N,
                                                          size_t C, size_t OC) {
    size_t n, o, c;
    for (n = 0; n < N; n++)
        for (o = 0; o < OC; o++) {
            const float *x = inp + n * C, *w = W + o * C;
            float s = 0.0f;
            for (c = 0; c < C; c++) s = perpo__ref_madd(s, x[c], w[c]);
            out[n * OC + o] = b ? s + b[o] : s;
        }
}
/* dinp (N,C) += dout . W;  dW (OC,C) += dout^T . inp;  db (OC) += column sums of dout.
   dinp (the input is data) and db (no bias) may be NULL. dout: (N,OC). Row by row: row n of
   dinp gets dout(n,o) W(o,:) for o in order, and dW(o,:) gets dout(n,o) inp(n,:) for n in
   order. */
static PERPO__MAYBE_UNUSED void perpo__ref_linear_backward(float *dinp, float *dW, float *db,
                                                           const float *dout, const float *inp,
                                                           const float *W, size_t N, size_t C,
                                                           size_t OC) {
    size_t n, o, c;
    for (n = 0; dinp && n < N; n++)
        for (o = 0; o < OC; o++) {
            float d = dout[n * OC + o], *dx = dinp + n * C;
            const float *w = W + o * C;
            for (c = 0; c < C; c++) dx[c] = perpo__ref_madd(dx[c], d, w[c]);
        }
    for (n = 0; n < N; n++)
        for (o = 0; o < OC; o++) {
            float d = dout[n * OC + o], *dw = dW + o * C;
            const float *x = inp + n * C;
            for (c = 0; c < C; c++) dw[c] = perpo__ref_madd(dw[c], d, x[c]);
        }
    for (n = 0; db && n < N; n++)
        for (o = 0; o < OC; o++) db[o] += dout[n * OC + o];
}

/* LayerNorm of each row of inp (N,D): out = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var +
   1e-5), the variance biased (divided by D), as PyTorch. w, b: (D). Keeps mean, rstd (N). */
static PERPO__MAYBE_UNUSED void perpo__ref_layernorm_forward(float *out, float *mean, float *rstd,
                                                             const float *inp, const float *w,
                                                             const float *b, size_t N, size_t D) {
    size_t n, i;
    for (n = 0; n < N; n++) {
        const float *x = inp + n * D;
        float *y = out + n * D, m = 0.0f, v = 0.0f, s;
        for (i = 0; i < D; i++) m += x[i];
        m /= (float)D;
        for (i = 0; i < D; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= (float)D;
        s = 1.0f / sqrtf(v + 1e-5f);
        for (i = 0; i < D; i++) y[i] = (x[i] - m) * s * w[i] + b[i];
        mean[n] = m;
        rstd[n] = s;
    }
}
/* dinp (N,D) += dL/dx, dw, db (D) += dL/dw, dL/db, from dout (N,D). With xh = (x - mean) rstd
   and g = dout * w: dx = rstd (g - mean(g) - xh mean(g xh)). */
static PERPO__MAYBE_UNUSED void perpo__ref_layernorm_backward(float *dinp, float *dw, float *db,
                                                              const float *dout, const float *inp,
                                                              const float *w, const float *mean,
                                                              const float *rstd, size_t N,
                                                              size_t D) {
    size_t n, i;
    for (n = 0; n < N; n++) {
        const float *x = inp + n * D, *dy = dout + n * D;
        float *dx = dinp + n * D, m = mean[n], s = rstd[n], mean_g = 0.0f, mean_gxh = 0.0f;
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s, g = dy[i] * w[i];
            mean_g += g;
            mean_gxh += g * xh;
        }
        mean_g /= (float)D;
        mean_gxh /= (float)D;
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s;
            dx[i] += s * (dy[i] * w[i] - mean_g - xh * mean_gxh);
            dw[i] += dy[i] * xh;
            db[i] += dy[i];
        }
    }
}

/* GELU, tanh approximation (PyTorch approximate='tanh'): 0.5 x (1 + tanh(u)), u = sqrt(2/pi)
   (x + 0.044715 x^3). out, inp: (n); out may be inp. */
static PERPO__MAYBE_UNUSED void perpo__ref_gelu_forward(float *out, const float *inp, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        float x = inp[i], u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}
/* dinp = dout * GELU'(inp), an element-wise product that sets dinp (dinp may be dout: in place),
   as the fast kernel's. GELU' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx. */
static PERPO__MAYBE_UNUSED void perpo__ref_gelu_backward(float *dinp, const float *inp,
                                                         const float *dout, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        float x = inp[i], u = 0.7978845608028654f * (x + 0.044715f * x * x * x), t = tanhf(u);
        float du = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
    }
}

/* p (n) = softmax(x (n)) = e^(x - max x) / sum of those (n >= 1); p may be x. */
static PERPO__MAYBE_UNUSED void perpo__ref_softmax_forward(float *p, const float *x, size_t n) {
    size_t i;
    float mx = x[0], sum = 0.0f;
    for (i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    for (i = 0; i < n; i++) {
        p[i] = expf(x[i] - mx);
        sum += p[i];
    }
    for (i = 0; i < n; i++) p[i] /= sum;
}
/* dx (n) += p * (dp - sum_j p_j dp_j), given p = softmax(x) and dp = dL/dp. */
static PERPO__MAYBE_UNUSED void perpo__ref_softmax_backward(float *dx, const float *p,
                                                            const float *dp, size_t n) {
    size_t i;
    float dot = 0.0f;
    for (i = 0; i < n; i++) dot += dp[i] * p[i];
    for (i = 0; i < n; i++) dx[i] += p[i] * (dp[i] - dot);
}

/* Multi-head self-attention. qkv: (B,T,3D), each row q | k | v; head h reads columns h*hd ..
   (h+1)*hd - 1 of each, hd = D/H. For each sequence, head and query t: scores s = q_t . k_u /
   sqrt(hd) over the keys u <= t (causal) or all u, p = softmax(s), out_t = sum_u p_u v_u.
   out: (B,T,D), the heads side by side. att: (B,H,T,T) keeps p (zero above the diagonal when
   causal) for backward. */
static PERPO__MAYBE_UNUSED void perpo__ref_attention_forward(float *out, float *att,
                                                             const float *qkv, size_t B, size_t T,
                                                             size_t D, size_t H, int causal) {
    size_t hd = D / H, b, h, t, u, i;
    float scale = 1.0f / sqrtf((float)hd);
    for (b = 0; b < B; b++)
        for (h = 0; h < H; h++)
            for (t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * D + h * hd;
                float *p = att + ((b * H + h) * T + t) * T, *o = out + (b * T + t) * D + h * hd;
                size_t n = causal ? t + 1 : T; /* the keys query t sees */
                for (u = 0; u < n; u++) {
                    const float *k = qkv + (b * T + u) * 3 * D + D + h * hd;
                    float s = 0.0f;
                    for (i = 0; i < hd; i++) s = perpo__ref_madd(s, q[i], k[i]);
                    p[u] = s * scale;
                }
                perpo__ref_softmax_forward(p, p, n);
                for (u = n; u < T; u++) p[u] = 0.0f;
                for (i = 0; i < hd; i++) o[i] = 0.0f;
                for (u = 0; u < n; u++) {
                    const float *v = qkv + (b * T + u) * 3 * D + 2 * D + h * hd;
                    for (i = 0; i < hd; i++) o[i] = perpo__ref_madd(o[i], p[u], v[i]);
                }
            }
}
/* dqkv (B,T,3D) += the gradient from dout (B,T,D), given att and qkv of the forward. For each
   query t: dp_u = dout_t . v_u; ds = softmax backward of dp, times 1/sqrt(hd); then
   dq_t += ds_u k_u, dk_u += ds_u q_t, dv_u += p_u dout_t. ws: 2T floats (dp, ds). */
static PERPO__MAYBE_UNUSED void perpo__ref_attention_backward(float *dqkv, const float *dout,
                                                              const float *att, const float *qkv,
                                                              size_t B, size_t T, size_t D,
                                                              size_t H, int causal, float *ws) {
    size_t hd = D / H, b, h, t, u, i;
    float scale = 1.0f / sqrtf((float)hd), *dp = ws, *ds = ws + T;
    for (b = 0; b < B; b++)
        for (h = 0; h < H; h++)
            for (t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * D + h * hd;
                const float *p = att + ((b * H + h) * T + t) * T,
                            *dy = dout + (b * T + t) * D + h * hd;
                float *dq = dqkv + (b * T + t) * 3 * D + h * hd;
                size_t n = causal ? t + 1 : T;
                for (u = 0; u < n; u++) {
                    const float *v = qkv + (b * T + u) * 3 * D + 2 * D + h * hd;
                    float s = 0.0f;
                    for (i = 0; i < hd; i++) s = perpo__ref_madd(s, dy[i], v[i]);
                    dp[u] = s;
                    ds[u] = 0.0f;
                }
                perpo__ref_softmax_backward(ds, p, dp, n);
                for (u = 0; u < n; u++) {
                    const float *k = qkv + (b * T + u) * 3 * D + D + h * hd;
                    float *dk = dqkv + (b * T + u) * 3 * D + D + h * hd, *dv = dk + D,
                          g = ds[u] * scale;
                    for (i = 0; i < hd; i++) dq[i] = perpo__ref_madd(dq[i], g, k[i]);
                    for (i = 0; i < hd; i++) dk[i] = perpo__ref_madd(dk[i], g, q[i]);
                    for (i = 0; i < hd; i++) dv[i] = perpo__ref_madd(dv[i], p[u], dy[i]);
                }
            }
}

/* Log-softmax at the targets (the cross-entropy, negated) of the rows of logits (N,V): lse[n] =
   log sum_v e^logits[n,v] (the sum in double); returns the sum over rows with a target
   (targets[n] >= 0; -1 skips the row) of log softmax(logits[n])[targets[n]] = logits[n,
   target] - lse[n], in double. */
static PERPO__MAYBE_UNUSED double perpo__ref_logsoftmax_forward(float *lse, const float *logits,
                                                                const int *targets, size_t N,
                                                                size_t V) {
    size_t n, v;
    double total = 0.0;
    for (n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float mx = -INFINITY;
        double s = 0.0;
        for (v = 0; v < V; v++)
            if (z[v] > mx) mx = z[v];
        for (v = 0; v < V; v++) s += exp((double)(z[v] - mx));
        lse[n] = mx + (float)log(s);
        if (targets[n] >= 0) total += (double)z[targets[n]] - (double)lse[n];
    }
    return total;
}
/* dlogits (N,V) += dlp * (onehot(target) - softmax(logits)) on the rows with a target: the
   gradient of the returned sum times dlp. */
static PERPO__MAYBE_UNUSED void perpo__ref_logsoftmax_backward(float *dlogits, float dlp,
                                                               const float *logits,
                                                               const float *lse, const int *targets,
                                                               size_t N, size_t V) {
    size_t n, v;
    for (n = 0; n < N; n++) {
        float *dz = dlogits + n * V;
        if (targets[n] < 0) continue;
        for (v = 0; v < V; v++) dz[v] += -dlp * expf(logits[n * V + v] - lse[n]);
        dz[targets[n]] += dlp;
    }
}

/* A residual connection, out = inp + (the branch's output already in out): out += inp; its
   backward sends dout to both: dinp += dout (the branch's part reads dout itself). (n) each. */
static PERPO__MAYBE_UNUSED void perpo__ref_residual_forward(float *out, const float *inp,
                                                            size_t n) {
    size_t i;
    for (i = 0; i < n; i++) out[i] += inp[i];
}
static PERPO__MAYBE_UNUSED void perpo__ref_residual_backward(float *dinp, const float *dout,
                                                             size_t n) {
    size_t i;
    for (i = 0; i < n; i++) dinp[i] += dout[i];
}

/* ---- Patchify: image (H,W,C) -> (NP, patch_h*patch_w*(C [+2])) rows, patches row-major,
   pixels (dy,dx,c [,x,y]): with pos_channels each pixel also carries its x and y ---------- */
static void perpo__patchify(float *out, const float *img, const perpo_config *cfg) {
    size_t H = (size_t)cfg->image_h, W = (size_t)cfg->image_w, C = (size_t)cfg->channels;
    size_t PH = (size_t)cfg->patch_h, PW = (size_t)cfg->patch_w, py, px, dy, dx, c;
    for (py = 0; py < H / PH; py++)
        for (px = 0; px < W / PW; px++)
            for (dy = 0; dy < PH; dy++)
                for (dx = 0; dx < PW; dx++) {
                    size_t y = py * PH + dy, x = px * PW + dx;
                    for (c = 0; c < C; c++) *out++ = img[(y * W + x) * C + c];
                    if (cfg->pos_channels) { /* x then y, each spanning [-1, 1] over the image */
                        *out++ = W > 1 ? (float)(-1.0 + 2.0 * (double)x / (double)(W - 1)) : 0.0f;
                        *out++ = H > 1 ? (float)(-1.0 + 2.0 * (double)y / (double)(H - 1)) : 0.0f;
                    }
                }
}

/* The fixed 2D sin-cos code of the vision positions (D % 4 == 0): for the patch in column px
   and row py, with q = D / 4 and w_k = 100^(-k/q), the row is
   [sin(px w_k), cos(px w_k), sin(py w_k), cos(py w_k)] for k = 0..q-1, each block of q. */
static void perpo__sincos_2d(float *out, size_t cols, size_t rows, size_t D) {
    size_t q = D / 4, px, py, k;
    for (py = 0; py < rows; py++)
        for (px = 0; px < cols; px++, out += D)
            for (k = 0; k < q; k++) {
                double w = pow(100.0, -(double)k / (double)q);
                out[k] = (float)sin((double)px * w);
                out[q + k] = (float)cos((double)px * w);
                out[2 * q + k] = (float)sin((double)py * w);
                out[3 * q + k] = (float)cos((double)py * w);
            }
}

/* ==========================================================================================
   3. The compact MLLM (LLaVA-shaped). Image -> patch_h x patch_w patches (optional x/y position
      channels) -> linear embedding + learned position (+ optional 2D sin-cos code) ->
      bidirectional blocks (vision encoder) -> LayerNorm -> 2-layer GELU MLP projector (as
      LLaVA-1.5) -> image tokens. Decoder: pre-LN causal blocks over [image tokens ; text
      tokens] + learned positions -> LayerNorm -> untied head on the text positions.
      Here: its tensors and activations, its text rows, the reference forward and backward, the
      switch between them and the fast path, perpo_forward and perpo_backward. Its memory and
      lifetime (parameter table, arena, create) are section 9, its fast path section 10.
   ========================================================================================== */

/* One tensor of the flat parameter buffer. */
typedef struct perpo__tensor {
    const char *name;
    size_t offset, rows, cols; /* cols == 0: a vector of rows elements */
} perpo__tensor;

/* Offsets of the 12 tensors of one transformer block. */
typedef struct perpo__block {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, attn_w, attn_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
} perpo__block;

/* What one block's forward keeps for backward. */
typedef struct perpo__block_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N,D), (N), (N) */
    float *qkv;                       /* (N,3D) */
    float *att;                       /* (B,H,T,T) softmax probabilities */
    float *atty;                      /* (N,D) attention output before the projection */
    float *mid;                       /* (N,D) residual stream after attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fcg; /* (N,M) MLP hidden before / after GELU */
} perpo__block_acts;

struct perpo_model {
    perpo_config cfg;
    /* derived sizes */
    size_t NP, T, L, D, H, M, V, PPC; /* patches, text positions, NP+T, width, heads, MLP hidden,
                                         vocab, patch vector length (position channels included) */
    size_t image_floats;              /* image_h * image_w * channels: one input image */
    size_t max_batch;
    /* parameters, gradients, AdamW moments: same layout, described by the tensor table */
    perpo__tensor *tensors;
    size_t n_tensors, n_params;
    /* offsets into params of the tensors of these names (patch_w: the patch embedding's weight,
       not cfg.patch_w) */
    size_t patch_w, patch_b, vis_pos, vis_lnf_w, vis_lnf_b, proj1_w, proj1_b, proj2_w, proj2_b;
    size_t wte, dec_pos, lnf_w, lnf_b, head_w;
    perpo__block *vis, *dec;
    float *params, *grads, *adam_m, *adam_v;
    int opt_step;
    /* activation arena */
    float *arena;
    size_t arena_floats;
    float *patches;    /* (maxB*NP, PPC) */
    float *vis_sincos; /* (NP, D) fixed 2D sin-cos code, when cfg.vis_sincos */
    float **vis_x;     /* LV+1 residual streams (maxB*NP, D) */
    perpo__block_acts *vis_acts;
    float *vis_lnf, *vis_lnf_mean, *vis_lnf_rstd, *proj_h, *proj_g, *img_tok;
    float **dec_x; /* LD+1 residual streams (maxB*L, D) */
    perpo__block_acts *dec_acts;
    float *txt, *lnf, *lnf_mean, *lnf_rstd; /* final stream's text rows (maxB*T, D) and their LN */
    float *logits, *lse, *dlogits;          /* (maxB*T, V), (maxB*T), (maxB*T, V) */
    float *d_res, *d_tmp, *d_atty, *d_qkv, *d_fc, *d_img; /* backward scratch */
    float *d_mid, *d_tmp2; /* (of a block's backward: dL/dmid, LN1's input gradient) */
    float *att_ws;         /* attention backward: dS, a (T,T) matrix per (sequence, head) */
    float *gemm_ws; /* 3 areas of ws_area floats: products that follow each other unsynchronized */
    size_t ws_area;
    /* generation: KV cache per decoder layer (maxB, L, D) and per-row scratch */
    float *kcache, *vcache;
    float *wpack; /* weights packed for the forward and decoding (perpo__wpack_get) */
    float *bpack; /* the same for backward's input gradients (perpo__bpack_get) */
    unsigned long params_version, wpack_version; /* bumped by whatever may change params */
    int wpack_ok;
    size_t g_rows; /* max(maxB, L) */
    float *g_x, *g_ln, *g_mean, *g_rstd, *g_qkv, *g_atty, *g_tmp, *g_fch, *g_scores, *g_logits;
    /* the batch of the last forward, kept for backward */
    int *tokens, *targets;
    size_t *image_of;
    size_t n_seq, n_img;
    int have_forward;
    struct perpo__token_score *sort_buf; /* (maxB, V): each sequence's candidates of a draw */
    /* 1: every parameter is known finite (set by create, load and each optimizer step, which
       check them); 0: perpo_model_params handed out a writable pointer since, so generation
       and save check the values themselves */
    int params_known_finite;
    /* 1: loaded from a checkpoint without optimizer state and not trained since, so resume = 1
       has nothing to continue from (the trainers refuse it) */
    int no_opt_state;
    char error[PERPO_ERROR_MAX]; /* perpo_model_last_error */
};

/* ---- Text: one sequence's tokens, BOS prompt SEP response EOS ---------------------------- */
/* 1 when BOS prompt SEP response EOS fits in T text positions (a prompt alone: response_len 1,
   room for at least one generated byte). */
static int perpo__text_fits(size_t T, size_t prompt_len, size_t response_len) {
    return prompt_len <= T && response_len <= T && prompt_len + response_len + 3 <= T;
}

PERPODEF perpo_status perpo_text_encode_err(const perpo_config *cfg, const char *prompt,
                                            size_t prompt_len, const char *response,
                                            size_t response_len, int *tokens, int *targets,
                                            size_t *n_targets, char *err, size_t err_cap) {
    const char *w = "perpo_text_encode";
    size_t T, i, n, pos = 0;
    perpo__errf(err, err_cap, "%s", "");
    if (!cfg || !tokens || !targets)
        return perpo__errst(err, err_cap, PERPO_ERR_ARG, "%s: cfg, tokens or targets is NULL", w);
    if ((prompt_len && !prompt) || (response_len && !response))
        return perpo__errst(err, err_cap, PERPO_ERR_ARG,
                            "%s: prompt (%zu bytes) or response (%zu bytes) is NULL: NULL only "
                            "with length 0",
                            w, prompt_len, response_len);
    if (cfg->max_text < PERPO_MIN_TEXT)
        return perpo__errst(err, err_cap, PERPO_ERR_ARG,
                            "%s: max_text %d must be >= %d (BOS, SEP, EOS and one byte)", w,
                            cfg->max_text, PERPO_MIN_TEXT);
    T = (size_t)cfg->max_text;
    if (!perpo__text_fits(T, prompt_len, response_len))
        return perpo__errst(err, err_cap, PERPO_ERR_ARG,
                            "%s: prompt %zu + response %zu bytes exceed max_text %zu - 3: shorten "
                            "them or raise max_text",
                            w, prompt_len, response_len, T);
    tokens[pos++] = PERPO_TOK_BOS;
    for (i = 0; i < prompt_len; i++) tokens[pos++] = (unsigned char)prompt[i];
    tokens[pos++] = PERPO_TOK_SEP;
    for (i = 0; i < response_len; i++) tokens[pos++] = (unsigned char)response[i];
    tokens[pos++] = PERPO_TOK_EOS;
    n = pos;
    for (; pos < T; pos++) tokens[pos] = PERPO_TOK_PAD;
    /* position t predicts token t+1: targets run from SEP's position to the one before EOS */
    for (i = 0; i < T; i++) targets[i] = -1;
    for (i = prompt_len + 1; i + 1 < n; i++) targets[i] = tokens[i + 1];
    if (n_targets) *n_targets = response_len + 1;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_text_encode(const perpo_config *cfg, const char *prompt,
                                        size_t prompt_len, const char *response,
                                        size_t response_len, int *tokens, int *targets,
                                        size_t *n_targets) {
    return perpo_text_encode_err(cfg, prompt, prompt_len, response, response_len, tokens, targets,
                                 n_targets, NULL, 0);
}

/* ---- The reference model: forward and backward as the math reads --------------------------- *
 * The whole model on the reference kernels, one call per operation, on the parameters where
 * they lie (m->params at the tensor table's offsets, gradients added into m->grads) and the
 * activations the fast path keeps (m->vis_x, m->vis_acts, m->dec_x, m->dec_acts, m->logits,
 * m->lse, ...), so that either backward can follow either forward. The backward is the forward's
 * calls in reverse, each replaced by its backward; its gradients of activations use the
 * backward scratch of the arena (m->d_*). One thread, nothing allocated. PERPO_REFERENCE makes
 * the library run these instead of the fast path (perpo_forward, perpo_backward, generation). */

static void perpo__ref_zero(float *x, size_t n) { memset(x, 0, n * sizeof(float)); }

/* One pre-LN transformer block over B sequences of T rows (causal: the decoder's):
   mid = x + Attn(LN1(x)), out = mid + MLP(LN2(mid)), MLP = fc2(GELU(fc(.))). x, out: (B*T, D). */
static void perpo__ref_block_forward(perpo_model *m, const perpo__block *p, perpo__block_acts *a,
                                     const float *x, float *out, size_t B, size_t T, int causal) {
    const float *P = m->params;
    size_t N = B * T, D = m->D, M = m->M;
    perpo__ref_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, P + p->ln1_w, P + p->ln1_b, N,
                                 D);
    perpo__ref_linear_forward(a->qkv, a->ln1, P + p->qkv_w, P + p->qkv_b, N, D, 3 * D);
    perpo__ref_attention_forward(a->atty, a->att, a->qkv, B, T, D, m->H, causal);
    perpo__ref_linear_forward(a->mid, a->atty, P + p->attn_w, P + p->attn_b, N, D, D);
    perpo__ref_residual_forward(a->mid, x, N * D);
    perpo__ref_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, P + p->ln2_w,
                                 P + p->ln2_b, N, D);
    perpo__ref_linear_forward(a->fch, a->ln2, P + p->fc_w, P + p->fc_b, N, D, M);
    perpo__ref_gelu_forward(a->fcg, a->fch, N * M);
    perpo__ref_linear_forward(out, a->fcg, P + p->fc2_w, P + p->fc2_b, N, M, D);
    perpo__ref_residual_forward(out, a->mid, N * D);
}
/* dres: dL/dout on entry, dL/dx on return. */
static void perpo__ref_block_backward(perpo_model *m, const perpo__block *p,
                                      const perpo__block_acts *a, const float *x, float *dres,
                                      size_t B, size_t T, int causal) {
    const float *P = m->params;
    float *G = m->grads, *dmid = m->d_mid, *dfc = m->d_fc, *dln2 = m->d_tmp, *datty = m->d_atty,
          *dqkv = m->d_qkv, *dln1 = m->d_tmp2;
    size_t N = B * T, D = m->D, M = m->M;
    perpo__ref_zero(dmid, N * D);
    perpo__ref_residual_backward(dmid, dres, N * D);
    perpo__ref_zero(dfc, N * M);
    perpo__ref_linear_backward(dfc, G + p->fc2_w, G + p->fc2_b, dres, a->fcg, P + p->fc2_w, N, M,
                               D);
    perpo__ref_gelu_backward(dfc, a->fch, dfc, N * M);
    perpo__ref_zero(dln2, N * D);
    perpo__ref_linear_backward(dln2, G + p->fc_w, G + p->fc_b, dfc, a->ln2, P + p->fc_w, N, D, M);
    perpo__ref_layernorm_backward(dmid, G + p->ln2_w, G + p->ln2_b, dln2, a->mid, P + p->ln2_w,
                                  a->ln2_mean, a->ln2_rstd, N, D);
    perpo__ref_zero(dres, N * D); /* from here on dL/dx */
    perpo__ref_residual_backward(dres, dmid, N * D);
    perpo__ref_zero(datty, N * D);
    perpo__ref_linear_backward(datty, G + p->attn_w, G + p->attn_b, dmid, a->atty, P + p->attn_w, N,
                               D, D);
    perpo__ref_zero(dqkv, N * 3 * D);
    perpo__ref_attention_backward(dqkv, datty, a->att, a->qkv, B, T, D, m->H, causal, m->att_ws);
    perpo__ref_zero(dln1, N * D);
    perpo__ref_linear_backward(dln1, G + p->qkv_w, G + p->qkv_b, dqkv, a->ln1, P + p->qkv_w, N, D,
                               3 * D);
    perpo__ref_layernorm_backward(dres, G + p->ln1_w, G + p->ln1_b, dln1, x, P + p->ln1_w,
                                  a->ln1_mean, a->ln1_rstd, N, D);
}

/* The vision encoder's input: each image cut into patches (perpo__patchify: pixels, and their
   x, y with pos_channels), a linear patch embedding, plus the learned position of the patch and,
   with vis_sincos, its fixed 2D sin-cos code. vis_x[0]: (n_img*NP, D). */
static void perpo__ref_patch_embed_forward(perpo_model *m, const float *const *images,
                                           size_t n_img) {
    const float *P = m->params;
    size_t NP = m->NP, D = m->D, i, r;
    for (i = 0; i < n_img; i++) perpo__patchify(m->patches + i * NP * m->PPC, images[i], &m->cfg);
    perpo__ref_linear_forward(m->vis_x[0], m->patches, P + m->patch_w, P + m->patch_b, n_img * NP,
                              m->PPC, D);
    for (r = 0; r < n_img * NP; r++) {
        perpo__ref_residual_forward(m->vis_x[0] + r * D, P + m->vis_pos + (r % NP) * D, D);
        if (m->cfg.vis_sincos)
            perpo__ref_residual_forward(m->vis_x[0] + r * D, m->vis_sincos + (r % NP) * D, D);
    }
}
/* dx: dL/dvis_x[0]. The patches are data: no gradient of their own. */
static void perpo__ref_patch_embed_backward(perpo_model *m, const float *dx, size_t n_img) {
    float *G = m->grads;
    size_t NP = m->NP, D = m->D, r;
    for (r = 0; r < n_img * NP; r++)
        perpo__ref_residual_backward(G + m->vis_pos + (r % NP) * D, dx + r * D, D);
    perpo__ref_linear_backward(NULL, G + m->patch_w, G + m->patch_b, dx, m->patches,
                               m->params + m->patch_w, n_img * NP, m->PPC, D);
}

/* The projector (LLaVA-1.5's): img_tok = proj2(GELU(proj1(LN(x)))) on the encoder's output
   x = vis_x[LV]. */
static void perpo__ref_projector_forward(perpo_model *m, size_t n_img) {
    const float *P = m->params;
    size_t Nv = n_img * m->NP, D = m->D;
    perpo__ref_layernorm_forward(m->vis_lnf, m->vis_lnf_mean, m->vis_lnf_rstd,
                                 m->vis_x[m->cfg.n_vis_layers], P + m->vis_lnf_w, P + m->vis_lnf_b,
                                 Nv, D);
    perpo__ref_linear_forward(m->proj_h, m->vis_lnf, P + m->proj1_w, P + m->proj1_b, Nv, D, D);
    perpo__ref_gelu_forward(m->proj_g, m->proj_h, Nv * D);
    perpo__ref_linear_forward(m->img_tok, m->proj_g, P + m->proj2_w, P + m->proj2_b, Nv, D, D);
}
/* dimg: dL/dimg_tok; dx (n_img*NP, D): dL/dx, added into. */
static void perpo__ref_projector_backward(perpo_model *m, const float *dimg, float *dx,
                                          size_t n_img) {
    const float *P = m->params;
    float *G = m->grads, *dg = m->d_atty, *dln = m->d_tmp;
    size_t Nv = n_img * m->NP, D = m->D;
    perpo__ref_zero(dg, Nv * D);
    perpo__ref_linear_backward(dg, G + m->proj2_w, G + m->proj2_b, dimg, m->proj_g, P + m->proj2_w,
                               Nv, D, D);
    perpo__ref_gelu_backward(dg, m->proj_h, dg, Nv * D);
    perpo__ref_zero(dln, Nv * D);
    perpo__ref_linear_backward(dln, G + m->proj1_w, G + m->proj1_b, dg, m->vis_lnf, P + m->proj1_w,
                               Nv, D, D);
    perpo__ref_layernorm_backward(dx, G + m->vis_lnf_w, G + m->vis_lnf_b, dln,
                                  m->vis_x[m->cfg.n_vis_layers], P + m->vis_lnf_w, m->vis_lnf_mean,
                                  m->vis_lnf_rstd, Nv, D);
}

/* The decoder's input, sequence b's L = NP + T rows: its image's NP tokens, then its T text
   tokens' embeddings (wte), each plus the learned position of its row. dec_x[0]: (B*L, D). */
static void perpo__ref_decoder_embed_forward(perpo_model *m) {
    const float *P = m->params;
    size_t NP = m->NP, T = m->T, L = m->L, D = m->D, b, t, i;
    for (b = 0; b < m->n_seq; b++)
        for (t = 0; t < L; t++) {
            float *x = m->dec_x[0] + (b * L + t) * D;
            const float *e = t < NP ? m->img_tok + (m->image_of[b] * NP + t) * D
                                    : P + m->wte + (size_t)m->tokens[b * T + t - NP] * D;
            for (i = 0; i < D; i++) x[i] = e[i] + P[m->dec_pos + t * D + i];
        }
}
/* dx: dL/ddec_x[0]; dimg (n_img*NP, D): dL/dimg_tok, added into. */
static void perpo__ref_decoder_embed_backward(perpo_model *m, const float *dx, float *dimg) {
    float *G = m->grads;
    size_t NP = m->NP, T = m->T, L = m->L, D = m->D, b, t;
    for (b = 0; b < m->n_seq; b++)
        for (t = 0; t < L; t++) {
            const float *d = dx + (b * L + t) * D;
            float *de = t < NP ? dimg + (m->image_of[b] * NP + t) * D
                               : G + m->wte + (size_t)m->tokens[b * T + t - NP] * D;
            perpo__ref_residual_backward(de, d, D);
            perpo__ref_residual_backward(G + m->dec_pos + t * D, d, D);
        }
}

/* The head: the text rows of the decoder's output (txt), the final LayerNorm, the untied
   projection to the vocabulary (no bias): logits (B*T, V). */
static void perpo__ref_head_forward(perpo_model *m) {
    const float *P = m->params;
    size_t T = m->T, D = m->D, L = m->L, r;
    for (r = 0; r < m->n_seq * T; r++) /* row t of sequence b is decoder row NP + t */
        memcpy(m->txt + r * D, m->dec_x[m->cfg.n_dec_layers] + ((r / T) * L + m->NP + r % T) * D,
               D * sizeof(float));
    perpo__ref_layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, m->txt, P + m->lnf_w,
                                 P + m->lnf_b, m->n_seq * T, D);
    perpo__ref_linear_forward(m->logits, m->lnf, P + m->head_w, NULL, m->n_seq * T, D, m->V);
}
/* dx (B*L, D): dL/d(the decoder's output), set (image rows get zero). */
static void perpo__ref_head_backward(perpo_model *m, float *dx) {
    const float *P = m->params;
    float *G = m->grads, *dln = m->d_atty, *dtxt = m->d_tmp;
    size_t B = m->n_seq, T = m->T, D = m->D, L = m->L, r;
    perpo__ref_zero(dln, B * T * D);
    perpo__ref_linear_backward(dln, G + m->head_w, NULL, m->dlogits, m->lnf, P + m->head_w, B * T,
                               D, m->V);
    perpo__ref_zero(dtxt, B * T * D);
    perpo__ref_layernorm_backward(dtxt, G + m->lnf_w, G + m->lnf_b, dln, m->txt, P + m->lnf_w,
                                  m->lnf_mean, m->lnf_rstd, B * T, D);
    perpo__ref_zero(dx, B * L * D);
    for (r = 0; r < B * T; r++)
        memcpy(dx + ((r / T) * L + m->NP + r % T) * D, dtxt + r * D, D * sizeof(float));
}

/* The response-token loss: logp[b] = sum of log p(target) over sequence b's counted positions
   (targets >= 0: its response and EOS), the quantity every objective differentiates. */
static void perpo__ref_loss_forward(perpo_model *m, float *logp) {
    size_t T = m->T, V = m->V, b;
    for (b = 0; b < m->n_seq; b++) {
        double lp = perpo__ref_logsoftmax_forward(m->lse + b * T, m->logits + b * T * V,
                                                  m->targets + b * T, T, V);
        if (logp) logp[b] = (float)lp;
    }
}
/* dlogp[b] = dL/dlogp[b] -> dlogits (B*T, V), set. */
static void perpo__ref_loss_backward(perpo_model *m, const float *dlogp) {
    size_t T = m->T, V = m->V, b;
    perpo__ref_zero(m->dlogits, m->n_seq * T * V);
    for (b = 0; b < m->n_seq; b++)
        perpo__ref_logsoftmax_backward(m->dlogits + b * T * V, dlogp[b], m->logits + b * T * V,
                                       m->lse + b * T, m->targets + b * T, T, V);
}

/* The model: images -> vision encoder -> projector -> image tokens; [image tokens ; text] ->
   causal decoder -> head -> the loss. The batch (n_seq, tokens, targets, image_of) is m's, as
   perpo_forward stored it. logp (n_seq) may be NULL. */
static void perpo__ref_model_forward(perpo_model *m, const float *const *images, size_t n_img,
                                     float *logp) {
    size_t l, LV = (size_t)m->cfg.n_vis_layers, LD = (size_t)m->cfg.n_dec_layers;
    perpo__ref_patch_embed_forward(m, images, n_img);
    for (l = 0; l < LV; l++)
        perpo__ref_block_forward(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->vis_x[l + 1],
                                 n_img, m->NP, 0);
    perpo__ref_projector_forward(m, n_img);
    perpo__ref_decoder_embed_forward(m);
    for (l = 0; l < LD; l++)
        perpo__ref_block_forward(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->dec_x[l + 1],
                                 m->n_seq, m->L, 1);
    perpo__ref_head_forward(m);
    perpo__ref_loss_forward(m, logp);
}
/* Adds dL/dparams into m->grads for the last forward, given dlogp (n_seq). */
static void perpo__ref_model_backward(perpo_model *m, const float *dlogp) {
    size_t l, LV = (size_t)m->cfg.n_vis_layers, LD = (size_t)m->cfg.n_dec_layers;
    size_t n_img = m->n_img, Nv = n_img * m->NP;
    perpo__ref_loss_backward(m, dlogp);
    perpo__ref_head_backward(m, m->d_res);
    for (l = LD; l-- > 0;)
        perpo__ref_block_backward(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->d_res, m->n_seq,
                                  m->L, 1);
    perpo__ref_zero(m->d_img, Nv * m->D);
    perpo__ref_decoder_embed_backward(m, m->d_res, m->d_img);
    perpo__ref_zero(m->d_res, Nv * m->D); /* (now the vision rows' dL/dx) */
    perpo__ref_projector_backward(m, m->d_img, m->d_res, n_img);
    for (l = LV; l-- > 0;)
        perpo__ref_block_backward(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->d_res, n_img,
                                  m->NP, 0);
    perpo__ref_patch_embed_backward(m, m->d_res, n_img);
}

/* ---- The switch: which path runs the model ------------------------------------------------ *
 * The one place that chooses. PERPO_REFERENCE (defined before the implementation) runs the
 * whole library on the reference path: perpo_forward and perpo_backward (so SFT, preference
 * steps and reference log-probs), and generation, which then recomputes the whole sequence for
 * every token (the no_cache path) instead of keeping a KV cache. Both paths are compiled in
 * every build (the tests hold one against the other); this constant only picks. */
#ifdef PERPO_REFERENCE
#define PERPO__REFERENCE 1
#else
#define PERPO__REFERENCE 0
#endif

/* The fast path's forward and backward (section 10). */
static void perpo__forward_fast(perpo_model *m, const float *const *images, size_t n_img);
static void perpo__backward_fast(perpo_model *m, const float *dlogp);

static perpo_status perpo__check_batch(perpo_model *m, const perpo_batch *b) {
    const char *w = "perpo_forward";
    char *e = m->error;
    size_t i, n, cap = sizeof m->error;
    if (!b || !b->images || !b->tokens || !b->targets)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: batch, images, tokens or targets is NULL",
                            w);
    if (b->n_seq < 1 || b->n_seq > m->max_batch || b->n_img < 1 || b->n_img > m->max_batch)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: n_seq %zu and n_img %zu must be in [1, max_batch %zu]: split the "
                            "batch or raise max_batch",
                            w, b->n_seq, b->n_img, m->max_batch);
    if (!b->image_of && b->n_img != b->n_seq)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: image_of NULL needs n_img %zu == n_seq %zu",
                            w, b->n_img, b->n_seq);
    for (i = 0; i < b->n_img; i++) {
        perpo_status st;
        if (!b->images[i])
            return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: images[%zu] is NULL", w, i);
        if ((st = perpo__check_image(b->images[i], m->image_floats, e, cap, "%s: images[%zu]", w,
                                     i)) != PERPO_OK)
            return st;
    }
    for (i = 0; i < b->n_seq; i++)
        if (b->image_of && b->image_of[i] >= b->n_img)
            return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: image_of[%zu] %zu must be < n_img %zu",
                                w, i, b->image_of[i], b->n_img);
    n = b->n_seq * m->T;
    for (i = 0; i < n; i++)
        if (b->tokens[i] < 0 || (size_t)b->tokens[i] >= m->V || b->targets[i] < -1 ||
            b->targets[i] >= (int)m->V)
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: sequence %zu position %zu: token %d or target %d outside "
                                "[0, %zu) (targets may be -1)",
                                w, i / m->T, i % m->T, b->tokens[i], b->targets[i], m->V);
    return PERPO_OK;
}

PERPODEF perpo_status perpo_forward(perpo_model *m, const perpo_batch *batch, float *logp,
                                    float *mean_ce) {
    size_t B, T, V, b, t;
    double total = 0.0;
    size_t count = 0;
    int finite = 1;
    perpo_status st;
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    if ((st = perpo__check_batch(m, batch)) != PERPO_OK) return st;
    B = batch->n_seq;
    T = m->T;
    V = m->V;
    m->have_forward = 0;
    m->n_seq = B;
    m->n_img = batch->n_img;
    memcpy(m->tokens, batch->tokens, B * T * sizeof(int));
    memcpy(m->targets, batch->targets, B * T * sizeof(int));
    for (b = 0; b < B; b++) m->image_of[b] = batch->image_of ? batch->image_of[b] : b;

    if (PERPO__REFERENCE) { /* (the switch, above) */
        perpo__ref_model_forward(m, batch->images, batch->n_img, NULL);
    } else {
        perpo__forward_fast(m, batch->images, batch->n_img);
    }
    for (b = 0; b < B; b++) {
        double lp = 0.0;
        for (t = 0; t < T; t++) {
            const float *z = m->logits + (b * T + t) * V;
            int tgt = m->targets[b * T + t];
            if (tgt >= 0) {
                lp += (double)z[tgt] - (double)m->lse[b * T + t];
                count++;
            }
        }
        if (logp) logp[b] = (float)lp;
        if (!isfinite(lp)) finite = 0;
        total += lp;
    }
    if (mean_ce) *mean_ce = count ? (float)(-total / (double)count) : 0.0f;
    m->have_forward = 1;
    return finite ? PERPO_OK : PERPO_ERR_NONFINITE;
}

PERPODEF perpo_status perpo_backward(perpo_model *m, const float *dlogp) {
    size_t i;
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    if (!dlogp)
        return perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                            "perpo_backward: dlogp is NULL");
    if (!m->have_forward)
        return perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                            "perpo_backward: no forward pass to go back through: call "
                            "perpo_forward first (each backward needs a forward of its own)");
    for (i = 0; i < m->n_seq; i++)
        if (!isfinite(dlogp[i]))
            return perpo__errst(m->error, sizeof m->error, PERPO_ERR_NONFINITE,
                                "perpo_backward: dlogp[%zu] is %g: it must be finite", i,
                                (double)dlogp[i]);
    if (PERPO__REFERENCE) { /* (the switch) */
        perpo__ref_model_backward(m, dlogp);
    } else {
        perpo__backward_fast(m, dlogp);
    }
    return PERPO_OK;
}

PERPODEF void perpo_zero_grad(perpo_model *m) {
    if (m) memset(m->grads, 0, m->n_params * sizeof(float));
}
PERPODEF const float *perpo_last_logits(const perpo_model *m) {
    return m && m->have_forward ? m->logits : NULL;
}

/* ==========================================================================================
   4. The listwise objectives (PerPO, DPO, LiPO, ListMLE) over one list of sampled responses,
      and the preference metrics
   ========================================================================================== */

/* ---- Listwise objectives ----
 * Every objective works on s_k = logp_k - ref_logp_k in double, returns the loss and ADDS
 * dL/ds_k into g (= dL/dlogp_k, the reference being constant). */

PERPODEF const char *perpo_objective_name(perpo_objective kind) {
    switch (kind) {
    case PERPO_OBJ_PERPO: return "PerPO";
    case PERPO_OBJ_DPO: return "DPO";
    case PERPO_OBJ_LIPO: return "LiPO";
    case PERPO_OBJ_LISTMLE: return "ListMLE";
    }
    return "unknown";
}

PERPODEF perpo_objective_config perpo_objective_default(perpo_objective kind) {
    perpo_objective_config c;
    c.kind = kind;
    c.beta = 0.1f;
    c.gamma = 0.5f;
    c.label_smoothing = 0.0f;
    c.positive = 0.0f;
    return c;
}

/* The ranges documented at perpo_objective_config; NaN fails every comparison. The first field
   out of range goes into err: w names the call, f the config's field path ("objective." inside
   perpo_pref_config). */
static perpo_status perpo__objective_check(const perpo_objective_config *c, char *err, size_t cap,
                                           const char *w, const char *f) {
    if (!c) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: objective config is NULL", w);
    if ((int)c->kind < 0 || (int)c->kind >= PERPO_OBJ_COUNT)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %skind %d must be in [0, %d): PERPO_OBJ_PERPO, _DPO, _LIPO or "
                            "_LISTMLE",
                            w, f, (int)c->kind, PERPO_OBJ_COUNT);
    if (!(c->beta > 0.0f && c->beta <= PERPO_MAX_BETA))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %sbeta %g must be in (0, %g]", w, f,
                            (double)c->beta, (double)PERPO_MAX_BETA);
    if (!(c->gamma >= 0.0f && c->gamma <= PERPO_MAX_GAMMA))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %sgamma %g must be in [0, %g]", w, f,
                            (double)c->gamma, (double)PERPO_MAX_GAMMA);
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing <= PERPO_MAX_LABEL_SMOOTHING))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %slabel_smoothing %g must be in [0, %g]",
                            w, f, (double)c->label_smoothing, (double)PERPO_MAX_LABEL_SMOOTHING);
    if (!(c->positive >= 0.0f && c->positive <= PERPO_MAX_POSITIVE))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %spositive %g must be in [0, %g]", w, f,
                            (double)c->positive, (double)PERPO_MAX_POSITIVE);
    return PERPO_OK;
}

/* log(1 + e^x) without overflow; -log sigmoid(x) = softplus(-x). */
static double perpo__softplus(double x) { return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static double perpo__sigmoid(double x) {
    double e;
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    e = exp(x);
    return e / (1.0 + e);
}

/* Pair loss l(x) = -(1-eps) log sigma(x) - eps log sigma(-x), x = margin of the preferred
 * response (DPO's loss; eps > 0 is cDPO's label smoothing). Also gives dl/dx. */
static double perpo__pair_loss(double x, double eps, double *dl_dx) {
    *dl_dx = -(1.0 - eps) * perpo__sigmoid(-x) + eps * perpo__sigmoid(x);
    return (1.0 - eps) * perpo__softplus(-x) + eps * perpo__softplus(x);
}

/* The margin x of a pair, response i preferred over response j: beta (s_i - s_j), less
 * beta * lambda * max(0, -s_i) with DPO-Positive's lambda > 0 (perpo_objective_config.positive).
 * *dx_dsi gets dx/ds_i; dx/ds_j is always -beta. */
static double perpo__pair_margin(double si, double sj, double beta, double lambda, double *dx_dsi) {
    if (lambda > 0.0 && si < 0.0) { /* max(0, -s_i) = -s_i */
        *dx_dsi = beta * (1.0 + lambda);
        return beta * (si - sj + lambda * si);
    }
    *dx_dsi = beta;
    return beta * (si - sj);
}

/* Indices sorted by key, descending; equal keys keep the lower index first (stable insertion
 * sort, fine for n <= PERPO_MAX_LIST). */
static void perpo__argsort_desc(const double *key, int n, int *idx) {
    int i, j;
    for (i = 0; i < n; i++) {
        for (j = i; j > 0 && key[idx[j - 1]] < key[i]; j--) idx[j] = idx[j - 1];
        idx[j] = i;
    }
}

/* PerPO (arXiv 2502.04371, its listwise loss): L = sum_{R_i > R_j} w_ij l(beta (s_i - s_j)) with
 * w_ij = |R_i - R_j|^gamma / sum_{R_k > R_l} |R_k - R_l|^gamma. Gaps are divided by the largest
 * gap first: the weights are unchanged (the factor cancels) and pow() can neither overflow nor
 * make every weight underflow, since the largest gap has weight 1 before normalizing. */
static double perpo__loss_perpo(int n, const double *s, const double *R, double beta, double gamma,
                                double eps, double lambda, double *g) {
    double rmax = R[0], rmin = R[0], span, wsum = 0.0, L = 0.0, d;
    int i, j;
    for (i = 1; i < n; i++) {
        if (R[i] > rmax) rmax = R[i];
        if (R[i] < rmin) rmin = R[i];
    }
    span = rmax - rmin;
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            if (R[i] > R[j]) wsum += pow((R[i] - R[j]) / span, gamma);
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            if (R[i] > R[j]) {
                double w = pow((R[i] - R[j]) / span, gamma) / wsum, dxi;
                double x = perpo__pair_margin(s[i], s[j], beta, lambda, &dxi);
                L += w * perpo__pair_loss(x, eps, &d);
                g[i] += w * dxi * d;
                g[j] -= w * beta * d;
            }
    return L;
}

/* DPO on the list's extremes: first best-reward response vs first worst-reward response. */
static double perpo__loss_dpo(int n, const double *s, const double *R, double beta, double eps,
                              double lambda, double *g) {
    int k, best = 0, worst = 0;
    double L, d, dxi, x;
    for (k = 1; k < n; k++) {
        if (R[k] > R[best]) best = k;
        if (R[k] < R[worst]) worst = k;
    }
    x = perpo__pair_margin(s[best], s[worst], beta, lambda, &dxi);
    L = perpo__pair_loss(x, eps, &d);
    g[best] += dxi * d;
    g[worst] -= beta * d;
    return L;
}

/* LiPO-lambda (Liu et al. 2024): z = beta s, tau_k = rank of z_k (descending, ties by index),
 * Delta_ij = |G_i - G_j| |1/D(tau_i) - 1/D(tau_j)|, G = 2^R - 1, D(tau) = log2(1 + tau), held
 * constant in the gradient. We normalize, L = sum Delta_ij l(z_i - z_j) / sum Delta_ij, so the
 * loss is a weighted mean of pair losses like PerPO's (the paper's LiPO sum is unnormalized).
 * Exact at any finite input: ranks come from s itself (beta > 0 keeps the order, and rounding
 * beta * s could tie distinct values); pair margins are beta (s_i - s_j), so a common shift of
 * s cancels by construction; gains are taken relative to Rmax (the -1 and 2^Rmax cancel in the
 * normalization) and, for R_i > R_j, G_i - G_j = 2^(R_i-Rmax) (1 - 2^-(R_i-R_j)) with
 * -expm1(-(R_i-R_j) ln 2): positive for any gap, however small, where 2^a - 2^b would round
 * to 0 below gaps of about 1e-16, and never Inf - Inf however large. */
static double perpo__lipo_delta(const double *R, const double *rel, const double *inv_d, int i,
                                int j) {
    return rel[i] * -expm1(-(R[i] - R[j]) * 0.6931471805599453) * fabs(inv_d[i] - inv_d[j]);
}
static double perpo__loss_lipo(int n, const double *s, const double *R, double beta, double eps,
                               double lambda, double *g) {
    double rel[PERPO_MAX_LIST], inv_d[PERPO_MAX_LIST], rmax = R[0], dsum = 0.0, L = 0.0, d;
    int order[PERPO_MAX_LIST], i, j;
    for (i = 1; i < n; i++)
        if (R[i] > rmax) rmax = R[i];
    perpo__argsort_desc(s, n, order);
    for (i = 0; i < n; i++) {
        inv_d[order[i]] = 1.0 / log2(2.0 + i); /* tau = i + 1 */
        rel[i] = exp2(R[i] - rmax);            /* G_i / 2^Rmax, in (0, 1] or 0 far below */
    }
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            if (R[i] > R[j]) dsum += perpo__lipo_delta(R, rel, inv_d, i, j);
    if (!(dsum > 0.0)) return 0.0;
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            if (R[i] > R[j]) {
                double wij = perpo__lipo_delta(R, rel, inv_d, i, j) / dsum, dxi;
                double x = perpo__pair_margin(s[i], s[j], beta, lambda, &dxi);
                L += wij * perpo__pair_loss(x, eps, &d);
                g[i] += wij * dxi * d;
                g[j] -= wij * beta * d;
            }
    return L;
}

/* ListMLE (Plackett-Luce likelihood of the reward order pi, ties by index): z = beta s,
 * L = sum_{m<n-1} [logsumexp_{l>=m} z_pi(l) - z_pi(m)]. Written through differences of s
 * only, so shift-invariant by construction and exact at any finite input (log-sum-exp of z
 * minus z cancels catastrophically once |z| ~ 1e15): with a_m the argmax of s over
 * pi(m+1..n-1) and T_m = sum_{l>m} exp(beta (s_pi(l) - s_a_m)) in [1, n), term m is
 * softplus(x_m), x_m = beta (s_a_m - s_pi(m)) + log T_m, built from the back. Step m picks
 * pi(m) with probability sigmoid(-x_m); its gradient is softmax - onehot. Label smoothing
 * has no meaning here and is ignored. */
static double perpo__loss_listmle(int n, const double *s, const double *R, double beta, double *g) {
    double x[PERPO_MAX_LIST], tsum[PERPO_MAX_LIST], T = 1.0, L = 0.0;
    int pi[PERPO_MAX_LIST], arg[PERPO_MAX_LIST], a, k, m;
    perpo__argsort_desc(R, n, pi);
    a = pi[n - 1];
    for (m = n - 2; m >= 0; m--) {
        int i = pi[m];
        arg[m] = a;
        tsum[m] = T;
        x[m] = beta * (s[a] - s[i]) + log(T);
        L += perpo__softplus(x[m]);
        if (s[i] > s[a]) { /* pi(m) becomes the maximum of the suffix */
            T = T * exp(beta * (s[a] - s[i])) + 1.0;
            a = i;
        } else {
            T += exp(beta * (s[i] - s[a]));
        }
    }
    for (m = 0; m < n - 1; m++) {
        double rest = perpo__sigmoid(x[m]); /* probability mass of pi(m+1..n-1) */
        g[pi[m]] -= beta * rest;
        for (k = m + 1; k < n; k++)
            g[pi[k]] += beta * rest * exp(beta * (s[pi[k]] - s[arg[m]])) / tsum[m];
    }
    return L;
}

/* Shared input checks, the reason into err (w: the call); fills R (as double) and
   s = logp - ref_logp. */
static perpo_status perpo__list_inputs(int n, const float *logp, const float *ref_logp,
                                       const float *reward, double *s, double *R, char *err,
                                       size_t cap, const char *w) {
    const float *const in[3] = { logp, ref_logp, reward };
    static const char *const name[3] = { "logp", "ref_logp", "reward" };
    int k, a;
    if (n < 1 || n > PERPO_MAX_LIST)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: n %d must be in [1, PERPO_MAX_LIST %d]: split longer lists", w, n,
                            PERPO_MAX_LIST);
    for (a = 0; a < 3; a++)
        if (!in[a]) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %s is NULL", w, name[a]);
    for (k = 0; k < n; k++) {
        for (a = 0; a < 3; a++)
            if (!isfinite(in[a][k]))
                return perpo__errst(err, cap, PERPO_ERR_NONFINITE,
                                    "%s: %s[%d] is %g: log-probs and rewards must be finite", w,
                                    name[a], k, (double)in[a][k]);
        s[k] = (double)logp[k] - (double)ref_logp[k];
        R[k] = reward[k];
    }
    return PERPO_OK;
}

/* perpo_listwise_loss_err, the reason into err with w first (a trainer passes its own name). */
static perpo_status perpo__listwise_loss(const perpo_objective_config *cfg, int n,
                                         const float *logp, const float *ref_logp,
                                         const float *reward, float *loss, float *dloss_dlogp,
                                         char *err, size_t cap, const char *w) {
    double s[PERPO_MAX_LIST], R[PERPO_MAX_LIST], g[PERPO_MAX_LIST], L = 0.0;
    double beta, gamma, eps, lambda;
    int k, all_equal = 1;
    perpo_status st;
    if (!cfg || !loss) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: cfg or loss is NULL", w);
    if ((st = perpo__objective_check(cfg, err, cap, w, "")) != PERPO_OK) return st;
    beta = cfg->beta;
    gamma = cfg->gamma;
    eps = cfg->label_smoothing;
    lambda = cfg->positive;
    if ((st = perpo__list_inputs(n, logp, ref_logp, reward, s, R, err, cap, w)) != PERPO_OK)
        return st;
    for (k = 0; k < n; k++) {
        g[k] = 0.0;
        if (R[k] != R[0]) all_equal = 0;
    }
    if (!all_equal) { /* all equal (incl. n == 1): no preference, loss 0, gradient 0 */
        switch (cfg->kind) {
        case PERPO_OBJ_PERPO: L = perpo__loss_perpo(n, s, R, beta, gamma, eps, lambda, g); break;
        case PERPO_OBJ_DPO: L = perpo__loss_dpo(n, s, R, beta, eps, lambda, g); break;
        case PERPO_OBJ_LIPO: L = perpo__loss_lipo(n, s, R, beta, eps, lambda, g); break;
        case PERPO_OBJ_LISTMLE: L = perpo__loss_listmle(n, s, R, beta, g); break;
        }
    }
    /* Check before writing: a double beyond float range would become Inf (or be UB to convert). */
    if (!(fabs(L) <= FLT_MAX))
        return perpo__errst(err, cap, PERPO_ERR_NONFINITE,
                            "%s: the loss %g is beyond float range: lower beta (%g) or check the "
                            "log-probs",
                            w, L, beta);
    for (k = 0; k < n; k++)
        if (!(fabs(g[k]) <= FLT_MAX))
            return perpo__errst(err, cap, PERPO_ERR_NONFINITE,
                                "%s: the gradient %g of logp[%d] is beyond float range: lower beta "
                                "(%g) or check the log-probs",
                                w, g[k], k, beta);
    *loss = (float)L;
    if (dloss_dlogp)
        for (k = 0; k < n; k++) dloss_dlogp[k] = (float)g[k];
    return PERPO_OK;
}

PERPODEF perpo_status perpo_listwise_loss_err(const perpo_objective_config *cfg, int n,
                                              const float *logp, const float *ref_logp,
                                              const float *reward, float *loss, float *dloss_dlogp,
                                              char *err, size_t err_cap) {
    perpo__errf(err, err_cap, "%s", "");
    return perpo__listwise_loss(cfg, n, logp, ref_logp, reward, loss, dloss_dlogp, err, err_cap,
                                "perpo_listwise_loss");
}

PERPODEF perpo_status perpo_listwise_loss(const perpo_objective_config *cfg, int n,
                                          const float *logp, const float *ref_logp,
                                          const float *reward, float *loss, float *dloss_dlogp) {
    return perpo_listwise_loss_err(cfg, n, logp, ref_logp, reward, loss, dloss_dlogp, NULL, 0);
}

/* perpo_preference_metrics_err, the reason into err with w first. */
static perpo_status perpo__preference_metrics(float beta, int n, const float *logp,
                                              const float *ref_logp, const float *reward,
                                              perpo_pref_metrics *out, char *err, size_t cap,
                                              const char *w) {
    double s[PERPO_MAX_LIST], R[PERPO_MAX_LIST], chosen, rejected;
    int i, j, best = 0, worst = 0;
    long pairs = 0, right = 0;
    perpo_status st;
    if (!out) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: out is NULL", w);
    if (!(beta > 0.0f && beta <= PERPO_MAX_BETA))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: beta %g must be in (0, %g]", w,
                            (double)beta, (double)PERPO_MAX_BETA);
    if ((st = perpo__list_inputs(n, logp, ref_logp, reward, s, R, err, cap, w)) != PERPO_OK)
        return st;
    for (i = 0; i < n; i++) {
        if (R[i] > R[best]) best = i;
        if (R[i] < R[worst]) worst = i;
        for (j = 0; j < n; j++)
            if (R[i] > R[j]) {
                pairs++;
                right += s[i] > s[j];
            }
    }
    chosen = beta * s[best];
    rejected = beta * s[worst];
    if (!(fabs(chosen) <= FLT_MAX && fabs(rejected) <= FLT_MAX &&
          fabs(chosen - rejected) <= FLT_MAX))
        return perpo__errst(err, cap, PERPO_ERR_NONFINITE,
                            "%s: chosen %g, rejected %g or their margin is beyond float range: "
                            "lower beta (%g) or check the log-probs",
                            w, chosen, rejected, (double)beta);
    out->chosen = (float)chosen;
    out->rejected = (float)rejected;
    out->margin = (float)(chosen - rejected);
    out->accuracy = pairs ? (float)((double)right / (double)pairs) : 0.0f;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_preference_metrics_err(float beta, int n, const float *logp,
                                                   const float *ref_logp, const float *reward,
                                                   perpo_pref_metrics *out, char *err,
                                                   size_t err_cap) {
    perpo__errf(err, err_cap, "%s", "");
    return perpo__preference_metrics(beta, n, logp, ref_logp, reward, out, err, err_cap,
                                     "perpo_preference_metrics");
}

PERPODEF perpo_status perpo_preference_metrics(float beta, int n, const float *logp,
                                               const float *ref_logp, const float *reward,
                                               perpo_pref_metrics *out) {
    return perpo_preference_metrics_err(beta, n, logp, ref_logp, reward, out, NULL, 0);
}

/* ==========================================================================================
   5. Preference optimization: the trainer of the listwise objectives (section 4) over lists of
      N samples scored by a task reward, with reference log-probs from the frozen SFT model;
      then how those lists are made (sampling: section 6, rewards: section 7)
   ========================================================================================== */

/* Encodes the lists ls[0..count) as one batch (sequence k of list j sees image j; with
   with_truth, each list's truth follows its responses); n_tok (per sequence) gets the counted
   targets. */
static void perpo__pref_batch(perpo_model *m, const perpo_pref_list *const *ls, size_t count,
                              int with_truth, int *tok, int *tgt, const float **imgs,
                              size_t *image_of, size_t *n_tok, perpo_batch *b) {
    size_t j, s = 0, T = m->T;
    int k;
    for (j = 0; j < count; j++) {
        imgs[j] = ls[j]->image;
        for (k = 0; k < ls[j]->n + with_truth; k++, s++) { /* the truth, if asked, comes last */
            const char *r = k < ls[j]->n ? ls[j]->responses[k] : ls[j]->truth;
            perpo_text_encode(&m->cfg, ls[j]->prompt, strlen(ls[j]->prompt), r, strlen(r),
                              tok + s * T, tgt + s * T, &n_tok[s]);
            image_of[s] = j;
        }
    }
    b->n_seq = s;
    b->n_img = count;
    b->images = imgs;
    b->image_of = image_of;
    b->tokens = tok;
    b->targets = tgt;
}

/* Scratch of the preference functions, allocated once per call. */
typedef struct perpo__pref_scratch {
    int *tok, *tgt;
    const float **imgs;
    const perpo_pref_list **ls;
    size_t *image_of, *n_tok, *order;
    float *logp, *dlogp;
} perpo__pref_scratch;

static void perpo__pref_scratch_free(perpo_model *m, perpo__pref_scratch *s) {
    void *ctx = m->cfg.alloc_ctx;
    PERPO_FREE(ctx, s->tok);
    PERPO_FREE(ctx, (void *)s->imgs);
    PERPO_FREE(ctx, (void *)s->ls);
    PERPO_FREE(ctx, s->image_of);
    PERPO_FREE(ctx, s->logp);
}
static perpo_status perpo__pref_scratch_alloc(perpo_model *m, perpo__pref_scratch *s,
                                              size_t n_lists) {
    void *ctx = m->cfg.alloc_ctx;
    size_t B = m->max_batch;
    memset(s, 0, sizeof *s);
    s->tok = (int *)perpo__calloc(ctx, 2 * B * m->T, sizeof(int));
    s->imgs = (const float **)perpo__calloc(ctx, B, sizeof(float *));
    s->ls = (const perpo_pref_list **)perpo__calloc(ctx, B, sizeof(void *));
    s->image_of = (size_t *)perpo__calloc(ctx, 2 * B + n_lists, sizeof(size_t));
    s->logp = (float *)perpo__calloc(ctx, 2 * B, sizeof(float));
    if (!s->tok || !s->imgs || !s->ls || !s->image_of || !s->logp) {
        perpo__pref_scratch_free(m, s);
        return PERPO_ERR_NOMEM;
    }
    s->tgt = s->tok + B * m->T;
    s->n_tok = s->image_of + B;
    s->order = s->n_tok + B;
    s->dlogp = s->logp + B;
    return PERPO_OK;
}

/* One forward and backward over the lists s->ls[0..count): each list's listwise loss (plus the
   NLL term) and its gradient, scaled by scale (1 / (lists in the micro-batch x accumulation)),
   metrics into p, counted target tokens into *tokens. */
static perpo_status perpo__pref_chunk(perpo_model *m, const perpo_pref_config *pc,
                                      perpo__pref_scratch *s, size_t count, int truth_row,
                                      double scale, perpo_progress *p, double *tokens) {
    perpo_batch b;
    perpo_status st;
    size_t j, q = 0;
    perpo__pref_batch(m, s->ls, count, truth_row, s->tok, s->tgt, s->imgs, s->image_of, s->n_tok,
                      &b);
    if ((st = perpo_forward(m, &b, s->logp, NULL)) != PERPO_OK) return st;
    for (j = 0; j < count; j++) {
        const perpo_pref_list *l = s->ls[j];
        float lp[PERPO_MAX_LIST], ref[PERPO_MAX_LIST], grad[PERPO_MAX_LIST], loss;
        perpo_pref_metrics pm;
        int k, best = 0;
        for (k = 0; k < l->n; k++) { /* s_k = log pi_theta - log pi_ref, summed or mean */
            float div = pc->mean_logp ? (float)s->n_tok[q + (size_t)k] : 1.0f;
            lp[k] = s->logp[q + (size_t)k] / div;
            ref[k] = l->ref_logp[k] / div;
            if (l->rewards[k] > l->rewards[best]) best = k;
            *tokens += (double)s->n_tok[q + (size_t)k];
        }
        if ((st = perpo__listwise_loss(&pc->objective, l->n, lp, ref, l->rewards, &loss, grad,
                                       m->error, sizeof m->error, "perpo_pref_train")) !=
                PERPO_OK ||
            (st = perpo__preference_metrics(pc->objective.beta, l->n, lp, ref, l->rewards, &pm,
                                            m->error, sizeof m->error, "perpo_pref_train")) !=
                PERPO_OK)
            return st;
        for (k = 0; k < l->n; k++) {
            float div = pc->mean_logp ? (float)s->n_tok[q + (size_t)k] : 1.0f;
            s->dlogp[q + (size_t)k] = (float)(grad[k] * scale) / div;
        }
        if (pc->nll_weight >
            0.0f) { /* optional NLL on the best response (or the truth), per token */
            size_t r = q + (truth_row ? (size_t)l->n : (size_t)best);
            float nt = (float)s->n_tok[r];
            loss += pc->nll_weight * -s->logp[r] / nt;
            if (truth_row) s->dlogp[r] = 0.0f; /* the truth row has no listwise gradient */
            s->dlogp[r] += (float)(-pc->nll_weight / nt * scale);
        }
        p->loss += (float)(loss * scale);
        p->reward_chosen += (float)(pm.chosen * scale);
        p->reward_rejected += (float)(pm.rejected * scale);
        p->reward_margin += (float)(pm.margin * scale);
        p->reward_accuracy += (float)(pm.accuracy * scale);
        p->logp_chosen += (float)(lp[best] * scale);
        q += (size_t)l->n + (size_t)truth_row;
    }
    return perpo_backward(m, s->dlogp);
}

/* The ranges documented at perpo_pref_config (those that do not depend on the lists). */
static perpo_status perpo__optim_check(const perpo_optim_config *oc, char *err, size_t cap,
                                       const char *w, const char *f);
static int perpo__check_pref_config(const perpo_pref_config *pc, char *e, size_t cap) {
    const char *w = "perpo_pref_train";
    perpo_status st = PERPO_ERR_ARG;
    if (pc->lists_per_step < 1)
        perpo__errf(e, cap, "%s: lists_per_step %d must be >= 1", w, pc->lists_per_step);
    else if (pc->accum_steps < 1 || pc->accum_steps > PERPO_MAX_ACCUM)
        perpo__errf(e, cap, "%s: accum_steps %d must be in [1, %d]", w, pc->accum_steps,
                    PERPO_MAX_ACCUM);
    else if (pc->log_every < 1)
        perpo__errf(e, cap, "%s: log_every %d must be >= 1", w, pc->log_every);
    else if (!(pc->nll_weight >= 0.0f && pc->nll_weight <= PERPO_MAX_NLL_WEIGHT))
        perpo__errf(e, cap, "%s: nll_weight %g must be in [0, %g]", w, (double)pc->nll_weight,
                    (double)PERPO_MAX_NLL_WEIGHT);
    else if (pc->mean_logp != 0 && pc->mean_logp != 1)
        perpo__errf(e, cap, "%s: mean_logp %d must be 0 or 1", w, pc->mean_logp);
    else if (pc->resume != 0 && pc->resume != 1)
        perpo__errf(e, cap, "%s: resume %d must be 0 or 1", w, pc->resume);
    else if (pc->nll_on_truth != 0 && pc->nll_on_truth != 1)
        perpo__errf(e, cap, "%s: nll_on_truth %d must be 0 or 1", w, pc->nll_on_truth);
    else if (perpo__objective_check(&pc->objective, e, cap, w, "objective.") == PERPO_OK)
        st = perpo__optim_check(&pc->optim, e, cap, w, "optim.");
    return st == PERPO_OK;
}

/* What both trainers share, in section 8: the data order, data parallelism (a reduction through
   the perpo_parallel hook, the handshake at the start of a call) and the progress report. */
static size_t perpo__data_index(size_t *perm, size_t n, uint64_t seed, size_t g, size_t *epoch);
static int perpo__positions_fit(int total_steps, int accum_steps, size_t per_microbatch);
static perpo_parallel perpo__parallel_none(void);
static int perpo__parallel_ok(const perpo_parallel *p);
static perpo_status perpo__collective(const perpo_parallel *par, float *buf, size_t n,
                                      perpo_status local);
static uint64_t perpo__hash_words(uint64_t h, const void *data, size_t n_words);
static uint64_t perpo__hash_optim(uint64_t h, const perpo_optim_config *oc);
static uint64_t perpo__hash_model(const perpo_model *m, int with_optimizer);
static perpo_status perpo__handshake(const perpo_parallel *par, void *ctx, perpo_status local,
                                     const uint64_t *words, uint64_t part, size_t *offset,
                                     size_t *total);
static perpo_status perpo__report(const perpo_parallel *par, perpo_progress_fn progress,
                                  perpo_progress *p, void *user, int *stop);
#define PERPO__HS_WORDS 10 /* 64-bit words that every worker of a trainer call must agree on */

/* What a preference step needs across the steps of one perpo_pref_train call. */
typedef struct perpo__pref_state {
    const perpo_pref_config *pc;
    const perpo_pref_list *lists; /* this worker's part: positions [offset, offset + n_lists) */
    size_t n_lists, offset, total, L, Lg, epoch;
    int truth_row;
    perpo__pref_scratch *s;
    perpo_status pending; /* a data-parallel worker's own failure, told at the next reduction */
} perpo__pref_state;

/* One preference step's gradient: accum_steps micro-batches of Lg positions of the shuffled
   whole set, this worker's lists of each in chunks of at most L. */
static perpo_status perpo__pref_step(perpo_model *m, int step, perpo_progress *p, double *tokens,
                                     void *state) {
    perpo__pref_state *S = (perpo__pref_state *)state;
    const perpo_pref_config *pc = S->pc;
    const perpo_parallel *par = &pc->parallel;
    double step_tokens = 0.0;
    perpo_status st;
    size_t j;
    int a;
    for (a = 0; a < pc->accum_steps && S->pending == PERPO_OK; a++) {
        size_t count = S->Lg < S->total ? S->Lg : S->total, n_own = 0;
        double scale = 1.0 / ((double)count * (double)pc->accum_steps); /* mean over all lists */
        for (j = 0; j <= count && S->pending == PERPO_OK; j++) {
            if (j < count) { /* position j of the micro-batch: train on it if the list is ours */
                size_t g = ((size_t)step * (size_t)pc->accum_steps + (size_t)a) * S->Lg + j;
                size_t idx = perpo__data_index(S->s->order, S->total, pc->seed, g, &S->epoch);
                if (idx < S->offset || idx - S->offset >= S->n_lists)
                    continue; /* another worker's */
                S->s->ls[n_own++] = &S->lists[idx - S->offset];
            }
            if (n_own > 0 && (n_own == S->L || j == count)) { /* a full chunk, or the rest */
                S->pending = perpo__pref_chunk(m, pc, S->s, n_own, S->truth_row, scale, p,
                                               par->reduce ? &step_tokens : tokens);
                n_own = 0;
            }
        }
        if (S->pending != PERPO_OK && !par->reduce) return S->pending;
    }
    if (par->reduce) { /* metrics and gradient sums over all workers, then the same step */
        float buf[8];
        buf[0] = p->loss;
        buf[1] = p->reward_chosen;
        buf[2] = p->reward_rejected;
        buf[3] = p->reward_margin;
        buf[4] = p->reward_accuracy;
        buf[5] = p->logp_chosen;
        buf[6] = (float)step_tokens;
        if ((st = perpo__collective(par, buf, 8, S->pending)) != PERPO_OK) return st;
        p->loss = buf[0];
        p->reward_chosen = buf[1];
        p->reward_rejected = buf[2];
        p->reward_margin = buf[3];
        p->reward_accuracy = buf[4];
        p->logp_chosen = buf[5];
        *tokens += (double)buf[6];
        /* (a non-finite sum: perpo_optim_step refuses it, PERPO_ERR_NONFINITE on every worker) */
        if ((st = par->reduce(m->grads, m->n_params, par->user)) != PERPO_OK) return st;
    }
    return PERPO_OK;
}

PERPODEF perpo_pref_config perpo_pref_default(perpo_objective kind) {
    perpo_pref_config p;
    p.objective = perpo_objective_default(kind);
    p.optim = perpo_optim_default();
    p.optim.lr = 1e-5f;
    p.optim.min_lr = 1e-6f;
    p.optim.warmup_steps = 10;
    p.optim.total_steps = 200;
    p.optim.weight_decay = 0.0f;
    p.lists_per_step = 4;
    p.accum_steps = 1;
    p.nll_weight = 0.0f;
    p.mean_logp = 0;
    p.nll_on_truth = 0;
    p.seed = 1;
    p.log_every = 10;
    p.resume = 0;
    p.parallel = perpo__parallel_none();
    return p;
}

/* ---- The loop both trainers share --------------------------------------------------------- */
/* AdamW (section 8); a trainer's refused step names the trainer. */
static perpo_status perpo__optim_step(perpo_model *m, const perpo_optim_config *oc,
                                      float grad_scale, float *grad_norm, const char *w);

/* What one trainer call brings to the loop: the gradient of one step, its optimizer settings
   and how it reports. step_grads adds the gradient of optimizer step `step` (data-parallel:
   summed over the workers) into the zeroed gradient buffer, the step's loss and metrics into p
   and the target tokens it consumed into *tokens; an error ends training with it. */
typedef struct perpo__trainer {
    const char *name;  /* the public call, first in its messages */
    const char *phase; /* perpo_progress.phase */
    const perpo_optim_config *optim;
    const perpo_parallel *par;
    int log_every, resume;
    float grad_scale; /* perpo_optim_step's scale: 1 / accumulated terms */
    double t0;        /* perpo__now() when the trainer was called */
    perpo_status (*step_grads)(perpo_model *m, int step, perpo_progress *p, double *tokens,
                               void *state);
    void *state;
} perpo__trainer;

/* optim->total_steps optimizer steps from the model's step counter (0 unless resuming): zero
   the gradients, accumulate one step's, take the AdamW step, report every log_every steps
   with the wall-clock estimate of the time left. */
static perpo_status perpo__train_loop(perpo_model *m, const perpo__trainer *tr,
                                      perpo_progress_fn progress, void *user) {
    double tokens = 0.0;
    int step, start;
    perpo_status st;
    if (tr->resume && m->no_opt_state)
        return perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                            "%s: resume 1, but the model was loaded from a checkpoint without "
                            "optimizer state: there is nothing to resume (save with "
                            "PERPO_CKPT_OPTIMIZER, or set resume 0 to start the schedule afresh)",
                            tr->name);
    if (!tr->resume) perpo_optim_reset(m);
    start = m->opt_step;
    for (step = start; step < tr->optim->total_steps; step++) { /* resumes at opt_step */
        perpo_progress p;
        float gnorm = 0.0f;
        int stop = 0;
        memset(&p, 0, sizeof p);
        perpo_zero_grad(m);
        if ((st = tr->step_grads(m, step, &p, &tokens, tr->state)) != PERPO_OK) return st;
        if ((st = perpo__optim_step(m, tr->optim, tr->grad_scale, &gnorm, tr->name)) != PERPO_OK)
            return st;
        if ((step + 1) % tr->log_every == 0 || step + 1 == tr->optim->total_steps) {
            p.phase = tr->phase;
            p.step = step + 1;
            p.total_steps = tr->optim->total_steps;
            p.lr = perpo_lr_at(tr->optim, m->opt_step - 1);
            p.grad_norm = gnorm;
            p.tokens = tokens;
            p.elapsed_s = perpo__now() - tr->t0;
            p.eta_s = p.elapsed_s / (double)(step + 1 - start) *
                      (double)(tr->optim->total_steps - step - 1);
            if ((st = perpo__report(tr->par, progress, &p, user, &stop)) != PERPO_OK) return st;
            if (stop) break;
        }
    }
    return PERPO_OK;
}

/* w: the public call, for the message in m->error; need_ref: the lists must hold finite ref_logp
   (training; perpo_pref_reference fills them). */
static perpo_status perpo__check_lists(perpo_model *m, const perpo_pref_list *lists, size_t n_lists,
                                       const char *w, int need_ref) {
    char *e = m->error;
    size_t i, cap = sizeof m->error;
    int k;
    perpo_status st;
    if (!lists || n_lists == 0)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: no lists (n_lists %zu): if perpo_pref_filter kept none, the "
                            "sampled answers of each list had equal rewards; a greedy sample "
                            "config (temperature 0, perpo_sample_default) gives N equal answers: "
                            "set a temperature (e.g. 1)",
                            w, n_lists);
    for (i = 0; i < n_lists; i++) {
        const perpo_pref_list *l = &lists[i];
        if (!l->image || !l->prompt || !l->responses || !l->rewards || !l->ref_logp)
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: list %zu: image, prompt, responses, rewards or ref_logp is "
                                "NULL",
                                w, i);
        if (l->n < 1 || l->n > PERPO_MAX_LIST || (size_t)l->n > m->max_batch)
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: list %zu: n %d must be in [1, %d] and <= max_batch %zu", w, i,
                                l->n, PERPO_MAX_LIST, m->max_batch);
        if ((st = perpo__check_image(l->image, m->image_floats, e, cap, "%s: list %zu: image", w,
                                     i)) != PERPO_OK)
            return st;
        for (k = 0; k < l->n; k++) {
            if (!l->responses[k])
                return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: list %zu: responses[%d] is NULL", w,
                                    i, k);
            if (!perpo__text_fits(m->T, strlen(l->prompt), strlen(l->responses[k])))
                return perpo__errst(e, cap, PERPO_ERR_ARG,
                                    "%s: list %zu response %d: prompt %zu + response %zu bytes "
                                    "exceed max_text %zu - 3: shorten them or raise max_text",
                                    w, i, k, strlen(l->prompt), strlen(l->responses[k]), m->T);
            if (!isfinite(l->rewards[k]))
                return perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                                    "%s: list %zu: rewards[%d] is %g: rewards must be finite", w, i,
                                    k, (double)l->rewards[k]);
            if (need_ref && !isfinite(l->ref_logp[k]))
                return perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                                    "%s: list %zu: ref_logp[%d] is %g: fill it with "
                                    "perpo_pref_reference before training",
                                    w, i, k, (double)l->ref_logp[k]);
        }
        if (l->truth && !perpo__text_fits(m->T, strlen(l->prompt), strlen(l->truth)))
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: list %zu: prompt %zu + truth %zu bytes exceed max_text %zu - "
                                "3: shorten them or raise max_text",
                                w, i, strlen(l->prompt), strlen(l->truth), m->T);
    }
    return PERPO_OK;
}

/* Without a reduction hook: one process, every micro-batch one chunk of at most lists_per_step
   lists. */
PERPODEF perpo_status perpo_pref_train(perpo_model *m, const perpo_pref_list *lists, size_t n_lists,
                                       const perpo_pref_config *pc, perpo_progress_fn progress,
                                       void *user) {
    const perpo_parallel *par;
    perpo__pref_scratch s;
    perpo__pref_state S;
    perpo__trainer tr;
    perpo_status st = PERPO_OK, local = PERPO_OK, pending = PERPO_OK;
    size_t j, max_n = 0, L = 0, R = 1, offset = 0, total = n_lists, *order = NULL;
    double t0 = perpo__now();
    int truth_row = 0, have_scratch = 0;
    void *ctx;
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    if (!pc || !perpo__parallel_ok(&pc->parallel))
        return perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                            "perpo_pref_train: pc is NULL or pc->parallel is inconsistent");
    par = &pc->parallel;
    ctx = m->cfg.alloc_ctx;
    if (par->reduce) R = (size_t)par->world;
    if (!perpo__check_pref_config(pc, m->error, sizeof m->error))
        local = PERPO_ERR_ARG;
    else if (n_lists > 0 || !par->reduce) /* a worker's part may be empty, one process's set not */
        local = perpo__check_lists(m, lists, n_lists, "perpo_pref_train", 1);
    if (local == PERPO_OK) {
        truth_row = pc->nll_on_truth && pc->nll_weight > 0.0f;
        for (j = 0; j < n_lists; j++) {
            if ((size_t)lists[j].n > max_n) max_n = (size_t)lists[j].n;
            if (truth_row && !lists[j].truth && local == PERPO_OK)
                local = perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                                     "perpo_pref_train: nll_on_truth 1 but list %zu has no truth: "
                                     "give every list one or set nll_on_truth 0",
                                     j);
        }
        L = (size_t)pc->lists_per_step;
        if (local == PERPO_OK && L * (max_n + (size_t)truth_row) > m->max_batch)
            local = perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                                 "perpo_pref_train: n %zu%s x lists_per_step %zu = %zu sequences "
                                 "exceed max_batch %zu: lower lists_per_step or raise max_batch",
                                 max_n, truth_row ? " (+1 truth)" : "", L,
                                 L * (max_n + (size_t)truth_row), m->max_batch);
        if (local == PERPO_OK &&
            !perpo__positions_fit(pc->optim.total_steps, pc->accum_steps, R * L))
            local = perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                                 "perpo_pref_train: total_steps %d x accum_steps %d x "
                                 "lists_per_step %zu positions overflow: lower them",
                                 pc->optim.total_steps, pc->accum_steps, R * L);
    }
    if (local != PERPO_OK && !par->reduce) return local;
    if (local == PERPO_OK) {
        local = perpo__pref_scratch_alloc(m, &s, par->reduce ? 0 : n_lists);
        have_scratch = local == PERPO_OK;
        if (local != PERPO_OK && !par->reduce) return local;
    }
    if (par->reduce) {
        uint64_t w[PERPO__HS_WORDS], h = PERPO__FNV_BASIS;
        memset(w, 0, sizeof w);
        if (local == PERPO_OK) {
            float f[5];
            int v[4];
            f[0] = pc->objective.beta;
            f[1] = pc->objective.gamma;
            f[2] = pc->objective.label_smoothing;
            f[3] = pc->nll_weight;
            f[4] = pc->objective.positive;
            v[0] = (int)pc->objective.kind;
            v[1] = pc->mean_logp;
            v[2] = pc->nll_on_truth;
            v[3] = pc->log_every;
            h = perpo__hash_words(perpo__hash_words(perpo__hash_optim(h, &pc->optim), f, 5), v, 4);
            w[0] = R;
            w[1] = L;
            w[2] = (uint64_t)pc->accum_steps;
            w[3] = h;
            w[4] = (uint64_t)pc->resume;
            w[5] = pc->resume ? (uint64_t)m->opt_step : 0u;
            w[6] = pc->seed;
            w[7] = perpo__hash_model(m, pc->resume);
        }
        st = perpo__handshake(par, ctx, local, w, (uint64_t)n_lists, &offset, &total);
        if (st == PERPO_OK && total == 0) st = PERPO_ERR_ARG; /* every worker sees the same total */
        if (st != PERPO_OK) goto done;
        /* the shuffled order of the whole set; an allocation failure stops all at the first step */
        if (!(order = (size_t *)perpo__calloc(ctx, total, sizeof(size_t))))
            pending = PERPO_ERR_NOMEM;
        s.order = order;
    }
    S.pc = pc;
    S.lists = lists;
    S.n_lists = n_lists;
    S.offset = offset;
    S.total = total;
    S.L = L;
    S.Lg = R * L; /* positions per micro-batch over all workers */
    S.epoch = (size_t)-1;
    S.truth_row = truth_row;
    S.s = &s;
    S.pending = pending;
    tr.name = "perpo_pref_train";
    tr.phase = "pref";
    tr.optim = &pc->optim;
    tr.par = par;
    tr.log_every = pc->log_every;
    tr.resume = pc->resume;
    tr.grad_scale = 1.0f;
    tr.t0 = t0;
    tr.step_grads = perpo__pref_step;
    tr.state = &S;
    st = perpo__train_loop(m, &tr, progress, user);
done:
    if (have_scratch) perpo__pref_scratch_free(m, &s);
    PERPO_FREE(ctx, order);
    return st;
}

/* ---- The lists: sampled and scored, filtered, and their reference log-probs --------------- */
/* (generation: section 6) */
static perpo_status perpo__generate(perpo_model *m, const perpo_gen_request *req,
                                    const perpo_sample_config *sc, const uint64_t *img_seeds,
                                    char *out, size_t out_cap, size_t *out_len);

static perpo_status perpo__check_sample(const perpo_sample_config *sc, char *e, size_t cap,
                                        const char *w);

/* The random stream of item `item` in perpo_pref_sample: a function of the seed and the item's
   index only, so a worker sampling its own block of items gets the lists one process gets. */
static uint64_t perpo__item_seed(uint64_t seed, size_t item) {
    uint64_t x = (uint64_t)item;
    return seed ^ perpo__splitmix64(&x);
}

PERPODEF perpo_status perpo_pref_sample(perpo_model *m, const perpo_example *items, size_t n_items,
                                        int n, const perpo_sample_config *sc,
                                        perpo_reward_fn reward, void *user, perpo_pref_set *out) {
    return perpo_pref_sample_range(m, items, 0, n_items, n, sc, reward, user, out);
}

PERPODEF perpo_status perpo_pref_sample_range(perpo_model *m, const perpo_example *items,
                                              size_t first, size_t count, int n,
                                              const perpo_sample_config *sc, perpo_reward_fn reward,
                                              void *user, perpo_pref_set *out) {
    size_t i, k, N, T, per_call, bytes = 0, n_resp;
    size_t sz_lists, sz_ptrs, sz_floats, sz_text, sz_scratch;
    char *base, *text;
    const char **ptrs, **prompts;
    const float **imgs;
    const perpo_example *part;
    size_t *image_of, *lens;
    uint64_t *seeds;
    float *rewards, *ref;
    perpo_status st = PERPO_OK;
    const char *w = "perpo_pref_sample";
    char *e;
    size_t cap;
    if (!m || !out) {
        if (m) perpo__errf(m->error, sizeof m->error, "%s: out is NULL", w);
        if (out) memset(out, 0, sizeof *out);
        return PERPO_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    e = m->error;
    cap = sizeof m->error;
    e[0] = 0;
    if (!items || !sc || !reward)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: items, sc or reward is NULL", w);
    if (count == 0 || first > (size_t)-1 - count)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: empty or overflowing range (first %zu, "
                            "count %zu)",
                            w, first, count);
    if (n < 1 || n > PERPO_MAX_LIST || (size_t)n > m->max_batch)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: n %d must be in [1, %d] and <= max_batch %zu: lower n or raise "
                            "max_batch",
                            w, n, PERPO_MAX_LIST, m->max_batch);
    if (perpo__check_sample(sc, e, cap, w) != PERPO_OK) return PERPO_ERR_ARG;
    part = items + first; /* part[i] is items[first + i] */
    N = (size_t)n;
    T = m->T;
    for (i = 0; i < count; i++) {
        if (!part[i].image || !part[i].prompt)
            return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: item %zu: image or prompt is NULL", w,
                                first + i);
        if (!perpo__text_fits(T, strlen(part[i].prompt), 1))
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: item %zu: prompt of %zu bytes exceeds max_text %zu - 4: "
                                "shorten it or raise max_text",
                                w, first + i, strlen(part[i].prompt), T);
        if ((st = perpo__check_image(part[i].image, m->image_floats, e, cap, "%s: item %zu: image",
                                     w, first + i)) != PERPO_OK)
            return st;
    }
    /* one block: lists | response pointers | rewards, ref_logp | per-call scratch | text */
    if (!perpo__size_mul(count, N, &n_resp) ||
        !perpo__size_mul(count, sizeof(perpo_pref_list), &sz_lists) ||
        !perpo__size_mul(n_resp, sizeof(char *), &sz_ptrs) ||
        !perpo__size_mul(n_resp, 2 * sizeof(float), &sz_floats) ||
        !perpo__size_mul(n_resp, T, &sz_text) ||
        !perpo__size_mul(m->max_batch, 2 * sizeof(void *) + 2 * sizeof(size_t) + sizeof(uint64_t),
                         &sz_scratch))
        return PERPO_ERR_OVERFLOW;
    if (!perpo__size_add(bytes, sz_lists, &bytes) || !perpo__size_add(bytes, sz_ptrs, &bytes) ||
        !perpo__size_add(bytes, sz_floats, &bytes) || !perpo__size_add(bytes, sz_scratch, &bytes) ||
        !perpo__size_add(bytes, sz_text, &bytes))
        return PERPO_ERR_OVERFLOW;
    base = (char *)perpo__calloc(m->cfg.alloc_ctx, bytes, 1);
    if (!base) return PERPO_ERR_NOMEM;
    out->lists = (perpo_pref_list *)base;
    ptrs = (const char **)(base + sz_lists);
    rewards = (float *)(base + sz_lists + sz_ptrs);
    ref = rewards + n_resp;
    imgs = (const float **)(base + sz_lists + sz_ptrs + sz_floats);
    prompts = (const char **)(imgs + m->max_batch);
    image_of = (size_t *)(prompts + m->max_batch);
    lens = image_of + m->max_batch;
    seeds = (uint64_t *)(lens + m->max_batch);
    text = base + sz_lists + sz_ptrs + sz_floats + sz_scratch;
    out->storage_ = base;
    out->alloc_ctx_ = m->cfg.alloc_ctx;
    out->n_lists = count;
    per_call = m->max_batch / N; /* whole lists per generation call */
    for (i = 0; i < count; i += per_call) {
        size_t chunk = count - i < per_call ? count - i : per_call, j;
        perpo_gen_request req;
        for (j = 0; j < chunk; j++) {
            imgs[j] = part[i + j].image;
            seeds[j] = perpo__item_seed(sc->seed, first + i + j); /* one stream per list */
            for (k = 0; k < N; k++) {
                prompts[j * N + k] = part[i + j].prompt;
                image_of[j * N + k] = j;
            }
        }
        req.n_seq = chunk * N;
        req.n_img = chunk;
        req.images = imgs;
        req.image_of = image_of;
        req.prompts = prompts;
        if ((st = perpo__generate(m, &req, sc, seeds, text + i * N * T, T, lens)) != PERPO_OK)
            break;
        for (j = 0; j < chunk; j++) {
            perpo_pref_list *l = &out->lists[i + j];
            l->image = part[i + j].image;
            l->prompt = part[i + j].prompt;
            l->n = n;
            l->responses = ptrs + (i + j) * N;
            l->rewards = rewards + (i + j) * N;
            l->ref_logp = ref + (i + j) * N;
            for (k = 0; k < N; k++) {
                size_t r = (i + j) * N + k;
                float v;
                ptrs[r] = text + r * T;
                v = reward(ptrs[r], lens[j * N + k], first + i + j, user);
                if (!isfinite(v)) {
                    st = perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                                      "%s: the reward callback returned %g for item %zu response "
                                      "%zu (%zu bytes): rewards must be finite",
                                      w, (double)v, first + i + j, k, lens[j * N + k]);
                    break;
                }
                rewards[r] = v;
            }
        }
        if (st != PERPO_OK) break;
    }
    if (st != PERPO_OK) perpo_pref_set_free(out);
    return st;
}

PERPODEF size_t perpo_pref_filter(perpo_pref_list *lists, size_t n_lists, float min_margin) {
    size_t i, kept = 0;
    int k;
    if (!lists) return 0;
    for (i = 0; i < n_lists; i++) {
        float lo = INFINITY, hi = -INFINITY;
        for (k = 0; k < lists[i].n; k++) {
            if (lists[i].rewards[k] < lo) lo = lists[i].rewards[k];
            if (lists[i].rewards[k] > hi) hi = lists[i].rewards[k];
        }
        if (lists[i].n >= 2 && hi - lo >= min_margin) lists[kept++] = lists[i];
    }
    return kept;
}

PERPODEF perpo_status perpo_pref_reference(perpo_model *m, perpo_pref_list *lists, size_t n_lists) {
    perpo__pref_scratch s;
    perpo_batch b;
    perpo_status st;
    size_t i = 0;
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    if ((st = perpo__check_lists(m, lists, n_lists, "perpo_pref_reference", 0)) != PERPO_OK)
        return st;
    if ((st = perpo__pref_scratch_alloc(m, &s, 0)) != PERPO_OK) return st;
    while (i < n_lists) { /* as many whole lists per forward as fit in max_batch */
        size_t count = 0, seqs = 0, j, q = 0;
        while (i + count < n_lists && seqs + (size_t)lists[i + count].n <= m->max_batch) {
            s.ls[count] = &lists[i + count];
            seqs += (size_t)lists[i + count].n;
            count++;
        }
        perpo__pref_batch(m, s.ls, count, 0, s.tok, s.tgt, s.imgs, s.image_of, s.n_tok, &b);
        if ((st = perpo_forward(m, &b, s.logp, NULL)) != PERPO_OK) break;
        for (j = 0; j < count; j++) {
            int k;
            for (k = 0; k < lists[i + j].n; k++) lists[i + j].ref_logp[k] = s.logp[q++];
        }
        i += count;
    }
    perpo__pref_scratch_free(m, &s);
    return st;
}

PERPODEF void perpo_pref_set_free(perpo_pref_set *set) {
    if (!set) return;
    PERPO_FREE(set->alloc_ctx_, set->storage_);
    memset(set, 0, sizeof *set);
}

/* ==========================================================================================
   6. Sampling: greedy, temperature, top-k, top-p. The token choice, the reference generation
      (perpo_forward over the whole text for every token) and the switch to the fast path's KV
      cache (section 10: each image encoded once per request, one prefill for the sequences that
      share an image and prompt).
   ========================================================================================== */

PERPODEF perpo_sample_config perpo_sample_default(void) {
    perpo_sample_config s;
    memset(&s, 0, sizeof s);
    s.temperature = 0.0f;
    s.top_k = 0;
    s.top_p = 1.0f;
    s.max_new_tokens = 1 << 20;
    s.seed = 1;
    return s;
}

/* The ranges documented at perpo_sample_config; NaN fails every comparison. */
static perpo_status perpo__check_sample(const perpo_sample_config *sc, char *e, size_t cap,
                                        const char *w) {
    if (!sc) return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: sample config is NULL", w);
    if (!(sc->temperature >= 0.0f && sc->temperature <= PERPO_MAX_TEMPERATURE))
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: temperature %g must be in [0, %g]", w,
                            (double)sc->temperature, (double)PERPO_MAX_TEMPERATURE);
    if (sc->top_k < 0 || sc->top_k > PERPO_VOCAB)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: top_k %d must be in [0, %d]", w, sc->top_k,
                            PERPO_VOCAB);
    if (!(sc->top_p >= 0.0f && sc->top_p <= 1.0f))
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: top_p %g must be in [0, 1]", w,
                            (double)sc->top_p);
    if (sc->max_new_tokens < 0)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: max_new_tokens %d must be >= 0", w,
                            sc->max_new_tokens);
    if (sc->no_cache != 0 && sc->no_cache != 1)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: no_cache %d must be 0 or 1", w,
                            sc->no_cache);
    return PERPO_OK;
}

/* PERPO_OK when every parameter is finite: free when the model knows it, else one pass. */
static perpo_status perpo__params_finite(const perpo_model *m) {
    if (m->params_known_finite || perpo__all_finite(m->params, m->n_params)) return PERPO_OK;
    return PERPO_ERR_NONFINITE;
}

typedef struct perpo__token_score {
    float score;
    int token;
} perpo__token_score;

static int perpo__score_desc(const void *a, const void *b) {
    const perpo__token_score *x = (const perpo__token_score *)a, *y = (const perpo__token_score *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->token - y->token; /* ties: lower token first, so sorting is deterministic */
}

/* The greedy choice (temperature 0): the first highest logit among the bytes and EOS, in token
   order; it needs no candidate buffer, so threads can choose at once. */
static int perpo__greedy_token(const perpo_model *m, const float *logits) {
    int tok, best = 0;
    for (tok = 1; tok < (int)m->V; tok++)
        if ((tok <= 255 || tok == PERPO_TOK_EOS) && logits[tok] > logits[best]) best = tok;
    return best;
}
/* A sampled draw's candidates from one row of logits (temperature > 0): the bytes and EOS, cut
   to top-k and top-p, weighted exp((logit - top) / temperature), in cand[0, *keep) with sum
   *total. It draws no random number, so threads prepare their own rows while the draws keep
   their order. cand: room for V. */
static void perpo__sample_prepare(const perpo_model *m, const float *logits,
                                  const perpo_sample_config *sc, perpo__token_score *cand,
                                  size_t *keep_out, double *total_out) {
    size_t n = 0, keep, i;
    double total = 0.0, top;
    int tok;
    for (tok = 0; tok < (int)m->V; tok++) {
        if (tok > 255 && tok != PERPO_TOK_EOS) continue;
        cand[n].score = logits[tok];
        cand[n].token = tok;
        n++;
    }
    keep = (sc->top_k > 0 && (size_t)sc->top_k < n) ? (size_t)sc->top_k : n;
    if (keep < n || (sc->top_p > 0.0f && sc->top_p < 1.0f)) {
        qsort(cand, n, sizeof *cand, perpo__score_desc); /* truncation needs the order */
        top = cand[0].score;
    } else {
        for (i = 1, top = cand[0].score; i < n; i++)
            if (cand[i].score > top) top = cand[i].score;
    }
    for (i = 0; i < keep; i++) { /* softmax over the kept tokens, at the temperature */
        cand[i].score = (float)exp(((double)cand[i].score - top) / (double)sc->temperature);
        total += cand[i].score;
    }
    if (sc->top_p > 0.0f && sc->top_p < 1.0f) { /* nucleus: smallest prefix with mass >= top_p */
        double mass = 0.0;
        for (i = 0; i < keep; i++) {
            mass += cand[i].score;
            if (mass >= sc->top_p * total) {
                keep = i + 1;
                break;
            }
        }
        total = 0.0;
        for (i = 0; i < keep; i++) total += cand[i].score;
    }
    *keep_out = keep;
    *total_out = total;
}
/* The token drawn from prepared candidates, with one uniform number from rng. */
static int perpo__sample_draw(const perpo__token_score *cand, size_t keep, double total,
                              perpo__rng *rng) {
    double u = perpo__rng_uniform(rng) * total, acc = 0.0;
    size_t i;
    for (i = 0; i < keep; i++) {
        acc += cand[i].score;
        if (u < acc) return cand[i].token;
    }
    return cand[keep - 1].token;
}
/* Next token from one row of logits. Only bytes and EOS can be produced. */
static int perpo__sample_token(perpo_model *m, const float *logits, const perpo_sample_config *sc,
                               perpo__rng *rng) {
    size_t keep;
    double total;
    if (sc->temperature <= 0.0f) return perpo__greedy_token(m, logits);
    perpo__sample_prepare(m, logits, sc, m->sort_buf, &keep, &total);
    return perpo__sample_draw(m->sort_buf, keep, total, rng);
}

/* The request's own checks (perpo__check_sample has checked the sampling settings). */
static perpo_status perpo__check_request(perpo_model *m, const perpo_gen_request *req,
                                         const char *out, size_t out_cap) {
    const char *w = "perpo_generate";
    char *e = m->error;
    size_t i, cap = sizeof m->error;
    perpo_status st;
    if (!req || !out || out_cap < 1 || !req->images || !req->prompts)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: req, out, images or prompts is NULL, or out_cap is 0", w);
    if (req->n_seq < 1 || req->n_seq > m->max_batch || req->n_img < 1 || req->n_img > m->max_batch)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: n_seq %zu and n_img %zu must be in [1, max_batch %zu]: split the "
                            "request or raise max_batch",
                            w, req->n_seq, req->n_img, m->max_batch);
    if (!req->image_of && req->n_img != req->n_seq)
        return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: image_of NULL needs n_img %zu == n_seq %zu",
                            w, req->n_img, req->n_seq);
    for (i = 0; i < req->n_img; i++) {
        if (!req->images[i])
            return perpo__errst(e, cap, PERPO_ERR_ARG, "%s: images[%zu] is NULL", w, i);
        if ((st = perpo__check_image(req->images[i], m->image_floats, e, cap, "%s: images[%zu]", w,
                                     i)) != PERPO_OK)
            return st;
    }
    for (i = 0; i < req->n_seq; i++) {
        if (!req->prompts[i] || (req->image_of && req->image_of[i] >= req->n_img))
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: prompts[%zu] is NULL or image_of[%zu] >= n_img %zu", w, i, i,
                                req->n_img);
        if (!perpo__text_fits(m->T, strlen(req->prompts[i]), 1))
            return perpo__errst(e, cap, PERPO_ERR_ARG,
                                "%s: prompts[%zu] of %zu bytes exceeds max_text %zu - 4: shorten "
                                "it or raise max_text",
                                w, i, strlen(req->prompts[i]), m->T);
    }
    return PERPO_OK;
}

/* Per-sequence state of one perpo_generate call. */
typedef struct perpo__gen_seq {
    size_t prompt_len, len, cap; /* response bytes so far and the most allowed */
    int done;
    int next;    /* the token it takes next (greedy, or drawn) */
    size_t keep; /* sampled: its next draw's candidates (perpo__sample_prepare) */
    double total;
    size_t stop; /* sampled: the first token step at which it draws nothing */
} perpo__gen_seq;

/* Reference path without the cache: re-runs perpo_forward over the whole text every token. */
static perpo_status perpo__generate_nocache(perpo_model *m, const perpo_gen_request *req,
                                            const perpo_sample_config *sc, perpo__gen_seq *seq,
                                            perpo__rng *streams, char *out, size_t out_cap) {
    size_t n = req->n_seq, T = m->T, s;
    int *tok, *tgt;
    perpo__rng rng;
    perpo_batch b;
    perpo_status st = PERPO_OK;
    tok = (int *)perpo__calloc(m->cfg.alloc_ctx, 2 * n * T, sizeof(int));
    if (!tok) return PERPO_ERR_NOMEM;
    tgt = tok + n * T;
    for (s = 0; s < n; s++) {
        perpo_text_encode(&m->cfg, req->prompts[s], seq[s].prompt_len, "", 0, tok + s * T,
                          tgt + s * T, NULL);
        tok[s * T + seq[s].prompt_len + 2] =
            PERPO_TOK_PAD; /* drop the EOS: the text ends after SEP */
    }
    for (s = 0; s < n * T; s++) tgt[s] = -1;
    perpo__rng_seed(&rng, sc->seed);
    b.n_seq = n;
    b.n_img = req->n_img;
    b.images = req->images;
    b.image_of = req->image_of;
    b.tokens = tok;
    b.targets = tgt;
    for (;;) {
        int active = 0;
        for (s = 0; s < n; s++)
            if (!seq[s].done) active = 1;
        if (!active) break;
        st = perpo_forward(m, &b, NULL, NULL);
        if (st != PERPO_OK && st != PERPO_ERR_NONFINITE) break;
        st = PERPO_OK;
        for (s = 0; s < n; s++) {
            size_t at = seq[s].prompt_len + 1 + seq[s].len; /* text position that predicts next */
            int next;
            if (seq[s].done) continue;
            next = perpo__sample_token(m, m->logits + (s * T + at) * m->V, sc,
                                       streams ? &streams[req->image_of ? req->image_of[s] : s]
                                               : &rng);
            if (next == PERPO_TOK_EOS) {
                seq[s].done = 1;
                continue;
            }
            tok[s * T + at + 1] = next;
            if (seq[s].len + 1 < out_cap) out[s * out_cap + seq[s].len] = (char)next;
            if (++seq[s].len >= seq[s].cap) seq[s].done = 1;
        }
    }
    m->have_forward = 0;
    PERPO_FREE(m->cfg.alloc_ctx, tok);
    return st;
}

/* The fast path's generation, with a KV cache (section 10). */
static void perpo__generate_cached(perpo_model *m, const perpo_gen_request *req,
                                   const perpo_sample_config *sc, perpo__gen_seq *seq, size_t *slot,
                                   size_t *pos, size_t *root, size_t *shared, perpo__rng *streams,
                                   char *out, size_t out_cap);

/* perpo_generate, where img_seeds (n_img values) may give each image a random stream of its
   own: sequence s then draws from the stream of its image, seeded with img_seeds[image],
   so its text does not depend on the other images of the call (perpo_pref_sample). NULL: one
   stream seeded with sc->seed for the whole call, in sequence order. */
static perpo_status perpo__generate(perpo_model *m, const perpo_gen_request *req,
                                    const perpo_sample_config *sc, const uint64_t *img_seeds,
                                    char *out, size_t out_cap, size_t *out_len) {
    size_t n, s, *slot, *pos, *root, *shared;
    perpo__gen_seq *seq;
    perpo__rng *streams = NULL;
    perpo_status st = PERPO_OK;
    if (!m) return PERPO_ERR_ARG;
    if (perpo__check_sample(sc, m->error, sizeof m->error, "perpo_generate") != PERPO_OK)
        return PERPO_ERR_ARG;
    if ((st = perpo__check_request(m, req, out, out_cap)) != PERPO_OK) return st;
    if ((st = perpo__params_finite(m)) != PERPO_OK) return st;
    n = req->n_seq;
    /* n <= max_batch and n_img <= max_batch (checked), so these sizes cannot overflow */
    seq =
        (perpo__gen_seq *)perpo__calloc(m->cfg.alloc_ctx, 1,
                                        n * (sizeof *seq + 4 * sizeof(size_t)) +
                                            (img_seeds ? 2 * req->n_img * sizeof(perpo__rng) : 0));
    if (!seq) return PERPO_ERR_NOMEM;
    slot = (size_t *)(seq + n);
    pos = slot + n;
    root = pos + n; /* sequence s reads positions [0, shared[s]) of its cache from slot root[s] */
    shared = root + n;
    if (img_seeds) {
        streams = (perpo__rng *)(shared + n);
        for (s = 0; s < req->n_img; s++) perpo__rng_seed(&streams[s], img_seeds[s]);
    }
    memset(out, 0, n * out_cap);
    for (s = 0; s < n; s++) {
        size_t room;
        seq[s].prompt_len = strlen(req->prompts[s]);
        room = m->T - seq[s].prompt_len - 3; /* BOS prompt SEP response EOS fits in max_text */
        seq[s].cap = (size_t)sc->max_new_tokens < room ? (size_t)sc->max_new_tokens : room;
        seq[s].done = seq[s].cap == 0;
        seq[s].stop = seq[s].done ? 0 : (size_t)-1;
    }
    if (sc->no_cache || PERPO__REFERENCE) /* (the switch: the reference keeps no cache) */
        st = perpo__generate_nocache(m, req, sc, seq, streams, out, out_cap);
    else
        perpo__generate_cached(m, req, sc, seq, slot, pos, root, shared, streams, out, out_cap);
    if (out_len)
        for (s = 0; s < n; s++) out_len[s] = seq[s].len < out_cap ? seq[s].len : out_cap - 1;
    PERPO_FREE(m->cfg.alloc_ctx, seq);
    return st;
}

PERPODEF perpo_status perpo_generate(perpo_model *m, const perpo_gen_request *req,
                                     const perpo_sample_config *sc, char *out, size_t out_cap,
                                     size_t *out_len) {
    if (m) m->error[0] = 0;
    return perpo__generate(m, req, sc, NULL, out, out_cap, out_len);
}

/* ==========================================================================================
   7. Rewards: box parsing and IoU (grounding), edit distance and word scores (OCR)
   ========================================================================================== */

/* ---- Box parsing and IoU ---- */

/* One number: digits with an optional fraction ("12", "0.12"). The integer part must stay
 * below 1e7 (no image is that large) and at most 8 fraction digits are used, so the mantissa
 * (< 2^53) and the power of ten are exact and the one division below rounds correctly. */
static int perpo__parse_num(const char *s, size_t len, size_t *pos, double *v, int *has_frac) {
    size_t i = *pos, start;
    double m = 0.0, scale = 1.0;
    for (start = i; i < len && perpo__is_digit(s[i]); i++)
        if ((m = m * 10.0 + (s[i] - '0')) >= 1e7) return 0;
    if (i == start) return 0;
    *has_frac = 0;
    if (i < len && s[i] == '.') {
        for (start = ++i; i < len && perpo__is_digit(s[i]); i++)
            if (i - start < 8) {
                m = m * 10.0 + (s[i] - '0');
                scale *= 10.0;
            }
        if (i == start) return 0;
        *has_frac = 1;
    }
    *v = m / scale;
    *pos = i;
    return 1;
}

/* Tries "[ n , n , n , n ]" starting at the '[' at text[i]; writes box only on success. The
 * grammar has no '[', so an attempt stops before the next '[': all attempts together are O(len). */
static int perpo__parse_box_at(const char *s, size_t len, size_t i, float img_w, float img_h,
                               float box[4]) {
    double v[4];
    int k, frac, any_frac = 0;
    for (i++, k = 0; k < 4; k++) {
        while (i < len && perpo__is_space(s[i])) i++;
        if (!perpo__parse_num(s, len, &i, &v[k], &frac)) return 0;
        any_frac |= frac;
        while (i < len && perpo__is_space(s[i])) i++;
        if (i >= len || s[i] != (k < 3 ? ',' : ']')) return 0;
        i++;
    }
    if (any_frac) {
        for (k = 0; k < 4; k++)
            if (v[k] > 1.0) return 0;
    } else {
        if (!(img_w > 0.0f && img_h > 0.0f && isfinite(img_w) && isfinite(img_h))) return 0;
        if (v[0] > img_w || v[2] > img_w || v[1] > img_h || v[3] > img_h) return 0;
        v[0] /= img_w;
        v[2] /= img_w;
        v[1] /= img_h;
        v[3] /= img_h;
    }
    if (v[2] < v[0] || v[3] < v[1]) return 0;
    for (k = 0; k < 4; k++) box[k] = (float)v[k];
    return 1;
}

PERPODEF int perpo_parse_box(const char *text, size_t len, float img_w, float img_h, float box[4]) {
    size_t i;
    if (!box) return 0;
    box[0] = box[1] = box[2] = box[3] = 0.0f;
    if (!text) return 0;
    for (i = 0; i < len; i++)
        if (text[i] == '[' && perpo__parse_box_at(text, len, i, img_w, img_h, box)) return 1;
    return 0;
}

static int perpo__box_valid(const float b[4]) {
    return b && isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]) &&
           b[2] >= b[0] && b[3] >= b[1];
}

/* Areas in double: a product of two floats near FLT_MAX would overflow in float. */
static double perpo__box_area(const float b[4]) {
    return ((double)b[2] - b[0]) * ((double)b[3] - b[1]);
}

/* Intersection and union areas of two valid boxes; c (if not NULL) gets the enclosing box area. */
static void perpo__box_overlap(const float a[4], const float b[4], double *inter, double *uni,
                               double *c) {
    double iw = (double)(a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    double ih = (double)(a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    *inter = iw > 0.0 && ih > 0.0 ? iw * ih : 0.0;
    *uni = perpo__box_area(a) + perpo__box_area(b) - *inter;
    if (c)
        *c = ((double)(a[2] > b[2] ? a[2] : b[2]) - (a[0] < b[0] ? a[0] : b[0])) *
             ((double)(a[3] > b[3] ? a[3] : b[3]) - (a[1] < b[1] ? a[1] : b[1]));
}

PERPODEF float perpo_box_iou(const float a[4], const float b[4]) {
    double inter, uni, iou;
    if (!perpo__box_valid(a) || !perpo__box_valid(b)) return 0.0f;
    perpo__box_overlap(a, b, &inter, &uni, NULL);
    if (!(uni > 0.0)) return 0.0f;
    iou = inter / uni;
    return (float)(iou < 1.0 ? iou : 1.0); /* rounding could nudge it past 1 */
}

PERPODEF float perpo_box_giou(const float a[4], const float b[4]) {
    double inter, uni, c, giou;
    if (!perpo__box_valid(a) || !perpo__box_valid(b)) return -1.0f;
    perpo__box_overlap(a, b, &inter, &uni, &c);
    if (!(uni > 0.0)) return -1.0f; /* then c >= uni > 0 below */
    giou = inter / uni - (c - uni) / c;
    return (float)(giou < -1.0 ? -1.0 : giou > 1.0 ? 1.0 : giou);
}

PERPODEF float perpo_grounding_reward(const char *text, size_t len, const float gt[4], float img_w,
                                      float img_h) {
    float box[4];
    if (!perpo_parse_box(text, len, img_w, img_h, box)) return 0.0f;
    return perpo_box_iou(box, gt);
}

/* ---- OCR: edit distance ---- */

/* What every OCR metric checks first: its output (out, named on) and its two strings, NULL only
   with length 0; the reason into err, after clearing it, with w (the call) first. */
static perpo_status perpo__metric_args(const void *out, const char *on, const char *a,
                                       const char *an, size_t na, const char *b, const char *bn,
                                       size_t nb, char *err, size_t cap, const char *w) {
    perpo__errf(err, cap, "%s", "");
    if (on && !out) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %s is NULL", w, on);
    if (!a && na)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %s is NULL with length %zu: NULL only with length 0", w, an, na);
    if (!b && nb)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %s is NULL with length %zu: NULL only with length 0", w, bn, nb);
    return PERPO_OK;
}

/* perpo_edit_distance after the argument checks; w names the call in err. */
static perpo_status perpo__edit_distance(const char *a, size_t na, const char *b, size_t nb,
                                         size_t *dist, char *err, size_t cap, const char *w,
                                         void *alloc_ctx) {
    size_t *row, i, j;
    /* A shared prefix or suffix never changes the distance; stripping it makes long, nearly
     * equal strings (the common case for a good OCR model) cheap. */
    while (na && nb && a[0] == b[0]) {
        a++;
        b++;
        na--;
        nb--;
    }
    while (na && nb && a[na - 1] == b[nb - 1]) {
        na--;
        nb--;
    }
    if (na < nb) {
        const char *t = a;
        size_t n = na;
        a = b;
        na = nb;
        b = t;
        nb = n;
    }
    if (nb == 0) {
        *dist = na;
        return PERPO_OK;
    }
    if (nb >= SIZE_MAX / sizeof *row)
        return perpo__errst(err, cap, PERPO_ERR_OVERFLOW,
                            "%s: a row of %zu + 1 distances overflows size_t", w, nb);
    row = (size_t *)PERPO_MALLOC(alloc_ctx, (nb + 1) * sizeof *row);
    if (!row)
        return perpo__errst(err, cap, PERPO_ERR_NOMEM,
                            "%s: out of memory allocating one row of distances, %zu bytes (over "
                            "the shorter string's %zu bytes after the common prefix and suffix)",
                            w, (nb + 1) * sizeof *row, nb);
    /* One DP row over the shorter string: row[j] = distance(a[0..i), b[0..j)). */
    for (j = 0; j <= nb; j++) row[j] = j;
    for (i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (j = 1; j <= nb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    *dist = row[nb];
    PERPO_FREE(alloc_ctx, row);
    return PERPO_OK;
}

/* perpo_normalized_edit_distance after the argument checks. */
static perpo_status perpo__normalized_edit_distance(const char *a, size_t na, const char *b,
                                                    size_t nb, float *ned, char *err, size_t cap,
                                                    const char *w, void *alloc_ctx) {
    size_t d;
    perpo_status st;
    if ((st = perpo__edit_distance(a, na, b, nb, &d, err, cap, w, alloc_ctx)) != PERPO_OK)
        return st;
    *ned = na || nb ? (float)((double)d / (double)(na > nb ? na : nb)) : 0.0f;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_edit_distance_err(const char *a, size_t na, const char *b, size_t nb,
                                              size_t *dist, char *err, size_t err_cap,
                                              void *alloc_ctx) {
    const char *w = "perpo_edit_distance";
    perpo_status st = perpo__metric_args(dist, "dist", a, "a", na, b, "b", nb, err, err_cap, w);
    return st != PERPO_OK ? st
                          : perpo__edit_distance(a, na, b, nb, dist, err, err_cap, w, alloc_ctx);
}
PERPODEF perpo_status perpo_edit_distance(const char *a, size_t na, const char *b, size_t nb,
                                          size_t *dist, void *alloc_ctx) {
    return perpo_edit_distance_err(a, na, b, nb, dist, NULL, 0, alloc_ctx);
}

PERPODEF perpo_status perpo_normalized_edit_distance_err(const char *a, size_t na, const char *b,
                                                         size_t nb, float *ned, char *err,
                                                         size_t err_cap, void *alloc_ctx) {
    const char *w = "perpo_normalized_edit_distance";
    perpo_status st = perpo__metric_args(ned, "ned", a, "a", na, b, "b", nb, err, err_cap, w);
    return st != PERPO_OK
               ? st
               : perpo__normalized_edit_distance(a, na, b, nb, ned, err, err_cap, w, alloc_ctx);
}
PERPODEF perpo_status perpo_normalized_edit_distance(const char *a, size_t na, const char *b,
                                                     size_t nb, float *ned, void *alloc_ctx) {
    return perpo_normalized_edit_distance_err(a, na, b, nb, ned, NULL, 0, alloc_ctx);
}

PERPODEF perpo_status perpo_ocr_reward_err(const char *text, size_t len, const char *ref,
                                           size_t nref, float *reward, char *err, size_t err_cap,
                                           void *alloc_ctx) {
    const char *w = "perpo_ocr_reward";
    float ned;
    perpo_status st =
        perpo__metric_args(reward, "reward", text, "text", len, ref, "ref", nref, err, err_cap, w);
    if (st == PERPO_OK)
        st =
            perpo__normalized_edit_distance(text, len, ref, nref, &ned, err, err_cap, w, alloc_ctx);
    if (st == PERPO_OK) *reward = 1.0f - ned;
    return st;
}
PERPODEF perpo_status perpo_ocr_reward(const char *text, size_t len, const char *ref, size_t nref,
                                       float *reward, void *alloc_ctx) {
    return perpo_ocr_reward_err(text, len, ref, nref, reward, NULL, 0, alloc_ctx);
}

/* ---- OCR: word sets and BLEU-4 ----
 * Words and n-grams are hashed, sorted by (hash, content) and matched by a merge walk: memory is
 * linear in the number of words and exact equality (not the hash) decides matches. */

typedef struct {
    const char *p;
    size_t len;
    uint64_t h;
} perpo__word;
typedef struct {
    uint64_t h;
    const perpo__word *w;
    size_t n;
} perpo__gram; /* words w[0..n) */

/* Splits on ASCII whitespace; with out == NULL only counts. */
static size_t perpo__split_words(const char *s, size_t len, perpo__word *out) {
    size_t i = 0, n = 0, start;
    while (i < len) {
        while (i < len && perpo__is_space(s[i])) i++;
        if (i == len) break;
        for (start = i; i < len && !perpo__is_space(s[i]); i++) {}
        if (out) {
            uint64_t h = PERPO__FNV_BASIS;
            size_t k;
            for (k = start; k < i; k++) h = (h ^ (unsigned char)s[k]) * PERPO__FNV_PRIME;
            out[n].p = s + start;
            out[n].len = i - start;
            out[n].h = h;
        }
        n++;
    }
    return n;
}

/* Total order on n-grams of equal n: hash first (fast), then word by word (exact). */
static int perpo__gram_cmp(const void *x, const void *y) {
    const perpo__gram *a = (const perpo__gram *)x, *b = (const perpo__gram *)y;
    size_t k;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    for (k = 0; k < a->n; k++) {
        const perpo__word *u = a->w + k, *v = b->w + k;
        int c;
        if (u->len != v->len) return u->len < v->len ? -1 : 1;
        if ((c = memcmp(u->p, v->p, u->len)) != 0) return c < 0 ? -1 : 1;
    }
    return 0;
}

/* Writes the nw - n + 1 n-grams of w into g, sorted; returns their count. */
static size_t perpo__make_grams(const perpo__word *w, size_t nw, size_t n, perpo__gram *g) {
    size_t i, k, m = nw >= n ? nw - n + 1 : 0;
    for (i = 0; i < m; i++) {
        uint64_t h = PERPO__FNV_BASIS;
        for (k = 0; k < n; k++) h = (h ^ w[i + k].h) * PERPO__FNV_PRIME;
        g[i].h = h;
        g[i].w = w + i;
        g[i].n = n;
    }
    if (m > 1) qsort(g, m, sizeof *g, perpo__gram_cmp);
    return m;
}

/* Merge walk of two sorted n-gram lists: BLEU's clipped matches (sum over distinct n-grams of
 * min(count in hyp, count in ref)), the distinct counts of each side and of their intersection. */
typedef struct {
    size_t clipped, distinct_h, distinct_r, common;
} perpo__match;

static perpo__match perpo__match_grams(const perpo__gram *h, size_t nh, const perpo__gram *r,
                                       size_t nr) {
    perpo__match m = { 0, 0, 0, 0 };
    size_t i = 0, j = 0;
    while (i < nh || j < nr) {
        int c = i == nh ? 1 : j == nr ? -1 : perpo__gram_cmp(h + i, r + j);
        size_t ci = 0, cj = 0;
        if (c <= 0) {
            do ci++;
            while (i + ci < nh && perpo__gram_cmp(h + i, h + i + ci) == 0);
            m.distinct_h++;
        }
        if (c >= 0) {
            do cj++;
            while (j + cj < nr && perpo__gram_cmp(r + j, r + j + cj) == 0);
            m.distinct_r++;
        }
        if (c == 0) {
            m.common++;
            m.clipped += ci < cj ? ci : cj;
        }
        i += ci;
        j += cj;
    }
    return m;
}

/* perpo_word_scores after the argument checks; w names the call in err. */
static perpo_status perpo__word_scores(const char *hyp, size_t nh, const char *ref, size_t nr,
                                       float *precision, float *recall, float *f1, float *bleu,
                                       char *err, size_t cap, const char *w, void *alloc_ctx) {
    size_t th, tr, total, n;
    perpo__gram *gh, *gr;
    perpo__word *wh, *wr;
    double p = 0.0, r = 0.0, f = 0.0, b = 0.0, log_p = 0.0;
    th = perpo__split_words(hyp, nh, NULL);
    tr = perpo__split_words(ref, nr, NULL);
    if (th == 0 || tr == 0) {
        p = r = f = b = th == tr ? 1.0 : 0.0; /* both empty: a perfect match; one empty: none */
    } else {
        total = th + tr;
        if (total < th || total > SIZE_MAX / (sizeof(perpo__gram) + sizeof(perpo__word)))
            return perpo__errst(err, cap, PERPO_ERR_OVERFLOW,
                                "%s: the n-gram table of %zu + %zu words overflows size_t", w, th,
                                tr);
        gh = (perpo__gram *)PERPO_MALLOC(alloc_ctx,
                                         total * (sizeof(perpo__gram) + sizeof(perpo__word)));
        if (!gh)
            return perpo__errst(err, cap, PERPO_ERR_NOMEM,
                                "%s: out of memory allocating the n-gram table (%zu bytes, for "
                                "%zu + %zu words)",
                                w, total * (sizeof(perpo__gram) + sizeof(perpo__word)), th, tr);
        gr = gh + th;
        wh = (perpo__word *)(gr + tr);
        wr = wh + th;
        perpo__split_words(hyp, nh, wh);
        perpo__split_words(ref, nr, wr);
        for (n = 1; n <= 4; n++) {
            size_t mh = perpo__make_grams(wh, th, n, gh), mr = perpo__make_grams(wr, tr, n, gr);
            perpo__match m = perpo__match_grams(gh, mh, gr, mr);
            if (n == 1) {
                p = (double)m.common / (double)m.distinct_h;
                r = (double)m.common / (double)m.distinct_r;
                f = m.common ? 2.0 * p * r / (p + r) : 0.0;
                if (!m.clipped) break; /* no word in common: BLEU is 0 */
                log_p = log((double)m.clipped / (double)mh);
            } else {
                log_p += log(((double)m.clipped + 1.0) / ((double)mh + 1.0)); /* add-one */
            }
            if (n == 4) /* geometric mean of p1..p4 times the brevity penalty */
                b = exp(0.25 * log_p + (th > tr ? 0.0 : 1.0 - (double)tr / (double)th));
        }
        PERPO_FREE(alloc_ctx, gh);
    }
    if (precision) *precision = (float)p;
    if (recall) *recall = (float)r;
    if (f1) *f1 = (float)f;
    if (bleu) *bleu = (float)b;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_word_scores_err(const char *hyp, size_t nh, const char *ref, size_t nr,
                                            float *precision, float *recall, float *f1, float *bleu,
                                            char *err, size_t err_cap, void *alloc_ctx) {
    const char *w = "perpo_word_scores";
    perpo_status st =
        perpo__metric_args(NULL, NULL, hyp, "hyp", nh, ref, "ref", nr, err, err_cap, w);
    return st != PERPO_OK ? st
                          : perpo__word_scores(hyp, nh, ref, nr, precision, recall, f1, bleu, err,
                                               err_cap, w, alloc_ctx);
}
PERPODEF perpo_status perpo_word_scores(const char *hyp, size_t nh, const char *ref, size_t nr,
                                        float *precision, float *recall, float *f1, float *bleu,
                                        void *alloc_ctx) {
    return perpo_word_scores_err(hyp, nh, ref, nr, precision, recall, f1, bleu, NULL, 0, alloc_ctx);
}

PERPODEF perpo_status perpo_ocr_score_err(const char *hyp, size_t nh, const char *ref, size_t nr,
                                          perpo_ocr_scores *out, char *err, size_t err_cap,
                                          void *alloc_ctx) {
    const char *w = "perpo_ocr_score";
    perpo_ocr_scores s;
    perpo_status st =
        perpo__metric_args(out, "out", hyp, "hyp", nh, ref, "ref", nr, err, err_cap, w);
    if (st == PERPO_OK)
        st = perpo__normalized_edit_distance(hyp, nh, ref, nr, &s.edit_distance, err, err_cap, w,
                                             alloc_ctx);
    if (st == PERPO_OK)
        st = perpo__word_scores(hyp, nh, ref, nr, &s.precision, &s.recall, &s.f1, &s.bleu, err,
                                err_cap, w, alloc_ctx);
    if (st == PERPO_OK) *out = s;
    return st;
}
PERPODEF perpo_status perpo_ocr_score(const char *hyp, size_t nh, const char *ref, size_t nr,
                                      perpo_ocr_scores *out, void *alloc_ctx) {
    return perpo_ocr_score_err(hyp, nh, ref, nr, out, NULL, 0, alloc_ctx);
}

/* ==========================================================================================
   8. Optimizer (AdamW, cosine schedule, clipping), data parallelism and the SFT trainer.
      AdamW has one implementation for every build: a team function (see perpo__team_range)
      whose element loop runs 16 lanes at a time in AVX-512 builds, the same operations in the
      same order.
   ========================================================================================== */

PERPODEF perpo_optim_config perpo_optim_default(void) {
    perpo_optim_config o;
    o.lr = 1e-3f;
    o.min_lr = 1e-4f;
    o.warmup_steps = 20;
    o.total_steps = 1000;
    o.beta1 = 0.9f;
    o.beta2 = 0.95f;
    o.eps = 1e-8f;
    o.weight_decay = 0.1f;
    o.clip_norm = 1.0f;
    return o;
}

/* perpo_optim_validate with a reason in err; w names the caller, f the config's field path
   ("optim." inside a trainer's config). Written so that NaN fails every comparison. */
static perpo_status perpo__optim_check(const perpo_optim_config *oc, char *err, size_t cap,
                                       const char *w, const char *f) {
    if (!oc) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: optim config is NULL", w);
    if (!(oc->lr > 0.0f && oc->lr <= 1.0f))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %slr %g must be in (0, 1]", w, f,
                            (double)oc->lr);
    if (!(oc->min_lr >= 0.0f && oc->min_lr <= oc->lr))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %smin_lr %g must be in [0, lr %g]", w, f,
                            (double)oc->min_lr, (double)oc->lr);
    if (!(oc->beta1 >= 0.0f && oc->beta1 < 1.0f) || !(oc->beta2 >= 0.0f && oc->beta2 < 1.0f))
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %sbeta1 %g and beta2 %g must be in [0, 1)", w, f,
                            (double)oc->beta1, (double)oc->beta2);
    if (!(oc->eps > 0.0f && oc->eps < 1.0f))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %seps %g must be in (0, 1)", w, f,
                            (double)oc->eps);
    if (!(oc->weight_decay >= 0.0f && oc->weight_decay <= 1.0f))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %sweight_decay %g must be in [0, 1]", w,
                            f, (double)oc->weight_decay);
    if (!(oc->clip_norm >= 0.0f && oc->clip_norm <= FLT_MAX))
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %sclip_norm %g must be finite and >= 0",
                            w, f, (double)oc->clip_norm);
    if (oc->total_steps < 1 || oc->total_steps > PERPO_MAX_STEPS)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: %stotal_steps %d must be in [1, %d]", w,
                            f, oc->total_steps, PERPO_MAX_STEPS);
    if (oc->warmup_steps < 0 || oc->warmup_steps > oc->total_steps)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %swarmup_steps %d exceeds total_steps %d (or is negative): lower "
                            "warmup_steps or raise total_steps",
                            w, f, oc->warmup_steps, oc->total_steps);
    return PERPO_OK;
}

PERPODEF perpo_status perpo_optim_validate_err(const perpo_optim_config *oc, char *err,
                                               size_t err_cap) {
    perpo__errf(err, err_cap, "%s", "");
    return perpo__optim_check(oc, err, err_cap, "perpo_optim_validate", "");
}

PERPODEF perpo_status perpo_optim_validate(const perpo_optim_config *oc) {
    return perpo_optim_validate_err(oc, NULL, 0);
}

/* In double throughout: no int arithmetic on step, warmup or total, so no overflow. */
PERPODEF float perpo_lr_at(const perpo_optim_config *oc, int step) {
    double progress, s, warm, total;
    if (perpo_optim_validate(oc) != PERPO_OK) return 0.0f;
    total = (double)oc->total_steps;
    warm = (double)oc->warmup_steps;
    s = step < 0 ? 0.0 : (double)step;
    if (s > total) s = total;
    if (s < warm) return (float)((double)oc->lr * (s + 1.0) / warm);
    progress = (s - warm) / (total - warm > 1.0 ? total - warm : 1.0);
    if (progress > 1.0) progress = 1.0;
    return (float)(oc->min_lr +
                   0.5 * (oc->lr - oc->min_lr) * (1.0 + cos(3.141592653589793 * progress)));
}

/* (section 10: how a team splits the work; AVX-512 masks) */
static void perpo__team_range(size_t n, size_t *lo, size_t *hi);
#ifdef __AVX512F__
static __mmask16 perpo__mask16(size_t left);
#endif

/* The shared state of one AdamW step's parallel region. */
typedef struct perpo__adamw {
    double part[64];  /* sums of squares of the gradient in 64 fixed chunks */
    int finite[2];    /* pass 0: every new value finite; pass 1: the same, as written */
    float grad_scale; /* in */
} perpo__adamw;
/* The gradient norm from the chunks' sums, added in order. */
static double perpo__adamw_norm(const perpo__adamw *st) {
    double sumsq = 0.0;
    int c;
    for (c = 0; c < 64; c++) sumsq += st->part[c];
    return sqrt(sumsq);
}
/* The factors of one AdamW step, the same for every element (decay: per tensor). */
/* The factors of one AdamW step, the same for every element (gradient scale, betas, step size,
   bias correction, epsilon). */
typedef struct perpo__adamw_factors {
    float mult, beta1, beta2, step_size, bc2_sqrt, eps;
} perpo__adamw_factors;
/* Elements [a, b): the new moments and parameter, written if write; returns whether all are
   finite. AVX-512 builds run 16 lanes with the scalar formula's operations in its order (sqrt
   and divide are exact in both); the scalar loop's sqrtf keeps compilers from vectorizing it. */
static int perpo__adamw_range(perpo_model *m, const perpo__adamw_factors *f, float decay, size_t a,
                              size_t b, int write) {
    float *PERPO__RESTRICT pm = m->adam_m, *PERPO__RESTRICT pv = m->adam_v,
                           *PERPO__RESTRICT pp = m->params;
    const float *PERPO__RESTRICT pg = m->grads;
    float mult = f->mult, b1 = f->beta1, b2 = f->beta2, step_size = f->step_size,
          bc2_sqrt = f->bc2_sqrt, eps = f->eps;
    size_t i = a;
    int finite = 1;
#ifdef __AVX512F__
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    for (; i < b; i += 16) {
        __mmask16 l = perpo__mask16(b - i);
        /* one operation a statement, in the scalar code's order: compilers contract a
           multiply and an add into an FMA in the order they meet them. p1 is a masked multiply,
           which they do not contract: in the scalar code, sqrtf's errno branch separates the
           multiply from the subtraction, and compilers contract only within a basic block. */
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(l, pg + i), _mm512_set1_ps(mult));
        __m512 m1 = _mm512_mul_ps(_mm512_set1_ps(b1), _mm512_maskz_loadu_ps(l, pm + i));
        __m512 m2 = _mm512_mul_ps(_mm512_set1_ps(1.0f - b1), g);
        __m512 mm = _mm512_add_ps(m1, m2);
        __m512 v1 = _mm512_mul_ps(_mm512_set1_ps(b2), _mm512_maskz_loadu_ps(l, pv + i));
        __m512 v2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(1.0f - b2), g), g);
        __m512 vv = _mm512_add_ps(v1, v2);
        __m512 p1 = _mm512_maskz_mul_ps(l, _mm512_maskz_loadu_ps(l, pp + i), _mm512_set1_ps(decay));
        __m512 p2 = _mm512_mul_ps(_mm512_set1_ps(step_size), mm);
        __m512 p3 = _mm512_div_ps(_mm512_sqrt_ps(vv), _mm512_set1_ps(bc2_sqrt));
        __m512 p = _mm512_sub_ps(p1, _mm512_div_ps(p2, _mm512_add_ps(p3, _mm512_set1_ps(eps))));
        __mmask16 ok = _mm512_mask_cmp_ps_mask(l, _mm512_abs_ps(mm), big, _CMP_LE_OQ) &
                       _mm512_mask_cmp_ps_mask(l, vv, big, _CMP_LE_OQ) &
                       _mm512_mask_cmp_ps_mask(l, _mm512_abs_ps(p), big, _CMP_LE_OQ);
        if (write) {
            _mm512_mask_storeu_ps(pm + i, l, mm);
            _mm512_mask_storeu_ps(pv + i, l, vv);
            _mm512_mask_storeu_ps(pp + i, l, p);
        }
        finite &= ok == l;
    }
#endif
    for (; i < b; i++) {
        float g = pg[i] * mult;
        float mm = b1 * pm[i] + (1.0f - b1) * g;
        float vv = b2 * pv[i] + (1.0f - b2) * g * g;
        float p = pp[i] * decay - step_size * mm / (sqrtf(vv) / bc2_sqrt + eps);
        if (write) {
            pm[i] = mm;
            pv[i] = vv;
            pp[i] = p;
        }
        finite &= (fabsf(mm) <= FLT_MAX) & (vv <= FLT_MAX) & (fabsf(p) <= FLT_MAX);
    }
    return finite;
}
/* One thread's share of an AdamW step: the gradient norm (64 chunks, summed in order, the same
   for any thread count), then pass 0, which computes every new value and only checks it (a
   finite gradient can still overflow: a huge grad_scale without clipping, params near FLT_MAX),
   then pass 1, which writes the same values, only if pass 0 found them all finite. Each
   tensor's elements split over the team. Every thread computes the same norm and factors from
   the shared sums, so all take the same branches to the same barriers. */
static void perpo__adamw_team(perpo_model *m, const perpo_optim_config *oc, perpo__adamw *st) {
    size_t c, lo, hi, k;
    double norm, bc1, bc2;
    float mult, lr;
    int t, pass;
    perpo__adamw_factors fac;
    perpo__team_range(64, &lo, &hi);
    for (c = lo; c < hi; c++) {
        size_t j, a = m->n_params * c / 64, b = m->n_params * (c + 1) / 64;
        double acc = 0.0;
        for (j = a; j < b; j++) {
            double g = (double)m->grads[j] * st->grad_scale;
            acc += g * g;
        }
        st->part[c] = acc;
    }
    PERPO__OMP(barrier)
    norm = perpo__adamw_norm(st);
    if (!isfinite(norm)) return; /* refuse the step, change nothing */
    mult = st->grad_scale;
    if (oc->clip_norm > 0.0f && norm > oc->clip_norm)
        mult *= (float)(oc->clip_norm / (norm + 1e-6));
    t = m->opt_step + 1;
    lr = perpo_lr_at(oc, m->opt_step);
    bc1 = 1.0 - pow((double)oc->beta1, (double)t);
    bc2 = 1.0 - pow((double)oc->beta2, (double)t);
    fac.mult = mult;
    fac.beta1 = oc->beta1;
    fac.beta2 = oc->beta2;
    fac.step_size = (float)(lr / bc1);
    fac.bc2_sqrt = (float)sqrt(bc2);
    fac.eps = oc->eps;
    for (pass = 0; pass < 2; pass++) {
        int finite = 1;
        for (k = 0; k < m->n_tensors; k++) {
            const perpo__tensor *tn = &m->tensors[k];
            size_t n = tn->rows * (tn->cols ? tn->cols : 1), o = tn->offset;
            float decay = tn->cols ? 1.0f - lr * oc->weight_decay : 1.0f; /* matrices only */
            perpo__team_range(n, &lo, &hi);
            finite &= perpo__adamw_range(m, &fac, decay, o + lo, o + hi, pass);
        }
        if (!finite) {
            PERPO__OMP(atomic write)
            st->finite[pass] = 0;
        }
        PERPO__OMP(barrier)
        if (pass == 0) {
            int ok;
            PERPO__OMP(atomic read)
            ok = st->finite[0];
            if (!ok) break; /* (every thread reads it after the barrier: the same value) */
        }
    }
}

/* perpo_optim_step without clearing the model's message: w names the call in it (a trainer
   passes its own name). */
static perpo_status perpo__optim_step(perpo_model *m, const perpo_optim_config *oc,
                                      float grad_scale, float *grad_norm, const char *w) {
    char *e = m->error;
    size_t cap = sizeof m->error;
    perpo__adamw st;
    double norm;
    if (perpo__optim_check(oc, e, cap, w, "") != PERPO_OK) return PERPO_ERR_ARG;
    if (!(grad_scale > 0.0f && grad_scale <= FLT_MAX))
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: grad_scale %g must be finite and > 0 (1 / accum_steps when "
                            "gradients are accumulated)",
                            w, (double)grad_scale);
    if (m->opt_step < 0 || m->opt_step >= PERPO_MAX_STEPS)
        return perpo__errst(e, cap, PERPO_ERR_ARG,
                            "%s: the model has taken %d steps, the most is PERPO_MAX_STEPS %d: "
                            "perpo_optim_reset starts a new schedule",
                            w, m->opt_step, PERPO_MAX_STEPS);
    memset(&st, 0, sizeof st);
    st.grad_scale = grad_scale;
    st.finite[0] = st.finite[1] = 1;
    PERPO__OMP(parallel if (m->n_params >= PERPO__PAR_MIN)) /* the step's one region */
    perpo__adamw_team(m, oc, &st);
    norm = perpo__adamw_norm(&st);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm)) /* nothing changed */
        return perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                            "%s: step %d: the gradient norm is %g (a NaN or Inf in the gradients "
                            "x grad_scale %g): nothing changed; look for the loss or input that "
                            "was not finite",
                            w, m->opt_step, norm, (double)grad_scale);
    if (!st.finite[0]) /* nothing changed */
        return perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                            "%s: step %d (gradient norm %g) would make a parameter or AdamW "
                            "moment non-finite: nothing changed; lower lr (%g) or clip_norm (%g)",
                            w, m->opt_step, norm, (double)oc->lr, (double)oc->clip_norm);
    m->params_version++; /* pass 1 wrote the parameters, whatever follows */
    if (!st.finite[1]) {
        m->params_known_finite = 0; /* pass 1 disagreed with pass 0: never expected */
        return perpo__errst(e, cap, PERPO_ERR_NONFINITE,
                            "%s: step %d wrote a non-finite parameter after checking that it "
                            "would not: the model's parameters are suspect",
                            w, m->opt_step);
    }
    m->params_known_finite = 1;
    m->opt_step++;
    m->no_opt_state = 0;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_optim_step(perpo_model *m, const perpo_optim_config *oc,
                                       float grad_scale, float *grad_norm) {
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    return perpo__optim_step(m, oc, grad_scale, grad_norm, "perpo_optim_step");
}

PERPODEF int perpo_optim_step_count(const perpo_model *m) { return m ? m->opt_step : 0; }
PERPODEF void perpo_optim_reset(perpo_model *m) {
    if (!m) return;
    memset(m->adam_m, 0, m->n_params * sizeof(float));
    memset(m->adam_v, 0, m->n_params * sizeof(float));
    m->opt_step = 0;
    m->no_opt_state = 0;
}

/* ---- Data parallelism: what both trainers share ------------------------------------------ */
PERPODEF perpo_status perpo_share_err(size_t n, int rank, int world, size_t *first, size_t *count,
                                      char *err, size_t err_cap) {
    size_t w, k, q, r;
    perpo__errf(err, err_cap, "%s", "");
    if (!first || !count)
        return perpo__errst(err, err_cap, PERPO_ERR_ARG, "perpo_share: first or count is NULL");
    if (world < 1 || world > PERPO_MAX_WORLD)
        return perpo__errst(err, err_cap, PERPO_ERR_ARG,
                            "perpo_share: world %d must be in [1, PERPO_MAX_WORLD %d]", world,
                            PERPO_MAX_WORLD);
    if (rank < 0 || rank >= world)
        return perpo__errst(err, err_cap, PERPO_ERR_ARG,
                            "perpo_share: rank %d must be in [0, world %d)", rank, world);
    w = (size_t)world;
    k = (size_t)rank;
    q = n / w;
    r = n % w;
    *first = q * k + (k < r ? k : r); /* <= n: no overflow */
    *count = q + (k < r ? 1 : 0);
    return PERPO_OK;
}

PERPODEF perpo_status perpo_share(size_t n, int rank, int world, size_t *first, size_t *count) {
    return perpo_share_err(n, rank, world, first, count, NULL, 0);
}

static perpo_parallel perpo__parallel_none(void) {
    perpo_parallel p;
    p.reduce = NULL;
    p.user = NULL;
    p.rank = 0;
    p.world = 1;
    return p;
}

/* The ranges documented at perpo_parallel (a zeroed struct is one process too). */
static int perpo__parallel_ok(const perpo_parallel *p) {
    if (!p->reduce) return p->rank == 0 && (p->world == 0 || p->world == 1);
    return p->world >= 1 && p->world <= PERPO_MAX_WORLD && p->rank >= 0 && p->rank < p->world;
}

/* Every field of perpo_config but alloc_ctx as ints, in the order of the checkpoint format
   (section 12): what checkpoints store and data-parallel workers compare. */
#define PERPO__CONFIG_WORDS 15
static void perpo__config_to_words(const perpo_config *c, int *v) {
    v[0] = c->image_h;
    v[1] = c->image_w;
    v[2] = c->channels;
    v[3] = c->patch_h;
    v[4] = c->patch_w;
    v[5] = c->pos_channels;
    v[6] = c->vis_sincos;
    v[7] = c->d_model;
    v[8] = c->n_heads;
    v[9] = c->n_vis_layers;
    v[10] = c->n_dec_layers;
    v[11] = c->mlp_mult;
    v[12] = c->max_text;
    v[13] = c->vocab;
    v[14] = c->max_batch;
}
/* The fields' names, in the same order, for messages. */
static const char *const perpo__config_word_names[PERPO__CONFIG_WORDS] = {
    "image_h",      "image_w",    "channels", "patch_h", "patch_w",
    "pos_channels", "vis_sincos", "d_model",  "n_heads", "n_vis_layers",
    "n_dec_layers", "mlp_mult",   "max_text", "vocab",   "max_batch"
};

/* FNV-1a over 32-bit words: a cheap fingerprint of what the workers must agree on. */
static uint64_t perpo__hash_words(uint64_t h, const void *data, size_t n_words) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n_words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        h = (h ^ w) * PERPO__FNV_PRIME;
    }
    return h;
}
static uint64_t perpo__hash_optim(uint64_t h, const perpo_optim_config *oc) {
    float f[7];
    int v[2];
    f[0] = oc->lr;
    f[1] = oc->min_lr;
    f[2] = oc->beta1;
    f[3] = oc->beta2;
    f[4] = oc->eps;
    f[5] = oc->weight_decay;
    f[6] = oc->clip_norm;
    v[0] = oc->warmup_steps;
    v[1] = oc->total_steps;
    return perpo__hash_words(perpo__hash_words(h, f, 7), v, 2);
}
/* The architecture and weights, and with resume the AdamW moments and step: workers that start
   from different weights (one forgot to load the checkpoint) are refused before any step. */
static uint64_t perpo__hash_model(const perpo_model *m, int with_optimizer) {
    int cfgv[PERPO__CONFIG_WORDS];
    uint64_t h = PERPO__FNV_BASIS;
    perpo__config_to_words(&m->cfg, cfgv);
    h = perpo__hash_words(h, cfgv, PERPO__CONFIG_WORDS);
    h = perpo__hash_words(h, m->params, m->n_params);
    if (with_optimizer) {
        h = perpo__hash_words(h, m->adam_m, m->n_params);
        h = perpo__hash_words(h, m->adam_v, m->n_params);
        h = perpo__hash_words(h, &m->opt_step, 1);
    }
    return h;
}

/* One reduction of a data-parallel trainer whose last float is this worker's failure flag:
   every worker learns whether any failed, and all stop together (no one waits forever in the
   next reduction). The failed worker returns its own status, the others PERPO_ERR_PEER. The
   sums are checked like any input: a NaN or Inf anywhere in them (a count, a loss, a metric, a
   flag) is PERPO_ERR_NONFINITE on every worker (the hook leaves the same values on all), never
   a loss or stop request taken at face value. */
static perpo_status perpo__collective(const perpo_parallel *par, float *buf, size_t n,
                                      perpo_status local) {
    perpo_status st;
    buf[n - 1] = local != PERPO_OK ? 1.0f : 0.0f;
    if ((st = par->reduce(buf, n, par->user)) != PERPO_OK) return st;
    if (!perpo__all_finite(buf, n)) return local != PERPO_OK ? local : PERPO_ERR_NONFINITE;
    if (buf[n - 1] != 0.0f) return local != PERPO_OK ? local : PERPO_ERR_PEER;
    return PERPO_OK;
}

/* The entry of a data-parallel trainer. First every worker's status and world (a fixed-size
   reduction), then a gather through the sum hook: each worker writes its block (a presence
   mark, the words, its part size) as 16-bit pieces, exact in float, zeros elsewhere, so every
   worker sees every block exactly and all take the same decision from the same numbers.
   PERPO_ERR_ARG when the ranks are not 0..world-1 once each or the words differ; offset and
   total (may be NULL) get the sum of the parts before this worker's and of all. */
static perpo_status perpo__handshake(const perpo_parallel *par, void *ctx, perpo_status local,
                                     const uint64_t *words, uint64_t part, size_t *offset,
                                     size_t *total) {
    const size_t K = 1 + 4 * (PERPO__HS_WORDS + 1), W = (size_t)par->world;
    float first[3], *buf = NULL;
    size_t before = 0, all = 0;
    perpo_status st;
    size_t r, k;
    if (local == PERPO_OK && !(buf = (float *)perpo__calloc(ctx, W * K, sizeof(float))))
        local = PERPO_ERR_NOMEM;
    first[0] = 1.0f;
    first[1] = (float)W;
    if ((st = perpo__collective(par, first, 3, local)) != PERPO_OK) goto done;
    if (!(first[0] == (float)W && first[1] == (float)W * (float)W)) {
        st = PERPO_ERR_ARG;
        goto done;
    }
    {
        float *mine = buf + (size_t)par->rank * K;
        mine[0] = 1.0f;
        for (k = 0; k <= PERPO__HS_WORDS; k++) {
            uint64_t v = k < PERPO__HS_WORDS ? words[k] : part;
            int q;
            for (q = 0; q < 4; q++)
                mine[1 + 4 * k + (size_t)q] = (float)((v >> (16 * q)) & 0xFFFFu);
        }
    }
    if ((st = par->reduce(buf, W * K, par->user)) != PERPO_OK) goto done;
    if (!perpo__all_finite(buf, W * K)) st = PERPO_ERR_NONFINITE; /* as in perpo__collective */
    for (r = 0; r < W && st == PERPO_OK; r++) {
        const float *blk = buf + r * K;
        uint64_t p = 0;
        int q;
        if (blk[0] != 1.0f) st = PERPO_ERR_ARG; /* a rank missing or taken twice */
        for (k = 1; k < 1 + 4 * PERPO__HS_WORDS; k++)
            if (blk[k] != buf[k]) st = PERPO_ERR_ARG; /* a word differs from rank 0's */
        for (q = 0; q < 4; q++) {
            float f = blk[1 + 4 * PERPO__HS_WORDS + (size_t)q];
            if (!(f >= 0.0f && f <= 65535.0f)) {
                st = PERPO_ERR_ARG;
                break;
            }
            p |= (uint64_t)f << (16 * q);
        }
        if (st == PERPO_OK && ((uint64_t)(size_t)p != p || !perpo__size_add(all, (size_t)p, &all)))
            st = PERPO_ERR_OVERFLOW;
        if (r + 1 == (size_t)par->rank) before = all;
    }
    if (st == PERPO_OK) {
        if (offset) *offset = before;
        if (total) *total = all;
    }
done:
    PERPO_FREE(ctx, buf);
    return st;
}

/* The last step's report, then a stop request: data-parallel, any worker's stops all. */
static perpo_status perpo__report(const perpo_parallel *par, perpo_progress_fn progress,
                                  perpo_progress *p, void *user, int *stop) {
    float buf[2];
    *stop = progress ? progress(p, user) != 0 : 0;
    if (!par->reduce) return PERPO_OK;
    buf[0] = (float)*stop;
    *stop = 0;
    {
        perpo_status st = perpo__collective(par, buf, 2, PERPO_OK);
        if (st != PERPO_OK) return st;
    }
    *stop = buf[0] != 0.0f;
    return PERPO_OK;
}

/* ---- SFT: cross-entropy on the responses ------------------------------------------------ */
PERPODEF perpo_sft_config perpo_sft_default(void) {
    perpo_sft_config t;
    t.optim = perpo_optim_default();
    t.batch_size = 32;
    t.accum_steps = 1;
    t.seed = 1;
    t.log_every = 10;
    t.resume = 0;
    t.parallel = perpo__parallel_none();
    return t;
}

/* The ranges documented at perpo_sft_config. */
static int perpo__check_sft_config(perpo_model *m, const perpo_sft_config *tc) {
    const char *w = "perpo_sft_train";
    char *e = m->error;
    size_t cap = sizeof m->error;
    perpo_status st = PERPO_ERR_ARG;
    if (!tc)
        perpo__errf(e, cap, "%s: tc is NULL", w);
    else if (tc->batch_size < 1 || (size_t)tc->batch_size > m->max_batch)
        perpo__errf(e, cap,
                    "%s: batch_size %d must be in [1, max_batch %zu]: lower batch_size (use "
                    "accum_steps for a larger effective batch) or raise max_batch",
                    w, tc->batch_size, m->max_batch);
    else if (tc->accum_steps < 1 || tc->accum_steps > PERPO_MAX_ACCUM)
        perpo__errf(e, cap, "%s: accum_steps %d must be in [1, %d]", w, tc->accum_steps,
                    PERPO_MAX_ACCUM);
    else if (tc->log_every < 1)
        perpo__errf(e, cap, "%s: log_every %d must be >= 1", w, tc->log_every);
    else if (tc->resume != 0 && tc->resume != 1)
        perpo__errf(e, cap, "%s: resume %d must be 0 or 1", w, tc->resume);
    else
        st = perpo__optim_check(&tc->optim, e, cap, w, "optim.");
    return st == PERPO_OK;
}

/* Which item a trainer uses at global position g (0-based, counting every sequence or list it
   has consumed): epoch g / n visits all n items in a Fisher-Yates permutation drawn from
   (seed, epoch). A pure function of (seed, g), so a run resumed from a checkpoint at step k
   sees exactly the data the uninterrupted run saw: no shuffling state needs saving. perm holds
   the current epoch's permutation, *epoch which one it is ((size_t)-1: none yet). */
static size_t perpo__data_index(size_t *perm, size_t n, uint64_t seed, size_t g, size_t *epoch) {
    if (g / n != *epoch) {
        perpo__rng rng;
        size_t i;
        *epoch = g / n;
        perpo__rng_seed(&rng, seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(*epoch + 1)));
        for (i = 0; i < n; i++) perm[i] = i;
        for (i = n; i > 1; i--) {
            size_t j = perpo__rng_below(&rng, i), t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
    }
    return perm[g % n];
}

/* The fixed-set source of perpo_sft_train: example index g is item perm[g % n] of epoch g / n. */
typedef struct perpo__example_set {
    const perpo_example *ex;
    size_t n, *perm, epoch;
    uint64_t seed;
} perpo__example_set;
static perpo_status perpo__example_set_next(size_t g, size_t slot, perpo_example *out, void *user) {
    perpo__example_set *s = (perpo__example_set *)user;
    (void)slot; /* the examples live in the caller's array */
    *out = s->ex[perpo__data_index(s->perm, s->n, s->seed, g, &s->epoch)];
    return PERPO_OK;
}

/* Positions of a run, (total_steps * accum_steps * per_microbatch) within size_t: the data
   index of every step and the sequence counts below are computed without overflow. */
static int perpo__positions_fit(int total_steps, int accum_steps, size_t per_microbatch) {
    size_t x;
    return perpo__size_mul((size_t)total_steps, (size_t)accum_steps, &x) &&
           perpo__size_mul(x, per_microbatch, &x);
}

/* What an SFT step needs, allocated once per call. */
typedef struct perpo__sft_state {
    const char *w; /* the public call, first in its messages */
    const perpo_sft_config *tc;
    perpo_example_fn next;
    void *next_user;
    size_t B, T, R, rank;
    int *tok, *tgt;
    const float **imgs;
    float *logp, *dlogp;
    perpo_status pending; /* a data-parallel worker's own failure, told at the next reduction */
} perpo__sft_state;

/* One SFT step's gradient: accum_steps micro-batches of the mean token cross-entropy. */
static perpo_status perpo__sft_step(perpo_model *m, int step, perpo_progress *p, double *tokens,
                                    void *state) {
    perpo__sft_state *S = (perpo__sft_state *)state;
    const perpo_sft_config *tc = S->tc;
    const perpo_parallel *par = &tc->parallel;
    size_t B = S->B, T = S->T, b;
    perpo_status st;
    int a;
    for (a = 0; a < tc->accum_steps; a++) {
        perpo_batch batch;
        size_t count = 0, nt;
        float ce = 0.0f, count_all;
        for (b = 0; S->pending == PERPO_OK && b < B; b++) {
            /* this worker's share of micro-batch (step, a): positions [rank * B, rank * B + B) */
            size_t g =
                (((size_t)step * (size_t)tc->accum_steps + (size_t)a) * S->R + S->rank) * B + b;
            perpo_example e;
            memset(&e, 0, sizeof e);
            /* (a fixed set was checked whole, by array index, before the first step: what
               fails here is a stream's example g, the index the trainer passed to next) */
            if ((st = S->next(g, b, &e, S->next_user)) != PERPO_OK)
                S->pending = st;
            else if (!e.image || !e.prompt || !e.response)
                S->pending =
                    perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                                 "%s: example %zu: image, prompt or response is NULL", S->w, g);
            else if (perpo_text_encode(&m->cfg, e.prompt, strlen(e.prompt), e.response,
                                       strlen(e.response), S->tok + b * T, S->tgt + b * T,
                                       &nt) != PERPO_OK)
                S->pending = perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                                          "%s: example %zu: prompt %zu + response %zu bytes "
                                          "exceed max_text %zu - 3: shorten them or raise "
                                          "max_text",
                                          S->w, g, strlen(e.prompt), strlen(e.response), T);
            else if ((st = perpo__check_image(e.image, m->image_floats, m->error, sizeof m->error,
                                              "%s: example %zu: image", S->w, g)) != PERPO_OK)
                S->pending = st;
            else {
                S->imgs[b] = e.image;
                count += nt;
            }
        }
        if (S->pending == PERPO_OK) {
            batch.n_seq = B;
            batch.n_img = B;
            batch.images = S->imgs;
            batch.image_of = NULL;
            batch.tokens = S->tok;
            batch.targets = S->tgt;
            S->pending = perpo_forward(m, &batch, S->logp, &ce);
        }
        if (par->reduce) { /* the micro-batch's token count and summed NLL over all workers */
            float buf[3];
            double nll = 0.0;
            for (b = 0; S->pending == PERPO_OK && b < B; b++) nll -= (double)S->logp[b];
            buf[0] = (float)count;
            buf[1] = (float)nll;
            if ((st = perpo__collective(par, buf, 3, S->pending)) != PERPO_OK) return st;
            /* a sum of whole numbers is exact below 2^24 and at least 2^24 otherwise */
            if (!(buf[0] >= 1.0f && buf[0] < 16777216.0f && buf[0] == floorf(buf[0])))
                return PERPO_ERR_OVERFLOW;
            count_all = buf[0];
            ce = buf[1] / buf[0];
        } else {
            if ((st = S->pending) != PERPO_OK) return st;
            count_all = (float)count;
        }
        /* mean token cross-entropy over the whole micro-batch */
        for (b = 0; b < B; b++) S->dlogp[b] = -1.0f / count_all;
        if ((st = perpo_backward(m, S->dlogp)) != PERPO_OK) {
            if (!par->reduce) return st;
            S->pending = st; /* told to the others at the next reduction */
        }
        p->loss += ce / (float)tc->accum_steps;
        *tokens += par->reduce ? (double)count_all : (double)count;
    }
    if (par->reduce) { /* the gradient sums over all workers: clipping sees the global norm */
        float flag[1];
        if ((st = perpo__collective(par, flag, 1, S->pending)) != PERPO_OK) return st;
        /* (a non-finite sum: perpo_optim_step refuses it, PERPO_ERR_NONFINITE on every worker) */
        if ((st = par->reduce(m->grads, m->n_params, par->user)) != PERPO_OK) return st;
    }
    return PERPO_OK;
}

/* Both SFT entries. name: the public call, first in its messages; local: an error found by the
   caller (data-parallel workers still join the handshake with it); n_examples: the size of a
   fixed set (0 for a stream), which the workers must agree on. Without a reduction hook: one
   process, batch_size sequences per micro-batch. */
static perpo_status perpo__sft_train(perpo_model *m, const char *name, perpo_example_fn next,
                                     void *next_user, const perpo_sft_config *tc,
                                     perpo_progress_fn progress, void *user, perpo_status local,
                                     uint64_t n_examples) {
    const perpo_parallel *par = &tc->parallel;
    perpo__sft_state S;
    perpo__trainer tr;
    double t0 = perpo__now();
    perpo_status st = PERPO_OK;
    void *ctx = m->cfg.alloc_ctx;
    memset(&S, 0, sizeof S);
    S.w = name;
    S.tc = tc;
    S.next = next;
    S.next_user = next_user;
    S.R = 1;
    S.pending = PERPO_OK;
    if (par->reduce) {
        S.R = (size_t)par->world;
        S.rank = (size_t)par->rank;
    }
    if (local == PERPO_OK && !perpo__check_sft_config(m, tc))
        local = PERPO_ERR_ARG;
    else if (local == PERPO_OK && !perpo__positions_fit(tc->optim.total_steps, tc->accum_steps,
                                                        S.R * (size_t)tc->batch_size))
        local = perpo__errst(m->error, sizeof m->error, PERPO_ERR_ARG,
                             "%s: total_steps %d x accum_steps %d x batch_size %zu positions "
                             "overflow: lower them",
                             name, tc->optim.total_steps, tc->accum_steps,
                             S.R * (size_t)tc->batch_size);
    if (local != PERPO_OK && !par->reduce) return local;
    S.T = m->T;
    if (local == PERPO_OK) { /* everything a step needs is allocated here, once */
        S.B = (size_t)tc->batch_size;
        S.tok = (int *)perpo__calloc(ctx, 2 * S.B * S.T, sizeof(int));
        S.imgs = (const float **)perpo__calloc(ctx, S.B, sizeof(float *));
        S.logp = (float *)perpo__calloc(ctx, 2 * S.B, sizeof(float));
        if (!S.tok || !S.imgs || !S.logp) local = PERPO_ERR_NOMEM;
    }
    if (par->reduce) {
        uint64_t w[PERPO__HS_WORDS];
        memset(w, 0, sizeof w);
        if (local == PERPO_OK) {
            w[0] = S.R;
            w[1] = S.B;
            w[2] = (uint64_t)tc->accum_steps;
            w[3] = (uint64_t)tc->log_every;
            w[4] = (uint64_t)tc->resume;
            w[5] = tc->resume ? (uint64_t)m->opt_step : 0u;
            w[6] = tc->seed;
            w[7] = perpo__hash_optim(PERPO__FNV_BASIS, &tc->optim);
            w[8] = perpo__hash_model(m, tc->resume);
            w[9] = n_examples;
        }
        if ((st = perpo__handshake(par, ctx, local, w, 0, NULL, NULL)) != PERPO_OK) goto done;
    } else if (local != PERPO_OK) {
        st = local;
        goto done;
    }
    S.tgt = S.tok + S.B * S.T;
    S.dlogp = S.logp + S.B;
    tr.name = name;
    tr.phase = "sft";
    tr.optim = &tc->optim;
    tr.par = par;
    tr.log_every = tc->log_every;
    tr.resume = tc->resume;
    tr.grad_scale = 1.0f / (float)tc->accum_steps;
    tr.t0 = t0;
    tr.step_grads = perpo__sft_step;
    tr.state = &S;
    st = perpo__train_loop(m, &tr, progress, user);
done:
    PERPO_FREE(ctx, S.tok);
    PERPO_FREE(ctx, (void *)S.imgs);
    PERPO_FREE(ctx, S.logp);
    return st;
}

PERPODEF perpo_status perpo_sft_train(perpo_model *m, const perpo_example *ex, size_t n,
                                      const perpo_sft_config *tc, perpo_progress_fn progress,
                                      void *user) {
    perpo__example_set set;
    perpo_status st = PERPO_OK;
    size_t i;
    char *e;
    if (!m) return PERPO_ERR_ARG;
    e = m->error;
    e[0] = 0;
    if (!tc || !perpo__parallel_ok(&tc->parallel))
        return perpo__errst(e, sizeof m->error, PERPO_ERR_ARG,
                            "perpo_sft_train: tc is NULL or tc->parallel is inconsistent");
    if (!ex || n == 0)
        st = perpo__errst(e, sizeof m->error, PERPO_ERR_ARG, "perpo_sft_train: no examples");
    else if (!perpo__check_sft_config(m, tc))
        st = PERPO_ERR_ARG;
    for (i = 0; st == PERPO_OK && i < n; i++) { /* reject bad examples before touching the model */
        if (!ex[i].image || !ex[i].prompt || !ex[i].response)
            st = perpo__errst(e, sizeof m->error, PERPO_ERR_ARG,
                              "perpo_sft_train: example %zu: image, prompt or response is NULL", i);
        else if (!perpo__text_fits(m->T, strlen(ex[i].prompt), strlen(ex[i].response)))
            st = perpo__errst(e, sizeof m->error, PERPO_ERR_ARG,
                              "perpo_sft_train: example %zu: prompt %zu + response %zu bytes "
                              "exceed max_text %zu - 3: shorten them or raise max_text",
                              i, strlen(ex[i].prompt), strlen(ex[i].response), m->T);
        else
            st = perpo__check_image(ex[i].image, m->image_floats, e, sizeof m->error,
                                    "perpo_sft_train: example %zu: image", i);
    }
    if (st != PERPO_OK && !tc->parallel.reduce) return st;
    set.ex = ex;
    set.n = n;
    set.epoch = (size_t)-1;
    set.seed = tc->seed;
    set.perm = NULL;
    if (st == PERPO_OK) {
        set.perm = (size_t *)perpo__calloc(m->cfg.alloc_ctx, n, sizeof(size_t));
        if (!set.perm) st = PERPO_ERR_NOMEM;
        if (st != PERPO_OK && !tc->parallel.reduce) return st;
    }
    /* data-parallel workers with an error still join the handshake, to stop with the others */
    st = perpo__sft_train(m, "perpo_sft_train", perpo__example_set_next, &set, tc, progress, user,
                          st, (uint64_t)n);
    PERPO_FREE(m->cfg.alloc_ctx, set.perm);
    return st;
}

PERPODEF perpo_status perpo_sft_train_stream(perpo_model *m, perpo_example_fn next, void *next_user,
                                             const perpo_sft_config *tc, perpo_progress_fn progress,
                                             void *user) {
    if (!m) return PERPO_ERR_ARG;
    m->error[0] = 0;
    if (!tc || !perpo__parallel_ok(&tc->parallel) || !next)
        perpo__errf(m->error, sizeof m->error,
                    "perpo_sft_train_stream: tc or next is NULL, or tc->parallel is inconsistent");
    if (!tc || !perpo__parallel_ok(&tc->parallel)) return PERPO_ERR_ARG;
    return perpo__sft_train(m, "perpo_sft_train_stream", next, next_user, tc, progress, user,
                            next ? PERPO_OK : PERPO_ERR_ARG, 0);
}

/* ==========================================================================================
   9. The model's memory and lifetime: configuration defaults and checks, the parameter table,
      the activation arena, create and free, flat views, copies
   ========================================================================================== */

PERPODEF perpo_config perpo_config_default(void) {
    perpo_config c;
    memset(&c, 0, sizeof c);
    c.image_h = 64;
    c.image_w = 64;
    c.channels = 3;
    c.patch_h = 8;
    c.patch_w = 8;
    c.d_model = 128;
    c.n_heads = 4;
    c.n_vis_layers = 2;
    c.n_dec_layers = 4;
    c.mlp_mult = 4;
    c.max_text = 48;
    c.vocab = PERPO_VOCAB;
    c.max_batch = 32;
    return c;
}

/* perpo_config_validate_err with w first in the message ("perpo_config", or the call that
   checks it: perpo_model_create). */
static perpo_status perpo__config_check(const perpo_config *c, char *err, size_t cap,
                                        const char *w) {
    if (!c) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: cfg is NULL", w);
    if (c->image_h < 1 || c->image_h > PERPO_MAX_IMAGE_SIDE || c->image_w < 1 ||
        c->image_w > PERPO_MAX_IMAGE_SIDE)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: image_h %d x image_w %d: each must be in [1, %d]", w, c->image_h,
                            c->image_w, PERPO_MAX_IMAGE_SIDE);
    if (c->channels < 1 || c->channels > PERPO_MAX_CHANNELS)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: channels %d must be in [1, %d]", w,
                            c->channels, PERPO_MAX_CHANNELS);
    if (c->patch_h < 1 || c->patch_h > PERPO_MAX_PATCH_SIDE || c->patch_w < 1 ||
        c->patch_w > PERPO_MAX_PATCH_SIDE)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: patch_h %d x patch_w %d: each must be in [1, %d]", w, c->patch_h,
                            c->patch_w, PERPO_MAX_PATCH_SIDE);
    if (c->image_h % c->patch_h)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: patch_h %d does not divide image_h %d: pick a patch side that "
                            "divides the image side",
                            w, c->patch_h, c->image_h);
    if (c->image_w % c->patch_w)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: patch_w %d does not divide image_w %d: pick a patch side that "
                            "divides the image side",
                            w, c->patch_w, c->image_w);
    if ((c->image_h / c->patch_h) * (c->image_w / c->patch_w) > PERPO_MAX_PATCHES)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: %d x %d patches exceed PERPO_MAX_PATCHES %d: use larger patches",
                            w, c->image_h / c->patch_h, c->image_w / c->patch_w, PERPO_MAX_PATCHES);
    if (c->pos_channels != 0 && c->pos_channels != 1)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: pos_channels %d must be 0 or 1", w,
                            c->pos_channels);
    if (c->vis_sincos != 0 && c->vis_sincos != 1)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: vis_sincos %d must be 0 or 1", w,
                            c->vis_sincos);
    if (c->d_model < 1 || c->d_model > PERPO_MAX_D_MODEL)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: d_model %d must be in [1, %d]", w,
                            c->d_model, PERPO_MAX_D_MODEL);
    if (c->vis_sincos && c->d_model % 4)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: d_model %d must be a multiple of 4 with vis_sincos 1", w,
                            c->d_model);
    if (c->n_heads < 1 || c->d_model % c->n_heads)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: n_heads %d must be >= 1 and divide d_model %d", w, c->n_heads,
                            c->d_model);
    if (c->n_vis_layers < 0 || c->n_vis_layers > PERPO_MAX_LAYERS)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: n_vis_layers %d must be in [0, %d]", w,
                            c->n_vis_layers, PERPO_MAX_LAYERS);
    if (c->n_dec_layers < 1 || c->n_dec_layers > PERPO_MAX_LAYERS)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: n_dec_layers %d must be in [1, %d]", w,
                            c->n_dec_layers, PERPO_MAX_LAYERS);
    if (c->mlp_mult < 1 || c->mlp_mult > PERPO_MAX_MLP_MULT)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: mlp_mult %d must be in [1, %d]", w,
                            c->mlp_mult, PERPO_MAX_MLP_MULT);
    if (c->max_text < PERPO_MIN_TEXT || c->max_text > PERPO_MAX_TEXT)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: max_text %d must be in [%d, %d]", w,
                            c->max_text, PERPO_MIN_TEXT, PERPO_MAX_TEXT);
    if (c->vocab != PERPO_VOCAB)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: vocab %d must be PERPO_VOCAB (%d)", w,
                            c->vocab, PERPO_VOCAB);
    if (c->max_batch < 1 || c->max_batch > PERPO_MAX_BATCH)
        return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: max_batch %d must be in [1, %d]", w,
                            c->max_batch, PERPO_MAX_BATCH);
    return PERPO_OK;
}

PERPODEF perpo_status perpo_config_validate_err(const perpo_config *c, char *err, size_t cap) {
    perpo__errf(err, cap, "%s", "");
    return perpo__config_check(c, err, cap, "perpo_config");
}

PERPODEF perpo_status perpo_config_validate(const perpo_config *c) {
    return perpo_config_validate_err(c, NULL, 0);
}

/* Appends a tensor to the table and returns its offset. With m->tensors NULL it only counts
   (n_tensors, n_params): how sizes are known before anything is allocated. */
static size_t perpo__add_tensor(perpo_model *m, const char *name, size_t rows, size_t cols) {
    size_t offset = m->n_params;
    if (m->tensors) {
        perpo__tensor *t = &m->tensors[m->n_tensors];
        t->name = name;
        t->rows = rows;
        t->cols = cols;
        t->offset = offset;
    }
    m->n_tensors++;
    m->n_params += rows * (cols ? cols : 1); /* bounded by perpo_config_validate's caps */
    return offset;
}
static void perpo__add_block(perpo_model *m, perpo__block *b, int vision) {
    size_t D = m->D, M = m->M;
    b->ln1_w = perpo__add_tensor(m, vision ? "vis.ln1_w" : "dec.ln1_w", D, 0);
    b->ln1_b = perpo__add_tensor(m, vision ? "vis.ln1_b" : "dec.ln1_b", D, 0);
    b->qkv_w = perpo__add_tensor(m, vision ? "vis.qkv_w" : "dec.qkv_w", 3 * D, D);
    b->qkv_b = perpo__add_tensor(m, vision ? "vis.qkv_b" : "dec.qkv_b", 3 * D, 0);
    b->attn_w = perpo__add_tensor(m, vision ? "vis.attn_w" : "dec.attn_w", D, D);
    b->attn_b = perpo__add_tensor(m, vision ? "vis.attn_b" : "dec.attn_b", D, 0);
    b->ln2_w = perpo__add_tensor(m, vision ? "vis.ln2_w" : "dec.ln2_w", D, 0);
    b->ln2_b = perpo__add_tensor(m, vision ? "vis.ln2_b" : "dec.ln2_b", D, 0);
    b->fc_w = perpo__add_tensor(m, vision ? "vis.fc_w" : "dec.fc_w", M, D);
    b->fc_b = perpo__add_tensor(m, vision ? "vis.fc_b" : "dec.fc_b", M, 0);
    b->fc2_w = perpo__add_tensor(m, vision ? "vis.fc2_w" : "dec.fc2_w", D, M);
    b->fc2_b = perpo__add_tensor(m, vision ? "vis.fc2_b" : "dec.fc2_b", D, 0);
}
/* The parameter table, in the order of the flat buffer (tests/ref/make_reference.py mirrors it):
   the one description of the parameters. A dry run (m->tensors NULL, block offsets into a
   scratch block) counts tensors and parameters. */
static void perpo__build_tensor_table(perpo_model *m) {
    perpo__block scratch;
    size_t l;
    m->n_tensors = 0;
    m->n_params = 0;
    m->patch_w = perpo__add_tensor(m, "patch_w", m->D, m->PPC);
    m->patch_b = perpo__add_tensor(m, "patch_b", m->D, 0);
    m->vis_pos = perpo__add_tensor(m, "vis_pos", m->NP, m->D);
    for (l = 0; l < (size_t)m->cfg.n_vis_layers; l++)
        perpo__add_block(m, m->tensors ? &m->vis[l] : &scratch, 1);
    m->vis_lnf_w = perpo__add_tensor(m, "vis_lnf_w", m->D, 0);
    m->vis_lnf_b = perpo__add_tensor(m, "vis_lnf_b", m->D, 0);
    m->proj1_w = perpo__add_tensor(m, "proj1_w", m->D, m->D);
    m->proj1_b = perpo__add_tensor(m, "proj1_b", m->D, 0);
    m->proj2_w = perpo__add_tensor(m, "proj2_w", m->D, m->D);
    m->proj2_b = perpo__add_tensor(m, "proj2_b", m->D, 0);
    m->wte = perpo__add_tensor(m, "wte", m->V, m->D);
    m->dec_pos = perpo__add_tensor(m, "dec_pos", m->L, m->D);
    for (l = 0; l < (size_t)m->cfg.n_dec_layers; l++)
        perpo__add_block(m, m->tensors ? &m->dec[l] : &scratch, 0);
    m->lnf_w = perpo__add_tensor(m, "lnf_w", m->D, 0);
    m->lnf_b = perpo__add_tensor(m, "lnf_b", m->D, 0);
    m->head_w = perpo__add_tensor(m, "head_w", m->V, m->D);
}

/* The fast path's buffer sizes (section 10): a product's packing workspace, attention
   backward's per head, and the weights packed for the forward, decoding and backward. */
static size_t perpo__gemm_ws_floats(size_t n_max);
static size_t perpo__attention_ws_per_head(size_t T);
static size_t perpo__wpack_count(const perpo_model *m);
static size_t perpo__pack_offset(const perpo_model *m, size_t j, int for_backward);
static size_t perpo__wpack_floats(const perpo_model *m);

/* Arena carving: run once with base == NULL to size, once more to hand out pointers. */
typedef struct perpo__carver {
    float *base;
    size_t used;
    int ok;
} perpo__carver;
static float *perpo__carve(perpo__carver *c, size_t a, size_t b) {
    size_t n, start = c->used;
    if (!c->ok || !perpo__size_mul(a, b, &n) || !perpo__size_add(start, n, &c->used) ||
        !perpo__size_add(c->used, 15, &c->used)) {
        c->ok = 0;
        return NULL;
    }
    c->used &= ~(size_t)15; /* keep every buffer 64-byte aligned relative to the base */
    return c->base ? c->base + start : NULL;
}
static void perpo__carve_block(perpo__carver *c, perpo__block_acts *a, size_t N, size_t B, size_t T,
                               size_t D, size_t H, size_t M) {
    a->ln1 = perpo__carve(c, N, D);
    a->ln1_mean = perpo__carve(c, N, 1);
    a->ln1_rstd = perpo__carve(c, N, 1);
    a->qkv = perpo__carve(c, N, 3 * D);
    a->att = perpo__carve(c, B * H, T * T); /* caps of perpo_config_validate bound B*H and T*T */
    a->atty = perpo__carve(c, N, D);
    a->mid = perpo__carve(c, N, D);
    a->ln2 = perpo__carve(c, N, D);
    a->ln2_mean = perpo__carve(c, N, 1);
    a->ln2_rstd = perpo__carve(c, N, 1);
    a->fch = perpo__carve(c, N, M);
    a->fcg = perpo__carve(c, N, M);
}
static void perpo__layout_arena(perpo_model *m, perpo__carver *c) {
    size_t B = m->max_batch, D = m->D, Nv = B * m->NP, Nd = B * m->L, Nt = B * m->T, l;
    size_t LV = (size_t)m->cfg.n_vis_layers, LD = (size_t)m->cfg.n_dec_layers, R = m->g_rows;
    size_t n_max = m->V;
    if (3 * D > n_max) n_max = 3 * D;
    if (m->M > n_max) n_max = m->M;
    if (m->PPC > n_max) n_max = m->PPC;
    m->patches = perpo__carve(c, Nv, m->PPC);
    m->vis_sincos = perpo__carve(c, m->cfg.vis_sincos ? m->NP : 1, D);
    for (l = 0; l <= LV; l++) m->vis_x[l] = perpo__carve(c, Nv, D);
    for (l = 0; l < LV; l++) perpo__carve_block(c, &m->vis_acts[l], Nv, B, m->NP, D, m->H, m->M);
    m->vis_lnf = perpo__carve(c, Nv, D);
    m->vis_lnf_mean = perpo__carve(c, Nv, 1);
    m->vis_lnf_rstd = perpo__carve(c, Nv, 1);
    m->proj_h = perpo__carve(c, Nv, D);
    m->proj_g = perpo__carve(c, Nv, D);
    m->img_tok = perpo__carve(c, Nv, D);
    for (l = 0; l <= LD; l++) m->dec_x[l] = perpo__carve(c, Nd, D);
    for (l = 0; l < LD; l++) perpo__carve_block(c, &m->dec_acts[l], Nd, B, m->L, D, m->H, m->M);
    m->txt = perpo__carve(c, Nt, D);
    m->lnf = perpo__carve(c, Nt, D);
    m->lnf_mean = perpo__carve(c, Nt, 1);
    m->lnf_rstd = perpo__carve(c, Nt, 1);
    m->logits = perpo__carve(c, Nt, m->V);
    m->lse = perpo__carve(c, Nt, 1);
    m->dlogits = perpo__carve(c, Nt, m->V);
    /* backward scratch is sized for the decoder, the larger of the two stacks */
    m->d_res = perpo__carve(c, Nd, D);
    m->d_tmp = perpo__carve(c, Nd, D);
    m->d_atty = perpo__carve(c, Nd, D);
    m->d_qkv = perpo__carve(c, Nd, 3 * D);
    m->d_fc = perpo__carve(c, Nd, m->M);
    m->att_ws = perpo__carve(c, B * m->H, perpo__attention_ws_per_head(m->L));
    m->d_img = perpo__carve(c, Nv, D);
    m->ws_area = (perpo__gemm_ws_floats(n_max) + 15) & ~(size_t)15;
    m->gemm_ws = perpo__carve(c, m->ws_area, 3);
    m->d_mid = perpo__carve(c, Nd, D);
    m->d_tmp2 = perpo__carve(c, Nd, D);
    m->bpack = perpo__carve(c, perpo__pack_offset(m, perpo__wpack_count(m), 1), 1);
    m->kcache = perpo__carve(c, LD * B, m->L * D);
    m->vcache = perpo__carve(c, LD * B, m->L * D);
    m->wpack = perpo__carve(c, perpo__wpack_floats(m), 1);
    m->g_x = perpo__carve(c, R, D);
    m->g_ln = perpo__carve(c, R, D);
    m->g_mean = perpo__carve(c, R, 1);
    m->g_rstd = perpo__carve(c, R, 1);
    m->g_qkv = perpo__carve(c, R, 3 * D);
    m->g_atty = perpo__carve(c, R, D);
    m->g_tmp = perpo__carve(c, R, D);
    m->g_fch = perpo__carve(c, R, m->M);
    m->g_scores = perpo__carve(c, R * m->H, m->L);
    m->g_logits = perpo__carve(c, B, m->V);
}

static void perpo__free_parts(perpo_model *m) {
    void *ctx = m->cfg.alloc_ctx;
    PERPO_FREE(ctx, m->tensors);
    PERPO_FREE(ctx, m->vis);
    PERPO_FREE(ctx, m->dec);
    PERPO_FREE(ctx, m->params);
    PERPO_FREE(ctx, m->grads);
    PERPO_FREE(ctx, m->adam_m);
    PERPO_FREE(ctx, m->adam_v);
    PERPO_FREE(ctx, m->arena);
    PERPO_FREE(ctx, m->vis_x);
    PERPO_FREE(ctx, m->dec_x);
    PERPO_FREE(ctx, m->vis_acts);
    PERPO_FREE(ctx, m->dec_acts);
    PERPO_FREE(ctx, m->tokens);
    PERPO_FREE(ctx, m->targets);
    PERPO_FREE(ctx, m->image_of);
    PERPO_FREE(ctx, m->sort_buf);
}

PERPODEF const char *perpo_model_last_error(const perpo_model *m) { return m ? m->error : ""; }

PERPODEF void perpo_model_free(perpo_model *m) {
    if (!m) return;
    perpo__free_parts(m);
    PERPO_FREE(m->cfg.alloc_ctx, m);
}

/* GPT-2 style initialisation: matrices N(0, 0.02), the two projections that write into the
   residual stream scaled by 1/sqrt(2 * layers), LayerNorm gains 1, biases 0. */
static void perpo__init_params(perpo_model *m, uint64_t seed) {
    perpo__rng rng;
    size_t i, j;
    perpo__rng_seed(&rng, seed);
    for (i = 0; i < m->n_tensors; i++) {
        const perpo__tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        size_t n = t->rows * (t->cols ? t->cols : 1);
        int is_gain = strstr(t->name, "ln") != NULL && t->name[strlen(t->name) - 1] == 'w';
        double std = 0.02;
        if (t->cols == 0) {
            for (j = 0; j < n; j++) p[j] = is_gain ? 1.0f : 0.0f;
            continue;
        }
        if (strstr(t->name, "attn_w") || strstr(t->name, "fc2_w")) {
            int layers = t->name[0] == 'v' ? m->cfg.n_vis_layers : m->cfg.n_dec_layers;
            std /= sqrt(2.0 * (layers > 0 ? layers : 1));
        }
        for (j = 0; j < n; j++) p[j] = (float)(std * perpo__rng_normal(&rng));
    }
}

/* The sizes that follow from a (validated) config. */
static void perpo__derive_sizes(perpo_model *m, const perpo_config *cfg) {
    m->cfg = *cfg;
    m->NP = (size_t)(cfg->image_h / cfg->patch_h) * (size_t)(cfg->image_w / cfg->patch_w);
    m->T = (size_t)cfg->max_text;
    m->L = m->NP + m->T;
    m->D = (size_t)cfg->d_model;
    m->H = (size_t)cfg->n_heads;
    m->M = (size_t)cfg->mlp_mult * m->D;
    m->V = (size_t)cfg->vocab;
    m->PPC = (size_t)cfg->patch_h * (size_t)cfg->patch_w *
             (size_t)(cfg->channels + 2 * cfg->pos_channels);
    m->image_floats = (size_t)cfg->image_h * (size_t)cfg->image_w * (size_t)cfg->channels;
    m->max_batch = (size_t)cfg->max_batch;
    m->g_rows = m->max_batch > m->L ? m->max_batch : m->L;
}

/* Tensors and parameters of a validated config, by a dry run of perpo__build_tensor_table. */
static void perpo__count_tensors(const perpo_config *cfg, size_t *n_tensors, size_t *n_params) {
    perpo_model m;
    memset(&m, 0, sizeof m);
    perpo__derive_sizes(&m, cfg);
    perpo__build_tensor_table(&m);
    *n_tensors = m.n_tensors;
    *n_params = m.n_params;
}

/* Floats of the activation arena of a validated config, by a dry run of the carving, without
   allocating; 0 when a size overflows. */
static size_t perpo__arena_floats(const perpo_config *cfg) {
    perpo_model m;
    float *vis_x[PERPO_MAX_LAYERS + 1], *dec_x[PERPO_MAX_LAYERS + 1];
    perpo__block_acts vis_acts[PERPO_MAX_LAYERS + 1], dec_acts[PERPO_MAX_LAYERS];
    perpo__carver c;
    memset(&m, 0, sizeof m);
    perpo__derive_sizes(&m, cfg);
    m.vis_x = vis_x;
    m.dec_x = dec_x;
    m.vis_acts = vis_acts;
    m.dec_acts = dec_acts;
    c.base = NULL;
    c.used = 0;
    c.ok = 1;
    perpo__layout_arena(&m, &c);
    return c.ok ? c.used : 0;
}

/* perpo_model_create's allocations: each says what it holds and which config fields size it
   (lower; NULL for the model's own few bytes), and the first that fails writes that into err
   with its bytes; the ones after it are skipped. */
typedef struct perpo__create_alloc {
    const perpo_config *cfg;
    char *err;
    size_t cap;
    int failed;
} perpo__create_alloc;
static void *perpo__create_calloc(perpo__create_alloc *a, size_t n, size_t size, const char *what,
                                  const char *lower) {
    const perpo_config *c = a->cfg;
    size_t bytes = 0;
    void *p = a->failed ? NULL : perpo__calloc(c->alloc_ctx, n, size);
    if (p || a->failed) return p;
    a->failed = 1;
    if (!perpo__size_mul(n, size, &bytes)) bytes = (size_t)-1;
    if (!lower)
        perpo__errf(a->err, a->cap,
                    "perpo_model_create: out of memory allocating %s (%zu bytes): free memory "
                    "first",
                    what, bytes);
    else
        perpo__errf(
            a->err, a->cap,
            "perpo_model_create: out of memory allocating %s (%zu bytes): lower %s (max_batch "
            "%d, max_text %d, d_model %d, %d vision + %d decoder layers)",
            what, bytes, lower, c->max_batch, c->max_text, c->d_model, c->n_vis_layers,
            c->n_dec_layers);
    return NULL;
}

PERPODEF perpo_status perpo_model_create_err(perpo_model **out, const perpo_config *cfg,
                                             uint64_t seed, char *err, size_t err_cap) {
    const char *w = "perpo_model_create";
    /* what sizes each buffer, for the message when it cannot be allocated */
    const char *by_batch = "max_batch or max_text", *by_width = "d_model, mlp_mult or the layers",
               *by_all = "max_batch, max_text, d_model or the layers";
    perpo__create_alloc a;
    perpo_model *m;
    perpo__carver c;
    size_t LV, LD, n_tensors, n_params;
    perpo_status st;
    perpo__errf(err, err_cap, "%s", "");
    if (!out) return perpo__errst(err, err_cap, PERPO_ERR_ARG, "%s: out is NULL", w);
    *out = NULL;
    if ((st = perpo__config_check(cfg, err, err_cap, w)) != PERPO_OK) return st;
    a.cfg = cfg;
    a.err = err;
    a.cap = err_cap;
    a.failed = 0;
    m = (perpo_model *)perpo__create_calloc(&a, 1, sizeof *m, "the model", NULL);
    if (!m) return PERPO_ERR_NOMEM;
    perpo__derive_sizes(m, cfg);
    LV = (size_t)cfg->n_vis_layers;
    LD = (size_t)cfg->n_dec_layers;
    perpo__count_tensors(cfg, &n_tensors, &n_params);
    m->tensors = (perpo__tensor *)perpo__create_calloc(&a, n_tensors, sizeof *m->tensors,
                                                       "the tensor table", by_width);
    m->vis = (perpo__block *)perpo__create_calloc(&a, LV + 1, sizeof *m->vis, "the vision blocks",
                                                  by_width);
    m->dec = (perpo__block *)perpo__create_calloc(&a, LD, sizeof *m->dec, "the decoder blocks",
                                                  by_width);
    m->vis_x = (float **)perpo__create_calloc(&a, LV + 1, sizeof *m->vis_x,
                                              "the vision activations' table", by_width);
    m->dec_x = (float **)perpo__create_calloc(&a, LD + 1, sizeof *m->dec_x,
                                              "the decoder activations' table", by_width);
    m->vis_acts = (perpo__block_acts *)perpo__create_calloc(
        &a, LV + 1, sizeof *m->vis_acts, "the vision blocks' activations", by_width);
    m->dec_acts = (perpo__block_acts *)perpo__create_calloc(
        &a, LD, sizeof *m->dec_acts, "the decoder blocks' activations", by_width);
    m->sort_buf = (perpo__token_score *)perpo__create_calloc(
        &a, m->max_batch * m->V, sizeof *m->sort_buf, "the sampling buffer", "max_batch");
    m->tokens = (int *)perpo__create_calloc(&a, m->max_batch * m->T, sizeof(int),
                                            "the batch's tokens", by_batch);
    m->targets = (int *)perpo__create_calloc(&a, m->max_batch * m->T, sizeof(int),
                                             "the batch's targets", by_batch);
    m->image_of = (size_t *)perpo__create_calloc(&a, m->max_batch, sizeof(size_t),
                                                 "the batch's image indices", "max_batch");
    if (a.failed) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    perpo__build_tensor_table(m);
    PERPO_ASSERT(m->n_tensors == n_tensors && m->n_params == n_params);
    m->params =
        (float *)perpo__create_calloc(&a, m->n_params, sizeof(float), "the parameters", by_width);
    m->grads =
        (float *)perpo__create_calloc(&a, m->n_params, sizeof(float), "the gradients", by_width);
    m->adam_m = (float *)perpo__create_calloc(&a, m->n_params, sizeof(float),
                                              "AdamW's first moments", by_width);
    m->adam_v = (float *)perpo__create_calloc(&a, m->n_params, sizeof(float),
                                              "AdamW's second moments", by_width);
    if (a.failed) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    c.base = NULL;
    c.used = 0;
    c.ok = 1;
    perpo__layout_arena(m, &c);
    if (!c.ok) {
        perpo_model_free(m);
        return perpo__errst(err, err_cap, PERPO_ERR_OVERFLOW,
                            "%s: the activation arena's size overflows size_t: lower %s", w,
                            by_all);
    }
    m->arena_floats = c.used;
    m->arena = (float *)perpo__create_calloc(&a, c.used + 16, sizeof(float), "the activation arena",
                                             by_all);
    if (!m->arena) {
        perpo_model_free(m);
        return PERPO_ERR_NOMEM;
    }
    c.base = m->arena;
    c.used = 0;
    c.ok = 1;
    perpo__layout_arena(m, &c);
    if (cfg->vis_sincos)
        perpo__sincos_2d(m->vis_sincos, (size_t)(cfg->image_w / cfg->patch_w),
                         (size_t)(cfg->image_h / cfg->patch_h), m->D);
    perpo__init_params(m, seed);
    m->params_known_finite = 1; /* the initialisation is finite */
    *out = m;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_model_create(perpo_model **out, const perpo_config *cfg,
                                         uint64_t seed) {
    return perpo_model_create_err(out, cfg, seed, NULL, 0);
}

PERPODEF const perpo_config *perpo_model_config(const perpo_model *m) { return m ? &m->cfg : NULL; }
PERPODEF size_t perpo_model_num_params(const perpo_model *m) { return m ? m->n_params : 0; }
PERPODEF float *perpo_model_params(perpo_model *m) {
    if (!m) return NULL;
    m->params_version++;        /* the caller may write: weights packed for decoding are stale */
    m->params_known_finite = 0; /* the caller may write anything through it */
    return m->params;
}
PERPODEF float *perpo_model_grads(perpo_model *m) { return m ? m->grads : NULL; }
PERPODEF size_t perpo_model_num_tensors(const perpo_model *m) { return m ? m->n_tensors : 0; }
PERPODEF perpo_status perpo_model_tensor(const perpo_model *m, size_t i, const char **name,
                                         size_t *offset, size_t *rows, size_t *cols) {
    if (!m || i >= m->n_tensors) return PERPO_ERR_ARG;
    if (name) *name = m->tensors[i].name;
    if (offset) *offset = m->tensors[i].offset;
    if (rows) *rows = m->tensors[i].rows;
    if (cols) *cols = m->tensors[i].cols;
    return PERPO_OK;
}

/* Same architecture: every config field but max_batch (it sizes only the arena, and is the last
   config word) and alloc_ctx. NULL when a and b agree, else the name of the first field that
   differs, its values in *va and *vb. */
static const char *perpo__architecture_diff(const perpo_config *a, const perpo_config *b, int *va,
                                            int *vb) {
    int wa[PERPO__CONFIG_WORDS], wb[PERPO__CONFIG_WORDS], k;
    perpo__config_to_words(a, wa);
    perpo__config_to_words(b, wb);
    for (k = 0; k < PERPO__CONFIG_WORDS - 1; k++)
        if (wa[k] != wb[k]) {
            *va = wa[k];
            *vb = wb[k];
            return perpo__config_word_names[k];
        }
    return NULL;
}
PERPODEF perpo_status perpo_model_copy_params(perpo_model *dst, const perpo_model *src) {
    const char *field;
    int vd = 0, vs = 0;
    if (!dst) return PERPO_ERR_ARG;
    dst->error[0] = 0;
    if (!src)
        return perpo__errst(dst->error, sizeof dst->error, PERPO_ERR_ARG,
                            "perpo_model_copy_params: src is NULL");
    if ((field = perpo__architecture_diff(&dst->cfg, &src->cfg, &vd, &vs)) != NULL)
        return perpo__errst(dst->error, sizeof dst->error, PERPO_ERR_ARG,
                            "perpo_model_copy_params: %s differs (dst %d, src %d): the models "
                            "must agree on every config field but max_batch and alloc_ctx",
                            field, vd, vs);
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
    dst->params_version++;
    dst->params_known_finite = src->params_known_finite;
    perpo_optim_reset(dst);
    dst->have_forward = 0;
    return PERPO_OK;
}

/* ==========================================================================================
   10. Fast paths: what runs unless PERPO_REFERENCE is defined (section 3, "The switch"). The
       functions of sections 2, 3 and 6 computed faster: the matrix product on packed panels
       and a register tile (AVX2 / AVX-512 intrinsics; bfloat16 inputs with PERPO_USE_BF16;
       cblas_sgemm with PERPO_USE_CBLAS), the vector exp, GELU and softmax, LayerNorm and
       attention kernels, OpenMP teams that split them; the model's blocks, forward and
       backward on those kernels with its weights packed once per forward; generation with a
       KV cache. The tests hold each against its reference (tests/t_reference.c): they agree to
       the last bits, and bit for bit where they sum the same terms.
   ========================================================================================== */

/* ---- Matrix product --------------------------------------------------------------------- *
 * C (M,N) = [C +] op(A) (M,K) . op(B) (K,N). ta: A is stored (K,M); tb: B is stored (N,K).
 * The built-in path copies ("packs") a K-block of B into NR-wide panels, so that an MR x NR
 * register tile reads them contiguously (a weight gradient's B, whose panels are contiguous
 * rows already, is read in place: perpo__gemm_cols); A's rows are read in place (a partial last
 * panel is copied and padded with zero rows). Each C(i,j) is a single
 * multiply-add chain over k = 0..K-1 in order, started from C (accumulate) or 0; the tile
 * stores C between K-blocks and reloads it, which rounds nothing. So an element's value depends
 * only on K: not on M or N, where its row and column fall in a tile, or the thread count (the
 * KV-cache decoder relies on this, bit for bit). Edge tiles run the same code on a padded copy. */
#if defined(__AVX512F__)
/* 8 rows x two 16-float vectors: 16 accumulators of the 32 registers, enough to keep both FMA
   units busy; taller tiles measured no faster and waste more work when M is small. */
#define PERPO__MR      8
#define PERPO__NR      32
#define PERPO__VLEN    16
#define PERPO__VEC     __m512
#define PERPO__VLOAD   _mm512_loadu_ps
#define PERPO__VSTORE  _mm512_storeu_ps
#define PERPO__VZERO   _mm512_setzero_ps
#define PERPO__VSET1   _mm512_set1_ps
#define PERPO__VFMA    _mm512_fmadd_ps
#define PERPO__ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#elif defined(__AVX2__) && defined(__FMA__)
#define PERPO__MR      6 /* 6 rows x two 8-float vectors: 12 accumulators of the 16 registers */
#define PERPO__NR      16
#define PERPO__VLEN    8
#define PERPO__VEC     __m256
#define PERPO__VLOAD   _mm256_loadu_ps
#define PERPO__VSTORE  _mm256_storeu_ps
#define PERPO__VZERO   _mm256_setzero_ps
#define PERPO__VSET1   _mm256_set1_ps
#define PERPO__VFMA    _mm256_fmadd_ps
#define PERPO__ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#else /* portable C: a 6 x 16 array tile that compilers vectorize */
#define PERPO__MR 6
#define PERPO__NR 16
#endif
#define PERPO__KC 256 /* K-block: an A panel (KC x MR) and a B panel (KC x NR) fit in L1 */

/* Floats of packing workspace (one K-block of B) a product needs when N <= n_max. */
static size_t perpo__gemm_ws_floats(size_t n_max) {
    return (size_t)PERPO__KC * ((n_max + PERPO__NR - 1) / PERPO__NR) * PERPO__NR;
}

/* (The tile and packing are compiled in CBLAS builds too: attention runs on them.) */
/* c (MR x NR, row stride ldc) = [c +] a . b over kc steps; a(i,k) = a[i*sai + k*sak]: a packed
   A panel (sai 1, sak MR) or, for a full panel, A itself (its rows are read as they lie, so A
   needs no copy); b: packed B panel (NR floats per k). Rows past mr may be skipped (their a is
   zero). */
#ifdef PERPO__VEC
/* Written out row by row: compilers keep the accumulators in registers only when unrolled. */
#define PERPO__TILE_LOAD(i)                                                                        \
    PERPO__VEC c##i##0 = load ? PERPO__VLOAD(c + i * ldc) : PERPO__VZERO();                        \
    PERPO__VEC c##i##1 = load ? PERPO__VLOAD(c + i * ldc + PERPO__VLEN) : PERPO__VZERO();
#define PERPO__TILE_FMA(i)                                                                         \
    {                                                                                              \
        PERPO__VEC ai = PERPO__VSET1(a[i * sai]);                                                  \
        c##i##0 = PERPO__VFMA(ai, b0, c##i##0);                                                    \
        c##i##1 = PERPO__VFMA(ai, b1, c##i##1);                                                    \
    }
#define PERPO__TILE_STORE(i)                                                                       \
    PERPO__VSTORE(c + i * ldc, c##i##0);                                                           \
    PERPO__VSTORE(c + i * ldc + PERPO__VLEN, c##i##1);
static void perpo__gemm_tile(size_t kc, size_t mr, const float *a, size_t sai, size_t sak,
                             const float *b, size_t sbk, float *c, size_t ldc, int load) {
    size_t k;
    (void)mr; /* all MR rows: they are registers */
    PERPO__ROWS(PERPO__TILE_LOAD)
    for (k = 0; k < kc; k++, a += sak, b += sbk) {
        PERPO__VEC b0 = PERPO__VLOAD(b), b1 = PERPO__VLOAD(b + PERPO__VLEN);
        PERPO__ROWS(PERPO__TILE_FMA)
    }
    PERPO__ROWS(PERPO__TILE_STORE)
}
#else
/* Portable: loops over a small array that compilers vectorize along j. */
static void perpo__gemm_tile(size_t kc, size_t mr, const float *a, size_t sai, size_t sak,
                             const float *b, size_t sbk, float *c, size_t ldc, int load) {
    float acc[PERPO__MR][PERPO__NR];
    size_t k, i;
    int j;
    for (i = 0; i < mr; i++)
        for (j = 0; j < PERPO__NR; j++) acc[i][j] = load ? c[i * ldc + (size_t)j] : 0.0f;
    for (k = 0; k < kc; k++, a += sak, b += sbk)
        for (i = 0; i < mr; i++)
            for (j = 0; j < PERPO__NR; j++) acc[i][j] += a[i * sai] * b[j];
    for (i = 0; i < mr; i++)
        for (j = 0; j < PERPO__NR; j++) c[i * ldc + (size_t)j] = acc[i][j];
}
#endif

/* Packs X(r, k) = X[r*sr + k*sk] for r in [r0, r0+w) and k in [k0, k0+kc) as dst[k*w + r - r0],
   with zeros for rows r >= rows. One of sr, sk is 1. */
static void perpo__gemm_pack(float *dst, size_t w, const float *X, size_t sr, size_t sk,
                             size_t rows, size_t r0, size_t k0, size_t kc) {
    size_t k, r = 0, n = rows - r0 < w ? rows - r0 : w;
    const float *x = X + r0 * sr + k0 * sk;
    if (sr == 1) { /* rows adjacent in memory: copy runs */
        for (k = 0; k < kc; k++) {
            float *d = dst + k * w;
            const float *s = x + k * sk;
            r = 0;
#ifdef PERPO__VEC /* (-O2 does not vectorize this loop: dst and X might overlap) */
            for (; r + 4 <= n; r += 4) _mm_storeu_ps(d + r, _mm_loadu_ps(s + r));
#endif
            for (; r < n; r++) d[r] = s[r];
            for (; r < w; r++) d[r] = 0.0f;
        }
        return;
    }
#ifdef PERPO__VEC /* k adjacent: transpose 4 x 4 blocks in SSE registers */
    for (; r + 4 <= n; r += 4)
        for (k = 0; k + 4 <= kc; k += 4) {
            const float *s = x + r * sr + k;
            __m128 x0 = _mm_loadu_ps(s), x1 = _mm_loadu_ps(s + sr);
            __m128 x2 = _mm_loadu_ps(s + 2 * sr), x3 = _mm_loadu_ps(s + 3 * sr);
            _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
            _mm_storeu_ps(dst + k * w + r, x0);
            _mm_storeu_ps(dst + (k + 1) * w + r, x1);
            _mm_storeu_ps(dst + (k + 2) * w + r, x2);
            _mm_storeu_ps(dst + (k + 3) * w + r, x3);
        }
    if (kc % 4) /* k tail of the rows done above */
        for (k = kc - kc % 4; k < kc; k++)
            for (r = 0; r < n - n % 4; r++) dst[k * w + r] = x[r * sr + k];
    r = n - n % 4;
#endif
    for (; r < n; r++)
        for (k = 0; k < kc; k++) dst[k * w + r] = x[r * sr + k];
    for (; r < w; r++)
        for (k = 0; k < kc; k++) dst[k * w + r] = 0.0f;
}

/* One thread's share [lo, hi) of n items inside a parallel region (all of it outside one). The
   split never changes a result: every kernel below gives each output element to one thread,
   which sums it in a fixed order.
   Team functions (the _team suffix) are one thread's share of a kernel: called by every thread
   of a parallel region, they split the work by thread number; the kernels' own team functions
   never wait, and the model's (a block, a forward, a backward, an AdamW step) hold the barriers
   between their kernels. A training step or
   a prefill opens one region and runs its kernels as team functions, with a barrier
   (PERPO__OMP(barrier)) only where a kernel reads what another thread wrote, because entering a
   region costs a wake-up of every thread, which under OMP_WAIT_POLICY=passive (or on a busy
   machine) costs more than a small kernel. Called outside a region, a team function does all the
   work on the calling thread and a barrier does nothing. */
static void perpo__team_range(size_t n, size_t *lo, size_t *hi) {
    size_t nt = 1, t = 0;
#ifdef _OPENMP
    nt = (size_t)omp_get_num_threads();
    t = (size_t)omp_get_thread_num();
#endif
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}

#ifdef __AVX512F__
static __mmask16 perpo__mask16(size_t left) { /* lanes [0, min(left, 16)) */
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
#endif
#ifdef PERPO_USE_BF16
/* ---- bfloat16 products (PERPO_USE_BF16) --------------------------------------------------- *
 * The same blocking and tiles as above, on 32-bit words that each hold a pair of bfloat16
 * values of one row of A or one column of B: element k (even) in the low half, k + 1 in the
 * high half. Both inputs are rounded to bfloat16 as they are packed (round to nearest even;
 * the conversion reads subnormal inputs as zero); an odd K-block's last pair has a zero high
 * half. The tile's vdpbf16ps adds the pair's two products, each exact in float32, to the
 * float32 accumulator as two roundings: k + 1 first, then k (the instruction also reads a
 * subnormal accumulator as zero and flushes subnormal sums to zero: values under 1.2e-38,
 * where it differs from float32 arithmetic). So an element of C is still one
 * chain over k in an order that depends only on K, and what the top of this section promises
 * (no dependence on M, N, the tile position or the thread count) holds for these products too. */
#define PERPO__KP (PERPO__KC / 2) /* pairs in a K-block */

/* Packs X(r, k) = X[r*sr + k*sk], r in [r0, r0+w), k in [k0, k0+kc), as bfloat16 pairs: the
   word of row r and pair p at dst[p*w + r - r0] (ld 0: a pair's rows adjacent, as a tile reads
   B) or at dst[(r - r0)*ld + p] (ld > 0: a row's pairs adjacent; only when sk is 1), zero words
   for rows r >= rows. One of sr, sk is 1. */
static void perpo__gemm_pack_bf16(uint32_t *dst, size_t w, const float *X, size_t sr, size_t sk,
                                  size_t rows, size_t r0, size_t k0, size_t kc, size_t ld) {
    size_t kp = (kc + 1) / 2, n = rows - r0 < w ? rows - r0 : w, r, p, k;
    const float *x = X + r0 * sr + k0 * sk;
    if (sr == 1 && sk != 1) { /* rows adjacent: a pair's two rows of X, 16 rows at a time */
        const __m512i inter =
            _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                             22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        PERPO_ASSERT(ld == 0);
        for (p = 0; p < kp; p++)
            for (r = 0; r < w; r += 16) {
                __mmask16 in = r < n ? perpo__mask16(n - r) : 0, out = perpo__mask16(w - r);
                __m512 even = _mm512_maskz_loadu_ps(in, x + 2 * p * sk + r), odd;
                odd = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(in, x + (2 * p + 1) * sk + r)
                                     : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(
                    dst + p * w + r, out,
                    _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(odd, even)));
            }
        return;
    }
    for (r = 0; r < w; r++) /* k adjacent: a row's pairs are its bfloat16 values in order */
        for (k = 0; k < kc; k += 32) {
            uint32_t words[16];
            size_t left = kc - k, q, nq = (left < 32 ? left + 1 : 32) / 2;
            __m512 lo = _mm512_setzero_ps(), hi = lo;
            if (r < n) {
                lo = _mm512_maskz_loadu_ps(perpo__mask16(left), x + r * sr + k);
                if (left > 16)
                    hi = _mm512_maskz_loadu_ps(perpo__mask16(left - 16), x + r * sr + k + 16);
            }
            if (ld > 0) {
                _mm512_mask_storeu_epi32(dst + r * ld + k / 2, perpo__mask16(nq),
                                         (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                continue;
            }
            _mm512_storeu_si512(words, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
            for (q = 0; q < nq; q++) dst[(k / 2 + q) * w + r] = words[q];
        }
}

/* The tile on pairs: c (MR x NR, row stride ldc) = [c +] a . b over kp pairs, a(i,p) =
   a[i*sai + p*sak], b: NR words per pair (perpo__gemm_pack_bf16 with ld 0). */
#define PERPO__TILE_DOT_BF16(i)                                                                    \
    {                                                                                              \
        __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * sai]);                                \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, ai, b0);                                               \
        c##i##1 = _mm512_dpbf16_ps(c##i##1, ai, b1);                                               \
    }
static void perpo__gemm_tile_bf16(size_t kp, const uint32_t *a, size_t sai, size_t sak,
                                  const uint32_t *b, float *c, size_t ldc, int load) {
    size_t p;
    PERPO__ROWS(PERPO__TILE_LOAD)
    for (p = 0; p < kp; p++, a += sak, b += PERPO__NR) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16);
        PERPO__ROWS(PERPO__TILE_DOT_BF16)
    }
    PERPO__ROWS(PERPO__TILE_STORE)
}
#endif

/* GELU and softmax run on a vector exp in AVX-512 builds (see below); PERPO_NO_VECTOR_EXP
   keeps them on libm's expf (the same results, slower). */
#if defined(__AVX512F__) && !defined(PERPO_NO_VECTOR_EXP)
#define PERPO__VEXP
#endif

/* ---- GELU, tanh approximation (PyTorch approximate='tanh') ------------------------------ *
 * 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3) equals x * sigmoid(2u): one expf
 * instead of a tanhf, which profiles showed dominating the MLP. With s = sigmoid(2u):
 * gelu' = s + x * 2 s (1 - s) * du/dx. */
#define PERPO__GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define PERPO__GELU_C 0.044715f
#ifndef PERPO__VEXP /* (AVX-512 builds use the vector forms below) */
static float perpo__gelu1(float x) {
    return x / (1.0f + expf(-2.0f * PERPO__GELU_S * (x + PERPO__GELU_C * x * x * x)));
}
static float perpo__dgelu1(float x) {
    float s = 1.0f / (1.0f + expf(-2.0f * PERPO__GELU_S * (x + PERPO__GELU_C * x * x * x)));
    float du = PERPO__GELU_S * (1.0f + 3.0f * PERPO__GELU_C * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du;
}
#endif

/* ---- Vector exp, GELU and softmax over short arrays ---------------------------------------- *
 * In AVX-512 builds these run 16 lanes at a time, a partial vector through masks. Their results
 * are bit for bit those of the scalar code with libm's expf (glibc's algorithm: x/ln2 = k/32 + r
 * in double, 2^(k/32) from a table of the 32 doubles 2^(i/32), a degree-3 polynomial; checked
 * equal to glibc's expf for all 2^32 floats), so vectorizing changes no result. Other builds run
 * the scalar code. */
#ifdef PERPO__VEXP
static const unsigned long long
    perpo__exp2_tab[32] = { /* bits of 2^(i/32) - (i << 47) */
                            0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full,
                            0x3fef9301d0125b51ull, 0x3fef72b83c7d517bull, 0x3fef54873168b9aaull,
                            0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull, 0x3fef06fe0a31b715ull,
                            0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
                            0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull,
                            0x3feea47eb03a5585ull, 0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull,
                            0x3feea11473eb0187ull, 0x3feea589994cce13ull, 0x3feeace5422aa0dbull,
                            0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
                            0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull,
                            0x3fef3720dcef9069ull, 0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full,
                            0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull
    };
/* perpo__exp2_tab[k & 31] per lane: two-table permutes (a gather is several times slower) */
static __m512i perpo__exp2_lookup(__m512i k) {
    const __m512i *tab = (const __m512i *)(const void *)perpo__exp2_tab;
    __m512i lo = _mm512_permutex2var_epi64(_mm512_loadu_si512(tab), k, _mm512_loadu_si512(tab + 1));
    __m512i hi =
        _mm512_permutex2var_epi64(_mm512_loadu_si512(tab + 2), k, _mm512_loadu_si512(tab + 3));
    return _mm512_mask_blend_epi64(_mm512_test_epi64_mask(k, _mm512_set1_epi64(16)), lo, hi);
}
static __m256 perpo__exp8(__m256 xf) { /* the main path: finite x with e^x in float range */
    /* (the constants are written in decimal, each the exact double or float it stands for:
       C++ before C++17 has no hexadecimal floating literals) */
    const __m512d shift = _mm512_set1_pd(6755399441055744.0);
    __m512d xd = _mm512_cvtps_pd(xf), z, kd, r, s, y, p;
    __m512i ki, t;
    z = _mm512_mul_pd(_mm512_set1_pd(1.4426950408889634 * 32), xd);
    kd = _mm512_add_pd(z, shift); /* round z to an integer k, which lands in kd's low bits */
    ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    r = _mm512_sub_pd(z, kd);
    t = perpo__exp2_lookup(ki);
    s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47))); /* 2^(k/32) */
    p = _mm512_fmadd_pd(_mm512_set1_pd(0.05550361559341535 / 32 / 32 / 32), r,
                        _mm512_set1_pd(0.2402284522445722 / 32 / 32));
    y = _mm512_fmadd_pd(_mm512_set1_pd(0.6931471806916203 / 32), r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(p, _mm512_mul_pd(r, r), y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}
static __m512 perpo__exp16(__m512 x) {
    __m256 lo = perpo__exp8(_mm512_castps512_ps256(x));
    __m256 hi = perpo__exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    __m512 r = _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7228317f), _CMP_GT_OQ), r,
                             _mm512_set1_ps(INFINITY));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.972076f), _CMP_LT_OQ), r,
                             _mm512_setzero_ps());
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, _mm512_add_ps(x, x));
}
/* e^u for GELU: u = -2 sqrt(2/pi) (x + 0.044715 x^3), rounded as the scalar code rounds it */
static __m512 perpo__gelu_e16(__m512 x) {
    __m512 c = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(PERPO__GELU_C), x), x);
    return perpo__exp16(
        _mm512_mul_ps(_mm512_set1_ps(-2.0f * PERPO__GELU_S), _mm512_fmadd_ps(c, x, x)));
}
#endif
#ifdef PERPO__VEXP
/* GELU and GELU' of 16 lanes, the scalar formulas' operations in their order */
static __m512 perpo__gelu16(__m512 x) {
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), perpo__gelu_e16(x)));
}
static __m512 perpo__dgelu16(__m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, perpo__gelu_e16(x)));
    __m512 du = _mm512_mul_ps(
        _mm512_set1_ps(PERPO__GELU_S),
        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(3.0f * PERPO__GELU_C), x), x, one));
    __m512 a = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(2.0f), x), s),
                             _mm512_sub_ps(one, s));
    return _mm512_fmadd_ps(a, du, s);
}
#endif
/* y[0..n) = GELU(x[0..n)); y may be x. */
static void perpo__gelu_n(float *y, const float *x, size_t n) {
    size_t i;
#ifdef PERPO__VEXP
    for (i = 0; i < n; i += 16) {
        __mmask16 k = perpo__mask16(n - i);
        _mm512_mask_storeu_ps(y + i, k, perpo__gelu16(_mm512_maskz_loadu_ps(k, x + i)));
    }
#else
    for (i = 0; i < n; i++) y[i] = perpo__gelu1(x[i]);
#endif
}
/* d[0..n) *= GELU'(x[0..n)) */
static void perpo__dgelu_mul_n(float *d, const float *x, size_t n) {
    size_t i;
#ifdef PERPO__VEXP
    for (i = 0; i < n; i += 16) {
        __mmask16 k = perpo__mask16(n - i);
        _mm512_mask_storeu_ps(d + i, k,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(k, d + i),
                                            perpo__dgelu16(_mm512_maskz_loadu_ps(k, x + i))));
    }
#else
    for (i = 0; i < n; i++) d[i] *= perpo__dgelu1(x[i]);
#endif
}
/* Unrolls the loop after it (a group's rows, whose in-order sums then run side by side in
   registers: softmax and LayerNorm below). */
#if (defined(__GNUC__) && __GNUC__ >= 8) || defined(__clang__)
#define PERPO__UNROLL _Pragma("GCC unroll 8")
#else
#define PERPO__UNROLL
#endif
/* p[0..n) = e^(scale p[i] - max), in place: a softmax's numerators (n >= 1) */
static void perpo__softmax_exp(float *p, size_t n, float scale) {
    size_t i;
    float mx = -INFINITY;
#ifdef PERPO__VEXP
    __m512 vmx = _mm512_set1_ps(-INFINITY), sc = _mm512_set1_ps(scale), m;
    for (i = 0; i < n; i += 16) {
        __mmask16 k = perpo__mask16(n - i);
        __m512 v = _mm512_mul_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, p + i), sc);
        _mm512_mask_storeu_ps(p + i, k, v);
        vmx = _mm512_max_ps(vmx, v);
    }
    mx = _mm512_reduce_max_ps(vmx);
    m = _mm512_set1_ps(mx);
    for (i = 0; i < n; i += 16) {
        __mmask16 k = perpo__mask16(n - i);
        _mm512_mask_storeu_ps(p + i, k,
                              perpo__exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + i), m)));
    }
#else
    for (i = 0; i < n; i++) {
        p[i] *= scale;
        if (p[i] > mx) mx = p[i];
    }
    for (i = 0; i < n; i++) p[i] = expf(p[i] - mx);
#endif
}
/* p[0..n) /= sum */
static void perpo__softmax_div(float *p, size_t n, float sum) {
    size_t i;
#ifdef PERPO__VEXP
    __m512 m = _mm512_set1_ps(sum);
    for (i = 0; i < n; i += 16) {
        __mmask16 k = perpo__mask16(n - i);
        _mm512_mask_storeu_ps(p + i, k, _mm512_div_ps(_mm512_maskz_loadu_ps(k, p + i), m));
    }
#else
    for (i = 0; i < n; i++) p[i] /= sum;
#endif
}
/* Row r of rows (at p + r*ld, n0 + r*dn long, n0 >= 1) = softmax(scale * row), in place. Each
   row's sum runs in order; rows go in groups of PERPO__SM_GROUP whose sums run side by side
   (as LayerNorm's: a short group repeats its last row). */
#define PERPO__SM_GROUP 4
static void perpo__softmax_rows(float *p, size_t ld, size_t rows, size_t n0, size_t dn,
                                float scale) {
    size_t r, k, i;
    for (r = 0; r < rows; r += PERPO__SM_GROUP) {
        float *row[PERPO__SM_GROUP], sum[PERPO__SM_GROUP];
        size_t len[PERPO__SM_GROUP], g = rows - r < PERPO__SM_GROUP ? rows - r : PERPO__SM_GROUP;
        for (k = 0; k < PERPO__SM_GROUP; k++) {
            size_t rk = r + (k < g ? k : g - 1);
            row[k] = p + rk * ld;
            len[k] = n0 + rk * dn;
            sum[k] = 0.0f;
        }
        for (k = 0; k < g; k++) perpo__softmax_exp(row[k], len[k], scale);
        for (i = 0; i < len[0]; i++) { /* the shortest row's length */
            PERPO__UNROLL
            for (k = 0; k < PERPO__SM_GROUP; k++) sum[k] += row[k][i];
        }
        for (k = 0; k < g; k++) {
            for (i = len[0]; i < len[k]; i++) sum[k] += row[k][i];
            perpo__softmax_div(row[k], len[k], sum[k]);
        }
    }
}
/* sum of a[i] b[i], in order */
static float perpo__dot(const float *a, const float *b, size_t n) {
    size_t i;
    float s = 0.0f;
    for (i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* What a product does to each element of C after its last K-block, while the tile is still in
   cache: c += bias[j], then c += res[i*ldr + j], then gel[i*ldg + j] = GELU(c) (gel may be C
   itself) or c *= GELU'(dgel[i*ldd + j]) (a forward's or a backward's: never both). That is the
   order of the separate passes it replaces (bias, GELU, residual add; GELU backward), so no
   value changes. */
typedef struct perpo__epi {
    const float *bias, *res, *dgel;
    float *gel;
    size_t ldr, ldg, ldd;
} perpo__epi;
static void perpo__epi_apply(const perpo__epi *e, float *c, size_t ldc, size_t i0, size_t j0,
                             size_t mr, size_t nr) {
    size_t r, j;
    for (r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        const float *res = e->res ? e->res + (i0 + r) * e->ldr + j0 : NULL;
        float *gel = e->gel ? e->gel + (i0 + r) * e->ldg + j0 : NULL;
        const float *dgel = e->dgel ? e->dgel + (i0 + r) * e->ldd + j0 : NULL;
#ifdef PERPO__VEXP /* all of it on 16 lanes in registers, c loaded and stored once */
        for (j = 0; j < nr; j += 16) {
            __mmask16 k = perpo__mask16(nr - j);
            __m512 v = _mm512_maskz_loadu_ps(k, cr + j);
            if (e->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, e->bias + j0 + j));
            if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + j));
            if (dgel) v = _mm512_mul_ps(v, perpo__dgelu16(_mm512_maskz_loadu_ps(k, dgel + j)));
            _mm512_mask_storeu_ps(cr + j, k, v);
            if (gel)
                _mm512_mask_storeu_ps(gel + j, k, perpo__gelu16(v)); /* after c: gel may be c */
        }
#else
        if (e->bias) {
            const float *PERPO__RESTRICT b = e->bias + j0;
            float *PERPO__RESTRICT y = cr;
            PERPO__OMP(simd)
            for (j = 0; j < nr; j++) y[j] += b[j];
        }
        if (res) {
            const float *PERPO__RESTRICT x = res;
            float *PERPO__RESTRICT y = cr;
            PERPO__OMP(simd)
            for (j = 0; j < nr; j++) y[j] += x[j];
        }
        if (gel) perpo__gelu_n(gel, cr, nr); /* may be in place */
        if (dgel) perpo__dgelu_mul_n(cr, dgel, nr);
#endif
    }
}

/* Floats of a B prepacked by perpo__gemm_prepack: every K-block's panels, as a product packs them. */
static PERPO__MAYBE_UNUSED size_t perpo__gemm_packed_floats(size_t N, size_t K) {
    return K * ((N + PERPO__NR - 1) / PERPO__NR) * PERPO__NR;
}
#ifndef PERPO_USE_CBLAS /* (CBLAS builds pack nothing themselves) */
/* Packs B (as perpo__gemm reads it, tb: stored (N,K)) once, for products that reuse it (weights
   while decoding): K-block k0 at dst + k0*Np (Np = N rounded up to NR), its panel jp at jp*kc*NR. */
static void perpo__gemm_prepack(float *dst, int tb, size_t N, size_t K, const float *B,
                                size_t ldb) {
    size_t sbj = tb ? ldb : 1, sbk = tb ? 1 : ldb, np = (N + PERPO__NR - 1) / PERPO__NR, k0, jp;
    for (k0 = 0; k0 < K; k0 += PERPO__KC) {
        size_t kc = K - k0 < PERPO__KC ? K - k0 : PERPO__KC;
        for (jp = 0; jp < np; jp++) {
            float *panel = dst + k0 * np * PERPO__NR + jp * kc * PERPO__NR;
#ifdef PERPO_USE_BF16 /* (half of the panel's room) */
            perpo__gemm_pack_bf16((uint32_t *)panel, PERPO__NR, B, sbj, sbk, N, jp * PERPO__NR, k0,
                                  kc, 0);
#else
            perpo__gemm_pack(panel, PERPO__NR, B, sbj, sbk, N, jp * PERPO__NR, k0, kc);
#endif
        }
    }
}

/* The column panels [jp0, jp1) of C, all rows, on one thread. B panels are packed into ws at
   jp*KC*NR (a slot per panel, so threads with different panels never share a slot and need
   no barrier), or read from bpk (perpo__gemm_prepack). */
static void perpo__gemm_cols(int ta, int tb, size_t M, size_t N, size_t K, const float *A,
                             size_t lda, const float *B, size_t ldb, int accumulate, float *C,
                             size_t ldc, float *ws, const float *bpk, const perpo__epi *epi,
                             size_t jp0, size_t jp1) {
    size_t sai = ta ? 1 : lda, sak = ta ? lda : 1; /* A(i,k) = A[i*sai + k*sak] */
    size_t sbj = tb ? ldb : 1, sbk = tb ? 1 : ldb; /* B(k,j) = B[k*sbk + j*sbj] */
    size_t np = (N + PERPO__NR - 1) / PERPO__NR, mp = (M + PERPO__MR - 1) / PERPO__MR, k0, ip, jp,
           r;
#ifdef PERPO_USE_BF16 /* (B is always packed: packing rounds it to bfloat16) */
    uint32_t a[PERPO__KP * PERPO__MR];
#else
    float a[PERPO__KC * PERPO__MR];
    /* B read in place (its full panels): with B's columns adjacent (tb 0) a panel is NR
       adjacent floats per k already, and the tile can read them at B's row stride. Packing
       pays when many row panels reuse the packed copy; for M up to 512 (weight gradients,
       doutT . x) reading in place is faster (measured: fc's 512x128x3584 85 -> 109 GFLOP/s) */
    int inplace = !bpk && sbj == 1 && M <= 512;
#endif
    float tile[PERPO__MR * PERPO__NR];
    for (k0 = 0; k0 < K; k0 += PERPO__KC) {
        size_t kc = K - k0 < PERPO__KC ? K - k0 : PERPO__KC;
        int load = accumulate || k0 > 0, last = k0 + kc == K;
        const float *bp = bpk ? bpk + k0 * np * PERPO__NR : ws;
        size_t bstride = bpk ? kc * PERPO__NR : PERPO__KC * PERPO__NR;
        if (!bpk)
            for (jp = jp0; jp < jp1; jp++)
#ifdef PERPO_USE_BF16
                perpo__gemm_pack_bf16((uint32_t *)(ws + jp * bstride), PERPO__NR, B, sbj, sbk, N,
                                      jp * PERPO__NR, k0, kc, 0);
#else
                if (!inplace || (jp + 1) * PERPO__NR > N)
                    perpo__gemm_pack(ws + jp * bstride, PERPO__NR, B, sbj, sbk, N, jp * PERPO__NR,
                                     k0, kc);
#endif
        for (ip = 0; ip < mp; ip++) {
            size_t i = ip * PERPO__MR, mr = M - i < PERPO__MR ? M - i : PERPO__MR;
#ifdef PERPO_USE_BF16 /* every A panel is packed as pairs: a row's pairs adjacent when they are in A */
            const uint32_t *ap = a;
            size_t si = ta ? 1 : PERPO__KP, sk = ta ? PERPO__MR : 1;
            perpo__gemm_pack_bf16(a, PERPO__MR, A, sai, sak, M, i, k0, kc, ta ? 0 : PERPO__KP);
#else
            const float *ap = A + i * sai + k0 * sak;
            size_t si = sai, sk = sak;
            if (mr < PERPO__MR) { /* a partial panel is padded with zero rows */
                perpo__gemm_pack(a, PERPO__MR, A, sai, sak, M, i, k0, kc);
                ap = a;
                si = 1;
                sk = PERPO__MR;
            }
#endif
            for (jp = jp0; jp < jp1; jp++) {
                size_t j = jp * PERPO__NR, nr = N - j < PERPO__NR ? N - j : PERPO__NR;
                float *c = C + i * ldc + j;
                int edge = mr < PERPO__MR || nr < PERPO__NR;
                /* an edge tile runs on a full-size copy, through the same call, so that its
                   elements get exactly the instructions of a full tile's */
                if (edge) {
                    memset(tile, 0, sizeof tile);
                    for (r = 0; load && r < mr; r++)
                        memcpy(tile + r * PERPO__NR, c + r * ldc, nr * sizeof(float));
                }
#ifdef PERPO_USE_BF16
                perpo__gemm_tile_bf16((kc + 1) / 2, ap, si, sk,
                                      (const uint32_t *)(bp + jp * bstride), edge ? tile : c,
                                      edge ? PERPO__NR : ldc, load);
#else
                if (inplace && nr == PERPO__NR)
                    perpo__gemm_tile(kc, mr, ap, si, sk, B + k0 * sbk + j, sbk, edge ? tile : c,
                                     edge ? PERPO__NR : ldc, load);
                else
                    perpo__gemm_tile(kc, mr, ap, si, sk, bp + jp * bstride, PERPO__NR,
                                     edge ? tile : c, edge ? PERPO__NR : ldc, load);
#endif
                for (r = 0; edge && r < mr; r++)
                    memcpy(c + r * ldc, tile + r * PERPO__NR, nr * sizeof(float));
                if (last && epi) perpo__epi_apply(epi, c, ldc, i, j, mr, nr);
            }
        }
    }
}

#endif

/* One thread's share of a product, inside a parallel region (the whole product outside one).
   Threads split the column panels of C: each packs (or reads in place) its own B panels and
   runs its tiles, so a
   product takes no barrier, and several independent products (the two of a linear backward)
   can follow each other in one region. With more threads than column panels the extra threads
   idle. How the work is split never changes a value (see the top of this section). A thread's
   slots in ws follow from N: two products of different N in a row need a barrier between them
   (as they have anyway when one reads what the other wrote). */
static void perpo__gemm_team(int ta, int tb, size_t M, size_t N, size_t K, const float *A,
                             size_t lda, const float *B, size_t ldb, int accumulate, float *C,
                             size_t ldc, float *ws, const float *bpk, const perpo__epi *epi) {
    size_t lo, hi;
    if (M == 0 || N == 0) return;
#ifdef PERPO_USE_CBLAS
    (void)ws;
    (void)bpk;
    perpo__team_range(1, &lo, &hi);
    if (lo == hi) return; /* one thread calls the library (which has its own threads) */
    if (K > 0)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    accumulate ? 1.0f : 0.0f, C, (int)ldc);
    else if (!accumulate)
        for (lo = 0; lo < M; lo++) memset(C + lo * ldc, 0, N * sizeof(float));
    if (epi) perpo__epi_apply(epi, C, ldc, 0, 0, M, N);
#else
    perpo__team_range((N + PERPO__NR - 1) / PERPO__NR, &lo, &hi);
    if (lo == hi) return;
    if (K == 0) {
        size_t i, j0 = lo * PERPO__NR, j1 = hi * PERPO__NR < N ? hi * PERPO__NR : N;
        for (i = 0; i < M && !accumulate; i++)
            memset(C + i * ldc + j0, 0, (j1 - j0) * sizeof(float));
        if (epi) perpo__epi_apply(epi, C + j0, ldc, 0, j0, M, j1 - j0);
        return;
    }
    perpo__gemm_cols(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc, ws, bpk, epi, lo, hi);
#endif
}

/* Rows [lo, hi) of n for this thread (all of them outside a region), in whole MR-row panels
   of the products, so that a row split keeps their tiles full: the split of the forward's row
   kernels (perpo__gemm_rows and the LayerNorm, embedding and element-wise passes), the same
   for each over the same n, so that one reads only what its own thread wrote. */
static void perpo__team_rows(size_t n, size_t *lo, size_t *hi) {
    size_t a, b;
    perpo__team_range((n + PERPO__MR - 1) / PERPO__MR, &a, &b);
    *lo = a * PERPO__MR < n ? a * PERPO__MR : n;
    *hi = b * PERPO__MR < n ? b * PERPO__MR : n;
}
/* Rows [lo, hi) of C (M,N) = A (M,K) . op(W) [+ epilogue], W stored (N,K) (tb: op(W) = W^T) or
   (K,N) (tb 0: op(W) = W) and prepacked as such into bpk (perpo__gemm_prepack; NULL in CBLAS
   builds): the thread's own rows of a product, for which it reads only its own rows of A and
   needs no workspace and no barrier. The epilogue's row-indexed arrays are the whole product's. */
static void perpo__gemm_rows(size_t lo, size_t hi, int tb, size_t N, size_t K, const float *A,
                             const float *W, const float *bpk, float *C, const perpo__epi *epi) {
    perpo__epi e;
    if (hi <= lo || N == 0) return;
    memset(&e, 0, sizeof e);
    if (epi) {
        e = *epi;
        if (e.res) e.res += lo * e.ldr;
        if (e.gel) e.gel += lo * e.ldg;
        if (e.dgel) e.dgel += lo * e.ldd;
    }
#ifdef PERPO_USE_CBLAS
    (void)bpk;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)(hi - lo), (int)N,
                (int)K, 1.0f, A + lo * K, (int)K, W, tb ? (int)K : (int)N, 0.0f, C + lo * N,
                (int)N);
    if (epi) perpo__epi_apply(&e, C + lo * N, N, 0, 0, hi - lo, N);
#else
    perpo__gemm_cols(0, tb, hi - lo, N, K, A + lo * K, K, W, tb ? K : N, 0, C + lo * N, N, NULL,
                     bpk, epi ? &e : NULL, 0, (N + PERPO__NR - 1) / PERPO__NR);
#endif
}

/* C (M,N) = [C +] op(A) (M,K) . op(B) (K,N). ta: A is stored (K,M); tb: B is stored (N,K).
   The built-in path copies ("packs") a K-block of B into NR-wide panels and of A into MR-tall
   panels, so that an MR x NR register tile reads both contiguously. ws: perpo__gemm_ws_floats(N). */
#define PERPO__GEMM_PAR(M, N, K) ((M) * (N) * (K) >= 64 * PERPO__PAR_MIN)
static void perpo__gemm_ex(int ta, int tb, size_t M, size_t N, size_t K, const float *A, size_t lda,
                           const float *B, size_t ldb, int accumulate, float *C, size_t ldc,
                           float *ws, const float *bpk, const perpo__epi *epi) {
    PERPO__OMP(parallel if (PERPO__GEMM_PAR(M, N, K)))
    perpo__gemm_team(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc, ws, bpk, epi);
}
static PERPO__MAYBE_UNUSED void perpo__gemm(int ta, int tb, size_t M, size_t N, size_t K,
                                            const float *A, size_t lda, const float *B, size_t ldb,
                                            int accumulate, float *C, size_t ldc, float *ws) {
    perpo__gemm_ex(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc, ws, NULL, NULL);
}

/* Linear layer, PyTorch layout. out (N,OC) = inp (N,C) . W^T + b;  W: (OC,C), b: (OC) or NULL.
   One thread's share; gel: also GELU(out) into gel (N,OC), NULL for none. */
static void perpo__linear_forward_team(float *out, float *gel, const float *inp, const float *W,
                                       const float *b, size_t N, size_t C, size_t OC, float *ws) {
    perpo__epi e;
    memset(&e, 0, sizeof e);
    e.bias = b;
    e.gel = gel;
    e.ldg = OC;
    perpo__gemm_team(0, 1, N, OC, C, inp, C, W, C, 0, out, OC, ws, NULL, b || gel ? &e : NULL);
}
static PERPO__MAYBE_UNUSED void perpo__linear_forward(float *out, const float *inp, const float *W,
                                                      const float *b, size_t N, size_t C, size_t OC,
                                                      float *ws) {
    PERPO__OMP(parallel if (PERPO__GEMM_PAR(N, OC, C)))
    perpo__linear_forward_team(out, NULL, inp, W, b, N, C, OC, ws);
}
/* Column-split kernels sum into a thread's own stack copy of up to PERPO__COLS columns and
   write it back once: summing in place, two threads' ranges share the cache line at their
   boundary, which then moves between the cores at every row. */
#define PERPO__COLS 1024
/* Column sums: db (OC) += sum over rows of dout (N,OC), each column in row order, the team
   splitting the columns. */
static void perpo__colsum_team(float *db, const float *dout, size_t N, size_t OC) {
    size_t lo, hi, c, i, o;
    perpo__team_range(OC, &lo, &hi);
    for (c = lo; c < hi; c += PERPO__COLS) {
        float acc[PERPO__COLS];
        size_t n = hi - c < PERPO__COLS ? hi - c : PERPO__COLS;
        memcpy(acc, db + c, n * sizeof(float));
        for (i = 0; i < N; i++) {
            const float *PERPO__RESTRICT d = dout + i * OC + c;
            PERPO__OMP(simd)
            for (o = 0; o < n; o++) acc[o] += d[o];
        }
        memcpy(db + c, acc, n * sizeof(float));
    }
}
/* One thread's share of a linear backward: dinp (N,C) = [dinp +] dout . W (then epi, e.g. times
   GELU' of the layer below), dW (OC,C) += dout^T . inp, db (OC) += column sums of dout. The
   three are independent: no barrier between them (each thread reuses its own ws slots). */
static void perpo__linear_backward_team(float *dinp, int dinp_acc, const perpo__epi *epi, float *dW,
                                        float *db, const float *dout, const float *inp,
                                        const float *W, size_t N, size_t C, size_t OC, float *ws) {
    if (dinp) perpo__gemm_team(0, 0, N, C, OC, dout, OC, W, C, dinp_acc, dinp, C, ws, NULL, epi);
    perpo__gemm_team(1, 0, OC, C, N, dout, OC, inp, C, 1, dW, C, ws, NULL, NULL);
    if (db) perpo__colsum_team(db, dout, N, OC);
}
/* dinp (N,C) += dout . W;  dW (OC,C) += dout^T . inp;  db (OC) += column sums of dout.
   dinp may be NULL (the input is data, e.g. image patches). */
static PERPO__MAYBE_UNUSED void perpo__linear_backward(float *dinp, float *dW, float *db,
                                                       const float *dout, const float *inp,
                                                       const float *W, size_t N, size_t C,
                                                       size_t OC, float *ws) {
    PERPO__OMP(parallel if (PERPO__GEMM_PAR(N, C, OC)))
    perpo__linear_backward_team(dinp, 1, NULL, dW, db, dout, inp, W, N, C, OC, ws);
}

/* ---- LayerNorm over the last dimension (eps 1e-5, biased variance, as PyTorch) ---------- *
 * A row's mean and variance are sums over its D elements in order, each add waiting for the
 * one before; so rows go in groups of PERPO__LN_GROUP whose sums run side by side, in the same
 * order within each row (a short group repeats its last row, so every row runs the same code).
 * PERPO__UNROLL unrolls the loop over the group, which the compiler then keeps in registers.
 * (The variance's d * d + v may or may not become an FMA: gcc avoids FMAs in a sum's chain
 * when tuned for AMD. Checked: the same bits as one row at a time with gcc 12, -march native
 * (Zen 4), znver2, znver3, haswell, skylake-avx512 and icelake-server, and clang 14.) */
#define PERPO__LN_GROUP 8
static void perpo__layernorm_rows(float *out, float *mean, float *rstd, const float *inp,
                                  const float *w, const float *b, size_t r0, size_t r1, size_t D) {
    size_t r, i, k;
    for (r = r0; r < r1; r += PERPO__LN_GROUP) {
        const float *x[PERPO__LN_GROUP];
        float m[PERPO__LN_GROUP], v[PERPO__LN_GROUP];
        size_t n = r1 - r < PERPO__LN_GROUP ? r1 - r : PERPO__LN_GROUP;
        for (k = 0; k < PERPO__LN_GROUP; k++) {
            x[k] = inp + (r + (k < n ? k : n - 1)) * D;
            m[k] = v[k] = 0.0f;
        }
        for (i = 0; i < D; i++) {
            PERPO__UNROLL
            for (k = 0; k < PERPO__LN_GROUP; k++) m[k] += x[k][i];
        }
        for (k = 0; k < PERPO__LN_GROUP; k++) m[k] /= (float)D;
        for (i = 0; i < D; i++) {
            PERPO__UNROLL
            for (k = 0; k < PERPO__LN_GROUP; k++) {
                float d = x[k][i] - m[k];
                v[k] += d * d;
            }
        }
        for (k = 0; k < n; k++) {
            const float *PERPO__RESTRICT xk = x[k];
            float *PERPO__RESTRICT y = out + (r + k) * D, mk = m[k], s;
            v[k] /= (float)D;
            s = 1.0f / sqrtf(v[k] + 1e-5f);
            PERPO__OMP(simd)
            for (i = 0; i < D; i++) y[i] = (xk[i] - mk) * s * w[i] + b[i];
            mean[r + k] = mk;
            rstd[r + k] = s;
        }
    }
}
/* One thread's share: rows split with perpo__team_range(N). The model's own row-wise passes
   split rows by perpo__team_rows (whole MR panels) instead, so they need a barrier after this. */
static void perpo__layernorm_forward_team(float *out, float *mean, float *rstd, const float *inp,
                                          const float *w, const float *b, size_t N, size_t D) {
    size_t lo, hi;
    perpo__team_range(N, &lo, &hi);
    perpo__layernorm_rows(out, mean, rstd, inp, w, b, lo, hi, D);
}
/* The kernels' own parallel regions, for callers outside one (tests, bench/profile.h). */
static PERPO__MAYBE_UNUSED void perpo__layernorm_forward(float *out, float *mean, float *rstd,
                                                         const float *inp, const float *w,
                                                         const float *b, size_t N, size_t D) {
    PERPO__OMP(parallel if (N * D >= PERPO__PAR_MIN))
    perpo__layernorm_forward_team(out, mean, rstd, inp, w, b, N, D);
}
/* Rows [lo, hi) of dinp = base + the input gradient (base may be dinp: added into). (The sums
   stay one row at a time: in a group, the compiler may contract dn * xh + mean_dn_xh into an
   FMA where it does not for one row.) */
static void perpo__layernorm_backward_rows(float *dinp, const float *base, const float *dout,
                                           const float *inp, const float *w, const float *mean,
                                           const float *rstd, size_t lo, size_t hi, size_t D) {
    size_t r, i;
    for (r = lo; r < hi; r++) {
        const float *PERPO__RESTRICT x = inp + r * D, *PERPO__RESTRICT dy = dout + r * D,
                                     *b = base + r * D;
        float *dx = dinp + r * D, m = mean[r], s = rstd[r];
        float mean_dn = 0.0f, mean_dn_xh = 0.0f;
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s, dn = dy[i] * w[i];
            mean_dn += dn;
            mean_dn_xh += dn * xh;
        }
        mean_dn /= (float)D;
        mean_dn_xh /= (float)D;
        PERPO__OMP(simd)
        for (i = 0; i < D; i++) {
            float xh = (x[i] - m) * s;
            dx[i] = b[i] + s * (dy[i] * w[i] - mean_dn - xh * mean_dn_xh);
        }
    }
}
/* One thread's share of dw, db (added into): columns, each summed over the N rows in order. */
static void perpo__layernorm_backward_cols_team(float *dw, float *db, const float *dout,
                                                const float *inp, const float *mean,
                                                const float *rstd, size_t N, size_t D) {
    size_t lo, hi, c, r, i;
    perpo__team_range(D, &lo, &hi);
    for (c = lo; c < hi; c += PERPO__COLS) { /* stack copies, as perpo__colsum_team's */
        float gw[PERPO__COLS], gb[PERPO__COLS];
        size_t n = hi - c < PERPO__COLS ? hi - c : PERPO__COLS;
        memcpy(gw, dw + c, n * sizeof(float));
        memcpy(gb, db + c, n * sizeof(float));
        for (r = 0; r < N; r++) {
            const float *PERPO__RESTRICT x = inp + r * D + c,
                                         *PERPO__RESTRICT dy = dout + r * D + c;
            float m = mean[r], s = rstd[r];
            PERPO__OMP(simd)
            for (i = 0; i < n; i++) {
                gw[i] += dy[i] * ((x[i] - m) * s);
                gb[i] += dy[i];
            }
        }
        memcpy(dw + c, gw, n * sizeof(float));
        memcpy(db + c, gb, n * sizeof(float));
    }
}
/* One thread's share: rows of dinp, and columns of dw, db. */
static void perpo__layernorm_backward_team(float *dinp, float *dw, float *db, const float *dout,
                                           const float *inp, const float *w, const float *mean,
                                           const float *rstd, size_t N, size_t D) {
    size_t lo, hi;
    perpo__team_range(N, &lo, &hi);
    perpo__layernorm_backward_rows(dinp, dinp, dout, inp, w, mean, rstd, lo, hi, D);
    perpo__layernorm_backward_cols_team(dw, db, dout, inp, mean, rstd, N, D);
}
static PERPO__MAYBE_UNUSED void perpo__layernorm_backward(float *dinp, float *dw, float *db,
                                                          const float *dout, const float *inp,
                                                          const float *w, const float *mean,
                                                          const float *rstd, size_t N, size_t D) {
    PERPO__OMP(parallel if (N * D >= PERPO__PAR_MIN))
    perpo__layernorm_backward_team(dinp, dw, db, dout, inp, w, mean, rstd, N, D);
}

/* Separate GELU passes, for tests and bench/profile.h: the model runs GELU and its backward in
   the epilogues of the products next to them (perpo__epi), which gives the same values. */
static PERPO__MAYBE_UNUSED void perpo__gelu_forward(float *out, const float *inp, size_t n) {
    long i;
    PERPO__OMP(parallel for schedule(static) if(n >= PERPO__PAR_MIN))
    for (i = 0; i < (long)n; i += 1024)
        perpo__gelu_n(out + i, inp + i, n - (size_t)i < 1024 ? n - (size_t)i : 1024);
}
/* dinp = dout * gelu'(inp); dinp may alias dout. */
static PERPO__MAYBE_UNUSED void perpo__gelu_backward(float *dinp, const float *inp,
                                                     const float *dout, size_t n) {
    long i;
    PERPO__OMP(parallel for schedule(static) if(n >= PERPO__PAR_MIN))
    for (i = 0; i < (long)n; i += 1024) {
        size_t j, c = n - (size_t)i < 1024 ? n - (size_t)i : 1024;
        if (dinp != dout)
            for (j = 0; j < c; j++) dinp[(size_t)i + j] = dout[(size_t)i + j];
        perpo__dgelu_mul_n(dinp + i, inp + i, c);
    }
}

/* ---- Multi-head self-attention core ----------------------------------------------------- *
 * One (sequence, head) is a few small products through the same register tile, on one thread:
 * C (M,N) [+]= A (M,K) . B (K,N) with A(i,k) = A[i*sai + k*sak], B(k,j) = B[k*sbk + j*sbj].
 * A B panel is packed on the stack. tri, for causal attention: 1 skips tiles wholly above the
 * diagonal (scores: the caller masks those); 2 sums row panel i0 only over k < i0 + MR (A is
 * zero above the diagonal); 3 only over k >= i0 (A is the transpose of such a matrix). Skipped
 * terms are exact zeros, so the sums equal the full ones. */
static void perpo__gemm_head(size_t M, size_t N, size_t K, const float *A, size_t sai, size_t sak,
                             const float *B, size_t sbk, size_t sbj, int accumulate, float *C,
                             size_t ldc, int tri) {
    size_t np = (N + PERPO__NR - 1) / PERPO__NR, mp = (M + PERPO__MR - 1) / PERPO__MR, jp, k0, ip,
           r;
    float bp[PERPO__KC * PERPO__NR], a[PERPO__KC * PERPO__MR], tile[PERPO__MR * PERPO__NR];
    for (jp = 0; jp < np; jp++) {
        size_t j = jp * PERPO__NR, nr = N - j < PERPO__NR ? N - j : PERPO__NR;
        for (k0 = 0; k0 < K; k0 += PERPO__KC) {
            size_t kc = K - k0 < PERPO__KC ? K - k0 : PERPO__KC;
            perpo__gemm_pack(bp, PERPO__NR, B, sbj, sbk, N, j, k0, kc);
            for (ip = 0; ip < mp; ip++) {
                size_t i = ip * PERPO__MR, mr = M - i < PERPO__MR ? M - i : PERPO__MR;
                size_t klo = tri == 3 ? i : 0,
                       khi = tri == 2 && i + PERPO__MR < K ? i + PERPO__MR : K;
                size_t ks = k0 > klo ? k0 : klo, ke = k0 + kc < khi ? k0 + kc : khi;
                float *c = C + i * ldc + j;
                int load = accumulate || ks > klo, edge = mr < PERPO__MR || nr < PERPO__NR;
                const float *ap = A + i * sai + ks * sak;
                size_t si = sai, sk = sak;
                if ((tri == 1 && j > i + PERPO__MR - 1) || ks >= ke) continue;
                if (mr < PERPO__MR) {
                    perpo__gemm_pack(a, PERPO__MR, A, sai, sak, M, i, ks, ke - ks);
                    ap = a;
                    si = 1;
                    sk = PERPO__MR;
                }
                if (edge) {
                    memset(tile, 0, sizeof tile);
                    for (r = 0; load && r < mr; r++)
                        memcpy(tile + r * PERPO__NR, c + r * ldc, nr * sizeof(float));
                }
                perpo__gemm_tile(ke - ks, mr, ap, si, sk, bp + (ks - k0) * PERPO__NR, PERPO__NR,
                                 edge ? tile : c, edge ? PERPO__NR : ldc, load);
                for (r = 0; edge && r < mr; r++)
                    memcpy(c + r * ldc, tile + r * PERPO__NR, nr * sizeof(float));
            }
        }
    }
}

/* qkv: (B,T,3D) holding q | k | v; head h uses columns h*hd..(h+1)*hd of each. out: (B,T,D).
 * att: (B,H,T,T) softmax probabilities kept for backward (zero above the diagonal if causal).
 * Per (sequence, head): S = Q K^T, softmax, O = P V. Each score is a multiply-add chain over the
 * head dimension in order, and each output one over the keys in order, exactly as the KV-cache
 * path computes them. */
static void perpo__attention_forward_team(float *out, float *att, const float *qkv, size_t B,
                                          size_t T, size_t D, size_t H, int causal) {
    size_t hd = D / H, bh, lo, hi;
    float scale = 1.0f / sqrtf((float)hd);
    perpo__team_range(B * H, &lo, &hi); /* (sequence, head) pairs */
    for (bh = lo; bh < hi; bh++) {
        size_t b = bh / H, h = bh % H, t, t2;
        const float *q = qkv + b * T * 3 * D + h * hd;
        float *S = att + bh * T * T;
        perpo__gemm_head(T, T, hd, q, 3 * D, 1, q + D, 1, 3 * D, 0, S, T, causal ? 1 : 0);
        perpo__softmax_rows(S, T, T, causal ? 1 : T, causal ? 1 : 0, scale);
        for (t = 0; causal && t < T; t++)
            for (t2 = t + 1; t2 < T; t2++) S[t * T + t2] = 0.0f;
        perpo__gemm_head(T, hd, T, S, T, 1, q + 2 * D, 3 * D, 1, 0, out + b * T * D + h * hd, D,
                         causal ? 2 : 0);
    }
}
static PERPO__MAYBE_UNUSED void perpo__attention_forward(float *out, float *att, const float *qkv,
                                                         size_t B, size_t T, size_t D, size_t H,
                                                         int causal) {
    PERPO__OMP(parallel if (B * T * T * D >= PERPO__PAR_MIN))
    perpo__attention_forward_team(out, att, qkv, B, T, D, H, causal);
}
/* Floats of attention-backward workspace per (sequence, head): one (T,T) matrix, dS. */
static size_t perpo__attention_ws_per_head(size_t T) { return T * T; }
/* dqkv (B,T,3D) += gradient from dout (B,T,D). ws: B*H*perpo__attention_ws_per_head floats.
   dP = dY V^T; dS = P (dP - rowsum(dP P)) scale; dV += P^T dY; dQ += dS K; dK += dS^T Q. */
static void perpo__attention_backward_team(float *dqkv, const float *dout, const float *att,
                                           const float *qkv, size_t B, size_t T, size_t D, size_t H,
                                           int causal, float *ws, int zero) {
    size_t hd = D / H, per = perpo__attention_ws_per_head(T), bh, lo, hi;
    float scale = 1.0f / sqrtf((float)hd);
    perpo__team_range(B * H, &lo, &hi); /* (sequence, head) pairs */
    for (bh = lo; bh < hi; bh++) {
        size_t b = bh / H, h = bh % H, t, t2;
        const float *q = qkv + b * T * 3 * D + h * hd, *P = att + bh * T * T;
        const float *dy = dout + b * T * D + h * hd;
        float *dS = ws + bh * per, *dq = dqkv + b * T * 3 * D + h * hd;
        perpo__gemm_head(T, T, hd, dy, D, 1, q + 2 * D, 1, 3 * D, 0, dS, T, causal ? 1 : 0);
        for (t = 0; t < T; t++) {
            const float *p = P + t * T;
            float *d = dS + t * T, dot;
            size_t n = causal ? t + 1 : T;
            dot = perpo__dot(d, p, n);
            PERPO__OMP(simd)
            for (t2 = 0; t2 < n; t2++) d[t2] = p[t2] * (d[t2] - dot) * scale;
            for (t2 = n; t2 < T; t2++) d[t2] = 0.0f;
        }
        /* zero: set the head's v, q, k columns instead of adding (each is one product's) */
        perpo__gemm_head(T, hd, T, P, 1, T, dy, D, 1, !zero, dq + 2 * D, 3 * D, causal ? 3 : 0);
        perpo__gemm_head(T, hd, T, dS, T, 1, q + D, 3 * D, 1, !zero, dq, 3 * D, causal ? 2 : 0);
        perpo__gemm_head(T, hd, T, dS, 1, T, q, 3 * D, 1, !zero, dq + D, 3 * D, causal ? 3 : 0);
    }
}
static PERPO__MAYBE_UNUSED void perpo__attention_backward(float *dqkv, const float *dout,
                                                          const float *att, const float *qkv,
                                                          size_t B, size_t T, size_t D, size_t H,
                                                          int causal, float *ws) {
    PERPO__OMP(parallel if (B * T * T * D >= PERPO__PAR_MIN))
    perpo__attention_backward_team(dqkv, dout, att, qkv, B, T, D, H, causal, ws, 0);
}

/* ---- Residual add and log-softmax --------------------------------------------------------- */
static void perpo__add_inplace(float *acc, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) acc[i] += x[i];
}
/* log(sum(exp(x))) of one row, stable. */
static float perpo__logsumexp(const float *x, size_t n) {
    float mx = -INFINITY;
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    for (i = 0; i < n; i++) s += exp((double)(x[i] - mx));
    return mx + (float)log(s);
}

/* ---- The model on the fast kernels: packed weights, blocks, forward and backward -------- */
/* Weights packed (perpo__gemm_prepack) for products that every thread reads whole: the
   forward's, where each thread computes its own rows, and decoding's. Matrix j of the list: 4 per
   decoder layer (qkv, attention out, fc, fc2), the head, 4 per vision layer, the patch embedding
   and the projector's two. Every forward packs them again (its callers may have written through
   perpo_model_params without calling it again); perpo_generate packs them again only when the
   parameters have changed (m->params_version: an optimizer step, a copy, a call of
   perpo_model_params). CBLAS builds pack nothing. */
static size_t perpo__wpack_count(const perpo_model *m) {
    return 4 * (size_t)(m->cfg.n_dec_layers + m->cfg.n_vis_layers) + 4;
}
/* Matrix j's shape: (N,K) as it multiplies, stored (N,K). */
static PERPO__MAYBE_UNUSED void perpo__wpack_shape(const perpo_model *m, size_t j, size_t *N,
                                                   size_t *K) {
    size_t LD = (size_t)m->cfg.n_dec_layers, LV = (size_t)m->cfg.n_vis_layers, D = m->D, w;
    *K = D;
    if (j < 4 * LD)
        w = j % 4;
    else if (j == 4 * LD) { /* the head */
        *N = m->V;
        return;
    } else if (j - 4 * LD - 1 < 4 * LV)
        w = (j - 4 * LD - 1) % 4;
    else { /* patch embedding (K = PPC), projector */
        *N = D;
        if (j == 4 * (LD + LV) + 1) *K = m->PPC;
        return;
    }
    *N = w == 0 ? 3 * D : w == 2 ? m->M : D;
    if (w == 3) *K = m->M;
}
/* Matrix j's offset in the parameters. */
static PERPO__MAYBE_UNUSED size_t perpo__wpack_src(const perpo_model *m, size_t j) {
    size_t LD = (size_t)m->cfg.n_dec_layers, LV = (size_t)m->cfg.n_vis_layers;
    const perpo__block *b;
    if (j < 4 * LD)
        b = &m->dec[j / 4];
    else if (j == 4 * LD)
        return m->head_w;
    else if (j - 4 * LD - 1 < 4 * LV) {
        b = &m->vis[(j - 4 * LD - 1) / 4];
        j -= 4 * LD + 1;
    } else {
        j -= 4 * (LD + LV) + 1;
        return j == 0 ? m->patch_w : j == 1 ? m->proj1_w : m->proj2_w;
    }
    switch (j % 4) {
    case 0: return b->qkv_w;
    case 1: return b->attn_w;
    case 2: return b->fc_w;
    default: return b->fc2_w;
    }
}
/* The same matrices packed for backward's input gradients, dinp = dout . W: W as stored, (K,N) in
   the list's terms; only the blocks' (the head and the projector pack theirs as they go, and the
   patch embedding's input is data). */
#define PERPO__PATCH_J(m) (4 * (size_t)((m)->cfg.n_dec_layers + (m)->cfg.n_vis_layers) + 1)
static PERPO__MAYBE_UNUSED int perpo__bpack_used(const perpo_model *m, size_t j) {
    return j != 4 * (size_t)m->cfg.n_dec_layers && j < PERPO__PATCH_J(m);
}
/* Floats of the packed matrices before matrix j (all of them: j = perpo__wpack_count), for the
   forward and decoding (for_backward 0) or for backward's input gradients (1). */
static size_t perpo__pack_offset(const perpo_model *m, size_t j, int for_backward) {
#ifdef PERPO_USE_CBLAS
    (void)m;
    (void)j;
    (void)for_backward;
    return 0;
#else
    size_t i, n = 0, N, K;
    for (i = 0; i < j; i++) {
        perpo__wpack_shape(m, i, &N, &K);
        if (!for_backward)
            n += perpo__gemm_packed_floats(N, K);
        else if (perpo__bpack_used(m, i))
            n += perpo__gemm_packed_floats(K, N);
    }
    return n;
#endif
}
static size_t perpo__wpack_floats(const perpo_model *m) {
    return perpo__pack_offset(m, perpo__wpack_count(m), 0);
}

/* Backward's packed matrix j (perpo__pack_offset), or NULL in CBLAS builds. */
static const float *perpo__bpack_get(const perpo_model *m, size_t j) {
#ifdef PERPO_USE_CBLAS
    (void)m;
    (void)j;
    return NULL;
#else
    return m->bpack + perpo__pack_offset(m, j, 1);
#endif
}
/* Packed matrix j, or NULL when nothing is packed. */
static const float *perpo__wpack_get(const perpo_model *m, size_t j) {
#ifdef PERPO_USE_CBLAS
    (void)m;
    (void)j;
    return NULL;
#else
    return m->wpack && m->wpack_ok ? m->wpack + perpo__pack_offset(m, j, 0) : NULL;
#endif
}
/* The packed weight w of decoder layer l (w: 0 qkv, 1 attention out, 2 fc, 3 fc2; l = LD: the
   head), or NULL when nothing is packed. */
static const float *perpo__wpack_at(const perpo_model *m, size_t l, int w) {
    return perpo__wpack_get(m, l == (size_t)m->cfg.n_dec_layers ? 4 * l : 4 * l + (size_t)w);
}
/* The same for vision layer l (l = n_vis_layers: w 0 the patch embedding, 1 and 2 the projector). */
static const float *perpo__wpack_vis(const perpo_model *m, size_t l, int w) {
    return perpo__wpack_get(m, 4 * ((size_t)m->cfg.n_dec_layers + l) + 1 + (size_t)w);
}
/* Whether the packed weights are stale; if so, marks them valid from here on: the caller runs
   perpo__pack_weights_team (and a barrier) before anything reads them. */
static int perpo__wpack_stale(perpo_model *m) {
#ifndef PERPO_USE_CBLAS
    if (m->wpack_ok && m->wpack_version == m->params_version) return 0;
    m->wpack_ok = 1; /* perpo__wpack_get hands out slots from here on */
    m->wpack_version = m->params_version;
    return 1;
#else
    (void)m;
    return 0;
#endif
}
/* One thread's share of packing the weights (the team splits the matrices): for the forward
   and decoding (x W^T) into wpack, after perpo__wpack_stale said so; or for the backward's input
   gradients (dout W) into bpack, every backward (the parameters may have changed), the blocks'
   matrices only (perpo__bpack_used). */
static void perpo__pack_weights_team(perpo_model *m, int for_backward) {
#ifndef PERPO_USE_CBLAS
    size_t j, lo, hi, N, K;
    perpo__team_range(perpo__wpack_count(m), &lo, &hi);
    for (j = lo; j < hi; j++) {
        const float *src = m->params + perpo__wpack_src(m, j);
        perpo__wpack_shape(m, j, &N, &K);
        /* the writable slots that perpo__wpack_get and perpo__bpack_get hand out read-only */
        if (!for_backward)
            perpo__gemm_prepack(m->wpack && m->wpack_ok ? m->wpack + perpo__pack_offset(m, j, 0)
                                                        : NULL,
                                1, N, K, src, K);
        else if (perpo__bpack_used(m, j))
            perpo__gemm_prepack(m->bpack + perpo__pack_offset(m, j, 1), 0, K, N, src, K);
    }
#else
    (void)m;
    (void)for_backward;
#endif
}

/* ---- Forward and backward of one pre-LN transformer block --------------------------------- *
 * out = mid + MLP(LN2(mid)),  mid = x + Attn(LN1(x)).  x, out: (B*T, D). Team functions (see
 * perpo__team_range): one thread's share, inside the parallel region of a whole forward or
 * backward.
 * Forward: each thread runs the row-wise kernels and the products over its own rows
 * (perpo__team_rows, products through the packed weights pk: qkv, attention out, fc, fc2), so
 * the only barriers are around attention, which reads whole sequences. On return the thread's
 * own rows of out are done (a reader of other rows needs a barrier first). */
static void perpo__block_forward_team(perpo_model *m, const perpo__block *p, perpo__block_acts *a,
                                      const float *x, float *out, size_t B, size_t T, int causal,
                                      const float *const *pk) {
    const float *P = m->params;
    size_t N = B * T, D = m->D, M = m->M, lo, hi;
    perpo__epi e;
    memset(&e, 0, sizeof e);
    perpo__team_rows(N, &lo, &hi);
    perpo__layernorm_rows(a->ln1, a->ln1_mean, a->ln1_rstd, x, P + p->ln1_w, P + p->ln1_b, lo, hi,
                          D);
    e.bias = P + p->qkv_b; /* qkv = LN1(x) W^T + b */
    perpo__gemm_rows(lo, hi, 1, 3 * D, D, a->ln1, P + p->qkv_w, pk[0], a->qkv, &e);
    PERPO__OMP(barrier)
    perpo__attention_forward_team(a->atty, a->att, a->qkv, B, T, D, m->H, causal);
    PERPO__OMP(barrier)
    e.bias = P + p->attn_b;
    e.res = x;
    e.ldr = D; /* mid = atty W^T + b + x */
    perpo__gemm_rows(lo, hi, 1, D, D, a->atty, P + p->attn_w, pk[1], a->mid, &e);
    perpo__layernorm_rows(a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, P + p->ln2_w, P + p->ln2_b, lo,
                          hi, D);
    e.bias = P + p->fc_b;
    e.res = NULL;
    e.gel = a->fcg;
    e.ldg = M; /* fch = LN2 W^T + b, fcg = GELU(fch) */
    perpo__gemm_rows(lo, hi, 1, M, D, a->ln2, P + p->fc_w, pk[2], a->fch, &e);
    e.bias = P + p->fc2_b;
    e.gel = NULL;
    e.res = a->mid; /* out = fcg W^T + b + mid */
    perpo__gemm_rows(lo, hi, 1, D, M, a->fcg, P + p->fc2_w, pk[3], out, &e);
}
/* A LayerNorm's weight gradients that wait for a barrier: they sum over every row of dout. */
typedef struct perpo__ln_pending {
    float *dw, *db;
    const float *dout, *inp, *mean, *rstd;
    size_t N;
} perpo__ln_pending;
static void perpo__ln_pending_run(perpo__ln_pending *pd, size_t D) {
    if (pd->dw)
        perpo__layernorm_backward_cols_team(pd->dw, pd->db, pd->dout, pd->inp, pd->mean, pd->rstd,
                                            pd->N, D);
    pd->dw = NULL;
}
/* Backward: dres on entry dL/d(out), on return dL/dx (each thread's own rows: a reader of other
   rows needs a barrier first); parameter gradients are added into m->grads. Two barriers:
   each thread takes its own rows of dres down to the attention output's gradient (the input
   gradients, through the packed weights bk: qkv, attention out, fc, fc2), then the team splits
   the columns of the weight gradients of those (which sum over every row) and the (sequence,
   head) pairs of attention; then rows again down to dL/dx, and the columns of qkv's weight
   gradient. LN1's weight gradients need every row of their input: they go to *pend, which the
   next block (or the caller, after a barrier) runs. Products that follow each other without a
   barrier use separate workspace areas. */
static void perpo__block_backward_team(perpo_model *m, const perpo__block *p,
                                       const perpo__block_acts *a, const float *x, float *dres,
                                       size_t B, size_t T, int causal, const float *const *bk,
                                       perpo__ln_pending *pend) {
    const float *P = m->params;
    float *G = m->grads, *ws0 = m->gemm_ws, *ws1 = ws0 + m->ws_area, *ws2 = ws1 + m->ws_area;
    size_t N = B * T, D = m->D, M = m->M, lo, hi;
    perpo__epi e;
    memset(&e, 0, sizeof e);
    perpo__team_rows(N, &lo, &hi);
    e.dgel = a->fch;
    e.ldd = M; /* d_fc = (dres fc2_w) * GELU'(fch) */
    perpo__gemm_rows(lo, hi, 0, M, D, dres, P + p->fc2_w, bk[3], m->d_fc, &e);
    perpo__gemm_rows(lo, hi, 0, D, M, m->d_fc, P + p->fc_w, bk[2], m->d_tmp, NULL);
    perpo__layernorm_backward_rows(m->d_mid, dres, m->d_tmp, a->mid, P + p->ln2_w, a->ln2_mean,
                                   a->ln2_rstd, lo, hi, D); /* d_mid = dL/dmid */
    perpo__gemm_rows(lo, hi, 0, D, D, m->d_mid, P + p->attn_w, bk[1], m->d_atty, NULL);
    PERPO__OMP(barrier)
    perpo__ln_pending_run(pend, D);
    perpo__gemm_team(1, 0, D, M, N, dres, D, a->fcg, M, 1, G + p->fc2_w, M, ws0, NULL, NULL);
    perpo__colsum_team(G + p->fc2_b, dres, N, D);
    perpo__gemm_team(1, 0, M, D, N, m->d_fc, M, a->ln2, D, 1, G + p->fc_w, D, ws1, NULL, NULL);
    perpo__colsum_team(G + p->fc_b, m->d_fc, N, M);
    perpo__layernorm_backward_cols_team(G + p->ln2_w, G + p->ln2_b, m->d_tmp, a->mid, a->ln2_mean,
                                        a->ln2_rstd, N, D);
    perpo__gemm_team(1, 0, D, D, N, m->d_mid, D, a->atty, D, 1, G + p->attn_w, D, ws2, NULL, NULL);
    perpo__colsum_team(G + p->attn_b, m->d_mid, N, D);
    perpo__attention_backward_team(m->d_qkv, m->d_atty, a->att, a->qkv, B, T, D, m->H, causal,
                                   m->att_ws, 1);
    PERPO__OMP(barrier)
    perpo__gemm_rows(lo, hi, 0, D, 3 * D, m->d_qkv, P + p->qkv_w, bk[0], m->d_tmp2, NULL);
    perpo__layernorm_backward_rows(dres, m->d_mid, m->d_tmp2, x, P + p->ln1_w, a->ln1_mean,
                                   a->ln1_rstd, lo, hi, D);
    perpo__gemm_team(1, 0, 3 * D, D, N, m->d_qkv, 3 * D, a->ln1, D, 1, G + p->qkv_w, D, ws0, NULL,
                     NULL);
    perpo__colsum_team(G + p->qkv_b, m->d_qkv, N, 3 * D);
    pend->dw = G + p->ln1_w;
    pend->db = G + p->ln1_b;
    pend->dout = m->d_tmp2;
    pend->inp = x;
    pend->mean = a->ln1_mean;
    pend->rstd = a->ln1_rstd;
    pend->N = N;
}

/* Vision encoder and projector: n_img images -> img_tok (n_img*NP, D). One thread's share,
   rows split as in perpo__block_forward_team; img_tok is complete when it returns. Reads the
   packed weights: the caller refreshes them first (perpo__wpack_stale). */
static void perpo__encode_images_team(perpo_model *m, const float *const *images, size_t n_img) {
    const float *P = m->params;
    size_t D = m->D, NP = m->NP, Nv = n_img * NP, i, l, lo, hi, LV = (size_t)m->cfg.n_vis_layers;
    perpo__epi e;
    memset(&e, 0, sizeof e);
    perpo__team_range(n_img, &lo, &hi);
    for (i = lo; i < hi; i++) perpo__patchify(m->patches + i * NP * m->PPC, images[i], &m->cfg);
    PERPO__OMP(barrier)
    perpo__team_rows(Nv, &lo, &hi); /* from here on each thread's own rows, up to the blocks */
    e.bias = P + m->patch_b;
    perpo__gemm_rows(lo, hi, 1, D, m->PPC, m->patches, P + m->patch_w, perpo__wpack_vis(m, LV, 0),
                     m->vis_x[0], &e);
    for (i = lo; i < hi; i++) {
        perpo__add_inplace(m->vis_x[0] + i * D, P + m->vis_pos + (i % NP) * D, D);
        if (m->cfg.vis_sincos)
            perpo__add_inplace(m->vis_x[0] + i * D, m->vis_sincos + (i % NP) * D, D);
    }
    for (l = 0; l < LV; l++) {
        const float *pk[4];
        int w;
        for (w = 0; w < 4; w++) pk[w] = perpo__wpack_vis(m, l, w);
        perpo__block_forward_team(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->vis_x[l + 1],
                                  n_img, NP, 0, pk);
    }
    perpo__layernorm_rows(m->vis_lnf, m->vis_lnf_mean, m->vis_lnf_rstd, m->vis_x[LV],
                          P + m->vis_lnf_w, P + m->vis_lnf_b, lo, hi, D);
    e.bias = P + m->proj1_b;
    e.gel = m->proj_g;
    e.ldg = D; /* proj_h = LN W^T + b, proj_g = GELU(proj_h) */
    perpo__gemm_rows(lo, hi, 1, D, D, m->vis_lnf, P + m->proj1_w, perpo__wpack_vis(m, LV, 1),
                     m->proj_h, &e);
    e.bias = P + m->proj2_b;
    e.gel = NULL;
    perpo__gemm_rows(lo, hi, 1, D, D, m->proj_g, P + m->proj2_w, perpo__wpack_vis(m, LV, 2),
                     m->img_tok, &e);
    PERPO__OMP(barrier)
}
/* Whether a forward or backward over these rows (image and decoder rows) takes a team. */
#define PERPO__STEP_PAR(m, rows) PERPO__GEMM_PAR((rows), (m)->D, (m)->D)

/* Decoder input row: image token or token embedding, plus the learned position. */
static void perpo__embed_image_row(const perpo_model *m, float *dst, size_t img, size_t r) {
    size_t i, D = m->D;
    const float *a = m->img_tok + (img * m->NP + r) * D, *pos = m->params + m->dec_pos + r * D;
    for (i = 0; i < D; i++) dst[i] = a[i] + pos[i];
}
static void perpo__embed_token_row(const perpo_model *m, float *dst, int tok, size_t t) {
    size_t i, D = m->D;
    const float *e = m->params + m->wte + (size_t)tok * D,
                *pos = m->params + m->dec_pos + (m->NP + t) * D;
    for (i = 0; i < D; i++) dst[i] = e[i] + pos[i];
}

/* The whole forward of the batch in m (tokens, image_of, n_seq) up to the logits and their
   log-sum-exp, one thread's share: the one parallel region of perpo_forward. The team packs the
   weights first, every time: as the products did before, each for itself, since the parameters
   may have been written through a pointer from perpo_model_params after the last packing. */
static void perpo__forward_team(perpo_model *m, const float *const *images, size_t n_img) {
    size_t B = m->n_seq, T = m->T, D = m->D, L = m->L, NP = m->NP, V = m->V, r, l, lo, hi,
           LD = (size_t)m->cfg.n_dec_layers;
    perpo__pack_weights_team(m, 0);
    PERPO__OMP(barrier)
    perpo__encode_images_team(m, images, n_img);
    perpo__team_rows(B * L, &lo, &hi); /* decoder input rows, as the first block splits them */
    for (r = lo; r < hi; r++) {
        size_t b = r / L, t = r % L;
        if (t < NP)
            perpo__embed_image_row(m, m->dec_x[0] + r * D, m->image_of[b], t);
        else
            perpo__embed_token_row(m, m->dec_x[0] + r * D, m->tokens[b * T + t - NP], t - NP);
    }
    for (l = 0; l < LD; l++) {
        const float *pk[4];
        int w;
        for (w = 0; w < 4; w++) pk[w] = perpo__wpack_at(m, l, w);
        perpo__block_forward_team(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->dec_x[l + 1], B,
                                  L, 1, pk);
    }
    PERPO__OMP(barrier)
    perpo__team_rows(B * T, &lo, &hi); /* the text rows, their final LayerNorm, the head */
    for (r = lo; r < hi; r++)
        memcpy(m->txt + r * D, m->dec_x[LD] + ((r / T) * L + NP + r % T) * D, D * sizeof(float));
    perpo__layernorm_rows(m->lnf, m->lnf_mean, m->lnf_rstd, m->txt, m->params + m->lnf_w,
                          m->params + m->lnf_b, lo, hi, D);
    perpo__gemm_rows(lo, hi, 1, V, D, m->lnf, m->params + m->head_w, perpo__wpack_at(m, LD, 0),
                     m->logits, NULL); /* untied head, no bias */
    for (r = lo; r < hi; r++) m->lse[r] = perpo__logsumexp(m->logits + r * V, V);
}

/* The whole backward of the last forward, one thread's share: the one parallel region of
   perpo_backward. */
static void perpo__backward_team(perpo_model *m, const float *dlogp) {
    size_t B = m->n_seq, T = m->T, D = m->D, L = m->L, NP = m->NP, V = m->V, Nv = m->n_img * NP,
           LD = (size_t)m->cfg.n_dec_layers, LV = (size_t)m->cfg.n_vis_layers, b, r, t, v, l, lo,
           hi;
    float *G = m->grads;
    const float *P = m->params;
    perpo__epi e;
    perpo__ln_pending pend;
    pend.dw = NULL;
    perpo__pack_weights_team(m, 1); /* (read after the next barrier) */
    /* d logp_b / d logits at a counted position = onehot(target) - softmax */
    perpo__team_range(B * T, &lo, &hi);
    for (r = lo; r < hi; r++) {
        const float *z = m->logits + r * V;
        float *dz = m->dlogits + r * V, g = dlogp[r / T], lse = m->lse[r];
        int tgt = m->targets[r];
        if (tgt < 0) {
            memset(dz, 0, V * sizeof(float));
            continue;
        }
#ifdef PERPO__VEXP /* (perpo__exp16 is expf, bit for bit) */
        for (v = 0; v < V; v += 16) {
            __mmask16 k = perpo__mask16(V - v);
            __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, z + v), _mm512_set1_ps(lse));
            _mm512_mask_storeu_ps(dz + v, k, _mm512_mul_ps(_mm512_set1_ps(-g), perpo__exp16(x)));
        }
#else
        for (v = 0; v < V; v++) dz[v] = -g * expf(z[v] - lse);
#endif
        dz[tgt] += g;
    }
    PERPO__OMP(barrier)
    /* head and final LayerNorm (text rows only) */
    perpo__linear_backward_team(m->d_atty, 0, NULL, G + m->head_w, NULL, m->dlogits, m->lnf,
                                P + m->head_w, B * T, D, V, m->gemm_ws);
    PERPO__OMP(barrier)
    perpo__team_range(B * T, &lo, &hi); /* the rows the LayerNorm backward adds into */
    if (hi > lo) memset(m->d_tmp + lo * D, 0, (hi - lo) * D * sizeof(float));
    perpo__layernorm_backward_team(m->d_tmp, G + m->lnf_w, G + m->lnf_b, m->d_atty, m->txt,
                                   P + m->lnf_w, m->lnf_mean, m->lnf_rstd, B * T, D);
    PERPO__OMP(barrier)
    perpo__team_range(B, &lo, &hi);
    for (b = lo; b < hi; b++) {
        memset(m->d_res + b * L * D, 0, NP * D * sizeof(float));
        memcpy(m->d_res + (b * L + NP) * D, m->d_tmp + b * T * D, T * D * sizeof(float));
    }
    PERPO__OMP(barrier)
    /* decoder blocks, last to first */
    for (l = LD; l-- > 0;) {
        const float *bk[4];
        int w;
        for (w = 0; w < 4; w++) bk[w] = perpo__bpack_get(m, 4 * l + (size_t)w);
        perpo__block_backward_team(m, &m->dec[l], &m->dec_acts[l], m->dec_x[l], m->d_res, B, L, 1,
                                   bk, &pend);
    }
    PERPO__OMP(barrier)
    perpo__ln_pending_run(&pend, D);
    /* embeddings: positions, token table, and the image tokens each sequence read. The team
       splits the D columns (d_img's too, zeroed here); every column is summed in the same order */
    perpo__team_range(D, &lo, &hi);
    for (r = 0; r < Nv && hi > lo; r++) memset(m->d_img + r * D + lo, 0, (hi - lo) * sizeof(float));
    for (b = 0; b < B && hi > lo; b++) {
        const float *d = m->d_res + b * L * D + lo;
        for (r = 0; r < NP; r++) {
            perpo__add_inplace(m->d_img + (m->image_of[b] * NP + r) * D + lo, d + r * D, hi - lo);
            perpo__add_inplace(G + m->dec_pos + r * D + lo, d + r * D, hi - lo);
        }
        for (t = 0; t < T; t++) {
            perpo__add_inplace(G + m->wte + (size_t)m->tokens[b * T + t] * D + lo, d + (NP + t) * D,
                               hi - lo);
            perpo__add_inplace(G + m->dec_pos + (NP + t) * D + lo, d + (NP + t) * D, hi - lo);
        }
    }
    PERPO__OMP(barrier)
    /* projector: img_tok = proj2(GELU(proj1(LN(x)))); GELU's backward in proj2's epilogue */
    memset(&e, 0, sizeof e);
    e.dgel = m->proj_h;
    e.ldd = D;
    perpo__linear_backward_team(m->d_atty, 0, &e, G + m->proj2_w, G + m->proj2_b, m->d_img,
                                m->proj_g, P + m->proj2_w, Nv, D, D, m->gemm_ws);
    PERPO__OMP(barrier)
    perpo__linear_backward_team(m->d_tmp, 0, NULL, G + m->proj1_w, G + m->proj1_b, m->d_atty,
                                m->vis_lnf, P + m->proj1_w, Nv, D, D, m->gemm_ws);
    PERPO__OMP(barrier)
    perpo__team_range(Nv, &lo, &hi); /* the rows the LayerNorm backward adds into */
    if (hi > lo) memset(m->d_res + lo * D, 0, (hi - lo) * D * sizeof(float));
    perpo__layernorm_backward_team(m->d_res, G + m->vis_lnf_w, G + m->vis_lnf_b, m->d_tmp,
                                   m->vis_x[LV], P + m->vis_lnf_w, m->vis_lnf_mean, m->vis_lnf_rstd,
                                   Nv, D);
    PERPO__OMP(barrier)
    /* vision blocks, then the positions (columns split) and the patch embedding (its input is
       data: no input gradient); both only read d_res */
    for (l = LV; l-- > 0;) {
        const float *bk[4];
        int w;
        for (w = 0; w < 4; w++) bk[w] = perpo__bpack_get(m, 4 * (LD + l) + 1 + (size_t)w);
        perpo__block_backward_team(m, &m->vis[l], &m->vis_acts[l], m->vis_x[l], m->d_res, m->n_img,
                                   NP, 0, bk, &pend);
    }
    PERPO__OMP(barrier)
    perpo__ln_pending_run(&pend, D);
    perpo__team_range(D, &lo, &hi);
    for (r = 0; r < Nv && hi > lo; r++)
        perpo__add_inplace(G + m->vis_pos + (r % NP) * D + lo, m->d_res + r * D + lo, hi - lo);
    perpo__linear_backward_team(NULL, 0, NULL, G + m->patch_w, G + m->patch_b, m->d_res, m->patches,
                                P + m->patch_w, Nv, m->PPC, D, m->gemm_ws);
}

/* The fast path's entries, which perpo_forward and perpo_backward take off the reference path
   (section 3, "The switch"): the whole forward of the batch in m, or the whole backward of the
   last forward, each in one parallel region. */
static void perpo__forward_fast(perpo_model *m, const float *const *images, size_t n_img) {
    (void)perpo__wpack_stale(m); /* (the forward packs them whether stale or not) */
    PERPO__OMP(parallel if (PERPO__STEP_PAR(m, m->n_seq * m->L + n_img * m->NP)))
    perpo__forward_team(m, images, n_img);
}
static void perpo__backward_fast(perpo_model *m, const float *dlogp) {
    PERPO__OMP(parallel if (PERPO__STEP_PAR(m, m->n_seq * m->L + m->n_img * m->NP)))
    perpo__backward_team(m, dlogp);
}

/* ---- Generation with a KV cache: prefill and token steps -------------------------------- */
/* (Not in bfloat16 builds: their products run on pairs, and the token steps take the MR tile.) */
#if defined(PERPO__VEC) && !defined(PERPO_USE_BF16)
#define PERPO__DEC_SHORT
/* C (M,N) = A (M,K) . W^T [+ epilogue] for M <= 4 rows, W prepacked (perpo__gemm_prepack): the
   products of a thread's token step, whose M (its live sequences) is often under MR, where the
   MR-row tile would also do the work of the zero rows it pads with. A 4-row tile (rows past M
   repeat row 0 and are not stored) over all of K in registers: each element is the tile's
   multiply-add chain over k in order from 0, so the same value (the K-blocks only move where
   the packed panels lie), and the epilogue runs per tile as the product runs it. */
#define PERPO__SHORT_ROWS(X) X(0) X(1) X(2) X(3)
#define PERPO__SHORT_FMA(i)                                                                        \
    {                                                                                              \
        PERPO__VEC ai = PERPO__VSET1(a##i[k]);                                                     \
        c##i##0 = PERPO__VFMA(ai, b0, c##i##0);                                                    \
        c##i##1 = PERPO__VFMA(ai, b1, c##i##1);                                                    \
    }
#define PERPO__SHORT_STORE(i)                                                                      \
    PERPO__VSTORE(tile + i * PERPO__NR, c##i##0);                                                  \
    PERPO__VSTORE(tile + i * PERPO__NR + PERPO__VLEN, c##i##1);
static void perpo__dec_gemm_short(size_t M, size_t N, size_t K, const float *A, const float *packed,
                                  float *C, const perpo__epi *e) {
    size_t np = (N + PERPO__NR - 1) / PERPO__NR, jp, k0, k, r;
    const float *a0 = A, *a1 = A + (M > 1 ? K : 0), *a2 = A + (M > 2 ? 2 * K : 0),
                *a3 = A + (M > 3 ? 3 * K : 0);
    float tile[4 * PERPO__NR];
    for (jp = 0; jp < np; jp++) {
        size_t j = jp * PERPO__NR, nr = N - j < PERPO__NR ? N - j : PERPO__NR;
        PERPO__VEC c00 = PERPO__VZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
                   c30 = c00, c31 = c00;
        for (k0 = 0; k0 < K; k0 += PERPO__KC) {
            size_t kc = K - k0 < PERPO__KC ? K - k0 : PERPO__KC;
            const float *b = packed + k0 * np * PERPO__NR + jp * kc * PERPO__NR,
                        *end = b + kc * PERPO__NR;
            PERPO__VEC b0 = PERPO__VLOAD(b), b1 = PERPO__VLOAD(b + PERPO__VLEN), n0, n1;
            for (k = k0; k < k0 + kc; k++, b0 = n0, b1 = n1) {
                /* the next k's B loaded ahead (the last k reloads its own) keeps B in registers:
                   GCC otherwise reads it again for each row, at half the speed */
                b = b + PERPO__NR < end ? b + PERPO__NR : b;
                n0 = PERPO__VLOAD(b);
                n1 = PERPO__VLOAD(b + PERPO__VLEN);
                PERPO__SHORT_ROWS(PERPO__SHORT_FMA)
            }
        }
        PERPO__SHORT_ROWS(PERPO__SHORT_STORE)
        for (r = 0; r < M; r++) memcpy(C + r * N + j, tile + r * PERPO__NR, nr * sizeof(float));
        if (e) perpo__epi_apply(e, C + j, N, 0, j, M, nr);
    }
}
#endif

/* A product of decoding: one thread's share of it (par: inside a region the whole team runs
   through), or all of it on the calling thread (in a 4-row tile when it has 4 rows or fewer). */
static void perpo__dec_gemm(int par, size_t M, size_t N, size_t K, const float *A, const float *W,
                            const float *packed, float *C, float *ws, const perpo__epi *e) {
    if (par) {
        perpo__gemm_team(0, 1, M, N, K, A, K, W, K, 0, C, N, ws, packed, e);
        return;
    }
#ifdef PERPO__DEC_SHORT
    if (M > 0 && M <= 4 && packed) { /* (MR is 6 or 8) */
        perpo__dec_gemm_short(M, N, K, A, packed, C, e);
        return;
    }
#endif
    perpo__gemm_rows(0, M, 1, N, K, A, W, packed, C, e);
}

/* For each of nb problems b: out_b[i] (i < w) = start + sum over k < n of c_b[k] * M_b[k*ld + i],
   each a multiply-add chain over k in order; start is 0 (from_zero) or out_b[i]. Problem b's
   arrays are out + b*so, c + b*sc, M + b*sm. The two products of cached attention, one problem
   per head: scores (c = q, M = the keys, transposed) and weighted values (c = the
   probabilities, M = the values). In registers, 16 columns of one problem a unit, 4 units at
   a time: a head's chains alone are too few to hide the multiply-add's latency. */
#ifdef __AVX512F__
#define PERPO__COMBINE_UNIT(j) /* slot j: unit (pb, pv), then on to the next unit if any */        \
    {                                                                                              \
        size_t i = pv * 16;                                                                        \
        o##j = out + pb * so + i;                                                                  \
        c##j = c + pb * sc;                                                                        \
        m##j = M + pb * sm + i;                                                                    \
        msk##j = perpo__mask16(w - i);                                                             \
        a##j = from_zero ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(msk##j, o##j);              \
        if (u + j + 1 < units && ++pv == nv) {                                                     \
            pv = 0;                                                                                \
            pb++;                                                                                  \
        }                                                                                          \
    }
#define PERPO__COMBINE_SLOTS(X) X(0) X(1) X(2) X(3)
#define PERPO__COMBINE_STORE(j)                                                                    \
    if (u + j < units) _mm512_mask_storeu_ps(o##j, msk##j, a##j);
#define PERPO__COMBINE_FMA(j)                                                                      \
    a##j = _mm512_fmadd_ps(_mm512_set1_ps(c##j[k]), _mm512_maskz_loadu_ps(msk##j, m##j + k * ld),  \
                           a##j);
#endif
static void perpo__combine_rows(float *PERPO__RESTRICT out, size_t so,
                                const float *PERPO__RESTRICT c, size_t sc,
                                const float *PERPO__RESTRICT M, size_t sm, size_t ld, size_t n,
                                size_t w, size_t nb, int from_zero) {
    size_t k;
#ifdef __AVX512F__
    size_t nv = (w + 15) / 16, units = nb * nv, u, pb = 0, pv = 0; /* unit: problem pb, vector pv */
    for (u = 0; u < units; u += 4) { /* (past the last unit, a slot repeats it, unstored) */
        float *o0, *o1, *o2, *o3;
        const float *c0, *c1, *c2, *c3, *m0, *m1, *m2, *m3;
        __mmask16 msk0, msk1, msk2, msk3; /* each slot's lanes */
        __m512 a0, a1, a2, a3;
        PERPO__COMBINE_SLOTS(PERPO__COMBINE_UNIT)
        for (k = 0; k < n; k++) { PERPO__COMBINE_SLOTS(PERPO__COMBINE_FMA) }
        PERPO__COMBINE_SLOTS(PERPO__COMBINE_STORE)
    }
#else
    size_t i, b;
    for (b = 0; b < nb; b++) {
        float *ob = out + b * so;
        const float *cb = c + b * sc, *mb = M + b * sm;
        if (from_zero)
            for (i = 0; i < w; i++) ob[i] = 0.0f;
        for (k = 0; k < n; k++)
#ifdef PERPO__VEC /* AVX2: fused, as the tile's explicit FMAs (whatever the contraction flags) */
            for (i = 0; i < w; i++) ob[i] = fmaf(cb[k], mb[k * ld + i], ob[i]);
#else
            for (i = 0; i < w; i++) ob[i] += cb[k] * mb[k * ld + i];
#endif
    }
#endif
}

/* Decoder over rows [r0, r1) of x: n sequences x Lr new rows each (row g belongs to sequence
   g / Lr, at position pos[s] + g % Lr, cache slot slot[s]). Layer by layer: K/V go to the cache,
   each row attends to everything before it; in a prefill's last layer only each sequence's last
   row goes on past its keys and values. Then the final LayerNorm and the head on each
   sequence's last row, into logits (n, V). par: one thread's share, called by the whole team of
   the prefill's parallel region (rows, product columns and rows again, with a barrier where a
   kernel reads another thread's output); else everything runs on the calling thread (one
   thread's sequences of a token step, or of a prefill split by sequence). The cache keeps keys transposed per head, (head, hd, L),
   so a row's scores are axpys over contiguous keys, and values as (head, L, hd). Sequence s (a
   slot) reads its first shared[s] positions from slot root[s] (a prefill it shares; root, shared
   may be NULL). */
typedef struct perpo__dec_bufs { /* per-row scratch of decoding, indexed by row */
    float *ln, *mean, *rstd, *qkv, *atty, *tmp, *fch,
        *scores; /* (R,D) (R) (R) (R,3D) (R,D) (R,D) (R,M) (R,H,L) */
} perpo__dec_bufs;
/* [lo, hi) of n items: this thread's share when par, else all of them. */
static void perpo__span_range(int par, size_t n, size_t *lo, size_t *hi) {
    if (par)
        perpo__team_range(n, lo, hi);
    else {
        *lo = 0;
        *hi = n;
    }
}
static void perpo__decode_span(perpo_model *m, const perpo__dec_bufs *bf, size_t r0, size_t r1,
                               size_t Lr, const size_t *slot, const size_t *pos, const size_t *root,
                               const size_t *shared, float *x, float *logits, int par) {
    const float *P = m->params;
    size_t D = m->D, H = m->H, hd = D / H, M = m->M, L = m->L, R = r1 - r0, l, i, lo, hi,
           LD = (size_t)m->cfg.n_dec_layers;
    size_t s0 = r0 / Lr, s1 = r1 / Lr, s;
    float scale = 1.0f / sqrtf((float)hd);
    float *xr = x + r0 * D, *ln = bf->ln + r0 * D, *qkv = bf->qkv + r0 * 3 * D,
          *atty = bf->atty + r0 * D, *xo = xr;
    float *tmp = bf->tmp + r0 * D, *fch = bf->fch + r0 * M, *mean = bf->mean + r0,
          *rstd = bf->rstd + r0;
    float *ws = par ? m->gemm_ws : NULL;
    perpo__epi e;
    for (l = 0; l < LD; l++) {
        const perpo__block *p = &m->dec[l];
        float *K = m->kcache + l * m->max_batch * L * D, *Vc = m->vcache + l * m->max_batch * L * D;
        /* After the keys and values, the layer goes on for rows first + i * step, i < Rt: all
           rows but in a prefill's last layer, where only each sequence's last row goes on (the
           logits read nothing else); its rows then end compact, in atty. */
        int last_rows = l + 1 == LD && Lr > 1;
        size_t step = last_rows ? Lr : 1, first = last_rows ? Lr - 1 : 0, Rt = R / step;
        perpo__span_range(par, R, &lo, &hi); /* rows of the row-wise kernels */
        perpo__layernorm_rows(ln, mean, rstd, xr, P + p->ln1_w, P + p->ln1_b, lo, hi, D);
        if (par) { PERPO__OMP(barrier) }
        memset(&e, 0, sizeof e);
        e.bias = P + p->qkv_b;
        perpo__dec_gemm(par, R, 3 * D, D, ln, P + p->qkv_w, perpo__wpack_at(m, l, 0), qkv, ws, &e);
        if (par) { PERPO__OMP(barrier) }
        for (i = lo; i < hi; i++) {
            size_t g = r0 + i, t = pos[g / Lr] + g % Lr, h, j;
            float *Kt = K + slot[g / Lr] * L * D, *Vs = Vc + slot[g / Lr] * L * D;
            const float *q = qkv + i * 3 * D;
            for (h = 0; h < H; h++)
                for (j = 0; j < hd; j++) {
                    Kt[(h * hd + j) * L + t] = q[D + h * hd + j];
                    Vs[(h * L + t) * hd + j] = q[2 * D + h * hd + j];
                }
        }
        if (par) { /* a row reads the keys and values of the rows before it */
            PERPO__OMP(barrier)
        }
        perpo__span_range(par, Rt, &lo, &hi);
        for (i = lo; i < hi; i++) {
            size_t g = r0 + first + i * step, sq = g / Lr, n_keys = pos[sq] + g % Lr + 1;
            size_t own = slot[sq], src = root ? root[own] : own, sh = shared ? shared[own] : 0;
            const float *Kt = K + own * L * D, *Vs = Vc + own * L * D;
            const float *Kr = K + src * L * D, *Vr = Vc + src * L * D; /* shared prefix: [0, sh) */
            float *sc = bf->scores + (r0 + i) * H * L; /* head h's scores at sc + h * L */
            const float *q = qkv + (g - r0) * 3 * D;
            float *o = atty + i * D;
            if (sh > n_keys) sh = n_keys;
            perpo__combine_rows(sc, L, q, hd, Kr, hd * L, L, hd, sh, H, 1);
            perpo__combine_rows(sc + sh, L, q, hd, Kt + sh, hd * L, L, hd, n_keys - sh, H, 1);
            perpo__softmax_rows(sc, L, H, n_keys, 0, scale); /* each head's n_keys scores */
            perpo__combine_rows(o, hd, sc, L, Vr, L * hd, hd, sh, hd, H, 1);
            perpo__combine_rows(o, hd, sc + sh, L, Vs + sh * hd, L * hd, hd, n_keys - sh, hd, H, 0);
        }
        if (par) { PERPO__OMP(barrier) }
        e.bias = P + p->attn_b;
        e.res = xr + first * D;
        e.ldr = step * D; /* tmp = x + atty W^T + b */
        perpo__dec_gemm(par, Rt, D, D, atty, P + p->attn_w, perpo__wpack_at(m, l, 1), tmp, ws, &e);
        if (par) { PERPO__OMP(barrier) }
        perpo__layernorm_rows(ln, mean, rstd, tmp, P + p->ln2_w, P + p->ln2_b, lo, hi, D);
        if (par) { PERPO__OMP(barrier) }
        e.bias = P + p->fc_b;
        e.res = NULL;
        e.gel = fch;
        e.ldg = M; /* GELU in place */
        perpo__dec_gemm(par, Rt, M, D, ln, P + p->fc_w, perpo__wpack_at(m, l, 2), fch, ws, &e);
        if (par) { PERPO__OMP(barrier) }
        if (last_rows) xo = atty; /* (read by nothing after the product above) */
        e.bias = P + p->fc2_b;
        e.gel = NULL;
        e.res = tmp;
        e.ldr = D; /* x = tmp + GELU(fc) W^T + b */
        perpo__dec_gemm(par, Rt, D, M, fch, P + p->fc2_w, perpo__wpack_at(m, l, 3), xo, ws, &e);
        if (par) { PERPO__OMP(barrier) }
    }
    /* the final LayerNorm and the head on each sequence's last row, now row s - s0 of xo */
    perpo__span_range(par, s1 - s0, &lo, &hi);
    for (s = s0 + lo; s < s0 + hi; s++)
        memcpy(m->g_tmp + s * D, xo + (s - s0) * D, D * sizeof(float));
    perpo__layernorm_rows(m->g_ln, m->g_mean, m->g_rstd, m->g_tmp, P + m->lnf_w, P + m->lnf_b,
                          s0 + lo, s0 + hi, D);
    if (par) { PERPO__OMP(barrier) }
    perpo__dec_gemm(par, s1 - s0, m->V, D, m->g_ln + s0 * D, P + m->head_w,
                    perpo__wpack_at(m, LD, 0), logits + s0 * m->V, ws, NULL);
}

/* The scratch of token steps: rows of the generation buffers, one per sequence. */
static void perpo__token_bufs(perpo_model *m, perpo__dec_bufs *bf) {
    bf->ln = m->g_ln;
    bf->mean = m->g_mean;
    bf->rstd = m->g_rstd;
    bf->qkv = m->g_qkv;
    bf->atty = m->g_atty;
    bf->tmp = m->g_tmp;
    bf->fch = m->g_fch;
    bf->scores = m->g_scores;
}
/* Prefill: runs the decoder with the KV cache over n sequences x Lr new rows each (Lr > 1), in one
   parallel region: with at least two sequences a thread, each thread runs its own sequences
   (perpo__team_range of n) without a barrier; with fewer, the threads split each kernel.
   x (n*Lr, D) holds the input rows (embedding + position) and is overwritten. Sequence s writes
   K/V at positions pos[s] .. pos[s]+Lr-1 of cache slot slot[s] and attends to everything before.
   The logits of each sequence's last row go to logits (n, V). Same kernels, same order of
   operations as the training forward, so the two agree bit for bit. (Token steps:
   perpo__decode_team.) */
static void perpo__decode_cached(perpo_model *m, size_t n, size_t Lr, const size_t *slot,
                                 const size_t *pos, float *x, float *logits) {
    size_t work = n * Lr * (size_t)m->cfg.n_dec_layers * m->D * (4 * m->D + 2 * m->M);
    perpo__block_acts *a = &m->dec_acts[0]; /* up to max_batch * L rows: the first decoder
                                               block's training buffers */
    perpo__dec_bufs bf;
    (void)work; /* (only the parallel region's condition reads it) */
    bf.ln = a->ln1;
    bf.mean = a->ln1_mean;
    bf.rstd = a->ln1_rstd;
    bf.qkv = a->qkv;
    bf.atty = a->atty;
    bf.tmp = a->mid;
    bf.fch = a->fch;
    bf.scores = a->att;
    PERPO__OMP(parallel if (work >= 64 * PERPO__PAR_MIN))
    {
        size_t lo, hi, nt = 1;
#ifdef _OPENMP
        nt = (size_t)omp_get_num_threads();
#endif
        perpo__team_range(n, &lo, &hi);
        if (n >= 2 * nt) {
            if (hi > lo)
                perpo__decode_span(m, &bf, lo * Lr, hi * Lr, Lr, slot, pos, NULL, NULL, x, logits,
                                   0);
        } else
            perpo__decode_span(m, &bf, 0, n * Lr, Lr, slot, pos, NULL, NULL, x, logits, 1);
    }
}

/* Prefill of n sequences (slot[j]: sequence index) of Lp rows each, embedded in dec_x[0]; their
   last rows' logits go to g_logits. Returns 0: how many are still pending. */
static size_t perpo__prefill(perpo_model *m, size_t n, size_t Lp, const size_t *slot, size_t *pos) {
    size_t j, V = m->V;
    for (j = 0; j < n; j++) pos[j] = 0;
    perpo__decode_cached(m, n, Lp, slot, pos, m->dec_x[0], m->logits);
    for (j = 0; j < n; j++) memcpy(m->g_logits + slot[j] * V, m->logits + j * V, V * sizeof(float));
    return 0;
}

/* One decoding step's bookkeeping for sequence s after it chose token next: EOS or a full answer
   ends it; otherwise the byte is written to its answer, and row k of the scratch gets the token's
   embedding at the position it takes (slot[k] = s). Returns 1 when the sequence goes on. */
static int perpo__gen_append(perpo_model *m, perpo__gen_seq *seq, size_t s, int next, char *out,
                             size_t out_cap, size_t k, size_t *slot, size_t *pos) {
    if (next == PERPO_TOK_EOS) {
        seq[s].done = 1;
        return 0;
    }
    if (seq[s].len + 1 < out_cap) out[s * out_cap + seq[s].len] = (char)next;
    if (++seq[s].len >= seq[s].cap) {
        seq[s].done = 1;
        return 0;
    }
    slot[k] = s;
    pos[k] = m->NP + seq[s].prompt_len + 1 + seq[s].len; /* where the new token sits */
    perpo__embed_token_row(m, m->g_x + k * m->D, next, pos[k] - m->NP);
    return 1;
}
/* Sequence s's next token from its row of logits: the greedy choice (seq[s].next), or the
   candidates of its next draw (perpo__gen_draws). */
static void perpo__gen_ready(perpo_model *m, perpo__gen_seq *seq, size_t s, const float *logits,
                             const perpo_sample_config *sc) {
    if (sc->temperature <= 0.0f)
        seq[s].next = perpo__greedy_token(m, logits);
    else
        perpo__sample_prepare(m, logits, sc, m->sort_buf + s * m->V, &seq[s].keep, &seq[s].total);
}

/* The draws of sampled token step t, as one thread sees them. Each random stream (ns of them:
   one per image, or one for the call) gives its numbers in sequence order to the sequences that
   draw at step t (t < seq[s].stop). Every thread replays all the draws from the streams' states
   of step t (rng[(t % 2) * ns + i]) and keeps the tokens of its own sequences [lo, hi)
   (seq[s].next), so each sequence gets the number the serial order gives it; the thread that
   owns sequence 0 stores the states of step t + 1 (the other half of rng). Returns whether any
   sequence drew. */
static int perpo__gen_draws(perpo_model *m, perpo__gen_seq *seq, size_t n, const size_t *image_of,
                            perpo__rng *rng, size_t ns, size_t t, size_t lo, size_t hi) {
    size_t i, s, stop;
    int any = 0;
    for (i = 0; i < ns; i++) {
        perpo__rng r = rng[(t % 2) * ns + i];
        for (s = 0; s < n; s++) {
            if (ns > 1 && (image_of ? image_of[s] : s) != i) continue;
            PERPO__OMP(atomic read)
            stop = seq[s].stop; /* (its owner may be setting it to t + 1) */
            if (t >= stop) continue;
            any = 1;
            if (s >= lo && s < hi)
                seq[s].next =
                    perpo__sample_draw(m->sort_buf + s * m->V, seq[s].keep, seq[s].total, &r);
            else
                (void)perpo__rng_uniform(&r); /* another thread's sequence: its number */
        }
        if (lo == 0 && hi > 0) rng[((t + 1) % 2) * ns + i] = r;
    }
    return any;
}

/* Token steps after the prefill, one thread's share: the thread runs its own sequences [lo, hi)
   (perpo__team_range of n) to their end, as rows [lo, lo + live) of the scratch, slot and pos.
   Greedy decoding draws no random numbers, so nothing ties one sequence's steps to another's:
   no barrier for every token of the call. Sampled decoding replays each step's draws on every
   thread (perpo__gen_draws; rng, ns: the streams) with one barrier a step, after which every
   thread sees the sequences that stopped. Any split gives the same rows the same kernels, so
   the same values. */
static void perpo__decode_team(perpo_model *m, perpo__gen_seq *seq, size_t n, size_t *slot,
                               size_t *pos, const size_t *root, const size_t *shared,
                               const perpo_sample_config *sc, const size_t *image_of,
                               perpo__rng *rng, size_t ns, char *out, size_t out_cap) {
    size_t lo, hi, s, k, live, t, V = m->V;
    int sampled = sc->temperature > 0.0f, any;
    perpo__dec_bufs bf;
    perpo__token_bufs(m, &bf);
    perpo__team_range(n, &lo, &hi);
    for (s = lo; s < hi; s++) /* first tokens: from the prefills' logits */
        if (!seq[s].done) perpo__gen_ready(m, seq, s, m->g_logits + s * V, sc);
    for (t = 0;; t++) {
        any = sampled && perpo__gen_draws(m, seq, n, image_of, rng, ns, t, lo, hi);
        live = 0;
        for (s = lo; s < hi; s++) {
            if (seq[s].done) continue;
            if (perpo__gen_append(m, seq, s, seq[s].next, out, out_cap, lo + live, slot, pos))
                live++;
            else if (sampled) {
                PERPO__OMP(atomic write)
                seq[s].stop = t + 1;
            }
        }
        if (sampled ? !any : !live) break;
        if (live) {
            perpo__decode_span(m, &bf, lo, lo + live, 1, slot, pos, root, shared, m->g_x,
                               m->g_logits, 0);
            for (k = lo; k < lo + live; k++)
                perpo__gen_ready(m, seq, slot[k], m->g_logits + k * V, sc);
        }
        if (sampled) { /* the stops of step t, before anyone draws for step t + 1 */
            PERPO__OMP(barrier)
        }
    }
}

/* Cached path: encode images once, prefill each distinct (image, prompt) (consecutive ones of
   the same length together), then decode, each thread its own sequences to their end in one
   parallel region (perpo__decode_team; sampled draws follow sequence order in each stream).
   streams: NULL, or 2 x n_img states, the first n_img seeded (perpo__gen_draws). */
static void perpo__generate_cached(perpo_model *m, const perpo_gen_request *req,
                                   const perpo_sample_config *sc, perpo__gen_seq *seq, size_t *slot,
                                   size_t *pos, size_t *root, size_t *shared, perpo__rng *streams,
                                   char *out, size_t out_cap) {
    size_t n = req->n_seq, D = m->D, NP = m->NP, V = m->V, s, r, i, n_pend = 0, pend_Lp = 0;
    float *x;
    perpo__rng rng[2];   /* without streams: the call's one stream, at even and odd token steps */
    m->have_forward = 0; /* the vision encoder reuses the training activations */
    {                    /* one region: pack the decoding weights if stale, and encode the images */
        int stale = perpo__wpack_stale(m);
        PERPO__OMP(parallel if (PERPO__STEP_PAR(m, req->n_img * NP)))
        {
            if (stale) {
                perpo__pack_weights_team(m, 0);
                PERPO__OMP(barrier)
            }
            perpo__encode_images_team(m, req->images, req->n_img);
        }
    }
    for (s = 0; s < n; s++) {
        size_t img = req->image_of ? req->image_of[s] : s, pl = seq[s].prompt_len, Lp = NP + pl + 2;
        size_t prev = s > 0 ? (req->image_of ? req->image_of[s - 1] : s - 1) : (size_t)-1;
        if (prev == img && strcmp(req->prompts[s], req->prompts[s - 1]) == 0) {
            /* same image and prompt as the previous sequence: read its prefill, copy its logits */
            if (n_pend > 0)
                n_pend = perpo__prefill(m, n_pend, pend_Lp, slot, pos); /* (s - 1 among them) */
            root[s] = root[s - 1];
            shared[s] = Lp;
            memcpy(m->g_logits + s * V, m->g_logits + (s - 1) * V, V * sizeof(float));
            continue;
        }
        root[s] = s;
        shared[s] = 0;
        /* a prefill of its own: batched with the pending ones of the same length */
        if (n_pend > 0 && Lp != pend_Lp) n_pend = perpo__prefill(m, n_pend, pend_Lp, slot, pos);
        if (n_pend == 0) pend_Lp = Lp;
        x = m->dec_x[0] + n_pend * Lp * D;
        for (r = 0; r < NP; r++) perpo__embed_image_row(m, x + r * D, img, r);
        perpo__embed_token_row(m, x + NP * D, PERPO_TOK_BOS, 0);
        for (i = 0; i < pl; i++)
            perpo__embed_token_row(m, x + (NP + 1 + i) * D, (unsigned char)req->prompts[s][i],
                                   1 + i);
        perpo__embed_token_row(m, x + (NP + 1 + pl) * D, PERPO_TOK_SEP, 1 + pl);
        slot[n_pend] = s;
        n_pend++;
    }
    if (n_pend > 0) n_pend = perpo__prefill(m, n_pend, pend_Lp, slot, pos);
    { /* every token step in one region */
        size_t work = n * (size_t)m->cfg.n_dec_layers * D * (4 * D + 2 * m->M);
        (void)work;
        if (!streams) perpo__rng_seed(&rng[0], sc->seed);
        PERPO__OMP(parallel if (n > 1 && work >= 64 * PERPO__PAR_MIN))
        perpo__decode_team(m, seq, n, slot, pos, root, shared, sc, req->image_of,
                           streams ? streams : rng, streams ? req->n_img : 1, out, out_cap);
    }
}

/* ==========================================================================================
   11. Files: regular-file checks, opening and reading a whole file, error messages and the
       durability hook of checkpoint saves (for sections 12 and 13)
   ========================================================================================== */

/* ---- Files: regular-file checks and the durability hook ---------------------------------- */
/* 1 when path names something that exists and is not a regular file (a folder, a device, a
   FIFO); 0 for a regular file, a missing one, or where the platform cannot tell. */
static int perpo__not_regular(const char *path) {
#ifdef PERPO__POSIX
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
#else
    (void)path;
    return 0;
#endif
}

/* The start of every file loader: opens path for reading, positioned at its start; *fsize gets
   the size a seekable file reports, else -1. PERPO_ERR_IO when it cannot be opened, is not a
   regular file, or its first read fails (a folder opens on some systems and only fails there);
   err (may be NULL) then gets why. */
static perpo_status perpo__open_sized(const char *path, FILE **f, long *fsize, char *err,
                                      size_t cap) {
    int c;
    *f = NULL;
    *fsize = -1;
    if (perpo__not_regular(path)) {
        perpo__errf(err, cap, "not a regular file");
        return PERPO_ERR_IO;
    }
    if (!(*f = fopen(path, "rb"))) {
        perpo__errf(err, cap, "cannot open: %s", strerror(errno));
        return PERPO_ERR_IO;
    }
    c = getc(*f);
    if (c == EOF && ferror(*f)) {
        fclose(*f);
        *f = NULL;
        perpo__errf(err, cap, "read error (not a regular file?)");
        return PERPO_ERR_IO;
    }
    if (fseek(*f, 0, SEEK_END) == 0) *fsize = ftell(*f);
    rewind(*f);
    return PERPO_OK;
}

/* Reads f to its end (or to max + 1 bytes: one byte past max tells the caller the file is
   longer) into one allocation of ctx, starting with room for first_cap bytes (in [1, max + 1])
   and doubling; closes f. *out is the caller's to free with PERPO_FREE(ctx, ...). */
static perpo_status perpo__read_to_end(FILE *f, void *ctx, size_t first_cap, size_t max,
                                       unsigned char **out, size_t *len, char *err, size_t cap) {
    size_t n = 0, room = first_cap;
    unsigned char *buf = (unsigned char *)PERPO_MALLOC(ctx, room), *nb;
    int rd_err;
    *out = NULL;
    *len = 0;
    if (!buf) {
        fclose(f);
        perpo__errf(err, cap, "out of memory");
        return PERPO_ERR_NOMEM;
    }
    for (;;) {
        n += fread(buf + n, 1, room - n, f);
        if (n < room || n > max) break;
        room = room > max / 2 ? max + 1 : 2 * room;
        if (!(nb = (unsigned char *)PERPO_REALLOC(ctx, buf, room))) {
            PERPO_FREE(ctx, buf);
            fclose(f);
            perpo__errf(err, cap, "out of memory");
            return PERPO_ERR_NOMEM;
        }
        buf = nb;
    }
    rd_err = ferror(f);
    fclose(f);
    if (rd_err) {
        PERPO_FREE(ctx, buf);
        perpo__errf(err, cap, "read error");
        return PERPO_ERR_IO;
    }
    *out = buf;
    *len = n;
    return PERPO_OK;
}

/* The default PERPO_SYNC: fsync() of the file or folder where the platform declares it.
   A folder that cannot be opened or synced (some file systems refuse) counts as synced. */
static PERPO__MAYBE_UNUSED int perpo__sync_default(const char *path, int is_dir) {
#if defined(PERPO__POSIX) && defined(_POSIX_FSYNC) && (_POSIX_FSYNC + 0) > 0
    int fd = open(path, O_RDONLY), r;
    if (fd < 0) return is_dir ? 0 : -1;
    r = fsync(fd);
    if (r != 0 && is_dir && (errno == EINVAL || errno == EBADF)) r = 0;
    if (close(fd) != 0 && !is_dir) r = -1;
    return r;
#else
    (void)path;
    (void)is_dir;
    return 0;
#endif
}
#ifndef PERPO_SYNC
#define PERPO_SYNC(path, is_dir) perpo__sync_default((path), (is_dir))
#endif

/* ==========================================================================================
   12. Checkpoints. Format v2, all little-endian:
        "PERPOCKP"  u32 version = 2  u32 flags (bit 0: optimizer state follows the parameters)
        15 x u32 config (image_h image_w channels patch_h patch_w pos_channels vis_sincos
                         d_model n_heads n_vis_layers n_dec_layers mlp_mult max_text vocab
                         max_batch): every field of perpo_config but alloc_ctx
        u64 n_params   f32 params[n_params]
        [flags & 1: u32 optimizer step, f32 adam_m[n_params], f32 adam_v[n_params]]
        u32 CRC-32 of every byte before it
      Written to a temporary file of this save alone ("<path>.<pid>.<8 hex digits>.tmp", created
      new) and renamed into place, so a crash never leaves a half-written file under the real
      name; it may leave that temporary file, which no later save opens. Loading derives the
      exact file size from the header and checks it before allocating anything, then checks the
      CRC before handing out a model.
      Version 1 files still load: their 12 config words are image_h image_w channels patch
      d_model ... max_batch (square patches, no position channels, no sin-cos code).
   ========================================================================================== */
#define PERPO__CKPT_MAGIC        "PERPOCKP"
#define PERPO__CKPT_VERSION      2u
#define PERPO__CKPT_NCFG         PERPO__CONFIG_WORDS /* config words of version 2 */
#define PERPO__CKPT_NCFG_V1      12                  /* and of version 1 */
#define PERPO__CKPT_HEADER(ncfg) (8 + 4 + 4 + 4 * (ncfg) + 8)
#ifndef PERPO_LOAD_MAX_ARENA_BYTES /* checkpoints whose activation arena would be larger are refused */
#define PERPO_LOAD_MAX_ARENA_BYTES ((size_t)1 << 30)
#endif

static void perpo__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static uint32_t perpo__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
/* The config as the checkpoint's words (perpo__config_to_words, section 8) and back. */
static void perpo__config_from_words(perpo_config *c, const int *v, uint32_t version) {
    int k, w[PERPO__CKPT_NCFG];
    if (version == 1) { /* image_h image_w channels patch, then d_model .. max_batch as in v2 */
        w[0] = v[0];
        w[1] = v[1];
        w[2] = v[2];
        w[3] = w[4] = v[3];
        w[5] = w[6] = 0;
        for (k = 4; k < PERPO__CKPT_NCFG_V1; k++) w[k + 3] = v[k];
    } else {
        for (k = 0; k < PERPO__CKPT_NCFG; k++) w[k] = v[k];
    }
    memset(c, 0, sizeof *c);
    c->image_h = w[0];
    c->image_w = w[1];
    c->channels = w[2];
    c->patch_h = w[3];
    c->patch_w = w[4];
    c->pos_channels = w[5];
    c->vis_sincos = w[6];
    c->d_model = w[7];
    c->n_heads = w[8];
    c->n_vis_layers = w[9];
    c->n_dec_layers = w[10];
    c->mlp_mult = w[11];
    c->max_text = w[12];
    c->vocab = w[13];
    c->max_batch = w[14];
}

/* AdamW second moments are averages of squares: a negative one is malformed (its square root
   would make the next step NaN). */
static int perpo__all_nonneg(const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!(x[i] >= 0.0f)) return 0;
    return 1;
}

/* A file written or read through a small buffer, with a running CRC. A save writes its
   temporary file through fd where POSIX is there (it is created by open(), see below), else
   through f. */
typedef struct perpo__ckpt_io {
    FILE *f;
    int fd;
    uint32_t crc;
    int ok;
} perpo__ckpt_io;

static void perpo__ckpt_write(perpo__ckpt_io *io, const void *data, size_t n) {
    if (!io->ok) return;
    io->crc = perpo_crc32(io->crc, data, n);
#ifdef PERPO__POSIX
    {
        const unsigned char *p = (const unsigned char *)data;
        while (n > 0) {
            ssize_t k = write(io->fd, p, n);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                io->ok = 0;
                return;
            }
            p += k;
            n -= (size_t)k;
        }
    }
#else
    io->ok = fwrite(data, 1, n, io->f) == n;
#endif
}
static void perpo__ckpt_write_floats(perpo__ckpt_io *io, const float *x, size_t n) {
    unsigned char buf[4096];
    size_t i, used = 0;
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        perpo__put_u32(buf + used, u);
        used += 4;
        if (used == sizeof buf || i + 1 == n) {
            perpo__ckpt_write(io, buf, used);
            used = 0;
        }
    }
}
static void perpo__ckpt_read(perpo__ckpt_io *io, void *data, size_t n) {
    if (!io->ok) return;
    io->ok = fread(data, 1, n, io->f) == n;
    if (io->ok) io->crc = perpo_crc32(io->crc, data, n);
}
static void perpo__ckpt_read_floats(perpo__ckpt_io *io, float *x, size_t n) {
    unsigned char buf[4096];
    size_t i = 0, j;
    while (io->ok && i < n) {
        size_t cnt = n - i < sizeof buf / 4 ? n - i : sizeof buf / 4;
        perpo__ckpt_read(io, buf, cnt * 4);
        for (j = 0; io->ok && j < cnt; j++) {
            uint32_t u = perpo__get_u32(buf + 4 * j);
            memcpy(&x[i + j], &u, 4);
        }
        i += cnt;
    }
}

/* This save's temporary file, beside path so that the rename stays in one file system:
   "<path>.<pid>.<8 hex digits>.tmp" (without POSIX "<path>.<8 hex digits>.tmp"). The digits
   mix the address of a local variable (each thread has its own stack), the time, the CPU clock
   and the try number: with the process id, saves running at the same time in other processes
   or threads pick other names (and O_EXCL makes sure), and the name is hard to guess in advance.
   No global counter: the library has no mutable global state. With POSIX the file must be
   new: open() with O_CREAT | O_EXCL (and O_NOFOLLOW where declared) refuses whatever already
   sits at the name (a file, a symbolic link, a FIFO, a folder) without opening or following it,
   and a taken name is replaced by a fresh one, PERPO__TMP_TRIES names in all. Without POSIX,
   C99 has no exclusive create: a name that opens for reading is skipped, then fopen() creates
   the file. tmp has room for strlen(path) + PERPO__TMP_EXTRA bytes. 1 with the file open for
   writing in io, else 0 (nothing created). */
#define PERPO__TMP_EXTRA 40 /* ".<pid: at most 20 digits>.<8 hex digits>.tmp" and the NUL */
#define PERPO__TMP_TRIES 8
static int perpo__ckpt_create_tmp(perpo__ckpt_io *io, char *tmp, const char *path) {
    size_t cap = strlen(path) + PERPO__TMP_EXTRA;
    int try_no;
    for (try_no = 0; try_no < PERPO__TMP_TRIES; try_no++) {
        uint64_t x = (uint64_t)(uintptr_t)&try_no, h;
        unsigned long digits;
        x ^= (uint64_t)time(NULL) << 20;
        x = perpo__splitmix64(&x) ^ (uint64_t)clock() ^ ((uint64_t)try_no << 56);
        h = perpo__splitmix64(&x);
        digits = (unsigned long)(h & 0xFFFFFFFFu);
#ifdef PERPO__POSIX
        snprintf(tmp, cap, "%s.%lu.%08lx.tmp", path, (unsigned long)getpid(), digits);
        io->fd =
            open(tmp, O_WRONLY | O_CREAT | O_EXCL | PERPO__O_NOFOLLOW | PERPO__O_CLOEXEC, 0666);
        if (io->fd >= 0) return 1;
        if (errno != EEXIST && errno != EINTR) return 0; /* no folder, no permission, ... */
#else
        snprintf(tmp, cap, "%s.%08lx.tmp", path, digits);
        if ((io->f = fopen(tmp, "rb")) != NULL) { /* taken */
            fclose(io->f);
            io->f = NULL;
            continue;
        }
        io->f = fopen(tmp, "wb");
        return io->f != NULL;
#endif
    }
    return 0;
}

/* Closes the temporary file; 1 when everything written reached it. */
static int perpo__ckpt_close_tmp(perpo__ckpt_io *io) {
#ifdef PERPO__POSIX
    return close(io->fd) == 0;
#else
    int ok = fflush(io->f) == 0;
    return (fclose(io->f) == 0) && ok;
#endif
}

/* Moves the finished tmp (the temporary file above) over path. PERPO_SYNC makes its bytes
   durable first; POSIX rename() replaces path atomically, so a crash or power cut leaves the old
   checkpoint or the new one; PERPO_SYNC on the folder then makes the new name durable. Only
   where rename cannot replace a file (Windows) is path removed first, which is not atomic.
   1 on success. A failure before the rename removes tmp; after it, tmp (strlen(path) + 1 bytes
   at least) holds the folder's name, so the caller must not remove it. */
static int perpo__ckpt_commit(char *tmp, const char *path) {
    size_t n = strlen(path);
    int why;
    if (PERPO_SYNC(tmp, 0) != 0) {
        why = errno;
        remove(tmp);
        errno = why; /* the caller reports the failure, not the cleanup */
        return 0;
    }
    if (rename(tmp, path) != 0) {
#if defined(_WIN32)
        if (remove(path) != 0 || rename(tmp, path) != 0) {
            why = errno;
            remove(tmp);
            errno = why;
            return 0;
        }
#else
        why = errno;
        remove(tmp);
        errno = why;
        return 0;
#endif
    }
#if defined(_WIN32)
    while (n > 0 && path[n - 1] != '/' && path[n - 1] != '\\') n--;
#else
    while (n > 0 && path[n - 1] != '/') n--;
#endif
    if (n == 0) { /* a bare name: the current folder */
        tmp[0] = '.';
        tmp[1] = 0;
    } else {
        if (n > 1) n--; /* drop the separator, but keep the root "/" */
        memcpy(tmp, path, n);
        tmp[n] = 0;
    }
    return PERPO_SYNC(tmp, 1) == 0;
}

PERPODEF perpo_status perpo_checkpoint_save_err(const perpo_model *m, const char *path,
                                                unsigned flags, char *err, size_t cap) {
    const char *w = "perpo_checkpoint_save";
    unsigned char head[PERPO__CKPT_HEADER(PERPO__CKPT_NCFG)], word[4];
    int cfgv[PERPO__CKPT_NCFG], k, why = 0;
    perpo__ckpt_io io;
    size_t plen;
    char *tmp;
    perpo_status st;
    perpo__errf(err, cap, "%s", "");
    if (!m || !path) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: model or path is NULL", w);
    if (flags & ~(unsigned)PERPO_CKPT_OPTIMIZER)
        return perpo__errst(err, cap, PERPO_ERR_ARG,
                            "%s: flags 0x%x: only PERPO_CKPT_OPTIMIZER (0x1) is known", w, flags);
    if ((st = perpo__params_finite(m)) != PERPO_OK) /* such a file could not be loaded */
        return perpo__errst(err, cap, st,
                            "%s: %s: the parameters hold NaN or Inf: nothing written (a "
                            "checkpoint of them could not be loaded)",
                            w, path);
    if (perpo__not_regular(path)) /* never replace a folder or device */
        return perpo__errst(err, cap, PERPO_ERR_IO,
                            "%s: %s exists and is not a regular file (a folder, a device): "
                            "nothing written",
                            w, path);
    plen = strlen(path);
    if (plen > SIZE_MAX - PERPO__TMP_EXTRA)
        return perpo__errst(err, cap, PERPO_ERR_OVERFLOW, "%s: a path of %zu bytes", w, plen);
    tmp = (char *)PERPO_MALLOC(m->cfg.alloc_ctx, plen + PERPO__TMP_EXTRA);
    if (!tmp)
        return perpo__errst(err, cap, PERPO_ERR_NOMEM,
                            "%s: out of memory allocating the temporary file's name (%zu bytes)", w,
                            plen + PERPO__TMP_EXTRA);
    memcpy(head, PERPO__CKPT_MAGIC, 8);
    perpo__put_u32(head + 8, PERPO__CKPT_VERSION);
    perpo__put_u32(head + 12, flags);
    perpo__config_to_words(&m->cfg, cfgv);
    for (k = 0; k < PERPO__CKPT_NCFG; k++) perpo__put_u32(head + 16 + 4 * k, (uint32_t)cfgv[k]);
    perpo__put_u32(head + 16 + 4 * PERPO__CKPT_NCFG, (uint32_t)m->n_params);
    perpo__put_u32(head + 20 + 4 * PERPO__CKPT_NCFG, (uint32_t)((uint64_t)m->n_params >> 32));
    io.f = NULL;
    io.fd = -1;
    io.crc = 0;
    if (!perpo__ckpt_create_tmp(&io, tmp, path)) {
        why = errno;
        PERPO_FREE(m->cfg.alloc_ctx, tmp);
        return perpo__errst(err, cap, PERPO_ERR_IO,
                            "%s: %s: cannot create a temporary file beside it: %s", w, path,
                            strerror(why));
    }
    io.ok = 1;
    perpo__ckpt_write(&io, head, sizeof head);
    perpo__ckpt_write_floats(&io, m->params, m->n_params);
    if (flags & PERPO_CKPT_OPTIMIZER) {
        perpo__put_u32(word, (uint32_t)m->opt_step);
        perpo__ckpt_write(&io, word, 4);
        perpo__ckpt_write_floats(&io, m->adam_m, m->n_params);
        perpo__ckpt_write_floats(&io, m->adam_v, m->n_params);
    }
    perpo__put_u32(word, io.crc);
    perpo__ckpt_write(&io, word, 4);
    if (!io.ok) why = errno; /* the write that failed */
    if (!perpo__ckpt_close_tmp(&io) && io.ok) {
        io.ok = 0;
        why = errno;
    }
    if (!io.ok) {
        remove(tmp);
        perpo__errf(err, cap,
                    "%s: %s: writing the temporary file failed: %s (the old file is "
                    "untouched)",
                    w, path, strerror(why));
    } else if (!(io.ok = perpo__ckpt_commit(tmp, path))) { /* removes tmp itself on failure */
        why = errno;
        perpo__errf(err, cap,
                    "%s: %s: cannot make the new file durable or rename it into "
                    "place: %s",
                    w, path, strerror(why));
    }
    PERPO_FREE(m->cfg.alloc_ctx, tmp);
    return io.ok ? PERPO_OK : PERPO_ERR_IO;
}
PERPODEF perpo_status perpo_checkpoint_save(const perpo_model *m, const char *path,
                                            unsigned flags) {
    return perpo_checkpoint_save_err(m, path, flags, NULL, 0);
}

PERPODEF perpo_status perpo_model_load_err(perpo_model **out, const char *path, void *alloc_ctx,
                                           char *err, size_t cap) {
    char why[PERPO_ERROR_MAX];
    const char *w = "perpo_model_load";
    unsigned char head[PERPO__CKPT_HEADER(PERPO__CKPT_NCFG)], word[4];
    int cfgv[PERPO__CKPT_NCFG], k, ncfg;
    perpo_config c;
    perpo_model *m = NULL;
    perpo__ckpt_io io;
    uint64_t n_params, expect;
    uint32_t flags, crc, version;
    size_t head_len;
    long fsize;
    perpo_status st;
    perpo__errf(err, cap, "%s", "");
    if (!out || !path) return perpo__errst(err, cap, PERPO_ERR_ARG, "%s: out or path is NULL", w);
    *out = NULL;
    why[0] = 0;
    if (perpo__open_sized(path, &io.f, &fsize, why, sizeof why) != PERPO_OK)
        return perpo__errst(err, cap, PERPO_ERR_IO, "%s: %s: %s", w, path, why);
    io.crc = 0;
    io.ok = 1;
    if (fsize < 0) {
        fclose(io.f);
        return perpo__errst(err, cap, PERPO_ERR_IO, "%s: %s: cannot tell its size (not seekable)",
                            w, path);
    }
    perpo__ckpt_read(&io, head, 16);
    version = io.ok ? perpo__get_u32(head + 8) : 0;
    if (!io.ok || memcmp(head, PERPO__CKPT_MAGIC, 8) != 0 ||
        (version != 1 && version != PERPO__CKPT_VERSION)) {
        fclose(io.f);
        return perpo__errst(err, cap, PERPO_ERR_FORMAT,
                            "%s: %s: not a perpo checkpoint (magic or version %u unknown)", w, path,
                            (unsigned)version);
    }
    ncfg = version == 1 ? PERPO__CKPT_NCFG_V1 : PERPO__CKPT_NCFG;
    head_len = PERPO__CKPT_HEADER((size_t)ncfg);
    perpo__ckpt_read(&io, head + 16, head_len - 16);
    if (!io.ok) {
        fclose(io.f);
        return perpo__errst(err, cap, PERPO_ERR_FORMAT, "%s: %s: header cut short", w, path);
    }
    flags = perpo__get_u32(head + 12);
    for (k = 0; k < ncfg; k++) {
        uint32_t v = perpo__get_u32(head + 16 + 4 * k);
        cfgv[k] = v > 1000000u ? -1 : (int)v; /* out of range: perpo_config_validate rejects it */
    }
    perpo__config_from_words(&c, cfgv, version);
    c.alloc_ctx = alloc_ctx;
    n_params = (uint64_t)perpo__get_u32(head + 16 + 4 * ncfg) |
               ((uint64_t)perpo__get_u32(head + 20 + 4 * ncfg) << 32);
    /* the exact size follows from the header: check it before allocating anything */
    expect = (uint64_t)head_len + 4 + 4 * n_params +
             ((flags & PERPO_CKPT_OPTIMIZER) ? 4 + 8 * n_params : 0);
    if ((flags & ~(uint32_t)PERPO_CKPT_OPTIMIZER) || perpo_config_validate(&c) != PERPO_OK ||
        n_params > ((uint64_t)1 << 40) || (uint64_t)fsize != expect) {
        fclose(io.f);
        return perpo__errst(err, cap, PERPO_ERR_FORMAT,
                            "%s: %s: malformed header (flags, config or a size of %ld bytes that "
                            "the header does not give)",
                            w, path, fsize);
    }
    /* The parameter count follows from the config (a mismatch is malformed), and a small file
       must not make the loader allocate gigabytes through max_batch/max_text: both are checked
       before anything is allocated. */
    {
        size_t arena = perpo__arena_floats(&c), n_tensors, count;
        perpo__count_tensors(&c, &n_tensors, &count);
        if ((uint64_t)count != n_params || arena == 0 ||
            arena > (size_t)PERPO_LOAD_MAX_ARENA_BYTES / sizeof(float)) {
            fclose(io.f);
            return perpo__errst(err, cap, PERPO_ERR_FORMAT,
                                "%s: %s: parameter count or activation arena does not fit its "
                                "config (PERPO_LOAD_MAX_ARENA_BYTES)",
                                w, path);
        }
    }
    if ((st = perpo_model_create_err(&m, &c, 0, why, sizeof why)) != PERPO_OK) {
        fclose(io.f);
        return perpo__errst(err, cap, st, "%s: %s: %s", w, path, why);
    }
    if ((uint64_t)m->n_params != n_params) {
        perpo_model_free(m);
        fclose(io.f);
        return perpo__errst(err, cap, PERPO_ERR_FORMAT, "%s: %s: parameter count mismatch", w,
                            path);
    }
    perpo__ckpt_read_floats(&io, m->params, m->n_params);
    if (flags & PERPO_CKPT_OPTIMIZER) {
        perpo__ckpt_read(&io, word, 4);
        /* a step counter beyond PERPO_MAX_STEPS is malformed: -1 is refused below */
        m->opt_step =
            perpo__get_u32(word) <= (uint32_t)PERPO_MAX_STEPS ? (int)perpo__get_u32(word) : -1;
        perpo__ckpt_read_floats(&io, m->adam_m, m->n_params);
        perpo__ckpt_read_floats(&io, m->adam_v, m->n_params);
    }
    crc = io.crc;
    if (io.ok) io.ok = fread(word, 1, 4, io.f) == 4; /* the stored CRC is not part of the sum */
    fclose(io.f);
    if (!io.ok || perpo__get_u32(word) != crc || !perpo__all_finite(m->params, m->n_params) ||
        !perpo__all_finite(m->adam_m, m->n_params) || !perpo__all_finite(m->adam_v, m->n_params) ||
        m->opt_step < 0 || !perpo__all_nonneg(m->adam_v, m->n_params)) {
        perpo_model_free(m);
        return perpo__errst(err, cap, PERPO_ERR_FORMAT,
                            "%s: %s: corrupt contents (read error, CRC mismatch, non-finite "
                            "values or an invalid optimizer state)",
                            w, path);
    }
    m->no_opt_state = !(flags & PERPO_CKPT_OPTIMIZER);
    *out = m;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_model_load(perpo_model **out, const char *path, void *alloc_ctx) {
    return perpo_model_load_err(out, path, alloc_ctx, NULL, 0);
}

/* ==========================================================================================
   13. Bring your own data: 8-bit PGM/PPM images and a TSV manifest (image, prompt, answer)
   ========================================================================================== */

/* Writes "prefix: " into err and returns how many bytes of err it took (so a callee can write
 * its message right after). */
static size_t perpo__err_prefix(char *err, size_t cap, const char *prefix) {
    size_t n;
    if (!err || cap == 0) return 0;
    perpo__errf(err, cap, "%s: ", prefix);
    n = strlen(err);
    return n < cap ? n : cap - 1;
}

/* A byte shown in a message: the character when printable ASCII, else \xNN. */
static const char *perpo__show_byte(unsigned char c, char buf[8]) {
    if (c >= 0x21 && c < 0x7f) {
        buf[0] = '\'';
        buf[1] = (char)c;
        buf[2] = '\'';
        buf[3] = 0;
    } else
        snprintf(buf, 8, "\\x%02X", (unsigned)c);
    return buf;
}

/* ---- PGM / PPM ---- */

/* Skips whitespace and '#' comments (to the next CR or LF). */
static void perpo__pnm_skip(const unsigned char *d, size_t len, size_t *pos) {
    size_t i = *pos;
    while (i < len) {
        if (perpo__is_space(d[i]))
            i++;
        else if (d[i] == '#') {
            while (i < len && d[i] != '\n' && d[i] != '\r') i++;
        } else
            break;
    }
    *pos = i;
}

#define PERPO__PNM_MAX_VALUE 2147483647ul /* a width, height or maxval above this is refused */

/* One header field: whitespace/comments, then decimal digits. The caller's message names it. */
static perpo_status perpo__pnm_field(const unsigned char *d, size_t len, size_t *pos,
                                     const char *what, unsigned long *v, char *err, size_t cap) {
    size_t i;
    unsigned long x = 0;
    char b[8];
    perpo__pnm_skip(d, len, pos);
    i = *pos;
    if (i >= len) {
        perpo__errf(err, cap, "truncated header (no %s)", what);
        return PERPO_ERR_FORMAT;
    }
    if (!perpo__is_digit(d[i])) {
        perpo__errf(err, cap, "%s: expected a decimal number, found %s", what,
                    perpo__show_byte(d[i], b));
        return PERPO_ERR_FORMAT;
    }
    for (; i < len && perpo__is_digit(d[i]); i++) {
        unsigned long digit = (unsigned long)(d[i] - '0');
        if (x > (PERPO__PNM_MAX_VALUE - digit) / 10) {
            perpo__errf(err, cap, "%s too large (over %lu)", what, PERPO__PNM_MAX_VALUE);
            return PERPO_ERR_FORMAT;
        }
        x = x * 10 + digit;
    }
    *pos = i;
    *v = x;
    return PERPO_OK;
}

/* Checks the arguments shared by both image entry points; *bytes gets want_w * want_h * 3. */
static perpo_status perpo__pnm_args(int want_w, int want_h, int channels, const float *out,
                                    size_t *bytes, char *err, size_t cap) {
    if (want_w < 1 || want_h < 1 || (channels != 1 && channels != 3) || !out) {
        perpo__errf(err, cap, "invalid arguments (want %dx%d, %d channels, out %s)", want_w, want_h,
                    channels, out ? "set" : "NULL");
        return PERPO_ERR_ARG;
    }
    if (!perpo__size_mul((size_t)want_w, (size_t)want_h, bytes) ||
        !perpo__size_mul(*bytes, 3, bytes)) {
        perpo__errf(err, cap, "size %dx%d overflows", want_w, want_h);
        return PERPO_ERR_OVERFLOW;
    }
    return PERPO_OK;
}

PERPODEF perpo_status perpo_image_parse_pnm(const unsigned char *d, size_t len, int want_w,
                                            int want_h, int channels, float *out, char *err,
                                            size_t err_cap) {
    unsigned long w, h, maxval;
    size_t pos, need, npix, i, bytes;
    int planes;
    char b[8];
    perpo_status st;
    if (err && err_cap) err[0] = 0;
    if ((st = perpo__pnm_args(want_w, want_h, channels, out, &bytes, err, err_cap)) != PERPO_OK)
        return st;
    if (!d && len) {
        perpo__errf(err, err_cap, "invalid arguments (data NULL)");
        return PERPO_ERR_ARG;
    }
    if (len == 0) {
        perpo__errf(err, err_cap, "empty input");
        return PERPO_ERR_FORMAT;
    }
    /* magic: "P5" or "P6", then whitespace or a comment */
    if (len < 2 || d[0] != 'P' || (d[1] != '5' && d[1] != '6')) {
        if (len >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7' &&
            (len == 2 || perpo__is_space(d[2])))
            perpo__errf(err, err_cap, "unsupported format P%c (only binary PGM P5 and PPM P6)",
                        d[1]);
        else
            perpo__errf(err, err_cap, "bad magic (not a binary PGM/PPM file)");
        return PERPO_ERR_FORMAT;
    }
    if (len > 2 && !perpo__is_space(d[2]) && d[2] != '#') {
        perpo__errf(err, err_cap, "bad magic (not a binary PGM/PPM file)");
        return PERPO_ERR_FORMAT;
    }
    planes = d[1] == '6' ? 3 : 1;
    if (planes == 3 && channels == 1) {
        perpo__errf(err, err_cap, "colour image (P6) but 1 channel wanted");
        return PERPO_ERR_FORMAT;
    }
    pos = 2;
    if ((st = perpo__pnm_field(d, len, &pos, "width", &w, err, err_cap)) != PERPO_OK) return st;
    if (w == 0) {
        perpo__errf(err, err_cap, "width 0");
        return PERPO_ERR_FORMAT;
    }
    if ((st = perpo__pnm_field(d, len, &pos, "height", &h, err, err_cap)) != PERPO_OK) return st;
    if (h == 0) {
        perpo__errf(err, err_cap, "height 0");
        return PERPO_ERR_FORMAT;
    }
    if (w != (unsigned long)want_w || h != (unsigned long)want_h) {
        perpo__errf(err, err_cap, "image is %lux%lu, expected %dx%d", w, h, want_w, want_h);
        return PERPO_ERR_FORMAT;
    }
    if ((st = perpo__pnm_field(d, len, &pos, "maxval", &maxval, err, err_cap)) != PERPO_OK)
        return st;
    if (maxval == 0 || maxval > 255) {
        if (maxval > 255 && maxval <= 65535)
            perpo__errf(err, err_cap,
                        "maxval %lu: 16-bit samples are not supported (maxval must be 1..255)",
                        maxval);
        else
            perpo__errf(err, err_cap, "maxval %lu (must be 1..255)", maxval);
        return PERPO_ERR_FORMAT;
    }
    if (pos < len && d[pos] == '#') /* as libnetpbm: the comment's line end delimits the raster */
        while (pos < len && d[pos] != '\n' && d[pos] != '\r') pos++;
    if (pos >= len) {
        perpo__errf(err, err_cap, "truncated header (nothing after maxval)");
        return PERPO_ERR_FORMAT;
    }
    if (!perpo__is_space(d[pos])) {
        perpo__errf(err, err_cap, "no whitespace after maxval (found %s)",
                    perpo__show_byte(d[pos], b));
        return PERPO_ERR_FORMAT;
    }
    pos++; /* exactly one whitespace byte, then the raster */
    if (pos > PERPO_PNM_MAX_HEADER) {
        perpo__errf(err, err_cap, "header longer than %d bytes", PERPO_PNM_MAX_HEADER);
        return PERPO_ERR_FORMAT;
    }
    npix = bytes / 3; /* w * h, known not to overflow */
    need = npix * (size_t)planes;
    if (len - pos < need) {
        perpo__errf(err, err_cap, "truncated pixel data (need %lu bytes, have %lu)",
                    (unsigned long)need, (unsigned long)(len - pos));
        return PERPO_ERR_FORMAT;
    }
    if (len - pos > need) {
        perpo__errf(err, err_cap, "trailing data after the pixels: %lu bytes (one image per file)",
                    (unsigned long)(len - pos - need));
        return PERPO_ERR_FORMAT;
    }
    d += pos;
    if (maxval < 255) /* validate everything before writing anything */
        for (i = 0; i < need; i++)
            if (d[i] > maxval) {
                perpo__errf(err, err_cap, "sample %u at pixel %lu exceeds maxval %lu",
                            (unsigned)d[i], (unsigned long)(i / (size_t)planes), maxval);
                return PERPO_ERR_FORMAT;
            }
    for (i = 0; i < npix; i++) {
        if (planes == 3) {
            out[3 * i] = (float)d[3 * i] / (float)maxval;
            out[3 * i + 1] = (float)d[3 * i + 1] / (float)maxval;
            out[3 * i + 2] = (float)d[3 * i + 2] / (float)maxval;
        } else if (channels == 3) {
            out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = (float)d[i] / (float)maxval;
        } else {
            out[i] = (float)d[i] / (float)maxval;
        }
    }
    return PERPO_OK;
}

PERPODEF perpo_status perpo_image_load_pnm(const char *path, int want_w, int want_h, int channels,
                                           float *out, char *err, size_t err_cap, void *alloc_ctx) {
    size_t bytes, cap, got, off;
    unsigned char *buf;
    perpo_status st;
    long fsize;
    FILE *f;
    if (err && err_cap) err[0] = 0;
    if (!path) {
        perpo__errf(err, err_cap, "invalid arguments (path NULL)");
        return PERPO_ERR_ARG;
    }
    off = perpo__err_prefix(err, err_cap, path);
    if ((st = perpo__pnm_args(want_w, want_h, channels, out, &bytes, err ? err + off : NULL,
                              err_cap - off)) != PERPO_OK)
        return st;
    /* the largest valid file: the longest header and a 3-plane raster; one byte more tells a
       longer file, which is malformed whatever it holds */
    if (!perpo__size_add(bytes, PERPO_PNM_MAX_HEADER + 1, &cap)) {
        perpo__errf(err ? err + off : NULL, err_cap - off, "size %dx%d overflows", want_w, want_h);
        return PERPO_ERR_OVERFLOW;
    }
    if ((st = perpo__open_sized(path, &f, &fsize, err ? err + off : NULL, err_cap - off)) !=
        PERPO_OK)
        return st;
    /* a seekable file tells its size: allocate no more than it holds (+1 to see it grow) */
    if ((st = perpo__read_to_end(
             f, alloc_ctx, fsize >= 0 && (size_t)fsize < cap - 1 ? (size_t)fsize + 1 : cap, cap - 1,
             &buf, &got, err ? err + off : NULL, err_cap - off)) != PERPO_OK)
        return st;
    st = perpo_image_parse_pnm(buf, got, want_w, want_h, channels, out, err ? err + off : NULL,
                               err_cap - off);
    PERPO_FREE(alloc_ctx, buf);
    if (st == PERPO_OK && err && err_cap) err[0] = 0;
    return st;
}

/* ---- TSV manifest ---- */

/* One pass over the lines of text[0..len): validates every line and, when ents is not NULL,
   fills ents and cuts the fields of (writable) text with NULs. Returns the entry count in *n. */
static perpo_status perpo__manifest_scan(char *text, const char *src, size_t len,
                                         perpo_manifest_entry *ents, size_t *n, char *err,
                                         size_t cap) {
    size_t pos = 0, line = 0, count = 0;
    if (len >= 3 && (unsigned char)src[0] == 0xEF && (unsigned char)src[1] == 0xBB &&
        (unsigned char)src[2] == 0xBF)
        pos = 3; /* UTF-8 byte order mark */
    while (pos < len) {
        size_t start = pos, end, i, tabs = 0, t1 = 0, t2 = 0;
        const char *nl = (const char *)memchr(src + pos, '\n', len - pos);
        int blank = 1;
        end = nl ? (size_t)(nl - src) : len;
        pos = nl ? end + 1 : len;
        line++;
        if (end > start && src[end - 1] == '\r') end--; /* CRLF */
        if (end - start > PERPO_MANIFEST_MAX_LINE) {
            perpo__errf(err, cap, "manifest line %lu: longer than %d bytes", (unsigned long)line,
                        PERPO_MANIFEST_MAX_LINE);
            return PERPO_ERR_FORMAT;
        }
        if (end > start && src[start] == '#') continue; /* comment */
        for (i = start; i < end; i++) {
            char c = src[i];
            if (c == '\t') {
                if (++tabs == 1)
                    t1 = i;
                else if (tabs == 2)
                    t2 = i;
            } else if (c != ' ')
                blank = 0;
            if (c == '\0') {
                perpo__errf(err, cap, "manifest line %lu: NUL byte at column %lu",
                            (unsigned long)line, (unsigned long)(i - start + 1));
                return PERPO_ERR_FORMAT;
            }
            if (c == '\r') {
                perpo__errf(err, cap,
                            "manifest line %lu: carriage return inside the line (column %lu)",
                            (unsigned long)line, (unsigned long)(i - start + 1));
                return PERPO_ERR_FORMAT;
            }
        }
        if (blank) continue; /* empty, or only spaces and TABs */
        if (tabs != 2) {
            perpo__errf(err, cap, "manifest line %lu: expected 3 tab-separated fields, found %lu",
                        (unsigned long)line, (unsigned long)(tabs + 1));
            return PERPO_ERR_FORMAT;
        }
        if (t1 == start) {
            perpo__errf(err, cap, "manifest line %lu: empty image path", (unsigned long)line);
            return PERPO_ERR_FORMAT;
        }
        if (t2 + 1 == end) {
            perpo__errf(err, cap, "manifest line %lu: empty answer", (unsigned long)line);
            return PERPO_ERR_FORMAT;
        }
        if (ents) {
            perpo_manifest_entry *e = &ents[count];
            text[t1] = text[t2] = text[end] =
                '\0'; /* text has one byte past len for the last end */
            e->image = text + start;
            e->prompt = text + t1 + 1;
            e->answer = text + t2 + 1;
            e->line = line;
        }
        count++;
    }
    *n = count;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_manifest_parse(const char *text, size_t len, perpo_manifest *out,
                                           char *err, size_t err_cap, void *alloc_ctx) {
    size_t n = 0, head, total;
    perpo_status st;
    char *block;
    if (err && err_cap) err[0] = 0;
    if (!out || (!text && len)) {
        perpo__errf(err, err_cap, "invalid arguments");
        return PERPO_ERR_ARG;
    }
    out->entries = NULL;
    out->n = 0;
    out->alloc_ctx_ = alloc_ctx;
    if (len > PERPO_MANIFEST_MAX_BYTES) {
        perpo__errf(err, err_cap, "manifest is %lu bytes, over the %lu-byte (1 GiB) limit",
                    (unsigned long)len, (unsigned long)PERPO_MANIFEST_MAX_BYTES);
        return PERPO_ERR_FORMAT;
    }
    if ((st = perpo__manifest_scan(NULL, text, len, NULL, &n, err, err_cap)) != PERPO_OK) return st;
    /* one block: the entries, then a copy of the text with one spare byte */
    if (!perpo__size_mul(n, sizeof(perpo_manifest_entry), &head) ||
        !perpo__size_add(head, len, &total) || !perpo__size_add(total, 1, &total)) {
        perpo__errf(err, err_cap, "manifest too large");
        return PERPO_ERR_OVERFLOW;
    }
    block = (char *)PERPO_MALLOC(alloc_ctx, total);
    if (!block) {
        perpo__errf(err, err_cap, "out of memory");
        return PERPO_ERR_NOMEM;
    }
    if (len) memcpy(block + head, text, len);
    block[head + len] = '\0';
    perpo__manifest_scan(block + head, text, len, (perpo_manifest_entry *)(void *)block, &n, NULL,
                         0);
    out->entries = (perpo_manifest_entry *)(void *)block;
    out->n = n;
    return PERPO_OK;
}

PERPODEF perpo_status perpo_manifest_load(const char *path, perpo_manifest *out, char *err,
                                          size_t err_cap, void *alloc_ctx) {
    size_t cap = 65536, len = 0, off;
    unsigned char *buf;
    perpo_status st;
    long fsize;
    FILE *f;
    if (err && err_cap) err[0] = 0;
    if (out) {
        out->entries = NULL;
        out->n = 0;
        out->alloc_ctx_ = alloc_ctx;
    }
    if (!path || !out) {
        perpo__errf(err, err_cap, "invalid arguments");
        return PERPO_ERR_ARG;
    }
    off = perpo__err_prefix(err, err_cap, path);
    if ((st = perpo__open_sized(path, &f, &fsize, err ? err + off : NULL, err_cap - off)) !=
        PERPO_OK)
        return st;
    /* a seekable file tells its size up front: refuse a huge one before reading it */
    if (fsize >= 0) {
        if ((size_t)fsize > PERPO_MANIFEST_MAX_BYTES) {
            fclose(f);
            perpo__errf(err ? err + off : NULL, err_cap - off,
                        "manifest is %ld bytes, over the 1 GiB limit", fsize);
            return PERPO_ERR_FORMAT;
        }
        if ((size_t)fsize + 1 > cap) cap = (size_t)fsize + 1;
    }
    /* read to the end, growing (a file that grew): never past the limit + 1 */
    if ((st = perpo__read_to_end(f, alloc_ctx, cap, PERPO_MANIFEST_MAX_BYTES, &buf, &len,
                                 err ? err + off : NULL, err_cap - off)) != PERPO_OK)
        return st;
    if (len > PERPO_MANIFEST_MAX_BYTES) {
        PERPO_FREE(alloc_ctx, buf);
        perpo__errf(err ? err + off : NULL, err_cap - off, "manifest is over the 1 GiB limit");
        return PERPO_ERR_FORMAT;
    }
    st = perpo_manifest_parse((const char *)buf, len, out, err ? err + off : NULL, err_cap - off,
                              alloc_ctx);
    PERPO_FREE(alloc_ctx, buf);
    if (st == PERPO_OK && err && err_cap) err[0] = 0;
    return st;
}

PERPODEF void perpo_manifest_free(perpo_manifest *m) {
    if (!m) return;
    PERPO_FREE(m->alloc_ctx_, m->entries);
    m->entries = NULL;
    m->n = 0;
}

#ifdef __cplusplus
}
#endif
#ifdef PERPO__GCC12_CXX_PRAGMAS
#pragma GCC diagnostic pop
#endif
#endif /* PERPO_IMPLEMENTATION_DONE */
#endif /* PERPO_IMPLEMENTATION */

/*
   VERSION HISTORY
     0.1  compact MLLM, SFT, sampling with KV cache, checkpoints.
     0.2  perpo_config.patch became patch_h and patch_w; new fields pos_channels, vis_sincos.
          Checkpoint format v2 (every config field; v1 still loads). perpo_sft_train_stream
          (perpo_example_fn). perpo_pref_list.truth and perpo_pref_config.nll_on_truth (set
          truth to NULL in lists you build yourself). perpo_optim_validate and documented
          ranges for every config value; models track whether their weights are known finite;
          PERPO_SYNC durability hook. Fused products and attention, packed decoding weights.
     0.3  Data parallelism: perpo_reduce_fn and perpo_parallel (the field `parallel` of
          perpo_sft_config and perpo_pref_config; defaults: one process, and a zeroed field
          is one process too), perpo_share, perpo_pref_sample_range, PERPO_ERR_PEER,
          PERPO_MAX_WORLD. perpo_pref_sample seeds each item's samples from (sc->seed, item
          index) instead of one stream per generation call: the lists of a given seed differ
          from 0.2's (same distribution), and no longer depend on max_batch. Without a hook the
          trainers do what 0.2 did, bit for bit.
          One name for each thing (no aliases; results unchanged):
            perpo_model_save(m, path)           -> perpo_checkpoint_save(m, path, 0)
            perpo_model_load(out, path)         -> perpo_model_load(out, path, NULL)
            perpo_model_load_ex                 -> perpo_model_load
            perpo_optimizer_step                -> perpo_optim_step
            perpo_optimizer_steps               -> perpo_optim_step_count
            perpo_optimizer_reset               -> perpo_optim_reset
            perpo_train_config                  -> perpo_sft_config
            perpo_train_default                 -> perpo_sft_default
          New: perpo_objective_name, PERPO_OBJ_COUNT.
          The calls that allocate take the allocator context as their last argument (pass NULL
          for the old behaviour): perpo_edit_distance, perpo_normalized_edit_distance,
          perpo_ocr_reward, perpo_word_scores, perpo_ocr_score, perpo_image_load_pnm,
          perpo_manifest_parse, perpo_manifest_load (perpo_manifest keeps it for
          perpo_manifest_free). Config limits are public macros: PERPO_MAX_IMAGE_SIDE,
          PERPO_MAX_CHANNELS, PERPO_MAX_PATCH_SIDE, PERPO_MAX_PATCHES, PERPO_MAX_D_MODEL,
          PERPO_MAX_LAYERS, PERPO_MAX_MLP_MULT, PERPO_MIN_TEXT, PERPO_MAX_TEXT, PERPO_MAX_BATCH,
          PERPO_MAX_TEMPERATURE, PERPO_MAX_LABEL_SMOOTHING. A training step enters 3 OpenMP
          parallel regions instead of about 100, and greedy decoding one per call (same results,
          bit for bit). PERPO_USE_BF16: bfloat16 products of the linear layers on CPUs with
          AVX512_BF16 (an option; the default float32 results are unchanged).
          perpo_checkpoint_save writes a temporary file of its own, "<path>.<pid>.<8 hex
          digits>.tmp", created new (POSIX: O_CREAT | O_EXCL), instead of reusing "<path>.tmp":
          whatever sits at a name is left alone, and saves of one path from several processes
          at once all succeed. The data-parallel trainers refuse a NaN or Inf in any sum the
          reduction hook returns (PERPO_ERR_NONFINITE on every worker).
          perpo_objective_config.positive (PERPO_MAX_POSITIVE): DPO-Positive's penalty on
          every pairwise objective; 0, the default, keeps every earlier result. Code that
          fills a perpo_objective_config without perpo_objective_default must set it.
          PERPO_REFERENCE: the whole library on the plain reference kernels and model.

   LICENSE (MIT)
   Copyright (c) 2026 the perpo.h authors
   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:
   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.
   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
