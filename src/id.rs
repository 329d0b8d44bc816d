//! Newtype identifiers: log sequence numbers, segment ids, timestamps.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A global log sequence number: +1 per record across every segment of a store.
///
/// LSNs start at 1. They are contiguous: a gap or a regression is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of the first record of a new store.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN that follows this one.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A segment, named by the LSN of the first record it may hold.
///
/// Segment files are named `{id:020}.seg`, so their names sort by LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The file name of this segment, zero-padded so names sort numerically.
    #[must_use]
    pub fn file_name(self) -> String {
        format!("{:020}.seg", self.0)
    }

    /// Parses a segment file name (`{20 digits}.seg`); `None` for any other name.
    #[must_use]
    pub fn parse_file_name(name: &str) -> Option<SegmentId> {
        let digits = name.strip_suffix(".seg")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(SegmentId)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// Wall-clock time of an event, in microseconds since the Unix epoch.
///
/// A store never hands out a timestamp lower than one it handed out before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time (0 if the clock is before 1970).
    #[must_use]
    pub fn now() -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Timestamp(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// This timestamp as a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip_and_sort() {
        let a = SegmentId(9).file_name();
        let b = SegmentId(10).file_name();
        assert!(a < b);
        assert_eq!(SegmentId::parse_file_name(&a), Some(SegmentId(9)));
        assert_eq!(SegmentId::parse_file_name("9.seg"), None);
        assert_eq!(SegmentId::parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(
            SegmentId::parse_file_name("00000000000000000001.hint"),
            None
        );
    }
}
