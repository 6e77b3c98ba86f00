#!/usr/bin/env bash
# Runs `tandem run` with default flags inside a memory cgroup, as a container with a memory limit
# would, with the model's pages dropped from the page cache first; prints tokens/s, the bytes a
# decode token reads, and the disk bound (the file's O_DIRECT read rate / those bytes).
#
#   sudo tools/memlimit_bench.sh MODEL.gguf LIMIT [N_PREDICT]      e.g. ... tinyllama-q4_0.gguf 152M 32
#
# Needs root (it creates the cgroup: v2 where /sys/fs/cgroup is the unified hierarchy with the
# memory controller, else v1's memory controller) and GNU dd. TANDEM (default build/tandem) names
# the binary; TANDEM_ARGS adds flags (e.g. "--prefetch-distance 2") to compare with the default.
# The cgroup is removed on exit. Exit status: tandem's (137 when the OOM killer ended it).
set -euo pipefail

model=${1:?usage: memlimit_bench.sh MODEL.gguf LIMIT [N_PREDICT]}
limit=${2:?usage: memlimit_bench.sh MODEL.gguf LIMIT [N_PREDICT]}
n_predict=${3:-32}
tandem=${TANDEM:-build/tandem}
prompt=${PROMPT:-Once upon a time}

[ "$(id -u)" = 0 ] || { echo "memlimit_bench.sh: run as root (it creates a cgroup)" >&2; exit 2; }
[ -r "$model" ] || { echo "memlimit_bench.sh: cannot read $model" >&2; exit 2; }
[ -x "$tandem" ] || { echo "memlimit_bench.sh: no tandem binary at $tandem (set TANDEM)" >&2; exit 2; }

to_bytes() {  # 152M, 1G, 1.5G, 1000000 -> bytes
  numfmt --from=iec "$(echo "$1" | sed -E 's/i?[bB]$//')"
}
limit_bytes=$(to_bytes "$limit")

# ---- the cgroup -------------------------------------------------------------------------------
cg=""
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  version=2
  parent=/sys/fs/cgroup
  echo +memory > "$parent/cgroup.subtree_control" 2>/dev/null || true
  cg=$parent/tandem-memlimit-$$
  mkdir "$cg"
  echo "$limit_bytes" > "$cg/memory.max"
  [ -f "$cg/memory.swap.max" ] && echo 0 > "$cg/memory.swap.max"
else
  version=1
  root=/sys/fs/cgroup/memory
  [ -d "$root" ] || { echo "memlimit_bench.sh: no memory cgroup controller (v1 or v2) mounted" >&2; exit 2; }
  # Under this shell's own memory cgroup (a sandbox may allow nothing else).
  own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
  cg=$root${own%/}/tandem-memlimit-$$
  mkdir "$cg"
  echo "$limit_bytes" > "$cg/memory.limit_in_bytes"
  [ -f "$cg/memory.memsw.limit_in_bytes" ] && echo "$limit_bytes" > "$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true
fi
cleanup() { [ -n "$cg" ] && rmdir "$cg" 2>/dev/null || true; }
trap cleanup EXIT

# ---- the disk bound ---------------------------------------------------------------------------
# The file's pages out of the page cache (only this file's; all of it where permitted).
dd if="$model" iflag=nocache count=0 status=none 2>/dev/null || true
sync
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && dropped=yes || dropped="no (not permitted)"
disk_rate() {  # bytes/s of one O_DIRECT pass over the file
  local out
  out=$(dd if="$model" of=/dev/null bs=4M iflag=direct 2>&1 | tail -1)
  awk -v b="$(echo "$out" | awk '{print $1}')" \
      -v s="$(echo "$out" | sed -E 's/.*copied, ([0-9.]+) s.*/\1/')" 'BEGIN { printf "%.0f", b / s }'
}
rate_before=$(disk_rate)
dd if="$model" iflag=nocache count=0 status=none 2>/dev/null || true

# ---- the run ----------------------------------------------------------------------------------
err=$(mktemp)
set +e
# shellcheck disable=SC2086
sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
  "$tandem" run -m "$model" -p "$prompt" -n "$n_predict" --verbose ${TANDEM_ARGS:-} >/dev/null 2>"$err"
status=$?
set -e
if [ "$version" = 2 ]; then
  peak=$(cat "$cg/memory.peak" 2>/dev/null || echo "?")
  ooms=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.events" 2>/dev/null || echo "?")
else
  peak=$(cat "$cg/memory.max_usage_in_bytes" 2>/dev/null || echo "?")
  ooms=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.oom_control" 2>/dev/null || echo "?")
fi

rate_after=$(disk_rate)  # the disk is shared: its rate before and after, averaged
disk_rate=$(( (rate_before + rate_after) / 2 ))
grep -E "^tandem: |^load: |layer cache: |policy: |  time: |decode: |^error" "$err" | grep -v "no GPU" || true
gen_ms=$(sed -nE 's/.*generation: [0-9]+ tokens in ([0-9.]+) ms.*/\1/p' "$err")
tokens_s=$(sed -nE 's/.*generation: ([0-9]+) tokens in ([0-9.]+) ms.*/\1 \2/p' "$err" |
  awk '$2 > 0 { printf "%.3f", $1 * 1000 / $2 }')
# The first generated token comes from the prompt's logits: decode evaluations are the passes.
passes=$(sed -nE 's/.*decode: ([0-9]+) passes, .*/\1/p' "$err")
evals_s=$( [ -n "$passes" ] && [ -n "$gen_ms" ] && awk -v p="$passes" -v t="$gen_ms" 'BEGIN { printf "%.3f", p * 1000 / t }' || echo "")
ttft=$(sed -nE 's/^load: ([0-9.]+) ms \| prompt: [0-9]+ tokens in ([0-9.]+) ms.*/\1 \2/p' "$err" |
  awk '{ printf "%.2f", ($1 + $2) / 1000 }')
per_token=$(sed -nE 's/.*decode: [0-9]+ passes, .* read, ([0-9.]+ [KMG]?i?B) per token.*/\1/p' "$err")
per_token_bytes=$( [ -n "$per_token" ] && numfmt --from=iec "$(echo "$per_token" | sed -E 's/ //; s/iB$//; s/B$//')" || echo 0)
echo "---"
echo "model $(du -h --apparent-size "$model" | cut -f1), cgroup v$version limit $limit ($limit_bytes bytes), page cache dropped: $dropped"
echo "exit status $status, cgroup peak ${peak} bytes, OOM kills ${ooms}"
echo "time to first token (load + prompt): ${ttft:-?} s"
echo "decode: ${tokens_s:-?} tokens/s as tandem counts them (${evals_s:-?} decode evaluations/s), ${per_token:-no layer cache (all in memory)} read per token"
awk -v a="$rate_before" -v b="$rate_after" -v r="$disk_rate" 'BEGIN {
  printf "disk: %.2f GB/s (dd bs=4M iflag=direct: %.2f before, %.2f after)\n", r / 1e9, a / 1e9, b / 1e9 }'
if [ "${per_token_bytes:-0}" != 0 ] && [ -n "$evals_s" ]; then
  awk -v r="$disk_rate" -v b="$per_token_bytes" -v t="$evals_s" 'BEGIN {
    bound = r / b; printf "disk bound: %.2f decode evaluations/s; measured %.2f = %.0f%% of it\n", bound, t, 100 * t / bound }'
fi
rm -f "$err"
exit "$status"
