//! What a server process costs, read from `/proc`: its peak and current
//! resident memory, its CPU time, and the memory it grows by per idle
//! keep-alive connection.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::service::Server;

#[derive(Serialize)]
pub struct IdleMemory {
    pub server: String,
    /// (connections held, bytes of RSS growth per connection)
    pub per_connection: Vec<(usize, f64)>,
}

/// Peak resident set size (`VmHWM`) of a running process.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A `/proc/<pid>/status` field given in kB, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The CPU time (user + system, all threads) process `pid` has used, in
/// seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold
    // spaces): utime and stime are fields 14 and 15, the 12th and 13th
    // after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system setting.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (user + system) as f64 / ticks as f64)
}

/// How long the held connections wait before the RSS is read: longer than
/// the service takes to park a waiting connection (`PARK_AFTER` in the
/// platform's `connections.rs`), so that what is read is what idle
/// connections hold, not the requests just answered.
pub const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// How much resident memory `server` grows by per idle keep-alive
/// connection: for each count in `held` (ascending), that many connections
/// are open, each has had one `/healthz` answered and then waits; the
/// growth over the RSS before the first is divided by the count.
pub fn idle_memory(server: &Server, held: &[usize]) -> Result<IdleMemory> {
    raise_open_files_limit(held.iter().max().copied().unwrap_or(0) + 64)?;
    let pid = server.child.id();
    let rss =
        || status_bytes(pid, "VmRSS:").with_context(|| format!("read the RSS of process {pid}"));
    // Settle first, so that the growth is the connections'.
    std::thread::sleep(Duration::from_millis(500));
    let before = rss()?;
    let mut connections = Vec::new();
    let mut per_connection = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for &count in held {
        while connections.len() < count {
            if Instant::now() > deadline {
                bail!("{count} connections not open within 120 s");
            }
            connections.push(one_request_kept_alive(server.addr)?);
        }
        std::thread::sleep(IDLE_SETTLE);
        let grown = rss()?.saturating_sub(before);
        per_connection.push((count, grown as f64 / count as f64));
    }
    Ok(IdleMemory {
        server: server.name.clone(),
        per_connection,
    })
}

/// A connection that has had one `/healthz` answered and stays open.
fn one_request_kept_alive(addr: SocketAddr) -> Result<TcpStream> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            bail!("{addr} closed the connection instead of answering");
        }
        response.extend_from_slice(&buffer[..read]);
        if let Some(end) = response.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return Ok(stream);
            }
        }
    }
}

/// Raises this process's soft open-files limit to at least `wanted` (up to
/// the hard limit), for the held connections.
fn raise_open_files_limit(wanted: usize) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if (limit.rlim_cur as usize) < wanted {
            limit.rlim_cur = limit.rlim_max.min(wanted as libc::rlim_t);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    if (limit.rlim_cur as usize) < wanted {
        bail!(
            "the open-files limit is {} and the idle-connection figure needs {wanted}: raise it (ulimit -n)",
            limit.rlim_cur
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This very process's CPU time, read as the bench reads a server's,
    /// grows with work done.
    #[test]
    fn cpu_time_is_read_from_proc() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        // Spin until the kernel has counted some CPU time (on a loaded
        // machine that takes longer than the spinning), bounded.
        let started = Instant::now();
        let mut spin = 0u64;
        let mut after = before;
        while after <= before && started.elapsed() < Duration::from_secs(10) {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            after = cpu_seconds(pid).unwrap();
        }
        assert!(after > before, "{before} -> {after} after 10 s of spinning");
        assert!(status_bytes(pid, "VmRSS:").unwrap() > 0);
    }
}
