//! Session ids and their epochs.
//!
//! A session id is the transmitter's epoch in its high 32 bits and 32 random bits below. The
//! epoch grows with every start of the transmitter, which persists it (`gateway-tx` keeps it
//! in its link state file), and is at least the Unix time in seconds of the start, so it keeps
//! growing even if that file is lost while the clock is right. With a key the session id is
//! authenticated (it is part of the header, which is authenticated data, and it goes into the
//! per-session key), so a receiver can order sessions by epoch and refuse an older one: a
//! capture of an earlier session replayed later can never displace the transmitter's current
//! session, even across the receiver's own restarts (it persists the newest session it
//! accepted). The random half keeps session keys, and so AES-GCM nonces, distinct should an
//! epoch ever repeat (a transmitter's state restored from a backup).

/// The session id of `epoch` with `random` low bits.
pub fn session_id(epoch: u32, random: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(random)
}

/// The epoch a session id carries.
pub fn epoch_of(session: u64) -> u32 {
    (session >> 32) as u32
}

/// The epoch of a transmitter starting at `unix_secs` whose previous start used `last`: above
/// `last`, and at least the start time. `None` once epochs are used up (`last` at `u32::MAX`,
/// or a clock past 2106).
pub fn next_epoch(last: Option<u32>, unix_secs: u64) -> Option<u32> {
    let after_last = match last {
        Some(l) => l.checked_add(1)?,
        None => 1,
    };
    let clock = u32::try_from(unix_secs).ok()?;
    Some(after_last.max(clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_the_high_half() {
        let s = session_id(0x6000_0001, 0xdead_beef);
        assert_eq!(s, 0x6000_0001_dead_beef);
        assert_eq!(epoch_of(s), 0x6000_0001);
    }

    #[test]
    fn next_epoch_grows_past_the_last_and_follows_the_clock() {
        assert_eq!(next_epoch(None, 1_800_000_000), Some(1_800_000_000));
        // Two starts within one second still get two epochs.
        assert_eq!(
            next_epoch(Some(1_800_000_000), 1_800_000_000),
            Some(1_800_000_001)
        );
        // A clock set back does not take the epoch back.
        assert_eq!(next_epoch(Some(1_800_000_000), 1_000), Some(1_800_000_001));
        // A lost state file with a right clock still moves on.
        assert_eq!(next_epoch(None, 1_900_000_000), Some(1_900_000_000));
        assert_eq!(next_epoch(Some(u32::MAX), 5), None);
        assert_eq!(next_epoch(None, u64::from(u32::MAX) + 1), None);
    }
}
