//! When appended bytes become durable: the sync policy, group commit, and poisoning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::id::Lsn;

/// How durable an append is when it returns.
///
/// | mode | `append` returns once the record is | survives a process kill | survives a power cut |
/// |---|---|---|---|
/// | `Always` | on stable storage (`fdatasync`) | yes | yes |
/// | `Interval(d)` | in the OS page cache; synced within `d` | yes | all but the last `d` (plus one in-flight sync) |
/// | `Buffered` | in the OS page cache | yes | only what a sync covered: `sync()`, a segment seal, or the background writeback every 8 MiB |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `fdatasync` before `append` returns; concurrent appenders share one sync (group commit).
    Always,
    /// Synced at least every interval, by the appender that finds the interval passed or by a
    /// background thread when appends stop.
    Interval(Duration),
    /// Written to the OS when `append` returns; synced by [`crate::Store::sync`], at segment
    /// seals, and by a background thread after every 8 MiB appended (so that a seal never
    /// waits on a large fsync). The default.
    #[default]
    Buffered,
}

/// The durable LSN, the group-commit leader election, and the poison flag.
///
/// Invariant: `durable` only grows, and only after a sync that covered it succeeded. Once
/// `poisoned` is set it is never cleared: a later sync cannot prove that earlier data reached
/// the disk (fsyncgate), so the store must be reopened.
#[derive(Debug, Default)]
pub(crate) struct Syncer {
    state: Mutex<SyncState>,
    done: Condvar,
    poisoned: AtomicBool,
}

#[derive(Debug, Default)]
struct SyncState {
    durable: Lsn,
    syncing: bool,
}

impl Syncer {
    pub(crate) fn new(durable: Lsn) -> Syncer {
        Syncer {
            state: Mutex::new(SyncState {
                durable,
                syncing: false,
            }),
            ..Syncer::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn durable(&self) -> Lsn {
        self.lock().durable
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        self.done.notify_all();
    }

    /// Records that everything up to `lsn` is durable (a segment seal synced it).
    pub(crate) fn mark_durable(&self, lsn: Lsn) {
        let mut s = self.lock();
        s.durable = s.durable.max(lsn);
    }

    /// Returns once `lsn` is durable. One caller at a time runs `sync`, which syncs whatever
    /// has been written and returns the LSN it covered; the others wait for its result
    /// (group commit). Returns the durable LSN, or the sync's error (after poisoning).
    pub(crate) fn wait_durable<E>(
        &self,
        lsn: Lsn,
        sync: impl Fn() -> Result<Lsn, E>,
        poisoned: impl Fn() -> E,
    ) -> Result<Lsn, E> {
        let mut s = self.lock();
        loop {
            if self.is_poisoned() {
                return Err(poisoned());
            }
            if s.durable >= lsn {
                return Ok(s.durable);
            }
            if s.syncing {
                s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            let result = sync();
            s = self.lock();
            s.syncing = false;
            match result {
                Ok(covered) => {
                    s.durable = s.durable.max(covered);
                    self.done.notify_all();
                }
                Err(e) => {
                    self.poison();
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn concurrent_waiters_share_syncs() {
        let syncer = Arc::new(Syncer::new(Lsn(0)));
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (syncer, written, syncs) = (syncer.clone(), written.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let lsn = Lsn(written.fetch_add(1, Ordering::SeqCst) + 1);
                        let got = syncer.wait_durable(
                            lsn,
                            || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_micros(200));
                                Ok::<_, ()>(Lsn(written.load(Ordering::SeqCst)))
                            },
                            || (),
                        );
                        assert!(got.unwrap() >= lsn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(syncer.durable(), Lsn(400));
        assert!(syncs.load(Ordering::SeqCst) <= 400);
    }

    #[test]
    fn a_failed_sync_poisons_for_good() {
        let syncer = Syncer::new(Lsn(0));
        assert_eq!(
            syncer.wait_durable(Lsn(1), || Err("eio"), || "poisoned"),
            Err("eio")
        );
        assert!(syncer.is_poisoned());
        assert_eq!(
            syncer.wait_durable(Lsn(1), || Ok(Lsn(1)), || "poisoned"),
            Err("poisoned")
        );
        assert_eq!(syncer.durable(), Lsn(0));
    }
}
