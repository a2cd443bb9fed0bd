//! The tasks of the edit-compile-test loop: `build`, `test`, `lint`, `ci`,
//! `version` and `bench`.

pub mod bench;
pub mod build;
pub mod ci;
pub mod layering;
pub mod lint;
pub mod test;
pub mod version;
