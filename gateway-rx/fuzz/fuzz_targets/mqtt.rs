//! Fuzzes what the MQTT sink makes of a tag and its value: the topic (`sinks::mqtt::topic`) and
//! the JSON payload (`sinks::mqtt::payload`), for any tag name the link could carry and any
//! value, quality and times.
//!
//! Input: `[topic prefix]` then records `[tag name][value type][value][quality][source time
//! i64][received time i64]` until the input ends. A prefix the config refuses (a wildcard, a
//! control character, a noncharacter, a leading '$', over 1024 bytes) is skipped, as the
//! daemon never runs with one.
//!
//! Checked, for the topic: it holds no wildcard ('+', '#'), control character (NUL included)
//! nor Unicode noncharacter (a broker closes the connection for those), does not start with '$'
//! (broker topics), starts with the prefix, has one level per level of the prefix and of the
//! tag name, and an ordinary level of the name (non-empty, none of those characters) comes
//! through unchanged. For the payload: it is one JSON object (so valid UTF-8) with exactly the
//! documented keys; the value reads back exactly (integers of every width, floats bit for bit,
//! NaN and infinities as null, strings, DateTime as RFC 3339, ByteString as lowercase hex), the
//! type name and quality code and name are the value's, and both times are RFC 3339 strings that
//! parse back to the same nanosecond.
#![no_main]

use config::sinks::topic_refuses;
use config::timefmt::{format_rfc3339, parse_rfc3339};
use gateway_rx::sinks::mqtt::{payload, topic};
use gateway_rx::store::db::type_name;
use gateway_rx_fuzz::{Input, VALUE_TYPES};
use libfuzzer_sys::fuzz_target;
use protocol::model::{Quality, UnixNanos, Value};
use serde_json::Value as J;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let raw_prefix = input.text(48);
    let prefix = raw_prefix.trim_end_matches('/');
    if prefix.chars().any(topic_refuses) || prefix.starts_with('$') || prefix.len() > 1024 {
        return;
    }
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let name = match input.u8() % 4 {
            // Names built from path-like pieces, so levels, wildcards and '$' meet often.
            0 => (0..input.u8() % 6)
                .map(|_| {
                    input.pick(&[
                        "a",
                        "",
                        "+",
                        "#",
                        "$SYS",
                        "x\0y",
                        "é",
                        "a+b",
                        "/",
                        "\n",
                        "\u{85}",
                        "\u{fffe}",
                        "\u{10ffff}",
                        "\u{fdd0}",
                    ])
                })
                .collect::<Vec<_>>()
                .join("/"),
            _ => input.text(64),
        };
        let value_type = input.pick(&VALUE_TYPES);
        let value = input.value(value_type);
        let quality = input.quality();
        let source = input.u64() as i64;
        let received = input.u64() as i64;
        let late = input.u64() & 1 == 1;
        check_topic(prefix, &name);
        check_payload(&value, quality, source, received, late);
    }
});

fn check_topic(prefix: &str, name: &str) {
    let t = topic(prefix, name);
    // Wildcards, control characters and noncharacters (which Mosquitto closes the connection
    // for), written out here rather than taken from the crate.
    let bad = |c: char| {
        let n = u32::from(c);
        matches!(c, '+' | '#')
            || n < 0x20
            || (0x7F..=0x9F).contains(&n)
            || (0xFDD0..=0xFDEF).contains(&n)
            || n & 0xFFFF >= 0xFFFE
    };
    assert!(!t.chars().any(bad), "{t:?} from {name:?}");
    assert!(!t.starts_with('$'), "{t:?} from {name:?}");
    let levels: Vec<&str> = t.split('/').collect();
    let prefix_levels = if prefix.is_empty() {
        0
    } else {
        assert!(t.starts_with(&format!("{prefix}/")), "{t:?}");
        prefix.split('/').count()
    };
    let name_levels: Vec<&str> = name.split('/').collect();
    assert_eq!(
        levels.len(),
        prefix_levels + name_levels.len(),
        "{t:?} from {prefix:?} and {name:?}"
    );
    for (i, (got, level)) in levels[prefix_levels..].iter().zip(&name_levels).enumerate() {
        assert!(!got.is_empty(), "an empty level in {t:?}");
        let ordinary = !level.is_empty() && !level.chars().any(bad);
        // A leading '$' of the whole topic gets a '_' before it.
        let dollar = prefix.is_empty() && i == 0 && level.starts_with('$');
        if ordinary && !dollar {
            assert_eq!(got, level, "{t:?} from {name:?}");
        }
    }
}

fn check_payload(
    value: &Value,
    quality: Quality,
    source: UnixNanos,
    received: UnixNanos,
    late: bool,
) {
    let text = payload(value, quality, source, received, late);
    let json: J = serde_json::from_str(&text).expect("the payload is JSON");
    let J::Object(map) = &json else {
        panic!("not an object: {json}");
    };
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = vec!["quality", "received_time", "source_time", "type", "value"];
    if late {
        // Only a late sample carries the flag, and only as `true`.
        expected.insert(0, "late");
        assert_eq!(json["late"], J::Bool(true));
    }
    assert_eq!(keys, expected);
    assert_eq!(json["type"], type_name(value.value_type()));
    assert_eq!(json["quality"]["code"].as_u64(), Some(u64::from(quality.0)));
    assert_eq!(json["quality"]["name"], quality.name());
    assert_eq!(json["quality"].as_object().map(|q| q.len()), Some(2));
    for (key, t) in [("source_time", source), ("received_time", received)] {
        let text = json[key].as_str().expect("a time is a string");
        assert_eq!(text, format_rfc3339(t));
        // Every i64 of nanoseconds falls in the years 1677-2262.
        assert_eq!(parse_rfc3339(text), Ok(t), "{text}");
    }
    let v = &json["value"];
    match value {
        Value::Boolean(b) => assert_eq!(v.as_bool(), Some(*b)),
        Value::Int16(x) => assert_eq!(v.as_i64(), Some(i64::from(*x))),
        Value::Int32(x) => assert_eq!(v.as_i64(), Some(i64::from(*x))),
        Value::Int64(x) => assert_eq!(v.as_i64(), Some(*x)),
        Value::UInt16(x) => assert_eq!(v.as_u64(), Some(u64::from(*x))),
        Value::UInt32(x) => assert_eq!(v.as_u64(), Some(u64::from(*x))),
        Value::UInt64(x) => assert_eq!(v.as_u64(), Some(*x)),
        Value::Float(x) => check_float(v, f64::from(*x)),
        Value::Double(x) => check_float(v, *x),
        Value::String(s) => assert_eq!(v.as_str(), Some(s.as_str())),
        Value::DateTime(t) => assert_eq!(v.as_str(), Some(format_rfc3339(*t).as_str())),
        Value::ByteString(b) => {
            let hex = v.as_str().expect("hex string");
            assert_eq!(hex.len(), 2 * b.len());
            assert!(
                hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{hex}"
            );
            let back: Vec<u8> = (0..b.len())
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(&back, b);
        }
    }
}

fn check_float(v: &J, x: f64) {
    if x.is_finite() {
        let got = v.as_f64().expect("a finite float is a number");
        assert_eq!(got.to_bits(), x.to_bits(), "{x:e} read back as {got:e}");
    } else {
        assert!(v.is_null(), "{x} as {v}");
    }
}
