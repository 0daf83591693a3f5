//! `--request-timeout-secs` and SIGUSR1 against the real binary: a hung request is answered
//! 504 and its Python stack (the app's file, line and source line) logged; a response that had
//! begun is cut short; with every thread of a worker hung, a fresh worker serves and the stuck
//! one is ended after the grace; SIGUSR1 logs the running requests' stacks and stops nothing.

use std::time::{Duration, Instant};

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

/// The frame of the test app's `sleep` route, as `traceback.format_stack` prints it.
const SLEEP_FRAME: &str = "testapp/app.py\", line 177, in sleep";
const SLEEP_SOURCE: &str = "time.sleep(_int(_query(environ), \"ms\", 100) / 1000.0)";

#[test]
fn a_hung_request_gets_504_and_its_python_stack_is_logged() {
    let mut w = Wfcgi::serve_testapp(&["--request-timeout-secs", "1"]);
    let start = Instant::now();
    let (status, body) = get(&w, "/sleep", "ms=20000").expect("an answer");
    let took = start.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!body.contains("app.py"), "no internals in the page: {body}");
    let log = w.wait_log("Its Python stack");
    assert!(log.contains("(GET /sleep"), "{log}");
    assert!(log.contains("timed out after 1."), "{log}");
    assert!(log.contains("the client got 504 Gateway Timeout"), "{log}");
    assert!(log.contains(SLEEP_FRAME), "{log}");
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
    assert!(log.contains(SLEEP_FRAME), "{log}");
    assert_eq!(slow.join().unwrap(), 200);
    w.signal(libc::SIGUSR1);
    w.wait_log("no request is running");
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
    assert!(log.contains(SLEEP_FRAME), "{log}");
    let first: u32 = first.trim().parse().unwrap();
    let gone = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(Instant::now() < gone, "the stuck worker is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&w, "/hello", "").map(|r| r.0), Some(200));
    w.stop(libc::SIGTERM);
}
