//! `[history]`: the history stream's on-disk buffer and carousel.

use std::path::PathBuf;
use std::time::Duration;

use super::limits::*;
use crate::common;
use crate::walk::{Ctx, Req, Tbl};

/// The history stream: every accepted sample is appended to a bounded on-disk buffer and sent
/// with its own sequence number; recent windows are re-sent by the carousel.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Directory of the buffer's segment files (created if missing). A relative path is
    /// relative to the config file's directory.
    pub dir: PathBuf,
    /// The buffer's size limit; the oldest segments are deleted beyond it.
    pub max_bytes: u64,
    /// Segments older than this are deleted.
    pub max_age: Duration,
    /// Share of the link rate the carousel (and operator backfills) may use, 0 < share <= 0.9.
    pub carousel_share: f64,
    /// The carousel re-sends the samples appended within this long, oldest first, over and over.
    pub carousel_window: Duration,
}

const HISTORY_KEYS: &[&str] = &[
    "dir",
    "max_bytes",
    "max_age_s",
    "carousel_share",
    "carousel_window_s",
];

pub(super) fn parse_history(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<History> {
    t.check_keys(ctx, HISTORY_KEYS);
    let dir = match t.string(ctx, "dir", Req::Optional) {
        None if t.has("dir") => None,
        None => Some(PathBuf::from(HISTORY_DIR_DEFAULT)),
        Some(d) => common::dir_path(ctx, &d, "the history buffer's directory"),
    };
    let max_bytes = common::int_or(
        ctx,
        t,
        "max_bytes",
        HISTORY_MAX_BYTES_MIN as i64..=HISTORY_MAX_BYTES_MAX as i64,
        "bytes",
        HISTORY_MAX_BYTES_DEFAULT as i64,
    );
    let max_age = common::duration_s(
        ctx,
        t,
        "max_age_s",
        HISTORY_MAX_AGE_S_MIN as i64..=HISTORY_MAX_AGE_S_MAX as i64,
        HISTORY_MAX_AGE_S_DEFAULT,
    );
    let share = match t.float(ctx, "carousel_share", Req::Optional) {
        None if t.has("carousel_share") => None,
        None => Some(CAROUSEL_SHARE_DEFAULT),
        Some(s) if s.val.is_finite() && s.val > 0.0 && s.val <= CAROUSEL_SHARE_MAX => Some(s.val),
        Some(s) => {
            ctx.error(
                s.span.start,
                &s.key,
                format!(
                    "{} is not a usable share of the link rate; expected a number greater than 0 \
                     and at most {CAROUSEL_SHARE_MAX}, like 0.1 (the carousel is how the \
                     receiver heals history lost on the link, so it cannot be turned off)",
                    s.val
                ),
            );
            None
        }
    };
    let window = common::duration_s(
        ctx,
        t,
        "carousel_window_s",
        1..=CAROUSEL_WINDOW_S_MAX as i64,
        CAROUSEL_WINDOW_S_DEFAULT,
    );
    let (max_age, window) = (max_age?, window?);
    if window > max_age {
        ctx.error(
            t.offset_of("carousel_window_s"),
            t.key("carousel_window_s"),
            format!(
                "the carousel window ({} s) is longer than the buffer keeps history \
                 (max_age_s = {} s); use a window of at most max_age_s",
                window.as_secs(),
                max_age.as_secs()
            ),
        );
        return None;
    }
    Some(History {
        dir: dir?,
        max_bytes: max_bytes? as u64,
        max_age,
        carousel_share: share?,
        carousel_window: window,
    })
}
