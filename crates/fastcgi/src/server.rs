//! The Tokio server: accept loops, one driver task per connection, limits, graceful shutdown.
//!
//! The driver is the only owner of its socket and buffers. It parses every whole record in its
//! read buffer before reading again, feeds them to the [`Connection`] state machine, hands
//! complete requests to the [`Handler`], moves body records into the requests' bounded channels
//! and frames what the handlers write. While a request's body channel is full it stops reading
//! the socket (the web server then waits), but it keeps writing responses.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tracing::{debug, info, trace, warn, Instrument};

use crate::connection::{Connection, ConnectionConfig, Event, Refusal, RequestHead};
use crate::listener::{Listener, Peer};
use crate::out::OutBuf;
use crate::protocol::{ProtocolError, Record, RecordType};
use crate::request::{Body, Outgoing, Request, Response, Shared};

/// The application side of the server.
pub trait Handler: Send + Sync + 'static {
    /// Called on the connection's task as soon as a request's params are complete (its body may
    /// still be arriving). Must not block: queue the request or spawn a task, and return.
    fn handle(&self, request: Request);

    /// Whether [`Handler::handle_inline`] may be offered requests. If so, a listener that yields
    /// one connection only (a connected fd 0: IIS, one request at a time) has that connection
    /// driven by a thread of its own, on which requests are offered to `handle_inline`: no
    /// hand-off between threads per request.
    fn serves_inline(&self) -> bool {
        false
    }

    /// Runs `request` to its end on the calling thread (the connection's own, which waits
    /// meanwhile) and returns `None`, or gives it back (`Some`) to go through
    /// [`Handler::handle`]. Offered only a request
    /// whose body has arrived whole while no other request is in progress on the connection.
    /// Its response is written straight to the socket, and a write waits (blocks the thread)
    /// while the socket is full. The web server's later records (an abort) are read only after
    /// it returns.
    fn handle_inline(&self, request: Request) -> Option<Request> {
        Some(request)
    }
}

/// Stack of the thread that drives an inline connection: it runs the application (Python, with
/// its deep recursion in template engines and ORMs), so it gets a main thread's 8 MiB.
#[cfg(unix)]
const INLINE_THREAD_STACK: usize = 8 * 1024 * 1024;

/// The socket an inline request's response is written to directly.
#[cfg(unix)]
type InlineFd = std::os::fd::RawFd;
#[cfg(not(unix))]
type InlineFd = std::convert::Infallible;

/// Every limit and timeout of the server, with its default.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections open at once; further ones wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// Requests in progress on one connection (multiplexing). One more is refused with
    /// `FCGI_OVERLOADED`. Default 64; nginx and IIS use one at a time.
    pub max_requests_per_connection: usize,
    /// Bytes of params one request may send. Default 256 KiB: well above nginx's and IIS's
    /// default header limits (tens of KiB), far below what could hurt.
    pub max_params_bytes: usize,
    /// Time from BEGIN_REQUEST until the params are complete; past it the connection is closed.
    /// Default 30 s. Web servers send params at once; a slow one is broken or hostile.
    pub params_timeout: Duration,
    /// Body records (each at most 64 KiB) buffered per request beyond what the handler has read.
    /// Default 4. While full, the connection's socket is not read.
    pub body_buffer_records: usize,
    /// Response bytes a connection may hold before writers wait. Default 256 KiB.
    pub response_buffer_bytes: usize,
    /// A connection with no request in progress (between requests, or inside an unfinished
    /// BEGIN_REQUEST) is closed after this long. Default 300 s: web servers drop idle keepalive
    /// connections sooner (nginx after 60 s), so only abandoned or hostile peers reach it, and
    /// each holds a connection permit until then. Never applied to the connection inherited on
    /// fd 0: closing it would end the process. `None` disables it.
    pub idle_timeout: Option<Duration>,
    /// On shutdown, how long in-flight requests may take to finish. Default 30 s (IIS's
    /// `signalBeforeTerminateSeconds` is usually set to about this).
    pub shutdown_grace: Duration,
    /// `FCGI_WEB_SERVER_ADDRS`: TCP peers allowed to connect; `None` allows any.
    pub allowed_peers: Option<Vec<IpAddr>>,
    /// Answered as `FCGI_MAX_REQS`; `None` answers `max_connections * max_requests_per_connection`.
    /// A handler with a smaller capacity (a thread pool) should say so here.
    pub advertised_max_requests: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_requests_per_connection: 64,
            max_params_bytes: 256 * 1024,
            params_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            body_buffer_records: 4,
            response_buffer_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(30),
            allowed_peers: None,
            advertised_max_requests: None,
        }
    }
}

impl ServerConfig {
    fn connection_config(&self) -> ConnectionConfig {
        ConnectionConfig {
            max_requests: self.max_requests_per_connection.max(1),
            max_params_bytes: self.max_params_bytes,
            advertised_max_conns: self.max_connections,
            advertised_max_reqs: self.advertised_max_requests.unwrap_or(
                self.max_connections
                    .saturating_mul(self.max_requests_per_connection),
            ),
        }
    }
}

/// How [`Server::serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// Shutdown was asked for and every connection finished within the grace period.
    Drained,
    /// Shutdown was asked for and this many connections were still busy when the grace ran out.
    GraceExpired { connections: usize },
    /// The only listener was a single inherited connection, and it closed.
    ConnectionClosed,
}

/// Counts what is still running so that `serve` knows when it is done.
#[derive(Default)]
struct Tracker {
    connections: AtomicUsize,
    listeners: AtomicUsize,
    changed: Notify,
}

impl Tracker {
    fn done(&self, counter: &AtomicUsize) {
        counter.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    async fn wait_until(&self, cond: impl Fn(&Tracker) -> bool) {
        loop {
            let notified = self.changed.notified();
            if cond(self) {
                return;
            }
            notified.await;
        }
    }
}

struct Context {
    config: ServerConfig,
    conn_config: ConnectionConfig,
    handler: Arc<dyn Handler>,
    tracker: Tracker,
    /// `true` once shutdown has begun: connections close when idle.
    draining: watch::Receiver<bool>,
}

pub struct Server {
    config: ServerConfig,
    handler: Arc<dyn Handler>,
}

impl Server {
    pub fn new(config: ServerConfig, handler: Arc<dyn Handler>) -> Self {
        Server { config, handler }
    }

    /// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish within `shutdown_grace` and returns. When every listener is a single
    /// inherited connection, returns once those connections close.
    pub async fn serve(
        self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<ServeOutcome> {
        let (drain_tx, drain_rx) = watch::channel(false);
        let ctx = Arc::new(Context {
            conn_config: self.config.connection_config(),
            config: self.config,
            handler: self.handler,
            tracker: Tracker::default(),
            draining: drain_rx,
        });
        let permits = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
        let only_single = listeners.iter().all(Listener::is_single_connection);
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            info!(listen = %listener.local_addr(), "accepting FastCGI connections");
            ctx.tracker.listeners.fetch_add(1, Ordering::AcqRel);
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                ctx.clone(),
                permits.clone(),
            )));
        }
        let all_closed = ctx.tracker.wait_until(|t| {
            t.listeners.load(Ordering::Acquire) == 0 && t.connections.load(Ordering::Acquire) == 0
        });
        tokio::select! {
            _ = shutdown => {}
            _ = all_closed, if only_single => return Ok(ServeOutcome::ConnectionClosed),
        }
        // Stop accepting: dropping the accept tasks drops their listeners (and Unix socket files).
        for task in &accept_tasks {
            task.abort();
        }
        let open = ctx.tracker.connections.load(Ordering::Acquire);
        info!(connections = open, grace = ?ctx.config.shutdown_grace, "shutting down: draining in-flight requests");
        let _ = drain_tx.send(true);
        let idle = ctx
            .tracker
            .wait_until(|t| t.connections.load(Ordering::Acquire) == 0);
        match tokio::time::timeout(ctx.config.shutdown_grace, idle).await {
            Ok(()) => Ok(ServeOutcome::Drained),
            Err(_) => {
                let connections = ctx.tracker.connections.load(Ordering::Acquire);
                warn!(
                    connections,
                    "shutdown grace period expired with requests still running"
                );
                Ok(ServeOutcome::GraceExpired { connections })
            }
        }
    }
}

/// A connection's hold on the server: its permit and its place in the count, released however
/// the connection ends (or if its thread cannot start).
struct Release(Arc<Context>, Option<tokio::sync::OwnedSemaphorePermit>);

impl Drop for Release {
    fn drop(&mut self) {
        drop(self.1.take());
        self.0.tracker.done(&self.0.tracker.connections);
    }
}

async fn accept_loop(mut listener: Listener, ctx: Arc<Context>, permits: Arc<Semaphore>) {
    /// Decrements the listener count however this task ends (including abort).
    struct Guard(Arc<Context>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.tracker.done(&self.0.tracker.listeners);
        }
    }
    let _guard = Guard(ctx.clone());
    let single = listener.is_single_connection();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: say so, back off, keep serving what is open.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let (Some(allowed), Peer::Tcp(addr)) = (&ctx.config.allowed_peers, &peer) {
            if !allowed.contains(&addr.ip()) {
                warn!(%peer, "refusing connection: peer is not in FCGI_WEB_SERVER_ADDRS");
                continue;
            }
        }
        ctx.tracker.connections.fetch_add(1, Ordering::AcqRel);
        let release = Release(ctx.clone(), Some(permit));
        let span = tracing::info_span!("conn", %peer);
        #[cfg(unix)]
        if single && ctx.handler.serves_inline() {
            spawn_inline_connection(stream, peer, release, span);
            return;
        }
        tokio::spawn(
            async move {
                debug!("connection opened");
                run_connection(stream, peer, &release.0, None).await;
                debug!("connection closed");
                drop(release);
            }
            .instrument(span),
        );
        if single {
            return;
        }
    }
}

/// Outgoing bytes the driver holds before it stops taking more from the handlers.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Outgoing bytes past which the driver stops reading its socket: every management record read
/// may add a reply, and a peer that sends them without reading ours must not grow this buffer.
const OUT_READ_PAUSE: usize = 256 * 1024;
/// Body bytes kept with a request that has not been dispatched yet; a larger body is streamed.
const INLINE_BODY_BYTES: usize = 64 * 1024;
/// The read buffer never needs more than one maximal record plus a read's worth.
const READ_CHUNK: usize = 16 * 1024;

/// Drives the single inherited connection on a thread of its own, with a runtime of its own
/// (the socket is moved to it, so that its readiness wakes this thread and no other), so that
/// requests can run inline on it.
#[cfg(unix)]
fn spawn_inline_connection(
    stream: crate::listener::Stream,
    peer: Peer,
    release: Release,
    span: tracing::Span,
) {
    // Moved into the thread: if the thread cannot start, dropping the closure releases too.
    let run = move || {
        let conn_ctx = &release.0;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(
                async {
                    debug!("connection opened (served on its own thread)");
                    match stream.rebind() {
                        Ok(stream) => {
                            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                            run_connection(stream, peer, conn_ctx, Some(fd)).await;
                        }
                        Err(e) => warn!(error = %e, "cannot move the connection to its thread"),
                    }
                    debug!("connection closed");
                }
                .instrument(span),
            ),
            Err(e) => warn!(error = %e, "cannot start the connection's runtime"),
        }
    };
    let spawned = std::thread::Builder::new()
        .name("wfcgi-conn".into())
        .stack_size(INLINE_THREAD_STACK)
        .spawn(run);
    if let Err(e) = spawned {
        // The connection went with the closure (whose guard released it): nothing to serve.
        warn!(error = %e, "cannot start the connection's thread");
    }
}

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
    Read(io::Result<usize>),
    Room,
    ParamsTimeout,
    IdleTimeout,
    Drain,
}

struct Driver<'a> {
    ctx: &'a Context,
    peer: &'a Peer,
    conn: Connection,
    rbuf: BytesMut,
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
    /// Set when requests may run inline on this thread: the socket they write to.
    inline_fd: Option<InlineFd>,
}

async fn run_connection<IO>(io: IO, peer: Peer, ctx: &Context, inline_fd: Option<InlineFd>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let budget_bytes = ctx
        .config
        .response_buffer_bytes
        .clamp(1, Semaphore::MAX_PERMITS);
    let mut d = Driver {
        ctx,
        peer: &peer,
        conn: Connection::new(ctx.conn_config),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
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
        inline_fd,
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
        }
    }
    // Whatever is still running learns the connection is gone; blocked writers wake up.
    for a in &d.active {
        a.shared.set(Shared::CLOSED);
    }
    d.budget.close();
    let _ = wr.shutdown().await;
}

#[derive(Debug)]
enum DriveError {
    Protocol(ProtocolError),
    Io(io::Error),
    ParamsTimeout,
    Truncated,
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
    ) -> Result<(), DriveError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut is_draining = *draining.borrow();
        loop {
            if self.done(is_draining) {
                // A request may sit unread in the socket: closing now would lose it (and turn
                // the close into a reset). Take what is there without waiting.
                if is_draining && !self.eof {
                    let attempt = tokio::time::timeout(Duration::ZERO, rd.read_buf(&mut self.rbuf));
                    if let Ok(Ok(n)) = attempt.await {
                        if n > 0 {
                            self.process_input()?;
                            continue;
                        }
                    }
                }
                return Ok(());
            }
            let can_take = self.out.len() < OUT_HIGH_WATER;
            let can_write = !self.out.is_empty();
            let can_read = self.stalled.is_none() && !self.eof && self.out.len() < OUT_READ_PAUSE;
            if can_read && self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            // While we hold the socket back ourselves, params cannot arrive: no deadline then.
            let deadline = match self.stalled {
                None => self.conn.params_deadline(self.ctx.config.params_timeout),
                Some(_) => None,
            };
            let idle_deadline = self.idle_deadline();
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
                res = rd.read_buf(rbuf), if can_read => Wake::Read(res),
                _ = room(stalled), if stalled.is_some() => Wake::Room,
                _ = sleep_until(deadline), if deadline.is_some() => Wake::ParamsTimeout,
                _ = sleep_until(idle_deadline), if idle_deadline.is_some() => Wake::IdleTimeout,
                _ = draining.changed(), if !is_draining => Wake::Drain,
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
                Wake::Read(res) => {
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
                        return Ok(());
                    }
                    trace!(bytes = n, "read");
                    self.process_input()?;
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
                    return Ok(());
                }
                Wake::Drain => is_draining = true,
            }
        }
    }

    /// Nothing left to do on this connection. A request that ended while its body was still
    /// arriving keeps the connection open until the rest is read and discarded: closing with
    /// unread data would send a reset, which can destroy the reply already sent.
    fn done(&self, draining: bool) -> bool {
        let idle = self.conn.open_requests() == 0
            && self.out.is_empty()
            && self.stalled.is_none()
            && !self.conn.is_discarding();
        idle && (self.close_when_idle || draining)
    }

    /// When an idle connection is to be closed; `None` while a request is in progress, or for
    /// the inherited connection (closing it would end the process).
    fn idle_deadline(&mut self) -> Option<Instant> {
        let timeout = self.ctx.config.idle_timeout?;
        let idle = self.conn.open_requests() == 0
            && !self.conn.is_discarding()
            && self.out.is_empty()
            && self.stalled.is_none()
            && *self.peer != Peer::Inherited;
        if !idle {
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
                Some(Event::Request(head)) => self.pending.push(Pending {
                    head,
                    shared: Arc::new(Shared::default()),
                    chunks: VecDeque::new(),
                    bytes: 0,
                    complete: false,
                }),
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
        let inline_fd = self.inline_fd.filter(|_| {
            p.complete && self.active.is_empty() && self.stalled.is_none() && !p.shared.is_failed()
        });
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
        #[cfg(unix)]
        let direct = inline_fd.map(|fd| {
            Arc::new(crate::direct::Direct::new(
                fd,
                std::mem::take(&mut self.out),
            ))
        });
        #[cfg(unix)]
        let response = match &direct {
            Some(d) => response.with_direct(d.clone()),
            None => response,
        };
        #[cfg(not(unix))]
        let _ = inline_fd;
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
        let _span = tracing::debug_span!("request", id).entered();
        #[cfg(unix)]
        if let Some(direct) = direct {
            // A panic must not skip the revoke below (the fd would stay in the writer's hands).
            let given_back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.ctx.handler.handle_inline(request)
            }))
            .unwrap_or_else(|_| {
                tracing::error!("a panic while running a request inline (the request was ended)");
                None
            });
            // What the socket did not take yet is ours to send, ahead of anything later.
            let (rest, stderr_written) = direct.revoke();
            self.out.append(rest);
            if stderr_written {
                self.conn.note_stderr(id);
            }
            if let Some(request) = given_back {
                self.ctx.handler.handle(request);
            }
            return;
        }
        self.ctx.handler.handle(request);
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
            Outgoing::End {
                id,
                app_status,
                written,
            } => {
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
                // Written already by an inline request's thread: only the state is updated.
                let outcome = if written {
                    self.conn.request_ended(id)
                } else {
                    self.conn.end_request(id, app_status, &mut self.out.tail)
                };
                if let Some(outcome) = outcome {
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
