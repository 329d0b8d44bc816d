//! Stored JSON straight into Python objects, with serde_json, for the JSON that path takes
//! exactly as `json.loads` would (everything but integers past 2**53 that do not fit 64
//! bits, negative zero, lone surrogate escapes and nesting deeper than 128, which the caller
//! leaves to `json.loads`).
//!
//! A [`Decoder`] decodes many messages in a row and shares, across them, what it can: one
//! `str` for each key name (as `json.loads` makes for one document) and for each short
//! string value seen before ("user", "function_call", ...: strs are immutable, so sharing
//! one is invisible), and one stack of array elements, so that arrays cost no allocation
//! of their own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::codec;

/// Strings of at most this many bytes are looked up among those made before.
const SHORT: usize = 24;
/// The most strings remembered (keys and short values each).
const REMEMBERED: usize = 4096;

/// FNV-1a: short strings hash faster than with SipHash, and these maps see no adversary
/// worth a keyed hash (they live for one read, and stop growing at [`REMEMBERED`]).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Strs<'py> = RefCell<HashMap<Box<str>, Bound<'py, PyString>, BuildHasherDefault<Fnv>>>;

/// What the decoding of many messages shares.
struct Shared<'py> {
    keys: Strs<'py>,
    values: Strs<'py>,
    /// The elements of the arrays being decoded, innermost last.
    stack: RefCell<Vec<Bound<'py, PyAny>>>,
}

/// Decodes stored messages, one after another (see the module doc).
pub(crate) struct Decoder<'py> {
    py: Python<'py>,
    shared: Shared<'py>,
}

impl<'py> Decoder<'py> {
    pub(crate) fn new(py: Python<'py>) -> Decoder<'py> {
        Decoder {
            py,
            shared: Shared {
                keys: RefCell::default(),
                values: RefCell::default(),
                stack: RefCell::default(),
            },
        }
    }

    fn seed(&self) -> Seed<'_, 'py> {
        Seed {
            py: self.py,
            shared: &self.shared,
            key: false,
        }
    }

    /// One stored message as fresh Python objects.
    pub(crate) fn decode(&self, json: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut de = serde_json::Deserializer::from_slice(json);
        match self.seed().deserialize(&mut de) {
            Ok(v) if de.end().is_ok() => Ok(v),
            _ => self.slow(json),
        }
    }

    /// The messages of `text`, stored messages one after another (`ends`: where each ends),
    /// appended to `out`. Decoding them in a row from one text reuses serde_json's buffer
    /// for strings with escapes, and its UTF-8 was checked already (by the caller, as a
    /// `str`).
    pub(crate) fn decode_run(
        &self,
        text: &str,
        ends: &[usize],
        out: &mut Vec<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let mut start = 0;
        let mut de = serde_json::Deserializer::from_str(text);
        for &end in ends {
            // Each stored message is one JSON object, so a value read ends at its end.
            match self.seed().deserialize(&mut de) {
                Ok(v) => out.push(v),
                Err(_) => {
                    // Past a failure the deserializer is lost: go on after this message.
                    out.push(self.slow(&text.as_bytes()[start..end])?);
                    de = serde_json::Deserializer::from_str(&text[end..]);
                }
            }
            start = end;
        }
        Ok(())
    }

    fn slow(&self, json: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.shared.stack.borrow_mut().clear();
        codec::loads(self.py)?.call1((codec::text(self.py, json)?,))
    }
}

/// `v` as a Python `str`: the one made before for the same text, if remembered.
fn remembered<'py>(py: Python<'py>, strs: &Strs<'py>, v: &str) -> Bound<'py, PyString> {
    let mut strs = strs.borrow_mut();
    if let Some(s) = strs.get(v) {
        return s.clone();
    }
    let s = PyString::new(py, v);
    if strs.len() < REMEMBERED {
        strs.insert(v.into(), s.clone());
    }
    s
}

/// Builds the Python value of one JSON value, or (`key`) the `str` of one object key.
#[derive(Clone, Copy)]
struct Seed<'a, 'py> {
    py: Python<'py>,
    shared: &'a Shared<'py>,
    key: bool,
}

fn py_fail<E: de::Error>(e: PyErr) -> E {
    E::custom(e)
}

impl<'de, 'py> DeserializeSeed<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.key {
            d.deserialize_str(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de, 'py> Visitor<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.key {
            "an object key"
        } else {
            "a JSON value"
        })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(PyInt::new(self.py, v).into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PyInt::new(self.py, v).into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json reads an integer too long for 64 bits as a float: leave those (and any
        // integral float past 2**53, which may have been one) to `json.loads`.
        if v.fract() == 0.0 && v.abs() >= 9_007_199_254_740_992.0 {
            return Err(E::custom("integer past 64 bits"));
        }
        // It reads `-0` (an int for `json.loads`: 0) as the float -0.0, as it reads `-0.0`:
        // both left to `json.loads`, which tells them apart.
        if v == 0.0 && v.is_sign_negative() {
            return Err(E::custom("negative zero"));
        }
        Ok(PyFloat::new(self.py, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.key {
            return Ok(remembered(self.py, &self.shared.keys, v).into_any());
        }
        if v.len() <= SHORT {
            return Ok(remembered(self.py, &self.shared.values, v).into_any());
        }
        Ok(PyString::new(self.py, v).into_any())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let base = self.shared.stack.borrow().len();
        while let Some(item) = seq.next_element_seed(self)? {
            self.shared.stack.borrow_mut().push(item);
        }
        let mut stack = self.shared.stack.borrow_mut();
        let list = PyList::new(self.py, stack.drain(base..)).map_err(py_fail)?;
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        let key_seed = Seed { key: true, ..self };
        while let Some(key) = map.next_key_seed(key_seed)? {
            let value = map.next_value_seed(self)?;
            dict.set_item(key, value).map_err(py_fail)?;
        }
        Ok(dict.into_any())
    }
}
