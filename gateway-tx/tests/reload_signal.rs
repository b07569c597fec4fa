//! Live reload of the real binary: SIGHUP re-reads the config (applied, or refused with
//! check-config's file:line text while the daemon keeps running), and `run --watch` reloads on
//! a change of the file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

fn config_text(port: u16, tags: &[(&str, u16)]) -> String {
    let mut s = format!("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n");
    if !tags.is_empty() {
        s.push_str(
            "\n[[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\nport = 1\nunit_id = 1\n\
             poll_interval_ms = 200\ntimeout_ms = 100\n",
        );
        for (name, address) in tags {
            s.push_str(&format!(
                "\n[[modbus.tag]]\nname = \"{name}\"\ntable = \"holding\"\naddress = {address}\n\
                 type = \"u16\"\n"
            ));
        }
    }
    s
}

struct Daemon {
    child: Child,
    lines: Receiver<String>,
}

impl Daemon {
    fn start(config: &Path, watch: bool) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway-tx"));
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(config);
        if watch {
            cmd.arg("--watch");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting gateway-tx");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon { child, lines };
        d.wait_for(&["gateway-tx running"]);
        d
    }

    /// The first log line containing every one of `parts`, within 20 s.
    fn wait_for(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no log line with {parts:?}; seen:\n{}", seen.join("\n"));
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("the daemon exits");
        assert!(exit.success(), "{exit:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = dir.path().join("gateway-tx.toml");
    std::fs::write(&config, config_text(port, &[("plc1/a", 10)])).expect("config");
    let mut d = Daemon::start(&config, false);

    std::fs::write(
        &config,
        config_text(port, &[("plc1/a", 10), ("plc1/b", 20)]),
    )
    .expect("config");
    d.hangup();
    d.wait_for(&["config reloaded", "\"tags\":2", "\"added\":1"]);

    std::fs::write(&config, "[link\n").expect("config");
    d.hangup();
    let line = d.wait_for(&["config reload refused"]);
    let file = config.display().to_string();
    assert!(line.contains(&format!("{file}:1:")), "{line}");

    // Still running with the last good config: a valid reload still applies from it.
    std::fs::write(&config, config_text(port, &[("plc1/b", 20)])).expect("config");
    d.hangup();
    d.wait_for(&["config reloaded", "\"tags\":1", "\"removed\":1"]);
    d.stop();
}

#[test]
fn watch_reloads_on_a_change_of_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = dir.path().join("gateway-tx.toml");
    std::fs::write(&config, config_text(port, &[])).expect("config");
    let mut d = Daemon::start(&config, true);
    std::fs::write(&config, config_text(port, &[("plc1/a", 10)])).expect("config");
    d.wait_for(&["config reloaded", "\"tags\":1", "\"added\":1"]);
    d.stop();
}
