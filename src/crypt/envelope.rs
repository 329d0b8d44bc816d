//! Sealing and opening payloads (the envelope layout is in `crypt/mod.rs`), and the AEAD
//! under the master key that wraps data keys.

use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};
use crate::format::{Kind, RecordMeta};

/// First byte of a sealed payload. JSON text starts with `{` or whitespace, never this.
pub(crate) const SEALED_TAG: u8 = 0x01;
/// Offset of the key id in an envelope.
const ENV_KEY_ID: usize = 1;
/// Offset of the nonce.
const ENV_NONCE: usize = ENV_KEY_ID + 8;
/// Length of a nonce (XChaCha20).
pub(crate) const NONCE_LEN: usize = 24;
/// Offset of the ciphertext.
const ENV_DATA: usize = ENV_NONCE + NONCE_LEN;
/// Length of an authentication tag (Poly1305).
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed payload adds to the message it seals: tag byte, key id, nonce, AEAD tag.
pub const SEAL_OVERHEAD: usize = ENV_DATA + TAG_LEN;
/// Length of a data key.
pub(crate) const DATA_KEY_LEN: usize = 32;

/// Whether records of `kind` carry a sealed payload in an encrypted store (the others hold
/// nothing secret: a fork names a session, whose id every header shows anyway; an
/// idempotency key is logged as its HMAC).
pub(crate) fn sealed_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Append | Kind::Meta)
}

/// Whether `payload` is a sealed envelope.
pub(crate) fn is_sealed(payload: &[u8]) -> bool {
    payload.first() == Some(&SEALED_TAG)
}

/// Fills `buf` from the operating system's random generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| Error::Io {
        op: "getrandom",
        path: "(the operating system's random generator)".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Nonces for one open store: a random 16-byte prefix, then a counter. Two open stores
/// share a prefix with probability 2^-128, so no nonce repeats under a key.
#[derive(Debug)]
pub(crate) struct Nonces {
    prefix: [u8; 16],
    counter: AtomicU64,
}

impl Nonces {
    pub(crate) fn new() -> Result<Nonces> {
        let mut prefix = [0u8; 16];
        fill_random(&mut prefix)?;
        Ok(Nonces {
            prefix,
            counter: AtomicU64::new(0),
        })
    }

    pub(crate) fn next(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..16].copy_from_slice(&self.prefix);
        let c = self.counter.fetch_add(1, Ordering::Relaxed);
        n[16..].copy_from_slice(&c.to_le_bytes());
        n
    }
}

/// A session's data key, ready to seal and open payloads.
#[derive(Clone)]
pub(crate) struct DataKey {
    pub(crate) id: u64,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({:016x})", self.id)
    }
}

/// The associated data of a record's sealed payload: the header fields that re-encoding
/// (compaction, salvage) keeps, and the key id.
fn associated(meta: &RecordMeta, key_id: u64) -> [u8; 33] {
    let mut ad = [0u8; 33];
    ad[0] = meta.kind as u8;
    ad[1..9].copy_from_slice(&meta.lsn.0.to_le_bytes());
    ad[9..17].copy_from_slice(&meta.arg.to_le_bytes());
    ad[17..25].copy_from_slice(&meta.timestamp.0.to_le_bytes());
    ad[25..33].copy_from_slice(&key_id.to_le_bytes());
    ad
}

impl DataKey {
    pub(crate) fn new(id: u64, key: &[u8; DATA_KEY_LEN]) -> DataKey {
        DataKey {
            id,
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Appends to `out` the envelope sealing `plain` as the payload of the record `meta`.
    pub(crate) fn seal(
        &self,
        out: &mut Vec<u8>,
        meta: &RecordMeta,
        nonce: [u8; NONCE_LEN],
        plain: &[u8],
    ) {
        out.push(SEALED_TAG);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &associated(meta, self.id),
                &mut out[start..],
            )
            // Only a message over 256 GiB could fail: records are at most 16 MiB.
            .unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// The message an envelope seals, if it opens under this key for the record `meta`.
    pub(crate) fn open(&self, meta: &RecordMeta, envelope: &[u8]) -> Option<Vec<u8>> {
        let body = envelope.get(ENV_DATA..envelope.len().checked_sub(TAG_LEN)?)?;
        let nonce = XNonce::from_slice(&envelope[ENV_NONCE..ENV_DATA]);
        let tag = Tag::from_slice(&envelope[envelope.len() - TAG_LEN..]);
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(nonce, &associated(meta, self.id), &mut plain, tag)
            .ok()?;
        Some(plain)
    }
}

/// The key id an envelope names, if it is one (long enough, with the tag byte).
pub(crate) fn envelope_key(envelope: &[u8]) -> Option<u64> {
    if !is_sealed(envelope) || envelope.len() < SEAL_OVERHEAD {
        return None;
    }
    let id: [u8; 8] = envelope[ENV_KEY_ID..ENV_NONCE].try_into().ok()?;
    Some(u64::from_le_bytes(id))
}

/// Seals `secret` under the master key `master`, bound to `ad`: nonce, ciphertext, tag.
pub(crate) fn wrap(master: &[u8; 32], ad: &[u8], secret: &[u8; 32]) -> Result<[u8; 72]> {
    let mut out = [0u8; 72];
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..NONCE_LEN + 32].copy_from_slice(secret);
    let tag = XChaCha20Poly1305::new(master.into())
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            ad,
            &mut out[NONCE_LEN..NONCE_LEN + 32],
        )
        .unwrap_or_default();
    out[NONCE_LEN + 32..].copy_from_slice(&tag);
    Ok(out)
}

/// The secret [`wrap`] sealed, if `wrapped` opens under `master` for `ad`.
pub(crate) fn unwrap(
    master: &[u8; 32],
    ad: &[u8],
    wrapped: &[u8; 72],
) -> Option<zeroize::Zeroizing<[u8; 32]>> {
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&wrapped[NONCE_LEN..NONCE_LEN + 32]);
    XChaCha20Poly1305::new(master.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(&wrapped[..NONCE_LEN]),
            ad,
            &mut secret[..],
            Tag::from_slice(&wrapped[NONCE_LEN + 32..]),
        )
        .ok()?;
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Lsn, Timestamp};

    fn meta(lsn: u64) -> RecordMeta {
        RecordMeta {
            kind: Kind::Append,
            first: true,
            commit: true,
            lsn: Lsn(lsn),
            arg: 1,
            timestamp: Timestamp(5),
        }
    }

    #[test]
    fn an_envelope_opens_only_for_its_own_record_and_key() {
        let key = DataKey::new(9, &[3; 32]);
        let nonces = Nonces::new().unwrap();
        let mut env = Vec::new();
        key.seal(&mut env, &meta(1), nonces.next(), b"{\"a\":1}");
        assert_eq!(env.len(), 7 + SEAL_OVERHEAD);
        assert!(is_sealed(&env));
        assert_eq!(envelope_key(&env), Some(9));
        assert_eq!(key.open(&meta(1), &env).unwrap(), b"{\"a\":1}");
        assert!(key.open(&meta(2), &env).is_none(), "another LSN");
        assert!(DataKey::new(9, &[4; 32]).open(&meta(1), &env).is_none());
        let mut flipped = env.clone();
        flipped[ENV_DATA] ^= 1;
        assert!(key.open(&meta(1), &flipped).is_none());
        assert!(key.open(&meta(1), &env[..SEAL_OVERHEAD - 1]).is_none());
        assert_ne!(nonces.next(), nonces.next());
    }

    #[test]
    fn a_wrapped_secret_opens_only_under_its_master_key_and_binding() {
        let w = wrap(&[1; 32], b"ad", &[9; 32]).unwrap();
        assert_eq!(*unwrap(&[1; 32], b"ad", &w).unwrap(), [9; 32]);
        assert!(unwrap(&[2; 32], b"ad", &w).is_none());
        assert!(unwrap(&[1; 32], b"other", &w).is_none());
    }
}
