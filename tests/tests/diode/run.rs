//! A scenario's processes (the daemons, the relay, the capture) and the mirror monitor.

use super::*;

pub(super) const HEARTBEAT_MS: u64 = 1000;
pub(super) const HEARTBEAT_TIMEOUT_MS: u64 = 3000;
pub(super) const SNAPSHOT_PERIOD_S: u64 = 2;
pub(super) const CATALOGUE_INTERVAL_S: u64 = 5;

pub(super) struct Run<'a> {
    pub(super) bed: &'a mut Bed,
    pub(super) dir: PathBuf,
    pub(super) rx: Option<Proc>,
    pub(super) tx: Option<Proc>,
    pub(super) relay: Option<Agent>,
    pub(super) rx_instances: u32,
    pub(super) tx_instances: u32,
    pub(super) key: bool,
    /// Configs as daemons built before `insecure_no_key` and `state_file` take them.
    pub(super) legacy_config: bool,
    pub(super) fec: Fec,
    pub(super) monitor: Monitor,
    pub(super) capture: Option<Agent>,
    /// Attacker processes started so far (each logs to a file of its own).
    pub(super) attackers: u32,
    /// The link counters when the replay scenario restarted the receiver.
    pub(super) replay_rx_start: Option<Wire>,
}

impl Run<'_> {
    /// The `[link]` lines of authentication for `side` ("tx" or "rx"): the key and the
    /// side's link state file, or the explicit choice of none.
    pub(super) fn key_line(&self, side: &str) -> anyhow::Result<String> {
        if !self.key {
            if self.legacy_config {
                return Ok(String::new());
            }
            return Ok("insecure_no_key = true\n".to_string());
        }
        let path = self.dir.join("link.key");
        if !path.exists() {
            // A fixed, non-zero test key; mode 0600 as the config loader demands.
            let hex: String = (0..32u8)
                .map(|i| format!("{:02x}", i.wrapping_mul(37).wrapping_add(11)))
                .collect();
            std::fs::write(&path, hex)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        if self.legacy_config {
            return Ok("key_file = \"link.key\"\n".to_string());
        }
        Ok(format!(
            "key_file = \"link.key\"\nstate_file = \"{side}-link.state\"\n"
        ))
    }

    pub(super) fn start_rx(&mut self, behind_relay: bool) -> anyhow::Result<()> {
        self.rx_instances += 1;
        let bind = if behind_relay {
            RX_BEHIND_RELAY.to_string()
        } else {
            format!("{IT_ADDR}:{LINK_PORT}")
        };
        let text = format!(
            "[link]\nbind = \"{bind}\"\n{}heartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\n\n\
             [modbus_server]\nbind = \"{MIRROR}\"\n\n[status]\nlog_interval_s = 1\n",
            self.key_line("rx")?
        );
        let config = self
            .dir
            .join(format!("gateway-rx-{}.toml", self.rx_instances));
        std::fs::write(&config, text)?;
        let log = self.rx_log();
        let c = config.to_string_lossy().to_string();
        let args = ["--log-format", "json", "run", "--config", c.as_str()];
        let mut rx = Proc::spawn(NS_IT, &self.bed.bins.rx, &args, &log, "gateway-rx")?;
        // Whatever the transmitter sends before the link socket exists is refused by the
        // kernel (UDP NoPorts), uncounted by gateway-rx: start it only once gateway-rx listens,
        // as a slow host may take a while to get there.
        let t = Instant::now();
        while log_count(&log, "link socket bound") == 0 {
            anyhow::ensure!(
                rx.running(),
                "gateway-rx exited while starting; see {}",
                log.display()
            );
            anyhow::ensure!(
                t.elapsed() < READY_TIMEOUT,
                "gateway-rx did not bind its link socket within {} s",
                READY_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.rx = Some(rx);
        Ok(())
    }

    pub(super) fn rx_log(&self) -> PathBuf {
        self.dir
            .join(format!("gateway-rx-{}.log", self.rx_instances.max(1)))
    }

    pub(super) fn start_tx(&mut self) -> anyhow::Result<()> {
        self.tx_instances += 1;
        let plc: std::net::SocketAddr = PLC.parse()?;
        let mut text = format!(
            "[link]\ndestination = \"{IT_ADDR}:{LINK_PORT}\"\nbind = \"{OT_ADDR}:0\"\n{}\
             heartbeat_ms = {HEARTBEAT_MS}\ncatalogue_interval_s = {CATALOGUE_INTERVAL_S}\n\
             snapshot_period_s = {SNAPSHOT_PERIOD_S}\n\n[link.fec]\ndata_shards = {}\n\
             repair_shards = {}\ninterleave = {}\nflush_ms = {}\nblock_ms = {}\n\n",
            self.key_line("tx")?,
            self.fec.data,
            self.fec.repair,
            self.fec.interleave,
            self.fec.flush_ms,
            self.fec.block_ms,
        );
        text.push_str(&tests::plc_sim::demo_device_toml("plc1", plc, POLL_MS, 500));
        for i in 0..BULK {
            let _ = write!(
                text,
                "[[modbus.tag]]\nname = \"plc1/bulk/r{i:04}\"\ntable = \"holding\"\naddress = {}\ntype = \"u16\"\n\n",
                BULK_BASE + i
            );
        }
        let config = self
            .dir
            .join(format!("gateway-tx-{}.toml", self.tx_instances));
        std::fs::write(&config, text)?;
        let log = self
            .dir
            .join(format!("gateway-tx-{}.log", self.tx_instances));
        let c = config.to_string_lossy().to_string();
        let args = ["--log-format", "json", "run", "--config", c.as_str()];
        self.tx = Some(Proc::spawn(
            NS_OT,
            &self.bed.bins.tx,
            &args,
            &log,
            "gateway-tx",
        )?);
        Ok(())
    }

    pub(super) fn start_relay(&mut self) -> anyhow::Result<()> {
        let listen = format!("{IT_ADDR}:{LINK_PORT}");
        let args = [
            "relay",
            "--listen",
            listen.as_str(),
            "--target",
            RX_BEHIND_RELAY,
            "--seed",
            "5",
        ];
        let log = self.dir.join("relay.log");
        let mut a = Agent::spawn(NS_IT, &self.bed.bins.agent, &args, &log, "relay")?;
        a.ready()?;
        self.relay = Some(a);
        Ok(())
    }

    pub(super) fn relay_set(&mut self, impairments: &str) -> anyhow::Result<()> {
        let r = self
            .relay
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no relay"))?;
        r.cmd(&format!("set {impairments}"))?;
        Ok(())
    }

    /// The link capture in the IT box (`diode-agent capture`).
    pub(super) fn start_capture(&mut self) -> anyhow::Result<()> {
        let port = LINK_PORT.to_string();
        let args = ["capture", "--from", OT_ADDR, "--port", port.as_str()];
        let log = self.dir.join("capture.log");
        let mut a = Agent::spawn(NS_IT, &self.bed.bins.agent, &args, &log, "capture")?;
        a.ready()?;
        self.capture = Some(a);
        Ok(())
    }

    /// `start FILE` (a file name in the scenario's directory) or `stop`.
    pub(super) fn capture_cmd(&mut self, line: &str) -> anyhow::Result<String> {
        let line = match line.strip_prefix("start ") {
            Some(name) => format!("start {}", self.dir.join(name).display()),
            None => line.to_string(),
        };
        self.capture.as_mut().context("no capture")?.cmd(&line)
    }

    /// Runs `diode-agent ARGS` on the host on the IT network until it exits, reading the mirror
    /// all the while and once after; returns the agent's summary and what the mirror showed.
    pub(super) fn send_from_it_lan(
        &mut self,
        label: &str,
        args: &[String],
    ) -> anyhow::Result<(String, Window)> {
        self.attackers += 1;
        let log = self
            .dir
            .join(format!("it-lan-{}-{label}.log", self.attackers));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mark = self.monitor.mark();
        let mut p = Proc::spawn(NS_X, &self.bed.bins.agent, &args, &log, "it-lan host")?;
        let t = Instant::now();
        while p.running() && t.elapsed() < AGENT_TIMEOUT {
            self.sample()?;
            std::thread::sleep(Duration::from_millis(150));
        }
        p.kill();
        self.sample()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let summary = text
            .lines()
            .find(|l| l.starts_with("ok "))
            .with_context(|| {
                format!(
                    "{label}: the sender reported nothing; see {}",
                    log.display()
                )
            })?
            .to_string();
        Ok((summary, self.monitor.since(&mark)))
    }

    /// gateway-rx's last status line (its counters up to a second ago).
    pub(super) fn status_now(&self) -> RxStatus {
        last_status(&self.rx_log()).unwrap_or_default()
    }

    /// gateway-rx's counters once it has dealt with everything sent so far: the first status
    /// line, of those logged from now on, whose rejections did not change since the line before.
    /// Reads the mirror meanwhile.
    pub(super) fn settled_status(&mut self) -> anyhow::Result<RxStatus> {
        let log = self.rx_log();
        let n0 = statuses(&log).len();
        let t = Instant::now();
        loop {
            let all = statuses(&log);
            if all.len() >= n0 + 2 {
                let (a, b) = (all[all.len() - 2], all[all.len() - 1]);
                if a.rejected() == b.rejected() {
                    return Ok(b);
                }
            }
            anyhow::ensure!(
                t.elapsed() < CONVERGE_TIMEOUT,
                "gateway-rx's rejection counters did not settle within {} s",
                CONVERGE_TIMEOUT.as_secs()
            );
            self.sample()?;
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The session id the running transmitter logged at start.
    pub(super) fn tx_session(&self) -> anyhow::Result<u64> {
        let log = self
            .dir
            .join(format!("gateway-tx-{}.log", self.tx_instances));
        let text = std::fs::read_to_string(&log)?;
        text.lines()
            .filter(|l| l.contains("\"message\":\"gateway-tx running"))
            .find_map(|l| json_string(l, "session"))
            .and_then(|s| u64::from_str_radix(&s, 16).ok())
            .with_context(|| format!("no session in {}", log.display()))
    }

    /// The sessions the running receiver logged taking, in order.
    pub(super) fn rx_sessions(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(self.rx_log()).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"message\":\"new transmitter session"))
            .filter_map(|l| json_string(l, "session"))
            .filter_map(|s| u64::from_str_radix(&s, 16).ok())
            .collect()
    }

    /// One read of every tag, checked against the PLC's step read right after it.
    pub(super) fn sample(&mut self) -> anyhow::Result<SampleSummary> {
        let line = self.bed.probe.cmd("sample")?;
        let step = field(&self.bed.plc.cmd("step")?, "step").unwrap_or(0);
        Ok(self.monitor.add(&line, step))
    }

    /// Samples the mirror for `d`.
    pub(super) fn watch(&mut self, d: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while t.elapsed() < d {
            self.sample()?;
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Waits until the mirror serves every tag; returns how long that took.
    pub(super) fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let t = Instant::now();
        loop {
            let s = self.sample()?;
            if s.unavailable == 0 && self.monitor.total > 0 {
                return Ok(t.elapsed());
            }
            anyhow::ensure!(
                t.elapsed() < timeout,
                "the mirror served only {} of {} tags after {} s",
                self.monitor.total - s.unavailable,
                self.monitor.total,
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(super) fn stop_all(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            tx.term();
        }
        if let Some(mut rx) = self.rx.take() {
            rx.term();
        }
        if let Some(relay) = self.relay.take() {
            drop(relay);
        }
        if let Some(capture) = self.capture.take() {
            drop(capture);
        }
        let _ = self.bed.plc.cmd("run");
        let _ = self.bed.plc.cmd("plug");
    }
}

/// A fresh read of a bulk register shows a step at most this far (2 s) behind the PLC's.
pub(super) const FRESH_STEPS: u64 = 2000 / PLC_PERIOD_MS;

/// What the mirror reads showed over a scenario.
#[derive(Default)]
pub(super) struct Monitor {
    pub(super) total: usize,
    pub(super) samples: u64,
    /// Reads of a value the PLC never held up to the step it was at.
    pub(super) corrupted_reads: u64,
    /// Reads of a bulk register showing an older step than an earlier read.
    pub(super) regressions: u64,
    pub(super) unavailable_reads: u64,
    /// Reads that served a value.
    pub(super) served_reads: u64,
    /// Samples with a tag unavailable, or a bulk register more than [`FRESH_STEPS`] behind.
    pub(super) stale_samples: u64,
    /// Per sample: how many steps its oldest bulk register was behind the PLC (`None` when
    /// it served no bulk register).
    pub(super) lags: Vec<Option<u64>>,
    pub(super) last_bulk: Vec<Option<u64>>,
}

/// The monitor's counters at a point in time.
pub(super) struct Mark {
    pub(super) samples: u64,
    pub(super) corrupted: u64,
    pub(super) regressions: u64,
    pub(super) served: u64,
    pub(super) stale: u64,
}

/// What the mirror showed between a [`Mark`] and now.
#[derive(Default, Clone, Copy)]
pub(super) struct Window {
    pub(super) samples: u64,
    pub(super) stale: u64,
    pub(super) served: u64,
    pub(super) corrupted: u64,
    pub(super) regressions: u64,
    /// The largest lag of a bulk register behind the PLC, in steps.
    pub(super) max_lag: Option<u64>,
}

impl Window {
    pub(super) fn max_lag_text(&self) -> String {
        match self.max_lag {
            Some(l) => format!("{} ms", l * PLC_PERIOD_MS),
            None => "-".to_string(),
        }
    }
}

pub(super) struct SampleSummary {
    pub(super) unavailable: usize,
}

impl Monitor {
    pub(super) fn add(&mut self, line: &str, step: u64) -> SampleSummary {
        let tokens: Vec<&str> = line.split_whitespace().skip(1).collect();
        self.total = tokens.len();
        self.samples += 1;
        let demo = DEMO_TAGS.len();
        if self.last_bulk.len() != tokens.len().saturating_sub(demo) {
            self.last_bulk = vec![None; tokens.len().saturating_sub(demo)];
        }
        let mut unavailable = 0;
        let mut lag: Option<u64> = None;
        for (k, t) in tokens.iter().enumerate() {
            match *t {
                "-" => unavailable += 1,
                "x" => self.corrupted_reads += 1,
                n => {
                    self.served_reads += 1;
                    let Ok(s) = n.parse::<u64>() else {
                        self.corrupted_reads += 1;
                        continue;
                    };
                    // Bulk steps are modulo 2^16; a run stays far below that.
                    if s > step {
                        self.corrupted_reads += 1;
                    }
                    if k >= demo {
                        let last = &mut self.last_bulk[k - demo];
                        if last.is_some_and(|l| s < l) {
                            self.regressions += 1;
                        }
                        *last = Some(s);
                        lag = Some(lag.unwrap_or(0).max(step.saturating_sub(s)));
                    }
                }
            }
        }
        self.unavailable_reads += unavailable as u64;
        if unavailable > 0 || lag.is_some_and(|l| l > FRESH_STEPS) {
            self.stale_samples += 1;
        }
        self.lags.push(lag);
        SampleSummary { unavailable }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            samples: self.samples,
            corrupted: self.corrupted_reads,
            regressions: self.regressions,
            served: self.served_reads,
            stale: self.stale_samples,
        }
    }

    pub(super) fn since(&self, m: &Mark) -> Window {
        let from = usize::try_from(m.samples).unwrap_or(usize::MAX);
        Window {
            samples: self.samples - m.samples,
            stale: self.stale_samples - m.stale,
            served: self.served_reads - m.served,
            corrupted: self.corrupted_reads - m.corrupted,
            regressions: self.regressions - m.regressions,
            max_lag: self
                .lags
                .get(from..)
                .and_then(|l| l.iter().flatten().max().copied()),
        }
    }

    /// A new receiver starts from nothing; what the old one served says nothing about it.
    pub(super) fn forget_history(&mut self) {
        self.last_bulk.iter_mut().for_each(|l| *l = None);
    }
}
