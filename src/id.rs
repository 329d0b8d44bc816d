//! Newtype identifiers: log sequence numbers, segment ids, timestamps.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A global log sequence number: +1 per record across every segment of a store.
///
/// LSNs start at 1. They are contiguous: a gap or a regression is corruption.
/// Serializes as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
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
///
/// Displays as RFC 3339 in UTC with microseconds (`2026-12-02T00:18:45.123456Z`);
/// serializes as its number of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
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

    /// Microseconds since the Unix epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This timestamp as a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, UTC, microsecond precision: `2026-12-02T00:18:45.123456Z`. (Years past 9999,
    /// which no clock reaches, print with more than four digits.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0 % 1_000_000;
        let secs = self.0 / 1_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}Z"
        )
    }
}

/// Year, month and day of the `days`-th day after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
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

    #[test]
    fn timestamps_display_as_rfc3339_with_micros() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp(951_782_400_000_000).to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp(1_700_000_000_123_456).to_string(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            Timestamp(4_102_444_799_999_999).to_string(),
            "2099-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp(1_796_170_725_123_456).to_string(),
            "2026-12-02T00:18:45.123456Z"
        );
        assert_eq!(Timestamp(42).as_micros(), 42);
        // No panic at the far end of the range.
        assert!(Timestamp(u64::MAX).to_string().ends_with('Z'));
    }

    #[test]
    fn ids_serialize_as_numbers() {
        assert_eq!(serde_json::to_string(&Lsn(7)).unwrap(), "7");
        assert_eq!(
            serde_json::to_string(&Timestamp(1_700_000_000_123_456)).unwrap(),
            "1700000000123456"
        );
    }

    #[test]
    fn civil_from_days_walks_every_day_of_four_centuries() {
        // Compare against a naive day-by-day calendar walk.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..146_097u64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
