//! A value larger than the protocol's 16 MiB message limit used to make the encoder return an
//! error that ended the link sender, and with it the daemon, again after every restart while
//! the source held the value. The tag table refuses any value beyond
//! `protocol::model::MAX_VALUE_BYTES` whatever its source, as BadEncodingLimitsExceeded with
//! the last value kept, and the link carries on.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::tx::TxConfig;
use gateway_tx::Transmitter;
use gateway_tx::tags::Update;
use protocol::model::{Quality, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_beyond_the_message_limit_is_refused_and_the_link_carries_on() {
    let link = UdpSocket::bind("127.0.0.1:0").expect("receiving socket");
    let port = link.local_addr().expect("local address").port();
    // Two Modbus string tags on a PLC that is not there: the values come from the test.
    let text = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\nrate_mbit = 1000\nsnapshot_period_s = 1\n\n\
         [[modbus]]\nname = \"plc\"\nhost = \"127.0.0.1\"\nport = 9\npoll_interval_ms = 60000\n\n\
         [[modbus.tag]]\nname = \"big\"\ntable = \"holding\"\naddress = 0\ntype = \"string\"\nlength = 4\n\n\
         [[modbus.tag]]\nname = \"small\"\ntable = \"holding\"\naddress = 10\ntype = \"string\"\nlength = 4\n"
    );
    let config = TxConfig::parse(&text, Path::new("tx.toml")).unwrap_or_else(|e| panic!("{e}"));
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    table.apply([Update {
        tag: 0,
        value: Some(Value::String("x".repeat(17 << 20))),
        quality: Quality::GOOD,
        time: 1,
    }]);
    let big = table.current(0).expect("a sample");
    assert_eq!(big.quality, Quality::BAD_ENCODING_LIMITS_EXCEEDED);
    assert_eq!(
        big.value,
        Value::String(String::new()),
        "no value before: the type's zero"
    );
    assert_eq!(table.refused_too_large(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The next value goes out as usual.
    let sent = tx.status.counters.samples_sent.load(Ordering::Relaxed);
    table.apply([Update {
        tag: 1,
        value: Some(Value::String("ok".into())),
        quality: Quality::GOOD,
        time: 2,
    }]);
    while tx.status.counters.samples_sent.load(Ordering::Relaxed) == sent {
        assert!(Instant::now() < deadline, "the next value was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Snapshots went out meanwhile with the tag's (refused) state; nothing was too large.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tx.link_alive(), "the link sender stopped");
    assert_eq!(
        tx.status.counters.messages_refused.load(Ordering::Relaxed),
        0
    );
}
