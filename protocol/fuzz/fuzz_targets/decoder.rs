//! Fuzzes the receive path: arbitrary bytes, split into datagrams, into a `Decoder`.
//!
//! Input: one mode byte, then records of `[len u16 BE][len bytes]` (the last one may be
//! short). Mode bit 0: the decoder has a key. Bit 1: the harness rewrites each datagram's CRC
//! trailer so that mutations reach the header, FEC and frame code instead of stopping at the
//! CRC. Bits 2-7: milliseconds between datagrams, so group and gap timeouts fire.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use protocol::wire;
use protocol::{Decoder, DecoderConfig};

/// The key the seed corpus was made with (`tests/fuzz_corpus.rs`).
const KEY: [u8; 32] = [0x5A; 32];

fuzz_target!(|data: &[u8]| {
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
    let mut buf = Vec::new();
    let mut count = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        buf.clear();
        buf.extend_from_slice(&rest[2..end]);
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
        if let Some(t) = dec.poll_timeout() {
            if t <= now {
                dec.handle_timeout(now);
            }
        }
    }
    dec.handle_timeout(now + Duration::from_secs(10));
    while dec.poll_event().is_some() {}
    let s = dec.stats();
    assert_eq!(s.datagrams_received, count);
    assert_eq!(s.datagrams_accepted + s.rejected(), s.datagrams_received);
});
