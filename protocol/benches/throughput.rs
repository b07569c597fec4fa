//! Throughput of the wire layer, and its ratio to a plain UDP blast over loopback measured in
//! the same run: benchmarks report ratios against a plain UDP blast, never absolute figures.
//!
//! `cargo bench -p protocol --bench throughput` runs the criterion groups (FEC encode and
//! decode at the default shape; Encoder and Decoder with 1400-byte datagrams, with and without
//! a key), then a summary: each figure measured for a fixed time, next to the UDP blast.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use protocol::encoder::{DEFAULT_DATA_SHARDS, DEFAULT_REPAIR_SHARDS};
use protocol::fec::{GroupDecoder, GroupEncoder};
use protocol::message::{HistoryBatch, Message, SampleBatch};
use protocol::model::{Quality, Sample, Value};
use protocol::{Decoder, DecoderConfig, Encoder, EncoderConfig};

const DATAGRAM: usize = 1400;
/// Shard size at the default 1472-byte datagram without a key.
const SHARD: usize = 1430;
const KEY: [u8; 32] = [7; 32];

fn shards(k: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| (0..SHARD).map(|j| (i * 131 + j * 7) as u8).collect())
        .collect()
}

fn fec_encode(c: &mut Criterion) {
    let (k, m) = (
        usize::from(DEFAULT_DATA_SHARDS),
        usize::from(DEFAULT_REPAIR_SHARDS),
    );
    let data = shards(k);
    let mut enc = GroupEncoder::default();
    let mut out = Vec::new();
    let mut g = c.benchmark_group("fec");
    g.throughput(Throughput::Bytes((k * SHARD) as u64));
    g.bench_function("encode 64+16 x 1430 B", |b| {
        b.iter(|| {
            enc.encode(k, m, SHARD, data.iter().map(Vec::as_slice), &mut out)
                .unwrap()
        })
    });
    let mut repair = Vec::new();
    enc.encode(k, m, SHARD, data.iter().map(Vec::as_slice), &mut repair)
        .unwrap();
    let mut dec = GroupDecoder::default();
    for lost in [1usize, 16] {
        g.bench_function(format!("decode 64+16 x 1430 B, {lost} lost"), |b| {
            b.iter(|| {
                let mut n = 0;
                dec.decode(
                    k,
                    m,
                    SHARD,
                    (lost..k).map(|i| (i, data[i].as_slice())),
                    (0..lost).map(|r| (r, &repair[r * SHARD..(r + 1) * SHARD])),
                    |_, _| n += 1,
                )
                .unwrap();
                assert_eq!(n, lost);
            })
        });
    }
    g.finish();
}

fn config(key: bool) -> EncoderConfig {
    EncoderConfig {
        max_datagram: DATAGRAM,
        key: key.then_some(KEY),
        ..EncoderConfig::default()
    }
}

/// Messages that each fill one 1400-byte data datagram.
fn messages(key: bool, n: usize) -> Vec<Message> {
    let enc = Encoder::new(config(key), 1).unwrap();
    // One String sample: about 30 bytes of framing around the text. (A String rather than a
    // ByteString: serde decodes `Vec<u8>` byte by byte, which would measure serde, not the
    // wire layer.)
    let size = enc.max_unfragmented_body() - 40;
    (0..n)
        .map(|i| {
            Message::Live(SampleBatch {
                catalogue: 1,
                samples: vec![Sample {
                    tag: i as u32,
                    value: Value::String(
                        char::from(b'a' + (i % 26) as u8).to_string().repeat(size),
                    ),
                    quality: Quality::GOOD,
                    time: i as i64,
                }],
            })
        })
        .collect()
}

fn encode(enc: &mut Encoder, msgs: &[Message], buf: &mut [u8], out: &mut Vec<Vec<u8>>) -> u64 {
    let now = Instant::now();
    let mut bytes = 0;
    for m in msgs {
        enc.push(m, now).unwrap();
        while let Some(n) = enc.poll_transmit(buf) {
            bytes += n as u64;
            out.push(buf[..n].to_vec());
        }
    }
    enc.flush(now);
    while let Some(n) = enc.poll_transmit(buf) {
        bytes += n as u64;
        out.push(buf[..n].to_vec());
    }
    bytes
}

/// Encodes without keeping the datagrams (the hot path a transmitter runs).
fn encode_only(enc: &mut Encoder, msgs: &[Message], buf: &mut [u8]) -> u64 {
    let now = Instant::now();
    let mut bytes = 0;
    for m in msgs {
        enc.push(m, now).unwrap();
        while let Some(n) = enc.poll_transmit(buf) {
            bytes += n as u64;
        }
    }
    enc.flush(now);
    while let Some(n) = enc.poll_transmit(buf) {
        bytes += n as u64;
    }
    bytes
}

fn decode(key: bool, dgrams: &[Vec<u8>]) -> usize {
    let mut dec = Decoder::new(DecoderConfig {
        key: key.then_some(KEY),
        ..DecoderConfig::default()
    });
    let now = Instant::now();
    let mut delivered = 0;
    for d in dgrams {
        dec.handle_datagram(d, now);
        while let Some(e) = dec.poll_event() {
            if matches!(e, protocol::Event::Message { .. }) {
                delivered += 1;
            }
        }
    }
    delivered
}

const BATCH: usize = 2_048;

/// Bulk history as a backfill sends it: messages of about 90 kB (the e2e bench's bulk case),
/// each many fragments, of `Double` samples with source times a millisecond apart.
fn history_messages(n: usize) -> Vec<Message> {
    const SAMPLES: usize = 4_096;
    let base = 1_780_000_000_000_000_000i64;
    (0..n)
        .map(|m| {
            let first = (m * SAMPLES) as u64;
            Message::History(HistoryBatch {
                catalogue: 0x0123_4567_89ab_cdef,
                log: 0x5eed,
                first_seq: first,
                head_seq: first + SAMPLES as u64,
                oldest_seq: 0,
                samples: (0..SAMPLES)
                    .map(|i| Sample {
                        tag: (i % 1000) as u32,
                        value: Value::Double(i as f64 * 0.37),
                        quality: Quality::GOOD,
                        time: base + (first as i64 + i as i64) * 1_000_000,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// The bulk path with a key at the default FEC shape: what CPU a GiB of history costs each
/// side in the protocol alone (no sockets).
fn bulk(c: &mut Criterion) {
    let msgs = history_messages(16);
    let mut buf = vec![0u8; 2048];
    let mut dgrams = Vec::new();
    let mut enc = Encoder::new(config(true), 1).unwrap();
    let wire = encode(&mut enc, &msgs, &mut buf, &mut dgrams);
    let mut g = c.benchmark_group("bulk history, auth");
    g.throughput(Throughput::Bytes(wire));
    g.bench_function("encode", |b| {
        b.iter(|| encode_only(&mut enc, &msgs, &mut buf))
    });
    g.bench_function("decode", |b| {
        b.iter(|| assert_eq!(decode(true, &dgrams), msgs.len()))
    });
    g.finish();
}

/// The sample codec alone on the bulk messages: its share of the bulk path's CPU.
fn codec(c: &mut Criterion) {
    let msgs = history_messages(16);
    let mut buf = Vec::new();
    let encoded: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| protocol::codec::encode(m).unwrap())
        .collect();
    let mut g = c.benchmark_group("codec, bulk history");
    g.throughput(Throughput::Bytes(
        encoded.iter().map(|e| e.len() as u64).sum(),
    ));
    g.bench_function("encode", |b| {
        b.iter(|| {
            for m in &msgs {
                buf.clear();
                protocol::codec::encode_message_into(m, &mut buf).unwrap();
            }
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            for e in &encoded {
                std::hint::black_box(protocol::codec::decode_message(e).unwrap());
            }
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    for key in [false, true] {
        let label = if key { "auth" } else { "no auth" };
        let msgs = messages(key, BATCH);
        let mut buf = vec![0u8; 2048];
        let mut dgrams = Vec::new();
        let mut enc = Encoder::new(config(key), 1).unwrap();
        let wire = encode(&mut enc, &msgs, &mut buf, &mut dgrams);
        let mut g = c.benchmark_group(format!("pipeline {label}"));
        g.throughput(Throughput::Bytes(wire));
        g.bench_function("encode", |b| {
            b.iter(|| encode_only(&mut enc, &msgs, &mut buf))
        });
        g.bench_function("decode", |b| {
            b.iter(|| assert_eq!(decode(key, &dgrams), BATCH))
        });
        g.bench_function("decode, 1 in 50 lost", |b| {
            let lossy: Vec<Vec<u8>> = dgrams
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 50 != 7)
                .map(|(_, d)| d.clone())
                .collect();
            b.iter(|| assert_eq!(decode(key, &lossy), BATCH))
        });
        g.finish();
    }
}

/// Plain UDP over loopback: one `send_to` per datagram on one thread, one `recv` per datagram
/// on another, for `dur`. Returns (datagrams received per second, Gb/s received).
fn udp_blast(dur: Duration) -> (f64, f64) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            let mut first = None;
            let mut last = Instant::now();
            loop {
                match rx.recv(&mut buf) {
                    Ok(len) => {
                        debug_assert_eq!(len, DATAGRAM);
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                        n += 1;
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            let span = first.map_or(Duration::ZERO, |f| last - f);
            (n, span)
        })
    };
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![0xA5u8; DATAGRAM];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            if tx.send_to(&payload, addr).is_ok() {
                sent += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (received, span) = receiver.join().unwrap();
    let secs = span.as_secs_f64().max(1e-9);
    let rate = received as f64 / secs;
    eprintln!(
        "  udp blast: sent {sent}, received {received} ({:.1}%) in {:.2} s",
        100.0 * received as f64 / sent.max(1) as f64,
        secs
    );
    (rate, rate * DATAGRAM as f64 * 8.0 / 1e9)
}

/// Runs `f` (which processes `bytes` wire bytes) repeatedly for `dur`; returns Gb/s.
fn rate(dur: Duration, bytes: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        f();
        n += 1;
    }
    (n * bytes) as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Encoder and Decoder rates (Gb/s of wire bytes) for `msgs`, each measured for `dur`.
fn encode_decode_rates(dur: Duration, key: bool, msgs: &[Message]) -> (f64, f64) {
    let mut buf = vec![0u8; 2048];
    let mut dgrams = Vec::new();
    let mut enc = Encoder::new(config(key), 1).unwrap();
    let wire = encode(&mut enc, msgs, &mut buf, &mut dgrams);
    let e = rate(dur, wire, || {
        encode_only(&mut enc, msgs, &mut buf);
    });
    let d = rate(dur, wire, || {
        decode(key, &dgrams);
    });
    (e, d)
}

fn summary(dur: Duration) {
    eprintln!(
        "\nsummary ({} ms per figure, one thread each):",
        dur.as_millis()
    );
    let (udp_pps, udp_gbps) = udp_blast(dur);
    eprintln!(
        "  UDP blast baseline, {DATAGRAM}-byte datagrams over loopback: {:.0} datagrams/s = {udp_gbps:.2} Gb/s",
        udp_pps
    );
    let (k, m) = (
        usize::from(DEFAULT_DATA_SHARDS),
        usize::from(DEFAULT_REPAIR_SHARDS),
    );
    let data = shards(k);
    let mut fenc = GroupEncoder::default();
    let mut repair = Vec::new();
    let group = (k * SHARD) as u64;
    let g = rate(dur, group, || {
        fenc.encode(k, m, SHARD, data.iter().map(Vec::as_slice), &mut repair)
            .unwrap()
    });
    eprintln!("  FEC encode 64+16: {:.0} MB/s", g * 1e3 / 8.0);
    let mut fdec = GroupDecoder::default();
    for lost in [1usize, 16] {
        let g = rate(dur, group, || {
            fdec.decode(
                k,
                m,
                SHARD,
                (lost..k).map(|i| (i, data[i].as_slice())),
                (0..lost).map(|r| (r, &repair[r * SHARD..(r + 1) * SHARD])),
                |_, _| {},
            )
            .unwrap()
        });
        eprintln!(
            "  FEC decode 64+16, {lost:>2} lost: {:.0} MB/s",
            g * 1e3 / 8.0
        );
    }
    for key in [false, true] {
        let label = if key { "with key   " } else { "without key" };
        let (e, d) = encode_decode_rates(dur, key, &messages(key, BATCH));
        eprintln!(
            "  protocol {label}: encode {e:.2} Gb/s ({:.2}x UDP), decode {d:.2} Gb/s ({:.2}x UDP), \
             encode+decode on one core {:.2} Gb/s ({:.2}x UDP)",
            e / udp_gbps,
            d / udp_gbps,
            1.0 / (1.0 / e + 1.0 / d),
            1.0 / (1.0 / e + 1.0 / d) / udp_gbps,
        );
    }
    let (e, d) = encode_decode_rates(dur, true, &history_messages(16));
    // CPU-seconds per GiB of wire bytes, one core busy: 8 × 2^30 bits / rate.
    let per_gib = |gbps: f64| 8.0 * 1.073_741_824 / gbps;
    eprintln!(
        "  bulk history with key: encode {e:.2} Gb/s ({:.2}x UDP, {:.2} CPU-s/GiB), decode {d:.2} Gb/s \
         ({:.2}x UDP, {:.2} CPU-s/GiB)",
        e / udp_gbps,
        per_gib(e),
        d / udp_gbps,
        per_gib(d),
    );
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    fec_encode(&mut c);
    pipeline(&mut c);
    bulk(&mut c);
    codec(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once; keep the summary short there.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !std::env::args().any(|a| a == "--list") {
        summary(Duration::from_millis(if quick { 50 } else { 1_500 }));
    }
}
