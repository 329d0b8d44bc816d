//! This process's id, read from memory: `std::process::id()` is a `getpid` system call
//! (about 145 ns here), too dear for every write's check that its handle was opened by this
//! process and not by the parent of a `fork()` (`Store::check_process`).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The id of this process, once [`process_id`] has run.
static PID: AtomicU32 = AtomicU32::new(0);
/// The fork handler could not be registered: [`PID`] may be a parent's after a fork.
static UNWATCHED: AtomicBool = AtomicBool::new(false);
static WATCH: Once = Once::new();

/// This process's id, as `std::process::id()` gives it, without a system call after the
/// first: a `fork()` child's is set by a handler that runs in the child before `fork`
/// returns there, before any other code of the child can read it.
pub fn process_id() -> u32 {
    WATCH.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        UNWATCHED.store(!watch_forks(), Ordering::Relaxed);
    });
    if UNWATCHED.load(Ordering::Relaxed) {
        return std::process::id();
    }
    PID.load(Ordering::Relaxed)
}

/// Registers the handler that sets [`PID`] in a `fork()` child; whether it could.
#[cfg(unix)]
fn watch_forks() -> bool {
    /// Runs in a `fork()` child, which has one thread: `getpid` is async-signal-safe.
    extern "C" fn in_child() {
        PID.store(std::process::id(), Ordering::Relaxed);
    }
    // SAFETY: `pthread_atfork` only records the handlers (none before the fork or in the
    // parent; in the child, one that calls `getpid` and stores an atomic, both
    // async-signal-safe). It runs once per process (`WATCH`), and fails only without
    // memory for the record, which `UNWATCHED` then covers.
    #[allow(unsafe_code)]
    let registered = unsafe { libc::pthread_atfork(None, None, Some(in_child)) } == 0;
    registered
}

/// Without `fork()` there is nothing to watch.
#[cfg(not(unix))]
fn watch_forks() -> bool {
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_is_the_process_id() {
        assert_eq!(super::process_id(), std::process::id());
        assert_eq!(super::process_id(), std::process::id());
    }
}
