//! A planned stop of the real binary (SIGTERM) sends what the link sender holds: the open
//! block's repair goes out before the process exits, rather than being cut off with it.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::wire;

#[test]
fn sigterm_sends_the_open_blocks_repair_before_exiting() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let link = UdpSocket::bind("127.0.0.1:0").expect("binding the receiving socket");
    link.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let port = link.local_addr().expect("local address").port();
    let config = dir.path().join("gateway-tx.toml");
    // The longest block timer: a block stays open 150 ms after its first datagram, far longer
    // than the daemon takes to stop.
    std::fs::write(
        &config,
        format!("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n\n[link.fec]\nblock_ms = 150\n"),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-tx"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting gateway-tx");

    let mut buf = [0u8; 2048];
    let recv = |buf: &mut [u8]| -> Option<wire::Header> {
        let n = link.recv(buf).ok()?;
        Some(wire::check(&buf[..n]).expect("a valid datagram"))
    };
    // Wait for a quiet spell (every block so far closed by its timer), then for the next data
    // datagram: a heartbeat, alone in a block that is now open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    let mut seen_any = false;
    let group = loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no quiet spell then a datagram within 20 s");
        }
        if let Some(h) = recv(&mut buf) {
            if seen_any && quiet_since.elapsed() >= Duration::from_millis(400) && !h.is_repair() {
                break h.group;
            }
            seen_any = true;
            quiet_since = Instant::now();
        }
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    let mut repaired = false;
    let mut exited = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(h) = recv(&mut buf) {
            repaired |= h.is_repair() && h.group == group;
        } else if exited.is_some() {
            break;
        }
        if exited.is_none() {
            exited = child.try_wait().expect("waiting for the daemon");
        }
    }
    let exit = match exited {
        Some(e) => e,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gateway-tx did not exit within 10 s of SIGTERM");
        }
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        repaired,
        "no repair of group {group} arrived: the open block was cut off by the stop"
    );
}
