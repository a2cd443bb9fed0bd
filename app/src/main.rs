//! The service this workspace ships: the business part (`service/`, yours
//! to replace) run by the platform (the `platform` crate, `platform/`),
//! which gives it the full production contract: layered config and
//! secrets, health and readiness, Prometheus metrics, request logs,
//! graceful shutdown and zero-downtime upgrades.

#[cfg(test)]
mod allocations;
mod service;

fn main() -> std::process::ExitCode {
    platform::main::<service::Greeter>(platform::package!())
}
