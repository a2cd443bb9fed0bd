//! The tasks that keep a machine able to run the others (`setup`, `doctor`,
//! `clean`) and a project on the libraries' newest release (`new`,
//! `update`).

pub mod adopt;
pub mod clean;
pub mod doctor;
mod host_tree;
pub mod setup;
