//! `gateway-rx query` and `gateway-rx gaps` on a store with known content: exact CSV, valid
//! JSON, range bounds inclusive, and the gap listing.

use std::path::Path;
use std::process::Command;

use gateway_rx::store::db;
use protocol::model::{Quality, Value, ValueType};

const T0: i64 = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z

fn build_store(path: &Path) {
    let conn = db::open_rw(path).expect("store");
    let a = db::tag_id(&conn, "site/a/speed", ValueType::Double).expect("tag");
    let s = db::tag_id(&conn, "site/a/name", ValueType::String).expect("tag");
    let b = db::tag_id(&conn, "site/a/run", ValueType::Boolean).expect("tag");
    for i in 0..5i64 {
        db::insert_sample(
            &conn,
            a,
            T0 + i * 1_000_000_000,
            &Value::Double(i as f64 * 1.5),
            Quality::GOOD,
        )
        .expect("insert");
    }
    // The same (tag, time) again is kept once.
    assert!(!db::insert_sample(&conn, a, T0, &Value::Double(99.0), Quality::BAD).expect("insert"));
    db::insert_sample(
        &conn,
        s,
        T0 + 500_000_000,
        &Value::String("say \"hi\", then".into()),
        Quality::UNCERTAIN,
    )
    .expect("insert");
    db::insert_sample(
        &conn,
        b,
        T0,
        &Value::Boolean(true),
        Quality::BAD_COMMUNICATION_ERROR,
    )
    .expect("insert");
    db::insert_gap(
        &conn,
        &db::GapRow {
            id: 0,
            log: 0xabcd,
            start_seq: 100,
            end_seq: 150,
            from_ts: Some(T0),
            to_ts: Some(T0 + 2_000_000_000),
            reason: "not_received".into(),
            state: "open".into(),
            opened_at: T0,
            closed_at: None,
            tags: vec![],
        },
    )
    .expect("gap");
    db::insert_gap(
        &conn,
        &db::GapRow {
            id: 0,
            log: 0xabcd,
            start_seq: 10,
            end_seq: 12,
            from_ts: None,
            to_ts: None,
            reason: "not_received".into(),
            state: "healed".into(),
            opened_at: T0,
            closed_at: Some(T0 + 1),
            tags: vec!["site/a/speed".into()],
        },
    )
    .expect("gap");
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway-rx"))
        .args(args)
        .output()
        .expect("running gateway-rx");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn query_csv_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.sqlite");
    build_store(&path);
    let store = path.to_str().expect("utf-8");
    let (ok, out, err) = run(&[
        "query",
        "--store",
        store,
        "--tag",
        "site/a/speed",
        "--tag",
        "site/a/name",
        "--tag",
        "site/a/run",
        "--from",
        "2024-05-01T12:00:00Z",
        "--to",
        "2024-05-01T14:00:03+02:00",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "tag,time,value,quality,status\n\
         site/a/speed,2024-05-01T12:00:00.000000000Z,0,0x00000000,Good\n\
         site/a/speed,2024-05-01T12:00:01.000000000Z,1.5,0x00000000,Good\n\
         site/a/speed,2024-05-01T12:00:02.000000000Z,3,0x00000000,Good\n\
         site/a/speed,2024-05-01T12:00:03.000000000Z,4.5,0x00000000,Good\n\
         site/a/name,2024-05-01T12:00:00.500000000Z,\"say \"\"hi\"\", then\",0x40000000,Uncertain\n\
         site/a/run,2024-05-01T12:00:00.000000000Z,true,0x80050000,BadCommunicationError\n"
    );

    let (ok, out, err) = run(&[
        "query",
        "--store",
        store,
        "--tag",
        "site/a/speed",
        "--from",
        "2024-05-01T12:00:01Z",
        "--to",
        "2024-05-01T12:00:02Z",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["value"], 1.5);
    assert_eq!(rows[0]["time"], "2024-05-01T12:00:01.000000000Z");
    assert_eq!(rows[0]["time_ns"], T0 + 1_000_000_000);
    assert_eq!(rows[1]["status"], "Good");

    let (ok, out, _) = run(&[
        "query",
        "--store",
        store,
        "--tag",
        "nope",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-02",
        "--format",
        "json",
    ]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON"),
        serde_json::json!([])
    );
}

#[test]
fn query_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("none.sqlite");
    let (ok, _, err) = run(&[
        "query",
        "--store",
        missing.to_str().expect("utf-8"),
        "--tag",
        "a",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-02",
    ]);
    assert!(!ok);
    assert!(err.contains("no history store"), "{err}");
    let path = dir.path().join("h.sqlite");
    build_store(&path);
    let (ok, _, err) = run(&[
        "query",
        "--store",
        path.to_str().expect("utf-8"),
        "--tag",
        "a",
        "--from",
        "yesterday",
        "--to",
        "2024-05-02",
    ]);
    assert!(!ok);
    assert!(err.contains("--from") && err.contains("RFC 3339"), "{err}");
}

#[test]
fn gaps_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.sqlite");
    build_store(&path);
    let store = path.to_str().expect("utf-8");
    let (ok, out, err) = run(&["gaps", "--store", store]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].contains("open") && lines[1].contains("100..149") && lines[1].contains("50"));
    assert!(lines[2].contains("healed") && lines[2].contains("site/a/speed"));
    let (ok, out, _) = run(&["gaps", "--store", store, "--open", "--json"]);
    assert!(ok);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["first_seq"], 100);
    assert_eq!(lines[0]["last_seq"], 149);
    assert_eq!(lines[0]["from"], "2024-05-01T12:00:00.000000000Z");
    assert_eq!(lines[0]["log"], "000000000000abcd");
}
