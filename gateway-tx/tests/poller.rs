//! The Modbus poller against the simulated PLC over real Modbus TCP on loopback.

// The simulator lives in the end-to-end `tests` crate, which depends on this one; including
// its (self-contained) source avoids a dependency cycle and building the receiver here.
#[allow(dead_code)]
#[path = "../../tests/src/plc_sim.rs"]
mod plc_sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::tx::{ModbusDevice, ModbusTag};
use gateway_tx::modbus::run_device;
use gateway_tx::source::Health;
use gateway_tx::tags::TagTable;
use plc_sim::{DEMO_TAGS, Fault, PlcSim};
use protocol::model::{
    ByteOrder, ModbusTable, ModbusType, Quality, Sample, SourceAddress, TagIndex, TagInfo, Value,
    WordOrder,
};
use protocol::registers;
use tokio::task::JoinHandle;
use tokio_modbus::ExceptionCode;

const POLL: Duration = Duration::from_millis(30);
const TIMEOUT: Duration = Duration::from_millis(500);
const PATIENCE: Duration = Duration::from_secs(5);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn device(name: &str, addr: SocketAddr, tags: Vec<ModbusTag>) -> ModbusDevice {
    ModbusDevice {
        name: name.to_string(),
        host: addr.ip().to_string(),
        port: addr.port(),
        unit_id: 1,
        poll_interval: POLL,
        timeout: TIMEOUT,
        tags,
    }
}

#[allow(clippy::too_many_arguments)]
fn tag(
    name: &str,
    table: ModbusTable,
    address: u16,
    kind: ModbusType,
    count: u16,
    orders: (ByteOrder, WordOrder),
    scale: f64,
    offset: f64,
) -> ModbusTag {
    ModbusTag {
        name: name.to_string(),
        table,
        address,
        kind,
        count,
        byte_order: orders.0,
        word_order: orders.1,
        scale,
        offset,
        deadband: 0.0,
        unit: String::new(),
        description: String::new(),
    }
}

/// A tag table for devices in this order, numbered as `source::Sources::build` would.
fn table_for(devices: &[&ModbusDevice]) -> Arc<TagTable> {
    let mut infos = Vec::new();
    for d in devices {
        for t in &d.tags {
            let addr = gateway_tx::modbus::plan::tag_address(d, t);
            infos.push(TagInfo {
                name: t.name.clone(),
                value_type: registers::value_type(&addr),
                unit: t.unit.clone(),
                description: t.description.clone(),
                source: SourceAddress::Modbus(addr),
            });
        }
    }
    let n = infos.len();
    Arc::new(TagTable::new(infos, vec![0.0; n]))
}

struct Running {
    task: JoinHandle<()>,
    health: Arc<Health>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn(device: &ModbusDevice, first: TagIndex, table: &Arc<TagTable>) -> Running {
    let health = Arc::new(Health::new());
    let task = tokio::spawn(run_device(
        device.clone(),
        first,
        Arc::clone(table),
        Arc::clone(&health),
    ));
    Running { task, health }
}

/// Waits until `check` holds for the table, or fails the test with what it last saw.
async fn wait_until(
    table: &TagTable,
    what: &str,
    mut check: impl FnMut(&TagTable) -> Result<(), String>,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check(table) {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn quality_of(table: &TagTable, tag: TagIndex) -> Option<Quality> {
    table.current(tag).map(|s| s.quality)
}

fn all_quality(
    tags: std::ops::Range<TagIndex>,
    q: Quality,
) -> impl FnMut(&TagTable) -> Result<(), String> {
    move |t| {
        for i in tags.clone() {
            let got = quality_of(t, i);
            if got != Some(q) {
                return Err(format!(
                    "tag {i} has {:?}, want {}",
                    got.map(Quality::name),
                    q.name()
                ));
            }
        }
        Ok(())
    }
}

fn check_sample(s: Option<Sample>, want: &Value, name: &str) -> Result<(), String> {
    match s {
        Some(s) if s.quality == Quality::GOOD && &s.value == want => Ok(()),
        other => Err(format!("{name}: {other:?}, want Good {want:?}")),
    }
}

const BB: (ByteOrder, WordOrder) = (ByteOrder::Big, WordOrder::Big);
const BL: (ByteOrder, WordOrder) = (ByteOrder::Big, WordOrder::Little);
const LB: (ByteOrder, WordOrder) = (ByteOrder::Little, WordOrder::Big);
const LL: (ByteOrder, WordOrder) = (ByteOrder::Little, WordOrder::Little);

#[tokio::test]
async fn every_type_and_layout_arrives_good_with_the_right_value() {
    init_logs();
    let sim = PlcSim::start(localhost()).await.unwrap();
    let step = sim.tick();

    // Golden raw registers, written by hand rather than by the codec under test.
    use ModbusTable::{HoldingRegister as H, InputRegister as I};
    use ModbusType as T;
    sim.set_holding(200, &[0x3F80, 0x0000]); // f32 1.0, big/big
    sim.set_holding(202, &[0x0000, 0x3F80]); // f32 1.0, word-swapped
    sim.set_holding(204, &[0x803F, 0x0000]); // f32 1.0, byte-swapped
    sim.set_holding(206, &[0xFEFF, 0xFFFF]); // i32 -2, little/little
    sim.set_holding(208, &[0x028D]); // i16 653 × 0.1 − 40 = 25.3
    sim.set_input(300, &[0x4142, 0x4300, 0x0000]); // "ABC" + NUL padding
    sim.set_input(303, &[0x5678, 0x1234, 0x0000, 0x0000]); // u64 0x12345678, word-swapped
    let golden = [
        (
            tag("g/f32bb", H, 200, T::F32, 2, BB, 1.0, 0.0),
            Value::Float(1.0),
        ),
        (
            tag("g/f32bl", H, 202, T::F32, 2, BL, 1.0, 0.0),
            Value::Float(1.0),
        ),
        (
            tag("g/f32lb", H, 204, T::F32, 2, LB, 1.0, 0.0),
            Value::Float(1.0),
        ),
        (
            tag("g/i32ll", H, 206, T::I32, 2, LL, 1.0, 0.0),
            Value::Int32(-2),
        ),
        (
            tag("g/scaled", H, 208, T::I16, 1, BB, 0.1, -40.0),
            Value::Double(653.0 * 0.1 - 40.0),
        ),
        (
            tag("g/text", I, 300, T::String, 3, BB, 1.0, 0.0),
            Value::String("ABC".into()),
        ),
        (
            tag("g/u64bl", I, 303, T::U64, 4, BL, 1.0, 0.0),
            Value::UInt64(0x1234_5678),
        ),
    ];

    let mut tags = plc_sim::demo_modbus_tags("demo");
    tags.extend(golden.iter().map(|(t, _)| t.clone()));
    let dev = device("demo", sim.local_addr(), tags);
    let table = table_for(&[&dev]);
    let run = spawn(&dev, 0, &table);

    let demo_count = DEMO_TAGS.len();
    wait_until(&table, "every tag Good with its value", |t| {
        for (i, d) in DEMO_TAGS.iter().enumerate() {
            check_sample(t.current(i as TagIndex), &d.value(step), d.path)?;
        }
        for (j, (g, want)) in golden.iter().enumerate() {
            check_sample(t.current((demo_count + j) as TagIndex), want, &g.name)?;
        }
        Ok(())
    })
    .await;
    // Every value has the catalogue's type (scaled ones are Double).
    for (i, info) in table.infos().iter().enumerate() {
        let s = table.current(i as TagIndex).unwrap();
        assert_eq!(s.value.value_type(), info.value_type, "{}", info.name);
        assert!(s.time > 0);
    }

    // The process moves on; the table follows.
    let step = sim.tick();
    wait_until(&table, "values of the next step", |t| {
        for (i, d) in DEMO_TAGS.iter().enumerate() {
            check_sample(t.current(i as TagIndex), &d.value(step), d.path)?;
        }
        Ok(())
    })
    .await;

    assert!(run.health.connected());
    assert!(run.health.polls_ok() >= 2);
    assert_eq!(run.health.last_error(), "");
    assert_eq!(sim.writes(), 0, "the poller never writes");
    assert!(sim.reads() > 0);
    // Coalesced: one read per table for the demo tags (the discrete inputs at 0 and 10 bridge
    // their gap), one each for the golden holding and input registers: 6 reads a poll.
    assert_eq!(run.health.polls_failed(), 0);
    let before = run.health.polls_ok();
    let reads = sim.reads();
    let after = run.health.polls_ok();
    assert!(
        6 * before <= reads && reads <= 6 * (after + 1),
        "{reads} reads in {before}..{after} polls"
    );
}

#[tokio::test]
async fn unplugged_device_goes_bad_and_recovers_while_others_keep_flowing() {
    init_logs();
    let mut sim_a = PlcSim::start(localhost()).await.unwrap();
    let sim_b = PlcSim::start(localhost()).await.unwrap();
    let dev_a = device("a", sim_a.local_addr(), plc_sim::demo_modbus_tags("a"));
    let dev_b = device("b", sim_b.local_addr(), plc_sim::demo_modbus_tags("b"));
    let n = DEMO_TAGS.len() as TagIndex;
    let table = table_for(&[&dev_a, &dev_b]);
    let run_a = spawn(&dev_a, 0, &table);
    let run_b = spawn(&dev_b, n, &table);
    wait_until(
        &table,
        "both devices Good",
        all_quality(0..2 * n, Quality::GOOD),
    )
    .await;

    sim_a.stop().await;
    wait_until(
        &table,
        "device a Bad after unplugging",
        all_quality(0..n, Quality::BAD_COMMUNICATION_ERROR),
    )
    .await;
    assert!(!run_a.health.connected());
    assert!(!run_a.health.last_error().is_empty());
    let a_value = table.current(4).unwrap().value;
    assert_eq!(
        a_value,
        DEMO_TAGS[4].value(0),
        "a Bad tag keeps its last value"
    );

    // Device b is untouched: still Good, still polled, and its changes still arrive.
    let b_polls = run_b.health.polls_ok();
    let step = sim_b.tick();
    wait_until(&table, "device b keeps flowing", |t| {
        all_quality(n..2 * n, Quality::GOOD)(t)?;
        for (i, d) in DEMO_TAGS.iter().enumerate() {
            check_sample(t.current(n + i as TagIndex), &d.value(step), d.path)?;
        }
        Ok(())
    })
    .await;
    assert!(run_b.health.polls_ok() > b_polls);
    assert!(run_b.health.connected());

    sim_a.tick();
    sim_a.restart().await.unwrap();
    let step = sim_a.step();
    wait_until(&table, "device a Good again after replugging", |t| {
        for (i, d) in DEMO_TAGS.iter().enumerate() {
            check_sample(t.current(i as TagIndex), &d.value(step), d.path)?;
        }
        Ok(())
    })
    .await;
    assert!(run_a.health.connected());
    assert!(run_a.health.polls_failed() > 0);
    assert!(sim_a.connections() >= 2, "the poller reconnected");
    assert_eq!(sim_a.writes() + sim_b.writes(), 0);
}

#[tokio::test]
async fn exceptions_and_bad_replies_get_their_documented_qualities() {
    init_logs();
    use ModbusTable::{Coil, HoldingRegister as H, InputRegister as I};
    use ModbusType as T;
    let sim = PlcSim::start(localhost()).await.unwrap();
    sim.set_holding(9_990, &[7]);
    sim.set_input(0, &[11]);
    sim.set_coils(0, &[true]);
    let dev = device(
        "faulty",
        sim.local_addr(),
        vec![
            // Merged into one read of 9990..10002, which runs past the simulator's 10 000
            // registers: the poller must split it so only the unmapped tag is Bad.
            tag("f/ok", H, 9_990, T::U16, 1, BB, 1.0, 0.0),
            tag("f/unmapped", H, 9_999, T::U32, 2, BB, 1.0, 0.0),
            tag("f/input", I, 0, T::U16, 1, BB, 1.0, 0.0),
            tag("f/coil", Coil, 0, T::Bool, 1, BB, 1.0, 0.0),
        ],
    );
    let table = table_for(&[&dev]);
    let run = spawn(&dev, 0, &table);
    wait_until(&table, "split around the unmapped address", |t| {
        check_sample(t.current(0), &Value::UInt16(7), "f/ok")?;
        check_sample(t.current(2), &Value::UInt16(11), "f/input")?;
        check_sample(t.current(3), &Value::Boolean(true), "f/coil")?;
        match quality_of(t, 1) {
            Some(Quality::BAD_CONFIGURATION_ERROR) => Ok(()),
            q => Err(format!("f/unmapped has {q:?}")),
        }
    })
    .await;
    assert!(run.health.connected());
    assert!(run.health.last_error().contains("exception 02"));

    let good = [0, 2, 3];
    let expect_good = |t: &TagTable| -> Result<(), String> {
        for i in good {
            if quality_of(t, i) != Some(Quality::GOOD) {
                return Err(format!("tag {i}: {:?}", quality_of(t, i)));
            }
        }
        Ok(())
    };
    let expect = |q: Quality| {
        move |t: &TagTable| -> Result<(), String> {
            for i in good {
                if quality_of(t, i) != Some(q) {
                    return Err(format!(
                        "tag {i}: {:?}, want {}",
                        quality_of(t, i),
                        q.name()
                    ));
                }
            }
            Ok(())
        }
    };

    // Short replies: decoding errors, the connection stays.
    let connections = sim.connections();
    sim.set_fault(Some(Fault::ShortReply));
    wait_until(&table, "short replies", expect(Quality::BAD_DECODING_ERROR)).await;
    assert_eq!(table.current(0).unwrap().value, Value::UInt16(7));
    sim.set_fault(None);
    wait_until(&table, "recovered from short replies", expect_good).await;

    for (code, q) in [
        (
            ExceptionCode::ServerDeviceFailure,
            Quality::BAD_DEVICE_FAILURE,
        ),
        (ExceptionCode::IllegalFunction, Quality::BAD_NOT_SUPPORTED),
        (
            ExceptionCode::ServerDeviceBusy,
            Quality::BAD_COMMUNICATION_ERROR,
        ),
        (ExceptionCode::GatewayTargetDevice, Quality::BAD_TIMEOUT),
    ] {
        sim.set_fault(Some(Fault::Exception(code)));
        wait_until(&table, &format!("exception {code}"), expect(q)).await;
        assert!(run.health.connected());
    }
    sim.set_fault(None);
    wait_until(&table, "recovered from exceptions", expect_good).await;
    assert_eq!(
        sim.connections(),
        connections,
        "exceptions keep the connection"
    );

    // Silence: timeouts cost the connection; it comes back once the device answers.
    sim.set_fault(Some(Fault::NoReply));
    wait_until(&table, "timeouts", expect(Quality::BAD_TIMEOUT)).await;
    sim.set_fault(None);
    wait_until(&table, "recovered from timeouts", expect_good).await;
    assert!(
        sim.connections() > connections,
        "reconnected after a timeout"
    );

    assert_eq!(sim.writes(), 0, "the poller never writes");
}

#[tokio::test]
async fn unreachable_device_is_bad_from_the_start() {
    init_logs();
    // Bind then drop a listener, so the port is very likely closed.
    let addr = {
        let l = std::net::TcpListener::bind(localhost()).unwrap();
        l.local_addr().unwrap()
    };
    let dev = device(
        "nobody",
        addr,
        vec![tag(
            "n/x",
            ModbusTable::HoldingRegister,
            0,
            ModbusType::U16,
            1,
            BB,
            1.0,
            0.0,
        )],
    );
    let table = table_for(&[&dev]);
    let run = spawn(&dev, 0, &table);
    wait_until(
        &table,
        "Bad without ever connecting",
        all_quality(0..1, Quality::BAD_COMMUNICATION_ERROR),
    )
    .await;
    assert!(!run.health.connected());
    assert_eq!(table.current(0).unwrap().value, Value::UInt16(0));
}

/// A PLC answering garbage: every other request gets a malformed or mismatched reply. The
/// poller must never panic, must mark the tag Bad, and must come back to Good each time.
#[tokio::test]
async fn garbage_replies_never_crash_the_poller() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_logs();

    fn valid(tid: [u8; 2], unit: u8) -> Vec<u8> {
        vec![tid[0], tid[1], 0, 0, 0, 5, unit, 0x03, 0x02, 0x00, 0x2A]
    }
    let mut noise = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..40 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        noise.push((x >> 16) as u8);
    }
    // Each case builds a reply from the request's transaction id and unit id.
    type Case = Box<dyn Fn([u8; 2], u8) -> Vec<u8> + Send + Sync>;
    let cases: Vec<Case> = vec![
        // Wrong transaction id.
        Box::new(|t, u| valid([t[0], t[1].wrapping_add(1)], u)),
        // Wrong unit id.
        Box::new(|t, u| valid(t, u.wrapping_add(1))),
        // Reply of another function.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 5, u, 0x04, 0x02, 0x00, 0x2A]),
        // Wrong protocol id.
        Box::new(|t, u| vec![t[0], t[1], 0, 1, 0, 5, u, 0x03, 0x02, 0x00, 0x2A]),
        // Length field 0.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 0, u]),
        // Odd byte count.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 4, u, 0x03, 0x01, 0x00]),
        // Device identification reply announcing objects it does not contain.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 8, u, 0x2B, 0x0E, 1, 1, 0, 0, 5]),
        // Three registers for a one-register read: a decoding error, connection kept.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 9, u, 0x03, 0x06, 0, 1, 0, 2, 0, 3]),
        // An exception code nobody defined: Bad, connection kept.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0, 3, u, 0x83, 0x99]),
        // Noise.
        Box::new(move |_, _| noise.clone()),
        // A length of 65535 and then silence: a timeout.
        Box::new(|t, u| vec![t[0], t[1], 0, 0, 0xFF, 0xFF, u, 0x03]),
    ];
    let n_cases = cases.len();
    let cases = Arc::new(cases);
    let served = Arc::new(AtomicUsize::new(0));
    let not_reads = Arc::new(AtomicUsize::new(0));

    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let served = Arc::clone(&served);
        let not_reads = Arc::clone(&not_reads);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let cases = Arc::clone(&cases);
                let served = Arc::clone(&served);
                let not_reads = Arc::clone(&not_reads);
                tokio::spawn(async move {
                    let mut req = [0u8; 12];
                    while s.read_exact(&mut req).await.is_ok() {
                        if req[7] != 0x03 {
                            not_reads.fetch_add(1, Ordering::SeqCst);
                        }
                        let k = served.fetch_add(1, Ordering::SeqCst);
                        let (tid, unit) = ([req[0], req[1]], req[6]);
                        let reply = match cases.get(k / 2) {
                            Some(case) if k % 2 == 1 => case(tid, unit),
                            _ => valid(tid, unit),
                        };
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };

    let dev = device(
        "garbage",
        addr,
        vec![tag(
            "g/x",
            ModbusTable::HoldingRegister,
            0,
            ModbusType::U16,
            1,
            BB,
            1.0,
            0.0,
        )],
    );
    let table = table_for(&[&dev]);
    let run = spawn(&dev, 0, &table);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::HashSet::new();
    while served.load(Ordering::SeqCst) <= 2 * n_cases {
        assert!(!run.task.is_finished(), "the poller task ended");
        assert!(
            tokio::time::Instant::now() < deadline,
            "garbage cases took too long"
        );
        if let Some(q) = quality_of(&table, 0) {
            seen.insert(q);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_until(&table, "Good after the garbage", |t| {
        check_sample(t.current(0), &Value::UInt16(42), "g/x")
    })
    .await;
    assert!(!run.task.is_finished());
    assert!(seen.contains(&Quality::BAD_COMMUNICATION_ERROR), "{seen:?}");
    assert!(run.health.polls_failed() >= 5);
    assert_eq!(
        not_reads.load(Ordering::SeqCst),
        0,
        "only reads are ever sent"
    );
    server.abort();
}
