//! The tasks that keep a machine able to run the others: `setup`, `doctor`
//! and `clean`.

pub mod clean;
pub mod doctor;
mod host_tree;
pub mod setup;
