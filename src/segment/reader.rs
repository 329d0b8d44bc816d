//! The one segment reader: every pass over a segment's records goes through it.
//!
//! [`SegmentReader`] yields a segment's valid records in order, each verified (both CRCs),
//! its session resolved (a reference leads to an earlier record naming the session), its LSN
//! the one after its predecessor's, and its unit framing consistent (`FIRST` opens a unit,
//! `COMMIT` closes it). It stops at the first offset that is not such a record and says why
//! ([`Stop`]). [`Units`] is layered on it and yields whole committed units only, so no caller
//! ever sees half a batch. Recovery, verification, hint building and salvage all use these
//! two; none of them walks records itself.

use crate::error::Damage;
use crate::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, RECORD_HEADER_LEN, RecordKey, RecordMeta, decode_record,
    header_verifies, resolve_session,
};
use crate::id::Lsn;

/// A verified record of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Where it starts in the segment file.
    pub(crate) offset: u64,
    /// Its framed length.
    pub(crate) len: u64,
    /// Its fixed fields.
    pub(crate) meta: RecordMeta,
    /// Its session id (resolved through a reference if need be; checked to be UTF-8).
    pub(crate) session: &'a str,
    /// The idempotency key of a keyed append.
    pub(crate) key: Option<RecordKey<'a>>,
    /// Its payload after any key block (message JSON for appends).
    pub(crate) payload: &'a [u8],
}

impl Record<'_> {
    /// Where the next record starts.
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Why a reader stopped, at [`Stop::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// No bytes left, or an all-zero header (preallocated space): a clean end if every byte
    /// from here on is zero.
    End,
    /// Bytes that are not a valid record (a checksum, length or field fails).
    Damaged(Damage),
    /// A whole record whose checksums hold but that is invalid all the same (bad session
    /// reference, LSN out of order, broken unit framing): it was written whole, so it is
    /// never a torn write. `len` is its framed length.
    Invalid { damage: Damage, len: u64 },
    /// A checksummed header of a kind this build does not know (a newer writer's).
    UnknownKind(u8),
}

/// Where and why a reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    pub(crate) at: u64,
    pub(crate) why: Why,
}

impl Stop {
    /// The damage this stop stands for (`None` for a plain end).
    pub(crate) fn damage(&self) -> Option<Damage> {
        match &self.why {
            Why::End => None,
            Why::Damaged(d) | Why::Invalid { damage: d, .. } => Some(d.clone()),
            Why::UnknownKind(_) => Some(Damage::BadField { field: "kind" }),
        }
    }
}

/// Iterates over the valid records of one segment's bytes.
///
/// Invariant: every record yielded lies wholly inside `bytes`, follows the previous one with
/// no gap, carries the expected LSN (when one is expected) and keeps unit framing; after
/// `next` returns `None`, [`SegmentReader::stop`] says where and why.
#[derive(Debug, Clone)]
pub(crate) struct SegmentReader<'a> {
    bytes: &'a [u8],
    salt: u64,
    offset: u64,
    /// The LSN the next record must carry; `None`: any (after a resynchronization).
    expected: Option<Lsn>,
    /// Whether the last record yielded left a unit open (no `COMMIT`).
    in_unit: bool,
    /// A compacted segment: a record's LSN may be past the expected one (never before it).
    gaps: bool,
    stop: Option<Stop>,
}

impl<'a> SegmentReader<'a> {
    /// A reader of the records of `bytes` (a whole segment file) from `offset`, the first of
    /// which must carry `expected` (or any LSN, with `None`).
    pub(crate) fn new(bytes: &'a [u8], salt: u64, offset: u64, expected: Option<Lsn>) -> Self {
        SegmentReader {
            bytes,
            salt,
            offset,
            expected,
            in_unit: false,
            gaps: false,
            stop: None,
        }
    }

    /// With `gaps` (the segment's header says it is compacted), a record's LSN may skip
    /// ahead of the expected one: the records in between were dropped by compaction. It
    /// still never goes back.
    pub(crate) fn allowing_gaps(mut self, gaps: bool) -> Self {
        self.gaps = gaps;
        self
    }

    /// Where the next record would start (after a stop: where the reader stopped).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Where and why the reader stopped; `None` while it has not.
    pub(crate) fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Salvage: the first offset after the stop where a record header verifies, from which
    /// reading goes on (any LSN, outside any unit); `None` if there is none.
    pub(crate) fn resync(&mut self) -> Option<u64> {
        let from = match &self.stop {
            Some(Stop {
                at,
                why: Why::Invalid { len, .. },
            }) => at + len,
            Some(Stop { at, .. }) => at + 1,
            None => self.offset,
        };
        let next = find_header(self.bytes, from, self.salt)?;
        self.offset = next;
        self.expected = None;
        self.in_unit = false;
        self.stop = None;
        Some(next)
    }

    fn check(&self, r: &crate::format::RecordRef<'a>) -> Result<&'a str, Damage> {
        let session = session_of(self.bytes, self.salt, self.offset, r)?;
        if let Some(expected) = self.expected
            && r.meta.lsn != expected
            && !(self.gaps && r.meta.lsn > expected)
        {
            return Err(Damage::LsnGap {
                expected: expected.0,
                found: r.meta.lsn.0,
            });
        }
        if r.meta.first == self.in_unit {
            return Err(Damage::BadField {
                field: "unit framing",
            });
        }
        Ok(session)
    }
}

impl<'a> Iterator for SegmentReader<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.stop.is_some() {
            return None;
        }
        let at = self.offset;
        let rest = usize::try_from(at)
            .ok()
            .and_then(|a| self.bytes.get(a..))
            .unwrap_or(&[]);
        let why = match decode_record(rest, self.salt, DEFAULT_MAX_RECORD_LEN) {
            Decoded::Record(r) if at + r.framed_len() as u64 > u64::from(u32::MAX) => {
                // Offsets in the index and in session refs are 32-bit: a record ending past
                // 4 GiB (which no writer makes) is refused, not wrapped.
                Why::Damaged(Damage::BadLength {
                    len: r.framed_len() as u64,
                })
            }
            Decoded::Record(r) => match self.check(&r) {
                Ok(session) => {
                    let record = Record {
                        offset: at,
                        len: r.framed_len() as u64,
                        meta: r.meta,
                        session,
                        key: r.key,
                        payload: r.payload,
                    };
                    self.offset = record.end();
                    self.expected = Some(r.meta.next_lsn());
                    self.in_unit = !r.meta.commit;
                    return Some(record);
                }
                Err(damage) => Why::Invalid {
                    damage,
                    len: r.framed_len() as u64,
                },
            },
            Decoded::End => Why::End,
            Decoded::Damaged(d) => Why::Damaged(d),
            Decoded::UnknownKind(k) => Why::UnknownKind(k),
        };
        self.stop = Some(Stop { at, why });
        None
    }
}

/// The session of record `r` at `offset` of `bytes`: resolved, and checked to be UTF-8.
fn session_of<'a>(
    bytes: &'a [u8],
    salt: u64,
    offset: u64,
    r: &crate::format::RecordRef<'a>,
) -> Result<&'a str, Damage> {
    let session = resolve_session(bytes, offset, r, salt)?;
    std::str::from_utf8(session).map_err(|_| Damage::BadField {
        field: "session id",
    })
}

/// The verified record at `offset` of `bytes`, checked on its own: both checksums and its
/// session, but not its LSN or unit (for re-reading a record a scan already placed).
pub(crate) fn record_at(bytes: &[u8], salt: u64, offset: u64) -> Result<Record<'_>, Damage> {
    let rest = usize::try_from(offset)
        .ok()
        .and_then(|a| bytes.get(a..))
        .unwrap_or(&[]);
    match decode_record(rest, salt, DEFAULT_MAX_RECORD_LEN) {
        Decoded::Record(r) => Ok(Record {
            offset,
            len: r.framed_len() as u64,
            meta: r.meta,
            session: session_of(bytes, salt, offset, &r)?,
            key: r.key,
            payload: r.payload,
        }),
        other => Err(crate::format::decode_damage(other)),
    }
}

/// Whole committed units of a segment, layered on [`SegmentReader`]: a unit is one record,
/// or a batch whose last record carries `COMMIT`; an uncommitted trailing run is never
/// yielded.
#[derive(Debug)]
pub(crate) struct Units<'a> {
    records: SegmentReader<'a>,
    unit: Vec<Record<'a>>,
    committed_end: u64,
}

impl<'a> Units<'a> {
    pub(crate) fn new(records: SegmentReader<'a>) -> Units<'a> {
        let committed_end = records.offset();
        Units {
            records,
            unit: Vec::new(),
            committed_end,
        }
    }

    /// The next committed unit, in order; `None` once the records stop (see
    /// [`Units::stop`]), dropping any uncommitted run before the stop.
    pub(crate) fn next_unit(&mut self) -> Option<&[Record<'a>]> {
        self.unit.clear();
        loop {
            let r = self.records.next()?;
            self.unit.push(r);
            if r.meta.commit {
                self.committed_end = r.end();
                return Some(&self.unit);
            }
        }
    }

    /// Where the last committed unit ends: the valid end of the log in this segment so far,
    /// and the start of any uncommitted run.
    pub(crate) fn committed_end(&self) -> u64 {
        self.committed_end
    }

    /// Where and why the records stopped (after `next_unit` returned `None`).
    pub(crate) fn stop(&self) -> Option<&Stop> {
        self.records.stop()
    }

    /// The underlying record reader (salvage resynchronizes through it).
    pub(crate) fn records_mut(&mut self) -> &mut SegmentReader<'a> {
        self.unit.clear();
        &mut self.records
    }

    /// Continues after a salvage resynchronization at the reader's new offset.
    pub(crate) fn restart(&mut self) {
        self.unit.clear();
        self.committed_end = self.records.offset();
    }
}

/// Whether every byte of `b` is zero (preallocated space, a clean end).
pub(crate) fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// The first offset at or after `from` where a run of whole records (both checksums hold)
/// starts that reaches a record carrying `COMMIT`: bytes that a writer finished writing and
/// committed, so damage before them is no torn write. A trailing uncommitted run (the rest of
/// a unit whose write failed or was torn) does not count.
pub(crate) fn find_committed(bytes: &[u8], mut from: u64, salt: u64) -> Option<u64> {
    loop {
        let at = find_header(bytes, from, salt)?;
        let mut off = at;
        while let Some(Decoded::Record(r)) = usize::try_from(off)
            .ok()
            .and_then(|o| bytes.get(o..))
            .map(|rest| decode_record(rest, salt, DEFAULT_MAX_RECORD_LEN))
        {
            if r.meta.commit {
                return Some(at);
            }
            off += r.framed_len() as u64;
        }
        // No commit in the run from `at` to `off`: a header at a record boundary inside it
        // reaches the same end, so the search goes on from past the run (linear, not
        // quadratic, in a torn batch).
        from = (at + 1).max(off);
    }
}

/// The first offset at or after `from` where a record header with a valid checksum starts.
pub(crate) fn find_header(bytes: &[u8], from: u64, salt: u64) -> Option<u64> {
    let last = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    let from = usize::try_from(from).ok()?;
    (from..=last)
        .find(|&off| header_verifies(&bytes[off..], salt))
        .map(|o| o as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Kind, SEGMENT_HEADER_LEN, SegmentHeader, SessionField, encode_record};
    use crate::id::Timestamp;

    const SALT: u64 = 77;

    /// A segment of units: each inner slice is one unit of appends to `s`.
    fn segment(units: &[usize]) -> Vec<u8> {
        let mut b = SegmentHeader {
            first_lsn: Lsn(1),
            salt: SALT,
            created: Timestamp(1),
            compacted: false,
        }
        .encode()
        .to_vec();
        let mut lsn = 1;
        for &n in units {
            for i in 0..n {
                let meta = RecordMeta {
                    kind: Kind::Append,
                    first: i == 0,
                    commit: i + 1 == n,
                    lsn: Lsn(lsn),
                    arg: lsn,
                    timestamp: Timestamp(lsn),
                };
                let field = if lsn == 1 {
                    SessionField::Named(b"s")
                } else {
                    SessionField::Ref(SEGMENT_HEADER_LEN as u32)
                };
                encode_record(&mut b, SALT, &meta, field, None, br#"{"a":1}"#);
                lsn += 1;
            }
        }
        b
    }

    fn units_of(bytes: &[u8]) -> (Vec<Vec<u64>>, Stop, u64) {
        let mut u = Units::new(SegmentReader::new(
            bytes,
            SALT,
            SEGMENT_HEADER_LEN as u64,
            Some(Lsn(1)),
        ));
        let mut out = Vec::new();
        while let Some(unit) = u.next_unit() {
            out.push(unit.iter().map(|r| r.meta.lsn.0).collect());
        }
        (out, u.stop().cloned().unwrap(), u.committed_end())
    }

    #[test]
    fn units_are_whole_and_the_end_is_clean() {
        let seg = segment(&[1, 3, 1]);
        let (units, stop, end) = units_of(&seg);
        assert_eq!(units, vec![vec![1], vec![2, 3, 4], vec![5]]);
        assert_eq!(stop.why, Why::End);
        assert_eq!(end, seg.len() as u64);
    }

    #[test]
    fn a_cut_batch_is_never_yielded() {
        let seg = segment(&[1, 3]);
        let whole = segment(&[1]).len();
        for cut in whole..seg.len() {
            let (units, stop, end) = units_of(&seg[..cut]);
            assert_eq!(units, vec![vec![1]], "cut at {cut}");
            assert_eq!(end, whole as u64);
            assert!(stop.at >= whole as u64);
        }
    }

    #[test]
    fn broken_framing_and_lsns_are_invalid_whole_records() {
        let seg = segment(&[2, 1]);
        // Start reading at the second record: it continues a unit that never began.
        let second = segment(&[1]).len() as u64;
        let mut r = SegmentReader::new(&seg, SALT, second, Some(Lsn(2)));
        assert_eq!(r.next(), None);
        assert!(matches!(
            r.stop().unwrap().why,
            Why::Invalid {
                damage: Damage::BadField {
                    field: "unit framing"
                },
                ..
            }
        ));
        let mut r = SegmentReader::new(&seg, SALT, SEGMENT_HEADER_LEN as u64, Some(Lsn(5)));
        assert_eq!(r.next(), None);
        assert!(matches!(
            r.stop().unwrap().why,
            Why::Invalid {
                damage: Damage::LsnGap {
                    expected: 5,
                    found: 1
                },
                ..
            }
        ));
    }

    #[test]
    fn resync_finds_the_next_header_after_damage() {
        let mut seg = segment(&[1, 1, 1]);
        let second = segment(&[1]).len();
        let third = segment(&[1, 1]).len();
        seg[second + 50] ^= 0xff; // the second record's payload
        let mut r = SegmentReader::new(&seg, SALT, SEGMENT_HEADER_LEN as u64, Some(Lsn(1)));
        assert_eq!(r.by_ref().count(), 1);
        assert_eq!(r.stop().unwrap().why, Why::Damaged(Damage::PayloadChecksum));
        assert_eq!(r.resync(), Some(third as u64));
        let rest: Vec<u64> = r.by_ref().map(|x| x.meta.lsn.0).collect();
        assert_eq!(rest, vec![3]);
    }
}
