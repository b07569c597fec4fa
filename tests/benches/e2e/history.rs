//! The history thread on its own, the part of a transmitter that section 5's stand-in source
//! leaves out: a bulk source (as a historian backfill) pushes samples into the tap as fast as
//! the tap takes them; the real thread appends them to its buffer and makes the live batches;
//! a consumer takes them from the outlet as fast as they come (the link sender's part,
//! measured in 5). The buffer is on tmpfs, so the figure is the thread's CPU, not a disk's.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use config::tx::TxConfig;
use gateway_tx::history::{History, TAP_BULK_LIMIT};
use protocol::catalogue::Catalogue;
use protocol::model::{Quality, Sample, Value};

use super::procs::threads_cpu;

const TAGS: usize = 1000;
/// Samples per push, as a historian read returns them.
const CHUNK: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct HistoryResult {
    pub seconds: f64,
    pub samples: u64,
    pub body_bytes: u64,
    pub messages: u64,
    pub thread_cpu: f64,
    pub tap_dropped: u64,
}

impl HistoryResult {
    pub fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.seconds.max(1e-9)
    }
    pub fn gbps(&self) -> f64 {
        self.body_bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e9
    }
    pub fn cpu_per_gib(&self) -> f64 {
        self.thread_cpu / (self.body_bytes as f64 / (1u64 << 30) as f64).max(1e-12)
    }
}

pub fn run_history(seconds: f64) -> anyhow::Result<HistoryResult> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .context("history bench directory")?;
    // The path every sample takes once; the carousel (which cannot be turned off) gets a
    // share of a 10 Mb/s link rate, next to nothing (the live path is not paced here).
    let text = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:9\"\nrate_mbit = 10\n[history]\ndir = \"{}\"\n\
         carousel_share = 0.1\nmax_bytes = 2000000000\n",
        dir.path().join("h").display()
    );
    let config =
        TxConfig::parse(&text, Path::new("bench/gateway-tx.toml")).map_err(|e| anyhow!("{e}"))?;
    let h = config.history.clone().context("[history]")?;
    let catalogue = Catalogue::new(super::synthetic_tags(TAGS));
    let history = History::start(&h, &config.link, &catalogue)?;
    let (tap, outlet, stats) = (history.tap(), history.outlet(), history.stats());
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let source = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || {
                let base = gateway_tx::unix_now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // As a historian read: waits while the history not yet handed to the
                    // link is over the bulk limit.
                    if tap.backlog() > TAP_BULK_LIMIT {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    tap.push((n..n + CHUNK as u64).map(|i| Sample {
                        tag: (i % TAGS as u64) as u32,
                        value: Value::Double(i as f64 * 0.37),
                        quality: Quality::GOOD,
                        time: base + i as i64 * 1_000_000,
                    }));
                    n += CHUNK as u64;
                }
            })?
    };
    let sink = {
        let (stop, bytes, messages, outlet) = (
            stop.clone(),
            bytes.clone(),
            messages.clone(),
            outlet.clone(),
        );
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match outlet.pop() {
                        Some(body) => {
                            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                            messages.fetch_add(1, Ordering::Relaxed);
                        }
                        None => std::thread::sleep(Duration::from_micros(50)),
                    }
                }
            })?
    };
    let mark = || {
        (
            Instant::now(),
            threads_cpu("history"),
            stats.live_samples.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            messages.load(Ordering::Relaxed),
        )
    };
    std::thread::sleep(Duration::from_secs_f64((seconds / 4.0).min(0.5)));
    let m1 = mark();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let m2 = mark();
    stop.store(true, Ordering::Relaxed);
    let _ = source.join();
    let _ = sink.join();
    let tap_dropped = stats.tap_dropped.load(Ordering::Relaxed);
    drop(history);
    Ok(HistoryResult {
        seconds: (m2.0 - m1.0).as_secs_f64(),
        thread_cpu: m2.1 - m1.1,
        samples: m2.2 - m1.2,
        body_bytes: m2.3 - m1.3,
        messages: m2.4 - m1.4,
        tap_dropped,
    })
}
