//! The options of `Store(...)` as Python gives them: durability, permissions, and the
//! master key (`key=` or `key_file=`), each checked into the library's type.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyFloat, PyInt, PyString};

use crate::errors::Fail;

pub(super) fn durability(value: Option<&Bound<'_, PyAny>>) -> PyResult<convlog::Durability> {
    let Some(v) = value else {
        return Ok(convlog::Durability::Buffered);
    };
    if v.is_none() {
        return Ok(convlog::Durability::Buffered);
    }
    if let Ok(s) = v.cast::<PyString>() {
        return match s.to_str()? {
            "buffered" => Ok(convlog::Durability::Buffered),
            "always" => Ok(convlog::Durability::Always),
            other => Err(PyValueError::new_err(format!(
                "durability is \"buffered\", \"always\" or an interval in seconds, not {other:?}"
            ))),
        };
    }
    let is_bool = v.is_instance_of::<pyo3::types::PyBool>();
    if !is_bool && (v.is_instance_of::<PyFloat>() || v.is_instance_of::<PyInt>()) {
        let secs: f64 = v.extract()?;
        if !(secs.is_finite() && secs > 0.0) {
            return Err(PyValueError::new_err(format!(
                "a durability interval is a positive number of seconds, not {secs}"
            )));
        }
        let d =
            Duration::try_from_secs_f64(secs).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if d.is_zero() {
            return Err(PyValueError::new_err(format!(
                "a durability interval of {secs} s is less than a nanosecond, so it would sync \
                 after every write: give durability=\"always\""
            )));
        }
        return Ok(convlog::Durability::Interval(d));
    }
    Err(PyTypeError::new_err(format!(
        "durability is \"buffered\", \"always\" or a float of seconds, not {}",
        v.get_type().name()?
    )))
}

/// The `mode=` of `Store(...)`: a file mode such as `0o640` (directories get `x` where `r`
/// is set), as `Permissions::from_file_mode`; `None`: the default (owner-only).
pub(super) fn permissions(
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<convlog::Permissions>> {
    let Some(v) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let py = v.py();
    if v.is_instance_of::<pyo3::types::PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "mode is a file mode as an int (0o600, 0o640), not {}",
            v.get_type().name()?
        )));
    }
    let mode = v.extract::<i64>().ok().and_then(|m| u32::try_from(m).ok());
    let made = match mode {
        Some(m) => convlog::Permissions::from_file_mode(m),
        None => Err(convlog::Error::InvalidOption {
            option: "permissions",
            reason: format!("{v} is not a file mode: it must lie within 0666 and include 0600"),
        }),
    };
    made.map(Some).map_err(|e| Fail::Store(e).into_py_err(py))
}

/// An `InvalidMasterKey` for a `key=` argument (no key file: `path` is None); `what` says
/// what was given, never its bytes.
pub(super) fn bad_key(py: Python<'_>, option: &str, what: String) -> PyErr {
    let reason = "a master key is 32 bytes, or 64 hex digits as a str";
    crate::errors::new_err(
        py,
        "InvalidMasterKey",
        format!("invalid master key ({option}=): {reason}, not {what}"),
        vec![
            ("path", py.None()),
            ("reason", PyString::new(py, reason).into_any().unbind()),
        ],
    )
}

/// The master key of `key=` (32 `bytes`/`bytearray`, or 64 hex digits as a `str`) or
/// `key_file=` (a path: read as `MasterKey::read_file` does), at most one of them; `None`
/// for neither. `names` are the two options' names, for messages.
pub(super) fn master_key(
    py: Python<'_>,
    key: Option<&Bound<'_, PyAny>>,
    key_file: Option<&Bound<'_, PyAny>>,
    names: (&str, &str),
) -> PyResult<Option<convlog::MasterKey>> {
    let key = key.filter(|v| !v.is_none());
    let key_file = key_file.filter(|v| !v.is_none());
    match (key, key_file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(PyValueError::new_err(format!(
            "give {} or {}, not both",
            names.0, names.1
        ))),
        (Some(k), None) => {
            const LEN: usize = convlog::MASTER_KEY_LEN;
            if let Ok(s) = k.cast::<PyString>() {
                let Ok(text) = s.to_str().map(str::as_bytes) else {
                    return Err(bad_key(
                        py,
                        names.0,
                        "a str that holds a lone surrogate".into(),
                    ));
                };
                if text.len() != 2 * LEN || !text.iter().all(u8::is_ascii_hexdigit) {
                    let what = if text.len() == 2 * LEN {
                        "a str of 64 characters that are not all hex digits".to_owned()
                    } else {
                        format!("a str of {} characters", s.len()?)
                    };
                    return Err(bad_key(py, names.0, what));
                }
                // 64 hex digits: what `parse` reads as such (never as raw bytes).
                let parsed = convlog::MasterKey::parse(text, std::path::Path::new(names.0))
                    .map_err(|e| Fail::Store(e).into_py_err(py))?;
                return Ok(Some(parsed));
            }
            let copied = if let Ok(b) = k.cast::<PyBytes>() {
                zeroize::Zeroizing::new(b.as_bytes().to_vec())
            } else if let Ok(b) = k.cast::<PyByteArray>() {
                zeroize::Zeroizing::new(b.to_vec())
            } else {
                return Err(PyTypeError::new_err(format!(
                    "{} is 32 bytes (bytes) or 64 hex digits (str), not {}",
                    names.0,
                    k.get_type().name()?
                )));
            };
            if copied.len() != LEN {
                return Err(bad_key(py, names.0, format!("{} bytes", copied.len())));
            }
            let mut raw = zeroize::Zeroizing::new([0u8; LEN]);
            raw.copy_from_slice(&copied);
            Ok(Some(convlog::MasterKey::from_bytes(*raw)))
        }
        (None, Some(f)) => {
            if f.is_instance_of::<PyBytes>() || f.is_instance_of::<PyByteArray>() {
                // A path as bytes would be mistaken for the key itself too easily.
                return Err(PyTypeError::new_err(format!(
                    "{} is a path (str or os.PathLike); the key itself goes in {}",
                    names.1, names.0
                )));
            }
            let path: PathBuf = f.extract().map_err(|_| {
                let kind = f
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                PyTypeError::new_err(format!(
                    "{} is a path (str or os.PathLike), not {kind}",
                    names.1
                ))
            })?;
            py.detach(|| convlog::MasterKey::read_file(&path))
                .map(Some)
                .map_err(|e| Fail::Store(e).into_py_err(py))
        }
    }
}
