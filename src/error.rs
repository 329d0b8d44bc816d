//! The one public error type, and the `Result` alias.

use std::io;
use std::path::PathBuf;

use crate::id::{Lsn, SegmentId};

/// `Result<T, convlog::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in convlog. Every variant says where it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("I/O error: {op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", "fdatasync", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Bytes on disk are damaged: a checksum, length, LSN or header does not hold.
    #[error("corrupt store: segment {segment} at offset {offset}: {damage}")]
    Corrupt {
        /// The segment that holds the damage.
        segment: SegmentId,
        /// Byte offset of the damage within that segment file.
        offset: u64,
        /// What is wrong there.
        damage: Damage,
    },

    /// A file was written by a format version this build does not read.
    #[error("unsupported format version {found} in {path} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },

    /// A checksummed record has a kind this build does not know: written by a newer convlog.
    #[error(
        "unknown record kind {kind} in segment {segment} at offset {offset} (format version {version}); upgrade convlog"
    )]
    UnknownRecordKind {
        /// The segment that holds the record.
        segment: SegmentId,
        /// Byte offset of the record.
        offset: u64,
        /// The kind byte found.
        kind: u8,
        /// The format version of the segment.
        version: u16,
    },

    /// Another process holds the store's write lock.
    #[error("store {path} is locked by another writer")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },

    /// A write that may not wait ([`Store::try_append_batch_raw`](crate::Store::try_append_batch_raw))
    /// would have had to: for another writer's turn, or for a sync. Nothing was written;
    /// the same write without `try_` goes through.
    #[error("store {path} is busy: the write would wait for {reason}; nothing was written")]
    Busy {
        /// The store directory.
        path: PathBuf,
        /// What it would wait for.
        reason: &'static str,
    },

    /// The store is already open for writing in this process, with other options.
    ///
    /// A second writable open of a directory with the same options returns a handle to the
    /// open store instead; this error says the options (durability, segment size, record
    /// limit, recovery mode) differ.
    #[error("store {path} is already open in this process")]
    AlreadyOpen {
        /// The store directory.
        path: PathBuf,
    },

    /// The path is not a convlog store (and the open was not allowed to create one).
    #[error("{path} is not a convlog store: {reason}")]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },

    /// A write was attempted on a store opened read-only.
    #[error("store {path} is open read-only")]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
    },

    /// An earlier write or fsync failed; the store refuses writes until it is reopened.
    #[error(
        "store {path} is poisoned by an earlier I/O failure; reopen it to re-derive its state from disk"
    )]
    Poisoned {
        /// The store directory.
        path: PathBuf,
    },

    /// A write through a handle that another process opened: this process is a `fork()`
    /// child of the one that opened the store, whose locks and write position it inherited
    /// and may not use. The child may read through the handle; to write, it opens the store
    /// again (as any other process does).
    #[error(
        "store {path} was opened by process {opened_by}, the parent of this fork() child: open it again in this process to write"
    )]
    Forked {
        /// The store directory.
        path: PathBuf,
        /// The process that opened it.
        opened_by: u32,
    },

    /// A session id is empty, too long, or contains control characters.
    #[error("invalid session id {session:?}: {reason}")]
    InvalidSessionId {
        /// The rejected id (lossily decoded when it is not UTF-8).
        session: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A session that must not exist yet (the destination of a fork) holds messages.
    #[error("session {session:?} already exists")]
    SessionExists {
        /// The session.
        session: String,
    },

    /// An idempotency key is empty or longer than 256 bytes.
    #[error("invalid idempotency key for session {session:?}: {reason}")]
    InvalidKey {
        /// The session it was meant for.
        session: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A message is not a JSON object, or failed to serialize.
    #[error("invalid message for session {session:?}: {reason}")]
    InvalidMessage {
        /// The session it was meant for.
        session: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A session's metadata is not a JSON object, or failed to serialize.
    #[error("invalid metadata for session {session:?}: {reason}")]
    InvalidMetadata {
        /// The session it was meant for.
        session: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A record is over the store's size limit.
    #[error("record of {len} bytes exceeds the limit of {max} bytes (session {session:?})")]
    RecordTooLarge {
        /// The session it was meant for.
        session: String,
        /// Its framed size in bytes.
        len: u64,
        /// The store's `max_record_len`.
        max: u64,
    },

    /// [`crate::Store::replace_if`] found the session changed since the caller read its
    /// version although it holds as many messages (one removed and another appended in its
    /// place, say).
    #[error(
        "conflict on session {session:?}: it changed since the caller read it (its last message was LSN {}, now {})",
        lsn_text(*expected),
        lsn_text(*actual)
    )]
    Changed {
        /// The session.
        session: String,
        /// The LSN of its last message in the version the caller read.
        expected: Option<crate::Lsn>,
        /// The LSN of its last message now.
        actual: Option<crate::Lsn>,
    },

    /// `append_if` found a different next interaction id than the caller expected.
    #[error(
        "conflict on session {session:?}: expected next interaction id {expected}, found {actual}"
    )]
    Conflict {
        /// The session.
        session: String,
        /// What the caller expected.
        expected: u64,
        /// What the store has.
        actual: u64,
    },

    /// A stored message did not deserialize into the requested type.
    #[error(
        "message {interaction_id} of session {session:?} (LSN {lsn}) does not decode: {source}"
    )]
    Decode {
        /// The session.
        session: String,
        /// The message's interaction id.
        interaction_id: u64,
        /// The message's LSN.
        lsn: Lsn,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// A read could not resolve a position its snapshot held: a broken internal invariant,
    /// never the result of concurrent writes (reads are snapshots).
    #[error("session {session:?}: a message position the read held could not be resolved")]
    SessionChanged {
        /// The session.
        session: String,
    },

    /// Another compaction of the store is running (in this process or another).
    #[error("store {path} is being compacted by another caller")]
    Compacting {
        /// The store directory.
        path: PathBuf,
    },

    /// A compaction's output, read back before it replaced anything, does not hold what the
    /// log held for a session (a broken internal invariant): nothing was replaced.
    #[error(
        "compaction of {path} stopped: its output differs from the log for session {session:?}; nothing was replaced"
    )]
    CompactionMismatch {
        /// The store directory.
        path: PathBuf,
        /// The first session that differs.
        session: String,
    },

    /// The store is encrypted and was opened without its master key.
    #[error(
        "store {path} is encrypted: open it with its master key (Options::encryption, --key-file or CONVLOG_KEY_FILE)"
    )]
    KeyRequired {
        /// The store directory.
        path: PathBuf,
    },

    /// The master key given is not the one the store's key file is wrapped with.
    #[error("the master key given does not open store {path} (wrong key)")]
    WrongKey {
        /// The store directory.
        path: PathBuf,
    },

    /// A master key was given for a store that holds records written without encryption.
    #[error(
        "store {path} is not encrypted (it has no key file) and holds records: open it without a key"
    )]
    NotEncrypted {
        /// The store directory.
        path: PathBuf,
    },

    /// A record is sealed under a data key that was destroyed (its session was deleted):
    /// its contents are gone for good.
    #[error(
        "segment {segment} at offset {offset}: sealed under data key {key:016x}, which was destroyed (its session was deleted)"
    )]
    KeyDestroyed {
        /// The segment that holds the record.
        segment: SegmentId,
        /// Byte offset of the record.
        offset: u64,
        /// The data key's id.
        key: u64,
    },

    /// A master key file does not hold a key.
    #[error("invalid master key in {path}: {reason}")]
    InvalidMasterKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the key's bytes).
        reason: &'static str,
    },

    /// The store's key file (`KEYS`) is damaged.
    #[error("damaged key file {path} at offset {offset}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },

    /// An option is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

/// What is wrong with damaged bytes; carried by [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// The segment header's magic bytes are wrong: not a convlog segment.
    #[error("bad segment magic")]
    BadMagic,
    /// The segment header's checksum does not match.
    #[error("segment header checksum mismatch")]
    SegmentHeaderChecksum,
    /// The segment header disagrees with the file name or with its neighbours.
    #[error("segment header names first LSN {found}, expected {expected}")]
    SegmentLsnMismatch {
        /// What the header (or name) should say.
        expected: u64,
        /// What it says.
        found: u64,
    },
    /// The file is shorter than a segment header.
    #[error("segment shorter than its header")]
    ShortSegment,
    /// A record header's checksum does not match.
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    /// A record payload's checksum does not match.
    #[error("record payload checksum mismatch")]
    PayloadChecksum,
    /// A record's lengths run past the end of the file or over the size limit.
    #[error("record length {len} out of bounds")]
    BadLength {
        /// The length claimed.
        len: u64,
    },
    /// A record's header holds a value that can never be valid.
    #[error("invalid record header field: {field}")]
    BadField {
        /// Which field.
        field: &'static str,
    },
    /// A record refers to its session by an offset where no earlier record names one.
    #[error("session reference to offset {at} does not lead to an earlier named record")]
    BadSessionRef {
        /// The offset the reference holds.
        at: u32,
    },
    /// A record's LSN is not the one after its predecessor's.
    #[error("LSN gap: expected {expected}, found {found}")]
    LsnGap {
        /// The LSN that should have come next.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// A batch was not committed before the end of a sealed segment.
    #[error("uncommitted batch at the end of a sealed segment")]
    UncommittedBatch,
    /// A sealed payload fails its authentication: damaged, or copied from another record.
    #[error("sealed payload fails its authentication (damaged, or moved from another record)")]
    Unauthenticated,
    /// A payload of an encrypted store is not sealed.
    #[error("payload is not sealed in an encrypted store")]
    Unsealed,
    /// The last segment's records end before its last known durable point (the end its hint
    /// file records, written after a sync): bytes known durable were lost, zeroed or cut off.
    #[error("records end before offset {end}, which a sync made durable: durable bytes lost")]
    DurableLost {
        /// The durable end the hint file records.
        end: u64,
    },
    /// Bytes that end the log without being a whole record (a torn write), seen in strict mode.
    #[error("torn tail ({len} bytes)")]
    TornTail {
        /// How many bytes are torn.
        len: u64,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// An optional LSN as an error message shows it.
fn lsn_text(lsn: Option<crate::Lsn>) -> String {
    lsn.map_or_else(|| "none (empty)".to_owned(), |l| l.0.to_string())
}
