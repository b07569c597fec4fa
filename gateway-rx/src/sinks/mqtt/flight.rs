//! The publisher's side of the MQTT QoS 1 and QoS 2 flows for one window, without I/O: which
//! packets go out on a connection, what each acknowledgement from the broker means. The
//! packet identifier of message `i` is `i + 1`, fixed by the window (and the journal), so a
//! window sent again after a reconnect or a restart carries the same identifiers.
//!
//! QoS 1: PUBLISH → PUBACK. QoS 2: PUBLISH → PUBREC (the broker owns the message now; the
//! caller journals that before anything else) → PUBREL → PUBCOMP. On a new connection a
//! message not yet acknowledged goes out again as PUBLISH with DUP set, and a released one as
//! PUBREL (MQTT 3.1.1, 4.4), so a broker that kept the session delivers each message once.

use std::collections::BTreeSet;

use rumqttc::{Packet, PubRel, Publish, QoS};

use super::journal::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// PUBLISH sent (or to send); no PUBACK / PUBREC yet.
    Unacked,
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
    messages: Vec<Publish>,
    state: Vec<State>,
    left: usize,
}

pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl Flight {
    /// The flows of `window`; `released`: its packets the journal says are released.
    pub fn new(window: &Window, released: &BTreeSet<u16>) -> Flight {
        let qos = qos(window.qos);
        let messages: Vec<Publish> = window
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut p = Publish::new(m.topic.clone(), qos, m.payload.clone());
                p.retain = m.retain;
                if qos != QoS::AtMostOnce {
                    p.pkid = (i + 1) as u16;
                }
                p
            })
            .collect();
        let state: Vec<State> = (0..messages.len())
            .map(|i| {
                if qos == QoS::ExactlyOnce && released.contains(&((i + 1) as u16)) {
                    State::Released
                } else {
                    State::Unacked
                }
            })
            .collect();
        Flight {
            qos,
            left: messages.len(),
            messages,
            state,
        }
    }

    pub fn qos(&self) -> QoS {
        self.qos
    }

    pub fn is_complete(&self) -> bool {
        self.left == 0
    }

    /// Whether a packet is released and not complete (its message is the broker's).
    pub fn any_released(&self) -> bool {
        self.state.contains(&State::Released)
    }

    /// What goes out on a connection: PUBLISH for every message not acknowledged (`dup`: it
    /// may have gone out before), PUBREL for every released one, in packet order.
    pub fn outgoing(&self, dup: bool) -> Vec<Packet> {
        self.messages
            .iter()
            .zip(&self.state)
            .filter_map(|(p, s)| match s {
                State::Unacked => {
                    let mut p = p.clone();
                    p.dup = dup && p.qos != QoS::AtMostOnce;
                    Some(Packet::Publish(p))
                }
                State::Released => Some(Packet::PubRel(PubRel::new(p.pkid))),
                State::Complete => None,
            })
            .collect()
    }

    fn index(&self, pkid: u16) -> Option<usize> {
        let i = usize::from(pkid).checked_sub(1)?;
        (i < self.state.len()).then_some(i)
    }

    /// What `packet` from the broker means for the window.
    pub fn on_packet(&mut self, packet: &Packet) -> Ack {
        match (self.qos, packet) {
            (QoS::AtLeastOnce, Packet::PubAck(a)) => self.complete(a.pkid, State::Unacked),
            (QoS::ExactlyOnce, Packet::PubRec(r)) => match self.index(r.pkid) {
                Some(i) if self.state[i] == State::Unacked => Ack::Received(r.pkid),
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
                self.left -= 1;
                Ack::Completed
            }
            _ => Ack::None,
        }
    }

    /// QoS 2: the release of `pkid` is journaled: its PUBREL, to send.
    pub fn release(&mut self, pkid: u16) -> Option<Packet> {
        let i = self.index(pkid)?;
        if self.state[i] != State::Unacked {
            return None;
        }
        self.state[i] = State::Released;
        Some(Packet::PubRel(PubRel::new(pkid)))
    }

    /// QoS 0: the window was written to the connection: nothing more to wait for.
    pub fn written(&mut self) {
        if self.qos == QoS::AtMostOnce {
            self.state.fill(State::Complete);
            self.left = 0;
        }
    }

    /// The broker lost the session: released messages are published anew (the journal says
    /// so first).
    pub fn reset(&mut self) {
        for s in &mut self.state {
            if *s == State::Released {
                *s = State::Unacked;
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
                    payload: vec![i as u8],
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

    #[test]
    fn qos2_releases_only_journaled_packets_and_resends_by_state() {
        let mut f = Flight::new(&window(2, 3), &BTreeSet::new());
        let out = f.outgoing(false);
        assert_eq!(kinds(&out), ["PUBLISH 1", "PUBLISH 2", "PUBLISH 3"]);
        let Packet::Publish(first) = &out[0] else {
            panic!()
        };
        assert!(first.retain && first.qos == QoS::ExactlyOnce && first.payload[..] == [0]);
        assert_eq!(
            f.on_packet(&Packet::PubRec(PubRec::new(2))),
            Ack::Received(2)
        );
        // Not journaled yet: still unacknowledged; a new connection publishes it again.
        assert_eq!(
            kinds(&f.outgoing(true)),
            ["PUBLISH 1 dup", "PUBLISH 2 dup", "PUBLISH 3 dup"]
        );
        assert!(matches!(f.release(2), Some(Packet::PubRel(r)) if r.pkid == 2));
        assert!(f.release(2).is_none(), "released once");
        assert_eq!(
            f.on_packet(&Packet::PubRec(PubRec::new(2))),
            Ack::Rerelease(2)
        );
        assert_eq!(
            kinds(&f.outgoing(true)),
            ["PUBLISH 1 dup", "PUBREL 2", "PUBLISH 3 dup"]
        );
        // A PUBCOMP for a packet not released, or out of range, changes nothing.
        assert_eq!(f.on_packet(&Packet::PubComp(PubComp::new(1))), Ack::None);
        assert_eq!(f.on_packet(&Packet::PubComp(PubComp::new(9))), Ack::None);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(1))), Ack::None);
        assert_eq!(
            f.on_packet(&Packet::PubComp(PubComp::new(2))),
            Ack::Completed
        );
        assert_eq!(f.on_packet(&Packet::PubComp(PubComp::new(2))), Ack::None);
        assert_eq!(kinds(&f.outgoing(true)), ["PUBLISH 1 dup", "PUBLISH 3 dup"]);
        for id in [1, 3] {
            assert_eq!(
                f.on_packet(&Packet::PubRec(PubRec::new(id))),
                Ack::Received(id)
            );
            f.release(id);
        }
        assert!(!f.is_complete());
        for id in [3, 1] {
            assert_eq!(
                f.on_packet(&Packet::PubComp(PubComp::new(id))),
                Ack::Completed
            );
        }
        assert!(f.is_complete());
        assert!(f.outgoing(true).is_empty());
    }

    #[test]
    fn after_a_restart_released_packets_go_as_pubrel_and_a_lost_session_publishes_again() {
        let released: BTreeSet<u16> = [1, 3].into();
        let mut f = Flight::new(&window(2, 4), &released);
        assert_eq!(
            kinds(&f.outgoing(true)),
            ["PUBREL 1", "PUBLISH 2 dup", "PUBREL 3", "PUBLISH 4 dup"]
        );
        assert!(f.any_released());
        f.reset();
        assert!(!f.any_released());
        assert_eq!(
            kinds(&f.outgoing(true)),
            [
                "PUBLISH 1 dup",
                "PUBLISH 2 dup",
                "PUBLISH 3 dup",
                "PUBLISH 4 dup"
            ]
        );
    }

    #[test]
    fn qos1_and_qos0() {
        // QoS 1 knows nothing of releases, even if a journal said so.
        let mut f = Flight::new(&window(1, 2), &[1].into());
        assert_eq!(kinds(&f.outgoing(false)), ["PUBLISH 1", "PUBLISH 2"]);
        assert_eq!(f.on_packet(&Packet::PubRec(PubRec::new(1))), Ack::None);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(2))), Ack::Completed);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(2))), Ack::None);
        assert_eq!(kinds(&f.outgoing(true)), ["PUBLISH 1 dup"]);
        assert_eq!(f.on_packet(&Packet::PubAck(PubAck::new(1))), Ack::Completed);
        assert!(f.is_complete());
        // QoS 0: no packet id, never DUP; done once written.
        let mut f = Flight::new(&window(0, 2), &BTreeSet::new());
        assert_eq!(kinds(&f.outgoing(true)), ["PUBLISH 0", "PUBLISH 0"]);
        assert!(!f.is_complete());
        f.written();
        assert!(f.is_complete());
    }
}
