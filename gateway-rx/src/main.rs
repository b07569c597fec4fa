//! `gateway-rx`: the IT-side daemon. Receives from the diode and republishes; never sends towards the plant.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use config::rx::RxConfig;
use gateway_rx::Receiver;
use tracing::{error, info};

// mimalloc rather than glibc malloc: measured in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print the stored history of tags over a source-time range (works while the daemon runs).
    Query {
        /// The receiver's TOML config, for the store's path.
        #[arg(short, long, default_value = "/etc/gateway/gateway-rx.toml")]
        config: PathBuf,
        /// The store's SQLite file, instead of the config's `[store] path`.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Tag name; repeat for more tags.
        #[arg(long, required = true)]
        tag: Vec<String>,
        /// Start of the range, RFC 3339 (e.g. 2024-05-01T12:00:00Z), inclusive.
        #[arg(long)]
        from: String,
        /// End of the range, RFC 3339, inclusive.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = QueryFormat::Csv)]
        format: QueryFormat,
    },
    /// List the history gaps: open, healed, expired (works while the daemon runs).
    Gaps {
        /// The receiver's TOML config, for the store's path.
        #[arg(short, long, default_value = "/etc/gateway/gateway-rx.toml")]
        config: PathBuf,
        /// The store's SQLite file, instead of the config's `[store] path`.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Only the gaps still open.
        #[arg(long)]
        open: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryFormat {
    Csv,
    Json,
}

/// The store to read: `--store`, or the config's `[store] path`.
fn store_path(config: &std::path::Path, store: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match store {
        Some(p) => Ok(p),
        None => Ok(RxConfig::load(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .store
            .path),
    }
}

fn open_store(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    if !path.exists() {
        anyhow::bail!(
            "{}: no history store (it is created when the first history arrives)",
            path.display()
        );
    }
    gateway_rx::store::db::open_ro(path)
        .with_context(|| format!("opening the history store {}", path.display()))
}

fn query(
    config: PathBuf,
    store: Option<PathBuf>,
    tags: Vec<String>,
    from: String,
    to: String,
    format: QueryFormat,
) -> anyhow::Result<()> {
    use config::timefmt::parse_rfc3339;
    let from = parse_rfc3339(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = parse_rfc3339(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let conn = open_store(&store_path(&config, store)?)?;
    let format = match format {
        QueryFormat::Csv => gateway_rx::store::cli::Format::Csv,
        QueryFormat::Json => gateway_rx::store::cli::Format::Json,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    gateway_rx::store::cli::query(&conn, &tags, from, to, format, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

fn gaps(config: PathBuf, store: Option<PathBuf>, open: bool, json: bool) -> anyhow::Result<()> {
    let conn = open_store(&store_path(&config, store)?)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    gateway_rx::store::cli::gaps(&conn, open, json, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    observe::lifecycle::init_logging(matches!(cli.log_format, LogFormat::Json));
    match cli.command {
        Command::CheckConfig { file } => match RxConfig::load(&file) {
            Ok(c) => {
                let mirror = c.modbus_server.as_ref().map(|m| m.bind.to_string());
                let opcua = c.opcua_server.as_ref().map(|o| o.bind.to_string());
                println!(
                    "{}: ok (link {}, Modbus mirror {}, OPC UA mirror {})",
                    file.display(),
                    c.link.bind,
                    mirror.as_deref().unwrap_or("off"),
                    opcua.as_deref().unwrap_or("off")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Query {
            config,
            store,
            tag,
            from,
            to,
            format,
        } => match query(config, store, tag, from, to, format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway-rx query: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Gaps {
            config,
            store,
            open,
            json,
        } => match gaps(config, store, open, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway-rx gaps: {e:#}");
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
        let alive = rx.status.link_alive.clone();
        let ready = format!("receiving on {}", rx.link_addr);
        observe::lifecycle::run_until_shutdown(rx.wait(), alive, &ready).await
    })
}
