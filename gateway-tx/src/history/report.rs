//! The history stream's counters as the status page, its JSON and the Prometheus metrics show
//! them: what the buffer holds, what went out live, what the carousel and backfills re-sent, and
//! every way a sample could fail to be re-sendable (so an operator sees it before a receiver
//! records a gap that cannot heal).

use observe::prom::Exposition;
use serde_json::{Value as Json, json};

use super::HistoryStatsSnapshot;

pub fn json(s: &HistoryStatsSnapshot) -> Json {
    json!({
        "appended": s.appended,
        "head_seq": s.head_seq,
        "oldest_seq": s.oldest_seq,
        "live_seq": s.live_seq,
        "buffer_bytes": s.log_bytes,
        "segments": s.segments,
        "live_samples": s.live_samples,
        "live_read_back": s.live_read_back,
        "carousel_samples": s.carousel_samples,
        "carousel_cycles": s.carousel_cycles,
        "resend_bytes": s.resend_bytes,
        "backfill_samples": s.backfill_samples,
        "backfills_done": s.backfills_done,
        "tap_dropped": s.tap_dropped,
        "write_errors": s.write_errors,
        "deleted_unsent": s.deleted_unsent,
        "segments_deleted": s.segments_deleted,
        "records_deleted": s.records_deleted,
        "corrupt_records": s.corrupt_records,
        "unresolvable": s.unresolvable,
    })
}

/// Rows of the status page's "History stream" table.
pub fn rows(s: &HistoryStatsSnapshot) -> Vec<Json> {
    vec![
        json!(["samples appended to the buffer", s.appended]),
        json!([
            "buffer held",
            format!(
                "{} samples (seq {}..{}), {:.1} MiB in {} segments",
                s.head_seq.saturating_sub(s.oldest_seq),
                s.oldest_seq,
                s.head_seq,
                s.log_bytes as f64 / (1024.0 * 1024.0),
                s.segments
            )
        ]),
        json!([
            "waiting to go out live",
            s.head_seq.saturating_sub(s.live_seq)
        ]),
        json!(["samples sent live", s.live_samples]),
        json!([
            "of which read back from the buffer (the link was behind)",
            s.live_read_back
        ]),
        json!([
            "carousel re-sent",
            format!(
                "{} samples, {} passes",
                s.carousel_samples, s.carousel_cycles
            )
        ]),
        json!([
            "backfills done",
            format!(
                "{} ({} samples re-sent)",
                s.backfills_done, s.backfill_samples
            )
        ]),
        json!(["re-send link bytes", s.resend_bytes]),
        json!(["dropped: buffer disk too slow", s.tap_dropped]),
        json!(["not buffered: write errors", s.write_errors]),
        json!(["deleted before ever sent", s.deleted_unsent]),
        json!(["corrupt records skipped", s.corrupt_records]),
        json!(["tags gone from the catalogue", s.unresolvable]),
    ]
}

pub fn metrics(s: &HistoryStatsSnapshot, e: &mut Exposition) {
    e.counter(
        "gateway_tx_history_appended_total",
        "Samples appended to the history buffer.",
        s.appended,
    );
    e.gauge(
        "gateway_tx_history_head_seq",
        "The next history sequence number.",
        s.head_seq,
    );
    e.gauge(
        "gateway_tx_history_oldest_seq",
        "The oldest history sequence number the buffer holds.",
        s.oldest_seq,
    );
    e.gauge(
        "gateway_tx_history_live_backlog",
        "Buffered samples not yet sent live (the link is behind).",
        s.head_seq.saturating_sub(s.live_seq),
    );
    e.gauge(
        "gateway_tx_history_buffer_bytes",
        "Bytes of the history buffer on disk.",
        s.log_bytes,
    );
    e.gauge(
        "gateway_tx_history_segments",
        "Segment files of the history buffer.",
        s.segments,
    );
    e.labelled(
        "gateway_tx_history_samples_sent_total",
        "counter",
        "History samples put on the link, by why: live (once each), carousel, backfill.",
        "kind",
        [
            ("live", s.live_samples),
            ("carousel", s.carousel_samples),
            ("backfill", s.backfill_samples),
        ],
    );
    e.counter(
        "gateway_tx_history_carousel_cycles_total",
        "Passes of the carousel over its window.",
        s.carousel_cycles,
    );
    e.counter(
        "gateway_tx_history_live_read_back_total",
        "Live history samples read back from the buffer because the link was behind.",
        s.live_read_back,
    );
    e.counter(
        "gateway_tx_history_resend_bytes_total",
        "Estimated link bytes of carousel and backfill messages.",
        s.resend_bytes,
    );
    e.counter(
        "gateway_tx_history_backfills_total",
        "Operator backfill requests finished.",
        s.backfills_done,
    );
    e.labelled(
        "gateway_tx_history_lost_total",
        "counter",
        "Samples the buffer could not keep or re-send, by why (receivers record each as a gap \
         that cannot heal).",
        "reason",
        [
            ("tap_full", s.tap_dropped),
            ("write_error", s.write_errors),
            ("deleted_unsent", s.deleted_unsent),
            ("corrupt", s.corrupt_records),
            ("tag_removed", s.unresolvable),
        ],
    );
    e.counter(
        "gateway_tx_history_segments_deleted_total",
        "Buffer segments deleted by the size and age limits.",
        s.segments_deleted,
    );
}
