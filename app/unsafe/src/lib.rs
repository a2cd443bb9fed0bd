//! The service's unsafe code, on its own: the allocator cache
//! (`app/platform/src/thread_cache.rs`) and the assembly `memcpy`
//! (`app/platform/src/memcpy.rs`), the very files the service compiles,
//! included by path rather than copied.
//!
//! `cargo xtask sanitize` runs Miri, AddressSanitizer and ThreadSanitizer
//! over this crate's tests. Built alone, with no dependency, each
//! instrumented build compiles these two files and the standard library
//! instead of the whole service (tokio, hyper, axum and the rest), which
//! none of the checked code calls. The service builds them as its own
//! modules in the musl builds it ships; their tests run here only.

#[path = "../../platform/src/thread_cache.rs"]
pub mod thread_cache;

#[cfg(target_arch = "x86_64")]
#[path = "../../platform/src/memcpy.rs"]
pub mod memcpy;
