//! Logs with `tracing`: human-readable lines in dev, JSON lines (one object
//! per line, fields at the top level) in staging and prod, on stdout.
//!
//! Lines are formatted by `Lines`, a `tracing` subscriber of our own that
//! writes each event straight into a per-thread byte buffer. The service
//! has no spans, so nothing needs tracing-subscriber's registry; its fmt
//! layer, with one line per request, cost more than the rest of a request
//! on the musl build (every piece of a line went through `fmt::Write` and
//! musl's `memcpy`), and its JSON formatter first collects the fields into
//! a map of `serde_json::Value`s.
//!
//! Lines are not written one `write(2)` at a time: with one log line per
//! request that system call would cost more than the request itself. They go
//! into an in-memory buffer that a background thread writes out every
//! `FLUSH_INTERVAL`, or sooner when it fills; `flush()` (called on exit and
//! from the panic hook) writes whatever is left. The buffer is bounded: if
//! stdout blocks for long, new lines are dropped and counted rather than
//! growing memory without limit.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::subscriber::{Interest, Subscriber};
use tracing::{Event, Level, Metadata};

use crate::config::{Log, LogFormat, LogLevel, RequestLog};

/// Longest a line waits in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A buffer this full is written out at once.
const FLUSH_SIZE: usize = 64 * 1024;
/// Beyond this, request lines are dropped (and counted) until stdout
/// catches up.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// Room kept beyond `MAX_BUFFERED` for the service's own lines (listening,
/// upgrades, draining, errors): a flood of request lines while stdout is
/// slow must not take the lifecycle lines with it.
const LIFECYCLE_RESERVE: usize = 1024 * 1024;
/// The target of request lines (`observe.rs`): the only lines the reserve
/// is kept from.
pub const REQUEST_TARGET: &str = concat!(env!("CARGO_CRATE_NAME"), "::request");
/// During an upgrade two processes write to the same stdout. A pipe write
/// of at most `PIPE_BUF` (4096 bytes on Linux) is never interleaved with
/// another's, so lines go out in whole-line writes of at most this size.
const ATOMIC_WRITE: usize = 4096;

pub fn init(log: &Log) {
    init_with_output(log, Box::new(std::io::stdout()));
}

/// `init`, with the lines going to `output` instead of stdout.
pub fn init_with_output(log: &Log, output: Box<dyn Write + Send>) {
    let max_level = match log.level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let subscriber = Lines {
        max_level,
        format: log.format,
        buffer: Buffer::start(output),
    };
    // Only the first call in a process takes effect (tests call it again).
    let _ = tracing::subscriber::set_global_default(subscriber);
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

/// Whether a request answered with `status` gets a line in the request log:
/// `log.requests` picks which, and `log.requests_per_second` bounds how many
/// per second. A line over the bound is dropped and counted
/// (`request_lines_dropped`): with one line per request, a busy service
/// would otherwise flood the journal, whose rate limit then throws away
/// the service's own lines (upgrades, drains, errors) with the rest.
/// Lines that are not request lines are never limited here.
pub fn request_line_wanted(log: &Log, status: u16) -> bool {
    match log.requests {
        RequestLog::Off => return false,
        RequestLog::Errors if status < 500 => return false,
        RequestLog::All | RequestLog::Errors => {}
    }
    let limit = u64::from(log.requests_per_second);
    if limit == 0 {
        return true;
    }
    // One word: the second (since the first request line) and the lines
    // written in it, so that a new second resets the count atomically.
    let second = REQUEST_CLOCK.get_or_init(Instant::now).elapsed().as_secs() & 0xffff_ffff;
    let mut current = REQUEST_WINDOW.load(Ordering::Relaxed);
    loop {
        let next = if current >> 32 != second {
            (second << 32) | 1
        } else if current & 0xffff_ffff < limit {
            current + 1
        } else {
            DROPPED_REQUEST_LINES[shard()]
                .0
                .fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match REQUEST_WINDOW.compare_exchange_weak(
            current,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Request lines dropped by `log.requests_per_second`.
pub fn request_lines_dropped() -> u64 {
    DROPPED_REQUEST_LINES
        .iter()
        .map(|shard| shard.0.load(Ordering::Relaxed))
        .sum()
}

static REQUEST_CLOCK: OnceLock<Instant> = OnceLock::new();
static REQUEST_WINDOW: AtomicU64 = AtomicU64::new(0);

/// A counter on a cache line of its own: once over the limit every request
/// counts a drop, and one shared line would bounce between the workers.
#[repr(align(128))]
struct Shard(AtomicU64);

const SHARDS: usize = 16;
static DROPPED_REQUEST_LINES: [Shard; SHARDS] = [const { Shard(AtomicU64::new(0)) }; SHARDS];

/// This thread's shard of the drop counter.
fn shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

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
    stdout: Box<dyn Write + Send>,
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

impl Buffer {
    fn new(output: Box<dyn Write + Send>) -> Buffer {
        Buffer {
            lines: Mutex::new(Vec::with_capacity(FLUSH_SIZE)),
            full: Condvar::new(),
            output: Mutex::new(Output {
                stdout: output,
                spare: Vec::with_capacity(FLUSH_SIZE),
            }),
            dropped: AtomicU64::new(0),
        }
    }

    /// The process's buffer, with the thread that writes it out every
    /// `FLUSH_INTERVAL`, started on the first call.
    fn start(output: Box<dyn Write + Send>) -> &'static Buffer {
        let mut started = false;
        let buffer = BUFFER.get_or_init(|| {
            started = true;
            Buffer::new(output)
        });
        if started {
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
        }
        buffer
    }

    /// Appends one whole line, or counts it as dropped if the buffer is full
    /// (for a request line, before the reserve kept for the others).
    fn push(&self, line: &[u8], is_request_line: bool) {
        let limit = if is_request_line {
            MAX_BUFFERED
        } else {
            MAX_BUFFERED + LIFECYCLE_RESERVE
        };
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() > limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
            if lines.len() >= FLUSH_SIZE {
                self.full.notify_one();
            }
        }
    }
}

/// The subscriber: events at or below `max_level` become one line each, in
/// `format`. Spans are accepted and ignored (the service opens none).
struct Lines {
    max_level: LevelFilter,
    format: LogFormat,
    buffer: &'static Buffer,
}

thread_local! {
    /// The line being formatted; it keeps its capacity, so that a line
    /// allocates nothing once a thread has written its longest.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Subscriber for Lines {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max_level >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let write = |line: &mut Vec<u8>| {
            line.clear();
            format_line(line, self.format, SystemTime::now(), event);
            self.buffer
                .push(line, event.metadata().target() == REQUEST_TARGET);
        };
        // An event logged while a line is formatted (from a `Debug` impl)
        // gets a line of its own.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut Vec::new()),
        });
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// One event as one line, ending in a newline:
/// - JSON: `timestamp` (RFC 3339, UTC, microseconds), `level`, the message
///   and every field at the top level, then `target`;
/// - text: `<timestamp>  INFO <target>: <message> key=value ...`, as
///   tracing-subscriber's default format writes it.
fn format_line(line: &mut Vec<u8>, format: LogFormat, time: SystemTime, event: &Event<'_>) {
    let metadata = event.metadata();
    match format {
        LogFormat::Json => {
            line.extend_from_slice(b"{\"timestamp\":\"");
            line.extend_from_slice(&timestamp(time));
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(metadata.level().as_str().as_bytes());
            line.push(b'"');
            event.record(&mut JsonFields(line));
            line.extend_from_slice(b",\"target\":");
            write_json_string(line, metadata.target());
            line.extend_from_slice(b"}\n");
        }
        LogFormat::Text => {
            line.extend_from_slice(&timestamp(time));
            line.extend_from_slice(match *metadata.level() {
                Level::ERROR => b" ERROR ",
                Level::WARN => b"  WARN ",
                Level::INFO => b"  INFO ",
                Level::DEBUG => b" DEBUG ",
                Level::TRACE => b" TRACE ",
            });
            line.extend_from_slice(metadata.target().as_bytes());
            line.push(b':');
            event.record(&mut TextFields(line));
            line.push(b'\n');
        }
    }
}

/// Writes each field as `,"name":value`.
struct JsonFields<'a>(&'a mut Vec<u8>);

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        write_json_string(self.0, field.name());
        self.0.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        write_json_string(self.0, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        write_decimal(self.0, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.0.push(b'-');
        }
        write_decimal(self.0, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // JSON has no NaN or infinity: those are written as strings.
        let quote = !value.is_finite();
        if quote {
            self.0.push(b'"');
        }
        write_f64(self.0, value);
        if quote {
            self.0.push(b'"');
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push(b'"');
        let _ = fmt::write(&mut JsonEscaped(self.0), format_args!("{value:?}"));
        self.0.push(b'"');
    }
}

/// Writes the message after a space, and every other field as ` name=value`
/// (strings quoted, as their `Debug` form).
struct TextFields<'a>(&'a mut Vec<u8>);

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push(b' ');
            self.0.extend_from_slice(value.as_bytes());
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push(b' ');
        if field.name() != "message" {
            self.0.extend_from_slice(field.name().as_bytes());
            self.0.push(b'=');
        }
        let _ = write!(self.0, "{value:?}");
    }
}

fn write_json_string(line: &mut Vec<u8>, text: &str) {
    line.push(b'"');
    let _ = fmt::Write::write_str(&mut JsonEscaped(line), text);
    line.push(b'"');
}

/// Escapes what passes through for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => b"",
                _ => continue,
            };
            self.0
                .extend_from_slice(&text.as_bytes()[plain_from..index]);
            if escape.is_empty() {
                let hex = b"0123456789abcdef";
                self.0.extend_from_slice(b"\\u00");
                self.0.push(hex[usize::from(byte >> 4)]);
                self.0.push(hex[usize::from(byte & 0xf)]);
            } else {
                self.0.extend_from_slice(escape);
            }
            plain_from = index + 1;
        }
        self.0.extend_from_slice(&text.as_bytes()[plain_from..]);
        Ok(())
    }
}

/// `value` in decimal, without `fmt`.
fn write_decimal(line: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start..]);
}

/// `value` as `Display` writes it: the shortest decimal that reads back as
/// the same number. Values with at most three decimals (a latency in
/// milliseconds from whole microseconds, on every request line) take a path
/// without `fmt`, whose float formatting costs more than the rest of a line.
fn write_f64(line: &mut Vec<u8>, value: f64) {
    // Below 2^43 thousandths a step between doubles is far below 0.001, so
    // the three decimals are exactly the shortest form.
    const LIMIT: f64 = (1u64 << 43) as f64;
    let thousandths = value * 1000.0;
    if (0.0..LIMIT).contains(&thousandths)
        && value.is_sign_positive()
        && thousandths.fract() == 0.0
        && thousandths / 1000.0 == value
    {
        let thousandths = thousandths as u64;
        write_decimal(line, thousandths / 1000);
        let mut fraction = thousandths % 1000;
        if fraction != 0 {
            line.push(b'.');
            let mut digits = 3;
            while fraction.is_multiple_of(10) {
                fraction /= 10;
                digits -= 1;
            }
            let mut text = [b'0'; 3];
            for index in (0..digits).rev() {
                text[index] = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            line.extend_from_slice(&text[..digits]);
        }
        return;
    }
    let _ = write!(line, "{value}");
}

/// `2026-11-25T01:42:43.521686Z`
fn timestamp(time: SystemTime) -> [u8; 27] {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for index in (at..at + width).rev() {
            text[index] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9_999) as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, second_of_day / 3_600);
    put(14, 2, second_of_day % 3_600 / 60);
    put(17, 2, second_of_day % 60);
    put(20, 6, u64::from(since_epoch.subsec_micros()));
    text
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
    fn floats_are_written_as_display_writes_them() {
        let mut values: Vec<f64> = (0..200_000u64)
            .map(|micros| micros as f64 / 1_000.0)
            .collect();
        values.extend((0..2_000u64).map(|step| (step * 7_919_993) as f64 / 1_000.0));
        values.extend([
            -1.5,
            -0.0,
            0.1 + 0.2,
            1e-7,
            123_456.789_012,
            8_796_093_022.207,
            8_796_093_022.208,
            1e300,
            f64::MIN_POSITIVE,
        ]);
        for value in values {
            let mut line = Vec::new();
            write_f64(&mut line, value);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                value.to_string(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_request_lines_leaves_room_for_the_lifecycle_lines() {
        let buffer = Buffer::new(Box::new(std::io::sink()));
        let request_line = [b'r'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        for _ in 0..MAX_BUFFERED / request_line.len() + 10 {
            buffer.push(&request_line, true);
        }
        assert_eq!(
            buffer.dropped.load(Ordering::Relaxed),
            10,
            "request lines over the bound"
        );
        buffer.push(b"upgrade requested\n", false);
        assert_eq!(
            buffer.dropped.load(Ordering::Relaxed),
            10,
            "the lifecycle line was kept"
        );
        assert!(
            buffer
                .lines
                .lock()
                .unwrap()
                .ends_with(b"upgrade requested\n")
        );
    }

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
            assert_eq!(std::str::from_utf8(&timestamp(time)).unwrap(), expected);
        };
        check(0, 0, "1970-01-01T00:00:00.000000Z");
        check(951_782_400, 1, "2000-02-29T00:00:00.000001Z");
        check(1_706_929_506, 123_456, "2024-02-03T03:05:06.123456Z");
        check(1_795_569_982, 999_999, "2026-11-25T01:26:22.999999Z");
        check(4_102_444_799, 0, "2099-12-31T23:59:59.000000Z");
    }

    /// The lines `events` log through a subscriber of `format` at INFO.
    fn lines_of(format: LogFormat, events: impl FnOnce()) -> Vec<String> {
        let buffer: &'static Buffer = Box::leak(Box::new(Buffer::new(Box::new(std::io::sink()))));
        let subscriber = Lines {
            max_level: LevelFilter::INFO,
            format,
            buffer,
        };
        tracing::subscriber::with_default(subscriber, events);
        let lines = buffer.lines.lock().unwrap();
        let text = std::str::from_utf8(&lines).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines().map(str::to_owned).collect()
    }

    fn log_some_events() {
        tracing::info!(
            target: "app::request",
            method = "GET",
            status = 200u16,
            latency_ms = 1.25,
            delta = -3i64,
            ok = true,
            quoted = "a \"b\"\n",
            "served {}",
            "/"
        );
        tracing::warn!(err = %"disk full", "could not write");
        tracing::debug!("below the level: not written");
    }

    #[test]
    fn json_lines_hold_every_field_at_the_top_level() {
        let lines = lines_of(LogFormat::Json, log_some_events);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let request: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let timestamp = request["timestamp"].as_str().unwrap();
        assert_eq!(timestamp.len(), 27, "{timestamp}");
        assert!(timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T');
        let mut expected = serde_json::json!({
            "timestamp": timestamp,
            "level": "INFO",
            "message": "served /",
            "method": "GET",
            "status": 200,
            "latency_ms": 1.25,
            "delta": -3,
            "ok": true,
            "quoted": "a \"b\"\n",
            "target": "app::request",
        });
        assert_eq!(request, expected);
        // Fields keep their order, the timestamp and level first and the
        // target last.
        let parts: Vec<&str> = lines[0].split("\":").collect();
        let keys: Vec<&str> = parts[..parts.len() - 1]
            .iter()
            .filter_map(|part| part.rsplit('"').next())
            .collect();
        assert_eq!(keys.first(), Some(&"timestamp"), "{keys:?}");
        assert_eq!(keys.last(), Some(&"target"), "{keys:?}");
        let warning: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        expected = serde_json::json!({
            "timestamp": warning["timestamp"],
            "level": "WARN",
            "message": "could not write",
            "err": "disk full",
            "target": module_path!(),
        });
        assert_eq!(warning, expected);
    }

    #[test]
    fn text_lines_read_like_tracing_subscribers_default() {
        let lines = lines_of(LogFormat::Text, log_some_events);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            &lines[0][27..],
            "  INFO app::request: served / method=\"GET\" status=200 latency_ms=1.25 delta=-3 ok=true quoted=\"a \\\"b\\\"\\n\""
        );
        assert_eq!(
            &lines[1][27..],
            format!("  WARN {}: could not write err=disk full", module_path!())
        );
    }

    #[test]
    fn decimals_are_written_without_fmt() {
        for value in [0, 7, 10, 200, 65_535, u64::MAX] {
            let mut line = Vec::new();
            write_decimal(&mut line, value);
            assert_eq!(line, value.to_string().into_bytes());
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let check = |text: &str| {
            let mut json = Vec::new();
            write_json_string(&mut json, text);
            assert_eq!(
                serde_json::from_slice::<String>(&json).unwrap(),
                text,
                "{}",
                String::from_utf8_lossy(&json)
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
