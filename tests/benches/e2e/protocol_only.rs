//! Section 2, protocol only: `Encoder` -> `Decoder` in memory, no sockets.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use gateway_tx::scheduler::batches;
use protocol::decoder::{Decoder, DecoderConfig, DecoderStats, Event};
use protocol::encoder::{
    DEFAULT_DATA_SHARDS, DEFAULT_INTERLEAVE, DEFAULT_MAX_DATAGRAM, DEFAULT_REPAIR_SHARDS, Encoder,
    EncoderConfig,
};
use protocol::message::{Message, SampleBatch, Stream};
use protocol::model::{Quality, Sample, Value};
use protocol::stats::EncoderStats;

use crate::json::Obj;
use crate::{KEY, Timing, XorShift};

/// Returns the samples per second of the first case (no key, no loss), what the end-to-end
/// runs are compared with.
pub(crate) fn run(timing: &Timing, out: &mut String, json: &mut Obj, blast_gbps: f64) -> f64 {
    eprintln!("e2e: protocol only ...");
    let mut protos = Vec::new();
    for key in [false, true] {
        for loss in [0.0, 0.05] {
            protos.push(protocol_only(key, loss, timing.protocol));
        }
    }
    print_protocol(out, &protos, blast_gbps);
    json.arr(
        "protocol_only",
        protos.iter().map(|p| proto_json(p, blast_gbps)).collect(),
    );
    protos[0].samples_per_sec()
}
pub(crate) struct ProtoResult {
    pub(crate) key: bool,
    pub(crate) loss: f64,
    pub(crate) rounds: u64,
    /// Bytes of all datagrams produced (data and repair).
    pub(crate) bytes: u64,
    pub(crate) datagrams: u64,
    pub(crate) data_datagrams: u64,
    pub(crate) dropped: u64,
    pub(crate) messages: u64,
    pub(crate) live_body_bytes: u64,
    pub(crate) samples_sent: u64,
    pub(crate) samples_delivered: u64,
    pub(crate) encode: Duration,
    pub(crate) decode: Duration,
    pub(crate) stats: DecoderStats,
}

impl ProtoResult {
    pub(crate) fn encode_gbps(&self) -> f64 {
        gbps(self.bytes, self.encode)
    }
    pub(crate) fn decode_gbps(&self) -> f64 {
        gbps(self.bytes, self.decode)
    }
    pub(crate) fn both_gbps(&self) -> f64 {
        gbps(self.bytes, self.encode + self.decode)
    }
    pub(crate) fn samples_per_sec(&self) -> f64 {
        self.samples_delivered as f64 / (self.encode + self.decode).as_secs_f64().max(1e-9)
    }
    pub(crate) fn label(&self) -> String {
        format!(
            "{}, {:.0} % loss",
            if self.key { "AES-GCM key" } else { "no key" },
            self.loss * 100.0
        )
    }
}

pub(crate) fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 * 8.0 / t.as_secs_f64().max(1e-9) / 1e9
}

/// Live batches as the link sender makes them: sized with its own batching to one datagram.
pub(crate) fn proto_messages(body_budget: usize, count: usize) -> Vec<Message> {
    let base = gateway_tx::unix_now();
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < count {
        let samples: Vec<Sample> = (0..4096)
            .map(|_| {
                i = i.wrapping_add(1);
                Sample {
                    tag: i % 100_000,
                    value: Value::Double(f64::from(i) * 0.25),
                    quality: Quality::GOOD,
                    time: base + i64::from(i) * 1000,
                }
            })
            .collect();
        for b in batches(samples, body_budget) {
            out.push(Message::Live(SampleBatch {
                catalogue: 0x0123_4567_89ab_cdef,
                samples: b,
            }));
        }
    }
    out.truncate(count);
    out
}

/// Encoder → Decoder in memory, in rounds of a fresh session each, until `budget` of encode
/// plus decode time is spent. The datagrams of a round are kept in one arena between the two
/// halves; `loss` of them are dropped (at random) before decoding.
pub(crate) fn protocol_only(key: bool, loss: f64, budget: Duration) -> ProtoResult {
    const MESSAGES_PER_ROUND: usize = 4096;
    let config = EncoderConfig {
        key: key.then_some(KEY),
        ..EncoderConfig::default()
    };
    let probe = Encoder::new(config.clone(), 1).expect("default encoder shape");
    let messages = proto_messages(probe.max_unfragmented_body(), MESSAGES_PER_ROUND);
    let max = probe.max_datagram();
    let mut r = ProtoResult {
        key,
        loss,
        rounds: 0,
        bytes: 0,
        datagrams: 0,
        data_datagrams: 0,
        dropped: 0,
        messages: 0,
        live_body_bytes: 0,
        samples_sent: 0,
        samples_delivered: 0,
        encode: Duration::ZERO,
        decode: Duration::ZERO,
        stats: DecoderStats::default(),
    };
    let mut arena: Vec<u8> = Vec::with_capacity(MESSAGES_PER_ROUND * 2 * max);
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(MESSAGES_PER_ROUND * 2);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ u64::from(key));
    let samples_per_round: u64 = messages
        .iter()
        .map(|m| match m {
            Message::Live(b) => b.samples.len() as u64,
            _ => 0,
        })
        .sum();
    while r.encode + r.decode < budget {
        r.rounds += 1;
        arena.clear();
        spans.clear();
        let t = Instant::now();
        let mut enc = Encoder::new(config.clone(), r.rounds).expect("default encoder shape");
        for m in &messages {
            enc.push(m, t).expect("encodable message");
            drain(&mut enc, &mut arena, &mut spans, max);
        }
        enc.flush(t);
        drain(&mut enc, &mut arena, &mut spans, max);
        r.encode += t.elapsed();
        let s: &EncoderStats = enc.stats();
        r.bytes += s.bytes;
        r.datagrams += s.datagrams;
        r.data_datagrams += s.data_datagrams;
        r.messages += s.messages(Stream::Live);
        r.live_body_bytes += s.message_bytes[Stream::Live as usize];
        r.samples_sent += samples_per_round;

        // Which datagrams the "link" drops, decided before the clock starts.
        let keep: Vec<bool> = spans.iter().map(|_| !rng.chance(loss)).collect();
        r.dropped += keep.iter().filter(|k| !**k).count() as u64;
        let t = Instant::now();
        let mut dec = Decoder::new(DecoderConfig {
            key: key.then_some(KEY),
            ..DecoderConfig::default()
        });
        for (&(at, n), keep) in spans.iter().zip(&keep) {
            if *keep {
                dec.handle_datagram(&arena[at..at + n], Instant::now());
                r.samples_delivered += drain_events(&mut dec);
            }
        }
        dec.handle_timeout(Instant::now() + Duration::from_secs(10));
        r.samples_delivered += drain_events(&mut dec);
        r.decode += t.elapsed();
        add_decoder_stats(&mut r.stats, dec.stats());
    }
    r
}

pub(crate) fn drain(
    enc: &mut Encoder,
    arena: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
    max: usize,
) {
    loop {
        let at = arena.len();
        arena.resize(at + max, 0);
        match enc.poll_transmit(&mut arena[at..]) {
            Some(n) => {
                arena.truncate(at + n);
                spans.push((at, n));
            }
            None => {
                arena.truncate(at);
                return;
            }
        }
    }
}

/// Samples delivered in the events queued so far.
pub(crate) fn drain_events(dec: &mut Decoder) -> u64 {
    let mut n = 0;
    while let Some(e) = dec.poll_event() {
        if let Event::Message {
            message: Message::Live(b),
            ..
        } = e
        {
            n += b.samples.len() as u64;
        }
    }
    n
}

pub(crate) fn add_decoder_stats(sum: &mut DecoderStats, s: &DecoderStats) {
    sum.datagrams_received += s.datagrams_received;
    sum.datagrams_repaired += s.datagrams_repaired;
    sum.data_datagrams_lost += s.data_datagrams_lost;
    sum.crc_failures += s.crc_failures;
    sum.auth_failures += s.auth_failures;
    for i in 0..4 {
        sum.messages_delivered[i] += s.messages_delivered[i];
        sum.messages_lost[i] += s.messages_lost[i];
    }
}

pub(crate) fn print_protocol(out: &mut String, ps: &[ProtoResult], blast_gbps: f64) {
    let Some(first) = ps.first() else { return };
    let cfg = EncoderConfig::default();
    let _ = writeln!(
        out,
        "\n== 2. Protocol only: Encoder -> Decoder in memory, one thread (FEC {}+{}, interleave {}, {} B datagrams, {} rounds of {} live batches)",
        DEFAULT_DATA_SHARDS,
        DEFAULT_REPAIR_SHARDS,
        DEFAULT_INTERLEAVE,
        cfg.max_datagram,
        first.rounds,
        first.messages / first.rounds.max(1)
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>9} {:>9} {:>8} {:>12} {:>9} {:>9} {:>9} {:>8}",
        "",
        "enc Gb/s",
        "dec Gb/s",
        "both Gb/s",
        "x blast",
        "samples/s",
        "smp/dgram",
        "fill %",
        "repaired",
        "lost msg"
    );
    for p in ps {
        let _ = writeln!(
            out,
            "  {:<22} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>12.0} {:>9.1} {:>9.1} {:>9} {:>8}",
            p.label(),
            p.encode_gbps(),
            p.decode_gbps(),
            p.both_gbps(),
            p.both_gbps() / blast_gbps,
            p.samples_per_sec(),
            p.samples_sent as f64 / p.data_datagrams.max(1) as f64,
            fill(p),
            p.stats.datagrams_repaired,
            p.stats.messages_lost[Stream::Live as usize],
        );
    }
    let _ = writeln!(
        out,
        "  (Gb/s counts every datagram byte, data and repair; \"x blast\" is encode+decode Gb/s / the blast's Gb/s;\n   fill % is live message bytes / data datagram bytes; samples/s counts samples delivered by the decoder)"
    );
}

/// Message bytes as a share of data datagram bytes: how full the datagrams are.
pub(crate) fn fill(p: &ProtoResult) -> f64 {
    let data_bytes = p.data_datagrams as f64 * DEFAULT_MAX_DATAGRAM as f64;
    100.0 * p.live_body_bytes as f64 / data_bytes.max(1.0)
}

pub(crate) fn proto_json(p: &ProtoResult, blast_gbps: f64) -> Obj {
    let mut o = Obj::default();
    o.bool("key", p.key);
    o.num("loss", p.loss);
    o.int("rounds", p.rounds);
    o.int("datagrams", p.datagrams);
    o.int("data_datagrams", p.data_datagrams);
    o.int("dropped", p.dropped);
    o.int("bytes", p.bytes);
    o.int("messages", p.messages);
    o.int("samples_sent", p.samples_sent);
    o.int("samples_delivered", p.samples_delivered);
    o.num("encode_s", p.encode.as_secs_f64());
    o.num("decode_s", p.decode.as_secs_f64());
    o.num("encode_gbit_per_s", p.encode_gbps());
    o.num("decode_gbit_per_s", p.decode_gbps());
    o.num("encode_decode_gbit_per_s", p.both_gbps());
    o.num("ratio_to_blast_gbit", p.both_gbps() / blast_gbps);
    o.num("samples_per_s", p.samples_per_sec());
    o.num(
        "samples_per_data_datagram",
        p.samples_sent as f64 / p.data_datagrams.max(1) as f64,
    );
    o.num("datagram_fill_percent", fill(p));
    o.int("datagrams_repaired", p.stats.datagrams_repaired);
    o.int("data_datagrams_lost", p.stats.data_datagrams_lost);
    o.int(
        "live_messages_lost",
        p.stats.messages_lost[Stream::Live as usize],
    );
    o
}
