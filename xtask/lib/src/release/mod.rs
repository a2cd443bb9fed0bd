//! The release stage: `dist`, `release` (one machine, or split over runners
//! and merged), `image`, `publish`, and what they are made of (SBOMs,
//! binary checks, the memcpy linkage check, systemd units, the registry
//! client).

pub mod binfmt;
pub mod cosign;
pub mod dist;
pub mod image;
pub mod keygen;
pub mod linkage;
pub mod oci;
pub mod parts;
pub mod pipeline;
pub mod provenance;
pub mod publish;
pub mod registry;
pub mod sbom;
pub mod sign;
pub mod units;
pub mod verify;
