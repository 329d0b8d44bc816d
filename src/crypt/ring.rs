//! The store's data keys in memory, and every change to `KEYS` (read and written through
//! `ring/file.rs`).
//!
//! Every change is made by a writer under the store's write lock (so processes take turns),
//! after reading what other processes appended to `KEYS` since. A new data key's entry is
//! appended without an `fdatasync`: every sync of a segment syncs `KEYS` first
//! ([`Crypt::sync`]), so no record becomes durable before the key it is sealed under, and a
//! power cut can take away only keys whose records were not durable either (recovery cuts
//! the log at the first record whose key is missing: `recovery::keys`). A session's records are
//! sealed under its *current* key: its newest own key that no fork shares. A fork shares
//! its source's keys (a `share` entry, synced before the fork is logged), which freezes
//! them: the source's next record gets a new key, so its later messages stay its own.
//!
//! A key is destroyed (the file rewritten without it) once no session references it: its
//! owner was deleted and no fork that shares it is left. A deleted session's references are
//! dropped by the delete, or (a crash between the delete and the rewrite) by the next
//! writable open or the session's next record, whichever comes first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::Zeroizing;

pub(crate) use super::envelope::DataKey;
use super::envelope::WRAPPED_LEN;
use super::envelope::{self, DATA_KEY_LEN, Nonces, envelope_key, fill_random, is_sealed};
use super::keyfile::{Entry, Header, KEYS_FILE, key_binding};
use super::master::MasterKey;
use crate::error::{Damage, Error, Result};
use crate::format::RecordMeta;
use crate::id::{Lsn, SegmentId};
use crate::io::{Dir, Vfs, VfsFile};

mod file;

/// An encrypted store's keys: the master key, the data keys, and the nonce source.
pub(crate) struct Crypt {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    path: PathBuf,
    master: RwLock<MasterKey>,
    nonces: Nonces,
    ring: RwLock<Ring>,
    /// Counts the changes of `ring` that may remove or replace keys (a whole new ring,
    /// after a rewrite of `KEYS`): a [`KeyCache`] of another epoch is not trusted.
    epoch: AtomicU64,
    /// The file id and length of `KEYS` when this process last made it durable (synced it,
    /// or wrote it whole): [`Crypt::sync`] has nothing to do while both are unchanged.
    synced: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crypt({})", self.path.display())
    }
}

/// A data key as `KEYS` holds it; unwrapped the first time it is used.
struct Slot {
    owner: Option<Box<str>>,
    wrapped: [u8; WRAPPED_LEN],
    key: OnceLock<DataKey>,
}

/// What `KEYS` says, as of `valid_len` bytes of the file `file_id`.
///
/// Invariant: `owned` and `shares` name only keys in `keys`; `frozen` is the union of
/// `shares`; `current` maps a session to an own key of it that is not frozen.
struct Ring {
    file_id: u64,
    /// The file's durable end (its header's; `None` for a version 1 file).
    durable_end: Option<u64>,
    valid_len: u64,
    secret: Zeroizing<[u8; 32]>,
    keys: HashMap<u64, Slot>,
    owned: HashMap<Box<str>, Vec<u64>>,
    shares: HashMap<Box<str>, Vec<u64>>,
    frozen: HashSet<u64>,
    /// Which key each session's next record is sealed under (a cache).
    current: HashMap<Box<str>, u64>,
    /// The index's count of deletes and forks when `current` was last trusted.
    resets: u64,
}

impl Ring {
    fn new(header: &Header, secret: Zeroizing<[u8; 32]>) -> Ring {
        Ring {
            file_id: header.file_id,
            durable_end: header.durable_end,
            valid_len: header.len() as u64,
            secret,
            keys: HashMap::new(),
            owned: HashMap::new(),
            shares: HashMap::new(),
            frozen: HashSet::new(),
            current: HashMap::new(),
            resets: 0,
        }
    }

    /// Applies an appended entry; whether it replaced a key the ring held (an id drawn
    /// twice: no entry ever removes one).
    fn apply(&mut self, entry: Entry) -> bool {
        match entry {
            Entry::Key { id, owner, wrapped } => {
                if let Some(o) = &owner {
                    self.owned.entry(o.clone()).or_default().push(id);
                }
                let slot = Slot {
                    owner,
                    wrapped,
                    key: OnceLock::new(),
                };
                self.keys.insert(id, slot).is_some()
            }
            Entry::Share { sharer, keys } => {
                let keys: Vec<u64> = keys
                    .into_iter()
                    .filter(|k| self.keys.contains_key(k))
                    .collect();
                self.frozen.extend(&keys);
                for k in &keys {
                    self.current.retain(|_, c| c != k);
                }
                self.shares.entry(sharer).or_default().extend(keys);
                false
            }
        }
    }

    /// Whether `session` references any key.
    fn references(&self, session: &str) -> bool {
        self.owned.contains_key(session) || self.shares.contains_key(session)
    }

    /// The keys a fork of `session` shares: its own and those it shares itself.
    fn reach(&self, session: &str) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .owned
            .get(session)
            .into_iter()
            .chain(self.shares.get(session))
            .flatten()
            .copied()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The entries of a rewrite without `gone`'s references, and how many keys it destroys.
    fn without(&self, gone: &HashSet<&str>) -> (Vec<Entry>, usize) {
        let shares: Vec<(&str, &Vec<u64>)> = self
            .shares
            .iter()
            .filter(|(s, _)| !gone.contains(&***s))
            .map(|(s, k)| (&**s, k))
            .collect();
        let shared: HashSet<u64> = shares.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        let mut entries = Vec::new();
        let mut destroyed = 0;
        let mut ids: Vec<&u64> = self.keys.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let slot = &self.keys[id];
            let owner = slot.owner.clone().filter(|o| !gone.contains(&**o));
            if owner.is_none() && !shared.contains(id) {
                destroyed += 1;
                continue;
            }
            entries.push(Entry::Key {
                id: *id,
                owner,
                wrapped: slot.wrapped,
            });
        }
        let kept: HashSet<u64> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Key { id, .. } => Some(*id),
                Entry::Share { .. } => None,
            })
            .collect();
        let mut shares = shares;
        shares.sort_unstable();
        for (sharer, keys) in shares {
            let keys: Vec<u64> = keys.iter().copied().filter(|k| kept.contains(k)).collect();
            if !keys.is_empty() {
                entries.push(Entry::Share {
                    sharer: sharer.into(),
                    keys,
                });
            }
        }
        (entries, destroyed)
    }
}

impl Crypt {
    /// Creates `KEYS` (a new, empty key file) in `dir`, whose log is durable up to
    /// `durable_end`, and returns its keys.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn create(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        master: &MasterKey,
        durable_end: Lsn,
    ) -> Result<Crypt> {
        let mut secret = Zeroizing::new([0u8; 32]);
        fill_random(&*vfs, &mut *secret)?;
        let path = dir.join(KEYS_FILE);
        let header = new_header(&*vfs, master, &secret, durable_end.0)?;
        Dir::new(&*vfs, dir).atomic_write(&path, &header.encode())?;
        Crypt::load(vfs, dir, master)
    }

    /// Reads `KEYS` in `dir` under `master`.
    ///
    /// # Errors
    /// [`Error::WrongKey`] if `master` is not the store's; [`Error::KeyFile`] if the file is
    /// damaged; [`Error::Io`].
    pub(crate) fn load(vfs: Arc<dyn Vfs>, dir: &Path, master: &MasterKey) -> Result<Crypt> {
        let crypt = Crypt {
            path: dir.join(KEYS_FILE),
            dir: dir.to_owned(),
            nonces: Nonces::new(&*vfs)?,
            vfs,
            master: RwLock::new(master.clone()),
            ring: RwLock::new(Ring::new(
                &Header {
                    file_id: 0,
                    secret: [0; WRAPPED_LEN],
                    durable_end: None,
                },
                Zeroizing::new([0; 32]),
            )),
            epoch: AtomicU64::new(0),
            synced: Mutex::new((0, 0)),
        };
        let bytes = crypt.read(0)?;
        *crypt.ring_mut() = crypt.parse(&bytes)?;
        Ok(crypt)
    }

    fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The ring, to change: the change may destroy keys, so every [`KeyCache`] goes stale.
    fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        let guard = self.ring.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// The ring, to change without removing or replacing any key (which session seals
    /// under which key, a new key, a share): no [`KeyCache`] goes stale. A change that
    /// turns out to replace a key calls [`Crypt::keys_changed`] before it lets go.
    fn ring_keeping_keys(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every [`KeyCache`] stale: a key went or changed.
    fn keys_changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times the ring's keys may have gone or changed: a message opened while
    /// this stayed the same could be opened now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether `key` is the master key `KEYS` is wrapped with now (as this process knows).
    pub(crate) fn is_master(&self, key: &MasterKey) -> bool {
        *self.master.read().unwrap_or_else(|e| e.into_inner()) == *key
    }

    fn master(&self) -> MasterKey {
        self.master
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Crypt {
    /// Forgets which key each session seals under when the index's count of deletes and
    /// forks moved since (another process, or this one, deleted or forked a session).
    pub(crate) fn note_resets(&self, resets: u64) {
        if self.ring().resets == resets {
            return;
        }
        let mut r = self.ring_keeping_keys();
        r.current.clear();
        r.resets = resets;
    }

    /// Whether `session`'s next record has its key at hand ([`Crypt::key_for`] then neither
    /// creates nor syncs anything).
    pub(crate) fn has_current(&self, session: &str) -> bool {
        self.ring().current.contains_key(session)
    }

    /// The key `session`'s next record is sealed under, created when it has none (its
    /// entry appended to `KEYS` unsynced: see the module docs). `deleted`: whether the
    /// session's last event is a delete; then the keys it still references (a crash
    /// between the delete and their destruction, or another process's delete) are dropped
    /// first, once `durable` has made the log that deletes it durable (else a power cut
    /// could bring back records whose key is gone).
    /// A session that merely holds nothing (cleared) keeps its keys: a replay of the log
    /// still reads its records. Called under the write lock.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::KeyFile`], [`Error::WrongKey`] (the store was rekeyed by
    /// another process); `durable`'s.
    pub(crate) fn key_for(
        &self,
        session: &str,
        deleted: bool,
        durable: impl FnOnce() -> Result<Lsn>,
    ) -> Result<DataKey> {
        let cached = self.ring().current.get(session).copied();
        if let Some(id) = cached {
            return self.data_key(id);
        }
        if deleted {
            // (Reads `KEYS` again itself, and may replace it: opened only after.)
            self.drop_sessions(&[session], durable)?;
        }
        // One open for the read of what other processes appended and for the new entry.
        let f = self.open_rw()?;
        self.refresh_from(&*f)?;
        let own = {
            let r = self.ring();
            r.owned
                .get(session)
                .and_then(|ks| ks.iter().rev().find(|k| !r.frozen.contains(k)).copied())
        };
        let id = match own {
            Some(id) => id,
            None => self.create_key(session, f)?,
        };
        self.ring_keeping_keys().current.insert(session.into(), id);
        self.data_key(id)
    }

    fn create_key(&self, owner: &str, keys: Arc<dyn VfsFile>) -> Result<u64> {
        let mut id = 0u64;
        while id == 0 || self.ring().keys.contains_key(&id) {
            let mut b = [0u8; 8];
            fill_random(&*self.vfs, &mut b)?;
            id = u64::from_le_bytes(b);
        }
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        fill_random(&*self.vfs, &mut *key)?;
        let wrapped = envelope::wrap(&*self.vfs, self.master().bytes(), &key_binding(id), &key)?;
        self.append_to(
            keys,
            Entry::Key {
                id,
                owner: Some(owner.into()),
                wrapped,
            },
            false,
        )?;
        Ok(id)
    }

    /// The data key `id`, unwrapped.
    fn data_key(&self, id: u64) -> Result<DataKey> {
        let r = self.ring();
        let slot = r.keys.get(&id).ok_or_else(|| Error::KeyFile {
            path: self.path.clone(),
            offset: 0,
            reason: "a data key in use is missing",
        })?;
        if let Some(k) = slot.key.get() {
            return Ok(k.clone());
        }
        let plain = envelope::unwrap(self.master().bytes(), &key_binding(id), &slot.wrapped)
            .ok_or_else(|| Error::KeyFile {
                path: self.path.clone(),
                offset: 0,
                reason: "a data key does not open under the master key",
            })?;
        Ok(slot.key.get_or_init(|| DataKey::new(id, &plain)).clone())
    }

    /// Makes `dst` (a fork of `src`, about to be logged) share `src`'s keys, synced, and
    /// freezes them. Called under the write lock.
    ///
    /// # Errors
    /// As [`Crypt::key_for`].
    pub(crate) fn share(&self, src: &str, dst: &str) -> Result<()> {
        self.refresh()?;
        let keys = self.ring().reach(src);
        if keys.is_empty() {
            return Ok(());
        }
        // Synced at once: the fork's record is no record sealed under a key, so recovery
        // could not tell that a power cut took the entry away (and then the source's delete
        // would destroy keys the fork still reads).
        self.append_to(
            self.open_rw()?,
            Entry::Share {
                sharer: dst.into(),
                keys,
            },
            true,
        )
    }

    /// Drops every reference `sessions` hold and destroys the keys no session references
    /// any more: `KEYS` rewritten without them (temporary file, sync, rename, directory
    /// sync), once `durable` has made the log that empties them durable (it returns the
    /// LSN after the last durable record: the new file's durable end). Returns how many
    /// keys it destroyed. Called under the write lock.
    ///
    /// # Errors
    /// As [`Crypt::key_for`].
    pub(crate) fn drop_sessions(
        &self,
        sessions: &[&str],
        durable: impl FnOnce() -> Result<Lsn>,
    ) -> Result<usize> {
        self.refresh()?;
        let gone: HashSet<&str> = sessions
            .iter()
            .copied()
            .filter(|s| self.ring().references(s))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let durable_end = durable()?;
        let (entries, destroyed) = self.ring().without(&gone);
        self.rewrite(&self.master(), entries, durable_end)?;
        Ok(destroyed)
    }

    /// Drops the references of every session `deleted` says was deleted (see
    /// [`Crypt::drop_sessions`], `durable` as there): what a writable open does, once what
    /// it recovered is durable, and a compaction before it drops delete records. Returns
    /// the keys destroyed.
    ///
    /// # Errors
    /// As [`Crypt::key_for`].
    pub(crate) fn sweep(
        &self,
        deleted: impl Fn(&str) -> bool,
        durable: impl FnOnce() -> Result<Lsn>,
    ) -> Result<usize> {
        self.refresh()?;
        let gone: Vec<Box<str>> = {
            let r = self.ring();
            r.owned
                .keys()
                .chain(r.shares.keys())
                .filter(|s| deleted(s))
                .cloned()
                .collect()
        };
        let gone: Vec<&str> = gone.iter().map(|s| &**s).collect();
        self.drop_sessions(&gone, durable)
    }

    /// Wraps every data key anew under `new` (no segment changes), crash-atomically: one
    /// rename replaces `KEYS`. Called under the write lock.
    ///
    /// # Errors
    /// As [`Crypt::key_for`]; [`Error::KeyFile`] if a data key does not open.
    pub(crate) fn rekey(&self, new: &MasterKey) -> Result<usize> {
        self.refresh()?;
        let (entries, _) = self.ring().without(&HashSet::new());
        let mut rewrapped = Vec::with_capacity(entries.len());
        for e in entries {
            rewrapped.push(match e {
                Entry::Key { id, owner, .. } => {
                    let plain = self.plain_key(id)?;
                    Entry::Key {
                        id,
                        owner,
                        wrapped: envelope::wrap(&*self.vfs, new.bytes(), &key_binding(id), &plain)?,
                    }
                }
                share => share,
            });
        }
        let keys = rewrapped
            .iter()
            .filter(|e| matches!(e, Entry::Key { .. }))
            .count();
        self.rewrite(new, rewrapped, Lsn(0))?;
        *self.master.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(keys)
    }

    fn plain_key(&self, id: u64) -> Result<Zeroizing<[u8; 32]>> {
        let wrapped = self.ring().keys.get(&id).map(|s| s.wrapped);
        wrapped
            .and_then(|w| envelope::unwrap(self.master().bytes(), &key_binding(id), &w))
            .ok_or_else(|| Error::KeyFile {
                path: self.path.clone(),
                offset: 0,
                reason: "a data key does not open under the master key",
            })
    }

    /// The next nonce.
    ///
    /// # Errors
    /// [`Error::Io`] if the random generator fails (once per 2^32 nonces).
    pub(crate) fn nonce(&self) -> Result<[u8; envelope::NONCE_LEN]> {
        self.nonces.next(&*self.vfs)
    }

    /// What an idempotency key is logged as: HMAC-SHA256 of it under the store's secret.
    pub(crate) fn digest(&self, key: &[u8]) -> [u8; 32] {
        envelope::hmac(&self.ring().secret[..], key)
    }

    /// The message a record's sealed payload holds, its key taken from `keys` when that
    /// is the one the last read used (and no key was destroyed since).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it is no envelope or fails its authentication (damaged, or
    /// copied from another record); [`Error::KeyDestroyed`] when its key is gone.
    pub(crate) fn unseal(
        &self,
        keys: &mut KeyCache,
        segment: SegmentId,
        offset: u32,
        meta: &RecordMeta,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let corrupt = |damage| Error::Corrupt {
            segment,
            offset: u64::from(offset),
            damage,
        };
        if !is_sealed(payload) {
            return Err(corrupt(Damage::Unsealed));
        }
        let id = envelope_key(payload).ok_or(corrupt(Damage::Unauthenticated))?;
        let epoch = self.epoch.load(Ordering::Acquire);
        let key = match keys.0.take() {
            Some((e, key)) if e == epoch && key.id == id => key,
            _ => self.key_to_open(segment, offset, id)?,
        };
        let plain = key.open(meta, payload);
        keys.0 = Some((epoch, key));
        plain.ok_or(corrupt(Damage::Unauthenticated))
    }

    /// The data key `id` to open a record at `offset` of `segment` with.
    ///
    /// # Errors
    /// [`Error::KeyDestroyed`] when `KEYS` (read again first, as another process may have
    /// created the key since) does not hold it; as [`Crypt::data_key`].
    fn key_to_open(&self, segment: SegmentId, offset: u32, id: u64) -> Result<DataKey> {
        let cached = self.ring().keys.get(&id).and_then(|s| s.key.get().cloned());
        if let Some(key) = cached {
            return Ok(key);
        }
        if !self.ring().keys.contains_key(&id) {
            let _ = self.refresh();
        }
        if !self.ring().keys.contains_key(&id) {
            return Err(Error::KeyDestroyed {
                segment,
                offset: u64::from(offset),
                key: id,
            });
        }
        self.data_key(id)
    }
}

/// The data key a read used last, so a read of many messages sealed under one key looks it
/// up once. Stale once any key may have been destroyed (an epoch of the ring's changes).
#[derive(Debug, Default)]
pub(crate) struct KeyCache(Option<(u64, DataKey)>);

/// A new header: a new file id, the secret wrapped under `master`, `durable_end`.
fn new_header(
    vfs: &dyn Vfs,
    master: &MasterKey,
    secret: &[u8; 32],
    durable_end: u64,
) -> Result<Header> {
    let mut id = [0u8; 8];
    fill_random(vfs, &mut id)?;
    let mut header = Header {
        file_id: u64::from_le_bytes(id),
        secret: [0; WRAPPED_LEN],
        durable_end: Some(durable_end),
    };
    header.secret = envelope::wrap(vfs, master.bytes(), &header.binding(), secret)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::keyfile::KEYS_HEADER_LEN;
    use crate::io::OpenMode;
    use crate::io::sim::SimFs;
    use crate::recovery::Keys;

    /// A version 1 `KEYS` (no durable end: its writers synced each entry) is read, judged
    /// by nothing, and rewritten as version 2 by `upgrade`, its keys kept.
    #[test]
    fn a_version_1_key_file_is_read_and_upgraded() {
        let fs = SimFs::new(1);
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        let dir = Path::new("/s");
        vfs.create_dir_all(dir).unwrap();
        let master = MasterKey::from_bytes([7; 32]);
        let crypt = Crypt::create(vfs.clone(), dir, &master, Lsn(1)).unwrap();
        let id = crypt.key_for("a", false, || Ok(Lsn(1))).unwrap().id;
        // The same keys, as a version 1 file.
        let mut v1 = Header {
            file_id: 5,
            secret: [0; WRAPPED_LEN],
            durable_end: None,
        };
        let secret = crypt.ring().secret.clone();
        v1.secret = envelope::wrap(&*vfs, master.bytes(), &v1.binding(), &secret).unwrap();
        let mut bytes = v1.encode();
        for e in crypt.ring().without(&HashSet::new()).0 {
            e.encode(&mut bytes);
        }
        let path = dir.join(KEYS_FILE);
        fs.write_file(&path, &bytes);
        let old = Crypt::load(vfs.clone(), dir, &master).unwrap();
        assert_eq!(old.durable_end(), None);
        assert!(old.holds(id).unwrap());
        // Another process read it too, before this one upgraded it and added a key.
        let other = Crypt::load(vfs.clone(), dir, &master).unwrap();
        old.upgrade(Lsn(9)).unwrap();
        let file = fs.read_file(&path).unwrap();
        assert_eq!((file[8], file[10]), (2, KEYS_HEADER_LEN as u8));
        let added = old.key_for("b", false, || Ok(Lsn(9))).unwrap().id;
        // Its upgrade reads the file again: nothing to do, and the new key stays.
        other.upgrade(Lsn(5)).unwrap();
        let new = Crypt::load(vfs, dir, &master).unwrap();
        assert_eq!(new.durable_end(), Some(Lsn(9)));
        assert!(new.holds(id).unwrap() && new.holds(added).unwrap());
        assert_eq!(*new.ring().secret, *secret);
    }

    /// A refresh through a handle opened before a rewrite (a reader thread racing a delete
    /// in this process) never puts the old file's keys back: a destroyed key stays gone.
    #[test]
    fn a_refresh_through_a_handle_older_than_a_rewrite_keeps_the_rewrite() {
        let vfs: Arc<dyn Vfs> = Arc::new(SimFs::new(2));
        let dir = Path::new("/s");
        vfs.create_dir_all(dir).unwrap();
        let master = MasterKey::from_bytes([9; 32]);
        let crypt = Crypt::create(vfs.clone(), dir, &master, Lsn(1)).unwrap();
        let gone = crypt.key_for("a", false, || Ok(Lsn(1))).unwrap().id;
        let kept = crypt.key_for("b", false, || Ok(Lsn(1))).unwrap().id;
        let before = vfs.open(&dir.join(KEYS_FILE), OpenMode::Read).unwrap();
        assert_eq!(crypt.drop_sessions(&["a"], || Ok(Lsn(3))).unwrap(), 1);
        crypt.refresh_from(&*before).unwrap();
        let r = crypt.ring();
        assert!(!r.keys.contains_key(&gone) && r.keys.contains_key(&kept));
        assert_eq!(r.durable_end, Some(3));
    }
}
