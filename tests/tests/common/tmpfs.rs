//! A tmpfs a test mounts (root), and a file that keeps it full: a disk-full fault.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Keeps a filesystem full: a file grown until the disk refuses, again every 200 ms (what the
/// daemon frees is taken back at once), until stopped; then the file is removed.
pub struct Filler {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    largest: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Filler {
    pub fn start(path: PathBuf) -> Filler {
        let stop = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicU64::new(0));
        let (stop2, largest2, p) = (stop.clone(), largest.clone(), path.clone());
        let thread = std::thread::spawn(move || {
            let mut refused = 0u64;
            let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
            else {
                return 0;
            };
            let big = vec![0xa5u8; 1 << 20];
            let mut written = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                for chunk in [1usize << 20, 64 << 10, 4 << 10, 512] {
                    loop {
                        match f.write(&big[..chunk]) {
                            Ok(0) => break,
                            Ok(n) => written += n as u64,
                            Err(_) => {
                                refused += 1;
                                break;
                            }
                        }
                    }
                }
                largest2.fetch_max(written, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
            refused
        });
        Filler {
            path,
            stop,
            largest,
            thread: Some(thread),
        }
    }

    /// Frees the space; returns (the file's largest size, writes the disk refused).
    pub fn free(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let refused = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        let _ = std::fs::remove_file(&self.path);
        (self.largest.load(Ordering::SeqCst), refused)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
