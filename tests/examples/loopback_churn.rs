//! Background load for `scripts/stress.sh`: opens and closes loopback TCP
//! connections as fast as it can, so the kernel hands out (and recycles)
//! ephemeral ports all the time, as on a busy developer machine. A test
//! harness that released a port before its process bound it would lose the
//! race to these connections.
//!
//! ```sh
//! cargo run -p meridian-tests --example loopback_churn -- SECONDS [THREADS]
//! ```
//!
//! Bounded: it stops by itself after SECONDS (at most 3600), and only ever
//! connects to its own listener on 127.0.0.1. Prints the number of
//! connections made so far every 10 s, and when it ends.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MAX_SECONDS: u64 = 3600;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = match args.next().map(|value| value.parse()) {
        Some(Ok(seconds)) if seconds <= MAX_SECONDS => seconds,
        _ => {
            eprintln!("usage: loopback_churn SECONDS (at most {MAX_SECONDS}) [THREADS]");
            std::process::exit(2);
        }
    };
    let threads: usize = args
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4);
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("loopback_churn: bind 127.0.0.1:0: {error}");
            std::process::exit(1);
        }
    };
    let Ok(target) = listener.local_addr() else {
        eprintln!("loopback_churn: the listener has no address");
        std::process::exit(1);
    };
    let connections = Arc::new(AtomicU64::new(0));
    // Accepts and drops every connection; ends with the process.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let connections = Arc::clone(&connections);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    if let Ok(stream) = TcpStream::connect(target) {
                        // RST on close instead of TIME_WAIT: ports recycle at once.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        connections.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // A running total every 10 s, so a caller that stops it early still
    // sees how much load there was.
    let started = Instant::now();
    while workers.iter().any(|worker| !worker.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed().as_millis() % 10_000 < 100 {
            println!(
                "loopback_churn: {} connections in {} s",
                connections.load(Ordering::Relaxed),
                started.elapsed().as_secs()
            );
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
    println!(
        "loopback_churn: {} connections in {seconds} s",
        connections.load(Ordering::Relaxed)
    );
}
