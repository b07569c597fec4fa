//! What FEC costs on the link at the default shape (64 + 16, interleave 4, flush 5 ms, block
//! span 50 ms), by the
//! rate of data datagrams: the table in WIRE.md ("Repair overhead by rate"). Run with
//! `cargo test -p protocol --test overhead -- --nocapture` to print it.

mod common;

use std::time::{Duration, Instant};

use common::message_of_size;
use protocol::message::Stream;
use protocol::{Encoder, EncoderConfig};

/// SplitMix64, for the jittered arrivals.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

struct Run {
    data: u64,
    repair: u64,
    groups: u64,
    blocks_by_timer: u64,
}

/// One-datagram messages at `rate` a second (a second's worth, at most 5,000), evenly spaced
/// or with intervals drawn uniformly from 0 to twice the mean, through a sender that fires its
/// timers on time.
fn run(rate: u64, jitter: bool) -> Run {
    let mut enc = Encoder::new(EncoderConfig::default(), 1).expect("default shape");
    let body = enc.max_unfragmented_body() - 40;
    let mean_ns = 1_000_000_000 / rate;
    let mut rng = Rng(rate);
    let t0 = Instant::now();
    let mut t = t0;
    let mut buf = vec![0u8; 2_048];
    for i in 0..rate.min(5_000) as u32 {
        let step = if jitter {
            rng.next() % (2 * mean_ns + 1)
        } else {
            mean_ns
        };
        t += Duration::from_nanos(step);
        while let Some(due) = enc.poll_timeout().filter(|due| *due <= t) {
            enc.handle_timeout(due);
        }
        let m = message_of_size(Stream::Live, body, i);
        enc.push(&m, t).expect("push");
        while enc.poll_transmit(&mut buf).is_some() {}
    }
    enc.flush(t);
    let s = enc.stats();
    Run {
        data: s.data_datagrams,
        repair: s.repair_datagrams,
        groups: s.groups,
        blocks_by_timer: s.timer_flushes,
    }
}

#[test]
fn repair_overhead_by_rate() {
    // (data datagrams/s, repair per data datagram evenly spaced and jittered: bounds)
    let expect = [
        (200u64, (0.72, 0.82), (0.68, 0.80)),
        (2_000, (0.27, 0.31), (0.27, 0.31)),
        (20_000, (0.24, 0.26), (0.24, 0.26)),
    ];
    println!("data dgram/s | spacing  | data/block | groups/block | repair per data");
    for (rate, even, jittered) in expect {
        for (jitter, bounds) in [(false, even), (true, jittered)] {
            let r = run(rate, jitter);
            assert_eq!(r.data, rate.min(5_000), "one datagram per message");
            let per_data = r.repair as f64 / r.data as f64;
            let blocks = r.blocks_by_timer.max(1) as f64;
            println!(
                "{rate:>12} | {:<8} | {:>10.1} | {:>12.2} | {per_data:.2}",
                if jitter { "jittered" } else { "even" },
                r.data as f64 / blocks,
                r.groups as f64 / blocks,
            );
            assert!(
                (bounds.0..=bounds.1).contains(&per_data),
                "{rate}/s {}: {per_data:.3} repair per data datagram",
                if jitter { "jittered" } else { "even" }
            );
        }
    }
}
