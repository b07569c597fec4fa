//! Golden byte vectors: a change to the wire format must show up here and be deliberate.

use std::time::Instant;

use protocol::message::{Message, SampleBatch, Stream};
use protocol::model::{Quality, Sample, Value};
use protocol::{Decoder, DecoderConfig, Encoder, EncoderConfig, Event};

const SESSION: u64 = 0x0123_4567_89AB_CDEF;

fn key() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn message() -> Message {
    Message::Live(SampleBatch {
        catalogue: 0x1122_3344_5566_7788,
        samples: vec![Sample {
            tag: 3,
            value: Value::Double(21.5),
            quality: Quality::GOOD,
            time: 1_700_000_000_000_000_000,
        }],
    })
}

fn datagrams(key: Option<[u8; 32]>) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(
        EncoderConfig {
            key,
            ..EncoderConfig::default()
        },
        SESSION,
    )
    .unwrap();
    let now = Instant::now();
    enc.push(&message(), now).unwrap();
    enc.flush(now);
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(n) = enc.poll_transmit(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The data datagram without a key, field by field (see the worked example in WIRE.md).
const DATA_PLAIN: &str = "
    44444757 01 00 0123456789abcdef 0000000000000000 0000000000000000 0000 0040 0010 002e
    0000000000000000 0024
    01 00 00 001f
    01 88ef99abc5e88c9111 01 03 08 0000000000803540 00 8080d0e2c6bfce972f
    0200072c";

/// The first repair datagram of the same one-shard group: index 1, k = 1, m = 4 (a lone data
/// shard needs 4 repair shards to survive 5 % loss within 1e-6; see `fec::repair_count`). For
/// k = 1 every Reed-Solomon repair shard is a copy of the data shard.
const REPAIR_PLAIN: &str = "
    44444757 01 02 0123456789abcdef 0000000000000001 0000000000000000 0001 0001 0004 002e
    0000000000000000 0024 01 00 00 001f
    0188ef99abc5e88c91110103080000000000803540008080d0e2c6bfce972f
    ee3bad9e";

/// The same message with key 00 01 02 .. 1f: flags 01, payload encrypted, 16-byte tag.
const DATA_AUTH: &str = "
    44444757 01 01 0123456789abcdef 0000000000000000 0000000000000000 0000 0040 0010 002e
    7c1cf63aab5b16c697a7abe12a89795912be949e398dc5b41e7bde44f8d8a2b5fcd9d062cdeee70802bc5e78d119
    e587ddcc07b43a9629a88a9d1e1df936
    812bdc89";

const REPAIR_AUTH: &str = "
    44444757 01 03 0123456789abcdef 0000000000000001 0000000000000000 0001 0001 0004 002e
    bdf01ab59eafdbdf067b916307bd4fbf8598f18e65e296f105c894c28a78d1ef57f00bf5a99630ac6e058994e9a8
    316aebbaa295d631ccde0515f2a49789
    c12d87b8";

/// Repair datagrams 2..=4 of the group: the first one with the next seq and index.
fn check_other_repairs(d: &[Vec<u8>]) {
    assert_eq!(d.len(), 5);
    for (i, r) in d[2..].iter().enumerate() {
        let h = protocol::wire::Header::parse(r).unwrap();
        let n = 2 + i as u64;
        assert_eq!((h.seq, h.index, h.k, h.m), (n, n as u16, 1, 4));
        assert_eq!(h.payload_len, 0x2e);
        assert!(h.is_repair());
    }
}

#[test]
fn header_layout_is_pinned() {
    let h = protocol::wire::Header {
        flags: protocol::wire::FLAG_AUTHENTICATED | protocol::wire::FLAG_REPAIR,
        session: SESSION,
        seq: 0x0102_0304_0506_0708,
        group: 0x1112_1314_1516_1718,
        index: 0x2122,
        k: 0x3132,
        m: 0x4142,
        payload_len: 0x5152,
    };
    assert_eq!(
        hex(&h.to_bytes()),
        "44444757010301234567\
         89abcdef010203040506\
         07081112131415161718\
         21223132414251 52"
            .replace(' ', "")
    );
}

#[test]
fn datagrams_without_key_are_pinned() {
    let d = datagrams(None);
    assert_eq!(hex(&d[0]), hex(&unhex(DATA_PLAIN)));
    assert_eq!(hex(&d[1]), hex(&unhex(REPAIR_PLAIN)));
    check_other_repairs(&d);
    // Without a key every repair payload is the data shard itself (k = 1).
    for r in &d[2..] {
        assert_eq!(r[38..38 + 46], d[0][38..38 + 46]);
    }
}

#[test]
fn datagrams_with_key_are_pinned() {
    let d = datagrams(Some(key()));
    assert_eq!(hex(&d[0]), hex(&unhex(DATA_AUTH)));
    assert_eq!(hex(&d[1]), hex(&unhex(REPAIR_AUTH)));
    check_other_repairs(&d);
}

#[test]
fn pinned_datagrams_decode() {
    for (key, data, repair) in [
        (None, DATA_PLAIN, REPAIR_PLAIN),
        (Some(key()), DATA_AUTH, REPAIR_AUTH),
    ] {
        // Either shard alone yields the message.
        for d in [data, repair] {
            let mut dec = Decoder::new(DecoderConfig {
                key,
                ..DecoderConfig::default()
            });
            let now = Instant::now();
            assert_eq!(dec.handle_datagram(&unhex(d), now), None);
            let events: Vec<Event> = std::iter::from_fn(|| dec.poll_event()).collect();
            assert_eq!(
                events,
                vec![
                    Event::NewSession {
                        previous: None,
                        session: SESSION
                    },
                    Event::Message {
                        stream: Stream::Live,
                        seq: 0,
                        message: message()
                    },
                ]
            );
        }
    }
}
