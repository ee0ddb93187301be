//! The one lock helper. A panic while a lock was held poisons it; every structure
//! guarded here (counters, bookkeeping sets, the transport's outbox) stays consistent
//! between statements, so the next holder goes on with it instead of panicking too.
//! A leaf: it depends on nothing else in the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (see the module comment).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
