//! `gateway-rx`: the IT-side daemon. Receives from the diode and republishes; never sends towards the plant.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use config::rx::RxConfig;
use gateway_rx::Receiver;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "gateway-rx",
    version,
    about = "IT-side daemon of the unidirectional gateway"
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
    /// Run the receiver.
    Run {
        /// The receiver's TOML config.
        #[arg(short, long, default_value = "/etc/gateway/gateway-rx.toml")]
        config: PathBuf,
    },
    /// Validate a config file and report every problem with file, line, column and key.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => match RxConfig::load(&file) {
            Ok(c) => {
                let mirror = c.modbus_server.as_ref().map(|m| m.bind.to_string());
                println!(
                    "{}: ok (link {}, Modbus mirror {})",
                    file.display(),
                    c.link.bind,
                    mirror.as_deref().unwrap_or("off")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = format!("{e:#}"), "gateway-rx stopped");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = RxConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut rx = Receiver::start(config).await?;
        info!(config = %path.display(), "gateway-rx started");
        observe::notify::ready(&format!("receiving on {}", rx.link_addr));
        // The watchdog is fed from this loop only while the link receiver lives, so systemd
        // restarts a daemon whose runtime hangs or whose link task died.
        let alive = rx.status.link_alive.clone();
        let mut watchdog = observe::notify::watchdog_interval().map(tokio::time::interval);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                r = rx.wait() => break r,
                r = &mut shutdown => { info!("shutting down"); break r }
                () = tick(&mut watchdog) => {
                    if alive.load(std::sync::atomic::Ordering::Relaxed) {
                        observe::notify::watchdog();
                    }
                }
            }
        };
        observe::notify::stopping();
        result
    })
}

/// The next watchdog tick, or never when systemd asked for no watchdog.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
