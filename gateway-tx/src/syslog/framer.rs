//! RFC 6587 framing of syslog over TCP, sans-IO: bytes in as they are read, messages out.
//!
//! Each frame's first byte says its framing (RFC 6587, 3.4): a digit starts octet counting
//! (`MSG-LEN SP SYSLOG-MSG`), `<` a non-transparent frame ended by LF. So one connection may
//! mix both, as the RFC allows. LF, CR and NUL between frames are skipped (trailers of senders
//! that end frames with CRLF or NUL besides counting them).
//!
//! What goes wrong, and why it is handled so:
//!
//! - A frame longer than the limit is skipped whole and counted `Oversized`: an octet count
//!   says exactly where the next frame starts, and an LF frame ends at its LF, so the stream
//!   stays in step and the sender's later messages are kept. Nothing beyond the limit is
//!   buffered.
//! - A frame starting with anything else has no framing we can trust, and no `<PRI>`; it is
//!   skipped up to its LF and counted `Malformed` (the light sanity check: a syslog message
//!   starts with `<PRI>`).
//! - A broken octet count (more digits than any length we take, or a digit run not ended by a
//!   space) leaves no way to find the next frame: counted `Malformed`, and the connection is
//!   closed, which RFC 6587 leaves to the receiver (a sender that reconnects starts in step).
//! - An octet-counted message whose content does not start with `<` is counted `Malformed`;
//!   the framing is intact, so the connection goes on.

/// What one frame became.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A message, its framing removed, nothing else touched.
    Message(Vec<u8>),
    /// A frame longer than the limit, skipped.
    Oversized,
    /// A frame without a usable `<PRI>` start, skipped.
    Malformed,
}

/// The connection's framing is lost: close it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("broken RFC 6587 octet count")]
pub struct FramingLost;

/// Digits of an octet count beyond which it cannot be one of ours: 9 digits stay far below
/// `usize::MAX`, so the count never overflows.
const MAX_COUNT_DIGITS: u32 = 9;

#[derive(Debug)]
enum State {
    /// Between frames.
    Start,
    /// Reading an octet count.
    Count { len: usize, digits: u32 },
    /// Reading (or, when `skip`, skipping) an octet-counted message's `remaining` bytes.
    Counted { remaining: usize, skip: bool },
    /// Reading an LF-terminated frame; `skip` once it is too long (`Some(oversized)`) or
    /// does not start with `<`.
    Lf { skip: Option<Framed> },
    /// After [`FramingLost`]: nothing more is read.
    Lost,
}

pub struct Framer {
    max: usize,
    buf: Vec<u8>,
    state: State,
}

impl Framer {
    /// A framer taking messages of up to `max` bytes.
    pub fn new(max: usize) -> Framer {
        Framer {
            max,
            buf: Vec::new(),
            state: State::Start,
        }
    }

    /// Takes `data`, the next bytes read from the connection, and hands each frame it
    /// completes to `emit`, in order. Never holds more than the limit.
    pub fn push(
        &mut self,
        mut data: &[u8],
        emit: &mut dyn FnMut(Framed),
    ) -> Result<(), FramingLost> {
        while let Some((&b, rest)) = data.split_first() {
            match &mut self.state {
                State::Lost => return Err(FramingLost),
                State::Start => {
                    data = rest;
                    match b {
                        b'\n' | b'\r' | 0 => {}
                        b'1'..=b'9' => {
                            self.state = State::Count {
                                len: usize::from(b - b'0'),
                                digits: 1,
                            }
                        }
                        b'<' => {
                            self.buf.clear();
                            self.buf.push(b);
                            self.state = State::Lf { skip: None };
                        }
                        _ => {
                            self.state = State::Lf {
                                skip: Some(Framed::Malformed),
                            }
                        }
                    }
                }
                State::Count { len, digits } => {
                    data = rest;
                    match b {
                        b'0'..=b'9' if *digits < MAX_COUNT_DIGITS => {
                            *len = *len * 10 + usize::from(b - b'0');
                            *digits += 1;
                        }
                        b' ' => {
                            let skip = *len > self.max;
                            if !skip {
                                self.buf.clear();
                                self.buf.reserve(*len);
                            }
                            self.state = State::Counted {
                                remaining: *len,
                                skip,
                            };
                        }
                        _ => {
                            self.state = State::Lost;
                            emit(Framed::Malformed);
                            return Err(FramingLost);
                        }
                    }
                }
                State::Counted { remaining, skip } => {
                    let take = (*remaining).min(data.len());
                    if !*skip {
                        self.buf.extend_from_slice(&data[..take]);
                    }
                    data = &data[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        let frame = if *skip {
                            Framed::Oversized
                        } else if self.buf.first() == Some(&b'<') {
                            Framed::Message(std::mem::take(&mut self.buf))
                        } else {
                            Framed::Malformed
                        };
                        self.state = State::Start;
                        emit(frame);
                    }
                }
                State::Lf { skip } => {
                    let end = data.iter().position(|&c| c == b'\n');
                    let chunk = &data[..end.unwrap_or(data.len())];
                    if skip.is_none() {
                        if self.buf.len() + chunk.len() > self.max {
                            *skip = Some(Framed::Oversized);
                            self.buf.clear();
                        } else {
                            self.buf.extend_from_slice(chunk);
                        }
                    }
                    match end {
                        Some(i) => {
                            data = &data[i + 1..];
                            let frame = match skip.take() {
                                Some(f) => f,
                                None => Framed::Message(std::mem::take(&mut self.buf)),
                            };
                            self.state = State::Start;
                            emit(frame);
                        }
                        None => data = &[],
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection ended: an LF frame under way is the sender's last message (some senders
    /// end the last one with the close instead of an LF); a counted one cut short is malformed.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Framed)) {
        match std::mem::replace(&mut self.state, State::Start) {
            State::Lf { skip: None } => emit(Framed::Message(std::mem::take(&mut self.buf))),
            State::Lf { skip: Some(f) } => emit(f),
            State::Count { .. } | State::Counted { .. } => emit(Framed::Malformed),
            State::Start | State::Lost => {}
        }
        self.buf = Vec::new();
    }

    /// Bytes held for the frame under way.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, reads: &[&[u8]]) -> (Vec<Framed>, Result<(), FramingLost>) {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for r in reads {
            if let Err(e) = f.push(r, &mut |x| out.push(x)) {
                return (out, Err(e));
            }
            assert!(f.buffered() <= max, "held {} > {max}", f.buffered());
        }
        f.finish(&mut |x| out.push(x));
        (out, Ok(()))
    }

    fn msg(s: &[u8]) -> Framed {
        Framed::Message(s.to_vec())
    }

    #[test]
    fn octet_counting_and_lf_mixed() {
        let stream = b"11 <13>1 - a b19 <14>Oct 11 22:14:15\n<15>x y\r\n<16>last";
        let (out, r) = frames(100, &[stream]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            vec![
                msg(b"<13>1 - a b"),
                msg(b"<14>Oct 11 22:14:15"),
                // A CR before the LF is the message's: nothing is rewritten.
                msg(b"<15>x y\r"),
                msg(b"<16>last"),
            ]
        );
    }

    #[test]
    fn every_split_of_the_reads_gives_the_same_frames() {
        let stream: &[u8] = b"12 <13>1 hello\n<14>two\n\n3 <1>0 <9>three\n";
        let (whole, _) = frames(100, &[stream]);
        assert_eq!(whole.len(), 4);
        assert_eq!(
            whole[0],
            msg(b"<13>1 hello\n"),
            "an LF inside a counted frame is data"
        );
        for a in 0..stream.len() {
            for b in a..stream.len() {
                let (out, r) = frames(100, &[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(r, Ok(()));
                assert_eq!(out, whole, "split at {a}, {b}");
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(100, &bytes).0, whole);
    }

    #[test]
    fn oversized_frames_are_skipped_and_the_stream_stays_in_step() {
        let big = [b'x'; 50];
        let mut s = b"54 <13>".to_vec();
        s.extend_from_slice(&big);
        s.extend_from_slice(b"<1>ok\n<2>");
        s.extend_from_slice(&big);
        s.extend_from_slice(b"\n<3>after\n");
        let (out, r) = frames(20, &[&s]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            vec![
                Framed::Oversized,
                msg(b"<1>ok"),
                Framed::Oversized,
                msg(b"<3>after")
            ]
        );
        // Exactly the limit is taken.
        let (out, _) = frames(5, &[b"5 <1>ab<1>abc\n"]);
        assert_eq!(out, vec![msg(b"<1>ab"), Framed::Oversized]);
    }

    #[test]
    fn garbage() {
        // No <PRI>: skipped to its LF, the next frame is taken.
        let (out, r) = frames(100, &[b"hello world\n<13>fine\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec![Framed::Malformed, msg(b"<13>fine")]);
        // A counted message without <PRI>: framing intact.
        let (out, r) = frames(100, &[b"3 abc<1>x\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec![Framed::Malformed, msg(b"<1>x")]);
        // A count not ended by a space, or too long to be one: the connection goes.
        for bad in [&b"12x <13>"[..], b"1234567890 <13>"] {
            let (out, r) = frames(100, &[bad]);
            assert_eq!(r, Err(FramingLost), "{bad:?}");
            assert!(
                out.contains(&Framed::Malformed) || out.is_empty(),
                "{out:?}"
            );
        }
        // A count cannot start with 0 (RFC 6587: NONZERO-DIGIT): no framing, skipped to LF.
        let (out, r) = frames(100, &[b"0 <1>a\n<2>b\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec![Framed::Malformed, msg(b"<2>b")]);
        // Cut short by the close.
        let (out, _) = frames(100, &[b"10 <13>"]);
        assert_eq!(out, vec![Framed::Malformed]);
        // Random bytes never panic nor hold more than the limit.
        let mut x: u32 = 1;
        let mut junk = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            junk.push(b"0123456789 <>\nab"[(x % 16) as usize]);
        }
        for chunk in [1usize, 7, 64, 4096] {
            let reads: Vec<&[u8]> = junk.chunks(chunk).collect();
            let _ = frames(64, &reads);
        }
    }
}
