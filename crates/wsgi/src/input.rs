//! `wsgi.input`: the request body, pulled from the FastCGI stream as the app reads it.
//!
//! Nothing is read ahead of the app. Reading stops at CONTENT_LENGTH (PEP 3333: an app must not
//! read past it; here it gets `b""`). A `read()` of a body of unknown length larger than the
//! spool threshold is assembled in an anonymous temporary file, not in a growing buffer, so the
//! body sits in memory once (as the `bytes` returned) rather than twice.
//! Waiting for more body is the one place here that detaches from the interpreter.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use std::time::{Duration, Instant};

use fastcgi::{Body, BodyError, Expiry, TryChunkError};

/// Where body chunks come from: a request's [`Body`], or (tests) a list of chunks, so that reads
/// across chunk boundaries can be tested without a connection.
pub(crate) trait BodySource: Send + Sync {
    fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError>;
    /// Waits for the next chunk, until `deadline` if there is one (then
    /// `BodyError::BodyTimedOut`).
    fn blocking_chunk(&mut self, deadline: Option<Instant>) -> Result<Option<Bytes>, BodyError>;
    /// The body stopped arriving: the connection is to be closed.
    fn stalled(&mut self) {}
}

/// A request's body, and the handle that closes its connection when the body stops arriving.
pub(crate) struct RequestBody {
    pub(crate) body: Body,
    pub(crate) expiry: Expiry,
}

impl BodySource for RequestBody {
    fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError> {
        self.body.try_chunk()
    }
    fn blocking_chunk(&mut self, deadline: Option<Instant>) -> Result<Option<Bytes>, BodyError> {
        match deadline {
            Some(deadline) => self.body.blocking_chunk_until(deadline),
            None => self.body.blocking_chunk(),
        }
    }
    fn stalled(&mut self) {
        self.expiry.cut_for_body();
    }
}

impl BodySource for Body {
    fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError> {
        Body::try_chunk(self)
    }
    fn blocking_chunk(&mut self, deadline: Option<Instant>) -> Result<Option<Bytes>, BodyError> {
        match deadline {
            Some(deadline) => self.blocking_chunk_until(deadline),
            None => Body::blocking_chunk(self),
        }
    }
}

/// The body after the request ended: nothing more.
struct Released;

impl BodySource for Released {
    fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError> {
        Err(TryChunkError::Failed(BodyError::ConnectionClosed))
    }
    fn blocking_chunk(&mut self, _: Option<Instant>) -> Result<Option<Bytes>, BodyError> {
        Err(BodyError::ConnectionClosed)
    }
}

create_exception!(
    wfcgi,
    ClientDisconnected,
    PyOSError,
    "The client went away (or the web server aborted the request) while the body was read."
);
create_exception!(
    wfcgi,
    RequestBodyTooLarge,
    PyValueError,
    "The request body is larger than max_body_bytes; unhandled, it becomes a 413 response."
);

/// Why the body stream stopped for good; every later read raises the same error again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Disconnected(BodyError),
    TooLarge(u64),
    /// A read waited this long for body that did not come (`body_timeout`).
    Stalled(Duration),
}

impl Failure {
    fn to_err(self) -> PyErr {
        match self {
            Failure::Stalled(limit) => PyTimeoutError::new_err(format!(
                "the request body stopped arriving: a wsgi.input read waited {} s for it \
                 (WFCGI_BODY_TIMEOUT_SECS); the connection is closed",
                limit.as_secs()
            )),
            Failure::Disconnected(e) => {
                ClientDisconnected::new_err(format!("request body unavailable: {e:?}"))
            }
            Failure::TooLarge(limit) => RequestBodyTooLarge::new_err(format!(
                "request body larger than max_body_bytes ({limit} bytes)"
            )),
        }
    }
}

/// Limits the input enforces, from the bridge config.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    pub spool_threshold: usize,
    pub max_body_bytes: Option<u64>,
    /// The longest one read (`read`, `readline`, a line of iteration) waits for the body it
    /// asked for; `None`: no limit.
    pub body_timeout: Option<Duration>,
}

#[pyclass(module = "wfcgi", name = "Input")]
pub struct Input {
    body: Box<dyn BodySource>,
    /// Received but not yet returned to the app.
    buffered: Bytes,
    /// Bytes CONTENT_LENGTH still allows us to pull (`None`: no CONTENT_LENGTH, read to the end
    /// of the stream).
    remaining: Option<u64>,
    /// Bytes pulled from the stream so far (checked against `max_body_bytes`).
    received: u64,
    ended: bool,
    failure: Option<Failure>,
    limits: InputLimits,
    /// When the current read call gives up waiting (`body_timeout` from its start).
    deadline: Option<Instant>,
}

impl Input {
    /// The body of the request that `expiry` belongs to.
    pub fn new(
        body: Body,
        expiry: Expiry,
        content_length: Option<u64>,
        limits: InputLimits,
    ) -> Self {
        Self::from_source(
            Box::new(RequestBody { body, expiry }),
            content_length,
            limits,
        )
    }

    pub(crate) fn from_source(
        body: Box<dyn BodySource>,
        content_length: Option<u64>,
        limits: InputLimits,
    ) -> Self {
        Input {
            body,
            buffered: Bytes::new(),
            remaining: content_length,
            received: 0,
            ended: content_length == Some(0),
            failure: None,
            limits,
            deadline: None,
        }
    }

    /// A read call begins: its wait for body is limited from now.
    fn start_call(&mut self) {
        self.deadline = self.limits.body_timeout.map(|t| Instant::now() + t);
    }

    /// Lets go of the request's body once the response is done: an app that keeps `environ`
    /// alive must not keep the connection buffering a body nobody reads (dropping the `Body`
    /// tells the connection to discard the rest).
    pub fn release(&mut self) {
        self.body = Box::new(Released);
        self.buffered = Bytes::new();
        if self.failure.is_none() && !self.ended {
            self.failure = Some(Failure::Disconnected(BodyError::ConnectionClosed));
        }
    }

    /// The next chunk of body: what is buffered, else one from the stream (waiting detached
    /// only when none is ready). `None` at the end.
    fn next_chunk(&mut self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        if !self.buffered.is_empty() {
            return Ok(Some(std::mem::take(&mut self.buffered)));
        }
        if let Some(failure) = self.failure {
            return Err(failure.to_err());
        }
        if self.ended {
            return Ok(None);
        }
        let pulled = match self.body.try_chunk() {
            Ok(chunk) => Ok(chunk),
            Err(TryChunkError::Failed(e)) => Err(e),
            Err(TryChunkError::Empty) => {
                let body = &mut *self.body;
                let deadline = self.deadline;
                py.detach(|| crate::pool::waiting_for_client(|| body.blocking_chunk(deadline)))
            }
        };
        let chunk = match pulled {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                self.ended = true;
                return Ok(None);
            }
            Err(BodyError::BodyTimedOut) => {
                let failure = Failure::Stalled(self.limits.body_timeout.unwrap_or_default());
                self.body.stalled();
                self.failure = Some(failure);
                return Err(failure.to_err());
            }
            Err(e) => {
                self.failure = Some(Failure::Disconnected(e));
                return Err(Failure::Disconnected(e).to_err());
            }
        };
        let chunk = match &mut self.remaining {
            Some(remaining) => {
                let take = chunk
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.ended = true;
                }
                chunk.slice(..take)
            }
            None => chunk,
        };
        self.received += chunk.len() as u64;
        if let Some(limit) = self.limits.max_body_bytes {
            if self.received > limit {
                self.failure = Some(Failure::TooLarge(limit));
                return Err(Failure::TooLarge(limit).to_err());
            }
        }
        Ok(Some(chunk))
    }

    /// Up to `n` bytes, fewer only at the end.
    fn read_exact_or_end(&mut self, py: Python<'_>, n: usize) -> PyResult<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(self.hint_len()));
        while out.len() < n {
            let Some(mut chunk) = self.next_chunk(py)? else {
                break;
            };
            let want = n - out.len();
            if chunk.len() > want {
                self.buffered = chunk.split_off(want);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A guess of what is left, for pre-sizing buffers.
    fn hint_len(&self) -> usize {
        let left = self.remaining.unwrap_or(64 * 1024);
        self.buffered.len() + usize::try_from(left).unwrap_or(usize::MAX).min(1 << 20)
    }

    /// How many bytes a read of up to `n` (`None`: all) will return, when CONTENT_LENGTH says
    /// and it is small enough to allocate before the bytes arrive. A larger declared length is
    /// not trusted with an up-front allocation (a peer could declare gigabytes and send
    /// slowly): such reads grow with the data that actually arrives.
    fn known_len(&self, n: Option<usize>) -> Option<usize> {
        let left = self
            .buffered
            .len()
            .saturating_add(usize::try_from(self.remaining?).unwrap_or(usize::MAX));
        Some(n.map_or(left, |n| n.min(left))).filter(|&len| len <= self.limits.spool_threshold)
    }

    /// The next `total` bytes, filled straight into the `bytes` object the app gets (no
    /// intermediate buffer); fewer if the stream ends first (a truncated request).
    fn read_known<'py>(&mut self, py: Python<'py>, total: usize) -> PyResult<Bound<'py, PyBytes>> {
        crate::ffi::bytes_filled(py, total, |buf| {
            while buf.room() > 0 {
                let Some(mut chunk) = self.next_chunk(py)? else {
                    break;
                };
                if chunk.len() > buf.room() {
                    self.buffered = chunk.split_off(buf.room());
                }
                buf.push(&chunk);
            }
            Ok(())
        })
    }

    /// Everything left, as one `bytes`.
    fn read_all<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(total) = self.known_len(None) {
            return self.read_known(py, total);
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        let mut spool: Option<File> = None;
        while let Some(chunk) = self.next_chunk(py)? {
            total += chunk.len();
            if let Some(file) = spool.as_mut() {
                file.write_all(&chunk).map_err(spool_error)?;
            } else if total > self.limits.spool_threshold {
                let mut file = spool_file().map_err(spool_error)?;
                for held in chunks.drain(..) {
                    file.write_all(&held).map_err(spool_error)?;
                }
                file.write_all(&chunk).map_err(spool_error)?;
                spool = Some(file);
            } else {
                chunks.push(chunk);
            }
        }
        match spool {
            None if chunks.len() == 1 => Ok(PyBytes::new(py, &chunks[0])),
            None => crate::ffi::bytes_filled(py, total, |buf| {
                chunks.iter().for_each(|chunk| buf.push(chunk));
                Ok(())
            }),
            Some(mut file) => PyBytes::new_with(py, total, |buf| {
                file.seek(SeekFrom::Start(0)).map_err(spool_error)?;
                py.detach(|| file.read_exact(buf)).map_err(spool_error)
            }),
        }
    }

    fn readline_bytes(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let room = limit.map_or(usize::MAX, |l| l - line.len());
            if room == 0 {
                break;
            }
            let Some(mut chunk) = self.next_chunk(py)? else {
                break;
            };
            let end = chunk
                .iter()
                .position(|&b| b == b'\n')
                .map_or(chunk.len(), |i| i + 1)
                .min(room);
            if end < chunk.len() {
                self.buffered = chunk.split_off(end);
            }
            let done = chunk.last() == Some(&b'\n');
            line.extend_from_slice(&chunk);
            if done {
                break;
            }
        }
        Ok(line)
    }
}

fn spool_error(e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!(
        "spooling the request body to a temporary file failed: {e}"
    ))
}

/// An anonymous temporary file: removed from the directory at once (Unix) or deleted when
/// closed (Windows), so nothing is left behind if the process dies.
fn spool_file() -> std::io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = std::env::temp_dir().join(format!(
        "wfcgi-body-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_FLAG_DELETE_ON_CLOSE: u32 = 0x0400_0000;
        options.custom_flags(FILE_FLAG_DELETE_ON_CLOSE);
    }
    let file = options.open(&name)?;
    #[cfg(not(windows))]
    std::fs::remove_file(&name)?;
    Ok(file)
}

/// `None`, or a negative size, means "no limit" (the io convention).
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.start_call();
        match size_arg(size) {
            None => self.read_all(py),
            Some(n) if n <= self.buffered.len() => {
                let chunk = self.buffered.split_to(n);
                Ok(PyBytes::new(py, &chunk))
            }
            Some(n) => match self.known_len(Some(n)) {
                Some(total) => self.read_known(py, total),
                None => {
                    let data = self.read_exact_or_end(py, n)?;
                    Ok(PyBytes::new(py, &data))
                }
            },
        }
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.start_call();
        let line = self.readline_bytes(py, size_arg(size))?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.start_call();
        let hint = size_arg(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline_bytes(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.start_call();
        let line = self.readline_bytes(py, None)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}

/// Whether `err` is the body-too-large error (the response is then 413).
pub fn is_too_large(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<RequestBodyTooLarge>(py)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// A body arriving in the given pieces (an empty piece is returned as-is, like an empty
    /// STDIN record would not be, to test that empty chunks are skipped).
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl BodySource for Chunks {
        fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError> {
            Ok(self.0.pop_front())
        }
        fn blocking_chunk(&mut self, _: Option<Instant>) -> Result<Option<Bytes>, BodyError> {
            Ok(self.0.pop_front())
        }
    }

    #[test]
    fn full_body_reads_and_release_stops_reading() {
        let inp = input(&[b"a\nb"], Some(3), LIMITS);
        assert_eq!(
            run(inp, "out = [inp.readline(), inp.read(), inp.read()]"),
            r"[b'a\n', b'b', b'']"
        );
        let mut inp = input(&[b"abc"], None, LIMITS);
        inp.release();
        assert!(run(inp, "out = inp.read()").contains("ClientDisconnected"));
    }

    const LIMITS: InputLimits = InputLimits {
        spool_threshold: 8,
        max_body_bytes: None,
        body_timeout: None,
    };

    fn input(chunks: &[&[u8]], content_length: Option<u64>, limits: InputLimits) -> Input {
        let chunks = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        Input::from_source(Box::new(Chunks(chunks)), content_length, limits)
    }

    /// Runs `code` (statements; `inp` is the input, the result goes into `out`).
    fn run(inp: Input, code: &str) -> String {
        testing::python(|py| {
            let locals = pyo3::types::PyDict::new(py);
            locals
                .set_item("inp", Bound::new(py, inp).unwrap())
                .unwrap();
            let code = std::ffi::CString::new(code).unwrap();
            if let Err(e) = py.run(&code, None, Some(&locals)) {
                return format!("raised {}", crate::format_exception(py, &e));
            }
            locals
                .get_item("out")
                .unwrap()
                .unwrap()
                .repr()
                .unwrap()
                .to_string()
        })
    }

    const BODY: &[&[u8]] = &[b"line one\nli", b"ne two\n", b"", b"three"];

    #[test]
    fn read_semantics() {
        let table: &[(&str, Option<u64>, &str)] = &[
            ("out = inp.read()", None, r"b'line one\nline two\nthree'"),
            ("out = inp.read(-1)", None, r"b'line one\nline two\nthree'"),
            (
                "out = inp.read(None)",
                None,
                r"b'line one\nline two\nthree'",
            ),
            (
                "out = [inp.read(4), inp.read(8), inp.read(100), inp.read(5)]",
                None,
                r"[b'line', b' one\nlin', b'e two\nthree', b'']",
            ),
            ("out = inp.read(0)", None, "b''"),
            // CONTENT_LENGTH caps what can be read: past it is b"".
            (
                "out = [inp.read(), inp.read()]",
                Some(12),
                r"[b'line one\nlin', b'']",
            ),
            (
                "out = [inp.read(100), inp.read(1)]",
                Some(5),
                r"[b'line ', b'']",
            ),
            // Read straight into the result, across pieces, up to CONTENT_LENGTH.
            (
                "out = [inp.read(4), inp.read(7), inp.read(8)]",
                Some(12),
                r"[b'line', b' one\nli', b'n']",
            ),
            ("out = inp.readline()", None, r"b'line one\n'"),
            (
                "out = [inp.readline(), inp.readline(), inp.readline(), inp.readline()]",
                None,
                r"[b'line one\n', b'line two\n', b'three', b'']",
            ),
            (
                "out = [inp.readline(3), inp.readline(100)]",
                None,
                r"[b'lin', b'e one\n']",
            ),
            ("out = inp.readline(-1)", None, r"b'line one\n'"),
            (
                "out = inp.readlines()",
                None,
                r"[b'line one\n', b'line two\n', b'three']",
            ),
            ("out = inp.readlines(3)", None, r"[b'line one\n']"),
            (
                "out = list(inp)",
                None,
                r"[b'line one\n', b'line two\n', b'three']",
            ),
            ("out = [l for l in inp]", Some(9), r"[b'line one\n']"),
            (
                "out = [inp.read(2), inp.readline(), inp.read()]",
                None,
                r"[b'li', b'ne one\n', b'line two\nthree']",
            ),
        ];
        for (code, content_length, want) in table {
            let got = run(input(BODY, *content_length, LIMITS), code);
            assert_eq!(&got, want, "{code} (CONTENT_LENGTH {content_length:?})");
        }
        // A body that ends before its CONTENT_LENGTH: what came, then the end.
        let truncated = input(&[b"abc"], Some(6), LIMITS);
        assert_eq!(
            run(truncated, "out = [inp.read(5), inp.read()]"),
            r"[b'abc', b'']"
        );
    }

    #[test]
    fn read_all_spools_a_large_body_of_unknown_length() {
        let chunks: Vec<Vec<u8>> = (0..50u8).map(|i| vec![b'a' + i % 26; 1000]).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let expected: Vec<u8> = chunks.concat();
        let limits = InputLimits {
            spool_threshold: 4096,
            max_body_bytes: None,
            body_timeout: None,
        };
        let got = testing::python(|py| {
            let mut inp = input(&refs, None, limits);
            inp.read_all(py).unwrap().as_bytes().to_vec()
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn body_larger_than_max_raises_too_large() {
        let limits = InputLimits {
            spool_threshold: 1 << 20,
            max_body_bytes: Some(10),
            body_timeout: None,
        };
        let got = run(input(BODY, None, limits), "out = inp.read()");
        assert!(got.contains("RequestBodyTooLarge"), "{got}");
        // The limit counts what arrived: the first chunk (11 bytes) already exceeds 10.
        let got = run(input(BODY, None, limits), "out = inp.read(3)");
        assert!(got.contains("RequestBodyTooLarge"), "{got}");
        let exact = InputLimits {
            spool_threshold: 1 << 20,
            max_body_bytes: Some(11),
            body_timeout: None,
        };
        let code = "out = [inp.read(11)]\ntry:\n    inp.read(1)\nexcept Exception as e:\n    out.append(type(e).__name__)";
        let got = run(input(BODY, None, exact), code);
        assert_eq!(got, r"[b'line one\nli', 'RequestBodyTooLarge']");
    }
}
