//! gateway-rx's status log, read back as counters.

use super::*;

/// gateway-rx's counters (daemons that predate a counter log none: it reads 0).
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct RxStatus {
    pub(super) received: u64,
    pub(super) accepted: u64,
    pub(super) repaired: u64,
    pub(super) lost: u64,
    pub(super) crc_failures: u64,
    pub(super) auth_failures: u64,
    pub(super) duplicates: u64,
    pub(super) bad_magic: u64,
    pub(super) bad_length: u64,
    pub(super) bad_version: u64,
    pub(super) malformed: u64,
    pub(super) out_of_window: u64,
    pub(super) stale_session: u64,
    pub(super) replayed: u64,
    pub(super) key_rate_limited: u64,
    pub(super) session_changes: u64,
}

impl RxStatus {
    /// The rejection counters by name, in the status line's order.
    pub(super) fn rejections(&self) -> [(&'static str, u64); 11] {
        [
            ("crc", self.crc_failures),
            ("auth", self.auth_failures),
            ("duplicate", self.duplicates),
            ("bad magic", self.bad_magic),
            ("bad length", self.bad_length),
            ("bad version", self.bad_version),
            ("malformed", self.malformed),
            ("out of window", self.out_of_window),
            ("stale session", self.stale_session),
            ("replayed", self.replayed),
            ("key rate-limited", self.key_rate_limited),
        ]
    }

    pub(super) fn rejected(&self) -> u64 {
        self.rejections().iter().map(|(_, n)| n).sum()
    }

    /// The rejection counters that are not 0, as the report shows them.
    pub(super) fn counted(&self) -> String {
        let parts: Vec<String> = self
            .rejections()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// The counts since `b`, an earlier line of the same receiver.
    pub(super) fn since(&self, b: &RxStatus) -> RxStatus {
        RxStatus {
            received: self.received.saturating_sub(b.received),
            accepted: self.accepted.saturating_sub(b.accepted),
            repaired: self.repaired.saturating_sub(b.repaired),
            lost: self.lost.saturating_sub(b.lost),
            crc_failures: self.crc_failures.saturating_sub(b.crc_failures),
            auth_failures: self.auth_failures.saturating_sub(b.auth_failures),
            duplicates: self.duplicates.saturating_sub(b.duplicates),
            bad_magic: self.bad_magic.saturating_sub(b.bad_magic),
            bad_length: self.bad_length.saturating_sub(b.bad_length),
            bad_version: self.bad_version.saturating_sub(b.bad_version),
            malformed: self.malformed.saturating_sub(b.malformed),
            out_of_window: self.out_of_window.saturating_sub(b.out_of_window),
            stale_session: self.stale_session.saturating_sub(b.stale_session),
            replayed: self.replayed.saturating_sub(b.replayed),
            key_rate_limited: self.key_rate_limited.saturating_sub(b.key_rate_limited),
            session_changes: self.session_changes.saturating_sub(b.session_changes),
        }
    }
}

/// Every `status` line of a gateway-rx JSON log, in order.
pub(super) fn statuses(log: &Path) -> Vec<RxStatus> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"message\":\"status\""))
        .map(|line| {
            let n = |k: &str| json_number(line, k).unwrap_or(0);
            RxStatus {
                received: n("received"),
                accepted: n("accepted"),
                repaired: n("repaired"),
                lost: n("lost"),
                crc_failures: n("crc_failures"),
                auth_failures: n("auth_failures"),
                duplicates: n("duplicates"),
                bad_magic: n("bad_magic"),
                bad_length: n("bad_length"),
                bad_version: n("bad_version"),
                malformed: n("malformed"),
                out_of_window: n("out_of_window"),
                stale_session: n("stale_session"),
                replayed: n("replayed"),
                key_rate_limited: n("key_rate_limited"),
                session_changes: n("session_changes"),
            }
        })
        .collect()
}

/// The last `status` line of a gateway-rx JSON log.
pub(super) fn last_status(log: &Path) -> Option<RxStatus> {
    statuses(log).pop()
}

/// A string field of a JSON log line.
pub(super) fn json_string(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let rest = &line[line.find(&pat)? + pat.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

pub(super) fn json_number(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub(super) fn log_count(log: &Path, message: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let pat = format!("\"message\":\"{message}");
    text.lines().filter(|l| l.contains(&pat)).count()
}

/// `key N` or `key=N` in an agent's reply.
pub(super) fn field(line: &str, key: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            return v.parse().ok();
        }
        if *w == key {
            return words.get(i + 1)?.parse().ok();
        }
    }
    None
}
