//! The link socket, receive side: datagrams are read in batches.
//!
//! One `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`] buffers, and with UDP generic receive
//! offload (GRO, `UDP_GRO`) each buffer may hold a run of datagrams of one length that the
//! kernel kept together (a GSO send on loopback arrives that way whole; a NIC's GRO merges the
//! datagrams of one flow). quinn-udp does the system calls and turns GRO on where the kernel
//! has it; without it each buffer holds one datagram and batching is `recvmmsg`'s alone.
//!
//! Nothing is ever written to this socket: see `crate::link`.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Instant;

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes per receive buffer: the largest UDP datagram, or a GRO run of datagrams, fits.
pub const SLOT_BYTES: usize = 65_536;

/// A receive-only UDP socket read in batches.
pub struct BatchReceiver {
    socket: UdpSocket,
    state: UdpSocketState,
    /// `BATCH_SIZE` buffers of `SLOT_BYTES`, back to back.
    buf: Vec<u8>,
    meta: [RecvMeta; BATCH_SIZE],
}

impl BatchReceiver {
    /// Takes over `socket` (bound, nonblocking).
    pub fn new(socket: UdpSocket) -> io::Result<BatchReceiver> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(BatchReceiver {
            socket,
            state,
            buf: vec![0; BATCH_SIZE * SLOT_BYTES],
            meta: [RecvMeta::default(); BATCH_SIZE],
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether the kernel hands over runs of datagrams (GRO).
    pub fn gro(&self) -> bool {
        self.state.gro_segments() > 1
    }

    /// Waits for datagrams, then reads one batch and hands each datagram to `f`, with the time
    /// the batch was read. Returns how many datagrams were read. Cancel-safe: datagrams are
    /// handed over in the same poll in which they are read.
    pub async fn recv(&mut self, mut f: impl FnMut(&[u8], Instant)) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            match self.try_recv(&mut f)? {
                0 => continue,
                n => return Ok(n),
            }
        }
    }

    /// Reads one batch if datagrams wait, without waiting; 0 when none did, which the kernel
    /// said: the read is always made (the socket is nonblocking), not skipped on tokio's
    /// readiness, which lags the kernel until the reactor next polls. Right after a stall that
    /// lag would report an empty socket while datagrams wait, and the caller runs the decoder's
    /// timers only on an empty socket.
    pub fn try_recv(&mut self, mut f: impl FnMut(&[u8], Instant)) -> io::Result<usize> {
        let BatchReceiver {
            socket,
            state,
            buf,
            meta,
        } = self;
        let mut slots = buf.chunks_mut(SLOT_BYTES);
        let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let filled = loop {
            match state.recv((&*socket).into(), &mut bufs, meta) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Tell tokio, so that `readable` waits for the next datagram. It clears its
                    // readiness only if no newer event came in since it set it: nothing is
                    // missed.
                    let _ = socket.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                    return Ok(0);
                }
                // A signal is not the kernel saying the socket is empty: read again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let now = Instant::now();
        let mut datagrams = 0;
        for (i, m) in meta.iter().enumerate().take(filled) {
            let at = i * SLOT_BYTES;
            let bytes = &buf[at..at + m.len.min(SLOT_BYTES)];
            let stride = if m.stride == 0 { bytes.len() } else { m.stride };
            if bytes.is_empty() {
                // An empty datagram: still one, and the decoder counts it as malformed.
                f(bytes, now);
                datagrams += 1;
                continue;
            }
            for d in bytes.chunks(stride) {
                f(d, now);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams sent one by one, of varying lengths, arrive in order, each whole; and a GSO
    /// run (one `sendmsg` of equal segments) arrives as its datagrams.
    #[tokio::test]
    async fn reads_every_datagram_in_order() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rx = BatchReceiver::new(socket).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = Vec::new();
        for i in 0..100usize {
            let d: Vec<u8> = (0..(1 + i * 13 % 1472)).map(|j| (i + j) as u8).collect();
            tx.send_to(&d, to).unwrap();
            sent.push(d);
        }
        let state = UdpSocketState::new((&tx).into()).unwrap();
        let segment = 1000;
        let run: Vec<u8> = (0..segment * 10 + 300).map(|j| (j / 7) as u8).collect();
        state
            .try_send(
                (&tx).into(),
                &quinn_udp::Transmit {
                    destination: to,
                    ecn: None,
                    contents: &run,
                    segment_size: Some(segment),
                    src_ip: None,
                },
            )
            .unwrap();
        sent.extend(run.chunks(segment).map(<[u8]>::to_vec));
        let mut got = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < sent.len() && Instant::now() < deadline {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                rx.recv(|d, _| got.push(d.to_vec())),
            )
            .await
            .unwrap()
            .unwrap();
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "datagrams differ or are out of order");
        assert_eq!(rx.try_recv(|_, _| panic!("nothing more")).unwrap(), 0);
    }
}
