//! `validate_message` (the check every raw append makes) on arbitrary bytes, against a
//! reference model: `serde_json` reading the text into `IgnoredAny`, the text an object,
//! nested at most `MAX_JSON_DEPTH` levels. The check must never accept what the model
//! refuses (a stored message every reader must decode) nor refuse what it accepts, and never
//! panic. The check's fast path (`store/json_scan.rs`) answers most inputs by itself; its
//! refusals go to the model's own reader for their message, so a refusal that disagrees
//! shows here as the check accepting, which the model then calls right.
#![no_main]

use convlog::{MAX_JSON_DEPTH, validate_message};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fuzz_target!(|data: &[u8]| {
    let verdict = validate_message(data).is_ok();
    assert_eq!(
        verdict,
        reference(data),
        "validate_message disagrees on {:?}",
        String::from_utf8_lossy(data)
    );
});

/// What a stored message must be, said the slow and obvious way.
fn reference(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
        && serde_json::from_str::<IgnoredAny>(text).is_ok()
        && depth(text) <= MAX_JSON_DEPTH
}

/// The deepest nesting of valid JSON `text`: brackets outside strings.
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
