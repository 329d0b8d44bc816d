//! Encryption at rest: per-session data keys, wrapped by a master key in the store's `KEYS`
//! file, sealing message and metadata payloads (AES-256-GCM, from `ring`).
//!
//! Record headers stay in the clear, so the index is still rebuilt from headers alone; the
//! payload of an `append` or `meta` record in an encrypted store is a sealed envelope:
//!
//! ```text
//! offset size field
//!   0     1  tag        0x01 (SEALED_TAG): never the first byte of JSON text
//!   1     8  key id     u64: the data key it is sealed under (an entry of KEYS)
//!   9    12  nonce      8 random bytes per open store (new after 2^32), then a u32 counter
//!  21     n  ciphertext the message's JSON, encrypted
//!  21+n  16  tag        GCM's, over the ciphertext and the associated data:
//!                       kind u8, LSN u64, argument u64, timestamp u64, key id u64
//! ```
//!
//! The associated data are the header fields a compaction or a salvage never changes (not
//! the salt, flags or session ref, which re-encoding rewrites), so a payload copied over
//! another record's fails its check. Idempotency keys are logged as an HMAC-SHA256 of the
//! key under a secret of the store (kept wrapped in `KEYS`), never in the clear.
//!
//! Destroying a session's data keys (on delete) makes its records unreadable everywhere,
//! in copies of the segments too. See `docs/format.md`, "Encryption".

mod envelope;
mod keyfile;
mod master;
mod ring;

pub use envelope::SEAL_OVERHEAD;
pub(crate) use envelope::{envelope_key, is_sealed, sealed_kind};
pub use keyfile::KEYS_FILE;
pub use master::{MASTER_KEY_LEN, MasterKey};
pub(crate) use ring::{Crypt, DataKey, KeyCache};
