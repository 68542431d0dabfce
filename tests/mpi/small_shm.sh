#!/usr/bin/env bash
# small_shm.sh DIR STACK_MPI MPIEXEC...: in a private mount namespace with a
# 4 MiB tmpfs over /dev/shm, shmarray-stack-mpi refuses a job that does not
# fit, naming the bytes and the ways out, with exit 1 and no hang; with
# --scratch DIR it runs, its windows' files in DIR.
dir=$1 mpi=$2
shift 2
if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2> /dev/null; then
  echo "SHMARRAY-SKIP: needs root for a private mount namespace"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir/scratch"
export SMALL_DIR=$dir SMALL_MPI=$mpi
unshare -m bash -s -- "$@" << 'INNER'
mount --make-rprivate / && mount -t tmpfs -o size=4m tmpfs /dev/shm || exit 1
"$@" 2 "$SMALL_MPI" --synthetic 40,128,128 -o "$SMALL_DIR/small" < /dev/null 2>&1
echo "exit $?"
"$@" 2 "$SMALL_MPI" --synthetic 40,128,128 -o "$SMALL_DIR/scratched" --scratch "$SMALL_DIR/scratch" < /dev/null 2>&1
echo "exit $?"
test -s "$SMALL_DIR/scratched/max.png" && echo "scratch run wrote its files"
INNER
