//! The business part's routes, setting and metric, served by the real
//! `app` binary on loopback. Replacing `app/src/service/`, replace this
//! file with the tests of your routes.

mod support;

use support::*;

#[test]
fn the_greeter_greets_with_its_setting_and_counts_the_names() {
    let mut command = app_command();
    command.env("APP__SERVICE__GREETING", "Hej");
    let service = Service::start(command);

    let root = service.get("/");
    assert_eq!(root.status, 200, "{root:?}");
    // The service is named after its binary, the package's name.
    let name = env!("CARGO_PKG_NAME");
    assert_eq!(root.json()["service"], name);
    assert_eq!(root.json()["message"], format!("Hej from {name}"));
    assert_eq!(root.json()["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(root.header("content-type"), Some("application/json"));

    let greet = request(
        service.addr,
        "POST /greet HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"name\":\"Ada\"}",
    );
    assert_eq!(
        (greet.status, greet.json()["message"].as_str()),
        (200, Some("Hej, Ada!"))
    );
    let metrics = service.get("/metrics").body;
    assert!(metrics.contains("greetings_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("http_requests_total{method=\"POST\",route=\"/greet\",status=\"200\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_bad_greeting_setting_names_its_key_and_source() {
    for (variable, value, expected) in [
        ("APP__SERVICE__GREETING", " ", "service.greeting is empty"),
        (
            "APP__SERVICE__GRETING",
            "Hej",
            "APP__SERVICE__GRETING: unknown field `greting`",
        ),
    ] {
        let output = app_command()
            .env(variable, value)
            .args(["config", "check"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(expected), "{variable}: {stderr}");
    }
    let shown = app_command().args(["config", "show"]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("\ngreeting = \"Hello\"\n"), "{shown}");
}
