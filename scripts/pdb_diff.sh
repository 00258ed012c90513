#!/usr/bin/env bash
# Compares kdleak's reading of any PDB (e.g. an ntkrnlmp.pdb from Microsoft's symbol server) with
# LLVM's independent PDB reader, llvm-pdbutil-14 (`apt-get install llvm-14`; LLVM_PDBUTIL names
# another one): every structure/union layout with member offsets, bitfields and qualifiers, every
# forward reference, every public's RVA. Prints the counts and the first mismatches per PDB;
# exits non-zero when they disagree. It runs the comparison of tests/pdb_differential.rs (the same
# code `cargo test` runs on every PDB under captures/), so it needs this source tree and cargo.
#
#   scripts/pdb_diff.sh ~/sym/ntkrnlmp.pdb/3844DBB920ADC7EFF0F27CE8F1CE3D281/ntkrnlmp.pdb ...
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: $0 PDB..." >&2
    exit 2
fi
list=""
for pdb in "$@"; do
    if [ ! -r "$pdb" ] || [ -d "$pdb" ]; then
        echo "$0: cannot read $pdb" >&2
        exit 2
    fi
    list+="$(realpath "$pdb")"$'\n'
done
cd "$(dirname "$0")/.."
KDLEAK_PDB_DIFF="$list" exec cargo test --quiet --test pdb_differential -- \
    --nocapture --test-threads 1 every_pdb_reads_the_same
