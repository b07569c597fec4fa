//! A UDP impairment relay for tests: sits between gateway-tx and gateway-rx and drops,
//! reorders, duplicates and corrupts datagrams, counting exactly what it did. The kernels here
//! have no netem, so this is how the link is made to misbehave on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What the relay does to the datagrams that pass. Probabilities are per datagram, 0.0..=1.0.
#[derive(Debug, Clone, Default)]
pub struct Impairments {
    pub loss: f64,
    /// Chance that a datagram starts a burst of `burst_len` consecutive losses.
    pub burst: f64,
    pub burst_len: u32,
    /// Datagrams after a burst during which no new burst starts: 0 lets bursts overlap or
    /// follow each other closely (two in one FEC block are one loss of twice the length).
    pub burst_gap: u32,
    pub duplicate: f64,
    /// Chance that a datagram is held back and released after `reorder_depth` later ones.
    pub reorder: f64,
    pub reorder_depth: usize,
    /// Chance that one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// Drop everything (a cut link) while set.
    pub cut: bool,
}

#[derive(Debug, Default)]
pub struct RelayCounters {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub corrupted: AtomicU64,
}

impl RelayCounters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct Relay {
    pub listen: SocketAddr,
    pub counters: Arc<RelayCounters>,
    impairments: Arc<Mutex<Impairments>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(
        target: SocketAddr,
        impairments: Impairments,
        seed: u64,
    ) -> std::io::Result<Relay> {
        let inbound = UdpSocket::bind("127.0.0.1:0").await?;
        let outbound = UdpSocket::bind("127.0.0.1:0").await?;
        outbound.connect(target).await?;
        let listen = inbound.local_addr()?;
        let counters = Arc::new(RelayCounters::default());
        let impairments = Arc::new(Mutex::new(impairments));
        let task = tokio::spawn(run(
            inbound,
            outbound,
            impairments.clone(),
            counters.clone(),
            seed,
        ));
        Ok(Relay {
            listen,
            counters,
            impairments,
            task,
        })
    }

    pub fn set(&self, impairments: Impairments) {
        if let Ok(mut i) = self.impairments.lock() {
            *i = impairments;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    inbound: UdpSocket,
    outbound: UdpSocket,
    impairments: Arc<Mutex<Impairments>>,
    counters: Arc<RelayCounters>,
    seed: u64,
) {
    let mut rng = XorShift(seed | 1);
    let mut buf = vec![0u8; 65536];
    let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut bursts = LossState::default();
    loop {
        let Ok(n) = inbound.recv(&mut buf).await else {
            continue;
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let imp = impairments.lock().map(|i| i.clone()).unwrap_or_default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let lost = bursts.lose(&imp, &mut rng);
        // Held datagrams are released after `depth` later arrivals, lost or not.
        let mut i = 0;
        while i < held.len() {
            held[i].0 = held[i].0.saturating_sub(1);
            if held[i].0 == 0 {
                out.push(held.remove(i).1);
            } else {
                i += 1;
            }
        }
        if lost {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut d = buf[..n].to_vec();
            if n > 0 && rng.chance(imp.corrupt) {
                let bit = (rng.next() as usize) % (n * 8);
                d[bit / 8] ^= 1 << (bit % 8);
                counters.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            if rng.chance(imp.duplicate) {
                out.push(d.clone());
                counters.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            if imp.reorder_depth > 0 && rng.chance(imp.reorder) {
                held.push((imp.reorder_depth, d));
                counters.reordered.fetch_add(1, Ordering::Relaxed);
            } else {
                out.push(d);
            }
        }
        for d in out {
            if outbound.send(&d).await.is_ok() {
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Which datagrams the relay drops: random loss, and bursts that start at random but never
/// within `burst_gap` datagrams of the previous one's end.
#[derive(Debug)]
struct LossState {
    burst_left: u32,
    since_burst: u32,
}

impl Default for LossState {
    fn default() -> LossState {
        LossState {
            burst_left: 0,
            since_burst: u32::MAX,
        }
    }
}

impl LossState {
    fn lose(&mut self, imp: &Impairments, rng: &mut XorShift) -> bool {
        if imp.cut {
            self.burst_left = 0;
            true
        } else if self.burst_left > 0 {
            self.burst_left -= 1;
            if self.burst_left == 0 {
                self.since_burst = 0;
            }
            true
        } else if self.since_burst >= imp.burst_gap && rng.chance(imp.burst) {
            self.burst_left = imp.burst_len.saturating_sub(1);
            self.since_burst = if self.burst_left == 0 { 0 } else { u32::MAX };
            true
        } else {
            self.since_burst = self.since_burst.saturating_add(1);
            rng.chance(imp.loss)
        }
    }
}

/// xorshift64*: reproducible impairments from a seed, with no dependency for a test tool.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(imp: &Impairments, n: usize) -> String {
        let mut state = LossState::default();
        let mut rng = XorShift(7);
        (0..n)
            .map(|_| if state.lose(imp, &mut rng) { 'L' } else { '.' })
            .collect()
    }

    #[test]
    fn bursts_keep_their_gap() {
        let mut imp = Impairments {
            burst: 1.0,
            burst_len: 4,
            burst_gap: 3,
            ..Impairments::default()
        };
        assert_eq!(pattern(&imp, 15), "LLLL...LLLL...L");
        imp.burst_gap = 0;
        assert_eq!(pattern(&imp, 6), "LLLLLL");
        imp.burst = 0.0;
        assert_eq!(pattern(&imp, 4), "....");
    }
}
