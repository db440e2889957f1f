#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 60 s per target, every target (description roq rtp signaling).
# Installs cargo-fuzz into fuzz/target/tools if it is not on PATH, builds
# with the nightly toolchain, runs each target as one libFuzzer process
# (no -fork, no -jobs) on its corpus fuzz/corpus/<target>, and prints the
# executions and the result per target. Exits non-zero if any target
# crashed, hung or ran out of memory; the input is in
# fuzz/artifacts/<target>/ and docs/fuzzing.md says what to do with it.
#
# Environment:
#   FUZZ_TOOLCHAIN   rustup toolchain for cargo fuzz (default: nightly)
#   FUZZ_SANITIZER   address, leak, memory, thread or none (default: none;
#                    the code under test is safe Rust, overflow checks and
#                    debug assertions are on either way)
#   FUZZ_RSS_MB      libFuzzer -rss_limit_mb (default: 2048)
#   FUZZ_TIMEOUT     libFuzzer -timeout per input, seconds (default: 10)
#
# Not part of CI's default path: it needs nightly and minutes per target.
set -euo pipefail

ALL_TARGETS=(description roq rtp signaling)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [ ! -f "$fuzz_dir/fuzz_targets/$t.rs" ]; then
        echo "unknown target '$t'; targets: ${ALL_TARGETS[*]}" >&2
        exit 2
    fi
done

toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
rss_mb="${FUZZ_RSS_MB:-2048}"
per_input_timeout="${FUZZ_TIMEOUT:-10}"

# cargo-fuzz: use the one on PATH, else install it (once) under fuzz/target.
tools="$fuzz_dir/target/tools"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi

features=()
for t in "${targets[@]}"; do
    # The signaling target needs relay-signaling, kept behind a feature.
    if [ "$t" = signaling ]; then
        features=(--features signaling)
    fi
done

cd "$fuzz_dir"
echo "building: ${targets[*]} (cargo +$toolchain fuzz build, sanitizer $sanitizer)"
cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" "${features[@]}"

logs="$fuzz_dir/target/logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$logs/$t.log"
    echo "fuzzing $t for ${seconds}s (log: ${log#"$root"/})"
    started=$(date +%s)
    status=0
    # The outer timeout only catches a fuzzer that ignores -max_total_time.
    timeout --kill-after=30 $((seconds + 300)) \
        cargo "+$toolchain" fuzz run --sanitizer "$sanitizer" "${features[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb="$rss_mb" \
        -timeout="$per_input_timeout" \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - started))
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    runs=$(stat number_of_executed_units)
    per_sec=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result="clean"
    else
        result="FAILED (exit $status)"
        failed+=("$t")
        grep -E "panicked at|==ERROR|SUMMARY|Test unit written to|Timeout|out-of-memory" "$log" | head -n 8 >&2 || true
    fi
    line=$(printf '%-12s %11s executions in %5ss (%7s/s, peak rss %4s MB), corpus %5s: %s' \
        "$t" "${runs:-?}" "$elapsed" "${per_sec:-?}" "${rss:-?}" "$corpus" "$result")
    echo "$line"
    summary+=("$line")
done

echo
echo "summary (${seconds}s per target, sanitizer $sanitizer):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}; inputs in fuzz/artifacts/<target>/, logs in fuzz/target/logs/" >&2
    exit 1
fi
