//! The on-disk format, version 6: segment headers and record frames.
//!
//! Every integer is little-endian and fixed width. `docs/format.md` mirrors this comment.
//!
//! ```text
//! Segment header (SEGMENT_HEADER_LEN = 48 bytes, at offset 0 of every segment file):
//!   0  8  magic            b"convlog\x1a"
//!   8  2  format version   u16 = 6
//!  10  2  header length    u16 = 48
//!  12  4  flags            u32: bit 0 = COMPACTED (written by compaction: record LSNs
//!                          increase but may skip); other bits 0
//!  16  8  first LSN        u64: LSN of the first record (compacted: the first LSN the
//!                          segment covers); equals the file name
//!  24  8  salt             u64: random per segment; seeds every record header CRC
//!  32  8  created          u64: microseconds since the Unix epoch
//!  40  4  reserved         u32 = 0
//!  44  4  header CRC       u32: crc32 of bytes 0..44
//!
//! Record (RECORD_HEADER_LEN = 44 bytes, then the session name if any, then the payload):
//!   0  4  header CRC       u32: crc32 seeded with seed(salt), over bytes 4..44 and the name
//!   4  4  payload CRC      u32: crc32 of the payload
//!   8  4  payload length   u32 (<= max_record_len)
//!  12  1  kind             u8: 1 append, 2 pop, 3 truncate, 4 clear, 5 gap, 7 fork, 8 meta,
//!                          9 delete (6 was `key` in version 5: no record of it now)
//!  13  1  flags            u8: bit 0 = COMMIT (last record of a unit), bit 1 = FIRST (first
//!                          record of a unit); a single record has both; bit 2 = KEYED (an
//!                          append whose payload starts with a key block)
//!  14  2  name length      u16: 1..=256 when the record names its session inline; 0 when
//!                          it refers to an earlier record of the segment that does
//!  16  4  session ref      u32: 0 for a named record; else the offset, in this segment, of
//!                          an earlier named record of the same session
//!  20  8  LSN              u64
//!  28  8  argument         u64: interaction id (append, pop), kept count (truncate), lost LSNs
//!                          (gap), messages shared (fork), messages removed (clear, delete)
//!  36  8  timestamp        u64: microseconds since the Unix epoch
//!  44  n  session id       UTF-8, `name length` bytes (named records only)
//!  44+n p payload          the message's JSON exactly as serialized (append), the source
//!                          session (fork), the metadata JSON (meta), else empty; in a KEYED
//!                          append the key block first (its length counts in the payload
//!                          length, and the payload CRC covers it):
//!
//! Key block (KEYED appends only, KEY_BLOCK_HEADER_LEN = 6 bytes, then the key):
//!   0  2  key length       u16: 1..=256
//!   2  4  appends named    u32: >= 1, this append and the ones after it in its unit
//!   6  k  key              the idempotency key (in an encrypted store, its HMAC-SHA256)
//! ```
//!
//! A key rides on the first append it names, so a keyed append costs one record, as a plain
//! one does; the limit on a payload (`max_record_len`) bounds the message, and the key
//! block comes on top of it.
//!
//! A session's first record in a segment names it; its later records there refer to that
//! record (4 bytes instead of the id), so a segment is self-contained and every record's
//! session is found with one extra header read. An all-zero record header ends a segment
//! cleanly (preallocated space).

use crate::error::Damage;
use crate::id::{Lsn, Timestamp};

/// Magic bytes at the start of every segment file.
pub const MAGIC: [u8; 8] = *b"convlog\x1a";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 6;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 48;
/// Length of the fixed part of a record header (the session name, if any, follows it).
pub const RECORD_HEADER_LEN: usize = 44;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Bound on LSNs: a record whose LSN plus its span (a gap's count) passes it is
/// `Damage::BadField`, so no LSN arithmetic on what a file says can overflow (2^62 records
/// are beyond any store).
pub const MAX_LSN: u64 = 1 << 62;
/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;
/// Default limit on a record's payload, and the hard ceiling of `max_record_len`.
pub const DEFAULT_MAX_RECORD_LEN: u32 = 16 << 20;
/// How many records of a session a writer lets refer to one record naming it before it names
/// the session again: a naming record whose header is damaged then costs a salvage at most
/// this many records of its session (they lose their session with it), for one more copy of
/// the id (36 bytes for a UUID) per 1024 records.
pub const NAME_EVERY: u32 = 1024;
/// Flag bit: this record commits itself and every uncommitted record before it.
pub const FLAG_COMMIT: u8 = 1;
/// Flag bit: this record (an append) carries an idempotency key, in a key block before its
/// message (see the layout above).
pub const FLAG_KEYED: u8 = 4;
/// Length of a key block's fixed part (key length, appends named); the key follows it.
pub const KEY_BLOCK_HEADER_LEN: usize = 6;
/// Longest key block: the fixed part and the longest key.
pub const MAX_KEY_BLOCK_LEN: usize = KEY_BLOCK_HEADER_LEN + MAX_KEY_LEN;
/// Flag bit: this record starts a unit (a single record, or the first of a batch). With
/// [`FLAG_COMMIT`] it makes unit boundaries explicit, so a salvage that loses a record can
/// still tell which of the records after it belong to the same (now broken) unit.
pub const FLAG_FIRST: u8 = 2;
/// Segment header flag bit: the segment was written by compaction. Its records' LSNs
/// increase but may skip (the records in between were dropped); everything else about it is
/// as in any segment, and its last record's next LSN is the next segment's first.
pub const SEGMENT_COMPACTED: u32 = 1;

// Segment header offsets.
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + MAGIC.len();
const SH_HEADER_LEN: usize = SH_VERSION + 2;
const SH_FLAGS: usize = SH_HEADER_LEN + 2;
const SH_FIRST_LSN: usize = SH_FLAGS + 4;
const SH_SALT: usize = SH_FIRST_LSN + 8;
const SH_CREATED: usize = SH_SALT + 8;
const SH_RESERVED: usize = SH_CREATED + 8;
const SH_CRC: usize = SH_RESERVED + 4;
const _: () = assert!(SH_CRC + 4 == SEGMENT_HEADER_LEN);

// Record header offsets.
const RH_HEADER_CRC: usize = 0;
const RH_PAYLOAD_CRC: usize = RH_HEADER_CRC + 4;
const RH_PAYLOAD_LEN: usize = RH_PAYLOAD_CRC + 4;
const RH_KIND: usize = RH_PAYLOAD_LEN + 4;
const RH_FLAGS: usize = RH_KIND + 1;
const RH_NAME_LEN: usize = RH_FLAGS + 1;
const RH_SESSION_REF: usize = RH_NAME_LEN + 2;
const RH_LSN: usize = RH_SESSION_REF + 4;
const RH_ARG: usize = RH_LSN + 8;
const RH_TIMESTAMP: usize = RH_ARG + 8;
const _: () = assert!(RH_TIMESTAMP + 8 == RECORD_HEADER_LEN);

/// The kind of event a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// One message appended; the argument is its interaction id.
    Append = 1,
    /// The last message removed; the argument is its interaction id.
    Pop = 2,
    /// The session cut to its first `argument` messages.
    Truncate = 3,
    /// The session emptied (a tombstone).
    Clear = 4,
    /// Written by salvage in place of damaged records: `argument` LSNs were lost here.
    Gap = 5,
    /// The session starts as the first `argument` messages of the session named in the
    /// payload, sharing them (one record, whatever their number).
    Fork = 7,
    /// The session's metadata: a small JSON object (the payload) replacing any earlier one.
    Meta = 8,
    /// The session deleted: its messages, keys and metadata are gone (its bytes go at the
    /// next compaction). The argument is the number of messages it held.
    Delete = 9,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 8] = [
        Kind::Append,
        Kind::Pop,
        Kind::Truncate,
        Kind::Clear,
        Kind::Gap,
        Kind::Fork,
        Kind::Meta,
        Kind::Delete,
    ];

    /// The kind for a code byte, if this build knows it.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// A lower-case name, for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Append => "append",
            Kind::Pop => "pop",
            Kind::Truncate => "truncate",
            Kind::Clear => "clear",
            Kind::Gap => "gap",
            Kind::Fork => "fork",
            Kind::Meta => "meta",
            Kind::Delete => "delete",
        }
    }
}

/// The header of one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the first record in the segment.
    pub first_lsn: Lsn,
    /// Random per-segment value that seeds every record header CRC.
    pub salt: u64,
    /// When the segment was created.
    pub created: Timestamp,
    /// Whether compaction wrote it ([`SEGMENT_COMPACTED`]): its records' LSNs may skip.
    pub compacted: bool,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentHeaderError {
    /// Not a whole header.
    Short,
    /// Wrong magic.
    BadMagic,
    /// Bad checksum.
    Checksum,
    /// Checksummed, but from a version this build does not read.
    Version(u16),
    /// Checksummed, but a reserved field is not zero (a writer gave it a meaning this build
    /// does not know).
    Reserved,
}

impl SegmentHeader {
    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SH_MAGIC..SH_VERSION].copy_from_slice(&MAGIC);
        b[SH_VERSION..SH_HEADER_LEN].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[SH_HEADER_LEN..SH_FLAGS].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        let flags = if self.compacted { SEGMENT_COMPACTED } else { 0 };
        b[SH_FLAGS..SH_FIRST_LSN].copy_from_slice(&flags.to_le_bytes());
        b[SH_FIRST_LSN..SH_SALT].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        b[SH_SALT..SH_CREATED].copy_from_slice(&self.salt.to_le_bytes());
        b[SH_CREATED..SH_RESERVED].copy_from_slice(&self.created.0.to_le_bytes());
        let crc = crc32fast::hash(&b[..SH_CRC]);
        b[SH_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header from the start of `buf`.
    ///
    /// # Errors
    /// A [`SegmentHeaderError`] saying why the bytes are not a valid header.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let b = buf
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(SegmentHeaderError::Short)?;
        if b[SH_MAGIC..SH_VERSION] != MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        if crc32fast::hash(&b[..SH_CRC]) != le_u32(b, SH_CRC) {
            return Err(SegmentHeaderError::Checksum);
        }
        let version = le_u16(b, SH_VERSION);
        if version != FORMAT_VERSION || usize::from(le_u16(b, SH_HEADER_LEN)) != SEGMENT_HEADER_LEN
        {
            return Err(SegmentHeaderError::Version(version));
        }
        if le_u32(b, SH_FLAGS) & !SEGMENT_COMPACTED != 0 || le_u32(b, SH_RESERVED) != 0 {
            return Err(SegmentHeaderError::Reserved);
        }
        Ok(SegmentHeader {
            first_lsn: Lsn(le_u64(b, SH_FIRST_LSN)),
            salt: le_u64(b, SH_SALT),
            created: Timestamp(le_u64(b, SH_CREATED)),
            compacted: le_u32(b, SH_FLAGS) & SEGMENT_COMPACTED != 0,
        })
    }
}

/// The decoded fixed fields of a record (everything but the session id and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The event kind.
    pub kind: Kind,
    /// Whether this record starts a unit (a single record, or a batch's first).
    pub first: bool,
    /// Whether this record commits the unit it ends.
    pub commit: bool,
    /// Its LSN.
    pub lsn: Lsn,
    /// Kind-specific argument (see the layout above).
    pub arg: u64,
    /// When it was appended.
    pub timestamp: Timestamp,
}

impl RecordMeta {
    /// How many LSNs the record stands for: 1, or for a `gap` record the LSNs it says were
    /// lost (at least 1). The next record's LSN is `lsn + lsn_span()`.
    #[must_use]
    pub fn lsn_span(&self) -> u64 {
        match self.kind {
            Kind::Gap => self.arg.max(1),
            _ => 1,
        }
    }

    /// The LSN the record after this one must carry.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.lsn.0.saturating_add(self.lsn_span()))
    }
}

/// How a record names its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionField<'a> {
    /// The session id, inline (1..=256 bytes): a session's first record in a segment.
    Named(&'a [u8]),
    /// The offset, in the same segment, of an earlier record that names the session.
    Ref(u32),
}

impl SessionField<'_> {
    /// Bytes this field adds to the fixed header: the inline name's length, or 0.
    #[must_use]
    pub fn inline_len(&self) -> usize {
        match self {
            SessionField::Named(name) => name.len(),
            SessionField::Ref(_) => 0,
        }
    }
}

/// The idempotency key a `KEYED` append carries, in its key block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey<'a> {
    /// The key (1..=256 bytes).
    pub key: &'a [u8],
    /// How many appends it names: this one and the ones after it in its unit (at least 1).
    pub count: u32,
}

impl RecordKey<'_> {
    /// Bytes its key block takes in the payload.
    #[must_use]
    pub fn block_len(&self) -> usize {
        KEY_BLOCK_HEADER_LEN + self.key.len()
    }
}

/// One record, borrowed from the bytes it was decoded from.
///
/// Invariant: a `RecordRef` returned by [`decode_record`] passed both checksums, so its
/// session field, key and payload are exactly the bytes that were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The fixed fields.
    pub meta: RecordMeta,
    /// Its session: inline, or a reference to be resolved with [`resolve_session`].
    pub session: SessionField<'a>,
    /// The idempotency key of a `KEYED` append.
    pub key: Option<RecordKey<'a>>,
    /// The payload after any key block: the message JSON for appends, empty for most events.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Total framed length of this record.
    #[must_use]
    pub fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN
            + self.session.inline_len()
            + self.key.map_or(0, |k| k.block_len())
            + self.payload.len()
    }
}

/// The seed of every record header CRC in a segment with this salt.
#[must_use]
pub fn crc_seed(salt: u64) -> u32 {
    (salt as u32) ^ ((salt >> 32) as u32)
}

/// Appends one framed record to `out`: with `key`, a `KEYED` record whose payload starts
/// with the key block.
///
/// The caller has validated the session id (1..=256 bytes) or made the reference point at a
/// named record of the same session earlier in the segment, bounded the payload length, and
/// given a key only to an append (1..=256 bytes, naming at least itself).
pub fn encode_record(
    out: &mut Vec<u8>,
    salt: u64,
    meta: &RecordMeta,
    session: SessionField<'_>,
    key: Option<RecordKey<'_>>,
    payload: &[u8],
) {
    let (name, session_ref): (&[u8], u32) = match session {
        SessionField::Named(name) => (name, 0),
        SessionField::Ref(at) => (&[], at),
    };
    let key = key.map(|k| (&k.key[..k.key.len().min(MAX_KEY_LEN)], k.count));
    let block_len = key.map_or(0, |(bytes, _)| KEY_BLOCK_HEADER_LEN + bytes.len());
    // Framed in place (the header's checksums patched in last), so the payload checksum is
    // one pass over contiguous bytes, key block included.
    let at = out.len();
    out.reserve(RECORD_HEADER_LEN + name.len() + block_len + payload.len());
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    out.extend_from_slice(name);
    let body = out.len();
    if let Some((bytes, count)) = key {
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(payload);
    let payload_crc = crc32fast::hash(&out[body..]);
    let h = &mut out[at..at + RECORD_HEADER_LEN];
    h[RH_PAYLOAD_CRC..RH_PAYLOAD_LEN].copy_from_slice(&payload_crc.to_le_bytes());
    let payload_len = u32::try_from(block_len + payload.len()).unwrap_or(u32::MAX);
    h[RH_PAYLOAD_LEN..RH_KIND].copy_from_slice(&payload_len.to_le_bytes());
    h[RH_KIND] = meta.kind as u8;
    h[RH_FLAGS] = if meta.commit { FLAG_COMMIT } else { 0 }
        | if meta.first { FLAG_FIRST } else { 0 }
        | if key.is_some() { FLAG_KEYED } else { 0 };
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    h[RH_NAME_LEN..RH_SESSION_REF].copy_from_slice(&name_len.to_le_bytes());
    h[RH_SESSION_REF..RH_LSN].copy_from_slice(&session_ref.to_le_bytes());
    h[RH_LSN..RH_ARG].copy_from_slice(&meta.lsn.0.to_le_bytes());
    h[RH_ARG..RH_TIMESTAMP].copy_from_slice(&meta.arg.to_le_bytes());
    h[RH_TIMESTAMP..].copy_from_slice(&meta.timestamp.0.to_le_bytes());
    let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(salt));
    crc.update(&out[at + RH_PAYLOAD_CRC..body]);
    let header_crc = crc.finalize();
    out[at + RH_HEADER_CRC..at + RH_PAYLOAD_CRC].copy_from_slice(&header_crc.to_le_bytes());
}

/// What [`decode_record`] found at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, verified record.
    Record(RecordRef<'a>),
    /// A clean end: no bytes left, or an all-zero header (preallocated space).
    End,
    /// Bytes that are not a valid record.
    Damaged(Damage),
    /// A header whose checksum holds but whose kind byte this build does not know.
    UnknownKind(u8),
}

/// The damage a decode result stands for where a whole record had to be (at an offset the
/// index or a scan already verified). A record stands for none; it maps to a field error.
pub(crate) fn decode_damage(d: Decoded<'_>) -> Damage {
    match d {
        Decoded::Damaged(d) => d,
        Decoded::End => Damage::BadLength { len: 0 },
        Decoded::UnknownKind(_) | Decoded::Record(_) => Damage::BadField { field: "kind" },
    }
}

/// A record header whose checksum holds, and the inline name it covers.
struct CheckedHeader<'a> {
    h: &'a [u8],
    name: &'a [u8],
}

/// Verifies the header CRC of the record at the start of `buf`: bounds the name length
/// first (it says how many bytes the CRC covers), then checks the CRC. Nothing else of the
/// header is trusted before this returns `Ok`.
fn check_header(buf: &[u8], salt: u64) -> Result<CheckedHeader<'_>, Damage> {
    let h = buf.get(..RECORD_HEADER_LEN).ok_or(Damage::BadLength {
        len: buf.len() as u64,
    })?;
    let name_len = usize::from(le_u16(h, RH_NAME_LEN));
    if name_len > MAX_SESSION_LEN {
        return Err(Damage::BadField {
            field: "name length",
        });
    }
    let name = buf
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + name_len)
        .ok_or(Damage::BadLength {
            len: name_len as u64,
        })?;
    let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(salt));
    crc.update(&h[RH_PAYLOAD_CRC..]);
    crc.update(name);
    if crc.finalize() != le_u32(h, RH_HEADER_CRC) {
        return Err(Damage::HeaderChecksum);
    }
    Ok(CheckedHeader { h, name })
}

/// Decodes the record at the start of `buf`: the rest of a segment from some offset.
///
/// The header CRC is verified before any length in it is used (but the name length, which
/// is bounded first); lengths are bounded by `max_payload` and by `buf.len()`; nothing is
/// allocated. A session reference is checked for form only: [`resolve_session`] follows it.
#[must_use]
pub fn decode_record(buf: &[u8], salt: u64, max_payload: u32) -> Decoded<'_> {
    decode(buf, salt, max_payload, true)
}

/// [`decode_record`] without the payload CRC, for a sealed payload about to be opened: its
/// AEAD tag is the stronger check (and a caller whose open fails checks the CRC, to report
/// damage as what it is).
#[must_use]
pub(crate) fn decode_record_sealed(buf: &[u8], salt: u64, max_payload: u32) -> Decoded<'_> {
    decode(buf, salt, max_payload, false)
}

fn decode(buf: &[u8], salt: u64, max_payload: u32, payload_crc: bool) -> Decoded<'_> {
    let head = &buf[..buf.len().min(RECORD_HEADER_LEN)];
    if head.iter().all(|b| *b == 0) {
        // No bytes left, a zero tail shorter than a header, or a zero header: a clean end.
        return Decoded::End;
    }
    let CheckedHeader { h, name } = match check_header(buf, salt) {
        Ok(c) => c,
        Err(d) => return Decoded::Damaged(d),
    };
    // The header is verified: its lengths and fields can be trusted to be what was written.
    let Some(kind) = Kind::from_code(h[RH_KIND]) else {
        return Decoded::UnknownKind(h[RH_KIND]);
    };
    let flags = h[RH_FLAGS];
    let keyed = flags & FLAG_KEYED != 0;
    if flags & !(FLAG_COMMIT | FLAG_FIRST | FLAG_KEYED) != 0 || (keyed && kind != Kind::Append) {
        return Decoded::Damaged(Damage::BadField { field: "flags" });
    }
    let lsn = le_u64(h, RH_LSN);
    let span = if kind == Kind::Gap {
        le_u64(h, RH_ARG).max(1)
    } else {
        1
    };
    if lsn.checked_add(span).is_none_or(|end| end > MAX_LSN) {
        return Decoded::Damaged(Damage::BadField { field: "LSN" });
    }
    let session_ref = le_u32(h, RH_SESSION_REF);
    let session = match (name.is_empty(), session_ref) {
        (false, 0) => SessionField::Named(name),
        (true, at) if at as usize >= SEGMENT_HEADER_LEN => SessionField::Ref(at),
        _ => {
            return Decoded::Damaged(Damage::BadField {
                field: "session ref",
            });
        }
    };
    let payload_len = le_u32(h, RH_PAYLOAD_LEN);
    let start = RECORD_HEADER_LEN + name.len();
    let end = start as u64 + u64::from(payload_len);
    let bound = u64::from(max_payload) + if keyed { MAX_KEY_BLOCK_LEN as u64 } else { 0 };
    if u64::from(payload_len) > bound || end > buf.len() as u64 {
        return Decoded::Damaged(Damage::BadLength {
            len: u64::from(payload_len),
        });
    }
    let region = &buf[start..start + payload_len as usize];
    if payload_crc && crc32fast::hash(region) != le_u32(h, RH_PAYLOAD_CRC) {
        return Decoded::Damaged(Damage::PayloadChecksum);
    }
    let (key, payload) = if keyed {
        match key_block(region) {
            Some((k, rest)) if rest.len() <= max_payload as usize => (Some(k), rest),
            _ => return Decoded::Damaged(Damage::BadField { field: "key block" }),
        }
    } else {
        (None, region)
    };
    Decoded::Record(RecordRef {
        meta: RecordMeta {
            kind,
            first: flags & FLAG_FIRST != 0,
            commit: flags & FLAG_COMMIT != 0,
            lsn: Lsn(lsn),
            arg: le_u64(h, RH_ARG),
            timestamp: Timestamp(le_u64(h, RH_TIMESTAMP)),
        },
        session,
        key,
        payload,
    })
}

/// The key block at the start of a `KEYED` append's payload, and the message after it: `None`
/// unless its lengths hold (a key of 1..=256 bytes within the payload, naming at least one
/// append).
fn key_block(region: &[u8]) -> Option<(RecordKey<'_>, &[u8])> {
    let fixed = region.get(..KEY_BLOCK_HEADER_LEN)?;
    let len = usize::from(le_u16(fixed, 0));
    let count = le_u32(fixed, 2);
    if len == 0 || len > MAX_KEY_LEN || count == 0 {
        return None;
    }
    let key = region.get(KEY_BLOCK_HEADER_LEN..KEY_BLOCK_HEADER_LEN + len)?;
    Some((
        RecordKey { key, count },
        &region[KEY_BLOCK_HEADER_LEN + len..],
    ))
}

/// Whether a record header whose checksum holds starts `buf` (resynchronization after damage
/// looks for the next one). An all-zero header never does: it ends a segment, whatever CRC
/// seed the salt gives.
#[must_use]
pub fn header_verifies(buf: &[u8], salt: u64) -> bool {
    let zero = buf
        .get(..RECORD_HEADER_LEN)
        .is_some_and(|h| h.iter().all(|b| *b == 0));
    !zero && check_header(buf, salt).is_ok()
}

/// The session id of `record`, decoded at `offset` of `segment` (the whole segment file).
///
/// A named record carries it; a reference must point at an earlier offset of the same
/// segment where a record whose header verifies names a session. Only that header (which
/// covers the name) is read: a naming record whose payload is damaged still names its session.
///
/// # Errors
/// [`Damage::BadSessionRef`] when the reference does not lead to such a record.
pub fn resolve_session<'a>(
    segment: &'a [u8],
    offset: u64,
    record: &RecordRef<'a>,
    salt: u64,
) -> Result<&'a [u8], Damage> {
    let at = match record.session {
        SessionField::Named(name) => return Ok(name),
        SessionField::Ref(at) => at,
    };
    let bad = Damage::BadSessionRef { at };
    if u64::from(at) >= offset {
        return Err(bad);
    }
    match segment.get(at as usize..).map(|b| check_header(b, salt)) {
        Some(Ok(c)) if !c.name.is_empty() => Ok(c.name),
        _ => Err(bad),
    }
}

/// The framed length of a record whose verified header starts `header`, if it is one.
///
/// Used by readers that fetch a record in two steps (header, then body) with positioned reads.
#[must_use]
pub fn framed_len_from_header(header: &[u8; RECORD_HEADER_LEN]) -> u64 {
    RECORD_HEADER_LEN as u64
        + u64::from(le_u16(header, RH_NAME_LEN))
        + u64::from(le_u32(header, RH_PAYLOAD_LEN))
}

/// The little-endian `u16` at `at` of `b` (the caller checked the length: panics past it).
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

/// The little-endian `u32` at `at` of `b` (the caller checked the length).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `at` of `b` (the caller checked the length).
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
