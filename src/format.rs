//! The on-disk format, version 1: segment headers and record frames.
//!
//! Every integer is little-endian and fixed width. `docs/format.md` mirrors this comment.
//!
//! ```text
//! Segment header (SEGMENT_HEADER_LEN = 48 bytes, at offset 0 of every segment file):
//!   0  8  magic            b"convlog\x1a"
//!   8  2  format version   u16 = 1
//!  10  2  header length    u16 = 48
//!  12  4  flags            u32 = 0 (reserved)
//!  16  8  first LSN        u64: LSN of the first record; equals the file name
//!  24  8  salt             u64: random per segment; seeds every record header CRC
//!  32  8  created          u64: microseconds since the Unix epoch
//!  40  4  reserved         u32 = 0
//!  44  4  header CRC       u32: crc32 of bytes 0..44
//!
//! Record (RECORD_HEADER_LEN = 40 bytes, then the session id, then the payload):
//!   0  4  header CRC       u32: crc32 seeded with seed(salt), over bytes 4..40 and the session id
//!   4  4  payload CRC      u32: crc32 of the payload
//!   8  4  payload length   u32 (<= max_record_len)
//!  12  1  kind             u8: 1 append, 2 pop, 3 truncate, 4 clear, 5 gap
//!  13  1  flags            u8: bit 0 = COMMIT (last record of a batch; set on single records)
//!  14  2  session length   u16 (1..=256)
//!  16  8  LSN              u64
//!  24  8  argument         u64: interaction id (append, pop), kept count (truncate), lost LSNs (gap)
//!  32  8  timestamp        u64: microseconds since the Unix epoch
//!  40  s  session id       UTF-8, `session length` bytes
//!  40+s p payload          the message's JSON exactly as serialized (append), empty otherwise
//! ```
//!
//! An all-zero record header ends a segment cleanly (preallocated space).

use crate::error::Damage;
use crate::id::{Lsn, Timestamp};

/// Magic bytes at the start of every segment file.
pub const MAGIC: [u8; 8] = *b"convlog\x1a";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 48;
/// Length of the fixed part of a record header (the session id follows it).
pub const RECORD_HEADER_LEN: usize = 40;
/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;
/// Default limit on a record's payload, and the hard ceiling of `max_record_len`.
pub const DEFAULT_MAX_RECORD_LEN: u32 = 16 << 20;
/// Flag bit: this record commits itself and every uncommitted record before it.
pub const FLAG_COMMIT: u8 = 1;

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
const RH_SESSION_LEN: usize = RH_FLAGS + 1;
const RH_LSN: usize = RH_SESSION_LEN + 2;
const RH_ARG: usize = RH_LSN + 8;
const RH_TIMESTAMP: usize = RH_ARG + 8;
const _: () = assert!(RH_TIMESTAMP + 8 == RECORD_HEADER_LEN);

/// The kind of event a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 5] = [
        Kind::Append,
        Kind::Pop,
        Kind::Truncate,
        Kind::Clear,
        Kind::Gap,
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
        if le_u32(b, SH_FLAGS) != 0 || le_u32(b, SH_RESERVED) != 0 {
            return Err(SegmentHeaderError::Reserved);
        }
        Ok(SegmentHeader {
            first_lsn: Lsn(le_u64(b, SH_FIRST_LSN)),
            salt: le_u64(b, SH_SALT),
            created: Timestamp(le_u64(b, SH_CREATED)),
        })
    }
}

/// The decoded fixed fields of a record (everything but the session id and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The event kind.
    pub kind: Kind,
    /// Whether this record commits the batch it ends.
    pub commit: bool,
    /// Its LSN.
    pub lsn: Lsn,
    /// Kind-specific argument (see the layout above).
    pub arg: u64,
    /// When it was appended.
    pub timestamp: Timestamp,
}

/// One record, borrowed from the bytes it was decoded from.
///
/// Invariant: a `RecordRef` returned by [`decode_record`] passed both checksums, so its
/// session id and payload are exactly the bytes that were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The fixed fields.
    pub meta: RecordMeta,
    /// The session id (valid UTF-8 was checked by the writer, and is covered by the CRC).
    pub session: &'a [u8],
    /// The payload: the message JSON for appends, empty otherwise.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Total framed length of this record.
    #[must_use]
    pub fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.session.len() + self.payload.len()
    }
}

/// The seed of every record header CRC in a segment with this salt.
#[must_use]
pub fn crc_seed(salt: u64) -> u32 {
    (salt as u32) ^ ((salt >> 32) as u32)
}

/// Appends one framed record to `out`.
///
/// The caller has validated the session id (1..=256 bytes) and bounded the payload length.
pub fn encode_record(
    out: &mut Vec<u8>,
    salt: u64,
    meta: &RecordMeta,
    session: &[u8],
    payload: &[u8],
) {
    let start = out.len();
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[RH_PAYLOAD_CRC..RH_PAYLOAD_LEN].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[RH_PAYLOAD_LEN..RH_KIND].copy_from_slice(&payload_len.to_le_bytes());
    h[RH_KIND] = meta.kind as u8;
    h[RH_FLAGS] = if meta.commit { FLAG_COMMIT } else { 0 };
    let session_len = u16::try_from(session.len()).unwrap_or(u16::MAX);
    h[RH_SESSION_LEN..RH_LSN].copy_from_slice(&session_len.to_le_bytes());
    h[RH_LSN..RH_ARG].copy_from_slice(&meta.lsn.0.to_le_bytes());
    h[RH_ARG..RH_TIMESTAMP].copy_from_slice(&meta.arg.to_le_bytes());
    h[RH_TIMESTAMP..].copy_from_slice(&meta.timestamp.0.to_le_bytes());
    let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(salt));
    crc.update(&h[RH_PAYLOAD_CRC..]);
    crc.update(session);
    h[RH_HEADER_CRC..RH_PAYLOAD_CRC].copy_from_slice(&crc.finalize().to_le_bytes());
    out.reserve(RECORD_HEADER_LEN + session.len() + payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(session);
    out.extend_from_slice(payload);
    debug_assert_eq!(
        out.len() - start,
        RECORD_HEADER_LEN + session.len() + payload.len()
    );
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

/// Decodes the record at the start of `buf`: the rest of a segment from some offset.
///
/// The header CRC is verified before any length in it is used; lengths are bounded by
/// `max_payload` and by `buf.len()`; nothing is allocated.
#[must_use]
pub fn decode_record(buf: &[u8], salt: u64, max_payload: u32) -> Decoded<'_> {
    if buf.is_empty() {
        return Decoded::End;
    }
    let Some(h) = buf.get(..RECORD_HEADER_LEN) else {
        return if buf.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Damaged(Damage::BadLength {
                len: buf.len() as u64,
            })
        };
    };
    if h.iter().all(|b| *b == 0) {
        return Decoded::End;
    }
    let session_len = usize::from(le_u16(h, RH_SESSION_LEN));
    if session_len == 0 || session_len > MAX_SESSION_LEN {
        return Decoded::Damaged(Damage::BadField {
            field: "session length",
        });
    }
    let Some(session) = buf.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + session_len) else {
        return Decoded::Damaged(Damage::BadLength {
            len: session_len as u64,
        });
    };
    let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(salt));
    crc.update(&h[RH_PAYLOAD_CRC..]);
    crc.update(session);
    if crc.finalize() != le_u32(h, RH_HEADER_CRC) {
        return Decoded::Damaged(Damage::HeaderChecksum);
    }
    // The header is verified: its lengths and fields can be trusted to be what was written.
    let Some(kind) = Kind::from_code(h[RH_KIND]) else {
        return Decoded::UnknownKind(h[RH_KIND]);
    };
    if h[RH_FLAGS] & !FLAG_COMMIT != 0 {
        return Decoded::Damaged(Damage::BadField { field: "flags" });
    }
    let payload_len = le_u32(h, RH_PAYLOAD_LEN);
    let start = RECORD_HEADER_LEN + session_len;
    let end = start as u64 + u64::from(payload_len);
    if payload_len > max_payload || end > buf.len() as u64 {
        return Decoded::Damaged(Damage::BadLength {
            len: u64::from(payload_len),
        });
    }
    let payload = &buf[start..start + payload_len as usize];
    if crc32fast::hash(payload) != le_u32(h, RH_PAYLOAD_CRC) {
        return Decoded::Damaged(Damage::PayloadChecksum);
    }
    Decoded::Record(RecordRef {
        meta: RecordMeta {
            kind,
            commit: h[RH_FLAGS] & FLAG_COMMIT != 0,
            lsn: Lsn(le_u64(h, RH_LSN)),
            arg: le_u64(h, RH_ARG),
            timestamp: Timestamp(le_u64(h, RH_TIMESTAMP)),
        },
        session,
        payload,
    })
}

/// The framed length of a record whose verified header starts `header`, if it is one.
///
/// Used by readers that fetch a record in two steps (header, then body) with positioned reads.
#[must_use]
pub fn framed_len_from_header(header: &[u8; RECORD_HEADER_LEN]) -> u64 {
    RECORD_HEADER_LEN as u64
        + u64::from(le_u16(header, RH_SESSION_LEN))
        + u64::from(le_u32(header, RH_PAYLOAD_LEN))
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(kind: Kind, lsn: u64) -> RecordMeta {
        RecordMeta {
            kind,
            commit: true,
            lsn: Lsn(lsn),
            arg: 7,
            timestamp: Timestamp(1_700_000_000_000_000),
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            first_lsn: Lsn(42),
            salt: 0xdead_beef_0123_4567,
            created: Timestamp(5),
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert_eq!(
            SegmentHeader::decode(&bytes[..47]),
            Err(SegmentHeaderError::Short)
        );
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&b).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn all_zero_header_is_a_clean_end() {
        assert_eq!(decode_record(&[0u8; 100], 1, 1024), Decoded::End);
        assert_eq!(decode_record(&[0u8; 10], 1, 1024), Decoded::End);
        assert_eq!(decode_record(&[], 1, 1024), Decoded::End);
    }

    #[test]
    fn wrong_salt_does_not_validate() {
        let mut out = Vec::new();
        encode_record(&mut out, 1, &meta(Kind::Append, 1), b"s", b"{}");
        assert!(matches!(decode_record(&out, 1, 1024), Decoded::Record(_)));
        assert_eq!(
            decode_record(&out, 2, 1024),
            Decoded::Damaged(Damage::HeaderChecksum)
        );
    }

    #[test]
    fn payload_over_the_limit_is_rejected_before_reading_it() {
        let mut out = Vec::new();
        encode_record(&mut out, 9, &meta(Kind::Append, 1), b"s", &[b'x'; 100]);
        assert!(matches!(
            decode_record(&out, 9, 99),
            Decoded::Damaged(Damage::BadLength { len: 100 })
        ));
        assert!(matches!(
            decode_record(&out[..out.len() - 1], 9, 1000),
            Decoded::Damaged(Damage::BadLength { len: 100 })
        ));
    }

    #[test]
    fn every_header_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            77,
            &meta(Kind::Truncate, 3),
            b"session",
            b"{\"a\":1}",
        );
        for bit in 0..(RECORD_HEADER_LEN + 7) * 8 {
            let mut b = out.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&b, 77, 1024), Decoded::Record(_)),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn unknown_kind_with_valid_checksum_is_reported_as_such() {
        let mut out = Vec::new();
        encode_record(&mut out, 3, &meta(Kind::Append, 1), b"s", b"");
        out[RH_KIND] = 200;
        let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(3));
        crc.update(&out[RH_PAYLOAD_CRC..RECORD_HEADER_LEN + 1]);
        out[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        assert_eq!(decode_record(&out, 3, 1024), Decoded::UnknownKind(200));
    }

    proptest! {
        #[test]
        fn records_round_trip(
            salt: u64, lsn: u64, arg: u64, ts: u64, commit: bool, kind in 0usize..5,
            session in proptest::collection::vec(any::<u8>(), 1..=256),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let m = RecordMeta { kind: Kind::ALL[kind], commit, lsn: Lsn(lsn), arg, timestamp: Timestamp(ts) };
            let mut out = Vec::new();
            encode_record(&mut out, salt, &m, &session, &payload);
            out.extend_from_slice(&[0u8; 3]);
            match decode_record(&out, salt, 4096) {
                Decoded::Record(r) => {
                    prop_assert_eq!(r.meta, m);
                    prop_assert_eq!(r.session, &session[..]);
                    prop_assert_eq!(r.payload, &payload[..]);
                    prop_assert_eq!(r.framed_len(), out.len() - 3);
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }
    }
}
