//! Slow end to end: adopting the workspace for another service. Renaming
//! the package and its binary (to `hello`) in a copy, and replacing the
//! business part (`app/src/service/`, its tests, and the routes the
//! platform's tests use) with another one, as README's "Make it your
//! service" says, gives `hello` archives and units, a binary that calls
//! itself `hello` and serves the new route, setting and metric, and the
//! platform's integration tests pass against that binary.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::*;

/// Another business part: one route that reads a body, one setting (a
/// count, so that the environment's text is read as a number), one metric.
const ORDERS: &str = r#"//! Orders: `POST /orders` accepts up to `service.max_count` items.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use platform::{Router, Service, Setup};

#[derive(Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub max_count: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { max_count: 3 }
    }
}

pub struct Orders {
    max_count: u32,
    accepted: Counter,
}

impl Service for Orders {
    type Settings = Settings;

    fn new(settings: Settings, setup: &mut Setup<'_>) -> Result<Orders, String> {
        if settings.max_count == 0 {
            return Err("max_count is 0: no order could be accepted; set it to e.g. 3".into());
        }
        let accepted = Counter::default();
        setup.register("orders_accepted", "Items accepted by POST /orders", accepted.clone());
        Ok(Orders { max_count: settings.max_count, accepted })
    }

    fn routes(self: &Arc<Self>) -> Router {
        // With a state of its own, as axum's guide writes it: an axum
        // router of any shape goes in whole.
        Router::from_axum(axum::Router::new().route("/orders", post(order)).with_state(self.clone()))
    }
}

#[derive(Deserialize)]
struct Order {
    item: String,
    count: u32,
}

#[derive(Serialize)]
struct Accepted {
    item: String,
    count: u32,
}

async fn order(State(orders): State<Arc<Orders>>, Json(order): Json<Order>) -> Response {
    if order.count == 0 || order.count > orders.max_count {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    orders.accepted.inc_by(u64::from(order.count));
    Json(Accepted { item: order.item, count: order.count }).into_response()
}
"#;

const ORDERS_ROUTES_FOR_THE_PLATFORM_TESTS: &str = r##"//! The routes of the business part the platform's tests use.
pub const BODY_ROUTE: &str = "/orders";
pub const BODY: &str = r#"{"item":"tea","count":2}"#;
"##;

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks `{from}`", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn slow_a_renamed_service_names_itself_everywhere() {
    let copy = copy_workspace();
    let root = copy.path();
    // The rename README describes: the package, the settings, the lock file.
    replace_in(
        &root.join("app/Cargo.toml"),
        "name = \"app\"",
        "name = \"hello\"",
    );
    let manifest = root.join("Cargo.toml");
    replace_in(&manifest, "package = \"app\"", "package = \"hello\"");
    replace_in(&manifest, "binary = \"app\"", "binary = \"hello\"");
    replace_in(
        &manifest,
        "image = \"ghcr.io/example/app\"",
        "image = \"ghcr.io/example/hello\"",
    );
    // The business part replaced: the folder, its tests, the line in
    // main.rs that names it, the routes the platform's tests use.
    let service = root.join("app/src/service");
    fs::remove_dir_all(&service).unwrap();
    fs::create_dir(&service).unwrap();
    fs::write(service.join("mod.rs"), ORDERS).unwrap();
    replace_in(
        &root.join("app/src/main.rs"),
        "service::Greeter",
        "service::Orders",
    );
    replace_in(
        &root.join("app/src/allocations.rs"),
        "use crate::service::Greeter;",
        "use crate::service::Orders as Greeter;",
    );
    fs::remove_file(root.join("app/tests/greeter.rs")).unwrap();
    fs::write(
        root.join("app/tests/support/business.rs"),
        ORDERS_ROUTES_FOR_THE_PLATFORM_TESTS,
    )
    .unwrap();
    replace_in(
        &root.join("config/base.toml"),
        "greeting = \"Hello\"",
        "max_count = 5",
    );
    // And another port, in the one place it lives.
    replace_in(
        &root.join("config/base.toml"),
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:9191\"",
    );
    stdout_of(
        Command::new(env!("CARGO"))
            .args(["update", "--workspace", "--offline"])
            .current_dir(root),
    );
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "--message", "hello"]);

    // A target directory kept between local runs, so a rerun builds
    // incrementally; the copy's own path is part of the build flags.
    let target_dir = workspace_root().join("target/test-builds/renamed");
    stdout_of(
        xtask(root)
            .args(["dist", "--target", "x86_64"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let dist = target_dir.join("dist");
    let archive = dist.join("hello-0.1.0-x86_64-unknown-linux-musl.tar.gz");
    assert!(archive.is_file(), "no {}", archive.display());
    let listing = stdout_of(Command::new("tar").arg("-tzf").arg(&archive));
    for expected in [
        "hello-0.1.0-x86_64-unknown-linux-musl/hello",
        "hello-0.1.0-x86_64-unknown-linux-musl/units/hello.service",
        "hello-0.1.0-x86_64-unknown-linux-musl/units/hello.socket",
    ] {
        assert!(
            listing.lines().any(|line| line == expected),
            "{expected} not in:\n{listing}"
        );
    }

    let binary = dist.join("x86_64-unknown-linux-musl/hello");
    let version = stdout_of(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("hello 0.1.0 ("), "{version}");
    let help = stdout_of(Command::new(&binary).arg("--help"));
    assert!(help.starts_with("Usage: hello "), "{help}");
    let config = stdout_of(
        Command::new(&binary)
            .args(["config", "show"])
            .current_dir(root)
            .env_remove("APP_ENV"),
    );
    assert!(config.contains("name = \"hello\""), "{config}");
    assert!(config.contains("max_count = 5"), "{config}");
    assert!(config.contains("listen = \"127.0.0.1:9191\""), "{config}");
    let prod = stdout_of(
        Command::new(&binary)
            .args(["config", "show"])
            .current_dir(root)
            .env("APP_ENV", "prod"),
    );
    assert!(prod.contains("listen = \"0.0.0.0:9191\""), "{prod}");
    let archived_socket = stdout_of(
        Command::new("tar")
            .arg("-xzOf")
            .arg(&archive)
            .arg("hello-0.1.0-x86_64-unknown-linux-musl/units/hello.socket"),
    );
    assert!(
        archived_socket.contains("\nListenStream=9191\n"),
        "{archived_socket}"
    );
    let guide = stdout_of(
        Command::new("tar")
            .arg("-xzOf")
            .arg(&archive)
            .arg("hello-0.1.0-x86_64-unknown-linux-musl/OPERATING.md"),
    );
    assert!(
        guide.starts_with("# Operating hello\n")
            && guide.contains("systemctl reload hello")
            && guide.contains("app_upgrades_failed_total"),
        "{guide}"
    );

    // The new route, setting and metric, served by the shipped binary.
    let mut command = Command::new(&binary);
    command.env("APP__SERVICE__MAX_COUNT", "2");
    let served = RunningApp::start(command, &root.join("config"));
    let accepted = served.post("/orders", r#"{"item":"tea","count":2}"#);
    assert!(accepted.starts_with("HTTP/1.1 200"), "{accepted}");
    let refused = served.post("/orders", r#"{"item":"tea","count":3}"#);
    assert!(
        refused.starts_with("HTTP/1.1 422"),
        "the setting applies: {refused}"
    );
    let metrics = served.get("/metrics");
    assert!(metrics.contains("orders_accepted_total 2\n"), "{metrics}");
    assert!(
        served.get("/").starts_with("HTTP/1.1 404"),
        "the greeter is gone"
    );
    drop(served);

    // The platform's integration tests, against the shipped binary.
    stdout_of(
        xtask(root)
            .args(["test", "--app-binary"])
            .arg(&binary)
            .args(["--package", "hello", "--test", "*"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );

    // Outputs outside the copy, which must stay a clean tree.
    let outputs = TempDir::new().unwrap();
    let units = outputs.path().join("units");
    stdout_of(xtask(root).arg("units").arg("--out").arg(&units));
    let service = fs::read_to_string(units.join("hello.service")).unwrap();
    assert!(
        service
            .contains("ExecStart=/opt/hello/current/hello --config-dir /opt/hello/current/config"),
        "{service}"
    );
    let socket = fs::read_to_string(units.join("hello.socket")).unwrap();
    assert!(socket.contains("\nListenStream=9191\n"), "{socket}");
    let supervisor = fs::read_to_string(units.join("hello.supervisor.conf")).unwrap();
    assert!(supervisor.contains("--listen 0.0.0.0:9191"), "{supervisor}");

    // The image's config, the Kubernetes objects and the deploy proof
    // follow the port too.
    stdout_of(
        xtask(root)
            .args(["image", "--target", "x86_64"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let exposed = fs::read_dir(dist.join("image/blobs/sha256"))
        .unwrap()
        .map(|blob| fs::read(blob.unwrap().path()).unwrap())
        .filter(|bytes| bytes.windows(12).any(|window| window == b"ExposedPorts"))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<Vec<_>>();
    assert_eq!(exposed.len(), 1, "one image config");
    assert!(exposed[0].contains("\"9191/tcp\""), "{}", exposed[0]);
    stdout_of(xtask(root).arg("k8s").env("CARGO_TARGET_DIR", &target_dir));
    let objects = fs::read_to_string(dist.join("k8s/prod.yaml")).unwrap();
    for expected in [
        "containerPort: 9191",
        "port: 9191",
        "value: \"0.0.0.0:9191\"",
    ] {
        assert!(objects.contains(expected), "no `{expected}` in:\n{objects}");
    }
    let deploy_root = outputs.path().join("deploy-root");
    let dry_deploy = output(
        xtask(root)
            .args(["--dry-run", "deploy", "--root"])
            .arg(&deploy_root)
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    assert!(
        stderr_text(&dry_deploy).contains("would wait for 127.0.0.1:9191 to answer /readyz"),
        "{}",
        stderr_text(&dry_deploy)
    );
}
