//! The release stage's tasks: `dist`, `release` (one machine, or split over
//! runners and merged: `parts`), `image`, `publish`, `keygen`, `sign`,
//! `verify` and `units`, each thin over `artifacts/`.

pub mod dist;
pub mod image;
pub mod keygen;
pub mod parts;
pub mod publish;
pub mod sign;
pub mod units;
pub mod verify;
