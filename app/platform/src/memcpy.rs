//! `memcpy` for the x86_64 musl build (what `dist` ships for x86_64).
//!
//! musl's x86_64 `memcpy` copies everything of 8 bytes or more with
//! `rep movsq`, whose start-up costs tens of cycles, and the rest byte by
//! byte. The request path makes many small copies (each piece of a log
//! line, hyper's header buffers, and every move of a request or response
//! struct past 128 bytes, which the compiler turns into a `memcpy` call),
//! so on the musl build `memcpy` was the largest single function in the
//! profile. This one, in the manner of glibc's and LLVM's small-copy
//! paths, copies up to 256 bytes with a few overlapping loads and stores
//! (SSE2, which every x86_64 has) and leaves longer copies to `rep movsb`,
//! which is fast for them on every x86_64 since Ivy Bridge.
//!
//! In the musl build it is linked as `memcpy` and as `__memcpy_fwd`, the
//! name musl's `memmove` calls for a copy that may run forwards, so that
//! musl's own `memcpy` is not linked at all. It reads every byte of the
//! source before writing any that could overlap it, which is what a
//! forward `memmove` needs. Elsewhere it is only `app_memcpy`, for tests.

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl app_memcpy",
    ".hidden app_memcpy",
    ".type app_memcpy,@function",
    "app_memcpy:",
    // A leaf that never touches the stack: the call frame's rule needs no
    // change, but without one, profilers cannot unwind through it.
    ".cfi_startproc",
    "mov rax, rdi",
    "cmp rdx, 16",
    "ja 20f",
    "cmp rdx, 8",
    "jb 52f",
    // 8..=16 bytes: two overlapping 8-byte moves.
    "mov rcx, [rsi]",
    "mov r8, [rsi + rdx - 8]",
    "mov [rdi], rcx",
    "mov [rdi + rdx - 8], r8",
    "ret",
    "52:",
    "cmp rdx, 4",
    "jb 53f",
    // 4..=7 bytes: two overlapping 4-byte moves.
    "mov ecx, [rsi]",
    "mov r8d, [rsi + rdx - 4]",
    "mov [rdi], ecx",
    "mov [rdi + rdx - 4], r8d",
    "ret",
    "53:",
    "test rdx, rdx",
    "je 54f",
    // 1..=3 bytes: the first, the middle (or first) and the last byte.
    "movzx ecx, byte ptr [rsi]",
    "mov r9, rdx",
    "shr r9, 1",
    "movzx r10d, byte ptr [rsi + r9]",
    "movzx r8d, byte ptr [rsi + rdx - 1]",
    "mov [rdi], cl",
    "mov [rdi + r9], r10b",
    "mov [rdi + rdx - 1], r8b",
    "54:",
    "ret",
    "20:",
    "cmp rdx, 32",
    "ja 30f",
    // 17..=32 bytes: two overlapping 16-byte moves.
    "movups xmm0, [rsi]",
    "movups xmm1, [rsi + rdx - 16]",
    "movups [rdi], xmm0",
    "movups [rdi + rdx - 16], xmm1",
    "ret",
    "30:",
    "cmp rdx, 256",
    "ja 40f",
    // 33..=256 bytes: the last 32 bytes are read first, then 32-byte
    // blocks from the start while they end before the last 32, then the
    // last 32 are written.
    "movups xmm2, [rsi + rdx - 32]",
    "movups xmm3, [rsi + rdx - 16]",
    "lea rcx, [rdx - 32]",
    "xor r8d, r8d",
    "31:",
    "movups xmm0, [rsi + r8]",
    "movups xmm1, [rsi + r8 + 16]",
    "movups [rdi + r8], xmm0",
    "movups [rdi + r8 + 16], xmm1",
    "add r8, 32",
    "cmp r8, rcx",
    "jb 31b",
    "movups [rdi + rdx - 32], xmm2",
    "movups [rdi + rdx - 16], xmm3",
    "ret",
    "40:",
    // Longer: the CPU's own string copy, forwards.
    "mov rcx, rdx",
    "rep movsb",
    "ret",
    ".cfi_endproc",
    ".size app_memcpy, . - app_memcpy",
);

#[cfg(all(target_arch = "x86_64", target_env = "musl", not(test)))]
std::arch::global_asm!(
    ".globl memcpy",
    ".type memcpy,@function",
    ".set memcpy, app_memcpy",
    ".globl __memcpy_fwd",
    ".hidden __memcpy_fwd",
    ".type __memcpy_fwd,@function",
    ".set __memcpy_fwd, app_memcpy",
);

// Not under Miri, which cannot run assembly; the sanitizers run these.
#[cfg(all(test, target_arch = "x86_64", not(miri)))]
mod tests {
    unsafe extern "C" {
        fn app_memcpy(destination: *mut u8, source: *const u8, length: usize) -> *mut u8;
    }

    /// Every length up to a few blocks past the 256-byte switch, at every
    /// alignment of source and destination within 16 bytes: exactly the
    /// bytes asked for are copied, and none around them is touched.
    #[test]
    fn copies_exactly_the_bytes_asked_for_at_every_length_and_alignment() {
        let source: Vec<u8> = (0..1_200u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut destination = vec![0u8; 1_200];
        for length in (0..=300).chain([511, 512, 513, 1_000]) {
            for source_offset in 0..16 {
                for destination_offset in [0, 1, 3, 8, 15] {
                    destination.fill(0xEE);
                    let from = &source[source_offset..source_offset + length];
                    // SAFETY: both ranges are inside their vectors and apart.
                    let returned = unsafe {
                        app_memcpy(
                            destination.as_mut_ptr().add(destination_offset),
                            from.as_ptr(),
                            length,
                        )
                    };
                    assert_eq!(returned, destination[destination_offset..].as_mut_ptr());
                    let copied = &destination[destination_offset..destination_offset + length];
                    assert_eq!(
                        copied, from,
                        "length {length}, offsets {source_offset}/{destination_offset}"
                    );
                    assert!(destination[..destination_offset].iter().all(|b| *b == 0xEE));
                    assert!(
                        destination[destination_offset + length..]
                            .iter()
                            .all(|b| *b == 0xEE)
                    );
                }
            }
        }
    }

    /// As musl's `memmove` uses it: the destination before the source,
    /// overlapping it; the result is the source as it was before the copy.
    /// Every distance at every length up to past the 256-byte switch.
    #[test]
    fn copies_forwards_over_an_overlapping_source_after_the_destination() {
        for length in (0..=300).chain([700]) {
            let distances: Vec<usize> = if length <= 300 {
                (1..=length + 1).collect()
            } else {
                vec![1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 100, 255, 256, 257]
            };
            for distance in distances {
                let mut buffer: Vec<u8> =
                    (0..length + distance).map(|i| (i * 13 + 5) as u8).collect();
                let expected = buffer[distance..].to_vec();
                // SAFETY: both ranges lie in `buffer`; the destination is
                // below the source, the case a forward copy must handle.
                unsafe { app_memcpy(buffer.as_mut_ptr(), buffer.as_ptr().add(distance), length) };
                assert_eq!(
                    &buffer[..length],
                    &expected[..],
                    "length {length}, distance {distance}"
                );
            }
        }
    }

    /// Neither end is passed by a single byte, read or write: the source
    /// ends (or starts) right at a page that may not be touched, and so
    /// does the destination, at every length to 2048. A stray access is a
    /// SIGSEGV, which fails the test.
    #[test]
    fn never_touches_a_byte_outside_either_range() {
        const PAGE: usize = 4096;
        // Two usable pages each for source and destination, each pair
        // between inaccessible pages: [guard][source x2][guard][dest x2][guard].
        let total = PAGE * 7;
        // SAFETY: a fresh private anonymous mapping; it is unmapped at the end.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        for guard in [0, 3, 6] {
            // SAFETY: the pages lie in the mapping made above.
            let protected =
                unsafe { libc::mprotect(base.add(guard * PAGE).cast(), PAGE, libc::PROT_NONE) };
            assert_eq!(protected, 0);
        }
        // SAFETY: every pointer below stays within the two usable pages of
        // its range; only `app_memcpy` could stray, which is the test.
        unsafe {
            let (source_start, source_end) = (base.add(PAGE), base.add(3 * PAGE));
            let (destination_start, destination_end) = (base.add(4 * PAGE), base.add(6 * PAGE));
            for i in 0..2 * PAGE {
                *source_start.add(i) = (i * 31 + 7) as u8;
            }
            for length in 0..=2048 {
                // Both ranges against the guard after them, then both
                // against the guard before them.
                for (source, destination) in [
                    (source_end.sub(length), destination_end.sub(length)),
                    (source_start, destination_start),
                ] {
                    app_memcpy(destination, source, length);
                    assert_eq!(
                        std::slice::from_raw_parts(destination, length),
                        std::slice::from_raw_parts(source, length),
                        "length {length}"
                    );
                }
            }
            libc::munmap(base.cast(), total);
        }
    }
}
