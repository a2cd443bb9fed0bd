//! The platform: everything a service built from this template keeps and
//! takes updates of (connections and their limits, workers, lifecycle,
//! zero-downtime upgrades, systemd, logs, metrics, configuration, the musl
//! allocator cache and `memcpy`).

pub mod build_info;
pub mod cli;
pub mod config;
pub mod connections;
pub mod http;
pub mod lifecycle;
pub mod logging;
#[cfg(all(target_arch = "x86_64", any(target_env = "musl", test)))]
pub mod memcpy;
pub mod metrics;
pub mod observe;
pub mod server;
pub mod systemd;
#[cfg(any(target_env = "musl", test))]
pub mod thread_cache;
pub mod upgrade;
pub mod workers;
