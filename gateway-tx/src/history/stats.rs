//! The history stream's counters, each declared once with how operators see it (the status
//! page's "History stream" table, its JSON and the Prometheus metrics): what the buffer holds,
//! what went out live, what the carousel and backfills re-sent, and every way a sample could
//! fail to be re-sendable (so an operator sees it before a receiver records a gap that cannot
//! heal).

observe::family! {
    /// History samples put on the link, by why: live (once each), carousel, backfill.
    pub const SENT = counter "gateway_tx_history_samples_sent_total" by "kind";
}

observe::family! {
    /// Samples the buffer could not keep or re-send, by why (receivers record each as a gap
    /// that cannot heal).
    pub const LOST = counter "gateway_tx_history_lost_total" by "reason";
}

observe::counters! {
    /// Counters of the history stream, updated by the history thread.
    #[derive(Debug, Default)]
    pub struct HistoryStats;
    /// A copy of [`HistoryStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HistoryStatsSnapshot;

    /// Samples appended to the history buffer.
    appended => counter("gateway_tx_history_appended_total"), json,
        row "samples appended to the buffer";
    /// The next history sequence number.
    ///
    /// The log's head.
    head_seq => gauge("gateway_tx_history_head_seq"), json,
        row "buffer held" = |s| format!(
            "{} samples (seq {}..{}), {:.1} MiB in {} segments",
            s.head_seq.saturating_sub(s.oldest_seq),
            s.oldest_seq,
            s.head_seq,
            s.log_bytes as f64 / (1024.0 * 1024.0),
            s.segments
        );
    /// The oldest history sequence number the buffer holds.
    oldest_seq => gauge("gateway_tx_history_oldest_seq"), json;
    /// Everything below this was handed to the link once.
    live_seq, json;
    /// Buffered samples not yet sent live (the link is behind).
    let live_backlog = |s| s.head_seq.saturating_sub(s.live_seq)
        => gauge("gateway_tx_history_live_backlog"), row "waiting to go out live";
    /// Bytes of the history buffer on disk.
    log_bytes => gauge("gateway_tx_history_buffer_bytes"), json "buffer_bytes";
    /// Segment files of the history buffer.
    segments => gauge("gateway_tx_history_segments"), json;
    live_samples => SENT["live"], json, row "samples sent live";
    /// Live history samples read back from the buffer because the link was behind.
    ///
    /// They waited beyond the memory the thread keeps.
    live_read_back => counter("gateway_tx_history_live_read_back_total"), json,
        row "of which read back from the buffer (the link was behind)";
    carousel_samples => SENT["carousel"], json,
        row "carousel re-sent" = |s| format!(
            "{} samples, {} passes", s.carousel_samples, s.carousel_cycles
        );
    /// Passes of the carousel over its window.
    carousel_cycles => counter("gateway_tx_history_carousel_cycles_total"), json;
    /// Operator backfill requests finished.
    backfills_done => counter("gateway_tx_history_backfills_total"), json,
        row "backfills done" = |s| format!(
            "{} ({} samples re-sent)", s.backfills_done, s.backfill_samples
        );
    backfill_samples => SENT["backfill"], json;
    /// Estimated link bytes of carousel and backfill messages.
    ///
    /// Datagram headers and FEC repair included.
    resend_bytes => counter("gateway_tx_history_resend_bytes_total"), json,
        row "re-send link bytes";
    /// Samples dropped because the tap was full (the disk too slow).
    tap_dropped => LOST["tap_full"], json, row "dropped: buffer disk too slow";
    /// Samples not buffered because the disk write failed.
    write_errors => LOST["write_error"], json, row "not buffered: write errors";
    /// Deleted before they were ever sent (the link was slower than the history for longer
    /// than the buffer holds).
    deleted_unsent => LOST["deleted_unsent"], json, row "deleted before ever sent";
    /// Records skipped as corrupt when read back.
    corrupt_records => LOST["corrupt"], json, row "corrupt records skipped";
    /// Records not re-sent: their tag is in no current catalogue.
    unresolvable => LOST["tag_removed"], json, row "tags gone from the catalogue";
    /// Buffer segments deleted by the size and age limits.
    segments_deleted => counter("gateway_tx_history_segments_deleted_total"), json;
    /// Records in the segments deleted by the size and age limits.
    records_deleted, json;
}
