//! The link decoder's counters as gateway-rx shows them: their metric names, their place in the
//! status JSON and their rows on the status page, one entry per counter of
//! [`DecoderStats`] (what each counts is said in protocol; HELP texts come from there unless an
//! entry says otherwise).

use observe::metrics::Json;
use protocol::decoder::DecoderStats;
use protocol::message::Stream;
use serde_json::json;

observe::family! {
    /// Datagrams received, by outcome: accepted, or the reason they were rejected.
    pub const DATAGRAMS = counter "gateway_rx_link_datagrams_total" by "outcome";
}

observe::family! {
    /// FEC groups by outcome: repaired (at least one data shard restored), lost (data shards
    /// missing beyond repair), failed (shards disagree).
    pub const FEC_GROUPS = counter "gateway_rx_link_fec_groups_total" by "outcome";
}

observe::family! {
    /// Messages delivered by the decoder, by stream.
    pub const DELIVERED = counter "gateway_rx_messages_delivered_total" by "stream";
}

observe::family! {
    /// Messages lost beyond repair, by stream (exact, from per-stream sequence gaps).
    pub const LOST = counter "gateway_rx_messages_lost_total" by "stream";
}

observe::counters! {
    /// Every decoder counter, in the order of the status page's "Link counters" rows.
    pub const DECODER: DecoderStats = DecoderStats::FIELDS;

    /// Datagrams read from the link socket; each is counted once more under
    /// gateway_rx_link_datagrams_total by outcome.
    datagrams_received => counter("gateway_rx_link_datagrams_received_total"), json,
        row "datagrams received";
    datagrams_accepted => DATAGRAMS["accepted"], json, row "accepted";
    datagrams_missing => counter("gateway_rx_link_datagrams_missing_total"), json,
        row "missing on the link (before FEC)";
    datagrams_repaired => counter("gateway_rx_link_datagrams_repaired_total"), json,
        row "repaired by FEC";
    data_datagrams_lost => counter("gateway_rx_link_data_datagrams_lost_total"), json,
        row "lost beyond FEC (data datagrams)" bad;
    crc_failures => DATAGRAMS["crc_failure"], json, row "CRC failures" warn;
    auth_failures => DATAGRAMS["auth_failure"], json, row "authentication failures" bad;
    duplicates => DATAGRAMS["duplicate"], json, row "duplicates";
    bad_magic => DATAGRAMS["bad_magic"], json,
        row "bad magic / length / version" = |s| s.bad_magic + s.bad_length + s.bad_version;
    bad_length => DATAGRAMS["bad_length"];
    bad_version => DATAGRAMS["bad_version"];
    malformed => DATAGRAMS["malformed"], row "malformed";
    out_of_window => DATAGRAMS["out_of_window"], row "out of window";
    stale_session_dropped => DATAGRAMS["stale_session"], row "older or foreign session refused" warn;
    replayed => DATAGRAMS["replayed"], row "replays refused" bad;
    key_rate_limited => DATAGRAMS["key_rate_limited"], row "new-session keys rate-limited" bad;
    session_changes => counter("gateway_rx_session_changes_total"), json, row "session changes";
    bytes_received => counter("gateway_rx_link_bytes_received_total"), json;
    late => counter("gateway_rx_link_datagrams_late_total");
    groups_repaired => FEC_GROUPS["repaired"];
    groups_lost => FEC_GROUPS["lost"];
    fec_failures => FEC_GROUPS["failed"];
    frame_errors => counter("gateway_rx_link_frame_errors_total");
    decode_errors => counter("gateway_rx_link_decode_errors_total");
    messages_delivered => DELIVERED[each &Stream::NAMES];
    messages_lost => LOST[each &Stream::NAMES], json;
    /// Messages lost beyond repair, all streams together.
    let messages_lost_total = |s| s.messages_lost.iter().sum::<u64>(), json;
}

/// Rows of the status page's "Messages by stream" table: stream, delivered, lost.
pub fn stream_rows(s: &DecoderStats) -> Vec<Json> {
    Stream::ALL
        .iter()
        .map(|st| {
            json!([
                st.name(),
                s.delivered(*st),
                { "text": s.lost(*st), "tone": if s.lost(*st) > 0 { "bad" } else { "" } },
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter added to the decoder must be given a place here (if only to say it is shown
    /// nowhere), or operators would never see it.
    #[test]
    fn every_decoder_counter_has_an_entry() {
        for f in DecoderStats::FIELDS {
            assert!(
                DECODER.iter().any(|c| c.name == f.name),
                "DecoderStats::{} has no entry in DECODER",
                f.name
            );
        }
    }
}
