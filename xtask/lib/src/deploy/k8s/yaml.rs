//! YAML for the Kubernetes manifests: written from `serde_json::Value`s
//! with `metadata`-first key order and comments, and read back (the files
//! a user edited, and our own in tests) into `serde_json::Value`s. Writing
//! is ours, because comments matter in files people edit; reading uses
//! yaml-rust2, a YAML 1.2 parser.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One YAML document: `comment` lines (without `#`) above `value`.
pub struct Document<'a> {
    pub comment: &'a str,
    pub value: &'a Value,
}

/// A YAML stream of `documents`, separated by `---`.
pub fn to_string(documents: &[Document]) -> String {
    let mut out = String::new();
    for (index, document) in documents.iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        for line in document.comment.lines() {
            out.push_str(if line.is_empty() { "#" } else { "# " });
            out.push_str(line);
            out.push('\n');
        }
        write_block(&mut out, document.value, 0);
    }
    out
}

/// Keys Kubernetes users expect first; the rest follow in sorted order.
const FIRST_KEYS: [&str; 8] = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
];

fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(key, _)| {
        (
            FIRST_KEYS
                .iter()
                .position(|first| first == key)
                .unwrap_or(FIRST_KEYS.len()),
            key.as_str(),
        )
    });
    entries
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// Writes a map or list at `indent`, each entry on lines of its own.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in ordered(map) {
                out.push_str(&pad);
                write_entry(out, key, item, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                write_item(out, item, indent + 2);
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&scalar_text(scalar, indent));
            out.push('\n');
        }
    }
}

/// `key: value`, the cursor already indented.
fn write_entry(out: &mut String, key: &str, value: &Value, indent: usize) {
    out.push_str(&quote(key));
    out.push(':');
    match value {
        Value::Object(_) if is_block(value) => {
            out.push('\n');
            write_block(out, value, indent + 2);
        }
        // Lists under a key are not indented further: the usual
        // Kubernetes style.
        Value::Array(_) if is_block(value) => {
            out.push('\n');
            write_block(out, value, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, indent + 2));
            out.push('\n');
        }
    }
}

/// A list item after its `- `: a map's first entry shares the line.
fn write_item(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let pad = " ".repeat(indent);
            for (index, (key, item)) in ordered(map).into_iter().enumerate() {
                if index > 0 {
                    out.push_str(&pad);
                }
                write_entry(out, key, item, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_block(out, value, indent);
        }
        scalar => {
            out.push_str(&scalar_text(scalar, indent));
            out.push('\n');
        }
    }
}

/// A scalar (or empty collection) on the current line; multi-line strings
/// become literal blocks indented to `indent`.
fn scalar_text(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        Value::String(text) if literal_block_fits(text) => {
            let chomp = if text.ends_with('\n') { "" } else { "-" };
            let pad = " ".repeat(indent);
            let mut block = format!("|{chomp}");
            for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                block.push('\n');
                if !line.is_empty() {
                    block.push_str(&pad);
                    block.push_str(line);
                }
            }
            block
        }
        Value::String(text) => quote(text),
    }
}

/// Multi-line text that a literal block keeps byte for byte: at most one
/// final newline, no leading space on the first line, no trailing spaces,
/// no carriage returns.
fn literal_block_fits(text: &str) -> bool {
    text.contains('\n')
        && !text.ends_with("\n\n")
        && !text.starts_with([' ', '\n'])
        && !text.contains('\r')
        && text.lines().all(|line| !line.ends_with([' ', '\t']))
}

/// A string as a plain scalar when YAML reads it back as the same string,
/// else double-quoted (JSON's escapes are YAML's).
pub fn quote(text: &str) -> String {
    let plain_char = |c: char| c.is_ascii_alphanumeric() || "-_./:@+=~,".contains(c);
    let reserved = [
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes",
        "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N",
    ];
    let looks_numeric = text.parse::<f64>().is_ok()
        || text.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+' || c == '-');
    let plain = text.chars().all(plain_char)
        && !reserved.contains(&text)
        && !looks_numeric
        && !text.starts_with(['-', ':', '~', '@', ',', '='])
        && !text.ends_with(':')
        && !text.contains(": ");
    if plain {
        text.to_owned()
    } else {
        serde_json::to_string(text).expect("a string serializes")
    }
}

/// Every document of a YAML stream, as JSON values; empty documents are
/// skipped.
pub fn parse(text: &str) -> Result<Vec<Value>> {
    let documents = yaml_rust2::YamlLoader::load_from_str(text).context("parse YAML")?;
    documents
        .iter()
        .filter(|document| !document.is_null())
        .map(to_json)
        .collect()
}

fn to_json(yaml: &yaml_rust2::Yaml) -> Result<Value> {
    use yaml_rust2::Yaml;
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(flag) => Value::Bool(*flag),
        Yaml::Integer(number) => Value::from(*number),
        Yaml::Real(text) => {
            let number: f64 = text
                .parse()
                .with_context(|| format!("`{text}` is not a number"))?;
            serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
        }
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_>>()?),
        Yaml::Hash(map) => {
            let mut object = serde_json::Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(text) => text.clone(),
                    Yaml::Integer(number) => number.to_string(),
                    Yaml::Boolean(flag) => flag.to_string(),
                    other => bail!("a map key that is not a string: {other:?}"),
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
        Yaml::Alias(_) => bail!("YAML aliases are not supported in manifests"),
        Yaml::BadValue => bail!("a value YAML could not read"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_yaml_reads_back_as_the_same_values() {
        let values = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config",
                   "annotations": {"checksum/config": "abc", "prometheus.io/port": "8080"}},
                   "data": {"base.toml": "[server]\nlisten = \"0.0.0.0:8080\"\n\n# x\n", "no-newline": "a\nb"}}),
            json!({"spec": {"containers": [{"name": "app", "args": ["--config-dir", "/etc/app"],
                   "ports": [{"containerPort": 8080, "name": "http"}], "env": []}],
                   "empty": {}, "nested": [[1, 2], []], "flags": [true, false, null, 1.5]}}),
            json!({"strings": ["true", "no", "8080", "1e3", "-x", "a: b", "a #b", " lead", "trail ",
                   "", "~", "*", "&a", "!tag", "%x", "@x", "`x", "{x", "[x", "x]", "x,y", "'q'",
                   "\"q\"", "tab\there", "line\r\nbreak", "two\n\n", "0x10", ".5", "0o7", "sha256:abc",
                   "ghcr.io/example/app@sha256:0123", "100m", "64Mi", "é", "#x"]}),
        ];
        for value in values {
            let text = to_string(&[Document {
                comment: "a comment\n\nand more",
                value: &value,
            }]);
            let parsed = parse(&text).unwrap_or_else(|err| panic!("{err:#}\n{text}"));
            assert_eq!(parsed, std::slice::from_ref(&value), "\n{text}");
        }
    }

    #[test]
    fn kubernetes_keys_come_first_and_lists_sit_under_their_key() {
        let value = json!({"spec": {"replicas": 2}, "kind": "Deployment", "apiVersion": "apps/v1",
                           "metadata": {"name": "app"}, "items": [{"b": 1, "a": 2}]});
        assert_eq!(
            to_string(&[Document {
                comment: "",
                value: &value
            }]),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 2\n\
             items:\n- a: 2\n  b: 1\n"
        );
    }

    #[test]
    fn streams_hold_several_documents_and_bad_yaml_is_an_error() {
        let (first, second) = (json!({"a": 1}), json!({"b": [1]}));
        let text = to_string(&[
            Document {
                comment: "",
                value: &first,
            },
            Document {
                comment: "x",
                value: &second,
            },
        ]);
        assert_eq!(parse(&text).unwrap(), [first, second]);
        assert!(parse("a: [1, 2").is_err());
    }
}
