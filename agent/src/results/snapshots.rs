//! The snapshot JPEGs the workers publish, read back by the agent and kept in memory
//! for the page, which shows each recent incident's snapshot. The store is bounded by
//! bytes (`events.snapshot_memory`): past the cap the snapshot used least recently goes
//! first, counted as `dropped{place="snapshots",reason="snapshot_evicted"}`. A
//! snapshot an incident event names is used again each time the event is recorded, so
//! the snapshots of live and recent incidents outlast those no incident chose.
//!
//! Pure data, no I/O: results feeds it, the page reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics, DropReason};

/// Snapshots by id, least recently used first out.
pub struct Snapshots {
    cap: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// id → (JPEG, its stamp in `order`).
    by_id: HashMap<String, (Bytes, u64)>,
    /// stamp → id; the smallest stamp was used least recently.
    order: BTreeMap<u64, String>,
    bytes: u64,
    next: u64,
    evicted: u64,
}

impl Inner {
    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl Snapshots {
    /// A store holding at most `cap` bytes of JPEG (0: none kept).
    pub fn new(cap: u64) -> Snapshots {
        Snapshots {
            cap,
            inner: Mutex::default(),
        }
    }

    /// Keeps `jpeg` under `id`; true when the id was new (a copy of one already kept,
    /// from a frame delivered twice, is only marked as used). Older snapshots make room;
    /// one larger than the whole store is not kept. Every snapshot that goes is counted.
    pub fn insert(&self, id: &str, jpeg: Bytes) -> bool {
        let mut g = lock(&self.inner);
        if g.by_id.contains_key(id) {
            drop(g);
            self.touch(id);
            return false;
        }
        let size = jpeg.len() as u64;
        let mut gone = 0;
        if size > self.cap {
            gone += 1;
        } else {
            while g.bytes + size > self.cap {
                let Some((_, old)) = g.order.pop_first() else {
                    break;
                };
                if let Some((b, _)) = g.by_id.remove(&old) {
                    g.bytes -= b.len() as u64;
                }
                gone += 1;
            }
            let s = g.stamp();
            g.order.insert(s, id.to_string());
            g.by_id.insert(id.to_string(), (jpeg, s));
            g.bytes += size;
        }
        g.evicted += gone;
        drop(g);
        if gone > 0 {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    "snapshots",
                    DropReason::SnapshotEvicted,
                ))
                .inc_by(gone);
            if metrics::should_log("snapshots-evicted", Duration::from_secs(60)) {
                warn!(
                    snapshots = gone,
                    cap = self.cap,
                    "Snapshots dropped from memory to keep within events.snapshot_memory; the page no longer shows them."
                );
            }
        }
        true
    }

    /// Marks `id` as used now (an incident names it), so it goes after the others.
    pub fn touch(&self, id: &str) {
        let mut g = lock(&self.inner);
        let s = g.stamp();
        let Some((_, stamp)) = g.by_id.get_mut(id) else {
            return;
        };
        let old = std::mem::replace(stamp, s);
        g.order.remove(&old);
        g.order.insert(s, id.to_string());
    }

    /// The JPEG kept under `id`.
    pub fn get(&self, id: &str) -> Option<Bytes> {
        lock(&self.inner).by_id.get(id).map(|(b, _)| b.clone())
    }

    /// (snapshots kept, their bytes, snapshots dropped so far).
    pub fn depth(&self) -> (usize, u64, u64) {
        let g = lock(&self.inner);
        (g.by_id.len(), g.bytes, g.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(n: usize) -> Bytes {
        Bytes::from(vec![0xffu8; n])
    }

    #[test]
    fn the_least_recently_used_snapshot_goes_first_and_every_drop_is_counted() {
        let s = Snapshots::new(300);
        assert!(s.insert("a", jpeg(100)));
        assert!(s.insert("b", jpeg(100)));
        assert!(s.insert("c", jpeg(100)));
        // An incident names `a`: it is kept over `b`.
        s.touch("a");
        assert!(s.insert("d", jpeg(100)));
        assert!(s.get("a").is_some() && s.get("b").is_none());
        assert_eq!(s.depth(), (3, 300, 1));
        // A copy of one kept (a frame delivered twice) adds nothing.
        assert!(!s.insert("d", jpeg(100)));
        assert_eq!(s.depth(), (3, 300, 1));
        // A bigger one makes room for itself: `c` and `a` (used before `d`) go.
        assert!(s.insert("e", jpeg(180)));
        assert!(s.get("c").is_none() && s.get("a").is_none());
        assert_eq!(s.get("e").map(|b| b.len()), Some(180));
        assert_eq!(s.depth(), (2, 280, 3));
        // Larger than the store: not kept, counted, nothing else goes.
        assert!(s.insert("huge", jpeg(301)));
        assert!(s.get("huge").is_none());
        assert_eq!(s.depth(), (2, 280, 4));
        // Touching an unknown id is harmless.
        s.touch("nobody");
        assert_eq!(s.depth(), (2, 280, 4));
    }

    #[test]
    fn a_store_of_zero_bytes_keeps_nothing() {
        let s = Snapshots::new(0);
        s.insert("a", jpeg(1));
        assert!(s.get("a").is_none());
        assert_eq!(s.depth(), (0, 0, 1));
    }
}
