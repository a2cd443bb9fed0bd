//! `cargo xtask`: every build, test and release step of this workspace, in
//! Rust. The tasks are the `xtask-lib` library's (`xtask/lib/`); this
//! binary runs its command line.

fn main() -> std::process::ExitCode {
    xtask_lib::main()
}
