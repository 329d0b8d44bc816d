//! Messages in and out: a dict, a JSON `str` or `bytes` in; dicts or JSON text out.
//!
//! Encoding uses CPython's own `json` module (its C accelerator), with the GIL held; the
//! store call itself runs with the GIL released. Decoding builds the Python objects straight
//! from the stored bytes with serde_json (several messages sharing one table of key strings),
//! and falls back to `json.loads` for the JSON that path does not
//! take exactly: integers past 2**53 that do not fit 64 bits, lone surrogate escapes, nesting
//! deeper than 128. So a message reads back as `json.loads` would read it.

use pyo3::exceptions::{PyRecursionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};

use crate::decode::Decoder;
use crate::errors;

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DUMPS_ASCII: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static MAPPING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn codec_fn<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        PyModule::import(py, "convlog._codec")?
            .getattr(name)
            .map(Bound::unbind)
    })
    .map(|f| f.bind(py))
}

pub(crate) fn loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOADS
        .get_or_try_init(py, || {
            PyModule::import(py, "json")?
                .getattr("loads")
                .map(Bound::unbind)
        })
        .map(|f| f.bind(py))
}

fn is_mapping(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    let mapping = MAPPING.get_or_try_init(py, || {
        PyModule::import(py, "collections.abc")?
            .getattr("Mapping")
            .map(Bound::unbind)
    })?;
    obj.is_instance(mapping.bind(py))
}

/// `message` as JSON text: `bytes` and `str` as given, a dict (or other mapping) encoded.
/// The result is a `bytes` or `str` object; [`bytes_of`] borrows its bytes.
pub(crate) fn encode<'py>(
    session: &str,
    message: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = message.py();
    if message.is_instance_of::<PyBytes>() || message.is_instance_of::<PyString>() {
        return Ok(message.clone());
    }
    let dict = if message.is_instance_of::<PyDict>() {
        message.clone()
    } else if is_mapping(message)? {
        PyDict::from_sequence(&message.call_method0("items")?)?.into_any()
    } else {
        return Err(PyTypeError::new_err(format!(
            "a message is a dict, a JSON str or bytes, not {}",
            message.get_type().name()?
        )));
    };
    match codec_fn(py, &DUMPS, "dumps")?.call1((&dict,)) {
        // A str with lone surrogates has no UTF-8 form: spell them as JSON escapes instead.
        Ok(text) if text.cast::<PyString>().is_ok_and(|t| t.to_str().is_err()) => {
            codec_fn(py, &DUMPS_ASCII, "dumps_ascii")?.call1((&dict,))
        }
        Ok(text) => Ok(text),
        // (A RecursionError: a dict nested past the interpreter's limit, far deeper than
        // the 512 levels a message may hold.)
        Err(e)
            if e.is_instance_of::<PyValueError>(py) || e.is_instance_of::<PyRecursionError>(py) =>
        {
            let err = errors::new_err(
                py,
                "InvalidMessage",
                format!("invalid message for session {session:?}: {}", e.value(py)),
                vec![("session", PyString::new(py, session).into_any().unbind())],
            );
            err.set_cause(py, Some(e));
            Err(err)
        }
        Err(e) => Err(e),
    }
}

/// Every message of `messages` (a list or other iterable, not one message), [`encode`]d;
/// `what` names the method for the error.
pub(crate) fn encode_all<'py>(
    session: &str,
    messages: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    // One message where a batch belongs: iterating it would give its characters, bytes
    // or keys.
    if messages.is_instance_of::<PyString>()
        || messages.is_instance_of::<PyBytes>()
        || messages.is_instance_of::<PyByteArray>()
        || messages.is_instance_of::<PyDict>()
        || is_mapping(messages)?
    {
        return Err(PyTypeError::new_err(format!(
            "{what} takes a list (or other iterable) of messages"
        )));
    }
    messages.try_iter()?.map(|m| encode(session, &m?)).collect()
}

/// The bytes of what [`encode`] returned.
pub(crate) fn bytes_of<'a>(encoded: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = encoded.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    Ok(encoded.cast::<PyString>()?.to_str()?.as_bytes())
}

/// The bytes of each of what [`encode_all`] returned.
pub(crate) fn all_bytes<'a>(encoded: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<&'a [u8]>> {
    encoded.iter().map(bytes_of).collect()
}

/// Stored JSON as text. Stored messages were checked to be JSON, hence UTF-8.
pub(crate) fn text<'py>(py: Python<'py>, json: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let s = std::str::from_utf8(json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyString::new(py, s))
}

/// One stored message as fresh Python objects.
pub(crate) fn decode<'py>(py: Python<'py>, json: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    Decoder::new(py).decode(json)
}

/// Above this many bytes of JSON, a decode pauses the cyclic garbage collector.
pub(crate) const PAUSE_GC_ABOVE: usize = 64 << 10;

static GC: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Runs `f` (which decodes messages, with the GIL held throughout) with the cyclic garbage
/// collector paused when `large`.
///
/// The objects a decode builds are trees (JSON has no cycles), so a collection could free
/// nothing of them, yet their allocations would trigger collections that walk every live
/// object, over and over (2 to 3 times the decode's own time for 50 k messages). The GIL is
/// held throughout, so no other thread sees the pause.
pub(crate) fn gc_paused<T, E: From<PyErr>>(
    py: Python<'_>,
    large: bool,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if !large {
        return f();
    }
    let gc = GC
        .get_or_try_init(py, || PyModule::import(py, "gc").map(Bound::unbind))?
        .bind(py);
    let was_enabled: bool = gc.call_method0("isenabled")?.extract()?;
    if was_enabled {
        gc.call_method0("disable")?;
    }
    let out = f();
    if was_enabled {
        gc.call_method0("enable")?;
    }
    out
}

/// Stored messages as a list of fresh Python objects (see [`Decoder`], [`gc_paused`]).
pub(crate) fn decode_all<'py, B: AsRef<[u8]>>(
    py: Python<'py>,
    messages: &[B],
) -> PyResult<Bound<'py, PyList>> {
    let size: usize = messages.iter().map(|m| m.as_ref().len()).sum();
    gc_paused(py, size > PAUSE_GC_ABOVE, || {
        let decoder = Decoder::new(py);
        let items = messages
            .iter()
            .map(|m| decoder.decode(m.as_ref()))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    })
}
