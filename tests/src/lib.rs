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

/// A pre-shared link key (64 hex characters, mode 0600) in a temporary directory of its own,
/// made as `gateway-tx keygen` makes one; the demo and the tests authenticate their links
/// with it. The daemons' link state files go beside it (see [`KeyFile::link_lines`]), so that
/// no two chains share what a daemon remembers of sessions.
pub struct KeyFile {
    dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

impl KeyFile {
    pub fn random() -> KeyFile {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .expect("reading /dev/urandom");
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("link.key");
        std::fs::write(&path, config::keyfile::encode(&key)).expect("writing the key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the key file");
        KeyFile { dir, path }
    }

    /// The `[link]` lines that use this key, with `state` (a file name) as the link state
    /// file beside it.
    pub fn link_lines(&self, state: &str) -> String {
        format!(
            "key_file = \"{}\"\nstate_file = \"{}\"\n",
            self.path.display(),
            self.dir.path().join(state).display()
        )
    }
}
