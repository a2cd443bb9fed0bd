//! Checks a built binary from its header against the target it was built
//! for: ELF (machine, and static or dynamic by the presence of an
//! interpreter), Mach-O (CPU type) and PE (machine). A binary linked for the
//! wrong architecture, or a "static" build that needs a dynamic loader,
//! fails here instead of on a user's machine.

use anyhow::{Result, bail};

use crate::targets::{Arch, Libc, Os, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Elf {
        arch: Option<Arch>,
        machine: u16,
        dynamic: bool,
    },
    MachO {
        arch: Option<Arch>,
        cpu_type: u32,
    },
    Pe {
        arch: Option<Arch>,
        machine: u16,
    },
}

impl Format {
    pub fn describe(&self) -> String {
        let arch = |arch: &Option<Arch>| match arch {
            Some(Arch::X86_64) => "x86-64".to_owned(),
            Some(Arch::Aarch64) => "aarch64".to_owned(),
            None => "an unknown architecture".to_owned(),
        };
        match self {
            Format::Elf {
                arch: a, dynamic, ..
            } => {
                format!(
                    "{} ELF for {}",
                    if *dynamic {
                        "a dynamically linked"
                    } else {
                        "a static"
                    },
                    arch(a)
                )
            }
            Format::MachO { arch: a, .. } => format!("a Mach-O binary for {}", arch(a)),
            Format::Pe { arch: a, .. } => format!("a PE (Windows) binary for {}", arch(a)),
        }
    }
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
const MACHO_MAGIC_64: [u8; 4] = [0xcf, 0xfa, 0xed, 0xfe];
const PT_INTERP: u32 = 3;

/// Reads the format and architecture of an executable from its first bytes.
pub fn inspect(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(ELF_MAGIC) {
        return inspect_elf(bytes);
    }
    if bytes.starts_with(&MACHO_MAGIC_64) {
        let cpu_type = read_u32(bytes, 4)?;
        let arch = match cpu_type {
            0x0100_0007 => Some(Arch::X86_64),
            0x0100_000c => Some(Arch::Aarch64),
            _ => None,
        };
        return Ok(Format::MachO { arch, cpu_type });
    }
    if bytes.starts_with(b"MZ") {
        let pe_offset = read_u32(bytes, 0x3c)? as usize;
        if bytes.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0") {
            bail!("an MZ header without a PE signature");
        }
        let machine = read_u16(bytes, pe_offset + 4)?;
        let arch = match machine {
            0x8664 => Some(Arch::X86_64),
            0xaa64 => Some(Arch::Aarch64),
            _ => None,
        };
        return Ok(Format::Pe { arch, machine });
    }
    bail!("not an executable this tool knows (ELF, Mach-O 64-bit or PE)")
}

fn inspect_elf(bytes: &[u8]) -> Result<Format> {
    // 64-bit little-endian only: every target this workspace builds is.
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("an ELF file that is not 64-bit little-endian");
    }
    let machine = read_u16(bytes, 0x12)?;
    let arch = match machine {
        0x3e => Some(Arch::X86_64),
        0xb7 => Some(Arch::Aarch64),
        _ => None,
    };
    let header_offset = read_u64(bytes, 0x20)? as usize;
    let header_size = read_u16(bytes, 0x36)? as usize;
    let header_count = read_u16(bytes, 0x38)? as usize;
    let mut dynamic = false;
    for index in 0..header_count {
        if read_u32(bytes, header_offset + index * header_size)? == PT_INTERP {
            dynamic = true;
        }
    }
    Ok(Format::Elf {
        arch,
        machine,
        dynamic,
    })
}

/// Checks that `bytes` is what `target` should produce.
pub fn verify(target: &Target, bytes: &[u8]) -> Result<Format> {
    let format = inspect(bytes)?;
    let expected_arch = Some(target.arch);
    let matches = match (&format, target.os) {
        (Format::Elf { arch, dynamic, .. }, Os::Linux) => {
            *arch == expected_arch && *dynamic == (target.libc == Libc::Gnu)
        }
        (Format::MachO { arch, .. }, Os::Darwin) => *arch == expected_arch,
        (Format::Pe { arch, .. }, Os::Windows) => *arch == expected_arch,
        _ => false,
    };
    if !matches {
        let expected = match (target.os, target.libc) {
            (Os::Linux, Libc::Musl) => "a static ELF",
            (Os::Linux, _) => "a dynamically linked ELF",
            (Os::Darwin, _) => "a Mach-O binary",
            (Os::Windows, _) => "a PE binary",
        };
        bail!(
            "expected {expected} for {}, found {}",
            target.triple,
            format.describe()
        );
    }
    Ok(format)
}

/// Sets the `TimeDateStamp` of a PE file's COFF header, which linkers fill
/// with the wall-clock time of the link. Executables (unlike drivers) carry
/// no header checksum to update; a nonzero one is refused rather than left
/// wrong.
pub fn set_pe_timestamp(bytes: &mut [u8], epoch: u64) -> Result<()> {
    let Format::Pe { .. } = inspect(bytes)? else {
        bail!("not a PE file")
    };
    let pe_offset = read_u32(bytes, 0x3c)? as usize;
    let timestamp_at = pe_offset + 8;
    // The optional header follows the 24-byte signature and COFF header;
    // its CheckSum is at offset 64 in both PE32 and PE32+.
    let checksum_at = pe_offset + 24 + 64;
    if read_u32(bytes, checksum_at)? != 0 {
        bail!("the PE header has a checksum, which would need recomputing");
    }
    let seconds = u32::try_from(epoch).unwrap_or(u32::MAX);
    bytes[timestamp_at..timestamp_at + 4].copy_from_slice(&seconds.to_le_bytes());
    Ok(())
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(field(bytes, at)?))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(field(bytes, at)?))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(field(bytes, at)?))
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    match bytes.get(at..at + N) {
        Some(slice) => Ok(slice.try_into().expect("the slice has N bytes")),
        None => bail!("truncated header: {} bytes, needed {}", bytes.len(), at + N),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header with one program header of type `program_type`.
    fn elf(machine: u16, program_type: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40 + 0x38];
        bytes[..4].copy_from_slice(ELF_MAGIC);
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(&program_type.to_le_bytes());
        bytes
    }

    fn macho(cpu_type: u32) -> Vec<u8> {
        let mut bytes = MACHO_MAGIC_64.to_vec();
        bytes.extend(cpu_type.to_le_bytes());
        bytes.extend([0; 24]);
        bytes
    }

    fn pe(machine: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x100];
        bytes[..2].copy_from_slice(b"MZ");
        bytes[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(b"PE\0\0");
        bytes[0x44..0x46].copy_from_slice(&machine.to_le_bytes());
        bytes
    }

    fn check(triple: &str, bytes: &[u8], expected: Result<(), &str>) {
        let target = Target::parse(triple).unwrap();
        match (verify(&target, bytes), expected) {
            (Ok(_), Ok(())) => {}
            (Err(actual), Err(expected)) => {
                assert!(
                    actual.to_string().contains(expected),
                    "{triple}: `{actual}` lacks `{expected}`"
                )
            }
            (actual, expected) => panic!("{triple}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn headers_are_checked_against_the_target() {
        const LOAD: u32 = 1;
        check("x86_64-unknown-linux-musl", &elf(0x3e, LOAD), Ok(()));
        check("aarch64-unknown-linux-musl", &elf(0xb7, LOAD), Ok(()));
        check("aarch64-unknown-linux-gnu", &elf(0xb7, PT_INTERP), Ok(()));
        check(
            "aarch64-unknown-linux-musl",
            &elf(0x3e, LOAD),
            Err("found a static ELF for x86-64"),
        );
        check(
            "x86_64-unknown-linux-musl",
            &elf(0x3e, PT_INTERP),
            Err(
                "expected a static ELF for x86_64-unknown-linux-musl, found a dynamically linked ELF",
            ),
        );
        check("x86_64-apple-darwin", &macho(0x0100_0007), Ok(()));
        check("aarch64-apple-darwin", &macho(0x0100_000c), Ok(()));
        check(
            "aarch64-apple-darwin",
            &macho(0x0100_0007),
            Err("found a Mach-O binary for x86-64"),
        );
        check("x86_64-pc-windows-gnu", &pe(0x8664), Ok(()));
        check(
            "x86_64-pc-windows-gnu",
            &pe(0xaa64),
            Err("found a PE (Windows) binary for aarch64"),
        );
        check(
            "x86_64-pc-windows-gnu",
            &elf(0x3e, LOAD),
            Err("expected a PE binary"),
        );
        check(
            "x86_64-unknown-linux-musl",
            b"#!/bin/sh\n",
            Err("not an executable"),
        );
        check(
            "x86_64-unknown-linux-musl",
            &elf(0x3e, LOAD)[..0x30],
            Err("truncated header"),
        );
    }

    #[test]
    fn pe_timestamps_are_replaced_and_checksummed_files_refused() {
        let mut bytes = pe(0x8664);
        bytes[0x48..0x4c].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        set_pe_timestamp(&mut bytes, 1_706_929_506).unwrap();
        assert_eq!(read_u32(&bytes, 0x48).unwrap(), 1_706_929_506);
        bytes[0x40 + 24 + 64] = 1;
        assert!(
            set_pe_timestamp(&mut bytes, 0)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        assert!(set_pe_timestamp(&mut elf(0x3e, 1), 0).is_err());
    }

    #[test]
    fn this_test_binary_is_a_dynamic_elf_for_this_machine() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let Format::Elf { arch, dynamic, .. } = inspect(&bytes).unwrap() else {
            panic!("not ELF")
        };
        assert_eq!(
            arch,
            Some(if cfg!(target_arch = "aarch64") {
                Arch::Aarch64
            } else {
                Arch::X86_64
            })
        );
        assert!(
            dynamic,
            "a test binary for a -gnu host links glibc dynamically"
        );
    }
}
