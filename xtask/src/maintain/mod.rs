//! The tasks that keep a machine able to run the others: `setup`, `doctor`
//! and `clean`.

pub mod clean;
pub mod doctor;
pub mod setup;
