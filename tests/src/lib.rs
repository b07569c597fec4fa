//! Shared pieces of the end-to-end tests and the demo: the simulated PLC, the impairment relay
//! and the UDP blast that benchmarks measure against.
pub mod blast;
pub mod opcua_sim;
pub mod plc_sim;
pub mod relay;

/// A UDP port on 127.0.0.1 that was free a moment ago. The receiver's config must name its
/// port (the transmitter has to know it), so tests and the demo pick one this way.
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for simulated servers that must keep
/// their port across a restart).
pub fn free_tcp_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
