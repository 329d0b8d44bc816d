//! Session operations beyond appending: idempotent (keyed) appends, forks, and replacing a
//! session whole. Each is one committed unit written through `write_events`.

use std::borrow::Cow;

use serde::Serialize;

use super::validate::validate_object;
use super::write::{Event, appends, check_expected};
use super::{Receipt, SessionVersion, Store, validate_session_id};
use crate::error::{Error, Result};
use crate::format::{Kind, MAX_KEY_LEN};

impl Store {
    /// Appends `message` under the idempotency key `key` (1 to 256 bytes): if `session`
    /// already holds a message appended with `key`, its original [`Receipt`] comes back and
    /// nothing is written, also after a reopen or a crash (the key is logged in the same unit
    /// as the message). A key is remembered while the messages it names are in the session:
    /// a pop, truncate or clear that removes them forgets it.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty or over-long key; otherwise as [`Store::append`].
    pub fn append_with_key<T: Serialize + ?Sized>(
        &self,
        session: &str,
        key: &str,
        message: &T,
    ) -> Result<Receipt> {
        let payload = self.serialize(session, message)?;
        self.append_keyed(session, key, vec![Cow::Owned(payload)])
            .map(|r| r[0])
    }

    /// [`Store::append_with_key`] for raw JSON objects, stored byte for byte; a batch, all or
    /// nothing, named by one key (a retry returns every original receipt).
    ///
    /// # Errors
    /// As [`Store::append_with_key`] and [`Store::append_batch_raw`].
    pub fn append_batch_raw_with_key<B: AsRef<[u8]>>(
        &self,
        session: &str,
        key: &str,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        for m in messages {
            validate_object(session, m.as_ref())?;
        }
        let payloads = messages.iter().map(|m| Cow::Borrowed(m.as_ref())).collect();
        self.append_keyed(session, key, payloads)
    }

    fn append_keyed(
        &self,
        session: &str,
        key: &str,
        payloads: Vec<Cow<'_, [u8]>>,
    ) -> Result<Vec<Receipt>> {
        validate_session_id(session)?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey {
                session: session.to_owned(),
                reason: if key.is_empty() {
                    "empty"
                } else {
                    "longer than 256 bytes"
                },
            });
        }
        self.check_sizes(session, payloads.iter().map(|p| p.len()))?;
        // (An empty batch writes nothing, but a key the session remembers still returns its
        // receipts: the empty batch is then a retry.)
        let token = self.key_token(key.as_bytes());
        self.write_events(session, Some(&token), |count| Ok(appends(count, payloads)))
    }

    /// What the idempotency key `key` is logged (and looked up) as: the key itself, or in an
    /// encrypted store its HMAC under the store's secret (the key never reaches the disk).
    fn key_token<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        match &self.inner.crypt {
            Some(crypt) => Cow::Owned(crypt.digest(key).to_vec()),
            None => Cow::Borrowed(key),
        }
    }

    /// Starts `dst` as the first `at` messages of `src` (all of them with `None`; at most
    /// all), sharing them: one logged record and O(1) time, whatever `src`'s length. `dst`'s
    /// interaction ids go on from `at + 1`; from then on the two are independent: no pop,
    /// truncate or clear of `src` changes `dst`'s prefix, nor the reverse. A fork of a fork
    /// works. Returns how many messages `dst` holds (0, and nothing logged, when there are
    /// none to share).
    ///
    /// # Errors
    /// [`Error::SessionExists`] when `dst` holds messages; [`Error::InvalidSessionId`];
    /// [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`].
    pub fn fork(&self, src: &str, dst: &str, at: Option<u64>) -> Result<u64> {
        validate_session_id(src)?;
        validate_session_id(dst)?;
        let mut shared = 0;
        self.write_events_with(dst, None, |w, count| {
            if count > 0 {
                return Err(Error::SessionExists {
                    session: dst.to_owned(),
                });
            }
            let available = self.state().index.count(src);
            shared = at.map_or(available, |at| at.min(available));
            if shared == 0 || src == dst {
                shared = 0;
                return Ok(Vec::new());
            }
            if let Some(crypt) = &self.inner.crypt {
                // The fork reaches the source's sealed records: it shares (and so freezes)
                // its keys, synced before the fork is logged. Keys a past `dst` left (a crash
                // before their destruction) go first.
                if self.state().index.is_deleted(dst) {
                    crypt.drop_sessions(&[dst], || self.durable_now(w))?;
                }
                crypt.share(src, dst)?;
            }
            Ok(vec![Event {
                kind: Kind::Fork,
                arg: shared,
                payload: Cow::Borrowed(src.as_bytes()),
            }])
        })?;
        Ok(shared)
    }

    /// Makes `session` exactly `messages` (raw JSON objects, stored byte for byte), as one
    /// committed unit: after a crash at any instant it holds its old history or the new one,
    /// never neither, and a concurrent reader sees one or the other. The new messages get
    /// interaction ids `1..=n`. With `expected_next_id`, nothing changes unless the session's
    /// next interaction id is that one (no append landed since the caller read it).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the next id differs; otherwise as [`Store::append_raw`], for
    /// any message; then nothing changes.
    pub fn replace<B: AsRef<[u8]>>(
        &self,
        session: &str,
        expected_next_id: Option<u64>,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        self.replace_checked(session, messages, |count| {
            check_expected(session, expected_next_id, count)
        })
    }

    /// [`Store::replace`] if `session` is still at the version `expected` (read with
    /// [`Store::version`]): checked under the write lock, so no change of any process in
    /// between goes unnoticed, not even a pop then an append (same count, another last
    /// message).
    ///
    /// # Errors
    /// [`Error::Conflict`] when its count differs, [`Error::Changed`] when its last message
    /// does; otherwise as [`Store::replace`]. Then nothing changes.
    pub fn replace_if<B: AsRef<[u8]>>(
        &self,
        session: &str,
        expected: SessionVersion,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        self.replace_checked(session, messages, |count| {
            check_expected(session, Some(expected.next_id), count)?;
            let actual = self.version(session)?;
            if actual != expected {
                return Err(Error::Changed {
                    session: session.to_owned(),
                    expected: expected.last_lsn,
                    actual: actual.last_lsn,
                });
            }
            Ok(())
        })
    }

    /// [`Store::replace`] after `check` passes on the session's count, under the write lock.
    fn replace_checked<B: AsRef<[u8]>>(
        &self,
        session: &str,
        messages: &[B],
        check: impl FnOnce(u64) -> Result<()>,
    ) -> Result<Vec<Receipt>> {
        validate_session_id(session)?;
        for m in messages {
            validate_object(session, m.as_ref())?;
        }
        self.check_sizes(session, messages.iter().map(|m| m.as_ref().len()))?;
        let mut cleared = false;
        let mut receipts = self.write_events(session, None, |count| {
            check(count)?;
            cleared = count > 0;
            let clear = cleared.then(|| Event {
                kind: Kind::Clear,
                arg: count,
                payload: Cow::Borrowed(&[][..]),
            });
            let appends = messages.iter().enumerate().map(|(i, m)| Event {
                kind: Kind::Append,
                arg: i as u64 + 1,
                payload: Cow::Borrowed(m.as_ref()),
            });
            Ok(clear.into_iter().chain(appends).collect())
        })?;
        if cleared {
            receipts.remove(0);
        }
        Ok(receipts)
    }
}

/// The receipts of the appends the idempotency key `key` names in `session`, if the append
/// `first_id` (the index's candidate for it) carries it: the index keeps keys as hashes, so
/// a hit is confirmed here, against the key block of that record, which also gives the
/// unit's LSNs, timestamp and size.
///
/// # Errors
/// [`Error::Io`] when the record cannot be read, [`Error::Corrupt`] when it fails its
/// checks: whether the key is logged is then unknown, and the caller must write nothing (a
/// retry would otherwise append its messages twice).
pub(super) fn logged_receipts(
    state: &super::State,
    session: &str,
    key: &[u8],
    first_id: u64,
) -> Result<Option<Vec<Receipt>>> {
    let Some(s) = state.index.get(session) else {
        return Ok(None);
    };
    let Some(first) = s.snapshot(first_id..first_id + 1).get(first_id - 1) else {
        return Ok(None);
    };
    let Some(segment) = state.segments.get(first.seg as usize) else {
        return Ok(None);
    };
    let (meta, logged) = segment.key_at(first.off)?;
    let Some(logged) = logged.filter(|k| k.key == key) else {
        return Ok(None);
    };
    Ok(Some(
        (0..u64::from(logged.count))
            .map(|i| Receipt {
                lsn: crate::id::Lsn(meta.lsn.0 + i),
                interaction_id: first_id + i,
                timestamp: meta.timestamp,
            })
            .collect(),
    ))
}
