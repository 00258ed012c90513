#!/usr/bin/env python3
"""Generate realistic fixture kernels and drivers (PE + PDB) from a Volatility3 ISF file.

Python 3.11 stdlib only.  Needs clang-14, lld-link-14 and llvm-pdbutil-14 on PATH
(apt-get install clang-14 lld-14 llvm-14).  See README.md next to this file.

    gen_fixtures.py ISF.json[.xz] OUTDIR [--build N] [--label L]

Outputs in OUTDIR: ntoskrnl.exe ntkrnlmp.pdb myfault.sys myfault.pdb leaky.sys leaky.pdb
manifest.json types.txt (and, with --keep-sources, the generated C/asm sources).
"""
import argparse
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ms_qualifiers  # noqa: E402  (the volatile members of Microsoft's PDBs, with sources)

CLANG = os.environ.get("CLANG", "clang-14")
LLD = os.environ.get("LLD_LINK", "lld-link-14")
PDBUTIL = os.environ.get("LLVM_PDBUTIL", "llvm-pdbutil-14")

# Known ISF files -> (build, label).  Unknown files need --build/--label.
KNOWN = {
    "339E74133576439CBCDF7E0229DA3773": (7601, "win7-7601"),
    "BBED7C2955FBE4522AAA23F4B8677AD9": (19041, "win10-19041"),
    "32C1A669D5FFEFD41091F636CFDB6E99": (22000, "win11-22000"),
}

BASE_C = {
    "char": "char", "unsigned char": "unsigned char", "short": "short",
    "unsigned short": "unsigned short", "int": "int", "unsigned int": "unsigned int",
    "long": "long", "unsigned long": "unsigned long", "long long": "long long",
    "unsigned long long": "unsigned long long", "wchar": "__wchar_t", "void": "void",
    "double": "double", "f32": "float", "float": "float", "HRESULT": "long",
    "pointer": "unsigned long long", "bool": "unsigned char",
}
BASE_SIZE = {"char": 1, "unsigned char": 1, "short": 2, "unsigned short": 2, "int": 4,
             "unsigned int": 4, "long": 4, "unsigned long": 4, "long long": 8,
             "unsigned long long": 8, "wchar": 2, "double": 8, "f32": 4, "float": 4,
             "HRESULT": 4, "pointer": 8, "bool": 1, "void": 0}

IDENT = re.compile(r"^[A-Za-z_]\w*$")


def cname(n):
    """Type/enum name as a C identifier (ISF names that are not identifiers are sanitized)."""
    if IDENT.match(n):
        return n
    return "_isf_" + re.sub(r"\W", "_", n)


def load_isf(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".xz"):
        raw = lzma.decompress(raw)
    return json.loads(raw)


# --------------------------------------------------------------------------- supplemental types
# Types kdleak needs that ntkrnlmp's ISF does not carry (they are not in the kernel's TPI on the
# builds we have): KDDEBUGGER_DATA64 and its header, per wdbgexts.h (offsets: shared/spec/kd.md §4.2).
def u64(o):
    return {"offset": o, "type": {"kind": "base", "name": "unsigned long long"}}


def u16(o):
    return {"offset": o, "type": {"kind": "base", "name": "unsigned short"}}


def u32(o):
    return {"offset": o, "type": {"kind": "base", "name": "unsigned long"}}


KDDBG_U64 = """KernBase BreakpointWithStatus SavedContext""".split()
KDDBG_U64_2 = """KiCallUserMode KeUserCallbackDispatcher PsLoadedModuleList PsActiveProcessHead PspCidTable
ExpSystemResourcesList ExpPagedPoolDescriptor ExpNumberOfPagedPools KeTimeIncrement KeBugCheckCallbackListHead
KiBugcheckData IopErrorLogListHead ObpRootDirectoryObject ObpTypeObjectType MmSystemCacheStart MmSystemCacheEnd
MmSystemCacheWs MmPfnDatabase MmSystemPtesStart MmSystemPtesEnd MmSubsectionBase MmNumberOfPagingFiles
MmLowestPhysicalPage MmHighestPhysicalPage MmNumberOfPhysicalPages MmMaximumNonPagedPoolInBytes
MmNonPagedSystemStart MmNonPagedPoolStart MmNonPagedPoolEnd MmPagedPoolStart MmPagedPoolEnd
MmPagedPoolInformation MmPageSize MmSizeOfPagedPoolInBytes MmTotalCommitLimit MmTotalCommittedPages
MmSharedCommit MmDriverCommit MmProcessCommit MmPagedPoolCommit MmExtendedCommit MmZeroedPageListHead
MmFreePageListHead MmStandbyPageListHead MmModifiedPageListHead MmModifiedNoWritePageListHead MmAvailablePages
MmResidentAvailablePages PoolTrackTable NonPagedPoolDescriptor MmHighestUserAddress MmSystemRangeStart
MmUserProbeAddress KdPrintCircularBuffer KdPrintCircularBufferEnd KdPrintWritePointer KdPrintRolloverCount
MmLoadedUserImageList NtBuildLab KiNormalSystemCall KiProcessorBlock MmUnloadedDrivers MmLastUnloadedDriver
MmTriageActionTaken MmSpecialPoolTag KernelVerifier MmVerifierData MmAllocatedNonPagedPool MmPeakCommitment
MmTotalCommitLimitMaximum CmNtCSDVersion MmPhysicalMemoryBlock MmSessionBase MmSessionSize
MmSystemParentTablePage MmVirtualTranslationBase""".split()


def supplemental_types(kdbg_size):
    t = {}
    t["_LIST_ENTRY64"] = {"kind": "struct", "size": 16, "fields": {"Flink": u64(0), "Blink": u64(8)}}
    t["_DBGKD_DEBUG_DATA_HEADER64"] = {"kind": "struct", "size": 0x18, "fields": {
        "List": {"offset": 0, "type": {"kind": "struct", "name": "_LIST_ENTRY64"}},
        "OwnerTag": u32(0x10), "Size": u32(0x14)}}
    f = {"Header": {"offset": 0, "type": {"kind": "struct", "name": "_DBGKD_DEBUG_DATA_HEADER64"}}}
    o = 0x18
    for n in KDDBG_U64:
        f[n] = u64(o); o += 8
    for i, n in enumerate(["ThCallbackStack", "NextCallback", "FramePointer", "PaeEnabled"]):
        f[n] = u16(0x30 + 2 * i)
    o = 0x38
    for n in KDDBG_U64_2:
        f[n] = u64(o); o += 8
    assert f["KernelVerifier"]["offset"] == 0x240 and f["MmVerifierData"]["offset"] == 0x248
    assert f["PoolTrackTable"]["offset"] == 0x1B8 and f["MmVirtualTranslationBase"]["offset"] == 0x290
    o = 0x298
    for n in ["OffsetKThreadNextProcessor", "OffsetKThreadTeb", "OffsetKThreadKernelStack",
              "OffsetKThreadInitialStack", "OffsetKThreadApcProcess", "OffsetKThreadState",
              "OffsetKThreadBStore", "OffsetKThreadBStoreLimit", "SizeEProcess", "OffsetEprocessPeb",
              "OffsetEprocessParentCID", "OffsetEprocessDirectoryTableBase", "SizePrcb",
              "OffsetPrcbDpcRoutine", "OffsetPrcbCurrentThread", "OffsetPrcbMhz", "OffsetPrcbCpuType",
              "OffsetPrcbVendorString", "OffsetPrcbProcStateContext", "OffsetPrcbNumber", "SizeEThread"]:
        f[n] = u16(o); o += 2
    for n, off in [("KdPrintCircularBufferPtr", 0x2C8), ("KdPrintBufferSize", 0x2D0), ("KeLoaderBlock", 0x2D8),
                   ("IopNumTriageDumpDataBlocks", 0x308), ("IopTriageDumpDataBlocks", 0x310),
                   ("VfCrashDataBlock", 0x318), ("MmBadPagesDetected", 0x320),
                   ("MmZeroedPageSingleBitErrorsDetected", 0x328), ("EtwpDebuggerData", 0x330),
                   ("PteBase", 0x360), ("RetpolineStubFunctionTable", 0x368)]:
        if off + 8 <= kdbg_size:
            f[n] = u64(off)
    t["_KDDEBUGGER_DATA64"] = {"kind": "struct", "size": kdbg_size, "fields": f}
    return t


# --------------------------------------------------------------------------- ISF -> C
class CGen:
    def __init__(self, isf, extra_types, volatile=None):
        self.ut = dict(isf["user_types"])
        # {type: set(member)}: members Microsoft's PDB declares volatile (ms_qualifiers.py); clang
        # writes each as LF_MODIFIER (LF_BITFIELD over LF_MODIFIER for a bitfield), as MSVC does.
        self.volatile = volatile or {}
        for ty, members in self.volatile.items():
            missing = members - set(self.ut.get(ty, {}).get("fields", {}))
            if missing:
                raise SystemExit("ms_qualifiers: %s has no member(s) %s in this ISF" % (ty, sorted(missing)))
        self.supplemental = []
        for n, v in extra_types.items():
            if n not in self.ut:
                self.ut[n] = v
                self.supplemental.append(n)
        self.enums = isf["enums"]
        self.out = []
        self.done = set()
        self.busy = set()
        self.used_consts = set()
        self.fn_typedef = "__isf_fn"

    # size of a type reference
    def tsize(self, t):
        k = t["kind"]
        if k == "base":
            return BASE_SIZE.get(t["name"], 0)
        if k in ("struct", "union"):
            return self.ut[t["name"]]["size"] if t["name"] in self.ut else 0
        if k == "enum":
            return self.enums[t["name"]]["size"] if t["name"] in self.enums else 4
        if k == "pointer":
            return 8
        if k == "array":
            return t["count"] * self.tsize(t["subtype"])
        if k == "bitfield":
            return self.tsize(t["type"])
        return 0

    def tname(self, t):
        k = t["kind"]
        if k == "base":
            return BASE_C.get(t["name"], "unsigned char")
        if k in ("struct", "union"):
            return "%s %s" % (k, cname(t["name"]))
        if k == "enum":
            return "enum %s" % cname(t["name"]) if t["name"] in self.enums else "int"
        raise ValueError(t)

    def decl(self, t, name):
        k = t["kind"]
        if k == "pointer":
            sub = t["subtype"]
            inner = "*" + name
            if sub["kind"] in ("array",):
                inner = "(" + inner + ")"
            if sub["kind"] == "function":
                return "%s *%s" % (self.fn_typedef, name)
            return self.decl(sub, inner)
        if k == "array":
            return self.decl(t["subtype"], "%s[%d]" % (name, t["count"]))
        if k == "function":
            return "%s %s" % (self.fn_typedef, name)
        if k in ("struct", "union") and t["name"] not in self.ut:
            return "unsigned char %s[%d]" % (name, max(1, self.tsize(t)))  # unknown type: bytes
        return "%s %s" % (self.tname(t), name)

    def deps(self, t):
        """By-value struct/union dependencies of a type reference."""
        k = t["kind"]
        if k in ("struct", "union") and t["name"] in self.ut:
            yield t["name"]
        elif k == "array":
            yield from self.deps(t["subtype"])
        elif k == "bitfield":
            yield from self.deps(t["type"])

    @staticmethod
    def pad(n):
        """Unnamed bitfields: occupy n bytes, emitted into no debug info (clang skips unnamed fields)."""
        s = []
        q, r = divmod(n, 8)
        s += ["unsigned long long : 64;"] * q
        s += ["unsigned char : 8;"] * r
        return s

    def qualified(self, ty, fn, t):
        """`volatile ` when Microsoft declares member `fn` of `ty` volatile, else ``."""
        if fn not in self.volatile.get(ty, ()):
            return ""
        if t["kind"] == "pointer":
            raise SystemExit("ms_qualifiers: volatile pointer member %s.%s is not modelled" % (ty, fn))
        return "volatile "

    def items(self, fields, ty=None):
        """Group ISF fields into layout items: plain members or bitfield storage units."""
        plain, units = [], {}
        for idx, (fn, fv) in enumerate(fields.items()):
            t = fv["type"]
            if t["kind"] == "bitfield":
                key = (fv["offset"], self.tsize(t["type"]))
                units.setdefault(key, []).append((t["bit_position"], t["bit_length"], fn, t["type"], idx))
            else:
                plain.append({"off": fv["offset"], "end": fv["offset"] + self.tsize(t), "idx": idx,
                              "lines": [self.qualified(ty, fn, t) + self.decl(t, fn) + ";"]})
        for (off, usz), bfs in units.items():
            bfs.sort()
            # split into non-overlapping runs (overlapping bits -> separate lanes)
            runs = []
            for bf in bfs:
                for r in runs:
                    if r[-1][0] + r[-1][1] <= bf[0]:
                        r.append(bf)
                        break
                else:
                    runs.append([bf])
            for r in runs:
                lines, pos = [], 0
                utype = None
                for (bp, bl, fn, bt, idx) in r:
                    # all bitfields of one unit must share a declared type; use the first's size class
                    tn = self.tname(bt) if bt["kind"] != "enum" else {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}[usz]
                    if utype is None:
                        utype = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}[usz]
                    if bp > pos:
                        lines.append("%s : %d;" % (utype, bp - pos))
                    lines.append("%s%s %s : %d;" % (self.qualified(ty, fn, bt), tn, fn, bl))
                    pos = bp + bl
                if pos < usz * 8:
                    lines.append("%s : %d;" % (utype, usz * 8 - pos))
                plain.append({"off": off, "end": off + usz, "idx": min(x[4] for x in r), "lines": lines})
        plain.sort(key=lambda it: (it["off"], it["idx"]))
        return plain

    def lane_lines(self, lane, start):
        lines, pos = [], start
        for it in lane:
            if it["off"] > pos:
                lines += self.pad(it["off"] - pos)
            lines += it["lines"]
            pos = max(pos, it["end"])
        return lines, pos

    def layout(self, items, start, end_hint):
        """Lay out items that begin at >= start; returns C lines ending at the max item end."""
        # clusters of overlapping items
        clusters = []
        for it in items:
            if clusters and it["off"] < clusters[-1]["end"]:
                clusters[-1]["items"].append(it)
                clusters[-1]["end"] = max(clusters[-1]["end"], it["end"])
            else:
                clusters.append({"start": it["off"], "end": it["end"], "items": [it]})
        lines, pos = [], start
        for c in clusters:
            if c["start"] > pos:
                lines += self.pad(c["start"] - pos)
            pos = c["start"]
            lanes = []
            for it in c["items"]:
                for ln in lanes:
                    if ln[-1]["end"] <= it["off"]:
                        ln.append(it)
                        break
                else:
                    lanes.append([it])
            if len(lanes) == 1:
                ll, _ = self.lane_lines(lanes[0], pos)
                lines += ll
            else:
                lines.append("union {")
                for ln in lanes:
                    ll, _ = self.lane_lines(ln, c["start"])
                    if len(ln) == 1 and ln[0]["off"] == c["start"] and len(ll) == 1:
                        lines.append("  " + ll[0])
                    else:
                        lines.append("  struct {")
                        lines += ["    " + x for x in ll]
                        lines.append("  };")
                lines.append("};")
            pos = c["end"]
        return lines, pos

    def emit_type(self, name):
        if name in self.done:
            return
        if name in self.busy:
            raise RuntimeError("by-value cycle at " + name)
        self.busy.add(name)
        ty = self.ut[name]
        for fv in ty["fields"].values():
            for d in self.deps(fv["type"]):
                self.emit_type(d)
        self.busy.discard(name)
        kind = ty["kind"]
        items = self.items(ty["fields"], name)
        out = ["%s %s {" % (kind, cname(name))]
        if kind == "union":
            # each lane becomes a member of the union (anonymous struct if it needs padding)
            lanes = []
            for it in items:
                for ln in lanes:
                    if ln[-1]["end"] <= it["off"]:
                        ln.append(it)
                        break
                else:
                    lanes.append([it])
            end = 0
            for ln in lanes:
                ll, e = self.lane_lines(ln, 0)
                end = max(end, e)
                if len(ln) == 1 and ln[0]["off"] == 0 and len(ll) == 1:
                    out.append("  " + ll[0])
                else:
                    out += ["  struct {"] + ["    " + x for x in ll] + ["  };"]
            if ty["size"] > end:
                out += ["  struct {"] + ["    " + x for x in self.pad(ty["size"])] + ["  };"]
        else:
            ll, end = self.layout(items, 0, ty["size"])
            out += ["  " + x for x in ll]
            if ty["size"] > end:
                out += ["  " + x for x in self.pad(ty["size"] - end)]
        if not items and ty["size"] == 0:
            out.append("  unsigned char : 8;")
        out.append("};")
        if ty["size"]:
            out.append("_Static_assert(sizeof(%s %s) == %d, \"size %s\");" % (kind, cname(name), ty["size"], name))
        for fn, fv in ty["fields"].items():
            if fv["type"]["kind"] != "bitfield":
                out.append("_Static_assert(__builtin_offsetof(%s %s, %s) == %d, \"off %s.%s\");"
                           % (kind, cname(name), fn, fv["offset"], name, fn))
        self.out += out
        self.done.add(name)

    def emit_enum(self, name):
        e = self.enums[name]
        base = {1: "unsigned char", 2: "unsigned short", 4: "int", 8: "long long"}[e["size"]]
        if e["base"].startswith("unsigned") or any(v > 0x7FFFFFFF for v in e["constants"].values()):
            base = "unsigned " + base if not base.startswith("unsigned") else base
        lines = ["enum %s : %s {" % (cname(name), base)]
        for cn, cv in sorted(e["constants"].items(), key=lambda x: (x[1], x[0])):
            n = cn if IDENT.match(cn) else cname(cn)
            while n in self.used_consts:
                n += "_"
            self.used_consts.add(n)
            lines.append("  %s = %d," % (n, cv))
        lines.append("};")
        self.out += lines

    def generate(self):
        self.out = ["/* generated by captures/gen/gen_fixtures.py from an ISF file: do not edit */",
                    "#pragma pack(push, 1)",
                    "typedef void %s(void);" % self.fn_typedef]
        for n in self.ut:
            self.out.append("%s %s;" % (self.ut[n]["kind"], cname(n)))
        for n in self.enums:
            self.emit_enum(n)
        for n in self.ut:
            self.emit_type(n)
        self.out.append("#pragma pack(pop)")
        # make every type reachable from debug info even if nothing uses it
        return "\n".join(self.out) + "\n"


# --------------------------------------------------------------------------- kernel globals
NT_BUILD_LAB_SIZE = 64


def nt_build_lab(build):
    """The fixture kernel's NtBuildLab: real kernels' format (build.qfe.arch.branch.date-time), with a
    branch name that says what it is."""
    return "%d.1.amd64fre.kdleak_fixture.000000-0000" % build


def kernel_globals(isf, build, kdbg_size):
    """(name, C declarator-type-ref, initializer or None).  Types are version logic (verifier.md §8)."""
    syms = isf["symbols"]
    ut = isf["user_types"]

    def S(n):
        return {"kind": "struct", "name": n}
    UL = {"kind": "base", "name": "unsigned long"}
    L = {"kind": "base", "name": "long"}
    G = []
    kpb_count = 64
    if "KiProcessorBlock" in syms:
        a = syms["KiProcessorBlock"]["address"]
        nxt = min((v["address"] for v in syms.values() if v["address"] > a), default=a + 0x200)
        kpb_count = max(1, min((nxt - a) // 8, 2048))
    wanted = [
        ("KdDebuggerDataBlock", S("_KDDEBUGGER_DATA64")),
        ("KdpDebuggerDataListHead", S("_LIST_ENTRY")),
        ("PsLoadedModuleList", S("_LIST_ENTRY")),
        ("NtBuildNumber", UL),
        ("MmVerifierData", S("_MM_DRIVER_VERIFIER_DATA")),
        ("VfSuspectDriversList", S("_LIST_ENTRY")),
        ("MiSuspectDriverList", S("_LIST_ENTRY")),
        ("ViTargetDriversAvl", S("_VF_AVL_TREE")),
        ("VfPoolTraces", {"kind": "pointer", "subtype": S("_VF_POOL_TRACE")}),
        ("VfPoolTracesIndex", UL),
        ("VfPoolTracesLength", UL),
        ("VfOptionFlags", UL),
        ("VfVerifyMode", UL),
        ("VfRuleClasses", UL),
        ("KernelVerifier", UL),
        ("VerifierIsTrackingPool", UL),
        ("ViTargetInitialized", UL),
        ("VfSafeMode", UL),
        ("KiProcessorBlock", {"kind": "array", "count": kpb_count,
                              "subtype": {"kind": "pointer", "subtype": S("_KPRCB")}}),
        # What independent memory readers (Volatility 3's windows.info, debuggers' KdVersionBlock
        # scans) look up in every real kernel; filled by the simulator like the boot code fills them,
        # except NtBuildLab, a string baked into the image.
        ("KdVersionBlock", S("_DBGKD_GET_VERSION64")),
        ("KeNumberProcessors", UL),
        ("CmNtCSDVersion", UL),
        ("NtBuildLab", {"kind": "array", "count": NT_BUILD_LAB_SIZE, "subtype": {"kind": "base", "name": "char"}}),
        ("MmPteBase", {"kind": "base", "name": "unsigned long long"}),
    ]
    for n, t in wanted:
        if n not in syms and n not in ("KdDebuggerDataBlock", "KdpDebuggerDataListHead",
                                       "PsLoadedModuleList", "NtBuildNumber"):
            continue
        if t["kind"] == "struct" and t["name"] not in ut and t["name"] != "_KDDEBUGGER_DATA64":
            t = {"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "unsigned char"}}
        G.append((n, t, syms.get(n, {}).get("address")))
    # keep the ISF's relative order (sorted by the real RVA)
    G.sort(key=lambda g: (g[2] is None, g[2] or 0, g[0]))
    return G


def kernel_c(isf, build, kdbg_size, cg, cgen_text):
    G = kernel_globals(isf, build, kdbg_size)
    names = [g[0] for g in G]
    lines = [cgen_text, "/* ---- kernel globals (order = ISF RVA order) ---- */",
             "extern unsigned char __ImageBase[];"]
    inits = {
        "NtBuildNumber": "0xF0000000u | %du" % build,
        "PsLoadedModuleList": "{ &PsLoadedModuleList, &PsLoadedModuleList }",
        "VfSuspectDriversList": "{ &VfSuspectDriversList, &VfSuspectDriversList }",
        "MiSuspectDriverList": "{ &MiSuspectDriverList, &MiSuspectDriverList }",
        "KdpDebuggerDataListHead": "{ (struct _LIST_ENTRY *)&KdDebuggerDataBlock, (struct _LIST_ENTRY *)&KdDebuggerDataBlock }",
        "NtBuildLab": '"%s"' % nt_build_lab(build),
    }
    kd = [".Header = { .List = { (unsigned long long)&KdpDebuggerDataListHead, (unsigned long long)&KdpDebuggerDataListHead },"
          " .OwnerTag = 0x4742444B, .Size = sizeof(struct _KDDEBUGGER_DATA64) }",
          ".KernBase = (unsigned long long)__ImageBase",
          ".BreakpointWithStatus = (unsigned long long)RtlpBreakWithStatusInstruction",
          ".PsLoadedModuleList = (unsigned long long)&PsLoadedModuleList"]
    for n in ("KiProcessorBlock", "KernelVerifier", "MmVerifierData", "NtBuildLab", "CmNtCSDVersion"):
        if n in names:
            kd.append(".%s = (unsigned long long)&%s" % (n, n))
    inits["KdDebuggerDataBlock"] = "{ " + ", ".join(kd) + " }"
    lines.append("void RtlpBreakWithStatusInstruction(void);")
    for n, t, _ in G:
        lines.append("extern %s;" % CGen.decl(cg, t, n))
    for n, t, _ in G:
        init = inits.get(n)
        lines.append("%s%s;" % (CGen.decl(cg, t, n), " = " + init if init else " = {0}" if t["kind"] != "base" else " = 0"))
    return "\n".join(lines) + "\n", G


# --------------------------------------------------------------------------- functions (asm)
# Each function: name, size, list of (return_offset, call-kind, target).  The call instruction ends
# exactly at return_offset, so a return address at Func+return_offset is a real call site.
CALL_LEN = {"rel": 5, "imp": 6, "reg": 2}


def asm_function(name, size, calls, align=16, leaf_bytes=None):
    L = ["", "\t.globl\t%s" % name, "\t.def\t%s;\n\t.scl\t2;\n\t.type\t32;\n\t.endef" % name]
    if align:
        L.append("\t.p2align\t%d, 0xcc" % {16: 4, 4: 2, 1: 0}[align])
    L.append("%s:" % name)
    if leaf_bytes is not None:  # leaf function, no unwind data (like the real int3;ret stub)
        L.append("\t.byte\t" + ", ".join("0x%02x" % b for b in leaf_bytes))
        pad = size - len(leaf_bytes)
        if pad > 0:
            L.append("\t.fill\t%d, 1, 0xcc" % pad)
        return "\n".join(L)
    L += ["\t.seh_proc\t%s" % name, "\tsubq\t$40, %rsp", "\t.seh_stackalloc\t40", "\t.seh_endprologue"]
    pos = 4
    for off, kind, tgt in sorted(calls):
        start = off - CALL_LEN[kind]
        assert start >= pos, (name, off)
        if start > pos:
            L.append("\t.fill\t%d, 1, 0x90" % (start - pos))
        if kind == "rel":
            L.append("\tcallq\t%s" % tgt)
        elif kind == "imp":
            L.append("\tcallq\t*__imp_%s(%%rip)" % tgt)
        else:
            L.append("\tcallq\t*%rax")
        pos = off
    end = size - 5
    assert end >= pos, name
    if end > pos:
        L.append("\t.fill\t%d, 1, 0x90" % (end - pos))
    L += ["\taddq\t$40, %rsp", "\tretq", "\t.seh_endproc"]
    return "\n".join(L)


def kernel_functions(isf):
    syms = isf["symbols"]
    F = [
        # name, size, calls      (offsets from verifier.md §1 seed stack)
        ("KiSystemStartup", 0x40, [(0x0d, "rel", "RtlpBreakWithStatusInstruction")]),
        ("KiSystemServiceCopyEnd", 0x40, [(0x13, "rel", "NtDeviceIoControlFile")]),
        ("NtDeviceIoControlFile", 0x90, [(0x56, "rel", "IopXxxControlFile")]),
        ("IopXxxControlFile", 0x9d0, [(0x607, "rel", "IovCallDriver")]),
        ("IofCallDriver", 0x40, [(0x1e, "rel", "IovCallDriver")]),
        ("IovCallDriver", 0x1a0, [(0xa0, "reg", None)]),
        ("ExAllocatePoolWithTag", 0x80, [(0x2a, "rel", "ExAllocatePoolWithTagPriority")]),
        ("ExAllocatePoolWithTagPriority", 0x120, []),
        ("ExFreePoolWithTag", 0x100, []),
        ("VerifierExAllocatePoolEx", 0x40, [(0x1d, "rel", "VeAllocatePoolWithTagPriority")]),
        ("VerifierExAllocatePoolWithTag", 0x40, [(0x1d, "rel", "VeAllocatePoolWithTagPriority")]),
        ("VeAllocatePoolWithTagPriority", 0x3a0, [(0x1c4, "rel", "ExAllocatePoolWithTagPriority"),
                                                  (0x2b6, "rel", "ViPoolLogStackTrace")]),
        ("ViPoolLogStackTrace", 0xc0, [(0x4a, "rel", "RtlCaptureStackBackTrace")]),
        ("RtlCaptureStackBackTrace", 0x60, []),
        ("KeBugCheckEx", 0x140, [(0x100, "rel", "RtlpBreakWithStatusInstruction")]),
    ]
    if "VfHandlePoolAlloc" in syms:
        F.append(("VfHandlePoolAlloc", 0x200, [(0x96, "rel", "ViPoolLogStackTrace")]))
    F.append(("RtlpBreakWithStatusInstruction", 0x10, "leaf"))
    # order like the real kernel (ISF RVA), names the ISF lacks go last
    F.sort(key=lambda f: (f[0] not in syms, syms.get(f[0], {}).get("address", 0), f[0]))
    parts = ["\t.text"]
    for name, size, calls in F:
        if calls == "leaf":
            parts.append(asm_function(name, size, [], leaf_bytes=[0xcc, 0xc3]))
        else:
            parts.append(asm_function(name, size, calls))
    return "\n".join(parts) + "\n", [f[0] for f in F]


KERNEL_EXPORTS = ["ExAllocatePoolWithTag", "ExAllocatePoolWithTagPriority", "ExFreePoolWithTag",
                  "IofCallDriver", "KeBugCheckEx", "NtDeviceIoControlFile", "RtlCaptureStackBackTrace",
                  "PsLoadedModuleList", "NtBuildNumber"]


def myfault_asm():
    # Exact placement: .text starts at RVA 0x1000; MyfaultDeviceControl at RVA 0x12dc and
    # MyfaultDispatch at RVA 0x1670, so that with ImageBase 0xfffff8800447c000 the seed's
    # fffff8800447d634 = MyfaultDeviceControl+0x358 and fffff8800447d727 = MyfaultDispatch+0xb7.
    P = ["\t.text",
         asm_function("DriverEntry", 0x1a0, [(0x9e, "imp", "IoCreateDevice")], align=16),
         asm_function("MyfaultUnload", 0x13c, [(0x40, "imp", "IoDeleteDevice")], align=1),
         asm_function("MyfaultDeviceControl", 0x394, [(0x1e2, "imp", "ExFreePoolWithTag"),
                                                      (0x358, "imp", "ExAllocatePoolWithTag")], align=1),
         asm_function("MyfaultDispatch", 0x110, [(0xb7, "rel", "MyfaultDeviceControl")], align=1),
         asm_function("MyfaultCreateClose", 0x40, [(0x1b, "imp", "IofCompleteRequest")], align=16)]
    return "\n".join(P) + "\n"


def leaky_asm():
    P = ["\t.text",
         asm_function("DriverEntry", 0x120, [(0x5a, "imp", "IoCreateDevice")]),
         asm_function("LeakyAllocate", 0x90, [(0x32, "imp", "ExAllocatePoolWithTag")]),
         asm_function("LeakyDeviceControl", 0x1c0, [(0x7b, "rel", "LeakyAllocate"),
                                                    (0x12f, "rel", "LeakyAllocate")]),
         asm_function("LeakyUnload", 0x60, [(0x21, "imp", "IoDeleteDevice")])]
    return "\n".join(P) + "\n"


DRIVER_C = {
    "myfault": """/* myfault fixture driver data */
struct _MYFAULT_STATE { unsigned long long Allocations; unsigned long LastIoctl; unsigned long Tag; };
struct _MYFAULT_STATE MyfaultState = { 0, 0, 0x6b61654c /* 'Leak' */ };
""",
    "leaky": """/* leaky fixture driver data */
struct _LEAKY_STATE { unsigned long long Allocations; unsigned long long Bytes; unsigned long Tag; };
struct _LEAKY_STATE LeakyState = { 0, 0, 0x796b614c /* 'Laky' */ };
""",
}
DRIVER_IMPORTS = ["IoCreateDevice", "IoDeleteDevice", "IofCompleteRequest"]

# public: S_PUB32 only (types, if any, in the TPI); private: also S_GDATA32 and a module stream.
PDB_STYLE = {"ntkrnlmp.pdb": "public", "myfault.pdb": "public", "leaky.pdb": "private"}


# --------------------------------------------------------------------------- build helpers
CFLAGS = ["--target=x86_64-pc-windows-msvc", "-c", "-g", "-gcodeview", "-O1", "-ffreestanding",
          "-fno-builtin", "-fms-extensions", "-fno-eliminate-unused-debug-types", "-fstandalone-debug",
          "-fdebug-compilation-dir=C:\\src", "-fcoverage-compilation-dir=C:\\src",
          "-Wno-microsoft-fixed-enum", "-Wno-fixed-enum-extension", "-Wno-gnu-empty-struct",
          "-Wno-pragma-pack"]

# A TU whose PDB records should be only S_PUB32 (lld writes one for every external it links):
# no debug info at all.
CFLAGS_PUBLIC = [f for f in CFLAGS if f not in ("-g", "-gcodeview", "-fno-eliminate-unused-debug-types",
                                                "-fstandalone-debug")]

# assembly: no -g (it would add DWARF .debug_* sections to the image)
ASFLAGS = ["--target=x86_64-pc-windows-msvc", "-c"]


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("$ %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr[-20000:]))
        raise SystemExit("command failed: %s" % cmd[0])
    return r.stdout


def link(cwd, objs, out, pdb, base, entry, extra):
    cmd = [LLD, "/nologo", "/debug", "/pdb:" + pdb, "/pdbaltpath:" + pdb, "/out:" + out,
           "/entry:" + entry, "/subsystem:native", "/nodefaultlib", "/base:" + base, "/Brepro",
           "/pdbsourcepath:C:\\src", "/opt:noref", "/opt:noicf", "/filealign:0x200"] + extra + objs
    run(cmd, cwd)


def pe_info(path):
    b = open(path, "rb").read()
    pe = struct.unpack_from("<I", b, 0x3C)[0]
    nsec = struct.unpack_from("<H", b, pe + 6)[0]
    optsz = struct.unpack_from("<H", b, pe + 20)[0]
    opt = pe + 24
    image_base = struct.unpack_from("<Q", b, opt + 24)[0]
    size_image = struct.unpack_from("<I", b, opt + 56)[0]
    timestamp = struct.unpack_from("<I", b, pe + 8)[0]
    subsystem = struct.unpack_from("<H", b, opt + 68)[0]
    dllch = struct.unpack_from("<H", b, opt + 70)[0]
    dd = opt + 112
    secs = []
    for i in range(nsec):
        s = pe + 24 + optsz + 40 * i
        name = b[s:s + 8].rstrip(b"\0").decode()
        vsize, va, rsize, rptr = struct.unpack_from("<IIII", b, s + 8)
        secs.append({"name": name, "rva": va, "vsize": vsize, "rawsize": rsize, "rawptr": rptr})

    def off(rva):
        for s in secs:
            if s["rva"] <= rva < s["rva"] + max(s["vsize"], s["rawsize"]):
                return rva - s["rva"] + s["rawptr"]
        raise ValueError(rva)
    exp_rva, exp_size = struct.unpack_from("<II", b, dd)
    exports = {}
    if exp_rva:
        e = off(exp_rva)
        nfun, nnames, af, an, ao = struct.unpack_from("<IIIII", b, e + 20)
        for i in range(nnames):
            nr = struct.unpack_from("<I", b, off(an) + 4 * i)[0]
            o = struct.unpack_from("<H", b, off(ao) + 2 * i)[0]
            fr = struct.unpack_from("<I", b, off(af) + 4 * o)[0]
            nm = b[off(nr):b.index(b"\0", off(nr))].decode()
            exports[nm] = fr
    dbg_rva, dbg_size = struct.unpack_from("<II", b, dd + 6 * 8)
    rsds = None
    for i in range(dbg_size // 28):
        ch, ts, ma, mi, ty, sz, arva, aptr = struct.unpack_from("<IIHHIIII", b, off(dbg_rva) + 28 * i)
        if ty == 2:
            sig, d1, d2, d3 = struct.unpack_from("<IIHH", b, aptr)
            d4 = b[aptr + 12:aptr + 20]
            age = struct.unpack_from("<I", b, aptr + 20)[0]
            name = b[aptr + 24:b.index(b"\0", aptr + 24)].decode()
            guid = "%08X%04X%04X%s" % (d1, d2, d3, d4.hex().upper())
            rsds = {"guid": guid, "age": age, "pdb_name": name, "symstore_key": "%s%X" % (guid, age)}
    return {"image_base": image_base, "size_of_image": size_image, "timestamp": timestamp,
            "subsystem": subsystem, "dll_characteristics": dllch, "sections": secs,
            "exports": exports, "rsds": rsds}


def pdb_publics(pdb, secs):
    out = run([PDBUTIL, "dump", "-publics", pdb], os.path.dirname(pdb) or ".")
    res = {}
    for m in re.finditer(r"S_PUB32 \[size = \d+\] `([^`]+)`\s*\n\s*flags = ([^,]+), addr = (\d+):(\d+)", out):
        name, flags, sec, o = m.group(1), m.group(2).strip(), int(m.group(3)), int(m.group(4))
        if 1 <= sec <= len(secs):
            res[name] = {"rva": secs[sec - 1]["rva"] + o, "function": "function" in flags}
    return res


def pdb_summary(pdb):
    out = run([PDBUTIL, "dump", "-summary", pdb], os.path.dirname(pdb) or ".")
    g = re.search(r"GUID: \{([0-9A-F-]+)\}", out).group(1)
    age = int(re.search(r"Age: (\d+)", out).group(1))
    p = g.split("-")
    return {"guid": p[0] + p[1] + p[2] + p[3] + p[4], "age": age}


def pdb_dbi_age(pdb):
    out = run([PDBUTIL, "bytes", "--stream-data=3", pdb], os.path.dirname(pdb) or ".")
    # first data line: offset: bytes...
    m = re.search(r"\n\s*[0-9A-F]+:((?: [0-9A-F]{8})+)", out)
    w = m.group(1).split()
    return int.from_bytes(bytes.fromhex(w[2]), "little")  # dumped in memory byte order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("isf")
    ap.add_argument("outdir")
    ap.add_argument("--build", type=int)
    ap.add_argument("--label")
    ap.add_argument("--kernel-base", type=lambda s: int(s, 0))
    ap.add_argument("--keep-sources", action="store_true")
    a = ap.parse_args()
    a.outdir = os.path.abspath(a.outdir)

    isf = load_isf(a.isf)
    guid = isf["metadata"]["windows"]["pdb"]["GUID"].upper()
    build, label = KNOWN.get(guid, (a.build, a.label))
    build = a.build or build
    label = a.label or label
    if not build:
        raise SystemExit("unknown ISF GUID %s: pass --build N [--label L]" % guid)
    syms = isf["symbols"]
    kdbg_size = 0x380
    if "KdDebuggerDataBlock" in syms:
        adr = syms["KdDebuggerDataBlock"]["address"]
        nxt = min((v["address"] for v in syms.values() if v["address"] > adr), default=adr + 0x380)
        kdbg_size = max(0x340, min(0x380, (nxt - adr) & ~7))
    kbase = a.kernel_base or (0xFFFFF80002A00000 if build < 9200 else 0xFFFFF80312400000)

    cg = CGen(isf, supplemental_types(kdbg_size), ms_qualifiers.volatile_members(build))
    types_c = cg.generate()
    kc, globs = kernel_c(isf, build, kdbg_size, cg, types_c)
    kasm, kfuncs = kernel_functions(isf)

    os.makedirs(a.outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="kdleak-fixgen-")
    try:
        # Symbol streams as Microsoft ships them (README "Symbol streams"): the kernel's types come
        # from a TU that defines no object (TPI + S_UDT only); its globals from a TU without debug
        # info, so the PDB names them only through S_PUB32, untyped, like the public ntkrnlmp.pdb.
        # myfault (a Microsoft driver) is public too; leaky (a third-party driver) stays private
        # (S_GDATA32 with its type, a module symbol stream).
        files = {"nt_types.c": (types_c, CFLAGS), "nt_data.c": (kc, CFLAGS_PUBLIC),
                 "nt_code.s": (kasm, ASFLAGS), "myfault_code.s": (myfault_asm(), ASFLAGS),
                 "myfault_data.c": (DRIVER_C["myfault"], CFLAGS_PUBLIC),
                 "leaky_code.s": (leaky_asm(), ASFLAGS), "leaky_data.c": (DRIVER_C["leaky"], CFLAGS)}
        for n, (t, _) in files.items():
            with open(os.path.join(work, n), "w") as f:
                f.write(t)
        for n, (_, flags) in files.items():
            obj = n.rsplit(".", 1)[0] + ".obj"
            run([CLANG] + flags + [n, "-o", obj], work)
        exports = ["/export:" + e + (",data" if e in ("PsLoadedModuleList", "NtBuildNumber") else "")
                   for e in KERNEL_EXPORTS + ["IoCreateDevice", "IoDeleteDevice", "IofCompleteRequest"]]
        # the three I/O manager exports are aliases to real code so drivers can import them
        stubs = "\t.text\n" + "\n".join(asm_function(n, 0x40, []) for n in DRIVER_IMPORTS) + "\n"
        with open(os.path.join(work, "nt_io.s"), "w") as f:
            f.write(stubs)
        run([CLANG] + ASFLAGS + ["nt_io.s", "-o", "nt_io.obj"], work)
        link(work, ["nt_code.obj", "nt_io.obj", "nt_types.obj", "nt_data.obj"], "ntoskrnl.exe", "ntkrnlmp.pdb",
             hex(kbase), "KiSystemStartup", ["/fixed", "/implib:ntoskrnl.lib"] + exports)
        link(work, ["myfault_code.obj", "myfault_data.obj", "ntoskrnl.lib"], "myfault.sys", "myfault.pdb",
             "0xfffff8800447c000", "DriverEntry", ["/driver"])
        link(work, ["leaky_code.obj", "leaky_data.obj", "ntoskrnl.lib"], "leaky.sys", "leaky.pdb",
             "0xfffff88004500000", "DriverEntry", ["/driver"])
        manifest = {"generator": "captures/gen/gen_fixtures.py", "isf": os.path.basename(a.isf),
                    "isf_guid": guid, "isf_age": isf["metadata"]["windows"]["pdb"]["age"],
                    "build": build, "label": label, "ntbuildnumber_value": 0xF0000000 | build,
                    "user_types_from_isf": len(isf["user_types"]),
                    "supplemental_types": cg.supplemental, "files": {}}
        want = {"ntoskrnl.exe": ("ntkrnlmp.pdb", [g[0] for g in globs] + kfuncs + DRIVER_IMPORTS),
                "myfault.sys": ("myfault.pdb", ["DriverEntry", "MyfaultUnload", "MyfaultDeviceControl",
                                                "MyfaultDispatch", "MyfaultCreateClose", "MyfaultState"]),
                "leaky.sys": ("leaky.pdb", ["DriverEntry", "LeakyAllocate", "LeakyDeviceControl",
                                            "LeakyUnload", "LeakyState"])}
        for img, (pdb, names) in want.items():
            for f in (img, pdb):
                shutil.copyfile(os.path.join(work, f), os.path.join(a.outdir, f))
            pi = pe_info(os.path.join(a.outdir, img))
            pubs = pdb_publics(os.path.join(a.outdir, pdb), pi["sections"])
            ps = pdb_summary(os.path.join(a.outdir, pdb))
            ent = {"pdb": pdb, "pdb_style": PDB_STYLE[pdb], "rsds": pi["rsds"], "pdb_guid": ps["guid"], "pdb_age": ps["age"],
                   "pdb_dbi_age": pdb_dbi_age(os.path.join(a.outdir, pdb)),
                   "image_base": "0x%x" % pi["image_base"], "size_of_image": pi["size_of_image"],
                   "timestamp": pi["timestamp"],
                   "file_size": os.path.getsize(os.path.join(a.outdir, img)),
                   "pdb_file_size": os.path.getsize(os.path.join(a.outdir, pdb)),
                   "sections": {s["name"]: {"rva": "0x%x" % s["rva"], "vsize": "0x%x" % s["vsize"]}
                                for s in pi["sections"]},
                   "symbols": {}, "exports": {k: "0x%x" % v for k, v in sorted(pi["exports"].items())}}
            for n in names:
                if n in pubs:
                    e = {"rva": "0x%x" % pubs[n]["rva"], "function": pubs[n]["function"]}
                    if img == "ntoskrnl.exe" and n in syms:
                        e["isf_rva"] = "0x%x" % syms[n]["address"]
                    ent["symbols"][n] = e
                else:
                    ent["symbols"][n] = None
            manifest["files"][img] = ent
        manifest["global_types"] = {g[0]: g[1] for g in globs}
        # What ms_qualifiers.py says Microsoft's PDB declares volatile, for every type it covers on
        # this build (empty list: covered, nothing volatile); tests check the PDB against it.
        manifest["volatile_members"] = ms_qualifiers.table(build)
        with open(os.path.join(a.outdir, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        if a.keep_sources:
            for n in list(files) + ["nt_io.s"]:
                shutil.copyfile(os.path.join(work, n), os.path.join(a.outdir, n))
        print("%s: build %d -> %s" % (guid, build, a.outdir))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
