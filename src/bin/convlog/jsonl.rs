//! Reading JSONL input (for `append` and `import`): lines, sources, per-line checks.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use convlog::format::DEFAULT_MAX_RECORD_LEN;
use serde_json::value::RawValue;

use crate::error::{CliError, CliResult};

/// Where input lines come from. A regular file is read twice when it must be checked before
/// it is applied; standard input and pipes are kept in memory for that.
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// Standard input or a pipe, read to its end, and its name.
    Memory(Vec<u8>, String),
}

/// The longest line a [`Source`] kept in memory may have, and what a longer one is told.
#[derive(Clone, Copy)]
pub struct LineLimit {
    /// Bytes, the line ending included.
    pub max: usize,
    /// Why no line is longer (said in the error).
    pub why: &'static str,
}

/// One message a line: a record's limit (see [`MAX_MESSAGE_LINE`]).
pub const MESSAGE_LINE: LineLimit = LineLimit {
    max: MAX_MESSAGE_LINE,
    why: "a message is at most 16 MiB of JSON",
};

/// One conversation a line (`import`): see [`MAX_CONVERSATION_LINE`].
pub const CONVERSATION_LINE: LineLimit = LineLimit {
    max: MAX_CONVERSATION_LINE,
    why: "a line holds one conversation, at most 1 GiB",
};

impl Source {
    /// `path`, or standard input (read now) when it is `-`; a pipe is read into memory,
    /// its lines at most `limit`.
    pub fn open(path: &Path, limit: LineLimit) -> CliResult<Source> {
        if path == Path::new("-") {
            return Source::stdin(limit);
        }
        let mut file = File::open(path).map_err(|e| CliError::io("open", path, e))?;
        let regular = file
            .metadata()
            .map_err(|e| CliError::io("stat", path, e))?
            .is_file();
        if regular {
            return Ok(Source::File(path.to_owned()));
        }
        // A pipe or device (`/dev/stdin`, `<(...)`) cannot be read twice: keep it in memory.
        let name = path.display().to_string();
        let buf = read_all(&mut file, &name, limit)?;
        Ok(Source::Memory(buf, name))
    }

    /// Standard input, read to its end, its lines at most `limit`.
    pub fn stdin(limit: LineLimit) -> CliResult<Source> {
        let buf = read_all(&mut io::stdin().lock(), "stdin", limit)?;
        Ok(Source::Memory(buf, "stdin".into()))
    }

    /// How the input is named in messages.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Memory(_, name) => name.clone(),
        }
    }

    /// Its size in bytes (for progress).
    pub fn len(&self) -> u64 {
        match self {
            Source::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Source::Memory(b, _) => b.len() as u64,
        }
    }

    /// A reader over its lines, from the start.
    pub fn lines(&self) -> CliResult<Lines<'_>> {
        let reader: Box<dyn BufRead + '_> = match self {
            Source::File(p) => Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(p).map_err(|e| CliError::io("open", p, e))?,
            )),
            Source::Memory(b, _) => Box::new(Cursor::new(b.as_slice())),
        };
        Ok(Lines::new(reader, self.name()))
    }
}

/// Reads `reader` (named `name`) to its end, refusing a line longer than `limit` as soon as
/// it is one: input that never ends a line must not take all memory before it is refused.
fn read_all(reader: &mut dyn Read, name: &str, limit: LineLimit) -> CliResult<Vec<u8>> {
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
    // Where the last line starts, and its number.
    let (mut line_start, mut line_no) = (0, 1);
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CliError::io("read", name, e)),
        };
        let new = &chunk[..n];
        let too_long = |line_no| {
            CliError::Input(format!(
                "{name} line {line_no}: longer than {} bytes; {}",
                limit.max, limit.why
            ))
        };
        // Each line this chunk ends (its ending counted, as `Lines::at_most` counts it),
        // then the one it leaves open.
        let mut at = 0;
        while let Some(i) = new[at..].iter().position(|&b| b == b'\n') {
            let end = buf.len() + at + i + 1;
            if end - line_start > limit.max {
                return Err(too_long(line_no));
            }
            (line_start, line_no, at) = (end, line_no + 1, at + i + 1);
        }
        if buf.len() + n - line_start > limit.max {
            return Err(too_long(line_no));
        }
        // Input larger than memory is an error, not an abort.
        buf.try_reserve(n)
            .map_err(|_| CliError::io("read", name, io::ErrorKind::OutOfMemory.into()))?;
        buf.extend_from_slice(new);
    }
}

/// The non-blank lines of a [`Source`] (or of any reader), numbered from 1, without their
/// line ending.
pub struct Lines<'a> {
    reader: Box<dyn BufRead + 'a>,
    name: String,
    buf: Vec<u8>,
    line_no: usize,
    bytes: u64,
    max_len: usize,
    /// What a line longer than `max_len` is said to be, in its error.
    too_long: String,
}

impl<'a> Lines<'a> {
    /// The lines of `reader`, named `name` in messages, of any length.
    pub fn new(reader: Box<dyn BufRead + 'a>, name: String) -> Lines<'a> {
        Lines {
            reader,
            name,
            buf: Vec::new(),
            line_no: 0,
            bytes: 0,
            max_len: usize::MAX,
            too_long: String::new(),
        }
    }

    /// The same, with lines longer than `max` bytes an error that says `why`.
    pub fn at_most(mut self, max: usize, why: impl Into<String>) -> Lines<'a> {
        self.max_len = max;
        self.too_long = why.into();
        self
    }

    /// The lines of standard input, each returned as soon as its line ending arrives (a
    /// line is never held back until more input or the end comes). A line longer than
    /// [`MAX_MESSAGE_LINE`] is an error, found without reading the rest of it.
    pub fn stdin_streaming() -> Lines<'static> {
        Lines::new(
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
            "stdin".into(),
        )
        .at_most(MESSAGE_LINE.max, MESSAGE_LINE.why)
    }
}

/// The longest line that may hold one message: the record limit and room for surrounding
/// whitespace and the line ending.
pub const MAX_MESSAGE_LINE: usize = DEFAULT_MAX_RECORD_LEN as usize + (64 << 10);

/// The longest line `import` reads: one conversation, as large as a batch may be.
pub const MAX_CONVERSATION_LINE: usize = 1 << 30;

impl Lines<'_> {
    /// The next non-blank line and its number; `None` at the end.
    ///
    /// # Errors
    /// [`CliError::Io`] when reading fails; [`CliError::Input`] for a line longer than the
    /// reader's limit (see [`Lines::stdin_streaming`]), naming it.
    pub fn next_line(&mut self) -> CliResult<Option<(usize, &[u8])>> {
        loop {
            self.buf.clear();
            let (n, too_long) = read_line(&mut *self.reader, &mut self.buf, self.max_len)
                .map_err(|e| CliError::io("read", &self.name, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            if too_long {
                return Err(CliError::Input(format!(
                    "{} line {}: longer than {} bytes; {}",
                    self.name, self.line_no, self.max_len, self.too_long
                )));
            }
            let (mut start, mut end) = (0, self.buf.len());
            if self.line_no == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                start = 3;
            }
            for ending in [b'\n', b'\r'] {
                if end > start && self.buf[end - 1] == ending {
                    end -= 1;
                }
            }
            if self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some((self.line_no, &self.buf[start..end])));
        }
    }

    /// Bytes consumed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The input's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Reads up to and including the next `\n` (or to the end) into `buf`, but stops once `buf`
/// holds more than `max` bytes. Returns the bytes consumed and whether it stopped early.
/// Returns as soon as a line ending is buffered: it never waits for more input than that.
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), available.is_empty()),
        };
        // A line longer than memory is an error, not an abort.
        buf.try_reserve(used)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        consumed += used;
        if buf.len() > max {
            return Ok((consumed, true));
        }
        if done {
            return Ok((consumed, false));
        }
    }
}

/// Checks one message: a JSON object no larger than a record's payload may be.
/// `raw` is already known to be valid JSON.
pub fn check_message(raw: &RawValue) -> Result<(), String> {
    let json = raw.get().trim_start();
    if !json.starts_with('{') {
        return Err(format!(
            "a message must be a JSON object, not {}",
            json_kind(json)
        ));
    }
    if json.len() > DEFAULT_MAX_RECORD_LEN as usize {
        return Err(format!(
            "message of {} bytes exceeds the limit of {DEFAULT_MAX_RECORD_LEN} bytes",
            json.len()
        ));
    }
    // What else an append would refuse (nesting past MAX_JSON_DEPTH), found before any
    // message of the input is appended.
    match convlog::validate_message(json.as_bytes()) {
        Err(convlog::Error::InvalidMessage { reason, .. }) => Err(reason),
        Err(e) => Err(e.to_string()),
        Ok(()) => Ok(()),
    }
}

/// What kind of JSON value `json` (valid, trimmed) is, for messages.
pub fn json_kind(json: &str) -> &'static str {
    match json.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// Why `input` failed to parse with `e`: "not UTF-8" and the offset of the first bad byte
/// when it is not UTF-8 (JSON text is); a byte order mark named as such; else a serde_json
/// error without its "at line 1 column N" (the caller names the line), with the column
/// kept. Syntax errors are "invalid JSON"; data errors (a value of the wrong type) say what
/// was expected.
pub fn json_error(input: &[u8], e: &serde_json::Error) -> String {
    if let Err(bad) = std::str::from_utf8(input) {
        return format!("not UTF-8: invalid byte at offset {}", bad.valid_up_to());
    }
    if input.trim_ascii_start().starts_with("\u{feff}".as_bytes()) {
        return "invalid JSON: starts with a byte order mark (U+FEFF), which JSON text must not"
            .into();
    }
    let text = e.to_string();
    let what = match text.rsplit_once(" at line ") {
        Some((what, _)) => what,
        None => &text,
    };
    match (e.classify(), e.column()) {
        (serde_json::error::Category::Data, 0) => what.to_owned(),
        (serde_json::error::Category::Data, col) => format!("{what} (at column {col})"),
        (_, 0) => format!("invalid JSON: {what}"),
        (_, col) => format!("invalid JSON at column {col}: {what}"),
    }
}
