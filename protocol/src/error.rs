//! Errors of the wire layer.

/// A shape of [`crate::encoder::EncoderConfig`] or [`crate::decoder::DecoderConfig`] that
/// cannot work. Each message says what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "max_datagram {value} is out of range: it must be between {min} and {max} bytes \
         (the link MTU minus 28 for IPv4 and UDP); {min} leaves room for the {overhead}-byte \
         header and trailer, the shard prefix and {min_payload} bytes of frames"
    )]
    MaxDatagram {
        value: usize,
        min: usize,
        max: usize,
        overhead: usize,
        min_payload: usize,
    },
    #[error("data_shards must be at least 1")]
    NoDataShards,
    #[error("interleave {value} is out of range: it must be between 1 and {max}")]
    Interleave { value: u16, max: u16 },
    #[error(
        "FEC shape {k} data + {m} repair shards is not supported: data_shards + repair_shards \
         must be at most {max_total}"
    )]
    FecShape { k: u16, m: u16, max_total: usize },
    #[error(
        "one FEC group of ({k} + {m}) shards of {shard_bytes} bytes needs {bytes} bytes, more \
         than the {max}-byte limit a receiver accepts; lower the shard counts or max_datagram"
    )]
    GroupTooLarge {
        k: u16,
        m: u16,
        shard_bytes: usize,
        bytes: usize,
        max: usize,
    },
    #[error(
        "interleave {interleave} × ({k} + {m}) shards × {shard_bytes} bytes = {bytes} bytes \
         must be buffered, more than the {max}-byte limit; lower interleave, the shard counts \
         or max_datagram"
    )]
    BlockTooLarge {
        interleave: u16,
        k: u16,
        m: u16,
        shard_bytes: usize,
        bytes: usize,
        max: usize,
    },
    #[error("reorder_window {value} is out of range: it must be between {min} and {max} datagrams")]
    ReorderWindow { value: u32, min: u32, max: u32 },
    #[error("group_timeout must be at least 1 ms")]
    GroupTimeout,
    #[error("the session key could not be derived from the pre-shared key")]
    Key,
}

/// Why [`crate::encoder::Encoder::push`] refused a message. The message was not sent and
/// consumed no sequence number.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message body of {size} bytes is larger than the {max}-byte limit")]
    MessageTooLarge { size: usize, max: usize },
    #[error(transparent)]
    Codec(#[from] crate::codec::EncodeError),
}

/// Why the decoder dropped a datagram. Each reason has its own counter in
/// [`crate::decoder::DecoderStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("datagram length does not match its header, or too short for one")]
    BadLength,
    #[error("not a gateway datagram (bad magic)")]
    BadMagic,
    #[error("CRC32 mismatch")]
    Crc,
    #[error("protocol version {0} is not supported")]
    BadVersion(u8),
    #[error("header or payload fields are inconsistent")]
    Malformed,
    #[error("authentication failed or authentication mode differs from this receiver's")]
    Auth,
    #[error("duplicate datagram")]
    Duplicate,
    #[error("datagram older than the reorder window")]
    OutOfWindow,
    #[error(
        "datagram of a transmitter session that may not displace the current one (an older \
         epoch, or without a key while the current session is live)"
    )]
    StaleSession,
    #[error("datagram a previous run of this receiver already took (a replayed capture)")]
    Replay,
    #[error("datagram of a new session dropped: too many session keys derived this second")]
    KeyRateLimited,
}
