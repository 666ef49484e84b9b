//! The load generator: opens N clients of a server (raw WebSocket, socket.io over engine.io
//! v4 WebSocket with `--polling-share` of them on engine.io long-polling instead, or socket.io
//! v2 clients over engine.io v3 WebSocket), ramps them up, holds, and reports what a user of
//! each would have seen and what the server paid for it.
//!
//! Per client it checks the sequence (step exactly 2, no gap, no repeat). Overall it reports
//! connections established and failed, connect time p50/p99, messages delivered per second
//! during the hold, fan-out skew per integer (first to last client receiving it), and, given
//! the server's pid, its RSS per connection and CPU-seconds per million delivered messages,
//! both read from /proc (summed over several pids for a cluster). Loopback only; bounded in
//! count and time; it stops by itself.
//!
//! One process can hold only as many clients as its open-files limit allows, so with
//! `--workers N` it runs N copies of itself, each with every N-th client, on one shared
//! wall-clock schedule, and merges what they saw: the skew of an integer is then measured
//! across every worker's clients.
//!
//! With `--reconnect` the clients ride through a deploy storm as real ones do: a client whose
//! connection drops waits out the official socket.io client's back-off and connects again,
//! resuming with `after` (raw query, socket.io `auth`, the v2 connection's query), and its
//! sequence is checked across its connections. The report then adds the storm: how long until
//! the dropped clients were back, failed attempts by kind, the server's CPU and RSS through it
//! (following restarted processes through `--server-pid-file`), health-check answer times, and
//! the kernel's listen-queue overflows.
//!
//! - `main.rs`: the arguments, the workers' schedule, merging and the report.
//! - `client.rs`: one client's connections, sequence check and reconnection.
//! - `backoff.rs`: the official client's reconnection delay.
//! - `http.rs`: the HTTP/1.1 requests of engine.io long-polling.
//! - `measure.rs`: the server's CPU and RSS, health checks, the listen-queue counters.

mod backoff;
mod client;
mod http;
mod measure;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use client::{Plan, run_client};
use measure::{Sample, listen_counters, measure, probe_health, rss_kib, sample_servers};

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Raw,
    Socketio,
    /// socket.io v2 clients: engine.io v3, whose heartbeat the client drives.
    #[value(name = "socketio-v2")]
    #[serde(rename = "socketio-v2")]
    SocketioV2,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mix {
    Odd,
    Even,
    Mixed,
}

#[derive(Parser, Debug)]
struct Args {
    /// Server address; must be on loopback.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    protocol: Protocol,
    #[arg(long)]
    clients: usize,
    #[arg(long, value_enum, default_value = "mixed")]
    mix: Mix,
    /// New connections opened per second while ramping up.
    #[arg(long, default_value_t = 2000)]
    ramp_per_second: u32,
    /// Seconds to measure once every client has connected (or failed).
    #[arg(long, default_value_t = 10)]
    hold_seconds: u64,
    /// Loopback source addresses to spread clients over (127.0.0.2, 127.0.0.3, ...); one
    /// address runs out of ports near 28k connections.
    #[arg(long, default_value_t = 4)]
    source_addresses: u8,
    /// The server's pid, for its RSS and CPU time from /proc; repeat it for several
    /// instances, whose figures are summed.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Worker processes to spread the clients over (each is one more process with its own
    /// open-files limit).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Set by the coordinating process: which worker this is.
    #[arg(long, hide = true)]
    worker: Option<usize>,
    /// Set by the coordinating process: when the hold begins, in Unix microseconds.
    #[arg(long, hide = true)]
    hold_start_unix_us: Option<u64>,
    /// Label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Give up on the whole run after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Fraction of socket.io clients (0 to 1, spread evenly) that use engine.io long-polling
    /// instead of WebSocket, as clients behind proxies that refuse upgrades do.
    #[arg(long, default_value_t = 0.0)]
    polling_share: f64,
    /// Clients reconnect after a drop, with the official client's back-off, and resume with
    /// `after`; the report adds the storm.
    #[arg(long)]
    reconnect: bool,
    /// A file listing the server's pids, one per line, read again at every sample: the
    /// processes a restart starts are measured as they appear.
    #[arg(long)]
    server_pid_file: Option<String>,
    /// A file created when the hold begins, every client being up (or failed): the moment a
    /// storm may start.
    #[arg(long)]
    ready_file: Option<String>,
}

impl Args {
    /// Whether client `index` long-polls.
    fn polls(&self, index: usize) -> bool {
        let share = self.polling_share.clamp(0.0, 1.0);
        self.protocol == Protocol::Socketio
            && ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
    }
}

#[derive(Serialize)]
struct Report {
    label: String,
    protocol: Protocol,
    mix: Mix,
    clients: usize,
    /// Of them, socket.io clients on long-polling.
    polling_clients: usize,
    workers: usize,
    established: usize,
    failed: usize,
    first_failure: Option<String>,
    connect_ms_p50: f64,
    connect_ms_p99: f64,
    hold_seconds: f64,
    messages_in_hold: u64,
    messages_per_second: f64,
    sequence_gaps: u64,
    sequence_repeats: u64,
    skew_ms_p50: f64,
    skew_ms_p99: f64,
    skew_ms_max: f64,
    server_rss_kib_before: Option<u64>,
    server_rss_kib_during: Option<u64>,
    server_rss_kib_per_connection: Option<f64>,
    server_cpu_seconds_in_hold: Option<f64>,
    server_cpu_seconds_per_million: Option<f64>,
    /// `/cache-healthcheck` during the hold: answers, and how long they took.
    healthcheck_answers: usize,
    healthcheck_failures: usize,
    healthcheck_ms_p50: f64,
    healthcheck_ms_max: f64,
    /// With `--reconnect`.
    storm: Option<Storm>,
}

/// A deploy storm, as the clients saw it. Its window runs from the first drop until the last
/// dropped client was back (or the hold's end).
#[derive(Serialize)]
struct Storm {
    first_drop_unix_us: Option<u64>,
    /// From the first client's drop to the last one's: how long the servers took to let every
    /// client go.
    drops_ms: f64,
    window_seconds: f64,
    dropped_clients: usize,
    outages: usize,
    /// Dropped clients not connected again by the hold's end.
    never_back: usize,
    /// From the first drop until that share of the dropped clients was connected again for
    /// the last time (`back_ms_p100` is null while one is not back).
    back_ms_p50: f64,
    back_ms_p95: f64,
    back_ms_p99: f64,
    back_ms_p100: f64,
    /// Each outage, from the drop to connected again.
    outage_ms_p50: f64,
    outage_ms_p99: f64,
    outage_ms_max: f64,
    /// Time to connected of each reconnection: the server's part, accept to upgrade or
    /// namespace connect.
    reconnections: usize,
    reconnect_ms_p50: f64,
    reconnect_ms_p99: f64,
    reconnect_ms_max: f64,
    /// Failed reconnection attempts by kind: refused, reset, timeout, closed (before the
    /// connection was up), connect_error, an HTTP status, other.
    failures: BTreeMap<String, u64>,
    /// Integers skipped by gaps (`sequence_gaps` counts the gaps).
    missed_integers: u64,
    /// Reconnections after which a client's sequence went back: its server started the
    /// streams over, and the client cannot tell what it missed.
    restarts: u64,
    /// The longest wait between two consecutive integers of a stream reaching their first
    /// client, over the hold (null when sequences restarted, as integers then recur).
    stall_ms_max: f64,
    server_cpu_seconds_in_window: Option<f64>,
    server_rss_kib_before: Option<u64>,
    server_rss_kib_peak: Option<u64>,
    healthcheck_answers: usize,
    healthcheck_failures: usize,
    healthcheck_ms_p50: f64,
    healthcheck_ms_p99: f64,
    healthcheck_ms_max: f64,
    /// The kernel's `ListenOverflows` and `ListenDrops` over the hold.
    listen_overflows: Option<u64>,
    listen_drops: Option<u64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What one worker's clients saw, merged by the coordinator.
#[derive(Serialize, Deserialize, Default)]
struct Partial {
    connect_ms: Vec<f64>,
    failed: usize,
    first_failure: Option<String>,
    gaps: u64,
    repeats: u64,
    missed: u64,
    restarts: u64,
    /// Per client that was dropped: its outages (drop, and connected again), Unix microseconds.
    outages: Vec<Vec<(u64, Option<u64>)>>,
    reconnect_ms: Vec<f64>,
    failures: BTreeMap<String, u64>,
    /// Integers received during the hold: (integer, first and last arrival in Unix
    /// microseconds, how many clients received it).
    integers: Vec<(u64, u64, u64, usize)>,
    in_hold: u64,
}

impl Partial {
    fn merge(partials: Vec<Partial>) -> Partial {
        let mut merged = Partial::default();
        let mut integers = Vec::new();
        for partial in partials {
            merged.connect_ms.extend(partial.connect_ms);
            merged.failed += partial.failed;
            merged.first_failure = merged.first_failure.or(partial.first_failure);
            merged.gaps += partial.gaps;
            merged.repeats += partial.repeats;
            merged.missed += partial.missed;
            merged.restarts += partial.restarts;
            merged.outages.extend(partial.outages);
            merged.reconnect_ms.extend(partial.reconnect_ms);
            for (kind, count) in partial.failures {
                *merged.failures.entry(kind).or_default() += count;
            }
            merged.in_hold += partial.in_hold;
            integers.extend(partial.integers);
        }
        merged.integers = fold_arrivals(integers);
        merged
    }
}

/// One entry per integer from many (integer, first, last, receivers) entries: the earliest
/// first, the latest last, and the receivers added up.
fn fold_arrivals(
    arrivals: impl IntoIterator<Item = (u64, u64, u64, usize)>,
) -> Vec<(u64, u64, u64, usize)> {
    let mut integers: HashMap<u64, (u64, u64, usize)> = HashMap::new();
    for (integer, first, last, receivers) in arrivals {
        let entry = integers.entry(integer).or_insert((first, last, 0));
        entry.0 = entry.0.min(first);
        entry.1 = entry.1.max(last);
        entry.2 += receivers;
    }
    integers
        .into_iter()
        .map(|(integer, (first, last, receivers))| (integer, first, last, receivers))
        .collect()
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// The `Instant` at which the Unix clock will read `at_us`.
fn instant_at(at_us: u64) -> Instant {
    Instant::now() + Duration::from_micros(at_us.saturating_sub(unix_us()))
}

/// Opens this worker's share of the clients (every `workers`-th one) at its share of the ramp
/// rate, and collects what they saw until the hold is over.
async fn run_worker(args: Arc<Args>, worker: usize, hold: (u64, u64)) -> Partial {
    let workers = args.workers.max(1);
    let stop = instant_at(hold.1).min(Instant::now() + Duration::from_secs(args.max_seconds));
    let per_worker_rate = (f64::from(args.ramp_per_second.max(1)) / workers as f64).max(1.0);
    let pace = Duration::from_secs_f64(1.0 / per_worker_rate);
    let mut tasks = Vec::new();
    let mut next = Instant::now();
    for index in (0..args.clients).filter(|index| index % workers == worker) {
        let even = match args.mix {
            Mix::Odd => false,
            Mix::Even => true,
            Mix::Mixed => index % 2 == 1,
        };
        let plan = Plan {
            index,
            even,
            hold,
            stop,
        };
        tasks.push(tokio::spawn(run_client(args.clone(), plan)));
        next += pace;
        tokio::time::sleep_until(next.into()).await;
    }
    let mut logs = Vec::with_capacity(tasks.len());
    for task in tasks {
        logs.push(task.await.expect("client task"));
    }
    let arrivals = logs
        .iter()
        .flat_map(|log| &log.received)
        .map(|&(integer, at)| (integer, at, at, 1));
    Partial {
        connect_ms: logs.iter().filter_map(|log| log.connect_ms).collect(),
        failed: logs.iter().filter(|log| log.connect_ms.is_none()).count(),
        first_failure: logs.iter().find_map(|log| log.failed.clone()),
        gaps: logs.iter().map(|log| log.gaps).sum(),
        repeats: logs.iter().map(|log| log.repeats).sum(),
        missed: logs.iter().map(|log| log.missed).sum(),
        restarts: logs.iter().map(|log| log.restarts).sum(),
        outages: logs
            .iter()
            .filter(|log| !log.outages.is_empty())
            .map(|log| log.outages.clone())
            .collect(),
        reconnect_ms: logs
            .iter()
            .flat_map(|log| log.reconnect_ms.clone())
            .collect(),
        failures: logs.iter().fold(BTreeMap::new(), |mut all, log| {
            for (kind, count) in &log.failures {
                *all.entry(kind.clone()).or_default() += count;
            }
            all
        }),
        in_hold: logs.iter().map(|log| log.received.len() as u64).sum(),
        integers: fold_arrivals(arrivals),
    }
}

/// Runs the workers as child processes of this binary and collects their partial reports.
async fn run_worker_processes(args: &Args, hold_start_us: u64) -> Vec<Partial> {
    let exe = std::env::current_exe().expect("own executable");
    let children: Vec<_> = (0..args.workers)
        .map(|worker| {
            tokio::process::Command::new(&exe)
                .args(std::env::args().skip(1))
                .arg("--worker")
                .arg(worker.to_string())
                .arg("--hold-start-unix-us")
                .arg(hold_start_us.to_string())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let mut partials = Vec::new();
    for child in children {
        let output = child.wait_with_output().await.expect("worker output");
        let text = String::from_utf8_lossy(&output.stdout);
        partials.push(serde_json::from_str(text.trim()).expect("a worker's partial report"));
    }
    partials
}

fn main() {
    let args = Arc::new(Args::parse());
    assert!(
        args.addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hold_micros = args.hold_seconds * 1_000_000;
    if let Some(worker) = args.worker {
        let start = args
            .hold_start_unix_us
            .expect("a worker is given the hold start");
        let partial = runtime.block_on(run_worker(
            args.clone(),
            worker,
            (start, start + hold_micros),
        ));
        println!(
            "{}",
            serde_json::to_string(&partial).expect("partial report")
        );
        return;
    }
    // The hold begins once the ramp is over, with two seconds for the last connections to
    // settle (and one more for the workers to start).
    let ramp_seconds = args.clients as f64 / f64::from(args.ramp_per_second.max(1));
    let spawn_margin = if args.workers > 1 { 1.0 } else { 0.0 };
    let hold_start = unix_us() + ((ramp_seconds + 2.0 + spawn_margin) * 1e6) as u64;
    let hold = (hold_start, hold_start + hold_micros);
    let rss_before = args
        .server_pid
        .iter()
        .map(|&pid| rss_kib(pid))
        .sum::<Option<u64>>()
        .filter(|_| !args.server_pid.is_empty());
    let listen_before = listen_counters();
    // The health checks have a thread and a runtime of their own: on the clients' runtime,
    // each answer would also wait its turn behind thousands of clients reconnecting, and the
    // times would be this process's queue rather than the server's.
    let addr = args.addr;
    let health = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the health checks' runtime")
            .block_on(probe_health(addr, hold))
    });
    let (partials, (cpu, rss_during), samples) = runtime.block_on(async {
        // A storm's figures come from samples that follow restarted servers; the steady
        // runs' from two readings at the hold's edges, which cost the server nothing between.
        let samples = async {
            if args.reconnect {
                sample_servers(&args.server_pid, args.server_pid_file.as_deref(), hold).await
            } else {
                Vec::new()
            }
        };
        let measured = async {
            if args.reconnect {
                (None, None)
            } else {
                measure(&args.server_pid, hold).await
            }
        };
        let ready = async {
            if let Some(path) = &args.ready_file {
                tokio::time::sleep_until(instant_at(hold.0).into()).await;
                std::fs::write(path, "").expect("write the ready file");
            }
        };
        let clients = async {
            if args.workers > 1 {
                run_worker_processes(&args, hold_start).await
            } else {
                vec![run_worker(args.clone(), 0, hold).await]
            }
        };
        let (partials, measured, samples, ()) = tokio::join!(clients, measured, samples, ready);
        (partials, measured, samples)
    });
    let health = health.join().expect("the health checks");
    let listen_after = listen_counters();
    let mut health_ms: Vec<f64> = health.iter().filter_map(|(_, answer)| *answer).collect();
    health_ms.sort_by(f64::total_cmp);
    let merged = Partial::merge(partials);
    let storm = args.reconnect.then(|| {
        let listen = listen_before.zip(listen_after).map(|(before, after)| {
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            )
        });
        storm_report(&merged, &samples, &health, hold, listen)
    });
    let hold_seconds = args.hold_seconds as f64;

    let mut connect_ms = merged.connect_ms.clone();
    connect_ms.sort_by(f64::total_cmp);
    let established = connect_ms.len();
    let in_hold = merged.in_hold;
    // An integer's skew counts once most of its stream's clients have it (the window's edges
    // cut the first and last ones short).
    let per_stream = match args.mix {
        Mix::Mixed => established / 2,
        _ => established,
    };
    let mut skews: Vec<f64> = merged
        .integers
        .iter()
        .filter(|(_, _, _, receivers)| *receivers * 10 >= per_stream * 9)
        .map(|(_, first, last, _)| (last - first) as f64 / 1000.0)
        .collect();
    skews.sort_by(f64::total_cmp);
    let report = Report {
        label: args.label.clone(),
        protocol: args.protocol,
        mix: args.mix,
        clients: args.clients,
        polling_clients: (0..args.clients).filter(|&index| args.polls(index)).count(),
        workers: args.workers,
        established,
        failed: merged.failed,
        first_failure: merged.first_failure.clone(),
        connect_ms_p50: percentile(&connect_ms, 0.5),
        connect_ms_p99: percentile(&connect_ms, 0.99),
        hold_seconds,
        messages_in_hold: in_hold,
        messages_per_second: in_hold as f64 / hold_seconds,
        sequence_gaps: merged.gaps,
        sequence_repeats: merged.repeats,
        skew_ms_p50: percentile(&skews, 0.5),
        skew_ms_p99: percentile(&skews, 0.99),
        skew_ms_max: skews.last().copied().unwrap_or(f64::NAN),
        server_rss_kib_before: rss_before,
        server_rss_kib_during: rss_during,
        server_rss_kib_per_connection: rss_before.zip(rss_during).map(|(before, during)| {
            (during.saturating_sub(before)) as f64 / established.max(1) as f64
        }),
        server_cpu_seconds_in_hold: cpu,
        server_cpu_seconds_per_million: cpu.map(|cpu| cpu / in_hold.max(1) as f64 * 1e6),
        healthcheck_answers: health_ms.len(),
        healthcheck_failures: health.len() - health_ms.len(),
        healthcheck_ms_p50: percentile(&health_ms, 0.5),
        healthcheck_ms_max: health_ms.last().copied().unwrap_or(f64::NAN),
        storm,
    };
    println!("{}", serde_json::to_string(&report).unwrap());
    eprintln!(
        concat!(
            "{} {:?} x{}: {} up, {} failed; connect p50 {:.1} ms p99 {:.1} ms; {:.0} msg/s; ",
            "gaps {} repeats {}; skew p50 {:.1} p99 {:.1} max {:.1} ms; ",
            "RSS/conn {} KiB; CPU-s/M {}",
        ),
        report.label,
        report.protocol,
        report.clients,
        report.established,
        report.failed,
        report.connect_ms_p50,
        report.connect_ms_p99,
        report.messages_per_second,
        report.sequence_gaps,
        report.sequence_repeats,
        report.skew_ms_p50,
        report.skew_ms_p99,
        report.skew_ms_max,
        report
            .server_rss_kib_per_connection
            .map_or("-".into(), |v| format!("{v:.2}")),
        report
            .server_cpu_seconds_per_million
            .map_or("-".into(), |v| format!("{v:.2}")),
    );
    if let Some(storm) = &report.storm {
        eprintln!(
            concat!(
                "{} storm: {} dropped over {:.0} ms, {} never back; ",
                "back p50 {:.0} p95 {:.0} p99 {:.0} p100 {:.0} ms; reconnect p99 {:.1} ms; ",
                "failures {:?}; missed {} restarts {}; ",
                "stall max {:.0} ms; health p99 {:.1} ms ({} failed); listen overflows {:?}",
            ),
            report.label,
            storm.dropped_clients,
            storm.drops_ms,
            storm.never_back,
            storm.back_ms_p50,
            storm.back_ms_p95,
            storm.back_ms_p99,
            storm.back_ms_p100,
            storm.reconnect_ms_p99,
            storm.failures,
            storm.missed_integers,
            storm.restarts,
            storm.stall_ms_max,
            storm.healthcheck_ms_p99,
            storm.healthcheck_failures,
            storm.listen_overflows,
        );
    }
}

/// The storm in what the clients saw, the samples of the servers and the health checks.
fn storm_report(
    merged: &Partial,
    samples: &[Sample],
    health: &[(u64, Option<f64>)],
    hold: (u64, u64),
    listen: Option<(u64, u64)>,
) -> Storm {
    let sorted = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values
    };
    let first_drop = merged.outages.iter().map(|outages| outages[0].0).min();
    let start = first_drop.unwrap_or(hold.1);
    // Each dropped client's last return, or `None` while it is not back.
    let returns: Vec<Option<u64>> = merged
        .outages
        .iter()
        .map(|outages| outages.last().and_then(|(_, back)| *back))
        .collect();
    let never_back = returns.iter().filter(|back| back.is_none()).count();
    let end = if never_back > 0 {
        hold.1
    } else {
        returns.iter().flatten().copied().max().unwrap_or(start)
    };
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    let back = sorted(
        returns
            .iter()
            .flatten()
            .map(|&back| ms(start, back))
            .collect(),
    );
    // The percentiles count every dropped client: one not back is past every bound.
    let back_at = |share: f64| {
        let rank = ((returns.len() as f64 * share).ceil() as usize).max(1);
        back.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    let outages = sorted(
        merged
            .outages
            .iter()
            .flatten()
            .filter_map(|&(drop, back)| Some(ms(drop, back?)))
            .collect(),
    );
    let reconnects = sorted(merged.reconnect_ms.clone());
    let checks: Vec<&Option<f64>> = health
        .iter()
        .filter(|(at, _)| (start..=end).contains(at))
        .map(|(_, answer)| answer)
        .collect();
    let health_ms = sorted(checks.iter().filter_map(|answer| **answer).collect());
    // The samples around the window: the last before it starts, the first after it ends.
    let before = samples.iter().rev().find(|sample| sample.at_us <= start);
    let after = samples
        .iter()
        .find(|sample| sample.at_us >= end)
        .or(samples.last());
    let in_window = samples
        .iter()
        .filter(|sample| (start..=end).contains(&sample.at_us));
    Storm {
        first_drop_unix_us: first_drop,
        drops_ms: merged
            .outages
            .iter()
            .map(|outages| ms(start, outages[0].0))
            .fold(f64::NAN, f64::max),
        window_seconds: ms(start, end) / 1000.0,
        dropped_clients: merged.outages.len(),
        outages: merged.outages.iter().map(Vec::len).sum(),
        never_back,
        back_ms_p50: back_at(0.5),
        back_ms_p95: back_at(0.95),
        back_ms_p99: back_at(0.99),
        back_ms_p100: if never_back > 0 {
            f64::NAN
        } else {
            back_at(1.0)
        },
        outage_ms_p50: percentile(&outages, 0.5),
        outage_ms_p99: percentile(&outages, 0.99),
        outage_ms_max: outages.last().copied().unwrap_or(f64::NAN),
        reconnections: reconnects.len(),
        reconnect_ms_p50: percentile(&reconnects, 0.5),
        reconnect_ms_p99: percentile(&reconnects, 0.99),
        reconnect_ms_max: reconnects.last().copied().unwrap_or(f64::NAN),
        failures: merged.failures.clone(),
        missed_integers: merged.missed,
        restarts: merged.restarts,
        stall_ms_max: if merged.restarts > 0 {
            f64::NAN
        } else {
            longest_stall(&merged.integers)
        },
        server_cpu_seconds_in_window: before
            .or(samples.first())
            .zip(after)
            .map(|(before, after)| after.cpu_seconds - before.cpu_seconds),
        // The most in the second before: a killed server's last sample may come after its
        // death and before its clients noticed.
        server_rss_kib_before: samples
            .iter()
            .filter(|sample| sample.at_us <= start && sample.at_us + 1_000_000 >= start)
            .map(|sample| sample.rss_kib)
            .max(),
        server_rss_kib_peak: in_window.map(|sample| sample.rss_kib).max(),
        healthcheck_answers: health_ms.len(),
        healthcheck_failures: checks.len() - health_ms.len(),
        healthcheck_ms_p50: percentile(&health_ms, 0.5),
        healthcheck_ms_p99: percentile(&health_ms, 0.99),
        healthcheck_ms_max: health_ms.last().copied().unwrap_or(f64::NAN),
        listen_overflows: listen.map(|(overflows, _)| overflows),
        listen_drops: listen.map(|(_, drops)| drops),
    }
}

/// The longest wait, in ms, between an integer and the next of its stream reaching their first
/// clients, over the integers received in the hold.
fn longest_stall(integers: &[(u64, u64, u64, usize)]) -> f64 {
    let first: HashMap<u64, u64> = integers
        .iter()
        .map(|&(integer, first, _, _)| (integer, first))
        .collect();
    integers
        .iter()
        .filter_map(|&(integer, at, _, _)| {
            let next = first.get(&(integer + 2))?;
            Some(next.saturating_sub(at) as f64 / 1000.0)
        })
        .fold(f64::NAN, f64::max)
}
