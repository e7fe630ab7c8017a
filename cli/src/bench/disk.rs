//! The disk's own synced-write latency, for reading durable-publish figures.
//!
//! Two probes, each for the given time, one after the other:
//! * appends: 4 KiB written at the end of a file and `fdatasync`ed, over and
//!   over: what one group commit of a small batch costs a log that grows its
//!   file on every sync (RocksDB's write-ahead log does);
//! * overwrites: the same, into blocks of a file already written and synced,
//!   so the sync changes no file size or extent: the floor a log writing
//!   into preallocated, already-written files could reach.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// Synced 4 KiB appends: p50 and p99 in ms, and how many were timed; the
/// same for overwrites of already-written blocks (`overwrite_*`).
#[derive(Debug, serde::Serialize)]
pub struct FsyncLatency {
    pub writes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub overwrite_writes: u64,
    pub overwrite_p50_ms: f64,
    pub overwrite_p99_ms: f64,
}

/// Bytes of the file the overwrite probe cycles through (written and
/// synced before timing): 16 MiB, 4,096 blocks.
const OVERWRITE_FILE_BYTES: u64 = 16 << 20;

const BLOCK: [u8; 4096] = [0x5a_u8; 4096];

/// Times synced 4 KiB appends, then synced 4 KiB overwrites, in `directory`,
/// each for `duration`.
pub fn measure(directory: &Path, duration: Duration) -> anyhow::Result<FsyncLatency> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("create {}", directory.display()))?;
    let path = directory.join("fsync-probe");
    let appends = timed_writes(&path, duration, None)?;
    let overwrites = timed_writes(&path, duration, Some(OVERWRITE_FILE_BYTES))?;
    let _ = std::fs::remove_file(&path);
    let p = |histogram: &Histogram<u64>, quantile| {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    };
    Ok(FsyncLatency {
        writes: appends.len(),
        p50_ms: p(&appends, 0.5),
        p99_ms: p(&appends, 0.99),
        overwrite_writes: overwrites.len(),
        overwrite_p50_ms: p(&overwrites, 0.5),
        overwrite_p99_ms: p(&overwrites, 0.99),
    })
}

/// Synced 4 KiB writes to a new file at `path` for `duration`, each timed
/// in µs: appends, or with `written` bytes, overwrites cycling through that
/// many bytes written and synced first.
fn timed_writes(
    path: &Path,
    duration: Duration,
    written: Option<u64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    if let Some(bytes) = written {
        for _ in 0..bytes / BLOCK.len() as u64 {
            file.write_all(&BLOCK)
                .with_context(|| format!("write {}", path.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("fsync {}", path.display()))?;
    }
    let mut latencies =
        Histogram::<u64>::new_with_max(60_000_000, 3).context("an fsync histogram")?;
    let mut offset = 0_u64;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let began = Instant::now();
        if let Some(bytes) = written {
            file.seek(SeekFrom::Start(offset))
                .with_context(|| format!("seek {}", path.display()))?;
            offset = (offset + BLOCK.len() as u64) % bytes;
        }
        file.write_all(&BLOCK)
            .with_context(|| format!("write {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        latencies.saturating_record(micros);
    }
    Ok(latencies)
}
