//! A plain UDP blast over loopback: the baseline that benchmarks report their figures against
//! (ratios measured in the same run against a plain UDP blast on the same machine).
//!
//! One sender thread does one `send` per datagram as fast as it can; one receiver thread does
//! one `recv` per datagram. Nothing else: no framing, no checksums, no async runtime. What the
//! receiver cannot keep up with the kernel drops, and that is reported as loss.
//!
//! [`blast_gso`] is the same with the system calls the gateway makes: runs of datagrams in one
//! `sendmsg` with UDP segmentation offload, read back with `recvmmsg` and generic receive
//! offload, through quinn-udp as the daemons do. A gateway that batches would otherwise be
//! compared with a baseline that pays the stack's cost once per datagram, and its ratio would
//! say more about batching than about the gateway.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the blast measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlastResult {
    pub payload: usize,
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Payload bytes received.
    pub received_bytes: u64,
    /// From the first datagram received to the last.
    pub receive_time: Duration,
    /// How long the sender sent.
    pub send_time: Duration,
    /// CPU time (user + system) of the sender thread and of the receiver thread.
    pub send_cpu: Duration,
    pub recv_cpu: Duration,
    /// Datagrams handed to the kernel per send call: 1, or the GSO run length.
    pub per_send: usize,
}

impl BlastResult {
    pub fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    /// Datagrams received per second.
    pub fn datagrams_per_sec(&self) -> f64 {
        self.received as f64 / self.receive_time.as_secs_f64().max(1e-9)
    }

    /// Payload gigabits received per second.
    pub fn gbit_per_sec(&self) -> f64 {
        self.received_bytes as f64 * 8.0 / self.receive_time.as_secs_f64().max(1e-9) / 1e9
    }

    /// CPU seconds of the sender thread per GiB of payload sent.
    pub fn send_cpu_per_gib(&self) -> f64 {
        self.send_cpu.as_secs_f64() / gib(self.sent as f64 * self.payload as f64).max(1e-12)
    }

    /// CPU seconds of the receiver thread per GiB of payload received.
    pub fn recv_cpu_per_gib(&self) -> f64 {
        self.recv_cpu.as_secs_f64() / gib(self.received_bytes as f64).max(1e-12)
    }

    /// Share of sent datagrams that never arrived, 0.0..=1.0.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - self.received as f64 / self.sent as f64
        }
    }
}

fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

/// Blasts `payload`-byte datagrams over 127.0.0.1 for `duration`. `recv_buffer` is the receive
/// buffer asked of the kernel (gateway-rx asks for its `recv_buffer_bytes`, 8 MiB by default;
/// the kernel caps it at `net.core.rmem_max`).
pub fn blast(
    payload: usize,
    duration: Duration,
    recv_buffer: usize,
) -> std::io::Result<BlastResult> {
    let rx = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = rx.set_recv_buffer_size(recv_buffer);
    rx.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let target = rx.local_addr()?;

    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(target)?;

    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("blast-rx".into())
            .spawn(move || {
                let cpu0 = thread_cpu();
                let mut buf = vec![0u8; 65536];
                let mut received = 0u64;
                let mut bytes = 0u64;
                let mut first: Option<Instant> = None;
                let mut last = Instant::now();
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) => {
                            let now = Instant::now();
                            first.get_or_insert(now);
                            last = now;
                            received += 1;
                            bytes += n as u64;
                        }
                        // Timed out: done once the sender has stopped and the queue is empty.
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                let span = first.map_or(Duration::ZERO, |f| last.duration_since(f));
                (received, bytes, span, thread_cpu().saturating_sub(cpu0))
            })?
    };

    let sender = std::thread::Builder::new()
        .name("blast-tx".into())
        .spawn(move || {
            let cpu0 = thread_cpu();
            let buf: Vec<u8> = (0..payload).map(|i| i as u8).collect();
            let start = Instant::now();
            let mut sent = 0u64;
            let mut errors = 0u64;
            loop {
                // Check the clock every 256 datagrams, not on each.
                for _ in 0..256 {
                    match tx.send(&buf) {
                        Ok(_) => sent += 1,
                        Err(_) => errors += 1,
                    }
                }
                let elapsed = start.elapsed();
                if elapsed >= duration {
                    return (sent, errors, elapsed, thread_cpu().saturating_sub(cpu0));
                }
            }
        })?;

    let (sent, send_errors, send_time, send_cpu) = sender
        .join()
        .map_err(|_| std::io::Error::other("blast sender panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let (received, received_bytes, receive_time, recv_cpu) = receiver
        .join()
        .map_err(|_| std::io::Error::other("blast receiver panicked"))?;
    Ok(BlastResult {
        payload,
        sent,
        send_errors,
        received,
        received_bytes,
        receive_time,
        send_time,
        send_cpu,
        recv_cpu,
        per_send: 1,
    })
}

/// Blasts `payload`-byte datagrams over 127.0.0.1 for `duration` in GSO runs (as many as fit
/// one IPv4 packet's payload, or as the kernel allows), received with `recvmmsg` and GRO.
/// Where the kernel has no GSO, runs are one datagram, and the result says so in `per_send`.
pub fn blast_gso(
    payload: usize,
    duration: Duration,
    recv_buffer: usize,
) -> std::io::Result<BlastResult> {
    use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;
    const SLOT: usize = 65_536;
    // The UDP payload limit of one IPv4 packet, which bounds a GSO send.
    const MAX_RUN_BYTES: usize = 65_507;

    let rx = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = rx.set_recv_buffer_size(recv_buffer);
    rx.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let rx_state = UdpSocketState::new((&rx).into())?;
    let target = rx.local_addr()?;

    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(target)?;
    let tx_state = UdpSocketState::new((&tx).into())?;
    let per_send = (MAX_RUN_BYTES / payload.max(1))
        .min(tx_state.max_gso_segments())
        .max(1);

    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("blast-rx".into())
            .spawn(move || {
                let cpu0 = thread_cpu();
                let mut buf = vec![0u8; BATCH_SIZE * SLOT];
                let mut meta = [RecvMeta::default(); BATCH_SIZE];
                let mut received = 0u64;
                let mut bytes = 0u64;
                let mut first: Option<Instant> = None;
                let mut last = Instant::now();
                loop {
                    let mut slots = buf.chunks_mut(SLOT);
                    let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
                        std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
                    match rx_state.recv((&rx).into(), &mut bufs, &mut meta) {
                        Ok(n) => {
                            let now = Instant::now();
                            first.get_or_insert(now);
                            last = now;
                            for m in &meta[..n] {
                                let stride = if m.stride == 0 { m.len } else { m.stride };
                                received += m.len.div_ceil(stride.max(1)).max(1) as u64;
                                bytes += m.len as u64;
                            }
                        }
                        // Timed out: done once the sender has stopped and the queue is empty.
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                let span = first.map_or(Duration::ZERO, |f| last.duration_since(f));
                (received, bytes, span, thread_cpu().saturating_sub(cpu0))
            })?
    };

    let sender = std::thread::Builder::new()
        .name("blast-tx".into())
        .spawn(move || {
            let cpu0 = thread_cpu();
            let buf: Vec<u8> = (0..payload * per_send).map(|i| i as u8).collect();
            let transmit = Transmit {
                destination: target,
                ecn: None,
                contents: &buf,
                segment_size: (per_send > 1).then_some(payload),
                src_ip: None,
            };
            let start = Instant::now();
            let mut sent = 0u64;
            let mut errors = 0u64;
            loop {
                for _ in 0..16 {
                    match tx_state.try_send((&tx).into(), &transmit) {
                        Ok(()) => sent += per_send as u64,
                        Err(_) => errors += per_send as u64,
                    }
                }
                let elapsed = start.elapsed();
                if elapsed >= duration {
                    return (sent, errors, elapsed, thread_cpu().saturating_sub(cpu0));
                }
            }
        })?;

    let (sent, send_errors, send_time, send_cpu) = sender
        .join()
        .map_err(|_| std::io::Error::other("blast sender panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let (received, received_bytes, receive_time, recv_cpu) = receiver
        .join()
        .map_err(|_| std::io::Error::other("blast receiver panicked"))?;
    Ok(BlastResult {
        payload,
        sent,
        send_errors,
        received,
        received_bytes,
        receive_time,
        send_time,
        send_cpu,
        recv_cpu,
        per_send,
    })
}

/// CPU time (user + system) of the calling thread so far, from `/proc/thread-self/stat` (in
/// clock ticks of 10 ms); zero where that file does not exist.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; 100 ticks a second on mainstream Linux.
    Duration::from_millis((t(11) + t(12)) * 10)
}
