//! The Tokio server: the [`Handler`] API, accept loops, connection limits and graceful
//! shutdown. Each accepted connection is handed to its driver (`crate::driver`), on the
//! runtime's tasks, or, where the handler serves requests inline, on a thread of its own: the
//! single connection inherited on fd 0 (`crate::transport`), and the Windows named pipe, whose
//! accept loop and connections all run on one thread (`spawn_accept_thread`).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::connection::ConnectionConfig;
use crate::driver::run_connection;
use crate::listener::{Listener, Peer, Stream};
use crate::request::Request;
use crate::transport;

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

/// Where a draining server sends its kept-alive connections instead of closing them. Closing
/// one races the web server, which may be sending the next request on it (nginx then logs
/// "upstream prematurely closed connection" and retries or answers 502); a connection handed
/// to a process that goes on serving is never closed at all. wfcgi's workers hand theirs to
/// the supervisor, which passes them to a worker that keeps serving.
pub trait HandOver: Send + Sync + 'static {
    /// Asked when the drain begins: whether connections go to `hand_over` this time (not when
    /// everything is stopping: nothing would take them).
    fn wanted(&self) -> bool;

    /// A connection between requests: everything read from it was answered, nothing is left to
    /// write, and it was not shut down. What arrives on it next is the new owner's to read.
    fn hand_over(&self, stream: Stream);
}

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
    /// Threads that drive connections: the runtime `serve` runs on, and `io_threads - 1`
    /// threads of their own, each with a current-thread runtime; each accepted connection goes
    /// to the one driving the fewest. Default 1 (the caller's runtime only). Run `serve` on a
    /// runtime with one worker when this is more than 1: a connection then stays on its thread,
    /// and a handler's write wakes only that thread, where a runtime with several workers also
    /// wakes an idle one to look for work, a futex hand-off per wake.
    pub io_threads: usize,
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
            io_threads: 1,
        }
    }
}

impl ServerConfig {
    pub(crate) fn connection_config(&self) -> ConnectionConfig {
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

/// What every connection of a server shares.
pub(crate) struct Context {
    pub(crate) config: ServerConfig,
    pub(crate) conn_config: ConnectionConfig,
    pub(crate) handler: Arc<dyn Handler>,
    tracker: Tracker,
    /// `true` once shutdown has begun: connections close when idle.
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) hand_over: Option<Arc<dyn HandOver>>,
    io: IoThreads,
}

/// The runtimes connections are driven on (`ServerConfig::io_threads`): the one `serve` runs
/// on (index 0) and the extra threads', with how many connections each drives.
struct IoThreads {
    extra: Vec<tokio::runtime::Handle>,
    /// Connections driven by each, the `serve` runtime first.
    load: Vec<AtomicUsize>,
    /// Dropped with the server's `Context`, once `serve` has returned and the last connection
    /// has ended: the extra threads then end (one still driving a connection after a drain
    /// that ran out of time goes on driving it, as the serving runtime does).
    _stop: Vec<oneshot::Sender<()>>,
}

impl IoThreads {
    /// Starts `n - 1` threads with a runtime each. One that cannot start is left out.
    fn start(n: usize) -> IoThreads {
        let mut extra = Vec::new();
        let mut stop = Vec::new();
        for i in 1..n.max(1) {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    warn!(error = %e, "cannot start an I/O runtime: serving with fewer threads");
                    break;
                }
            };
            let handle = runtime.handle().clone();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let started = std::thread::Builder::new()
                .name(format!("wfcgi-io-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    })
                });
            if let Err(e) = started {
                warn!(error = %e, "cannot start an I/O thread: serving with fewer threads");
                break;
            }
            extra.push(handle);
            stop.push(stop_tx);
        }
        IoThreads {
            load: (0..=extra.len()).map(|_| AtomicUsize::new(0)).collect(),
            extra,
            _stop: stop,
        }
    }

    /// The index of the runtime driving the fewest connections, counted as one more.
    fn pick(&self) -> usize {
        let least = (0..self.load.len())
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[least].fetch_add(1, Ordering::Relaxed);
        least
    }
}

impl Context {
    /// Whether a draining connection goes to [`HandOver`] once idle, rather than closing.
    pub(crate) fn hands_over(&self) -> bool {
        self.hand_over.as_ref().is_some_and(|h| h.wanted())
    }

    /// What the driver gave back: a connection to hand over.
    fn finish_connection(&self, returned: crate::driver::Returned<Stream>) {
        if returned.hand_over {
            if let Some(h) = &self.hand_over {
                debug!("handing the connection over");
                h.hand_over(returned.io);
            }
            return;
        }
        let mut stream = returned.io;
        if returned.close_asked {
            stream.closed_as_asked();
        }
    }
}

impl Context {
    /// A context for driving connections outside a `Server` (the driver's tests).
    #[cfg(test)]
    pub(crate) fn for_test(
        config: ServerConfig,
        handler: Arc<dyn Handler>,
    ) -> (Context, watch::Sender<bool>) {
        let (drain_tx, draining) = watch::channel(false);
        let ctx = Context {
            conn_config: config.connection_config(),
            config,
            handler,
            tracker: Tracker::default(),
            draining,
            hand_over: None,
            io: IoThreads::start(1),
        };
        (ctx, drain_tx)
    }
}

pub struct Server {
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    hand_over: Option<Arc<dyn HandOver>>,
}

impl Server {
    pub fn new(config: ServerConfig, handler: Arc<dyn Handler>) -> Self {
        Server {
            config,
            handler,
            hand_over: None,
        }
    }

    /// When draining (and `hand_over` wants it), kept-alive connections go to `hand_over`
    /// between requests instead of being closed. The inherited fd-0 connection never does.
    pub fn hand_over_to(mut self, hand_over: Arc<dyn HandOver>) -> Self {
        self.hand_over = Some(hand_over);
        self
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
            io: IoThreads::start(self.config.io_threads),
            config: self.config,
            handler: self.handler,
            tracker: Tracker::default(),
            draining: drain_rx,
            hand_over: self.hand_over,
        });
        let permits = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
        let only_single = listeners.iter().all(Listener::is_single_connection);
        let mut accepting = Vec::new();
        for listener in listeners {
            info!(listen = %listener.local_addr(), "accepting FastCGI connections");
            ctx.tracker.listeners.fetch_add(1, Ordering::AcqRel);
            if listener.wants_own_thread() {
                match spawn_accept_thread(listener, ctx.clone(), permits.clone()) {
                    Ok(handle) => accepting.push(handle),
                    Err(e) => {
                        warn!(error = %e, "cannot start the thread that serves the listener");
                        ctx.tracker.done(&ctx.tracker.listeners);
                    }
                }
                continue;
            }
            let (ended_tx, ended) = oneshot::channel();
            let loop_ = accept_loop(listener, ctx.clone(), permits.clone(), false);
            let task = tokio::spawn(async move {
                let _ended = ended_tx;
                loop_.await
            });
            accepting.push(Accepting {
                abort: task.abort_handle(),
                ended,
            });
        }
        let all_closed = ctx.tracker.wait_until(|t| {
            t.listeners.load(Ordering::Acquire) == 0 && t.connections.load(Ordering::Acquire) == 0
        });
        tokio::select! {
            _ = shutdown => {}
            _ = all_closed, if only_single => return Ok(ServeOutcome::ConnectionClosed),
        }
        // Stop accepting: dropping the accept tasks drops their listeners (and Unix socket files).
        // An accept loop running on another thread at this moment stops only at its next
        // await, and may take (and count) a connection before then: wait until each has
        // stopped, so that none is left out of the drain below and closed unanswered.
        for task in &accepting {
            task.abort.abort();
        }
        for task in accepting {
            let _ = task.ended.await;
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

/// An accept loop, running: `ended` resolves once its future has finished or been dropped (its
/// sender goes with the future), after which it accepts nothing more.
struct Accepting {
    abort: tokio::task::AbortHandle,
    ended: oneshot::Receiver<()>,
}

/// A connection's hold on the server: its permit and its place in the count (and, once given
/// one, in its I/O thread's), released however the connection ends (or if its thread cannot
/// start).
struct Release {
    ctx: Arc<Context>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The index of its I/O thread in `IoThreads`.
    io_thread: Option<usize>,
}

impl Drop for Release {
    fn drop(&mut self) {
        drop(self.permit.take());
        if let Some(i) = self.io_thread {
            self.ctx.io.load[i].fetch_sub(1, Ordering::Relaxed);
        }
        self.ctx.tracker.done(&self.ctx.tracker.connections);
    }
}

/// Runs `listener`'s accept loop, and the connections it accepts, on a thread of its own with a
/// current-thread runtime: the Windows named pipe, whose handle belongs to the runtime that
/// registers it, and whose requests run inline on that thread (or whose blocking I/O, where
/// the handle is not overlapped, holds up no one else). Aborting the returned handle stops
/// accepting; the thread ends when the connections it drives have.
fn spawn_accept_thread(
    listener: Listener,
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
) -> io::Result<Accepting> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ended_tx, ended) = oneshot::channel();
    let loop_ = accept_loop(listener, ctx.clone(), permits, true);
    let task = runtime.spawn(async move {
        let _ended = ended_tx;
        loop_.await
    });
    let abort = task.abort_handle();
    std::thread::Builder::new()
        .name("wfcgi-conn".into())
        .stack_size(transport::INLINE_THREAD_STACK)
        .spawn(move || {
            runtime.block_on(async {
                let _ = task.await;
                // Its connections were spawned on this runtime: it runs until they end (it
                // serves the process's only listener, IIS's pipe, so the count is theirs).
                ctx.tracker
                    .wait_until(|t| t.connections.load(Ordering::Acquire) == 0)
                    .await;
            });
        })?;
    Ok(Accepting { abort, ended })
}

/// Accepts until the listener is done or the task is aborted. `own_thread`: this runs on a
/// thread of its own (`spawn_accept_thread`), so connections run here too, inline if the
/// handler serves so.
async fn accept_loop(
    mut listener: Listener,
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
    own_thread: bool,
) {
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
            Ok(Some(accepted)) => accepted,
            // A single inherited connection taken, or the web server closed the IIS pipe.
            Ok(None) => return,
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
        let mut release = Release {
            ctx: ctx.clone(),
            permit: Some(permit),
            io_thread: None,
        };
        // Debug level: entered at every poll of the connection's task, an enabled span costs a
        // registry lookup each time (7% of the server's CPU behind nginx at info level).
        let span = tracing::debug_span!("conn", %peer);
        // Inline needs a thread that does nothing else and a writer for the transport (none
        // for a Windows socket): otherwise the connection is driven on the runtime like any
        // other.
        let writer = (ctx.handler.serves_inline() && (single || own_thread))
            .then(|| transport::Writer::for_stream(&stream))
            .flatten();
        if writer.is_some() && !own_thread {
            // The connection went with the closure: if the thread cannot start, dropping the
            // closure released it, and there is nothing left to serve.
            let drive = move |stream, writer| {
                async move {
                    debug!("connection opened (served on its own thread)");
                    let returned = run_connection(stream, peer, &release.ctx, writer).await;
                    release.ctx.finish_connection(returned);
                    debug!("connection closed");
                    drop(release);
                }
                .instrument(span)
            };
            if let Err(e) = transport::spawn_driver_thread(stream, drive) {
                warn!(error = %e, "cannot start the connection's thread");
            }
            continue;
        }
        // A thread of its own drives its connections itself.
        release.io_thread = (!own_thread).then(|| ctx.io.pick());
        let io = release.io_thread.unwrap_or(0);
        let drive = async move {
            // On another runtime's thread, the socket is registered with that runtime.
            let stream = match io {
                0 => stream,
                _ => match stream.rebind() {
                    Ok(stream) => stream,
                    Err(e) => {
                        warn!(error = %e, "cannot move the connection to its I/O thread");
                        return;
                    }
                },
            };
            match writer {
                Some(_) => debug!("connection opened (requests run inline on this thread)"),
                None => debug!("connection opened"),
            }
            let returned = run_connection(stream, peer, &release.ctx, writer).await;
            release.ctx.finish_connection(returned);
            debug!("connection closed");
            drop(release);
        }
        .instrument(span);
        match io {
            0 => drop(tokio::spawn(drive)),
            _ => drop(ctx.io.extra[io - 1].spawn(drive)),
        }
    }
}
