//! A fast yes/no check that UTF-8 text is one JSON object: the append path's common case.
//!
//! It accepts exactly what `serde_json` reading into `IgnoredAny` accepts (RFC 8259 syntax;
//! an escape's hex digits are not checked to form a valid code point, so a lone surrogate
//! escape passes, as Python's `json` writes it), plus the depth limit. It says only yes or
//! no: on a no, `validate.rs` asks `serde_json` for the error message, so the two must agree,
//! which the unit tests below and the `validate_json` fuzz target check against `serde_json`.
//!
//! Why not `serde_json` alone: most of a chat message is string content, which this check
//! skips sixteen bytes at a time; it tracks nesting as it goes instead of in a second pass,
//! and runs a UTF-8 check only on text that is not ASCII.

/// Whether `b` is exactly one JSON object in UTF-8, with JSON whitespace allowed around it,
/// nested at most `max_depth` levels (the object itself is level 1). A `max_depth` over
/// [`STACK_BITS`] counts as `STACK_BITS`: deeper text is refused (a refusal only costs the
/// caller its slow path).
///
/// UTF-8 is checked only when the text holds a byte over 0x7f (ASCII is UTF-8), which only
/// a string may: the syntax refuses one anywhere else.
pub(super) fn is_object(b: &[u8], max_depth: usize) -> bool {
    let mut s = Scan { b, i: 0, high: 0 };
    s.skip_ws();
    s.peek() == Some(b'{')
        && s.value(max_depth)
        && {
            s.skip_ws();
            s.i == b.len()
        }
        && (s.high == 0 || std::str::from_utf8(b).is_ok())
}

/// The levels the nesting stack holds: one bit each (set for an object, clear for an array).
pub(super) const STACK_BITS: usize = 1024;

/// A cursor over the text; every method that returns `bool` says whether what it read was
/// well formed, and leaves `i` past it.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Nonzero once a string skipped a byte over 0x7f (or the chunk it was in held one).
    high: u64,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    /// An object key and its colon, after whitespace.
    fn key(&mut self) -> bool {
        self.skip_ws();
        self.peek() == Some(b'"') && self.string() && self.eat(b':')
    }

    /// One value, containers included, iteratively: `stack` records whether each open level
    /// is an object, so nothing recurses however deep the text nests.
    fn value(&mut self, max_depth: usize) -> bool {
        let max_depth = max_depth.min(STACK_BITS);
        let mut stack = [0u64; STACK_BITS / 64];
        let mut depth = 0usize;
        loop {
            // A value starts here.
            self.skip_ws();
            let Some(c) = self.peek() else { return false };
            let ok = match c {
                b'{' | b'[' => {
                    if depth == max_depth {
                        return false;
                    }
                    let object = c == b'{';
                    self.i += 1;
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    stack[word] = if object {
                        stack[word] | bit
                    } else {
                        stack[word] & !bit
                    };
                    depth += 1;
                    if self.eat(if object { b'}' } else { b']' }) {
                        depth -= 1;
                        true
                    } else if object {
                        if !self.key() {
                            return false;
                        }
                        continue;
                    } else {
                        continue;
                    }
                }
                b'"' => self.string(),
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                b'n' => self.literal(b"null"),
                b'-' | b'0'..=b'9' => self.number(),
                _ => false,
            };
            if !ok {
                return false;
            }
            // A value ended: close containers, or go on to the next element.
            loop {
                if depth == 0 {
                    return true;
                }
                let top = depth - 1;
                let object = stack[top / 64] & (1 << (top % 64)) != 0;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object && !self.key() {
                            return false;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return false,
                }
                self.i += 1;
                depth -= 1;
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.b[self.i..].starts_with(word);
        self.i += word.len();
        hit
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> bool {
        self.i += usize::from(self.peek() == Some(b'-'));
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.one_or_more_digits() {
                return false;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.one_or_more_digits() {
                return false;
            }
        }
        true
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn one_or_more_digits(&mut self) -> bool {
        let start = self.i;
        self.digits();
        self.i > start
    }

    /// A string, from its opening quote: no raw control character, only JSON's escapes.
    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => {
                    let ok = match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 2;
                            true
                        }
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 2..self.i + 6);
                            self.i += 6;
                            hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                        }
                        _ => false,
                    };
                    if !ok {
                        return false;
                    }
                }
                // A control character, or the end of the text.
                _ => return false,
            }
        }
    }

    /// Skips string bytes that need no look (not `"`, `\` or a control character), sixteen
    /// at a time while sixteen are left.
    fn skip_plain(&mut self) {
        let rest = self.b.get(self.i..).unwrap_or_default();
        // Kept in registers, written back once.
        let (mut skipped, mut high) = (0usize, 0u64);
        let mut chunks = rest.chunks_exact(16);
        let mut stopped = false;
        for chunk in &mut chunks {
            let (lo, hi) = chunk.split_at(8);
            let (lo, hi) = (word(lo), word(hi));
            high |= lo | hi;
            let hits = (special(lo), special(hi));
            if hits != (0, 0) {
                skipped += match hits {
                    (0, h) => 8 + (h.trailing_zeros() / 8) as usize,
                    (l, _) => (l.trailing_zeros() / 8) as usize,
                };
                stopped = true;
                break;
            }
            skipped += 16;
        }
        if !stopped {
            for &c in chunks.remainder() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                high |= u64::from(c);
                skipped += 1;
            }
        }
        self.i += skipped;
        self.high |= high & HIGH;
    }
}

/// Eight bytes as one little-endian word.
fn word(eight: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(eight);
    u64::from_le_bytes(word)
}

/// A byte's value in every byte of a word.
const ONES: u64 = u64::from_le_bytes([0x01; 8]);
/// The high bit of every byte of a word.
const HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of each byte of `w` (eight bytes, little-endian) that is `"`, `\` or below
/// 0x20: exact for the lowest such byte; bytes above it may be false hits, never looked at.
fn special(w: u64) -> u64 {
    // `x - 1` borrows into each zero byte of `x` (and `x - 0x20` into each byte below 0x20);
    // `!x` then keeps only bytes below 0x80 (UTF-8 lead and continuation bytes are none).
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    (below(quote, 1) | below(backslash, 1) | below(w, 0x20)) & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    /// What `validate.rs` accepted before this check: `serde_json`, and the depth limit.
    fn reference(text: &str, max_depth: usize) -> bool {
        text.trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
            && serde_json::from_str::<IgnoredAny>(text).is_ok()
            && depth(text) <= max_depth
    }

    /// The deepest nesting of valid JSON `text`.
    fn depth(text: &str) -> usize {
        let (mut d, mut most, mut in_string, mut escaped) = (0usize, 0, false, false);
        for c in text.bytes() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    d += 1;
                    most = most.max(d);
                }
                b']' | b'}' => d = d.saturating_sub(1),
                _ => {}
            }
        }
        most
    }

    fn agree(text: &str) {
        for max in [1, 2, 3, 512] {
            assert_eq!(
                is_object(text.as_bytes(), max),
                reference(text, max),
                "max depth {max}: {text:?}"
            );
        }
    }

    #[test]
    fn agrees_with_serde_json_on_hand_picked_texts() {
        for text in [
            "{}",
            " {} ",
            "{\"a\":1}",
            "{\"a\":[1,2,{\"b\":null}],\"c\":true,\"d\":false}",
            "{\"a\":-0.5e+10,\"b\":1E3,\"c\":0,\"d\":-0}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":1,}",
            "{\"a\":[1,]}",
            "{,}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":tru}",
            "{\"a\":truex}",
            "{\"a\":nul",
            "{\"a\":\"\\u00e9\\ud800\\n\\\"\\\\\\/\\b\\f\\r\\t\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\u{7f}\u{e9}\u{1f389}\"}",
            "{\"a\":\"unterminated}",
            "{\"long\":\"0123456789abcdef0123456789abcdef\\\"0123456789\"}",
            "{} {}",
            "{}x",
            "[]",
            "\"s\"",
            "",
            "   ",
            "{\"a\":[[[]]]}",
            "{\"a\":[[[[]]]]}",
            "{\"a\":{\"b\":{}}}",
            "{\"a\":{\"b\":{\"c\":{}}}}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\":1]",
            "{\"a\":[1}",
            "{\u{a0}}",
            "{\u{feff}}",
        ] {
            agree(text);
        }
    }

    /// Every character that ends or breaks a string's fast skip, at every offset of the
    /// sixteen-byte chunks (and the tail after them), among bytes that do not.
    #[test]
    fn agrees_with_serde_json_wherever_a_special_character_falls_in_a_string() {
        for special in [
            "\"", "\\n", "\\", "\u{1}", "\u{1f}", "\n", " ", "\u{7f}", "é", "🎉",
        ] {
            for before in 0..40 {
                for after in [0, 1, 7, 8, 15, 16, 17, 40] {
                    let text = format!(
                        "{{\"k\":\"{}{special}{}\"}}",
                        "a".repeat(before),
                        "b".repeat(after)
                    );
                    agree(&text);
                }
            }
        }
    }

    /// Bytes that are not UTF-8, in a string (where the syntax lets them be) at each offset
    /// of the chunks, beside valid multi-byte characters: refused exactly when `from_utf8`
    /// refuses them.
    #[test]
    fn refuses_what_is_not_utf8_wherever_it_falls() {
        let bad: [&[u8]; 6] = [
            b"\xff",
            b"\xc3",
            b"\xc3(",
            b"\xed\xa0\x80",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
        ];
        let good: [&[u8]; 3] = ["é".as_bytes(), "€".as_bytes(), "🎉".as_bytes()];
        for piece in bad.iter().chain(&good) {
            for before in 0..20 {
                for after in [0, 3, 16] {
                    let mut text = b"{\"k\":\"".to_vec();
                    text.extend(std::iter::repeat_n(b'a', before));
                    text.extend_from_slice(piece);
                    text.extend("é".repeat(after).as_bytes());
                    text.extend_from_slice(b"\"}");
                    let utf8 = std::str::from_utf8(&text).is_ok();
                    assert_eq!(utf8, good.contains(piece), "{text:?}");
                    assert_eq!(is_object(&text, 512), utf8, "{text:?}");
                }
            }
        }
        // Outside a string, no byte over 0x7f is JSON at all.
        assert!(!is_object("{\"a\":1}\u{a0}".as_bytes(), 512));
        assert!(!is_object(b"{\"a\":1\xff}", 512));
    }

    /// Texts built from JSON's pieces (and broken ones), with the seed printed.
    #[test]
    fn agrees_with_serde_json_on_generated_texts() {
        let seed = std::env::var("CONVLOG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x6a73_6f6e_u64);
        println!("seed {seed} (CONVLOG_TEST_SEED={seed} to reproduce)");
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"k\"",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "1",
            "-2.5e3",
            "0",
            "01",
            "1.",
            "true",
            "null",
            "fals",
            " ",
            "\n",
            "\"\u{e9}x\"",
            "\"0123456789abcdefg\"",
            "\"\\q\"",
            "\"\t\"",
            "x",
        ];
        let (mut valid, runs) = (0, 200_000);
        for _ in 0..runs {
            let mut text = String::from("{");
            for _ in 0..(next() % 12) {
                text.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            if next() % 2 == 0 {
                text.push('}');
            }
            agree(&text);
            valid += usize::from(reference(&text, 512));
        }
        // Both verdicts are exercised, and often.
        assert!(
            valid > runs / 100 && valid < runs * 99 / 100,
            "{valid} valid of {runs}"
        );
    }
}
