//! The storage budget of clips and snapshots: the oldest files go first, until the
//! files together fit `max_bytes`, the filesystem has `min_free` free, and none is
//! older than `max_age`. [`plan`] decides (pure: files, free space and time in; the
//! files to remove out); [`enforce`] looks at the directories, asks the filesystem
//! (statvfs) and removes, counting each removal.
//!
//! Files being written are never removed: a clip in progress is left to finish.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::telemetry::metrics::metrics;

/// What the files may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// 0: no cap.
    pub max_bytes: u64,
    /// 0: none kept.
    pub min_free: u64,
    pub max_age: Option<Duration>,
}

/// One file under the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub modified: SystemTime,
    pub bytes: u64,
    /// `clip` or `snapshot`, for the metric.
    pub kind: &'static str,
}

/// Why a file is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    MaxAge,
    MaxBytes,
    MinFree,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::MaxAge => "max_age",
            Why::MaxBytes => "max_bytes",
            Why::MinFree => "min_free",
        }
    }
}

/// The files to remove, oldest first, and why. `free` is the filesystem's free space
/// (`None`: unknown, `min_free` not applied).
pub fn plan(
    mut files: Vec<Entry>,
    budget: Budget,
    free: Option<u64>,
    now: SystemTime,
) -> Vec<(Entry, Why)> {
    files.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut short = free.map_or(0, |f| budget.min_free.saturating_sub(f));
    let mut out = Vec::new();
    for f in files {
        let old = budget
            .max_age
            .is_some_and(|a| now.duration_since(f.modified).unwrap_or_default() > a);
        let why = if old {
            Why::MaxAge
        } else if budget.max_bytes > 0 && total > budget.max_bytes {
            Why::MaxBytes
        } else if short > 0 {
            Why::MinFree
        } else {
            // Sorted oldest first: nothing newer is older than max_age either.
            break;
        };
        total -= f.bytes;
        short = short.saturating_sub(f.bytes);
        out.push((f, why));
    }
    out
}

/// Free space on the filesystem holding `dir` for an unprivileged writer.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The regular files directly in `dir` (none when it is missing), as `kind`, less
/// those named in `skip`.
fn scan(dir: &Path, kind: &'static str, skip: &[String]) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| !skip.iter().any(|s| e.file_name().to_str() == Some(s)))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| Entry {
                path: e.path(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                bytes: m.len(),
                kind,
            })
        })
        .collect()
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub files: usize,
    pub bytes: u64,
}

/// One pass over the clips directory (`.mp4` files, less `writing`) and the snapshot
/// directory: removes what [`plan`] says, counts each removal by kind and reason.
pub fn enforce(
    clips: &Path,
    snapshots: Option<&Path>,
    writing: &[String],
    budget: Budget,
) -> Removed {
    let mut files: Vec<Entry> = scan(clips, "clip", writing)
        .into_iter()
        .filter(|e| e.path.extension().is_some_and(|x| x == "mp4"))
        .collect();
    if let Some(s) = snapshots.filter(|s| *s != clips) {
        files.extend(scan(s, "snapshot", &[]));
    }
    let mut removed = Removed::default();
    let free = free_space(clips).or_else(|| snapshots.and_then(free_space));
    for (f, why) in plan(files, budget, free, SystemTime::now()) {
        match std::fs::remove_file(&f.path) {
            Ok(()) => {
                removed.files += 1;
                removed.bytes += f.bytes;
                metrics()
                    .storage_removed
                    .get_or_create(&vec![
                        ("kind", f.kind.to_string()),
                        ("reason", why.as_str().to_string()),
                    ])
                    .inc();
                tracing::info!(file = %f.path.display(), kind = f.kind, reason = why.as_str(), bytes = f.bytes, "Storage budget: file removed.");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                if crate::telemetry::metrics::should_log("storage-remove", Duration::from_secs(300))
                {
                    tracing::warn!(file = %f.path.display(), error = %e, "Storage budget: cannot remove a file.");
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, age_s: u64, bytes: u64, now: SystemTime) -> Entry {
        Entry {
            path: PathBuf::from(name),
            modified: now - Duration::from_secs(age_s),
            bytes,
            kind: "clip",
        }
    }

    fn names(p: &[(Entry, Why)]) -> Vec<(&str, Why)> {
        p.iter()
            .map(|(e, w)| (e.path.to_str().unwrap(), *w))
            .collect()
    }

    #[test]
    fn the_oldest_files_go_first_until_the_budget_holds() {
        let now = SystemTime::now();
        let files = vec![
            file("c", 10, 100, now),
            file("a", 30, 100, now),
            file("b", 20, 100, now),
        ];
        let b = |max_bytes, min_free, max_age| Budget {
            max_bytes,
            min_free,
            max_age,
        };
        type Row = (Budget, Option<u64>, Vec<(&'static str, Why)>);
        let rows: Vec<Row> = vec![
            (b(0, 0, None), Some(0), vec![]),
            (b(300, 0, None), None, vec![]),
            (b(250, 0, None), None, vec![("a", Why::MaxBytes)]),
            (
                b(100, 0, None),
                None,
                vec![("a", Why::MaxBytes), ("b", Why::MaxBytes)],
            ),
            (
                b(0, 150, None),
                Some(0),
                vec![("a", Why::MinFree), ("b", Why::MinFree)],
            ),
            (b(0, 150, None), Some(100), vec![("a", Why::MinFree)]),
            (b(0, 150, None), None, vec![]),
            (
                b(0, 0, Some(Duration::from_secs(15))),
                None,
                vec![("a", Why::MaxAge), ("b", Why::MaxAge)],
            ),
            (
                b(150, 0, Some(Duration::from_secs(25))),
                None,
                vec![("a", Why::MaxAge), ("b", Why::MaxBytes)],
            ),
        ];
        for (budget, free, want) in rows {
            let got = plan(files.clone(), budget, free, now);
            assert_eq!(names(&got), want, "{budget:?} free {free:?}");
        }
    }

    #[test]
    fn enforce_removes_old_clips_and_snapshots_and_spares_the_clip_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = tempfile::tempdir().unwrap();
        let write = |d: &Path, name: &str, age_s: u64| {
            let p = d.join(name);
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let t = SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        write(dir.path(), "old.mp4", 400);
        write(dir.path(), "writing.mp4", 500);
        write(dir.path(), "new.mp4", 10);
        write(dir.path(), "notes.txt", 900);
        write(snaps.path(), "s1.jpg", 300);
        let budget = Budget {
            max_bytes: 0,
            min_free: 0,
            max_age: Some(Duration::from_secs(120)),
        };
        let r = enforce(
            dir.path(),
            Some(snaps.path()),
            &["writing.mp4".into()],
            budget,
        );
        assert_eq!(
            r,
            Removed {
                files: 2,
                bytes: 2000
            }
        );
        assert!(!dir.path().join("old.mp4").exists());
        assert!(!snaps.path().join("s1.jpg").exists());
        for kept in ["writing.mp4", "new.mp4", "notes.txt"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).is_some_and(|f| f > 0));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }
}
