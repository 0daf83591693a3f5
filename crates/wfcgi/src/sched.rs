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
//! or the waker exist: every thread created afterwards inherits it. `WFCGI_SCHED_POLICY=normal`
//! (`--sched-policy normal`) keeps the normal policy. Where the settings are read after the
//! runtime is built (a process started with its connection on fd 0 reads web.config at the
//! first request), the policy they name is then set on every thread of the process.

/// `WFCGI_SCHED_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// `SCHED_BATCH`: wake-ups that do not preempt (the default).
    Batch,
    /// The normal policy (`SCHED_OTHER`).
    Normal,
}

/// Gives the calling thread `policy`; the threads it creates afterwards inherit it. A refusal
/// (a seccomp policy) leaves the thread as it was, said at debug level.
pub(crate) fn set_this_thread(policy: Policy) {
    #[cfg(target_os = "linux")]
    set(0, policy);
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
}

/// Gives every thread of the process `policy`, as `chrt --all-tasks` does.
pub(crate) fn set_every_thread(policy: Policy) {
    #[cfg(target_os = "linux")]
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                set(tid, policy);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
}

#[cfg(target_os = "linux")]
fn set(tid: libc::pid_t, policy: Policy) {
    let policy = match policy {
        Policy::Batch => libc::SCHED_BATCH,
        Policy::Normal => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain syscall with a valid `sched_param`; a tid of this process (or 0, the
    // calling thread) names that thread alone.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        tracing::debug!(
            tid,
            policy,
            error = %std::io::Error::last_os_error(),
            "the scheduling policy was not set"
        );
    }
}
