//! Sealing and opening payloads (the envelope layout is in `crypt/mod.rs`), the AEAD under
//! the master key that wraps data keys, randomness and the idempotency-key HMAC: AES-256-GCM,
//! HMAC-SHA256 and the system generator, from `ring`.

use std::sync::{Arc, Mutex};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::format::{Kind, RecordMeta};
use crate::io::Vfs;

/// First byte of a sealed payload. JSON text starts with `{` or whitespace, never this.
pub(crate) const SEALED_TAG: u8 = 0x01;
/// Offset of the key id in an envelope.
const ENV_KEY_ID: usize = 1;
/// Offset of the nonce.
const ENV_NONCE: usize = ENV_KEY_ID + 8;
/// Length of a nonce (AES-GCM).
pub(crate) const NONCE_LEN: usize = 12;
/// Offset of the ciphertext.
const ENV_DATA: usize = ENV_NONCE + NONCE_LEN;
/// Length of an authentication tag (GCM).
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed payload adds to the message it seals: tag byte, key id, nonce, AEAD tag.
pub const SEAL_OVERHEAD: usize = ENV_DATA + TAG_LEN;
/// Length of a data key (AES-256).
pub(crate) const DATA_KEY_LEN: usize = 32;
/// Length of a wrapped 32-byte secret: nonce, ciphertext, tag.
pub(crate) const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

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

/// Fills `buf` with random bytes: from `vfs`'s own source if it has one (a simulated file
/// system: [`Vfs::seeded_random`]), else from the operating system's generator.
pub(crate) fn fill_random(vfs: &dyn Vfs, buf: &mut [u8]) -> Result<()> {
    if vfs.seeded_random(buf, crate::io::Sealed) {
        return Ok(());
    }
    os_random(buf)
}

/// Fills `buf` from the operating system's random generator.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Io {
        op: "getrandom",
        path: "(the operating system's random generator)".into(),
        source: std::io::Error::other("the system random generator failed"),
    })
}

/// Nonces for one open store: a random 8-byte prefix, then a 32-bit counter; a new random
/// prefix after 2^32 nonces. A nonce repeats under a data key only if two opens that seal
/// under it draw the same prefix: probability 2^-64 per pair of opens.
#[derive(Debug)]
pub(crate) struct Nonces(Mutex<([u8; 8], u32)>);

impl Nonces {
    pub(crate) fn new(vfs: &dyn Vfs) -> Result<Nonces> {
        let mut prefix = [0u8; 8];
        fill_random(vfs, &mut prefix)?;
        Ok(Nonces(Mutex::new((prefix, 0))))
    }

    pub(crate) fn next(&self, vfs: &dyn Vfs) -> Result<[u8; NONCE_LEN]> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 == u32::MAX {
            fill_random(vfs, &mut g.0)?;
            g.1 = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&g.0);
        n[8..].copy_from_slice(&g.1.to_le_bytes());
        g.1 += 1;
        Ok(n)
    }
}

/// A session's data key, ready to seal and open payloads.
#[derive(Clone)]
pub(crate) struct DataKey {
    pub(crate) id: u64,
    key: Arc<LessSafeKey>,
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

fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    // AES-256 takes any 32 bytes.
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("a 32-byte key")),
    )
}

/// Seals `buf` in place under `key`; returns the tag. Only inputs over 64 GiB could fail.
fn seal_in_place(key: &LessSafeKey, nonce: [u8; NONCE_LEN], ad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let mut out = [0u8; TAG_LEN];
    if let Ok(tag) =
        key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), buf)
    {
        out.copy_from_slice(tag.as_ref());
    }
    out
}

/// Opens `sealed` (ciphertext then tag) in place under `key`: the plaintext's length.
fn open_in_place(key: &LessSafeKey, nonce: &[u8], ad: &[u8], sealed: &mut [u8]) -> Option<usize> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    key.open_in_place(nonce, Aad::from(ad), sealed)
        .ok()
        .map(|plain| plain.len())
}

impl DataKey {
    pub(crate) fn new(id: u64, key: &[u8; DATA_KEY_LEN]) -> DataKey {
        DataKey {
            id,
            key: Arc::new(aes_key(key)),
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
        let tag = seal_in_place(
            &self.key,
            nonce,
            &associated(meta, self.id),
            &mut out[start..],
        );
        out.extend_from_slice(&tag);
    }

    /// The message an envelope seals, if it opens under this key for the record `meta`:
    /// its ciphertext copied out (the only copy a read makes) and decrypted in place.
    pub(crate) fn open(&self, meta: &RecordMeta, envelope: &[u8]) -> Option<Vec<u8>> {
        if envelope.len() < SEAL_OVERHEAD {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&envelope[ENV_NONCE..ENV_DATA]).ok()?;
        let (data, tag) = envelope[ENV_DATA..].split_at(envelope.len() - SEAL_OVERHEAD);
        let tag = Tag::try_from(tag).ok()?;
        let ad = associated(meta, self.id);
        let mut plain = data.to_vec();
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(&ad[..]), tag, &mut plain, 0..)
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

/// Seals `secret` under the master key `master`, bound to `ad`: nonce (random),
/// ciphertext, tag.
pub(crate) fn wrap(
    vfs: &dyn Vfs,
    master: &[u8; 32],
    ad: &[u8],
    secret: &[u8; 32],
) -> Result<[u8; WRAPPED_LEN]> {
    let mut out = [0u8; WRAPPED_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(vfs, &mut nonce)?;
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..NONCE_LEN + 32].copy_from_slice(secret);
    let tag = seal_in_place(
        &aes_key(master),
        nonce,
        ad,
        &mut out[NONCE_LEN..NONCE_LEN + 32],
    );
    out[NONCE_LEN + 32..].copy_from_slice(&tag);
    Ok(out)
}

/// The secret [`wrap`] sealed, if `wrapped` opens under `master` for `ad`.
pub(crate) fn unwrap(
    master: &[u8; 32],
    ad: &[u8],
    wrapped: &[u8; WRAPPED_LEN],
) -> Option<zeroize::Zeroizing<[u8; 32]>> {
    let mut buf = zeroize::Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
    let n = open_in_place(&aes_key(master), &wrapped[..NONCE_LEN], ad, &mut buf)?;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    (n == 32).then(|| secret.copy_from_slice(&buf[..32]))?;
    Some(secret)
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
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
        let os = crate::io::StdFs::default();
        let nonces = Nonces::new(&os).unwrap();
        let mut env = Vec::new();
        key.seal(&mut env, &meta(1), nonces.next(&os).unwrap(), b"{\"a\":1}");
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
        assert_ne!(nonces.next(&os).unwrap(), nonces.next(&os).unwrap());
    }

    #[test]
    fn a_wrapped_secret_opens_only_under_its_master_key_and_binding() {
        let w = wrap(&crate::io::StdFs::default(), &[1; 32], b"ad", &[9; 32]).unwrap();
        assert_eq!(hmac(b"k", b"x"), hmac(b"k", b"x"));
        assert_ne!(hmac(b"k", b"x"), hmac(b"j", b"x"));
        assert_eq!(*unwrap(&[1; 32], b"ad", &w).unwrap(), [9; 32]);
        assert!(unwrap(&[2; 32], b"ad", &w).is_none());
        assert!(unwrap(&[1; 32], b"other", &w).is_none());
    }
}
