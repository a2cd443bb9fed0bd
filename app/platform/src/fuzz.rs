//! Entry points for the fuzz targets (`xtask/fuzz/`, run by `cargo xtask
//! fuzz`) and for the replay of their seeds in the tests: each reads
//! arbitrary bytes as the platform reads what comes from outside (a
//! request's `traceparent` and `tracestate`, the config files and the
//! environment), and
//! panics only when an invariant breaks, or when the parser itself does.

/// A request's trace context: a `traceparent` value, then optionally a
/// line break and a `tracestate` value. What is accepted of the
/// `traceparent` is a trace id and a parent id that are not zero, spelt by
/// the header's own (lowercase) digits, and the span continues that trace;
/// a `tracestate` is passed on only beside a valid `traceparent`, within
/// the W3C length limit and of printable characters.
pub fn traceparent(data: &[u8]) {
    let (parent_bytes, state_bytes) = match data.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let parsed = crate::traces::parse_traceparent(parent_bytes);
    if let Some((trace, parent, flags)) = parsed {
        assert!(
            trace != [0; 16] && parent != [0; 8],
            "an id of zeros accepted"
        );
        let spelt = |from: usize, bytes: &[u8]| {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            parent_bytes[from..from + hex.len()] == *hex.as_bytes()
        };
        assert!(
            spelt(3, &trace) && spelt(36, &parent) && spelt(53, &[flags]),
            "the ids read are not the header's digits: {parent_bytes:?}"
        );
    }
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [
        (crate::traces::TRACEPARENT, Some(parent_bytes)),
        (crate::traces::TRACESTATE, state_bytes),
    ] {
        if let Some(Ok(value)) = value.map(axum::http::HeaderValue::from_bytes) {
            headers.insert(name, value);
        }
    }
    let mut settings = crate::config::Settings::defaults(crate::config::Env::Dev).tracing;
    settings.ratio = 1.0;
    let span = crate::traces::start(&settings, &headers);
    let continued = headers
        .contains_key(crate::traces::TRACEPARENT)
        .then_some(parsed)
        .flatten();
    match continued {
        Some((trace, parent, _)) => {
            assert_eq!(span.trace_id, trace, "the span left the caller's trace");
            assert_eq!(span.parent, Some(parent));
        }
        None => assert!(span.parent.is_none() && span.tracestate.is_none()),
    }
    if let Some(state) = &span.tracestate {
        assert!(state.len() <= crate::traces::TRACESTATE_LIMIT);
        assert!(
            state
                .as_bytes()
                .iter()
                .all(|byte| (0x20..0x7f).contains(byte))
        );
    }
}

/// A config file and the environment: the text up to a line `---` is a
/// `base.toml`, each line after it a `NAME=value` variable. Settings that
/// load show as TOML that reads back.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, variables) = text.split_once("\n---\n").unwrap_or((text, ""));
    if let Ok(settings) = crate::config::from_text_and_variables(file, variables) {
        let shown = settings.to_redacted_toml();
        if let Err(err) = shown.parse::<toml::Table>() {
            panic!("config show is not TOML ({err}):\n{shown}");
        }
    }
}
