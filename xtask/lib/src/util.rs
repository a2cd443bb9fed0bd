//! Small helpers shared by several tasks.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Under `CI=true`, a tool a task or test needs and cannot find is a
/// failure instead of a printed skip.
/// The path of a tool a unit test runs, or `None` after printing that the
/// test checked less; under `CI=true`, where setup installed it, a missing
/// tool fails the test.
#[cfg(test)]
pub fn test_tool(name: &str, install: &str) -> Option<std::path::PathBuf> {
    match which::which(name) {
        Ok(path) => Some(path),
        Err(_) => {
            assert!(!in_ci(), "{name} is not installed ({install})");
            eprintln!("skipped: {name} is not installed ({install})");
            None
        }
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Writes `bytes` to a temporary name beside `path`, then renames it into
/// place, so that a reader never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().context("a file path")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("move {} into place", path.display()))
}

/// Sends one raw HTTP/1.1 request (which should say `Connection: close`)
/// to `address` and reads the answer to its end: the status and body.
/// Bounded: 5 s to connect, 5 s per read.
pub fn http_request(address: &str, request: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let socket = std::net::ToSocketAddrs::to_socket_addrs(address)
        .with_context(|| format!("resolve {address}"))?
        .next()
        .with_context(|| format!("{address} names no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .with_context(|| format!("connect to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("send to {address}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("read from {address}"))?;
    parse_http_response(&response)
}

/// `GET path` from `address` on a new connection: the status and body.
pub fn http_get(address: &str, path: &str) -> Result<(u16, String)> {
    http_request(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
}

/// The status and body of a whole HTTP response.
pub fn parse_http_response(bytes: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete HTTP response");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status line")?;
    Ok((status, body.to_owned()))
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (for a source date without a
/// commit time).
pub fn rfc3339_utc(epoch: u64) -> String {
    let seconds = epoch % 86_400;
    let (year, month, day) = civil_from_days((epoch / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    )
}

/// The year, month and day of a count of days since 1970-01-01 (Howard
/// Hinnant's days-to-civil conversion).
/// A date as Debian's changelogs and apt's `Release` files write it: `Mon, 07 Dec 2026 12:00:00 +0000`.
pub fn rfc2822(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch / 86_400;
    let seconds = epoch % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `250ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 30s, 250ms or 5m"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 30s, 250ms or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("`{text}`: the unit is one of ms, s, m, h")),
    }
}

/// A folder under the system's temporary folder, removed with everything
/// in it when dropped.
#[derive(Debug)]
pub struct TempFolder(std::path::PathBuf);

impl TempFolder {
    pub fn new(prefix: &str) -> Result<TempFolder> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempFolder(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_give_their_status_and_body() {
        let check = |response: &str, expected: Option<(u16, &str)>| {
            let parsed = parse_http_response(response.as_bytes()).ok();
            assert_eq!(
                parsed.as_ref().map(|(code, body)| (*code, body.as_str())),
                expected,
                "{response:?}"
            );
        };
        check(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Some((200, "ok")),
        );
        check("HTTP/1.1 503 Service Unavailable\r\n\r\n", Some((503, "")));
        check("HTTP/1.1 200 OK\r\n", None);
        check("", None);
    }
}
