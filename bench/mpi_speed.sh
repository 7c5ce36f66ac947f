#!/bin/sh
# 2 MPI ranks against 1 on this machine: examples/mpi_train.c from the committed SFT checkpoint,
# 60 SFT steps of 16 scenes and 30 PerPO steps of 4 lists of 8 (64 prompts sampled), as
# 1 rank x 1 thread (batch 16, 4 lists), 2 ranks x 1 thread (batch 8, 2 lists each) and
# 1 rank x 2 OpenMP threads, ROUNDS times in turn; one JSON line per run (times in seconds),
# then the load average. Run from the repository root after `make build/mpi_train`.
ROUNDS=${ROUNDS:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
bin=build/mpi_train
args="--init examples/models/grounding_sft.ckpt --sft-steps 60 --pref-steps 30 --prompts 64 --n 8 --verbose 0"
out=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
    OMP_NUM_THREADS=1 mpirun -np 1 $bin $args --batch 16 --lists 4 --out "$out/a" | grep '^{'
    OMP_NUM_THREADS=1 mpirun -np 2 $bin $args --batch 8 --lists 2 --out "$out/b" | grep '^{'
    OMP_NUM_THREADS=2 mpirun -np 1 $bin $args --batch 16 --lists 4 --out "$out/c" | grep '^{'
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
done
rm -rf "$out"
