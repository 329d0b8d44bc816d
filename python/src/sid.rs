//! `Sid`: how a Python `str` becomes a session id argument.

use std::ops::Deref;

use pyo3::exceptions::PyUnicodeEncodeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use crate::errors;

/// A session id argument: a `str` that is valid Unicode, borrowed from Python (no copy).
///
/// A `str` with a lone surrogate (`"\ud800"`) has no UTF-8 form, so no session can have it:
/// it is `InvalidSessionId`, as any other id no session can have is, rather than the
/// `UnicodeEncodeError` of a plain `&str` argument. Whether the id is otherwise valid is the
/// library's check, made by each method. Anything but a `str` is pyo3's `TypeError`.
pub(crate) struct Sid(PyBackedStr);

impl Deref for Sid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Sid {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        match obj.extract::<PyBackedStr>() {
            Ok(s) => Ok(Sid(s)),
            Err(e) if e.is_instance_of::<PyUnicodeEncodeError>(py) => Err(errors::new_err(
                py,
                "InvalidSessionId",
                "invalid session id: it holds a lone surrogate, which no UTF-8 text can".into(),
                vec![("session", obj.to_owned().unbind())],
            )),
            Err(e) => Err(e),
        }
    }
}
