#!/usr/bin/env bash
# One entry point for a fresh machine: installs the Debian packages shmarray
# needs, configures, builds, and runs either the main job or the test suite.
#
#   bash tools/run.sh demo    # the main job: shmarray-stack on a synthetic stack
#   bash tools/run.sh test    # every test: plain, ASan+UBSan and TSan builds, and the fuzzer
#   bash tools/run.sh bench   # the benchmarks (prints ratios)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
what=${1:-demo}
jobs=${SHMARRAY_JOBS:-$(nproc)}

# Everything the project builds against, from Debian only.
packages=(cmake make g++ pkg-config libboost-dev catch2 libeigen3-dev xtensor-dev xtl-dev libcli11-dev
  libtiff-dev libpng-dev libopenmpi-dev openmpi-bin)
# The test command also builds with clang 14 (ThreadSanitizer, libFuzzer) and
# runs Python: the Python module's tests and examples (one plots with matplotlib),
# acts as another user (setpriv, unshare: util-linux),
# and a test of CPython's resource tracker.
if [ "$what" = test ]; then
  packages+=(clang-14 libclang-rt-14-dev util-linux python3 python3-numpy python3-pytest python3-venv
    python3-setuptools python3-wheel python3-matplotlib)
fi

# The benchmarks also measure against iceoryx 2 (the ring benchmark's
# baseline: its C++ publisher and subscriber, and the iox-roudi daemon).
if [ "$what" = bench ]; then
  packages+=(libiceoryx-posh-dev iceoryx)
fi

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

# configure DIR [cmake args...]: configure once, build every target.
configure_and_build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
  cmake --build "$dir" -j "$jobs"
}

install_missing
case "$what" in
demo)
  configure_and_build build -DSHMARRAY_BUILD_TESTS=OFF -DSHMARRAY_BUILD_BENCH=OFF \
    -DSHMARRAY_BUILD_EXAMPLES=ON
  # The image-stack pipeline on its synthetic default stack (extra arguments
  # go to it: bash tools/run.sh demo -j 1 --steps blur).
  ./build/examples/image_stack/shmarray-stack "${@:2}"
  ;;
test)
  configure_and_build build -DSHMARRAY_BUILD_TESTS=ON -DSHMARRAY_BUILD_EXAMPLES=ON \
    -DSHMARRAY_BUILD_BENCH=ON
  (cd build && ctest --output-on-failure -j "$jobs")
  # Tests only, under AddressSanitizer and UndefinedBehaviorSanitizer; UB
  # must abort, or it only prints and the test passes.
  configure_and_build build-sanitize -DCMAKE_BUILD_TYPE=Debug -DSHMARRAY_SANITIZE=ON \
    -DSHMARRAY_BUILD_TESTS=ON -DSHMARRAY_BUILD_EXAMPLES=OFF -DSHMARRAY_BUILD_BENCH=OFF
  (cd build-sanitize && ctest --output-on-failure -j "$jobs")
  # The in-process thread tests (the lock, the pool's job protocol) alone,
  # under ThreadSanitizer (clang 14): TSan sees one process's threads only.
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++-14 \
    -DSHMARRAY_TSAN=ON -DSHMARRAY_BUILD_TESTS=ON -DSHMARRAY_BUILD_EXAMPLES=OFF \
    -DSHMARRAY_BUILD_BENCH=OFF -DSHMARRAY_BUILD_TOOLS=OFF
  cmake --build build-tsan -j "$jobs"
  (cd build-tsan && ctest --output-on-failure -j "$jobs")
  # The record reader under libFuzzer with ASan and UBSan, for a bounded
  # time, from a copy of the committed corpus (libFuzzer adds to the
  # directory it is given); a crash fails the run and leaves its input in
  # build-fuzz/.
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++-14 \
    -DSHMARRAY_FUZZ=ON -DSHMARRAY_BUILD_TESTS=OFF -DSHMARRAY_BUILD_EXAMPLES=OFF \
    -DSHMARRAY_BUILD_BENCH=OFF -DSHMARRAY_BUILD_TOOLS=OFF
  cmake --build build-fuzz --target fuzz_record -j "$jobs"
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/* "$corpus"/
  ./build-fuzz/tests/fuzz/fuzz_record -max_total_time="${SHMARRAY_FUZZ_SECONDS:-60}" \
    -artifact_prefix=build-fuzz/ -print_final_stats=1 "$corpus"
  rm -rf "$corpus"
  ;;
bench)
  configure_and_build build -DSHMARRAY_BUILD_BENCH=ON
  ./build/bench/shmarray_bench "${@:2}"
  ./build/bench/shmarray_views_bench "${@:2}"
  ./build/bench/shmarray_workers_bench "${@:2}"
  ./build/bench/shmarray_stack_bench "${@:2}"
  # Rings: round trips, publish cost, throughput; iceoryx only as root (its
  # daemon runs in a private mount namespace the benchmark makes).
  ./build/bench/shmarray_ring_bench "${@:2}"
  packages=(python3 python3-numpy)
  install_missing
  PYTHONPATH=python SHMARRAY_HELPER=build/tools/shmarray /usr/bin/python3 bench/bench_python.py \
    build/bench/shmarray_hold_array "${@:2}"
  # MPI: a node's memory, shared against private copies; the job three ways.
  mpi=(mpirun --oversubscribe)
  [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
  for n in 2 4; do
    OMPI_MCA_btl_vader_single_copy_mechanism=none "${mpi[@]}" -np "$n" \
      build/bench/shmarray_mpi_memory_bench < /dev/null
  done
  /usr/bin/python3 bench/bench_stack_mpi.py build "${@:2}"
  # The ring from Python against a multiprocessing Pipe; the main job
  # against its Python peer (SciPy, tifffile), paired runs.
  packages=(python3-scipy python3-tifffile)
  install_missing
  PYTHONPATH=python /usr/bin/python3 bench/bench_ring_python.py "${@:2}"
  /usr/bin/python3 bench/bench_stack_vs_python.py build "${@:2}"
  ;;
*)
  echo "usage: bash tools/run.sh demo|test|bench" >&2
  exit 2
  ;;
esac
