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
//! or the waker exist: every thread created afterwards inherits it, and so do the processes the
//! app starts. Only a process started with the normal policy is changed: one started under
//! another (`chrt`, systemd's `CPUSchedulingPolicy=`) keeps it. `WFCGI_SCHED_POLICY=normal`
//! (`--sched-policy normal`) leaves the policy as the process was started. Where the settings
//! are read after the runtime is built (a process started with its connection on fd 0 reads
//! web.config at the first request), `normal` then gives the normal policy back to every thread
//! that this module made `SCHED_BATCH`. A `--processes` supervisor keeps its policy: its
//! workers each set their own.

#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

/// `WFCGI_SCHED_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// `SCHED_BATCH`: wake-ups that do not preempt (the default).
    Batch,
    /// The policy the process was started with.
    Normal,
}

/// `start` made the threads `SCHED_BATCH`.
#[cfg(target_os = "linux")]
static MADE_BATCH: AtomicBool = AtomicBool::new(false);

/// Before the runtime is built, on its thread: `Batch` makes this thread (and so the threads
/// created afterwards) `SCHED_BATCH` if it has the normal policy. A refusal (a seccomp policy)
/// leaves it as it was, said at debug level.
pub(crate) fn start(policy: Policy) {
    #[cfg(target_os = "linux")]
    if policy == Policy::Batch {
        // SAFETY: plain syscalls on the calling thread (pid 0).
        let current = unsafe { libc::sched_getscheduler(0) };
        if current != libc::SCHED_OTHER {
            tracing::debug!(
                policy = current,
                "started under another scheduling policy: kept"
            );
        } else if set(0, libc::SCHED_BATCH) {
            MADE_BATCH.store(true, Ordering::Relaxed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
}

/// Once the settings are read, if that was after `start` (fd 0): `Normal` gives the normal
/// policy back to every thread of the process that has `SCHED_BATCH` because `start` set it.
pub(crate) fn settle(policy: Policy) {
    #[cfg(target_os = "linux")]
    if policy == Policy::Normal && MADE_BATCH.swap(false, Ordering::Relaxed) {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                // SAFETY: a plain syscall; a tid of this process names that thread alone.
                if unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_BATCH {
                    set(tid, libc::SCHED_OTHER);
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
}

/// Whether `tid` (0: the calling thread) now has `policy`.
#[cfg(target_os = "linux")]
fn set(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain syscall with a valid `sched_param`; a tid of this process (or 0, the
    // calling thread) names that thread alone.
    let done = unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0;
    if !done {
        tracing::debug!(
            tid,
            policy,
            error = %std::io::Error::last_os_error(),
            "the scheduling policy was not set"
        );
    }
    done
}
