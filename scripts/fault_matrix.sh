#!/usr/bin/env bash
# The fault matrix at full size (issue 9): RUNS seeded runs (default 50) per fault type —
# KDNET 10 %/30 % loss, 5 % duplication, reordering, bit corruption; a stream with a 1e-4 byte
# error rate and garbage; a reboot and a stall mid-pull — then RUNS SIGINT/SIGTERM runs. Prints
# per fault type: identical / failed-cleanly / partial / WRONG. Release build; about 10 minutes
# for 50 runs on 2 cores (the lossy KDNET runs dominate). CI runs 5 per type in `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"
export KDLEAK_FAULT_RUNS="$runs" KDLEAK_SIGNAL_RUNS="$runs"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
cargo test --release --test reliability_faults --test reliability_signals -- --nocapture \
    --test-threads 2 >"$out" 2>&1 || status=$?
grep -E '^(FAULT-MATRIX|SIGNALS)' "$out" || true
if [ "$status" -ne 0 ]; then
    grep -E 'panicked|WRONG [1-9]|different tables' "$out" || tail -40 "$out"
    echo "fault matrix FAILED"
fi
exit "$status"
