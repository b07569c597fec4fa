//! `gateway-tx`: the OT-side daemon. Polls the plant and sends one way across the diode.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use config::tx::TxConfig;
use gateway_tx::Transmitter;
use tracing::{error, info};

// mimalloc rather than glibc malloc: measured in the workspace Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway-tx",
    version,
    about = "OT-side daemon of the unidirectional gateway"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the transmitter.
    Run {
        /// The transmitter's TOML config.
        #[arg(short, long, default_value = "/etc/gateway/gateway-tx.toml")]
        config: PathBuf,
        /// Also reload the config when the file changes (checked every second); SIGHUP always
        /// reloads it.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a config file and report every problem with file, line, column and key.
    CheckConfig { file: PathBuf },
    /// Write a new random pre-shared link key to FILE (64 hex characters, mode 0600), for
    /// `key_file` on this box; copy the same file to the receiving box. Never overwrites.
    Keygen { file: PathBuf },
    /// Ask the running daemon (on this box) to re-send a range of history from its buffer.
    Backfill {
        /// The transmitter's TOML config, for the history buffer's directory.
        #[arg(short, long, default_value = "/etc/gateway/gateway-tx.toml")]
        config: PathBuf,
        /// Start of the source-time range, RFC 3339 (e.g. 2024-05-01T12:00:00Z), inclusive.
        #[arg(long)]
        from: String,
        /// End of the range, RFC 3339, inclusive.
        #[arg(long)]
        to: String,
        /// Only this tag; repeat for more. All tags when absent.
        #[arg(long)]
        tag: Vec<String>,
        /// Where from: `auto` re-sends what the buffer holds and reads what is older than the
        /// buffer from the source historians (historized OPC UA tags); `buffer` or
        /// `historian` only.
        #[arg(long, value_enum, default_value_t = gateway_tx::history::backfill::Source::Auto)]
        source: gateway_tx::history::backfill::Source,
        /// Seconds to wait for the daemon to take the request and report (0: do not wait).
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Browse an OPC UA server (Browse and Read only): print its address space and
    /// ready-to-paste `[[opcua.tag]]` entries for the variables found.
    Browse(BrowseArgs),
}

#[derive(clap::Args)]
struct BrowseArgs {
    /// The server's endpoint URL, e.g. opc.tcp://10.0.0.5:4840/
    url: String,
    /// Start node (config syntax, e.g. "nsu=urn:plant;s=Line1"); the Objects folder by default.
    #[arg(long)]
    node: Option<String>,
    /// Levels below the start node.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// none, basic256sha256 or aes128_sha256_rsaoaep.
    #[arg(long, default_value = "none")]
    security_policy: String,
    /// none, sign or sign_and_encrypt.
    #[arg(long, default_value = "none")]
    security_mode: String,
    /// User name (with --password-file); anonymous otherwise.
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the password (mode 0600).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The client's certificate directory (own/, private/, trusted/, rejected/).
    #[arg(long, default_value = config::opcua::limits::PKI_DIR_DEFAULT)]
    pki_dir: PathBuf,
    /// "listed" (only certificates in trusted/) or "any" (commissioning only).
    #[arg(long, default_value = "listed")]
    trust_server: String,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// A TOML basic string.
#[cfg(feature = "opcua")]
fn toml_string(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push_str(&format!("\\u{:04X}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Browses as `gateway-tx browse` asks; the options are checked as a `[[opcua]]` table would be.
#[cfg(feature = "opcua")]
fn browse(a: BrowseArgs) -> anyhow::Result<()> {
    let mut text = format!(
        "[link]\ndestination = \"127.0.0.1:9\"\ninsecure_no_key = true\n[[opcua]]\n\
         name = \"browse\"\nurl = {}\n\
         security_policy = {}\nsecurity_mode = {}\npki_dir = {}\ntrust_server = {}\n\
         timeout_ms = {}\n",
        toml_string(&a.url),
        toml_string(&a.security_policy),
        toml_string(&a.security_mode),
        toml_string(&a.pki_dir.to_string_lossy()),
        toml_string(&a.trust_server),
        a.timeout_ms,
    );
    if let Some(u) = &a.user {
        text.push_str(&format!("user = {}\n", toml_string(u)));
    }
    if let Some(p) = &a.password_file {
        text.push_str(&format!(
            "password_file = {}\n",
            toml_string(&p.to_string_lossy())
        ));
    }
    let cwd = std::env::current_dir()
        .unwrap_or_default()
        .join("(command line)");
    // Problems are named by the option that caused them, not by the generated table's keys.
    let c = TxConfig::parse(&text, &cwd).map_err(|e| {
        let lines: Vec<String> = e
            .diagnostics()
            .iter()
            .map(|d| {
                let key = d.key.trim_start_matches("opcua[0].");
                let option = if key == "url" {
                    "URL".to_owned()
                } else {
                    format!("--{}", key.replace('_', "-"))
                };
                format!("{option}: {}", d.message)
            })
            .collect();
        if lines.is_empty() {
            anyhow::anyhow!("{e}")
        } else {
            anyhow::anyhow!("{}", lines.join("\n"))
        }
    })?;
    let ep = c
        .opcua
        .into_iter()
        .next()
        .context("no endpoint in the browse options")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(gateway_tx::opcua::browse::browse(
        &ep,
        a.node.as_deref(),
        a.depth,
    ))?;
    println!("# Address space of {}", a.url);
    for line in report.tree.lines() {
        println!("#   {line}");
    }
    println!();
    print!("{}", report.toml());
    Ok(())
}

#[cfg(not(feature = "opcua"))]
fn browse(_: BrowseArgs) -> anyhow::Result<()> {
    anyhow::bail!("this gateway-tx was built without OPC UA (cargo feature `opcua`)")
}

/// Writes a backfill request where the daemon looks for it and reports what the daemon says.
fn backfill(
    config: PathBuf,
    from: String,
    to: String,
    tags: Vec<String>,
    source: gateway_tx::history::backfill::Source,
    wait: u64,
) -> anyhow::Result<()> {
    use config::timefmt::parse_rfc3339;
    use gateway_tx::history::backfill;
    let from = parse_rfc3339(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = parse_rfc3339(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    anyhow::ensure!(from <= to, "--from is after --to");
    let c = TxConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(history) = c.history else {
        anyhow::bail!(
            "{}: no [history] table, so the daemon keeps no history to re-send",
            config.display()
        );
    };
    let id = backfill::submit(&history.dir, from, to, tags, source)
        .with_context(|| format!("writing the request into {}", history.dir.display()))?;
    println!("backfill request {id} written");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if let Some(st) = backfill::read_status(&history.dir, &id) {
            let shown: (String, Vec<_>) = (
                st.state.clone(),
                st.historian.iter().map(|p| p.state).collect(),
            );
            if last.as_ref() != Some(&shown) {
                println!(
                    "{}: {} (buffer: scanned {}, re-sent {}) {}",
                    st.id, st.state, st.scanned, st.sent, st.message
                );
                for p in &st.historian {
                    println!(
                        "  historian {}: {:?}, {} tags, {} values read {}",
                        p.source, p.state, p.tags, p.values, p.message
                    );
                }
                last = Some(shown);
            }
            match st.state.as_str() {
                "done" => return Ok(()),
                "failed" | "rejected" => anyhow::bail!("backfill {}: {}", st.id, st.message),
                _ => {}
            }
        }
    }
    if wait > 0 && last.is_none() {
        println!(
            "the daemon has not taken the request yet (is it running with this config?); it \
             stays queued in {}",
            backfill::request_dir(&history.dir).display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    observe::lifecycle::init_logging(matches!(cli.log_format, LogFormat::Json));
    match cli.command {
        Command::CheckConfig { file } => match TxConfig::load(&file) {
            Ok(c) => {
                let tags: usize = c.devices.iter().map(|d| d.tags.len()).sum::<usize>()
                    + c.opcua.iter().map(|e| e.tags.len()).sum::<usize>();
                println!(
                    "{}: ok ({} devices, {} OPC UA endpoints, {} tags)",
                    file.display(),
                    c.devices.len(),
                    c.opcua.len(),
                    tags
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Backfill {
            config,
            from,
            to,
            tag,
            source,
            wait,
        } => match backfill(config, from, to, tag, source, wait) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway-tx backfill: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen { file } => match keygen(&file) {
            Ok(()) => {
                println!(
                    "wrote a new link key to {} (mode 0600); set key_file to it here and copy \
                     the same file to the receiving box",
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway-tx keygen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Browse(args) => match browse(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway-tx browse: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, watch } => match run(config, watch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = format!("{e:#}"), "gateway-tx stopped");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf, watch: bool) -> anyhow::Result<()> {
    // Stamped before loading: a change made while the daemon starts is then seen by --watch
    // (at worst the same content is reloaded once), never missed.
    let mut stamp = file_stamp(&path);
    let config = TxConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Before anything says the daemon runs: a SIGHUP (`systemctl reload`) sent before the
        // handler exists is no reload (under load the reload test lost 6 in 40 that way).
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let mut tx = Transmitter::start(config).await?;
        info!(config = %path.display(), session = format_args!("{:016x}", tx.session), http = ?tx.http_addr, watch, "gateway-tx running");
        let alive = tx.status.link_alive.clone();
        let ready = format!("sending, session {:016x}", tx.session);
        // Borrows the transmitter, so that a planned stop can still let it send what it holds.
        let work = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = hangup.recv() => {
                        info!(config = %path.display(), "SIGHUP: reloading the config");
                        stamp = file_stamp(&path);
                        // Logged and counted by the transmitter either way.
                        let _ = tx.reload_file(&path);
                    }
                    _ = tick.tick() => {
                        if !tx.link_alive() {
                            return tx.wait().await;
                        }
                        let now = file_stamp(&path);
                        if watch && now != stamp {
                            stamp = now;
                            info!(config = %path.display(), "config file changed: reloading");
                            let _ = tx.reload_file(&path);
                        }
                    }
                }
            }
        };
        let result = observe::lifecycle::run_until_shutdown(work, alive, &ready).await;
        tx.shutdown(STOP_GRACE).await;
        result
    })
}

/// A new key from the system's random generator, in a file created for it alone: never over
/// an existing key (both boxes would then disagree), readable by its owner only from the start.
fn keygen(path: &std::path::Path) -> anyhow::Result<()> {
    use ring::rand::{SecureRandom, SystemRandom};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    file.write_all(config::keyfile::encode(&key).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// How long a planned stop waits for the link sender to send what it holds (the open block's
/// repair takes 20 % more than its data; at 1 Mb/s a full block of 64 + 16 datagrams is 0.9 s).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A hash of the file's bytes (`None` when it cannot be read), to notice a change with
/// `--watch`; a rewrite with the same content is no change.
fn file_stamp(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}
