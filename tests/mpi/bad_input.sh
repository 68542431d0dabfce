#!/usr/bin/env bash
# bad_input.sh DIR STACK_MPI MPIEXEC...: a missing input ends the job with a
# message and a non-zero exit, never a hang, and leaves /dev/shm as it was.
dir=$1 mpi=$2
shift 2
before=$(ls -A /dev/shm | sort)
"$@" 2 "$mpi" "$dir/no-such-file.tif" -o "$dir/bad" < /dev/null 2>&1
rc=$?
[ $rc -ne 0 ] && echo "exit $rc"
sleep 0.5
[ "$(ls -A /dev/shm | sort)" = "$before" ] && echo "/dev/shm as it was"
# a failure after the windows exist (rank 0 cannot write its output): the
# job still ends, with the message, never waiting in a collective free
mkdir -p "$dir/blocked/processed.tif"
"$@" 2 "$mpi" --synthetic 9,40,50 -o "$dir/blocked" < /dev/null 2>&1
rc=$?
[ $rc -ne 0 ] && echo "late failure: exit $rc"
sleep 0.5
[ "$(ls -A /dev/shm | sort)" = "$before" ] && echo "/dev/shm as it was again"
rm -rf "$dir/blocked"
exit 0
