//! Session metadata: a small JSON object per session (a title, a user, tags), logged like
//! every change; the latest one wins.

use std::borrow::Cow;

use serde::Serialize;

use super::{SessionInfo, Store, validate_session_id};
use crate::error::{Error, Result};
use crate::format::Kind;
use crate::id::Lsn;

/// The largest metadata object accepted, in bytes of JSON.
pub const MAX_META_LEN: usize = 64 << 10;

impl Store {
    /// Sets `session`'s metadata to `meta` (any `Serialize` value whose JSON is an object),
    /// replacing any earlier one; returns the record's LSN. A session may have metadata
    /// before it has messages; a `clear` keeps it.
    ///
    /// # Errors
    /// [`Error::InvalidSessionId`]; [`Error::InvalidMetadata`] when `meta` is not a JSON
    /// object (or fails to serialize); [`Error::RecordTooLarge`] over [`MAX_META_LEN`]; as
    /// [`Store::append`].
    pub fn set_meta<T: Serialize + ?Sized>(&self, session: &str, meta: &T) -> Result<Lsn> {
        let json = self.serialize(session, meta).map_err(as_metadata)?;
        self.set_meta_raw(session, &json)
    }

    /// [`Store::set_meta`] for a raw JSON object, stored byte for byte.
    ///
    /// # Errors
    /// As [`Store::set_meta`].
    pub fn set_meta_raw(&self, session: &str, json: &[u8]) -> Result<Lsn> {
        validate_session_id(session)?;
        super::validate::validate_object(session, json).map_err(as_metadata)?;
        if json.len() > MAX_META_LEN {
            return Err(Error::RecordTooLarge {
                session: session.to_owned(),
                len: json.len() as u64,
                max: MAX_META_LEN as u64,
            });
        }
        let receipts = self.write_events(session, None, |_| {
            Ok(vec![super::write::Event {
                kind: Kind::Meta,
                arg: 0,
                payload: Cow::Borrowed(json),
            }])
        })?;
        Ok(receipts.first().map_or(Lsn(0), |r| r.lsn))
    }

    /// `session`'s metadata, as the JSON bytes stored; `None` when it has none.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the record fails its checksums; [`Error::Io`].
    pub fn meta(&self, session: &str) -> Result<Option<Vec<u8>>> {
        let (pos, segment) = {
            let state = self.view();
            let Some(pos) = state.index.meta(session) else {
                return Ok(None);
            };
            (pos, state.segments.get(pos.seg as usize).cloned())
        };
        let Some(segment) = segment else {
            return Ok(None);
        };
        let crypt = self.inner.crypt.as_deref();
        let keys = &mut crate::crypt::KeyCache::default();
        super::read::read_message(crypt, keys, &segment, pos.off, Kind::Meta)
            .map(|r| Some(r.payload))
    }

    /// The live sessions whose metadata has `key` equal to `value`, sorted by id.
    ///
    /// # Errors
    /// As [`Store::meta`], for any session read.
    pub fn sessions_where(&self, key: &str, value: &serde_json::Value) -> Result<Vec<SessionInfo>> {
        let mut out = Vec::new();
        for s in self.sessions() {
            let Some(json) = self.meta(&s.id)? else {
                continue;
            };
            let meta: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&json).unwrap_or_default();
            if meta.get(key) == Some(value) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// A message check's [`Error::InvalidMessage`], said of metadata.
fn as_metadata(e: Error) -> Error {
    match e {
        Error::InvalidMessage { session, reason } => Error::InvalidMetadata { session, reason },
        e => e,
    }
}
