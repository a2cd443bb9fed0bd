//! Checks that the x86_64 musl binary copies memory with the service's own
//! `memcpy` (`app/platform/src/memcpy.rs`), as the shipped build must: its
//! speed depends on it, and nothing else would notice if a toolchain or musl
//! update stopped linking it, or linked musl's beside it.
//!
//! The shipped binary is stripped, so the check reads machine code, not
//! symbols: the routine's first instructions appear exactly once; musl's
//! own `memcpy` (`mov %rdi,%rax; cmp $8,%rdx; jc`) does not appear; musl's
//! `memmove` (`mov %rdi,%rax; sub %rsi,%rax; cmp %rdx,%rax; jae
//! __memcpy_fwd`) jumps to ours for its forward copies; and direct calls
//! reach it. Offsets in one file and one segment differ as the addresses
//! do, so no section needs to be found.

use anyhow::{Result, bail};

/// Machine code as hex bytes, `??` for any byte.
type Pattern = &'static str;

/// `mov rax, rdi; cmp rdx, 16; ja …; cmp rdx, 8; jb …`: the first
/// instructions of `app_memcpy`.
const OURS: Pattern = "48 89 f8 48 83 fa 10 77 ?? 48 83 fa 08 72";

/// musl's x86_64 `memcpy`: `mov rax, rdi; cmp rdx, 8; jc …`.
const MUSL_MEMCPY: Pattern = "48 89 f8 48 83 fa 08 72";

/// musl's x86_64 `memmove` up to its `jae __memcpy_fwd` (rel32 form):
/// `mov rax, rdi; sub rax, rsi; cmp rax, rdx; jae rel32`.
const MUSL_MEMMOVE: Pattern = "48 89 f8 48 29 f0 48 39 d0 0f 83";

/// Fewer direct calls than this would mean the compiler's copies no
/// longer reach the routine (the shipped binary has hundreds).
const MIN_CALLS: usize = 10;

fn parse(pattern: Pattern) -> Vec<Option<u8>> {
    pattern
        .split_whitespace()
        .map(|byte| {
            (byte != "??")
                .then(|| u8::from_str_radix(byte, 16).expect("a pattern is hex bytes or ??"))
        })
        .collect()
}

fn find(bytes: &[u8], pattern: Pattern) -> Vec<usize> {
    let pattern = parse(pattern);
    if bytes.len() < pattern.len() {
        return Vec::new();
    }
    (0..=bytes.len() - pattern.len())
        .filter(|&at| {
            pattern
                .iter()
                .zip(&bytes[at..])
                .all(|(want, byte)| want.is_none_or(|want| want == *byte))
        })
        .collect()
}

/// Where the rel32 at `rel_at` points (relative to the end of its four
/// bytes).
fn rel32_target(bytes: &[u8], rel_at: usize) -> Option<usize> {
    let rel = i32::from_le_bytes(bytes.get(rel_at..rel_at + 4)?.try_into().ok()?);
    (rel_at + 4).checked_add_signed(rel as isize)
}

/// The offset of the service's `memcpy` in an x86_64 musl binary, after
/// checking that it is the binary's only one and that musl's `memmove` and
/// direct calls use it.
pub fn check_memcpy(bytes: &[u8]) -> Result<usize> {
    let fix =
        "(app/platform/src/memcpy.rs links it as memcpy and __memcpy_fwd in the x86_64 musl build)";
    let ours = match find(bytes, OURS)[..] {
        [one] => one,
        [] => bail!("the service's memcpy is not in the binary {fix}"),
        ref several => bail!(
            "the service's memcpy appears {} times, expected once {fix}",
            several.len()
        ),
    };
    if let Some(musl) = find(bytes, MUSL_MEMCPY).first() {
        bail!(
            "musl's own memcpy is linked (at offset {musl:#x}) beside the service's (at {ours:#x}) {fix}"
        );
    }
    let memmove = match find(bytes, MUSL_MEMMOVE)[..] {
        [one] => one,
        ref found => bail!(
            "musl's memmove was found {} times, expected once: the check no longer knows this musl",
            found.len()
        ),
    };
    let forward = rel32_target(bytes, memmove + parse(MUSL_MEMMOVE).len());
    if forward != Some(ours) {
        bail!(
            "musl's memmove copies forwards with the code at {}, not with the service's memcpy at {ours:#x} {fix}",
            forward.map_or("nowhere".to_owned(), |at| format!("{at:#x}"))
        );
    }
    let calls = (0..bytes.len().saturating_sub(5))
        .filter(|&at| bytes[at] == 0xe8 && rel32_target(bytes, at + 1) == Some(ours))
        .count();
    if calls < MIN_CALLS {
        bail!(
            "only {calls} direct calls reach the service's memcpy, expected at least {MIN_CALLS} {fix}"
        );
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up text: our routine at 0x40, musl's memmove jumping to it,
    /// and `calls` direct calls.
    fn text(memmove_target: usize, calls: usize, musl_too: bool) -> Vec<u8> {
        let mut bytes = vec![0x90u8; 0x400];
        let ours = [
            0x48, 0x89, 0xf8, 0x48, 0x83, 0xfa, 0x10, 0x77, 0x51, 0x48, 0x83, 0xfa, 0x08, 0x72,
        ];
        bytes[0x40..0x40 + ours.len()].copy_from_slice(&ours);
        let memmove = 0x100;
        let head = [
            0x48, 0x89, 0xf8, 0x48, 0x29, 0xf0, 0x48, 0x39, 0xd0, 0x0f, 0x83,
        ];
        bytes[memmove..memmove + head.len()].copy_from_slice(&head);
        let rel_at = memmove + head.len();
        let rel = memmove_target as i64 - (rel_at as i64 + 4);
        bytes[rel_at..rel_at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        for call in 0..calls {
            let at = 0x200 + call * 5;
            bytes[at] = 0xe8;
            let rel = 0x40 - (at as i64 + 5);
            bytes[at + 1..at + 5].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        if musl_too {
            bytes[0x380..0x388].copy_from_slice(&[0x48, 0x89, 0xf8, 0x48, 0x83, 0xfa, 0x08, 0x72]);
        }
        bytes
    }

    #[test]
    fn the_routine_is_found_and_every_failure_is_named() {
        assert_eq!(check_memcpy(&text(0x40, 20, false)).unwrap(), 0x40);
        let error = |bytes: Vec<u8>| check_memcpy(&bytes).unwrap_err().to_string();
        assert!(
            error(text(0x300, 20, false))
                .contains("memmove copies forwards with the code at 0x300")
        );
        assert!(error(text(0x40, 3, false)).contains("only 3 direct calls"));
        assert!(
            error(text(0x40, 20, true)).contains("musl's own memcpy is linked (at offset 0x380)")
        );
        assert!(error(vec![0x90; 64]).contains("the service's memcpy is not in the binary"));
    }
}
