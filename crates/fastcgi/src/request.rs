//! What a [`Handler`](crate::Handler) is given: a [`Request`] with its [`Params`], its body as a
//! [`Body`] stream and a [`Response`] writer.
//!
//! Body and response are usable from async code and from plain threads (the WSGI bridge's
//! Python threads): each has an async method, a `blocking_` twin and a `try_` form that never
//! waits, so a caller holding a lock (the GIL) can try first and release it only to wait.
//!
//! Backpressure: a body holds at most `ServerConfig::body_buffer_records` records beyond what the
//! handler has read, and the connection stops reading its socket while that is full. Responses
//! draw on a per-connection byte budget (`ServerConfig::response_buffer_bytes`) that is returned
//! as the connection task takes the data to send, so a slow reader holds memory flat.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};

use crate::output::{self, Lent};
use crate::params::Params;
use crate::protocol::{RecordType, Role};

/// State one request's handles share with the connection task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    flags: AtomicU8,
}

impl Shared {
    pub(crate) const ABORTED: u8 = 1;
    pub(crate) const CLOSED: u8 = 2;
    pub(crate) const STDIN_DONE: u8 = 4;
    /// The handler wrote (or tried to write) response bytes: a timeout can no longer answer.
    const RESPONDED: u8 = 8;
    /// Ended by its [`Expiry`]: the handler's later output is dropped, its end not sent.
    const TIMED_OUT: u8 = 16;
    /// The handler ended the request: its [`Expiry`] must send nothing.
    const ENDED: u8 = 32;

    pub(crate) fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::Release);
    }

    fn get(&self) -> u8 {
        self.flags.load(Ordering::Acquire)
    }

    /// The web server no longer wants this request's output. (A timed-out request's output
    /// is the timeout's answer: it is stopped at its source, `Response`.)
    pub(crate) fn is_failed(&self) -> bool {
        self.get() & (Self::ABORTED | Self::CLOSED) != 0
    }

    fn failure(&self) -> Option<Failure> {
        let f = self.get();
        if f & Self::ABORTED != 0 {
            Some(Failure::Aborted)
        } else if f & Self::CLOSED != 0 {
            Some(Failure::ConnectionClosed)
        } else if f & Self::TIMED_OUT != 0 {
            Some(Failure::TimedOut)
        } else {
            None
        }
    }

    /// Marks `flag`; the flags as they were.
    fn mark(&self, flag: u8) -> u8 {
        self.flags.fetch_or(flag, Ordering::AcqRel)
    }
}

/// Why a request can no longer be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The web server sent `FCGI_ABORT_REQUEST` (its client went away).
    #[error("the web server aborted the request")]
    Aborted,
    /// The connection to the web server is gone.
    #[error("the connection to the web server closed")]
    ConnectionClosed,
    /// The request ran past its time limit and was ended without the handler
    /// ([`Expiry::expire`]).
    #[error("the request ran past its time limit and was ended")]
    TimedOut,
    /// No body arrived before the deadline of a read ([`Body::blocking_chunk_until`]).
    #[error("the request body stopped arriving")]
    BodyTimedOut,
}

pub type BodyError = Failure;
pub type WriteError = Failure;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryChunkError {
    #[error("no body data is available yet")]
    Empty,
    #[error(transparent)]
    Failed(Failure),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryWriteError {
    /// The connection's output budget is spent: wait (`write`/`blocking_write`) instead.
    #[error("the connection's response buffer is full")]
    Full(Bytes),
    #[error(transparent)]
    Failed(Failure),
}

/// A message from a request's handles to its connection task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Stdout {
        id: u16,
        data: Bytes,
        permits: u32,
    },
    Stderr {
        id: u16,
        data: Bytes,
        permits: u32,
    },
    /// The request wrote STDERR straight to the transport (it runs inline): its stream must
    /// be closed at the end.
    StderrUsed {
        id: u16,
    },
    End {
        id: u16,
        app_status: u32,
    },
    /// Close the connection: a timed-out request whose response had begun (the web server
    /// then sees the response cut short rather than complete), or a body that stopped arriving.
    Abort {
        id: u16,
        why: Cut,
    },
}

/// Why a request's connection is closed from outside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It ran past its time limit after its response had begun.
    RequestTimeout,
    /// Its body stopped arriving.
    BodyTimeout,
}

/// A handle on a request that its handler does not own: ends it from outside when it runs
/// too long ([`Response::expiry`]).
#[derive(Debug, Clone)]
pub struct Expiry {
    id: u16,
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
    /// The connection's output, when the request runs inline on its thread.
    lent: Option<Arc<Lent>>,
}

/// What [`Expiry::expire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing had been written: the client got the page given.
    Answered,
    /// The response had begun: the connection is closed, the response cut short. (Inline:
    /// the connection cannot be closed while its thread runs the handler; see
    /// [`Expiry::holds_connection`].)
    Cut,
    /// The handler ended the request first, or it was expired already: nothing done.
    Over,
}

impl Expiry {
    /// Ends the request now, whatever its handler is doing: `page` (a whole CGI response,
    /// headers and body) is its response if nothing was written yet; otherwise the connection
    /// closes. The handler's later writes fail with [`Failure::TimedOut`] and its end is not
    /// sent.
    pub fn expire(&self, page: Bytes) -> Expired {
        let mut flags = self.shared.get();
        loop {
            if flags & (Shared::ENDED | Shared::TIMED_OUT) != 0 {
                return Expired::Over;
            }
            let answer = flags & Shared::RESPONDED == 0;
            let new = flags | Shared::TIMED_OUT | Shared::RESPONDED;
            match self.shared.flags.compare_exchange(
                flags,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if answer => {
                    let id = self.id;
                    if let Some(lent) = &self.lent {
                        // The connection's thread runs the handler: write on the transport.
                        let _ = lent.write(RecordType::Stdout, id, page, true);
                        let _ = lent.write_end(id, 1);
                        return Expired::Answered;
                    }
                    let _ = self.tx.send(Outgoing::Stdout {
                        id,
                        data: page,
                        permits: 0,
                    });
                    let _ = self.tx.send(Outgoing::End { id, app_status: 1 });
                    return Expired::Answered;
                }
                Ok(_) => {
                    let _ = self.tx.send(Outgoing::Abort {
                        id: self.id,
                        why: Cut::RequestTimeout,
                    });
                    return Expired::Cut;
                }
                Err(now) => flags = now,
            }
        }
    }

    /// The request runs inline on its connection's thread, which its handler holds until it
    /// returns: after an expiry, the connection can take no further request (and cannot be
    /// closed) until then. Its owner should end the process, which closes it.
    pub fn holds_connection(&self) -> bool {
        self.lent.is_some()
    }

    /// Closes the request's connection because its body stopped arriving, unless it has
    /// ended. The handler's later writes fail (there is no one to read them).
    pub fn cut_for_body(&self) {
        if self.lent.is_some() {
            // An inline request has its whole body: it never waits for more.
            return;
        }
        if self.shared.mark(Shared::TIMED_OUT) & (Shared::ENDED | Shared::TIMED_OUT) != 0 {
            return;
        }
        let _ = self.tx.send(Outgoing::Abort {
            id: self.id,
            why: Cut::BodyTimeout,
        });
    }
}

/// One FastCGI request, handed to [`Handler::handle`](crate::Handler::handle) once its params
/// are complete. Its body may still be arriving.
#[derive(Debug)]
pub struct Request {
    pub(crate) id: u16,
    pub(crate) role: Role,
    pub(crate) keep_conn: bool,
    pub(crate) params: Params,
    pub(crate) body: Body,
    pub(crate) response: Response,
}

impl Request {
    pub fn id(&self) -> u16 {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// `FCGI_KEEP_CONN` was set: the web server reuses the connection.
    pub fn keep_conn(&self) -> bool {
        self.keep_conn
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// A handle that can end this request from another thread ([`Response::expiry`]).
    pub fn expiry(&self) -> Expiry {
        self.response.expiry()
    }

    /// The web server aborted the request, or its connection is gone: there is no one to answer.
    pub fn is_aborted(&self) -> bool {
        self.response.is_aborted()
    }
    pub fn into_parts(self) -> (Params, Body, Response) {
        (self.params, self.body, self.response)
    }
}

/// The request body (`FCGI_STDIN`), read as it arrives.
#[derive(Debug)]
pub struct Body {
    /// Records that arrived before the request was handed over.
    buffered: VecDeque<Bytes>,
    /// `None` once everything is in `buffered` (or the stream has ended).
    rx: Option<mpsc::Receiver<Bytes>>,
    shared: Arc<Shared>,
}

impl Body {
    pub(crate) fn new(
        buffered: VecDeque<Bytes>,
        rx: Option<mpsc::Receiver<Bytes>>,
        shared: Arc<Shared>,
    ) -> Self {
        Body {
            buffered,
            rx,
            shared,
        }
    }

    /// A complete body held in memory (tests, benches, tools).
    pub fn full(data: Bytes) -> Body {
        let mut buffered = VecDeque::new();
        if !data.is_empty() {
            buffered.push_back(data);
        }
        Body::new(buffered, None, Arc::new(Shared::default()))
    }

    /// The end of the stream was reached (or nothing more can come).
    fn ended(&mut self) -> Result<Option<Bytes>, BodyError> {
        let flags = self.shared.get();
        self.rx = None;
        if flags & Shared::STDIN_DONE != 0 && flags & Shared::ABORTED == 0 {
            Ok(None)
        } else {
            Err(self.shared.failure().unwrap_or(Failure::ConnectionClosed))
        }
    }

    /// The next piece of the body; `Ok(None)` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        if let Some(b) = self.buffered.pop_front() {
            return Ok(Some(b));
        }
        let Some(rx) = &mut self.rx else {
            return Ok(None);
        };
        match rx.recv().await {
            Some(b) => Ok(Some(b)),
            None => self.ended(),
        }
    }

    /// [`Body::chunk`] from a thread that is not running an async runtime.
    pub fn blocking_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        block_on(self.chunk())
    }

    /// [`Body::blocking_chunk`], waiting no later than `deadline`: past it,
    /// `Failure::BodyTimedOut` (the body may still arrive; a later call may get it).
    pub fn blocking_chunk_until(&mut self, deadline: Instant) -> Result<Option<Bytes>, BodyError> {
        block_on_until(self.chunk(), Some(deadline)).unwrap_or(Err(Failure::BodyTimedOut))
    }

    /// The next piece if one is here already; `TryChunkError::Empty` if it would have to wait.
    pub fn try_chunk(&mut self) -> Result<Option<Bytes>, TryChunkError> {
        if let Some(b) = self.buffered.pop_front() {
            return Ok(Some(b));
        }
        let Some(rx) = &mut self.rx else {
            return Ok(None);
        };
        match rx.try_recv() {
            Ok(b) => Ok(Some(b)),
            Err(mpsc::error::TryRecvError::Empty) => Err(TryChunkError::Empty),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.ended().map_err(TryChunkError::Failed)
            }
        }
    }
}

/// Writes a request's response as `FCGI_STDOUT` (and `FCGI_STDERR`) records and ends it.
///
/// One way to write (`write`, with its `blocking_` and `try_` forms) and one way to end
/// ([`Response::finish`], optionally with the last piece of the response): where the bytes go
/// (the connection's queue, or straight to the transport from the calling thread while the
/// request runs inline) is the server's business. Writes of any size are accepted: they are
/// framed into records of at most 65535 bytes without copying large ones. Dropping a
/// `Response` without finishing it ends the request with app status 1.
#[derive(Debug)]
pub struct Response {
    id: u16,
    tx: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
    /// The most one write may take from `budget`; a larger write takes this much.
    max_permits: u32,
    shared: Arc<Shared>,
    finished: bool,
    /// Set while the request runs inline: the connection's output, lent to this thread.
    lent: Option<Arc<Lent>>,
    /// STDERR was written through `lent` and the driver told so.
    stderr_noted: bool,
}

impl Response {
    pub(crate) fn new(
        id: u16,
        tx: mpsc::UnboundedSender<Outgoing>,
        budget: Arc<Semaphore>,
        max_permits: u32,
        shared: Arc<Shared>,
    ) -> Self {
        Response {
            id,
            tx,
            budget,
            max_permits,
            shared,
            finished: false,
            lent: None,
            stderr_noted: false,
        }
    }

    pub(crate) fn with_lent(mut self, lent: Arc<Lent>) -> Self {
        self.lent = Some(lent);
        self
    }

    /// Writes through the lent output when this response has it (an inline request):
    /// `Ok(None)` when done, `Ok(Some(data))` to go on through the connection's queue.
    fn try_lent(
        &mut self,
        stderr: bool,
        data: Bytes,
        wait: bool,
    ) -> Result<Option<Bytes>, TryWriteError> {
        let Some(lent) = &self.lent else {
            return Ok(Some(data));
        };
        let ty = if stderr {
            RecordType::Stderr
        } else {
            RecordType::Stdout
        };
        match lent.write(ty, self.id, data, wait) {
            output::Outcome::Done => {
                if stderr && !self.stderr_noted {
                    self.stderr_noted = true;
                    let _ = self.tx.send(Outgoing::StderrUsed { id: self.id });
                }
                Ok(None)
            }
            output::Outcome::WouldBlock(data) => Err(TryWriteError::Full(data)),
            output::Outcome::TakenBack(data) => {
                self.lent = None;
                Ok(Some(data))
            }
            output::Outcome::Failed(e) => {
                tracing::debug!(error = %e, "writing the response failed");
                self.shared.set(Shared::CLOSED);
                Err(TryWriteError::Failed(Failure::ConnectionClosed))
            }
        }
    }

    /// A writer whose output is captured in memory rather than sent (tests, the in-process
    /// dispatch bench).
    pub fn for_test(id: u16) -> (Response, ResponseCapture) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let response = Response::new(id, tx, budget, u32::MAX, Arc::new(Shared::default()));
        let capture = ResponseCapture {
            rx,
            stdout: Vec::new(),
            stderr: Vec::new(),
            app_status: None,
            cut: false,
        };
        (response, capture)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    /// A handle that can end this request from another thread when it runs too long.
    pub fn expiry(&self) -> Expiry {
        Expiry {
            id: self.id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            lent: self.lent.clone(),
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.shared.failure().is_some() || self.tx.is_closed()
    }

    /// Before response bytes go out: from here on a timeout cannot answer in their place;
    /// fails if one already has.
    fn claim(&self, stderr: bool) -> Result<(), Failure> {
        if !stderr && self.shared.mark(Shared::RESPONDED) & Shared::TIMED_OUT != 0 {
            return Err(Failure::TimedOut);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), Failure> {
        match self.shared.failure() {
            Some(f) => Err(f),
            None if self.tx.is_closed() => Err(Failure::ConnectionClosed),
            None => Ok(()),
        }
    }

    fn permits_for(&self, data: &Bytes) -> u32 {
        u32::try_from(data.len())
            .unwrap_or(u32::MAX)
            .min(self.max_permits)
    }

    fn send(&self, stderr: bool, data: Bytes, permits: u32) -> Result<(), Failure> {
        let id = self.id;
        let msg = if stderr {
            Outgoing::Stderr { id, data, permits }
        } else {
            Outgoing::Stdout { id, data, permits }
        };
        self.tx.send(msg).map_err(|_| Failure::ConnectionClosed)
    }

    async fn write_to(&mut self, stderr: bool, data: Bytes) -> Result<(), WriteError> {
        self.check()?;
        if data.is_empty() {
            return Ok(());
        }
        self.claim(stderr)?;
        // An inline request's write waits for the transport right here (its thread may block).
        let data = match self.try_lent(stderr, data, true) {
            Ok(None) => return Ok(()),
            Ok(Some(data)) => data,
            Err(TryWriteError::Failed(f)) => return Err(f),
            Err(TryWriteError::Full(_)) => unreachable!("a waiting lent write is never Full"),
        };
        let permits = self.permits_for(&data);
        match self.budget.acquire_many(permits).await {
            Ok(p) => p.forget(),
            Err(_) => return Err(Failure::ConnectionClosed),
        }
        self.send(stderr, data, permits)
    }

    fn try_write_to(&mut self, stderr: bool, data: Bytes) -> Result<(), TryWriteError> {
        self.check().map_err(TryWriteError::Failed)?;
        if data.is_empty() {
            return Ok(());
        }
        self.claim(stderr).map_err(TryWriteError::Failed)?;
        let Some(data) = self.try_lent(stderr, data, false)? else {
            return Ok(());
        };
        let permits = self.permits_for(&data);
        match self.budget.try_acquire_many(permits) {
            Ok(p) => p.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TryWriteError::Full(data)),
            Err(TryAcquireError::Closed) => {
                return Err(TryWriteError::Failed(Failure::ConnectionClosed))
            }
        }
        self.send(stderr, data, permits)
            .map_err(TryWriteError::Failed)
    }

    /// Sends response bytes (`FCGI_STDOUT`), waiting while the connection's buffer is full.
    pub async fn write(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.write_to(false, data).await
    }

    /// [`Response::write`] from a thread that is not running an async runtime.
    pub fn blocking_write(&mut self, data: Bytes) -> Result<(), WriteError> {
        block_on(self.write_to(false, data))
    }

    /// [`Response::write`] if it need not wait; else `TryWriteError::Full` gives the data back.
    pub fn try_write(&mut self, data: Bytes) -> Result<(), TryWriteError> {
        self.try_write_to(false, data)
    }

    /// Sends `FCGI_STDERR` bytes (IIS shows them in its error page by default).
    pub async fn write_stderr(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.write_to(true, data).await
    }

    pub fn blocking_write_stderr(&mut self, data: Bytes) -> Result<(), WriteError> {
        block_on(self.write_to(true, data))
    }

    /// Ends the request: the streams close and `FCGI_END_REQUEST` follows what was written.
    /// Never waits.
    pub fn finish(self, app_status: u32) {
        self.finish_with(Bytes::new(), app_status);
    }

    /// Writes `last` and ends the request, never waiting: `last` and the end go out together,
    /// in one send where the transport allows (the whole of a `return [body]` response and its
    /// END_REQUEST in one piece). `last` may exceed the connection's response buffer: it is
    /// already in memory.
    pub fn finish_with(mut self, last: Bytes, app_status: u32) {
        self.end(last, app_status);
    }

    fn end(&mut self, last: Bytes, app_status: u32) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !last.is_empty() && self.check().is_ok() && self.claim(false).is_ok() {
            let queued = match &self.lent {
                Some(lent) => lent.hold_last(self.id, last).err(),
                None => Some(last),
            };
            if let Some(data) = queued {
                // Budget where there is some; the driver gives back only what was taken.
                let permits = self.permits_for(&data);
                let permits = match self.budget.try_acquire_many(permits) {
                    Ok(p) => {
                        p.forget();
                        permits
                    }
                    Err(_) => 0,
                };
                let _ = self.send(false, data, permits);
            }
        }
        if self.shared.mark(Shared::ENDED) & Shared::TIMED_OUT != 0 {
            // Its expiry ended it (and answered, or closed the connection).
            return;
        }
        let _ = self.tx.send(Outgoing::End {
            id: self.id,
            app_status,
        });
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        self.end(Bytes::new(), 1);
    }
}

/// What a [`Response::for_test`] writer produced.
#[derive(Debug)]
pub struct ResponseCapture {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    app_status: Option<u32>,
    cut: bool,
}

impl ResponseCapture {
    /// Whether an [`Expiry`] closed the connection to cut the response short.
    pub fn was_cut(&mut self) -> bool {
        self.drain();
        self.cut
    }

    fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Outgoing::Stdout { data, .. } => self.stdout.extend_from_slice(&data),
                Outgoing::Stderr { data, .. } => self.stderr.extend_from_slice(&data),
                Outgoing::StderrUsed { .. } => {}
                Outgoing::End { app_status, .. } => self.app_status = Some(app_status),
                Outgoing::Abort { .. } => self.cut = true,
            }
        }
    }

    /// Everything written to STDOUT so far.
    pub fn stdout(&mut self) -> &[u8] {
        self.drain();
        &self.stdout
    }

    pub fn stderr(&mut self) -> &[u8] {
        self.drain();
        &self.stderr
    }

    /// The app status, once the response has ended.
    pub fn app_status(&mut self) -> Option<u32> {
        self.drain();
        self.app_status
    }

    /// Forgets what was captured (a bench reuses one capture).
    pub fn clear(&mut self) {
        self.drain();
        self.stdout.clear();
        self.stderr.clear();
        self.app_status = None;
    }
}

/// Runs a future to completion on the current thread, parking it while the future waits.
/// For the `blocking_` methods, which plain threads call; tokio's sync primitives wake any waker.
/// Runs `future` on this thread to its end.
fn block_on<F: Future>(future: F) -> F::Output {
    match block_on_until(future, None) {
        Some(out) => out,
        None => unreachable!("without a deadline, block_on_until waits for the end"),
    }
}

/// Runs `future` on this thread to its end, or until `deadline` (`None` then).
fn block_on_until<F: Future>(future: F, deadline: Option<Instant>) -> Option<F::Output> {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return Some(out),
            Poll::Pending => match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    std::thread::park_timeout(left);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_answers_in_place_of_a_silent_handler_and_silences_it() {
        let (mut response, mut capture) = Response::for_test(1);
        let expiry = response.expiry();
        assert_eq!(
            expiry.expire(Bytes::from_static(b"Status: 504\r\n\r\n")),
            Expired::Answered
        );
        assert_eq!(capture.stdout(), b"Status: 504\r\n\r\n");
        assert_eq!(capture.app_status(), Some(1));
        // The handler, still running, learns it is over; its end is not sent twice.
        assert_eq!(
            response.try_write(Bytes::from_static(b"late")),
            Err(TryWriteError::Failed(Failure::TimedOut))
        );
        capture.clear();
        response.finish_with(Bytes::from_static(b"late"), 0);
        assert_eq!(capture.stdout(), b"");
        assert_eq!(capture.app_status(), None);
        assert_eq!(expiry.expire(Bytes::new()), Expired::Over);
    }

    #[test]
    fn an_expiry_cuts_a_response_that_began_and_leaves_an_ended_one_alone() {
        let (mut response, mut capture) = Response::for_test(1);
        response
            .try_write(Bytes::from_static(b"Status: 200\r\n\r\npart"))
            .unwrap();
        assert_eq!(response.expiry().expire(Bytes::new()), Expired::Cut);
        assert!(capture.was_cut());
        assert_eq!(
            response.try_write(Bytes::from_static(b"more")),
            Err(TryWriteError::Failed(Failure::TimedOut))
        );

        let (response, mut capture) = Response::for_test(2);
        let expiry = response.expiry();
        response.finish_with(Bytes::from_static(b"whole"), 0);
        assert_eq!(expiry.expire(Bytes::from_static(b"504")), Expired::Over);
        assert_eq!(capture.stdout(), b"whole");
        assert!(!capture.was_cut());
    }

    #[test]
    fn full_body_yields_its_data_then_ends() {
        let mut body = Body::full(Bytes::from_static(b"abc"));
        assert_eq!(body.try_chunk().unwrap().unwrap(), "abc");
        assert_eq!(body.try_chunk(), Ok(None));
        assert_eq!(body.blocking_chunk(), Ok(None));
        assert_eq!(Body::full(Bytes::new()).blocking_chunk(), Ok(None));
    }

    #[test]
    fn streaming_body_distinguishes_end_from_abort() {
        let (tx, rx) = mpsc::channel(2);
        let shared = Arc::new(Shared::default());
        let mut body = Body::new(VecDeque::new(), Some(rx), shared.clone());
        assert_eq!(body.try_chunk(), Err(TryChunkError::Empty));
        tx.try_send(Bytes::from_static(b"x")).unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.blocking_send(Bytes::from_static(b"y")).unwrap();
            shared.set(Shared::STDIN_DONE);
        });
        assert_eq!(body.blocking_chunk().unwrap().unwrap(), "x");
        assert_eq!(
            body.blocking_chunk().unwrap().unwrap(),
            "y",
            "waits for the sender"
        );
        sender.join().unwrap();
        assert_eq!(body.blocking_chunk(), Ok(None));

        let (tx, rx) = mpsc::channel::<Bytes>(2);
        let shared = Arc::new(Shared::default());
        let mut body = Body::new(VecDeque::new(), Some(rx), shared.clone());
        shared.set(Shared::ABORTED);
        drop(tx);
        assert_eq!(body.blocking_chunk(), Err(Failure::Aborted));
    }

    #[test]
    fn capture_collects_writes_and_the_end() {
        let (mut response, mut capture) = Response::for_test(1);
        response
            .try_write(Bytes::from_static(b"Status: 200 OK\r\n\r\n"))
            .unwrap();
        response.blocking_write(Bytes::from_static(b"hi")).unwrap();
        response
            .blocking_write_stderr(Bytes::from_static(b"oops"))
            .unwrap();
        assert_eq!(capture.app_status(), None);
        response.finish(0);
        assert_eq!(capture.stdout(), b"Status: 200 OK\r\n\r\nhi");
        assert_eq!(capture.stderr(), b"oops");
        assert_eq!(capture.app_status(), Some(0));
    }

    #[test]
    fn finish_with_sends_the_last_piece_then_ends_even_beyond_the_budget() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(2));
        let r = Response::new(7, tx, budget.clone(), 2, Arc::new(Shared::default()));
        r.finish_with(Bytes::from_static(b"abc"), 0);
        assert!(matches!(
            rx.try_recv(),
            Ok(Outgoing::Stdout { id: 7, ref data, permits: 2 }) if data == "abc"
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(Outgoing::End {
                id: 7,
                app_status: 0
            })
        ));
        // An aborted request's last piece is dropped; the end still goes.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        shared.set(Shared::ABORTED);
        let r = Response::new(8, tx, budget, 2, shared);
        r.finish_with(Bytes::from_static(b"abc"), 0);
        assert!(matches!(rx.try_recv(), Ok(Outgoing::End { id: 8, .. })));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn dropped_response_ends_with_status_1() {
        let (response, mut capture) = Response::for_test(1);
        drop(response);
        assert_eq!(capture.app_status(), Some(1));
    }

    #[test]
    fn try_write_gives_data_back_when_the_budget_is_spent() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(4));
        let mut r = Response::new(1, tx, budget.clone(), 4, Arc::new(Shared::default()));
        r.try_write(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(
            r.try_write(Bytes::from_static(b"5")),
            Err(TryWriteError::Full(Bytes::from_static(b"5")))
        );
        budget.add_permits(1);
        r.try_write(Bytes::from_static(b"5")).unwrap();
        budget.close();
        assert_eq!(
            r.blocking_write(Bytes::from_static(b"6")),
            Err(Failure::ConnectionClosed)
        );
    }

    #[test]
    fn writes_fail_once_aborted() {
        let (mut r, _capture) = Response::for_test(1);
        r.shared.set(Shared::ABORTED);
        assert!(r.is_aborted());
        assert_eq!(
            r.blocking_write(Bytes::from_static(b"x")),
            Err(Failure::Aborted)
        );
    }
}
