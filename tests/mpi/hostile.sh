#!/usr/bin/env bash
# hostile.sh DIR STACK_MPI COMPARE MPIEXEC...: shmarray-stack-mpi has
# shmarray-stack's protections (issue 19), another user played by nobody:
# links planted at its outputs' names are not followed, nor an output
# directory that is nobody's link; a sigma whose kernel is NaN, a chain of
# pages that loops, a FIFO (never a hang) and a small LZW file declaring a
# huge page are refused, before any window; /dev/shm is left as it was.
# Prints "ok: ..." per check, and "hostile: all 7 checks passed" at the end.
dir=$1 mpi=$2 compare=$3
shift 3
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv > /dev/null; then
  echo "SHMARRAY-SKIP: needs root and setpriv to act as another user"
  exit 0
fi
nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
before=$(ls -A /dev/shm | sort)
rm -rf "$dir" && mkdir -p "$dir/private" "$dir/shared" || exit 1
chmod 755 "$(dirname "$dir")" "$dir"
chmod 700 "$dir/private"
chmod 777 "$dir/shared" # writable by the other user, and not sticky
echo secret > "$dir/private/secret"
chmod 600 "$dir/private/secret"
passed=0
check() { # check NAME: counts a check that held
  echo "ok: $1"
  passed=$((passed + 1))
}

nobody ln -s "$dir/private/secret" "$dir/shared/max.tif"
nobody ln -s "$dir/private/secret" "$dir/shared/processed.tif.partial"
"$@" 2 "$mpi" --synthetic 5,16,16 -o "$dir/shared" < /dev/null > "$dir/links.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(cat "$dir/private/secret")" = secret ] && [ -f "$dir/shared/max.tif" ] &&
  [ ! -L "$dir/shared/max.tif" ] && [ -L "$dir/shared/processed.tif.partial" ]; then
  check "links planted at the outputs' names were not followed"
else
  echo "FAILED: planted links (exit $rc)"
  cat "$dir/links.out"
fi

nobody ln -s "$dir/private" "$dir/shared/out"
"$@" 2 "$mpi" --synthetic 5,16,16 -o "$dir/shared/out" < /dev/null > "$dir/outdir.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "is a symbolic link owned by uid" "$dir/outdir.out" &&
  [ "$(ls -A "$dir/private")" = secret ]; then
  check "an output directory that is nobody's link was refused"
else
  echo "FAILED: output directory through nobody's link (exit $rc)"
  cat "$dir/outdir.out"
fi

"$@" 2 "$mpi" --sigma 1e-300 --steps blur --synthetic 5,16,16 -o "$dir/o" < /dev/null \
  > "$dir/sigma.out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q -- "--sigma 1e-300" "$dir/sigma.out"; then
  check "--sigma 1e-300 was refused with exit 2"
else
  echo "FAILED: --sigma 1e-300 (exit $rc)"
  cat "$dir/sigma.out"
fi

"$compare" --make-loop-stack "$dir/loop.tif" || exit 1
"$@" 2 "$mpi" "$dir/loop.tif" -o "$dir/o" < /dev/null > "$dir/loop.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "chain of pages loops (page 3 points back to page 1)" "$dir/loop.out"; then
  check "a chain of pages that loops was refused"
else
  echo "FAILED: a looping chain of pages (exit $rc)"
  cat "$dir/loop.out"
fi

mkfifo "$dir/fifo.tif"
timeout -k 5 30 "$@" 2 "$mpi" "$dir/fifo.tif" -o "$dir/o" < /dev/null > "$dir/fifo.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] &&
  grep -q "fifo.tif: is not a regular file (it is a FIFO)" "$dir/fifo.out"; then
  check "a FIFO was refused at once"
else
  echo "FAILED: a FIFO as input (exit $rc; 124: it hung)"
  cat "$dir/fifo.out"
fi

"$compare" --make-lzw-bomb "$dir/bomb.tif" || exit 1
"$@" 2 "$mpi" "$dir/bomb.tif" -o "$dir/o" < /dev/null > "$dir/bomb.out" 2>&1
rc=$?
# the check before the windows says what the bytes can decode to
if [ $rc -ne 0 ] && grep -q "page 1, strip 1 cannot be read in full" "$dir/bomb.out" &&
  grep -q "bytes of LZW data decode to at most" "$dir/bomb.out"; then
  check "a $(stat -c %s "$dir/bomb.tif")-byte LZW file declaring 12000 x 12000 was refused"
else
  echo "FAILED: an LZW bomb (exit $rc)"
  cat "$dir/bomb.out"
fi

sleep 0.5
if [ "$(ls -A /dev/shm | sort)" = "$before" ]; then
  check "/dev/shm as it was"
else
  echo "FAILED: /dev/shm changed"
fi
rm -rf "$dir"
[ $passed -eq 7 ] && echo "hostile: all 7 checks passed"
exit 0
