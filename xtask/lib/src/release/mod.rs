//! The release stage's tasks: `dist`, `release` (one machine, or split over
//! runners and merged: `parts`), `image`, `package` (Debian), `apt-repo`, `publish`, `keygen`, `sign`,
//! `verify`, `units` and `version` (the stamp releases carry), each thin
//! over `artifacts/`.

pub mod apt_repo;
pub mod dist;
pub mod image;
pub mod keygen;
pub mod package;
pub mod parts;
pub mod publish;
pub mod sign;
pub mod units;
pub mod verify;
pub mod version;
