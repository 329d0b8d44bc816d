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
            if member(&json, key).is_some_and(|m| m == *value) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// The top-level member `key` of the metadata object `json` (the last, if it is there more
/// than once), as a [`serde_json::Value`]; `None` if it has none, or one that a `Value` cannot
/// hold.
///
/// Stored metadata is any object an append accepts, which is more than a `Value` can hold: a
/// string with a lone surrogate escape (which Python's `json` writes) or a number past
/// `f64`'s range, anywhere in it. Such a value elsewhere in the object must not hide the
/// member asked for, so keys are read as bytes (lone surrogates allowed), other members are
/// skipped, and only the member asked for is read as a `Value`. A member that cannot be one
/// equals no `Value`, so it matches nothing.
fn member(json: &[u8], key: &str) -> Option<serde_json::Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw = Member(key.as_bytes()).deserialize(&mut de).ok()??;
    serde_json::from_str(raw.get()).ok()
}

/// Finds a member by key in a JSON object, as raw JSON: see [`member`].
struct Member<'k>(&'k [u8]);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<KeyBytes>()? {
            if k.0 == self.0 {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A JSON object key as bytes: WTF-8 for a lone surrogate escape, which a `String` refuses.
struct KeyBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for KeyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = KeyBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<KeyBytes, E> {
                Ok(KeyBytes(v.to_vec()))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<KeyBytes, E> {
                Ok(KeyBytes(v.as_bytes().to_vec()))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// A message check's [`Error::InvalidMessage`], said of metadata.
fn as_metadata(e: Error) -> Error {
    match e {
        Error::InvalidMessage { session, reason } => Error::InvalidMetadata { session, reason },
        e => e,
    }
}
