//! The receiving side: datagrams in, messages and loss reports out.
//!
//! Each datagram is checked in order of cost: envelope and CRC, version, header fields,
//! duplicate and age, authentication; then it joins its FEC group and, if it is a data
//! datagram, the reorder buffer. Data datagrams are delivered in `data_seq` order (received or
//! repaired); a gap is given up when nothing can fill it any more (its block has ended and the
//! link has moved [`REORDER_ALLOWANCE`] datagrams and [`REORDER_HOLD`] past it: see WIRE.md,
//! "Early give-up"), when the reorder window is full, or when the oldest datagram held behind
//! it has waited `group_timeout`.

use std::time::{Duration, Instant};

use crate::auth::{Psk, SessionKey};
use crate::epoch::epoch_of;
use crate::error::{ConfigError, Reject};
use crate::session::{Out, Session};
use crate::wire::{self, HEADER_LEN, Header, TAG_LEN};

pub use crate::session::{Event, MAX_BUFFERED_BYTES, REORDER_ALLOWANCE, REORDER_HOLD};
pub use crate::stats::DecoderStats;

pub const DEFAULT_REORDER_WINDOW: u32 = 4096;
pub const DEFAULT_GROUP_TIMEOUT: Duration = Duration::from_millis(200);
pub const MIN_REORDER_WINDOW: u32 = 64;
pub const MAX_REORDER_WINDOW: u32 = 1 << 20;
/// Without a key: how long the current session must have been silent before another session
/// is accepted (and switched to). Nothing authenticates a session then, so a live one is never
/// displaced: not by late datagrams of a restarted transmitter, nor by datagrams forged on the
/// receiver's side of the link.
pub const SESSION_HOLD: Duration = Duration::from_secs(2);
/// With a key: per-session keys derived for sessions not seen before, at most this many at
/// once and [`KEY_DERIVATIONS_PER_SEC`] a second after that. A derivation (HKDF-SHA256 and an
/// AES key schedule) and the failed authentication that follows cost about 0.7 µs here
/// (release build), so a flood of datagrams with fresh random session ids costs at most about
/// 1.4 % of a core; a real new session, whose datagrams come in a steady stream, still gets a
/// key within a few of them.
pub const KEY_DERIVATION_BURST: u32 = 1000;
pub const KEY_DERIVATIONS_PER_SEC: u32 = 20_000;
const UNKNOWN_VERSION_EVENT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Pre-shared key; with `Some`, only authenticated datagrams are accepted, and with
    /// `None` only unauthenticated ones.
    pub key: Option<Psk>,
    /// In datagrams: how far behind the newest one a datagram may arrive, how many data
    /// datagrams may be held waiting for a gap, and how many FEC groups may be open. Must
    /// exceed `interleave × (data_shards + repair_shards)` of the sender for FEC to work
    /// across a whole block, plus the reordering of the link.
    pub reorder_window: u32,
    /// How long an incomplete group, or a gap in the data datagrams, is waited for.
    pub group_timeout: Duration,
    /// With a key: the newest session this receiver accepted in an earlier run, and the highest
    /// datagram sequence it saw of it ([`Decoder::resume_point`], persisted by the caller).
    /// Sessions of an older epoch, other sessions of the same epoch, and datagrams of that
    /// session up to `seq` are refused: replays of a capture. Ignored without a key, where
    /// nothing proves which session is newer.
    pub resume: Option<ResumePoint>,
}

/// How far a receiver got: a session, and the highest datagram sequence number seen of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub session: u64,
    pub seq: u64,
}

impl std::fmt::Debug for DecoderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderConfig")
            .field("key", &self.key.map(|_| "<redacted>"))
            .field("reorder_window", &self.reorder_window)
            .field("group_timeout", &self.group_timeout)
            .field("resume", &self.resume)
            .finish()
    }
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            key: None,
            reorder_window: DEFAULT_REORDER_WINDOW,
            group_timeout: DEFAULT_GROUP_TIMEOUT,
            resume: None,
        }
    }
}

impl DecoderConfig {
    /// Checks the values; [`Decoder::new`] clamps them instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_REORDER_WINDOW..=MAX_REORDER_WINDOW).contains(&self.reorder_window) {
            return Err(ConfigError::ReorderWindow {
                value: self.reorder_window,
                min: MIN_REORDER_WINDOW,
                max: MAX_REORDER_WINDOW,
            });
        }
        if self.group_timeout < Duration::from_millis(1) {
            return Err(ConfigError::GroupTimeout);
        }
        Ok(())
    }
}

pub struct Decoder {
    psk: Option<Psk>,
    window: u32,
    timeout: Duration,
    session: Option<Session>,
    /// With a key: the newest session accepted, in this run or (from the config) an earlier one.
    newest: Option<u64>,
    /// With a key: the session an earlier run of this receiver was decoding, and the sequence
    /// up to which its datagrams are replays.
    resumed: Option<ResumePoint>,
    /// Key of the last foreign session seen, so a burst from a new session is not one key
    /// derivation per datagram.
    candidate: Option<(u64, SessionKey)>,
    /// Key derivations allowed now, and when the budget was last topped up.
    derive_tokens: u32,
    derive_refilled: Option<Instant>,
    out: Out,
    scratch: Vec<u8>,
    last_unknown_version: Option<(u8, Instant)>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("session", &self.session.as_ref().map(|s| s.id))
            .field("stats", &self.out.stats)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder; `reorder_window` is clamped to
    /// [`MIN_REORDER_WINDOW`]..=[`MAX_REORDER_WINDOW`] and `group_timeout` to at least 1 ms
    /// (use [`DecoderConfig::validate`] to report such values instead).
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            psk: config.key,
            window: config
                .reorder_window
                .clamp(MIN_REORDER_WINDOW, MAX_REORDER_WINDOW),
            timeout: config.group_timeout.max(Duration::from_millis(1)),
            newest: config
                .resume
                .filter(|_| config.key.is_some())
                .map(|r| r.session),
            resumed: config.resume.filter(|_| config.key.is_some()),
            session: None,
            candidate: None,
            derive_tokens: KEY_DERIVATION_BURST,
            derive_refilled: None,
            out: Out::default(),
            scratch: Vec::new(),
            last_unknown_version: None,
        }
    }

    pub fn stats(&self) -> &DecoderStats {
        &self.out.stats
    }

    /// The transmitter session being decoded.
    pub fn session_id(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// The session being decoded and the highest datagram sequence seen of it: what a
    /// receiver persists and gives back as [`DecoderConfig::resume`] when it restarts.
    pub fn resume_point(&self) -> Option<ResumePoint> {
        let s = self.session.as_ref()?;
        Some(ResumePoint {
            session: s.id,
            seq: s.seen.high()?,
        })
    }

    /// Takes one datagram. Never panics; a rejected datagram is counted by reason in
    /// [`DecoderStats`] and the reason returned (for rate-limited logging). Events it causes
    /// are queued for [`Decoder::poll_event`]; drain them after each call.
    pub fn handle_datagram(&mut self, bytes: &[u8], now: Instant) -> Option<Reject> {
        self.out.stats.datagrams_received += 1;
        self.out.stats.bytes_received += bytes.len() as u64;
        let result = self.receive(bytes, now);
        if let Some(s) = &mut self.session {
            s.on_arrival(now, &mut self.out);
        }
        match result {
            Ok(()) => {
                self.out.stats.datagrams_accepted += 1;
                None
            }
            Err(reject) => {
                self.count(reject, now);
                Some(reject)
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Decoder::handle_timeout`] must be called next, if anything is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref().and_then(Session::poll_timeout)
    }

    /// Gives up incomplete groups and gaps that have waited `group_timeout`.
    ///
    /// Call it only once every datagram that arrived before `now` has been given to
    /// [`Decoder::handle_datagram`] (a receiver: when its socket reads empty). These give-ups
    /// judge what has *arrived*; a receiver that was descheduled for longer than the timeout
    /// would otherwise give up groups whose last shards wait in its own socket buffer, and
    /// count as lost what the link delivered. A receiver that never catches up loses nothing
    /// by it: the reorder window and [`MAX_BUFFERED_BYTES`] bound what waits.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            s.service(now, &mut self.out);
        }
    }

    fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), Reject> {
        let h = wire::check(bytes)?;
        if h.is_authenticated() != self.psk.is_some() {
            return Err(Reject::Auth);
        }
        let current = self.session.as_ref().is_some_and(|s| s.id == h.session);
        if current {
            if let Some(s) = &self.session {
                s.check_seq(h.seq)?;
                self.check_not_replayed(&h)?;
                open(s.key.as_ref(), &h, bytes, &mut self.scratch)?;
            }
        } else {
            let key = if self.psk.is_some() {
                self.admit_keyed(&h)?;
                self.foreign_key(h.session, now)?
            } else {
                self.admit_unkeyed(now)?;
                None
            };
            open(key.as_ref(), &h, bytes, &mut self.scratch)?;
            self.switch_session(h.session, key, now);
        }
        let Some(s) = &mut self.session else {
            return Err(Reject::Malformed);
        };
        s.last_heard = now;
        self.out.stats.datagrams_missing = self
            .out
            .stats
            .datagrams_missing
            .saturating_add(s.seen.set(h.seq));
        let plain = std::mem::take(&mut self.scratch);
        let result = s.on_shard(&h, &plain, now, &mut self.out);
        self.scratch = plain;
        result
    }

    /// With a key, a session that is not the current one is taken only if it is newer than
    /// every session accepted before (by epoch; see `crate::epoch`), or is the session an
    /// earlier run of this receiver was decoding and the datagram is past where that run got.
    /// Checked before the key derivation and the authentication, which then prove it.
    fn admit_keyed(&self, h: &Header) -> Result<(), Reject> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if h.session == newest {
            return self.check_not_replayed(h);
        }
        if epoch_of(h.session) > epoch_of(newest) {
            Ok(())
        } else {
            Err(Reject::StaleSession)
        }
    }

    /// Datagrams of the session an earlier run was decoding, up to where it got, were
    /// delivered then: whoever sends them now replays a capture.
    fn check_not_replayed(&self, h: &Header) -> Result<(), Reject> {
        match self.resumed {
            Some(r) if r.session == h.session && h.seq <= r.seq => Err(Reject::Replay),
            _ => Ok(()),
        }
    }

    /// Without a key, another session is taken only once the current one has been silent for
    /// [`SESSION_HOLD`].
    fn admit_unkeyed(&self, now: Instant) -> Result<(), Reject> {
        let current_alive = self.session.as_ref().is_some_and(|s| {
            s.last_heard
                .checked_add(SESSION_HOLD)
                .is_none_or(|until| now < until)
        });
        if current_alive {
            Err(Reject::StaleSession)
        } else {
            Ok(())
        }
    }

    fn foreign_key(&mut self, session: u64, now: Instant) -> Result<Option<SessionKey>, Reject> {
        let Some(psk) = self.psk else {
            return Ok(None);
        };
        if let Some((id, key)) = &self.candidate
            && *id == session
        {
            return Ok(Some(key.clone()));
        }
        self.refill_derivations(now);
        if self.derive_tokens == 0 {
            return Err(Reject::KeyRateLimited);
        }
        self.derive_tokens -= 1;
        let key = SessionKey::derive(&psk, session).map_err(|_| Reject::Auth)?;
        self.candidate = Some((session, key.clone()));
        Ok(Some(key))
    }

    fn refill_derivations(&mut self, now: Instant) {
        let Some(last) = self.derive_refilled else {
            self.derive_refilled = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last);
        let earned = elapsed.as_micros() * u128::from(KEY_DERIVATIONS_PER_SEC) / 1_000_000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.derive_tokens = self
                .derive_tokens
                .saturating_add(earned)
                .min(KEY_DERIVATION_BURST);
            self.derive_refilled = Some(now);
        }
    }

    /// Leaves the current session (delivering what it still can and counting the rest) and
    /// starts `id`.
    fn switch_session(&mut self, id: u64, key: Option<SessionKey>, now: Instant) {
        let previous = self.session.take().map(|mut old| {
            old.finish(&mut self.out);
            self.out.stats.session_changes += 1;
            old.id
        });
        if self.psk.is_some() {
            self.newest = Some(id);
        }
        self.candidate = None;
        let resumed = self.resumed.is_some_and(|r| r.session == id);
        self.session = Some(Session::new(
            id,
            key,
            now,
            self.window,
            self.timeout,
            resumed,
        ));
        self.out.events.push_back(Event::NewSession {
            previous,
            session: id,
        });
    }

    fn count(&mut self, reject: Reject, now: Instant) {
        let s = &mut self.out.stats;
        match reject {
            Reject::BadLength => s.bad_length += 1,
            Reject::BadMagic => s.bad_magic += 1,
            Reject::Crc => s.crc_failures += 1,
            Reject::BadVersion(version) => {
                s.bad_version += 1;
                let report = self.last_unknown_version.is_none_or(|(v, at)| {
                    v != version
                        || at
                            .checked_add(UNKNOWN_VERSION_EVENT_INTERVAL)
                            .is_some_and(|t| t <= now)
                });
                if report {
                    self.last_unknown_version = Some((version, now));
                    self.out.events.push_back(Event::UnknownVersion { version });
                }
            }
            Reject::Malformed => s.malformed += 1,
            Reject::Auth => s.auth_failures += 1,
            Reject::Duplicate => s.duplicates += 1,
            Reject::OutOfWindow => s.out_of_window += 1,
            Reject::StaleSession => s.stale_session_dropped += 1,
            Reject::Replay => s.replayed += 1,
            Reject::KeyRateLimited => s.key_rate_limited += 1,
        }
    }
}

/// Copies the payload into `scratch` and, with a key, authenticates and decrypts it there.
fn open(
    key: Option<&SessionKey>,
    h: &Header,
    bytes: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), Reject> {
    let len = usize::from(h.payload_len);
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(Reject::BadLength)?;
    scratch.clear();
    scratch.extend_from_slice(payload);
    if let Some(key) = key {
        let tag = bytes
            .get(HEADER_LEN + len..HEADER_LEN + len + TAG_LEN)
            .ok_or(Reject::BadLength)?;
        key.open(h.seq, &bytes[..HEADER_LEN], scratch, tag)
            .map_err(|_| Reject::Auth)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{Encoder, EncoderConfig};
    use crate::message::{Message, SampleBatch, Stream};
    use crate::model::{Quality, Sample, Value};

    fn msg(i: u32, bytes: usize) -> Message {
        Message::Live(SampleBatch {
            catalogue: 0,
            samples: vec![Sample {
                tag: i,
                value: Value::ByteString(vec![i as u8; bytes]),
                quality: Quality::GOOD,
                time: 0,
            }],
        })
    }

    /// One message per data datagram: `n` messages, FEC shape `k`+`m`, no interleaving.
    fn stream(n: u32, k: u16, m: u16, now: Instant) -> Vec<Vec<u8>> {
        let cfg = EncoderConfig {
            data_shards: k,
            repair_shards: m,
            interleave: 1,
            ..EncoderConfig::default()
        };
        let mut enc = Encoder::new(cfg, 77).unwrap();
        let body = enc.max_unfragmented_body() - 40;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1500];
        for i in 0..n {
            enc.push(&msg(i, body), now).unwrap();
            while let Some(len) = enc.poll_transmit(&mut buf) {
                out.push(buf[..len].to_vec());
            }
        }
        enc.flush(now);
        while let Some(len) = enc.poll_transmit(&mut buf) {
            out.push(buf[..len].to_vec());
        }
        out
    }

    fn fix_crc(d: &mut [u8]) {
        let n = d.len() - wire::CRC_LEN;
        let crc = wire::crc32(&d[..n]);
        d[n..].copy_from_slice(&crc.to_be_bytes());
    }

    fn events(dec: &mut Decoder) -> Vec<Event> {
        std::iter::from_fn(|| dec.poll_event()).collect()
    }

    #[test]
    fn unknown_version_is_counted_and_reported_once_a_second() {
        let t0 = Instant::now();
        let mut d = stream(1, 4, 0, t0).remove(0);
        d[4] = 2;
        fix_crc(&mut d);
        let mut dec = Decoder::new(DecoderConfig::default());
        assert_eq!(dec.handle_datagram(&d, t0), Some(Reject::BadVersion(2)));
        assert_eq!(dec.handle_datagram(&d, t0), Some(Reject::BadVersion(2)));
        assert_eq!(events(&mut dec), vec![Event::UnknownVersion { version: 2 }]);
        dec.handle_datagram(&d, t0 + Duration::from_secs(1));
        assert_eq!(events(&mut dec), vec![Event::UnknownVersion { version: 2 }]);
        assert_eq!(dec.stats().bad_version, 3);
        assert_eq!(dec.session_id(), None);
    }

    #[test]
    fn joining_mid_session_counts_nothing_before() {
        let t0 = Instant::now();
        let all = stream(300, 8, 0, t0);
        let mut dec = Decoder::new(DecoderConfig {
            reorder_window: 64,
            ..DecoderConfig::default()
        });
        for d in &all[100..] {
            assert_eq!(dec.handle_datagram(d, t0), None);
        }
        let ev = events(&mut dec);
        assert!(matches!(
            ev[0],
            Event::NewSession {
                previous: None,
                session: 77
            }
        ));
        assert_eq!(message_seqs(&ev), (100..300).collect::<Vec<u64>>());
        let s = dec.stats();
        assert_eq!(s.messages_lost, [0; Stream::COUNT]);
        assert_eq!(s.data_datagrams_lost, 0);
        assert_eq!(s.datagrams_missing, 0);
    }

    #[test]
    fn starting_near_the_beginning_counts_early_loss() {
        let t0 = Instant::now();
        let all = stream(20, 8, 0, t0);
        let mut dec = Decoder::new(DecoderConfig::default());
        for d in &all[3..] {
            dec.handle_datagram(d, t0);
        }
        dec.handle_timeout(t0 + DEFAULT_GROUP_TIMEOUT);
        let s = dec.stats();
        assert_eq!(s.data_datagrams_lost, 3);
        assert_eq!(s.lost(Stream::Live), 3);
        assert_eq!(s.delivered(Stream::Live), 17);
    }

    /// A receiver descheduled for longer than the group timeout reads the rest of a group from
    /// its socket late: what the link delivered is repaired and delivered, not given up.
    #[test]
    fn a_receiver_that_reads_late_still_repairs_what_arrived_in_time() {
        let t0 = Instant::now();
        // Blocks of 4 data + 1 repair; data 1 of group 0 is lost on the link.
        let all = stream(20, 4, 1, t0);
        let mut dec = Decoder::new(DecoderConfig::default());
        assert_eq!(dec.handle_datagram(&all[0], t0), None);
        let late = t0 + DEFAULT_GROUP_TIMEOUT * 2;
        for d in all.iter().skip(2) {
            assert_eq!(dec.handle_datagram(d, late), None);
        }
        // Only now, with the socket read empty, do the timers run.
        dec.handle_timeout(late);
        assert_eq!(
            message_seqs(&events(&mut dec)),
            (0..20).collect::<Vec<u64>>()
        );
        let s = dec.stats();
        assert_eq!(
            (s.datagrams_repaired, s.data_datagrams_lost, s.late),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_flood_without_timer_calls_keeps_only_open_groups_tracked() {
        // A receiver under a steady flood never reads its socket empty, so the timer pass
        // never runs; complete groups must still leave the timers' queue.
        let t0 = Instant::now();
        let all = stream(2_000, 4, 1, t0);
        let mut dec = Decoder::new(DecoderConfig::default());
        for d in &all {
            assert_eq!(dec.handle_datagram(d, t0), None);
        }
        assert_eq!(message_seqs(&events(&mut dec)).len(), 2_000);
        let tracked = dec.session.as_ref().map_or(0, |s| s.tracked_groups());
        assert!(tracked <= 1, "{tracked} groups tracked after a clean flood");
    }

    #[test]
    fn unrepairable_group_is_given_up_after_the_timeout() {
        let t0 = Instant::now();
        // 4 data + 1 repair; 2 data lost.
        let all = stream(5, 4, 1, t0);
        let kept: Vec<&Vec<u8>> = all
            .iter()
            .filter(|d| {
                !matches!(
                    Header::parse(d).map(|h| (h.is_repair(), h.index)),
                    Some((false, 1 | 2))
                )
            })
            .collect();
        let mut dec = Decoder::new(DecoderConfig::default());
        for d in &kept {
            assert_eq!(dec.handle_datagram(d, t0), None);
        }
        let first = events(&mut dec);
        assert_eq!(
            first
                .iter()
                .filter(|e| matches!(e, Event::Message { .. }))
                .count(),
            1,
            "only the message before the gap"
        );
        assert_eq!(dec.poll_timeout(), Some(t0 + DEFAULT_GROUP_TIMEOUT));
        dec.handle_timeout(t0 + DEFAULT_GROUP_TIMEOUT - Duration::from_millis(1));
        assert!(events(&mut dec).is_empty());
        dec.handle_timeout(t0 + DEFAULT_GROUP_TIMEOUT);
        let ev = events(&mut dec);
        assert_eq!(ev[0], Event::DatagramsLost { count: 2 });
        assert_eq!(
            ev[1],
            Event::MessagesLost {
                stream: Stream::Live,
                count: 2
            }
        );
        let s = dec.stats();
        assert_eq!(s.groups_lost, 1);
        assert_eq!(s.groups_repaired, 0);
        assert_eq!(s.delivered(Stream::Live), 3);
        assert_eq!(dec.poll_timeout(), None);
    }

    /// Feeds `all` except the datagrams at `drop`, one every `step`, from `t0`; `late`
    /// datagrams are held back and sent right after the datagram at the given index.
    fn feed_spaced(
        dec: &mut Decoder,
        all: &[Vec<u8>],
        drop: &[usize],
        late: &[(usize, usize)],
        t0: Instant,
        step: Duration,
    ) -> Vec<(Instant, Event)> {
        let mut out = Vec::new();
        let mut t = t0;
        let mut send = |dec: &mut Decoder, d: &[u8], t: Instant| {
            assert_eq!(dec.handle_datagram(d, t), None);
            out.extend(events(dec).into_iter().map(|e| (t, e)));
        };
        for (i, d) in all.iter().enumerate() {
            t += step;
            if !drop.contains(&i) && !late.iter().any(|&(l, _)| l == i) {
                send(dec, d, t);
            }
            for &(l, after) in late {
                if after == i {
                    send(dec, &all[l], t);
                }
            }
        }
        out
    }

    fn message_seqs<'a>(ev: impl IntoIterator<Item = &'a Event>) -> Vec<u64> {
        ev.into_iter()
            .filter_map(|e| match e {
                Event::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn delivered(ev: &[(Instant, Event)]) -> Vec<u64> {
        message_seqs(ev.iter().map(|(_, e)| e))
    }

    #[test]
    fn unrecoverable_group_is_given_up_once_the_link_has_moved_past_its_block() {
        let t0 = Instant::now();
        // Blocks of 4 data + 1 repair: block b is seqs 5b..5b+4, its repair at 5b + 4.
        let all = stream(40, 4, 1, t0);
        let step = Duration::from_micros(100);
        let mut dec = Decoder::new(DecoderConfig::default());
        // Group 0 loses data 1 and 2: beyond its one repair shard.
        let ev = feed_spaced(&mut dec, &all, &[1, 2], &[], t0, step);
        assert_eq!(
            delivered(&ev),
            (0..40).filter(|&i| i != 1 && i != 2).collect::<Vec<_>>()
        );
        // Seq 5 (first data after the repair at 4) proves block 0 ended; the give-up waits
        // for seq 5 + REORDER_ALLOWANCE and for REORDER_HOLD after seq 5 arrived.
        let lost_at = ev
            .iter()
            .find(|(_, e)| matches!(e, Event::DatagramsLost { count: 2 }))
            .map(|(t, _)| *t)
            .expect("the gap is given up");
        let allowance = usize::try_from(REORDER_ALLOWANCE).unwrap();
        assert_eq!(lost_at, t0 + step * (5 + allowance as u32 + 1));
        assert!(lost_at >= t0 + step * 6 + REORDER_HOLD);
        assert!(lost_at < t0 + DEFAULT_GROUP_TIMEOUT / 10);
        let lost_events: Vec<&Event> = ev
            .iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, Event::MessagesLost { .. } | Event::DatagramsLost { .. }))
            .collect();
        assert_eq!(
            lost_events,
            vec![
                &Event::DatagramsLost { count: 2 },
                &Event::MessagesLost {
                    stream: Stream::Live,
                    count: 2
                }
            ]
        );
        let s = dec.stats();
        assert_eq!(s.groups_lost, 1);
        assert_eq!(s.data_datagrams_lost, 2);
        assert_eq!(s.delivered(Stream::Live) + s.lost(Stream::Live), 40);
        // A datagram of the given-up group that turns up now is late, not delivered.
        let t = t0 + Duration::from_millis(50);
        assert_eq!(dec.handle_datagram(&all[1], t), None);
        assert!(
            delivered(
                &events(&mut dec)
                    .into_iter()
                    .map(|e| (t, e))
                    .collect::<Vec<_>>()
            )
            .is_empty()
        );
        assert_eq!(dec.stats().late, 1);
        assert_eq!(dec.stats().data_datagrams_lost, 2);
    }

    #[test]
    fn reordering_within_the_allowance_is_not_loss() {
        let t0 = Instant::now();
        let all = stream(40, 4, 1, t0);
        let allowance = usize::try_from(REORDER_ALLOWANCE).unwrap();
        // Group 0 loses data 1; its data 2 arrives late, but before anything sent
        // REORDER_ALLOWANCE after seq 5 (the datagram that shows block 0 ended): the group is
        // repaired, even with a millisecond between datagrams.
        let mut dec = Decoder::new(DecoderConfig::default());
        let step = Duration::from_millis(1);
        let ev = feed_spaced(&mut dec, &all, &[1], &[(2, 4 + allowance)], t0, step);
        assert_eq!(delivered(&ev), (0..40).collect::<Vec<_>>());
        let s = dec.stats();
        assert_eq!((s.data_datagrams_lost, s.late, s.groups_lost), (0, 0, 0));
        assert_eq!(s.datagrams_repaired, 1);

        // One place later it is too late: the group is given up, the datagram counted late,
        // and every message accounted for once.
        let mut dec = Decoder::new(DecoderConfig::default());
        let ev = feed_spaced(&mut dec, &all, &[1], &[(2, 5 + allowance)], t0, step);
        assert_eq!(
            delivered(&ev),
            (0..40).filter(|&i| i != 1 && i != 2).collect::<Vec<_>>()
        );
        let s = dec.stats();
        assert_eq!((s.data_datagrams_lost, s.late, s.groups_lost), (2, 1, 1));
        assert_eq!(s.lost(Stream::Live), 2);
    }

    #[test]
    fn give_up_waits_for_the_reorder_hold_in_time() {
        let t0 = Instant::now();
        let all = stream(40, 4, 1, t0);
        let mut dec = Decoder::new(DecoderConfig::default());
        // Everything at once: the allowance in datagrams is met, the one in time is not.
        let ev = feed_spaced(&mut dec, &all, &[1, 2], &[], t0, Duration::ZERO);
        assert_eq!(delivered(&ev), vec![0]);
        assert_eq!(dec.poll_timeout(), Some(t0 + REORDER_HOLD));
        dec.handle_timeout(t0 + REORDER_HOLD - Duration::from_micros(1));
        assert!(events(&mut dec).is_empty());
        dec.handle_timeout(t0 + REORDER_HOLD);
        let ev: Vec<(Instant, Event)> = events(&mut dec).into_iter().map(|e| (t0, e)).collect();
        assert_eq!(delivered(&ev), (3..40).collect::<Vec<_>>());
        assert_eq!(dec.stats().data_datagrams_lost, 2);
        assert_eq!(dec.poll_timeout(), None);
    }

    #[test]
    fn without_fec_a_gap_is_given_up_after_the_allowance() {
        let t0 = Instant::now();
        let all = stream(40, 4, 0, t0);
        let step = Duration::from_micros(100);
        let mut dec = Decoder::new(DecoderConfig::default());
        let ev = feed_spaced(&mut dec, &all, &[3, 4, 10], &[], t0, step);
        let want: Vec<u64> = (0..40).filter(|i| ![3, 4, 10].contains(i)).collect();
        assert_eq!(delivered(&ev), want);
        let allowance = u32::try_from(REORDER_ALLOWANCE).unwrap();
        let lost: Vec<(Instant, u64)> = ev
            .iter()
            .filter_map(|(t, e)| match e {
                Event::DatagramsLost { count } => Some((*t, *count)),
                _ => None,
            })
            .collect();
        // Seq 5 shows 3 and 4 were sent before it; seq 11 does the same for 10.
        assert_eq!(
            lost,
            vec![
                (t0 + step * (5 + allowance + 1), 2),
                (t0 + step * (11 + allowance + 1), 1)
            ]
        );
        assert_eq!(dec.stats().data_datagrams_lost, 3);
    }

    #[test]
    fn old_and_duplicate_datagrams_are_rejected_and_gaps_counted() {
        let t0 = Instant::now();
        let all = stream(300, 8, 0, t0);
        let mut dec = Decoder::new(DecoderConfig {
            reorder_window: 64,
            ..DecoderConfig::default()
        });
        assert_eq!(dec.handle_datagram(&all[0], t0), None);
        assert_eq!(dec.handle_datagram(&all[200], t0), None);
        assert_eq!(dec.handle_datagram(&all[200], t0), Some(Reject::Duplicate));
        assert_eq!(
            dec.handle_datagram(&all[100], t0),
            Some(Reject::OutOfWindow)
        );
        let s = dec.stats();
        // 1..=136 left the 64-wide window unseen; the held datagram 200 spans > 64 data
        // datagrams, so the gap before it is given up at once.
        assert_eq!(s.datagrams_missing, 136);
        assert_eq!(s.data_datagrams_lost, 199);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_window, 1);
    }

    #[test]
    fn headers_that_run_ahead_of_the_sequence_are_malformed() {
        let t0 = Instant::now();
        let all = stream(2, 8, 0, t0);
        let mut dec = Decoder::new(DecoderConfig::default());
        // group id beyond seq.
        let mut d = all[0].clone();
        d[22..30].copy_from_slice(&5u64.to_be_bytes());
        fix_crc(&mut d);
        assert_eq!(dec.handle_datagram(&d, t0), Some(Reject::Malformed));
        // data_seq beyond seq.
        let mut d = all[1].clone();
        d[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&9u64.to_be_bytes());
        fix_crc(&mut d);
        assert_eq!(dec.handle_datagram(&d, t0), Some(Reject::Malformed));
        // len inconsistent with payload_len.
        let mut d = all[1].clone();
        d[HEADER_LEN + 9] ^= 1;
        fix_crc(&mut d);
        assert_eq!(
            dec.handle_datagram(&d, t0),
            Some(Reject::Duplicate),
            "seq 1 was seen"
        );
        assert_eq!(dec.stats().malformed, 2);
    }

    #[test]
    fn config_validation_and_clamping() {
        assert!(DecoderConfig::default().validate().is_ok());
        let small = DecoderConfig {
            reorder_window: 10,
            ..DecoderConfig::default()
        };
        assert!(matches!(
            small.validate(),
            Err(ConfigError::ReorderWindow { .. })
        ));
        let zero = DecoderConfig {
            group_timeout: Duration::ZERO,
            ..DecoderConfig::default()
        };
        assert_eq!(zero.validate(), Err(ConfigError::GroupTimeout));
        let dec = Decoder::new(small);
        assert_eq!(dec.window, MIN_REORDER_WINDOW);
        let s = format!(
            "{:?}",
            DecoderConfig {
                key: Some([9; 32]),
                ..DecoderConfig::default()
            }
        );
        assert!(s.contains("redacted"));
    }
}
