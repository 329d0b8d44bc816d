//! Hints of sealed segments, written off the append path.
//!
//! A rotation seals the active segment, and its hint is a pass over the whole segment (about
//! 20 ms for 64 MiB of 1 KB messages, twice that when they carry idempotency keys). Done on
//! the writer's thread, it stalled the append that filled the segment and every append
//! queued behind it. Instead, the rotation queues the sealed segment here and a thread of the
//! store builds its hint and writes it. A hint is derived data (a segment without one is
//! scanned on open), so a hint that comes late, or never, costs an open time, never a message.
//!
//! The thread builds the hint and writes it under a temporary name, holding no lock and no
//! handle of the store (dropping the last handle closes the store at once, as ever). The
//! writer's next write turn puts it in place, and only if its segment is still in the log:
//! a compaction, in this process or another, may have replaced it meanwhile, and no hint may
//! outlive its segment (it names sessions and keys that compaction erases). The rename comes
//! after the turn's catch-up, so the check sees what other processes' compactions removed.
//! A compaction waits for the queue to drain and puts every built hint in place before it
//! picks its inputs, renames its own output's hint in place only after its commit point (a
//! hint of the first input built meanwhile, here or elsewhere, cannot land over it), and
//! removes the temporary files of segments gone ([`sweep_tmp`]); a clean close does what is
//! left.
//!
//! On a file system whose operations must all come from the caller's thread in order (the
//! simulated one, whose crash points must reproduce: [`crate::io::Vfs::deterministic`]), the
//! rotation writes the hint itself, as before.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Store;
use super::Writer;
use crate::hint;
use crate::id::{Lsn, SegmentId};
use crate::io::{Dir, Mapping, Vfs};

/// A sealed segment whose hint is to be written.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: SegmentId,
    pub(super) salt: u64,
    pub(super) map: Mapping,
}

/// A hint written under a temporary name, to put in place.
#[derive(Debug)]
pub(super) struct Built {
    id: SegmentId,
    salt: u64,
    tmp: PathBuf,
}

/// The queue of hints to write, and its thread's state.
///
/// Invariant: `busy` is true exactly while the thread holds a job it took from `jobs`; a job
/// is in `jobs`, held by the thread, in `built` (its file written under a temporary name), or
/// done (in place, or dropped); `ready` is set whenever `built` may be non-empty.
#[derive(Debug, Default)]
pub(super) struct Hints {
    state: Mutex<Queue>,
    wake: Condvar,
    ready: AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    built: Vec<Built>,
    busy: bool,
    started: bool,
    closed: bool,
}

impl Hints {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; `true` if the thread must be started first (once per open).
    fn push(&self, job: Job) -> bool {
        let mut q = self.lock();
        q.jobs.push_back(job);
        let start = !q.started;
        q.started = true;
        drop(q);
        self.wake.notify_all();
        start
    }

    /// The thread's next job, waiting for one; `None` once the store closes.
    fn next(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(job) = q.jobs.pop_front() {
                q.busy = true;
                return Some(job);
            }
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The thread is done with its job, having written it as `built` (if it could).
    fn done(&self, built: Option<Built>) {
        let mut q = self.lock();
        if let Some(b) = built {
            q.built.push(b);
            self.ready.store(true, Ordering::Release);
        }
        q.busy = false;
        drop(q);
        self.wake.notify_all();
    }

    /// Waits until every queued hint is built (or dropped).
    pub(super) fn wait_idle(&self) {
        let mut q = self.lock();
        while q.started && !q.closed && (q.busy || !q.jobs.is_empty()) {
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether hints are built and wait to be put in place (one atomic load: every write
    /// turn asks).
    pub(super) fn has_built(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(super) fn take_built(&self) -> Vec<Built> {
        let mut q = self.lock();
        self.ready.store(false, Ordering::Release);
        std::mem::take(&mut q.built)
    }

    /// Stops the thread (after the job in hand) and returns the jobs it did not take, for
    /// the closing store to write; the built ones stay for [`Store::install_built`].
    pub(super) fn close(&self) -> Vec<Job> {
        let mut q = self.lock();
        q.closed = true;
        self.wake.notify_all();
        while q.busy {
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.jobs.drain(..).collect()
    }
}

impl Store {
    /// Has the hint of the segment just sealed written: by the hints thread, or here on a
    /// deterministic file system (see the module docs).
    pub(super) fn write_sealed_hint(&self, job: Job) {
        let vfs = &self.inner.opts.vfs;
        if vfs.deterministic() {
            let _ = hint::write(
                Dir::new(&**vfs, &self.inner.dir),
                &job.map,
                job.id,
                job.salt,
            );
            return;
        }
        if self.inner.hints.push(job) {
            spawn(
                Arc::clone(&self.inner.hints),
                Arc::clone(vfs),
                self.inner.dir.clone(),
            );
        }
    }

    /// Puts the built hints in place, under the write turn (see the module docs).
    pub(super) fn install_built(&self) {
        if !self.inner.hints.has_built() {
            return;
        }
        let _ = self.with_write_turn(|w| {
            self.install_built_in(w);
            Ok(())
        });
    }

    /// [`Store::install_built`], the write turn taken (`w` is its proof).
    pub(super) fn install_built_in(&self, _w: &mut Writer) {
        let state = self.state();
        install(
            Dir::new(&*self.inner.opts.vfs, &self.inner.dir),
            self.inner.hints.take_built(),
            |id, salt| state.holds(id, salt),
        );
    }
}

/// Renames each built hint in place if `live` says its segment is in the log, else removes
/// it. Best effort, as every hint write.
pub(super) fn install(dir: Dir<'_>, built: Vec<Built>, live: impl Fn(SegmentId, u64) -> bool) {
    for b in built {
        if !(live(b.id, b.salt) && dir.rename(&b.tmp, &hint::path(dir.path, b.id)).is_ok()) {
            let _ = dir.vfs.remove_file(&b.tmp);
        }
    }
}

/// Builds `job`'s hint and writes it under its temporary name (synced); `None` if the
/// segment gets no hint (see [`hint::build`]) or the write failed.
fn write_built(vfs: &dyn Vfs, dir: &std::path::Path, job: &Job) -> Option<Built> {
    let bytes = hint::build(&job.map, Lsn(job.id.0), job.salt)?;
    let tmp = hint::tmp_path(dir, job.id, job.salt);
    let dir = Dir::new(vfs, dir);
    if dir.write_new(&tmp, &bytes).is_err() {
        let _ = dir.vfs.remove_file(&tmp);
        return None;
    }
    Some(Built {
        id: job.id,
        salt: job.salt,
        tmp,
    })
}

/// Removes the hints' temporary files of segments the log no longer holds (`live` says
/// which it holds): what a crash left half written names sessions and keys that a
/// compaction may have erased since. Another process's file in flight may go too: it then
/// fails to put that hint in place, and the segment is scanned on open.
pub(super) fn sweep_tmp(dir: Dir<'_>, live: impl Fn(SegmentId, u64) -> bool) {
    let Ok(names) = dir.vfs.list(dir.path) else {
        return;
    };
    for name in names.iter().filter(|n| n.ends_with(hint::TMP_SUFFIX)) {
        if !hint::parse_tmp_name(name).is_some_and(|(id, salt)| live(id, salt)) {
            let _ = dir.vfs.remove_file(&dir.join(name));
        }
    }
}

/// Starts the hints thread: it holds the queue and the file system, not the store.
fn spawn(hints: Arc<Hints>, vfs: Arc<dyn Vfs>, dir: PathBuf) {
    let queue = Arc::clone(&hints);
    let thread = std::thread::Builder::new()
        .name("convlog-hints".into())
        .spawn(move || {
            while let Some(job) = hints.next() {
                // A panic (a bug) must not leave the queue busy for good: a compaction and
                // the close wait for it. The job is then dropped (its segment gets scanned).
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write_built(&*vfs, &dir, &job)
                }));
                hints.done(built.ok().flatten());
            }
        });
    if thread.is_err() {
        // No thread: the jobs wait for the close, which writes them (and nobody waits).
        queue.lock().started = false;
        queue.wake.notify_all();
    }
}
