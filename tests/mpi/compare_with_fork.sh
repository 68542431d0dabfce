#!/usr/bin/env bash
# compare_with_fork.sh DIR STACK STACK_MPI COMPARE RANKS MPIEXEC...: runs
# shmarray-stack and shmarray-stack-mpi (RANKS ranks) on the same synthetic
# stack, then on a TIFF, then on a float TIFF with a NaN (no steps), and
# compares their outputs (prints "same" three times).
set -euo pipefail
dir=$1 stack=$2 mpi=$3 compare=$4 ranks=$5
shift 5
args=(--synthetic 11,40,50)
rm -rf "$dir"
"$stack" "${args[@]}" -j 2 -o "$dir/fork" > /dev/null
"$@" "$ranks" "$mpi" "${args[@]}" -o "$dir/mpi"
"$compare" "$dir/fork" "$dir/mpi"
"$stack" "$dir/fork/processed.tif" -j 2 -o "$dir/fork-tiff" > /dev/null
"$@" "$ranks" "$mpi" "$dir/fork/processed.tif" -o "$dir/mpi-tiff"
"$compare" "$dir/fork-tiff" "$dir/mpi-tiff"
"$compare" --make-nan-stack "$dir/nan.tif"
"$stack" "$dir/nan.tif" --steps none -j 2 -o "$dir/fork-nan" > /dev/null
"$@" "$ranks" "$mpi" "$dir/nan.tif" --steps none -o "$dir/mpi-nan"
"$compare" "$dir/fork-nan" "$dir/mpi-nan"
