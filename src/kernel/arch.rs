//! Which processor architecture a GetVersion reply describes (kd.md §3.5), and whether this host
//! can read it. MachineType decides; Flags.PTR64 only confirms it, because real boot debuggers and
//! other stubs set Flags loosely (a real Windows 10 was seen reporting Flags 0x0002, and Xen's
//! kdd derives PTR64 from its own OS table).

use kdproto::api::{
    Version, DBGKD_VERS_FLAG_PTR64, IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64,
    IMAGE_FILE_MACHINE_I386,
};

use super::KernelError;

/// A readable name for a MachineType value.
pub fn machine_name(machine: u16) -> String {
    match machine {
        IMAGE_FILE_MACHINE_AMD64 => "x64".into(),
        IMAGE_FILE_MACHINE_ARM64 => "arm64".into(),
        IMAGE_FILE_MACHINE_I386 => "x86".into(),
        other => format!("{other:#06x}"),
    }
}

/// Accepts an x64 target. Returns a warning when Flags.PTR64 contradicts MachineType AMD64; any
/// other MachineType is target data this host cannot use.
pub fn check_x64(version: &Version) -> Result<Option<String>, KernelError> {
    if version.machine_type != IMAGE_FILE_MACHINE_AMD64 {
        return Err(KernelError::Invalid(format!(
            "the target's MachineType is {:#06x} ({}); only x64 (0x8664) targets are supported",
            version.machine_type,
            machine_name(version.machine_type)
        )));
    }
    Ok((version.flags & DBGKD_VERS_FLAG_PTR64 == 0).then(|| {
        format!(
            "GetVersion says MachineType 0x8664 (x64) but Flags {:#06x} has PTR64 clear; \
             reading the target as 64-bit",
            version.flags
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(machine_type: u16, flags: u16) -> Version {
        Version {
            machine_type,
            flags,
            ..Version::default()
        }
    }

    #[test]
    fn x64_with_ptr64_is_accepted_silently() {
        assert_eq!(check_x64(&version(0x8664, 7)).unwrap(), None);
    }

    #[test]
    fn x64_without_ptr64_is_accepted_with_a_warning() {
        let warning = check_x64(&version(0x8664, 0x0002)).unwrap().unwrap();
        assert!(warning.contains("PTR64 clear"), "{warning}");
        assert!(warning.contains("0x0002"), "{warning}");
    }

    #[test]
    fn other_machines_are_refused_by_name() {
        let err = check_x64(&version(0x014c, 3)).unwrap_err().to_string();
        assert!(err.contains("0x014c (x86)"), "{err}");
        let err = check_x64(&version(0xaa64, 7)).unwrap_err().to_string();
        assert!(err.contains("arm64"), "{err}");
        let err = check_x64(&version(0, 7)).unwrap_err().to_string();
        assert!(err.contains("0x0000"), "{err}");
    }
}
