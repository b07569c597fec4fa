//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use protocol::message::{HistoryBatch, Message, SampleBatch, Stream};
use protocol::model::{Quality, Sample, Value};
use protocol::wire::Header;
use protocol::{Decoder, DecoderConfig, Encoder, EncoderConfig, Event};

pub const KEY: [u8; 32] = [0x5A; 32];

/// A Live/History/Snapshot message whose encoded body is roughly `size` bytes.
pub fn message_of_size(stream: Stream, size: usize, tag: u32) -> Message {
    let samples = vec![Sample {
        tag,
        value: Value::ByteString((0..size).map(|i| (i as u32 ^ tag) as u8).collect()),
        quality: Quality::GOOD,
        time: i64::from(tag) * 1_000,
    }];
    match stream {
        Stream::Live => Message::Live(SampleBatch {
            catalogue: 7,
            samples,
        }),
        Stream::Snapshot => Message::Snapshot(SampleBatch {
            catalogue: 7,
            samples,
        }),
        Stream::History => Message::History(HistoryBatch {
            catalogue: 7,
            log: 1,
            first_seq: u64::from(tag),
            head_seq: u64::from(tag) + 1,
            oldest_seq: 0,
            samples,
        }),
        Stream::Syslog => Message::Syslog(protocol::message::SyslogBatch {
            first_seq: u64::from(tag),
            dropped: 0,
            records: vec![protocol::message::SyslogRecord {
                received_at: i64::from(tag),
                peer: "127.0.0.1:514".parse().expect("address"),
                bytes: vec![b'x'; size],
            }],
        }),
        Stream::Control => Message::Heartbeat(protocol::message::Heartbeat {
            sent_at: i64::from(tag),
            uptime_ms: u64::from(tag),
            catalogue: 7,
            tag_count: tag,
            config_hash: 9,
            counters: Default::default(),
            sources: vec![protocol::message::SourceHealth {
                name: "x".repeat(size),
                connected: true,
                polls_ok: 1,
                polls_failed: 0,
                last_error: String::new(),
            }],
        }),
    }
}

pub fn config(key: bool) -> EncoderConfig {
    EncoderConfig {
        key: key.then_some(KEY),
        ..EncoderConfig::default()
    }
}

pub fn decoder(key: bool) -> Decoder {
    Decoder::new(DecoderConfig {
        key: key.then_some(KEY),
        ..DecoderConfig::default()
    })
}

/// Pushes every message, flushes, and returns the datagrams in send order.
pub fn encode_all(enc: &mut Encoder, messages: &[Message], now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for m in messages {
        enc.push(m, now).expect("push");
        while let Some(n) = enc.poll_transmit(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    enc.flush(now);
    while let Some(n) = enc.poll_transmit(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

pub fn drain(dec: &mut Decoder) -> Vec<Event> {
    std::iter::from_fn(|| dec.poll_event()).collect()
}

/// Feeds datagrams, then lets every timer run out; returns all events.
pub fn decode_all(dec: &mut Decoder, datagrams: &[Vec<u8>], now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for d in datagrams {
        dec.handle_datagram(d, now);
        events.extend(drain(dec));
    }
    dec.handle_timeout(now + Duration::from_secs(3600));
    events.extend(drain(dec));
    events
}

pub fn messages(events: &[Event]) -> Vec<(Stream, u64, Message)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                stream,
                seq,
                message,
            } => Some((*stream, *seq, message.clone())),
            _ => None,
        })
        .collect()
}

pub fn header(d: &[u8]) -> Header {
    Header::parse(d).expect("header")
}

/// Compares delivered messages with the expected ones, reporting the first difference briefly
/// (messages can be large).
#[track_caller]
pub fn assert_same(
    got: &[(protocol::message::Stream, u64, Message)],
    want: &[(protocol::message::Stream, u64, Message)],
) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "message {i} differs: got ({:?}, {}), want ({:?}, {})",
            g.0,
            g.1,
            w.0,
            w.1
        );
    }
    assert_eq!(got.len(), want.len(), "number of messages delivered");
}
