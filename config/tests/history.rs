//! The history tables: `[history]` in the TX config and `[store]` in the RX config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Diagnostic;
use config::rx::RxConfig;
use config::tx::{History, TxConfig};

const TX: &str = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n";
const RX: &str = "[link]\ninsecure_no_key = true\nbind = \"0.0.0.0:5600\"\n";

fn tx(src: &str) -> TxConfig {
    TxConfig::parse(src, Path::new("/etc/gw/tx.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn rx(src: &str) -> RxConfig {
    RxConfig::parse(src, Path::new("/etc/gw/rx.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn tx_diags(src: &str) -> Vec<Diagnostic> {
    match TxConfig::parse(src, Path::new("/etc/gw/tx.toml")) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

fn rx_diags(src: &str) -> Vec<Diagnostic> {
    match RxConfig::parse(src, Path::new("/etc/gw/rx.toml")) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

#[track_caller]
fn one(d: Vec<Diagnostic>, line: usize, column: usize, key: &str, fragments: &[&str]) {
    assert_eq!(d.len(), 1, "expected one diagnostic, got: {d:#?}");
    let d = &d[0];
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (line, column, key),
        "{d}"
    );
    for f in fragments {
        assert!(d.message.contains(f), "{f:?} not in: {d}");
    }
}

#[test]
fn history_is_off_without_the_table_and_defaults_with_it() {
    assert_eq!(tx(TX).history, None);
    assert_eq!(
        tx(&format!("{TX}[history]\n")).history,
        Some(History {
            dir: "/var/lib/gateway/tx-history".into(),
            max_bytes: 4 << 30,
            max_age: Duration::from_secs(7 * 86_400),
            carousel_share: 0.1,
            carousel_window: Duration::from_secs(300),
        })
    );
}

#[test]
fn history_every_field_and_relative_dir() {
    let h = tx(&format!(
        "{TX}[history]\ndir = \"hist\"\nmax_bytes = 1048576\nmax_age_s = 3600\n\
         carousel_share = 0.25\ncarousel_window_s = 60\n"
    ))
    .history
    .expect("history");
    assert_eq!(h.dir, PathBuf::from("/etc/gw/hist"));
    assert_eq!(h.max_bytes, 1 << 20);
    assert_eq!(h.max_age, Duration::from_secs(3600));
    assert_eq!(h.carousel_share, 0.25);
    assert_eq!(h.carousel_window, Duration::from_secs(60));
    let h = tx(
        &format!("{TX}[history]\ndir = \"/data/h\"\ncarousel_share = 1\n")
            .replace("= 1\n", "= 0.9\n"),
    );
    assert_eq!(h.history.expect("history").dir, PathBuf::from("/data/h"));
}

#[test]
fn history_errors_are_located() {
    one(
        tx_diags(&format!("{TX}[history]\ncarousel_share = 0\n")),
        5,
        18,
        "history.carousel_share",
        &["greater than 0", "cannot be turned off"],
    );
    one(
        tx_diags(&format!("{TX}[history]\ncarousel_share = 1.5\n")),
        5,
        18,
        "history.carousel_share",
        &["at most 0.9"],
    );
    one(
        tx_diags(&format!("{TX}[history]\nmax_bytes = 1000\n")),
        5,
        13,
        "history.max_bytes",
        &["from 1048576"],
    );
    one(
        tx_diags(&format!("{TX}[history]\ndir = \"\"\n")),
        5,
        7,
        "history.dir",
        &["path is empty"],
    );
    one(
        tx_diags(&format!(
            "{TX}[history]\nmax_age_s = 100\ncarousel_window_s = 300\n"
        )),
        6,
        21,
        "history.carousel_window_s",
        &["longer than the buffer keeps history", "at most max_age_s"],
    );
    one(
        tx_diags(&format!("{TX}[history]\ncarousel_windows = 300\n")),
        5,
        1,
        "history.carousel_windows",
        &["did you mean `carousel_window_s`", "`carousel_share`"],
    );
    one(
        tx_diags(&format!("history = 5\n{TX}")),
        1,
        11,
        "history",
        &["expected a table"],
    );
}

#[test]
fn store_defaults_follow_the_path() {
    let s = rx(&format!(
        "{RX}[store]\npath = \"db/h.sqlite\"\nmax_age_days = 30\nmax_bytes = 1048576\n"
    ))
    .store;
    assert!(s.enabled);
    assert_eq!(s.path, PathBuf::from("/etc/gw/db/h.sqlite"));
    assert_eq!(s.gap_log, PathBuf::from("/etc/gw/db/history-gaps.jsonl"));
    assert_eq!(s.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(s.max_bytes, 1 << 20);
    let s = rx(&format!(
        "{RX}[store]\nenabled = false\ngap_log = \"/var/log/gaps.jsonl\"\n"
    ))
    .store;
    assert!(!s.enabled);
    assert_eq!(s.gap_log, PathBuf::from("/var/log/gaps.jsonl"));
}

#[test]
fn store_errors_are_located() {
    one(
        rx_diags(&format!("{RX}[store]\nenabled = \"true\"\n")),
        5,
        11,
        "store.enabled",
        &["true or false", "without quotes"],
    );
    one(
        rx_diags(&format!("{RX}[store]\nmax_age_days = 0\n")),
        5,
        16,
        "store.max_age_days",
        &["from 1 to 36500 (days)"],
    );
    one(
        rx_diags(&format!("{RX}[store]\npath = \"  \"\n")),
        5,
        8,
        "store.path",
        &["path is empty"],
    );
    one(
        rx_diags(&format!("{RX}[store]\nmax_byte = 5\n")),
        5,
        1,
        "store.max_byte",
        &["did you mean `max_bytes`"],
    );
}
