//! The Python threads. Each attaches to the interpreter ONCE for its whole life (keeping its
//! thread state: attaching afresh per request costs ~8 µs) and detaches only while it waits for
//! the next request. Tokio tasks never attach: `Handler::handle` only pushes onto the queue.
//!
//! The queue is a `Mutex<VecDeque>` + `Condvar` written here rather than `std::sync::mpsc`:
//! several threads take from it (an mpsc `Receiver` would need a mutex around it anyway), and
//! closing it must let the threads drain what is queued and then stop.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
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

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

struct QueueState<T> {
    jobs: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-consumer queue.
pub(crate) struct JobQueue<T> {
    state: Mutex<QueueState<T>>,
    ready: Condvar,
    capacity: usize,
}

impl<T> JobQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Never blocks (beyond the short lock).
    pub(crate) fn try_push(&self, job: T) -> Result<(), (T, Refused)> {
        let mut state = self.lock();
        if state.closed {
            return Err((job, Refused::Closed));
        }
        if state.jobs.len() >= self.capacity {
            return Err((job, Refused::Full));
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// A job if one is queued; never waits.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.lock().jobs.pop_front()
    }

    /// Waits for a job; `None` once closed and empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
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
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Pool> {
        let threads = shared.config.threads;
        let queue = Arc::new(JobQueue::new(shared.config.queue_len));
        let alive = Arc::new(Alive {
            count: Mutex::new(threads),
            changed: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads {
            let (shared, jobs, alive) = (shared.clone(), queue.clone(), alive.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("wfcgi-python-{n}"))
                .stack_size(STACK_SIZE)
                .spawn(move || {
                    worker(&shared, &jobs);
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
        let _span = tracing::error_span!("request", id = %id).entered();
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
fn worker(shared: &Shared, queue: &JobQueue<Request>) {
    Python::attach(|py| {
        while let Some(request) = queue.try_pop().or_else(|| py.detach(|| queue.pop())) {
            run_one(shared, py, request);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_and_drains_after_close() {
        let q = JobQueue::new(2);
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert_eq!(q.try_push(3), Err((3, Refused::Full)));
        assert_eq!(q.pop(), Some(1));
        q.try_push(4).unwrap();
        q.close();
        assert_eq!(q.try_push(5), Err((5, Refused::Closed)));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(4));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn pop_waits_for_a_push_from_another_thread() {
        let q = Arc::new(JobQueue::new(1));
        let q2 = q.clone();
        let taker = std::thread::spawn(move || q2.pop());
        std::thread::sleep(Duration::from_millis(20));
        q.try_push(7).unwrap();
        assert_eq!(taker.join().unwrap(), Some(7));
    }
}
