//! The stamp and the dependency list, handed to this crate's compiler by
//! the platform's build script (see `platform-build`), where
//! `platform::package!()` reads them.

fn main() {
    platform_build::stamp();
}
