//! `Count`: how Python integers become counts, interaction ids and LSNs.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;

/// An argument that counts or numbers messages (`n`, `keep`, `at`, `start`, `stop`,
/// `interaction_id`, `max_messages`, `max_bytes`, `from_id`, an LSN).
///
/// Any `int` (or object with `__index__`) of at least 0. One past `u64::MAX` is taken as
/// `u64::MAX`, which no count, id or LSN reaches: it means "more than any", as a slice's
/// bound may run past a list's end. A negative one is a `ValueError` quoting the value: none
/// of these counts from the end. Anything else is pyo3's `TypeError`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Count(pub(crate) u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match as_u64(obj)? {
            Ok(v) => Ok(Count(v)),
            Err(Beyond::Negative) => Err(out_of_range(obj, "of at least 0")),
            Err(Beyond::TooBig) => Ok(Count(u64::MAX)),
        }
    }
}

/// An argument compared for equality with a count or an id (`expected_next_id`,
/// `expected_version`): any `int` from 0 to `2**64 - 1`. Past that it is a `ValueError`
/// rather than taken as `u64::MAX`, which would then be reported as what was expected.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exact(pub(crate) u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Exact {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match as_u64(obj)? {
            Ok(v) => Ok(Exact(v)),
            Err(Beyond::Negative) => Err(out_of_range(obj, "of at least 0")),
            Err(Beyond::TooBig) => Err(out_of_range(obj, "below 2**64 (no session reaches it)")),
        }
    }
}

/// Which side of a `u64`'s range an integer lies past.
enum Beyond {
    Negative,
    TooBig,
}

/// `obj` as a `u64`, or which side of its range it lies past; anything but an integer (or
/// an object with `__index__`) is pyo3's `TypeError`.
fn as_u64(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Result<u64, Beyond>> {
    match obj.extract::<u64>() {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            let int = obj
                .py()
                .import("operator")?
                .getattr("index")?
                .call1((obj.to_owned(),))?;
            Ok(Err(if int.lt(0)? {
                Beyond::Negative
            } else {
                Beyond::TooBig
            }))
        }
        Err(e) => Err(e),
    }
}

/// The `ValueError` of an integer argument outside `bound`.
fn out_of_range(obj: Borrowed<'_, '_, PyAny>, bound: &str) -> PyErr {
    PyValueError::new_err(format!(
        "expected an integer {bound}, got {}",
        obj.to_owned()
    ))
}

/// `Option<Count>` as the `Option<u64>` the library takes.
pub(crate) fn opt(c: Option<Count>) -> Option<u64> {
    c.map(|c| c.0)
}
