//! Requests that run too long, and where Python is in each running request.
//!
//! Every request being run is in [`Running`] with the Python thread running it. With a
//! request timeout, a watchdog thread checks them: one past the limit is ended from outside
//! (`fastcgi::Expiry`: a 504 if nothing was sent, else its connection closed), and the Python
//! stack of its thread is logged, every frame with file:line and the source line. The thread
//! itself cannot be stopped; the bridge's owner is told ([`Bridge::on_request_timeout`]), so
//! that a worker process can be replaced. [`Running::log_stacks`] logs every running
//! request's stack (SIGUSR1).
//!
//! Reading a stack needs the GIL. A thread stuck in native code that holds it would block the
//! reader for ever, so stacks are read on a helper thread, waited for a few seconds at most.
//!
//! [`Bridge::on_request_timeout`]: crate::Bridge::on_request_timeout

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use bytes::Bytes;

use crate::request_id::{Head, RequestId};
use crate::response::error_page_for;

/// How often the watchdog looks (a timeout fires up to this late).
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// The longest wait for the GIL to read stacks.
const STACK_WAIT: Duration = Duration::from_secs(3);

/// A request being run. Its method and path share the params' memory: registering copies
/// nothing (this is on every request's path).
struct Entry {
    /// `threading.get_ident()` of the thread running it.
    thread: u64,
    started: Instant,
    method: Bytes,
    /// `REQUEST_URI`, else `PATH_INFO`.
    path: Bytes,
    id: RequestId,
    expiry: fastcgi::Expiry,
    expired: bool,
}

impl Entry {
    /// `GET /path?query`, for the log.
    fn what(&self) -> String {
        format!(
            "{} {}",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.path)
        )
    }
}

/// The registry's keys are a counter: hashing them is not needed.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Keyed<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A request that ran past the request timeout, as the timeout hook is told of it.
pub struct TimedOut<'a> {
    /// `request 12 (GET /path)`.
    pub what: &'a str,
    /// It runs inline on its connection's thread: that connection can take nothing more until
    /// the app returns, so the process had best end now (IIS starts another).
    pub holds_connection: bool,
}

/// Called (on the watchdog's thread) for each request that runs past the request timeout.
pub type TimeoutHook = Box<dyn Fn(&TimedOut<'_>) + Send + Sync>;

/// Told, on the thread running it, when each request starts and ends: a copy of what runs
/// that outlives the process (a worker's supervisor reads it after a crash).
pub trait Mirror: Send + Sync {
    /// `what`: `GET /path (request ID)`, formatted by the mirror into its own space.
    fn begin(&self, key: u64, what: std::fmt::Arguments<'_>);
    fn end(&self);
}

#[derive(Default)]
pub(crate) struct Running {
    entries: Mutex<Keyed<Entry>>,
    next: AtomicU64,
    hook: OnceLock<TimeoutHook>,
    mirror: OnceLock<Box<dyn Mirror>>,
}

/// Takes its request out of [`Running`] when the request's run ends, however it ends.
pub(crate) struct Registered<'a> {
    running: &'a Running,
    key: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(mirror) = self.running.mirror.get() {
            mirror.end();
        }
        self.running.lock().remove(&self.key);
    }
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Keyed<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that the calling thread (attached: `py`) runs `request`, until the guard drops.
    pub(crate) fn register<'a>(
        &'a self,
        py: Python<'_>,
        params: &fastcgi::Params,
        head: &Head<'_>,
        id: &RequestId,
        expiry: fastcgi::Expiry,
    ) -> Registered<'a> {
        // Slices of the params' own buffer: no copy.
        let stream = params.stream();
        let part = |v: &[u8]| {
            if v.is_empty() {
                Bytes::new()
            } else {
                stream.slice_ref(v)
            }
        };
        let path = part(head.path());
        let key = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry {
            thread: thread_ident(py),
            started: Instant::now(),
            method: part(head.method),
            path,
            id: id.clone(),
            expiry,
            expired: false,
        };
        if let Some(mirror) = self.mirror.get() {
            mirror.begin(
                key,
                format_args!(
                    "{} {} (request {id})",
                    String::from_utf8_lossy(&entry.method),
                    String::from_utf8_lossy(&entry.path)
                ),
            );
        }
        self.lock().insert(key, entry);
        Registered { running: self, key }
    }

    pub(crate) fn set_hook(&self, hook: TimeoutHook) {
        let _ = self.hook.set(hook);
    }

    pub(crate) fn set_mirror(&self, mirror: Box<dyn Mirror>) {
        let _ = self.mirror.set(mirror);
    }

    /// Starts the thread that ends requests running longer than `limit`.
    pub(crate) fn watch(self: &Arc<Self>, limit: Duration) -> std::io::Result<()> {
        let running = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("wfcgi-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(CHECK_EVERY);
                let Some(running) = running.upgrade() else {
                    return;
                };
                running.expire_older_than(limit);
            })
            .map(drop)
    }

    fn expire_older_than(&self, limit: Duration) {
        let now = Instant::now();
        let due: Vec<(RequestId, u64, String, Duration, fastcgi::Expiry)> = self
            .lock()
            .values_mut()
            .filter(|e| !e.expired && now.duration_since(e.started) >= limit)
            .map(|e| {
                e.expired = true;
                let age = now.duration_since(e.started);
                (e.id.clone(), e.thread, e.what(), age, e.expiry.clone())
            })
            .collect();
        for (id, thread, what, age, expiry) in due {
            // The request's span: this line and the hook's carry its id, as its own lines do.
            let _span = crate::log_scope::span(&id).entered();
            let page = error_page_for(
                "504 Gateway Timeout",
                "504 Gateway Timeout\n\nThe application did not answer in time.\n",
                Some(&id.to_string()),
            );
            let holds_connection = expiry.holds_connection();
            let answered = match (expiry.expire(page), holds_connection) {
                (fastcgi::Expired::Answered, _) => "the client got 504 Gateway Timeout",
                (fastcgi::Expired::Cut, false) => {
                    "its response had begun: the connection was closed to cut it short"
                }
                (fastcgi::Expired::Cut, true) => {
                    "its response had begun: it is cut short when the process ends"
                }
                (fastcgi::Expired::Over, _) => continue,
            };
            let stack = stacks(&[thread]).remove(&thread).unwrap_or_else(|| {
                "(not available: the thread holds the GIL in native code, or has just finished)"
                    .into()
            });
            tracing::error!(
                "request {id} ({what}) timed out after {:.1} s (WFCGI_REQUEST_TIMEOUT_SECS is {}): {answered}. \
                 The thread running it cannot be stopped and goes on. Its Python stack, most recent call last:\n{stack}",
                age.as_secs_f64(),
                limit.as_secs()
            );
            if let Some(hook) = self.hook.get() {
                hook(&TimedOut {
                    what: &format!("request {id} ({what}) ran past WFCGI_REQUEST_TIMEOUT_SECS"),
                    holds_connection,
                });
            }
        }
    }

    /// Logs every running request with its Python stack, stopping nothing.
    pub(crate) fn log_stacks(&self) {
        let now = Instant::now();
        let mut running: Vec<(u64, RequestId, u64, String, Duration)> = self
            .lock()
            .iter()
            .map(|(key, e)| {
                (
                    *key,
                    e.id.clone(),
                    e.thread,
                    e.what(),
                    now.duration_since(e.started),
                )
            })
            .collect();
        // Oldest first.
        running.sort_by_key(|r| r.0);
        if running.is_empty() {
            tracing::info!("stacks (SIGUSR1): no request is running");
            return;
        }
        let threads: Vec<u64> = running.iter().map(|r| r.2).collect();
        let mut found = stacks(&threads);
        tracing::info!("stacks (SIGUSR1): {} request(s) running", running.len());
        for (_, id, thread, what, age) in running {
            let stack = found.remove(&thread).unwrap_or_else(|| {
                "(not available: the thread holds the GIL in native code, or has just finished)"
                    .into()
            });
            tracing::info!(
                "request {id} ({what}), running for {:.1} s; its Python stack, most recent call last:\n{stack}",
                age.as_secs_f64()
            );
        }
    }
}

/// `threading.get_ident()` of the calling thread, asked once per thread.
fn thread_ident(py: Python<'_>) -> u64 {
    thread_local! {
        static IDENT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    }
    IDENT.with(|ident| {
        if let Some(id) = ident.get() {
            return id;
        }
        let id = py
            .import("threading")
            .and_then(|t| t.call_method0("get_ident"))
            .and_then(|id| id.extract::<u64>())
            .unwrap_or(0);
        ident.set(Some(id));
        id
    })
}

/// The formatted Python stacks of `threads`, read with the GIL on a helper thread that is
/// waited for at most [`STACK_WAIT`] (left behind if the GIL does not come).
fn stacks(threads: &[u64]) -> HashMap<u64, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = threads.to_vec();
    let spawned = std::thread::Builder::new()
        .name("wfcgi-stacks".into())
        .spawn(move || {
            let found = Python::attach(|py| read_stacks(py, &wanted)).unwrap_or_default();
            let _ = tx.send(found);
        });
    if spawned.is_err() {
        return HashMap::new();
    }
    rx.recv_timeout(STACK_WAIT).unwrap_or_default()
}

fn read_stacks(py: Python<'_>, threads: &[u64]) -> PyResult<HashMap<u64, String>> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let traceback = py.import("traceback")?;
    let mut found = HashMap::new();
    for &thread in threads {
        let Ok(frame) = frames.get_item(thread) else {
            continue;
        };
        let lines = traceback.call_method1("format_stack", (frame,))?;
        let text: String = lines
            .try_iter()?
            .map(|l| l.and_then(|l| l.extract::<String>()))
            .collect::<PyResult<_>>()?;
        found.insert(thread, text.trim_end().to_owned());
    }
    Ok(found)
}
