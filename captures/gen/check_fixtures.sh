#!/bin/sh
# Self-check of the generated fixtures against their ISF files.
#   captures/gen/check_fixtures.sh [FIXTURES_DIR] [ISF_DIR]
# Needs python3 and llvm-pdbutil-14 + llvm-readobj-14 (apt-get install llvm-14).
# For each captures/fixtures/<label>/:
#   * every member (name, offset, bitfield position/length) of every ISF user type and every
#     type's sizeof is compared with the PDB's TPI (llvm-pdbutil dump -types); a sample of ~20
#     verifier/loader fields is printed;
#   * the RSDS GUID/age/name in each PE (llvm-readobj --coff-debug-directory) equals the PDB's
#     (llvm-pdbutil dump -summary, DBI age from the DBI stream header);
#   * each global/function of manifest.json is an S_PUB32 at the recorded RVA;
#   * qualifiers: every member ms_qualifiers.py lists as volatile for the build is an LF_MODIFIER
#     (volatile) in the TPI (through LF_BITFIELD for a bitfield), every other member of the types it
#     covers is not, and no other member of any type is qualified;
#   * symbol streams: a "public" PDB (manifest pdb_style) has no S_GDATA32/S_LDATA32/S_GPROC32/
#     S_LPROC32 anywhere (globals or module streams), a "private" one has its S_GDATA32.
# Exit status 0 = all checks passed.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${1:-$HERE/../fixtures}
ISF=${2:-$(dirname "$0")/../isf}
PDBUTIL=${LLVM_PDBUTIL:-llvm-pdbutil-14}
READOBJ=${LLVM_READOBJ:-llvm-readobj-14}
export PDBUTIL READOBJ
exec python3 - "$FIX" "$ISF" "$HERE" <<'PYEOF'
import json, lzma, os, re, subprocess, sys
fixdir, isfdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
import ms_qualifiers
PDBUTIL, READOBJ = os.environ["PDBUTIL"], os.environ["READOBJ"]
SAMPLE = [
    ("_MM_DRIVER_VERIFIER_DATA", f) for f in ("Level", "RaiseIrqls", "AllocationsAttempted",
        "AllocationsSucceeded", "AllocationsSucceededSpecialPool", "AllocationsWithNoTag",
        "CurrentPagedPoolAllocations", "PeakNonPagedBytes", "AllocationsFailedDeliberately")
] + [("_VF_SUSPECT_DRIVER_ENTRY", f) for f in ("Links", "Loads", "Unloads", "BaseName")] + [
    ("_VF_TARGET_DRIVER", "VerifiedData"),
    ("_VF_TARGET_VERIFIED_DRIVER_DATA", "PoolTrackers"),
    ("_VF_TARGET_VERIFIED_DRIVER_DATA", "CurrentNonPagedPoolAllocations"),
    ("_VI_POOL_ENTRY_INUSE", "CallingAddress"), ("_VI_POOL_ENTRY_INUSE", "NumberOfBytes"),
    ("_VI_POOL_ENTRY_INUSE", "Tag"), ("_VI_POOL_PAGE_HEADER", "Signature"),
    ("_VF_POOL_TRACE", "StackTrace"), ("_VF_AVL_TREE", "Tables"),
    ("_KLDR_DATA_TABLE_ENTRY", "DllBase"), ("_KLDR_DATA_TABLE_ENTRY", "SizeOfImage"),
    ("_KLDR_DATA_TABLE_ENTRY", "BaseDllName"),
    ("_LDR_DATA_TABLE_ENTRY", "DllBase"), ("_LDR_DATA_TABLE_ENTRY", "SizeOfImage"),
    ("_LDR_DATA_TABLE_ENTRY", "BaseDllName"),
    ("_DBGKD_GET_VERSION64", "KernBase"), ("_DBGKD_GET_VERSION64", "DebuggerDataList"),
    ("_KDDEBUGGER_DATA64", "PsLoadedModuleList"), ("_KDDEBUGGER_DATA64", "MmVerifierData"),
]

def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

qualifiers = {}

def parse_types(pdb):
    qualifiers.clear()
    txt = sh(PDBUTIL, "dump", "-types", pdb)
    recs = {}
    for m in re.finditer(r"^\s+0x([0-9A-F]+) \| (LF_\w+) \[size = \d+\](.*?)(?=^\s+0x[0-9A-F]+ \| |\Z)", txt, re.M | re.S):
        recs[int(m.group(1), 16)] = (m.group(2), m.group(3))
    types = {}
    for ti, (kind, body) in recs.items():
        if kind not in ("LF_STRUCTURE", "LF_UNION", "LF_CLASS"):
            continue
        if "forward ref" in body:
            continue
        name = re.match(r" `(.*?)`", body).group(1)
        size = int(re.search(r"sizeof (\d+)", body).group(1))
        fl = re.search(r"field list: 0x([0-9A-F]+)", body)
        members = {}
        if fl:
            fk, fb = recs[int(fl.group(1), 16)]
            for mm in re.finditer(r"LF_MEMBER \[name = `(\w+)`, Type = 0x([0-9A-F]+).*?, offset = (\d+)", fb):
                t = int(mm.group(2), 16)
                bf = None
                if t in recs and recs[t][0] == "LF_BITFIELD":
                    b = re.search(r"bit offset = (\d+), # bits = (\d+)", recs[t][1])
                    bf = (int(b.group(1)), int(b.group(2)))
                    t = int(re.search(r"type = 0x([0-9A-F]+)", recs[t][1]).group(1), 16)
                mods = ""
                if t in recs and recs[t][0] == "LF_MODIFIER":
                    mods = re.search(r"modifiers = ([\w |]+)", recs[t][1]).group(1).strip()
                members[mm.group(1)] = (int(mm.group(3)), bf)
                qualifiers.setdefault(name, {})[mm.group(1)] = mods
        types.setdefault(name, (kind, size, members))
    return types

def rsds(img):
    txt = sh(READOBJ, "--coff-debug-directory", img)
    m = re.search(r"PDBSignature: 0x([0-9A-F]+)\s+PDBGUID: \(([0-9A-F ]+)\)\s+PDBAge: (\d+)\s+PDBFileName: (\S+)", txt)
    raw = bytes.fromhex(m.group(2).replace(" ", ""))
    guid = "%08X%04X%04X%s" % (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:6], "little"),
                               int.from_bytes(raw[6:8], "little"), raw[8:].hex().upper())
    return guid, int(m.group(3)), m.group(4)

def pdb_ids(pdb):
    s = sh(PDBUTIL, "dump", "-summary", pdb)
    g = re.search(r"GUID: \{([0-9A-F-]+)\}", s).group(1).replace("-", "")
    b = sh(PDBUTIL, "bytes", "--stream-data=3", pdb)
    w = re.search(r"\n\s*[0-9A-F]+:((?: [0-9A-F]{8})+)", b).group(1).split()
    return g, int.from_bytes(bytes.fromhex(w[2]), "little"), int(re.search(r"Age: (\d+)", s).group(1))

def publics(pdb):
    out = sh(PDBUTIL, "dump", "-publics", "-section-headers", pdb)
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in
            re.finditer(r"S_PUB32 \[size = \d+\] `([^`]+)`\s*\n\s*flags = [^,]+, addr = (\d+):(\d+)", out)}

total_fail = 0
for label in sorted(os.listdir(fixdir)):
    d = os.path.join(fixdir, label)
    mf = os.path.join(d, "manifest.json")
    if not os.path.isfile(mf):
        continue
    man = json.load(open(mf))
    isf = json.loads(lzma.decompress(open(os.path.join(isfdir, man["isf"]), "rb").read()))
    fails = []
    types = parse_types(os.path.join(d, "ntkrnlmp.pdb"))
    nmem = ntypes = 0
    for tn, tv in isf["user_types"].items():
        ntypes += 1
        if tn not in types:
            fails.append("type %s missing from TPI" % tn); continue
        kind, size, members = types[tn]
        if size != tv["size"]:
            fails.append("sizeof %s: pdb %d isf %d" % (tn, size, tv["size"]))
        for fn, fv in tv["fields"].items():
            nmem += 1
            exp_bf = None
            if fv["type"]["kind"] == "bitfield":
                exp_bf = (fv["type"]["bit_position"], fv["type"]["bit_length"])
            got = members.get(fn)
            if got != (fv["offset"], exp_bf):
                fails.append("%s.%s: pdb %s isf %s" % (tn, fn, got, (fv["offset"], exp_bf)))
    print("== %s (build %d, ISF %s)" % (label, man["build"], man["isf"]))
    print("  types: %d ISF user types, %d members compared, %d mismatches" % (ntypes, nmem, len(fails)))
    shown = 0
    for tn, fn in SAMPLE:
        src = isf["user_types"].get(tn) or {}
        isf_off = src.get("fields", {}).get(fn, {}).get("offset")
        got = types.get(tn, (None, None, {}))[2].get(fn)
        if isf_off is None and got is None:
            continue
        ok = got is not None and (isf_off is None or got[0] == isf_off)
        if not ok:
            fails.append("sample %s.%s" % (tn, fn))
        shown += 1
        print("  %-4s %s.%s pdb=%s isf=%s" % ("ok" if ok else "FAIL", tn, fn,
              hex(got[0]) if got else None, hex(isf_off) if isf_off is not None else "(supplemental)"))
    table = ms_qualifiers.table(man["build"])
    nvol = 0
    for tn, members in qualifiers.items():
        covered = table.get(tn)
        for fn, mods in members.items():
            want = "volatile" if covered is not None and fn in covered else ""
            if mods != want:
                fails.append("qualifier %s.%s: pdb %r, Microsoft %r" % (tn, fn, mods, want))
            nvol += mods == "volatile"
    for tn, members in table.items():
        if tn not in qualifiers:
            fails.append("qualifier table type %s missing from TPI" % tn)
    print("  %-4s qualifiers: %d volatile members (table: %d) in %d covered types" % (
        "ok" if not any(f.startswith("qualifier") for f in fails) else "FAIL", nvol,
        sum(len(m) for m in table.values()), len(table)))
    print("  sample: _MM_DRIVER_VERIFIER_DATA.CurrentNonPagedPoolAllocations is %r" %
          qualifiers.get("_MM_DRIVER_VERIFIER_DATA", {}).get("CurrentNonPagedPoolAllocations"))
    for img, ent in man["files"].items():
        g, a, n = rsds(os.path.join(d, img))
        pg, dbi_age, pdb_age = pdb_ids(os.path.join(d, ent["pdb"]))
        ok = g == pg and a == dbi_age and n == ent["pdb"] and g == ent["rsds"]["guid"]
        print("  %-4s %s RSDS %s age %d name %s == %s PDB %s DBI age %d (PDB-stream age %d)" %
              ("ok" if ok else "FAIL", img, g, a, n, ent["pdb"], pg, dbi_age, pdb_age))
        if not ok:
            fails.append("rsds " + img)
        hdrs = sh(READOBJ, "--sections", os.path.join(d, img))
        secs = [int(x, 16) for x in re.findall(r"VirtualAddress: 0x([0-9A-F]+)", hdrs)]
        pubs = publics(os.path.join(d, ent["pdb"]))
        bad = 0
        for sn, sv in ent["symbols"].items():
            if sv is None:
                continue
            p = pubs.get(sn)
            if p is None or secs[p[0] - 1] + p[1] != int(sv["rva"], 16):
                bad += 1; fails.append("public %s %s" % (img, sn))
        print("  %-4s %s: %d publics at manifest RVAs" % ("ok" if not bad else "FAIL", img,
              sum(1 for v in ent["symbols"].values() if v)))
        syms = sh(PDBUTIL, "dump", "-globals", "-symbols", os.path.join(d, ent["pdb"]))
        private = len(re.findall(r"\b(S_GDATA32|S_LDATA32|S_GPROC32|S_LPROC32)\b", syms))
        style = ent.get("pdb_style")
        ok = (style == "public" and private == 0) or (style == "private" and private > 0)
        print("  %-4s %s: %s-style, %d private data/procedure records" % (
            "ok" if ok else "FAIL", ent["pdb"], style, private))
        if not ok:
            fails.append("symbol streams %s (%s, %d private records)" % (ent["pdb"], style, private))
    for f in fails[:30]:
        print("  MISMATCH", f)
    total_fail += len(fails)
print("RESULT: %s (%d failures)" % ("PASS" if total_fail == 0 else "FAIL", total_fail))
sys.exit(1 if total_fail else 0)
PYEOF
