#!/usr/bin/env bash
# tools/fuzz.sh TARGET SECONDS [libFuzzer flags...]
#
# Builds the libFuzzer target fuzz_TARGET (tests/fuzz/fuzz_TARGET.cpp) with clang, ASan and UBSan
# in build-fuzz/, seeds its corpus from ../shared/models (the first 64 KiB of every GGUF, the
# hostile corpus, the vocabularies' test strings, the chat templates and their cases) and from
# tests/fuzz/regressions/TARGET/, and runs it for SECONDS. It prints libFuzzer's final statistics
# (stat::number_of_executed_units ...). A crash is written to build-fuzz/crashes/TARGET/: fix the
# bug, then commit the input under tests/fuzz/regressions/TARGET/ (the FuzzRegressions test of
# tandem_tests replays it in every build).
#
# Environment: TANDEM_MODELS_DIR (default ../shared/models), TANDEM_FUZZ_BUILD (default
# build-fuzz), TANDEM_FUZZ_NO_BUILD=1 (the target is already built, e.g. by tools/fuzz_all.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: tools/fuzz.sh TARGET SECONDS [libFuzzer flags...]" >&2
  echo "targets: $(cd tests/fuzz && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//' | tr '\n' ' ')" >&2
  exit 2
fi
target=$1 seconds=$2
shift 2
[ -f "tests/fuzz/fuzz_$target.cpp" ] || { echo "error: no target tests/fuzz/fuzz_$target.cpp" >&2; exit 2; }
models=$(cd "${TANDEM_MODELS_DIR:-../shared/models}" && pwd)
build=${TANDEM_FUZZ_BUILD:-build-fuzz}

if [ -z "${TANDEM_FUZZ_NO_BUILD:-}" ]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$build" -DTANDEM_FUZZ=ON -DTANDEM_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_MODELS_DIR="$models" \
    "${launcher[@]}" >/dev/null
  cmake --build "$build" --target "fuzz_$target" hostile_gguf -j"$(nproc)" >/dev/null
fi

# ---- seeds (made fresh each run; never copied into the project) -------------------------------
seeds="$build/seeds/$target"
rm -rf "$seeds" && mkdir -p "$seeds"
split_inp() {  # split_inp FILE PREFIX_BYTES OUT_PREFIX: one seed per test string of a .inp file
  awk -v out="$3" -v pre="$2" 'BEGIN { n = 0; s = "" }
    $0 == "__ggml_vocab_test__" { printf "%s%s", pre, s > (out n); close(out n); n++; s = ""; next }
    { s = (s == "" ? $0 : s "\n" $0) }' "$1"
}
case "$target" in
  gguf|gguf_header)
    n=0
    for f in $(find "$models" -name '*.gguf' | sort); do
      head -c 65536 "$f" >"$seeds/head$n"; n=$((n + 1))
    done
    [ "$target" = gguf ] && "$build/tests/fuzz/hostile_gguf" "$seeds/hostile" >/dev/null
    ;;
  tokenizer)
    # Byte 0 picks the vocabulary (index = byte % 7, in the order of fuzz_tokenizer.cpp; 7.. keeps
    # NUL out of the shell's strings), byte 1 the mode: 3 = BOS + special tokens, 16 = plain.
    i=7
    for v in llama-spm phi-3 gpt-2 starcoder llama-bpe qwen2 deepseek-llm; do
      byte=$(printf '\\%03o' "$i")  # e.g. \007, interpreted by awk and printf
      split_inp "$models/vocab/ggml-vocab-$v.gguf.inp" "$byte\\003" "$seeds/$v-special-"
      split_inp "$models/vocab/ggml-vocab-$v.gguf.inp" "$byte\\020" "$seeds/$v-"
      head -c 300 "$models/vocab/ggml-vocab-$v.gguf.out" | { printf "$byte\\004"; cat; } >"$seeds/$v-decode"
      i=$((i + 1))
    done
    ;;
  sampler)
    # Real float32 weights as parameters and logits, from the data section of a trained model.
    for off in 300000 600000 900000; do
      dd if="$models/stories260K.gguf" of="$seeds/weights$off" bs=2200 count=1 skip="$off" \
        iflag=skip_bytes status=none
    done
    ;;
  template)
    for t in "$models"/templates/*.jinja; do cp "$t" "$seeds/"; done
    ;;
  template_messages)
    # Byte 0 picks the template (byte % the number of templates): '0'..'9' cover ten of them.
    for c in "$models"/templates/cases/*.json; do
      for k in 0 1 2 3 4 5 6 7 8 9; do
        { printf '%s' "$k"; cat "$c"; } >"$seeds/$k-$(basename "$c")"
      done
    done
    ;;
  request)
    for c in "$models"/templates/cases/*.json; do cp "$c" "$seeds/"; done
    ;;
esac

corpus="$build/corpus/$target"
crashes="$build/crashes/$target"
mkdir -p "$corpus" "$crashes"
dirs=("$corpus" "$seeds")
regressions="tests/fuzz/regressions/$target"
n_regressions=0
if [ -d "$regressions" ]; then
  dirs+=("$regressions")
  n_regressions=$(find "$regressions" -type f | wc -l)
fi
echo "fuzz_$target: $(find "$seeds" -type f | wc -l) seeds, $n_regressions regressions, ${seconds}s"
"$build/tests/fuzz/fuzz_$target" "${dirs[@]}" \
  -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=2560 \
  -max_len=131072 -artifact_prefix="$crashes/" "$@"
