//! The release machinery every stage shares: the build pipeline and the
//! checks of what it built (`binfmt`, `linkage`), SBOMs, image assembly and
//! registries, systemd units, Prometheus alerts and rules (`alerts`), Debian packages and their apt repository
//! (`deb`, `apt`), and the signatures (`seal`, `provenance`,
//! `cosign`, `checks`). The tasks of `release/`, `develop/` and `deploy/`
//! are thin over it; it imports only the core.

pub mod alerts;
pub mod apt;
pub mod binfmt;
pub mod checks;
pub mod cosign;
pub mod deb;
pub mod linkage;
pub mod oci;
pub mod pipeline;
pub mod provenance;
pub mod registry;
pub mod rpm;
pub mod sbom;
pub mod seal;
pub mod units;
