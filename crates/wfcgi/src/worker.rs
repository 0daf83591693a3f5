//! One worker process under the supervisor (`supervisor`): the same binary, started again
//! with the same arguments and `WFCGI_WORKER` in its environment, which names the descriptors
//! it inherited: its end of a control socket, and the listening sockets the supervisor opened.
//!
//! The worker resolves its settings as any `wfcgi serve` would (so a reload reads web.config
//! again), starts the bridge, loads the app, and only then tells the supervisor it is ready.
//! It serves until the supervisor says `drain`, the supervisor goes away (the control socket
//! closes), or SIGTERM/SIGINT; then it finishes what it has within the shutdown grace.
//!
//! The control protocol is lines of text. Worker to supervisor: `ready` (the app loaded),
//! `unloadable` (it did not: requests get 500 and retry the load), `busy` (the first request
//! was taken), `retire REASON` (a recycling limit was reached: start my replacement). The
//! supervisor to the worker: `drain` (stop: close kept-alive connections between requests), or
//! `drain hand-over` (a recycle or reload: hand them over instead, see `handover`).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::settings::{Settings, Workers};

/// The environment variable that makes a process a worker:
/// `CONTROL_FD;LISTEN_FD,LISTEN_FD...;HANDOVER_FD;SLATE_FD;SLOT`.
pub(crate) const ENV: &str = "WFCGI_WORKER";

/// How often resident memory is sampled for `WFCGI_MAX_RSS_BYTES`.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the supervisor handed down.
#[derive(Debug)]
pub(crate) struct Inherited {
    control: OwnedFd,
    listeners: Vec<OwnedFd>,
    handover: OwnedFd,
    /// The table of running requests the supervisor reads if this worker dies (`slate`).
    slate: OwnedFd,
    /// Which of the supervisor's slots this worker serves in (0 for the first).
    pub(crate) slot: usize,
}

impl Inherited {
    /// Takes `WFCGI_WORKER` out of the environment (the app and its subprocesses never see it)
    /// and the descriptors it names. Call while the process has one thread.
    pub(crate) fn take() -> Result<Option<Inherited>, String> {
        let Some(text) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        std::env::remove_var(ENV);
        let text = text.to_string_lossy();
        let bad = || {
            format!(
                "{ENV}={text:?} is not what the supervisor sets (CONTROL_FD;LISTEN_FD,...;HANDOVER_FD;SLATE_FD;SLOT): \
                 {ENV} is set by `wfcgi serve --processes` for its workers only; unset it"
            )
        };
        let mut parts = text.split(';');
        let (Some(control), Some(listeners), Some(handover), Some(slate), Some(slot), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let fd = |part: &str| -> Result<OwnedFd, String> {
            let fd: RawFd = part.trim().parse().map_err(|_| bad())?;
            // SAFETY: F_GETFD only reads the descriptor table; an unknown number fails.
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                return Err(bad());
            }
            // SAFETY: the supervisor passed this descriptor for this process to own, and it
            // is open (checked above); nothing else in this process knows its number.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // Not passed on to anything this process starts (the app's subprocesses).
            // SAFETY: as above; setting FD_CLOEXEC changes only this descriptor's flags.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            Ok(owned)
        };
        let control = fd(control)?;
        let handover = fd(handover)?;
        let slate = fd(slate)?;
        let slot = slot.trim().parse().map_err(|_| bad())?;
        let listeners = listeners
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(fd)
            .collect::<Result<Vec<_>, _>>()?;
        if listeners.is_empty() {
            return Err(bad());
        }
        Ok(Some(Inherited {
            control,
            listeners,
            handover,
            slate,
            slot,
        }))
    }
}

/// What the worker tells the supervisor.
#[derive(Debug)]
enum Note {
    Ready,
    Unloadable,
    Busy,
    Retire(String),
}

impl Note {
    fn line(&self) -> String {
        match self {
            Note::Ready => "ready\n".into(),
            Note::Unloadable => "unloadable\n".into(),
            Note::Busy => "busy\n".into(),
            Note::Retire(why) => format!("retire {}\n", why.replace('\n', " ")),
        }
    }
}

/// The worker's life: the bridge started and the app loaded before `ready`, then serving.
pub(crate) fn run(
    inherited: Inherited,
    settings: &Settings,
    runtime: tokio::runtime::Runtime,
) -> Result<(fastcgi::ServeOutcome, bool), String> {
    let Inherited {
        control,
        listeners,
        handover,
        slate,
        slot: _,
    } = inherited;
    let slate = crate::slate::Slate::open(slate)
        .map_err(|e| format!("the supervisor's table of running requests: {e}"))?;
    runtime.block_on(async {
        // Installed first: SIGTERM while the app loads must stop the worker cleanly.
        let signal = crate::signals::shutdown_signal();
        let control = std::os::unix::net::UnixStream::from(control);
        control
            .set_nonblocking(true)
            .map_err(|e| format!("the supervisor's control socket: {e}"))?;
        let control = tokio::net::UnixStream::from_std(control)
            .map_err(|e| format!("the supervisor's control socket: {e}"))?;
        let (control_rx, control_tx) = control.into_split();
        let (notes, notes_rx) = mpsc::unbounded_channel();
        tokio::spawn(tell_supervisor(control_tx, notes_rx));

        let mut listeners = listeners
            .into_iter()
            .map(fastcgi::Listener::from_listening_fd)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the listening socket from the supervisor: {e}"))?;
        let handover = crate::handover::WorkerSide::new(handover)
            .map_err(|e| format!("the supervisor's hand-over socket: {e}"))?;

        let config = settings.bridge.clone();
        let bridge = tokio::task::spawn_blocking(move || {
            let bridge = wsgi::Bridge::start(config)?;
            bridge.mirror_running(Box::new(slate));
            let loaded = bridge.load_app().is_ok();
            Ok::<_, wsgi::StartError>((bridge, loaded))
        })
        .await
        .map_err(|e| format!("starting the bridge panicked: {e}"))?
        .map_err(|e| e.to_string())?;
        let (bridge, loaded) = bridge;
        let bridge = Arc::new(bridge);
        let _ = notes.send(if loaded {
            Note::Ready
        } else {
            Note::Unloadable
        });
        if loaded {
            info!("app loaded: taking requests");
        }

        let handler = Arc::new(Counting::new(
            bridge.clone(),
            &settings.workers,
            notes.clone(),
        ));
        // A stuck Python thread cannot be stopped: a fresh worker takes new work, and this one
        // is ended after the shutdown grace if the thread never returns.
        let retiring = Arc::downgrade(&handler);
        bridge.on_request_timeout(Box::new(move |timed_out| {
            if let Some(handler) = retiring.upgrade() {
                handler.retire(timed_out.what.to_owned());
            }
        }));
        if let Some(limit) = settings.workers.max_rss_bytes {
            tokio::spawn(watch_memory(limit, handler.clone()));
        }
        let asked = handover.clone();
        let stop = async move {
            tokio::select! {
                () = signal => {}
                hand_over = supervisor_says_stop(control_rx) => if hand_over {
                    asked.want();
                },
            }
        };
        listeners.push(handover.adopted());
        let server = fastcgi::Server::new(settings.server_config(), handler).hand_over_to(handover);
        crate::serve_bridge(settings, server, listeners, bridge, stop).await
    })
}

/// Writes the worker's notes to the control socket, one line each.
async fn tell_supervisor(
    mut control: tokio::net::unix::OwnedWriteHalf,
    mut notes: mpsc::UnboundedReceiver<Note>,
) {
    while let Some(note) = notes.recv().await {
        if control.write_all(note.line().as_bytes()).await.is_err() {
            // The supervisor is gone; `supervisor_says_stop` sees it too.
            return;
        }
    }
}

/// Completes when the supervisor says `drain`, or is gone: whether kept-alive connections
/// are to be handed over.
async fn supervisor_says_stop(control: tokio::net::unix::OwnedReadHalf) -> bool {
    let mut lines = BufReader::new(control).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() == "drain" => {
                info!(
                    "the supervisor asked this worker to stop: finishing the requests in progress"
                );
                return false;
            }
            Ok(Some(line)) if line.trim() == "drain hand-over" => {
                info!(
                    "the supervisor asked this worker to stop: finishing the requests in \
                     progress; kept-alive connections go to the other workers"
                );
                return true;
            }
            Ok(Some(line)) => warn!("unknown message from the supervisor: {line:?}"),
            Ok(None) | Err(_) => {
                warn!("the supervisor is gone: finishing the requests in progress, then exiting");
                return false;
            }
        }
    }
}

/// The bridge, counting the requests it is given: the first is reported (`busy`: a worker
/// that dies later did not die at start-up), and at `WFCGI_MAX_REQUESTS` the worker asks to
/// be replaced. It goes on serving until its replacement is ready and the supervisor says
/// `drain`.
struct Counting {
    bridge: Arc<wsgi::Bridge>,
    taken: AtomicU64,
    /// `WFCGI_MAX_REQUESTS` plus this worker's jitter.
    limit: Option<u64>,
    retiring: AtomicBool,
    notes: mpsc::UnboundedSender<Note>,
}

impl Counting {
    fn new(
        bridge: Arc<wsgi::Bridge>,
        workers: &Workers,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Counting {
        let limit = workers
            .max_requests
            .map(|n| n + jitter(workers.max_requests_jitter));
        if let Some(limit) = limit {
            info!(max_requests = limit, "recycled after {limit} requests");
        }
        Counting {
            bridge,
            taken: AtomicU64::new(0),
            limit,
            retiring: AtomicBool::new(false),
            notes,
        }
    }

    fn count(&self) {
        let n = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            let _ = self.notes.send(Note::Busy);
        }
        if self.limit == Some(n) {
            self.retire(format!("it has taken {n} requests (WFCGI_MAX_REQUESTS)"));
        }
    }

    /// Asks for a replacement, once.
    fn retire(&self, why: String) {
        if !self.retiring.swap(true, Ordering::AcqRel) {
            info!("recycling this worker: {why}");
            let _ = self.notes.send(Note::Retire(why));
        }
    }
}

impl fastcgi::Handler for Counting {
    fn handle(&self, request: fastcgi::Request) {
        self.count();
        self.bridge.handle(request);
    }

    fn serves_inline(&self) -> bool {
        self.bridge.serves_inline()
    }

    fn handle_inline(&self, request: fastcgi::Request) -> Option<fastcgi::Request> {
        self.count();
        let back = self.bridge.handle_inline(request);
        if back.is_some() {
            // Given back to go through `handle`, which counts it.
            self.taken.fetch_sub(1, Ordering::Relaxed);
        }
        back
    }
}

/// A random number in `0..=max`, different in each worker.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() % (max + 1)
}

/// Samples resident memory; past `limit`, asks for a replacement.
async fn watch_memory(limit: u64, handler: Arc<Counting>) {
    let mut tick = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    loop {
        tick.tick().await;
        match resident_bytes() {
            Some(rss) if rss > limit => {
                handler.retire(format!(
                    "its resident memory is {} MiB, past WFCGI_MAX_RSS_BYTES ({} MiB)",
                    rss >> 20,
                    limit >> 20
                ));
                return;
            }
            Some(_) => {}
            None => {
                warn!("cannot read this process's resident memory: WFCGI_MAX_RSS_BYTES does not apply");
                return;
            }
        }
    }
}

/// This process's resident set size (Linux: `/proc/self/statm`, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
