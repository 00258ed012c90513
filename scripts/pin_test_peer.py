#!/usr/bin/env python3
"""Prints the scripts/test-requirements.txt entry for a pinned Python test peer: the pin and the
sha256 of every file PyPI holds for that version (all platforms' wheels and the sdist), so pip's
hash check passes on any machine the package supports and fails on anything else.

usage: scripts/pin_test_peer.py NAME==VERSION [NAME==VERSION ...]

Append the output to scripts/test-requirements.txt. pip installs with --require-hashes, so a
dependency that is not pinned there too stops the install and is named: pin it the same way.
Reads the index's JSON Simple API (PEP 691); PIP_INDEX_URL picks another index.
"""

import json
import os
import re
import sys
import urllib.request

INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def normalized(name):
    # PEP 503: runs of '-', '_' and '.' are one '-', lower case.
    return re.sub(r"[-_.]+", "-", name).lower()


def name_and_version(filename):
    """(project, version) of a distribution file, or None for a file of another kind."""
    if filename.endswith(".whl"):
        # NAME-VERSION-[BUILD-]PYTHON-ABI-PLATFORM.whl, '-' in NAME escaped as '_' (PEP 427).
        parts = filename[: -len(".whl")].split("-")
        return (parts[0], parts[1]) if len(parts) >= 5 else None
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            project, _, version = filename[: -len(suffix)].rpartition("-")
            return (project, version) if project else None
    return None


def release_files(name, version):
    request = urllib.request.Request(
        f"{INDEX}/{normalized(name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"pin_test_peer: cannot read {request.full_url}: {error}")
    wanted = (normalized(name), version)
    return [
        f
        for f in files
        if (found := name_and_version(f["filename"])) is not None
        and (normalized(found[0]), found[1]) == wanted
    ]


def entry(pin):
    name, sep, version = pin.partition("==")
    if not sep or not name or not version:
        sys.exit(f"pin_test_peer: {pin!r} is not NAME==VERSION")
    files = [f for f in release_files(name, version) if not f.get("yanked")]
    hashes = sorted({f["hashes"]["sha256"] for f in files if "sha256" in f.get("hashes", {})})
    if not hashes:
        sys.exit(f"pin_test_peer: the index has no files for {name}=={version}")
    lines = [f"{name}=={version}"] + [f"    --hash=sha256:{h}" for h in hashes]
    return " \\\n".join(lines)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for pin in sys.argv[1:]:
        print(entry(pin))


if __name__ == "__main__":
    main()
