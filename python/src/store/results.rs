//! What `Store` calls return besides messages: `Receipt`, `SessionInfo`, `CompactReport`.

use pyo3::prelude::*;

/// What an append returns: where the message went.
#[pyclass(module = "convlog", name = "Receipt", frozen, eq, hash, get_all)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The message's 1-based, gapless position in its session.
    pub(crate) interaction_id: u64,
    /// The record's log sequence number (store-wide).
    pub(crate) lsn: u64,
    /// When it was appended, in microseconds since the Unix epoch.
    timestamp: u64,
}

impl From<convlog::Receipt> for Receipt {
    fn from(r: convlog::Receipt) -> Receipt {
        Receipt {
            interaction_id: r.interaction_id,
            lsn: r.lsn.0,
            timestamp: r.timestamp.as_micros(),
        }
    }
}

#[pymethods]
impl Receipt {
    #[new]
    fn new(interaction_id: u64, lsn: u64, timestamp: u64) -> Receipt {
        Receipt {
            interaction_id,
            lsn,
            timestamp,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Receipt(interaction_id={}, lsn={}, timestamp={})",
            self.interaction_id, self.lsn, self.timestamp
        )
    }

    /// Pickles as its constructor and fields (for `multiprocessing`, `copy`).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (Bound<'py, pyo3::types::PyType>, (u64, u64, u64)) {
        let r = slf.get();
        (slf.get_type(), (r.interaction_id, r.lsn, r.timestamp))
    }
}

/// A live session, as `Store.sessions()` lists it.
#[pyclass(module = "convlog", name = "SessionInfo", frozen, eq, get_all)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    id: String,
    /// How many messages it holds (its last interaction id).
    count: u64,
    /// When its first message was appended (microseconds since the Unix epoch).
    first: u64,
    /// When its last message was appended (microseconds since the Unix epoch).
    last: u64,
}

impl From<convlog::SessionInfo> for SessionInfo {
    fn from(i: convlog::SessionInfo) -> SessionInfo {
        SessionInfo {
            id: i.id,
            count: i.count,
            first: i.first.as_micros(),
            last: i.last.as_micros(),
        }
    }
}

#[pymethods]
impl SessionInfo {
    #[new]
    fn new(id: String, count: u64, first: u64, last: u64) -> SessionInfo {
        SessionInfo {
            id,
            count,
            first,
            last,
        }
    }

    /// Pickles as its constructor and fields (for `multiprocessing`, `copy`).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (Bound<'py, pyo3::types::PyType>, (String, u64, u64, u64)) {
        let i = slf.get();
        (slf.get_type(), (i.id.clone(), i.count, i.first, i.last))
    }

    fn __repr__(&self) -> String {
        format!(
            "SessionInfo(id={:?}, count={}, first={}, last={})",
            self.id, self.count, self.first, self.last
        )
    }
}

/// What `Store.compact()` did.
#[pyclass(module = "convlog", name = "CompactReport", frozen, eq, get_all)]
#[derive(Debug, Clone, PartialEq)]
pub struct CompactReport {
    /// Sealed segments read and replaced (0: there was nothing to reclaim).
    segments_rewritten: usize,
    /// Bytes of the segments replaced.
    bytes_before: u64,
    /// Bytes of the compacted segment that replaced them.
    bytes_after: u64,
    /// Records kept.
    records_kept: u64,
    /// Records dropped.
    records_dropped: u64,
    /// Sessions none of whose records were kept (deleted, cleared).
    sessions_erased: Vec<String>,
    /// Files removed from `quarantine/` afterwards (a compaction that drops records empties it).
    quarantine_purged: usize,
    /// The compacted segment's id (its first LSN), when one was written.
    segment: Option<u64>,
    /// How long it took, in seconds.
    duration: f64,
}

impl From<convlog::CompactReport> for CompactReport {
    fn from(r: convlog::CompactReport) -> CompactReport {
        CompactReport {
            segments_rewritten: r.segments_rewritten,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            records_kept: r.records_kept,
            records_dropped: r.records_dropped,
            sessions_erased: r.sessions_erased,
            quarantine_purged: r.quarantine_purged,
            segment: r.segment.map(|s| s.0),
            duration: r.duration.as_secs_f64(),
        }
    }
}

#[pymethods]
impl CompactReport {
    fn __repr__(&self) -> String {
        let segment = self
            .segment
            .map_or_else(|| "None".to_owned(), |s| s.to_string());
        format!(
            "CompactReport(segments_rewritten={}, bytes_before={}, bytes_after={}, \
             records_kept={}, records_dropped={}, sessions_erased={:?}, \
             quarantine_purged={}, segment={}, duration={})",
            self.segments_rewritten,
            self.bytes_before,
            self.bytes_after,
            self.records_kept,
            self.records_dropped,
            self.sessions_erased,
            self.quarantine_purged,
            segment,
            self.duration
        )
    }
}
