use proptest::prelude::*;

use super::*;

const SPOOL: Format = Format {
    ext: "spool",
    digits: 16,
    header_len: 0,
    max_record: 16 << 20,
};

const HISTORY: Format = Format {
    ext: "seg",
    digits: 20,
    header_len: 64,
    max_record: 1 << 20,
};

fn header(fmt: Format) -> Vec<u8> {
    vec![0xA5; fmt.header_len as usize]
}

fn framed(bodies: &[Vec<u8>], max: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        frame(&mut out, max, |o| o.extend_from_slice(b)).unwrap();
    }
    out
}

/// Writes one segment of `bodies` as the log does.
fn write_log(dir: &Path, fmt: Format, id: u64, bodies: &[Vec<u8>]) {
    let (mut log, _) = Log::open(dir, fmt, 4096, |_, _| true).unwrap();
    log.start_segment(id, &header(fmt)).unwrap();
    log.append(&framed(bodies, fmt.max_record)).unwrap();
    log.sync().unwrap();
}

/// Opens the log (recovering it) and reads every segment: the bodies, and the damage seen.
fn reopen_and_read(dir: &Path, fmt: Format) -> (Vec<Vec<u8>>, Damage, Option<Recovered>) {
    let (log, opened) = Log::open(dir, fmt, 4096, |_, _| true).unwrap();
    let mut out = Vec::new();
    let mut damage = Damage::default();
    for s in log.segments() {
        let mut r = Reader::open(&log.path(s.id), fmt, fmt.header_len.min(s.bytes)).unwrap();
        while let Some(b) = r.next_record().unwrap() {
            out.push(b.to_vec());
        }
        damage.bad_records += r.damage.bad_records;
        damage.skipped_bytes += r.damage.skipped_bytes;
        damage.torn_tail |= r.damage.torn_tail;
        damage.tail_bytes += r.damage.tail_bytes;
    }
    (out, damage, opened.recovered)
}

fn bodies() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..24), 1..7)
}

fn is_subsequence(got: &[Vec<u8>], of: &[Vec<u8>]) -> bool {
    let mut it = of.iter();
    got.iter().all(|g| it.any(|o| o == g))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A crash can stop a write at any byte: truncated anywhere in its last records, the log
    /// reopens to exactly the whole records before the cut, cuts the rest off, and appends
    /// after them.
    #[test]
    fn torn_writes_keep_every_whole_record(bodies in bodies(), history in any::<bool>()) {
        let fmt = if history { HISTORY } else { SPOOL };
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), fmt, 1, &bodies);
        let path = fmt.path(dir.path(), 1);
        let full = std::fs::read(&path).unwrap();
        let mut ends = vec![fmt.header_len];
        for b in &bodies {
            ends.push(ends.last().unwrap() + (RECORD_HEADER + b.len()) as u64);
        }
        // Every byte of the last three records.
        let from = ends[ends.len().saturating_sub(4)];
        for cut in from..=full.len() as u64 {
            std::fs::write(&path, &full[..cut as usize]).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() - 1;
            let (got, damage, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert_eq!(&got[..], &bodies[..whole], "cut at {}", cut);
            prop_assert_eq!(damage, Damage::default(), "the tail was cut on open");
            let rec = rec.unwrap();
            prop_assert_eq!(rec.len, ends[whole]);
            prop_assert_eq!(rec.damage.torn_tail, cut != ends[whole]);
            prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[whole]);
            // Appending goes on after the whole records.
            let (mut log, _) = Log::open(dir.path(), fmt, 4096, |_, _| true).unwrap();
            log.start_segment(2, &header(fmt)).unwrap();
            log.append(&framed(&[b"next".to_vec()], fmt.max_record)).unwrap();
            log.flush().unwrap();
            drop(log);
            let (got, _, _) = reopen_and_read(dir.path(), fmt);
            prop_assert_eq!(&got[..whole], &bodies[..whole]);
            prop_assert_eq!(&got[whole..], &[b"next".to_vec()]);
            std::fs::remove_file(fmt.path(dir.path(), 2)).unwrap();
        }
    }

    /// A power loss can keep a file's length but not its last writes: zero-filled from any
    /// byte of its last records, the log reopens to exactly the whole records before the
    /// zeros, cuts the rest off as a torn tail, and a second open finds nothing to do.
    #[test]
    fn zero_filled_tails_keep_every_whole_record(bodies in bodies(), history in any::<bool>()) {
        let fmt = if history { HISTORY } else { SPOOL };
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), fmt, 1, &bodies);
        let path = fmt.path(dir.path(), 1);
        let full = std::fs::read(&path).unwrap();
        let mut ends = vec![fmt.header_len];
        for b in &bodies {
            ends.push(ends.last().unwrap() + (RECORD_HEADER + b.len()) as u64);
        }
        let from = ends[ends.len().saturating_sub(4)];
        for zero in from..full.len() as u64 {
            let mut bytes = full.clone();
            bytes[zero as usize..].fill(0);
            // Bytes that were zeros already change nothing.
            let Some(changed) = full.iter().zip(&bytes).position(|(a, b)| a != b) else {
                continue;
            };
            std::fs::write(&path, &bytes).unwrap();
            let whole = ends.iter().filter(|e| **e <= changed as u64).count() - 1;
            let (got, damage, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert_eq!(&got[..], &bodies[..whole], "zeros from {}", zero);
            prop_assert_eq!(damage, Damage::default(), "zeros from {}: cut on open", zero);
            let rec = rec.unwrap();
            prop_assert!(rec.damage.torn_tail, "zeros from {}", zero);
            prop_assert_eq!(rec.damage.bad_records, 0, "zeros from {}", zero);
            prop_assert_eq!(rec.len, ends[whole], "zeros from {}", zero);
            prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[whole]);
            let (_, _, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert!(rec.unwrap().damage.is_clean());
        }
    }

    /// Every single bit flipped in a small log: never a panic, never a record that was not
    /// written, never out of order, and nothing lost without a report.
    #[test]
    fn bit_flips_lose_records_never_invent_them(bodies in bodies(), history in any::<bool>()) {
        let fmt = if history { HISTORY } else { SPOOL };
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), fmt, 1, &bodies);
        let path = fmt.path(dir.path(), 1);
        let clean = std::fs::read(&path).unwrap();
        for bit in fmt.header_len as usize * 8..clean.len() * 8 {
            let mut bytes = clean.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bytes).unwrap();
            let (got, damage, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert!(is_subsequence(&got, &bodies), "bit {}: {:?}", bit, got);
            let rec_damage = rec.unwrap().damage;
            prop_assert!(got.len() < bodies.len(), "bit {}: a flip always costs a record", bit);
            prop_assert!(
                !rec_damage.is_clean() || !damage.is_clean(),
                "bit {}: a loss is reported", bit
            );
            // After the cut, what is left reads the same again, with nothing more to cut.
            let (again, _, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert_eq!(&again, &got);
            prop_assert!(!rec.unwrap().damage.torn_tail);
        }
    }

    /// Two segments, the newest truncated to every length, opened twice: the older one is
    /// never touched, and a second open finds nothing more to do.
    #[test]
    fn reopen_at_every_byte(old in bodies(), new in bodies()) {
        let fmt = SPOOL;
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), fmt, 1, &old);
        write_log(dir.path(), fmt, 2, &new);
        let path = fmt.path(dir.path(), 2);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..=full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (first, _, _) = reopen_and_read(dir.path(), fmt);
            let (second, damage, rec) = reopen_and_read(dir.path(), fmt);
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(&second[..old.len()], &old[..]);
            prop_assert!(is_subsequence(&second[old.len()..], &new));
            prop_assert!(damage.is_clean() && !rec.unwrap().damage.torn_tail);
        }
    }
}

/// The layout byte for byte as the history buffer and the spools wrote it before this
/// crate, built here by hand (no call into the crate), reads back whole.
#[test]
fn the_layouts_written_before_this_crate_read_back() {
    for fmt in [HISTORY, SPOOL] {
        let dir = tempfile::tempdir().unwrap();
        let mut file = vec![0x11u8; fmt.header_len as usize];
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3 + i as usize]).collect();
        for b in &bodies {
            file.extend_from_slice(&(b.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(b).to_le_bytes());
            file.extend_from_slice(b);
        }
        let name = if fmt == HISTORY {
            "00000000000000000042.seg"
        } else {
            "0000000000000042.spool"
        };
        std::fs::write(dir.path().join(name), &file).unwrap();
        let (got, damage, rec) = reopen_and_read(dir.path(), fmt);
        assert_eq!(got, bodies);
        assert!(damage.is_clean());
        assert_eq!(rec.unwrap().id, 42);
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), file);
    }
}

#[test]
fn a_damaged_length_resyncs_at_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 20]).collect();
    let fmt = SPOOL;
    for bad in [0u32, u32::MAX, 3, 29] {
        write_log(dir.path(), fmt, 1, &bodies);
        let path = fmt.path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = 20 * 28;
        bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (got, damage, _) = reopen_and_read(dir.path(), fmt);
        let mut want = bodies.clone();
        want.remove(20);
        assert_eq!(got, want, "length {bad}");
        assert_eq!(damage.bad_records, 1);
        assert_eq!(damage.skipped_bytes, 28);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn retention_drops_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), SPOOL, 4096, |_, _| true).unwrap();
    for id in 1..=5 {
        log.start_segment(id, &[]).unwrap();
        log.append(&framed(&[vec![0; 92]], SPOOL.max_record))
            .unwrap();
    }
    assert_eq!(log.total_bytes(), 500);
    let dropped = log.trim(250);
    assert_eq!(
        dropped,
        [1, 2, 3].map(|id| Dropped { id, bytes: 100 }).to_vec()
    );
    assert_eq!(SPOOL.list(dir.path()).unwrap().0, [4, 5]);
    // Never the segment being written.
    assert_eq!(log.trim(0).len(), 1);
    assert_eq!(log.trim(0), []);
    assert_eq!(log.segments(), [Segment { id: 5, bytes: 100 }]);
}

#[test]
fn cut_back_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), SPOOL, 4096, |_, _| true).unwrap();
    log.start_segment(1, &[]).unwrap();
    log.append(&framed(&[b"a".to_vec()], 99)).unwrap();
    log.sync().unwrap();
    log.append(&framed(&[b"b".to_vec()], 99)).unwrap();
    log.truncate_active(9).unwrap();
    log.append(&framed(&[b"c".to_vec()], 99)).unwrap();
    log.start_segment(2, &[]).unwrap();
    log.append(&framed(&[b"d".to_vec()], 99)).unwrap();
    log.sync().unwrap();
    drop(log);
    let (got, _, _) = reopen_and_read(dir.path(), SPOOL);
    assert_eq!(got, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    let (mut log, _) = Log::open(dir.path(), SPOOL, 4096, |_, _| true).unwrap();
    let dropped = log.cut_back(1, 9).unwrap();
    assert_eq!(
        dropped,
        [Dropped { id: 2, bytes: 9 }, Dropped { id: 1, bytes: 9 }]
    );
    let (got, _, _) = reopen_and_read(dir.path(), SPOOL);
    assert_eq!(got, [b"a".to_vec()]);
}

/// Opened at a committed head, the log cuts what lies beyond it and nothing below it, not
/// even a damaged last record: that is committed data, for the readers to report.
#[test]
fn open_at_cuts_beyond_the_commit_and_keeps_damage_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
    write_log(dir.path(), SPOOL, 1, &bodies);
    write_log(dir.path(), SPOOL, 2, &bodies[..1]);
    let path = SPOOL.path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // The third record's length, then the fourth's body (the last before the head).
    bytes[2 * 18] ^= 1;
    bytes[3 * 18 + 9] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (log, opened) = Log::open_at(dir.path(), SPOOL, 4096, (1, 72), |_, _| true).unwrap();
    assert_eq!(opened.cut, [Dropped { id: 2, bytes: 18 }]);
    assert_eq!(opened.recovered, None);
    assert_eq!(log.segments(), [Segment { id: 1, bytes: 72 }]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mut r = Reader::open(&path, SPOOL, 0).unwrap();
    assert_eq!(r.next_record().unwrap(), Some(&bodies[0][..]));
    assert_eq!(r.next_record().unwrap(), Some(&bodies[1][..]));
    assert_eq!(r.next_record().unwrap(), None);
    assert!(!r.damage.is_clean());
    // Beyond the head, within the segment: cut.
    let (log, opened) = Log::open_at(dir.path(), SPOOL, 4096, (1, 36), |_, _| true).unwrap();
    assert_eq!(opened.cut, [Dropped { id: 1, bytes: 36 }]);
    assert_eq!(log.segments(), [Segment { id: 1, bytes: 36 }]);
}

/// The last record at full length, its body zeros (the length made it to disk, the body did
/// not): a torn tail, cut, not a bad record in the middle counted on every read.
#[test]
fn a_zero_filled_last_body_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 100]).collect();
    write_log(dir.path(), HISTORY, 1, &bodies);
    let path = HISTORY.path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len - 100..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let (got, damage, rec) = reopen_and_read(dir.path(), HISTORY);
    assert_eq!(got, bodies[..4]);
    assert!(damage.is_clean());
    let rec = rec.unwrap();
    assert!(rec.damage.torn_tail);
    assert_eq!(rec.damage.bad_records, 0);
    assert_eq!(rec.len, 64 + 4 * 108);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 + 4 * 108);
}

/// A rollback whose cut fails leaves prepared, synced records the caller rolled back in the
/// segment: they are never read, whatever the caller appends next.
#[test]
fn a_failed_rollback_cut_never_lets_rolled_back_records_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), SPOOL, 4096, |_, _| true).unwrap();
    log.start_segment(1, &[]).unwrap();
    log.append(&framed(&[b"a".to_vec()], 99)).unwrap();
    log.sync().unwrap();
    log.append(&framed(&[b"rolled back".to_vec()], 99)).unwrap();
    log.sync().unwrap();
    FAIL_SET_LEN.with(|n| n.set(1));
    assert!(log.truncate_active(9).is_err());
    // The caller goes on as a spool does: in a new segment if this one is given up.
    if log.active().is_none() {
        log.start_segment(2, &[]).unwrap();
    }
    log.append(&framed(&[b"c".to_vec()], 99)).unwrap();
    log.sync().unwrap();
    drop(log);
    let (got, damage, _) = reopen_and_read(dir.path(), SPOOL);
    assert_eq!(got, [b"a".to_vec(), b"c".to_vec()]);
    assert!(damage.is_clean());
}

/// Resynchronising through a long stretch of garbage costs time in proportion to it, not to
/// its square: 16 MiB of random bytes after a record open at once.
#[test]
fn a_segment_of_garbage_opens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = framed(&[b"kept".to_vec()], SPOOL.max_record);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    bytes.extend((0..16 << 20).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    std::fs::write(SPOOL.path(dir.path(), 1), &bytes).unwrap();
    let t = std::time::Instant::now();
    let (got, _, rec) = reopen_and_read(dir.path(), SPOOL);
    let took = t.elapsed();
    assert_eq!(got, [b"kept".to_vec()]);
    assert!(rec.unwrap().damage.torn_tail);
    // Under a second alone in debug; the bound leaves room for a loaded machine, and the
    // quadratic search took over five seconds alone.
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

#[test]
fn refused_headers_and_strays() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), HISTORY, 5, &[b"x".to_vec()]);
    std::fs::write(HISTORY.path(dir.path(), 9), b"short").unwrap();
    std::fs::write(dir.path().join("99999999999999999999.seg"), b"").unwrap();
    let (log, opened) = Log::open(dir.path(), HISTORY, 4096, |_, h| h.is_some()).unwrap();
    assert_eq!(opened.refused, [Dropped { id: 9, bytes: 5 }]);
    assert_eq!(opened.strays.len(), 1);
    assert_eq!(log.segments(), [Segment { id: 5, bytes: 73 }]);
}

#[test]
fn oversized_and_empty_bodies_are_refused() {
    let mut out = vec![1, 2];
    assert!(frame(&mut out, 4, |o| o.extend_from_slice(b"12345")).is_err());
    assert!(frame(&mut out, 4, |_| {}).is_err());
    assert_eq!(out, [1, 2]);
}
