#!/bin/sh
# Regenerate captures/fixtures/* from the three shipped ISF files, then self-check.
#   captures/gen/regen_all.sh [ISF_DIR]
# Needs: apt-get install -y clang-14 lld-14 llvm-14
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ISF=${1:-$(dirname "$0")/../isf}
OUT=$HERE/../fixtures
for p in "339E74133576439CBCDF7E0229DA3773 win7-7601" \
         "BBED7C2955FBE4522AAA23F4B8677AD9 win10-19041" \
         "32C1A669D5FFEFD41091F636CFDB6E99 win11-22000"; do
    set -- $p
    rm -rf "$OUT/$2"
    python3 "$HERE/gen_fixtures.py" "$ISF/$1-1.json.xz" "$OUT/$2"
done
"$HERE/check_fixtures.sh" "$OUT" "$ISF"
