//! Sizes of the syslog stream's messages ([`SyslogBatch`]), so the transmitter can fill one
//! datagram per batch without encoding twice. The body itself is plain postcard (`codec`);
//! WIRE.md, "Syslog", lays out its bytes.

use crate::codec;
use crate::message::{SyslogBatch, SyslogRecord};

/// The batch's fixed part at its largest: message variant, `first_seq` and `dropped` (varints
/// of up to 10 bytes each) and the record count's varint.
pub const BATCH_HEAD_MAX: usize = 1 + 10 + 10 + 5;

/// The exact length a record adds to a batch's encoding.
pub fn record_len(record: &SyslogRecord) -> usize {
    // A record is integers, an address and bytes: postcard cannot fail to size it, and the
    // fallback (an overestimate) only makes a batch smaller.
    codec::encoded_len(record).unwrap_or(usize::MAX / 4)
}

/// Splits `records` into batches whose encodings each fit `budget` bytes (one datagram), the
/// first numbered `first_seq`. A record too large for any batch travels alone, fragmented.
pub fn batches(
    records: Vec<SyslogRecord>,
    first_seq: u64,
    dropped: u64,
    budget: usize,
) -> Vec<SyslogBatch> {
    let mut out = Vec::new();
    let mut current = SyslogBatch {
        first_seq,
        dropped,
        records: Vec::new(),
    };
    let mut size = BATCH_HEAD_MAX;
    for r in records {
        let len = record_len(&r);
        if !current.records.is_empty() && size.saturating_add(len) > budget {
            let next = current.next_seq();
            out.push(std::mem::replace(
                &mut current,
                SyslogBatch {
                    first_seq: next,
                    dropped,
                    records: Vec::new(),
                },
            ));
            size = BATCH_HEAD_MAX;
        }
        size = size.saturating_add(len);
        current.records.push(r);
    }
    if !current.records.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_message, encode_message_into};
    use crate::message::Message;

    fn record(i: u32, len: usize) -> SyslogRecord {
        SyslogRecord {
            received_at: 1_700_000_000_000_000_000 + i64::from(i),
            peer: if i.is_multiple_of(2) {
                "192.0.2.7:514".parse().unwrap()
            } else {
                "[2001:db8::1]:40000".parse().unwrap()
            },
            bytes: format!("<13>1 - host app - - - message {i} {}", "x".repeat(len)).into_bytes(),
        }
    }

    fn encode(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message_into(m, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_and_exact_sizes() {
        for n in [0usize, 1, 3, 200] {
            let records: Vec<_> = (0..n as u32).map(|i| record(i, i as usize * 7)).collect();
            let batch = SyslogBatch {
                first_seq: 1 << 40,
                dropped: 12,
                records: records.clone(),
            };
            let m = Message::Syslog(batch);
            let bytes = encode(&m);
            assert_eq!(decode_message(&bytes).unwrap(), m);
            assert_eq!(codec::message_len(&m).unwrap(), bytes.len());
            let body: usize = records.iter().map(record_len).sum();
            assert!(bytes.len() <= BATCH_HEAD_MAX + body);
        }
    }

    #[test]
    fn bytes_pass_untouched() {
        // Not UTF-8, NUL, CR, LF and a BOM: none of it is the codec's business.
        let raw = b"<34>Oct 11 22:14:15 mymachine su: \xff\x00\r\n\xef\xbb\xbftail".to_vec();
        let m = Message::Syslog(SyslogBatch {
            first_seq: 0,
            dropped: 0,
            records: vec![SyslogRecord {
                received_at: -1,
                peer: "10.0.0.1:1".parse().unwrap(),
                bytes: raw.clone(),
            }],
        });
        let Message::Syslog(back) = decode_message(&encode(&m)).unwrap() else {
            panic!("not syslog");
        };
        assert_eq!(back.records[0].bytes, raw);
    }

    /// The example of WIRE.md, "Syslog", byte for byte.
    #[test]
    fn wire_example() {
        let m = Message::Syslog(SyslogBatch {
            first_seq: 300,
            dropped: 2,
            records: vec![SyslogRecord {
                received_at: 1_700_000_000_000_000_000,
                peer: "192.0.2.7:514".parse().unwrap(),
                bytes: b"<13>1 - h a - - - hi".to_vec(),
            }],
        });
        let expected: Vec<u8> = [
            &[0x05][..],                                             // variant 5 = Syslog
            &[0xac, 0x02],                                           // first_seq 300
            &[0x02],                                                 // dropped 2
            &[0x01],                                                 // 1 record
            &[0x80, 0x80, 0xd0, 0xe2, 0xc6, 0xbf, 0xce, 0x97, 0x2f], // received_at, zigzag
            &[0x00, 192, 0, 2, 7],                                   // peer: V4, address
            &[0x82, 0x04],                                           // port 514
            &[0x14],                                                 // 20 bytes
            b"<13>1 - h a - - - hi",
        ]
        .concat();
        assert_eq!(encode(&m), expected);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let m = Message::Syslog(SyslogBatch {
            first_seq: 5,
            dropped: 1,
            records: (0..4).map(|i| record(i, 30)).collect(),
        });
        let bytes = encode(&m);
        for cut in 0..bytes.len() {
            assert!(decode_message(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_message(&trailing).is_err(), "trailing byte");
        // Counts far beyond the body: refused without allocating what they claim.
        for claim in [
            vec![0x05, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![
                0x05, 0x00, 0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f,
            ],
            vec![0x05, 0x00, 0x00, 0x01, 0x00, 0x07],
        ] {
            assert!(decode_message(&claim).is_err(), "{claim:02x?}");
        }
        // Every single-byte corruption decodes or fails; none panics.
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode_message(&b);
            }
        }
    }

    #[test]
    fn batches_fill_the_budget_and_number_records() {
        let records: Vec<_> = (0..100).map(|i| record(i, 40)).collect();
        let out = batches(records.clone(), 10, 3, 1390);
        assert!(out.len() > 1);
        let mut seq = 10;
        for b in &out {
            assert_eq!(b.first_seq, seq);
            assert_eq!(b.dropped, 3);
            assert!(encode(&Message::Syslog(b.clone())).len() <= 1390);
            seq = b.next_seq();
        }
        assert_eq!(seq, 110);
        let all: Vec<_> = out.into_iter().flat_map(|b| b.records).collect();
        assert_eq!(all, records);
        // A record larger than the budget goes alone.
        let big = batches(vec![record(0, 5000), record(1, 5)], 0, 0, 1390);
        assert_eq!(big.len(), 2);
        assert_eq!(big[1].first_seq, 1);
    }
}
