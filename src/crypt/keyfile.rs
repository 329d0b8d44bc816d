//! The `KEYS` file: the store's data keys, wrapped by the master key.
//!
//! ```text
//! header (96 bytes)
//! offset size field
//!   0     8  magic        b"CVLGKEYS"
//!   8     2  version      2
//!  10     2  header len   96
//!  12     4  reserved     0
//!  16     8  file id      random, new at every rewrite (appends keep it)
//!  24    60  secret       the store's HMAC secret for idempotency keys, wrapped with
//!                         AES-256-GCM under the master key: nonce 12 (random),
//!                         ciphertext 32, tag 16 (associated data: bytes 0..24)
//!  84     8  durable end  u64: every record with a smaller LSN was durable when the file
//!                         was written (so a key it lacks that such a record is sealed
//!                         under was destroyed; a record at or past it may be one a power
//!                         cut took the key of)
//!  92     4  header CRC   CRC-32 of bytes 0..92
//!
//! entries, back to back, appended (unsynced: see `ring`)
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
//! Version 1 (88 bytes: no durable end, the CRC at 84, over bytes 0..84) is read too: its
//! writers synced each entry, so no key of it was ever lost. A writable open rewrites it as
//! version 2.
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
/// The key file version this build writes.
const KEYS_VERSION: u16 = 2;
/// The first version (read, and rewritten by a writable open): no durable end.
const KEYS_VERSION_1: u16 = 1;
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
/// Offset of the durable end (version 2; version 1's header CRC is there).
const KH_DURABLE_END: usize = KH_SECRET + WRAPPED_LEN;
/// Offset of the header CRC.
const KH_CRC: usize = KH_DURABLE_END + 8;
/// Length of the header.
pub(crate) const KEYS_HEADER_LEN: usize = KH_CRC + 4;
/// Length of a version 1 header.
const KEYS_V1_HEADER_LEN: usize = KH_DURABLE_END + 4;
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
    /// Every record with a smaller LSN was durable when the file was written; `None` for
    /// a version 1 file (whose keys were each synced: none was ever lost).
    pub(crate) durable_end: Option<u64>,
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
    /// The header's length.
    pub(crate) fn len(&self) -> usize {
        match self.durable_end {
            Some(_) => KEYS_HEADER_LEN,
            None => KEYS_V1_HEADER_LEN,
        }
    }

    /// The first 24 bytes, which the wrapped secret is bound to.
    pub(crate) fn binding(&self) -> [u8; KH_SECRET] {
        let version = match self.durable_end {
            Some(_) => KEYS_VERSION,
            None => KEYS_VERSION_1,
        };
        let mut b = [0u8; KH_SECRET];
        b[..8].copy_from_slice(&KEYS_MAGIC);
        b[KH_VERSION..KH_LEN].copy_from_slice(&version.to_le_bytes());
        b[KH_LEN..KH_RESERVED].copy_from_slice(&(self.len() as u16).to_le_bytes());
        b[KH_FILE_ID..KH_SECRET].copy_from_slice(&self.file_id.to_le_bytes());
        b
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        b.extend_from_slice(&self.binding());
        b.extend_from_slice(&self.secret);
        if let Some(end) = self.durable_end {
            b.extend_from_slice(&end.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header at the start of `bytes` (a version 2 header, or a version 1 one).
    ///
    /// # Errors
    /// [`Error::KeyFile`] if it is short, damaged or of another version.
    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Header> {
        let bad = |reason: &'static str| Error::KeyFile {
            path: path.to_owned(),
            offset: 0,
            reason,
        };
        let short = || bad("shorter than its header");
        let fixed = bytes.get(..KH_SECRET).ok_or_else(short)?;
        if fixed[..8] != KEYS_MAGIC {
            return Err(bad("bad magic: not a convlog key file"));
        }
        let (len, crc_at) = match le_u16(fixed, KH_VERSION) {
            KEYS_VERSION => (KEYS_HEADER_LEN, KH_CRC),
            KEYS_VERSION_1 => (KEYS_V1_HEADER_LEN, KH_DURABLE_END),
            _ => return Err(bad("unsupported key file version")),
        };
        let h = bytes.get(..len).ok_or_else(short)?;
        if crc32fast::hash(&h[..crc_at]) != le_u32(h, crc_at) {
            return Err(bad("header checksum mismatch"));
        }
        if usize::from(le_u16(h, KH_LEN)) != len || le_u32(h, KH_RESERVED) != 0 {
            return Err(bad("unsupported key file version"));
        }
        let mut secret = [0u8; WRAPPED_LEN];
        secret.copy_from_slice(&h[KH_SECRET..KH_DURABLE_END]);
        Ok(Header {
            file_id: le_u64(h, KH_FILE_ID),
            secret,
            durable_end: (len == KEYS_HEADER_LEN).then(|| le_u64(h, KH_DURABLE_END)),
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
        let len = framed_len(bytes)?;
        let e = &bytes[..len];
        if !checksum_holds(e) {
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
    /// An entry that does not verify with a valid entry after it and no sector between
    /// that never reached the disk: damage, never a torn append. (Entries are appended at
    /// the end only, several may be unsynced at a power cut, and each sector of theirs
    /// then keeps its new bytes or its old zeros: a torn entry with whole ones after it
    /// shows zeros as a torn segment does, the rule of `recovery::has_zero_sector`.) The
    /// price of the rule, as for a segment's torn tail: damage to the last entry reads as
    /// a torn append (its bytes are kept in `quarantine/`).
    Damaged,
    /// Bytes that frame too many entries to check them all in time linear in the tail
    /// (see [`first_entry_after_start`]): never what a torn append leaves, so not set
    /// aside as one.
    Unverifiable,
}

/// The entries in `bytes` (a key file's bytes from its offset `base` on) from offset
/// `from` of `bytes`, where the valid ones end, and what follows.
pub(crate) fn entries(bytes: &[u8], from: usize, base: u64) -> (Vec<Entry>, usize, Tail) {
    let mut out = Vec::new();
    let mut at = from;
    while let Some((e, len)) = bytes.get(at..).and_then(Entry::decode) {
        out.push(e);
        at += len;
    }
    let rest = &bytes[at.min(bytes.len())..];
    let file = |p: usize| base + (at + p) as u64;
    let tail = if rest.is_empty() {
        Tail::Clean
    } else {
        // A sector before `p` that never reached the disk excuses an entry at `p` and at
        // every later offset (the range only grows).
        let excused = |p| crate::recovery::has_zero_sector_in(bytes, base, file(0), file(p));
        match first_entry_after_start(rest) {
            None => Tail::Torn,
            Some(Found::Entry(p) | Found::TooMuchToCheck(p)) if excused(p) => Tail::Torn,
            Some(Found::Entry(_)) => Tail::Damaged,
            Some(Found::TooMuchToCheck(_)) => Tail::Unverifiable,
        }
    };
    (out, at, tail)
}

/// How many bytes of checksums a tail's search for an entry may compute per byte of the
/// tail: a torn append's bytes almost never frame an entry, but crafted bytes can frame
/// one (of up to 8 MiB) at every few offsets.
const TAIL_CHECK_PER_BYTE: usize = 16;

/// What the search of a tail for a valid entry found.
enum Found {
    /// An entry that verifies, at this offset of the tail.
    Entry(usize),
    /// More framed entries than [`TAIL_CHECK_PER_BYTE`] lets it check, the first one it
    /// could not check at this offset.
    TooMuchToCheck(usize),
}

/// The first offset after the start of `rest` where a valid entry starts, checking only
/// offsets whose bytes frame one, within a budget of checksum work linear in `rest`.
fn first_entry_after_start(rest: &[u8]) -> Option<Found> {
    let mut budget = rest.len().saturating_mul(TAIL_CHECK_PER_BYTE);
    for p in 1..rest.len() {
        let Some(len) = framed_len(&rest[p..]) else {
            continue;
        };
        let Some(left) = budget.checked_sub(len) else {
            return Some(Found::TooMuchToCheck(p));
        };
        budget = left;
        // (Its fields decode too: an owner that is not UTF-8 makes no entry.)
        if checksum_holds(&rest[p..p + len]) && Entry::decode(&rest[p..]).is_some() {
            return Some(Found::Entry(p));
        }
    }
    None
}

/// The length of the entry at the start of `bytes` if its length field and its fields'
/// own lengths agree and it lies within `bytes` (its checksum not yet verified).
fn framed_len(bytes: &[u8]) -> Option<usize> {
    let len = usize::try_from(le_u32(bytes.get(..8)?, 0)).ok()?;
    if !(9..=MAX_ENTRY_LEN).contains(&len) {
        return None;
    }
    let e = bytes.get(..len)?;
    let u16_at = |i: usize| {
        Some(usize::from(u16::from_le_bytes(
            e.get(i..i + 2)?.try_into().ok()?,
        )))
    };
    let fields = match e[8] {
        // id, owner length, owner, wrapped key
        ENTRY_KEY => 8 + 2 + u16_at(17)? + WRAPPED_LEN,
        // sharer length, sharer, key count, key ids
        ENTRY_SHARE => {
            let n = u16_at(9)?;
            let c = le_u32(e.get(11 + n..15 + n)?, 0) as usize;
            c.checked_mul(8)?.checked_add(2 + n + 4)?
        }
        _ => return None,
    };
    (fields.checked_add(9)? == len).then_some(len)
}

/// Whether a framed entry's checksum (bytes 4..8, over bytes 8..) holds.
fn checksum_holds(e: &[u8]) -> bool {
    crc32fast::hash(&e[8..]) == le_u32(e, 4)
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
            durable_end: Some(9),
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
        assert_eq!(
            (back.file_id, back.secret, back.durable_end),
            (42, [5; WRAPPED_LEN], Some(9))
        );
        // A version 1 header (88 bytes, no durable end) is read too.
        let v1 = Header {
            durable_end: None,
            ..header.clone()
        };
        let old = v1.encode();
        assert_eq!((old.len(), le_u16(&old, KH_VERSION)), (88, 1));
        let back = Header::decode(&old, Path::new("KEYS")).unwrap();
        assert_eq!((back.file_id, back.durable_end, back.len()), (42, None, 88));
        assert_ne!(
            v1.binding(),
            header.binding(),
            "the secret is bound to its version"
        );
        assert_eq!(
            entries(&file, KEYS_HEADER_LEN, 0),
            (written.clone(), whole, Tail::Clean)
        );
        // A torn last entry (cut short, or whole but for a sector): the others, then Torn.
        let mut torn = file.clone();
        written[0].encode(&mut torn);
        let mut cut = torn.clone();
        cut.truncate(torn.len() - 3);
        assert_eq!(
            entries(&cut, KEYS_HEADER_LEN, 0),
            (written.clone(), whole, Tail::Torn)
        );
        let last = torn.len() - 1;
        torn[last] ^= 1;
        assert_eq!(
            entries(&torn, KEYS_HEADER_LEN, 0),
            (written.clone(), whole, Tail::Torn)
        );
        // A flipped bit in an entry with entries after it is damage, not a torn append.
        let mut flipped = file.clone();
        flipped[KEYS_HEADER_LEN + 12] ^= 1;
        let (_, end, tail) = entries(&flipped, KEYS_HEADER_LEN, 0);
        assert_eq!((end, tail), (KEYS_HEADER_LEN, Tail::Damaged));
        // Entries appended unsynced, torn by a power cut: the sector holding the start of
        // one kept its old zeros, the next sector (its end, and a whole entry) landed. The
        // whole entry after it was never durable either: a torn append, not damage.
        let key = |id| Entry::Key {
            id,
            owner: Some("s".into()),
            wrapped: [3; WRAPPED_LEN],
        };
        let mut unsynced = header.encode();
        let mut starts = Vec::new();
        for id in 1.. {
            starts.push(unsynced.len());
            key(id).encode(&mut unsynced);
            if unsynced.len() > 512 + 100 {
                break;
            }
        }
        let crossing = starts
            .iter()
            .position(|s| *s < 512 && *s + 80 > 512)
            .unwrap();
        let (a, b) = (starts[crossing], starts[crossing + 1]);
        let mut torn = unsynced.clone();
        torn[a..512].fill(0);
        let (got, end, tail) = entries(&torn, KEYS_HEADER_LEN, 0);
        assert_eq!((got.len(), end, tail), (crossing, a, Tail::Torn));
        // Read from `a` on (as a refresh does), the same.
        let (_, end, tail) = entries(&torn[a..], 0, a as u64);
        assert_eq!((end, tail), (0, Tail::Torn));
        // Changed bytes that are no lost sector, with a whole entry after them: damage.
        let mut rotten = unsynced.clone();
        rotten[a + 30] ^= 0x10;
        assert!(b < rotten.len());
        assert_eq!(entries(&rotten, KEYS_HEADER_LEN, 0).2, Tail::Damaged);
        assert_eq!(entries(&rotten[a..], 0, a as u64).2, Tail::Damaged);
        let mut bad = file.clone();
        bad[KH_FILE_ID] ^= 1;
        let e = Header::decode(&bad, Path::new("KEYS")).unwrap_err();
        assert!(matches!(e, Error::KeyFile { offset: 0, .. }), "{e}");
    }

    #[test]
    fn a_tail_that_frames_an_entry_every_few_bytes_is_unverifiable_not_scanned_for_ever() {
        // Every 16 bytes, a share entry's framing (its lengths agree) that claims the rest
        // of the tail; its checksum fails. Checking each would hash ~tail²/32 bytes.
        let tail_len = 1 << 20;
        let mut tail = vec![0x55u8; tail_len];
        for p in (0..tail_len).step_by(16) {
            let keys = (tail_len - p - 15) / 8;
            let len = 15 + 8 * keys;
            tail[p..p + 4].copy_from_slice(&(len as u32).to_le_bytes());
            tail[p + 8] = ENTRY_SHARE;
            tail[p + 9..p + 11].copy_from_slice(&0u16.to_le_bytes());
            tail[p + 11..p + 15].copy_from_slice(&(keys as u32).to_le_bytes());
        }
        assert!(framed_len(&tail[16..]).is_some(), "the framing is right");
        let (got, end, kind) = entries(&tail, 0, 1 << 20);
        assert_eq!((got.len(), end, kind), (0, 0, Tail::Unverifiable));
        // After a sector that never reached the disk, the same bytes are a torn append
        // (as any entry after such a sector is).
        let mut after_lost = vec![0u8; 1024];
        after_lost[0] = 1; // a torn entry's first byte, then the old zeros of a lost sector
        after_lost.extend_from_slice(&tail);
        assert_eq!(entries(&after_lost, 0, 1 << 20).2, Tail::Torn);
        // A torn append's bytes are checked in full within the budget: real entries cut
        // short, then the random-looking bytes of a wrapped key.
        let key = |id: u64| Entry::Key {
            id,
            owner: Some(format!("session-{id}").into()),
            wrapped: std::array::from_fn(|i| (id as u8).wrapping_mul(31) ^ (i as u8)),
        };
        let mut torn = Vec::new();
        for id in 0..2000 {
            key(id).encode(&mut torn);
        }
        torn[0] ^= 1;
        assert_eq!(
            entries(&torn, 0, 0).2,
            Tail::Damaged,
            "later entries verify"
        );
        let mut last = Vec::new();
        key(1999).encode(&mut last);
        assert!(torn.ends_with(&last));
        let (got, end, kind) = entries(&last[..last.len() - 5], 0, 0);
        assert_eq!((got.len(), end, kind), (0, 0, Tail::Torn));
    }
}
