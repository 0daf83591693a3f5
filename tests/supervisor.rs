//! `wfcgi serve --processes N`: the real binary's supervisor and its worker processes, under
//! real signals. Workers that die by SIGKILL, `os._exit` or a segfault are replaced and service
//! goes on; a worker that cannot start makes the supervisor stop instead of spinning;
//! recycling by `--max-requests` (also behind nginx's keepalive, with nothing in its error
//! log) and `--max-rss-bytes`; reloads by SIGHUP and by a file edit (`--reload`) that fail no
//! request; SIGTERM drains; a SIGKILLed supervisor leaves no worker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use test_support::wfcgi::{repo_path, wsgi_params, Wfcgi};

/// One GET on a fresh connection: the status and body, or `None` if the connection failed
/// (refused, or closed before END_REQUEST).
fn get(w: &Wfcgi, path: &str, query: &str) -> Option<(u16, String)> {
    let stream = std::net::TcpStream::connect(w.addr()).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let mut client = test_support::Client::from_stream(stream);
    let params = wsgi_params("GET", path, query);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let reply = client.request(1, &params, b"");
        (
            reply.status(),
            String::from_utf8_lossy(reply.body()).into_owned(),
        )
    }));
    result.ok()
}

/// The pid of the worker answering, through a request.
fn worker_pid(w: &Wfcgi) -> u32 {
    let (status, body) = get(w, "/pid", "").expect("a worker answers /pid");
    assert_eq!(status, 200, "{body}");
    body.trim().parse().unwrap()
}

/// Workers' pids seen over `tries` requests.
fn pids_seen(w: &Wfcgi, tries: usize) -> BTreeSet<u32> {
    (0..tries).map(|_| worker_pid(w)).collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Waits until `/pid` is answered again (by some worker), within `within`.
fn served_again(w: &Wfcgi, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Some((200, _)) = get(w, "/pid", "") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no service {within:?} after the worker died; log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(extra: &[&str]) -> Wfcgi {
    let w = Wfcgi::serve_testapp(extra);
    wait_for_a_worker(&w, "/pid");
    w
}

/// Listening is the supervisor's: waits until a worker has the app loaded and answers `path`.
fn wait_for_a_worker(w: &Wfcgi, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(w, path, "").is_none() {
        assert!(
            Instant::now() < deadline,
            "no worker answered; log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_by_sigkill_is_replaced_and_the_log_says_how_it_died() {
    let mut w = serve(&["--processes", "2"]);
    let victim = worker_pid(&w);
    // SAFETY: kill on a pid this test learned from the worker itself.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    served_again(&w, Duration::from_secs(5));
    let log = Wfcgi::wait_for_text(&w.stderr_path, &format!("worker {victim} died"));
    assert!(
        log.contains(&format!(
            "worker {victim} died before its first request: it was killed by signal SIGKILL (9"
        )) || log.contains(&format!(
            "worker {victim} died while serving: it was killed by signal SIGKILL (9"
        )),
        "{log}"
    );
    // The replacement is up: over a few requests, only live workers answer, never the victim.
    let pids = pids_seen(&w, 20);
    assert!(!pids.contains(&victim), "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn a_worker_that_exits_or_crashes_in_a_request_is_replaced() {
    let mut w = serve(&["--processes", "2"]);
    for (path, query, death) in [
        ("/exit", "code=3", "exited with status 3".to_string()),
        (
            "/segfault",
            "",
            "was killed by signal SIGSEGV (11, a crash: invalid memory access".to_string(),
        ),
    ] {
        let before = w.log();
        // The request itself dies with its worker: its connection closes without a reply.
        assert!(get(&w, path, query).is_none(), "{path} answered");
        served_again(&w, Duration::from_secs(5));
        let log = Wfcgi::wait_for_text(&w.stderr_path, &death);
        let new = &log[before.len().min(log.len())..];
        assert!(
            new.contains("died while serving: it ") && new.contains(&death),
            "{new}"
        );
        // And which request it was running (read from the table the worker left behind).
        assert!(
            new.contains(&format!("; it was running GET {path}")),
            "{new}"
        );
    }
    // Each death was replaced: two workers serve.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_seen(&w, 20).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "one worker only; log:\n{}",
            w.log()
        );
    }
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn workers_that_keep_dying_at_start_up_make_the_supervisor_stop_with_an_error() {
    let fixtures = repo_path("python/loader_fixtures");
    let (status, log) = Wfcgi::run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--processes",
            "1",
            "--app-dir",
            fixtures.to_str().unwrap(),
            "--handler",
            "exits_at_import.app",
        ],
        &|_| {},
    );
    assert_eq!(Wfcgi::code(status), 1, "{log}");
    assert!(log.contains("exited with status 7"), "{log}");
    assert!(
        log.contains("workers keep dying before their first request (5 in a row"),
        "{log}"
    );
    assert!(log.contains("starting another worker in 200 ms"), "{log}");
}

#[test]
fn max_requests_recycles_workers_without_a_failed_request() {
    let mut w = serve(&["--processes", "2", "--max-requests", "50"]);
    let mut pids = BTreeSet::new();
    // At 20 ms a request (a real app's pace, not a no-op's), a worker past its limit serves a
    // few more while its replacement loads the app, not the whole run.
    for i in 0..200 {
        match get(&w, "/pid", "sleep=0.02") {
            Some((200, body)) => {
                pids.insert(body.trim().parse::<u32>().unwrap());
            }
            other => panic!("request {i} failed: {other:?}; log:\n{}", w.log()),
        }
    }
    // 200 requests at 50 each: the first two workers were replaced, at least once. (A worker
    // serves on past its limit until its replacement is ready, so the count is not exact.)
    assert!(pids.len() >= 3, "{pids:?}; log:\n{}", w.log());
    let log = w.log();
    assert!(
        log.contains("(WFCGI_MAX_REQUESTS); starting its replacement"),
        "{log}"
    );
    assert!(log.contains("exited after draining"), "{log}");
    assert!(!log.contains(" died "), "{log}");
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_leaves_no_worker() {
    let mut w = serve(&["--processes", "2"]);
    let pids = pids_seen(&w, 20);
    let addr = w.addr();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut client = test_support::Client::connect(addr.parse().unwrap());
                let reply = client.request(1, &wsgi_params("GET", "/sleep", "secs=1"), b"");
                reply.status()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = w.stop(libc::SIGTERM);
    for t in slow {
        assert_eq!(t.join().unwrap(), 200, "log:\n{}", w.log());
    }
    assert_eq!(Wfcgi::code(status), 0, "log:\n{}", w.log());
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived the supervisor");
    }
}

#[test]
fn a_supervisor_killed_by_sigkill_leaves_no_worker_behind() {
    let mut w = serve(&["--processes", "2"]);
    let pids = pids_seen(&w, 20);
    assert!(!pids.is_empty());
    w.signal(libc::SIGKILL);
    w.wait_exit(Duration::from_secs(5))
        .expect("the supervisor died");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "workers {pids:?} outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An app that answers its version, slowly on `/slow`.
fn write_versioned_app(dir: &std::path::Path, version: &str) {
    std::fs::write(
        dir.join("versioned.py"),
        format!(
            "import time\n\
             VERSION = {version:?}\n\
             def application(environ, start_response):\n\
             \x20   if environ.get('PATH_INFO') == '/slow':\n\
             \x20       time.sleep(1.5)\n\
             \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
             \x20   return [VERSION.encode()]\n"
        ),
    )
    .unwrap();
}

#[test]
fn sighup_reloads_the_code_without_failing_a_request() {
    reload_without_failing_a_request(&["--processes", "2"], "SIGHUP", &|w| w.signal(libc::SIGHUP));
}

#[test]
fn a_file_edit_reloads_the_code_without_failing_a_request() {
    // --reload alone: one worker under a supervisor; the edit itself is the trigger.
    reload_without_failing_a_request(&["--reload"], "app files changed", &|_| {});
}

/// The app file is rewritten while a slow request runs and a loop of requests goes on, then
/// `trigger` (nothing, for a file watch) starts the reload: the slow request completes with
/// the old code, later requests get the new, and the loop sees no failure.
fn reload_without_failing_a_request(extra: &[&str], why: &str, trigger: &dyn Fn(&Wfcgi)) {
    let app = test_support::peers::TempDir::new("reload");
    write_versioned_app(app.path(), "v1");
    let mut args = vec![
        "--app-dir",
        app.path().to_str().unwrap(),
        "--handler",
        "versioned.application",
    ];
    args.extend_from_slice(extra);
    let mut w = Wfcgi::serve_with(&args, &|cmd| {
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    });
    wait_for_a_worker(&w, "/");
    let addr = w.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A loop of requests across the reload: every one must be answered.
    let looping = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut client = test_support::Client::connect(addr.parse().unwrap());
                let reply = client.request(1, &wsgi_params("GET", "/", ""), b"");
                answers.push((
                    reply.status(),
                    String::from_utf8_lossy(reply.body()).into_owned(),
                ));
            }
            answers
        })
    };
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut client = test_support::Client::connect(addr.parse().unwrap());
            let reply = client.request(1, &wsgi_params("GET", "/slow", ""), b"");
            (
                reply.status(),
                String::from_utf8_lossy(reply.body()).into_owned(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write_versioned_app(app.path(), "v2-new");
    trigger(&w);
    let done = format!("reload ({why}) done");
    let log = w.wait_log(&done);
    assert!(log.contains(&done), "{log}");
    // The slow request began with the old code and finishes with it.
    assert_eq!(
        slow.join().unwrap(),
        (200, "v1".to_string()),
        "log:\n{}",
        w.log()
    );
    // Once the reload is done, only the new code answers.
    for _ in 0..10 {
        assert_eq!(get(&w, "/", ""), Some((200, "v2-new".to_string())));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = looping.join().unwrap();
    assert!(answers.len() > 10, "{answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(_, v)| v == "v1") && answers.iter().any(|(_, v)| v == "v2-new"));
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn a_worker_past_max_rss_bytes_is_recycled() {
    let mut w = serve(&["--processes", "1", "--max-rss-bytes", "200M"]);
    let leaky = worker_pid(&w);
    let (status, body) = get(&w, "/leak", "mib=256").expect("the leak answers");
    assert_eq!(status, 200, "{body}");
    let log = Wfcgi::wait_for_text(
        &w.stderr_path,
        &format!("worker {leaky} exited after draining"),
    );
    assert!(
        log.contains("past WFCGI_MAX_RSS_BYTES (200 MiB)")
            && log.contains(&format!("worker {leaky} exited after draining")),
        "{log}"
    );
    let fresh = worker_pid(&w);
    assert_ne!(fresh, leaky);
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn recycling_behind_nginx_keepalive_answers_every_request() {
    use test_support::peers::{http, Nginx, PathParams};
    let mut w = serve(&["--processes", "2", "--max-requests", "20"]);
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let port = nginx.port;
    // Eight clients, GETs and POSTs (which nginx never retries on another connection: a
    // kept-alive connection closed under it would be a 502), while workers recycle.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut pids = BTreeSet::new();
                let mut failures = Vec::new();
                for i in 0..200 {
                    let r = if (c + i) % 2 == 0 {
                        http(port, "GET", "/pid?sleep=0.01", &[], b"")
                    } else {
                        http(port, "POST", "/echo", &[], b"one body")
                    };
                    match (r.status, r.text()) {
                        (200, body) if body == "one body" => {}
                        (200, body) => {
                            pids.insert(body.trim().parse::<u32>().unwrap());
                        }
                        (status, body) => failures.push(format!("{status}: {body}")),
                    }
                }
                (pids, failures)
            })
        })
        .collect();
    let mut pids = BTreeSet::new();
    let mut failures = Vec::new();
    for c in clients {
        let (p, f) = c.join().unwrap();
        pids.extend(p);
        failures.extend(f);
    }
    assert!(failures.is_empty(), "{failures:?}; log:\n{}", w.log());
    assert_eq!(nginx.error_log(), "", "log:\n{}", w.log());
    assert!(pids.len() >= 4, "{pids:?}; log:\n{}", w.log());
    let log = w.log();
    assert!(!log.contains(" died "), "{log}");
    // Not closed: passed to the workers that serve on.
    assert!(
        log.contains("kept-alive connections to the other workers"),
        "{log}"
    );
    drop(nginx);
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn the_listening_socket_on_fd_0_is_served_by_worker_processes() {
    // As mod_fcgid or spawn-fcgi start wfcgi, with WFCGI_PROCESSES in its environment.
    let python = repo_path("python");
    let mut w = Wfcgi::with_listening_stdin(
        &[
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
        ],
        &|cmd| {
            cmd.env("WFCGI_PROCESSES", "2");
        },
    );
    wait_for_a_worker(&w, "/pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pids = pids_seen(&w, 20);
    while pids.len() < 2 {
        assert!(Instant::now() < deadline, "{pids:?}; log:\n{}", w.log());
        pids.extend(pids_seen(&w, 20));
    }
    assert!(!pids.contains(&w.pid()), "the supervisor runs no Python");
    let victim = *pids.iter().next().unwrap();
    // SAFETY: kill on a pid this test learned from the worker itself.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    served_again(&w, Duration::from_secs(5));
    Wfcgi::wait_for_text(&w.stderr_path, &format!("worker {victim} died"));
    assert!(
        w.log().contains("serving the listening socket on fd 0"),
        "{}",
        w.log()
    );
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn a_worker_stopped_from_outside_is_replaced_and_not_called_a_crash() {
    let mut w = serve(&["--processes", "1"]);
    let victim = worker_pid(&w);
    // SAFETY: kill on a pid this test learned from the worker itself.
    unsafe { libc::kill(victim as i32, libc::SIGTERM) };
    let log = Wfcgi::wait_for_text(&w.stderr_path, "exited by itself after draining");
    assert!(
        log.contains(&format!("worker {victim} exited by itself")),
        "{log}"
    );
    assert!(!log.contains(" died "), "{log}");
    served_again(&w, Duration::from_secs(10));
    assert_ne!(worker_pid(&w), victim);
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}
