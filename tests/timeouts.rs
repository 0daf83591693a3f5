//! `--request-timeout-secs`, `--body-timeout-secs` and SIGUSR1 against the real binary: a hung
//! request is answered 504 and its Python stack (the app's file, line and source line) logged;
//! a response that had begun is cut short; with every thread of a worker hung, a fresh worker
//! serves and the stuck one is ended after the grace; a body trickled a byte a second is cut
//! at the body timeout and the thread is free again; SIGUSR1 logs the running requests' stacks
//! and stops nothing.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use test_support::peers;
use test_support::wfcgi::{wsgi_params, Wfcgi};

/// One GET on a fresh connection: status and body, or `None` if the connection closed first.
fn get(w: &Wfcgi, path: &str, query: &str) -> Option<(u16, String)> {
    let stream = std::net::TcpStream::connect(w.addr()).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut client = test_support::Client::from_stream(stream);
    let params = wsgi_params("GET", path, query);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let reply = client.request(1, &params, b"");
        (
            reply.status(),
            String::from_utf8_lossy(reply.body()).into_owned(),
        )
    }))
    .ok()
}

const SLEEP_SOURCE: &str = "time.sleep(_int(_query(environ), \"ms\", 100) / 1000.0)";

/// The frame of the test app's `sleep` route, as `traceback.format_stack` prints it.
fn sleep_frame() -> String {
    peers::testapp_frame(SLEEP_SOURCE, "sleep")
}

#[test]
fn a_hung_request_gets_504_and_its_python_stack_is_logged() {
    let mut w = Wfcgi::serve_testapp(&["--request-timeout-secs", "1"]);
    let start = Instant::now();
    let (status, body) = get(&w, "/sleep", "ms=20000").expect("an answer");
    let took = start.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!body.contains("app.py"), "no internals in the page: {body}");
    // The page's request id leads to the log line with the stack.
    let id = body
        .split("Request id: ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no request id: {body}"));
    let log = w.wait_log("Its Python stack");
    assert!(
        log.contains(&format!(
            "request{{id={id}}}: wsgi::watchdog: request {id} (GET /sleep"
        )),
        "{log}"
    );
    assert!(log.contains("timed out after 1."), "{log}");
    assert!(log.contains("the client got 504 Gateway Timeout"), "{log}");
    assert!(log.contains(&sleep_frame()), "{log}");
    assert!(log.contains(SLEEP_SOURCE), "{log}");
    // The process serves on; a quick request is not touched.
    assert_eq!(get(&w, "/hello", "").map(|r| r.0), Some(200), "{}", w.log());
    w.stop(libc::SIGTERM);
}

#[test]
fn a_response_that_began_is_cut_short_not_completed() {
    let mut w = Wfcgi::serve_testapp(&["--request-timeout-secs", "1"]);
    // The first chunk goes out at once, then the app sleeps for 10 s between chunks.
    assert_eq!(get(&w, "/stream", "chunks=3&delay=10"), None, "{}", w.log());
    let log = w.wait_log("cut short");
    assert!(
        log.contains("its response had begun: the connection was closed"),
        "{log}"
    );
    assert!(log.contains("in generate"), "the generator's frame: {log}");
    assert_eq!(get(&w, "/hello", "").map(|r| r.0), Some(200), "{}", w.log());
    w.stop(libc::SIGTERM);
}

#[test]
fn sigusr1_logs_the_stack_of_each_running_request_and_stops_nothing() {
    let mut w = Wfcgi::serve_testapp(&[]);
    let addr = w.addr();
    let slow = std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut client = test_support::Client::from_stream(stream);
        client
            .request(1, &wsgi_params("GET", "/sleep", "ms=1500"), b"")
            .status()
    });
    std::thread::sleep(Duration::from_millis(500));
    w.signal(libc::SIGUSR1);
    let log = w.wait_log("most recent call last");
    assert!(
        log.contains("stacks (SIGUSR1): 1 request(s) running"),
        "{log}"
    );
    assert!(log.contains("(GET /sleep"), "{log}");
    assert!(log.contains(&sleep_frame()), "{log}");
    assert_eq!(slow.join().unwrap(), 200);
    w.signal(libc::SIGUSR1);
    let log = w.wait_log("no request is running");
    assert!(log.contains("no request is running"), "{log}");
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "{}", w.log());
}

#[test]
fn with_every_thread_hung_a_fresh_worker_serves_and_the_stuck_one_is_ended() {
    let mut w = Wfcgi::serve_testapp(&[
        "--processes",
        "1",
        "--threads",
        "2",
        "--request-timeout-secs",
        "1",
        "--shutdown-grace-secs",
        "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some((200, pid)) = get(&w, "/pid", "") {
            break pid;
        }
        assert!(Instant::now() < deadline, "no worker; log:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr = w.addr();
    let hung: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                let mut client = test_support::Client::from_stream(stream);
                client
                    .request(1, &wsgi_params("GET", "/sleep", "ms=600000"), b"")
                    .status()
            })
        })
        .collect();
    for h in hung {
        assert_eq!(h.join().unwrap(), 504, "{}", w.log());
    }
    // Both threads of the first worker are still asleep; another worker answers.
    let start = Instant::now();
    let second = loop {
        if let Some((200, pid)) = get(&w, "/pid", "") {
            if pid != first {
                break pid;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no fresh worker; log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(first, second);
    let log = w.wait_log("killing it");
    assert!(log.contains("ran past WFCGI_REQUEST_TIMEOUT_SECS"), "{log}");
    assert!(log.contains(&sleep_frame()), "{log}");
    let first: u32 = first.trim().parse().unwrap();
    let gone = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(Instant::now() < gone, "the stuck worker is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&w, "/hello", "").map(|r| r.0), Some(200));
    w.stop(libc::SIGTERM);
}

#[test]
fn a_body_trickled_a_byte_a_second_is_cut_at_the_body_timeout_and_the_thread_is_freed() {
    use fastcgi::client::{encode_begin, encode_params, encode_stdin};
    let mut w = Wfcgi::serve_testapp(&["--threads", "1", "--body-timeout-secs", "2"]);
    let mut stream = std::net::TcpStream::connect(w.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = Vec::new();
    encode_begin(&mut head, 1, true);
    let mut params = wsgi_params("POST", "/echo", "");
    params.push(("CONTENT_LENGTH", "60"));
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    encode_params(&mut head, 1, pairs);
    stream.write_all(&head).unwrap();
    // One byte a second, each its own STDIN record, as nginx forwards a slow client's body
    // with request buffering off; the sender stops when the connection is gone.
    let mut sender = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            let mut record = Vec::new();
            encode_stdin(&mut record, 1, b"x");
            if sender.write_all(&record).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "closed after {took:?}; log:\n{}",
        w.log()
    );
    assert!(seen.is_empty(), "no response: {seen:?}");
    // The only Python thread is free again.
    let start = Instant::now();
    assert_eq!(get(&w, "/hello", "").map(|r| r.0), Some(200), "{}", w.log());
    assert!(start.elapsed() < Duration::from_secs(2));
    let log = w.wait_log("body stopped arriving (WFCGI_BODY_TIMEOUT_SECS)");
    assert!(log.contains("a wsgi.input read waited 2 s for it"), "{log}");
    drop(stream);
    trickle.join().unwrap();
    w.stop(libc::SIGTERM);
}

#[test]
fn on_the_inline_iis_connection_a_hung_request_gets_504_and_the_process_makes_way() {
    // As IIS starts wfcgi: one connected socket on fd 0, requests run on its own thread.
    let dir = test_support::peers::TempDir::new("inline-timeout");
    let log_path = dir.path().join("wfcgi.log");
    let python = test_support::wfcgi::repo_path("python");
    let (mut w, mut conn) = Wfcgi::with_connected_stdin(
        &[
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
            "--request-timeout-secs",
            "1",
        ],
        &|cmd| {
            cmd.env("WSGI_LOG", &log_path);
        },
    );
    let hello = conn.request(1, &wsgi_params("GET", "/hello", ""), b"");
    assert_eq!(hello.status(), 200);
    let start = Instant::now();
    let reply = conn.request(1, &wsgi_params("GET", "/sleep", "ms=20000"), b"");
    assert_eq!(reply.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The thread is stuck in the app and holds the connection: the process exits for IIS to
    // start a fresh one, instead of taking requests it could never serve.
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits");
    assert_eq!(Wfcgi::code(status), 3);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("the client got 504 Gateway Timeout"), "{log}");
    assert!(log.contains(&sleep_frame()), "{log}");
    assert!(log.contains("exiting (status 3)"), "{log}");
}
