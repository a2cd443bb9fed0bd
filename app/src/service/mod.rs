//! The business part: what a team that adopts this template replaces with
//! its own. It reaches the platform (the `platform` crate) only through
//! the crate's root: `Service`, `Setup`, `Router` (see
//! `platform/src/lib.rs`).
//!
//! The example greets: `GET /` says hello, `POST /greet` greets a name and
//! counts the greetings (`greetings_total` on `/metrics`), and the greeting
//! is a setting (`service.greeting`, or `APP__SERVICE__GREETING`).

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use platform::{Router, Service, Setup};

/// The keys of `[service]` besides `name`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The word `GET /` and `POST /greet` greet with.
    pub greeting: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            greeting: "Hello".to_owned(),
        }
    }
}

pub struct Greeter {
    greeting: String,
    /// The answer of `GET /`, which depends only on settings, serialized
    /// once.
    root: Bytes,
    greeted: Counter,
}

impl Service for Greeter {
    type Settings = Settings;

    fn new(settings: Settings, setup: &mut Setup<'_>) -> Result<Greeter, String> {
        if settings.greeting.trim().is_empty() {
            return Err("greeting is empty: set it to a word, e.g. \"Hello\"".to_owned());
        }
        let root = serde_json::to_vec(&Root {
            service: setup.service_name(),
            version: setup.version(),
            message: &format!("{} from {}", settings.greeting, setup.service_name()),
        })
        .expect("the answer serializes");
        let greeted = Counter::default();
        setup.register("greetings", "Names greeted by POST /greet", greeted.clone());
        Ok(Greeter {
            greeting: settings.greeting,
            root: root.into(),
            greeted,
        })
    }

    fn routes(self: &Arc<Self>) -> Router {
        // Each worker gets a copy of its own of what requests touch (its
        // own `Arc`, its own `Bytes`), so that no reference count a request
        // takes is shared between CPUs: a shared one cost 10% of `GET /`.
        let mine = Arc::new(Greeter {
            greeting: self.greeting.clone(),
            root: Bytes::copy_from_slice(&self.root),
            greeted: self.greeted.clone(),
        });
        // The handlers capture it rather than take a `State<Arc<Greeter>>`:
        // a router with a state of its own would bring a second copy of
        // axum's routing into the binary (15 KB).
        let (for_root, for_greet) = (mine.clone(), mine);
        Router::new()
            .route("/", get(move || root(for_root.clone())))
            .route("/greet", post(move |body| greet(for_greet.clone(), body)))
    }
}

#[derive(Serialize)]
struct Root<'a> {
    service: &'a str,
    version: &'a str,
    message: &'a str,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

async fn root(greeter: Arc<Greeter>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], greeter.root.clone()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetRequest {
    name: String,
}

#[derive(Serialize)]
struct GreetResponse {
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

async fn greet(greeter: Arc<Greeter>, Json(request): Json<GreetRequest>) -> Response {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        let error = ErrorBody {
            error: "name must be 1 to 100 characters",
        };
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response();
    }
    greeter.greeted.inc();
    let message = format!("{}, {name}!", greeter.greeting);
    Json(GreetResponse { message }).into_response()
}
