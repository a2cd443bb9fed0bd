//! Entry points for the fuzz targets (`xtask/fuzz/`, run by `cargo xtask
//! fuzz`) and for the replay of their seeds in the tests: each reads
//! arbitrary bytes as the platform reads what comes from outside (a
//! request's `traceparent`, the config files and the environment), and
//! panics only when an invariant breaks, or when the parser itself does.

/// A `traceparent` header: what is accepted is a trace id and a parent id
/// that are not zero, spelt by the header's own (lowercase) digits.
pub fn traceparent(data: &[u8]) {
    let Some((trace, parent, flags)) = crate::traces::parse_traceparent(data) else {
        return;
    };
    assert!(
        trace != [0; 16] && parent != [0; 8],
        "an id of zeros accepted"
    );
    let spelt = |from: usize, bytes: &[u8]| {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        data[from..from + hex.len()] == *hex.as_bytes()
    };
    assert!(
        spelt(3, &trace) && spelt(36, &parent) && spelt(53, &[flags]),
        "the ids read are not the header's digits: {data:?}"
    );
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
