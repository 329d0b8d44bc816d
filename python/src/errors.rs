//! convlog's Rust errors as the Python exceptions of `convlog._errors`.

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// A failure inside a store call, made into a Python exception once the GIL is held again.
pub(crate) enum Fail {
    /// The `Store` object was closed.
    Closed,
    /// The library said no.
    Store(convlog::Error),
    /// Python code or object construction failed, with the GIL held again inside the call.
    Py(PyErr),
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Fail {
        Fail::Py(e)
    }
}

impl From<convlog::Error> for Fail {
    fn from(e: convlog::Error) -> Fail {
        Fail::Store(e)
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `convlog._errors`.
pub(crate) fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || {
        PyModule::import(py, "convlog._errors").map(Bound::unbind)
    })?;
    module.bind(py).getattr(name)
}

/// An exception of class `name` with `message`, and `attrs` set on it.
pub(crate) fn new_err(
    py: Python<'_>,
    name: &str,
    message: String,
    attrs: Vec<(&'static str, Py<PyAny>)>,
) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let exc = class(py, name)?.call1((message,))?;
        for (k, v) in attrs {
            exc.setattr(k, v)?;
        }
        Ok(PyErr::from_value(exc))
    })();
    made.unwrap_or_else(|e| e)
}

impl Fail {
    /// The Python exception for this failure.
    pub(crate) fn into_py_err(self, py: Python<'_>) -> PyErr {
        match self {
            Fail::Closed => new_err(py, "Closed", "the Store is closed".into(), Vec::new()),
            Fail::Store(e) => from_store(py, e),
            Fail::Py(e) => e,
        }
    }
}

fn obj<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

/// The Rust `Error` as a Python exception carrying its message, and its fields as attributes.
fn from_store(py: Python<'_>, e: convlog::Error) -> PyErr {
    use convlog::Error as E;
    let message = match &e {
        // The library's message names its own option and the CLI's flags.
        E::KeyRequired { path } => format!(
            "store {} is encrypted: open it with its master key (key= or key_file=)",
            path.display()
        ),
        _ => e.to_string(),
    };
    let (name, attrs): (&str, Vec<(&'static str, Py<PyAny>)>) = match &e {
        E::Conflict {
            session,
            expected,
            actual,
        } => (
            "Conflict",
            vec![
                ("session", obj(py, session.as_str())),
                ("expected", obj(py, *expected)),
                ("actual", obj(py, *actual)),
            ],
        ),
        // Same count, another last message: a conflict too, for Python callers.
        E::Changed { session, .. } => ("Conflict", vec![("session", obj(py, session.as_str()))]),
        E::Locked { path } => ("Locked", vec![("path", obj(py, path.as_path()))]),
        E::AlreadyOpen { path } => ("AlreadyOpen", vec![("path", obj(py, path.as_path()))]),
        E::Corrupt {
            segment, offset, ..
        } => (
            "Corrupt",
            vec![
                ("segment", obj(py, segment.file_name())),
                ("offset", obj(py, *offset)),
            ],
        ),
        E::UnknownRecordKind {
            segment, offset, ..
        } => (
            "UnsupportedFormat",
            vec![
                ("segment", obj(py, segment.file_name())),
                ("offset", obj(py, *offset)),
            ],
        ),
        E::UnsupportedVersion { path, .. } => {
            ("UnsupportedFormat", vec![("path", obj(py, path.as_path()))])
        }
        E::InvalidSessionId { session, .. } => (
            "InvalidSessionId",
            vec![("session", obj(py, session.as_str()))],
        ),
        E::SessionExists { session } => (
            "SessionExists",
            vec![("session", obj(py, session.as_str()))],
        ),
        E::InvalidKey { session, .. } => {
            ("InvalidKey", vec![("session", obj(py, session.as_str()))])
        }
        // Python's class for both: metadata is checked as a message is.
        E::InvalidMessage { session, .. } | E::InvalidMetadata { session, .. } => (
            "InvalidMessage",
            vec![("session", obj(py, session.as_str()))],
        ),
        E::RecordTooLarge { session, len, max } => (
            "RecordTooLarge",
            vec![
                ("session", obj(py, session.as_str())),
                ("size", obj(py, *len)),
                ("limit", obj(py, *max)),
            ],
        ),
        E::ReadOnly { path } => ("ReadOnly", vec![("path", obj(py, path.as_path()))]),
        E::Poisoned { path } => ("Poisoned", vec![("path", obj(py, path.as_path()))]),
        E::NotAStore { path, .. } => ("NotAStore", vec![("path", obj(py, path.as_path()))]),
        E::InvalidOption { option, .. } => ("InvalidOption", vec![("option", obj(py, *option))]),
        E::Compacting { path } => ("Compacting", vec![("path", obj(py, path.as_path()))]),
        E::CompactionMismatch { path, session } => (
            "CompactionMismatch",
            vec![
                ("path", obj(py, path.as_path())),
                ("session", obj(py, session.as_str())),
            ],
        ),
        E::KeyRequired { path } => ("KeyRequired", vec![("path", obj(py, path.as_path()))]),
        E::WrongKey { path } => ("WrongKey", vec![("path", obj(py, path.as_path()))]),
        E::NotEncrypted { path } => ("NotEncrypted", vec![("path", obj(py, path.as_path()))]),
        E::KeyDestroyed {
            segment,
            offset,
            key,
        } => (
            "KeyDestroyed",
            vec![
                ("segment", obj(py, segment.file_name())),
                ("offset", obj(py, *offset)),
                // The data key's id (not secret): `key` is the master key's name elsewhere.
                ("key_id", obj(py, *key)),
            ],
        ),
        E::InvalidMasterKey { path, reason } => (
            "InvalidMasterKey",
            vec![
                ("path", obj(py, path.as_path())),
                ("reason", obj(py, *reason)),
            ],
        ),
        // The store's `KEYS` file is damaged: bytes on disk, as for a segment.
        E::KeyFile { path, offset, .. } => (
            "Corrupt",
            vec![
                ("segment", py.None()),
                ("offset", obj(py, *offset)),
                ("path", obj(py, path.as_path())),
            ],
        ),
        E::Io { path, source, .. } => (
            "IoError",
            vec![
                // Not `filename` nor `strerror`: with them set, `OSError.__str__` would
                // replace the library's message (which says what was being done).
                ("path", obj(py, path.as_path())),
                ("errno", obj(py, source.raw_os_error())),
            ],
        ),
        _ => ("Error", Vec::new()),
    };
    new_err(py, name, message, attrs)
}
