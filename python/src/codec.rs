//! Messages in and out: a dict, a JSON `str` or `bytes` in; dicts or JSON text out.
//!
//! Encoding uses CPython's own `json` module (its C accelerator), with the GIL held; the
//! store call itself runs with the GIL released. Decoding builds the Python objects straight
//! from the stored bytes with serde_json (several messages sharing one table of key strings),
//! and falls back to `json.loads` for the JSON that path does not
//! take exactly: integers past 2**53 that do not fit 64 bits, lone surrogate escapes, nesting
//! deeper than 128. So a message reads back as `json.loads` would read it.

use std::cell::RefCell;
use std::collections::HashMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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

fn loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
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
        Err(e) if e.is_instance_of::<PyValueError>(py) => {
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
    if messages.is_instance_of::<PyString>() || messages.is_instance_of::<PyDict>() {
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

/// Decodes stored messages, one after another, making one key string for each key name
/// across them all (as `json.loads` of their array would).
pub(crate) struct Decoder<'py> {
    py: Python<'py>,
    keys: Keys<'py>,
}

impl<'py> Decoder<'py> {
    pub(crate) fn new(py: Python<'py>) -> Decoder<'py> {
        Decoder {
            py,
            keys: RefCell::new(HashMap::new()),
        }
    }

    /// One stored message as fresh Python objects.
    pub(crate) fn decode(&self, json: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut de = serde_json::Deserializer::from_slice(json);
        if let Ok(v) = Seed(self.py, &self.keys).deserialize(&mut de)
            && de.end().is_ok()
        {
            return Ok(v);
        }
        loads(self.py)?.call1((text(self.py, json)?,))
    }
}

/// The key strings made so far by one decode: objects that repeat keys (every message has
/// a "role") share one `str` for each, as with `json.loads`.
type Keys<'py> = RefCell<HashMap<Box<str>, Bound<'py, PyString>>>;

/// Builds the Python value of one JSON value.
#[derive(Clone, Copy)]
struct Seed<'a, 'py>(Python<'py>, &'a Keys<'py>);

/// Builds the Python `str` of one object key.
#[derive(Clone, Copy)]
struct KeySeed<'a, 'py>(Python<'py>, &'a Keys<'py>);

impl<'de, 'py> DeserializeSeed<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut keys = self.1.borrow_mut();
        if let Some(k) = keys.get(v) {
            return Ok(k.clone().into_any());
        }
        let k = PyString::new(self.0, v);
        if keys.len() < 4096 {
            keys.insert(v.into(), k.clone());
        }
        Ok(k.into_any())
    }
}

fn py_fail<E: de::Error>(e: PyErr) -> E {
    E::custom(e)
}

impl<'de, 'py> DeserializeSeed<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(PyInt::new(self.0, v).into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PyInt::new(self.0, v).into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json reads an integer too long for 64 bits as a float: leave those (and any
        // integral float past 2**53, which may have been one) to `json.loads`.
        if v.fract() == 0.0 && v.abs() >= 9_007_199_254_740_992.0 {
            return Err(E::custom("integer past 64 bits"));
        }
        Ok(PyFloat::new(self.0, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, v).into_any())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(PyList::new(self.0, items).map_err(py_fail)?.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(key) = map.next_key_seed(KeySeed(self.0, self.1))? {
            let value = map.next_value_seed(self)?;
            dict.set_item(key, value).map_err(py_fail)?;
        }
        Ok(dict.into_any())
    }
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
