//! The disk spool in front of the uplink: every event is committed here before it
//! counts as sent, and leaves only when the uplink broker confirmed it. One redb file
//! (`spool.redb`), keys in append order, so a replay after a reconnect or a restart
//! sends what is left in the order it came (and so in order per camera).
//!
//! Fsync policy: an append is one write transaction committed with
//! [`Durability::Immediate`] (redb's copy-on-write commit, fsynced before `append`
//! returns), so a SIGKILL or a power cut after `append` returned keeps the event, and
//! one during it keeps or loses it whole. Removals after a broker confirmation are
//! committed without their own fsync ([`Durability::None`]); the next append's fsync
//! makes them durable. A removal lost to a power cut only sends the event again, under
//! the same `message_id`: at least once, never lost.
//!
//! Bounds: `max_bytes` (the records' own bytes, not redb's pages and free space: the
//! file can be a few pages larger) and `max_age`. The oldest records go first, each
//! counted by the caller through [`Appended::evicted`] and [`Spool::evict_expired`].
//!
//! A file redb cannot open, or holding a record this module cannot read, is moved
//! aside (`spool.redb.corrupt-<unix seconds>`) and a fresh spool is started: the agent
//! reports it and runs on, it never refuses to start over its spool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::sync::lock;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Random per spool file: with the sequence number it makes message ids unique across
/// devices and across a spool that was moved aside and started again.
const EPOCH: &str = "epoch";
/// The sequence number the next append takes, kept with each append: a spool that was
/// emptied (every event confirmed) and opened again must not hand out the ids it
/// already sent, or a consumer would drop the new events as resends.
const NEXT: &str = "next";
/// The record layout version (first byte of each value).
const RECORD_V1: u8 = 1;
/// The spool's file name inside `uplink.spool.dir`.
pub const FILE_NAME: &str = "spool.redb";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {why}")]
    Store { path: PathBuf, why: String },
    /// An I/O error (a full disk): redb takes no more operations on that file until it
    /// is opened again, which the spool does on its next use (at most once a second).
    #[error("spool {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("spool {path}: another process has it open (two agents with one spool directory?)")]
    InUse { path: PathBuf },
    #[error(
        "spool {path}: a record of {size} bytes is larger than uplink.spool.max_bytes ({max})"
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("spool directory {dir}: {why}")]
    Dir { dir: PathBuf, why: String },
}

/// The spool's bounds (`uplink.spool.max_bytes`, `uplink.spool.max_age`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age_ms: u64,
}

/// One spooled event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the spool (append order).
    pub seq: u64,
    /// When it was appended, ms since the Unix epoch.
    pub created_ms: u64,
    /// The camera it is about; empty for device-level messages.
    pub camera: String,
    /// Its result kind (`motion`, `events/<class>`, `snapshots/<id>`, ...) or, for
    /// device-level messages, `device/<name>`.
    pub kind: String,
    pub message_id: String,
    pub payload: Bytes,
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub message_id: String,
    /// Oldest records evicted to make room for it.
    pub evicted: u64,
}

/// How full the spool is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub messages: u64,
    pub bytes: u64,
    /// Append time of the oldest record, ms since the Unix epoch.
    pub oldest_ms: Option<u64>,
}

/// How the spool was opened: fresh, as it was, or after moving a corrupt file aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    Existing,
    Created,
    /// The old file is now at `to`; `why` is what was wrong with it.
    MovedAside {
        to: PathBuf,
        why: String,
    },
}

struct Inner {
    /// None after an I/O error, until reopened (see [`SpoolError::Io`]).
    db: Option<Database>,
    /// When the last I/O error or failed reopen happened.
    failed_at: Option<std::time::Instant>,
    epoch: u64,
    next: u64,
    depth: Depth,
}

/// The spool: shared by the publishing side (append) and the forwarder (read, remove)
/// under one short lock.
pub struct Spool {
    path: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> SpoolError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::DatabaseAlreadyOpen => SpoolError::InUse {
            path: path.to_path_buf(),
        },
        // redb reports a file that is not a database (bad magic number, cut short) as
        // an I/O error of these kinds: that is corruption, not the disk.
        redb::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            SpoolError::Store {
                path: path.to_path_buf(),
                why: e.to_string(),
            }
        }
        e @ (redb::Error::Io(_) | redb::Error::PreviousIo) => SpoolError::Io {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
        e => SpoolError::Store {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    }
}

impl Spool {
    /// Opens (or creates) `dir/spool.redb`. A file that is not a readable spool is
    /// moved aside and a fresh one created (see the module doc); a spool another
    /// process holds, or a directory that cannot be written, is an error.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Spool, Opened), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Dir {
            dir: dir.to_path_buf(),
            why: e.to_string(),
        })?;
        let path = dir.join(FILE_NAME);
        let existed = path.exists();
        let opened = match Self::open_file(&path) {
            Ok(inner) => {
                let how = if existed {
                    Opened::Existing
                } else {
                    Opened::Created
                };
                return Ok((Self::with(path, limits, inner), how));
            }
            Err(
                e @ (SpoolError::InUse { .. } | SpoolError::Dir { .. } | SpoolError::Io { .. }),
            ) => return Err(e),
            Err(e) => e,
        };
        let why = match opened {
            SpoolError::Store { why, .. } => why,
            other => other.to_string(),
        };
        let to = aside_path(&path);
        std::fs::rename(&path, &to).map_err(|e| SpoolError::Dir {
            dir: dir.to_path_buf(),
            why: format!(
                "cannot move the corrupt spool aside to {}: {e}",
                to.display()
            ),
        })?;
        let inner = Self::open_file(&path)?;
        Ok((
            Self::with(path, limits, inner),
            Opened::MovedAside { to, why },
        ))
    }

    fn with(path: PathBuf, limits: Limits, inner: Inner) -> Spool {
        Spool {
            path,
            limits,
            inner: Mutex::new(inner),
        }
    }

    fn open_file(path: &Path) -> Result<Inner, SpoolError> {
        let err = |e: redb::Error| store_err(path, e);
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        let epoch = {
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            let known = meta
                .get(EPOCH)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            match known {
                Some(e) => e,
                None => {
                    let e = rand::random::<u64>();
                    meta.insert(EPOCH, e).map_err(|e| err(e.into()))?;
                    e
                }
            }
        };
        let stored_next = {
            let meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            let n = meta
                .get(NEXT)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            n.unwrap_or(0)
        };
        tx.open_table(EVENTS).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;
        // Read every record once: the depth, the next key, and a record this module
        // cannot decode is a corrupt spool (moved aside by the caller).
        let mut depth = Depth::default();
        let mut next = 0;
        let rtx = db.begin_read().map_err(|e| err(e.into()))?;
        let table = rtx.open_table(EVENTS).map_err(|e| err(e.into()))?;
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let r = decode(k.value(), v.value()).ok_or_else(|| SpoolError::Store {
                path: path.to_path_buf(),
                why: format!("record {} is not readable", k.value()),
            })?;
            depth.messages += 1;
            depth.bytes += v.value().len() as u64;
            depth.oldest_ms.get_or_insert(r.created_ms);
            next = k.value() + 1;
        }
        drop(table);
        drop(rtx);
        let next = next.max(stored_next);
        Ok(Inner {
            db: Some(db),
            failed_at: None,
            epoch,
            next,
            depth,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn depth(&self) -> Depth {
        lock(&self.inner).depth
    }

    /// The id of the record appended next (for a caller that puts the id into the
    /// payload it appends, see [`Spool::append_with`]).
    fn message_id(epoch: u64, seq: u64) -> String {
        format!("{epoch:016x}-{seq:x}")
    }

    /// Commits an event (fsynced: see the module doc); the oldest records are evicted
    /// first when it would not fit in `max_bytes`. `payload` is built from the
    /// message id the record gets, so the id can be part of it.
    pub fn append_with(
        &self,
        camera: &str,
        kind: &str,
        now_ms: u64,
        payload: impl FnOnce(&str) -> Bytes,
    ) -> Result<Appended, SpoolError> {
        self.with_db(|inner| self.append_in(inner, camera, kind, now_ms, payload))
    }

    fn append_in(
        &self,
        inner: &mut Inner,
        camera: &str,
        kind: &str,
        now_ms: u64,
        payload: impl FnOnce(&str) -> Bytes,
    ) -> Result<Appended, SpoolError> {
        let seq = inner.next;
        let message_id = Self::message_id(inner.epoch, seq);
        let payload = payload(&message_id);
        let value = encode(now_ms, camera, kind, &message_id, &payload);
        let size = value.len() as u64;
        if size > self.limits.max_bytes {
            return Err(SpoolError::TooLarge {
                path: self.path.clone(),
                size,
                max: self.limits.max_bytes,
            });
        }
        let err = |e: redb::Error| store_err(&self.path, e);
        let mut tx = self.db(inner)?.begin_write().map_err(|e| err(e.into()))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err(e.into()))?;
        let mut depth = inner.depth;
        let mut evicted = 0;
        {
            let mut t = tx.open_table(EVENTS).map_err(|e| err(e.into()))?;
            while depth.bytes + size > self.limits.max_bytes {
                let Some((_, v)) = t.pop_first().map_err(|e| err(e.into()))? else {
                    break;
                };
                depth.bytes -= v.value().len() as u64;
                depth.messages -= 1;
                evicted += 1;
            }
            if evicted > 0 {
                depth.oldest_ms = first_created(&t).map_err(err)?;
            }
            t.insert(seq, value.as_slice()).map_err(|e| err(e.into()))?;
        }
        {
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert(NEXT, seq + 1).map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        depth.messages += 1;
        depth.bytes += size;
        depth.oldest_ms.get_or_insert(now_ms);
        inner.depth = depth;
        inner.next = seq + 1;
        Ok(Appended {
            seq,
            message_id,
            evicted,
        })
    }

    /// Up to `max` records after `after` (all from the first when None), in order.
    pub fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<Record>, SpoolError> {
        self.with_db(|inner| self.read_in(inner, after, max))
    }

    fn read_in(
        &self,
        inner: &Inner,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let err = |e: redb::Error| store_err(&self.path, e);
        let rtx = self.db(inner)?.begin_read().map_err(|e| err(e.into()))?;
        let t = rtx.open_table(EVENTS).map_err(|e| err(e.into()))?;
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for row in t.range(from..).map_err(|e| err(e.into()))? {
            if out.len() >= max {
                break;
            }
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let r = decode(k.value(), v.value()).ok_or_else(|| SpoolError::Store {
                path: self.path.clone(),
                why: format!("record {} is not readable", k.value()),
            })?;
            out.push(r);
        }
        Ok(out)
    }

    /// Removes confirmed records (those already evicted are skipped). Not fsynced on
    /// its own: see the module doc.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.remove_where(Durability::None, |t, depth| {
            let mut n = 0;
            for s in seqs {
                if let Some(v) = t.remove(s)? {
                    depth.bytes -= v.value().len() as u64;
                    depth.messages -= 1;
                    n += 1;
                }
            }
            Ok(n)
        })
        .map(|_| ())
    }

    /// Evicts records older than `max_age`; how many (the caller counts them).
    pub fn evict_expired(&self, now_ms: u64) -> Result<u64, SpoolError> {
        let cutoff = now_ms.saturating_sub(self.limits.max_age_ms);
        if self.depth().oldest_ms.is_none_or(|o| o >= cutoff) {
            return Ok(0);
        }
        self.remove_where(Durability::Immediate, |t, depth| {
            let mut n = 0;
            loop {
                let old = match t.first()? {
                    Some((k, v)) => {
                        let created = decode(k.value(), v.value()).map_or(0, |r| r.created_ms);
                        (created < cutoff).then(|| (k.value(), v.value().len() as u64))
                    }
                    None => None,
                };
                let Some((k, len)) = old else { break };
                t.remove(k)?;
                depth.bytes -= len;
                depth.messages -= 1;
                n += 1;
            }
            Ok(n)
        })
    }

    fn remove_where(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut redb::Table<u64, &[u8]>, &mut Depth) -> Result<u64, redb::Error>,
    ) -> Result<u64, SpoolError> {
        self.with_db(|inner| {
            let err = |e: redb::Error| store_err(&self.path, e);
            let mut tx = self.db(inner)?.begin_write().map_err(|e| err(e.into()))?;
            tx.set_durability(durability).map_err(|e| err(e.into()))?;
            let mut depth = inner.depth;
            let n = {
                let mut t = tx.open_table(EVENTS).map_err(|e| err(e.into()))?;
                let n = f(&mut t, &mut depth).map_err(err)?;
                depth.oldest_ms = first_created(&t).map_err(err)?;
                n
            };
            tx.commit().map_err(|e| err(e.into()))?;
            inner.depth = depth;
            Ok(n)
        })
    }

    /// Runs `f` on the open spool under the lock. After an I/O error redb refuses every
    /// operation on that file until it is opened again: the database is closed then, and
    /// opened again (depth and next id read back from the file) on a later use, at most
    /// once a second, so a disk that was full and has room again is written again.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        let mut inner = lock(&self.inner);
        if inner.db.is_none() {
            if inner.failed_at.is_some_and(|t| t.elapsed() < REOPEN_AFTER) {
                return Err(SpoolError::Io {
                    path: self.path.clone(),
                    why: "closed after an I/O error, not reopened yet".into(),
                });
            }
            match Self::open_file(&self.path) {
                Ok(fresh) => *inner = fresh,
                Err(e) => {
                    inner.failed_at = Some(std::time::Instant::now());
                    return Err(e);
                }
            }
        }
        let r = f(&mut inner);
        if let Err(SpoolError::Io { .. }) = &r {
            inner.db = None;
            inner.failed_at = Some(std::time::Instant::now());
        }
        r
    }

    fn db<'a>(&self, inner: &'a Inner) -> Result<&'a Database, SpoolError> {
        inner.db.as_ref().ok_or_else(|| SpoolError::Io {
            path: self.path.clone(),
            why: "closed after an I/O error".into(),
        })
    }
}

/// How long a spool closed by an I/O error waits before it is opened again.
const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn first_created(t: &redb::Table<u64, &[u8]>) -> Result<Option<u64>, redb::Error> {
    Ok(t.first()?
        .and_then(|(k, v)| decode(k.value(), v.value()))
        .map(|r| r.created_ms))
}

/// `spool.redb.corrupt-<unix seconds>`, or with a counter when that exists already.
fn aside_path(path: &Path) -> PathBuf {
    let secs = crate::clock::unix_ns_now() / 1_000_000_000;
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut to = PathBuf::from(&base);
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    to
}

/// `[version][created_ms u64][camera][kind][message_id][payload]`, strings as a u16
/// length and UTF-8, integers little-endian.
fn encode(created_ms: u64, camera: &str, kind: &str, message_id: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(
        1 + 8 + 6 + camera.len() + kind.len() + message_id.len() + payload.len(),
    );
    v.push(RECORD_V1);
    v.extend_from_slice(&created_ms.to_le_bytes());
    for s in [camera, kind, message_id] {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
    }
    v.extend_from_slice(payload);
    v
}

fn decode(seq: u64, v: &[u8]) -> Option<Record> {
    let (&version, rest) = v.split_first()?;
    if version != RECORD_V1 {
        return None;
    }
    let (created, mut rest) = rest.split_at_checked(8)?;
    let created_ms = u64::from_le_bytes(created.try_into().ok()?);
    let mut text = || -> Option<String> {
        let (len, r) = rest.split_at_checked(2)?;
        let len = usize::from(u16::from_le_bytes(len.try_into().ok()?));
        let (s, r) = r.split_at_checked(len)?;
        rest = r;
        String::from_utf8(s.to_vec()).ok()
    };
    let camera = text()?;
    let kind = text()?;
    let message_id = text()?;
    Some(Record {
        seq,
        created_ms,
        camera,
        kind,
        message_id,
        payload: Bytes::copy_from_slice(rest),
    })
}

#[cfg(test)]
mod tests;
