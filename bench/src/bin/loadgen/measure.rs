//! What the load generator reads of the server and the machine: the server's CPU time and
//! RSS from /proc, `/cache-healthcheck` answer times, and the kernel's listen-queue counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{instant_at, unix_us};

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
}

/// The servers' summed CPU seconds over the hold, and summed RSS at its end.
pub async fn measure(pids: &[u32], hold: (u64, u64)) -> (Option<f64>, Option<u64>) {
    if pids.is_empty() {
        return (None, None);
    }
    let sum_cpu = || {
        pids.iter()
            .map(|&pid| cpu_seconds(pid))
            .sum::<Option<f64>>()
    };
    tokio::time::sleep_until(instant_at(hold.0).into()).await;
    let before = sum_cpu();
    tokio::time::sleep_until(instant_at(hold.1).into()).await;
    let after = sum_cpu();
    let rss = pids.iter().map(|&pid| rss_kib(pid)).sum::<Option<u64>>();
    (before.zip(after).map(|(before, after)| after - before), rss)
}

/// Asks `/cache-healthcheck` five times a second through the hold, each on a new connection
/// as a load balancer would: when it asked (Unix microseconds), and how long the answer took,
/// `None` for an answer that was not `200` within 5 s.
pub async fn probe_health(addr: SocketAddr, hold: (u64, u64)) -> Vec<(u64, Option<f64>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::sleep_until(instant_at(hold.0).into()).await;
    let mut answers = Vec::new();
    let mut next = Instant::now();
    while unix_us() < hold.1 {
        let started = Instant::now();
        let asked_at = unix_us();
        let ask = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(
                    concat!(
                        "GET /cache-healthcheck HTTP/1.1\r\n",
                        "Host: loadgen\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
        };
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), ask).await,
            Ok(Ok(true))
        );
        answers.push((
            asked_at,
            ok.then(|| started.elapsed().as_secs_f64() * 1000.0),
        ));
        next += Duration::from_millis(200);
        tokio::time::sleep_until(next.into()).await;
    }
    answers
}

/// One reading of the servers, every `SAMPLE_EVERY` through a storm.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at_us: u64,
    /// CPU seconds the servers spent since the first sample: a process that appeared later
    /// counts from its start, one that exited keeps its last reading.
    pub cpu_seconds: f64,
    /// Summed RSS of the servers alive at this reading.
    pub rss_kib: u64,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Reads the servers every 100 ms through the hold. The servers are `pids` and whatever pids
/// `pid_file` lists at each reading (one per line), so the processes a restart starts are
/// followed as they appear.
pub async fn sample_servers(pids: &[u32], pid_file: Option<&str>, hold: (u64, u64)) -> Vec<Sample> {
    // Per pid: its CPU seconds at the first sample it was in (0 for a process that appeared
    // later), and at the last one.
    let mut seen: HashMap<u32, (f64, f64)> = HashMap::new();
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while unix_us() < hold.1 {
        let mut current: Vec<u32> = pids.to_vec();
        if let Some(path) = pid_file {
            let listed = std::fs::read_to_string(path).unwrap_or_default();
            current.extend(
                listed
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
        let first = samples.is_empty();
        let mut rss = 0;
        for pid in current {
            let Some(cpu) = cpu_seconds(pid) else {
                continue;
            };
            rss += rss_kib(pid).unwrap_or(0);
            let entry = seen
                .entry(pid)
                .or_insert((if first { cpu } else { 0.0 }, cpu));
            entry.1 = cpu;
        }
        samples.push(Sample {
            at_us: unix_us(),
            cpu_seconds: seen.values().map(|(first, last)| last - first).sum(),
            rss_kib: rss,
        });
        next += SAMPLE_EVERY;
        tokio::time::sleep_until(next.into()).await;
    }
    samples
}

/// The kernel's counts of connections lost to a full listen queue (`ListenOverflows`) and of
/// SYNs dropped at a listener for any reason (`ListenDrops`), from /proc/net/netstat. They
/// count the whole network namespace: on a loopback benchmark, the server's listeners.
pub fn listen_counters() -> Option<(u64, u64)> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let at = names.iter().position(|n| *n == name)?;
        values.get(at)?.parse().ok()
    };
    Some((value("ListenOverflows")?, value("ListenDrops")?))
}
