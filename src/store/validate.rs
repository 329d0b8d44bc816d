//! What a message (or metadata) must be to be stored: one JSON object, in UTF-8, that every
//! reader decodes. The check runs on every append, so it skips values instead of building
//! them: `json_scan.rs` says yes or no in one pass; a no is explained here by `serde_json`
//! (which reads as much as the scan does) and a depth scan.

use serde::de::IgnoredAny;

use crate::error::{Error, Result};

/// The deepest nesting of arrays and objects a message may have (the message object itself
/// is level 1). Python's `json` reads this deep with its default recursion limit; deeper,
/// a reader that recurses (as decoders do) fails or overflows its stack, so an append
/// refuses it. (`serde_json`'s default reader stops at 127 levels: a Rust typed read of a
/// message nested deeper fails, its raw read does not.)
pub const MAX_JSON_DEPTH: usize = 512;
// The one-pass check tracks this many levels (deeper limits would make it refuse more).
const _: () = assert!(MAX_JSON_DEPTH <= super::json_scan::STACK_BITS);

/// Checks that `json` is exactly one JSON object (whitespace around it allowed), in UTF-8,
/// nested at most [`MAX_JSON_DEPTH`] levels deep.
///
/// # Errors
/// [`Error::InvalidMessage`] saying what is wrong and where.
pub(super) fn validate_object(session: &str, json: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidMessage {
        session: session.to_owned(),
        reason,
    };
    // The common case, in one pass (`json_scan.rs`); a refusal is then explained below.
    if super::json_scan::is_object(json, MAX_JSON_DEPTH) {
        return Ok(());
    }
    // JSON text is UTF-8, also inside the strings a check that skips their values skips.
    let text = std::str::from_utf8(json).map_err(|e| {
        invalid(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    // An object, checked the way its nested values are (a key's escapes as a value's: a
    // lone surrogate escape, which Python's `json` writes, is kept at the top level too).
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(invalid("not a JSON object".into()));
    }
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| invalid(e.to_string()))?;
    check_decodable(session, json)
}

/// Checks that valid JSON `json` (as `serde_json` writes it, for one) nests at most
/// [`MAX_JSON_DEPTH`] levels.
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

/// Why valid JSON `b` would still fail a decoder that builds its values: nesting deeper than
/// [`MAX_JSON_DEPTH`]. (A lone UTF-16 surrogate escape in a value, `"\ud800"`, is kept:
/// Python's `json` writes one for a lone surrogate in a `str`, and reads it back; Rust's
/// typed reads refuse such a message, raw reads return it.)
fn undecodable(b: &[u8]) -> Option<String> {
    // Nesting that deep needs that many brackets: count them first (rarely that many).
    let opens = memchr::memchr2_iter(b'[', b'{', b).take(MAX_JSON_DEPTH + 1);
    if opens.count() <= MAX_JSON_DEPTH {
        return None;
    }
    too_deep(b).map(|at| format!("nested deeper than {MAX_JSON_DEPTH} levels (at offset {at})"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> std::result::Result<(), String> {
        validate_object("s", json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn nesting_is_accepted_up_to_max_json_depth() {
        for depth in [1, 2, 127, 128, 511, 512, 513, 100_000] {
            let json = format!(
                "{}{}",
                "{\"a\":[".repeat(depth / 2) + if depth % 2 == 1 { "{" } else { "" },
                (if depth % 2 == 1 { "}" } else { "" }).to_owned() + &"]}".repeat(depth / 2)
            );
            assert_eq!(
                check(&json).is_ok(),
                depth <= MAX_JSON_DEPTH,
                "depth {depth}"
            );
        }
        // Brackets inside strings are no nesting.
        let many = format!("{{\"code\":\"{}\"}}", "{[".repeat(5000));
        assert_eq!(check(&many), Ok(()));
        let e = check(&format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(600),
            "]".repeat(600)
        ));
        assert!(e.is_err_and(|e| e.contains("nested deeper than 512 levels (at offset 516)")));
    }

    #[test]
    fn a_lone_surrogate_escape_in_a_value_or_a_key_is_kept_as_python_writes_it() {
        assert_eq!(check(r#"{"x":"\ud800","y":["\udc00"]}"#), Ok(()));
        assert_eq!(check(r#"{"\ud800":1,"x\udc00":{"\ud83d":2}}"#), Ok(()));
    }

    #[test]
    fn only_one_json_object_is_a_message() {
        for bad in [
            "[1]",
            "1",
            "\"s\"",
            "null",
            "",
            "  ",
            "\u{feff}{}",
            "{} {}",
            "{",
            "{\"a\"}",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["{}", " \n\t{\"a\":1}\r\n", "{\"a\":{\"b\":[1,{}]}}"] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
        assert!(check("[1]").is_err_and(|e| e.contains("not a JSON object")));
    }
}
