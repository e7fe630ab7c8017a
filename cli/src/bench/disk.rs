//! The disk's own synced-write latency, for reading durable-publish figures.
//!
//! Writes 4 KiB at the end of a file in the directory and `fdatasync`s it,
//! over and over for the given time: what one group commit of a small batch
//! costs at the least.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Synced 4 KiB writes: p50 and p99 in ms, and how many were timed.
#[derive(Debug, serde::Serialize)]
pub struct FsyncLatency {
    pub writes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Times synced 4 KiB appends in `directory` for `duration`.
pub fn measure(directory: &Path, duration: Duration) -> anyhow::Result<FsyncLatency> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("create {}", directory.display()))?;
    let path = directory.join("fsync-probe");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let block = [0x5a_u8; 4096];
    let mut latencies =
        Histogram::<u64>::new_with_max(60_000_000, 3).context("an fsync histogram")?;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let began = Instant::now();
        file.write_all(&block)
            .with_context(|| format!("write {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        latencies.saturating_record(micros);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncLatency {
        writes: latencies.len(),
        p50_ms: latencies.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
    })
}
