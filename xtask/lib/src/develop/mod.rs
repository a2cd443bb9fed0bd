//! The tasks of the edit-compile-test loop: `build`, `run`, `dev`, `test`,
//! `lint`, `sanitize`, `fuzz` and `bench`.

pub mod bench;
pub mod build;
pub mod docs;
pub mod fuzz;
pub mod layering;
pub mod lint;
pub mod run;
pub mod sanitize;
pub mod stress;
pub mod test;
