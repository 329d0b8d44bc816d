//! Retention: which sessions a compaction deletes first, for their age or the store's size.

use std::time::Duration;

use super::{State, Store};
use crate::error::Result;
use crate::id::Timestamp;

/// Which sessions [`Store::compact`] deletes before it rewrites the log (see
/// [`super::Options::retention`]): those idle longer than `idle_for`, then, least recently
/// appended first, as many as it takes to keep at most `max_sessions` sessions and
/// `max_bytes` bytes of messages (their JSON, as stored). Each is deleted as
/// [`Store::delete_session`] does (a logged record), so the rest of the compaction erases it.
/// The default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Delete sessions whose last message is older than this.
    pub idle_for: Option<Duration>,
    /// Keep at most this many sessions (the most recently appended).
    pub max_sessions: Option<usize>,
    /// Keep at most this many bytes of messages (the most recently appended sessions).
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Keeps everything (the default).
    #[must_use]
    pub fn keep_all() -> Retention {
        Retention::default()
    }

    /// Deletes sessions idle longer than `idle`.
    #[must_use]
    pub fn idle_for(mut self, idle: Duration) -> Retention {
        self.idle_for = Some(idle);
        self
    }

    /// Keeps at most `n` sessions.
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Retention {
        self.max_sessions = Some(n);
        self
    }

    /// Keeps at most `bytes` bytes of messages.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Retention {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether it would ever delete anything.
    #[must_use]
    pub fn is_keep_all(&self) -> bool {
        *self == Retention::default()
    }

    /// The sessions of `state` it deletes at `now`, sorted, each with its last message's
    /// timestamp.
    fn victims(&self, state: &State, now: Timestamp) -> Result<Vec<(String, Timestamp)>> {
        let mut sessions: Vec<(Timestamp, &str)> =
            state.index.iter().map(|(id, s)| (s.last(), id)).collect();
        // Most recently appended first (ties by id, so the choice is deterministic).
        sessions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let cutoff = self.idle_for.map(|d| {
            Timestamp(
                now.0
                    .saturating_sub(d.as_micros().try_into().unwrap_or(u64::MAX)),
            )
        });
        let mut kept_bytes = 0u64;
        let mut victims = Vec::new();
        for (i, (last, id)) in sessions.into_iter().enumerate() {
            let idle = cutoff.is_some_and(|c| last < c);
            let too_many = self.max_sessions.is_some_and(|n| i >= n);
            let too_big = match self.max_bytes {
                Some(max) => {
                    kept_bytes = kept_bytes.saturating_add(message_bytes(state, id)?);
                    kept_bytes > max
                }
                None => false,
            };
            if idle || too_many || too_big {
                victims.push((id.to_owned(), last));
            }
        }
        victims.sort();
        Ok(victims)
    }
}

/// The bytes of `session`'s messages (their JSON as stored).
fn message_bytes(state: &State, session: &str) -> Result<u64> {
    let Some(s) = state.index.get(session) else {
        return Ok(0);
    };
    let snapshot = s.snapshot(1..s.count() + 1);
    let mut total = 0;
    for i in snapshot.range() {
        let Some(p) = snapshot.get(i) else { continue };
        if let Some(seg) = state.segments.get(p.seg as usize) {
            total += seg.read_at(p.off)?.payload.len() as u64;
        }
    }
    Ok(total)
}

impl Store {
    /// Deletes the sessions `rule` selects now; returns them, sorted.
    ///
    /// # Errors
    /// As [`Store::delete_session`]; [`crate::Error::Corrupt`] if a message cannot be read to
    /// count its bytes.
    pub(super) fn apply_retention(&self, rule: Retention) -> Result<Vec<String>> {
        if rule.is_keep_all() {
            return Ok(Vec::new());
        }
        let victims = rule.victims(&self.view(), self.inner.opts.vfs.now())?;
        let mut deleted = Vec::new();
        for (s, last) in victims {
            // Unless a message landed since it was chosen (then it is no longer idle).
            if self.delete_session_if(&s, |now| now == Some(last))? {
                deleted.push(s);
            }
        }
        Ok(deleted)
    }
}
