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
//!  48 72  kind counts    9 x u64: records of each kind code 1..=9 (append, pop, truncate,
//!                         clear, gap, 6 unused (`key` in format 5), fork, meta, delete)
//! 120  .. sessions, each:  u16 id length, id bytes, u32 event count, events:
//!           1 appends:   u32 n, u64 first timestamp, u64 last timestamp, n x u32 offsets
//!           2 pop:       u64 messages popped (consecutive pops folded)
//!           3 truncate:  u64 messages kept (clear = truncate to 0)
//!           4 key:       u16 length, key bytes, u64 LSN of the first append it names
//!                        (within the segment's), u64 timestamp, u64 appends it names (a
//!                        keyed append's key block; the appends follow it as events of
//!                        their own)
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
use crate::format::{Kind, MAX_LSN, MAX_SESSION_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
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

/// One session's events within a segment, decoded (by the tests: the store reads hints in
/// place, through [`parse`]).
#[cfg(test)]
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
    /// An idempotency key naming the `count` appends after it.
    Key {
        key: Vec<u8>,
        ts: Timestamp,
        count: u64,
    },
    /// The session's metadata, in the record at this offset.
    Meta(u32),
    /// The session deleted.
    Delete,
}

/// A decoded hint (by the tests).
#[cfg(test)]
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

/// Where the hint of the segment `id` with `salt` is written before it is renamed in place
/// (by the hints thread, or a compaction for its output): named by salt too, so no two
/// writers of a hint for one segment name share a file.
pub(crate) fn tmp_path(dir: &Path, id: SegmentId, salt: u64) -> PathBuf {
    dir.join(format!("{:020}-{salt:016x}{TMP_SUFFIX}", id.0))
}

/// How a hint's temporary file name ends ([`tmp_path`], and `.hint.tmp` of an atomic write).
pub(crate) const TMP_SUFFIX: &str = ".hint.tmp";

/// The segment id and salt a [`tmp_path`] names (`None` for any other name).
pub(crate) fn parse_tmp_name(name: &str) -> Option<(SegmentId, u64)> {
    let (id, salt) = name.strip_suffix(TMP_SUFFIX)?.split_once('-')?;
    Some((
        SegmentId(id.parse().ok()?),
        u64::from_str_radix(salt, 16).ok()?,
    ))
}

/// Summarizes a whole, valid segment, encoded (CRC included). `None` if its records do not
/// end cleanly (a record fails to verify, a unit is left open, or non-zero bytes follow the
/// last record), or if it holds a fork: then no hint is written and the segment will be
/// scanned. Each session's events are encoded as they come, into one buffer per session:
/// nothing is allocated per event.
pub(crate) fn build(segment: &[u8], first_lsn: Lsn, salt: u64) -> Option<Vec<u8>> {
    let mut order: Vec<&str> = Vec::new();
    let mut events: HashMap<&str, SessionEvents> = HashMap::new();
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
            events
                .entry(r.session)
                .or_insert_with(|| {
                    order.push(r.session);
                    SessionEvents::default()
                })
                .push(r)?;
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
    let body: usize = events.values().map(|e| e.bytes.len() + 6).sum::<usize>()
        + order.iter().map(|s| s.len()).sum::<usize>();
    let mut b = Vec::with_capacity(HEADER_LEN + body + 4);
    b.extend_from_slice(&HINT_MAGIC);
    b.extend_from_slice(&HINT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&u32::try_from(order.len()).ok()?.to_le_bytes());
    b.extend_from_slice(&first_lsn.0.to_le_bytes());
    b.extend_from_slice(&salt.to_le_bytes());
    b.extend_from_slice(&end.to_le_bytes());
    b.extend_from_slice(&next_lsn.0.to_le_bytes());
    for k in kinds {
        b.extend_from_slice(&k.to_le_bytes());
    }
    debug_assert_eq!(b.len(), HEADER_LEN);
    for session in order {
        let e = events.get(session)?;
        b.extend_from_slice(&u16::try_from(session.len()).ok()?.to_le_bytes());
        b.extend_from_slice(session.as_bytes());
        b.extend_from_slice(&e.count.to_le_bytes());
        b.extend_from_slice(&e.bytes);
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    Some(b)
}

/// One session's events in a segment, encoded as the records come, consecutive appends,
/// pops and metadata records folded into one event.
#[derive(Default)]
struct SessionEvents {
    bytes: Vec<u8>,
    count: u32,
    /// The last event, to fold the next record into it.
    last: Option<Last>,
}

/// The last event of a session: its tag, where it starts in the session's bytes, and how
/// many records it folds so far.
#[derive(Clone, Copy)]
struct Last {
    tag: u8,
    at: usize,
    n: u64,
}

impl SessionEvents {
    /// Adds record `r`; `None` if it cannot be encoded (a count or length past its field).
    fn push(&mut self, r: &Record<'_>) -> Option<()> {
        let (ts, off) = (r.meta.timestamp, u32::try_from(r.offset).ok()?);
        if let Some(k) = r.key {
            // A keyed append: its key first, as an event of its own (the append after it
            // starts a new run).
            let len = u16::try_from(k.key.len()).ok()?;
            self.start(TAG_KEY)?;
            self.bytes.extend_from_slice(&len.to_le_bytes());
            self.bytes.extend_from_slice(k.key);
            self.bytes.extend_from_slice(&r.meta.lsn.0.to_le_bytes());
            self.bytes.extend_from_slice(&ts.0.to_le_bytes());
            self.bytes
                .extend_from_slice(&u64::from(k.count).to_le_bytes());
        }
        // The last event, with this record folded in, if it folds.
        let folded = match &mut self.last {
            Some(l) if Some(l.tag) == tag_of(r.meta.kind) => {
                l.n += 1;
                Some(*l)
            }
            _ => None,
        };
        match (r.meta.kind, folded) {
            (Kind::Append, Some(Last { at, n, .. })) => {
                // n at +1, first timestamp at +5, last at +13, then the offsets.
                let n = u32::try_from(n).ok()?;
                self.bytes[at + 1..at + 5].copy_from_slice(&n.to_le_bytes());
                self.bytes[at + 13..at + 21].copy_from_slice(&ts.0.to_le_bytes());
                self.bytes.extend_from_slice(&off.to_le_bytes());
            }
            (Kind::Append, None) => {
                self.start(TAG_APPENDS)?;
                self.bytes.extend_from_slice(&1u32.to_le_bytes());
                self.bytes.extend_from_slice(&ts.0.to_le_bytes());
                self.bytes.extend_from_slice(&ts.0.to_le_bytes());
                self.bytes.extend_from_slice(&off.to_le_bytes());
            }
            (Kind::Pop, Some(Last { at, n, .. })) => {
                self.bytes[at + 1..at + 9].copy_from_slice(&n.to_le_bytes());
            }
            (Kind::Pop, None) => {
                self.start(TAG_POP)?;
                self.bytes.extend_from_slice(&1u64.to_le_bytes());
            }
            (Kind::Truncate | Kind::Clear, _) => {
                let keep = if r.meta.kind == Kind::Clear {
                    0
                } else {
                    r.meta.arg
                };
                self.start(TAG_TRUNCATE)?;
                self.bytes.extend_from_slice(&keep.to_le_bytes());
            }
            (Kind::Meta, Some(Last { at, .. })) => {
                self.bytes[at + 1..at + 5].copy_from_slice(&off.to_le_bytes());
            }
            (Kind::Meta, None) => {
                self.start(TAG_META)?;
                self.bytes.extend_from_slice(&off.to_le_bytes());
            }
            (Kind::Delete, _) => self.start(TAG_DELETE)?,
            (Kind::Gap | Kind::Fork, _) => {}
        }
        Some(())
    }

    /// Starts a new event with `tag`.
    fn start(&mut self, tag: u8) -> Option<()> {
        self.count = self.count.checked_add(1)?;
        self.last = Some(Last {
            tag,
            at: self.bytes.len(),
            n: 1,
        });
        self.bytes.push(tag);
        Some(())
    }
}

/// The tag of the event a record of `kind` folds into, for the kinds that fold.
fn tag_of(kind: Kind) -> Option<u8> {
    match kind {
        Kind::Append => Some(TAG_APPENDS),
        Kind::Pop => Some(TAG_POP),
        Kind::Meta => Some(TAG_META),
        _ => None,
    }
}

#[cfg(test)]
impl Hint {
    /// Decodes a hint; `None` for any damage (bad CRC, bad magic or version, bad lengths).
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
                    EventRef::Key { key, ts, count } => HintEvent::Key {
                        key: key.to_vec(),
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
    /// Session entries holding events (at most one per 8 bytes of the hint), counted as read.
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
    /// An idempotency key naming the `count` appends after it (its LSN, checked to be the
    /// segment's, is not needed: the index finds the keyed append by interaction id).
    Key {
        key: &'a [u8],
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
    let mut sessions = 0u32;
    let first_lsn = Lsn(r.u64()?);
    let salt = r.u64()?;
    let valid_len = r.u64()?;
    let next_lsn = Lsn(r.u64()?);
    let mut kinds = [0u64; 9];
    for k in &mut kinds {
        *k = r.u64()?;
    }
    // LSNs within the format's bound, and no more records counted than the LSNs they span.
    let lsns = next_lsn.0.checked_sub(first_lsn.0)?;
    let records = kinds.iter().try_fold(0u64, |sum, &k| sum.checked_add(k))?;
    if next_lsn.0 > MAX_LSN || records > lsns {
        return None;
    }
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        if len == 0 || len > MAX_SESSION_LEN {
            return None;
        }
        let session = std::str::from_utf8(r.take(len)?).ok()?;
        let n = r.u32()?;
        // Only sessions with events count (a `gap` record's `-` has none): the index
        // reserves room for these, so the count is of what the bytes hold, not what the
        // header says.
        sessions += u32::from(n > 0);
        for _ in 0..n {
            let event = parse_event(&mut r, body.len(), first_lsn, next_lsn)?;
            f(session, event);
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(HintHeader {
        sessions,
        first_lsn,
        salt,
        valid_len,
        next_lsn,
        kinds,
    })
}

/// The next event of a session entry, `r` at its tag (`body_len`: the length of the hint
/// before its CRC, to say where an appends event's offsets are); `None` if it is not valid
/// for a segment of LSNs `first_lsn..next_lsn`.
fn parse_event<'a>(
    r: &mut Reader<'a>,
    body_len: usize,
    first_lsn: Lsn,
    next_lsn: Lsn,
) -> Option<EventRef<'a>> {
    Some(match r.u8()? {
        TAG_APPENDS => {
            let k = r.u32()? as usize;
            let first = Timestamp(r.u64()?);
            let last = Timestamp(r.u64()?);
            let at = body_len - r.0.len();
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
            let key = r.take(len)?;
            let lsn = Lsn(r.u64()?);
            if lsn < first_lsn || lsn >= next_lsn {
                return None;
            }
            let ts = Timestamp(r.u64()?);
            // A key block names 1..=u32::MAX appends.
            let count = r.u64()?;
            if count == 0 || count > u64::from(u32::MAX) {
                return None;
            }
            EventRef::Key { key, ts, count }
        }
        TAG_META => EventRef::Meta(r.u32()?),
        TAG_DELETE => EventRef::Delete,
        _ => return None,
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
    dir.atomic_write(&path(dir.path, id), &h)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RecordKey, RecordMeta, SegmentHeader, SessionField, encode_record};

    /// A record of a test segment: kind, LSN, argument, session, payload, and whether it
    /// starts and ends its unit.
    type Rec = (Kind, u64, u64, &'static [u8], &'static [u8], bool, bool);

    /// A segment (first LSN 10, salt 99) of these records, timestamps LSN x 10.
    fn segment_of(records: &[Rec]) -> Vec<u8> {
        segment_keyed(records, &[])
    }

    /// [`segment_of`], the appends at the LSNs of `keys` keyed (key, appends named).
    fn segment_keyed(records: &[Rec], keys: &[(u64, &[u8], u32)]) -> Vec<u8> {
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
        for &(kind, lsn, arg, s, p, first, commit) in records {
            let meta = RecordMeta {
                kind,
                first,
                commit,
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
            let key = keys
                .iter()
                .find(|k| k.0 == lsn)
                .map(|&(_, key, count)| RecordKey { key, count });
            encode_record(&mut b, salt, &meta, field, key, p);
        }
        b
    }

    fn segment() -> Vec<u8> {
        let one = |kind, lsn, arg, s: &'static [u8], p: &'static [u8]| -> Rec {
            (kind, lsn, arg, s, p, true, true)
        };
        segment_of(&[
            one(Kind::Append, 10, 1, b"a", b"{}"),
            one(Kind::Append, 11, 1, b"b", b"{}"),
            one(Kind::Append, 12, 2, b"a", b"{}"),
            one(Kind::Pop, 13, 2, b"a", b""),
            one(Kind::Pop, 14, 1, b"a", b""),
            one(Kind::Clear, 15, 1, b"b", b""),
            one(Kind::Append, 16, 1, b"a", b"{}"),
        ])
    }

    #[test]
    fn keys_metadata_and_deletes_are_events_and_consecutive_metadata_folds() {
        let seg = segment_keyed(
            &[
                (Kind::Append, 10, 1, b"a", b"{}", true, false),
                (Kind::Append, 11, 2, b"a", b"{}", false, true),
                (Kind::Meta, 12, 0, b"a", b"{}", true, true),
                (Kind::Meta, 13, 0, b"a", b"{}", true, true),
                (Kind::Append, 14, 3, b"a", b"{}", true, true),
                (Kind::Delete, 15, 0, b"b", b"", true, true),
            ],
            &[(10, b"k1", 2), (14, b"k2", 1)],
        );
        let h = Hint::decode(&build(&seg, Lsn(10), 99).unwrap()).unwrap();
        assert_eq!(h.kinds, [3, 0, 0, 0, 0, 0, 0, 2, 1]);
        let (_, a) = &h.sessions[0];
        let key = |k: &[u8], ts, count| HintEvent::Key {
            key: k.to_vec(),
            ts: Timestamp(ts),
            count,
        };
        assert_eq!(a[0], key(b"k1", 100, 2));
        assert!(matches!(&a[1], HintEvent::Appends { offsets, first, last }
            if offsets.len() == 2 && *first == Timestamp(100) && *last == Timestamp(110)));
        assert!(matches!(a[2], HintEvent::Meta(_)), "{:?}", a[2]);
        assert_eq!(a[3], key(b"k2", 140, 1));
        assert!(matches!(&a[4], HintEvent::Appends { offsets, .. } if offsets.len() == 1));
        assert_eq!(a.len(), 5);
        let second_meta = match &a[2] {
            HintEvent::Meta(at) => *at,
            _ => 0,
        };
        assert!(second_meta > 0);
        assert_eq!(h.sessions[1].1, vec![HintEvent::Delete]);
    }

    #[test]
    fn build_groups_events_by_session_in_order() {
        let seg = segment();
        let h = Hint::decode(&build(&seg, Lsn(10), 99).unwrap()).unwrap();
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
        let bytes = build(&segment(), Lsn(10), 99).unwrap();
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

    /// `bytes` with the u64 at `at` set to `v` and the CRC made to hold again.
    fn patched(bytes: &[u8], at: usize, v: u64) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let end = b.len() - 4;
        let crc = crc32fast::hash(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn counts_and_lsns_past_what_the_segment_can_hold_are_rejected_despite_a_valid_crc() {
        let bytes = build(&segment(), Lsn(10), 99).unwrap();
        assert!(
            Hint::decode(&patched(&bytes, 40, 17)).is_some(),
            "the CRC is redone right"
        );
        // Next LSN past MAX_LSN, or before the first; more records than LSNs.
        for (at, v) in [
            (40, u64::MAX),
            (40, MAX_LSN + 1),
            (40, 9),
            (48, u64::MAX),
            (48, 6),
        ] {
            assert_eq!(Hint::decode(&patched(&bytes, at, v)), None, "{at}: {v}");
        }
        // A key event naming no append, or more than a key block can.
        let seg = segment_keyed(
            &[(Kind::Append, 10, 1, b"a", b"{}", true, true)],
            &[(10, b"k1", 1)],
        );
        let bytes = build(&seg, Lsn(10), 99).unwrap();
        let k = bytes.windows(2).position(|w| w == b"k1").unwrap();
        let count_at = k + 2 + 8 + 8;
        assert!(Hint::decode(&patched(&bytes, count_at, 1)).is_some());
        for v in [0, u64::from(u32::MAX) + 1, u64::MAX] {
            assert_eq!(
                Hint::decode(&patched(&bytes, count_at, v)),
                None,
                "count {v}"
            );
        }
    }

    /// `bytes` with one more session entry (`entry`) at its end, counted, the CRC redone.
    fn with_session(bytes: &[u8], entry: &[u8]) -> Vec<u8> {
        let end = bytes.len() - 4;
        let mut b = bytes[..end].to_vec();
        let count = u32::from_le_bytes(b[12..16].try_into().unwrap()) + 1;
        b[12..16].copy_from_slice(&count.to_le_bytes());
        b.extend_from_slice(entry);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_session_entry_must_name_a_session_and_only_entries_with_events_count() {
        let bytes = build(&segment(), Lsn(10), 99).unwrap();
        let pop = |id: &[u8], events: u32| {
            let mut e = (id.len() as u16).to_le_bytes().to_vec();
            e.extend_from_slice(id);
            e.extend_from_slice(&events.to_le_bytes());
            for _ in 0..events {
                e.push(TAG_POP);
                e.extend_from_slice(&1u64.to_le_bytes());
            }
            e
        };
        assert!(Hint::decode(&with_session(&bytes, &pop(b"z", 1))).is_some());
        for entry in [pop(b"", 1), pop(&[b'z'; 257], 1)] {
            assert_eq!(Hint::decode(&with_session(&bytes, &entry)), None);
        }
        // Entries without events (as a `gap`'s session gets) are valid, but not counted as
        // sessions: a small file cannot promise millions of sessions to reserve room for.
        let mut many = bytes.clone();
        for _ in 0..1000 {
            many = with_session(&many, &pop(b"z", 0));
        }
        let sessions = |b: &[u8]| parse(b, |_, _| {}).map(|h| h.sessions);
        assert_eq!(sessions(&many), sessions(&bytes));
        assert_eq!(
            sessions(&with_session(&bytes, &pop(b"z", 2))),
            sessions(&bytes).map(|n| n + 1)
        );
    }

    #[test]
    fn every_flip_of_a_hint_is_rejected() {
        let bytes = build(&segment(), Lsn(10), 99).unwrap();
        assert!(Hint::decode(&bytes).is_some());
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
