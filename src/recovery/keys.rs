//! Where a power cut took an encrypted store's keys away: the one cut recovery makes for
//! them.
//!
//! A new data key's entry goes to `KEYS` unsynced, and every `fdatasync` of a segment syncs
//! `KEYS` first (`crypt::ring`). So a record whose key `KEYS` lacks after a crash, if it
//! was written after `KEYS` was (its LSN at or past the file's *durable end*), was written
//! after the last sync that anyone acknowledged, and so was every record after it: the log
//! ends before its unit, as at a torn write. A key is also missing when it was destroyed,
//! which happens only in a rewrite of `KEYS`, once the delete is durable: every record
//! sealed under it lies before the rewrite's durable end, and is no reason to cut (it reads
//! as `Error::KeyDestroyed`; a copy of old segments beside a newer `KEYS` is such a case).
//!
//! Only the last segment's records past its durable point are judged: sealed segments were
//! synced (their keys first) before their successors were created.

use crate::crypt::{envelope_key, sealed_kind};
use crate::error::Result;
use crate::id::Lsn;
use crate::segment::Record;

/// What recovery asks of an encrypted store's keys.
pub(crate) trait Keys {
    /// Every record with a smaller LSN was durable when `KEYS` was written; `None` when
    /// the file does not say (a version 1 file, whose keys were never lost).
    fn durable_end(&self) -> Option<Lsn>;

    /// Whether `KEYS` holds the data key `id` (read again when it seems not to: another
    /// process may have appended the entry since).
    ///
    /// # Errors
    /// Reading `KEYS`: [`crate::Error::Io`], [`crate::Error::KeyFile`].
    fn holds(&self, id: u64) -> Result<bool>;
}

/// Whether `r` is sealed under a key a power cut took away: `KEYS` lacks it (read again
/// first) and `r` is not older than the file's durable end. The one rule recovery and a
/// catch-up both judge records by.
///
/// # Errors
/// Those of [`Keys::holds`].
pub(crate) fn is_lost(keys: &dyn Keys, r: &Record<'_>) -> Result<bool> {
    // (A durable end read before `holds` read the file again is no greater than after:
    // a record before it is surely not lost.)
    if keys.durable_end().is_none_or(|end| r.meta.lsn < end) {
        return Ok(false);
    }
    let Some(id) = envelope_key(r.payload).filter(|_| sealed_kind(r.meta.kind)) else {
        return Ok(false);
    };
    if keys.holds(id)? {
        return Ok(false);
    }
    Ok(keys.durable_end().is_some_and(|end| r.meta.lsn >= end))
}

/// The start of the first of `unit`'s records (a committed unit) if one is sealed under a
/// lost key ([`is_lost`]), ignoring those before `durable` (an offset below which the
/// segment is known durable).
///
/// # Errors
/// Those of [`Keys::holds`].
pub(crate) fn lost_unit(keys: &dyn Keys, unit: &[Record<'_>], durable: u64) -> Result<Option<u64>> {
    for r in unit.iter().filter(|r| r.offset >= durable) {
        if is_lost(keys, r)? {
            return Ok(unit.first().map(|f| f.offset));
        }
    }
    Ok(None)
}
