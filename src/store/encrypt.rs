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
}
