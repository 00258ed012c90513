#!/bin/sh
# Rebuilds qualifiers.pdb from qualifiers.c with Debian clang-14 and lld-14, byte-reproducibly
# (no timestamps, relative object names, a fixed source path). Tests use the committed PDB.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/qualifiers.c" "$tmp/"
cd "$tmp"
clang-14 --target=x86_64-pc-windows-msvc -c -g -gcodeview -O0 -ffreestanding -fms-extensions \
    -fdebug-compilation-dir=C:\\src -fcoverage-compilation-dir=C:\\src qualifiers.c -o qualifiers.obj
lld-link-14 /debug /Brepro /entry:main /subsystem:native /nodefaultlib \
    /pdbsourcepath:C:\\src /pdbaltpath:qualifiers.pdb \
    /out:qualifiers.exe /pdb:qualifiers.pdb qualifiers.obj
cp qualifiers.pdb "$here/qualifiers.pdb"
