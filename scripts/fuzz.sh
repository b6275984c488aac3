#!/usr/bin/env bash
# Build rvmm's cargo-fuzz targets (fuzz/) and run one or all of them (docs/FUZZING.md).
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]      run each target SECONDS (default 30)
#        scripts/fuzz.sh --list                       the targets
#        scripts/fuzz.sh --minimize TARGET|all        shrink the working corpus (libFuzzer -merge)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each run starts from
# fuzz/seeds/TARGET (kept in the repository, never written) plus the working corpus in
# $FUZZ_WORK/corpus/TARGET, which grows as the fuzzer finds new coverage; crashes, timeouts and
# leaks land in $FUZZ_WORK/artifacts/TARGET and make the script fail. FUZZ_WORK defaults to
# ${CARGO_TARGET_DIR:-target}/fuzz-work. Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 ...".
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
work="${FUZZ_WORK:-${CARGO_TARGET_DIR:-$PWD/target}/fuzz-work}"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
mapfile -t all_targets < <(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^rvmm-fuzz$')

if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
minimize=0
if [ "${1:-}" = "--minimize" ]; then
    minimize=1
    shift
fi
which="${1:-all}"
seconds="${2:-30}"
if [ "$which" = all ]; then
    targets=("${all_targets[@]}")
elif printf '%s\n' "${all_targets[@]}" | grep -qx "$which"; then
    targets=("$which")
else
    echo "fuzz.sh: no target '$which' (scripts/fuzz.sh --list)" >&2
    exit 2
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs cargo-fuzz on the nightly toolchain: rustup toolchain install nightly" \
        "&& cargo install cargo-fuzz" >&2
    exit 2
fi
# One target, or all of them (no name) in one build.
build_one=()
[ "$which" = all ] || build_one=("$which")
cargo +nightly fuzz build --target-dir "$target_dir" "${build_one[@]}"

failed=()
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    artifacts="$work/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    if [ "$minimize" = 1 ]; then
        fresh="$work/corpus/$t.min"
        rm -rf "$fresh" && mkdir -p "$fresh"
        "$bin_dir/$t" -merge=1 "$fresh" "$corpus" "fuzz/seeds/$t" >"$work/$t.merge.log" 2>&1
        rm -rf "$corpus" && mv "$fresh" "$corpus"
        echo "$t: corpus minimized to $(ls "$corpus" | wc -l) inputs ($(du -sh "$corpus" | cut -f1))"
        continue
    fi
    log="$work/$t.log"
    start=$(date +%s)
    # -timeout: one input running longer is a hang; -rss_limit_mb: a leak or a runaway allocation.
    # shellcheck disable=SC2086
    if "$bin_dir/$t" "$corpus" "fuzz/seeds/$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} >"$log" 2>&1; then
        status=ok
    else
        status="FAILED (see $log and $artifacts)"
        failed+=("$t")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "$t: ${runs:-?} executions in $(($(date +%s) - start)) s, ${cov:-cov: ?}, $status"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
