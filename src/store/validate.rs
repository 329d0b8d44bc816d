//! What a message (or metadata) must be to be stored: one JSON object, in UTF-8, that every
//! reader decodes. The check runs on every append, so it skips values instead of building
//! them, and adds two scans (SIMD, ~50 ns each per KB) for what skipping would let through.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::error::{Error, Result};

/// The deepest nesting of arrays and objects a message may have (the message object itself
/// is level 1): what `serde_json` decodes by default, so every typed read of a stored
/// message succeeds (Python's `json` reads deeper).
pub const MAX_JSON_DEPTH: usize = 127;

/// Checks that `json` is exactly one JSON object (whitespace around it allowed), in UTF-8,
/// nested at most [`MAX_JSON_DEPTH`] levels deep, with no lone UTF-16 surrogate escape.
///
/// # Errors
/// [`Error::InvalidMessage`] saying what is wrong and where.
pub(super) fn validate_object(session: &str, json: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidMessage {
        session: session.to_owned(),
        reason,
    };
    // JSON text is UTF-8, also inside the strings a check that skips their values skips.
    let text = std::str::from_utf8(json).map_err(|e| {
        invalid(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<ObjectOnly>(text).map_err(|e| invalid(e.to_string()))?;
    check_decodable(session, json)
}

/// Checks that valid JSON `json` (as `serde_json` writes it, for one) nests at most
/// [`MAX_JSON_DEPTH`] levels and has no lone surrogate escape.
///
/// # Errors
/// [`Error::InvalidMessage`] saying what is wrong and where.
pub(super) fn check_decodable(session: &str, json: &[u8]) -> Result<()> {
    match undecodable(json) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidMessage {
            session: session.to_owned(),
            reason,
        }),
    }
}

/// One JSON object, its values skipped (neither built nor checked for what skipping does
/// not check: their depth, their strings' escapes).
struct ObjectOnly;

impl<'de> Deserialize<'de> for ObjectOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ObjectOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<ObjectOnly, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ObjectOnly)
            }
        }
        d.deserialize_map(V)
    }
}

/// Why valid JSON `b` would still fail a decoder that builds its values: nesting deeper than
/// [`MAX_JSON_DEPTH`], or a `\u` escape of a UTF-16 surrogate that is not half of a pair.
fn undecodable(b: &[u8]) -> Option<String> {
    // Nesting that deep needs that many brackets: count them first (rarely that many).
    let opens = memchr::memchr2_iter(b'[', b'{', b).take(MAX_JSON_DEPTH + 1);
    if opens.count() > MAX_JSON_DEPTH
        && let Some(at) = too_deep(b)
    {
        return Some(format!(
            "nested deeper than {MAX_JSON_DEPTH} levels (at offset {at})"
        ));
    }
    lone_surrogate(b).map(|at| format!("a lone UTF-16 surrogate escape at offset {at}"))
}

/// Where valid JSON `b` first opens an array or object past [`MAX_JSON_DEPTH`] levels.
fn too_deep(b: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in b.iter().enumerate() {
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
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Where valid JSON `b` has a `\u` escape of a surrogate (`D800`..=`DFFF`) that is not a
/// high one followed at once by an escaped low one. (Every backslash of valid JSON is in a
/// string; one preceded by an odd run of backslashes is itself escaped.)
fn lone_surrogate(b: &[u8]) -> Option<usize> {
    let unit = |at: usize| {
        let hex = std::str::from_utf8(b.get(at + 2..at + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut low_of_a_pair = None;
    for i in memchr::memmem::find_iter(b, b"\\u") {
        let run = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
        if run % 2 == 1 || low_of_a_pair == Some(i) {
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF)
                if b.get(i + 6..i + 8) == Some(b"\\u")
                    && matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) =>
            {
                low_of_a_pair = Some(i + 6);
            }
            Some(0xD800..=0xDFFF) => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> std::result::Result<(), String> {
        validate_object("s", json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn nesting_is_accepted_exactly_as_deep_as_serde_json_decodes_it() {
        for depth in [1, 2, 126, 127, 128, 129, 100_000] {
            let json = format!(
                "{}{}",
                "{\"a\":[".repeat(depth / 2) + if depth % 2 == 1 { "{" } else { "" },
                (if depth % 2 == 1 { "}" } else { "" }).to_owned() + &"]}".repeat(depth / 2)
            );
            let decodes = serde_json::from_str::<serde_json::Value>(&json).is_ok();
            assert_eq!(check(&json).is_ok(), decodes, "depth {depth}");
            assert_eq!(decodes, depth <= MAX_JSON_DEPTH, "depth {depth}");
        }
        // Brackets inside strings are no nesting.
        let many = format!("{{\"code\":\"{}\"}}", "{[".repeat(500));
        assert_eq!(check(&many), Ok(()));
        let e = check(&format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        ));
        assert!(e.is_err_and(|e| e.contains("nested deeper than 127 levels (at offset 131)")));
    }

    #[test]
    fn a_surrogate_escape_is_accepted_only_as_half_of_a_pair() {
        for (json, ok) in [
            (r#"{"x":"\ud83d\ude00"}"#, true),
            (r#"{"x":"\\ud800"}"#, true), // an escaped backslash, then text
            (r#"{"x":"\u00e9\u0041"}"#, true),
            (r#"{"x":"\ud800"}"#, false),
            (r#"{"x":"\udc00"}"#, false),
            (r#"{"x":"\\\ud800"}"#, false),
            (r#"{"x":"\ud800\u0041"}"#, false),
            (r#"{"x":"\ude00\ud83d"}"#, false),
            (r#"{"\ud800":1}"#, false),
        ] {
            let decodes = serde_json::from_str::<serde_json::Value>(json).is_ok();
            assert_eq!((check(json).is_ok(), decodes), (ok, ok), "{json}");
        }
        let e = check(r#"{"a":"b","x":"\udc00"}"#);
        assert!(e.is_err_and(|e| e.contains("lone UTF-16 surrogate escape at offset 14")));
    }
}
