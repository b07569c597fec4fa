//! The Modbus mirror against tokio-modbus's own client (and raw sockets for garbage).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::rx::{ModbusServer, OnBadQuality};
use gateway_rx::modbus_server::{self, ServerCounters};
use gateway_rx::state::State;
use protocol::catalogue::Catalogue;
use protocol::message::Stream;
use protocol::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, Quality, Sample, SourceAddress, TagInfo,
    Value, ValueType, WordOrder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

struct T {
    name: &'static str,
    device: &'static str,
    table: ModbusTable,
    address: u16,
    kind: ModbusType,
    count: u16,
    byte_order: ByteOrder,
    word_order: WordOrder,
    scale: f64,
    /// None: never received.
    value: Option<(Value, Quality)>,
}

fn t(name: &'static str, table: ModbusTable, address: u16, kind: ModbusType, value: Value) -> T {
    T {
        name,
        device: "plc1",
        table,
        address,
        kind,
        count: 1,
        byte_order: ByteOrder::Big,
        word_order: WordOrder::Big,
        scale: 1.0,
        value: Some((value, Quality::GOOD)),
    }
}

use ModbusTable::{Coil, DiscreteInput, HoldingRegister as Hr, InputRegister as Ir};

fn tags() -> Vec<T> {
    vec![
        t("u16", Hr, 0, ModbusType::U16, Value::UInt16(0x1234)),
        t("i16", Hr, 1, ModbusType::I16, Value::Int16(-2)),
        t("u32", Hr, 2, ModbusType::U32, Value::UInt32(0x1122_3344)),
        t("f32", Hr, 4, ModbusType::F32, Value::Float(1.5)),
        T {
            word_order: WordOrder::Little,
            ..t(
                "i64",
                Hr,
                6,
                ModbusType::I64,
                Value::Int64(0x0001_0002_0003_0004),
            )
        },
        T {
            count: 3,
            ..t(
                "text",
                Hr,
                10,
                ModbusType::String,
                Value::String("ABCD".into()),
            )
        },
        T {
            scale: 0.1,
            ..t("scaled", Hr, 20, ModbusType::U16, Value::Double(12.3))
        },
        T {
            value: Some((Value::UInt16(7), Quality::BAD_COMMUNICATION_ERROR)),
            ..t("bad", Hr, 30, ModbusType::U16, Value::UInt16(0))
        },
        T {
            value: None,
            ..t("never", Hr, 31, ModbusType::U16, Value::UInt16(0))
        },
        T {
            value: Some((Value::UInt16(9), Quality::UNCERTAIN_LAST_USABLE_VALUE)),
            ..t("uncertain", Hr, 32, ModbusType::U16, Value::UInt16(0))
        },
        t("i32", Ir, 0, ModbusType::I32, Value::Int32(-1)),
        T {
            byte_order: ByteOrder::Little,
            ..t("swapped", Ir, 2, ModbusType::U16, Value::UInt16(0x1234))
        },
        t("c0", Coil, 0, ModbusType::Bool, Value::Boolean(true)),
        t("c1", Coil, 1, ModbusType::Bool, Value::Boolean(false)),
        t("c2", Coil, 2, ModbusType::Bool, Value::Boolean(true)),
        T {
            value: Some((Value::Boolean(true), Quality::BAD_DEVICE_FAILURE)),
            ..t("cbad", Coil, 3, ModbusType::Bool, Value::Boolean(true))
        },
        t(
            "d5",
            DiscreteInput,
            5,
            ModbusType::Bool,
            Value::Boolean(true),
        ),
        t(
            "d6",
            DiscreteInput,
            6,
            ModbusType::Bool,
            Value::Boolean(false),
        ),
        T {
            device: "plc2",
            ..t("plc2/u16", Hr, 0, ModbusType::U16, Value::UInt16(42))
        },
    ]
}

fn build_state() -> Arc<State> {
    let tags = tags();
    let mut infos: Vec<TagInfo> = tags
        .iter()
        .map(|t| {
            let addr = ModbusAddress {
                device: t.device.into(),
                unit_id: 1,
                table: t.table,
                address: t.address,
                kind: t.kind,
                count: t.count,
                byte_order: t.byte_order,
                word_order: t.word_order,
                scale: t.scale,
                offset: 0.0,
            };
            TagInfo {
                name: t.name.into(),
                value_type: protocol::registers::value_type(&addr),
                unit: String::new(),
                description: String::new(),
                source: SourceAddress::Modbus(addr),
            }
        })
        .collect();
    infos.push(TagInfo {
        name: "opc".into(),
        value_type: ValueType::Double,
        unit: String::new(),
        description: String::new(),
        source: SourceAddress::OpcUa {
            endpoint: "opc.tcp://x".into(),
            node_id: "ns=1;i=1".into(),
        },
    });
    let catalogue = Catalogue::new(infos);
    let hash = catalogue.hash();
    let state = Arc::new(State::new());
    state.apply_catalogue(catalogue);
    state.new_session(1);
    let samples: Vec<Sample> = tags
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let (value, quality) = t.value.clone()?;
            Some(Sample {
                tag: i as u32,
                value,
                quality,
                time: 1,
            })
        })
        .collect();
    let out = state.apply_samples(hash, &samples, 2, Stream::Snapshot);
    assert_eq!(out.applied as usize, samples.len(), "{out:?}");
    state
}

async fn start(
    state: Arc<State>,
    on_bad_quality: OnBadQuality,
) -> (SocketAddr, Arc<ServerCounters>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ModbusServer {
        bind: addr,
        on_bad_quality,
        unit_map: vec![("plc2".into(), 9)],
    };
    let counters = Arc::new(ServerCounters::default());
    let c = counters.clone();
    tokio::spawn(async move {
        modbus_server::serve_with_counters(listener, state, config, c)
            .await
            .unwrap();
    });
    (addr, counters)
}

async fn client(addr: SocketAddr, unit: u8) -> Context {
    tokio_modbus::client::tcp::connect_slave(addr, Slave(unit))
        .await
        .unwrap()
}

/// A client connecting from `from` (a loopback address of 127.0.0.0/8), as another host would.
async fn client_from(addr: SocketAddr, from: [u8; 4]) -> Context {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("binding a loopback source address");
    let stream = socket.connect(addr).await.unwrap();
    tokio_modbus::client::tcp::attach_slave(stream, Slave(1))
}

/// Whether the server closes a connection from `from` at once (refused).
async fn refused_from(addr: SocketAddr, from: [u8; 4]) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .is_ok_and(|r| r.unwrap_or(0) == 0)
}

async fn holding(ctx: &mut Context, a: u16, q: u16) -> Result<Vec<u16>, ExceptionCode> {
    ctx.read_holding_registers(a, q).await.unwrap()
}

#[tokio::test]
async fn reads_serve_the_source_registers() {
    let (addr, counters) = start(build_state(), OnBadQuality::Exception).await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(
        holding(&mut ctx, 0, 13).await.unwrap(),
        vec![
            0x1234, 0xFFFE, // u16, i16
            0x1122, 0x3344, // u32
            0x3FC0, 0x0000, // f32 1.5
            0x0004, 0x0003, 0x0002, 0x0001, // i64, little word order
            0x4142, 0x4344, 0x0000, // "ABCD" padded
        ]
    );
    // Part of a multi-register tag on its own.
    assert_eq!(holding(&mut ctx, 3, 1).await.unwrap(), vec![0x3344]);
    // Scaled: 12.3 / 0.1 = 123.
    assert_eq!(holding(&mut ctx, 20, 1).await.unwrap(), vec![123]);
    // Uncertain serves the value.
    assert_eq!(holding(&mut ctx, 32, 1).await.unwrap(), vec![9]);
    assert_eq!(
        ctx.read_input_registers(0, 3).await.unwrap().unwrap(),
        vec![0xFFFF, 0xFFFF, 0x3412]
    );
    assert_eq!(
        ctx.read_coils(0, 3).await.unwrap().unwrap(),
        vec![true, false, true]
    );
    assert_eq!(
        ctx.read_discrete_inputs(5, 2).await.unwrap().unwrap(),
        vec![true, false]
    );
    assert!(
        counters
            .reads_served
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 7
    );
}

#[tokio::test]
async fn link_down_still_serves_values() {
    let state = build_state();
    state.mark_link_down(10);
    let (addr, _) = start(state, OnBadQuality::Exception).await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 0, 2).await.unwrap(), vec![0x1234, 0xFFFE]);
}

#[tokio::test]
async fn uncovered_addresses_and_bad_quantities() {
    let (addr, _) = start(build_state(), OnBadQuality::Exception).await;
    let mut ctx = client(addr, 1).await;
    use ExceptionCode::*;
    assert_eq!(holding(&mut ctx, 13, 1).await, Err(IllegalDataAddress));
    // A read spanning a gap.
    assert_eq!(holding(&mut ctx, 10, 11).await, Err(IllegalDataAddress));
    assert_eq!(holding(&mut ctx, 65535, 2).await, Err(IllegalDataAddress));
    // The same address in another table.
    assert_eq!(
        ctx.read_input_registers(4, 1).await.unwrap(),
        Err(IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_discrete_inputs(0, 1).await.unwrap(),
        Err(IllegalDataAddress)
    );
    assert_eq!(holding(&mut ctx, 0, 0).await, Err(IllegalDataValue));
    assert_eq!(holding(&mut ctx, 0, 126).await, Err(IllegalDataValue));
    // Quantity is checked before address.
    assert_eq!(holding(&mut ctx, 5000, 126).await, Err(IllegalDataValue));
    assert_eq!(
        ctx.read_coils(0, 2001).await.unwrap(),
        Err(IllegalDataValue)
    );
    assert_eq!(ctx.read_coils(0, 0).await.unwrap(), Err(IllegalDataValue));
    // Still serving after all that.
    assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![0x1234]));
}

#[tokio::test]
async fn bad_quality_and_missing_values_by_policy() {
    use ExceptionCode::ServerDeviceFailure;
    let state = build_state();

    let (addr, _) = start(state.clone(), OnBadQuality::Exception).await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 30, 1).await, Err(ServerDeviceFailure));
    // One bad tag spoils a read that touches it.
    assert_eq!(holding(&mut ctx, 30, 3).await, Err(ServerDeviceFailure));
    assert_eq!(holding(&mut ctx, 31, 1).await, Err(ServerDeviceFailure));
    assert_eq!(
        ctx.read_coils(0, 4).await.unwrap(),
        Err(ServerDeviceFailure)
    );

    let (addr, _) = start(state.clone(), OnBadQuality::LastValue).await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 30, 1).await, Ok(vec![7]));
    assert_eq!(holding(&mut ctx, 31, 1).await, Err(ServerDeviceFailure));
    assert_eq!(
        ctx.read_coils(0, 4).await.unwrap(),
        Ok(vec![true, false, true, true])
    );

    let (addr, _) = start(state, OnBadQuality::Zero).await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 30, 3).await, Ok(vec![0, 0, 9]));
    assert_eq!(
        ctx.read_coils(0, 4).await.unwrap(),
        Ok(vec![true, false, true, false])
    );
}

#[tokio::test]
async fn unit_ids_follow_the_source_and_the_unit_map() {
    let (addr, _) = start(build_state(), OnBadQuality::Exception).await;
    let mut ctx = client(addr, 9).await;
    assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![42]));
    // plc2 moved away from unit 1; plc1 stays there.
    ctx.set_slave(Slave(1));
    assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![0x1234]));
    // A unit id nobody is served under.
    ctx.set_slave(Slave(2));
    assert_eq!(
        holding(&mut ctx, 0, 1).await,
        Err(ExceptionCode::GatewayPathUnavailable)
    );
    // Unit 9 has holding registers only.
    ctx.set_slave(Slave(9));
    assert_eq!(
        ctx.read_coils(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
}

#[tokio::test]
async fn every_write_is_refused_and_changes_nothing() {
    let state = build_state();
    let before: Vec<Option<(Value, Quality)>> = {
        let view = state.view();
        (0..20)
            .map(|i| view.value(i).map(|v| (v.value.clone(), v.stored_quality)))
            .collect()
    };
    let (addr, counters) = start(state.clone(), OnBadQuality::Exception).await;
    use ExceptionCode::IllegalFunction;
    for unit in [1u8, 9, 2, 0, 255] {
        let mut ctx = client(addr, unit).await;
        assert_eq!(
            ctx.write_single_register(0, 1).await.unwrap(),
            Err(IllegalFunction)
        );
        assert_eq!(
            ctx.write_multiple_registers(0, &[1, 2, 3]).await.unwrap(),
            Err(IllegalFunction)
        );
        assert_eq!(
            ctx.write_single_coil(0, false).await.unwrap(),
            Err(IllegalFunction)
        );
        assert_eq!(
            ctx.write_multiple_coils(0, &[false, true]).await.unwrap(),
            Err(IllegalFunction)
        );
        assert_eq!(
            ctx.masked_write_register(0, 0, 0xFFFF).await.unwrap(),
            Err(IllegalFunction)
        );
        assert_eq!(
            ctx.read_write_multiple_registers(0, 1, 0, &[5])
                .await
                .unwrap(),
            Err(IllegalFunction)
        );
    }
    let after: Vec<Option<(Value, Quality)>> = {
        let view = state.view();
        (0..20)
            .map(|i| view.value(i).map(|v| (v.value.clone(), v.stored_quality)))
            .collect()
    };
    assert_eq!(before, after);
    assert_eq!(
        counters
            .writes_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        30
    );
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![0x1234]));
    assert_eq!(
        ctx.read_coils(0, 3).await.unwrap(),
        Ok(vec![true, false, true])
    );
}

/// Sends `frame` on a fresh connection and returns what came back before the server closed
/// it or went quiet.
async fn raw(addr: SocketAddr, frame: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The peer may already have closed on an early byte; that is fine.
    let _ = s.write_all(frame).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

#[tokio::test]
async fn raw_frames_and_garbage() {
    let (addr, counters) = start(build_state(), OnBadQuality::Exception).await;

    // A well-formed write single register (06) gets exception 01, byte for byte.
    let write = [0x00, 0x07, 0, 0, 0, 6, 1, 0x06, 0, 0, 0, 1];
    assert_eq!(
        raw(addr, &write).await,
        vec![0x00, 0x07, 0, 0, 0, 3, 1, 0x86, 0x01]
    );
    // An unknown function code gets exception 01 too.
    let custom = [0x00, 0x08, 0, 0, 0, 3, 1, 0x41, 0x00];
    assert_eq!(
        raw(addr, &custom).await,
        vec![0x00, 0x08, 0, 0, 0, 3, 1, 0xC1, 0x01]
    );

    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xFF; 300],
        // Length 0.
        vec![0, 1, 0, 0, 0, 0, 1, 3],
        // Wrong protocol id.
        vec![0, 1, 0, 5, 0, 6, 1, 3, 0, 0, 0, 1],
        // Truncated read PDU.
        vec![0, 1, 0, 0, 0, 3, 1, 3, 0],
        // Trailing bytes after a read.
        vec![0, 1, 0, 0, 0, 8, 1, 3, 0, 0, 0, 1, 9, 9],
        // Write multiple coils with a byte count past the end.
        vec![0, 1, 0, 0, 0, 7, 1, 0x0F, 0, 0, 0, 8, 200],
        // Function code with the exception bit.
        vec![0, 1, 0, 0, 0, 2, 1, 0x83],
        // Read device identification with an unknown MEI type.
        vec![0, 1, 0, 0, 0, 5, 1, 0x2B, 0x99, 1, 0],
        // Header announcing a long PDU, then silence (the read times out on our side).
        vec![0, 1, 0, 0, 0xFF, 0xFF, 1, 3],
    ];
    for frame in &garbage {
        let answer = raw(addr, frame).await;
        // Nothing that could be mistaken for data: either nothing, or an exception.
        if answer.len() >= 8 {
            assert!(answer[7] & 0x80 != 0, "{frame:?} → {answer:?}");
        }
    }
    // Frames that tokio-modbus 0.17's decoder would panic on are refused cleanly (a refusal
    // is counted as a failed connection; a panic would not be).
    for frame in [
        // Write multiple coils: 65535 coils in 1 data byte (out-of-bounds index).
        vec![0, 1, 0, 0, 0, 8, 1, 0x0F, 0, 0, 0xFF, 0xFF, 1, 0],
        // Write multiple registers: 0x8000 registers (quantity × 2 overflows u16).
        vec![0, 1, 0, 0, 0, 7, 1, 0x10, 0, 0, 0x80, 0, 0],
        // Read/write multiple registers: write quantity 0x8000.
        vec![0, 1, 0, 0, 0, 11, 1, 0x17, 0, 0, 0, 1, 0, 0, 0x80, 0, 0],
    ] {
        let failed = || {
            counters
                .connections_failed
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // Let earlier connections finish closing, so the count below is this frame's.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = failed();
        assert_eq!(raw(addr, &frame).await, Vec::<u8>::new());
        // The count follows the close by a moment.
        for _ in 0..100 {
            if failed() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(failed(), before + 1, "{frame:?}");
    }

    // Random bytes.
    let mut seed = 0x1234_5678_u32;
    for _ in 0..50 {
        let len = (seed % 64) as usize;
        let frame: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&frame).await;
    }

    // The server still answers a proper client.
    let mut ctx = client(addr, 1).await;
    assert_eq!(holding(&mut ctx, 0, 2).await, Ok(vec![0x1234, 0xFFFE]));
    assert!(
        counters
            .connections_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5
    );
}

#[tokio::test]
async fn connections_are_bounded() {
    let (addr, counters) = start(build_state(), OnBadQuality::Exception).await;
    let mut held = Vec::new();
    for i in 0..modbus_server::MAX_CONNECTIONS {
        // Several hosts: one alone may hold only a quarter of the slots.
        let host = 1 + (i / modbus_server::MAX_CONNECTIONS_PER_PEER) as u8;
        let mut ctx = client_from(addr, [127, 0, 0, host]).await;
        // A round trip proves the connection holds a slot.
        assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![0x1234]));
        held.push(ctx);
    }
    // One more, from a host with no connection yet, is closed straight away.
    assert!(refused_from(addr, [127, 0, 0, 99]).await);
    assert_eq!(
        counters
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Freeing a slot lets a new client in.
    for mut ctx in held.drain(..1) {
        ctx.disconnect().await.ok();
    }
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let Ok(stream) = socket.connect(addr).await else {
            continue;
        };
        let mut ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(1));
        if let Ok(Ok(words)) = ctx.read_holding_registers(0, 1).await {
            assert_eq!(words, vec![0x1234]);
            served = true;
            break;
        }
    }
    assert!(served);
}

/// One host used to be able to take every slot, and with trickled bytes keep them; it holds
/// at most a quarter of them now, and other hosts are still served.
#[tokio::test]
async fn one_host_cannot_take_every_slot() {
    let (addr, counters) = start(build_state(), OnBadQuality::Exception).await;
    let mut held = Vec::new();
    for _ in 0..modbus_server::MAX_CONNECTIONS_PER_PEER {
        let mut ctx = client_from(addr, [127, 0, 0, 7]).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, Ok(vec![0x1234]));
        held.push(ctx);
    }
    assert!(refused_from(addr, [127, 0, 0, 7]).await);
    let mut other = client_from(addr, [127, 0, 0, 8]).await;
    assert_eq!(holding(&mut other, 0, 1).await, Ok(vec![0x1234]));
    assert_eq!(
        counters
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
