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
//! 1.3-1.8x the requests a second in alternated runs, `/hello` at 64 connections 1.2x with a
//! fifth less CPU per request; one connection on an idle machine within the noise (-11% to
//! +3.5% between runs). The cost: with CPU-bound processes of the normal policy on every core,
//! a woken thread waits for one to block or use up its slice (the scheduler's tick, 4 ms
//! here): a request's median fell (0.034 against 0.056-0.085 ms) but its p99 was 0.09-8 ms
//! against 0.16-3.8 ms, and the longest 13-19 ms against 9-12.5.
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
