//! The native module `convlog._convlog` of the Python package `convlog-store`.
//!
//! It wraps the Rust library's `Store`; the Python package (`python/python/convlog/`) adds
//! the exception classes, the type stubs and the framework adapters (OpenAI Agents SDK,
//! LangChain, Automata).

mod bulk;
mod cache;
mod codec;
mod count;
mod decode;
mod errors;
mod messages;
mod sid;
mod store;
mod subscribe;
mod writes;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// Raises `InvalidSessionId` unless `session` is a valid session id: a `str` of 1 to 256
/// UTF-8 bytes without control characters.
#[pyfunction]
fn validate_session_id(session: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = session.py();
    if session.cast::<PyString>().is_err() {
        let kind = session.get_type().name()?;
        return Err(errors::new_err(
            py,
            "InvalidSessionId",
            format!("invalid session id: a session id is a str, not {kind}"),
            vec![("session", session.clone().unbind())],
        ));
    }
    let s = session.extract::<sid::Sid>()?;
    convlog::validate_session_id(&s).map_err(|e| errors::Fail::Store(e).into_py_err(py))
}

/// A new random master key: 32 bytes from the operating system's generator.
#[pyfunction]
fn generate_key(py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
    let key = convlog::MasterKey::generate().map_err(|e| errors::Fail::Store(e).into_py_err(py))?;
    let hex = key.to_hex();
    let mut raw = zeroize::Zeroizing::new([0u8; convlog::MASTER_KEY_LEN]);
    for (b, pair) in raw.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16).unwrap_or(0) as u8;
        *b = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Ok(PyBytes::new(py, &raw[..]))
}

/// The native half of the `convlog` package.
#[pymodule]
fn _convlog(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<store::Receipt>()?;
    m.add_class::<store::SessionInfo>()?;
    m.add_class::<store::CompactReport>()?;
    m.add_class::<messages::Messages>()?;
    m.add_class::<subscribe::Subscription>()?;
    m.add_class::<subscribe::Event>()?;
    m.add_function(wrap_pyfunction!(validate_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add("MAX_SESSION_ID_BYTES", 256)?;
    Ok(())
}
