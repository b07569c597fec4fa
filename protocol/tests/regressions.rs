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

/// The fuzz target's own input for the same overflow: a frame whose stream sequence jumps to
/// near u64::MAX, then another loss on that stream.
#[test]
fn messages_lost_saturates_on_a_forged_stream_sequence() {
    replay(include_bytes!("regressions/decoder-messages-lost-overflow"));
}

/// One unauthenticated data datagram of session 1: datagram sequence `seq` (its own group,
/// no FEC), `data_seq`, and one whole live frame of message sequence `msg_seq` with an empty
/// body (which fails to decode: counted, as any body a forger makes up).
fn forged(seq: u64, data_seq: u64, msg_seq: u64) -> Vec<u8> {
    use protocol::frame::{Fragment, FrameHeader, write_header};
    use protocol::message::Stream;
    let mut frames = Vec::new();
    write_header(
        &FrameHeader {
            stream: Stream::Live,
            fragment: Fragment::Whole,
            seq: msg_seq,
            body_len: 0,
        },
        &mut frames,
    );
    let mut payload = data_seq.to_be_bytes().to_vec();
    payload.extend_from_slice(&(frames.len() as u16).to_be_bytes());
    payload.extend_from_slice(&frames);
    let h = wire::Header {
        flags: 0,
        session: 1,
        seq,
        group: seq,
        index: 0,
        k: 1,
        m: 0,
        payload_len: payload.len() as u16,
    };
    let mut d = h.to_bytes().to_vec();
    d.extend_from_slice(&payload);
    let crc = wire::crc32(&d);
    d.extend_from_slice(&crc.to_be_bytes());
    d
}

/// Loss counters are sums of jumps in sequence numbers a sender chooses: two jumps to near
/// u64::MAX overflowed them (a panic in debug and fuzz builds, wrong counts in release). They
/// saturate now.
#[test]
fn loss_counters_saturate_on_sequence_jumps_to_the_end() {
    let mut dec = Decoder::new(DecoderConfig {
        reorder_window: 64,
        group_timeout: Duration::from_millis(20),
        ..DecoderConfig::default()
    });
    let mut now = Instant::now();
    for (seq, data_seq, msg_seq) in [
        (0, 0, 0),
        (1 << 63, 1 << 63, 1 << 63),
        (u64::MAX - 1, u64::MAX - 1, u64::MAX - 1),
        (u64::MAX, u64::MAX, u64::MAX),
    ] {
        now += Duration::from_millis(50);
        dec.handle_datagram(&forged(seq, data_seq, msg_seq), now);
        dec.handle_timeout(now);
        while dec.poll_event().is_some() {}
    }
    dec.handle_timeout(now + Duration::from_secs(10));
    while dec.poll_event().is_some() {}
    let s = dec.stats();
    assert_eq!(s.datagrams_accepted + s.rejected(), s.datagrams_received);
    assert!(s.datagrams_missing >= 1 << 63);
    assert!(s.data_datagrams_lost >= 1 << 63);
}
