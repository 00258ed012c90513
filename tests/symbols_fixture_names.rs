//! WinDbg-style names for the seed stacks of the generated fixtures (captures/gen/README.md):
//! the drivers' documented return addresses and the kernel's call sites, at each image's base.

use std::path::PathBuf;

use kdleak::symbols::{module_display_name, AddressSpace, Pdb};
use serde_json::Value;

fn fixture(label: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("captures/fixtures")
        .join(label)
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn seed_stacks_read_like_windbg() {
    for label in ["win7-7601", "win10-19041", "win11-22000"] {
        let dir = fixture(label);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let files = &manifest["files"];
        let pdbs: Vec<(String, Pdb, u64, u64)> = ["ntoskrnl.exe", "myfault.sys", "leaky.sys"]
            .iter()
            .map(|image| {
                let f = &files[*image];
                let pdb = Pdb::open(&dir.join(f["pdb"].as_str().unwrap())).unwrap();
                (
                    module_display_name(image),
                    pdb,
                    hex(&f["image_base"]),
                    f["size_of_image"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut space = AddressSpace::new();
        for (name, pdb, base, size) in &pdbs {
            space.add(name, *base, *size, Some(pdb));
        }
        // The leak table's CallersAddress and the dispatch frame (gen README, drivers).
        assert_eq!(
            space.symbolize(0xfffff8800447d634),
            "myfault!MyfaultDeviceControl+0x358"
        );
        assert_eq!(
            space.symbolize(0xfffff8800447d727),
            "myfault!MyfaultDispatch+0xb7"
        );
        assert_eq!(space.symbolize(0xfffff88004501120), "leaky!LeakyAllocate");
        assert_eq!(
            space.symbolize(0xfffff88004501152),
            "leaky!LeakyAllocate+0x32"
        );
        // Kernel call sites at the fixture kernel's own RVAs.
        let nt = &files["ntoskrnl.exe"];
        let kbase = hex(&nt["image_base"]);
        for (function, off) in [
            ("IopXxxControlFile", 0x607u64),
            ("NtDeviceIoControlFile", 0x56),
            ("IovCallDriver", 0xa0),
            ("KiSystemServiceCopyEnd", 0x13),
            ("ViPoolLogStackTrace", 0x4a),
        ] {
            let rva = hex(&nt["symbols"][function]["rva"]);
            assert_eq!(
                space.symbolize(kbase + rva + off),
                format!("nt!{function}+{off:#x}"),
                "{label}"
            );
        }
        // In a module but before any symbol (the headers), and outside every module.
        assert_eq!(space.symbolize(kbase + 0x10), "nt+0x10");
        assert_eq!(space.symbolize(0xfffff88004600000), "0xfffff880`04600000");
    }
}
