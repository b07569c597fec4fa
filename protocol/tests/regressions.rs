//! Inputs that once crashed the receive path, replayed exactly as the `decoder` fuzz target
//! feeds them (see `fuzz/fuzz_targets/decoder.rs` for the input format), so that they stay
//! fixed. Add every fuzz finding here.

use std::time::{Duration, Instant};

use protocol::wire;
use protocol::{Decoder, DecoderConfig};

const KEY: [u8; 32] = [0x5A; 32];

fn replay(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut dec = Decoder::new(DecoderConfig {
        key: (mode & 1 != 0).then_some(KEY),
        reorder_window: 64,
        group_timeout: Duration::from_millis(20),
        resume: None,
    });
    let step = Duration::from_millis(u64::from(mode >> 2));
    let mut now = Instant::now();
    let mut count = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        let mut buf = rest[2..end].to_vec();
        rest = &rest[end..];
        if mode & 2 != 0 && buf.len() >= wire::CRC_LEN {
            let n = buf.len() - wire::CRC_LEN;
            let crc = wire::crc32(&buf[..n]);
            buf[n..].copy_from_slice(&crc.to_be_bytes());
        }
        now += step;
        dec.handle_datagram(&buf, now);
        count += 1;
        while dec.poll_event().is_some() {}
        if dec.poll_timeout().is_some_and(|t| t <= now) {
            dec.handle_timeout(now);
        }
    }
    dec.handle_timeout(now + Duration::from_secs(10));
    while dec.poll_event().is_some() {}
    let s = dec.stats();
    assert_eq!(s.datagrams_received, count);
    assert_eq!(s.datagrams_accepted + s.rejected(), s.datagrams_received);
}

/// A crafted repair shard (k = 1) whose rebuilt data shard claimed `data_seq` = u64::MAX:
/// delivering it overflowed the next expected `data_seq`. Rebuilt shards are now held to the
/// bound received ones are (`data_seq` below the highest `seq` seen) and counted as FEC
/// failures otherwise.
#[test]
fn rebuilt_data_seq_beyond_any_sent_is_rejected() {
    replay(include_bytes!("regressions/decoder-data-seq-overflow"));
}

#[test]
fn decoder_crash_240e5e2a() {
    replay(include_bytes!("regressions/decoder-crash-240e5e2a"));
}
