//! The link encoder's counters as gateway-tx shows them: their metric names and their rows on
//! the status page, one entry per counter of [`EncoderStats`] (what each counts is said in
//! protocol, and the HELP texts come from there).

use observe::metrics::Json;
use protocol::message::Stream;
use protocol::stats::EncoderStats;
use serde_json::json;

observe::family! {
    /// Datagrams produced by the encoder, by kind (data, or FEC repair).
    pub const ENCODED = counter "gateway_tx_link_datagrams_encoded_total" by "kind";
}

observe::family! {
    /// Messages encoded for the link, by stream.
    pub const MESSAGES = counter "gateway_tx_link_messages_total" by "stream";
}

observe::family! {
    /// Encoded message body bytes, by stream.
    pub const MESSAGE_BYTES = counter "gateway_tx_link_message_bytes_total" by "stream";
}

observe::counters! {
    /// Every encoder counter, in the order of its rows in the status page's "Link counters".
    pub const ENCODER: EncoderStats = EncoderStats::FIELDS;

    data_datagrams => ENCODED["data"], row "data datagrams encoded";
    repair_datagrams => ENCODED["repair"], row "repair datagrams encoded";
    groups => counter("gateway_tx_link_fec_groups_total"), row "FEC groups";
    timer_flushes => counter("gateway_tx_link_timer_flushes_total"), row "timer flushes";
    fragmented_messages => counter("gateway_tx_link_fragmented_messages_total"),
        row "fragmented messages";
    messages => MESSAGES[each &Stream::NAMES];
    message_bytes => MESSAGE_BYTES[each &Stream::NAMES];
    fec_errors => counter("gateway_tx_link_fec_errors_total");
    datagrams;
    bytes;
    payload_flushes;
}

/// Rows of the status page's "Messages by stream" table: stream, messages, bytes.
pub fn stream_rows(s: &EncoderStats) -> Vec<Json> {
    Stream::ALL
        .iter()
        .map(|st| {
            json!([
                st.name(),
                s.messages[*st as usize],
                s.message_bytes[*st as usize]
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter added to the encoder must be given a place here (if only to say it is shown
    /// nowhere), or operators would never see it.
    #[test]
    fn every_encoder_counter_has_an_entry() {
        for f in EncoderStats::FIELDS {
            assert!(
                ENCODER.iter().any(|c| c.name == f.name),
                "EncoderStats::{} has no entry in ENCODER",
                f.name
            );
        }
    }
}
