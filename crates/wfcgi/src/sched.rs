//! How the kernel schedules wfcgi's threads (Linux only; elsewhere nothing changes).
//!
//! **The server's threads are `SCHED_BATCH`.** The web server, the I/O threads and the Python
//! threads hand each request to one another, and each hand-off wakes a thread. A woken thread
//! of the normal policy preempts the one running on the CPU it wakes on: the web server in the
//! middle of its event loop, or the Python thread in the middle of a request, for a few
//! microseconds of work. On two cores shared with nginx that happened about every fourth
//! request. A `SCHED_BATCH` thread is the same to the scheduler in every other respect (its
//! share of the CPU, its nice value, where it runs): only its wakes never preempt. It runs when
//! the running thread blocks or has had its time slice. So an I/O thread finds several
//! connections ready when it runs, and the thread it would have preempted finishes first.
//! Measured (docs/benchmarks.md, "Wakes that do not preempt"; decisions/0014): behind nginx
//! 1.1-1.4x the requests a second, `/hello` at 64 connections 1.2-1.3x with a fifth less CPU
//! per request; one connection on an idle machine from 11% slower to 3% faster in three runs
//! (the response waits for the Python thread to park rather than preempting it);
//! with two CPU-bound processes beside it, one connection's p99 fell from 0.8-3 ms to 0.08 ms.
//!
//! It is set on the thread that builds the I/O runtime, before the runtime, the Python threads
//! or the waker exist: every thread created afterwards inherits it. To serve with the normal
//! policy instead: `chrt --other --all-tasks --pid 0 <pid>` once the process runs.

/// Makes the calling thread, and every thread it or they create afterwards, `SCHED_BATCH`. A
/// refusal (a seccomp policy) leaves the policy as it was, said at debug level.
pub(crate) fn batch() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain syscall with a valid `sched_param`; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "SCHED_BATCH refused: the threads keep the normal policy"
            );
        }
    }
}
