//! Starting the bridge on the first request, for stdin mode.
//!
//! IIS starts `wfcgi.exe` with no arguments; the app directory (and so web.config) is only
//! known from the first request's `APPL_PHYSICAL_PATH` param. [`LazyBridge`] is the server's
//! handler until then: the first request starts the bridge on a dedicated thread (interpreter
//! start-up takes 100 ms or more and must not hold a Tokio worker), requests arriving meanwhile
//! wait in a bounded queue, and all of them are handed to the bridge once it runs.
//!
//! When start-up fails, every request is answered 500 (the reason in the body only with debug
//! responses; always in the log). Whether a later request tries again depends on the failure:
//! bad settings or a missing venv are retried (at most every [`RETRY_INTERVAL`]), so fixing
//! web.config is enough; a failure after the interpreter was initialised is final, because
//! CPython cannot be initialised twice in one process: recycle the app pool.
//!
//! The state machine ([`LazyCore`]) is generic over the request and handler types so that it
//! is tested without sockets or Python.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, info};

/// Requests held while the bridge starts. IIS sends one request per process at a time; a
/// listening socket inherited from mod_fcgid may bring a burst. Past this, 503.
pub(crate) const MAX_PENDING: usize = 256;

/// How soon after a retryable failure a request may try starting again: often enough that a
/// fixed web.config is picked up at once, rarely enough that a broken one does not cost a
/// web.config parse per request.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Why the bridge did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartFailure {
    pub message: String,
    /// Whether starting again in this process can succeed.
    pub retryable: bool,
    /// Whether to show `message` in responses.
    pub debug_responses: bool,
    /// What a visitor may be shown without debug output: the setting and the fix, no paths.
    pub public: Option<String>,
}

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Admit<H, R> {
    /// The bridge runs: hand the request to it.
    Forward(Arc<H>, R),
    /// Queued; this request begins a start-up: the caller starts it.
    Start,
    /// Queued behind a start-up in progress.
    Queued,
    /// Answer it now.
    Reject(R, Rejection),
}

/// Why a request is answered without the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Too many requests waiting for start-up: 503.
    Busy,
    /// Start-up failed: 500.
    Failed(Arc<StartFailure>),
}

/// What a finished start-up leaves to do.
#[derive(Debug)]
pub(crate) enum Started<H, R> {
    Ready(Arc<H>, Vec<R>),
    Failed(Arc<StartFailure>, Vec<R>),
}

enum State<H, R> {
    Idle,
    Starting {
        pending: VecDeque<R>,
    },
    Ready(Arc<H>),
    Failed {
        failure: Arc<StartFailure>,
        retry_at: Option<Instant>,
    },
}

/// The lazy start-up state machine.
pub(crate) struct LazyCore<H, R> {
    state: Mutex<State<H, R>>,
    max_pending: usize,
    retry_interval: Duration,
}

impl<H, R> LazyCore<H, R> {
    pub(crate) fn new(max_pending: usize, retry_interval: Duration) -> Self {
        LazyCore {
            state: Mutex::new(State::Idle),
            max_pending,
            retry_interval,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<H, R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides what happens to a request arriving at `now`.
    pub(crate) fn admit(&self, request: R, now: Instant) -> Admit<H, R> {
        let mut state = self.lock();
        match &mut *state {
            State::Ready(handler) => Admit::Forward(handler.clone(), request),
            State::Starting { pending } if pending.len() >= self.max_pending => {
                Admit::Reject(request, Rejection::Busy)
            }
            State::Starting { pending } => {
                pending.push_back(request);
                Admit::Queued
            }
            State::Failed { retry_at, .. } if retry_at.is_some_and(|at| now >= at) => {
                *state = State::Starting {
                    pending: VecDeque::from([request]),
                };
                Admit::Start
            }
            State::Failed { failure, .. } => {
                Admit::Reject(request, Rejection::Failed(failure.clone()))
            }
            State::Idle => {
                *state = State::Starting {
                    pending: VecDeque::from([request]),
                };
                Admit::Start
            }
        }
    }

    /// Records the outcome of a start-up and returns the requests that waited for it.
    pub(crate) fn finish(&self, result: Result<H, StartFailure>, now: Instant) -> Started<H, R> {
        let mut state = self.lock();
        let pending = match std::mem::replace(&mut *state, State::Idle) {
            State::Starting { pending } => pending.into_iter().collect(),
            _ => Vec::new(),
        };
        match result {
            Ok(handler) => {
                let handler = Arc::new(handler);
                *state = State::Ready(handler.clone());
                Started::Ready(handler, pending)
            }
            Err(failure) => {
                let retry_at = failure.retryable.then(|| now + self.retry_interval);
                let failure = Arc::new(failure);
                *state = State::Failed {
                    failure: failure.clone(),
                    retry_at,
                };
                Started::Failed(failure, pending)
            }
        }
    }

    /// The running handler, if start-up succeeded.
    pub(crate) fn handler(&self) -> Option<Arc<H>> {
        match &*self.lock() {
            State::Ready(handler) => Some(handler.clone()),
            _ => None,
        }
    }
}

/// Starts the real handler; runs on a dedicated thread.
pub(crate) trait Starter: Send + Sync + 'static {
    type Handler: fastcgi::Handler;

    /// `appl_physical_path`: the `APPL_PHYSICAL_PATH` param of the request that triggered the
    /// start, if it had one.
    fn start(&self, appl_physical_path: Option<PathBuf>) -> Result<Self::Handler, StartFailure>;
}

/// The server's handler in stdin mode.
pub(crate) struct LazyBridge<S: Starter> {
    core: Arc<LazyCore<S::Handler, fastcgi::Request>>,
    starter: Arc<S>,
    runtime: tokio::runtime::Handle,
}

impl<S: Starter> LazyBridge<S> {
    /// Must be called inside the Tokio runtime that runs the server.
    pub(crate) fn new(starter: S) -> Self {
        LazyBridge {
            core: Arc::new(LazyCore::new(MAX_PENDING, RETRY_INTERVAL)),
            starter: Arc::new(starter),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The started handler, for shutdown.
    pub(crate) fn started(&self) -> Option<Arc<S::Handler>> {
        self.core.handler()
    }

    fn spawn_start(&self, appl_physical_path: Option<PathBuf>) {
        let core = self.core.clone();
        let starter = self.starter.clone();
        let runtime = self.runtime.clone();
        let run = move || {
            let result = starter.start(appl_physical_path);
            // Handing requests over (and answering them) spawns tasks: enter the runtime.
            let _entered = runtime.enter();
            match core.finish(result, Instant::now()) {
                Started::Ready(handler, pending) => {
                    for request in pending {
                        fastcgi::Handler::handle(&*handler, request);
                    }
                }
                Started::Failed(failure, pending) => {
                    error!(
                        retry = failure.retryable,
                        "the app could not be started: {}", failure.message
                    );
                    if !failure.retryable {
                        error!("this process cannot start Python again: recycle the app pool or restart wfcgi after fixing the cause");
                    }
                    for request in pending {
                        reply(request, Rejection::Failed(failure.clone()));
                    }
                }
            }
        };
        let spawned = std::thread::Builder::new()
            .name("wfcgi-start".to_string())
            .spawn(run);
        if let Err(e) = spawned {
            let failure = StartFailure {
                message: format!("cannot start a thread to start the app: {e}"),
                retryable: true,
                debug_responses: false,
                public: None,
            };
            if let Started::Failed(failure, pending) =
                self.core.finish(Err(failure), Instant::now())
            {
                error!("{}", failure.message);
                for request in pending {
                    reply(request, Rejection::Failed(failure.clone()));
                }
            }
        }
    }
}

impl<S: Starter> fastcgi::Handler for LazyBridge<S> {
    fn handle(&self, request: fastcgi::Request) {
        let appl_physical_path = request
            .params()
            .get(b"APPL_PHYSICAL_PATH")
            .filter(|p| !p.is_empty())
            .map(path_from_param);
        match self.core.admit(request, Instant::now()) {
            Admit::Forward(handler, request) => fastcgi::Handler::handle(&*handler, request),
            Admit::Queued => {}
            Admit::Start => {
                info!(
                    app_dir = ?appl_physical_path,
                    "first request: starting the app"
                );
                self.spawn_start(appl_physical_path);
            }
            Admit::Reject(request, why) => reply(request, why),
        }
    }

    fn serves_inline(&self) -> bool {
        true
    }

    /// Once the app runs, its handler takes the request; until then it goes through `handle`
    /// (which starts the app, or queues behind the start).
    fn handle_inline(&self, request: fastcgi::Request) -> Option<fastcgi::Request> {
        match self.core.handler() {
            Some(handler) => fastcgi::Handler::handle_inline(&*handler, request),
            None => Some(request),
        }
    }
}

/// A param's bytes as a path. IIS sends server variables in the ANSI code page; a non-UTF-8
/// path is decoded lossily (an app directory outside it cannot be named in it anyway).
fn path_from_param(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// The CGI response for a rejected request (`id`: its request id, shown on the page).
pub(crate) fn rejection_response(why: &Rejection, id: Option<&str>) -> Bytes {
    let (status, body) = match why {
        Rejection::Busy => (
            "503 Service Unavailable",
            "503 Service Unavailable\n\nThe application is starting and too many requests are waiting. Try again shortly.\n".to_string(),
        ),
        Rejection::Failed(failure) if failure.debug_responses => (
            "500 Internal Server Error",
            format!(
                "500 Internal Server Error\n\nwfcgi could not start the application:\n\n{}\n",
                failure.message
            ),
        ),
        Rejection::Failed(failure) => (
            "500 Internal Server Error",
            match &failure.public {
                Some(public) => format!("500 Internal Server Error\n\n{public}\n"),
                None => "500 Internal Server Error\n\nThe application could not be started. The details are in the server's log (WSGI_LOG).\n".to_string(),
            },
        ),
    };
    wsgi::error_page_for(status, &body, id)
}

/// Answers a rejected request; never waits (the web server being gone ends it either way).
fn reply(request: fastcgi::Request, why: Rejection) {
    let id = wsgi::request_id::request_id(request.params());
    let _span = tracing::error_span!("request", id = %id).entered();
    let (_params, _body, response) = request.into_parts();
    response.finish_with(rejection_response(&why, Some(&id.to_string())), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(retryable: bool) -> StartFailure {
        StartFailure {
            message: "bad".to_string(),
            retryable,
            debug_responses: false,
            public: None,
        }
    }

    #[test]
    fn first_request_starts_later_ones_queue_then_all_forward() {
        let core: LazyCore<&str, u32> = LazyCore::new(2, RETRY_INTERVAL);
        let now = Instant::now();
        assert!(matches!(core.admit(1, now), Admit::Start));
        assert!(matches!(core.admit(2, now), Admit::Queued));
        assert!(matches!(
            core.admit(3, now),
            Admit::Reject(3, Rejection::Busy)
        ));
        assert!(core.handler().is_none());
        match core.finish(Ok("bridge"), now) {
            Started::Ready(handler, pending) => {
                assert_eq!(*handler, "bridge");
                assert_eq!(pending, [1, 2]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(core.admit(4, now), Admit::Forward(h, 4) if *h == "bridge"));
        assert_eq!(core.handler().map(|h| *h), Some("bridge"));
    }

    #[test]
    fn a_retryable_failure_is_retried_after_the_interval() {
        let core: LazyCore<&str, u32> = LazyCore::new(8, Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(matches!(core.admit(1, t0), Admit::Start));
        assert!(matches!(core.admit(2, t0), Admit::Queued));
        match core.finish(Err(failure(true)), t0) {
            Started::Failed(f, pending) => {
                assert!(f.retryable);
                assert_eq!(pending, [1, 2]);
            }
            other => panic!("{other:?}"),
        }
        // Within the interval: answered 500 at once.
        let soon = t0 + Duration::from_secs(1);
        assert!(matches!(
            core.admit(3, soon),
            Admit::Reject(3, Rejection::Failed(f)) if f.message == "bad"
        ));
        // After it: a new start-up.
        let later = t0 + Duration::from_secs(2);
        assert!(matches!(core.admit(4, later), Admit::Start));
        assert!(matches!(core.admit(5, later), Admit::Queued));
        match core.finish(Ok("bridge"), later) {
            Started::Ready(_, pending) => assert_eq!(pending, [4, 5]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_final_failure_is_never_retried() {
        let core: LazyCore<&str, u32> = LazyCore::new(8, Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(matches!(core.admit(1, t0), Admit::Start));
        assert!(matches!(
            core.finish(Err(failure(false)), t0),
            Started::Failed(_, _)
        ));
        let much_later = t0 + Duration::from_secs(3600);
        assert!(matches!(
            core.admit(2, much_later),
            Admit::Reject(2, Rejection::Failed(f)) if !f.retryable
        ));
    }

    #[test]
    fn responses() {
        let text = |why| String::from_utf8(rejection_response(&why, None).to_vec()).expect("utf-8");
        let hidden = text(Rejection::Failed(Arc::new(StartFailure {
            message: "secret path".to_string(),
            retryable: true,
            debug_responses: false,
            public: None,
        })));
        assert!(hidden.starts_with(
            "Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
        ));
        assert!(!hidden.contains("secret path"), "{hidden}");
        let shown = text(Rejection::Failed(Arc::new(StartFailure {
            message: "secret path".to_string(),
            retryable: true,
            debug_responses: true,
            public: None,
        })));
        assert!(shown.contains("secret path"), "{shown}");
        let busy = text(Rejection::Busy);
        assert!(busy.starts_with("Status: 503 Service Unavailable\r\n"));
        // Content-Length matches the body.
        for response in [hidden, shown, busy] {
            let (head, body) = response.split_once("\r\n\r\n").expect("head");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("length")
                .parse()
                .expect("number");
            assert_eq!(length, body.len());
        }
    }
}
