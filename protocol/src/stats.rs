//! Counters of the encoder and the decoder. Per-stream arrays are indexed by
//! `Stream as usize` (see [`crate::message::Stream::ALL`]).
//!
//! Each struct also lists its counters in `FIELDS` (name, doc comment, value), made from the
//! one declaration by `stats!`: the daemons show the counters from it (their metric names and
//! status rows are theirs; what a counter counts is said once, here, and their HELP texts come
//! from here), and a test of theirs fails when a counter added here has no entry in their
//! table. The first paragraph of a doc comment is that HELP text, so it is one plain sentence.

use crate::message::Stream;

/// One counter of a stats struct: its field's name, its doc comment's lines, and its value,
/// one number or one per stream (indexed like [`Stream::ALL`]).
pub struct Field<S: 'static> {
    pub name: &'static str,
    pub doc: &'static [&'static str],
    pub value: fn(&S) -> &[u64],
}

/// A counter's value as a slice: one number, or one per stream.
trait Counts {
    fn counts(&self) -> &[u64];
}

impl Counts for u64 {
    fn counts(&self) -> &[u64] {
        std::slice::from_ref(self)
    }
}

impl<const N: usize> Counts for [u64; N] {
    fn counts(&self) -> &[u64] {
        self
    }
}

/// Declares a stats struct and its `FIELDS` table (this crate does not depend on the crate
/// that declares the daemons' counters, so it has this small macro of its own).
macro_rules! stats {
    (
        $(#[$m:meta])*
        pub struct $S:ident { $($(#[doc = $doc:literal])* pub $f:ident: $t:ty,)* }
    ) => {
        $(#[$m])*
        pub struct $S { $($(#[doc = $doc])* pub $f: $t,)* }

        impl $S {
            /// Every counter, in declaration order.
            pub const FIELDS: &'static [Field<$S>] = &[$(Field {
                name: stringify!($f),
                doc: &[$($doc),*],
                value: |s| Counts::counts(&s.$f),
            },)*];
        }
    };
}

stats! {
    /// Transmit-side counters since the encoder was created.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct EncoderStats {
        /// Datagrams produced (data + repair).
        pub datagrams: u64,
        /// Data datagrams produced.
        pub data_datagrams: u64,
        /// FEC repair datagrams produced.
        pub repair_datagrams: u64,
        /// Bytes of all datagrams produced.
        pub bytes: u64,
        /// Messages accepted by `push`, per stream.
        pub messages: [u64; Stream::COUNT],
        /// Encoded body bytes of those messages, per stream.
        pub message_bytes: [u64; Stream::COUNT],
        /// Messages that needed more than one datagram.
        pub fragmented_messages: u64,
        /// FEC groups closed.
        pub groups: u64,
        /// FEC blocks closed by the block-span timer rather than by filling up.
        pub timer_flushes: u64,
        /// Data datagrams closed by the payload (flush) timer rather than by filling up.
        pub payload_flushes: u64,
        /// FEC groups whose repair shards could not be computed (never expected).
        ///
        /// See the log.
        pub fec_errors: u64,
    }
}

impl EncoderStats {
    pub fn messages(&self, stream: Stream) -> u64 {
        self.messages[stream as usize]
    }
}

stats! {
    /// Receive-side counters since the decoder was created. Every datagram given to
    /// `handle_datagram` is counted in `datagrams_received` and then either in
    /// `datagrams_accepted` or in exactly one of the reject counters (`bad_length` to
    /// `key_rate_limited`).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct DecoderStats {
        /// Datagrams given to the decoder.
        pub datagrams_received: u64,
        /// Bytes of the datagrams read from the link socket.
        pub bytes_received: u64,
        /// Datagrams that passed every check.
        pub datagrams_accepted: u64,
        /// Shorter than a header, or not the length its header gives.
        pub bad_length: u64,
        /// Not this protocol's magic number.
        pub bad_magic: u64,
        /// CRC32 mismatch.
        pub crc_failures: u64,
        /// A protocol version this decoder does not speak.
        pub bad_version: u64,
        /// Inconsistent header or shard fields.
        pub malformed: u64,
        /// With a key: authentication failed.
        pub auth_failures: u64,
        /// Already received (the same sequence number).
        pub duplicates: u64,
        /// Older than the reorder window (behind the newest sequence by `reorder_window` or
        /// more).
        pub out_of_window: u64,
        /// Datagrams of a session that may not displace the current one: with a key, one of an
        /// older epoch than the newest accepted; without, any other while the current one is
        /// live.
        pub stale_session_dropped: u64,
        /// With a key: datagrams of the session a previous run of the receiver was decoding,
        /// up to where it got (replays).
        pub replayed: u64,
        /// With a key: datagrams of unseen sessions dropped because the key derivation budget
        /// was spent (a flood of forged session ids).
        pub key_rate_limited: u64,

        /// Datagram sequence numbers never received (loss on the link, before FEC).
        ///
        /// Counted once they leave the reorder window, data and repair alike.
        pub datagrams_missing: u64,
        /// Data datagrams restored by FEC.
        pub datagrams_repaired: u64,
        /// Groups in which FEC restored at least one data shard.
        pub groups_repaired: u64,
        /// Groups abandoned with data shards known to be missing (their shape known from a
        /// repair shard). Data loss itself is counted exactly by `data_datagrams_lost`.
        pub groups_lost: u64,
        /// Data datagrams neither received nor repaired (loss beyond FEC).
        ///
        /// Exact, from `data_seq` gaps.
        pub data_datagrams_lost: u64,
        /// Groups that could not be decoded because their shards disagree (sizes, shapes); a
        /// bug or a hostile sender, as CRC and authentication passed.
        pub fec_failures: u64,
        /// Data datagrams whose place in the sequence had passed (repaired before a reordered
        /// original arrived, or given up as lost).
        pub late: u64,
        /// Frames whose structure was broken although CRC and authentication passed.
        ///
        /// A bug or a hostile sender.
        pub frame_errors: u64,
        /// Message bodies that failed to decode (also counted as lost).
        pub decode_errors: u64,
        /// Messages delivered, per stream.
        pub messages_delivered: [u64; Stream::COUNT],
        /// Messages known lost from gaps in the per-stream sequence, fragmented messages
        /// dropped part-way, and bodies that failed to decode.
        pub messages_lost: [u64; Stream::COUNT],
        /// Switches from one transmitter session to another (transmitter restarts).
        ///
        /// The first session seen is not counted.
        pub session_changes: u64,
    }
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
