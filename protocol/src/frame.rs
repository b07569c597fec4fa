//! Frames: how messages are packed into the payload of data datagrams.
//!
//! ```text
//! [stream u8][fragment u8][message seq, LEB128 varint, 1..=10 bytes][body_len u16 BE][body]
//! ```
//!
//! A data payload holds one or more frames back to back and nothing else. A message too large
//! for one payload is split into a `First`, zero or more `Middle` and one `Last` fragment, in
//! consecutive data datagrams; all fragments carry the message's sequence number.

use crate::message::Stream;

/// Longest frame header: stream, fragment, 10-byte varint, body length.
pub const MAX_HEADER_LEN: usize = 1 + 1 + 10 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Fragment {
    Whole = 0,
    First = 1,
    Middle = 2,
    Last = 3,
}

impl Fragment {
    pub fn from_u8(v: u8) -> Option<Fragment> {
        Some(match v {
            0 => Fragment::Whole,
            1 => Fragment::First,
            2 => Fragment::Middle,
            3 => Fragment::Last,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub stream: Stream,
    pub fragment: Fragment,
    pub seq: u64,
    pub body_len: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame header truncated")]
    Truncated,
    #[error("unknown stream {0}")]
    Stream(u8),
    #[error("unknown fragment kind {0}")]
    Fragment(u8),
    #[error("message sequence varint is malformed")]
    Varint,
    #[error("frame body runs past the payload")]
    Body,
}

pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn header_len(seq: u64) -> usize {
    1 + 1 + varint_len(seq) + 2
}

pub fn write_header(h: &FrameHeader, out: &mut Vec<u8>) {
    out.push(h.stream as u8);
    out.push(h.fragment as u8);
    let mut v = h.seq;
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.extend_from_slice(&h.body_len.to_be_bytes());
}

/// Reads a LEB128 varint; rejects encodings longer than 10 bytes or overflowing 64 bits.
fn read_varint(b: &[u8]) -> Result<(u64, usize), FrameError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7F);
        if i == 9 && byte > 1 {
            return Err(FrameError::Varint);
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if b.len() < 10 {
        Err(FrameError::Truncated)
    } else {
        Err(FrameError::Varint)
    }
}

/// Iterates over the frames of a payload. After the first error it yields nothing more.
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    pub fn new(payload: &'a [u8]) -> Frames<'a> {
        Frames { rest: payload }
    }

    fn parse(&mut self) -> Result<(FrameHeader, &'a [u8]), FrameError> {
        let b = self.rest;
        let (&stream, b) = b.split_first().ok_or(FrameError::Truncated)?;
        let stream = Stream::from_u8(stream).ok_or(FrameError::Stream(stream))?;
        let (&fragment, b) = b.split_first().ok_or(FrameError::Truncated)?;
        let fragment = Fragment::from_u8(fragment).ok_or(FrameError::Fragment(fragment))?;
        let (seq, n) = read_varint(b)?;
        let b = &b[n..];
        let body_len = crate::wire::be_u16(b, 0).ok_or(FrameError::Truncated)?;
        let b = &b[2..];
        let body = b.get(..usize::from(body_len)).ok_or(FrameError::Body)?;
        self.rest = &b[usize::from(body_len)..];
        let h = FrameHeader {
            stream,
            fragment,
            seq,
            body_len,
        };
        Ok((h, body))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(FrameHeader, &'a [u8]), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.parse();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let h = FrameHeader {
                stream: Stream::History,
                fragment: Fragment::Middle,
                seq: v,
                body_len: 0,
            };
            let mut out = Vec::new();
            write_header(&h, &mut out);
            assert_eq!(out.len(), header_len(v));
            let mut f = Frames::new(&out);
            assert_eq!(f.next(), Some(Ok((h, &[][..]))));
            assert_eq!(f.next(), None);
        }
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::MAX), 10);
        // 11-byte and overflowing encodings are rejected.
        assert_eq!(read_varint(&[0xFF; 11]), Err(FrameError::Varint));
        let mut over = [0xFFu8; 10];
        over[9] = 0x02;
        assert_eq!(read_varint(&over), Err(FrameError::Varint));
        assert_eq!(read_varint(&[0x80, 0x80]), Err(FrameError::Truncated));
    }

    #[test]
    fn frames_back_to_back() {
        let mut p = Vec::new();
        let a = FrameHeader {
            stream: Stream::Live,
            fragment: Fragment::Whole,
            seq: 3,
            body_len: 2,
        };
        write_header(&a, &mut p);
        p.extend([9, 8]);
        let b = FrameHeader {
            stream: Stream::Control,
            fragment: Fragment::First,
            seq: 200,
            body_len: 1,
        };
        write_header(&b, &mut p);
        p.push(7);
        assert_eq!(&p[..5], &[1, 0, 3, 0, 2]);
        let got: Vec<_> = Frames::new(&p).collect();
        assert_eq!(got, vec![Ok((a, &[9u8, 8][..])), Ok((b, &[7u8][..]))]);
    }

    #[test]
    fn bad_frames_stop_iteration() {
        assert_eq!(
            Frames::new(&[9, 0, 0, 0, 0]).collect::<Vec<_>>(),
            vec![Err(FrameError::Stream(9))]
        );
        assert_eq!(
            Frames::new(&[0, 4, 0, 0, 0]).collect::<Vec<_>>(),
            vec![Err(FrameError::Fragment(4))]
        );
        assert_eq!(
            Frames::new(&[0, 0, 0, 0, 5, 1]).collect::<Vec<_>>(),
            vec![Err(FrameError::Body)]
        );
        assert_eq!(
            Frames::new(&[0, 0, 0, 0]).collect::<Vec<_>>(),
            vec![Err(FrameError::Truncated)]
        );
    }
}
