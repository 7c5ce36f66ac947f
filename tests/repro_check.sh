#!/bin/sh
# make test-repro: examples/repro.c end to end at its --quick size, and its resume.
#   1. a fresh run writes every experiment's JSON and SVG (with error bars) and README.md, and
#      every unit's key holds its checkpoint's CRC and, for a preference unit, its point's settings;
#   2. a copy with three unit files damaged (one deleted, one cut short, one value changed so
#      that its CRC no longer matches) and the reports deleted, run again with another thread
#      count: exactly those three are computed again and every report is the same to the byte;
#   3. a copy with every unit of seed 2 deleted, run and SIGKILLed as soon as its first unit is
#      written, then run to the end: every report is the same to the byte again;
#   4. a run over a finished folder computes nothing, and one with other preference steps keeps
#      the units that do not depend on them.
# Usage: sh tests/repro_check.sh BUILD_DIR
set -u
B=${1:-build}
R=$B/repro
d=$B/repro_test
rm -rf "$d" && mkdir -p "$d" || exit 1
die() { echo "repro: $*"; for f in "$d"/*.err; do [ -f "$f" ] && tail -5 "$f"; done; exit 1; }
same() { # the reports of folder $1 and $2 byte for byte
    for f in "$d/$1"/*.json "$d/$1"/*.svg "$d/$1"/README.md; do
        cmp -s "$f" "$d/$2/$(basename "$f")" || die "$2: $(basename "$f") differs from the uninterrupted run's"
    done
}
REPORTS="list_size reliance beta gamma margin data ocr_density"

"$R" --quick --threads 1 --verbose 0 --out "$d/a" > "$d/a.out" 2> "$d/a.err" || die "the quick run failed"
for e in $REPORTS; do
    [ -s "$d/a/$e.json" ] && [ -s "$d/a/$e.svg" ] || die "$e.json or $e.svg missing"
    grep -q "\"experiment\": \"$e\"" "$d/a/$e.json" || die "$e.json names no experiment"
    grep -q "## " "$d/a/README.md" || die "README.md has no table"
done
grep -q 'stroke-width="1.5"' "$d/a/list_size.svg" || die "list_size.svg has no error bars"
grep -q '"Best-of-N (oracle)"' "$d/a/list_size.json" || die "list_size.json has no Best-of-N"
grep -q '"greedy_blank_image_mean_iou"' "$d/a/reliance.json" || die "reliance.json has no blank-image IoU"
grep -q '"edit_distance_d3"' "$d/a/ocr_density.json" || die "ocr_density.json has no density 3"
# the data sweep's smallest sizes keep no list for some seeds: said per seed, means over the rest
grep -q '^| 2 (no list kept for 1 of 2 seeds) | [^|]* | 25.0 (1 of 2) |' "$d/a/README.md" ||
    die "a point where one seed kept no list is not reported per seed"
grep -q '"seeds_where_no_list_passed_the_margin": 1' "$d/a/data.json" || die "data.json: no per-seed no-list count"
n_units=$(ls "$d/a/points" | wc -l)
# every unit's key holds its checkpoint's contents (CRC-32: gzip's trailer carries the same one)
for c in examples/models/grounding_sft_k2048.ckpt examples/models/dense_ocr_sft.ckpt; do
    crc=$(gzip -c "$c" | tail -c 8 | head -c 4 | od -An -tx4 | tr -d ' \n')
    grep -lq "ckpt=$c ckpt_crc=$crc " "$d/a/points"/*.txt || die "no unit names $c with its CRC $crc"
done
grep -q ' point .* n=4 .* objective=dpo,perpo$' "$d/a/points/grounding_n4_beta0.1_gamma0.5_margin0.3_p8_dpo-perpo_s1.txt" ||
    die "a preference unit's key does not hold its point's settings"

# 2. damaged unit files
cp -r "$d/a" "$d/b" && rm -f "$d/b"/*.json "$d/b"/*.svg "$d/b/README.md"
rm "$d/b/points/grounding_best_of_n_s1.txt" || die "no Best-of-N unit"
f="$d/b/points/grounding_n8_beta0.1_gamma0.5_margin0.3_p8_dpo-perpo_s2.txt"
[ -s "$f" ] && head -c 300 "$f" > "$d/cut" && mv "$d/cut" "$f" || die "could not cut $f short"
f="$d/b/points/grounding_n4_beta0.1_gamma0.5_margin0.3_p8_dpo-perpo_s1.txt"
sed 's/^PerPO\.mean_iou 0\./PerPO.mean_iou 1./' "$f" > "$d/changed" && ! cmp -s "$f" "$d/changed" &&
  mv "$d/changed" "$f" || die "could not change a value of $f"
"$R" --quick --threads 2 --verbose 1 --out "$d/b" > "$d/b.out" 2> "$d/b.err" || die "the run over damaged files failed"
grep -q " 3 to compute" "$d/b.err" || die "expected 3 units computed again: $(head -1 "$d/b.err")"
[ "$(grep -c 'damaged or made with other settings' "$d/b.err")" = 2 ] || die "the 2 damaged files were not reported"
same a b

# 3. killed midway, then run to the end
cp -r "$d/a" "$d/c" && rm -f "$d/c"/*.json "$d/c"/*.svg "$d/c/README.md" "$d/c/points"/*_s2.txt
units_in() { ls "$1/points" | grep -c '\.txt$'; }
before=$(units_in "$d/c")
"$R" --quick --threads 1 --verbose 0 --out "$d/c" > /dev/null 2>&1 &
pid=$!
while kill -0 "$pid" 2> /dev/null && [ "$(units_in "$d/c")" -le "$before" ]; do sleep 0.05; done
kill -KILL "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
[ $? = 137 ] || die "the run finished before it could be killed midway"
[ "$(units_in "$d/c")" -lt "$n_units" ] || die "the killed run left no unit to compute"
"$R" --quick --threads 1 --verbose 0 --out "$d/c" > "$d/c.out" 2> "$d/c.err" || die "the run after a kill failed"
same a c
[ "$(units_in "$d/c")" = "$n_units" ] || die "unit files: $(ls "$d/c/points" | wc -l), expected $n_units"

# 4. nothing left to do
"$R" --quick --verbose 0 --out "$d/a" > /dev/null 2> "$d/d.err" || die "the run over a finished folder failed"
grep -q " 0 to compute" "$d/d.err" || die "a finished folder computed again: $(head -1 "$d/d.err")"
same c a
# other preference steps: the SFT scores and Best-of-N (2 tasks, 2 seeds) do not depend on them,
# nor does OCR's preference stage (2 seeds)
"$R" --quick --plan 1 --pref-steps 3 --out "$d/a" > /dev/null 2> "$d/e.err" || die "--plan failed"
grep -q " 6 done before" "$d/e.err" || die "other --pref-steps: expected 6 units kept: $(head -1 "$d/e.err")"
echo "repro --quick: $n_units units, 7 experiments written; 3 damaged units found and computed again, a killed run resumed, reports byte-identical (1 and 2 threads)"
