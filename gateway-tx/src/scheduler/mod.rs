//! The link scheduler: decides what goes on the link next and encodes it into datagrams, the
//! transmitter's counterpart of `protocol::decoder`. Sans-IO: no socket and no clock; the
//! driver (`crate::link`) passes the time in, sends the datagrams it takes out, and wakes it
//! when input arrives or [`Scheduler::poll_timeout`] falls due.
//!
//! Each pass ([`Scheduler::poll`]) offers every feed its share of the link, in this order:
//!
//! | feed      | share                                                                       |
//! |-----------|-----------------------------------------------------------------------------|
//! | heartbeat | one every `heartbeat_interval`, its datagram closed at once                 |
//! | snapshot  | a slice every 100 ms, sized so every tag goes once per `snapshot_period`    |
//! | live      | every change queued in the tag table (the table bounds it, one per tag)     |
//! | catalogue | a round at start, again after 1 s, 2 s, 4 s... up to `catalogue_interval` (a reload starts over); 16 chunks per pass |
//! | history   | up to 128 messages of the history outlet per pass                           |
//!
//! A feed with more waiting than its share says so ([`Feed::backlogged`]): the driver then
//! polls again at once, and paces the link as busy. So a large catalogue round or a history
//! backfill delays a heartbeat or a live value by one pass, never by the whole backlog.
//!
//! A new stream (file transfer, syslog) is a new [`Feed`]: what it pushes at `now` within its
//! share, its own timer if it has one, whether it holds more than one share. It is added with
//! [`Scheduler::add`], after the feeds it must not delay; the other feeds do not change. When
//! its input comes from another task, the driver also waits for that input to be ready, as it
//! does for the history outlet.

mod feeds;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use config::tx::TxLink;
use protocol::catalogue::Catalogue;
use protocol::codec;
use protocol::encoder::{Encoder, EncoderConfig};
use protocol::message::{Message, SampleBatch, SourceHealth, Stream, TxCounters};
use protocol::model::{Sample, UnixNanos};
use protocol::stats::EncoderStats;
use tracing::{info, warn};

use crate::link::LinkCounters;
use crate::tags::TagTable;

pub use feeds::{CatalogueFeed, HeartbeatFeed, HistoryFeed, LiveFeed, SnapshotFeed};

/// The health of every source, read for each heartbeat.
pub type HealthFn = Arc<dyn Fn() -> Vec<SourceHealth> + Send + Sync>;

/// One stream of messages for the link, and its share of each pass.
pub trait Feed: Send {
    /// For logs; [`Scheduler::add`] replaces the feed of the same name.
    fn name(&self) -> &'static str;

    /// Pushes into `out` what is due at `now`, within this feed's share of a pass. `unix` is
    /// the wall clock at `now`.
    fn poll(&mut self, now: Instant, unix: UnixNanos, out: &mut Outbox);

    /// When this feed's own timer is due next, if it has one.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// More is waiting than one pass's share.
    fn backlogged(&self) -> bool {
        false
    }

    /// A live reload replaced the table; `out` holds the new one and its catalogue.
    fn reloaded(&mut self, _now: Instant, _out: &Outbox) {}
}

/// What every feed pushes into and sends against: the encoder, the table being sent and its
/// catalogue, and the counters the heartbeat reports.
pub struct Outbox {
    encoder: Encoder,
    table: Arc<TagTable>,
    catalogue: Catalogue,
    config_hash: u64,
    /// Batches are sized to one datagram: a lost datagram loses one batch, not fragments of two.
    body_budget: usize,
    counters: TxCounters,
    link_counters: Arc<LinkCounters>,
}

impl Outbox {
    pub fn table(&self) -> &Arc<TagTable> {
        &self.table
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn config_hash(&self) -> u64 {
        self.config_hash
    }

    /// The largest message body that travels in one datagram.
    pub fn body_budget(&self) -> usize {
        self.body_budget
    }

    pub fn counters(&self) -> &TxCounters {
        &self.counters
    }

    pub fn push(&mut self, message: &Message, now: Instant) {
        match self.encoder.push(message, now) {
            Ok(()) => self.counters.messages_sent += 1,
            Err(e) => self.refused(&e),
        }
    }

    /// Pushes a message encoded beforehand (see `protocol::encoder::Encoder::push_encoded`).
    pub fn push_encoded(&mut self, stream: Stream, body: &[u8], now: Instant) {
        match self.encoder.push_encoded(stream, body, now) {
            Ok(()) => self.counters.messages_sent += 1,
            Err(e) => self.refused(&e),
        }
    }

    /// Pushes `samples` in batches of one datagram each, made into messages by `kind`
    /// (`Message::Live` or `Message::Snapshot`) against the current catalogue.
    pub fn push_samples(
        &mut self,
        kind: fn(SampleBatch) -> Message,
        samples: Vec<Sample>,
        now: Instant,
    ) {
        for batch in batches(samples, self.body_budget) {
            let message = kind(SampleBatch {
                catalogue: self.catalogue.hash(),
                samples: batch,
            });
            self.push(&message, now);
        }
    }

    /// Closes the partial datagram so what was pushed goes out at once; the block stays open
    /// (see `protocol::encoder::Encoder::flush_payload`).
    pub fn flush_payload(&mut self, now: Instant) {
        self.encoder.flush_payload(now);
    }

    /// Counts live samples handed to the encoder.
    pub fn count_samples(&mut self, samples: usize) {
        self.counters.samples_sent += samples as u64;
        self.link_counters
            .samples_sent
            .store(self.counters.samples_sent, Ordering::Relaxed);
    }

    pub fn set_superseded(&mut self, samples: u64) {
        self.counters.samples_superseded = samples;
    }

    /// A message the encoder refused is dropped and counted: one bad value must not stop the
    /// link, which would stop every other value with it (and again after each restart).
    fn refused(&mut self, e: &protocol::EncodeError) {
        let before = self
            .link_counters
            .messages_refused
            .fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            warn!(error = %e, refused = before + 1, "message refused by the encoder and dropped");
        }
    }
}

pub struct Scheduler {
    out: Outbox,
    /// In the order each pass offers them their share.
    feeds: Vec<Box<dyn Feed>>,
    /// When the last pass ran: a backlogged feed is due again from then.
    last_poll: Instant,
}

impl Scheduler {
    /// The heartbeat, snapshot, live and catalogue feeds, in that order, on the encoder the
    /// link's MTU and FEC shape make; `now` is when the session starts.
    pub fn new(
        link: &TxLink,
        config_hash: u64,
        table: Arc<TagTable>,
        health: HealthFn,
        session: u64,
        now: Instant,
    ) -> Result<Scheduler, protocol::ConfigError> {
        let max_datagram = usize::from(link.mtu).saturating_sub(crate::pacer::IP_UDP_OVERHEAD);
        let encoder = Encoder::new(
            EncoderConfig {
                max_datagram,
                data_shards: link.fec.data_shards,
                repair_shards: link.fec.repair_shards,
                interleave: link.fec.interleave,
                flush: link.fec.flush,
                block_span: link.fec.block_span,
                key: link.key,
            },
            session,
        )?;
        let body_budget = encoder.max_unfragmented_body();
        let catalogue = Catalogue::new(table.infos().to_vec());
        Ok(Scheduler {
            out: Outbox {
                encoder,
                table,
                catalogue,
                config_hash,
                body_budget,
                counters: TxCounters::default(),
                link_counters: Arc::default(),
            },
            feeds: vec![
                Box::new(HeartbeatFeed::new(link.heartbeat_interval, health, now)),
                Box::new(SnapshotFeed::new(link.snapshot_period, now)),
                Box::new(LiveFeed),
                Box::new(CatalogueFeed::new(link.catalogue_interval, now)),
            ],
            last_poll: now,
        })
    }

    /// Adds `feed` after the others (it gets its share once they had theirs), or in the place
    /// of the feed of the same name.
    pub fn add(&mut self, feed: Box<dyn Feed>) {
        match self.feeds.iter_mut().find(|f| f.name() == feed.name()) {
            Some(f) => *f = feed,
            None => self.feeds.push(feed),
        }
    }

    pub fn session(&self) -> u64 {
        self.out.encoder.session_id()
    }

    /// The table being sent: the driver waits for its changes.
    pub fn table(&self) -> &Arc<TagTable> {
        &self.out.table
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.out.catalogue
    }

    /// The counters the heartbeat carries.
    pub fn tx_counters(&self) -> &TxCounters {
        &self.out.counters
    }

    /// The send counters, for status and metrics (the driver counts what it sends).
    pub fn link_counters(&self) -> &Arc<LinkCounters> {
        &self.out.link_counters
    }

    pub fn encoder_stats(&self) -> &EncoderStats {
        self.out.encoder.stats()
    }

    /// Switches to the table of a live reload, in the same session: each feed starts over
    /// with it (the catalogue at once and then on its start-up schedule, the snapshot from the
    /// first tag).
    pub fn reload(&mut self, table: Arc<TagTable>, config_hash: u64, now: Instant) {
        self.out.catalogue = Catalogue::new(table.infos().to_vec());
        self.out.table = table;
        self.out.config_hash = config_hash;
        for feed in &mut self.feeds {
            feed.reloaded(now, &self.out);
        }
        info!(
            tags = self.out.catalogue.len(),
            catalogue = format_args!("{:016x}", self.out.catalogue.hash()),
            "link sender switched to the reloaded config"
        );
    }

    /// One pass: every feed pushes its share of what is due at `now` (`unix`: the wall clock
    /// then), and the encoder closes what its timers say. Datagrams are then ready for
    /// [`Scheduler::peek_transmit`].
    pub fn poll(&mut self, now: Instant, unix: UnixNanos) {
        self.last_poll = now;
        for feed in &mut self.feeds {
            feed.poll(now, unix, &mut self.out);
        }
        if self.out.encoder.poll_timeout().is_some_and(|t| t <= now) {
            self.out.encoder.handle_timeout(now);
        }
    }

    /// When [`Scheduler::poll`] must run next without new input: at once while a feed is
    /// backlogged, else at the earliest feed timer or encoder timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.backlogged() {
            return Some(self.last_poll);
        }
        self.feeds
            .iter()
            .filter_map(|f| f.poll_timeout())
            .chain(self.out.encoder.poll_timeout())
            .min()
    }

    /// More is waiting than one pass takes (a catalogue round, a history backfill): the
    /// driver's pacer then counts the time until the next pass as owed.
    pub fn backlogged(&self) -> bool {
        self.feeds.iter().any(|f| f.backlogged())
    }

    /// A planned stop: closes the partial datagram and the open block, so everything pushed
    /// is ready to send, repair included.
    pub fn stop(&mut self, now: Instant) {
        self.out.encoder.flush(now);
    }

    /// The next datagram to send, left in place until [`Scheduler::advance_transmit`].
    pub fn peek_transmit(&self) -> Option<&[u8]> {
        self.out.encoder.peek_transmit()
    }

    pub fn advance_transmit(&mut self) {
        self.out.encoder.advance_transmit();
    }

    /// Datagrams ready to send.
    pub fn pending_datagrams(&self) -> usize {
        self.out.encoder.pending_datagrams()
    }

    /// Counts datagrams the driver sent, for the heartbeat's counters.
    pub fn sent(&mut self, datagrams: u64) {
        self.out.counters.datagrams_sent += datagrams;
    }
}

/// Splits samples into batches whose encoding stays within `budget` bytes, so that each batch
/// travels in one datagram. Sizes are exact (the codec counts without writing), which fills
/// datagrams about 1.4 times better than an upper bound per sample did.
pub fn batches(samples: Vec<Sample>, budget: usize) -> Vec<Vec<Sample>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    // The batch's fixed part at its largest: message tag, catalogue hash (a varint of up to
    // 10 bytes) and the sample count's varint.
    let fixed = 1 + 10 + 5;
    let mut size = fixed;
    for s in samples {
        let len = codec::sample_len(&s);
        if !current.is_empty() && size + len > budget {
            out.push(std::mem::take(&mut current));
            size = fixed;
        }
        size += len;
        current.push(s);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
