//! The receiver's link state file: the transmitter session it is decoding and the highest
//! datagram sequence seen of it, kept across its own restarts. With a key, the decoder refuses
//! sessions of an older epoch than this one and this session's datagrams up to that sequence
//! (replayed captures); see `protocol::decoder::DecoderConfig::resume`.
//!
//! The link task only publishes the point; a task of its own writes it, at most once a second
//! and never from the link task, whose socket would overflow while a disk stalls. A receiver
//! killed within that second resumes from the point before: newer sessions are still taken,
//! and only datagrams of the last second before the kill could be replayed into it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::decoder::ResumePoint;
use tokio::sync::watch;
use tracing::{info, warn};

const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The point saved in `path`, if it holds one. A file that does not parse is reported and
/// treated as absent (the first authenticated session is then taken, as on a first start).
pub fn load(path: &Path) -> Option<ResumePoint> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the link state file; any authenticated session will be taken");
            return None;
        }
    };
    let point = parse(&text);
    match point {
        Some(p) => info!(
            path = %path.display(),
            session = format_args!("{:016x}", p.session),
            seq = p.seq,
            "link state: older sessions and replays of this one are refused"
        ),
        None => {
            warn!(path = %path.display(), "the link state file is not readable as one; any authenticated session will be taken")
        }
    }
    point
}

fn parse(text: &str) -> Option<ResumePoint> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["session", s, "seq", q] => Some(ResumePoint {
            session: u64::from_str_radix(s, 16).ok()?,
            seq: q.parse().ok()?,
        }),
        _ => None,
    }
}

fn format(p: ResumePoint) -> String {
    format!("session {:016x} seq {}\n", p.session, p.seq)
}

/// Saves each new point the link task publishes, at most once a second, until the link task
/// is gone.
pub async fn keep(path: PathBuf, mut points: watch::Receiver<Option<ResumePoint>>) {
    let mut saved: Option<ResumePoint> = None;
    let mut failing = false;
    loop {
        if points.changed().await.is_err() {
            return;
        }
        let point = *points.borrow_and_update();
        if let Some(p) = point
            && Some(p) != saved
        {
            let target = path.clone();
            let result = tokio::task::spawn_blocking(move || write(&target, p)).await;
            match result {
                Ok(Ok(())) => {
                    saved = Some(p);
                    failing = false;
                }
                Ok(Err(e)) => {
                    if !failing {
                        warn!(path = %path.display(), error = %e, "cannot save the link state; after a restart, replays of older sessions would be taken");
                    }
                    failing = true;
                }
                Err(_) => return,
            }
        }
        tokio::time::sleep(SAVE_EVERY).await;
    }
}

/// Writes the file whole or not at all: a synced temporary file renamed over it.
fn write(path: &Path, p: ResumePoint) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(format(p).as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_point_reads_back_and_garbage_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("rx-link.state");
        assert_eq!(load(&path), None);
        let p = ResumePoint {
            session: 0x6000_0001_dead_beef,
            seq: 123_456,
        };
        write(&path, p).expect("write");
        assert_eq!(load(&path), Some(p));
        for bad in [
            "",
            "session zz seq 1",
            "session 1 seq -1",
            "seq 1 session 2",
        ] {
            std::fs::write(&path, bad).expect("write");
            assert_eq!(load(&path), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_keeper_saves_the_newest_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rx-link.state");
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(keep(path.clone(), rx));
        let p = ResumePoint { session: 7, seq: 9 };
        tx.send_replace(Some(p));
        for _ in 0..200 {
            if load(&path) == Some(p) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(load(&path), Some(p));
        drop(tx);
        task.await.expect("keeper ends with the link task");
    }
}
