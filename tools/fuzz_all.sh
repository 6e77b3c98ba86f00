#!/usr/bin/env bash
# tools/fuzz_all.sh [SECONDS]: builds every libFuzzer target of tests/fuzz once and runs each for
# SECONDS (default 60) through tools/fuzz.sh, then prints one line per target: executions, new
# coverage units, and whether it crashed. Exits 1 if any target crashed (its input is in
# build-fuzz/crashes/TARGET/). .ci/run calls it after the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${TANDEM_FUZZ_BUILD:-build-fuzz}
models=$(cd "${TANDEM_MODELS_DIR:-../shared/models}" && pwd)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
set -e
cmake -S . -B "$build" -DTANDEM_FUZZ=ON -DTANDEM_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_MODELS_DIR="$models" "${launcher[@]}" >/dev/null
cmake --build "$build" --target fuzz_all hostile_gguf -j"$(nproc)" >/dev/null
set +e
summary=()
failed=0
for src in tests/fuzz/fuzz_*.cpp; do
  target=$(basename "$src" .cpp)
  target=${target#fuzz_}
  log="$build/fuzz_$target.log"
  TANDEM_FUZZ_NO_BUILD=1 tools/fuzz.sh "$target" "$seconds" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    status=ok
  else
    status="FAILED (exit $rc): $(grep -m1 -E 'ERROR:|SUMMARY:|broken invariant|deadly signal' "$log")"
    failed=1
    tail -40 "$log"
  fi
  summary+=("$(printf '%-20s %10s executions %6s new units  %s' "fuzz_$target" "${execs:-?}" "${units:-?}" "$status")")
done
printf '%s\n' "${summary[@]}" | tee "$build/fuzz-summary.txt"
exit $failed
