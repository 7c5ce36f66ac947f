#!/bin/sh
# The header compiled as C99, C11 and C++ with gcc and clang (each when installed), in PERPO_STATIC
# mode, with OpenMP, on the reference path (PERPO_REFERENCE), without the POSIX file calls
# (PERPO_NO_POSIX), with a user's PERPO_SYNC hook, with the AVX2 and AVX-512 intrinsics at -O2
# (where g++ 12 needs the header's pragma) and the bfloat16 products (PERPO_USE_BF16); and the
# examples as C++, all at -Wall -Wextra -Wpedantic -Werror; the header alone (not the examples)
# also with -Wconversion -Wcast-qual -Wshadow, where a conversion it means is an explicit cast;
# and that the API map at the top of perpo.h names every public function.
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/impl.c" <<'SRC'
#define PERPO_IMPLEMENTATION
#include "perpo.h"
int main(void) {
    perpo_config c = perpo_config_default();
    return perpo_config_validate(&c) == PERPO_OK ? 0 : 1;
}
SRC
fail=0
W="-Wall -Wextra -Wpedantic -Werror -I. -c -o $tmp/out.o"
AVX512="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma" # the intrinsics paths (compiled, not run)
BF16="-DPERPO_USE_BF16 -mavx512bf16"
STRICT="-Wconversion -Wcast-qual -Wshadow" # perpo.h only: the examples and tests need not be
check() { # name, command...
    name=$1; shift
    if "$@" > "$tmp/log" 2>&1; then echo "compile ok: $name"; else echo "compile FAILED: $name"; cat "$tmp/log"; fail=1; fi
}
for cc in gcc clang; do
    command -v $cc > /dev/null 2>&1 || { echo "compile skipped: $cc not installed"; continue; }
    check "$cc -std=c99" $cc -std=c99 $W "$tmp/impl.c"
    check "$cc -std=c11" $cc -std=c11 $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_STATIC" $cc -std=c99 -DPERPO_STATIC $W "$tmp/impl.c"
    check "$cc -std=c99 -fopenmp" $cc -std=c99 -fopenmp $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_NO_POSIX" $cc -std=c99 -DPERPO_NO_POSIX $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_REFERENCE" $cc -std=c99 -DPERPO_REFERENCE $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_SYNC user hook" $cc -std=c99 "-DPERPO_SYNC(path,is_dir)=((void)(path),(void)(is_dir),0)" $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 AVX2" $cc -std=c99 -O2 -mavx2 -mfma $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 AVX-512" $cc -std=c99 -O2 $AVX512 $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 PERPO_USE_BF16" $cc -std=c99 -O2 $AVX512 $BF16 $W "$tmp/impl.c"
    check "$cc -std=c99 strict" $cc -std=c99 $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 -fopenmp strict" $cc -std=c99 -fopenmp $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_REFERENCE strict" $cc -std=c99 -DPERPO_REFERENCE $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 PERPO_NO_POSIX strict" $cc -std=c99 -DPERPO_NO_POSIX $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 AVX2 strict" $cc -std=c99 -O2 -mavx2 -mfma $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 AVX-512 strict" $cc -std=c99 -O2 $AVX512 $STRICT $W "$tmp/impl.c"
    check "$cc -std=c99 -O2 PERPO_USE_BF16 strict" $cc -std=c99 -O2 $AVX512 $BF16 $STRICT $W "$tmp/impl.c"
    if $cc -std=c99 $AVX512 -DPERPO_USE_BF16 $W "$tmp/impl.c" > "$tmp/log" 2>&1 || ! grep -q "PERPO_USE_BF16 needs AVX512_BF16" "$tmp/log"; then
        echo "compile FAILED: $cc PERPO_USE_BF16 without AVX512_BF16 must stop with a clear #error"; cat "$tmp/log"; fail=1
    else echo "compile ok: $cc PERPO_USE_BF16 without AVX512_BF16 stops with its #error"; fi
done
for cxx in g++ clang++; do
    command -v $cxx > /dev/null 2>&1 || { echo "compile skipped: $cxx not installed"; continue; }
    check "$cxx -x c++" $cxx -x c++ $W "$tmp/impl.c"
    check "$cxx -x c++ PERPO_REFERENCE" $cxx -x c++ -DPERPO_REFERENCE $W "$tmp/impl.c"
    check "$cxx -x c++ -O2 AVX2" $cxx -x c++ -O2 -mavx2 -mfma $W "$tmp/impl.c"
    check "$cxx -x c++ -O2 AVX-512" $cxx -x c++ -O2 $AVX512 $W "$tmp/impl.c"
    check "$cxx -x c++ -O2 PERPO_USE_BF16" $cxx -x c++ -O2 $AVX512 $BF16 $W "$tmp/impl.c"
    check "$cxx -x c++ strict" $cxx -x c++ $STRICT $W "$tmp/impl.c"
    check "$cxx -x c++ PERPO_REFERENCE strict" $cxx -x c++ -DPERPO_REFERENCE $STRICT $W "$tmp/impl.c"
    check "$cxx -x c++ -O2 AVX-512 strict" $cxx -x c++ -O2 $AVX512 $STRICT $W "$tmp/impl.c"
    check "$cxx -x c++ -O2 PERPO_USE_BF16 strict" $cxx -x c++ -O2 $AVX512 $BF16 $STRICT $W "$tmp/impl.c"
    for ex in examples/grounding.c examples/dense_ocr.c examples/loss_only.c examples/perpo_min.c examples/repro.c; do
        check "$cxx -x c++ $ex" $cxx -x c++ -fopenmp $W "$ex"
    done
done
# The API map after CONVENTIONS names every public function.
map=$(sed -n '/API MAP/,/LICENSE: MIT/p' perpo.h)
missing=""
for f in $(sed -n '/^#ifndef PERPO_H/,/^#endif \/\* PERPO_H/p' perpo.h | grep -o 'PERPODEF [^(]*(' | sed 's/($//' |
           awk '{print $NF}' | tr -d '*' | grep '^perpo_'); do
    printf '%s\n' "$map" | grep -qw "$f" || missing="$missing $f"
done
if [ -z "$missing" ]; then echo "API map: every public function listed"; else echo "API map FAILED: missing$missing"; fail=1; fi
exit $fail
