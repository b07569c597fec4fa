//! The receiver's own syslog message, put in the stream where messages went missing.

use protocol::model::UnixNanos;

/// What went missing at one point of the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Messages lost on the link beyond FEC repair: exactly, from the gap in record numbers.
    pub link: u64,
    /// Messages gateway-tx dropped itself since the last marker (queue full, oversized,
    /// malformed framing), from the cumulative count every batch carries.
    pub transmitter: u64,
    /// Messages this receiver could not spool (its spool was full).
    pub spool: u64,
}

impl Loss {
    pub fn is_empty(&self) -> bool {
        *self == Loss::default()
    }
}

/// syslog (5) × 8 + warning (4): the facility for the syslog system's own messages.
const PRI: u8 = 44;
/// RFC 5612's enterprise number for documentation: the structured data element needs one, and
/// this gateway has none registered.
const SD_ID: &str = "loss@32473";

/// An RFC 5424 message from `gateway-rx` on `host` at `now` saying what `loss` counts. The
/// counts are in the structured data, for machines, and in the text, for people.
pub fn marker(loss: &Loss, host: &str, now: UnixNanos) -> Vec<u8> {
    // RFC 5424 allows at most six fraction digits.
    let mut time = config::timefmt::format_rfc3339(now);
    if time.len() == 30 {
        time.replace_range(26..29, "");
    }
    format!(
        "<{PRI}>1 {time} {host} gateway-rx - syslog-loss [{SD_ID} link=\"{}\" transmitter=\"{}\" \
         spool=\"{}\"] syslog messages missing here: {} lost on the link (beyond FEC repair), \
         {} dropped by gateway-tx, {} not spooled by gateway-rx (spool full)",
        loss.link, loss.transmitter, loss.spool, loss.link, loss.transmitter, loss.spool
    )
    .into_bytes()
}

/// The counts a marker carries, read back (tests, and the end-to-end check of lost messages).
pub fn parse_marker(bytes: &[u8]) -> Option<Loss> {
    let text = std::str::from_utf8(bytes).ok()?;
    let sd = text.split_once(&format!("[{SD_ID} "))?.1.split_once(']')?.0;
    let mut loss = Loss::default();
    for part in sd.split(' ') {
        let (k, v) = part.split_once('=')?;
        let v: u64 = v.trim_matches('"').parse().ok()?;
        match k {
            "link" => loss.link = v,
            "transmitter" => loss.transmitter = v,
            "spool" => loss.spool = v,
            _ => return None,
        }
    }
    Some(loss)
}

/// The host name put in markers: the kernel's, or RFC 5424's NILVALUE.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_rfc5424_and_reads_back() {
        let loss = Loss {
            link: 17,
            transmitter: 3,
            spool: 0,
        };
        let m = marker(&loss, "rx1", 1_700_000_000_123_456_789);
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(
            text.starts_with("<44>1 2023-11-14T22:13:20.123456Z rx1 gateway-rx - syslog-loss [loss@32473 link=\"17\" transmitter=\"3\" spool=\"0\"] "),
            "{text}"
        );
        assert!(text.contains("17 lost on the link"));
        assert_eq!(parse_marker(&m), Some(loss));
        assert_eq!(parse_marker(b"<13>1 - h app - - - ordinary"), None);
    }
}
