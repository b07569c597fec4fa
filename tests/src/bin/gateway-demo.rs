//! The whole chain on loopback, for a first look: a simulated PLC speaking real Modbus TCP,
//! gateway-tx polling it, optionally an impairment relay standing in for a lossy link,
//! gateway-rx republishing, and a live table of the values the IT side serves.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use config::rx::RxConfig;
use config::tx::TxConfig;
use gateway_rx::Receiver;
use gateway_tx::Transmitter;
use tests::plc_sim::{PlcSim, demo_device_toml};
use tests::relay::{Impairments, Relay, RelayCounters};

#[derive(Parser)]
#[command(
    name = "gateway-demo",
    about = "Runs PLC simulator → gateway-tx → (diode) → gateway-rx on loopback"
)]
struct Args {
    /// Port of the IT-side Modbus mirror on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 5020)]
    modbus_port: u16,
    /// Random loss on the simulated diode, 0.0..1.0 (FEC repairs it).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Stop after this many seconds (0 runs until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Print the table once per refresh without clearing the screen (for logs and CI).
    #[arg(long)]
    plain: bool,
    /// Serve metrics, health and the status pages on 127.0.0.1: gateway-rx on this port,
    /// gateway-tx on the next one (0 picks free ports; they are printed).
    #[arg(long)]
    http_port: Option<u16>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut plc = PlcSim::start("127.0.0.1:0".parse()?)
        .await
        .context("starting the simulated PLC")?;
    plc.run_process(Duration::from_millis(500));

    let http = |offset: u16| match args.http_port {
        Some(0) => "\n[http]\nbind = \"127.0.0.1:0\"\n".to_owned(),
        Some(p) => format!(
            "\n[http]\nbind = \"127.0.0.1:{}\"\n",
            p.saturating_add(offset)
        ),
        None => String::new(),
    };
    // Authenticated, as every shipped config is: a key made for this run.
    let key = tests::KeyFile::random();
    let rx_toml = format!(
        "[link]\nbind = \"127.0.0.1:{}\"\n{}\n[modbus_server]\nbind = \"127.0.0.1:{}\"\n\n[status]\nlog_interval_s = 3600\n{}",
        tests::free_udp_port()?,
        key.link_lines("rx-link.state"),
        args.modbus_port,
        http(0)
    );
    let rx_config = RxConfig::parse(&rx_toml, Path::new("demo/gateway-rx.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rx = Receiver::start(rx_config).await?;

    let relay = if args.loss > 0.0 {
        Some(
            Relay::start(
                rx.link_addr,
                Impairments {
                    loss: args.loss,
                    ..Impairments::default()
                },
                7,
            )
            .await?,
        )
    } else {
        None
    };
    let destination: SocketAddr = relay.as_ref().map_or(rx.link_addr, |r| r.listen);
    let tx_toml = format!(
        "{}[link]\ndestination = \"{destination}\"\nsnapshot_period_s = 5\n{}\n{}",
        http(1),
        key.link_lines("tx-link.state"),
        demo_device_toml("plc1", plc.local_addr(), 250, 500)
    );
    let tx_config = TxConfig::parse(&tx_toml, Path::new("demo/gateway-tx.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tx = Transmitter::start(tx_config).await?;
    if let (Some(r), Some(t)) = (rx.http_addr, tx.http_addr) {
        // On stderr, so that the table on stdout stays as it was; scripts wait for this line.
        eprintln!("status pages: gateway-rx http://{r}/  gateway-tx http://{t}/");
    }

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let screen = render(&rx, &tx, &plc, relay.as_ref(), started);
        let mut out = std::io::stdout().lock();
        if !args.plain {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{screen}")?;
        out.flush()?;
        if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
    }
    let mirrored = rx.state.tag_count();
    if plc.writes() != 0 {
        anyhow::bail!(
            "the gateway sent {} write requests to the PLC",
            plc.writes()
        );
    }
    if args.seconds > 0 && mirrored == 0 {
        anyhow::bail!("no tags reached the IT side");
    }
    Ok(())
}

fn render(
    rx: &Receiver,
    tx: &Transmitter,
    plc: &PlcSim,
    relay: Option<&Relay>,
    started: Instant,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let stats = rx.stats();
    let now = gateway_rx::unix_now();
    let _ = writeln!(
        s,
        "Unidirectional gateway demo — {} s",
        started.elapsed().as_secs()
    );
    let _ = writeln!(
        s,
        "  OT  simulated PLC (Modbus TCP)   {}   requests {}  writes {}",
        plc.local_addr(),
        plc.requests(),
        plc.writes()
    );
    let _ = writeln!(s, "  OT  gateway-tx session          {:016x}", tx.session);
    if let Some(r) = relay {
        let _ = writeln!(
            s,
            "      lossy diode (relay)          {}   dropped {} of {}",
            r.listen,
            RelayCounters::get(&r.counters.dropped),
            RelayCounters::get(&r.counters.received)
        );
    }
    let _ = writeln!(
        s,
        "  IT  gateway-rx link             {}   link {}",
        rx.link_addr,
        if rx.state.link_is_down() {
            "DOWN"
        } else {
            "up"
        }
    );
    if let Some(m) = rx.modbus_addr {
        let _ = writeln!(
            s,
            "  IT  Modbus mirror (read-only)   {m}   unit id 1, same addresses as the PLC"
        );
    }
    let _ = writeln!(
        s,
        "  link: datagrams accepted {}  repaired {}  lost {}  crc failures {}  duplicates {}\n",
        stats.datagrams_accepted,
        stats.datagrams_repaired,
        stats.data_datagrams_lost,
        stats.crc_failures,
        stats.duplicates
    );
    let _ = writeln!(
        s,
        "  {:<34} {:>24}  {:<8} {:<28} {:>7}",
        "tag", "value", "unit", "quality", "age ms"
    );
    let view = rx.state.view();
    if let Some(catalogue) = view.catalogue() {
        for (i, tag) in catalogue.tags().iter().enumerate() {
            let Ok(index) = u32::try_from(i) else { break };
            match view.value(index) {
                Some(v) => {
                    let _ = writeln!(
                        s,
                        "  {:<34} {:>24}  {:<8} {:<28} {:>7}",
                        tag.name,
                        v.value.to_string(),
                        tag.unit,
                        v.quality.name(),
                        (now - v.source_time) / 1_000_000
                    );
                }
                None => {
                    let _ = writeln!(s, "  {:<34} {:>24}", tag.name, "(waiting)");
                }
            }
        }
    } else {
        let _ = writeln!(s, "  (waiting for the catalogue)");
    }
    s
}
