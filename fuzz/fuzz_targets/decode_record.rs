//! `decode_record` on arbitrary bytes: never panics, never accepts a record over the limit
//! or past the buffer or with a flag bit other than COMMIT and FIRST, and whatever decodes
//! re-encodes to exactly the bytes it came from (both flags included); `resolve_session`
//! follows a reference without panicking; a record's LSN span is at least 1 (more only for
//! a gap) and `next_lsn` adds it, never past `MAX_LSN`.
//! The same for segment headers.
//!
//! Input: `mode: u8, salt: u64, max_payload: u32, bytes...`. Random bytes almost never carry
//! valid CRCs, so `mode` can ask the target to fix them up first (bit 0: the record header
//! CRC, bit 1: the payload CRC, bit 2: the segment header CRC), letting the fuzzer explore
//! what lies behind the checksums.
#![no_main]

use convlog::format::{
    Decoded, FLAG_COMMIT, FLAG_FIRST, FLAG_KEYED, Kind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
    SessionField, crc_seed, decode_record, encode_record, resolve_session,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let mode = data[0];
    let salt = u64::from_le_bytes(data[1..9].try_into().unwrap());
    // Limits up to a little over the 16 MiB ceiling.
    let max = u32::from_le_bytes(data[9..13].try_into().unwrap()) % ((16 << 20) + 2);
    let mut buf = data[13..].to_vec();
    fix_crcs(&mut buf, mode, salt);

    match decode_record(&buf, salt, max) {
        Decoded::Record(r) => {
            assert!(r.payload.len() as u64 <= u64::from(max));
            assert!(r.framed_len() <= buf.len());
            // Byte 13 holds the flags: exactly the two the meta carries, and KEYED for a key.
            let flags = if r.meta.commit { FLAG_COMMIT } else { 0 }
                | if r.meta.first { FLAG_FIRST } else { 0 }
                | if r.key.is_some() { FLAG_KEYED } else { 0 };
            if let Some(k) = r.key {
                assert_eq!(r.meta.kind, Kind::Append, "only an append carries a key");
                assert!(!k.key.is_empty() && k.key.len() <= 256 && k.count >= 1);
            }
            assert_eq!(buf[13], flags, "flags byte");
            let span = r.meta.lsn_span();
            assert!(span >= 1);
            assert!(r.meta.kind == Kind::Gap || span == 1);
            assert_eq!(r.meta.next_lsn().0, r.meta.lsn.0.saturating_add(span));
            assert!(r.meta.next_lsn().0 <= convlog::format::MAX_LSN, "no LSN passes MAX_LSN");
            match r.session {
                SessionField::Named(name) => assert!(!name.is_empty() && name.len() <= 256),
                SessionField::Ref(at) => {
                    assert!(at as usize >= SEGMENT_HEADER_LEN);
                    // Taken as a segment whose record sits at its end, the buffer resolves
                    // the reference (or refuses it) without panicking.
                    if let Ok(name) = resolve_session(&buf, buf.len() as u64, &r, salt) {
                        assert!(!name.is_empty() && name.len() <= 256);
                        assert!((at as usize) < buf.len());
                    }
                }
            }
            let mut out = Vec::new();
            encode_record(&mut out, salt, &r.meta, r.session, r.key, r.payload);
            assert_eq!(
                out.as_slice(),
                &buf[..r.framed_len()],
                "re-encoding differs"
            );
            // Another salt never validates the same header (the CRC seed differs).
            if crc_seed(salt) != crc_seed(salt ^ 1) {
                assert!(!matches!(
                    decode_record(&buf, salt ^ 1, max),
                    Decoded::Record(_)
                ));
            }
        }
        Decoded::End => {
            let head = &buf[..buf.len().min(RECORD_HEADER_LEN)];
            assert!(head.iter().all(|b| *b == 0), "End on a non-zero header");
        }
        Decoded::Damaged(_) | Decoded::UnknownKind(_) => {}
    }

    if let Ok(h) = SegmentHeader::decode(&buf) {
        assert_eq!(
            &h.encode()[..],
            &buf[..SEGMENT_HEADER_LEN],
            "segment header re-encodes differently"
        );
    }
});

fn fix_crcs(buf: &mut [u8], mode: u8, salt: u64) {
    if mode & 4 != 0 && buf.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&buf[..44]);
        buf[44..48].copy_from_slice(&crc.to_le_bytes());
        return;
    }
    if buf.len() < RECORD_HEADER_LEN {
        return;
    }
    let slen = usize::from(u16::from_le_bytes([buf[14], buf[15]]));
    let plen = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
    let body = RECORD_HEADER_LEN + slen;
    if mode & 2 != 0 && buf.len() >= body {
        let end = body.saturating_add(plen).min(buf.len());
        let crc = crc32fast::hash(&buf[body..end]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    if mode & 1 != 0 && buf.len() >= body {
        let mut h = crc32fast::Hasher::new_with_initial(crc_seed(salt));
        h.update(&buf[4..body]);
        let crc = h.finalize();
        buf[..4].copy_from_slice(&crc.to_le_bytes());
    }
}
