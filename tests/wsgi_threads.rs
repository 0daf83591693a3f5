//! The Python threads with the default settings. Only one runs while the app is CPU-bound (the
//! others would only hand the GIL around), but a request behind one that blocks is handed to
//! another thread: as many serve at once as the app has requests blocked, up to `--threads`.

use std::time::Duration;

use test_support::wfcgi::{wsgi_params, Wfcgi};

/// Sixteen requests that each wait in the app until all sixteen are in it. None can finish
/// unless sixteen threads are serving at once: the default thread count must allow it, and the
/// pool must wake a parked thread for a request queued behind threads that blocked (no thread
/// finishes, so no thread would take the next request itself).
#[test]
fn with_the_default_settings_sixteen_requests_that_wait_for_each_other_all_finish() {
    let mut w = Wfcgi::serve_testapp(&[]);
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let mut c = w.connect();
            std::thread::spawn(move || {
                let params = wsgi_params("GET", "/barrier", "n=16&timeout=10");
                let reply = c.request(1, &params, b"");
                (
                    reply.status(),
                    String::from_utf8_lossy(reply.body()).into_owned(),
                )
            })
        })
        .collect();
    for request in requests {
        let (status, body) = request.join().unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "passed"),
            "log:\n{}",
            w.log()
        );
    }
    w.signal(libc::SIGTERM);
    w.wait_exit(Duration::from_secs(30))
        .expect("wfcgi did not exit after SIGTERM");
    // How the threads were woken: the first request woke a thread for the idle pool; the others
    // (none finished, so none was taken on by a finishing thread) woke one each for a stalled
    // pool. A woken thread that finds more than one request queued can take a second one without
    // another wake (a spurious futex wake-up), hence at most 15.
    let log = w.log();
    let stats = log
        .lines()
        .find(|l| l.contains("Python threads: "))
        .unwrap_or_else(|| panic!("no thread statistics at shutdown; log:\n{log}"));
    assert!(
        stats.contains("16 requests started (0 taken on")
            && stats.contains("wakes: 1 for an idle pool, "),
        "{stats}"
    );
    let stalled: u32 = stats
        .split("for an idle pool, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stall count in: {stats}"));
    assert!((1..=15).contains(&stalled), "{stats}");
}

/// Each thread's name and scheduling policy (field 41 of its stat line).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            let (name, fields) = test_support::stat_name_and_fields(&stat)?;
            // The fields start at field 3.
            let policy = fields.get(38)?.parse().ok()?;
            Some((name.to_owned(), policy))
        })
        .collect()
}

/// After one request (so that every thread has started): the I/O threads, the Python threads
/// and the waker all have `policy`.
#[cfg(target_os = "linux")]
fn assert_threads_have(w: &Wfcgi, policy: i32) {
    // wfcgi changes only a process started with the normal policy: so must the tests be.
    // SAFETY: a plain syscall on the calling thread.
    let own = unsafe { libc::sched_getscheduler(0) };
    assert_eq!(
        own,
        libc::SCHED_OTHER,
        "the tests must run under the normal policy"
    );
    let reply = w
        .connect()
        .request(1, &wsgi_params("GET", "/hello", ""), b"");
    assert_eq!(reply.status(), 200, "log:\n{}", w.log());
    let policies = thread_policies(w.pid());
    for (prefix, at_least) in [("wfcgi-io", 1), ("wfcgi-python-", 1), ("wfcgi-waker", 1)] {
        let found: Vec<i32> = policies
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|&(_, p)| p)
            .collect();
        assert!(
            found.len() >= at_least && found.iter().all(|&p| p == policy),
            "{prefix}: {policies:?}"
        );
    }
}

/// The server's threads are `SCHED_BATCH` by default, so that their wakes do not preempt the
/// web server or the thread that holds the GIL (crates/wfcgi/src/sched.rs): the I/O threads,
/// the Python threads and the waker, started after the policy was set, all inherit it.
#[cfg(target_os = "linux")]
#[test]
fn the_servers_threads_are_sched_batch() {
    let mut w = Wfcgi::serve_testapp(&[]);
    assert_threads_have(&w, libc::SCHED_BATCH);
    w.stop(libc::SIGTERM);
}

/// `--sched-policy normal` keeps the normal policy.
#[cfg(target_os = "linux")]
#[test]
fn sched_policy_normal_keeps_the_normal_policy() {
    let mut w = Wfcgi::serve_testapp(&["--sched-policy", "normal"]);
    assert_threads_have(&w, libc::SCHED_OTHER);
    w.stop(libc::SIGTERM);
}

/// Started as a web server starts it (a listening socket on fd 0), wfcgi reads its settings at
/// the first request, after its I/O runtime was built with the default: the policy they name
/// is then given to every thread, the ones started before included.
#[cfg(target_os = "linux")]
#[test]
fn sched_policy_read_at_the_first_request_reaches_every_thread() {
    let python = test_support::wfcgi::repo_path("python");
    let args = [
        "--app-dir",
        python.to_str().unwrap(),
        "--handler",
        "testapp.app.application",
    ];
    let mut w = Wfcgi::with_listening_stdin(&args, &|cmd| {
        cmd.env("WFCGI_SCHED_POLICY", "normal");
    });
    assert_threads_have(&w, libc::SCHED_OTHER);
    w.stop(libc::SIGTERM);
}
