//! Logs with `tracing`: human-readable lines in dev, JSON lines (one object
//! per line, fields at the top level) in staging and prod, on stdout.
//!
//! JSON lines are written by `JsonLines`, which writes each field straight
//! into the line; tracing-subscriber's own JSON formatter first collects the
//! fields into a map of `serde_json::Value`s, which at one line per request
//! costs a fifth of the service's throughput.
//!
//! Lines are not written one `write(2)` at a time: with one log line per
//! request that system call would cost more than the request itself. They go
//! into an in-memory buffer that a background thread writes out every
//! `FLUSH_INTERVAL`, or sooner when it fills; `flush()` (called on exit and
//! from the panic hook) writes whatever is left. The buffer is bounded: if
//! stdout blocks for long, new lines are dropped and counted rather than
//! growing memory without limit.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Log, LogFormat, LogLevel};

/// Longest a line waits in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A buffer this full is written out at once.
const FLUSH_SIZE: usize = 64 * 1024;
/// Beyond this, lines are dropped (and counted) until stdout catches up.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// During an upgrade two processes write to the same stdout. A pipe write
/// of at most `PIPE_BUF` (4096 bytes on Linux) is never interleaved with
/// another's, so lines go out in whole-line writes of at most this size.
const ATOMIC_WRITE: usize = 4096;

pub fn init(log: &Log) {
    let level = match log.level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let writer = BufferedStdout::start();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer);
    match log.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        default_hook(info);
    }));
}

/// Writes out every buffered line. Called before the process exits.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.write_out();
    }
}

/// Lines dropped because stdout could not keep up.
pub fn dropped_lines() -> u64 {
    BUFFER
        .get()
        .map_or(0, |buffer| buffer.dropped.load(Ordering::Relaxed))
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

struct Buffer {
    lines: Mutex<Vec<u8>>,
    /// Signals the writer thread that the buffer passed `FLUSH_SIZE`.
    full: Condvar,
    /// Serialises writers so that lines reach stdout in order.
    output: Mutex<Output>,
    dropped: AtomicU64,
}

impl Buffer {
    fn write_out(&self) {
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let Output { stdout, spare } = &mut *output;
        // The lines are swapped with an empty buffer that keeps its capacity
        // from the last round, so that neither side allocates.
        std::mem::swap(
            &mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner),
            spare,
        );
        // Nowhere to report a failed log write; the next flush retries with
        // new lines.
        for chunk in whole_line_chunks(spare, ATOMIC_WRITE) {
            let _ = stdout.write_all(chunk);
        }
        let _ = stdout.flush();
        spare.clear();
        // A burst may have grown it to MAX_BUFFERED; keep it no bigger than
        // the usual round needs.
        spare.shrink_to(FLUSH_SIZE * 2);
    }
}

/// Stdout, and the buffer the pending lines are swapped into for writing.
struct Output {
    stdout: std::io::Stdout,
    spare: Vec<u8>,
}

/// `text` cut after newlines into pieces of at most `limit` bytes; a line
/// longer than `limit` is a piece of its own.
fn whole_line_chunks(text: &[u8], limit: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let window = &rest[..rest.len().min(limit)];
        let end = match window.iter().rposition(|byte| *byte == b'\n') {
            Some(newline) if rest.len() > limit => newline + 1,
            _ if rest.len() <= limit => rest.len(),
            _ => rest
                .iter()
                .position(|byte| *byte == b'\n')
                .map_or(rest.len(), |newline| newline + 1),
        };
        let (chunk, after) = rest.split_at(end);
        rest = after;
        Some(chunk)
    })
}

#[derive(Clone, Copy)]
struct BufferedStdout(&'static Buffer);

impl BufferedStdout {
    fn start() -> BufferedStdout {
        let buffer = BUFFER.get_or_init(|| Buffer {
            lines: Mutex::new(Vec::with_capacity(FLUSH_SIZE)),
            full: Condvar::new(),
            output: Mutex::new(Output {
                stdout: std::io::stdout(),
                spare: Vec::with_capacity(FLUSH_SIZE),
            }),
            dropped: AtomicU64::new(0),
        });
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                loop {
                    let lines = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
                    let wait = buffer
                        .full
                        .wait_timeout_while(lines, FLUSH_INTERVAL, |lines| {
                            lines.len() < FLUSH_SIZE
                        });
                    drop(wait);
                    buffer.write_out();
                }
            })
            .expect("start the log writer thread");
        BufferedStdout(buffer)
    }
}

impl Write for BufferedStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() > MAX_BUFFERED {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
            if lines.len() >= FLUSH_SIZE {
                self.0.full.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC, microseconds),
/// `level`, the message and every field at the top level, then `target`.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", metadata.level())?;
        let mut fields = JsonFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_string(&mut writer, metadata.target())?;
        writer.write_str("}\n")
    }
}

struct JsonFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.writer.write_char(',')?;
                write_json_string(self.writer, field.name())?;
                self.writer.write_char(':')?;
                value(self.writer)
            })();
        }
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |writer| write_json_string(writer, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |writer| write!(writer, "{value}"));
        } else {
            self.field(field, |writer| write!(writer, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |writer| {
            writer.write_char('"')?;
            write!(JsonEscaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

fn write_json_string(writer: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(writer).write_str(text)?;
    writer.write_char('"')
}

/// Escapes what passes through for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain_from..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain_from = index + 1;
        }
        self.0.write_str(&text[plain_from..])
    }
}

/// `2026-11-25T01:42:43.521686Z`
fn write_timestamp(writer: &mut dyn fmt::Write, time: SystemTime) -> fmt::Result {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    write!(
        writer,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_writes_are_whole_lines_of_at_most_the_atomic_size() {
        let check = |text: &str, limit: usize, expected: &[&str]| {
            let chunks: Vec<&[u8]> = whole_line_chunks(text.as_bytes(), limit).collect();
            let expected: Vec<&[u8]> = expected.iter().map(|chunk| chunk.as_bytes()).collect();
            assert_eq!(chunks, expected, "{text:?} by {limit}");
        };
        check("", 8, &[]);
        check("ab\ncd\n", 8, &["ab\ncd\n"]);
        check("ab\ncd\nef\n", 8, &["ab\ncd\n", "ef\n"]);
        check("abcdefghij\nk\n", 8, &["abcdefghij\n", "k\n"]);
        check("a\nbcdefghijk\n", 8, &["a\n", "bcdefghijk\n"]);
        check("abcdefghijk", 8, &["abcdefghijk"]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let check = |seconds: u64, micros: u32, expected: &str| {
            let time = UNIX_EPOCH
                + Duration::from_secs(seconds)
                + Duration::from_micros(u64::from(micros));
            let mut text = String::new();
            write_timestamp(&mut text, time).unwrap();
            assert_eq!(text, expected);
        };
        check(0, 0, "1970-01-01T00:00:00.000000Z");
        check(951_782_400, 1, "2000-02-29T00:00:00.000001Z");
        check(1_706_929_506, 123_456, "2024-02-03T03:05:06.123456Z");
        check(1_795_569_982, 999_999, "2026-11-25T01:26:22.999999Z");
        check(4_102_444_799, 0, "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let check = |text: &str| {
            let mut json = String::new();
            write_json_string(&mut json, text).unwrap();
            assert_eq!(
                serde_json::from_str::<String>(&json).unwrap(),
                text,
                "{json}"
            );
        };
        for text in [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak\ttab\r",
            "bell \u{7} nul \u{0}",
            "ünïcödé ✓",
            "",
        ] {
            check(text);
        }
    }
}
