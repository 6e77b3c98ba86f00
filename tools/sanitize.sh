#!/usr/bin/env bash
# tools/sanitize.sh [asan|tsan|all]: builds the sanitizer presets of CMakePresets.json and runs
#   asan (build-asan, AddressSanitizer + UndefinedBehaviorSanitizer, asserts on): the whole unit
#        test suite of ctest (tandem_tests, the CLI it runs, gpu-cpu-parity) except what
#        TANDEM_ASAN_EXCLUDE names below, with the reason;
#   tsan (build-tsan, ThreadSanitizer): the tests of the parts that run threads of their own,
#        chosen by name pattern (TSAN_TESTS below) so that new tests of those parts are included.
# Prints how long each build and run took. .ci/run calls it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
jobs=$(nproc)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

# Not run under ASan, and why:
# - parity_model_*, parity_{matvec,attention,matmul,rope_kv,record,loads}_* (the same with a kernel variant forced):
#   gpu-cpu-parity on whole models through lavapipe; under ASan each takes minutes
#   (lavapipe's LLVM-compiled shaders are not instrumented, but every buffer copy and the CPU
#   reference are), and the same code paths run in parity_ops and the VulkanModels tests.
# - c_api_install: builds a program against the installed libtandem with pkg-config; an
#   ASan-built library needs the ASan runtime loaded first, which a plain program does not do
#   (c_api, the same C program linked in the build tree, runs under ASan).
TANDEM_ASAN_EXCLUDE=${TANDEM_ASAN_EXCLUDE:-'^parity_(model|matvec|attention|matmul|rope_kv|record|loads)_|^c_api_install$'}
# Run under TSan: the layer cache (its loader thread), the engine with prefetch (LayerCacheEndToEnd),
# the Vulkan staging ring and streamed layers (Streaming, VulkanBackend), the public API's
# cancellation from another thread and the server's sessions and queue (when they exist).
TSAN_TESTS=${TSAN_TESTS:-'LayerCache|Streaming|StagingRing|VulkanBackend|Prefetch|Cancel|Session|Queue|Serve|Concurren|Thread'}
# Not run under TSan, and why:
# - ServeLoad.*: the load test (400 requests, 1,000 idle connections each holding a server
#   thread) has bounds meant for a release build; the server's sessions, queue, cancellation and
#   disconnects run under TSan in the Serve* and ServePool tests.
# - KernelTypes.PrefetchAndThreads*: asks for 2 threads of oneTBB (uninstrumented; see
#   tests/tsan.supp) on purpose, to compare thread counts; the release run covers it.
TSAN_EXCLUDE=${TSAN_EXCLUDE:-'ServeLoad|KernelTypes.PrefetchAndThreads'}

elapsed() { echo $(( $(date +%s) - $1 ))s; }

run_asan() {
  local t0
  t0=$(date +%s)
  cmake --preset asan "${launcher[@]}" >/dev/null
  # Every target: ctest also runs the C API program, the install test and the Vulkan checks.
  cmake --build --preset asan -j"$jobs" >/dev/null
  echo "sanitize: asan build $(elapsed "$t0")"
  t0=$(date +%s)
  # Leak checking is off: the Vulkan driver (lavapipe, dlopened by vulkan/loader.cpp) leaks two
  # 128-byte blocks per process, reported from "<unknown module>" once it is unloaded, so no
  # suppression can name them, and every test that runs the CLI on the GPU would fail.
  # tests/lsan.supp is for when leak checking is turned back on (ASAN_OPTIONS=detect_leaks=1).
  ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1" \
  LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    ctest --test-dir build-asan -j"$jobs" --output-on-failure --timeout 900 -E "$TANDEM_ASAN_EXCLUDE"
  echo "sanitize: asan tests $(elapsed "$t0")"
}

run_tsan() {
  local t0 norand=()
  t0=$(date +%s)
  cmake --preset tsan "${launcher[@]}" >/dev/null
  cmake --build --preset tsan -j"$jobs" --target tandem_tests tandem >/dev/null
  echo "sanitize: tsan build $(elapsed "$t0")"
  t0=$(date +%s)
  # TSan maps its shadow at fixed addresses, which some kernels' wider mmap randomisation breaks.
  setarch "$(uname -m)" -R true 2>/dev/null && norand=(setarch "$(uname -m)" -R)
  # TANDEM_THREADS=1: the CPU kernels run on the calling thread (see tests/tsan.supp for why).
  TANDEM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    "${norand[@]}" ctest --test-dir build-tsan -j"$jobs" --output-on-failure --timeout 900 -R "$TSAN_TESTS" \
      -E "$TSAN_EXCLUDE"
  echo "sanitize: tsan tests $(elapsed "$t0")"
}

case "$which" in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all) run_asan; run_tsan ;;  # (not "&&": that would turn off set -e inside the functions)
  *) echo "usage: tools/sanitize.sh [asan|tsan|all]" >&2; exit 2 ;;
esac
