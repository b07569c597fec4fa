//! Counters of the encoder and the decoder. Per-stream arrays are indexed by
//! `Stream as usize` (see [`crate::message::Stream::ALL`]).

use crate::message::Stream;

/// Transmit-side counters since the encoder was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Datagrams produced (data + repair).
    pub datagrams: u64,
    pub data_datagrams: u64,
    pub repair_datagrams: u64,
    /// Bytes of all datagrams produced.
    pub bytes: u64,
    /// Messages accepted by `push`, per stream.
    pub messages: [u64; 4],
    /// Encoded body bytes of those messages, per stream.
    pub message_bytes: [u64; 4],
    /// Messages that needed more than one datagram.
    pub fragmented_messages: u64,
    /// FEC groups closed.
    pub groups: u64,
    /// Blocks closed by the block-span timer rather than by filling up.
    pub timer_flushes: u64,
    /// Data datagrams closed by the payload (flush) timer rather than by filling up.
    pub payload_flushes: u64,
    /// Groups whose repair shards could not be computed (never expected; see the log).
    pub fec_errors: u64,
}

impl EncoderStats {
    pub fn messages(&self, stream: Stream) -> u64 {
        self.messages[stream as usize]
    }
}

/// Receive-side counters since the decoder was created. Every datagram given to
/// `handle_datagram` is counted in `datagrams_received` and then either in
/// `datagrams_accepted` or in exactly one of the reject counters (`bad_length` to
/// `key_rate_limited`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub datagrams_accepted: u64,
    pub bad_length: u64,
    pub bad_magic: u64,
    pub crc_failures: u64,
    pub bad_version: u64,
    /// Inconsistent header or shard fields.
    pub malformed: u64,
    pub auth_failures: u64,
    pub duplicates: u64,
    /// Older than the reorder window (behind the newest sequence by `reorder_window` or more).
    pub out_of_window: u64,
    /// Datagrams of a session that may not displace the current one: with a key, one of an
    /// older epoch than the newest accepted; without, any other while the current one is live.
    pub stale_session_dropped: u64,
    /// With a key: datagrams of the session a previous run of the receiver was decoding, up to
    /// where it got (replays).
    pub replayed: u64,
    /// With a key: datagrams of unseen sessions dropped because the key derivation budget was
    /// spent (a flood of forged session ids).
    pub key_rate_limited: u64,

    /// Datagram sequence numbers never received, counted once they leave the reorder window:
    /// the link's loss before FEC (data and repair alike).
    pub datagrams_missing: u64,
    /// Data shards restored by FEC.
    pub datagrams_repaired: u64,
    /// Groups in which FEC restored at least one data shard.
    pub groups_repaired: u64,
    /// Groups abandoned with data shards known to be missing (their shape known from a
    /// repair shard). Data loss itself is counted exactly by `data_datagrams_lost`.
    pub groups_lost: u64,
    /// Data datagrams that neither arrived nor were repaired (exact, from `data_seq` gaps).
    pub data_datagrams_lost: u64,
    /// Groups that could not be decoded because their shards disagree (sizes, shapes); a bug
    /// or a hostile sender, as CRC and authentication passed.
    pub fec_failures: u64,
    /// Data datagrams (received or restored) whose place in the sequence had already passed:
    /// restored by FEC before a reordered original arrived, or given up as lost.
    pub late: u64,
    /// Frames whose structure is broken (a bug or a hostile sender, as CRC and
    /// authentication passed).
    pub frame_errors: u64,
    /// Message bodies that failed to decode (also counted in `messages_lost`).
    pub decode_errors: u64,
    pub messages_delivered: [u64; 4],
    /// Messages known lost from gaps in the per-stream sequence, fragmented messages dropped
    /// part-way, and bodies that failed to decode.
    pub messages_lost: [u64; 4],
    /// Switches from one transmitter session to another (not counting the first one seen).
    pub session_changes: u64,
}

impl DecoderStats {
    pub fn delivered(&self, stream: Stream) -> u64 {
        self.messages_delivered[stream as usize]
    }

    pub fn lost(&self, stream: Stream) -> u64 {
        self.messages_lost[stream as usize]
    }

    /// All rejected datagrams, whatever the reason.
    pub fn rejected(&self) -> u64 {
        self.bad_length
            + self.bad_magic
            + self.crc_failures
            + self.bad_version
            + self.malformed
            + self.auth_failures
            + self.duplicates
            + self.out_of_window
            + self.stale_session_dropped
            + self.replayed
            + self.key_rate_limited
    }
}
