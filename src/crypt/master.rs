//! The master key: 32 bytes the caller keeps, which wrap every data key of a store.

use std::fmt;
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// The longest key file [`MasterKey::read_file`] reads: 64 hex digits and `\r\n`.
const MAX_KEY_FILE_LEN: usize = 2 * MASTER_KEY_LEN + 2;

/// A store's master key (see [`crate::Options::encryption`]). Its bytes are wiped from memory
/// when it is dropped, and never printed (`Debug` shows nothing of them).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// The key with these bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A new random key (from the operating system's generator).
    ///
    /// # Errors
    /// [`Error::Io`] if the generator fails.
    pub fn generate() -> Result<MasterKey> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        super::envelope::os_random(&mut *bytes)?;
        Ok(MasterKey(bytes))
    }

    /// Parses a key file's contents: the 32 bytes raw, or as 64 hex digits; one trailing
    /// newline (`\n` or `\r\n`) is allowed after either.
    ///
    /// # Errors
    /// [`Error::InvalidMasterKey`] saying what is wrong (never the key's bytes).
    pub fn parse(contents: &[u8], path: &Path) -> Result<MasterKey> {
        let bad = |reason: &'static str| Error::InvalidMasterKey {
            path: path.to_owned(),
            reason,
        };
        let trimmed = contents
            .strip_suffix(b"\r\n")
            .or_else(|| contents.strip_suffix(b"\n"))
            .unwrap_or(contents);
        // Raw bytes first: 32 bytes that end in a newline byte are still 32 raw bytes.
        let body = if contents.len() == MASTER_KEY_LEN {
            contents
        } else {
            trimmed
        };
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        match body.len() {
            MASTER_KEY_LEN => key.copy_from_slice(body),
            n if n == 2 * MASTER_KEY_LEN => {
                for (i, pair) in body.chunks_exact(2).enumerate() {
                    let hi = hex_digit(pair[0]).ok_or_else(|| bad("not 64 hex digits"))?;
                    let lo = hex_digit(pair[1]).ok_or_else(|| bad("not 64 hex digits"))?;
                    key[i] = hi << 4 | lo;
                }
            }
            _ => return Err(bad("must hold 32 bytes, or 64 hex digits")),
        }
        Ok(MasterKey(key))
    }

    /// Reads and parses the key file at `path` (see [`MasterKey::parse`]).
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; [`Error::InvalidMasterKey`].
    pub fn read_file(path: impl AsRef<Path>) -> Result<MasterKey> {
        let path = path.as_ref();
        let io = |e| Error::io("read key file", path, e);
        let file = std::fs::File::open(path).map_err(io)?;
        // At most one byte more than the longest valid contents: a key file that is a huge
        // file, `/dev/zero` or a pipe that never ends is refused after a few bytes instead of
        // read whole. A fixed buffer, wiped on drop: no reallocation leaves a copy behind.
        let mut buf = Zeroizing::new([0u8; MAX_KEY_FILE_LEN + 1]);
        let mut len = 0;
        let mut reader = file.take(buf.len() as u64);
        loop {
            match reader.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        if len > MAX_KEY_FILE_LEN {
            return Err(Error::InvalidMasterKey {
                path: path.to_owned(),
                reason: "must hold 32 bytes, or 64 hex digits",
            });
        }
        MasterKey::parse(&buf[..len], path)
    }

    /// The key as 64 lowercase hex digits (to write a key file; wiped on drop).
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(2 * MASTER_KEY_LEN));
        for b in self.0.iter() {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_raw_bytes_or_hex_with_one_trailing_newline() {
        let p = Path::new("k");
        let raw = [7u8; 32];
        let hex = "07".repeat(32);
        for contents in [
            raw.to_vec(),
            [&raw[..], b"\n"].concat(),
            hex.clone().into_bytes(),
            format!("{hex}\n").into_bytes(),
            format!("{hex}\r\n").into_bytes(),
            hex.to_uppercase().into_bytes(),
        ] {
            assert_eq!(
                MasterKey::parse(&contents, p).unwrap(),
                MasterKey::from_bytes(raw)
            );
        }
        // 32 raw bytes whose last is a newline are those 32 bytes.
        let mut nl = [1u8; 32];
        nl[31] = b'\n';
        assert_eq!(MasterKey::parse(&nl, p).unwrap(), MasterKey::from_bytes(nl));
        for bad in [
            &b""[..],
            &[0u8; 31][..],
            &[0u8; 33][..],
            format!("{hex}\n\n").as_bytes(),
            "zz".repeat(32).as_bytes(),
        ] {
            let e = MasterKey::parse(bad, p).unwrap_err();
            assert!(matches!(e, Error::InvalidMasterKey { .. }), "{e}");
        }
        assert_eq!(MasterKey::from_bytes(raw).to_hex().as_str(), hex);
        assert_eq!(format!("{:?}", MasterKey::from_bytes(raw)), "MasterKey(..)");
    }

    #[test]
    fn read_file_reads_a_valid_file_and_refuses_an_endless_one_after_a_few_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, format!("{}\r\n", "ab".repeat(32))).unwrap();
        assert_eq!(
            MasterKey::read_file(&ok).unwrap(),
            MasterKey::from_bytes([0xab; 32])
        );
        // One byte too many (a valid hex key, `\r\n`, and one more) is refused.
        let long = dir.path().join("long");
        std::fs::write(&long, format!("{}\r\n\n", "ab".repeat(32))).unwrap();
        let e = MasterKey::read_file(&long).unwrap_err();
        assert!(matches!(e, Error::InvalidMasterKey { .. }), "{e}");
        // A device that never ends is refused without reading it whole.
        let e = MasterKey::read_file("/dev/zero").unwrap_err();
        assert!(matches!(e, Error::InvalidMasterKey { .. }), "{e}");
        let e = MasterKey::read_file(dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }
}
