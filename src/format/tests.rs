//! Unit tests of the format module.
use super::*;
use proptest::prelude::*;

fn meta(kind: Kind, lsn: u64) -> RecordMeta {
    RecordMeta {
        kind,
        first: true,
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
        compacted: false,
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
fn an_all_zero_header_never_verifies_even_where_its_crc_would() {
    // Seeded with crc_seed of this salt, the CRC of 40 zero bytes is 0: a zero header
    // "checks". It must still end a segment, and never be taken for the next record.
    let salt = 0x6245_9bb8;
    assert!(check_header(&[0u8; RECORD_HEADER_LEN], salt).is_ok());
    assert!(!header_verifies(&[0u8; RECORD_HEADER_LEN + 10], salt));
    assert_eq!(decode_record(&[0u8; 100], salt, 1024), Decoded::End);
}

#[test]
fn wrong_salt_does_not_validate() {
    let mut out = Vec::new();
    encode_record(
        &mut out,
        1,
        &meta(Kind::Append, 1),
        SessionField::Named(b"s"),
        None,
        b"{}",
    );
    assert!(matches!(decode_record(&out, 1, 1024), Decoded::Record(_)));
    assert_eq!(
        decode_record(&out, 2, 1024),
        Decoded::Damaged(Damage::HeaderChecksum)
    );
}

#[test]
fn payload_over_the_limit_is_rejected_before_reading_it() {
    let mut out = Vec::new();
    encode_record(
        &mut out,
        9,
        &meta(Kind::Append, 1),
        SessionField::Named(b"s"),
        None,
        &[b'x'; 100],
    );
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
        SessionField::Named(b"session"),
        None,
        b"{\"a\":1}",
    );
    let second = out.len();
    encode_record(
        &mut out,
        77,
        &meta(Kind::Append, 4),
        SessionField::Ref(SEGMENT_HEADER_LEN as u32),
        None,
        b"{}",
    );
    for (start, covered) in [(0, RECORD_HEADER_LEN + 7), (second, RECORD_HEADER_LEN)] {
        for bit in 0..covered * 8 {
            let mut b = out[start..].to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&b, 77, 1024), Decoded::Record(_)),
                "bit {bit} flip of the record at {start} accepted"
            );
        }
    }
}

/// A segment image: header, a record naming "alpha" at `SEGMENT_HEADER_LEN`, then one
/// referring to it at the returned offset.
fn named_then_ref() -> (Vec<u8>, u64) {
    let mut seg = vec![0u8; SEGMENT_HEADER_LEN];
    encode_record(
        &mut seg,
        5,
        &meta(Kind::Append, 1),
        SessionField::Named(b"alpha"),
        None,
        b"{}",
    );
    let at = seg.len() as u64;
    encode_record(
        &mut seg,
        5,
        &meta(Kind::Append, 2),
        SessionField::Ref(SEGMENT_HEADER_LEN as u32),
        None,
        b"{}",
    );
    (seg, at)
}

#[test]
fn a_reference_resolves_to_the_name_of_an_earlier_named_record() {
    let (seg, at) = named_then_ref();
    let Decoded::Record(first) = decode_record(&seg[SEGMENT_HEADER_LEN..], 5, 1024) else {
        panic!("first record");
    };
    assert_eq!(first.session, SessionField::Named(b"alpha"));
    assert_eq!(
        resolve_session(&seg, SEGMENT_HEADER_LEN as u64, &first, 5),
        Ok(&b"alpha"[..])
    );
    let Decoded::Record(second) = decode_record(&seg[at as usize..], 5, 1024) else {
        panic!("second record");
    };
    assert_eq!(second.framed_len(), RECORD_HEADER_LEN + 2);
    assert_eq!(resolve_session(&seg, at, &second, 5), Ok(&b"alpha"[..]));
    // Not forward, not to itself, not to a record that is itself a reference, not to
    // bytes that are no record, not across salts.
    let bad = |r: u32| Err(Damage::BadSessionRef { at: r });
    let with_ref = |r: u32| RecordRef {
        session: SessionField::Ref(r),
        ..second
    };
    assert_eq!(
        resolve_session(&seg, at, &with_ref(at as u32), 5),
        bad(at as u32)
    );
    assert_eq!(
        resolve_session(&seg, 10_000, &with_ref(at as u32), 5),
        bad(at as u32)
    );
    assert_eq!(resolve_session(&seg, at, &with_ref(49), 5), bad(49));
    assert_eq!(
        resolve_session(&seg, at, &second, 6),
        bad(SEGMENT_HEADER_LEN as u32)
    );
}

#[test]
fn a_name_and_a_reference_together_or_neither_is_damage() {
    let (mut seg, at) = named_then_ref();
    let refs = |b: &mut [u8], v: u32, salt: u64| {
        b[RH_SESSION_REF..RH_LSN].copy_from_slice(&v.to_le_bytes());
        let name_len = usize::from(le_u16(b, RH_NAME_LEN));
        let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(salt));
        crc.update(&b[RH_PAYLOAD_CRC..RECORD_HEADER_LEN + name_len]);
        b[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    };
    let field = Decoded::Damaged(Damage::BadField {
        field: "session ref",
    });
    refs(&mut seg[SEGMENT_HEADER_LEN..], 48, 5);
    assert_eq!(decode_record(&seg[SEGMENT_HEADER_LEN..], 5, 1024), field);
    refs(&mut seg[at as usize..], 47, 5);
    assert_eq!(decode_record(&seg[at as usize..], 5, 1024), field);
}

#[test]
fn unknown_kind_with_valid_checksum_is_reported_as_such() {
    let mut out = Vec::new();
    encode_record(
        &mut out,
        3,
        &meta(Kind::Append, 1),
        SessionField::Named(b"s"),
        None,
        b"",
    );
    out[RH_KIND] = 200;
    let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(3));
    crc.update(&out[RH_PAYLOAD_CRC..RECORD_HEADER_LEN + 1]);
    out[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    assert_eq!(decode_record(&out, 3, 1024), Decoded::UnknownKind(200));
}

#[test]
fn an_lsn_or_a_gap_that_passes_max_lsn_is_a_bad_field() {
    for (kind, lsn, arg) in [
        (Kind::Gap, 5, u64::MAX),
        (Kind::Gap, MAX_LSN - 3, 4),
        (Kind::Append, MAX_LSN, 1),
        (Kind::Append, u64::MAX, 1),
    ] {
        let m = RecordMeta {
            arg,
            ..meta(kind, lsn)
        };
        let mut out = Vec::new();
        encode_record(&mut out, 9, &m, SessionField::Named(b"s"), None, b"");
        assert_eq!(
            decode_record(&out, 9, 1024),
            Decoded::Damaged(Damage::BadField { field: "LSN" }),
            "{kind:?} at {lsn} spanning {arg}"
        );
    }
    // The last LSN a record may end at decodes.
    let m = RecordMeta {
        arg: 3,
        ..meta(Kind::Gap, MAX_LSN - 3)
    };
    let mut out = Vec::new();
    encode_record(&mut out, 9, &m, SessionField::Named(b"-"), None, b"");
    assert!(matches!(decode_record(&out, 9, 1024), Decoded::Record(_)));
}

proptest! {
    #[test]
    fn records_round_trip(
        salt: u64, lsn: u64, arg: u64, ts: u64, commit: bool, first: bool, kind in 0usize..8,
        session in proptest::collection::vec(any::<u8>(), 1..=256),
        named: bool, at in (SEGMENT_HEADER_LEN as u32)..,
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        key in proptest::option::of((proptest::collection::vec(any::<u8>(), 1..=MAX_KEY_LEN), 1u32..)),
    ) {
        // Only an append carries a key; LSNs (and a gap's span) stay within MAX_LSN.
        let kind = if key.is_some() { 0 } else { kind };
        let lsn = lsn % (MAX_LSN / 2);
        let arg = if Kind::ALL[kind] == Kind::Gap { arg % (MAX_LSN / 2) } else { arg };
        let m = RecordMeta { kind: Kind::ALL[kind], first, commit, lsn: Lsn(lsn), arg, timestamp: Timestamp(ts) };
        let key = key.as_ref().map(|(k, count)| RecordKey { key: k, count: *count });
        let session = if named { SessionField::Named(&session) } else { SessionField::Ref(at) };
        let mut out = Vec::new();
        encode_record(&mut out, salt, &m, session, key, &payload);
        out.extend_from_slice(&[0u8; 3]);
        match decode_record(&out, salt, 4096) {
            Decoded::Record(r) => {
                prop_assert_eq!(r.meta, m);
                prop_assert_eq!(r.session, session);
                prop_assert_eq!(r.key, key);
                prop_assert_eq!(r.payload, &payload[..]);
                prop_assert_eq!(r.framed_len(), out.len() - 3);
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }
}

fn keyed(out: &mut Vec<u8>, kind: Kind, key: &[u8], count: u32, payload: &[u8]) {
    let k = RecordKey { key, count };
    encode_record(
        out,
        4,
        &meta(kind, 1),
        SessionField::Named(b"s"),
        Some(k),
        payload,
    );
}

/// Rewrites the payload CRC of the record at the start of `b` over its payload as it is now.
fn recrc_payload(b: &mut [u8]) {
    let len = le_u32(b, RH_PAYLOAD_LEN) as usize;
    let start = RECORD_HEADER_LEN + usize::from(le_u16(b, RH_NAME_LEN));
    let crc = crc32fast::hash(&b[start..start + len]);
    b[RH_PAYLOAD_CRC..RH_PAYLOAD_LEN].copy_from_slice(&crc.to_le_bytes());
    let mut h = crc32fast::Hasher::new_with_initial(crc_seed(4));
    h.update(&b[RH_PAYLOAD_CRC..start]);
    b[..4].copy_from_slice(&h.finalize().to_le_bytes());
}

#[test]
fn a_keyed_append_carries_its_key_block_before_the_message() {
    let mut out = Vec::new();
    keyed(&mut out, Kind::Append, b"retry-1", 3, b"{}");
    assert_eq!(out[RH_FLAGS] & FLAG_KEYED, FLAG_KEYED);
    let Decoded::Record(r) = decode_record(&out, 4, 2) else {
        panic!("a keyed append decodes");
    };
    assert_eq!(
        r.key,
        Some(RecordKey {
            key: b"retry-1",
            count: 3
        })
    );
    assert_eq!(r.payload, b"{}");
    assert_eq!(r.framed_len(), out.len());
    // The limit bounds the message: the key block comes on top of it.
    assert!(matches!(
        decode_record(&out, 4, 1),
        Decoded::Damaged(Damage::BadField { .. })
    ));
}

#[test]
fn a_key_block_whose_lengths_do_not_hold_is_damage_even_with_good_checksums() {
    let at = RECORD_HEADER_LEN + 1; // after the one-byte name
    let field = Decoded::Damaged(Damage::BadField { field: "key block" });
    for (what, edit) in [
        ("empty key", (0, 0u16.to_le_bytes().to_vec())),
        ("key past the payload", (0, 200u16.to_le_bytes().to_vec())),
        ("key over 256 bytes", (0, 257u16.to_le_bytes().to_vec())),
        ("names no append", (2, 0u32.to_le_bytes().to_vec())),
    ] {
        let mut out = Vec::new();
        keyed(&mut out, Kind::Append, b"k", 1, b"{}");
        out[at + edit.0..at + edit.0 + edit.1.len()].copy_from_slice(&edit.1);
        recrc_payload(&mut out);
        assert_eq!(decode_record(&out, 4, 1024), field, "{what}");
    }
    // A payload too short for the block's fixed part.
    let mut out = Vec::new();
    keyed(&mut out, Kind::Append, b"k", 1, b"");
    out.truncate(out.len() - 4);
    out[RH_PAYLOAD_LEN..RH_KIND].copy_from_slice(&3u32.to_le_bytes());
    recrc_payload(&mut out);
    assert_eq!(decode_record(&out, 4, 1024), field);
}

#[test]
fn only_an_append_may_carry_a_key() {
    let mut out = Vec::new();
    keyed(&mut out, Kind::Pop, b"k", 1, b"");
    assert_eq!(
        decode_record(&out, 4, 1024),
        Decoded::Damaged(Damage::BadField { field: "flags" })
    );
}
