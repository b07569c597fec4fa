//! The messages carried inside datagrams, and the stream each one belongs to.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Sample, TagInfo, UnixNanos};

/// Identifies one version of the catalogue: the first 8 bytes (big-endian) of the SHA-256 of
/// the codec encoding of the tag list. Samples name the catalogue they index into.
pub type CatalogueHash = u64;

/// The logical streams multiplexed on the link. Each has its own message sequence so that loss
/// is counted per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Stream {
    /// Catalogue and heartbeat.
    Control = 0,
    /// Report-by-exception live values; latest wins.
    Live = 1,
    /// Rolling snapshot of every current value.
    Snapshot = 2,
    /// Time-ordered samples meant to be complete.
    History = 3,
    /// Syslog messages forwarded byte for byte (see [`SyslogBatch`]).
    Syslog = 4,
}

impl Stream {
    /// How many streams there are: the length of every per-stream array.
    pub const COUNT: usize = 5;
    pub const ALL: [Stream; Stream::COUNT] = [
        Stream::Control,
        Stream::Live,
        Stream::Snapshot,
        Stream::History,
        Stream::Syslog,
    ];
    /// Their names, in the same order (labels of per-stream counters).
    pub const NAMES: [&'static str; Stream::COUNT] = [
        Stream::Control.name(),
        Stream::Live.name(),
        Stream::Snapshot.name(),
        Stream::History.name(),
        Stream::Syslog.name(),
    ];

    pub fn from_u8(v: u8) -> Option<Stream> {
        Stream::ALL.get(usize::from(v)).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Stream::Control => "control",
            Stream::Live => "live",
            Stream::Snapshot => "snapshot",
            Stream::History => "history",
            Stream::Syslog => "syslog",
        }
    }
}

/// A part of the catalogue. The catalogue is sent in chunks so that losing one datagram loses
/// only a part, and chunks of successive rounds of the same version can be combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogueChunk {
    pub hash: CatalogueHash,
    /// Total number of tags in this catalogue version.
    pub total_tags: u32,
    /// Index of `tags[0]` in the catalogue.
    pub first_index: u32,
    pub tags: Vec<TagInfo>,
}

/// A batch of samples, all indexing into the catalogue named by `catalogue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub catalogue: CatalogueHash,
    pub samples: Vec<Sample>,
}

/// History samples: every sample the transmitter accepted, each with its own per-sample
/// sequence number in the transmitter's history log, so the receiver knows exactly which history
/// it is missing. The same sample may be sent again (the carousel, a backfill); its sequence
/// number and content are then the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryBatch {
    pub catalogue: CatalogueHash,
    /// The transmitter's history log: a random id chosen when its on-disk buffer was created.
    /// Sequence numbers count within one log; a new log (a new or wiped buffer) starts again
    /// from 0, and the receiver must not take its numbers for the old log's.
    pub log: u64,
    /// Sequence number of `samples[0]`; the samples carry consecutive numbers.
    pub first_seq: u64,
    /// The log's next sequence number when the batch was made: every number below it belongs
    /// to a sample, so the receiver knows what it misses even when the newest batches were lost.
    /// A batch with no samples only reports `head_seq` and `oldest_seq`.
    pub head_seq: u64,
    /// The oldest sequence number the transmitter's buffer still holds: history below it can
    /// no longer be re-sent.
    pub oldest_seq: u64,
    pub samples: Vec<Sample>,
}

/// Health of one source (a Modbus device, an OPC UA endpoint) as the transmitter sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub name: String,
    pub connected: bool,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// The last error, empty when none.
    pub last_error: String,
}

/// Transmitter counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxCounters {
    pub datagrams_sent: u64,
    pub messages_sent: u64,
    pub samples_sent: u64,
    /// Messages the transmitter had to drop (e.g. live values superseded before they were sent).
    pub samples_superseded: u64,
}

/// Sent every second (configurable) on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Transmitter wall clock when the heartbeat was made.
    pub sent_at: UnixNanos,
    pub uptime_ms: u64,
    pub catalogue: CatalogueHash,
    pub tag_count: u32,
    /// Hash of the transmitter's config file, so operators can tell which config is running.
    pub config_hash: u64,
    pub counters: TxCounters,
    pub sources: Vec<SourceHealth>,
}

/// The largest syslog message carried, in bytes: the most a TCP octet count or a UDP datagram
/// of syslog can sensibly hold (a UDP payload is at most 65,507 bytes).
pub const MAX_SYSLOG_MESSAGE: usize = 65_535;

/// One syslog message as gateway-tx received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyslogRecord {
    /// Transmitter wall clock when the message was received.
    pub received_at: UnixNanos,
    /// The peer that sent it: the only trace of its origin for messages without a host field.
    pub peer: SocketAddr,
    /// The message exactly as received: without its TCP framing (octet count or trailing LF),
    /// nothing else removed or rewritten. At most [`MAX_SYSLOG_MESSAGE`] bytes.
    pub bytes: Vec<u8>,
}

/// A batch of syslog messages. Records are numbered per transmitter session so that the
/// receiver knows exactly how many records (not only how many link messages) it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyslogBatch {
    /// Number of `records[0]` in the session: records carry consecutive numbers from 0.
    pub first_seq: u64,
    /// Syslog messages the transmitter dropped itself since it started (queue full, oversized,
    /// malformed framing): cumulative, so a lost batch loses no count.
    pub dropped: u64,
    pub records: Vec<SyslogRecord>,
}

impl SyslogBatch {
    /// The number after the last record: `first_seq` of the batch that follows.
    pub fn next_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.records.len() as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Catalogue(CatalogueChunk),
    Live(SampleBatch),
    Snapshot(SampleBatch),
    Heartbeat(Heartbeat),
    History(HistoryBatch),
    Syslog(SyslogBatch),
}

impl Message {
    pub fn stream(&self) -> Stream {
        match self {
            Message::Catalogue(_) | Message::Heartbeat(_) => Stream::Control,
            Message::Live(_) => Stream::Live,
            Message::Snapshot(_) => Stream::Snapshot,
            Message::History(_) => Stream::History,
            Message::Syslog(_) => Stream::Syslog,
        }
    }
}
