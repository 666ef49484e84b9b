//! The physical-limit probe: the least work a server can do per delivered frame on this
//! machine. One thread writes a pre-built 3-byte WebSocket text frame to each of N loopback
//! sockets with one non-blocking `write` each, round after round; another thread reads them.
//! On loopback the receiver's TCP work runs in the writer's context, so the writer's CPU time
//! per frame is the floor a server's CPU per delivered message is compared with.
//!
//! By default the reader polls its sockets in turn and never sleeps on one, so a write wakes
//! nobody: the cheapest delivery there is. `--reader epoll` reads the way real clients do
//! (the load generator, a browser, Node): asleep in `epoll_wait` until a socket has data, so
//! each write also pays for waking the reader, and that difference is measured apart.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Sockets written to in each round.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Frames written in all, spread over the rounds.
    #[arg(long, default_value_t = 2_000_000)]
    frames: u64,
    /// Give up after this long whatever the count.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// How the reader waits for data.
    #[arg(long, value_enum, default_value_t = ReaderMode::Poll)]
    reader: ReaderMode,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ReaderMode {
    /// Tries every socket in turn, never asleep on one.
    Poll,
    /// Sleeps in epoll_wait, as an event-loop client does.
    Epoll,
}

#[derive(Serialize)]
struct ProbeResult {
    sockets: usize,
    reader: ReaderMode,
    frames_written: u64,
    frames_read: u64,
    seconds: f64,
    writer_cpu_seconds: f64,
    writer_cpu_seconds_per_million: f64,
    process_cpu_seconds_per_million: f64,
}

fn thread_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct passed by pointer.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

fn main() {
    let args = Args::parse();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let mut writers = Vec::with_capacity(args.sockets);
    let mut readers = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let reader = TcpStream::connect(addr).expect("connect");
        let (writer, _) = listener.accept().expect("accept");
        writer.set_nodelay(true).unwrap();
        writer.set_nonblocking(true).unwrap();
        reader.set_nonblocking(true).unwrap();
        writers.push(writer);
        readers.push(reader);
    }

    let done = Arc::new(AtomicBool::new(false));
    let read_bytes = Arc::new(AtomicU64::new(0));
    let reader_thread = {
        let done = done.clone();
        let read_bytes = read_bytes.clone();
        let mode = args.reader;
        std::thread::spawn(move || match mode {
            ReaderMode::Poll => poll_reader(&mut readers, &done, &read_bytes),
            ReaderMode::Epoll => epoll_reader(&mut readers, &done, &read_bytes),
        })
    };

    // A text frame holding "7": FIN + text opcode, length 1, payload.
    const FRAME: [u8; 3] = [0x81, 0x01, b'7'];
    let started = Instant::now();
    let process_before = process_cpu_seconds();
    let cpu_before = thread_cpu_seconds();
    let deadline = started + Duration::from_secs(args.max_seconds);
    let mut written = 0u64;
    'rounds: while written < args.frames && Instant::now() < deadline {
        for writer in &mut writers {
            match writer.write(&FRAME) {
                Ok(3) => written += 1,
                Ok(_) => panic!("short write on loopback"),
                // The reader is behind on this socket: skip it this round, as a server would
                // leave a full socket for later.
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => panic!("write: {error}"),
            }
            if written >= args.frames {
                break 'rounds;
            }
        }
    }
    let writer_cpu = thread_cpu_seconds() - cpu_before;
    // Let the reader drain what is in flight before counting it.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while read_bytes.load(Ordering::Relaxed) < written * 3 && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = started.elapsed().as_secs_f64();
    let process_cpu = process_cpu_seconds() - process_before;
    done.store(true, Ordering::Relaxed);
    reader_thread.join().unwrap();

    let result = ProbeResult {
        sockets: args.sockets,
        reader: args.reader,
        frames_written: written,
        frames_read: read_bytes.load(Ordering::Relaxed) / 3,
        seconds,
        writer_cpu_seconds: writer_cpu,
        writer_cpu_seconds_per_million: writer_cpu / written as f64 * 1e6,
        process_cpu_seconds_per_million: process_cpu / written as f64 * 1e6,
    };
    println!("{}", serde_json::to_string(&result).unwrap());
    eprintln!(
        concat!(
            "probe: {} frames to {} sockets in {:.1} s; ",
            "writer {:.2} CPU-s per million frames (writer+reader {:.2})",
        ),
        result.frames_written,
        result.sockets,
        result.seconds,
        result.writer_cpu_seconds_per_million,
        result.process_cpu_seconds_per_million,
    );
}

/// Reads every socket in turn, sleeping briefly only when none had data.
fn poll_reader(readers: &mut [TcpStream], done: &AtomicBool, read_bytes: &AtomicU64) {
    let mut buffer = [0u8; 65536];
    while !done.load(Ordering::Relaxed) {
        let mut idle = true;
        for reader in readers.iter_mut() {
            match reader.read(&mut buffer) {
                Ok(read) if read > 0 => {
                    idle = false;
                    read_bytes.fetch_add(read as u64, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => panic!("read: {error}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Sleeps in `epoll_wait` until sockets have data (edge-triggered, as tokio registers them),
/// then reads each of them dry.
fn epoll_reader(readers: &mut [TcpStream], done: &AtomicBool, read_bytes: &AtomicU64) {
    // SAFETY: plain epoll calls on descriptors this function's caller keeps open throughout.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1 failed");
    for (index, reader) in readers.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: index as u64,
        };
        let added =
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, reader.as_raw_fd(), &mut event) };
        assert_eq!(added, 0, "epoll_ctl failed");
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buffer = [0u8; 65536];
    while !done.load(Ordering::Relaxed) {
        let ready =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 50) };
        for event in &events[..ready.max(0) as usize] {
            drain(&mut readers[event.u64 as usize], &mut buffer, read_bytes);
        }
    }
    unsafe { libc::close(epoll) };
}

/// Reads what `reader` holds until it would block.
fn drain(reader: &mut TcpStream, buffer: &mut [u8], read_bytes: &AtomicU64) {
    loop {
        match reader.read(buffer) {
            Ok(read) if read > 0 => {
                read_bytes.fetch_add(read as u64, Ordering::Relaxed);
            }
            Ok(_) => return,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return,
            Err(error) => panic!("read: {error}"),
        }
    }
}
