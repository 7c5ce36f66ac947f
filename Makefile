# perpo.h — build, test, demo, bench.
#   make demo        grounding alignment from the committed SFT checkpoint (samples -> control,
#                    DPO, PerPO -> evaluation, in 3 on-policy rounds on the SFT model's own 2,048
#                    labelled scenes); make pretrain trains that checkpoint (demo-full: both)
#   make demo-ocr    the same on dense OCR (reward 1 - normalized edit distance; make pretrain-ocr)
#   make repro       the paper's analyses in miniature into results/repro/ (list size, reliance on
#                    the image, beta, gamma, margin, data size, OCR by text density; 2 seeds each;
#                    resumable; docs/repro.md); REPRO_ARGS=--quick: all of it at a tiny size
#   make test        every test (compile checks, the README's code, links and map of perpo.h, the
#                    test runner last)
#   make test-reference  the library on its reference path (PERPO_REFERENCE): a subset, ~1 minute
#   make bench       benchmarks, one JSON object per line (make bench-compare: against PyTorch)
#   make test-sanitize, make fuzz   ASan+UBSan suite; libFuzzer targets
#   make soak        the crash test (tests/t_crash.c) with SOAK_KILLS (200) SIGKILLs instead of 20
#   make shared      build/libperpo.so (the header as a shared library, for ctypes: examples/torch_loss.py)
#   build/mpi_train  data-parallel SFT and PerPO over MPI (built by `make` when mpicc exists)
# Variables: CC (cc), OPT (-O2 -march=native -ffp-contract=fast), OMP (-fopenmp; empty to build
# single-threaded), BLAS=1 to use CBLAS (OpenBLAS) for matrix products.

CC    ?= cc
OPT   ?= -O2 -march=native -ffp-contract=fast
OMP   ?= -fopenmp
WARN  := -std=c99 -Wall -Wextra -Wpedantic -Werror
BUILD := build
LIBS  := -lm
ifeq ($(BLAS),1)
  OPT  += -DPERPO_USE_CBLAS $(shell pkg-config --cflags openblas 2>/dev/null)
  LIBS += $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
endif

# What the pretraining record (examples/models/*.json) says about the build.
EX_DEFS := -DEX_COMMIT='"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)"' -DEX_BUILD_FLAGS='"$(OPT) $(OMP)"'

EXAMPLES := $(BUILD)/grounding $(BUILD)/dense_ocr $(BUILD)/loss_only $(BUILD)/perpo_min $(BUILD)/repro
# MPI (Debian: openmpi-bin libopenmpi-dev): examples/mpi_train.c, when mpicc is there.
MPICC    ?= mpicc
HAVE_MPI := $(shell command -v $(MPICC) > /dev/null 2>&1 && command -v mpirun > /dev/null 2>&1 && echo 1)
ifeq ($(HAVE_MPI),1)
  EXAMPLES += $(BUILD)/mpi_train
endif
PYTHON   ?= /usr/bin/python3
# PERPO_USE_BF16 (bfloat16 products) is tested and benchmarked where the CPU has AVX512_BF16.
HAVE_BF16 := $(shell grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && echo 1)
# The example helpers: common.h and the headers it includes, one per concern.
EX_COMMON := examples/common.h examples/synth.h examples/font.h examples/image.h examples/report.h examples/cmdline.h
# The experiment headers the programs build on (examples/experiment.h lists them).
EX_PIPELINE := $(addprefix examples/,experiment.h options.h progress.h task.h diagnostics.h preference.h results.h pretrain.h grounding_task.h ocr_task.h)
TEST_SRC := tests/main.c $(wildcard tests/t_*.c) tests/test.h $(wildcard tests/ref/*.h) $(EX_COMMON)

.PHONY: format pretrain pretrain-stream pretrain-ocr demo-full test-examples test-repro repro all test test-unit test-compile test-readme test-readme-map test-alloc test-blas test-portable test-bf16 test-reference test-min test-omp test-mpi test-torch test-sanitize soak fuzz demo demo-ocr bench bench-compare bench-scaling shared clean

all: $(EXAMPLES) $(BUILD)/run_tests

$(BUILD):
	@mkdir -p $(BUILD)

# The test runner is built without OpenMP so results are the same on any machine.
$(BUILD)/run_tests: $(TEST_SRC) perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) -o $@ tests/main.c $(LIBS)

$(BUILD)/%: examples/%.c $(EX_COMMON) $(EX_PIPELINE) perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) $(OMP) $(EX_DEFS) -o $@ $< $(LIBS)

test: test-compile test-readme test-readme-map test-alloc test-blas test-portable test-bf16 test-reference test-min test-omp test-examples test-repro test-mpi test-torch test-unit

test-compile:
	@sh tests/check_compile.sh

# The README and docs/: tests/check_docs.sh (README.md within 300 lines, no link leaving the
# repository, no tracker words, every relative link to a file that exists); the quick start
# compiled, run and compared with the output the README shows; "PerPO in a few calls" compiled
# as it stands inside tests/readme_perpo_test.c and run: it must raise the held-out sampled reward.
test-readme: | $(BUILD)
	@sh tests/check_docs.sh
	@awk '/^<!-- quickstart begin -->/{f=1;next} /^<!-- quickstart end -->/{f=0} f && !/^```/' README.md > $(BUILD)/quickstart.c
	@$(CC) $(WARN) $(OPT) -I. -o $(BUILD)/quickstart $(BUILD)/quickstart.c $(LIBS)
	@awk '/^<!-- quickstart output begin -->/{f=1;next} /^<!-- quickstart output end -->/{f=0} f && !/^```/' README.md > $(BUILD)/quickstart.expected
	@test -s $(BUILD)/quickstart.expected || { echo "README quick start: no expected output in README.md"; exit 1; }
	@./$(BUILD)/quickstart > $(BUILD)/quickstart.out 2> $(BUILD)/quickstart.err \
	  || { echo "README quick start failed"; cat $(BUILD)/quickstart.out $(BUILD)/quickstart.err; exit 1; }
	@diff -u $(BUILD)/quickstart.expected $(BUILD)/quickstart.out \
	  && echo "README quick start: compiled, ran and printed what the README says" \
	  || { echo "README quick start: printed answers differ from the README (above)"; exit 1; }
	@awk '/^<!-- perpo begin -->/{f=1;next} /^<!-- perpo end -->/{f=0} f && !/^```/' README.md > $(BUILD)/readme_perpo.c
	@test -s $(BUILD)/readme_perpo.c || { echo "README: no code between <!-- perpo begin --> and <!-- perpo end -->"; exit 1; }
	@$(CC) $(WARN) $(OPT) -I$(BUILD) -o $(BUILD)/readme_perpo tests/readme_perpo_test.c $(LIBS)
	@./$(BUILD)/readme_perpo || { echo "README PerPO in a few calls: failed (above); it must return ok and raise the reward"; exit 1; }

# README.md's "Where the method is in perpo.h": each row's line of perpo.h holds the text the row
# shows (tests/readme_map.sh), so the map fails when the header moves and the table does not.
test-readme-map:
	@sh tests/readme_map.sh

# examples/perpo_min.c, PerPO end to end in one page: it prints the held-out sampled reward
# before and after and exits non-zero unless PerPO raised it.
test-min: $(BUILD)/perpo_min
	@./$(BUILD)/perpo_min > $(BUILD)/perpo_min.out \
	  || { cat $(BUILD)/perpo_min.out; echo "examples/perpo_min.c: PerPO did not raise the reward"; exit 1; }
	@grep 'held-out sampled reward' $(BUILD)/perpo_min.out | sed 's|^|examples/perpo_min.c: |'

# Each experiment end to end at a tiny size: pretraining, then the demo from
# that checkpoint; results.json must hold every method with its metrics.
TINY_PRE := --pretrain 1 --sft-steps 6 --sft-warmup 2 --save-every 50 --batch 4 --val 8 --threads 1 --verbose 0
TINY_RUN := --test 8 --bon-test 4 --pref-prompts 8 --pref-steps 2 --lists 2 --margin 0 --threads 1 --verbose 0
test-examples: $(BUILD)/grounding $(BUILD)/dense_ocr
	@for t in grounding dense_ocr; do \
	  rm -rf $(BUILD)/tiny_$$t && mkdir -p $(BUILD)/tiny_$$t && \
	  ./$(BUILD)/$$t $(TINY_PRE) --sft-checkpoint $(BUILD)/tiny_$$t/sft.ckpt > $(BUILD)/tiny_$$t/pretrain.out && \
	  ./$(BUILD)/$$t $(TINY_RUN) --sft-checkpoint $(BUILD)/tiny_$$t/sft.ckpt --out $(BUILD)/tiny_$$t > $(BUILD)/tiny_$$t/run.out && \
	  ! ./$(BUILD)/$$t $(TINY_RUN) --sft-checkpoint $(BUILD)/tiny_$$t/missing.ckpt --out $(BUILD)/tiny_$$t/x 2> $(BUILD)/tiny_$$t/missing.err && \
	  grep -q "make pretrain$$( [ $$t = dense_ocr ] && echo -ocr)\`" $(BUILD)/tiny_$$t/missing.err && \
	  for key in '"control (SFT continued)"' '"DPO"' '"PerPO"' '"Best-of-'; do \
	    grep -q "$$key" $(BUILD)/tiny_$$t/results.json || { echo "$$t: $$key missing from results.json"; exit 1; }; done && \
	  grep -q '"regression"' $(BUILD)/tiny_$$t/sft.ckpt.json && \
	  echo "example $$t: tiny pretraining and demo ran, results.json complete" || { echo "example $$t failed"; cat $(BUILD)/tiny_$$t/*.out; exit 1; }; \
	done
	@# a fixed set of 16 labelled scenes with early stopping, then PerPO on those same scenes
	@rm -rf $(BUILD)/tiny_fixed && mkdir -p $(BUILD)/tiny_fixed && \
	  ./$(BUILD)/grounding $(TINY_PRE) --sft-steps 100 --scenes 16 --val-every 50 --patience 1 \
	    --sft-checkpoint $(BUILD)/tiny_fixed/sft.ckpt > $(BUILD)/tiny_fixed/pretrain.out && \
	  grep -q '"scenes": 16' $(BUILD)/tiny_fixed/sft.ckpt.json && grep -q '"best_step": 50' $(BUILD)/tiny_fixed/sft.ckpt.json && \
	  ./$(BUILD)/grounding $(TINY_RUN) --pref-data-seed 1 --diag 4 --test-shift 1 --sft-checkpoint $(BUILD)/tiny_fixed/sft.ckpt \
	    --out $(BUILD)/tiny_fixed > $(BUILD)/tiny_fixed/run.out && \
	  grep -q '"rho_heldout"' $(BUILD)/tiny_fixed/results.json && grep -q '"pref_data_seed": 1' $(BUILD)/tiny_fixed/results.json && \
	  grep -q '"test_shift": 1' $(BUILD)/tiny_fixed/results.json && grep -q 'test seed 777, shifted' $(BUILD)/tiny_fixed/run.out && \
	  ! ./$(BUILD)/grounding --test-shift 2 2> $(BUILD)/tiny_fixed/shift.err && grep -q 'test-shift 2' $(BUILD)/tiny_fixed/shift.err && \
	  ! ./$(BUILD)/dense_ocr --test-shift 1 2> $(BUILD)/tiny_fixed/shift.err && grep -q 'test-shift 1' $(BUILD)/tiny_fixed/shift.err && \
	  echo "example grounding --scenes: fixed-set pretraining with early stopping, PerPO on its scenes (tested on smaller objects), diagnostics" \
	  || { echo "example grounding --scenes failed"; cat $(BUILD)/tiny_fixed/*.out; exit 1; }
	@# --data: 6 + 6 user pages (multi-line transcriptions written with \n) read by the committed OCR reader
	@$(CC) $(WARN) -O1 -o $(BUILD)/write_pages tests/write_pages.c $(LIBS)
	@rm -rf $(BUILD)/tiny_data && mkdir -p $(BUILD)/tiny_data/pages && ./$(BUILD)/write_pages $(BUILD)/tiny_data/pages 6 && \
	  ./$(BUILD)/dense_ocr --data $(BUILD)/tiny_data/pages --sft-steps 2 $(TINY_RUN) --out $(BUILD)/tiny_data > $(BUILD)/tiny_data/run.out && \
	  grep -m1 '"edit_distance":' $(BUILD)/tiny_data/results.json | awk -F': ' '{ exit !($$2 + 0 < 0.3) }' && \
	  echo "example dense_ocr --data: 6 user pages fine-tuned on, 6 read back (SFT edit distance below 0.3)" \
	  || { echo "example dense_ocr --data failed"; cat $(BUILD)/tiny_data/run.out; exit 1; }

# examples/repro.c at its --quick size: every experiment written, and its resume (damaged unit
# files found and computed again, a SIGKILLed run finished: reports byte-identical;
# tests/repro_check.sh).
test-repro: $(BUILD)/repro
	@sh tests/repro_check.sh $(BUILD)

test-unit: $(BUILD)/run_tests
	./$(BUILD)/run_tests

# The CBLAS path (when OpenBLAS is installed): products and the PyTorch reference again.
test-blas: | $(BUILD)
	@if pkg-config --exists openblas 2>/dev/null; then \
	  $(CC) $(WARN) $(OPT) -DPERPO_USE_CBLAS $$(pkg-config --cflags openblas) -o $(BUILD)/run_tests_cblas tests/main.c \
	    $$(pkg-config --libs openblas) -lm && \
	  OPENBLAS_NUM_THREADS=1 ./$(BUILD)/run_tests_cblas gemm PyTorch finite 2>&1 | tail -1 | sed 's/^/CBLAS build: /' | tee $(BUILD)/cblas.out && \
	  grep -Eq '^CBLAS build: [1-9][0-9]* passed, 0 failed$$' $(BUILD)/cblas.out; \
	else echo "CBLAS build: skipped (install libopenblas-dev to test PERPO_USE_CBLAS)"; fi

# The portable C matrix product (no -march, so no intrinsics) against the same references, and
# the AVX2 build.
test-portable: | $(BUILD)
	@$(CC) $(WARN) -O2 -o $(BUILD)/run_tests_portable tests/main.c $(LIBS)
	@./$(BUILD)/run_tests_portable gemm PyTorch finite cache 2>&1 | tail -1 | sed 's/^/portable build: /' | tee $(BUILD)/portable.out
	@grep -Eq '^portable build: [1-9][0-9]* passed, 0 failed$$' $(BUILD)/portable.out
	@# the AVX2 tile (6x16), compiled without -ffp-contract: its FMAs are explicit, so the row
	@# kernels of decoding must fuse the same way (the KV cache = recomputation tests)
	@if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo; then \
	  $(CC) $(WARN) -O2 -mavx2 -mfma -o $(BUILD)/run_tests_avx2 tests/main.c $(LIBS) && \
	  ./$(BUILD)/run_tests_avx2 gemm PyTorch finite cache 2>&1 | tail -1 | sed 's/^/AVX2 build: /' | tee $(BUILD)/avx2.out && \
	  grep -Eq '^AVX2 build: [1-9][0-9]* passed, 0 failed$$' $(BUILD)/avx2.out; \
	else echo "AVX2 build: skipped (this CPU has no AVX2 and FMA)"; fi

# The bfloat16 products (PERPO_USE_BF16), where this CPU has AVX512_BF16: the products against
# their definition bit for bit, the KV cache against recomputation, same seed -> same bits,
# exact resume, and 1, 2 and 3 threads bit-identical. (The PyTorch and finite-difference tests
# hold float32 tolerances: they are for the float32 build.)
BF16_TESTS := bfloat16 "KV cache" "same seed" memorizes "stopped, saved"
test-bf16: | $(BUILD)
	@if [ "$(HAVE_BF16)" = 1 ]; then \
	  $(CC) $(WARN) $(OPT) -march=native -DPERPO_USE_BF16 -o $(BUILD)/run_tests_bf16 tests/main.c $(LIBS) && \
	  ./$(BUILD)/run_tests_bf16 $(BF16_TESTS) 2>&1 | tail -1 | sed 's/^/bfloat16 build: /' | tee $(BUILD)/bf16.out && \
	  grep -Eq '^bfloat16 build: [1-9][0-9]* passed, 0 failed$$' $(BUILD)/bf16.out && \
	  $(CC) $(WARN) $(OPT) -march=native -DPERPO_USE_BF16 -fopenmp -o $(BUILD)/omp_threads_bf16 tests/omp_threads.c $(LIBS) && \
	  ./$(BUILD)/omp_threads_bf16 2>&1 | tail -1 | sed 's/^/bfloat16 build, 1-3 threads: /' | tee $(BUILD)/bf16_omp.out && \
	  grep -Eq 'threads: [1-9][0-9]* passed, 0 failed$$' $(BUILD)/bf16_omp.out; \
	else echo "bfloat16 build: skipped (this CPU has no AVX512_BF16)"; fi

# The whole library on its reference path (PERPO_REFERENCE: the plain C kernels, the model's
# forward and backward as the math reads, generation without a KV cache): against PyTorch and
# finite differences, the reference kernels and model against the fast path (compiled in every
# build), the objectives, and training through it (SFT: memorize, same seed, exact resume;
# preference: reference log-probs, the NLL term, exact resume, a small PerPO run). The end-to-end
# pipelines of t_pref.c are left out: minutes each without the cache, and their thresholds are
# tuned on the fast path's trajectories.
REF_TESTS := PyTorch "finite differences" "reference kernels" "reference model" \
  "small preference run" reference_pytorch finite_differences _hand permutation \
  preference_metrics "objectives: " "SFT memorizes" "same seed" "SFT stopped" \
  "sampler frequencies" "reference log-probs" "NLL term on each" "preference training stopped"
$(BUILD)/run_tests_reference: $(TEST_SRC) perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) -DPERPO_REFERENCE -o $@ tests/main.c $(LIBS)

test-reference: $(BUILD)/run_tests_reference
	@./$(BUILD)/run_tests_reference $(REF_TESTS) > $(BUILD)/reference.out 2>&1; \
	  tail -1 $(BUILD)/reference.out | sed 's/^/reference path (PERPO_REFERENCE): /'; \
	  grep -Eq '^[1-9][0-9]* passed, 0 failed$$' $(BUILD)/reference.out || { grep FAIL $(BUILD)/reference.out; exit 1; }
	@# every example but the MPI one (mpicc) builds on the reference path, and perpo_min's PerPO run works through it
	@for e in grounding dense_ocr loss_only perpo_min repro; do \
	  $(CC) $(WARN) $(OPT) $(EX_DEFS) -DPERPO_REFERENCE -o $(BUILD)/ref_$$e examples/$$e.c $(LIBS) || exit 1; done
	@./$(BUILD)/ref_perpo_min > $(BUILD)/ref_perpo_min.out \
	  || { cat $(BUILD)/ref_perpo_min.out; echo "perpo_min on the reference path: PerPO did not raise the reward"; exit 1; }
	@grep 'held-out sampled reward' $(BUILD)/ref_perpo_min.out | sed 's|^|examples on the reference path built; perpo_min: |'

# Data-parallel SFT and PerPO over MPI (the trainers' reduction hook is MPI_Allreduce).
$(BUILD)/mpi_train: examples/mpi_train.c $(EX_COMMON) perpo.h | $(BUILD)
	$(MPICC) $(WARN) $(OPT) $(OMP) -o $@ $< $(LIBS)

# 2 MPI ranks against 1 process with the same total batch (tests/mpi_check.sh says what it
# checks); skipped with a message where MPI is not installed.
test-mpi:
	@if [ "$(HAVE_MPI)" = 1 ]; then $(MAKE) --no-print-directory $(BUILD)/mpi_train > /dev/null && sh tests/mpi_check.sh $(BUILD); \
	else echo "MPI: skipped (install openmpi-bin and libopenmpi-dev to test examples/mpi_train.c)"; fi

# The header as a shared library, for ctypes (examples/torch_loss.py) and other languages.
$(BUILD)/libperpo.so: perpo.h | $(BUILD)
	@printf '#define PERPO_IMPLEMENTATION\n#include "perpo.h"\n' > $(BUILD)/libperpo.c
	$(CC) $(WARN) $(OPT) -fPIC -shared -I. -o $@ $(BUILD)/libperpo.c $(LIBS)
shared: $(BUILD)/libperpo.so

# perpo_listwise_loss inside PyTorch autograd against PyTorch versions of the objectives;
# skipped with a message where python3-torch is not installed.
test-torch:
	@if $(PYTHON) -c "import torch" > /dev/null 2>&1; then $(MAKE) --no-print-directory $(BUILD)/libperpo.so > /dev/null && \
	  $(PYTHON) tests/torch_loss_test.py; \
	else echo "torch: skipped (install python3-torch to test examples/torch_loss.py)"; fi

# Built with OpenMP: 1, 2 and 3 threads give bit-identical parameters and generations.
$(BUILD)/omp_threads: tests/omp_threads.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) -fopenmp -o $@ tests/omp_threads.c $(LIBS)

test-omp: $(BUILD)/omp_threads
	./$(BUILD)/omp_threads

# Allocation failure at every call count of create, train, save, load, generate, preference.
$(BUILD)/alloc_fail: tests/alloc_fail.c perpo.h | $(BUILD)
	$(CC) $(WARN) -g -O1 -o $@ tests/alloc_fail.c $(LIBS)

test-alloc: $(BUILD)/alloc_fail
	./$(BUILD)/alloc_fail

# The whole suite and the allocation test under AddressSanitizer + UndefinedBehaviorSanitizer.
# The OCR pipeline test trains for 400 steps and takes over 15 minutes under the sanitizers;
# the grounding pipeline tests run the same library code, so it is skipped there.
SAN_SKIP ?= "-dense OCR"
SAN := -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
$(BUILD)/run_tests_san: $(TEST_SRC) perpo.h | $(BUILD)
	$(CC) $(WARN) $(SAN) -o $@ tests/main.c $(LIBS)
$(BUILD)/alloc_fail_san: tests/alloc_fail.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(SAN) -o $@ tests/alloc_fail.c $(LIBS)

test-sanitize: $(BUILD)/run_tests_san $(BUILD)/alloc_fail_san
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./$(BUILD)/alloc_fail_san
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./$(BUILD)/run_tests_san $(SAN_SKIP)

# The crash test of make test (20 SIGKILLs at seeded moments, some inside a save) with more kills.
SOAK_KILLS ?= 200
soak: $(BUILD)/run_tests
	PERPO_CRASH_KILLS=$(SOAK_KILLS) ./$(BUILD)/run_tests crash

# libFuzzer targets (clang), time-boxed: FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz:
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

# The SFT checkpoints the demos start from, as the paper starts from a pretrained MLLM; each is
# committed with its JSON record (how it was made, what it scores). Resumable: after an
# interruption, run it again and it goes on from the .partial file.
#   pretrain         the demo's: a fixed set of 2,048 labelled scenes (seed 11), 2,750 steps, the
#                    best of 11 validations kept (early stopping; best at step 2,000), 15-20 min
#   pretrain-stream  fresh scenes every step, 8,000 steps (the earlier regime), ~80 min
#   pretrain-ocr     the OCR reader, fresh pages every step, 8,000 steps, ~75 min
PRETRAIN_ARGS ?= --scenes 2048 --seed 11 --sft-steps 2750 --sft-lr 1e-3 --sft-warmup 200 --batch 32 --val 500 --val-seed 555 --val-every 250 --patience 0
PRETRAIN_STREAM_ARGS ?= --sft-steps 8000 --sft-lr 1e-3 --sft-warmup 200 --batch 32 --seed 1 --val 2000 --val-seed 555
PRETRAIN_OCR_ARGS ?= --sft-steps 8000 --sft-lr 1e-3 --sft-warmup 200 --batch 32 --seed 1 --val 1000 --val-seed 556
pretrain: $(BUILD)/grounding
	@mkdir -p examples/models
	./$(BUILD)/grounding --pretrain 1 --sft-checkpoint examples/models/grounding_sft_k2048.ckpt $(PRETRAIN_ARGS)

pretrain-stream: $(BUILD)/grounding
	@mkdir -p examples/models
	./$(BUILD)/grounding --pretrain 1 --sft-checkpoint examples/models/grounding_sft.ckpt $(PRETRAIN_STREAM_ARGS)

pretrain-ocr: $(BUILD)/dense_ocr
	@mkdir -p examples/models
	./$(BUILD)/dense_ocr --pretrain 1 --sft-checkpoint examples/models/dense_ocr_sft.ckpt $(PRETRAIN_OCR_ARGS)

demo: $(BUILD)/grounding
	./$(BUILD)/grounding --out results/grounding $(DEMO_ARGS)

demo-full: pretrain demo

# The paper's analyses in miniature from the committed checkpoints (examples/repro.c,
# docs/repro.md): resumable, so run it again after an interruption. REPRO_ARGS=--quick: seconds.
repro: $(BUILD)/repro
	./$(BUILD)/repro $(REPRO_ARGS)

demo-ocr: $(BUILD)/dense_ocr
	./$(BUILD)/dense_ocr --out results/dense_ocr $(DEMO_ARGS)

# Benchmarks: one JSON object per line (bench/README.md). bench-compare runs PyTorch eager side
# by side (needs Debian's python3-torch; libopenblas-dev adds the OpenBLAS GEMM reference).
HAVE_OPENBLAS := $(shell pkg-config --exists openblas 2>/dev/null && echo 1)
$(BUILD)/bench: bench/bench.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) $(OMP) -o $@ bench/bench.c $(LIBS)
$(BUILD)/bench_cblas: bench/bench.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) $(OMP) -DPERPO_USE_CBLAS $(shell pkg-config --cflags openblas) -o $@ bench/bench.c $(shell pkg-config --libs openblas) -lm

# The bfloat16 products (PERPO_USE_BF16), where this CPU has AVX512_BF16: bench-compare runs them too.
$(BUILD)/bench_bf16: bench/bench.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) -march=native $(OMP) -DPERPO_USE_BF16 -o $@ bench/bench.c $(LIBS)

bench: $(BUILD)/bench
	./$(BUILD)/bench $(BENCH_ARGS)

$(BUILD)/scaling: bench/scaling.c perpo.h | $(BUILD)
	$(CC) $(WARN) $(OPT) $(OMP) -o $@ bench/scaling.c $(LIBS)

bench-scaling: $(BUILD)/scaling
	./$(BUILD)/scaling $(SCALING_ARGS)

bench-compare: $(BUILD)/bench $(if $(HAVE_OPENBLAS),$(BUILD)/bench_cblas) $(if $(HAVE_BF16),$(BUILD)/bench_bf16)
	BENCH=$(BUILD)/bench BENCH_CBLAS=$(if $(HAVE_OPENBLAS),$(BUILD)/bench_cblas) BENCH_BF16=$(if $(HAVE_BF16),$(BUILD)/bench_bf16) /usr/bin/python3 bench/compare.py $(COMPARE_ARGS)

# Reformat every C source with the committed .clang-format (one style).
FORMAT_SRC = perpo.h $(wildcard examples/*.h examples/*.c tests/*.h tests/*.c bench/*.h bench/*.c)
format:
	clang-format -i $(FORMAT_SRC)

clean:
	rm -rf $(BUILD)
