//! When appended bytes become durable: the sync policy, group commit, and poisoning.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Group commits run ([`Syncer::wait_durable`]'s leader syncs that succeeded).
    groups: u64,
}

impl Syncer {
    pub(crate) fn new(durable: Lsn) -> Syncer {
        Syncer {
            state: Mutex::new(SyncState {
                durable,
                ..SyncState::default()
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

    /// How many group commits (syncs for writers waiting on durability) have run.
    pub(crate) fn group_commits(&self) -> u64 {
        self.lock().groups
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
                    s.groups += 1;
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

/// Bytes appended since the last sync after which a `Buffered` or `Interval` store syncs the
/// active segment in the background: writeback stays steady, and sealing a segment (which
/// must sync it) never waits on a large fsync.
pub const WRITEBACK_BYTES: u64 = 8 << 20;

/// How long a group-commit leader waits for appenders that are mid-write to join its sync.
const GROUP_COMMIT_WAIT: Duration = Duration::from_micros(50);

/// Group commit: before the leader syncs, lets appenders that are writing right now get
/// their records in, so that one sync covers them too. Yields first, so writers the last
/// sync just woke can start their appends; then waits while any is mid-write, at most
/// [`GROUP_COMMIT_WAIT`].
pub(crate) fn gather_group(appending: &AtomicUsize) {
    let deadline = Instant::now() + GROUP_COMMIT_WAIT;
    let mut yields = 0;
    while (yields < 3 || appending.load(Ordering::Acquire) > 0) && Instant::now() < deadline {
        std::thread::yield_now();
        yields += 1;
    }
}

/// Counts a thread as appending (between entering a write and finishing it), for
/// [`gather_group`].
pub(crate) struct Appending<'a>(&'a AtomicUsize);

impl<'a> Appending<'a> {
    pub(crate) fn enter(count: &'a AtomicUsize) -> Appending<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Appending(count)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The background sync thread of `Buffered` and `Interval` stores: it syncs every interval
/// (`Interval`), and whenever an appender kicks it after [`WRITEBACK_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    state: Mutex<FlushState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    stop: bool,
    kicked: bool,
    /// Whether the thread runs.
    started: bool,
}

impl Flusher {
    fn lock(&self) -> MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a sync now; `true` if the thread must be started first.
    pub(crate) fn kick(&self) -> bool {
        let mut state = self.lock();
        state.kicked = true;
        let start = !state.started;
        state.started = true;
        drop(state);
        self.wake.notify_one();
        start
    }

    /// Stops the thread (at its next wake-up, which this causes).
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// Starts the thread: it calls `sync` every `every` (or an hour: only kicks) and on every
    /// kick, until stopped or `sync` returns `false` (the store is gone or poisoned).
    pub(crate) fn spawn(
        self: &std::sync::Arc<Self>,
        every: Option<Duration>,
        sync: impl Fn() -> bool + Send + 'static,
    ) {
        let flusher = self.clone();
        flusher.lock().started = true;
        let every = every.unwrap_or(Duration::from_secs(3600));
        let spawned = std::thread::Builder::new()
            .name("convlog-flusher".into())
            .spawn(move || {
                loop {
                    let mut state = flusher.lock();
                    if !state.kicked && !state.stop {
                        state = flusher
                            .wake
                            .wait_timeout(state, every)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if state.stop {
                        return;
                    }
                    state.kicked = false;
                    drop(state);
                    if !sync() {
                        return;
                    }
                }
            });
        if spawned.is_err() {
            // No thread (the system refused one): the next kick tries again.
            self.lock().started = false;
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
