//! The business part's own tests: its routes behind the platform's request
//! layer, its setting and its metric.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::{Greeter, Settings};
use platform::Started;

async fn call(started: &Started<Greeter>, request: Request<Body>) -> (StatusCode, String) {
    let response = started.router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn greet(body: &str) -> Request<Body> {
    Request::post("/greet")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn root_says_hello_with_the_configured_greeting() {
    let started = Started::<Greeter>::new(
        platform::package!(),
        Settings {
            greeting: "Hej".to_owned(),
        },
    )
    .unwrap();
    let (status, body) = call(&started, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["message"],
        format!("Hej from {}", env!("CARGO_BIN_NAME"))
    );
    assert_eq!(answer["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn greet_greets_a_name_and_counts_it() {
    let started = Started::<Greeter>::new(platform::package!(), Settings::default()).unwrap();
    let (status, body) = call(&started, greet(r#"{"name":" Ada "}"#)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"message":"Hello, Ada!"}"#)
    );
    let (status, body) = call(&started, greet(r#"{"name":""}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = call(&started, greet(r#"{"nom":"Ada"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        started.metrics_text().contains("greetings_total 1\n"),
        "{}",
        started.metrics_text()
    );
}

#[test]
fn an_empty_greeting_is_refused_with_the_key() {
    let refused = Started::<Greeter>::new(
        platform::package!(),
        Settings {
            greeting: " ".to_owned(),
        },
    );
    assert!(refused.is_err_and(|err| err.starts_with("greeting is empty")));
}
