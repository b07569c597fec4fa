//! The transmitter's session epoch (see `protocol::epoch`): read from the link state file at
//! start, moved on, and written back before anything is sent, so that every start sends under
//! a newer session than the one before and a receiver can refuse captures of older ones.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tracing::{info, warn};

/// The session id of this start: a new epoch (persisted in `state_file` first) and 32 random
/// bits. With `required` (a keyed link, where receivers enforce epochs), a state file that
/// cannot be written stops the start: an epoch that was not persisted could be used again.
/// Without, it is logged and the epoch comes from the clock alone.
pub fn start_session(state_file: &Path, required: bool) -> anyhow::Result<u64> {
    let last = read_epoch(state_file);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let epoch = protocol::epoch::next_epoch(last, now).with_context(|| {
        format!(
            "the session epoch cannot grow any further (last {last:?} in {}, clock {now}); \
             check the clock, then remove the file",
            state_file.display()
        )
    })?;
    match write_epoch(state_file, epoch) {
        Ok(()) => {}
        Err(e) if required => {
            return Err(e).with_context(|| {
                format!(
                    "cannot persist the session epoch in {} (link.state_file); the receiver \
                     refuses sessions that are not newer than the last, so the transmitter \
                     needs a writable state file",
                    state_file.display()
                )
            });
        }
        Err(e) => {
            warn!(path = %state_file.display(), error = %format!("{e:#}"), "cannot persist the session epoch; using the clock's");
        }
    }
    info!(epoch, path = %state_file.display(), "session epoch");
    Ok(protocol::epoch::session_id(epoch, random_u32()?))
}

/// The epoch of the last start, if the file holds one. A file that does not parse is reported
/// and treated as absent: the clock still moves the epoch on.
fn read_epoch(path: &Path) -> Option<u32> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the link state file");
            return None;
        }
    };
    let epoch = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .as_slice()
        .windows(2)
        .find(|w| w[0] == "epoch")
        .and_then(|w| w[1].parse().ok());
    if epoch.is_none() {
        warn!(path = %path.display(), "the link state file holds no epoch; starting from the clock");
    }
    epoch
}

/// Writes the file whole or not at all: a temporary file beside it, synced, renamed over it.
fn write_epoch(path: &Path, epoch: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    writeln!(tmp, "epoch {epoch}")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn random_u32() -> anyhow::Result<u32> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::epoch::epoch_of;

    #[test]
    fn every_start_gets_a_newer_epoch_and_persists_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("tx-link.state");
        let a = start_session(&path, true).expect("first start");
        let b = start_session(&path, true).expect("second start");
        let c = start_session(&path, true).expect("third start");
        assert!(epoch_of(a) < epoch_of(b) && epoch_of(b) < epoch_of(c));
        assert_eq!(read_epoch(&path), Some(epoch_of(c)));
        // The clock is a floor: a state file from a box whose clock was ahead still wins.
        std::fs::write(&path, "epoch 4000000000\n").expect("write");
        let d = start_session(&path, true).expect("start");
        assert_eq!(epoch_of(d), 4_000_000_001);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_stops_a_keyed_start_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: it cannot be replaced.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).expect("mkdir");
        let err = start_session(&path, true).expect_err("a keyed start must persist");
        assert!(format!("{err:#}").contains("link.state_file"), "{err:#}");
        assert!(start_session(&path, false).is_ok());
    }

    #[test]
    fn a_garbled_state_file_falls_back_to_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "epoch banana\n").expect("write");
        let s = start_session(&path, true).expect("start");
        assert!(epoch_of(s) > 1_700_000_000);
    }
}
