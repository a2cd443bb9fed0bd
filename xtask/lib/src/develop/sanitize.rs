//! `cargo xtask sanitize`: the unsafe code the service ships (the
//! allocator cache in front of musl's `malloc` and the assembly `memcpy`)
//! checked by the tools the Rust community trusts, on this machine's gnu
//! target with a pinned nightly (`rustup::NIGHTLY`):
//!
//! - Miri over the allocator cache's tests (undefined behaviour, use after
//!   free, data races, leaks), with their rounds scaled down under
//!   `cfg(miri)`; the copy is assembly, which Miri cannot run;
//! - AddressSanitizer and ThreadSanitizer over the tests of both, each with
//!   a standard library built instrumented (`-Zbuild-std`).
//!
//! The checks build the crate `app/unsafe` (`UNSAFE_CRATE`), which
//! compiles the service's two files and nothing else, so that an
//! instrumented build is the standard library and those files, not the
//! whole service.
//!
//! Each runs in a target directory of its own under `target/sanitize/`, so
//! that the instrumented builds never mix with the normal ones. `ci` runs
//! it as a step.

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::exec::Ctx;
use crate::rustup::{self, NIGHTLY};

#[derive(clap::Args, Debug)]
pub struct Sanitize {
    /// Run only this check; repeatable [default: all three]
    #[arg(long, value_enum, value_name = "CHECK")]
    only: Vec<Check>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Miri over the allocator cache's tests
    Miri,
    /// AddressSanitizer over the cache's and the copy's tests
    Address,
    /// ThreadSanitizer over the cache's and the copy's tests
    Thread,
}

const ALL: [Check; 3] = [Check::Miri, Check::Address, Check::Thread];

/// The package that holds the service's unsafe code alone (`app/unsafe`).
const UNSAFE_CRATE: &str = "platform-unsafe";
/// Where the template keeps it.
const UNSAFE_CRATE_DIR: &str = "app/unsafe";

/// The test modules of the unsafe code, as test-name filters of that
/// package's library.
const ALLOCATOR_TESTS: &str = "thread_cache::";
const COPY_TESTS: &str = "memcpy::";

/// Left out under ThreadSanitizer: by the last round of pthread-key
/// destructors its runtime has already finished the thread, and any
/// instrumented access then crashes inside the runtime (a SEGV in TSan, not
/// in the cache). AddressSanitizer runs it.
const NOT_UNDER_TSAN: &str = "thread_cache::tests::a_first_free_in_the_last_destructor_round";

/// The host target the checks build for: Miri and the sanitizers support
/// it, and `-Zbuild-std` needs the target named.
const HOST_GNU: &str = "x86_64-unknown-linux-gnu";

impl Sanitize {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::signing::refuse_project_code_with_secrets("`sanitize`")?;
        if !has_unsafe_crate(ctx) {
            bail!(
                "no {UNSAFE_CRATE} crate in this workspace ({UNSAFE_CRATE_DIR}/): the unsafe code that ships is the platform's, and `sanitize` runs in the libraries' repository"
            );
        }
        let checks = if self.only.is_empty() {
            ALL.to_vec()
        } else {
            self.only
        };
        rustup::ensure_nightly(ctx)?;
        for check in checks {
            run_check(ctx, check)?;
        }
        Ok(())
    }
}

/// `sanitize` with every check, as `ci` runs it: nothing to do in a
/// project that takes the platform by tag (its unsafe code is checked
/// where the platform is built).
pub fn all(ctx: &Ctx) -> Result<()> {
    if !has_unsafe_crate(ctx) {
        eprintln!(
            "sanitize: no {UNSAFE_CRATE} in this workspace: the unsafe code that ships is the platform's, checked in the libraries' own CI"
        );
        return Ok(());
    }
    Sanitize { only: Vec::new() }.run(ctx)
}

fn has_unsafe_crate(ctx: &Ctx) -> bool {
    ctx.project
        .root
        .join(UNSAFE_CRATE_DIR)
        .join("Cargo.toml")
        .is_file()
}

fn run_check(ctx: &Ctx, check: Check) -> Result<()> {
    let sh = &ctx.sh;
    let toolchain = format!("+{NIGHTLY}");
    let target_dir = ctx.project.target_dir.join("sanitize");
    match check {
        Check::Miri => {
            let target_dir = target_dir.join("miri");
            ctx.run(cmd!(
                sh,
                "cargo {toolchain} miri test --package {UNSAFE_CRATE} --lib --target-dir {target_dir} -- {ALLOCATOR_TESTS}"
            ))
            .context("Miri found a problem in the allocator cache (see its report above)")
        }
        Check::Address | Check::Thread => {
            let (name, label, skip) = match check {
                Check::Address => ("address", "AddressSanitizer", None),
                _ => (
                    "thread",
                    "ThreadSanitizer",
                    Some(["--skip", NOT_UNDER_TSAN]),
                ),
            };
            let skip = skip.iter().flatten();
            let flags = format!("-Zsanitizer={name}");
            let _rustflags = sh.push_env("RUSTFLAGS", &flags);
            let _rustdocflags = sh.push_env("RUSTDOCFLAGS", &flags);
            let target_dir = target_dir.join(name);
            ctx.run(cmd!(
                sh,
                "cargo {toolchain} test -Zbuild-std --target {HOST_GNU} --package {UNSAFE_CRATE} --lib --target-dir {target_dir} -- {ALLOCATOR_TESTS} {COPY_TESTS} {skip...}"
            ))
            .with_context(|| format!("{label} found a problem (see its report above)"))
        }
    }
}
