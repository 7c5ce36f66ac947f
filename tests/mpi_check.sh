#!/bin/sh
# make test-mpi: examples/mpi_train.c on 2 MPI ranks against 1 process with the same total
# batch, from the committed SFT checkpoint: 20 steps of SFT (2 x 4 scenes vs 8) and 20 steps of
# PerPO (2 x 2 lists vs 4, each rank sampling the lists of its own half of the 16 prompts),
# each phase run on its own from that checkpoint.
# Checks: both ranks end with bit-identical weights; the 2-rank weights match the 1-process
# weights within TOL, relative to how far the phase moved them (||two - one|| / ||one - start||;
# summation order differs, see mpi_train.c's compare); 1 process with half the batch is far
# outside TOL (so the check can fail); and rank 0 alone writes checkpoints: each rank runs in a
# folder of its own with a relative --out, so a checkpoint written by rank 1 would land in
# its folder. One OpenMP thread per rank. Usage: sh tests/mpi_check.sh BUILD_DIR
set -u
build=${1:-build}
bin=$(cd "$build" && pwd)/mpi_train
root=$(pwd)
init=$root/examples/models/grounding_sft.ckpt
tol=0.01
d=$build/mpi_test
rm -rf "$d" && mkdir -p "$d" || exit 1
# OpenMPI needs these to run as root and to start more ranks than it counts cores (the flags
# --allow-run-as-root and --oversubscribe, as variables that other MPIs ignore).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
common="--init $init --prompts 16 --n 4 --margin 0.1 --save-every 10 --verbose 0"
fail() { echo "MPI test FAILED: $*"; for f in "$d"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
cd "$d" || exit 1
# Each phase from the committed checkpoint on its own, so both runs of a phase start from the
# same weights and sample the same lists: SFT 20 steps, then PerPO 20 steps.
for phase in sft pref; do
    if [ $phase = sft ]; then args="$common --sft-steps 20 --sft-lr 3e-4 --pref-steps 0"; one="--batch 8"; two="--batch 4"
    else args="$common --sft-steps 0 --pref-steps 20 --pref-lr 1e-4"; one="--lists 4"; two="--lists 2"; fi
    timeout 300 mpirun -np 1 "$bin" $args $one --out one_$phase > one_$phase.out 2>&1 || fail "$phase, 1 process"
    timeout 300 mpirun -np 1 "$bin" $args $two --out half_$phase > half_$phase.out 2>&1 || fail "$phase, 1 process, half batch"
    # each rank in its own folder: OMPI_COMM_WORLD_RANK (OpenMPI) or PMI_RANK (MPICH)
    timeout 300 mpirun -np 2 sh -c 'r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-x}}; mkdir -p $1/r$r && cd $1/r$r && shift && exec "$@"' \
        sh two_$phase "$bin" $args $two --out ckpt > two_$phase.out 2>&1 || fail "$phase, 2 ranks"
    grep -q '"ranks": 2' two_$phase.out || fail "$phase: the 2-rank run did not run on 2 ranks"
    grep -q 'ranks bit-identical: yes' two_$phase.out || fail "$phase: the ranks ended with different weights"
    [ -d two_$phase/r0 ] && [ -d two_$phase/r1 ] || fail "no per-rank folders (rank variable unknown to this MPI?)"
    if [ $phase = sft ]; then files="sft.ckpt sft.partial"; else files="perpo.ckpt pref.partial"; fi
    for f in $files; do [ -s two_$phase/r0/ckpt/$f ] || fail "rank 0 did not write $f"; done
    [ -z "$(find two_$phase/r1 -type f)" ] || fail "rank 1 wrote $(find two_$phase/r1 -type f | tr '\n' ' ')"
done
grep -q 'lists kept over all ranks' two_pref.out || fail "PerPO did not run"
sft=$("$bin" --compare one_sft/sft.ckpt two_sft/r0/ckpt/sft.ckpt --base "$init" --tol $tol) || fail "SFT: $sft"
pref=$("$bin" --compare one_pref/perpo.ckpt two_pref/r0/ckpt/perpo.ckpt --base "$init" --tol $tol) || fail "PerPO: $pref"
ctl_sft=$("$bin" --compare one_sft/sft.ckpt half_sft/sft.ckpt --base "$init" --tol $tol) && fail "SFT with half the batch within tolerance: $ctl_sft"
ctl_pref=$("$bin" --compare one_pref/perpo.ckpt half_pref/perpo.ckpt --base "$init" --tol $tol) && fail "PerPO with half the lists within tolerance: $ctl_pref"
num() { echo "$1" | sed -n 's/.*= \([0-9.e+-]*\) .*max |A - B| \([0-9.e+-]*\),.*/\1 (max |diff| \2)/p'; }
echo "MPI: 2 ranks x batch 4 = 1 process x batch 8 after 20 SFT steps: relative difference $(num "$sft"); 2 ranks x 2 lists = 1 x 4 after 20 PerPO steps: $(num "$pref"); tolerance $tol; half the batch: $(num "$ctl_sft"), $(num "$ctl_pref")"
echo "MPI: $(sed -n 's/.*\(PerPO data: .*\)/\1/p' two_pref.out); ranks bit-identical; rank 0 alone wrote the 4 checkpoints"
