#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed budget (seconds per target, default 60), or only the
# targets named after the budget. Needs `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP lets the
# stable toolchain build libFuzzer targets. Crashes land in fuzz/artifacts/<target>/ — keep each
# as a regression test. The symbol targets start from seeds made of the shipped PDBs and CAB.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1

seed() { # target name bytes-file [prefix byte]
    mkdir -p "fuzz/corpus/$1"
    { printf "\\x$(printf %02x "$4")"; cat "$3"; } > "fuzz/corpus/$1/$2"
}
seed pdb_parse raw-myfault captures/fixtures/win10-19041/myfault.pdb 0
seed pdb_parse patched-leaky /dev/null 2
seed cab_expand showsseconfig captures/pdb/symstore/ShowSSEConfig.pdb/A62592418D7807494C4C44205044422E1/ShowSSEConfig.pd_ 0
printf '\x01\x00kdleak' > fuzz/corpus/cab_expand/built
mkdir -p fuzz/corpus/pe_rsds
printf '\x01\x00\x04\x00\x00ntkrnlmp.pdb' > fuzz/corpus/pe_rsds/synthetic

targets="${*:-$(cargo fuzz list)}"
for target in $targets; do
    echo "== fuzzing $target for ${budget}s"
    # pdb_parse is built as kdleak ships pdb2: without debug assertions. cargo-fuzz turns them on
    # for every crate, and pdb2's debug build panics (`unreachable!`) on an unknown numeric leaf
    # where its release build returns an error.
    flags=()
    [ "$target" = pdb_parse ] && flags=(-O)
    cargo fuzz run "${flags[@]}" "$target" -- -max_total_time="$budget" -rss_limit_mb=2048
done
