//! Operator backfill requests, made on the OT box and nowhere else.
//!
//! `gateway-tx backfill --from .. --to .. [--tag ..] [--source ..]` writes a request file into
//! `<history dir>/backfill/` (written under a temporary name, then renamed, so the daemon never
//! reads half a request). The running daemon looks there about once a second, takes each
//! request (deleting the file), and re-sends the matching samples from its buffer within the
//! carousel's share of the link, before the carousel; the part of the range older than the
//! buffer is read from the sources' own historians where they have one (see `historian.rs`
//! and [`Source`]). It reports progress in
//! `<id>.status` beside it, which the command line shows. Nothing of this touches the link side:
//! the daemon has no input from there.
//!
//! Bounds: at most [`MAX_PENDING`] requests are queued (more are rejected, with a status that
//! says so); request files over [`MAX_REQUEST_BYTES`] are rejected; at most [`MAX_STATUS_FILES`]
//! status files are kept, the oldest deleted first.

use std::path::{Path, PathBuf};

use protocol::model::UnixNanos;
use serde::{Deserialize, Serialize};

use super::historian::HistorianPart;

pub const MAX_PENDING: usize = 16;
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
pub const MAX_STATUS_FILES: usize = 64;

/// Where a backfill is served from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The buffer re-sends what it holds; the part of the range older than the buffer's
    /// oldest segment comes from the source historians (historized OPC UA tags).
    #[default]
    Auto,
    /// The transmitter's buffer only.
    Buffer,
    /// The source historians only, for the whole range (e.g. values the plant's historian
    /// holds that the gateway never saw, or a buffer that was wiped).
    Historian,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    pub id: String,
    /// Source time range, inclusive, Unix nanoseconds.
    pub from: UnixNanos,
    pub to: UnixNanos,
    /// Tag names; empty means every tag.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub source: Source,
    pub requested_at: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillStatus {
    pub id: String,
    /// `queued`, `running`, `done`, `failed` (a historian read failed; what the buffer holds
    /// was still re-sent) or `rejected`.
    pub state: String,
    pub from: UnixNanos,
    pub to: UnixNanos,
    pub tags: Vec<String>,
    /// Records read from the buffer so far.
    pub scanned: u64,
    /// Records in the time range and tag list, re-sent.
    pub sent: u64,
    /// The oldest sequence number the buffer held when the request was taken: samples older
    /// than the buffer cannot be re-sent.
    pub oldest_seq: u64,
    /// Reads from the source historians, one per source.
    #[serde(default)]
    pub historian: Vec<HistorianPart>,
    pub message: String,
    pub updated_at: UnixNanos,
}

impl BackfillStatus {
    /// Whether the daemon is finished with the request.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "done" | "failed" | "rejected")
    }
}

pub fn request_dir(history_dir: &Path) -> PathBuf {
    history_dir.join("backfill")
}

/// Writes a request for the daemon using `history_dir`; returns its id.
pub fn submit(
    history_dir: &Path,
    from: UnixNanos,
    to: UnixNanos,
    tags: Vec<String>,
    source: Source,
) -> std::io::Result<String> {
    let dir = request_dir(history_dir);
    std::fs::create_dir_all(&dir)?;
    let now = crate::unix_now();
    let id = format!("{now}-{}", std::process::id());
    let req = BackfillRequest {
        id: id.clone(),
        from,
        to,
        tags,
        source,
        requested_at: now,
    };
    let text = serde_json::to_vec_pretty(&req).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(format!("{id}.request")))?;
    Ok(id)
}

/// The daemon's latest status for a request, if it wrote one.
pub fn read_status(history_dir: &Path, id: &str) -> Option<BackfillStatus> {
    let path = request_dir(history_dir).join(format!("{id}.status"));
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A request file the daemon could not use: its id (from the file name) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub id: String,
    pub why: String,
}

/// Takes (reads and deletes) up to `max` request files, oldest name first.
pub(crate) fn take_requests(
    history_dir: &Path,
    max: usize,
) -> Vec<Result<BackfillRequest, BadRequest>> {
    let dir = request_dir(history_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "request"))
        .collect();
    paths.sort();
    paths.truncate(max);
    paths
        .into_iter()
        .map(|path| {
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = read_request(&path, &id);
            let _ = std::fs::remove_file(&path);
            result
        })
        .collect()
}

fn read_request(path: &Path, id: &str) -> Result<BackfillRequest, BadRequest> {
    let bad = |why: String| BadRequest {
        id: id.to_owned(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "request file of {len} bytes is over {MAX_REQUEST_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut req: BackfillRequest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a backfill request: {e}")))?;
    req.id = id.to_owned();
    if req.from > req.to {
        return Err(bad("`from` is after `to`".into()));
    }
    Ok(req)
}

/// Writes a status file (atomically) and keeps at most [`MAX_STATUS_FILES`].
pub(crate) fn write_status(history_dir: &Path, status: &BackfillStatus) {
    let dir = request_dir(history_dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let Ok(text) = serde_json::to_vec_pretty(status) else {
        return;
    };
    let tmp = dir.join(format!(".{}.status.tmp", status.id));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(format!("{}.status", status.id)));
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut statuses: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "status"))
        .collect();
    if statuses.len() > MAX_STATUS_FILES {
        // Ids start with the request time, so name order is age order.
        statuses.sort();
        for p in &statuses[..statuses.len() - MAX_STATUS_FILES] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_take_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let id = submit(dir.path(), 10, 20, vec!["a/b".into()], Source::Historian).unwrap();
        std::fs::write(request_dir(dir.path()).join("zz.request"), b"{not json").unwrap();
        let taken = take_requests(dir.path(), 10);
        assert_eq!(taken.len(), 2);
        let req = taken[0].as_ref().unwrap();
        assert_eq!(
            (req.from, req.to, req.tags.clone(), req.source),
            (10, 20, vec!["a/b".into()], Source::Historian)
        );
        assert_eq!(req.id, id);
        assert!(
            taken[1]
                .as_ref()
                .unwrap_err()
                .why
                .contains("not a backfill request")
        );
        assert!(
            take_requests(dir.path(), 10).is_empty(),
            "taken means deleted"
        );
        let status = BackfillStatus {
            id: id.clone(),
            state: "done".into(),
            from: 10,
            to: 20,
            tags: vec![],
            scanned: 5,
            sent: 3,
            oldest_seq: 0,
            historian: Vec::new(),
            message: String::new(),
            updated_at: 1,
        };
        write_status(dir.path(), &status);
        assert_eq!(read_status(dir.path(), &id), Some(status));
    }

    #[test]
    fn status_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(MAX_STATUS_FILES + 10) {
            write_status(
                dir.path(),
                &BackfillStatus {
                    id: format!("{i:05}"),
                    state: "done".into(),
                    from: 0,
                    to: 0,
                    tags: vec![],
                    scanned: 0,
                    sent: 0,
                    oldest_seq: 0,
                    historian: Vec::new(),
                    message: String::new(),
                    updated_at: 0,
                },
            );
        }
        let n = std::fs::read_dir(request_dir(dir.path())).unwrap().count();
        assert_eq!(n, MAX_STATUS_FILES);
        assert!(read_status(dir.path(), "00000").is_none());
    }
}
