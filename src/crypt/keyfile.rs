//! The `KEYS` file: the store's data keys, wrapped by the master key.
//!
//! ```text
//! header (88 bytes)
//! offset size field
//!   0     8  magic        b"CVLGKEYS"
//!   8     2  version      1
//!  10     2  header len   88
//!  12     4  reserved     0
//!  16     8  file id      random, new at every rewrite (appends keep it)
//!  24    60  secret       the store's HMAC secret for idempotency keys, wrapped with
//!                         AES-256-GCM under the master key: nonce 12 (random),
//!                         ciphertext 32, tag 16 (associated data: bytes 0..24)
//!  84     4  header CRC   CRC-32 of bytes 0..84
//!
//! entries, back to back, appended (and synced) one at a time
//!   0     4  length       u32: the whole entry, these 8 bytes included
//!   4     4  CRC          CRC-32 of bytes 8..length
//!   8     1  kind         1 key, 2 share
//! key:   9 8 key id (u64, random, never 0); 17 2 owner length n (0: its session was
//!        deleted and only forks still reach it); 19 n owner (session id);
//!        19+n 60 the data key, wrapped as the secret is (associated data:
//!        b"convlog data key" + key id)
//! share: 9 2 sharer length n; 11 n sharer (a fork); 11+n 4 count c; then c key ids (u64):
//!        the fork reaches records sealed under them (its source's keys when it forked)
//! ```
//!
//! The entries end at the first one that does not verify (a torn append: the next writer
//! writes over it). A rewrite (a key destroyed, a rekey) writes the whole file anew under a
//! temporary name and renames it over `KEYS`.

use std::path::Path;

use super::envelope::WRAPPED_LEN;
use crate::error::{Error, Result};
use crate::format::{le_u16, le_u32, le_u64};

/// Name of the key file in an encrypted store's directory.
pub const KEYS_FILE: &str = "KEYS";
/// First bytes of a key file.
const KEYS_MAGIC: [u8; 8] = *b"CVLGKEYS";
/// The key file version this build reads and writes.
const KEYS_VERSION: u16 = 1;
/// Offset of the version.
const KH_VERSION: usize = 8;
/// Offset of the header length.
const KH_LEN: usize = 10;
/// Offset of the reserved word.
const KH_RESERVED: usize = 12;
/// Offset of the file id.
const KH_FILE_ID: usize = 16;
/// Offset of the wrapped secret.
const KH_SECRET: usize = 24;
/// Offset of the header CRC.
const KH_CRC: usize = KH_SECRET + WRAPPED_LEN;
/// Length of the header.
pub(crate) const KEYS_HEADER_LEN: usize = KH_CRC + 4;
/// Entry kind: a data key.
const ENTRY_KEY: u8 = 1;
/// Entry kind: a fork's shares.
const ENTRY_SHARE: u8 = 2;
/// Longest entry read: a share listing a million keys.
const MAX_ENTRY_LEN: usize = 8 << 20;

/// What the header holds.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) file_id: u64,
    pub(crate) secret: [u8; WRAPPED_LEN],
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Key {
        id: u64,
        owner: Option<Box<str>>,
        wrapped: [u8; WRAPPED_LEN],
    },
    Share {
        sharer: Box<str>,
        keys: Vec<u64>,
    },
}

/// The associated data a data key is wrapped with.
pub(crate) fn key_binding(id: u64) -> [u8; 24] {
    let mut ad = [0u8; 24];
    ad[..16].copy_from_slice(b"convlog data key");
    ad[16..].copy_from_slice(&id.to_le_bytes());
    ad
}

impl Header {
    /// The first 24 bytes, which the wrapped secret is bound to.
    pub(crate) fn binding(file_id: u64) -> [u8; KH_SECRET] {
        let mut b = [0u8; KH_SECRET];
        b[..8].copy_from_slice(&KEYS_MAGIC);
        b[KH_VERSION..KH_LEN].copy_from_slice(&KEYS_VERSION.to_le_bytes());
        b[KH_LEN..KH_RESERVED].copy_from_slice(&(KEYS_HEADER_LEN as u16).to_le_bytes());
        b[KH_FILE_ID..KH_SECRET].copy_from_slice(&file_id.to_le_bytes());
        b
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(KEYS_HEADER_LEN);
        b.extend_from_slice(&Header::binding(self.file_id));
        b.extend_from_slice(&self.secret);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header at the start of `bytes`.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if it is short, damaged or of another version.
    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Header> {
        let bad = |reason: &'static str| Error::KeyFile {
            path: path.to_owned(),
            offset: 0,
            reason,
        };
        let h = bytes
            .get(..KEYS_HEADER_LEN)
            .ok_or_else(|| bad("shorter than its header"))?;
        if h[..8] != KEYS_MAGIC {
            return Err(bad("bad magic: not a convlog key file"));
        }
        if crc32fast::hash(&h[..KH_CRC]) != le_u32(h, KH_CRC) {
            return Err(bad("header checksum mismatch"));
        }
        if le_u16(h, KH_VERSION) != KEYS_VERSION
            || usize::from(le_u16(h, KH_LEN)) != KEYS_HEADER_LEN
            || le_u32(h, KH_RESERVED) != 0
        {
            return Err(bad("unsupported key file version"));
        }
        let mut secret = [0u8; WRAPPED_LEN];
        secret.copy_from_slice(&h[KH_SECRET..KH_CRC]);
        Ok(Header {
            file_id: le_u64(h, KH_FILE_ID),
            secret,
        })
    }
}

impl Entry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        match self {
            Entry::Key { id, owner, wrapped } => {
                out.push(ENTRY_KEY);
                out.extend_from_slice(&id.to_le_bytes());
                let owner = owner.as_deref().unwrap_or("");
                out.extend_from_slice(&(owner.len() as u16).to_le_bytes());
                out.extend_from_slice(owner.as_bytes());
                out.extend_from_slice(wrapped);
            }
            Entry::Share { sharer, keys } => {
                out.push(ENTRY_SHARE);
                out.extend_from_slice(&(sharer.len() as u16).to_le_bytes());
                out.extend_from_slice(sharer.as_bytes());
                out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
                for k in keys {
                    out.extend_from_slice(&k.to_le_bytes());
                }
            }
        }
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The entry at the start of `bytes` and its length, if a whole valid one is there.
    fn decode(bytes: &[u8]) -> Option<(Entry, usize)> {
        let len = usize::try_from(le_u32(bytes.get(..8)?, 0)).ok()?;
        if !(9..=MAX_ENTRY_LEN).contains(&len) {
            return None;
        }
        let e = bytes.get(..len)?;
        if crc32fast::hash(&e[8..]) != le_u32(e, 4) {
            return None;
        }
        let mut r = Fields(&e[9..]);
        let entry = match e[8] {
            ENTRY_KEY => {
                let id = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
                let n = usize::from(u16::from_le_bytes(r.take(2)?.try_into().ok()?));
                let owner = std::str::from_utf8(r.take(n)?).ok()?;
                let wrapped = r.take(WRAPPED_LEN)?.try_into().ok()?;
                Entry::Key {
                    id,
                    owner: (!owner.is_empty()).then(|| owner.into()),
                    wrapped,
                }
            }
            ENTRY_SHARE => {
                let n = usize::from(u16::from_le_bytes(r.take(2)?.try_into().ok()?));
                let sharer = std::str::from_utf8(r.take(n)?).ok()?.into();
                let c = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
                let ids = r.take(c.checked_mul(8)?)?;
                let keys = ids
                    .chunks_exact(8)
                    .map(|k| u64::from_le_bytes(k.try_into().unwrap_or_default()))
                    .collect();
                Entry::Share { sharer, keys }
            }
            _ => return None,
        };
        r.0.is_empty().then_some((entry, len))
    }
}

/// What follows the valid entries of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the file ends there.
    Clean,
    /// Bytes that hold no valid entry: an append a crash cut (any of its sectors may be
    /// missing). The next appender sets them aside and rewrites the file without them.
    Torn,
    /// An entry that does not verify with a valid entry after it: damage, never a torn
    /// append (entries are appended at the end only, each synced before the next, so a
    /// torn one is the last). The price of the rule, as for a segment's torn tail: damage
    /// to the last entry reads as a torn append (its bytes are kept in `quarantine/`).
    Damaged,
}

/// The entries in `bytes` from offset `from`, where the valid ones end, and what follows.
pub(crate) fn entries(bytes: &[u8], from: usize) -> (Vec<Entry>, usize, Tail) {
    let mut out = Vec::new();
    let mut at = from;
    while let Some((e, len)) = bytes.get(at..).and_then(Entry::decode) {
        out.push(e);
        at += len;
    }
    let rest = &bytes[at.min(bytes.len())..];
    let tail = if rest.is_empty() {
        Tail::Clean
    } else if (1..rest.len()).any(|p| Entry::decode(&rest[p..]).is_some()) {
        Tail::Damaged
    } else {
        Tail::Torn
    };
    (out, at, tail)
}

/// A cursor over an entry's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_end_at_a_torn_one() {
        let header = Header {
            file_id: 42,
            secret: [5; WRAPPED_LEN],
        };
        let mut file = header.encode();
        assert_eq!(file.len(), KEYS_HEADER_LEN);
        let written = vec![
            Entry::Key {
                id: 7,
                owner: Some("s".into()),
                wrapped: [1; WRAPPED_LEN],
            },
            Entry::Share {
                sharer: "fork".into(),
                keys: vec![7, 8],
            },
            Entry::Key {
                id: 8,
                owner: None,
                wrapped: [2; WRAPPED_LEN],
            },
        ];
        for e in &written {
            e.encode(&mut file);
        }
        let whole = file.len();
        let back = Header::decode(&file, Path::new("KEYS")).unwrap();
        assert_eq!((back.file_id, back.secret), (42, [5; WRAPPED_LEN]));
        assert_eq!(
            entries(&file, KEYS_HEADER_LEN),
            (written.clone(), whole, Tail::Clean)
        );
        // A torn last entry (cut short, or whole but for a sector): the others, then Torn.
        let mut torn = file.clone();
        written[0].encode(&mut torn);
        let mut cut = torn.clone();
        cut.truncate(torn.len() - 3);
        assert_eq!(
            entries(&cut, KEYS_HEADER_LEN),
            (written.clone(), whole, Tail::Torn)
        );
        let last = torn.len() - 1;
        torn[last] ^= 1;
        assert_eq!(
            entries(&torn, KEYS_HEADER_LEN),
            (written.clone(), whole, Tail::Torn)
        );
        // A flipped bit in an entry with entries after it is damage, not a torn append.
        let mut flipped = file.clone();
        flipped[KEYS_HEADER_LEN + 12] ^= 1;
        let (_, end, tail) = entries(&flipped, KEYS_HEADER_LEN);
        assert_eq!((end, tail), (KEYS_HEADER_LEN, Tail::Damaged));
        let mut bad = file.clone();
        bad[KH_FILE_ID] ^= 1;
        let e = Header::decode(&bad, Path::new("KEYS")).unwrap_err();
        assert!(matches!(e, Error::KeyFile { offset: 0, .. }), "{e}");
    }
}
