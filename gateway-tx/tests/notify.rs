//! systemd notifications of the real binary, with a notify socket of our own standing in for
//! systemd: READY=1 once running, WATCHDOG=1 every half of WATCHDOG_USEC, STOPPING=1 on
//! SIGTERM, then a clean exit.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let config = dir.path().join("gateway-tx.toml");
    std::fs::write(
        &config,
        format!("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n"),
    )
    .expect("config");
    // systemd names the main process in WATCHDOG_PID; `exec` keeps the shell's pid.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("export WATCHDOG_PID=$$; exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_gateway-tx"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting gateway-tx");

    let mut buf = [0u8; 4096];
    let mut next = || -> String {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    };
    let first = next();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(first.contains("STATUS=sending, session "), "{first:?}");
    // Half of 400 ms: five pings take about a second.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "five watchdog pings in {took:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    let exit = child.wait().expect("the daemon exits");
    assert!(exit.success(), "{exit:?}");
}
