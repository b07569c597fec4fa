//! The test bed: the namespaces (`systest/netns.sh`), their link counters and firewall rules,
//! the nftables impairment rules, the processes run in them, and one run of the bed at a time.

use super::*;

pub(super) const NS_OT: &str = "gw-ot";
pub(super) const NS_IT: &str = "gw-it";
pub(super) const NS_X: &str = "gw-x";
pub(super) const OT_IF: &str = "ot0";
pub(super) const IT_IF: &str = "it0";
pub(super) const OT_ADDR: &str = "198.18.0.1";
pub(super) const IT_ADDR: &str = "198.18.0.2";
pub(super) const LINK_PORT: u16 = 5600;
/// gateway-rx's link socket when the relay stands in front of it.
pub(super) const RX_BEHIND_RELAY: &str = "127.0.0.1:5700";
pub(super) const MIRROR: &str = "127.0.0.1:5020";
pub(super) const PLC: &str = "127.0.0.1:5502";

/// The plant: the demo tags and this many u16 holding registers that all change every step.
pub(super) const BULK: u16 = 2000;
pub(super) const BULK_BASE: u16 = 1000;
pub(super) const PLC_PERIOD_MS: u64 = 50;
pub(super) const POLL_MS: u64 = 50;

pub(super) struct Bins {
    pub(super) tx: PathBuf,
    pub(super) rx: PathBuf,
    pub(super) agent: PathBuf,
    pub(super) netns: PathBuf,
    /// The IT box's shipped rule set (`deploy/nftables/it-box.nft`).
    pub(super) it_rules: PathBuf,
}

pub(super) struct Bed {
    pub(super) bins: Bins,
    pub(super) work: PathBuf,
    pub(super) plc: Agent,
    pub(super) probe: Agent,
}

impl Bed {
    pub(super) fn up(bins: Bins) -> anyhow::Result<Bed> {
        let work = common::daemons::target_dir().join("systest").join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        netns(&bins.netns, "up")?;
        // From here on, dropping a half-built bed must still tear the namespaces down.
        let guard = NetnsGuard(bins.netns.clone());
        let bulk = BULK.to_string();
        let base = BULK_BASE.to_string();
        let period = PLC_PERIOD_MS.to_string();
        let mut plc = Agent::spawn(
            NS_OT,
            &bins.agent,
            &[
                "plc",
                "--listen",
                PLC,
                "--period-ms",
                &period,
                "--bulk",
                &bulk,
                "--bulk-base",
                &base,
            ],
            &work.join("plc.log"),
            "plc",
        )?;
        plc.ready()?;
        let mut probe = Agent::spawn(
            NS_IT,
            &bins.agent,
            &[
                "probe",
                "--mirror",
                MIRROR,
                "--bulk",
                &bulk,
                "--bulk-base",
                &base,
            ],
            &work.join("probe.log"),
            "probe",
        )?;
        probe.ready()?;
        std::mem::forget(guard);
        Ok(Bed {
            bins,
            work,
            plc,
            probe,
        })
    }

    /// Replaces the impairment rules on the IT box's ingress (`None` clears them).
    pub(super) fn set_impairment(&self, rule: Option<&str>) -> anyhow::Result<()> {
        let mut script = "flush chain inet impair pre\n".to_string();
        if let Some(r) = rule {
            let _ = writeln!(script, "add rule inet impair pre {r}");
        }
        nft_script(NS_IT, &script)
    }

    /// The IT firewall's rule that drops the link port from anywhere but the diode, as the
    /// shipped rule set writes it (the last input rule), ready for `nft add rule`.
    pub(super) fn shipped_link_port_rule(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.bins.it_rules)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| is_link_port_rule(l))
            .with_context(|| {
                format!(
                    "{} has no link-port rule (`udp dport $LINK_PORT ... drop`)",
                    self.bins.it_rules.display()
                )
            })?;
        Ok(line.replace("$LINK_PORT", &LINK_PORT.to_string()))
    }

    /// The link-port rule in the IT box's firewall: its handle and how many packets it dropped.
    pub(super) fn link_port_rule(&self) -> anyhow::Result<Option<(u64, u64)>> {
        let text = ns_output(
            NS_IT,
            &["nft", "-a", "list", "chain", "inet", "gateway_it", "input"],
        )?;
        Ok(text.lines().filter(|l| is_link_port_rule(l)).find_map(|l| {
            let handle = l.rsplit("# handle ").next()?.trim().parse().ok()?;
            Some((handle, packets(l)?))
        }))
    }

    /// Packets the link-port rule dropped since it was (re)loaded; `None` while it is removed.
    pub(super) fn link_port_drops(&self) -> anyhow::Result<Option<u64>> {
        Ok(self.link_port_rule()?.map(|(_, p)| p))
    }

    /// Removes the shipped link-port rule, or puts it back (at the end of the chain, where the
    /// shipped rule set has it).
    pub(super) fn set_link_port_rule(&self, present: bool) -> anyhow::Result<()> {
        match (self.link_port_rule()?, present) {
            (Some(_), true) | (None, false) => Ok(()),
            (Some((handle, _)), false) => nft_script(
                NS_IT,
                &format!("delete rule inet gateway_it input handle {handle}\n"),
            ),
            // A rule set that ships without the rule has nothing to put back.
            (None, true) => match self.shipped_link_port_rule() {
                Ok(rule) => nft_script(NS_IT, &format!("add rule inet gateway_it input {rule}\n")),
                Err(_) => Ok(()),
            },
        }
    }

    /// Packets the impairment rules dropped since [`Bed::reset_impairment_drops`].
    pub(super) fn impairment_drops(&self) -> anyhow::Result<u64> {
        let t = ns_output(
            NS_IT,
            &["nft", "list", "counter", "inet", "impair", "dropped"],
        )?;
        Ok(t.lines().filter_map(packets).sum())
    }

    pub(super) fn reset_impairment_drops(&self) -> anyhow::Result<()> {
        ns_output(
            NS_IT,
            &["nft", "reset", "counter", "inet", "impair", "dropped"],
        )?;
        Ok(())
    }

    pub(super) fn wire(&self) -> anyhow::Result<Wire> {
        let stat = |ns: &str, dev: &str, what: &str| -> anyhow::Result<u64> {
            let t = ns_output(
                ns,
                &["cat", &format!("/sys/class/net/{dev}/statistics/{what}")],
            )?;
            Ok(t.trim().parse()?)
        };
        let it_rules = ns_output(NS_IT, &["nft", "list", "table", "inet", "gateway_it"])?;
        let ot_rules = ns_output(NS_OT, &["nft", "list", "table", "inet", "gateway_ot"])?;
        let it_snmp = ns_output(NS_IT, &["cat", "/proc/net/snmp"])?;
        let rule = |text: &str, needles: &[&str]| -> u64 {
            text.lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .filter_map(packets)
                .sum()
        };
        Ok(Wire {
            ot_tx: stat(NS_OT, OT_IF, "tx_packets")?,
            ot_rx: stat(NS_OT, OT_IF, "rx_packets")?,
            it_rx: stat(NS_IT, IT_IF, "rx_packets")?,
            it_tx: stat(NS_IT, IT_IF, "tx_packets")?,
            it_blocked: rule(&it_rules, &["oifname", "drop"]),
            link_accepted: rule(&it_rules, &["iifname", "accept"]),
            ot_blocked_in: rule(&ot_rules, &["iifname", "drop"]),
            ot_udp_in: snmp(
                &ns_output(NS_OT, &["cat", "/proc/net/snmp"])?,
                "Udp",
                "InDatagrams",
            ),
            it_rcvbuf_errors: snmp(&it_snmp, "Udp", "RcvbufErrors"),
            it_no_ports: snmp(&it_snmp, "Udp", "NoPorts"),
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // The agents end at end of input; the namespaces go, with anything left in them.
        let _ = netns(&self.bins.netns, "down");
    }
}

pub(super) struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns(&self.0, "down");
    }
}

pub(super) fn netns(script: &Path, what: &str) -> anyhow::Result<()> {
    let out = Command::new("bash").arg(script).arg(what).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{} {what}: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Counters of the link, cumulative since the namespaces were made.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct Wire {
    pub(super) ot_tx: u64,
    pub(super) ot_rx: u64,
    pub(super) it_rx: u64,
    pub(super) it_tx: u64,
    /// Packets the IT box's firewall dropped on their way out of the diode interface.
    pub(super) it_blocked: u64,
    /// Link datagrams the IT box's firewall let through.
    pub(super) link_accepted: u64,
    pub(super) ot_blocked_in: u64,
    pub(super) ot_udp_in: u64,
    pub(super) it_rcvbuf_errors: u64,
    /// UDP datagrams that reached the IT box when no socket listened on their port.
    pub(super) it_no_ports: u64,
}

impl Wire {
    pub(super) fn since(&self, b: &Wire) -> Wire {
        Wire {
            ot_tx: self.ot_tx - b.ot_tx,
            ot_rx: self.ot_rx - b.ot_rx,
            it_rx: self.it_rx - b.it_rx,
            it_tx: self.it_tx - b.it_tx,
            it_blocked: self.it_blocked - b.it_blocked,
            link_accepted: self.link_accepted - b.link_accepted,
            ot_blocked_in: self.ot_blocked_in - b.ot_blocked_in,
            ot_udp_in: self.ot_udp_in - b.ot_udp_in,
            it_rcvbuf_errors: self.it_rcvbuf_errors - b.it_rcvbuf_errors,
            it_no_ports: self.it_no_ports - b.it_no_ports,
        }
    }
}

/// Runs an nft script in a namespace.
pub(super) fn nft_script(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(script.as_bytes())?;
    }
    let out = c.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The IT firewall's input rule for the link port from anywhere but the diode (the rule that
/// accepts it on the diode names the interface).
pub(super) fn is_link_port_rule(line: &str) -> bool {
    line.contains("udp dport") && line.contains("drop") && !line.contains("iifname")
}

pub(super) fn ns_output(ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{ns}: {}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `packets N` of an nft rule line.
pub(super) fn packets(line: &str) -> Option<u64> {
    let rest = &line[line.find("packets ")? + 8..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A counter of /proc/net/snmp (a header line and a value line per protocol).
pub(super) fn snmp(text: &str, proto: &str, name: &str) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A daemon in a namespace, output to a log file.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) child: Child,
}

impl Proc {
    pub(super) fn spawn(
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Proc { name, child })
    }

    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not ended within 3 s.
    pub(super) fn term(&mut self) {
        if self.running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let t = Instant::now();
            while self.running() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub(super) fn signal(&self, name: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{name} {} failed", self.child.id());
        Ok(())
    }

    pub(super) fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            eprintln!("stopping {}", self.name);
        }
        self.kill();
    }
}

/// A `diode-agent` driven over its standard input and output.
pub(super) struct Agent {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) lines: mpsc::Receiver<String>,
}

impl Agent {
    pub(super) fn spawn(
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Agent> {
        let err = std::fs::File::create(log)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("{name}: no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Agent {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    pub(super) fn ready(&mut self) -> anyhow::Result<String> {
        self.reply().and_then(|l| {
            if l.starts_with("ready") {
                Ok(l)
            } else {
                Err(anyhow::anyhow!("{}: {l}", self.name))
            }
        })
    }

    pub(super) fn reply(&mut self) -> anyhow::Result<String> {
        match self.lines.recv_timeout(AGENT_TIMEOUT) {
            Ok(l) => Ok(l),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                Err(anyhow::anyhow!(
                    "{} did not answer within {} s (exit status {status:?})",
                    self.name,
                    AGENT_TIMEOUT.as_secs()
                ))
            }
        }
    }

    pub(super) fn cmd(&mut self, line: &str) -> anyhow::Result<String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{}: closed", self.name))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let r = self.reply()?;
        anyhow::ensure!(r.starts_with("ok"), "{} {line}: {r}", self.name);
        Ok(r)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // End of input ends an agent; kill it if it does not go.
        drop(self.stdin.take());
        let t = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn preflight(ci: bool) -> Result<Bins, String> {
    if !ci && std::env::var("DIODE_SKIP").is_ok_and(|v| v == "1") {
        return Err("DIODE_SKIP=1".to_string());
    }
    if !common::daemons::is_root() {
        return Err("not root (network namespaces need root)".to_string());
    }
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works("ip", &["netns", "list"]) {
        return Err("`ip netns` is not available (install iproute2)".to_string());
    }
    if !works("nft", &["--version"]) {
        return Err("`nft` is not available (install nftables)".to_string());
    }
    let daemons = common::daemons::release_daemons()?;
    let workspace = common::daemons::workspace();
    let netns = workspace.join("systest").join("netns.sh");
    if !netns.is_file() {
        return Err(format!("{} is missing", netns.display()));
    }
    let it_rules = workspace.join("deploy").join("nftables").join("it-box.nft");
    if !it_rules.is_file() {
        return Err(format!("{} is missing", it_rules.display()));
    }
    Ok(Bins {
        tx: daemons.tx,
        rx: daemons.rx,
        agent: PathBuf::from(env!("CARGO_BIN_EXE_diode-agent")),
        netns,
        it_rules,
    })
}

pub(super) fn bins_report_path() -> PathBuf {
    common::daemons::target_dir()
        .join("systest")
        .join("report.md")
}

/// One run of the test bed at a time on a machine (the namespaces have fixed names).
pub(super) struct RunLock(PathBuf);

impl RunLock {
    pub(super) fn acquire(wait: Duration) -> Result<RunLock, String> {
        let path = PathBuf::from("/run/gw-diode-systest.lock");
        let t = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = !holder.trim().is_empty()
                        && Path::new(&format!("/proc/{}", holder.trim())).exists();
                    if !alive {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if t.elapsed() > wait {
                        return Err(format!(
                            "another diode system test (pid {}) holds {}",
                            holder.trim(),
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
