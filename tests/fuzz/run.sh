#!/bin/sh
# Fuzzes the parsers of perpo.h with clang's libFuzzer under AddressSanitizer and UBSan.
#   tests/fuzz/run.sh [seconds-per-target] [target...]     (from anywhere; default 60 s, all)
# Targets: checkpoint (perpo_model_load), box (perpo_parse_box), ocr (perpo_ocr_score),
# pnm (perpo_image_parse_pnm), tsv (perpo_manifest_parse). Each is built into build/fuzz/ and
# run time-boxed from a working copy of its committed seeds (tests/fuzz/corpus/<target>/, which
# the run never modifies). A crash leaves build/fuzz/crash-<target>-* (replay it with
# `build/fuzz/fuzz_<target> FILE`). Prints one line per target with its executions; exits
# non-zero when a target fails to build or finds a bug.
# Environment: FUZZ_CC (clang), FUZZ_CFLAGS (extra flags, e.g. -I for another perpo.h),
# FUZZ_JOBS (targets run at once, default 1).
set -u
cd "$(dirname "$0")/../.." || exit 1
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-checkpoint box ocr pnm tsv}
cc=${FUZZ_CC:-clang}
jobs=${FUZZ_JOBS:-1}
out=build/fuzz
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
mkdir -p "$out"

# clang with the libFuzzer runtime (Debian: clang + libclang-rt-<version>-dev)
probe() {
    printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > "$out/probe.c"
    "$cc" -fsanitize=fuzzer,address,undefined -o "$out/probe" "$out/probe.c" > /dev/null 2>&1
}
if ! probe; then
    echo "fuzz: $cc cannot build libFuzzer targets; installing clang and its runtime" >&2
    if command -v apt-get > /dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang) > /dev/null 2>&1
        ver=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
        [ -n "$ver" ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$ver-dev" > /dev/null 2>&1
    fi
    probe || { echo "fuzz: FAILED: no clang with -fsanitize=fuzzer" >&2; exit 1; }
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() { # target -> writes $out/<target>.result
    t=$1
    bin=$out/fuzz_$t
    log=$out/fuzz_$t.log
    if ! "$cc" $flags ${FUZZ_CFLAGS:-} -I. -o "$bin" "tests/fuzz/fuzz_$t.c" -lm > "$log" 2>&1; then
        echo "fuzz_$t: BUILD FAILED (see $log)" > "$out/$t.result"
        return
    fi
    rm -rf "$out/corpus_$t"
    mkdir -p "$out/corpus_$t"
    cp tests/fuzz/corpus/"$t"/* "$out/corpus_$t/" 2>/dev/null
    "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
        -artifact_prefix="$out/crash-$t-" "$out/corpus_$t" >> "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    units=$(ls "$out/corpus_$t" | wc -l)
    if [ "$rc" -eq 0 ]; then
        echo "fuzz_$t: ok, ${execs:-?} executions in ${secs} s (${speed:-?}/s), corpus ${units} inputs" > "$out/$t.result"
    else
        crash=$(ls -t "$out"/crash-"$t"-* 2>/dev/null | head -n 1)
        echo "fuzz_$t: FAILED (exit $rc) after ${execs:-?} executions; reproducer ${crash:-none}; log $log" > "$out/$t.result"
    fi
}

running=0
for t in $targets; do
    [ -f "tests/fuzz/fuzz_$t.c" ] || { echo "fuzz: no target '$t'" >&2; exit 2; }
    rm -f "$out/$t.result"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
done
wait

fail=0
for t in $targets; do
    if [ -f "$out/$t.result" ]; then cat "$out/$t.result"; else echo "fuzz_$t: FAILED (no result)"; fail=1; fi
    grep -q ': ok,' "$out/$t.result" 2>/dev/null || fail=1
done
[ "$fail" -eq 0 ] && echo "fuzz: all targets clean" || echo "fuzz: FAILURES (see above)"
exit $fail
