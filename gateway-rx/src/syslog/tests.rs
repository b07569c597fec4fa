use super::*;
use protocol::message::SyslogRecord;

fn batch(first_seq: u64, n: u64, dropped: u64) -> SyslogBatch {
    SyslogBatch {
        first_seq,
        dropped,
        records: (first_seq..first_seq + n)
            .map(|i| SyslogRecord {
                received_at: 0,
                peer: "127.0.0.1:514".parse().unwrap(),
                bytes: format!("<13>1 - h app - - - m{i}").into_bytes(),
            })
            .collect(),
    }
}

/// Every message spooled, in order.
fn spooled(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for id in spool::segment_ids(dir).unwrap() {
        let mut r =
            durable_log::Reader::open(&spool::FORMAT.path(dir, id), spool::FORMAT, 0).unwrap();
        while let Some(b) = r.next_record().unwrap() {
            out.push(spool::parse_entry(b).unwrap().2.to_vec());
        }
    }
    out
}

fn input(dir: &std::path::Path) -> Syslog {
    start(&SyslogRx {
        spool: config::sinks::Spool {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
        },
        forward: vec![],
    })
    .unwrap()
}

#[tokio::test]
async fn a_gap_becomes_a_marker_at_the_point_of_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = input(dir.path());
    s.input.submit(9, false, batch(0, 3, 0));
    // Records 3..8 lost on the link, and the transmitter dropped 2 meanwhile.
    s.input.submit(9, false, batch(8, 2, 2));
    let got = spooled(dir.path());
    assert_eq!(got.len(), 6);
    assert_eq!(got[2], b"<13>1 - h app - - - m2");
    let loss = marker::parse_marker(&got[3]).expect("a marker after m2");
    assert_eq!(
        loss,
        Loss {
            link: 5,
            transmitter: 2,
            spool: 0
        }
    );
    assert_eq!(got[4], b"<13>1 - h app - - - m8");
    let st = s.stats.snapshot();
    assert_eq!(
        (st.markers, st.lost_link, st.dropped_tx, st.spooled),
        (1, 5, 2, 5)
    );
}

#[tokio::test]
async fn a_restart_resumes_the_count_and_skips_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = input(dir.path());
        s.input.submit(9, false, batch(0, 4, 0));
    }
    let mut s = input(dir.path());
    // The same session goes on: 4..6 replayed (skipped), then 6..8 new.
    s.input.submit(9, false, batch(4, 0, 0));
    s.input.submit(9, false, batch(2, 6, 0));
    assert_eq!(spooled(dir.path()).len(), 8);
    assert_eq!(s.stats.snapshot().duplicates, 2);
    // Missed while down: a marker.
    s.input.submit(9, false, batch(10, 1, 0));
    let got = spooled(dir.path());
    assert_eq!(marker::parse_marker(&got[8]).unwrap().link, 2);
    // A transmitter restart: its records count from 0 again, its drops too.
    s.input.submit(10, false, batch(1, 1, 1));
    let got = spooled(dir.path());
    assert_eq!(
        marker::parse_marker(&got[10]).unwrap(),
        Loss {
            link: 1,
            transmitter: 1,
            spool: 0
        }
    );
}

#[tokio::test]
async fn a_new_receiver_counts_from_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = input(dir.path());
    s.input.submit(9, false, batch(1000, 2, 5));
    let got = spooled(dir.path());
    // The transmitter's drops are news; what it sent before this receiver existed is not loss.
    assert_eq!(
        marker::parse_marker(&got[0]).unwrap(),
        Loss {
            link: 0,
            transmitter: 5,
            spool: 0
        }
    );
    assert_eq!(got.len(), 3);
    // Followed from the session's start: the records before the first batch were lost.
    let dir = tempfile::tempdir().unwrap();
    let mut s = input(dir.path());
    s.input.submit(9, true, batch(3, 1, 0));
    let got = spooled(dir.path());
    assert_eq!(marker::parse_marker(&got[0]).unwrap().link, 3);
}
