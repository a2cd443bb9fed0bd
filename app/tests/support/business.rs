//! What the platform's tests need from the business part, in one place: a
//! route to request, and a route that reads a body with a body it accepts
//! (request timeouts on slow bodies, requests in flight across a stop).
//! Replacing `app/src/service/`, point these at routes of yours.

/// A route that reads a JSON body, and a body it answers 200 to.
pub const BODY_ROUTE: &str = "/greet";
pub const BODY: &str = r#"{"name":"Ada"}"#;
