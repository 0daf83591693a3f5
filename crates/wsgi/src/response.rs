//! The response side of a WSGI call: `start_response` (PEP 3333, with `exc_info`), the
//! `write()` callable, header validation, CGI framing (`Status: ...` head sent with the first
//! non-empty chunk), `wsgi.file_wrapper`, and the error responses.
//!
//! Writes go through `Response::try_write`; only when the connection's outgoing buffer is full
//! does a write detach from the interpreter to wait in `blocking_write` (the backpressure). The
//! last piece of a response, when it is known to be the last (the one chunk of `return [body]`,
//! the end of a list, an error page), is kept and handed to `Response::finish_with`, so that it
//! can leave with the end of the request.

use bytes::Bytes;
#[cfg(unix)]
use bytes::BytesMut;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::input::{is_too_large, ClientDisconnected};
use fastcgi::{Response, TryWriteError, WriteError};

/// Chunks at least this big are handed to the connection without copying (the `bytes` object is
/// kept alive by the `Bytes`); smaller ones are copied, which costs less than the reference
/// bookkeeping and releases the Python object at once.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// A first chunk up to this size is copied behind the head so that both go out in one write.
const COALESCE_MAX: usize = 16 * 1024;

/// Read size of the file_wrapper fast path (one FastCGI record holds at most 65535 bytes; the
/// connection splits larger writes).
#[cfg(unix)]
const FILE_CHUNK: usize = 64 * 1024;

/// Why a status line or header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("status {0:?} is not \"NNN reason\" (three digits, a space, a reason phrase)")]
    Status(String),
    #[error("status {0:?} contains a character that is not latin-1 or is a control character")]
    StatusChars(String),
    #[error("header name {0:?} is not an HTTP token")]
    Name(String),
    #[error("value of header {name:?} contains CR, LF, another control character or non-latin-1 text: {value:?}")]
    Value { name: String, value: String },
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Latin-1 text without control characters (tab allowed in values).
fn is_field_char(c: char) -> bool {
    (c == '\t' || (' '..='\u{ff}').contains(&c)) && c != '\u{7f}'
}

pub fn validate_status(status: &str) -> Result<(), HeaderError> {
    let b = status.as_bytes();
    if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b' ' {
        return Err(HeaderError::Status(status.to_owned()));
    }
    if !status.chars().all(|c| c != '\t' && is_field_char(c)) {
        return Err(HeaderError::StatusChars(status.to_owned()));
    }
    Ok(())
}

pub fn validate_header(name: &str, value: &str) -> Result<(), HeaderError> {
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(HeaderError::Name(name.to_owned()));
    }
    if !value.chars().all(is_field_char) {
        return Err(HeaderError::Value {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Appends latin-1 text (already validated: every char <= U+00FF) as bytes.
fn push_latin1(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(text.chars().map(|c| c as u8));
    }
}

/// `Status: <status>\r\n<Name>: <value>\r\n...\r\n` (the blank line is added when sent).
fn build_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("start_response: status must be a str"))?
        .to_cow()?;
    validate_status(&status).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if !headers.is_instance_of::<PyList>() && !headers.is_instance_of::<PyTuple>() {
        return Err(PyTypeError::new_err(
            "start_response: headers must be a list of (name, value) tuples",
        ));
    }
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"Status: ");
    push_latin1(&mut head, &status);
    head.extend_from_slice(b"\r\n");
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("start_response: each header must be a (name, value) tuple")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "start_response: each header must be a (name, value) tuple",
            ));
        }
        fn as_str<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, str>> {
            let s = v.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "start_response: header names and values must be str, got {}",
                    v.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            s.to_cow()
        }
        // Borrowed from the str objects (their UTF-8 form): no copy of the name or the value.
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (name, value) = (as_str(&name)?, as_str(&value)?);
        validate_header(&name, &value).map_err(|e| PyValueError::new_err(e.to_string()))?;
        push_latin1(&mut head, &name);
        head.extend_from_slice(b": ");
        push_latin1(&mut head, &value);
        head.extend_from_slice(b"\r\n");
    }
    Ok(head)
}

/// Why sending stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client or the web server went away.
    Gone(WriteError),
}

/// One request's response state; `start_response` itself (a callable object).
#[pyclass(module = "wfcgi")]
pub struct StartResponse {
    response: Option<Response>,
    /// The head given by the latest `start_response` call, without its final blank line.
    head: Option<Vec<u8>>,
    head_sent: bool,
    gone: Option<WriteError>,
    /// The last piece of the response, kept for [`StartResponse::finish`].
    last: Option<Bytes>,
    /// The request's id, for its error pages.
    id: Option<crate::request_id::RequestId>,
    /// The status sent, once the head is (for the access log).
    status: u16,
    /// Bytes handed to the connection, head included, and the head's share.
    sent: u64,
    head_len: u64,
}

impl StartResponse {
    pub fn new(response: Response) -> Self {
        StartResponse {
            response: Some(response),
            head: None,
            head_sent: false,
            gone: None,
            last: None,
            id: None,
            status: 0,
            sent: 0,
            head_len: 0,
        }
    }

    /// The status sent (0 if none was) and the body bytes sent: the access log's figures.
    pub fn status_and_bytes(&self) -> (u16, u64) {
        (self.status, self.sent.saturating_sub(self.head_len))
    }

    /// Notes the head about to go out (`Status: NNN ...`), whole or at the start of `out`.
    fn note_head(&mut self, head: &[u8], head_len: usize) {
        self.status = head
            .get(8..11)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        self.head_len = head_len as u64;
    }

    /// The writer of request `id`'s response: its error pages show the id.
    pub fn for_request(response: Response, id: crate::request_id::RequestId) -> Self {
        StartResponse {
            id: Some(id),
            ..StartResponse::new(response)
        }
    }

    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// Ends the request with what was kept as the last piece; `false` if it had ended already.
    pub fn finish(&mut self, app_status: u32) -> bool {
        let last = self.last.take().unwrap_or_default();
        match self.response.take() {
            Some(response) => {
                response.finish_with(last, app_status);
                true
            }
            None => false,
        }
    }

    /// Writes one piece, detaching only if the connection's buffer is full. `last`: nothing
    /// follows it; it is kept to go out with the end of the request.
    fn write_raw(&mut self, py: Python<'_>, data: Bytes, last: bool) -> Result<(), SendError> {
        if let Some(e) = self.gone {
            return Err(SendError::Gone(e));
        }
        self.sent += data.len() as u64;
        if let Some(kept) = self.last.take() {
            // Something followed after all (cannot happen in the paths that keep a last piece,
            // but order must hold whatever they become): send the kept piece first.
            self.write_raw(py, kept, false)?;
        }
        let Some(response) = self.response.as_mut() else {
            return Err(SendError::Gone(WriteError::ConnectionClosed));
        };
        if last {
            // Kept for finish_with, which drops it for a request that is over; say so now, as
            // a write would (try_write checks the same for every other piece).
            if response.is_aborted() {
                let e = WriteError::Aborted;
                self.gone = Some(e);
                return Err(SendError::Gone(e));
            }
            self.last = Some(data);
            return Ok(());
        }
        let result = match response.try_write(data) {
            Ok(()) => Ok(()),
            Err(TryWriteError::Full(data)) => {
                py.detach(|| crate::pool::waiting_for_client(|| response.blocking_write(data)))
            }
            Err(TryWriteError::Failed(e)) => Err(e),
        };
        result.map_err(|e| {
            self.gone = Some(e);
            SendError::Gone(e)
        })
    }

    /// The head, ended by its blank line, with `body` behind it when small.
    fn take_head(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if self.head_sent {
            return None;
        }
        let mut head = self.head.take()?;
        head.extend_from_slice(b"\r\n");
        let head_len = head.len();
        if body.len() <= COALESCE_MAX {
            head.extend_from_slice(body);
        }
        self.note_head(&head, head_len);
        self.head_sent = true;
        Some(head)
    }

    /// Sends a body chunk (the head first if not yet sent). Empty chunks send nothing.
    pub fn send_chunk(&mut self, py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<()> {
        self.send_chunk_as(py, chunk, false)
    }

    /// [`StartResponse::send_chunk`]; `last`: no other chunk follows and nothing waits before
    /// the response ends.
    pub fn send_chunk_as(
        &mut self,
        py: Python<'_>,
        chunk: &Bound<'_, PyAny>,
        last: bool,
    ) -> PyResult<()> {
        let bytes =
            chunk.cast::<PyBytes>().map_err(|_| {
                PyTypeError::new_err(format!(
                "the response body must be bytes, got {} (encode text, e.g. body.encode('utf-8'))",
                chunk.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
            })?;
        let data = bytes.as_bytes();
        if data.is_empty() {
            return Ok(());
        }
        if self.head.is_none() && !self.head_sent {
            return Err(PyRuntimeError::new_err(
                "the app produced body data before calling start_response",
            ));
        }
        let result = match self.take_head(data) {
            Some(head) if data.len() <= COALESCE_MAX => self.write_raw(py, Bytes::from(head), last),
            Some(head) => self
                .write_raw(py, Bytes::from(head), false)
                .and_then(|()| self.write_raw(py, to_bytes(bytes), last)),
            None => self.write_raw(py, to_bytes(bytes), last),
        };
        result.map_err(|SendError::Gone(e)| {
            ClientDisconnected::new_err(format!("the response could not be sent: {e:?}"))
        })
    }

    /// At the end of a body: sends the head if nothing was sent (an empty body).
    pub fn send_head_if_unsent(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.head_sent {
            return Ok(());
        }
        let Some(head) = self.take_head(b"") else {
            return Err(PyRuntimeError::new_err(
                "the app returned without calling start_response",
            ));
        };
        self.write_raw(py, Bytes::from(head), true)
            .map_err(|SendError::Gone(e)| ClientDisconnected::new_err(format!("{e:?}")))
    }

    pub fn is_gone(&self) -> bool {
        self.gone.is_some() || self.response.as_ref().is_some_and(Response::is_aborted)
    }

    /// Answers with a complete error response, if nothing has been sent yet.
    pub fn send_error(&mut self, py: Python<'_>, status: &str, body: &str) {
        if self.head_sent {
            return;
        }
        self.head = None;
        let id = self.id.as_ref().map(ToString::to_string);
        let page = error_page_for(status, body, id.as_deref());
        let head_len = page.len() - page_body_len(&page) as usize;
        self.note_head(&page, head_len);
        self.head_sent = true;
        let _ = self.write_raw(py, page, true);
    }
}

/// A complete plain-text response: head and body in one piece.
pub fn error_page(status: &str, body: &str) -> Bytes {
    error_page_for(status, body, None)
}

/// [`error_page`] for request `id`: the page ends with it, and `X-Request-Id` carries it, so
/// that a visitor's report leads to the request's lines in the log.
pub fn error_page_for(status: &str, body: &str, id: Option<&str>) -> Bytes {
    let tail = id.map(|id| format!("\nRequest id: {id}\n"));
    let tail = tail.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"Status: ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\n");
    if let Some(id) = id {
        out.extend_from_slice(b"X-Request-Id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice((body.len() + tail.len()).to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(tail.as_bytes());
    Bytes::from(out)
}

/// The body's length in a whole CGI response (an [`error_page`]).
pub(crate) fn page_body_len(page: &[u8]) -> u64 {
    let head = page
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| at + 4);
    (page.len() - head) as u64
}

fn to_bytes(bytes: &Bound<'_, PyBytes>) -> Bytes {
    if bytes.as_bytes().len() >= ZERO_COPY_MIN {
        Bytes::from_owner(PyBackedBytes::from(bytes.clone()))
    } else {
        Bytes::copy_from_slice(bytes.as_bytes())
    }
}

#[pymethods]
impl StartResponse {
    /// PEP 3333 `start_response(status, response_headers, exc_info=None)`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        slf: Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let this = slf.borrow();
            match exc_info {
                // Too late to change the response: re-raise the app's exception.
                Some(info) if this.head_sent => {
                    return Err(PyErr::from_value(info.get_item(1)?));
                }
                Some(_) => {}
                None if this.head.is_some() || this.head_sent => {
                    return Err(PyRuntimeError::new_err(
                        "start_response called a second time without exc_info",
                    ));
                }
                None => {}
            }
        }
        let head = build_head(status, headers)?;
        slf.borrow_mut().head = Some(head);
        Ok(Write {
            target: slf.unbind(),
        })
    }
}

/// The `write()` callable `start_response` returns (PEP 3333's imperative API).
#[pyclass(module = "wfcgi")]
pub struct Write {
    target: Py<StartResponse>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        busy(self.target.bind(py).try_borrow_mut())?.send_chunk(py, data)
    }
}

/// `wsgi.file_wrapper`: iterates a file-like in `blksize` blocks; a regular file is sent from
/// Rust without the interpreter (see [`drive`]).
#[pyclass(module = "wfcgi")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((block.len()? > 0).then_some(block))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }

    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }
}

/// How a request ended, for the caller's `finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The app's response was sent in full.
    Complete,
    /// An error response (500/413) was sent instead of the app's.
    ErrorResponse,
    /// The app failed after the head was sent: the body is cut short.
    Truncated,
    /// The client or web server went away.
    ClientGone,
}

/// Calls the app and sends its response. `close()` is always called on the returned iterable.
pub fn drive(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    environ: &Bound<'_, PyDict>,
    start: &Bound<'_, StartResponse>,
    debug_responses: bool,
) -> Outcome {
    let iterable = match app.call1((environ, start)) {
        Ok(iterable) => iterable,
        Err(err) => return fail(py, start, &err, debug_responses),
    };
    let sent = send_iterable(py, &iterable, start);
    let closed = close_iterable(&iterable);
    let result = sent
        .and(closed)
        .and_then(|()| start.borrow_mut().send_head_if_unsent(py));
    match result {
        Ok(()) => Outcome::Complete,
        Err(err) => fail(py, start, &err, debug_responses),
    }
}

fn close_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // A list or tuple (every `return [body]`) has no close(), and asking would raise and catch
    // an AttributeError, its message formatted (before Python 3.13 there is no lookup that
    // does not), on every such request.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if iterable.hasattr(pyo3::intern!(iterable.py(), "close"))? {
        iterable.call_method0(pyo3::intern!(iterable.py(), "close"))?;
    }
    Ok(())
}

fn send_iterable(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    start: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    #[cfg(unix)]
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if let Some(result) = send_file(py, &wrapper.borrow(), start) {
            return result;
        }
    }
    // A list of one bytes: the common `return [body]`.
    if let Ok(list) = iterable.cast::<PyList>() {
        if list.len() == 1 {
            return busy(start.try_borrow_mut())?.send_chunk_as(py, &list.get_item(0)?, true);
        }
    }
    // The last chunk of an iterator that knows its length (a list's or tuple's; Django's
    // HttpResponse iterates a list) goes out with the end.
    let mut iter = iterable.try_iter()?;
    while let Some(chunk) = iter.next() {
        let chunk = chunk?;
        let last = crate::ffi::length_hint(&iter) == Some(0);
        busy(start.try_borrow_mut())?.send_chunk_as(py, &chunk, last)?;
    }
    Ok(())
}

/// The file_wrapper fast path: a regular file is read (`pread` from its current position) and
/// written without the interpreter. `None`: not a regular file, iterate it instead.
#[cfg(unix)]
fn send_file(
    py: Python<'_>,
    wrapper: &FileWrapper,
    start: &Bound<'_, StartResponse>,
) -> Option<PyResult<()>> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::FromRawFd;

    let filelike = wrapper.filelike.bind(py);
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    let offset: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    // SAFETY: fd is the open descriptor of the app's file object, which stays open (and owned
    // by Python) until close() is called on the wrapper after this function; ManuallyDrop keeps
    // this File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut this = start.borrow_mut();
    if this.head.is_none() && !this.head_sent {
        return Some(Err(PyRuntimeError::new_err(
            "the app returned a file_wrapper before calling start_response",
        )));
    }
    let state = &mut *this;
    let result = py.detach(|| -> Result<(), String> {
        let mut offset = offset;
        loop {
            let mut buf = BytesMut::zeroed(FILE_CHUNK);
            let n = file.read_at(&mut buf, offset).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            offset += n as u64;
            let data = match state.take_head(&[]) {
                Some(mut head) => {
                    head.extend_from_slice(&buf);
                    Bytes::from(head)
                }
                None => buf.freeze(),
            };
            let Some(response) = state.response.as_mut() else {
                return Err("response already finished".to_owned());
            };
            if let Err(e) = crate::pool::waiting_for_client(|| response.blocking_write(data)) {
                state.gone = Some(e);
                return Err(format!("the response could not be sent: {e:?}"));
            }
        }
    });
    Some(result.map_err(|e| match state.gone {
        Some(_) => ClientDisconnected::new_err(e),
        None => pyo3::exceptions::PyOSError::new_err(format!("file_wrapper: {e}")),
    }))
}

/// Logs `err` and, if nothing was sent, answers 500 (413 for a too-large body).
fn fail(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    err: &PyErr,
    debug_responses: bool,
) -> Outcome {
    let _span = crate::log_scope::enter();
    let mut this = start.borrow_mut();
    if this.is_gone() || err.is_instance_of::<ClientDisconnected>(py) {
        tracing::info!("the request ended before the app did (the client went away, or a timeout ended it): {}", err.value(py));
        return Outcome::ClientGone;
    }
    let text = crate::format_exception(py, err);
    if this.head_sent {
        tracing::error!(
            "the app failed after the response head was sent (response cut short):\n{text}"
        );
        return Outcome::Truncated;
    }
    if is_too_large(py, err) {
        tracing::warn!("request body too large: {}", err.value(py));
        this.send_error(py, "413 Payload Too Large", "413 Payload Too Large\n");
        return Outcome::ErrorResponse;
    }
    tracing::error!("the app failed:\n{text}");
    let body = if debug_responses {
        format!("500 Internal Server Error\n\n{text}")
    } else {
        GENERIC_500.to_owned()
    };
    this.send_error(py, "500 Internal Server Error", &body);
    Outcome::ErrorResponse
}

/// What a visitor sees when debug_responses is off: no traceback, a pointer to the log.
pub const GENERIC_500: &str =
    "500 Internal Server Error\n\nThe application failed. The details are in the server's log.\n";

/// The response is being written by another Python thread at this moment (an app calling
/// `write()` from a thread of its own while the server iterates): an error, not a panic.
fn busy<T>(borrow: Result<T, pyo3::pycell::PyBorrowMutError>) -> PyResult<T> {
    borrow.map_err(|_| {
        PyRuntimeError::new_err(
            "the response is being written from another thread at the same time \
             (write() and the response iterable must not be used concurrently)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        for ok in ["200 OK", "404 Not Found", "599 ", "200 Caf\u{e9}"] {
            validate_status(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "200",
            "OK 200",
            "20 OK",
            "2000 OK",
            "200\tOK",
            "200 OK\r\nX: y",
            "200 OK\n",
            "200 \u{2713}",
            "",
        ] {
            assert!(validate_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_names_and_values() {
        for (name, value) in [
            ("Content-Type", "text/html"),
            ("X-Weird_!#$%&'*+.^`|~", ""),
            ("Set-Cookie", "a=b; Path=/"),
            ("X-Tab", "a\tb"),
            ("X-Latin", "caf\u{e9}"),
        ] {
            validate_header(name, value).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        for (name, value) in [
            ("", "x"),
            ("Bad Name", "x"),
            ("Bad:Name", "x"),
            ("X\r\nInjected", "x"),
            ("X-Crlf", "a\r\nSet-Cookie: evil"),
            ("X-Lf", "a\nb"),
            ("X-Nul", "a\0b"),
            ("X-Del", "a\u{7f}"),
            ("X-Uni", "\u{2713}"),
        ] {
            assert!(validate_header(name, value).is_err(), "{name:?}: {value:?}");
        }
    }

    #[test]
    fn error_page_is_complete() {
        let page = error_page("500 Internal Server Error", "oops\n");
        assert_eq!(
            &page[..],
            b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\noops\n"
        );
    }
}
