//! The publisher's side of the MQTT QoS 1 and QoS 2 flows for one window, without I/O: which
//! packets go out and when, what each acknowledgement from the broker means. The packet
//! identifier of message `i` is `i + 1`, fixed by the window (and the journal), so a window
//! sent again after a reconnect or a restart carries the same identifiers.
//!
//! QoS 1: PUBLISH → PUBACK. QoS 2: PUBLISH → PUBREC (the broker owns the message now; the
//! caller journals that before anything else) → PUBREL → PUBCOMP. On a new connection a
//! message not yet acknowledged goes out again as PUBLISH with DUP set, and a released one as
//! PUBREL (MQTT 3.1.1, 4.4), so a broker that kept the session delivers each message once.
//!
//! At most `limit` messages are in flight (sent and not complete) at once. A broker limits the
//! QoS 2 messages it holds for a client (mosquitto: `max_inflight_messages`, 20 by default),
//! and mosquitto 2.0.11 does not refuse what goes beyond: it answers PUBREC and, on the PUBREL,
//! PUBCOMP, but forwards nothing (in a test, 500 QoS 2 messages in flight, all acknowledged: it
//! forwarded 20 of them). So at QoS 2 the limit stays at or below the broker's; a released
//! message counts until its PUBCOMP, so the broker never holds more than the limit.

use std::collections::BTreeSet;

use rumqttc::{Packet, PubRel, Publish, QoS};

use super::journal::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent on this connection (`maybe_sent`: perhaps on an earlier one).
    Waiting,
    /// PUBLISH sent; no PUBACK / PUBREC yet.
    Sent,
    /// QoS 2: PUBREC arrived and was journaled; PUBREL sent (or to send), no PUBCOMP yet.
    Released,
    Complete,
}

/// What an incoming packet means for the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Nothing: not an acknowledgement of this window's packets, or a repeat.
    None,
    /// QoS 2: PUBREC: the caller journals the release, then calls [`Flight::release`].
    Received(u16),
    /// QoS 2: PUBREC again for a released packet: its PUBREL goes again.
    Rerelease(u16),
    /// A message is complete (PUBACK, PUBCOMP).
    Completed,
}

/// The flows of one window.
pub struct Flight {
    qos: QoS,
    limit: usize,
    messages: Vec<Publish>,
    state: Vec<State>,
    /// The message may have gone out before (on an earlier connection or in an earlier
    /// process): it goes with DUP set.
    maybe_sent: Vec<bool>,
    /// The first message that may still be waiting.
    next: usize,
    in_flight: usize,
    left: usize,
    resent: u64,
}

pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl Flight {
    /// The flows of `window`, at most `limit` messages in flight; `released`: its packets the
    /// journal says are released; `resumed`: the window may have been sent before (it comes
    /// from the journal).
    pub fn new(window: &Window, released: &BTreeSet<u16>, limit: usize, resumed: bool) -> Flight {
        let qos = qos(window.qos);
        let messages: Vec<Publish> = window
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut p = Publish::new(m.topic.clone(), qos, m.payload.clone());
                p.retain = m.retain;
                if qos != QoS::AtMostOnce {
                    p.pkid = u16::try_from(i + 1).unwrap_or(u16::MAX);
                }
                p
            })
            .collect();
        let state: Vec<State> = (0..messages.len())
            .map(|i| {
                if qos == QoS::ExactlyOnce && released.contains(&((i + 1) as u16)) {
                    State::Released
                } else {
                    State::Waiting
                }
            })
            .collect();
        let in_flight = state.iter().filter(|s| **s == State::Released).count();
        Flight {
            qos,
            limit: limit.max(1),
            maybe_sent: vec![resumed; messages.len()],
            left: messages.len(),
            next: 0,
            in_flight,
            messages,
            state,
            resent: 0,
        }
    }

    pub fn qos(&self) -> QoS {
        self.qos
    }

    pub fn is_complete(&self) -> bool {
        self.left == 0
    }

    /// Whether a message is released and not complete (its message is the broker's).
    pub fn any_released(&self) -> bool {
        self.state.contains(&State::Released)
    }

    /// Packets sent again so far (PUBLISH with DUP, PUBREL on a new connection).
    pub fn take_resent(&mut self) -> u64 {
        std::mem::take(&mut self.resent)
    }

    /// What goes out first on a (new) connection: PUBREL for every released message, then
    /// PUBLISH as far as the limit allows. Messages sent on an earlier connection and not
    /// acknowledged go again, with DUP set.
    pub fn connected(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        for i in 0..self.state.len() {
            match self.state[i] {
                State::Sent => {
                    self.state[i] = State::Waiting;
                    self.maybe_sent[i] = true;
                    self.in_flight -= 1;
                    self.next = self.next.min(i);
                }
                State::Released => {
                    if self.maybe_sent[i] {
                        self.resent += 1;
                    }
                    self.maybe_sent[i] = true;
                    out.push(Packet::PubRel(PubRel::new(self.messages[i].pkid)));
                }
                State::Waiting | State::Complete => {}
            }
        }
        out.extend(self.fill());
        out
    }

    /// PUBLISH packets for waiting messages, in order, as far as the limit allows (QoS 0: all).
    pub fn fill(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while self.next < self.state.len()
            && (self.qos == QoS::AtMostOnce || self.in_flight < self.limit)
        {
            let i = self.next;
            self.next += 1;
            if self.state[i] != State::Waiting {
                continue;
            }
            let mut p = self.messages[i].clone();
            if self.qos != QoS::AtMostOnce && self.maybe_sent[i] {
                p.dup = true;
                self.resent += 1;
            }
            self.maybe_sent[i] = true;
            self.state[i] = State::Sent;
            self.in_flight += 1;
            out.push(Packet::Publish(p));
        }
        out
    }

    fn index(&self, pkid: u16) -> Option<usize> {
        let i = usize::from(pkid).checked_sub(1)?;
        (i < self.state.len()).then_some(i)
    }

    /// What `packet` from the broker means for the window.
    pub fn on_packet(&mut self, packet: &Packet) -> Ack {
        match (self.qos, packet) {
            (QoS::AtLeastOnce, Packet::PubAck(a)) => self.complete(a.pkid, State::Sent),
            (QoS::ExactlyOnce, Packet::PubRec(r)) => match self.index(r.pkid) {
                // A PUBREC for a message waiting to go again: the broker had it already.
                Some(i) if self.state[i] == State::Sent => Ack::Received(r.pkid),
                Some(i) if self.state[i] == State::Waiting && self.maybe_sent[i] => {
                    Ack::Received(r.pkid)
                }
                Some(i) if self.state[i] == State::Released => Ack::Rerelease(r.pkid),
                _ => Ack::None,
            },
            (QoS::ExactlyOnce, Packet::PubComp(c)) => self.complete(c.pkid, State::Released),
            _ => Ack::None,
        }
    }

    fn complete(&mut self, pkid: u16, from: State) -> Ack {
        match self.index(pkid) {
            Some(i) if self.state[i] == from => {
                self.state[i] = State::Complete;
                self.in_flight -= 1;
                self.left -= 1;
                Ack::Completed
            }
            _ => Ack::None,
        }
    }

    /// QoS 2: the release of `pkid` is journaled: its PUBREL, to send.
    pub fn release(&mut self, pkid: u16) -> Option<Packet> {
        let i = self.index(pkid)?;
        match self.state[i] {
            State::Sent => {}
            State::Waiting if self.maybe_sent[i] => {
                // Occupies a place again until its PUBCOMP.
                self.in_flight += 1;
            }
            _ => return None,
        }
        self.state[i] = State::Released;
        Some(Packet::PubRel(PubRel::new(pkid)))
    }

    /// QoS 0: the window was written to the connection: nothing more to wait for.
    pub fn written(&mut self) {
        if self.qos == QoS::AtMostOnce && self.next >= self.state.len() {
            self.state.fill(State::Complete);
            self.in_flight = 0;
            self.left = 0;
        }
    }

    /// The broker lost the session: released messages are published anew (the journal says
    /// so first).
    pub fn reset(&mut self) {
        for i in 0..self.state.len() {
            if self.state[i] == State::Released {
                self.state[i] = State::Waiting;
                self.in_flight -= 1;
                self.next = self.next.min(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal::Message;
    use super::*;
    use rumqttc::{PubAck, PubComp, PubRec};

    fn window(qos: u8, n: usize) -> Window {
        Window {
            qos,
            end: None,
            late: 0,
            marks: Vec::new(),
            messages: (0..n)
                .map(|i| Message {
                    topic: format!("gw/t{i}"),
                    payload: i.to_string().into_bytes(),
                    retain: i == 0,
                })
                .collect(),
        }
    }

    fn kinds(ps: &[Packet]) -> Vec<String> {
        ps.iter()
            .map(|p| match p {
                Packet::Publish(p) => {
                    format!("PUBLISH {}{}", p.pkid, if p.dup { " dup" } else { "" })
                }
                Packet::PubRel(r) => format!("PUBREL {}", r.pkid),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn rec(id: u16) -> Packet {
        Packet::PubRec(PubRec::new(id))
    }

    fn comp(id: u16) -> Packet {
        Packet::PubComp(PubComp::new(id))
    }

    #[test]
    fn qos2_releases_only_journaled_packets_within_the_limit() {
        let mut f = Flight::new(&window(2, 4), &BTreeSet::new(), 2, false);
        let out = f.connected();
        assert_eq!(
            kinds(&out),
            ["PUBLISH 1", "PUBLISH 2"],
            "two in flight at most"
        );
        let Packet::Publish(first) = &out[0] else {
            panic!()
        };
        assert!(first.retain && first.qos == QoS::ExactlyOnce && first.payload[..] == *b"0");
        assert_eq!(f.on_packet(&rec(2)), Ack::Received(2));
        // Not journaled yet: still unacknowledged; a new connection publishes it again.
        assert_eq!(kinds(&f.connected()), ["PUBLISH 1 dup", "PUBLISH 2 dup"]);
        assert!(f.fill().is_empty(), "the limit holds");
        assert!(matches!(f.release(2), Some(Packet::PubRel(r)) if r.pkid == 2));
        assert!(f.release(2).is_none(), "released once");
        assert_eq!(f.on_packet(&rec(2)), Ack::Rerelease(2));
        // A PUBCOMP for a message not released, or out of range, changes nothing.
        assert_eq!(f.on_packet(&comp(1)), Ack::None);
        assert_eq!(f.on_packet(&comp(9)), Ack::None);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(1))), Ack::None);
        assert!(
            f.fill().is_empty(),
            "a released message still takes its place"
        );
        assert_eq!(f.on_packet(&comp(2)), Ack::Completed);
        assert_eq!(f.on_packet(&comp(2)), Ack::None);
        assert_eq!(kinds(&f.fill()), ["PUBLISH 3"]);
        assert_eq!(kinds(&f.connected()), ["PUBLISH 1 dup", "PUBLISH 3 dup"]);
        for id in [1, 3] {
            assert_eq!(f.on_packet(&rec(id)), Ack::Received(id));
            f.release(id);
        }
        assert_eq!(f.on_packet(&comp(3)), Ack::Completed);
        assert_eq!(kinds(&f.fill()), ["PUBLISH 4"]);
        assert!(!f.is_complete());
        assert_eq!(f.on_packet(&comp(1)), Ack::Completed);
        assert_eq!(f.on_packet(&rec(4)), Ack::Received(4));
        f.release(4);
        assert_eq!(f.on_packet(&comp(4)), Ack::Completed);
        assert!(f.is_complete());
        assert!(f.connected().is_empty());
        assert_eq!(f.take_resent(), 4);
    }

    #[test]
    fn after_a_restart_released_packets_go_as_pubrel_and_a_lost_session_publishes_again() {
        let released: BTreeSet<u16> = [1, 3].into();
        let mut f = Flight::new(&window(2, 5), &released, 3, true);
        // Released messages take places until their PUBCOMP: one PUBLISH goes.
        assert_eq!(
            kinds(&f.connected()),
            ["PUBREL 1", "PUBREL 3", "PUBLISH 2 dup"]
        );
        assert_eq!(f.take_resent(), 3);
        // The broker had 4 from before: its PUBREC comes unasked.
        assert_eq!(f.on_packet(&rec(4)), Ack::Received(4));
        assert!(f.release(4).is_some());
        assert!(f.any_released());
        f.reset();
        assert!(!f.any_released());
        assert_eq!(
            kinds(&f.connected()),
            ["PUBLISH 1 dup", "PUBLISH 2 dup", "PUBLISH 3 dup"]
        );
    }

    #[test]
    fn qos1_and_qos0() {
        // QoS 1 knows nothing of releases, even if a journal said so.
        let mut f = Flight::new(&window(1, 3), &[1].into(), 2, false);
        assert_eq!(kinds(&f.connected()), ["PUBLISH 1", "PUBLISH 2"]);
        assert_eq!(f.on_packet(&rec(1)), Ack::None);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(2))), Ack::Completed);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(2))), Ack::None);
        assert_eq!(kinds(&f.fill()), ["PUBLISH 3"]);
        assert_eq!(kinds(&f.connected()), ["PUBLISH 1 dup", "PUBLISH 3 dup"]);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(1))), Ack::Completed);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(3))), Ack::Completed);
        assert!(f.is_complete());
        // QoS 0: no packet id, never DUP, no limit; done once written.
        let mut f = Flight::new(&window(0, 3), &BTreeSet::new(), 1, true);
        assert_eq!(
            kinds(&f.connected()),
            ["PUBLISH 0", "PUBLISH 0", "PUBLISH 0"]
        );
        assert!(!f.is_complete());
        f.written();
        assert!(f.is_complete());
    }
}
