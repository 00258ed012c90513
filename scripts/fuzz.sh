#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed budget (seconds per target, default 60).
# Needs `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP lets the stable toolchain build libFuzzer
# targets. Crashes land in fuzz/artifacts/<target>/ — keep each as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${budget}s"
    cargo fuzz run "$target" -- -max_total_time="$budget" -rss_limit_mb=2048
done
