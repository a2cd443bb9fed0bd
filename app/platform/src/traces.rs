//! Distributed tracing, the request side: W3C trace context in and out
//! (`traceparent`, `tracestate`), the sampler, and the server span each
//! request gets. `otlp.rs` exports the sampled spans.
//!
//! Each request with tracing on is a server span: the caller's trace id
//! (or a new random one when the request has no valid `traceparent`), a
//! new span id, and the caller's span as parent. The request's log line
//! carries `trace_id` and `span_id`, and the response a `traceresponse`
//! header (W3C Trace Context Level 2: the same fields as `traceparent`,
//! naming this span), so that a client can quote the trace it started.
//! With tracing off (`tracing.endpoint` empty), none of it runs: no header
//! is read or written and the request path allocates nothing more.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Sampler, Tracing};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The W3C limit a vendor must pass on; longer lists are dropped whole.
pub(crate) const TRACESTATE_LIMIT: usize = 512;

const SAMPLED: u8 = 0x01;

/// A request's place in a trace.
#[derive(Debug, Clone)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from its `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged when valid.
    pub tracestate: Option<HeaderValue>,
}

/// A `traceparent` header's trace id, parent span id and flags, or `None`
/// when it breaks the W3C rules (a new trace starts then).
pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55.
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        // Version 255 is invalid.
        0xff => return None,
        // Version 00 is exactly 55 characters.
        0x00 if value.len() != 55 => return None,
        // A later version may append fields after a dash; the first four
        // are read as version 00's.
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (index, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * index..5 + 2 * index])?;
    }
    let mut parent = [0u8; 8];
    for (index, byte) in parent.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * index..38 + 2 * index])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// Two lowercase hex digits (the W3C format allows no uppercase).
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    };
    Some(digit(digits[0])? << 4 | digit(digits[1])?)
}

/// A `tracestate` worth passing on: within the W3C length limit, of
/// printable characters, and every non-empty member a `key=value`.
fn acceptable_tracestate(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= TRACESTATE_LIMIT
        && bytes.iter().all(|byte| (0x20..0x7f).contains(byte))
        && value
            .to_str()
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|member| !member.is_empty())
                    .all(|member| {
                        member
                            .split_once('=')
                            .is_some_and(|(key, _)| !key.is_empty())
                    })
            })
            .unwrap_or(false)
}

/// The span of a request with these headers: the caller's trace when its
/// `traceparent` is valid, else a new one, sampled as `settings` says.
pub fn start(settings: &Tracing, headers: &HeaderMap) -> SpanContext {
    // More than one traceparent is invalid (W3C): a new trace starts.
    let mut parents = headers.get_all(TRACEPARENT).iter();
    let parent = match (parents.next(), parents.next()) {
        (Some(value), None) => parse_traceparent(value.as_bytes()),
        _ => None,
    };
    let span_id = random_span_id();
    match parent {
        Some((trace_id, parent, flags)) => {
            // Several tracestate headers are one list; only one is kept
            // without copying, which is what callers send.
            let mut states = headers.get_all(TRACESTATE).iter();
            let tracestate = match (states.next(), states.next()) {
                (Some(value), None) if acceptable_tracestate(value) => Some(value.clone()),
                _ => None,
            };
            SpanContext {
                sampled: sample(settings, Some(flags & SAMPLED != 0), &trace_id),
                trace_id,
                span_id,
                parent: Some(parent),
                tracestate,
            }
        }
        None => {
            let trace_id = random_trace_id();
            SpanContext {
                sampled: sample(settings, None, &trace_id),
                trace_id,
                span_id,
                parent: None,
                tracestate: None,
            }
        }
    }
}

/// The sampling decision: a parent-based sampler follows the caller's
/// flag; a ratio samples the traces whose id's last 7 bytes (the part
/// W3C Level 2 requires to be random) fall under `ratio` of their range,
/// so every service with the same ratio keeps the same traces.
pub fn sample(settings: &Tracing, parent_sampled: Option<bool>, trace_id: &[u8; 16]) -> bool {
    let by_ratio = || {
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&trace_id[9..]);
        let value = u64::from_be_bytes(low);
        (value as f64) < settings.ratio * (1u64 << 56) as f64
    };
    match (settings.sampler, parent_sampled) {
        (Sampler::AlwaysOn, _) => true,
        (Sampler::AlwaysOff, _) => false,
        (Sampler::Traceidratio, _) => by_ratio(),
        (
            Sampler::ParentbasedAlwaysOn
            | Sampler::ParentbasedAlwaysOff
            | Sampler::ParentbasedTraceidratio,
            Some(sampled),
        ) => sampled,
        (Sampler::ParentbasedAlwaysOn, None) => true,
        (Sampler::ParentbasedAlwaysOff, None) => false,
        (Sampler::ParentbasedTraceidratio, None) => by_ratio(),
    }
}

impl SpanContext {
    /// `traceresponse`'s value: version 00, this trace, this span, the
    /// decision.
    pub fn response_header(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        write_hex(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        write_hex(&[u8::from(self.sampled)], &mut text[53..55]);
        HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
    }
}

/// `bytes` as lowercase hex into `out` (twice as long).
pub fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// Hex text on the stack, for log fields and exemplars.
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    pub fn of(bytes: &[u8]) -> Hex<N> {
        let mut text = [0u8; N];
        write_hex(bytes, &mut text);
        Hex(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// A new trace id: 16 random bytes, never all zero.
pub fn random_trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next_random().to_be_bytes());
        id[8..].copy_from_slice(&next_random().to_be_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

/// A new span id: 8 random bytes, never all zero.
pub fn random_span_id() -> [u8; 8] {
    loop {
        let id = next_random().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A per-thread generator (wyrand), seeded from the standard library's
/// random hasher keys and the thread's number: no lock, no system call per
/// id, and no two threads or processes on one sequence. Ids need to be
/// unique and unpredictable enough to sample on, not secret.
fn next_random() -> u64 {
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            RandomState::new().hash_one((THREADS.fetch_add(1, Ordering::Relaxed), std::process::id())),
        );
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(next);
        let product = u128::from(next) * u128::from(next ^ 0xe703_7ed1_a0b4_28db);
        (product as u64) ^ ((product >> 64) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resource_attributes;

    fn settings(sampler: Sampler, ratio: f64) -> Tracing {
        let mut tracing = crate::test_settings().tracing;
        tracing.sampler = sampler;
        tracing.ratio = ratio;
        tracing
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        let id = |text: &str| parse_traceparent(text.as_bytes());
        let (trace, parent, flags) = id(VALID).unwrap();
        assert_eq!(
            Hex::<32>::of(&trace).as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(Hex::<16>::of(&parent).as_str(), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        for (text, valid, why) in [
            (VALID, true, "the specification's example"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
                "not sampled",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
                true,
                "unknown flags are kept",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
                true,
                "a later version with more fields",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
                "a later version, same fields",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                false,
                "version 00 with more",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                false,
                "a later version without the dash",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
                "version ff",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
                "an all-zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
                "an all-zero parent",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
                "uppercase",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                false,
                "a short trace id",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                false,
                "wrong separators",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                false,
                "flags not hex",
            ),
            ("", false, "empty"),
        ] {
            assert_eq!(id(text).is_some(), valid, "{why}: {text}");
        }
    }

    #[test]
    fn a_request_continues_a_valid_trace_and_starts_one_otherwise() {
        let on = settings(Sampler::ParentbasedAlwaysOn, 1.0);
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(
            TRACESTATE,
            HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        );
        let span = start(&on, &headers);
        assert_eq!(
            Hex::<32>::of(&span.trace_id).as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            span.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_ne!(span.span_id, span.parent.unwrap());
        assert!(span.sampled);
        assert_eq!(
            span.tracestate.as_ref().unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        let header = span.response_header();
        let header = header.to_str().unwrap();
        assert_eq!(&header[..36], "00-4bf92f3577b34da6a3ce929d0e0e4736-");
        assert_eq!(&header[36..52], Hex::<16>::of(&span.span_id).as_str());
        assert!(header.ends_with("-01"));

        // A caller that did not sample: neither does a parent-based sampler.
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        assert!(!start(&on, &headers).sampled);
        // An invalid tracestate is dropped, the trace kept.
        headers.insert(TRACESTATE, HeaderValue::from_static("no-equals-sign"));
        assert!(start(&on, &headers).tracestate.is_none());

        // Invalid or doubled traceparent: a new trace, no parent.
        for bad in [&["00-zz"][..], &[VALID, VALID][..]] {
            let mut headers = HeaderMap::new();
            for value in bad {
                headers.append(TRACEPARENT, HeaderValue::from_static(value));
            }
            let span = start(&on, &headers);
            assert!(span.parent.is_none() && span.tracestate.is_none());
            assert_ne!(
                Hex::<32>::of(&span.trace_id).as_str(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(span.sampled, "a root span under parentbased_always_on");
        }
        let first = start(&on, &HeaderMap::new());
        let second = start(&on, &HeaderMap::new());
        assert_ne!(first.trace_id, second.trace_id);
        assert_ne!(first.span_id, second.span_id);
    }

    #[test]
    fn samplers_decide_as_opentelemetry_specifies() {
        let trace = random_trace_id();
        for (sampler, ratio, parent, expected) in [
            (Sampler::AlwaysOn, 0.0, Some(false), true),
            (Sampler::AlwaysOff, 1.0, Some(true), false),
            (Sampler::ParentbasedAlwaysOn, 0.0, Some(false), false),
            (Sampler::ParentbasedAlwaysOn, 0.0, None, true),
            (Sampler::ParentbasedAlwaysOff, 1.0, Some(true), true),
            (Sampler::ParentbasedAlwaysOff, 1.0, None, false),
            (Sampler::ParentbasedTraceidratio, 0.0, Some(true), true),
            (Sampler::ParentbasedTraceidratio, 0.0, None, false),
            (Sampler::ParentbasedTraceidratio, 1.0, None, true),
            (Sampler::Traceidratio, 1.0, Some(false), true),
        ] {
            assert_eq!(
                sample(&settings(sampler, ratio), parent, &trace),
                expected,
                "{sampler:?} ratio {ratio} parent {parent:?}"
            );
        }
        // A ratio keeps about that share of new traces.
        let tenth = settings(Sampler::ParentbasedTraceidratio, 0.1);
        let kept = (0..20_000)
            .filter(|_| sample(&tenth, None, &random_trace_id()))
            .count();
        assert!((1_600..2_400).contains(&kept), "{kept} of 20000 at 10%");
    }

    #[test]
    fn resource_attributes_are_read_as_opentelemetry_spells_them() {
        assert_eq!(
            parse_resource_attributes(
                "k8s.pod.name=app-1, deployment.environment.name = prod,note=a%2Cb%20c"
            )
            .unwrap(),
            [
                ("k8s.pod.name".to_owned(), "app-1".to_owned()),
                ("deployment.environment.name".to_owned(), "prod".to_owned()),
                ("note".to_owned(), "a,b c".to_owned()),
            ]
        );
        assert_eq!(parse_resource_attributes("").unwrap(), []);
        for bad in ["novalue", "=x", "k=%zz"] {
            assert!(parse_resource_attributes(bad).is_err(), "{bad}");
        }
    }
}
