//! The stores open for writing in this process, by canonical directory.
//!
//! A store's locks (`flock` on `WRITERS` and `LOCK`) belong to one open file description, so
//! a second writable open of the same directory in the same process would be a second writer
//! beside the first: an exclusive one would fail as [`Error::Locked`], and a shared one would
//! keep a second index and take turns with the first through the file system. Instead, a
//! second open finds the first here and gets a new handle to the same open store when its
//! options are compatible, and [`Error::AlreadyOpen`] when they are not.
//!
//! The registry holds weak references only: a store closes when its last handle drops, as
//! before. Each entry also goes through two waiting states, so that two threads never race
//! each other to the lock: *opening* (a thread is inside `open_with` for that directory) and
//! *closing* (its last handle dropped, and its clean close, which still holds the lock, has
//! not finished). A second open waits for either to end, then shares the store or opens it.
//!
//! Only file systems that name directories by real paths take part (see
//! [`Vfs::canonical_path`]); read-only opens never do (they take no lock and read a snapshot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use super::Options;
use super::{Inner, Store, Users};
use crate::error::{Error, Result};

/// A directory's state in the registry.
#[derive(Debug)]
enum Slot {
    /// A thread of this process (its id) is opening the store.
    Opening(u32),
    /// The store is open (or, when its callers' handles are gone, closing: a background
    /// thread of the store may still hold it, and closes it when it lets go), by the
    /// process of that id.
    Open(Weak<Inner>, Weak<Users>, u32),
}

static SLOTS: Mutex<BTreeMap<PathBuf, Slot>> = Mutex::new(BTreeMap::new());
static CHANGED: Condvar = Condvar::new();

fn slots() -> MutexGuard<'static, BTreeMap<PathBuf, Slot>> {
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`claim`] found.
pub(super) enum Claim {
    /// The store is already open in this process, with compatible options: a new handle.
    Shared(Store),
    /// Open it. `Some` holds the directory's entry until the store is closed (or the open
    /// fails): keep it in the store's [`Inner`], and [`Registration::publish`] the store.
    Open(Option<Registration>),
}

/// A directory's entry in the registry, removed when this is dropped.
///
/// Lives in [`Inner`], declared after its lock guard: fields drop in declaration order, so
/// the entry goes only once the directory's lock is released and the next open can take it.
#[derive(Debug)]
pub(super) struct Registration {
    key: PathBuf,
}

/// Finds the store open for writing in `dir` in this process, or reserves the directory for
/// the caller to open it. Waits while another thread opens or closes that directory.
///
/// # Errors
/// [`Error::AlreadyOpen`] when the store is open with options that differ from `opts`.
pub(super) fn claim(opts: &Options, dir: &Path) -> Result<Claim> {
    if opts.read_only {
        return Ok(Claim::Open(None));
    }
    // The directory must exist to have a canonical name; a writable open creates it anyway
    // (and reports a failure to, below in `open_with`).
    let _ = opts.vfs.create_dir_all(dir);
    let Some(key) = opts.vfs.canonical_path(dir) else {
        return Ok(Claim::Open(None));
    };
    let mut slots = slots();
    loop {
        match slots.get(&key) {
            None => break,
            // What a fork() child inherited: the parent's, which the child opens anew.
            Some(Slot::Opening(pid)) if *pid != crate::io::process_id() => break,
            Some(Slot::Open(_, _, pid)) if *pid != crate::io::process_id() => break,
            Some(Slot::Opening(_)) => {}
            Some(Slot::Open(weak, users, _)) => {
                // A caller's handle holds both; without one, it is closing.
                match (weak.upgrade(), users.upgrade()) {
                    (Some(inner), Some(users)) => {
                        // Unlock first: if the other handles went meanwhile, dropping
                        // `inner` closes the store, and its `Registration` takes the
                        // registry's lock.
                        drop(slots);
                        return if compatible(&inner.opts, opts) && same_key(&inner, opts) {
                            Ok(Claim::Shared(Store {
                                inner,
                                users: Some(users),
                                decrypt_ahead: opts.decrypt_ahead,
                            }))
                        } else {
                            Err(Error::AlreadyOpen {
                                path: dir.to_owned(),
                            })
                        };
                    }
                    (None, None) => {} // Closing: its `Registration` goes once unlocked.
                    half => {
                        // The last handle went between the two upgrades: what was upgraded
                        // may be the store's last reference, whose drop closes it and takes
                        // the registry's lock, so it is dropped unlocked; then look again.
                        drop(slots);
                        drop(half);
                        slots = self::slots();
                        continue;
                    }
                }
            }
        }
        slots = CHANGED.wait(slots).unwrap_or_else(|e| e.into_inner());
    }
    slots.insert(key.clone(), Slot::Opening(crate::io::process_id()));
    Ok(Claim::Open(Some(Registration { key })))
}

impl Registration {
    /// Makes the open `store` the one later opens of its directory share.
    pub(super) fn publish(store: &Store) {
        let Some(reg) = &store.inner.registration else {
            return;
        };
        let Some(users) = &store.users else {
            return;
        };
        slots().insert(
            reg.key.clone(),
            Slot::Open(
                Arc::downgrade(&store.inner),
                Arc::downgrade(users),
                store.inner.pid,
            ),
        );
        CHANGED.notify_all();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        slots().remove(&self.key);
        CHANGED.notify_all();
    }
}

/// Whether a second open with `b` may share a store opened with `a`: every option that
/// shapes an open store must agree. (The file system is the real one for both: only it
/// names directories by canonical paths.)
fn compatible(a: &Options, b: &Options) -> bool {
    a.durability == b.durability
        && a.segment_size == b.segment_size
        && a.max_record_len == b.max_record_len
        && a.recovery == b.recovery
        && a.read_only == b.read_only
        && a.exclusive == b.exclusive
        && a.permissions == b.permissions
        && a.retention == b.retention
        && a.keep_quarantine == b.keep_quarantine
        && a.auto_compact == b.auto_compact
}

/// Whether `opts` carries the master key the open store is under now (a rekey changes it;
/// an unencrypted store takes no key).
fn same_key(inner: &super::Inner, opts: &Options) -> bool {
    match (&inner.crypt, &opts.encryption) {
        (Some(crypt), Some(key)) => crypt.is_master(key),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::SimFs;
    use crate::io::{StdFs, Vfs};

    #[test]
    fn only_the_real_file_system_takes_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = StdFs::default().canonical_path(dir.path()).unwrap();
        assert_eq!(real, std::fs::canonicalize(dir.path()).unwrap());
        assert!(SimFs::new(1).canonical_path(Path::new("/d")).is_none());
    }

    #[test]
    fn a_store_whose_callers_dropped_it_is_closing_even_while_its_own_thread_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.append_raw("s", br#"{"a":1}"#).unwrap();
        // What a background sync holds while the caller drops the last handle.
        let internal = Store {
            inner: Arc::clone(&store.inner),
            users: None,
            decrypt_ahead: false,
        };
        drop(store);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(internal);
            });
            // Other options: not `AlreadyOpen`, but an open once the close has finished.
            let reopened = Store::builder()
                .segment_size(1 << 20)
                .open(dir.path())
                .unwrap();
            assert_eq!(reopened.interaction_count("s"), 1);
            assert_eq!(reopened.inner.opts.segment_size, 1 << 20);
        });
    }

    #[test]
    fn compatibility_compares_every_shaping_option() {
        let base = Options::default();
        assert!(compatible(&base, &Options::default()));
        for other in [
            Options::default().segment_size(1 << 20),
            Options::default().max_record_len(10),
            Options::default().durability(crate::Durability::Always),
            Options::default().recovery(crate::RecoveryMode::Salvage),
            Options::default().read_only(true),
            Options::default().exclusive(true),
            Options::default().keep_quarantine(true),
        ] {
            assert!(!compatible(&base, &other), "{other:?}");
        }
    }
}
