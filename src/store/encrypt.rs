//! An encrypted store's key operations: rotating the master key.

use super::Store;
use crate::crypt::MasterKey;
use crate::error::{Error, Result};

impl Store {
    /// Whether the store is encrypted (opened with [`crate::Options::encryption`] and
    /// holding a `KEYS` file).
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.inner.crypt.is_some()
    }

    /// Wraps every data key anew under `new` without rewriting any segment, crash-atomically
    /// (one rename replaces `KEYS`): from then on the store opens with `new` only. Returns
    /// how many data keys it rewrapped. Other processes that have the store open keep the
    /// data keys they hold; their next change to `KEYS` fails with [`Error::WrongKey`].
    ///
    /// # Errors
    /// [`Error::NotEncrypted`] for a store without encryption; [`Error::ReadOnly`],
    /// [`Error::Poisoned`], [`Error::WrongKey`], [`Error::KeyFile`], [`Error::Io`]: then
    /// the old key still opens the store.
    pub fn rekey(&self, new: &MasterKey) -> Result<usize> {
        let Some(crypt) = &self.inner.crypt else {
            return Err(Error::NotEncrypted {
                path: self.inner.dir.clone(),
            });
        };
        self.with_write_turn(|_| crypt.rekey(new))
    }

    /// Refuses a write to a store without `KEYS` whose messages are sealed: its key file
    /// was lost (moved or deleted), and the write would add plaintext beside them (and a
    /// delete could destroy no key). Checked in the first write turn of an open, once
    /// caught up (not at the open, which then reads no message it does not need): one
    /// message is read, since every message of an encrypted store is sealed.
    ///
    /// # Errors
    /// [`Error::KeyFile`] saying `KEYS` is missing.
    pub(super) fn refuse_if_keys_lost(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.inner.crypt.is_some() || self.inner.plaintext_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        // (Under the write turn, caught up: the index is current.)
        let probe = self
            .state()
            .index
            .iter()
            .find(|(_, s)| s.count() > 0)
            .map(|(name, s)| (name.to_owned(), s.count()));
        let Some((session, last)) = probe else {
            return Ok(()); // no message yet: the next write looks again
        };
        match self.read_entry(&session, last) {
            Err(Error::KeyRequired { .. }) => Err(Error::KeyFile {
                path: self.inner.dir.join(crate::crypt::KEYS_FILE),
                offset: 0,
                reason: "missing, but the store's messages are sealed: put it back (from a \
                         backup) and open the store with its master key",
            }),
            Ok(_) => {
                self.inner.plaintext_checked.store(true, Ordering::Release);
                Ok(())
            }
            // The message could not be read: the write goes on; the next one looks again.
            Err(_) => Ok(()),
        }
    }
}
