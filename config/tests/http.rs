//! `[http]` in both schemas: off when absent, a management bind address when present, located
//! errors otherwise.

use std::path::Path;

use config::rx::RxConfig;
use config::tx::TxConfig;
use config::{ConfigError, Diagnostic, HttpServer};

const RX: &str = "[link]\ninsecure_no_key = true\nbind = \"192.0.2.2:5600\"\n";
const TX: &str =
    "[link]\ninsecure_no_key = true\ndestination = \"192.0.2.2:5600\"\nbind = \"192.0.2.1:0\"\n";

fn rx(src: &str) -> Result<RxConfig, ConfigError> {
    RxConfig::parse(src, Path::new("rx.toml"))
}

fn tx(src: &str) -> Result<TxConfig, ConfigError> {
    TxConfig::parse(src, Path::new("tx.toml"))
}

#[track_caller]
fn one<T: std::fmt::Debug>(
    r: Result<T, ConfigError>,
    at: (usize, usize, &str),
    fragments: &[&str],
) -> Diagnostic {
    let d = match r {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    };
    assert_eq!(d.len(), 1, "expected one diagnostic, got: {d:#?}");
    let d = d[0].clone();
    assert_eq!((d.line, d.column, d.key.as_str()), at, "{d}");
    for f in fragments {
        assert!(d.message.contains(f), "{f:?} not in: {d}");
    }
    d
}

#[test]
fn absent_is_off_on_both_sides() {
    assert_eq!(rx(RX).unwrap().http, None);
    assert_eq!(tx(TX).unwrap().http, None);
}

#[test]
fn bind_is_read_on_both_sides() {
    let r = rx(&format!("{RX}[http]\nbind = \"127.0.0.1:9101\"\n")).unwrap();
    assert_eq!(
        r.http,
        Some(HttpServer {
            bind: "127.0.0.1:9101".parse().unwrap()
        })
    );
    let t = tx(&format!("{TX}[http]\nbind = \"[::1]:9100\"\n")).unwrap();
    assert_eq!(t.http.map(|h| h.bind), Some("[::1]:9100".parse().unwrap()));
    // Port 0 picks a free port (tests); the unspecified address is the operator's choice
    // (config/README.md says to firewall it off the diode interface).
    let r = rx(&format!("{RX}[http]\nbind = \"0.0.0.0:0\"\n")).unwrap();
    assert_eq!(r.http.map(|h| h.bind), Some("0.0.0.0:0".parse().unwrap()));
}

#[test]
fn missing_bind_says_how_to_turn_it_off() {
    one(
        rx(&format!("{RX}[http]\n")),
        (4, 1, "http.bind"),
        &["missing required key `bind` in [http]", "remove [http]"],
    );
}

#[test]
fn bad_address_and_unknown_key() {
    one(
        tx(&format!("{TX}\n[http]\nbind = \"localhost:9100\"\n")),
        (7, 8, "http.bind"),
        &[
            "not an IP address with a port",
            "host names are not resolved",
        ],
    );
    one(
        rx(&format!(
            "{RX}[http]\nbind = \"127.0.0.1:9101\"\nport = 9101\n"
        )),
        (6, 1, "http.port"),
        &["unknown key `port`", "valid keys in [http] are: `bind`"],
    );
    one(
        rx(&format!("http = \"127.0.0.1:9101\"\n{RX}")),
        (1, 8, "http"),
        &["expected a table", "[http]"],
    );
}

#[test]
fn the_diode_interface_is_refused() {
    let d = one(
        rx(&format!("{RX}[http]\nbind = \"192.0.2.2:9101\"\n")),
        (5, 8, "http.bind"),
        &[
            "192.0.2.2 is this daemon's address on the diode link",
            "\"127.0.0.1:9101\"",
        ],
    );
    assert!(
        d.to_string().starts_with("rx.toml:5:8: key `http.bind`: "),
        "{d}"
    );
    one(
        tx(&format!("{TX}[http]\nbind = \"192.0.2.1:9100\"\n")),
        (6, 8, "http.bind"),
        &[
            "must not listen on the diode interface",
            "\"127.0.0.1:9100\"",
        ],
    );
    // Another port of the same address is still the diode interface; a loopback link (tests,
    // the demo) is not a diode.
    assert!(rx(&format!("{RX}[http]\nbind = \"192.0.2.2:80\"\n")).is_err());
    let r = rx("[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[http]\nbind = \"127.0.0.1:9101\"\n").unwrap();
    assert!(r.http.is_some());
}

#[test]
fn errors_elsewhere_are_reported_alongside() {
    let e = rx("[link]\ninsecure_no_key = true\nbind = \"x\"\n[http]\nbind = \"y\"\n").unwrap_err();
    let keys: Vec<&str> = e.diagnostics().iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["link.bind", "http.bind"]);
}
