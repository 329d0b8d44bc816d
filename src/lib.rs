//! convlog: an embedded, event-sourced, append-only store for the conversations of LLM agents.
//!
//! Agents append every message they send or receive to a *session*; convlog frames each as a
//! checksummed record in a segment file, keeps an in-memory index of every session (rebuilt on
//! open from record headers, without parsing JSON), and streams sessions back from
//! memory-mapped segments: the last `n` messages of a session cost O(n), whatever its length.
//! Pops, truncations and clears are logged events too. A crash at any instant loses nothing
//! acknowledged as durable and never yields a corrupt message.
//!
//! ```
//! use convlog::{ChatMessage, Durability, Store};
//! # let dir = tempfile::tempdir()?;
//!
//! let store = Store::builder().durability(Durability::Always).open(dir.path())?;
//! store.append("chat-1", &ChatMessage::system("You are terse."))?;
//! let receipt = store.append("chat-1", &ChatMessage::user("Hello?"))?;
//! assert_eq!(receipt.interaction_id, 2);
//!
//! // The last message, with where it sits in the log.
//! let last = store.tail("chat-1", 1).next().unwrap()?;
//! assert_eq!(last.message.text(), Some("Hello?"));
//!
//! // Any JSON object goes in, and comes back byte for byte.
//! store.append_raw("chat-1", br#"{"role":"assistant","content":"Hi.","x":[1,2]}"#)?;
//! drop(store);
//!
//! let store = Store::open(dir.path())?;
//! assert_eq!(store.interaction_count("chat-1"), 3);
//! let raw = store.tail("chat-1", 1).raw().next().unwrap()?;
//! assert_eq!(raw.message, br#"{"role":"assistant","content":"Hi.","x":[1,2]}"#);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! Several processes may open one store for writing at once (the default; see [`Store`] and
//! [`Options::exclusive`]): every write first folds in what the others wrote, every read sees
//! every write that returned before it, and [`Store::subscribe`] follows the log live:
//!
//! ```
//! use std::time::Duration;
//! use convlog::{LogEvent, Since, Store};
//! # let dir = tempfile::tempdir()?;
//! let agent = Store::open(dir.path())?;
//! let mut live = Store::builder().read_only(true).open(dir.path())?.subscribe(Since::Now);
//! agent.append_raw("chat-1", br#"{"role":"user","content":"ping"}"#)?;
//! let Some(LogEvent::Message { session, entry }) = live.next_timeout(Duration::from_secs(5))?
//! else {
//!     panic!("no event");
//! };
//! assert_eq!((session.as_str(), entry.interaction_id), ("chat-1", 1));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! The byte format, recovery rules and what each durability mode survives are in
//! `docs/format.md`; the protocol between processes in `docs/durability.md`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod crypt;
mod durability;
mod error;
#[doc(hidden)]
pub mod format;
mod hint;
mod id;
mod index;
pub mod io;
mod message;
mod recovery;
mod segment;
mod store;

pub use crypt::{KEYS_FILE, MASTER_KEY_LEN, MasterKey, SEAL_OVERHEAD};
pub use durability::Durability;
pub use error::{Damage, Error, Result};
pub use format::Kind;
pub use id::{Lsn, SegmentId, Timestamp};
pub use io::{PermissionReport, Permissions, permission_report};
pub use message::{ChatMessage, Content, Entry, FunctionCall, Role, ToolCall};
pub use recovery::{
    Classification, DroppedRange, QUARANTINE_DIR, RecoveryMode, RecoveryReport, TornTail,
};
pub use store::{
    AutoCompact, COMPACT_FILE, CROSS_PROCESS_POLL, CompactProgress, CompactReport,
    DEFAULT_SEGMENT_SIZE, LOCK_FILE, LogEvent, MAX_COMPACTION_INPUT, MAX_JSON_DEPTH, MAX_META_LEN,
    MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Messages, Options, RawMessages, Receipt, Retention,
    SYNC_FILE, SessionInfo, SessionVersion, Since, Store, StoreStats, Subscription, WRITERS_FILE,
    WindowSpec, validate_message, validate_session_id,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Public types that may grow are `#[non_exhaustive]`: other crates can neither build
/// [`Receipt`] or [`SessionInfo`] with a struct literal nor match [`Durability`] without a
/// wildcard arm.
///
/// ```compile_fail,E0639
/// use convlog::{Lsn, Receipt, Timestamp};
/// let _ = Receipt { lsn: Lsn(1), interaction_id: 1, timestamp: Timestamp(0) };
/// ```
///
/// ```compile_fail,E0639
/// use convlog::{SessionInfo, Timestamp};
/// let _ = SessionInfo { id: "s".into(), count: 1, first: Timestamp(0), last: Timestamp(0) };
/// ```
///
/// ```compile_fail,E0004
/// use convlog::Durability;
/// fn code(d: Durability) -> u8 {
///     match d {
///         Durability::Always => 0,
///         Durability::Interval(_) => 1,
///         Durability::Buffered => 2,
///     }
/// }
/// ```
///
/// With a wildcard arm, or `..` in a pattern, the same code compiles:
///
/// ```
/// use convlog::{Durability, Receipt, SessionInfo};
/// fn code(d: Durability) -> u8 {
///     match d {
///         Durability::Always => 0,
///         Durability::Interval(_) => 1,
///         Durability::Buffered => 2,
///         _ => 3,
///     }
/// }
/// fn lsn(r: Receipt) -> u64 {
///     let Receipt { lsn, .. } = r;
///     lsn.0
/// }
/// fn count(s: &SessionInfo) -> u64 {
///     let SessionInfo { count, .. } = s;
///     *count
/// }
/// ```
#[cfg(doctest)]
pub struct NonExhaustiveDoctests;
