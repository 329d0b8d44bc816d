//! Automatic compaction: a background thread that compacts when enough of the sealed
//! segments is dead, at most so often.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Store;

/// A background compaction policy (see [`super::Options::auto_compact`]): every `every`, the
/// thread plans a compaction (a read of the sealed segments) and carries it out only if at
/// least `dead_ratio` of their bytes is dead (removed messages, superseded events), or if
/// the store's retention rule deletes a session. Errors are left for the next round (a
/// compaction that fails changes nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AutoCompact {
    /// The fraction (0 to 1) of the sealed segments' bytes that must be dead.
    pub dead_ratio: f64,
    /// How long the thread waits between two checks.
    pub every: Duration,
}

impl Default for AutoCompact {
    /// Half dead, checked every ten minutes.
    fn default() -> AutoCompact {
        AutoCompact {
            dead_ratio: 0.5,
            every: Duration::from_secs(600),
        }
    }
}

impl AutoCompact {
    /// Compacts when `dead_ratio` (0 to 1) of the sealed bytes is dead, checking every
    /// `every`.
    #[must_use]
    pub fn new(dead_ratio: f64, every: Duration) -> AutoCompact {
        AutoCompact { dead_ratio, every }
    }
}

/// Stops the background compactor (when the store closes).
#[derive(Debug, Default)]
pub(super) struct Stopper {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stopper {
    pub(super) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits `d`; `true` once stopped.
    fn wait(&self, d: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }
}

impl Store {
    /// Starts the background compactor. It holds the store only while it works, so dropping
    /// the last handle closes the store.
    pub(super) fn spawn_auto_compact(&self, policy: AutoCompact) {
        let weak = Arc::downgrade(&self.inner);
        let stopper = self.inner.auto.clone();
        let spawned = std::thread::Builder::new()
            .name("convlog-compact".into())
            .spawn(move || {
                while !stopper.wait(policy.every) {
                    let Some(inner) = weak.upgrade() else { return };
                    let _ = Store {
                        inner,
                        users: None,
                        decrypt_ahead: false,
                    }
                    .compact_if(policy.dead_ratio);
                }
            });
        // Without a thread (the system refused one) the store works, only uncompacted.
        drop(spawned);
    }
}
