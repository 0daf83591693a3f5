//! A connection's driver: the only owner of its transport, its buffers and its
//! [`Connection`] state machine. It parses every whole record in its read buffer before reading
//! again, assembles requests, hands complete ones to the [`Handler`](crate::Handler) (or runs
//! them inline on its own thread), moves body records into the requests' bounded channels and
//! frames and flushes what the handlers write. While a request's body channel is full it stops
//! reading the transport (the web server then waits), but it keeps writing responses.
//!
//! One request's way through it: `Record::parse` -> `Connection::handle_record` (assembly) ->
//! `Driver::dispatch` -> the handler -> `Outgoing` messages (or the lent output) -> `OutBuf` ->
//! the transport.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, trace, warn};

use crate::connection::{Connection, Event, Refusal, RequestHead};
use crate::listener::Peer;
use crate::output::{Lent, OutBuf};
use crate::protocol::{ProtocolError, Record, RecordType};
use crate::request::{Body, Cut, Outgoing, Request, Response, Shared};
use crate::server::Context;
use crate::transport::Writer;

/// Outgoing bytes the driver holds before it stops taking more from the handlers.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Outgoing bytes past which the driver stops reading its socket: every management record read
/// may add a reply, and a peer that sends them without reading ours must not grow this buffer.
const OUT_READ_PAUSE: usize = 256 * 1024;
/// Body bytes kept with a request that has not been dispatched yet; a larger body is streamed.
const INLINE_BODY_BYTES: usize = 64 * 1024;
/// The read buffer never needs more than one maximal record plus a read's worth.
const READ_CHUNK: usize = 16 * 1024;
/// Read buffers given back by idle connections, kept per thread for the next one that has
/// something to read: a kept-alive connection between requests holds none (10,000 idle
/// connections would hold 160 MiB), and a busy server takes them from here, not from malloc.
/// Enough for the connections that are reading at one moment; more are freed.
const SPARE_READ_BUFFERS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer with room for `READ_CHUNK`, a spare one if there is one.
fn take_read_buffer() -> BytesMut {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Keeps an empty read buffer for the next connection, if its whole allocation is free again
/// (no request's bytes still point into it) and the spares are not full.
fn give_back_read_buffer(mut buf: BytesMut) {
    if buf.is_empty() && buf.try_reclaim(READ_CHUNK) {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_READ_BUFFERS {
                spare.push(buf);
            }
        });
    }
}

/// A connection's byte stream, as the driver needs it.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// A read into a full buffer waits until there is something to read, and reads nothing
    /// (`Stream`'s does so without a system call): an idle connection then waits that way,
    /// without a read buffer.
    fn waits_without_buffer(&self) -> bool;
}
/// While draining, how long a connection that was idle when the drain began may stay open
/// waiting for one more request. A web server may be sending a request on a kept-alive
/// connection at the moment it is closed; nginx then logs an error and retries (or, for a
/// POST, answers 502). A connection that serves one more request is closed right after its
/// END_REQUEST, when no request of the web server's can be in flight on it; one that stays
/// idle this long was not about to be picked.
const DRAIN_IDLE_LINGER: Duration = Duration::from_secs(1);

/// A request assembled in this read batch but not yet handed over: if its body ends in the same
/// batch (every GET), it is handed over whole, with no channel.
struct Pending {
    head: RequestHead,
    shared: Arc<Shared>,
    chunks: VecDeque<Bytes>,
    bytes: usize,
    complete: bool,
}

/// The driver's view of a request the handler has.
struct Active {
    id: u16,
    shared: Arc<Shared>,
    body_tx: Option<mpsc::Sender<Bytes>>,
}

/// A body record waiting for room in its request's channel.
struct Stalled {
    id: u16,
    tx: mpsc::Sender<Bytes>,
    data: Bytes,
}

enum Wake {
    Outgoing(Outgoing),
    Wrote(io::Result<usize>),
    Readable(io::Result<()>),
    Read(io::Result<usize>),
    Room,
    ParamsTimeout,
    IdleTimeout,
    Drain,
    LingerOver,
}

struct Driver<'a> {
    ctx: &'a Context,
    peer: &'a Peer,
    conn: Connection,
    /// Given a buffer before each read; empty, with no allocation, while a `lean` connection
    /// waits for its next request.
    rbuf: BytesMut,
    /// Idle, the connection waits for data without a read buffer (`Transport`).
    lean: bool,
    out: OutBuf,
    pending: Vec<Pending>,
    active: Vec<Active>,
    stalled: Option<Stalled>,
    tx: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
    max_permits: u32,
    close_when_idle: bool,
    eof: bool,
    /// A stall ended outside the read path: parse what is already in the read buffer.
    parse_again: bool,
    /// When the connection last became idle (no request in progress), if it is.
    idle_since: Option<Instant>,
    /// While draining: until when an idle connection waits for one more request
    /// (`DRAIN_IDLE_LINGER`); `None` once it may close whenever idle.
    linger_until: Option<Instant>,
    /// Set when requests may run inline on this thread: the transport's writer, lent to them.
    writer: Option<Writer>,
    /// Draining, and the connection is to be handed over (`HandOver`) once idle.
    hand_over: bool,
    /// A request timed out after its response began, or its body stopped arriving: the
    /// connection closes.
    cut: Option<(u16, Cut)>,
    /// A request came without FCGI_KEEP_CONN: the connection ends after it.
    close_asked: bool,
}

/// How the driver let go of a connection that did not fail.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Closed,
    /// Idle while draining, with nothing unanswered read: the stream goes to `HandOver`.
    HandOver,
}

/// A connection the driver let go of.
pub(crate) struct Returned<IO> {
    pub io: IO,
    /// Idle while draining: to be handed over (see [`HandOver`](crate::HandOver)), not shut
    /// down. Otherwise it was shut down, and is to be dropped.
    pub hand_over: bool,
    /// The web server had asked for the connection to close (a request without
    /// FCGI_KEEP_CONN), so its closing first is the expected end, not the web server going
    /// away.
    pub close_asked: bool,
}

/// Drives one connection until it closes. With `writer`, requests may run inline on this
/// thread (see [`Handler::handle_inline`](crate::Handler::handle_inline)).
pub(crate) async fn run_connection<IO>(
    io: IO,
    peer: Peer,
    ctx: &Context,
    writer: Option<Writer>,
) -> Returned<IO>
where
    IO: Transport,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lean = io.waits_without_buffer();
    let budget_bytes = ctx
        .config
        .response_buffer_bytes
        .clamp(1, Semaphore::MAX_PERMITS);
    let mut d = Driver {
        ctx,
        peer: &peer,
        conn: Connection::new(ctx.conn_config),
        rbuf: BytesMut::new(),
        lean,
        out: OutBuf::default(),
        pending: Vec::new(),
        active: Vec::new(),
        stalled: None,
        tx,
        budget: Arc::new(Semaphore::new(budget_bytes)),
        max_permits: u32::try_from(budget_bytes).unwrap_or(u32::MAX),
        close_when_idle: false,
        eof: false,
        parse_again: false,
        idle_since: None,
        linger_until: None,
        writer,
        hand_over: false,
        cut: None,
        close_asked: false,
    };
    let mut draining = ctx.draining.clone();
    let (mut rd, mut wr) = tokio::io::split(io);
    let result = d.drive(&mut rd, &mut wr, &mut rx, &mut draining).await;
    if let Err(e) = &result {
        match e {
            DriveError::Protocol(p) => {
                warn!(%peer, error = %p, "closing FastCGI connection: protocol violation")
            }
            DriveError::Io(e) => debug!(%peer, error = %e, "connection failed"),
            DriveError::ParamsTimeout => warn!(
                %peer,
                timeout = ?ctx.config.params_timeout,
                "closing FastCGI connection: a request's params did not arrive in time"
            ),
            DriveError::Truncated => {
                debug!(%peer, "peer closed the connection in the middle of a record")
            }
            DriveError::Cut(id, Cut::RequestTimeout) => warn!(
                %peer,
                request = id,
                "closing FastCGI connection: a request ran past its time limit after its response had begun, so the response is cut short"
            ),
            DriveError::Cut(id, Cut::BodyTimeout) => warn!(
                %peer,
                request = id,
                "closing FastCGI connection: a request's body stopped arriving (WFCGI_BODY_TIMEOUT_SECS)"
            ),
        }
    }
    let close_asked = d.close_asked;
    if let Ok(Ending::HandOver) = result {
        d.budget.close();
        drop(d);
        return Returned {
            io: rd.unsplit(wr),
            hand_over: true,
            close_asked,
        };
    }
    // Whatever is still running learns the connection is gone; blocked writers wake up.
    for a in &d.active {
        a.shared.set(Shared::CLOSED);
    }
    d.budget.close();
    let _ = wr.shutdown().await;
    Returned {
        io: rd.unsplit(wr),
        hand_over: false,
        close_asked,
    }
}

#[derive(Debug)]
enum DriveError {
    Protocol(ProtocolError),
    Io(io::Error),
    ParamsTimeout,
    Truncated,
    Cut(u16, Cut),
}

impl From<ProtocolError> for DriveError {
    fn from(e: ProtocolError) -> Self {
        DriveError::Protocol(e)
    }
}

impl Driver<'_> {
    async fn drive<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        rx: &mut mpsc::UnboundedReceiver<Outgoing>,
        draining: &mut watch::Receiver<bool>,
    ) -> Result<Ending, DriveError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut is_draining = *draining.borrow();
        if is_draining {
            self.start_drain();
        }
        loop {
            if self.hand_over && self.can_hand_over() {
                return Ok(Ending::HandOver);
            }
            if is_draining && !self.is_idle() {
                // Busy during the drain: close as soon as this request is answered.
                self.linger_until = None;
            }
            if self.done(is_draining) {
                // A request may sit unread in the socket: closing now would lose it (and turn
                // the close into a reset). Take what is there without waiting.
                if is_draining && !self.eof {
                    self.ensure_read_buffer();
                    if let Some(Ok(n)) = now(rd.read_buf(&mut self.rbuf)).await {
                        if n > 0 {
                            self.process_input()?;
                            continue;
                        }
                    }
                }
                return Ok(Ending::Closed);
            }
            let can_take = self.out.len() < OUT_HIGH_WATER;
            let can_write = !self.out.is_empty();
            let can_read = self.stalled.is_none() && !self.eof && self.out.len() < OUT_READ_PAUSE;
            // Between requests, with nothing read yet, wait for the next without a buffer.
            let wait_readable = can_read && self.lean && self.rbuf.is_empty() && self.is_idle();
            if wait_readable {
                give_back_read_buffer(std::mem::take(&mut self.rbuf));
            } else if can_read {
                self.ensure_read_buffer();
            }
            // While we hold the socket back ourselves, params cannot arrive: no deadline then.
            let deadline = match self.stalled {
                None => self.conn.params_deadline(self.ctx.config.params_timeout),
                Some(_) => None,
            };
            let idle_deadline = self.idle_deadline();
            let linger_until = self.linger_until;
            let out = &self.out;
            let rbuf = &mut self.rbuf;
            let stalled = &self.stalled;
            let wake = tokio::select! {
                biased;
                msg = rx.recv(), if can_take => match msg {
                    Some(m) => Wake::Outgoing(m),
                    None => unreachable!("the driver holds a sender"),
                },
                res = write_some(wr, out), if can_write => Wake::Wrote(res),
                wake = read_some(rd, rbuf, wait_readable), if can_read => wake,
                _ = room(stalled), if stalled.is_some() => Wake::Room,
                _ = sleep_until(deadline), if deadline.is_some() => Wake::ParamsTimeout,
                _ = sleep_until(idle_deadline), if idle_deadline.is_some() => Wake::IdleTimeout,
                _ = draining.changed(), if !is_draining => Wake::Drain,
                _ = sleep_until(linger_until), if linger_until.is_some() => Wake::LingerOver,
            };
            match wake {
                Wake::Outgoing(msg) => {
                    self.on_outgoing(msg);
                    // Take whatever else is ready in one go.
                    while self.out.len() < OUT_HIGH_WATER {
                        match rx.try_recv() {
                            Ok(msg) => self.on_outgoing(msg),
                            Err(_) => break,
                        }
                    }
                    if let Some((id, why)) = self.cut {
                        return Err(DriveError::Cut(id, why));
                    }
                    if std::mem::take(&mut self.parse_again) {
                        self.process_input()?;
                    }
                }
                Wake::Wrote(res) => {
                    let n = res.map_err(DriveError::Io)?;
                    if n == 0 {
                        return Err(DriveError::Io(io::ErrorKind::WriteZero.into()));
                    }
                    self.out.advance(n);
                }
                Wake::Readable(res) => {
                    res.map_err(DriveError::Io)?;
                    // With a buffer now, read what came if it is still there.
                    self.ensure_read_buffer();
                    if let Some(res) = now(rd.read_buf(&mut self.rbuf)).await {
                        if let Some(ending) = self.on_read(res)? {
                            return Ok(ending);
                        }
                    }
                }
                Wake::Read(res) => {
                    if let Some(ending) = self.on_read(res)? {
                        return Ok(ending);
                    }
                }
                Wake::Room => {
                    if let Some(s) = self.stalled.take() {
                        // Room was seen; if the handler dropped its body meanwhile, drop the data.
                        if let Err(mpsc::error::TrySendError::Full(data)) = s.tx.try_send(s.data) {
                            self.stalled = Some(Stalled { data, ..s });
                        }
                    }
                    self.resume_after_stall();
                    self.process_input()?;
                }
                Wake::ParamsTimeout => return Err(DriveError::ParamsTimeout),
                Wake::IdleTimeout => {
                    debug!(peer = %self.peer, "closing idle connection");
                    return Ok(Ending::Closed);
                }
                Wake::Drain => {
                    is_draining = true;
                    self.start_drain();
                }
                Wake::LingerOver => self.linger_until = None,
            }
        }
    }

    /// Nothing left to do on this connection. A request that ended while its body was still
    /// arriving keeps the connection open until the rest is read and discarded: closing with
    /// unread data would send a reset, which can destroy the reply already sent.
    fn done(&self, draining: bool) -> bool {
        self.is_idle() && (self.close_when_idle || (draining && self.linger_until.is_none()))
    }

    /// No request in progress, nothing to write, nothing held back or being discarded.
    fn is_idle(&self) -> bool {
        self.conn.open_requests() == 0
            && self.out.is_empty()
            && self.stalled.is_none()
            && !self.conn.is_discarding()
    }

    /// What a read of the transport brought: records to handle, or its end (`Some`).
    fn on_read(&mut self, res: io::Result<usize>) -> Result<Option<Ending>, DriveError> {
        let n = res.map_err(DriveError::Io)?;
        if n == 0 {
            self.eof = true;
            // The web server closing the connection aborts what it had sent.
            for a in &self.active {
                a.shared.set(Shared::CLOSED);
            }
            if !self.rbuf.is_empty() {
                return Err(DriveError::Truncated);
            }
            return Ok(Some(Ending::Closed));
        }
        trace!(bytes = n, "read");
        self.process_input()?;
        Ok(None)
    }

    /// Room to read `READ_CHUNK / 4` or more (a whole read's worth when it had to grow).
    fn ensure_read_buffer(&mut self) {
        if self.rbuf.capacity() == 0 {
            self.rbuf = take_read_buffer();
        } else if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    /// The drain began. A kept-alive connection is handed over once idle, if the server hands
    /// over (`HandOver`); otherwise an idle one lingers (`DRAIN_IDLE_LINGER`). The one
    /// inherited on fd 0 does neither: its web server sends nothing more once it has asked us
    /// to stop.
    fn start_drain(&mut self) {
        if *self.peer == Peer::Inherited {
            return;
        }
        if self.ctx.hands_over() {
            self.hand_over = true;
        } else if self.is_idle() {
            self.linger_until = Some(Instant::now() + DRAIN_IDLE_LINGER);
        }
    }

    /// Between requests of a kept-alive connection, with no byte read and not yet answered
    /// (a record split across reads waits for the rest): the next owner starts cleanly.
    fn can_hand_over(&self) -> bool {
        self.is_idle() && self.rbuf.is_empty() && !self.close_when_idle && !self.eof
    }

    /// When an idle connection is to be closed; `None` while a request is in progress, or for
    /// the inherited connection (closing it would end the process).
    fn idle_deadline(&mut self) -> Option<Instant> {
        let timeout = self.ctx.config.idle_timeout?;
        if !self.is_idle() || *self.peer == Peer::Inherited {
            self.idle_since = None;
            return None;
        }
        Some(*self.idle_since.get_or_insert_with(Instant::now) + timeout)
    }

    /// The socket is read again after a stall: requests waiting for their params get a fresh
    /// params clock.
    fn resume_after_stall(&mut self) {
        if self.stalled.is_none() {
            self.conn.restart_params_clock(Instant::now());
        }
    }

    /// Parses and handles every whole record in the read buffer, then hands over the requests
    /// that were completed.
    fn process_input(&mut self) -> Result<(), DriveError> {
        let now = Instant::now();
        while self.stalled.is_none() {
            let Some(record) = Record::parse(&mut self.rbuf)? else {
                break;
            };
            trace!(record_type = ?record.record_type, id = record.request_id, len = record.content.len(), "record");
            match self.conn.handle_record(record, now, &mut self.out.tail)? {
                None => {}
                Some(Event::Request(head)) => {
                    self.close_asked |= !head.keep_conn;
                    self.pending.push(Pending {
                        head,
                        shared: Arc::new(Shared::default()),
                        chunks: VecDeque::new(),
                        bytes: 0,
                        complete: false,
                    })
                }
                Some(Event::Stdin { id, data }) => self.on_stdin(id, data),
                Some(Event::StdinEnd { id }) => self.on_stdin_end(id),
                Some(Event::Abort { id }) => self.on_abort(id),
                Some(Event::Refused {
                    id,
                    reason,
                    keep_conn,
                }) => {
                    if !keep_conn {
                        self.close_when_idle = true;
                        self.close_asked = true;
                    }
                    match reason {
                        Refusal::UnknownRole(role) => {
                            warn!(peer = %self.peer, id, ?role, "refusing request: only the Responder role is served")
                        }
                        Refusal::TooManyRequests => warn!(
                            peer = %self.peer, id,
                            limit = self.ctx.config.max_requests_per_connection,
                            "refusing request: too many requests on one connection (FCGI_OVERLOADED)"
                        ),
                        Refusal::ParamsTooLarge => warn!(
                            peer = %self.peer, id,
                            limit = self.ctx.config.max_params_bytes,
                            "refusing request: its params exceed max_params_bytes (FCGI_OVERLOADED)"
                        ),
                    }
                }
            }
        }
        self.dispatch_pending();
        Ok(())
    }

    fn on_stdin(&mut self, id: u16, data: Bytes) {
        if let Some(i) = self.pending.iter().position(|p| p.head.id == id) {
            let p = &mut self.pending[i];
            if p.bytes + data.len() <= INLINE_BODY_BYTES {
                p.bytes += data.len();
                p.chunks.push_back(data);
                return;
            }
            // A large body: hand the request over now and stream the rest.
            let p = self.pending.swap_remove(i);
            self.dispatch(p);
        }
        let Some(a) = self.active.iter_mut().find(|a| a.id == id) else {
            return;
        };
        let Some(tx) = &a.body_tx else {
            return;
        };
        match tx.try_send(data) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(data)) => {
                trace!(id, "body buffer full: pausing reads");
                self.stalled = Some(Stalled {
                    id,
                    tx: tx.clone(),
                    data,
                });
            }
            // The handler does not want the rest of its body.
            Err(mpsc::error::TrySendError::Closed(_)) => a.body_tx = None,
        }
    }

    fn on_stdin_end(&mut self, id: u16) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.head.id == id) {
            p.complete = true;
        } else if let Some(a) = self.active.iter_mut().find(|a| a.id == id) {
            a.shared.set(Shared::STDIN_DONE);
            a.body_tx = None;
        }
    }

    fn on_abort(&mut self, id: u16) {
        debug!(id, "request aborted by the web server");
        if let Some(p) = self.pending.iter_mut().find(|p| p.head.id == id) {
            p.shared.set(Shared::ABORTED);
        } else if let Some(a) = self.active.iter_mut().find(|a| a.id == id) {
            a.shared.set(Shared::ABORTED);
            a.body_tx = None;
        }
    }

    /// Hands over the requests assembled in this batch, in the order they arrived.
    fn dispatch_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.drain(..) {
            self.dispatch(p);
        }
        // Keep the allocation for the next batch.
        self.pending = pending;
    }

    fn dispatch(&mut self, p: Pending) {
        let id = p.head.id;
        // Inline only when nothing else could need the driver while the request runs: its whole
        // body is here and no other request is in progress.
        let inline = self
            .writer
            .as_ref()
            .filter(|_| {
                p.complete
                    && self.active.is_empty()
                    && self.stalled.is_none()
                    && !p.shared.is_failed()
            })
            .cloned();
        let (rx, body_tx) = if p.complete {
            p.shared.set(Shared::STDIN_DONE);
            (None, None)
        } else if p.shared.is_failed() {
            // Aborted before it was handed over: no more body will come. A channel whose
            // sender is gone makes the handler's next read say so instead of waiting.
            let (_, rx) = mpsc::channel(1);
            (Some(rx), None)
        } else {
            let (tx, rx) = mpsc::channel(self.ctx.config.body_buffer_records.max(1));
            (Some(rx), Some(tx))
        };
        let body = Body::new(p.chunks, rx, p.shared.clone());
        let response = Response::new(
            id,
            self.tx.clone(),
            self.budget.clone(),
            self.max_permits,
            p.shared.clone(),
        );
        // What the connection has to send already goes out ahead of the response.
        let lent = inline.map(|writer| Arc::new(Lent::new(writer, std::mem::take(&mut self.out))));
        let response = match &lent {
            Some(lent) => response.with_lent(lent.clone()),
            None => response,
        };
        self.active.push(Active {
            id,
            shared: p.shared,
            body_tx,
        });
        let request = Request {
            id,
            role: p.head.role,
            keep_conn: p.head.keep_conn,
            params: p.head.params,
            body,
            response,
        };
        let _span = tracing::debug_span!("fastcgi", request = id).entered();
        let Some(lent) = lent else {
            self.ctx.handler.handle(request);
            return;
        };
        // A panic must not skip taking the output back (the writer would stay lent).
        let given_back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ctx.handler.handle_inline(request)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("a panic while running a request inline (the request was ended)");
            None
        });
        // What the transport did not take yet is ours to send, ahead of anything later; the
        // request's end (and its held last piece) are in the channel and go out behind it.
        self.out.append(lent.take_back());
        if let Some(request) = given_back {
            self.ctx.handler.handle(request);
        }
    }

    fn on_outgoing(&mut self, msg: Outgoing) {
        match msg {
            Outgoing::Stdout { id, data, permits } => {
                self.budget.add_permits(permits as usize);
                if self.writable(id) {
                    self.out.push_stream(RecordType::Stdout, id, data);
                }
            }
            Outgoing::Stderr { id, data, permits } => {
                self.budget.add_permits(permits as usize);
                if self.writable(id) {
                    self.conn.note_stderr(id);
                    self.out.push_stream(RecordType::Stderr, id, data);
                }
            }
            Outgoing::StderrUsed { id } => self.conn.note_stderr(id),
            Outgoing::Abort { id, why } => self.cut = Some((id, why)),
            Outgoing::End { id, app_status } => {
                if let Some(i) = self.active.iter().position(|a| a.id == id) {
                    self.active.swap_remove(i);
                }
                // A body record held back for this request is moot now (its handler may keep
                // the Body alive and never read it): drop it and read on.
                if self.stalled.as_ref().is_some_and(|s| s.id == id) {
                    self.stalled = None;
                    self.resume_after_stall();
                    // Records already read wait behind it.
                    self.parse_again = true;
                }
                if let Some(outcome) = self.conn.end_request(id, app_status, &mut self.out.tail) {
                    if outcome.close_connection {
                        self.close_when_idle = true;
                    }
                }
            }
        }
    }

    /// Output of an aborted request is dropped: the web server no longer wants it.
    fn writable(&self, id: u16) -> bool {
        self.active
            .iter()
            .find(|a| a.id == id)
            .is_some_and(|a| !a.shared.is_failed())
    }
}

async fn write_some<W: AsyncWrite + Unpin>(wr: &mut W, out: &OutBuf) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); 32];
    let n = out.slices(&mut slices);
    wr.write_vectored(&slices[..n]).await
}

/// Reads into `rbuf`; or, with `wait_only`, resolves once `rd` has something to read (or its
/// end, or an error), reading nothing (see [`Transport`]).
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, rbuf: &mut BytesMut, wait_only: bool) -> Wake {
    if wait_only {
        let mut nowhere = ReadBuf::new(&mut []);
        let ready =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *rd).poll_read(cx, &mut nowhere));
        Wake::Readable(ready.await)
    } else {
        Wake::Read(rd.read_buf(rbuf).await)
    }
}

/// `f`'s output if it is ready at once; `None` if it would wait.
async fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

async fn room(stalled: &Option<Stalled>) {
    if let Some(s) = stalled {
        // A closed channel also resolves: the data is then dropped by the caller.
        let _ = s.tx.reserve().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, ResponseRecord};
    use crate::server::{Handler, ServerConfig};
    use std::sync::Mutex;
    use tokio::io::AsyncRead;

    /// What the client side of a connection read, record by record.
    #[derive(Debug, Default)]
    struct Seen {
        /// `(id, "out" | "err" | "end", content)`; a stream's closing empty record is "out."
        /// or "err.".
        records: Vec<(u16, &'static str, Vec<u8>)>,
    }

    impl Seen {
        fn stdout(&self, id: u16) -> Vec<u8> {
            self.records
                .iter()
                .filter(|r| r.0 == id && r.1 == "out")
                .flat_map(|r| r.2.clone())
                .collect()
        }
        fn kinds(&self, id: u16) -> Vec<&'static str> {
            self.records
                .iter()
                .filter(|r| r.0 == id)
                .map(|r| r.1)
                .collect()
        }
        fn ends(&self) -> usize {
            self.records.iter().filter(|r| r.1 == "end").count()
        }
    }

    /// Reads records until `ends` requests have ended, or the connection closes.
    async fn read_records<R: AsyncRead + Unpin>(rd: &mut R, ends: usize) -> Seen {
        let mut seen = Seen::default();
        let mut buf = BytesMut::new();
        while seen.ends() < ends {
            while let Some((id, record)) = client::parse_response(&mut buf).expect("valid") {
                let (kind, data) = match record {
                    ResponseRecord::Stdout(d) if d.is_empty() => ("out.", d),
                    ResponseRecord::Stdout(d) => ("out", d),
                    ResponseRecord::Stderr(d) if d.is_empty() => ("err.", d),
                    ResponseRecord::Stderr(d) => ("err", d),
                    ResponseRecord::End(end) => {
                        ("end", Bytes::from(end.app_status.to_be_bytes().to_vec()))
                    }
                    ResponseRecord::Management(_) => ("mgmt", Bytes::new()),
                };
                seen.records.push((id, kind, data.to_vec()));
            }
            if seen.ends() >= ends {
                break;
            }
            if rd.read_buf(&mut buf).await.expect("read") == 0 {
                break;
            }
        }
        seen
    }

    fn get(id: u16, keep_conn: bool, path: &str, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let pairs: [(&[u8], &[u8]); 1] = [(b"PATH_INFO", path.as_bytes())];
        client::encode_request(&mut out, id, keep_conn, pairs, body);
        out.to_vec()
    }

    /// Answers with the request's path and body, from the driver's task or (for a body still
    /// arriving) a thread; `/stderr` also writes to STDERR, `/hold` hands the request over to
    /// the test instead.
    struct Echo {
        held: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Request>>>,
        inline: bool,
    }

    impl Echo {
        fn new(inline: bool) -> Arc<Echo> {
            Arc::new(Echo {
                held: Mutex::new(None),
                inline,
            })
        }

        fn answer(request: Request) {
            let (params, mut body, mut response) = request.into_parts();
            let path = params.get(b"PATH_INFO").unwrap_or_default().to_vec();
            let mut data = Vec::new();
            while let Ok(Some(chunk)) = body.blocking_chunk() {
                data.extend_from_slice(&chunk);
            }
            if path == b"/stderr" {
                response
                    .blocking_write_stderr(Bytes::from_static(b"careful"))
                    .unwrap();
            }
            response
                .blocking_write(Bytes::from_static(b"Status: 200 OK\r\n\r\n"))
                .unwrap();
            let mut last = path;
            last.extend_from_slice(&data);
            response.finish_with(Bytes::from(last), 0);
        }
    }

    impl Handler for Echo {
        fn handle(&self, request: Request) {
            if request.params().get(b"PATH_INFO") == Some(b"/hold") {
                let tx = self.held.lock().unwrap();
                tx.as_ref().expect("a test waiting").send(request).unwrap();
                return;
            }
            // A body still arriving is read on a thread: the driver's task must not wait.
            std::thread::spawn(move || Echo::answer(request));
        }

        fn serves_inline(&self) -> bool {
            self.inline
        }

        fn handle_inline(&self, request: Request) -> Option<Request> {
            if request.params().get(b"PATH_INFO") == Some(b"/pool") {
                return Some(request);
            }
            Echo::answer(request);
            None
        }
    }

    impl Transport for tokio::io::DuplexStream {
        fn waits_without_buffer(&self) -> bool {
            true
        }
    }

    /// Drives one connection over `io`, with `client` run against the other end.
    async fn drive<IO, F, Fut>(handler: Arc<Echo>, io: IO, writer: Option<Writer>, client: F)
    where
        IO: Transport,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (ctx, _drain) = Context::for_test(ServerConfig::default(), handler);
        tokio::join!(run_connection(io, Peer::Unix, &ctx, writer), client());
    }

    #[tokio::test]
    async fn answers_a_request_and_closes_without_keep_conn() {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        drive(Echo::new(false), far, None, move || async move {
            near.write_all(&get(1, false, "/a", b"body")).await.unwrap();
            let seen = read_records(&mut near, usize::MAX).await;
            assert_eq!(seen.stdout(1), b"Status: 200 OK\r\n\r\n/abody");
            assert_eq!(seen.kinds(1).last(), Some(&"end"));
            assert_eq!(&seen.kinds(1)[seen.kinds(1).len() - 2..], ["out.", "end"]);
        })
        .await;
    }

    #[tokio::test]
    async fn keeps_the_connection_for_the_next_request_and_streams_a_large_body() {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        let body = vec![b'x'; 3 * INLINE_BODY_BYTES];
        drive(Echo::new(false), far, None, move || async move {
            near.write_all(&get(1, true, "/big", &body)).await.unwrap();
            let first = read_records(&mut near, 1).await;
            assert_eq!(first.stdout(1).len(), 18 + 4 + body.len());
            near.write_all(&get(1, true, "/again", b"")).await.unwrap();
            let second = read_records(&mut near, 1).await;
            assert_eq!(second.stdout(1), b"Status: 200 OK\r\n\r\n/again");
        })
        .await;
    }

    #[tokio::test]
    async fn closes_stderr_before_the_end_when_it_was_used() {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        drive(Echo::new(false), far, None, move || async move {
            near.write_all(&get(1, false, "/stderr", b""))
                .await
                .unwrap();
            let seen = read_records(&mut near, 1).await;
            let kinds = seen.kinds(1);
            assert!(kinds.contains(&"err"));
            assert_eq!(&kinds[kinds.len() - 3..], ["out.", "err.", "end"]);
        })
        .await;
    }

    #[tokio::test]
    async fn a_malformed_record_closes_this_connection_and_answers_nothing() {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        drive(Echo::new(false), far, None, move || async move {
            let mut bad = get(1, true, "/a", b"");
            bad[0] = 9; // not FastCGI version 1
            near.write_all(&bad).await.unwrap();
            let seen = read_records(&mut near, usize::MAX).await;
            assert!(seen.records.is_empty(), "{seen:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn an_aborted_request_still_ends_but_its_output_is_dropped() {
        let handler = Echo::new(false);
        let (tx, mut held) = tokio::sync::mpsc::unbounded_channel();
        *handler.held.lock().unwrap() = Some(tx);
        let (mut near, far) = tokio::io::duplex(1 << 20);
        drive(handler, far, None, move || async move {
            let mut out = BytesMut::new();
            client::encode_begin(&mut out, 1, true);
            let pairs: [(&[u8], &[u8]); 1] = [(b"PATH_INFO", b"/hold")];
            client::encode_params(&mut out, 1, pairs);
            near.write_all(&out).await.unwrap();
            let request = held.recv().await.expect("handed over");
            let mut abort = BytesMut::new();
            client::encode_abort(&mut abort, 1);
            near.write_all(&abort).await.unwrap();
            let (_, _, mut response) = request.into_parts();
            while !response.is_aborted() {
                tokio::task::yield_now().await;
            }
            assert!(response.try_write(Bytes::from_static(b"late")).is_err());
            response.finish_with(Bytes::from_static(b"dropped"), 1);
            let seen = read_records(&mut near, 1).await;
            assert_eq!(seen.kinds(1), ["out.", "end"], "{seen:?}");
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn inline_requests_write_through_the_lent_output_in_order() {
        let (near, far) = tokio::net::UnixStream::pair().unwrap();
        let far = crate::listener::Stream::Unix(far);
        let writer = Writer::for_stream(&far);
        let mut near = near;
        drive(Echo::new(true), far, writer, move || async move {
            // Inline, inline with STDERR, then one given back to `handle` (a thread).
            let mut input = get(1, true, "/one", b"1");
            input.extend(get(2, true, "/stderr", b""));
            near.write_all(&input).await.unwrap();
            let seen = read_records(&mut near, 2).await;
            assert_eq!(seen.stdout(1), b"Status: 200 OK\r\n\r\n/one1");
            assert_eq!(seen.kinds(1), ["out", "out", "out.", "end"]);
            let kinds = seen.kinds(2);
            assert_eq!(&kinds[kinds.len() - 3..], ["out.", "err.", "end"]);
            near.write_all(&get(3, false, "/pool", b"")).await.unwrap();
            let seen = read_records(&mut near, usize::MAX).await;
            assert_eq!(seen.stdout(3), b"Status: 200 OK\r\n\r\n/pool");
        })
        .await;
    }
}
