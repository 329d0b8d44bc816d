//! Shared crash-test machinery: an in-memory model of a store, and a harness that drives a
//! real [`Store`] on a [`SimFs`] through operations, crashes, reopens and injected faults,
//! checking the store against the model after every step.
//!
//! Used by `tests/crash_model.rs` (proptest), `tests/faults.rs` (I/O error injection) and the
//! `ops_crash` fuzz target (`fuzz/fuzz_targets/ops_crash.rs` includes this file by path), so
//! it depends only on `convlog` and `serde_json`.
//!
//! The model: every write operation that logs something (append, batch, pop, truncate, clear)
//! is one *unit*. `history[k]` is the state after the first `k` units, with the LSN of the
//! unit's last record. After a crash the store must hold exactly `history[k]` for some `k` at
//! least the number of units acknowledged durable (a prefix, never a hole or a reordering),
//! and after a reopen without a crash (a process exit) it must hold every unit written.
//!
//! Besides the messages, each unit's model holds the idempotency keys the store must
//! remember (a keyed append's key, until a pop, truncate, clear or replace removes any
//! message it names) with the receipts a retry must return, and each session's latest
//! metadata (kept by clears and replaces, not copied by forks). A keyed append or a
//! `set_meta` is a unit too; a retry of a remembered key logs nothing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use convlog::io::sim::{Fault, SimFs, Tear};
use convlog::{Durability, Error, Receipt, RecoveryMode, Store, Timestamp};

/// The store directory on every simulated file system.
pub const DIR: &str = "/db";

/// The sessions operations pick from (by index modulo the length).
pub const SESSIONS: [&str; 4] = [
    "s0",
    "chat/1",
    "s2",
    // A long id (200 bytes) exercises session-length handling in headers.
    "long-session-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// A session that is never written: must always read as absent.
pub const NEVER: &str = "never-written";

pub fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

pub fn session(s: u8) -> &'static str {
    SESSIONS[usize::from(s) % SESSIONS.len()]
}

/// The JSON bytes of message number `id`, about `len` bytes long: a valid `ChatMessage`
/// object whose content names the message, so any reordering or mix-up is visible.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let roles = ["user", "assistant", "system", "tool"];
    let role = roles[(id % 4) as usize];
    let s = format!(r##"{{"role":"{role}","content":"#{id} "##);
    close_padded(s, id, len)
}

/// Pads the open JSON string at the end of `s` with letters drawn from `seed` until the whole
/// is about `len` bytes, then closes the string and the object.
fn close_padded(mut s: String, seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while s.len() + 2 < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(b'a' + (x % 26) as u8));
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// The idempotency key number `k` names (modulo 6): three short keys (a small pool, so
/// retries of a used key are common), the longest key accepted (256 bytes), and two keys the
/// store must refuse (`InvalidKey`): the empty key and one of 257 bytes.
pub fn key(k: u8) -> String {
    match k % 6 {
        k @ 0..=2 => format!("key-{k}"),
        3 => "K".repeat(256),
        4 => String::new(),
        _ => "X".repeat(257),
    }
}

/// Whether the store accepts `key` (1 to 256 bytes).
fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= 256
}

/// The metadata object number `tag` of `session`, about `len` bytes long (a padding field).
pub fn meta_json(session: &str, tag: u8, len: usize) -> Vec<u8> {
    let s = format!(r#"{{"tag":{},"of":"{}","pad":""#, tag % 4, session.len());
    close_padded(s, u64::from(tag), len)
}

/// Durability modes by code.
pub fn durability(code: u8) -> Durability {
    match code % 2 {
        0 => Durability::Always,
        _ => Durability::Buffered,
    }
}

/// Tears by code.
pub fn tear(code: u8) -> Tear {
    match code % 3 {
        0 => Tear::DropUnsynced,
        1 => Tear::Sectors(512),
        _ => Tear::Sectors(4096),
    }
}

/// One operation on the store (or on the file system under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `append_raw` (or `append` of a raw JSON value when `typed`).
    Append { s: u8, len: u16, typed: bool },
    /// `append_batch_raw` of `n` messages.
    Batch { s: u8, n: u8, len: u16 },
    /// `append_if` with the expected next id off by `delta` (0 = right).
    AppendIf { s: u8, delta: i8, len: u16 },
    /// `pop_raw` (or `pop`, decoding a `ChatMessage`, when `typed`).
    Pop { s: u8, typed: bool },
    /// `truncate` to `keep % (count + 2)` messages.
    Truncate { s: u8, keep: u16 },
    /// `clear`.
    Clear { s: u8 },
    /// `delete_session`: messages, keys and metadata gone.
    Delete { s: u8 },
    /// `seal` then `compact`: the contents stay exactly as they were.
    Compact,
    /// `fork` of session `s` into session `d` at `at % (count + 2)`.
    Fork { s: u8, d: u8, at: u16 },
    /// `replace` with `n` new messages (0: the session becomes empty), the expected next id
    /// right or (with `stale`) off by one.
    Replace { s: u8, n: u8, len: u16, stale: bool },
    /// `sync`.
    Sync,
    /// A power cut with this tear, then an open with this durability.
    Crash { tear: u8, durability: u8 },
    /// A clean close (dropping the store), then an open.
    Reopen { durability: u8 },
    /// A process kill (the store's clean-close code never runs; written bytes stay in the
    /// simulated page cache), then an open.
    Kill { durability: u8 },
    /// An idempotent append under key number `k` (see [`key`]): `n % 6` 0 is
    /// `append_with_key` of one message (a raw JSON value), 1 to 4 `append_batch_raw_with_key`
    /// of that many, 5 an empty keyed batch (writes nothing; returns nothing unless its key is
    /// remembered). A key the session remembers returns its original receipts and writes
    /// nothing. With `again`, the
    /// session and key of the previous keyed append instead of `s` and `k` (a client's retry
    /// after a timeout, crash or restart), if there was one.
    KeyedAppend {
        s: u8,
        k: u8,
        n: u8,
        len: u16,
        again: bool,
    },
    /// `set_meta_raw` (or `set_meta` of the parsed value when `typed`) of a small object with
    /// `tag`, padded to about `len` bytes.
    SetMeta {
        s: u8,
        tag: u8,
        len: u16,
        typed: bool,
    },
    /// Reads every session of the live store and compares with the model.
    Check,
    /// Makes the file-system operation `after` steps from now fail (`sticky`: and every one
    /// after it, until the next crash or reopen clears the faults).
    Fault { after: u8, kind: u8, sticky: bool },
}

/// A model state: session -> the ids of its messages, in order (no empty sessions).
pub type State = BTreeMap<&'static str, Vec<u64>>;

/// What a remembered idempotency key names: the (interaction id, LSN) of each append of its
/// unit, and the unit's timestamp when the harness saw the receipts (not when the write
/// applied its records but failed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keyed {
    appends: Vec<(u64, u64)>,
    timestamp: Option<Timestamp>,
}

/// (session, key) -> what the key names, for every key the store must remember.
type Keys = BTreeMap<(&'static str, String), Keyed>;

/// session -> the JSON bytes of its latest metadata.
type Metas = BTreeMap<&'static str, Vec<u8>>;

/// The model after some number of units.
#[derive(Debug, Clone, Default)]
struct Model {
    state: State,
    keys: Keys,
    metas: Metas,
}

impl Model {
    /// Forgets the keys of `session` that name a message it no longer holds (what a pop,
    /// truncate or clear does: `Keys::keep` in the index).
    fn prune_keys(&mut self, session: &str) {
        let count = self.state.get(session).map_or(0, Vec::len) as u64;
        self.keys.retain(|(s, _), k| {
            *s != session || k.appends.last().is_some_and(|&(id, _)| id <= count)
        });
    }

    /// Forgets every key of `session` (a clear, or a replace, which clears first).
    fn forget_keys(&mut self, session: &str) {
        self.keys.retain(|(s, _), _| *s != session);
    }
}

#[derive(Debug, Clone)]
struct Unit {
    /// LSN of the unit's last record (0 for the initial state).
    lsn: u64,
    state: State,
    keys: Keys,
    metas: Metas,
}

impl Unit {
    fn model(&self) -> Model {
        Model {
            state: self.state.clone(),
            keys: self.keys.clone(),
            metas: self.metas.clone(),
        }
    }
}

/// A message the model knows.
#[derive(Debug, Clone)]
struct Msg {
    session: &'static str,
    bytes: Vec<u8>,
    lsn: u64,
}

/// Counters, for reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub ops: u64,
    pub units: u64,
    pub crashes: u64,
    pub reopens: u64,
    pub lost_units: u64,
    pub faults_fired: u64,
    pub failed_ops: u64,
    /// Failures after which the store had to be (and was) poisoned.
    pub poisonings: u64,
    /// Keyed appends that appended (a key the session did not remember).
    pub keyed_new: u64,
    /// Keyed appends that returned the original receipts and wrote nothing.
    pub keyed_retries: u64,
    /// ... of them, of a key logged before the last crash, reopen or kill.
    pub keyed_retries_across_restarts: u64,
    /// Keyed appends that appended anew a key a crash lost (it was in the lost suffix).
    pub keyed_lost_reappends: u64,
    /// Remembered keys probed after reopens and checks (a retry that must write nothing).
    pub key_probes: u64,
    /// `set_meta` calls that logged.
    pub metas_set: u64,
    /// Compactions that rewrote segments.
    pub compactions: u64,
    /// Writes that failed and poisoned the store, found whole by the next open.
    pub indeterminate_found: u64,
}

/// A unit not known to be logged: its last LSN, model and new messages.
type Pending = (u64, Model, Vec<(u64, Vec<u8>)>);

/// A store on a simulated file system, checked against the model.
pub struct Harness {
    pub fs: SimFs,
    store: Option<Store>,
    seg_size: u64,
    durability: Durability,
    history: Vec<Unit>,
    /// `history[..=durable]` was acknowledged durable.
    durable: usize,
    /// The highest `durable_lsn()` the store ever claimed (checked after crashes).
    claimed_durable: u64,
    msgs: BTreeMap<u64, Msg>,
    next_msg: u64,
    /// The store's last LSN when it was last opened (keys logged up to it were recovered).
    opened_at: u64,
    /// Keys the last crash lost (remembered before it, not after), until appended again.
    lost_keys: Vec<(&'static str, String)>,
    /// The session and key of the last keyed append (for [`Op::KeyedAppend`]'s `again`).
    last_keyed: Option<(&'static str, String)>,
    /// Faults may fire: I/O errors are expected, not violations.
    faults_armed: bool,
    /// The faults armed on `fs` (re-armed after a simulated process kill).
    faults: Vec<(u64, Fault, bool)>,
    /// The store answered an I/O failure (it may be poisoned).
    maybe_poisoned: bool,
    /// The unit of a write that failed and poisoned the store, which the next open may find
    /// whole (`Store::append`: such a write is indeterminate): its last LSN, model and
    /// messages.
    indeterminate: Option<Pending>,
    /// A failure the store must have poisoned itself for: a failed `sync()`, or a write whose
    /// records were written but whose fsync failed. Every later write must fail `Poisoned`.
    must_poison: bool,
    pub stats: Stats,
    pub trace: Vec<String>,
    /// The master key of an encrypted store.
    key: Option<convlog::MasterKey>,
    /// The write being settled has work to do after its records are written (and may fail
    /// there, poisoning the store): a delete in an encrypted store destroys keys.
    work_after_log: bool,
}

/// A violation of the crash-safety contract, with the operation trace that led to it.
pub type Violation = String;

impl Harness {
    /// A fresh store in [`DIR`] on a new `SimFs` seeded with `seed`.
    pub fn new(seed: u64, seg_size: u64, durability: Durability) -> Result<Harness, Violation> {
        Harness::with_fs(SimFs::new(seed), seg_size, durability, Vec::new(), None)
    }

    /// [`Harness::new`] for an encrypted store (a fixed master key): every check reads the
    /// messages back through their seals, and crashes hit the key file too.
    pub fn encrypted(
        seed: u64,
        seg_size: u64,
        durability: Durability,
    ) -> Result<Harness, Violation> {
        let key = convlog::MasterKey::from_bytes([0x5a; 32]);
        Harness::with_fs(
            SimFs::new(seed),
            seg_size,
            durability,
            Vec::new(),
            Some(key),
        )
    }

    /// A fresh store on a new `SimFs` with `faults` armed: `(n, fault, sticky)` makes file
    /// operation `n` (counted from the file system's creation) fail, and with `sticky` every
    /// operation after it too. The first open may meet them.
    pub fn with_faults(
        seed: u64,
        seg_size: u64,
        durability: Durability,
        faults: &[(u64, Fault, bool)],
    ) -> Result<Harness, Violation> {
        let fs = SimFs::new(seed);
        for &(n, fault, sticky) in faults {
            arm(&fs, n, fault, sticky);
        }
        Harness::with_fs(fs, seg_size, durability, faults.to_vec(), None)
    }

    fn with_fs(
        fs: SimFs,
        seg_size: u64,
        durability: Durability,
        faults: Vec<(u64, Fault, bool)>,
        key: Option<convlog::MasterKey>,
    ) -> Result<Harness, Violation> {
        let faults_armed = !faults.is_empty();
        let mut h = Harness {
            fs,
            key,
            store: None,
            seg_size,
            durability,
            history: vec![Unit {
                lsn: 0,
                state: State::new(),
                keys: Keys::new(),
                metas: Metas::new(),
            }],
            durable: 0,
            claimed_durable: 0,
            msgs: BTreeMap::new(),
            next_msg: 1,
            opened_at: 0,
            lost_keys: Vec::new(),
            last_keyed: None,
            faults_armed,
            faults,
            maybe_poisoned: false,
            indeterminate: None,
            must_poison: false,
            work_after_log: false,
            stats: Stats::default(),
            trace: Vec::new(),
        };
        h.open_checked(false)?;
        Ok(h)
    }

    fn fail(&self, what: impl Into<String>) -> Violation {
        let mut s = what.into();
        let _ = write!(
            s,
            "\n  (segment size {}, durability {:?}); last operations:",
            self.seg_size, self.durability
        );
        for line in self.trace.iter().rev().take(25).rev() {
            let _ = write!(s, "\n    {line}");
        }
        s
    }

    fn latest(&self) -> &Unit {
        self.history.last().expect("history is never empty")
    }

    fn state(&self) -> &State {
        &self.latest().state
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Units acknowledged as durable.
    pub fn durable_units(&self) -> usize {
        self.durable
    }

    /// Units in the model's current history.
    pub fn units(&self) -> usize {
        self.history.len() - 1
    }

    fn options(&self) -> convlog::Options {
        let o = Store::builder()
            .vfs(Arc::new(self.fs.clone()))
            .segment_size(self.seg_size)
            .durability(self.durability)
            .recovery(RecoveryMode::PointInTime);
        match &self.key {
            Some(k) => o.encryption(k.clone()),
            None => o,
        }
    }

    /// Opens the store on `self.fs` and checks it holds a state the history passed through.
    /// `after_crash`: any state from the durable one on; otherwise exactly the latest.
    fn open_checked(&mut self, after_crash: bool) -> Result<(), Violation> {
        let store = match self.options().open(DIR) {
            Ok(s) => s,
            Err(e) if self.faults_armed && is_io(&e) => {
                // An injected fault may fail an open; without faults it must succeed.
                self.trace.push(format!("  open failed under a fault: {e}"));
                self.stats.faults_fired += 1;
                self.fs.clear_faults();
                self.faults.clear();
                self.faults_armed = false;
                self.options()
                    .open(DIR)
                    .map_err(|e| self.fail(format!("open after clearing faults failed: {e}")))?
            }
            Err(e) => {
                return Err(self.fail(format!(
                    "open failed (after {}): {e:?}",
                    if after_crash { "a crash" } else { "a reopen" }
                )));
            }
        };
        let report = store.recovery_report().clone();
        if !report.dropped.is_empty() {
            return Err(self.fail(format!("point-in-time open dropped ranges: {report:?}")));
        }
        let got = store.last_lsn().0;
        if let Some((lsn, model, msgs)) = self.indeterminate.take()
            && lsn == got
        {
            self.trace.push(format!(
                "  (the failed write's unit, LSN {lsn}, was found whole)"
            ));
            self.stats.indeterminate_found += 1;
            self.push_unit(lsn, model, msgs);
        }
        let k = self
            .history
            .iter()
            .rposition(|u| u.lsn == got)
            .ok_or_else(|| {
                self.fail(format!(
                    "recovered last LSN {got} is no unit boundary (units end at {:?})",
                    self.history.iter().map(|u| u.lsn).collect::<Vec<_>>()
                ))
            })?;
        if after_crash {
            if k < self.durable {
                return Err(self.fail(format!(
                    "lost acknowledged-durable units: recovered {k} units (LSN {got}), {} were durable (LSN {})",
                    self.durable, self.history[self.durable].lsn
                )));
            }
            if got < self.claimed_durable {
                return Err(self.fail(format!(
                    "store claimed durable_lsn {} before the crash, recovered only up to LSN {got}",
                    self.claimed_durable
                )));
            }
        } else if k + 1 != self.history.len() {
            return Err(self.fail(format!(
                "reopen without a crash lost units: recovered {k} of {} (LSN {got} of {})",
                self.history.len() - 1,
                self.latest().lsn
            )));
        }
        self.stats.lost_units += (self.history.len() - 1 - k) as u64;
        // Keys remembered before the crash and not after it: a retry must append anew.
        let lost: Vec<(&'static str, String)> = self
            .latest()
            .keys
            .keys()
            .filter(|sk| !self.history[k].keys.contains_key(*sk))
            .cloned()
            .collect();
        for sk in lost {
            if !self.lost_keys.contains(&sk) {
                self.lost_keys.push(sk);
            }
        }
        self.history.truncate(k + 1);
        self.msgs.retain(|_, m| m.lsn <= got);
        self.opened_at = got;
        self.store = Some(store);
        if after_crash {
            // Everything a crash left is on stable storage.
            self.durable = k;
            self.claimed_durable = got;
        }
        if self.faults_armed {
            // Reads may meet a pending fault: compare the index only.
            let store = self.store.as_ref().ok_or_else(|| self.fail("no store"))?;
            return self.check_listing(store, self.state());
        }
        self.check_store()
    }

    /// Compares every session of the live store with the model's latest state: messages,
    /// metadata, and the keys it must remember (each retried: same receipts, nothing logged).
    pub fn check_store(&mut self) -> Result<(), Violation> {
        let store = self.store.as_ref().ok_or_else(|| self.fail("no store"))?;
        let unit = self.latest();
        self.check_state(store, &unit.state)?;
        self.check_metas(store, &unit.state, &unit.metas)?;
        let probes = self.probe_keys(store, &unit.keys)?;
        self.stats.key_probes += probes;
        Ok(())
    }

    /// Compares `store.meta` of every session (and `sessions_where` on the tag) with `metas`.
    fn check_metas(&self, store: &Store, state: &State, metas: &Metas) -> Result<(), Violation> {
        for s in SESSIONS.iter().copied().chain([NEVER]) {
            let got = store
                .meta(s)
                .map_err(|e| self.fail(format!("meta({s}) failed: {e:?}")))?;
            let want = metas.get(s);
            if got.as_ref() != want {
                return Err(self.fail(format!(
                    "meta({s}) = {:?}, model has {:?}",
                    got.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    want.map(|b| String::from_utf8_lossy(b).into_owned())
                )));
            }
        }
        // The live sessions (with messages) whose metadata's tag is 0.
        let zero = serde_json::Value::from(0);
        let got: Vec<String> = store
            .sessions_where("tag", &zero)
            .map_err(|e| self.fail(format!("sessions_where failed: {e:?}")))?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let want: Vec<String> = metas
            .iter()
            .filter(|(s, json)| {
                state.contains_key(*s)
                    && serde_json::from_slice::<serde_json::Value>(json)
                        .ok()
                        .is_some_and(|v| v.get("tag") == Some(&zero))
            })
            .map(|(s, _)| (*s).to_owned())
            .collect();
        if got != want {
            return Err(self.fail(format!(
                "sessions_where(tag = 0) = {got:?}, model has {want:?}"
            )));
        }
        Ok(())
    }

    /// Retries every key in `keys` with a throwaway message: each must return the receipts
    /// the model holds and log nothing. Returns how many keys were probed. A store that
    /// cannot write (read-only, poisoned) is not probed.
    fn probe_keys(&self, store: &Store, keys: &Keys) -> Result<u64, Violation> {
        let filler = payload(0, 40);
        let mut probes = 0;
        for ((s, key), keyed) in keys {
            let before = store.last_lsn().0;
            let r = store.append_batch_raw_with_key(s, key, &[filler.as_slice()]);
            let after = store.last_lsn().0;
            match r {
                Ok(receipts) => {
                    if let Some(v) = self.keyed_mismatch(&receipts, keyed) {
                        return Err(self.fail(format!(
                            "retry of key {key:?} of {s} (a key the model remembers): {v}"
                        )));
                    }
                    if after != before {
                        return Err(self.fail(format!(
                            "retry of key {key:?} of {s} logged: last_lsn {before} -> {after}"
                        )));
                    }
                    probes += 1;
                }
                Err(Error::ReadOnly { .. } | Error::Poisoned { .. }) => return Ok(probes),
                Err(e) => {
                    return Err(self.fail(format!("retry of key {key:?} of {s} failed: {e:?}")));
                }
            }
        }
        Ok(probes)
    }

    /// How `receipts` differ from what the model says `keyed` names, if they do.
    fn keyed_mismatch(&self, receipts: &[Receipt], keyed: &Keyed) -> Option<String> {
        let got: Vec<(u64, u64)> = receipts
            .iter()
            .map(|r| (r.interaction_id, r.lsn.0))
            .collect();
        if got != keyed.appends {
            return Some(format!(
                "receipts (id, lsn) {got:?}, model has {:?}",
                keyed.appends
            ));
        }
        if let Some(ts) = keyed.timestamp
            && let Some(r) = receipts.iter().find(|r| r.timestamp != ts)
        {
            return Some(format!(
                "receipt timestamp {:?}, the original receipts had {ts:?}",
                r.timestamp
            ));
        }
        None
    }

    /// Checks a store opened on some image of this history (a crash, a truncation, damage):
    /// it must hold exactly `history[k]` for the `k` whose unit ends at its last LSN.
    /// Returns `k`.
    pub fn check_prefix(&self, store: &Store) -> Result<usize, Violation> {
        let got = store.last_lsn().0;
        let k = self
            .history
            .iter()
            .rposition(|u| u.lsn == got)
            .ok_or_else(|| self.fail(format!("recovered last LSN {got} is no unit boundary")))?;
        let unit = &self.history[k];
        self.check_state(store, &unit.state)?;
        self.check_metas(store, &unit.state, &unit.metas)?;
        self.probe_keys(store, &unit.keys)?;
        Ok(k)
    }

    /// The LSN each unit ends at (index 0: the empty store, LSN 0).
    pub fn unit_lsns(&self) -> Vec<u64> {
        self.history.iter().map(|u| u.lsn).collect()
    }

    /// The session and bytes of the message appended with `lsn`, if it was one.
    pub fn message_at(&self, lsn: u64) -> Option<(&str, &[u8])> {
        self.msgs
            .values()
            .find(|m| m.lsn == lsn)
            .map(|m| (m.session, m.bytes.as_slice()))
    }

    /// Compares the sessions `store` lists, and their counts, with `state` (no file reads).
    fn check_listing(&self, store: &Store, state: &State) -> Result<(), Violation> {
        let listed: Vec<(String, u64)> = store
            .sessions()
            .into_iter()
            .map(|s| (s.id, s.count))
            .collect();
        let want: Vec<(String, u64)> = state
            .iter()
            .map(|(s, ids)| ((*s).to_owned(), ids.len() as u64))
            .collect();
        if listed != want {
            return Err(self.fail(format!("sessions() = {listed:?}, model has {want:?}")));
        }
        Ok(())
    }

    /// Compares every session of `store` with `state`.
    pub fn check_state(&self, store: &Store, state: &State) -> Result<(), Violation> {
        self.check_listing(store, state)?;
        for s in SESSIONS.iter().copied().chain([NEVER]) {
            let ids: &[u64] = state.get(s).map_or(&[], Vec::as_slice);
            if store.interaction_count(s) != ids.len() as u64 || store.contains(s) == ids.is_empty()
            {
                return Err(self.fail(format!(
                    "session {s}: count {} contains {}, model has {} messages",
                    store.interaction_count(s),
                    store.contains(s),
                    ids.len()
                )));
            }
            let mut n = 0usize;
            for entry in store.messages(s).raw() {
                let entry = entry.map_err(|e| self.fail(format!("read of {s} failed: {e:?}")))?;
                let Some(id) = ids.get(n) else {
                    return Err(self.fail(format!("session {s} reads more than {n} messages")));
                };
                let m = &self.msgs[id];
                if entry.interaction_id != n as u64 + 1
                    || entry.message != m.bytes
                    || entry.lsn.0 != m.lsn
                {
                    return Err(self.fail(format!(
                        "session {s} message {}: read id {} lsn {} {:?}, model lsn {} {:?}",
                        n + 1,
                        entry.interaction_id,
                        entry.lsn,
                        String::from_utf8_lossy(&entry.message),
                        m.lsn,
                        String::from_utf8_lossy(&m.bytes)
                    )));
                }
                n += 1;
            }
            if n != ids.len() {
                return Err(self.fail(format!(
                    "session {s} read {n} messages, model has {}",
                    ids.len()
                )));
            }
            // The tail path (last 2) agrees too.
            let tail: Vec<u64> = store
                .tail(s, 2)
                .raw()
                .map(|e| e.map(|e| e.lsn.0))
                .collect::<Result<_, _>>()
                .map_err(|e| self.fail(format!("tail of {s} failed: {e:?}")))?;
            let want: Vec<u64> = ids[ids.len().saturating_sub(2)..]
                .iter()
                .map(|id| self.msgs[id].lsn)
                .collect();
            if tail != want {
                return Err(self.fail(format!("tail({s}, 2) LSNs {tail:?}, model {want:?}")));
            }
        }
        Ok(())
    }

    /// Records the outcome of a write that would log `records` records making `next` the
    /// new state (the keys of removed messages forgotten, metadata unchanged). `result` is
    /// the call's outcome, `before` the store's last LSN before it.
    fn settle(
        &mut self,
        result: Result<(), Error>,
        before: u64,
        records: u64,
        next: State,
        new_msgs: Vec<(u64, Vec<u8>)>,
        conflict_expected: bool,
    ) -> Result<(), Violation> {
        let mut model = self.latest().model();
        model.state = next;
        for s in SESSIONS {
            model.prune_keys(s);
        }
        self.settle_model(result, before, records, model, new_msgs, conflict_expected)
    }

    /// [`Harness::settle`] with the whole next model given.
    fn settle_model(
        &mut self,
        result: Result<(), Error>,
        before: u64,
        records: u64,
        next: Model,
        new_msgs: Vec<(u64, Vec<u8>)>,
        conflict_expected: bool,
    ) -> Result<(), Violation> {
        let store = self.store.as_ref().ok_or_else(|| self.fail("no store"))?;
        let after = store.last_lsn().0;
        let poisoned = store.is_poisoned();
        match result {
            Ok(()) => {
                if conflict_expected {
                    return Err(self.fail("append_if with a wrong expected id succeeded"));
                }
                if self.must_poison && records > 0 {
                    return Err(self.fail(
                        "a write succeeded after a failed fsync (the store must be poisoned)",
                    ));
                }
                if after != before + records {
                    return Err(self.fail(format!(
                        "last_lsn went {before} -> {after}, expected {records} records"
                    )));
                }
                if records > 0 {
                    self.push_unit(after, next, new_msgs);
                    if self.durability == Durability::Always {
                        self.durable = self.history.len() - 1;
                    }
                }
            }
            Err(Error::Conflict {
                expected, actual, ..
            }) => {
                if !conflict_expected || expected == actual || after != before {
                    return Err(self.fail(format!(
                        "unexpected Conflict (expected {expected}, actual {actual}, model conflict {conflict_expected})"
                    )));
                }
            }
            Err(e) if self.must_poison && !matches!(e, Error::Poisoned { .. }) => {
                return Err(self.fail(format!(
                    "a write after a failed fsync failed with {e:?}, not Poisoned"
                )));
            }
            Err(e) if is_io(&e) && self.faults_armed => {
                self.stats.failed_ops += 1;
                self.maybe_poisoned = true;
                self.trace.push(format!("  -> failed: {e}"));
                if after == before + records && records > 0 {
                    self.must_poison = true;
                    self.stats.poisonings += 1;
                    // Written (and in the index) but not acknowledged: a sync failed, or
                    // what a write does after its records did (an encrypted store's delete
                    // destroys the session's keys).
                    // In an encrypted store a sync reads and syncs `KEYS` first (every
                    // error of that step, after the records, poisons the store as a failed
                    // fdatasync does).
                    let keys_sync = poisoned
                        && matches!(
                            &e,
                            Error::Io { path, .. }
                                if path.file_name().is_some_and(|n| n == convlog::KEYS_FILE)
                        );
                    let after_the_log = self.work_after_log
                        || keys_sync
                        || matches!(
                            e,
                            Error::Io {
                                op: "fdatasync" | "fsync directory",
                                ..
                            }
                        );
                    if !after_the_log {
                        return Err(
                            self.fail(format!("a write applied its records but failed with {e:?}"))
                        );
                    }
                    self.push_unit(after, next, new_msgs);
                } else if after != before {
                    return Err(self.fail(format!(
                        "failed write moved last_lsn {before} -> {after} ({records} records)"
                    )));
                } else if records > 0 && poisoned && !matches!(e, Error::Poisoned { .. }) {
                    // Cut short, and not wiped: the next open may find it whole.
                    self.indeterminate = Some((after + records, next, new_msgs));
                }
            }
            Err(e) => return Err(self.fail(format!("unexpected error: {e:?}"))),
        }
        self.note_claim();
        Ok(())
    }

    fn note_claim(&mut self) {
        if let Some(store) = &self.store {
            self.claimed_durable = self.claimed_durable.max(store.durable_lsn().0);
        }
    }

    fn push_unit(&mut self, lsn: u64, next: Model, new_msgs: Vec<(u64, Vec<u8>)>) {
        let first = lsn + 1 - new_msgs.len() as u64;
        for (i, (id, bytes)) in new_msgs.into_iter().enumerate() {
            let session = next
                .state
                .iter()
                .find(|(_, ids)| ids.contains(&id))
                .map_or("", |(s, _)| *s);
            self.msgs.insert(
                id,
                Msg {
                    session,
                    bytes,
                    lsn: first + i as u64,
                },
            );
        }
        self.history.push(Unit {
            lsn,
            state: next.state,
            keys: next.keys,
            metas: next.metas,
        });
        self.stats.units += 1;
    }

    fn new_msg(&mut self, len: u16) -> (u64, Vec<u8>) {
        let id = self.next_msg;
        self.next_msg += 1;
        (id, payload(id, usize::from(len) % 6000))
    }

    /// Applies one operation and checks the outcome against the model.
    pub fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        self.stats.ops += 1;
        self.trace.push(format!("{op:?}"));
        if self.store.is_none() {
            return Err(self.fail("no store"));
        }
        let before = self.store.as_ref().map_or(0, |s| s.last_lsn().0);
        match *op {
            Op::Append { s, len, typed } => self.op_append(s, len, typed, before),
            Op::Batch { s, n, len } => self.op_batch(s, n, len, before),
            Op::AppendIf { s, delta, len } => self.op_append_if(s, delta, len, before),
            Op::Pop { s, typed } => self.op_pop(s, typed, before),
            Op::Truncate { s, keep } => self.op_truncate(s, keep, before),
            Op::Clear { s } => self.op_clear(s, before),
            Op::Delete { s } => self.op_delete(s, before),
            Op::Compact => self.op_compact(before),
            Op::Fork { s, d, at } => self.op_fork(s, d, at, before),
            Op::Replace { s, n, len, stale } => self.op_replace(s, n, len, stale, before),
            Op::KeyedAppend {
                s,
                k,
                n,
                len,
                again,
            } => {
                let (name, key) = match (&self.last_keyed, again) {
                    (Some(last), true) => last.clone(),
                    _ => (session(s), key(k)),
                };
                self.last_keyed = Some((name, key.clone()));
                self.keyed_append(name, key, n, len, before)
            }
            Op::SetMeta { s, tag, len, typed } => self.op_set_meta(s, tag, len, typed, before),
            Op::Sync => self.op_sync(),
            Op::Crash {
                tear: t,
                durability: d,
            } => self.op_crash(t, d),
            Op::Reopen { durability: d } => self.op_reopen(d),
            Op::Kill { durability: d } => self.op_kill(d),
            Op::Check => self.op_check(),
            Op::Fault {
                after,
                kind,
                sticky,
            } => self.op_fault(after, kind, sticky),
        }
    }

    /// [`Op::Append`].
    fn op_append(&mut self, s: u8, len: u16, typed: bool, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let (id, bytes) = self.new_msg(len);
        let store = self.store.as_ref().expect("open");
        let r = if typed {
            let raw: Box<serde_json::value::RawValue> =
                serde_json::from_slice(&bytes).expect("payloads are JSON");
            store.append(name, &raw)
        } else {
            store.append_raw(name, &bytes)
        };
        let r = self.check_receipts(r.map(|r| vec![r]), name, before)?;
        let mut next = self.state().clone();
        next.entry(name).or_default().push(id);
        self.settle(r, before, 1, next, vec![(id, bytes)], false)
    }

    /// [`Op::Batch`].
    fn op_batch(&mut self, s: u8, n: u8, len: u16, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let n = u64::from(n % 6) + 1;
        let msgs: Vec<(u64, Vec<u8>)> = (0..n)
            .map(|i| self.new_msg(len.wrapping_add(i as u16 * 37)))
            .collect();
        let store = self.store.as_ref().expect("open");
        let bodies: Vec<&[u8]> = msgs.iter().map(|(_, b)| b.as_slice()).collect();
        let r = store.append_batch_raw(name, &bodies);
        let r = self.check_receipts(r, name, before)?;
        let mut next = self.state().clone();
        next.entry(name)
            .or_default()
            .extend(msgs.iter().map(|(id, _)| *id));
        self.settle(r, before, n, next, msgs, false)
    }

    /// [`Op::AppendIf`].
    fn op_append_if(&mut self, s: u8, delta: i8, len: u16, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let count = self.state().get(name).map_or(0, Vec::len) as u64;
        let expected = (count + 1).saturating_add_signed(i64::from(delta % 3));
        let conflict = expected != count + 1;
        let (id, bytes) = self.new_msg(len);
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_slice(&bytes).expect("payloads are JSON");
        let store = self.store.as_ref().expect("open");
        let r = store.append_if(name, expected, &raw).map(|r| vec![r]);
        let r = self.check_receipts(r, name, before)?;
        let mut next = self.state().clone();
        next.entry(name).or_default().push(id);
        let records = u64::from(!conflict);
        self.settle(r, before, records, next, vec![(id, bytes)], conflict)
    }

    /// [`Op::Pop`].
    fn op_pop(&mut self, s: u8, typed: bool, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let mut next = self.state().clone();
        let popped = next.get_mut(name).and_then(Vec::pop);
        if next.get(name).is_some_and(Vec::is_empty) {
            next.remove(name);
        }
        let store = self.store.as_ref().expect("open");
        let r = if typed {
            store
                .pop(name)
                .map(|e| e.map(|e| (e.interaction_id, serde_json::to_vec(&e.message).ok())))
        } else {
            store
                .pop_raw(name)
                .map(|e| e.map(|e| (e.interaction_id, Some(e.message))))
        };
        let r = match r {
            Ok(got) => {
                let want = popped.map(|id| {
                    let count = self.state()[name].len() as u64;
                    (count, self.msgs[&id].bytes.clone())
                });
                match (&got, &want) {
                    (None, None) => {}
                    (Some((gid, gbytes)), Some((wid, wbytes))) => {
                        // A typed pop re-serializes: compare JSON values.
                        let same = match gbytes {
                            Some(b) if !typed => b == wbytes,
                            Some(b) => json_eq(b, wbytes),
                            None => false,
                        };
                        if gid != wid || !same {
                            return Err(
                                self.fail(format!("pop returned id {gid}, model expected {wid}"))
                            );
                        }
                    }
                    _ => {
                        return Err(self.fail(format!(
                            "pop returned {:?}, model expected {:?}",
                            got.as_ref().map(|g| g.0),
                            want.as_ref().map(|w| w.0)
                        )));
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        let records = u64::from(popped.is_some());
        self.settle(r, before, records, next, Vec::new(), false)
    }

    /// [`Op::Truncate`].
    fn op_truncate(&mut self, s: u8, keep: u16, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let count = self.state().get(name).map_or(0, Vec::len) as u64;
        let keep = u64::from(keep) % (count + 2);
        let mut next = self.state().clone();
        if keep < count {
            if keep == 0 {
                next.remove(name);
            } else if let Some(ids) = next.get_mut(name) {
                ids.truncate(keep as usize);
            }
        }
        let removed = count.saturating_sub(keep);
        let store = self.store.as_ref().expect("open");
        let r = store.truncate(name, keep);
        let r = match r {
            Ok(n) if n != removed => {
                return Err(self.fail(format!("truncate removed {n}, model says {removed}")));
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.settle(r, before, u64::from(removed > 0), next, Vec::new(), false)
    }

    /// [`Op::Clear`].
    fn op_clear(&mut self, s: u8, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let count = self.state().get(name).map_or(0, Vec::len) as u64;
        let mut next = self.state().clone();
        next.remove(name);
        let store = self.store.as_ref().expect("open");
        let r = match store.clear(name) {
            Ok(n) if n != count => {
                return Err(self.fail(format!("clear removed {n}, model says {count}")));
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.settle(r, before, u64::from(count > 0), next, Vec::new(), false)
    }

    /// [`Op::Delete`].
    fn op_delete(&mut self, s: u8, before: u64) -> Result<(), Violation> {
        let name = session(s);
        let latest = self.latest().model();
        let existed = latest.state.get(name).is_some_and(|v| !v.is_empty())
            || latest.metas.contains_key(name);
        let mut next = latest;
        next.state.remove(name);
        next.forget_keys(name);
        next.metas.remove(name);
        let store = self.store.as_ref().expect("open");
        let r = match store.delete_session(name) {
            Ok(b) if b != existed => {
                return Err(self.fail(format!("delete said {b}, model says {existed}")));
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.work_after_log = self.key.is_some();
        let settled = self.settle_model(r, before, u64::from(existed), next, Vec::new(), false);
        self.work_after_log = false;
        settled
    }

    /// [`Op::Compact`].
    fn op_compact(&mut self, before: u64) -> Result<(), Violation> {
        let store = self.store.as_ref().expect("open");
        let r = store.seal().and_then(|_| store.compact());
        let after = store.last_lsn().0;
        if after != before {
            return Err(self.fail(format!("seal + compact moved last_lsn {before} -> {after}")));
        }
        match r {
            Ok(_) if self.must_poison => {
                Err(self.fail("a compaction ran after a failed fsync (the store must be poisoned)"))
            }
            Ok(report) => {
                self.stats.compactions += u64::from(report.segments_rewritten > 0);
                Ok(())
            }
            Err(e) if self.must_poison && !matches!(e, Error::Poisoned { .. }) => Err(self.fail(
                format!("a compaction after a failed fsync failed with {e:?}, not Poisoned"),
            )),
            Err(e) if self.faults_armed && is_io(&e) => {
                // A failed sync of the sealed segment poisons the store; a failed step
                // of the compaction itself leaves it usable. Either way nothing changed.
                self.stats.failed_ops += 1;
                self.maybe_poisoned = true;
                self.trace.push(format!("  -> failed: {e}"));
                Ok(())
            }
            Err(e) => Err(self.fail(format!("compaction failed: {e:?}"))),
        }
    }

    /// [`Op::Fork`].
    fn op_fork(&mut self, s: u8, d: u8, at: u16, before: u64) -> Result<(), Violation> {
        let (src, dst) = (session(s), session(d));
        let src_ids = self.state().get(src).cloned().unwrap_or_default();
        let at = u64::from(at) % (src_ids.len() as u64 + 2);
        let exists = self.state().contains_key(dst);
        let shared = if exists || src == dst {
            0
        } else {
            at.min(src_ids.len() as u64)
        };
        let store = self.store.as_ref().expect("open");
        let r = match store.fork(src, dst, Some(at)) {
            Err(Error::SessionExists { .. }) if exists => Ok(()),
            Ok(_) if exists => {
                return Err(self.fail("fork into an existing session succeeded"));
            }
            Ok(n) if n != shared => {
                return Err(self.fail(format!("fork shared {n}, model says {shared}")));
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let mut next = self.state().clone();
        if shared > 0 {
            next.insert(dst, src_ids[..shared as usize].to_vec());
        }
        self.settle(r, before, u64::from(shared > 0), next, Vec::new(), false)
    }

    /// [`Op::Replace`].
    fn op_replace(
        &mut self,
        s: u8,
        n: u8,
        len: u16,
        stale: bool,
        before: u64,
    ) -> Result<(), Violation> {
        let name = session(s);
        let count = self.state().get(name).map_or(0, Vec::len) as u64;
        let n = usize::from(n % 6);
        let msgs: Vec<(u64, Vec<u8>)> = (0..n).map(|_| self.new_msg(len)).collect();
        let bodies: Vec<&[u8]> = msgs.iter().map(|(_, b)| b.as_slice()).collect();
        let expected = count + 1 + u64::from(stale);
        let store = self.store.as_ref().expect("open");
        let r = store.replace(name, Some(expected), &bodies);
        let r = match r {
            Ok(receipts) => {
                let ids: Vec<u64> = receipts.iter().map(|r| r.interaction_id).collect();
                if ids != (1..=n as u64).collect::<Vec<_>>() {
                    return Err(self.fail(format!("replace receipts {ids:?}")));
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        let mut next = self.latest().model();
        next.state.remove(name);
        if n > 0 {
            next.state
                .insert(name, msgs.iter().map(|(id, _)| *id).collect());
        }
        // A replace clears first: every key of the session is forgotten, though the
        // new messages reuse the ids.
        next.forget_keys(name);
        let records = if stale {
            0
        } else {
            u64::from(count > 0) + n as u64
        };
        self.settle_model(r, before, records, next, msgs, stale)
    }

    /// [`Op::SetMeta`].
    fn op_set_meta(
        &mut self,
        s: u8,
        tag: u8,
        len: u16,
        typed: bool,
        before: u64,
    ) -> Result<(), Violation> {
        let name = session(s);
        let json = meta_json(name, tag, usize::from(len) % 6000);
        let store = self.store.as_ref().expect("open");
        let r = if typed {
            let value: serde_json::Value = serde_json::from_slice(&json).expect("metadata is JSON");
            store.set_meta(name, &value)
        } else {
            store.set_meta_raw(name, &json)
        };
        let r = match r {
            Ok(lsn) if lsn.0 != before + 1 => {
                return Err(self.fail(format!(
                    "set_meta returned LSN {lsn}, expected {}",
                    before + 1
                )));
            }
            Ok(_) => {
                self.stats.metas_set += 1;
                Ok(())
            }
            Err(e) => Err(e),
        };
        let mut next = self.latest().model();
        // `set_meta` of a parsed value re-serializes it: the model holds those bytes.
        let stored = if typed {
            let value: serde_json::Value = serde_json::from_slice(&json).expect("metadata is JSON");
            serde_json::to_vec(&value).expect("serializes")
        } else {
            json
        };
        next.metas.insert(name, stored);
        self.settle_model(r, before, 1, next, Vec::new(), false)
    }

    /// [`Op::Sync`].
    fn op_sync(&mut self) -> Result<(), Violation> {
        let store = self.store.as_ref().expect("open");
        match store.sync() {
            Ok(lsn) => {
                if self.must_poison {
                    return Err(self.fail("sync succeeded after a failed fsync"));
                }
                if lsn.0 < self.latest().lsn {
                    return Err(self.fail(format!(
                        "sync returned LSN {lsn}, last unit ends at {}",
                        self.latest().lsn
                    )));
                }
                self.durable = self.history.len() - 1;
                self.note_claim();
                Ok(())
            }
            Err(e) if self.must_poison && !matches!(e, Error::Poisoned { .. }) => Err(self.fail(
                format!("sync after a failed fsync failed with {e:?}, not Poisoned"),
            )),
            Err(e) if self.faults_armed && is_io(&e) => {
                self.stats.failed_ops += 1;
                self.maybe_poisoned = true;
                if matches!(
                    e,
                    Error::Io {
                        op: "fdatasync",
                        ..
                    }
                ) {
                    self.must_poison = true;
                    self.stats.poisonings += 1;
                }
                self.trace.push(format!("  -> failed: {e}"));
                Ok(())
            }
            Err(e) => Err(self.fail(format!("sync failed: {e:?}"))),
        }
    }

    /// [`Op::Crash`].
    fn op_crash(&mut self, t: u8, d: u8) -> Result<(), Violation> {
        let crashed = self.fs.crash(tear(t));
        self.faults.clear();
        self.store = None;
        self.fs = crashed;
        self.reset_after_restart(d);
        self.stats.crashes += 1;
        self.open_checked(true)
    }

    /// [`Op::Reopen`].
    fn op_reopen(&mut self, d: u8) -> Result<(), Violation> {
        self.store = None;
        let armed = self.faults_armed;
        self.reset_after_restart(d);
        // Pending faults stay armed: the open itself may meet them.
        self.faults_armed = armed;
        self.stats.reopens += 1;
        self.open_checked(false)
    }

    /// [`Op::Kill`].
    fn op_kill(&mut self, d: u8) -> Result<(), Violation> {
        if let Some(store) = self.store.take() {
            kill(&self.fs, store);
        }
        // Faults still ahead stay armed; sticky ones that already began go on.
        let now = self.fs.ops();
        let armed = self.faults_armed;
        for &(n, fault, sticky) in &self.faults {
            if sticky || n > now {
                arm(&self.fs, n.max(now + 1), fault, sticky);
            }
        }
        self.reset_after_restart(d);
        self.faults_armed = armed;
        self.stats.reopens += 1;
        self.open_checked(false)
    }

    /// [`Op::Check`].
    fn op_check(&mut self) -> Result<(), Violation> {
        if self.faults_armed {
            // Reads may fail under faults; checked after they are cleared.
            return Ok(());
        }
        self.check_store()
    }

    /// [`Op::Fault`].
    fn op_fault(&mut self, after: u8, kind: u8, sticky: bool) -> Result<(), Violation> {
        let n = self.fs.ops() + 1 + u64::from(after % 64);
        let fault = if kind.is_multiple_of(2) {
            Fault::Io
        } else {
            Fault::NoSpace
        };
        arm(&self.fs, n, fault, sticky);
        self.faults.push((n, fault, sticky));
        self.faults_armed = true;
        Ok(())
    }

    /// [`Op::KeyedAppend`].
    fn keyed_append(
        &mut self,
        name: &'static str,
        key: String,
        n: u8,
        len: u16,
        before: u64,
    ) -> Result<(), Violation> {
        let n = n % 6;
        let msgs: Vec<(u64, Vec<u8>)> = match n {
            5 => Vec::new(),
            0 => vec![self.new_msg(len)],
            n => (0..n)
                .map(|i| self.new_msg(len.wrapping_add(u16::from(i) * 37)))
                .collect(),
        };
        let store = self.store.as_ref().expect("open");
        let r = if n == 0 {
            let raw: Box<serde_json::value::RawValue> =
                serde_json::from_slice(&msgs[0].1).expect("payloads are JSON");
            store.append_with_key(name, &key, &raw).map(|r| vec![r])
        } else {
            let bodies: Vec<&[u8]> = msgs.iter().map(|(_, b)| b.as_slice()).collect();
            store.append_batch_raw_with_key(name, &key, &bodies)
        };
        let after = store.last_lsn().0;
        if !key_is_valid(&key) {
            return match r {
                Err(Error::InvalidKey { .. }) if after == before => Ok(()),
                other => Err(self.fail(format!(
                    "keyed append with an invalid key ({} bytes): {:?}, last_lsn {before} -> {after}",
                    key.len(),
                    other.map(|r| r.len())
                ))),
            };
        }
        let sk = (name, key);
        if let Some(mut keyed) = self.latest().keys.get(&sk).cloned() {
            // A retry: the original receipts, nothing written (`append_with_key` returns one
            // receipt: the first, for a key that named a batch).
            if n == 0 {
                keyed.appends.truncate(1);
            }
            let r = match r {
                Ok(receipts) => {
                    if let Some(v) = self.keyed_mismatch(&receipts, &keyed) {
                        return Err(self.fail(format!("retry of a remembered key: {v}")));
                    }
                    self.stats.keyed_retries += 1;
                    if keyed.appends[0].1 <= self.opened_at {
                        self.stats.keyed_retries_across_restarts += 1;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
            let next = self.latest().model();
            return self.settle_model(r, before, 0, next, Vec::new(), false);
        }
        // (After the retry check: an empty batch under a remembered key is a retry too.)
        if msgs.is_empty() {
            // (It reads the log to know whether the key is remembered: a failing disk may
            // fail it, with nothing written.)
            return match r {
                Ok(r) if r.is_empty() && after == before => Ok(()),
                Err(Error::Io { .. } | Error::Poisoned { .. }) if after == before => Ok(()),
                other => Err(self.fail(format!(
                    "empty keyed batch: {:?}, last_lsn {before} -> {after}",
                    other.map(|r| r.len())
                ))),
            };
        }
        let count = self.state().get(name).map_or(0, Vec::len) as u64;
        let mut timestamp = None;
        // The key rides on the unit's first append: one record per message.
        let r = match self.checked_receipts(r, name, before)? {
            Ok(receipts) => {
                if receipts.len() != msgs.len() {
                    return Err(self.fail(format!(
                        "keyed append of {} messages returned {} receipts",
                        msgs.len(),
                        receipts.len()
                    )));
                }
                timestamp = Some(receipts[0].timestamp);
                if receipts.iter().any(|r| Some(r.timestamp) != timestamp) {
                    return Err(self.fail("a keyed batch's receipts differ in timestamp"));
                }
                self.stats.keyed_new += 1;
                if let Some(i) = self.lost_keys.iter().position(|x| *x == sk) {
                    self.lost_keys.swap_remove(i);
                    self.stats.keyed_lost_reappends += 1;
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        let mut next = self.latest().model();
        next.state
            .entry(name)
            .or_default()
            .extend(msgs.iter().map(|(id, _)| *id));
        let appends = (0..msgs.len() as u64)
            .map(|i| (count + 1 + i, before + 1 + i))
            .collect();
        next.keys.insert(sk, Keyed { appends, timestamp });
        let records = msgs.len() as u64;
        self.settle_model(r, before, records, next, msgs, false)
    }

    fn reset_after_restart(&mut self, d: u8) {
        self.durability = durability(d);
        self.faults_armed = false;
        self.maybe_poisoned = false;
        self.must_poison = false;
    }

    /// Whether the store answered an injected I/O failure since it was opened.
    pub fn saw_failure(&self) -> bool {
        self.maybe_poisoned
    }

    /// Whether the store had to poison itself (and every later write was refused).
    pub fn must_be_poisoned(&self) -> bool {
        self.must_poison
    }

    /// Checks a write's receipts (ids and LSNs in order) and drops them.
    fn check_receipts(
        &self,
        r: convlog::Result<Vec<convlog::Receipt>>,
        name: &str,
        before: u64,
    ) -> Result<Result<(), Error>, Violation> {
        Ok(self.checked_receipts(r, name, before)?.map(|_| ()))
    }

    /// [`Harness::check_receipts`], keeping them.
    fn checked_receipts(
        &self,
        r: convlog::Result<Vec<convlog::Receipt>>,
        name: &str,
        before: u64,
    ) -> Result<Result<Vec<Receipt>, Error>, Violation> {
        match r {
            Ok(receipts) => {
                let count = self.state().get(name).map_or(0, Vec::len) as u64;
                for (i, rc) in receipts.iter().enumerate() {
                    let i = i as u64;
                    if rc.interaction_id != count + 1 + i || rc.lsn.0 != before + 1 + i {
                        return Err(self.fail(format!(
                            "receipt {i}: id {} lsn {}, expected id {} lsn {}",
                            rc.interaction_id,
                            rc.lsn,
                            count + 1 + i,
                            before + 1 + i
                        )));
                    }
                }
                Ok(Ok(receipts))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Ends a run: clears faults, then checks a reopen (nothing written may be lost) and a
    /// power cut of each kind (nothing acknowledged durable may be lost).
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.fs.clear_faults();
        self.faults.clear();
        let d = if self.durability == Durability::Always {
            0
        } else {
            1
        };
        let image = self.fs.clone();
        // A crash of the final state, before a clean reopen, with each tear.
        for t in 0..3u8 {
            let crashed = image.crash(tear(t));
            let saved = (
                self.history.clone(),
                self.msgs.clone(),
                self.durable,
                self.claimed_durable,
                self.indeterminate.clone(),
            );
            let mut fs = crashed;
            std::mem::swap(&mut self.fs, &mut fs);
            let store = self.store.take();
            self.trace.push(format!("final crash, tear {:?}", tear(t)));
            self.faults_armed = false;
            self.maybe_poisoned = false;
            self.must_poison = false;
            let r = self.open_checked(true);
            self.store = store;
            std::mem::swap(&mut self.fs, &mut fs);
            (
                self.history,
                self.msgs,
                self.durable,
                self.claimed_durable,
                self.indeterminate,
            ) = saved;
            r?;
        }
        self.apply(&Op::Reopen { durability: d })
    }

    /// Drops the store (for tests that inspect the file system afterwards).
    pub fn close(&mut self) {
        self.store = None;
    }
}

fn arm(fs: &SimFs, n: u64, fault: Fault, sticky: bool) {
    if sticky {
        fs.fail_sticky(n, fault);
    } else {
        fs.fail_at(n, fault);
    }
}

/// Ends `store` as a process kill would: its clean-close code (trim, sync, hint) runs
/// against a file system that fails every operation, so it changes nothing; the write lock
/// is released, as the kernel releases a dead process's locks. Clears all pending faults.
pub fn kill(fs: &SimFs, store: Store) {
    fs.fail_sticky(fs.ops() + 1, Fault::Dead);
    drop(store);
    fs.clear_faults();
}

fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::Poisoned { .. })
}

fn json_eq(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Runs `ops` on a fresh harness and finishes it; the first violation, if any.
pub fn run_ops(
    seed: u64,
    seg_size: u64,
    durability: Durability,
    ops: &[Op],
) -> Result<Stats, Violation> {
    let mut h = Harness::new(seed, seg_size, durability)?;
    for op in ops {
        h.apply(op)?;
    }
    h.finish()?;
    Ok(h.stats)
}

/// Reads the files of a store directory on a SimFs into (name, bytes) pairs, sorted by name.
pub fn image(fs: &SimFs) -> Vec<(String, Vec<u8>)> {
    fs.paths()
        .into_iter()
        .filter(|p| p.parent() == Some(Path::new(DIR)))
        .filter_map(|p| {
            let bytes = fs.read_file(&p)?;
            Some((p.file_name()?.to_str()?.to_owned(), bytes))
        })
        .collect()
}

/// A new SimFs holding `files` (durable) in [`DIR`].
pub fn fs_from_image(files: &[(String, Vec<u8>)]) -> SimFs {
    let fs = SimFs::new(1);
    for (name, bytes) in files {
        fs.write_file(&dir().join(name), bytes);
    }
    fs
}

/// A seed from `CONVLOG_SEED` (decimal or 0x-hex), or `default`; printed to stderr.
pub fn seed_from_env(what: &str, default: u64) -> u64 {
    let seed = std::env::var("CONVLOG_SEED")
        .ok()
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default);
    eprintln!("{what}: seed {seed:#x} (set CONVLOG_SEED to change)");
    seed
}

/// A count from the environment variable `var`, or `default`.
pub fn count_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The deterministic generator of the custom loops (the simulated file system's).
#[allow(unused_imports)] // not every test binary draws numbers
pub use convlog::io::sim::SplitMix as Rng;
