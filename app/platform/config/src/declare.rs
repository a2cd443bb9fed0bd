//! How a setting is declared once. `settings!` takes each section's keys
//! with their type, default and doc comment, and writes from that list the
//! section's struct, its layer (what one file or variable may set, every
//! key optional, unknown keys refused), how a layer lands on the value
//! below, `config show`'s lines, and the entry in `DECLARED` that the
//! reference page is written from. A type a setting may have implements
//! `Value`: how a layer spells it and how `config show` prints it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::{
    LogFormat, LogLevel, RequestLog, Sampler, WorkerCount, format_duration, parse_duration,
};

/// One declared setting, as the reference page lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The TOML table it lives in, e.g. `server`.
    pub section: &'static str,
    /// Its key in that table, e.g. `drain_timeout`.
    pub key: &'static str,
    /// What it takes, e.g. `a duration: 250ms, 5s, 2m, 1h`.
    pub takes: &'static str,
    /// Its doc comment, one line per source line.
    pub doc: &'static str,
}

impl Declared {
    /// The environment variable that sets it, e.g. `APP__SERVER__LISTEN`.
    pub fn variable(&self) -> String {
        crate::env_name(self.section, self.key)
    }

    /// The doc comment as one paragraph.
    pub fn description(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A type a setting may have.
pub(crate) trait Value: Sized {
    /// What one layer holds for it: the value, or part of it (a host alone
    /// for `server.listen`).
    type Layer: DeserializeOwned;
    /// What it takes, in words, for the reference.
    const TAKES: &'static str;
    /// Puts a layer's value over this one.
    fn merge(&mut self, layer: Self::Layer);
    /// The value as TOML text, as `config show` prints it.
    fn show(&self) -> String;
}

/// A JSON string, which is a valid TOML basic string.
pub(crate) fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A value read from its TOML or variable text by a parser of ours: the
/// layer type of the types serde does not read the way a setting spells
/// them (durations, counts in variables).
pub(crate) struct Parsed<T>(T);

/// A duration: a string with a unit in files and variables alike. A bare
/// number in a file is refused with the spelling that works.
impl<'de> Deserialize<'de> for Parsed<Duration> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Count::deserialize(deserializer)? {
            Count::Text(text) => parse_duration(&text).map(Parsed).map_err(D::Error::custom),
            Count::Number(number) => Err(D::Error::custom(format!(
                "invalid duration {number}: write it as a string with a unit, e.g. \"{number}s\""
            ))),
        }
    }
}

/// A count: a TOML integer in files, a string in environment variables
/// (which are all strings).
#[derive(Deserialize)]
#[serde(untagged)]
enum Count {
    Number(i64),
    Text(String),
}

impl Count {
    /// The count as a `usize`; `what` and `expected` name it in errors.
    fn value<E: serde::de::Error>(self, what: &str, expected: &str) -> Result<usize, E> {
        let number = match self {
            Count::Number(number) => number,
            Count::Text(text) => text
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("invalid {what} {text:?}: expected {expected}")))?,
        };
        usize::try_from(number)
            .map_err(|_| E::custom(format!("invalid {what} {number}: it cannot be negative")))
    }
}

impl<'de> Deserialize<'de> for Parsed<usize> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Count::deserialize(deserializer)?
            .value("count", "a whole number, e.g. 4096")
            .map(Parsed)
    }
}

impl Value for u32 {
    // Counts above u32's range are held at its top.
    type Layer = Parsed<usize>;
    const TAKES: &'static str = "a whole number";
    fn merge(&mut self, Parsed(value): Parsed<usize>) {
        *self = u32::try_from(value).unwrap_or(u32::MAX);
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// A flag: a TOML boolean in files, `true` or `false` in variables.
impl<'de> Deserialize<'de> for Parsed<bool> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Flag {
            Bool(bool),
            Text(String),
        }
        match Flag::deserialize(deserializer)? {
            Flag::Bool(flag) => Ok(Parsed(flag)),
            Flag::Text(text) => match text.trim() {
                "true" => Ok(Parsed(true)),
                "false" => Ok(Parsed(false)),
                other => Err(D::Error::custom(format!(
                    "invalid flag {other:?}: expected true or false"
                ))),
            },
        }
    }
}

/// A share from 0.0 to 1.0: a TOML number in files, its text in variables.
impl<'de> Deserialize<'de> for Parsed<f64> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Ratio {
            Float(f64),
            Integer(i64),
            Text(String),
        }
        match Ratio::deserialize(deserializer)? {
            Ratio::Float(ratio) => Ok(Parsed(ratio)),
            Ratio::Integer(ratio) => Ok(Parsed(ratio as f64)),
            Ratio::Text(text) => text.trim().parse().map(Parsed).map_err(|_| {
                D::Error::custom(format!(
                    "invalid ratio {text:?}: expected a number from 0.0 to 1.0, e.g. 0.01"
                ))
            }),
        }
    }
}

impl Value for String {
    type Layer = String;
    const TAKES: &'static str = "a string";
    fn merge(&mut self, layer: String) {
        *self = layer;
    }
    fn show(&self) -> String {
        quoted(self)
    }
}

/// `server.workers`: `"auto"`, or a count as `Parsed<usize>` reads it.
impl<'de> Deserialize<'de> for Parsed<WorkerCount> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Count::deserialize(deserializer)? {
            Count::Text(text) if text.trim() == "auto" => Ok(Parsed(WorkerCount::Auto)),
            count => count
                .value(
                    "worker count",
                    "\"auto\" (one per CPU) or a whole number, e.g. 2",
                )
                .map(|count| Parsed(WorkerCount::Count(count))),
        }
    }
}

/// `server.listen`: an address with its port, or a host alone, which keeps
/// the port of the layer below (so that the port is written once, in
/// base.toml).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listen {
    Address(SocketAddr),
    Host(std::net::IpAddr),
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(address) = text.parse() {
            return Ok(Listen::Address(address));
        }
        text.parse().map(Listen::Host).map_err(|_| {
            D::Error::custom(format!(
                "`{text}` is neither an address with a port (127.0.0.1:8080, [::1]:8080) nor a host (0.0.0.0)"
            ))
        })
    }
}

impl Value for SocketAddr {
    type Layer = Listen;
    const TAKES: &'static str = "an address with a port, or a host alone";
    fn merge(&mut self, layer: Listen) {
        match layer {
            Listen::Address(address) => *self = address,
            Listen::Host(host) => self.set_ip(host),
        }
    }
    fn show(&self) -> String {
        quoted(&self.to_string())
    }
}

/// The types a layer sets whole, read by our own parsers (`Parsed`):
/// `Type: "what it takes", |value| its TOML text`.
macro_rules! parsed_values {
    ($($Type:ty: $takes:literal, |$value:ident| $show:expr),* $(,)?) => {$(
        impl Value for $Type {
            type Layer = Parsed<$Type>;
            const TAKES: &'static str = $takes;
            fn merge(&mut self, Parsed(value): Parsed<$Type>) {
                *self = value;
            }
            fn show(&self) -> String {
                let $value = self;
                $show
            }
        }
    )*};
}

parsed_values! {
    Duration: "a duration: 250ms, 5s, 2m, 1h", |value| quoted(&format_duration(*value)),
    usize: "a whole number", |value| value.to_string(),
    bool: "true or false", |value| value.to_string(),
    f64: "a number", |value| format!("{value:?}"),
    WorkerCount: "\"auto\" or a whole number", |value| match value {
        WorkerCount::Auto => quoted("auto"),
        WorkerCount::Count(count) => count.to_string(),
    },
}

/// The enumerations: serde reads them by name, `config show` prints the
/// name.
macro_rules! named_values {
    ($($Type:ty: $takes:literal),* $(,)?) => {$(
        impl Value for $Type {
            type Layer = $Type;
            const TAKES: &'static str = $takes;
            fn merge(&mut self, layer: $Type) {
                *self = layer;
            }
            fn show(&self) -> String {
                quoted(self.name())
            }
        }
    )*};
}

named_values! {
    LogFormat: "text or json",
    LogLevel: "error, warn, info, debug or trace",
    RequestLog: "all, errors or off",
    Sampler: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
}

/// Declares the settings of each section once: `key: Type = default,`
/// under its doc comment. See the module's header for what it writes.
macro_rules! settings {
    ($(
        $(#[doc = $section_doc:literal])*
        [$section:ident] $Section:ident, $Layer:ident {
            $(
                $(#[doc = $doc:literal])+
                $key:ident: $Type:ty = $default:expr,
            )+
        }
    )+) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone)]
            pub struct $Section {
                $( $(#[doc = $doc])+ pub $key: $Type, )+
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section { $( $key: $default, )+ }
                }
            }

            /// What one layer sets of the section; absent keys leave the
            /// value below alone.
            #[derive(Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $Layer {
                $(
                    #[serde(default)]
                    $key: Option<<$Type as $crate::declare::Value>::Layer>,
                )+
            }

            impl $Section {
                fn merge(&mut self, layer: $Layer) {
                    $(
                        if let Some(value) = layer.$key {
                            $crate::declare::Value::merge(&mut self.$key, value);
                        }
                    )+
                }

                /// The section as TOML, as `config show` prints it.
                fn show(&self) -> String {
                    let mut text = concat!("[", stringify!($section), "]\n").to_owned();
                    $(
                        text.push_str(concat!(stringify!($key), " = "));
                        text.push_str(&$crate::declare::Value::show(&self.$key));
                        text.push('\n');
                    )+
                    text
                }
            }
        )+

        /// Every setting declared with `settings!`, in declaration order.
        pub const DECLARED: &[$crate::declare::Declared] = &[$($(
            $crate::declare::Declared {
                section: stringify!($section),
                key: stringify!($key),
                takes: <$Type as $crate::declare::Value>::TAKES,
                doc: concat!($($doc, "\n"),+),
            },
        )+)+];
    };
}

pub(crate) use settings;
