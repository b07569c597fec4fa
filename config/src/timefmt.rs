//! RFC 3339 timestamps for the command lines and logs of both daemons (`gateway-tx backfill
//! --from`, `gateway-rx query --from`, the gap audit log), as nanoseconds since the Unix epoch
//! (UTC), the data model's time. No time zone database: offsets are taken as written.

/// Nanoseconds since the Unix epoch, UTC (the data model's `UnixNanos`).
pub type UnixNanos = i64;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `t` or a space may separate date
/// and time, `z` stands for `Z`. A date alone (`YYYY-MM-DD`) is midnight UTC. The error says
/// what is wrong and shows the accepted form.
pub fn parse_rfc3339(text: &str) -> Result<UnixNanos, String> {
    let s = text.trim();
    let fail = |why: &str| {
        Err(format!(
            "\"{text}\" is not an RFC 3339 time ({why}); write it like \
             2024-05-01T12:00:00Z or 2024-05-01T14:00:00.5+02:00"
        ))
    };
    let b = s.as_bytes();
    if b.len() < 10 || !s.is_ascii() {
        return fail("too short or not ASCII");
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return fail("the date must be YYYY-MM-DD");
    };
    if b[4] != b'-' || b[7] != b'-' {
        return fail("the date must be YYYY-MM-DD");
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return fail("no such date");
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Ok(days * 86_400 * NANOS_PER_SEC);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 {
        return fail("the time must follow the date as THH:MM:SS");
    }
    let (Some(hour), Some(minute), Some(second)) = (num(11..13), num(14..16), num(17..19)) else {
        return fail("the time must be HH:MM:SS");
    };
    if b[13] != b':' || b[16] != b':' || hour > 23 || minute > 59 || second > 60 {
        return fail("the time must be HH:MM:SS");
    }
    // A leap second (:60) is read as :59.
    let second = second.min(59);
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return fail("a fraction needs digits after the '.'");
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (Some(oh), Some(om)) = (num(i + 1..i + 3), num(i + 4..i + 6)) else {
                return fail("the offset must be +HH:MM or -HH:MM");
            };
            if oh > 23 || om > 59 {
                return fail("the offset must be +HH:MM or -HH:MM");
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return fail("it must end with Z or an offset like +02:00"),
    };
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    // In i128: the whole seconds of the earliest instants are below i64::MIN on their own.
    let total = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
    i64::try_from(total).map_or_else(|_| fail("out of range"), Ok)
}

/// `2024-05-01T12:00:00.000000001Z`: UTC, always nine fraction digits, so text order is time
/// order.
pub fn format_rfc3339(t: UnixNanos) -> String {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let nanos = t.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00.5+02:00"),
            Ok(1_714_564_800 * NANOS_PER_SEC + 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-05-01"),
            Ok(1_714_521_600 * NANOS_PER_SEC)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999999999Z"), Ok(-1));
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_rfc3339(1_714_564_800 * NANOS_PER_SEC + 7),
            "2024-05-01T12:00:00.000000007Z"
        );
    }

    #[test]
    fn round_trips() {
        for t in [
            0i64,
            1,
            -1_000_000_007,
            951_782_400_123_456_789, // 2000-02-29
            4_102_444_800 * NANOS_PER_SEC - 1,
            i64::MAX / 2,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t), "{t}");
        }
    }

    /// The instants of the first and last second of `UnixNanos`: their whole seconds are out
    /// of range on their own, only the fraction brings them back.
    #[test]
    fn the_ends_of_the_range_round_trip() {
        for t in [
            i64::MIN,
            i64::MIN + 999_999_999,
            i64::MAX,
            i64::MAX - 999_999_999,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t), "{t}");
        }
        assert_eq!(
            parse_rfc3339("1677-09-21T00:12:43.145224191Z").map_err(|e| e.contains("out of range")),
            Err(true)
        );
    }

    #[test]
    fn refusals_say_why() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2",
            "2024-05-01T12:00:00Zjunk",
            "２０２４-05-01",
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.contains("2024-05-01T12:00:00Z"), "{e}");
        }
    }
}
