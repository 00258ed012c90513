#!/usr/bin/env python3
"""Reads a crash dump with kdmp-parser (PyPI, a C++ reader independent of kdleak) and prints
what it sees as JSON, for tests/dump_write.rs to compare with the simulator's memory.

usage: dump_check.py DUMP VA:LEN [VA:LEN ...]     (VA in hex, LEN in decimal)

Each VA is translated by kdmp-parser's own page-table walk from the header's CR3, then read
page by page from physical memory. Output: dump type, CR3, header fields, and per read the
physical address of its first byte and the bytes as hex (null where the walk or a page fails).
"""

import json
import sys

import kdmp_parser

PAGE = 0x1000


def read_virtual(dump, va, length):
    out = bytearray()
    first_pa = None
    while len(out) < length:
        pa = dump.translate_virtual(va + len(out))
        if pa is None:
            return first_pa, None
        if first_pa is None:
            first_pa = pa
        page = dump.read_physical_page(pa & ~(PAGE - 1))
        if page is None:
            return first_pa, None
        offset = pa & (PAGE - 1)
        take = min(PAGE - offset, length - len(out))
        out += bytes(page[offset : offset + take])
    return first_pa, out.hex()


def main():
    dump = kdmp_parser.KernelDumpParser(sys.argv[1])
    header = dump.header
    reads = []
    for spec in sys.argv[2:]:
        va_text, length_text = spec.split(":")
        va = int(va_text, 16)
        pa, data = read_virtual(dump, va, int(length_text))
        reads.append({"va": va, "pa": pa, "hex": data})
    print(
        json.dumps(
            {
                "kdmp_parser_version": "%d.%d.%d"
                % (
                    kdmp_parser.version.major,
                    kdmp_parser.version.minor,
                    kdmp_parser.version.patch,
                ),
                "dump_type": int(dump.type),
                "directory_table_base": dump.directory_table_base,
                "minor_version": header.MinorVersion,
                "machine_image_type": header.MachineImageType,
                "number_processors": header.NumberProcessors,
                "bugcheck_code": header.BugCheckCode,
                "bugcheck_parameters": list(header.BugCheckCodeParameter),
                "kd_debugger_data_block": header.KdDebuggerDataBlock,
                "ps_loaded_module_list": header.PsLoadedModuleList,
                "rip": dump.context.Rip,
                "reads": reads,
            }
        )
    )


if __name__ == "__main__":
    main()
