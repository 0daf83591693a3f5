//! The Python threads, and when they are woken.
//!
//! Each thread attaches to the interpreter ONCE for its whole life (keeping its thread state:
//! attaching afresh per request costs ~8 µs) and detaches only while it waits for the next
//! request. Tokio tasks never attach: `Handler::handle` only pushes onto the queue.
//!
//! **Waking.** There is one GIL, so a second thread helps only while the first is blocked (a
//! database call, a sleep, a read of a slow upload). A plain pool wakes a parked thread for every
//! queued request: when the app is CPU-bound, the woken thread only waits for the GIL, and every
//! wake is a futex, context switches and a GIL hand-over for nothing. So a request wakes a thread
//! at once only when no thread is running; a thread that finishes a request takes the next one
//! itself, without detaching. Otherwise a waker thread watches the queue while it is not empty,
//! and wakes another thread when the pool is **stalled**:
//! - no thread has started a request for `STALL` (200 µs), and every thread with a request is
//!   blocked, none on a CPU or waiting for one (Linux: the thread's state in `/proc`): the
//!   threads wait for something other than the GIL, which is free for another; or
//! - no thread has started a request for `SHARE` (5 ms, CPython's switch interval): a request
//!   never waits behind long CPU-bound ones for more than that before a thread of its own takes
//!   it and shares the GIL with them, as in a plain pool.
//!
//! A thread that waits for its client (more request body, room on a full connection:
//! `waiting_for_client`) counts as running: only `SHARE` wakes another for a request behind
//! it. A wake takes the thread that parked last. A thread woken for a stall that is still
//! waiting for the GIL holds off further wakes. The
//! on-CPU check is what separates a thread that blocked from one that holds the GIL and was only
//! preempted: on 2 cores shared with the web server, a CPU-bound thread is often off its core for
//! more than 200 µs. Without the check, `/hello` at 64 connections woke a thread for a stall
//! ~870 times per 500,000 requests, each woken thread waited 180 µs for the GIL on average, and
//! it ran 10% slower than with 2 threads; with it, ~15 times. Where there is no such check (not
//! Linux), the first rule applies without it: a blocked thread holds up a request for 200 µs at
//! most, and a preempted CPU-bound one sometimes gets a thread woken for nothing.
//! The waker runs at the lowest priority (`lower_priority`).
//!
//! The effect: a CPU-bound app runs on about one thread whatever `threads` says, and one that
//! blocks gets as many threads as it has requests blocked, up to `threads`.
//!
//! The queue is a `Mutex<VecDeque>` + `Condvar` written here rather than `std::sync::mpsc`:
//! several threads take from it, the waking rule needs to know who is parked, and closing it
//! must let the threads drain what is queued and then stop.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::dispatch::Shared;
use crate::response::error_page_for;
use fastcgi::Request;

/// Python threads get the stack size of a main thread: deep recursion (template engines, ORMs)
/// overflows Rust's 2 MiB default before Python's recursion limit triggers.
const STACK_SIZE: usize = 8 * 1024 * 1024;

/// With no request started for this long, and every thread with one blocked, another thread is
/// woken. Far above the time between two starts on a thread that runs CPU-bound requests
/// (`/hello`: ~12 µs), far below what a blocked request waits for (2% of a 10 ms sleep).
const STALL: Duration = Duration::from_micros(200);

/// With no request started for this long, another thread is woken whatever the others do.
const SHARE: Duration = Duration::from_millis(5);

/// How long `Pool::start` waits for its threads to be parked, ready for the first request. They
/// start in a few milliseconds; a thread that started but has not parked yet when the first
/// request comes is not counted as idle, so the pool would not wake one for it (the starting
/// thread takes it when it gets to the queue). A new `SCHED_BATCH` thread (wfcgi's `sched`)
/// does not preempt its creator, so it starts later: without the wait a server could take its
/// first requests before its threads were parked.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

struct QueueState<T> {
    /// Each job with when it was queued (ns since `epoch`).
    jobs: VecDeque<(T, u64)>,
    closed: bool,
    /// Consumers woken and not yet back from their wait in `pop`.
    waking: usize,
    /// The parked consumers not yet woken, the most recently parked last: a wake takes the last
    /// (its stack and thread state are the likeliest to be in the CPU's caches). A condvar's
    /// notify_one wakes the longest waiter instead, so a pool of 32 threads cycled through all
    /// of them: `/hello` at 64 connections ran 7% slower at 32 threads than at 2.
    idle: Vec<usize>,
    /// Per consumer: woken, and not yet back from its wait.
    woken: Vec<bool>,
    /// The waker waits without a timeout (it saw the queue empty): a push must notify it.
    waker_idle: bool,
}

/// How the threads were woken, and how long they waited for the GIL: logged at shutdown, and
/// what the benchmarks' "why it works" figures are read from.
#[derive(Default)]
pub(crate) struct Stats {
    /// Requests started.
    pub(crate) started: AtomicU64,
    /// Of those, taken from the queue by a thread that had just finished one (no wake, no GIL
    /// hand-over).
    pub(crate) taken_on: AtomicU64,
    /// Wakes because no thread was running.
    pub(crate) idle_wakes: AtomicU64,
    /// Wakes because the pool was stalled.
    pub(crate) stall_wakes: AtomicU64,
    /// Time from a parked thread's taking a request to its holding the GIL, summed; and the most.
    pub(crate) gil_wait_ns: AtomicU64,
    pub(crate) gil_wait_max_ns: AtomicU64,
    /// Time from a request's queueing to a thread's taking it, summed; and the most.
    pub(crate) queue_wait_ns: AtomicU64,
    pub(crate) queue_wait_max_ns: AtomicU64,
}

/// One consumer, as the waker sees it.
#[derive(Default)]
struct Consumer {
    /// It waits here while parked.
    wake: Condvar,
    /// It has a job: from `started` until it calls `pop` again.
    busy: AtomicBool,
    /// It waits for its client (`waiting_for_client`): more request body, or room on a full
    /// connection.
    client_wait: AtomicBool,
    /// Its `/proc/thread-self/stat`, opened by the thread itself in `register`.
    #[cfg(target_os = "linux")]
    stat: std::sync::OnceLock<std::fs::File>,
}

impl Consumer {
    /// On a CPU or waiting for one: its state is R (Linux). A thread waiting for the GIL or
    /// blocked in a call is S or D. Unknown (not registered, not Linux): no, so that a stall is
    /// never missed.
    fn on_cpu(&self) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(stat) = self.stat.get() {
            use std::os::unix::fs::FileExt;
            // "TID (COMM) STATE ...": COMM is at most 15 bytes, so the state is in the first 64.
            let mut line = [0u8; 64];
            let n = stat.read_at(&mut line, 0).unwrap_or(0);
            let line = &line[..n];
            return line
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|close| line.get(close + 2))
                == Some(&b'R');
        }
        false
    }
}

/// A bounded multi-consumer queue that wakes its consumers as the module's documentation says.
/// `watch` must run on a thread of its own for stalls to be noticed; consumer `n` passes its
/// number to `register`, `pop` and `started`.
pub(crate) struct JobQueue<T> {
    state: Mutex<QueueState<T>>,

    /// The waker waits here.
    waker: Condvar,
    capacity: usize,
    consumers: Vec<Consumer>,
    /// `STALL` and `SHARE`, but for tests.
    stall: Duration,
    share: Duration,
    epoch: Instant,
    /// When a consumer last started a job, in ns since `epoch`.
    last_start: AtomicU64,
    /// Consumers that took a job in `pop` and have not yet started it (they wait for the GIL).
    attaching: AtomicUsize,
    /// `jobs.len()` and `closed`, for the waker to look at without the lock.
    queued: AtomicUsize,
    closed: AtomicBool,
    pub(crate) stats: Stats,
}

impl<T> JobQueue<T> {
    pub(crate) fn new(capacity: usize, consumers: usize) -> Self {
        Self::with_stall(capacity, consumers, STALL, SHARE)
    }

    fn with_stall(capacity: usize, consumers: usize, stall: Duration, share: Duration) -> Self {
        JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
                waking: 0,
                idle: Vec::with_capacity(consumers),
                woken: vec![false; consumers],
                waker_idle: false,
            }),
            waker: Condvar::new(),
            capacity,
            consumers: (0..consumers).map(|_| Consumer::default()).collect(),
            stall,
            share,
            epoch: Instant::now(),
            last_start: AtomicU64::new(0),
            attaching: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long since a consumer last started a job.
    fn since_last_start(&self) -> Duration {
        Duration::from_nanos(
            self.now_ns()
                .saturating_sub(self.last_start.load(Ordering::Relaxed)),
        )
    }

    /// Called by consumer `n` on its own thread before its first `pop`.
    pub(crate) fn register(&self, n: usize) {
        #[cfg(target_os = "linux")]
        if let Ok(stat) = std::fs::File::open("/proc/thread-self/stat") {
            let _ = self.consumers[n].stat.set(stat);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = n;
    }

    /// Never blocks (beyond the short lock). Wakes a consumer only if none is running.
    pub(crate) fn try_push(&self, job: T) -> Result<(), (T, Refused)> {
        let mut state = self.lock();
        if state.closed {
            return Err((job, Refused::Closed));
        }
        if state.jobs.len() >= self.capacity {
            return Err((job, Refused::Full));
        }
        state.jobs.push_back((job, self.now_ns()));
        self.queued.store(state.jobs.len(), Ordering::Relaxed);
        // Every consumer not idle runs (a woken one is on its way to run).
        if state.idle.len() == self.consumers.len() {
            self.wake_one(state, &self.stats.idle_wakes);
        } else if state.waker_idle {
            state.waker_idle = false;
            drop(state);
            self.waker.notify_one();
        }
        Ok(())
    }

    /// A job if one is queued; never waits. For a consumer that has just finished one.
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut state = self.lock();
        let job = state.jobs.pop_front();
        self.queued.store(state.jobs.len(), Ordering::Relaxed);
        drop(state);
        job.map(|(job, queued)| self.taken(job, queued))
    }

    /// Counts how long `job`, queued at `queued`, waited for a thread.
    fn taken(&self, job: T, queued: u64) -> T {
        let ns = self.now_ns().saturating_sub(queued);
        self.stats.queue_wait_ns.fetch_add(ns, Ordering::Relaxed);
        self.stats
            .queue_wait_max_ns
            .fetch_max(ns, Ordering::Relaxed);
        job
    }

    /// Consumer `n` waits for a job; `None` once closed and empty. It must call `started` when
    /// it starts the job.
    pub(crate) fn pop(&self, n: usize) -> Option<T> {
        self.consumers[n].busy.store(false, Ordering::Relaxed);
        let mut state = self.lock();
        loop {
            if let Some((job, queued)) = state.jobs.pop_front() {
                self.queued.store(state.jobs.len(), Ordering::Relaxed);
                self.attaching.fetch_add(1, Ordering::Relaxed);
                drop(state);
                return Some(self.taken(job, queued));
            }
            if state.closed {
                return None;
            }
            state.idle.push(n);
            while !state.woken[n] && !state.closed {
                state = self.consumers[n]
                    .wake
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.woken[n] {
                state.woken[n] = false;
                state.waking -= 1;
            } else {
                // Closed while parked: no longer idle.
                state.idle.retain(|&i| i != n);
            }
        }
    }

    /// Wakes the most recently parked idle consumer (there must be one), counting the wake in
    /// `counter`; its condvar is notified once the lock is released.
    fn wake_one(&self, mut state: MutexGuard<'_, QueueState<T>>, counter: &AtomicU64) {
        let n = state.idle.pop().expect("an idle consumer");
        state.woken[n] = true;
        state.waking += 1;
        drop(state);
        counter.fetch_add(1, Ordering::Relaxed);
        self.consumers[n].wake.notify_one();
    }

    /// Consumer `n` starts a job: from `pop` (`parked`, after `waited` for the GIL) or from
    /// `try_pop`.
    pub(crate) fn started(&self, n: usize, parked: bool, waited: Duration) {
        self.last_start.store(self.now_ns(), Ordering::Relaxed);
        let stats = &self.stats;
        stats.started.fetch_add(1, Ordering::Relaxed);
        if parked {
            self.consumers[n].busy.store(true, Ordering::Relaxed);
            self.attaching.fetch_sub(1, Ordering::Relaxed);
            let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            stats.gil_wait_ns.fetch_add(ns, Ordering::Relaxed);
            stats.gil_wait_max_ns.fetch_max(ns, Ordering::Relaxed);
        } else {
            stats.taken_on.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A consumer is parked and not already woken, and none is on its way to a job.
    fn can_wake(&self, state: &QueueState<T>) -> bool {
        !state.idle.is_empty() && state.waking == 0 && self.attaching.load(Ordering::Relaxed) == 0
    }

    /// Whether the queued jobs wait on a stalled pool, `since` the last start (at least
    /// `stall`): see the module's documentation. Reads the consumers' states without the lock.
    fn stalled(&self, since: Duration) -> bool {
        since >= self.share
            || !self.consumers.iter().any(|c| {
                c.busy.load(Ordering::Relaxed)
                    && (c.client_wait.load(Ordering::Relaxed) || c.on_cpu())
            })
    }

    /// The waker: while jobs are queued, wakes a consumer whenever the pool is stalled. Returns
    /// once the queue is closed.
    ///
    /// While jobs are queued it sleeps to the next moment a stall is possible and looks at
    /// atomics only: the queue's lock, which every push and every take needs, is taken only to
    /// wake a consumer. (Waiting on the condvar with a timeout instead, which takes the lock at
    /// every look, cost `/hello` 10% at 64 connections.)
    pub(crate) fn watch(&self) {
        lower_priority();
        loop {
            {
                let mut state = self.lock();
                if state.closed {
                    return;
                }
                if state.jobs.is_empty() {
                    state.waker_idle = true;
                    drop(self.waker.wait(state).unwrap_or_else(|e| e.into_inner()));
                    continue;
                }
            }
            while self.queued.load(Ordering::Relaxed) > 0 && !self.closed.load(Ordering::Relaxed) {
                let since = self.since_last_start();
                if since < self.stall {
                    std::thread::sleep(self.stall - since);
                    continue;
                }
                if self.stalled(since) {
                    let state = self.lock();
                    if !state.jobs.is_empty() && self.can_wake(&state) {
                        self.wake_one(state, &self.stats.stall_wakes);
                    }
                }
                std::thread::sleep(self.stall);
            }
        }
    }

    /// Waits, up to `limit`, until every consumer is parked, i.e. has started and waits for a
    /// job. Polled: only start-up waits, and the parking path stays as it is.
    /// A caller that holds the GIL does not wait: the threads need it to park.
    fn wait_until_all_parked(&self, limit: Duration) {
        // SAFETY: callable from any thread once the interpreter is initialised (a pool's
        // threads exist only then).
        if unsafe { pyo3::ffi::PyGILState_Check() } == 1 {
            return;
        }
        let deadline = Instant::now() + limit;
        while self.lock().idle.len() < self.consumers.len() {
            if Instant::now() >= deadline {
                tracing::warn!("Python threads still starting after {limit:?}: serving anyway");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.closed.store(true, Ordering::Relaxed);
        for consumer in &self.consumers {
            consumer.wake.notify_all();
        }
        self.waker.notify_all();
    }
}

/// The waker runs at the lowest priority (Linux: nice 19, for this thread only). Woken every
/// `STALL` while requests are queued, at normal priority it preempted the thread holding the
/// GIL on 2 cores: `/hello` at 64 connections ran 9% slower with it than without it (a pool with
/// no waker). At nice 19 it does not preempt, and the difference was within noise. It needs
/// little CPU, and when it matters (every thread blocked) the CPUs are idle.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls; on Linux a thread id names the thread alone for setpriority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

thread_local! {
    /// On a pool thread: its pool's queue and its number, for `waiting_for_client`.
    static OWN_SLOT: std::cell::OnceCell<(Arc<JobQueue<Request>>, usize)> =
        const { std::cell::OnceCell::new() };
}

/// Runs `wait`, a wait without the GIL for the client (more request body, room on a full
/// connection), marked as such for the waker. Such a wait is usually short while the machine is
/// busy (the web server reads and writes as fast as it can), and another thread woken for the
/// request queued behind it only adds to the load: with 1 MiB responses to 16 connections,
/// waking for these waits as for any other block made 850 stall wakes in 8 s and cost 13% of
/// the throughput. So the waker counts such a thread as running: a request waits behind it for
/// `SHARE` at most, as behind a CPU-bound one.
pub(crate) fn waiting_for_client<R>(wait: impl FnOnce() -> R) -> R {
    OWN_SLOT.with(|own| match own.get() {
        Some((queue, n)) => {
            let flag = &queue.consumers[*n].client_wait;
            flag.store(true, Ordering::Relaxed);
            let result = wait();
            flag.store(false, Ordering::Relaxed);
            result
        }
        None => wait(),
    })
}

/// Counts live worker threads so that shutdown can wait with a deadline.
struct Alive {
    count: Mutex<usize>,
    changed: Condvar,
}

pub(crate) struct Pool {
    queue: Arc<JobQueue<Request>>,
    alive: Arc<Alive>,
    _threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts the threads and the waker; returns once every thread is parked, ready for the
    /// first request (`READY_WAIT` at most).
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Pool> {
        let threads = shared.config.threads;
        let queue = Arc::new(JobQueue::new(shared.config.queue_len, threads));
        let alive = Arc::new(Alive {
            count: Mutex::new(threads),
            changed: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads + 1);
        let jobs = queue.clone();
        handles.push(
            std::thread::Builder::new()
                .name("wfcgi-waker".to_owned())
                .stack_size(64 * 1024)
                .spawn(move || jobs.watch())?,
        );
        for n in 0..threads {
            let (shared, jobs, alive) = (shared.clone(), queue.clone(), alive.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("wfcgi-python-{n}"))
                .stack_size(STACK_SIZE)
                .spawn(move || {
                    worker(&shared, &jobs, n);
                    *alive.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    alive.changed.notify_all();
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    queue.close();
                    return Err(e);
                }
            }
        }
        queue.wait_until_all_parked(READY_WAIT);
        Ok(Pool {
            queue,
            alive,
            _threads: handles,
        })
    }

    /// Called on a connection's task: queue, or answer 503 at once. Never blocks or attaches.
    pub(crate) fn submit(&self, request: Request) {
        let (request, refused) = match self.queue.try_push(request) {
            Ok(()) => return,
            Err(refused) => refused,
        };
        let id = crate::request_id::request_id(request.params());
        let _span = crate::log_scope::span(&id).entered();
        let (_, _, response) = request.into_parts();
        let (status, log) = match refused {
            Refused::Full => (
                "503 Service Unavailable",
                "request refused with 503: all Python threads are busy and the queue (queue_len) is full",
            ),
            Refused::Closed => ("503 Service Unavailable", "request refused with 503: shutting down"),
        };
        tracing::warn!("{log}");
        response.finish_with(
            error_page_for(status, "503 Service Unavailable\n", Some(&id.to_string())),
            0,
        );
    }

    /// Closes the queue, waits up to `grace` for the threads to finish what was queued.
    pub(crate) fn shutdown(&self, grace: Duration) -> bool {
        self.queue.close();
        self.log_stats();
        let deadline = Instant::now() + grace;
        let mut count = self.alive.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "{} Python thread(s) still busy after the shutdown grace period",
                    *count
                );
                return false;
            }
            count = self
                .alive
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Pool {
    /// One line on how the threads were woken and waited for the GIL (at info level).
    fn log_stats(&self) {
        let s = &self.queue.stats;
        let started = s.started.load(Ordering::Relaxed);
        let taken_on = s.taken_on.load(Ordering::Relaxed);
        let from_parking = started - taken_on;
        let mean_us = |sum: &AtomicU64, n: u64| {
            if n == 0 {
                0.0
            } else {
                sum.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            }
        };
        let max_us = |max: &AtomicU64| max.load(Ordering::Relaxed) as f64 / 1000.0;
        tracing::info!(
            "Python threads: {started} requests started ({taken_on} taken on by a thread that \
             had just finished one); wakes: {} for an idle pool, {} for a stalled one; a \
             request's wait in the queue: mean {:.1} us, max {:.1} us; a woken thread's wait \
             for the GIL: mean {:.1} us, max {:.1} us",
            s.idle_wakes.load(Ordering::Relaxed),
            s.stall_wakes.load(Ordering::Relaxed),
            mean_us(&s.queue_wait_ns, started),
            max_us(&s.queue_wait_max_ns),
            mean_us(&s.gil_wait_ns, from_parking),
            max_us(&s.gil_wait_max_ns),
        );
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Runs a request on the calling thread: the connection's own thread, for requests served inline
/// (see `fastcgi::Handler::handle_inline`).
///
/// That thread is not one of ours, so it is given a Python thread state once, kept for its
/// life: each request then only takes the GIL (`Python::attach` finds the state), instead of
/// creating and destroying a thread state per request (~8 us).
pub(crate) fn run_inline(shared: &Shared, request: Request) {
    thread_local! {
        static HAS_THREAD_STATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    HAS_THREAD_STATE.with(|has| {
        if !has.get() {
            crate::ffi::keep_thread_state();
            has.set(true);
        }
    });
    Python::attach(|py| run_one(shared, py, request));
}

/// Runs one request on an attached thread; a panic ends the request, not the thread.
fn run_one(shared: &Shared, py: Python<'_>, request: Request) {
    if request.is_aborted() {
        // The client left while the request waited: do not start the app.
        let (_, _, response) = request.into_parts();
        response.finish(1);
        return;
    }
    let (params, body, response) = request.into_parts();
    let run = catch_unwind(AssertUnwindSafe(|| {
        shared.dispatch(py, params, body, response)
    }));
    if run.is_err() {
        tracing::error!("a Rust panic while serving a request (the request was ended)");
    }
}

/// One Python thread: attached for life; detached only inside `queue.pop()`.
///
/// A thread that has just finished a request takes the next queued one without detaching:
/// releasing the GIL only to take it back would hand it to another Python thread first (a
/// futex wake and a context switch each way). It detaches only when there is nothing to do.
/// An app that blocks (I/O, sleep) still releases the GIL itself, and CPython's switch interval
/// still shares it among busy threads.
fn worker(shared: &Shared, queue: &Arc<JobQueue<Request>>, n: usize) {
    queue.register(n);
    OWN_SLOT.with(|own| own.set((queue.clone(), n)).ok());
    Python::attach(|py| loop {
        let request = match queue.try_pop() {
            Some(request) => {
                queue.started(n, false, Duration::ZERO);
                request
            }
            None => {
                let Some((request, taken)) =
                    py.detach(|| queue.pop(n).map(|request| (request, Instant::now())))
                else {
                    break;
                };
                queue.started(n, true, taken.elapsed());
                request
            }
        };
        run_one(shared, py, request);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn queue_is_bounded_and_drains_after_close() {
        let q = JobQueue::new(2, 1);
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert_eq!(q.try_push(3), Err((3, Refused::Full)));
        assert_eq!(q.pop(0), Some(1));
        q.try_push(4).unwrap();
        q.close();
        assert_eq!(q.try_push(5), Err((5, Refused::Closed)));
        assert_eq!(q.pop(0), Some(2));
        assert_eq!(q.pop(0), Some(4));
        assert_eq!(q.pop(0), None);
    }

    #[test]
    fn the_wait_in_the_queue_is_counted_from_the_push_to_the_take() {
        let q = JobQueue::new(2, 1);
        q.try_push(1).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(q.try_pop(), Some(1));
        q.try_push(2).unwrap();
        assert_eq!(q.pop(0), Some(2));
        let max = q.stats.queue_wait_max_ns.load(Ordering::Relaxed);
        let sum = q.stats.queue_wait_ns.load(Ordering::Relaxed);
        assert!(max >= 30_000_000, "max {max} ns");
        // The second waited next to nothing: each take counted once.
        assert!(sum >= max && sum < 2 * max, "sum {sum} ns, max {max} ns");
    }

    #[test]
    fn pop_waits_for_a_push_from_another_thread() {
        let q = Arc::new(JobQueue::new(1, 1));
        let q2 = q.clone();
        let taker = std::thread::spawn(move || q2.pop(0));
        wait_until(|| q.lock().idle.len() == 1);
        q.try_push(7).unwrap();
        assert_eq!(taker.join().unwrap(), Some(7));
        assert_eq!(q.stats.idle_wakes.load(Ordering::Relaxed), 1);
    }

    fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Holds the jobs that consumers start until it is opened.
    #[derive(Default)]
    struct Gate {
        open: AtomicBool,
        lock: Mutex<()>,
        opened: Condvar,
    }

    impl Gate {
        fn open(&self) {
            let _held = self.lock.lock().unwrap();
            self.open.store(true, Ordering::SeqCst);
            self.opened.notify_all();
        }
    }

    /// Consumer `n` on a thread of its own: takes a job, starts it, and holds it until the gate
    /// opens, keeping its CPU busy (`spin`, as a thread holding the GIL) or blocked (as one in
    /// a database call).
    fn consumer(q: &Arc<JobQueue<u32>>, n: usize, spin: bool, gate: &Arc<Gate>) {
        let (q, gate) = (q.clone(), gate.clone());
        std::thread::spawn(move || {
            q.register(n);
            while q.pop(n).is_some() {
                q.started(n, true, Duration::ZERO);
                if spin {
                    while !gate.open.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                } else {
                    let mut held = gate.lock.lock().unwrap();
                    while !gate.open.load(Ordering::SeqCst) {
                        held = gate.opened.wait(held).unwrap();
                    }
                }
            }
        });
    }

    fn waker(q: &Arc<JobQueue<u32>>) {
        let q = q.clone();
        std::thread::spawn(move || q.watch());
    }

    /// Two consumers, parked; job 1 wakes one (the pool is idle), which holds it; then job 2 is
    /// queued behind it.
    fn job_behind_a_running_one(
        stall: Duration,
        share: Duration,
        spin: bool,
    ) -> (Arc<JobQueue<u32>>, Arc<Gate>) {
        let q = Arc::new(JobQueue::with_stall(8, 2, stall, share));
        let gate = Arc::new(Gate::default());
        waker(&q);
        consumer(&q, 0, spin, &gate);
        consumer(&q, 1, spin, &gate);
        wait_until(|| q.lock().idle.len() == 2);
        q.try_push(1).unwrap();
        wait_until(|| q.stats.started.load(Ordering::Relaxed) == 1);
        assert_eq!(q.stats.idle_wakes.load(Ordering::Relaxed), 1);
        q.try_push(2).unwrap();
        (q, gate)
    }

    /// Job 2 behind a running one gets a consumer of its own through one stall wake.
    fn one_stall_wake_for_the_job_behind(share: Duration, spin: bool) {
        let (q, gate) = job_behind_a_running_one(Duration::from_millis(1), share, spin);
        wait_until(|| q.stats.started.load(Ordering::Relaxed) == 2);
        assert_eq!(q.stats.stall_wakes.load(Ordering::Relaxed), 1);
        q.close();
        gate.open();
    }

    #[test]
    fn the_waker_hands_a_request_on_when_the_running_one_blocks() {
        one_stall_wake_for_the_job_behind(LONG, false);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_request_behind_one_that_is_on_a_cpu_waits_for_it() {
        // The running consumer spins, as a thread holding the GIL: waking the other would not
        // help.
        let (q, gate) = job_behind_a_running_one(Duration::from_millis(1), LONG, true);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(q.lock().jobs.len(), 1, "job 2 must still be queued");
        // When it finishes, it takes job 2 itself.
        gate.open();
        wait_until(|| q.stats.started.load(Ordering::Relaxed) == 2);
        assert_eq!(q.stats.stall_wakes.load(Ordering::Relaxed), 0);
        q.close();
    }

    #[test]
    fn a_request_waits_behind_a_long_cpu_bound_one_for_share_at_most() {
        one_stall_wake_for_the_job_behind(Duration::from_millis(50), true);
    }

    #[test]
    fn a_request_behind_one_that_just_started_wakes_nobody() {
        // The running consumer started just now (within `stall`), and will take job 2 itself
        // when it is done, without a wake.
        let (q, gate) = job_behind_a_running_one(LONG, LONG, false);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.lock().jobs.len(), 1, "job 2 must still be queued");
        gate.open();
        wait_until(|| q.stats.started.load(Ordering::Relaxed) == 2);
        assert_eq!(q.stats.stall_wakes.load(Ordering::Relaxed), 0);
        q.close();
    }

    #[test]
    fn a_thread_waiting_for_the_gil_holds_off_further_wakes() {
        // Three consumers: one started job 1 and blocked; consumer 2 (this thread) took job 2
        // and waits for the GIL (no `started` yet). Job 3 must not wake the third: it would
        // wait too.
        let ms = Duration::from_millis(1);
        let q = Arc::new(JobQueue::with_stall(8, 3, ms, ms));
        let gate = Arc::new(Gate::default());
        waker(&q);
        consumer(&q, 0, false, &gate);
        consumer(&q, 1, false, &gate);
        wait_until(|| q.lock().idle.len() == 2);
        q.try_push(1).unwrap();
        wait_until(|| q.stats.started.load(Ordering::Relaxed) == 1);
        // A push and a pop under one lock, so that the waker cannot hand job 2 to the other.
        {
            let mut state = q.lock();
            state.jobs.push_back((2, 0));
            q.attaching.fetch_add(1, Ordering::Relaxed);
            assert_eq!(state.jobs.pop_front().map(|(job, _)| job), Some(2));
        }
        q.try_push(3).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.lock().jobs.len(), 1, "job 3 must still be queued");
        q.started(2, true, Duration::ZERO); // job 2 got the GIL, and blocks too
        wait_until(|| q.lock().jobs.is_empty());
        q.close();
        gate.open();
    }
}
