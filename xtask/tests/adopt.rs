//! Slow end to end: an adopter's project on the libraries, from
//! `cargo xtask new` to `cargo xtask update`. The libraries are published
//! as tags of a local git repository (a copy of this workspace): release N
//! is the tree under test, release N+1 changes a platform behaviour
//! (`/healthz` says more) and an xtask step (the socket unit's
//! description). The project is made at N, customised as an adopter would
//! (its name, a route, a middleware, a task of its own, another port),
//! then moved to N+1 with the documented command: the new behaviour is
//! there, the customisations are intact, only `Cargo.toml` and
//! `Cargo.lock` changed, and `dist`, `units` and the service's tests pass;
//! everything that ships (archive, guide, units, image, Kubernetes
//! objects, the deploy's proof) follows the adopter's name and port, and
//! the platform's contract tests pass against the adopter's binary.
//!
//! Cargo runs with a home of its own whose crates.io is a vendored copy of
//! the crates `Cargo.lock` names: nothing leaves the machine, and cargo's
//! caches are not touched.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::*;

const TAG_N: &str = "libraries-v0.1.0";
const TAG_NEXT: &str = "libraries-v0.2.0";

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks `{from}`", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// `cargo xtask …` in the adopter's project, as its developers run it.
fn cargo_xtask(project: &Path, cargo_home: &Path, target_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .arg("xtask")
        .current_dir(project)
        .env("CARGO_HOME", cargo_home)
        .env("CARGO_TARGET_DIR", target_dir)
        // Set by `cargo xtask ci` for the template's own tests.
        .env_remove("APP_TEST_BINARY");
    isolate_git(&mut command);
    command
}

/// Release N+1 of the libraries, committed and tagged in `upstream`.
fn release_next(upstream: &Path) {
    replace_in(
        &upstream.join("app/platform/src/state.rs"),
        r#"\"status\":\"ok\"}}""#,
        r#"\"status\":\"ok\",\"libraries\":\"0.2.0\"}}""#,
    );
    replace_in(
        &upstream.join("xtask/lib/src/artifacts/units.rs"),
        "Description={name} listening socket\n",
        "Description={name} listening socket (libraries 0.2.0)\n",
    );
    for (manifest, changelog, change) in [
        (
            "app/platform/Cargo.toml",
            "app/platform/CHANGELOG.md",
            "- `/healthz` names the libraries' release.",
        ),
        (
            "xtask/lib/Cargo.toml",
            "xtask/lib/CHANGELOG.md",
            "- The socket unit's description names the libraries' release.",
        ),
    ] {
        replace_in(
            &upstream.join(manifest),
            "\nversion = \"0.1.0\"\n",
            "\nversion = \"0.2.0\"\n",
        );
        replace_in(
            &upstream.join(changelog),
            "\n## 0.1.0",
            &format!("\n## 0.2.0\n\n{change}\n\n## 0.1.0"),
        );
    }
    git(
        upstream,
        &["commit", "--quiet", "--all", "--message", "0.2.0"],
    );
    git(upstream, &["tag", TAG_NEXT]);
}

/// The adopter's own changes: a route (an axum router with a state of its
/// own) and a middleware in the business part, a task in the xtask,
/// another port.
fn customise(project: &Path) {
    let service = project.join("app/src/service/mod.rs");
    replace_in(
        &service,
        "            .route(\"/greet\", post(move |body| greet(for_greet.clone(), body)))\n",
        "            .route(\"/greet\", post(move |body| greet(for_greet.clone(), body)))\n            .merge(Router::from_axum(axum::Router::new().route(\"/stock\", get(|axum::extract::State(count): axum::extract::State<u32>| async move { format!(\"{count} in stock\") })).with_state(12)))\n            .layer(axum::middleware::map_response(mark_the_shop))\n",
    );
    let text = fs::read_to_string(&service).unwrap();
    fs::write(
        &service,
        text + "\nasync fn mark_the_shop(mut response: Response) -> Response {\n    response.headers_mut().insert(\"x-shop\", HeaderValue::from_static(\"yes\"));\n    response\n}\n",
    )
    .unwrap();
    let xtask = project.join("xtask/src/main.rs");
    replace_in(
        &xtask,
        "enum Own {\n",
        "enum Own {\n    /// Count what is in stock\n    Stock,\n",
    );
    replace_in(
        &xtask,
        "            Own::Config { env } => show_config(ctx, &env),\n",
        "            Own::Config { env } => show_config(ctx, &env),\n            Own::Stock => {\n                println!(\"stock: 12\");\n                Ok(())\n            }\n",
    );
    // A second copy of axum's routing (`from_axum`) costs more than the
    // template's size budget allows: the adopter's own budget.
    replace_in(
        &xtask,
        "const BUDGET: u64 = 2_100_000;",
        "const BUDGET: u64 = 2_600_000;",
    );
    replace_in(
        &project.join("config/base.toml"),
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:9191\"",
    );
    stdout_of(
        Command::new(env!("CARGO"))
            .args(["fmt", "--all"])
            .current_dir(project),
    );
}

#[test]
fn slow_an_adopters_project_takes_the_next_libraries_without_a_merge() {
    // The libraries' repository, release N tagged.
    let upstream = repository();
    let upstream = upstream.path();
    git(upstream, &["tag", TAG_N]);

    let scratch = TempDir::new().unwrap();
    let cargo_home = scratch.path().join("cargo-home");
    let vendor = scratch.path().join("vendor");
    stdout_of(
        Command::new(env!("CARGO"))
            .args(["vendor", "--offline", "--locked", "--quiet"])
            .arg(&vendor)
            .current_dir(workspace_root()),
    );
    fs::create_dir_all(&cargo_home).unwrap();
    fs::write(
        cargo_home.join("config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"vendored\"\n[source.vendored]\ndirectory = \"{}\"\n",
            vendor.display()
        ),
    )
    .unwrap();
    // Kept between local runs: the commits are the same each time.
    let target_dir = workspace_root().join("target/test-builds/adopter");
    let libraries = format!("file://{}", upstream.display());

    // Made at N from the template's checkout.
    let project = scratch.path().join("shop");
    let made = output(
        xtask(upstream)
            .args([
                "new",
                "--name",
                "shop",
                "--libraries",
                &libraries,
                "--tag",
                TAG_N,
            ])
            .arg(&project)
            .env("CARGO_HOME", &cargo_home),
    );
    assert!(made.status.success(), "{}", stderr_text(&made));
    let manifest = fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!(
            "\nplatform = {{ git = \"{libraries}\", tag = \"{TAG_N}\" }}\n"
        )),
        "{manifest}"
    );
    for library_path in ["app/platform", "xtask/lib", "xtask/tests", "docs"] {
        assert!(
            !project.join(library_path).exists(),
            "{library_path} is the libraries', not the project's"
        );
    }
    customise(&project);
    git(&project, &["add", "--all"]);
    git(&project, &["commit", "--quiet", "--message", "the shop"]);

    release_next(upstream);
    let updated =
        output(cargo_xtask(&project, &cargo_home, &target_dir).args(["update", "--to", TAG_NEXT]));
    let said = String::from_utf8_lossy(&updated.stdout);
    assert!(
        updated.status.success(),
        "{said}\n{}",
        stderr_text(&updated)
    );
    for expected in [
        "platform 0.1.0 -> 0.2.0",
        "- `/healthz` names the libraries' release.",
        "xtask-lib 0.1.0 -> 0.2.0",
        "- The socket unit's description names the libraries' release.",
    ] {
        assert!(said.contains(expected), "no `{expected}` in:\n{said}");
    }
    assert!(!said.contains("## 0.1.0"), "only what is new: {said}");
    // Nothing of the adopter's was touched: no merge.
    let changed = git(&project, &["status", "--porcelain"]);
    assert_eq!(changed, "M Cargo.lock\n M Cargo.toml", "{changed}");
    let diff = git(&project, &["diff", "Cargo.toml"]);
    assert_eq!(
        diff.matches(&format!(
            "+platform = {{ git = \"{libraries}\", tag = \"{TAG_NEXT}\" }}"
        ))
        .count(),
        1,
        "{diff}"
    );
    git(
        &project,
        &["commit", "--quiet", "--all", "--message", "libraries 0.2.0"],
    );

    // The adopter's task, on the new xtask-lib.
    let stock = stdout_of(cargo_xtask(&project, &cargo_home, &target_dir).arg("stock"));
    assert_eq!(stock, "stock: 12\n");

    // The release: the new platform behaviour and the adopter's routes,
    // middleware and port in the shipped binary.
    let dist = output(
        cargo_xtask(&project, &cargo_home, &target_dir).args(["dist", "--target", "x86_64"]),
    );
    assert!(dist.status.success(), "{}", stderr_text(&dist));
    // The adopter's own check of the folder, with their budget.
    assert!(
        stderr_text(&dist).contains("checked x86_64-unknown-linux-musl/shop: ")
            && stderr_text(&dist).contains("within its 2600000-byte budget"),
        "{}",
        stderr_text(&dist)
    );
    let binary = target_dir.join("dist/x86_64-unknown-linux-musl/shop");
    let version = stdout_of(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("shop 0.1.0 ("), "{version}");
    let served = RunningApp::start(Command::new(&binary), &project.join("config"));
    let health = served.get("/healthz");
    assert!(health.contains("\"libraries\":\"0.2.0\""), "{health}");
    let stock = served.get("/stock");
    assert!(
        stock.starts_with("HTTP/1.1 200") && stock.ends_with("12 in stock"),
        "{stock}"
    );
    assert!(
        stock.to_ascii_lowercase().contains("\r\nx-shop: yes\r\n"),
        "{stock}"
    );
    let root = served.get("/");
    assert!(root.contains("\"message\":\"Hello from shop\""), "{root}");
    drop(served);
    let prod = stdout_of(
        Command::new(&binary)
            .args(["config", "show"])
            .current_dir(&project)
            .env("APP_ENV", "prod"),
    );
    assert!(prod.contains("listen = \"0.0.0.0:9191\""), "{prod}");

    // The archive and its operator's guide carry the adopter's name.
    let archive = target_dir.join("dist/shop-0.1.0-x86_64-unknown-linux-musl.tar.gz");
    let listing = stdout_of(Command::new("tar").arg("-tzf").arg(&archive));
    for expected in [
        "shop",
        "units/shop.service",
        "units/shop.socket",
        "OPERATING.md",
    ] {
        let entry = format!("shop-0.1.0-x86_64-unknown-linux-musl/{expected}");
        assert!(
            listing.lines().any(|line| line == entry),
            "no {entry} in:\n{listing}"
        );
    }
    let guide = stdout_of(
        Command::new("tar")
            .arg("-xzOf")
            .arg(&archive)
            .arg("shop-0.1.0-x86_64-unknown-linux-musl/OPERATING.md"),
    );
    assert!(
        guide.starts_with("# Operating shop\n")
            && guide.contains("systemctl reload shop")
            && guide.contains("app_upgrades_failed_total"),
        "{guide}"
    );

    // The platform's contract tests (the libraries' own, in this
    // workspace) pass against the adopter's binary.
    stdout_of(
        xtask(&workspace_root())
            .args(["test", "--app-binary"])
            .arg(&binary)
            .args(["--package", "app"])
            .args(["--test", "service", "--test", "limits", "--test", "systemd"])
            .args(["--test", "tracing", "--test", "upgrade"]),
    );

    // The image's config, the Kubernetes objects and the deploy proof
    // follow the adopter's port.
    stdout_of(
        cargo_xtask(&project, &cargo_home, &target_dir).args(["image", "--target", "x86_64"]),
    );
    let exposed = fs::read_dir(target_dir.join("dist/image/blobs/sha256"))
        .unwrap()
        .map(|blob| fs::read(blob.unwrap().path()).unwrap())
        .filter(|bytes| bytes.windows(12).any(|window| window == b"ExposedPorts"))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<Vec<_>>();
    assert_eq!(exposed.len(), 1, "one image config");
    assert!(exposed[0].contains("\"9191/tcp\""), "{}", exposed[0]);
    stdout_of(cargo_xtask(&project, &cargo_home, &target_dir).arg("k8s"));
    let objects = fs::read_to_string(target_dir.join("dist/k8s/prod.yaml")).unwrap();
    for expected in [
        "containerPort: 9191",
        "port: 9191",
        "value: \"0.0.0.0:9191\"",
    ] {
        assert!(objects.contains(expected), "no `{expected}` in:\n{objects}");
    }
    let dry_deploy = output(
        cargo_xtask(&project, &cargo_home, &target_dir)
            .args(["--dry-run", "deploy", "--root"])
            .arg(scratch.path().join("deploy-root")),
    );
    assert!(
        stderr_text(&dry_deploy).contains("would wait for 127.0.0.1:9191 to answer /readyz"),
        "{}",
        stderr_text(&dry_deploy)
    );

    // The new xtask step, with the adopter's name and port.
    let units = scratch.path().join("units");
    stdout_of(
        cargo_xtask(&project, &cargo_home, &target_dir)
            .args(["units", "--out"])
            .arg(&units),
    );
    let socket = fs::read_to_string(units.join("shop.socket")).unwrap();
    assert!(
        socket.contains("\nDescription=shop listening socket (libraries 0.2.0)\n")
            && socket.contains("\nListenStream=9191\n"),
        "{socket}"
    );

    // The service's own tests, on the new libraries.
    stdout_of(cargo_xtask(&project, &cargo_home, &target_dir).arg("test"));

    // The layering holds across the libraries' checkout: the business part
    // may not reach into the platform's inside.
    let service = project.join("app/src/service/mod.rs");
    let text = fs::read_to_string(&service).unwrap();
    fs::write(
        &service,
        format!("{text}\n#[allow(unused_imports)]\nuse platform::config::LogFormat;\n"),
    )
    .unwrap();
    let refused = output(cargo_xtask(&project, &cargo_home, &target_dir).arg("lint"));
    assert!(
        !refused.status.success()
            && stderr_text(&refused).contains(
                "service imports platform_config (business may import business, surface)"
            ),
        "{}",
        stderr_text(&refused)
    );
}
