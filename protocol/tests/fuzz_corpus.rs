//! Writes the fuzz target's seed corpus (`fuzz/corpus/decoder/`): valid sessions in the
//! target's input format, so the fuzzer starts from datagrams that reach every stage.
//! Run with `cargo test -p protocol --test fuzz_corpus -- --ignored`.

mod common;

use std::time::Instant;

use common::{encode_all, message_of_size};
use protocol::message::Stream;
use protocol::{Encoder, EncoderConfig};

/// Same as the fuzz target's key.
const KEY: [u8; 32] = [0x5A; 32];

fn seed(mode: u8, datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for d in datagrams {
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seed corpus"]
fn write_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decoder");
    std::fs::create_dir_all(&dir).unwrap();
    let now = Instant::now();
    let small: Vec<_> = (0..6)
        .map(|i| message_of_size(Stream::ALL[i % Stream::COUNT], 40, i as u32))
        .collect();
    let big = vec![message_of_size(Stream::History, 3_000, 9)];
    for (name, key, shape, msgs) in [
        ("plain-small", false, (4u16, 2u16, 2u16, 300usize), &small),
        ("auth-small", true, (4, 2, 2, 300), &small),
        ("plain-fragmented", false, (3, 1, 1, 600), &big),
        ("auth-fragmented", true, (3, 1, 1, 600), &big),
    ] {
        let cfg = EncoderConfig {
            data_shards: shape.0,
            repair_shards: shape.1,
            interleave: shape.2,
            max_datagram: shape.3,
            key: key.then_some(KEY),
            ..EncoderConfig::default()
        };
        let mut enc = Encoder::new(cfg, 0x5EED).unwrap();
        let mut dgrams = encode_all(&mut enc, msgs, now);
        // Mode: key bit, CRC fix-up for the plain seeds, 1 ms between datagrams.
        let mode = u8::from(key) | if key { 0 } else { 2 } | 1 << 2;
        std::fs::write(dir.join(name), seed(mode, &dgrams)).unwrap();
        // The same session with the first data shard lost, so FEC repair is on the path.
        dgrams.remove(0);
        std::fs::write(dir.join(format!("{name}-repair")), seed(mode, &dgrams)).unwrap();
    }
}

/// The committed seeds still decode: they reach the message stage rather than dying at the
/// CRC or the header, which is what makes them useful starting points.
#[test]
fn committed_seeds_decode_to_messages() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decoder");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (&mode, mut rest) = data.split_first().unwrap();
        let mut dec = protocol::Decoder::new(protocol::DecoderConfig {
            key: (mode & 1 != 0).then_some(KEY),
            ..Default::default()
        });
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            assert_eq!(
                dec.handle_datagram(&rest[2..2 + len], now_for_seeds()),
                None
            );
            rest = &rest[2 + len..];
        }
        let messages = std::iter::from_fn(|| dec.poll_event())
            .filter(|e| matches!(e, protocol::Event::Message { .. }))
            .count();
        assert!(
            messages > 0,
            "{} delivers nothing: {:#?}",
            path.display(),
            dec.stats()
        );
        seeds += 1;
    }
    assert!(seeds >= 4);
}

fn now_for_seeds() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}
