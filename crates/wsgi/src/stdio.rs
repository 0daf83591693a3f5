//! Python's `sys.stdout`, `sys.stderr` and `wsgi.errors` as line-buffered text streams whose
//! lines go to the log (tracing targets `python.stdout`, `python.stderr`, `wsgi.errors`).
//!
//! Under IIS the real handles are invalid, and behind any server `print()` must never reach
//! the FastCGI stream, so the interpreter's streams are replaced at start-up.

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyString;

/// A line longer than this is logged in pieces, so that a stream that never writes a newline
/// cannot grow without bound.
const MAX_PENDING: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    WsgiErrors,
}

#[pyclass(module = "wfcgi")]
pub struct LogWriter {
    stream: Stream,
    pending: String,
}

impl LogWriter {
    pub fn new(stream: Stream) -> Self {
        LogWriter {
            stream,
            pending: String::new(),
        }
    }

    fn emit(&self, line: &str) {
        let _span = crate::log_scope::enter();
        match self.stream {
            Stream::Stdout => tracing::info!(target: "python.stdout", "{line}"),
            Stream::Stderr => tracing::warn!(target: "python.stderr", "{line}"),
            Stream::WsgiErrors => tracing::warn!(target: "wsgi.errors", "{line}"),
        }
    }

    fn take_lines(&mut self) {
        while let Some(end) = self.pending.find('\n') {
            let line = self.pending[..end].trim_end_matches('\r');
            self.emit(line);
            self.pending.drain(..=end);
        }
        if self.pending.len() > MAX_PENDING {
            let pending = std::mem::take(&mut self.pending);
            self.emit(&pending);
        }
    }
}

#[pymethods]
impl LogWriter {
    fn write(&mut self, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = text.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be str, not {}",
                text.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let text = text.to_cow()?;
        self.pending.push_str(&text);
        self.take_lines();
        Ok(text.chars().count())
    }

    fn writelines(&mut self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.emit(&pending);
        }
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    fn seekable(&self) -> bool {
        false
    }

    fn fileno(&self) -> PyResult<i32> {
        Err(PyOSError::new_err(
            "wfcgi's log stream has no file descriptor",
        ))
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    #[getter]
    fn errors(&self) -> &'static str {
        "strict"
    }

    #[getter]
    fn line_buffering(&self) -> bool {
        true
    }
}

/// Replaces `sys.stdout` and `sys.stderr`.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let current = sys.getattr("stdout")?;
    if current.cast::<LogWriter>().is_ok() {
        return Ok(());
    }
    sys.setattr("stdout", Bound::new(py, LogWriter::new(Stream::Stdout))?)?;
    sys.setattr("stderr", Bound::new(py, LogWriter::new(Stream::Stderr))?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_partial_lines_kept() {
        let mut w = LogWriter::new(Stream::Stdout);
        w.pending.push_str("one\r\ntwo\nthr");
        w.take_lines();
        assert_eq!(w.pending, "thr");
        w.flush();
        assert_eq!(w.pending, "");
        w.pending = "x".repeat(MAX_PENDING + 1);
        w.take_lines();
        assert!(w.pending.is_empty());
    }

    #[test]
    fn sys_stdout_is_replaced() {
        crate::testing::python(|py| {
            let sys = py.import("sys").unwrap();
            let out = sys.getattr("stdout").unwrap();
            assert!(out.cast::<LogWriter>().is_ok());
            assert!(sys.getattr("stderr").unwrap().cast::<LogWriter>().is_ok());
            let n: usize = out
                .call_method1("write", ("héllo\n",))
                .unwrap()
                .extract()
                .unwrap();
            assert_eq!(n, 6);
            assert!(out.call_method1("write", (b"x".as_slice(),)).is_err());
        });
    }
}
