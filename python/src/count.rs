//! `Count`: how Python integers become counts, interaction ids and LSNs.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;

/// An argument that counts or numbers messages (`n`, `keep`, `at`, `start`, `stop`,
/// `interaction_id`, `expected_next_id`, `max_messages`, `max_bytes`, `from_id`, an LSN).
///
/// Any `int` (or object with `__index__`) of at least 0. One past `u64::MAX` is taken as
/// `u64::MAX`, which no count, id or LSN reaches: it means "more than any", as a slice's
/// bound may run past a list's end. A negative one is a `ValueError` naming the value: none
/// of these counts from the end. Anything else is pyo3's `TypeError`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Count(pub(crate) u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<u64>() {
            Ok(v) => Ok(Count(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                if obj.lt(0)? {
                    Err(PyValueError::new_err(format!(
                        "expected an integer of at least 0, got {}",
                        obj.to_owned()
                    )))
                } else {
                    Ok(Count(u64::MAX))
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// `Option<Count>` as the `Option<u64>` the library takes.
pub(crate) fn opt(c: Option<Count>) -> Option<u64> {
    c.map(|c| c.0)
}
