//! Hint files: a per-segment summary of its events, so `open` need not scan the segment.
//!
//! A hint is derived data. It is written when a segment is sealed (and for the active
//! segment when the store closes cleanly), through a temporary file, `fdatasync`, rename and
//! a directory fsync. It is built by the segment reader, like every pass over records. A missing, damaged or mismatched hint is ignored and the segment is
//! scanned instead: a hint is never a reason for `open` to fail.
//!
//! ```text
//! Hint file `{first_lsn:020}.hint` (little-endian):
//!   0  8  magic          b"convlogH"
//!   8  2  version        u16 = 3
//!  10  2  reserved       u16 = 0
//!  12  4  sessions       u32: number of session entries
//!  16  8  first LSN      u64: must equal the segment's
//!  24  8  salt           u64: must equal the segment's
//!  32  8  valid length   u64: where the segment's records end (zeros, if anything, follow)
//!  40  8  next LSN       u64: the LSN after the segment's last record
//!  48 72  kind counts    9 x u64: records of each kind (append, pop, truncate, clear, gap, key,
//!                         fork, meta, delete)
//! 120  .. sessions, each:  u16 id length, id bytes, u32 event count, events:
//!           1 appends:   u32 n, u64 first timestamp, u64 last timestamp, n x u32 offsets
//!           2 pop:       u64 messages popped (consecutive pops folded)
//!           3 truncate:  u64 messages kept (clear = truncate to 0)
//!           4 key:       u16 length, key bytes, u64 LSN of the first append it names,
//!                        u64 timestamp, u64 appends it names
//!           5 meta:      u32 offset of the session's latest meta record in the segment
//!           6 delete:    nothing (the session's messages, keys and metadata are gone)
//!  end-4  4  CRC-32 of every byte before it
//! ```
//!
//! Events of different sessions commute, so a hint groups them by session; within a session
//! they keep log order.
//!
//! The session index reads an appends event's offsets in place, from the mapped file, for as
//! long as the store is open (`index/positions.rs`, through [`Offsets::at`]): they must stay
//! consecutive little-endian `u32`s, whatever else the layout becomes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::{Kind, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::io::{Dir, Mapping, OpenMode, Vfs};
use crate::segment::{Record, SegmentReader, Units, Why, all_zero};

/// Magic bytes at the start of every hint file.
pub const HINT_MAGIC: [u8; 8] = *b"convlogH";
/// The hint format version.
pub const HINT_VERSION: u16 = 3;
const HEADER_LEN: usize = 120;
const TAG_APPENDS: u8 = 1;
const TAG_POP: u8 = 2;
const TAG_TRUNCATE: u8 = 3;
const TAG_KEY: u8 = 4;
const TAG_META: u8 = 5;
const TAG_DELETE: u8 = 6;

/// One session's events within a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HintEvent {
    /// Messages appended at these offsets, with the first and last timestamps.
    Appends {
        first: Timestamp,
        last: Timestamp,
        offsets: Vec<u32>,
    },
    /// The last `n` messages removed.
    Pop(u64),
    /// Cut to the first `keep` messages.
    Truncate(u64),
    /// An idempotency key naming the `count` appends after it, the first with `lsn`.
    Key {
        key: Vec<u8>,
        lsn: Lsn,
        ts: Timestamp,
        count: u64,
    },
    /// The session's metadata, in the record at this offset.
    Meta(u32),
    /// The session deleted.
    Delete,
}

/// A decoded hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    pub(crate) first_lsn: Lsn,
    pub(crate) salt: u64,
    pub(crate) valid_len: u64,
    pub(crate) next_lsn: Lsn,
    /// Records of each kind, indexed by `kind code - 1`.
    pub(crate) kinds: [u64; 9],
    pub(crate) sessions: Vec<(String, Vec<HintEvent>)>,
}

/// The hint file's path for a segment.
pub(crate) fn path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{:020}.hint", id.0))
}

/// Summarizes a whole, valid segment. `None` if its records do not end cleanly (a record
/// fails to verify, a unit is left open, or non-zero bytes follow the last record), or if it
/// holds a fork: then no hint is written and the segment will be scanned.
pub(crate) fn build(segment: &[u8], first_lsn: Lsn, salt: u64) -> Option<Hint> {
    let mut order: Vec<&str> = Vec::new();
    let mut events: HashMap<&str, Vec<HintEvent>> = HashMap::new();
    let mut kinds = [0u64; 9];
    let start = SEGMENT_HEADER_LEN as u64;
    let compacted = SegmentHeader::decode(segment).is_ok_and(|h| h.compacted);
    let reader = SegmentReader::new(segment, salt, start, Some(first_lsn)).allowing_gaps(compacted);
    let mut units = Units::new(reader);
    let mut next_lsn = first_lsn;
    while let Some(unit) = units.next_unit() {
        for r in unit {
            if r.meta.kind == Kind::Fork {
                // A fork depends on its source's state at that point of the log, which a
                // hint (events grouped by session) does not keep: scan such a segment.
                return None;
            }
            kinds[r.meta.kind as usize - 1] += 1;
            next_lsn = r.meta.next_lsn();
            let evs = events.entry(r.session).or_insert_with(|| {
                order.push(r.session);
                Vec::new()
            });
            push_event(evs, r);
        }
    }
    let end = units.committed_end();
    let clean = units
        .stop()
        .is_some_and(|s| s.why == Why::End && s.at == end)
        && segment.get(end as usize..).is_some_and(all_zero);
    if !clean {
        return None;
    }
    let sessions = order
        .into_iter()
        .filter_map(|s| Some((s.to_owned(), events.remove(s)?)))
        .collect();
    Some(Hint {
        first_lsn,
        salt,
        valid_len: end,
        next_lsn,
        kinds,
        sessions,
    })
}

/// Adds record `r` to its session's events, folding consecutive appends and pops.
fn push_event(evs: &mut Vec<HintEvent>, r: &Record<'_>) {
    let (ts, off) = (r.meta.timestamp, r.offset as u32);
    match (r.meta.kind, evs.last_mut()) {
        (Kind::Append, Some(HintEvent::Appends { last, offsets, .. })) => {
            *last = ts;
            offsets.push(off);
        }
        (Kind::Append, _) => evs.push(HintEvent::Appends {
            first: ts,
            last: ts,
            offsets: vec![off],
        }),
        (Kind::Pop, Some(HintEvent::Pop(n))) => *n += 1,
        (Kind::Pop, _) => evs.push(HintEvent::Pop(1)),
        (Kind::Truncate, _) => evs.push(HintEvent::Truncate(r.meta.arg)),
        (Kind::Clear, _) => evs.push(HintEvent::Truncate(0)),
        (Kind::Key, _) => evs.push(HintEvent::Key {
            key: r.payload.to_vec(),
            lsn: r.meta.lsn.next(),
            ts,
            count: r.meta.arg,
        }),
        (Kind::Meta, Some(HintEvent::Meta(at))) => *at = off,
        (Kind::Meta, _) => evs.push(HintEvent::Meta(off)),
        (Kind::Delete, _) => evs.push(HintEvent::Delete),
        (Kind::Gap | Kind::Fork, _) => {}
    }
}

impl Hint {
    /// Encodes the hint, CRC included.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + 64 * self.sessions.len());
        debug_assert_eq!(HEADER_LEN, 48 + 8 * self.kinds.len());
        b.extend_from_slice(&HINT_MAGIC);
        b.extend_from_slice(&HINT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.first_lsn.0.to_le_bytes());
        b.extend_from_slice(&self.salt.to_le_bytes());
        b.extend_from_slice(&self.valid_len.to_le_bytes());
        b.extend_from_slice(&self.next_lsn.0.to_le_bytes());
        for k in self.kinds {
            b.extend_from_slice(&k.to_le_bytes());
        }
        for (session, events) in &self.sessions {
            b.extend_from_slice(&(session.len() as u16).to_le_bytes());
            b.extend_from_slice(session.as_bytes());
            b.extend_from_slice(&(events.len() as u32).to_le_bytes());
            for e in events {
                match e {
                    HintEvent::Appends {
                        first,
                        last,
                        offsets,
                    } => {
                        b.push(TAG_APPENDS);
                        b.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
                        b.extend_from_slice(&first.0.to_le_bytes());
                        b.extend_from_slice(&last.0.to_le_bytes());
                        for o in offsets {
                            b.extend_from_slice(&o.to_le_bytes());
                        }
                    }
                    HintEvent::Pop(n) => {
                        b.push(TAG_POP);
                        b.extend_from_slice(&n.to_le_bytes());
                    }
                    HintEvent::Truncate(k) => {
                        b.push(TAG_TRUNCATE);
                        b.extend_from_slice(&k.to_le_bytes());
                    }
                    HintEvent::Key {
                        key,
                        lsn,
                        ts,
                        count,
                    } => {
                        b.push(TAG_KEY);
                        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
                        b.extend_from_slice(key);
                        b.extend_from_slice(&lsn.0.to_le_bytes());
                        b.extend_from_slice(&ts.0.to_le_bytes());
                        b.extend_from_slice(&count.to_le_bytes());
                    }
                    HintEvent::Meta(at) => {
                        b.push(TAG_META);
                        b.extend_from_slice(&at.to_le_bytes());
                    }
                    HintEvent::Delete => b.push(TAG_DELETE),
                }
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a hint; `None` for any damage (bad CRC, bad magic or version, bad lengths).
    #[cfg(test)]
    pub(crate) fn decode(bytes: &[u8]) -> Option<Hint> {
        let mut sessions: Vec<(String, Vec<HintEvent>)> = Vec::new();
        let header = parse(bytes, |session, event| {
            if sessions.last().is_none_or(|(s, _)| s != session) {
                sessions.push((session.to_owned(), Vec::new()));
            }
            if let Some((_, events)) = sessions.last_mut() {
                events.push(match event {
                    EventRef::Appends {
                        first,
                        last,
                        offsets,
                    } => HintEvent::Appends {
                        first,
                        last,
                        offsets: offsets.collect(),
                    },
                    EventRef::Pop(n) => HintEvent::Pop(n),
                    EventRef::Truncate(k) => HintEvent::Truncate(k),
                    EventRef::Key {
                        key,
                        lsn,
                        ts,
                        count,
                    } => HintEvent::Key {
                        key: key.to_vec(),
                        lsn,
                        ts,
                        count,
                    },
                    EventRef::Meta(at) => HintEvent::Meta(at),
                    EventRef::Delete => HintEvent::Delete,
                });
            }
        })?;
        Some(Hint {
            first_lsn: header.first_lsn,
            salt: header.salt,
            valid_len: header.valid_len,
            next_lsn: header.next_lsn,
            kinds: header.kinds,
            sessions,
        })
    }
}

/// The fixed fields of a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintHeader {
    pub(crate) sessions: u32,
    pub(crate) first_lsn: Lsn,
    pub(crate) salt: u64,
    pub(crate) valid_len: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) kinds: [u64; 9],
}

/// One event of a hint, borrowed from its bytes.
#[derive(Debug, Clone)]
pub(crate) enum EventRef<'a> {
    /// Messages appended at these offsets.
    Appends {
        first: Timestamp,
        last: Timestamp,
        offsets: Offsets<'a>,
    },
    /// The last `n` messages removed.
    Pop(u64),
    /// Cut to the first `keep` messages.
    Truncate(u64),
    /// An idempotency key naming the `count` appends after it, the first with `lsn`.
    Key {
        key: &'a [u8],
        lsn: Lsn,
        ts: Timestamp,
        count: u64,
    },
    /// The session's metadata, in the record at this offset.
    Meta(u32),
    /// The session deleted.
    Delete,
}

/// The offsets of an appends run, read in place.
#[derive(Debug, Clone)]
pub(crate) struct Offsets<'a> {
    at: usize,
    chunks: std::slice::ChunksExact<'a, u8>,
}

impl Offsets<'_> {
    /// Where the run's offsets start in the hint file: consecutive little-endian `u32`s.
    pub(crate) fn at(&self) -> usize {
        self.at
    }
}

impl Iterator for Offsets<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        self.chunks
            .next()
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Offsets<'_> {}

/// Walks a hint's events, in file order, calling `f` for each; `None` (after calling `f` for
/// a prefix) if the bytes are not a valid hint. Allocates nothing.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(&'a str, EventRef<'a>),
) -> Option<HintHeader> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != HINT_MAGIC || r.u16()? != HINT_VERSION || r.u16()? != 0 {
        return None;
    }
    let count = r.u32()?;
    let first_lsn = Lsn(r.u64()?);
    let salt = r.u64()?;
    let valid_len = r.u64()?;
    let next_lsn = Lsn(r.u64()?);
    let mut kinds = [0u64; 9];
    for k in &mut kinds {
        *k = r.u64()?;
    }
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let session = std::str::from_utf8(r.take(len)?).ok()?;
        let n = r.u32()?;
        for _ in 0..n {
            let event = match r.u8()? {
                TAG_APPENDS => {
                    let k = r.u32()? as usize;
                    let first = Timestamp(r.u64()?);
                    let last = Timestamp(r.u64()?);
                    let at = body.len() - r.0.len();
                    let raw = r.take(k.checked_mul(4)?)?;
                    if k == 0 {
                        return None;
                    }
                    EventRef::Appends {
                        first,
                        last,
                        offsets: Offsets {
                            at,
                            chunks: raw.chunks_exact(4),
                        },
                    }
                }
                TAG_POP => EventRef::Pop(r.u64()?),
                TAG_TRUNCATE => EventRef::Truncate(r.u64()?),
                TAG_KEY => {
                    let len = usize::from(r.u16()?);
                    EventRef::Key {
                        key: r.take(len)?,
                        lsn: Lsn(r.u64()?),
                        ts: Timestamp(r.u64()?),
                        count: r.u64()?,
                    }
                }
                TAG_META => EventRef::Meta(r.u32()?),
                TAG_DELETE => EventRef::Delete,
                _ => return None,
            };
            f(session, event);
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(HintHeader {
        sessions: count,
        first_lsn,
        salt,
        valid_len,
        next_lsn,
        kinds,
    })
}

/// A hint file read and validated (checksum and structure), ready to be applied.
#[derive(Debug)]
pub(crate) struct LoadedHint {
    bytes: Mapping,
    pub(crate) header: HintHeader,
}

impl LoadedHint {
    /// The file's bytes (validated; they never change: see [`load`]).
    pub(crate) fn bytes(&self) -> &Mapping {
        &self.bytes
    }

    /// Calls `f` for every event, in order.
    pub(crate) fn for_each<'a>(&'a self, f: impl FnMut(&'a str, EventRef<'a>)) {
        let _ = parse(&self.bytes, f);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Reads and validates the hint of segment `id`, if there is a valid one.
pub(crate) fn load(vfs: &dyn Vfs, dir: &Path, id: SegmentId) -> Option<LoadedHint> {
    let p = path(dir, id);
    let f = vfs.open(&p, OpenMode::Read).ok()?;
    // Mapped, not read: no copy, and no fresh heap pages to fault in. Hint files are written
    // whole under a temporary name and renamed into place; none is ever changed after.
    let bytes = f.map().ok()?;
    let header = parse(&bytes, |_, _| {})?;
    Some(LoadedHint { bytes, header })
}

/// Builds and writes the hint of segment `id` (whose bytes are `segment`) durably, by
/// atomic replace. `Ok(false)` when the segment does not end cleanly (no hint is written).
/// Callers treat failure as best effort: a hint is derived data.
pub(crate) fn write(dir: Dir<'_>, segment: &[u8], id: SegmentId, salt: u64) -> Result<bool> {
    let Some(h) = build(segment, Lsn(id.0), salt) else {
        return Ok(false);
    };
    dir.atomic_write(&path(dir.path, id), &h.encode())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RecordMeta, SegmentHeader, SessionField, encode_record};

    fn segment() -> Vec<u8> {
        let salt = 99;
        let mut b = SegmentHeader {
            first_lsn: Lsn(10),
            salt,
            created: Timestamp(1),
            compacted: false,
        }
        .encode()
        .to_vec();
        let mut named: HashMap<&[u8], u32> = HashMap::new();
        let first = true;
        let mut rec = |b: &mut Vec<u8>, kind, lsn, arg, s: &'static [u8], p: &[u8]| {
            let meta = RecordMeta {
                kind,
                first,
                commit: true,
                lsn: Lsn(lsn),
                arg,
                timestamp: Timestamp(lsn * 10),
            };
            let field = match named.get(s) {
                Some(&at) => SessionField::Ref(at),
                None => {
                    named.insert(s, b.len() as u32);
                    SessionField::Named(s)
                }
            };
            encode_record(b, salt, &meta, field, p);
        };
        rec(&mut b, Kind::Append, 10, 1, b"a", b"{}");
        rec(&mut b, Kind::Append, 11, 1, b"b", b"{}");
        rec(&mut b, Kind::Append, 12, 2, b"a", b"{}");
        rec(&mut b, Kind::Pop, 13, 2, b"a", b"");
        rec(&mut b, Kind::Pop, 14, 1, b"a", b"");
        rec(&mut b, Kind::Clear, 15, 1, b"b", b"");
        rec(&mut b, Kind::Append, 16, 1, b"a", b"{}");
        b
    }

    #[test]
    fn build_groups_events_by_session_in_order() {
        let seg = segment();
        let h = build(&seg, Lsn(10), 99).unwrap();
        assert_eq!(h.next_lsn, Lsn(17));
        assert_eq!(h.kinds, [4, 2, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(h.valid_len, seg.len() as u64);
        assert_eq!(h.sessions.len(), 2);
        let (name, a) = &h.sessions[0];
        assert_eq!(name, "a");
        assert!(matches!(&a[0], HintEvent::Appends { offsets, first, last }
            if offsets.len() == 2 && *first == Timestamp(100) && *last == Timestamp(120)));
        assert_eq!(a[1], HintEvent::Pop(2));
        assert!(matches!(&a[2], HintEvent::Appends { offsets, .. } if offsets.len() == 1));
        assert_eq!(h.sessions[1].1[1], HintEvent::Truncate(0));
        assert!(build(&seg[..seg.len() - 1], Lsn(10), 99).is_none());
        assert!(build(&seg, Lsn(11), 99).is_none(), "LSNs must match");
    }

    #[test]
    fn offsets_say_where_they_are_in_the_file() {
        let h = build(&segment(), Lsn(10), 99).unwrap();
        let bytes = h.encode();
        let mut runs = 0;
        parse(&bytes, |_, event| {
            if let EventRef::Appends { offsets, .. } = event {
                let at = offsets.at();
                for (j, off) in offsets.enumerate() {
                    let b = &bytes[at + 4 * j..at + 4 * j + 4];
                    assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), off);
                }
                runs += 1;
            }
        })
        .unwrap();
        assert_eq!(runs, 3);
    }

    #[test]
    fn encode_decode_round_trip_and_every_flip_is_rejected() {
        let h = build(&segment(), Lsn(10), 99).unwrap();
        let bytes = h.encode();
        assert_eq!(Hint::decode(&bytes), Some(h));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            assert_eq!(Hint::decode(&b), None, "flip at byte {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert_eq!(Hint::decode(&bytes[..cut]), None);
        }
    }
}
