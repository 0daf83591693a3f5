//! Apps that fail, and how wfcgi reports it: the visitor gets a plain 500 (the traceback only
//! with --debug-responses), the log gets the details, and the process keeps serving. Handlers
//! that cannot be loaded, and the request body limit.

use fastcgi::protocol::ProtocolStatus;
use test_support::peers::{self, Nginx, PathParams};
use test_support::wfcgi::{repo_path, wsgi_params, Wfcgi};
use test_support::{Client, Reply};

fn request(c: &mut Client, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut params = wsgi_params(method, path, "");
    params.extend_from_slice(extra);
    let bytes = Client::request_bytes(1, true, &params, body);
    c.send(&bytes);
    c.read_reply(1)
}

fn get(c: &mut Client, path: &str) -> Reply {
    request(c, "GET", path, &[], b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything the client received: STDOUT and STDERR records.
fn everything(reply: &Reply) -> String {
    text(&[&reply.stdout[..], &reply.stderr[..]].concat())
}

/// The process still serves, on the same connection and on a new one.
fn still_serves(w: &Wfcgi, c: &mut Client) {
    let r = get(c, "/hello");
    assert_eq!(r.body(), b"Hello, World!", "log:\n{}", w.log());
    let r = get(&mut w.connect(), "/hello");
    assert_eq!(r.body(), b"Hello, World!");
}

fn assert_complete(reply: &Reply) {
    let end = reply.end.as_ref().expect("END_REQUEST");
    assert_eq!(end.protocol_status, ProtocolStatus::RequestComplete);
}

#[test]
fn raise_before_start_response_is_a_plain_500_with_the_traceback_in_the_log() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let r = get(&mut c, "/raise-before");
    assert_eq!(r.status(), 500);
    assert_complete(&r);
    let all = everything(&r);
    for secret in ["Traceback", "boom before start_response", "app.py"] {
        assert!(
            !all.contains(secret),
            "{secret} shown to the visitor: {all}"
        );
    }
    let log = w.wait_log("boom before start_response");
    assert!(log.contains("Traceback"), "{log}");
    assert!(
        log.contains("RuntimeError: boom before start_response"),
        "{log}"
    );
    still_serves(&w, &mut c);
}

#[test]
fn debug_responses_put_the_traceback_in_the_body() {
    let w = Wfcgi::serve_testapp(&["--debug-responses"]);
    let mut c = w.connect();
    let r = get(&mut c, "/raise-before");
    assert_eq!(r.status(), 500);
    let body = text(r.body());
    assert!(body.contains("Traceback"), "{body}");
    assert!(
        body.contains("RuntimeError: boom before start_response"),
        "{body}"
    );
    still_serves(&w, &mut c);
}

#[test]
fn raise_after_the_head_ends_the_response_cleanly() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let r = get(&mut c, "/raise-after");
    assert_eq!(r.status(), 200);
    assert_eq!(r.body(), b"partial");
    assert_complete(&r);
    assert!(!everything(&r).contains("boom"), "{}", everything(&r));
    let log = w.wait_log("boom after start_response");
    assert!(
        log.contains("RuntimeError: boom after start_response"),
        "{log}"
    );
    still_serves(&w, &mut c);
}

#[test]
fn raise_after_through_nginx_then_the_next_request_is_served() {
    // The head went out as 200 with the first piece; the failure ends the request (END_REQUEST)
    // and nginx's upstream connection stays usable.
    let w = Wfcgi::serve_testapp(&[]);
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let r = peers::http(nginx.port, "GET", "/raise-after", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("partial"), "{}", r.text());
    let r = peers::http(nginx.port, "GET", "/hello", &[], b"");
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn bad_header_is_a_500_and_the_log_names_it() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let r = get(&mut c, "/bad-header");
    assert_eq!(r.status(), 500);
    assert_complete(&r);
    let all = everything(&r);
    assert!(
        !all.contains("Injected"),
        "header injection reached the client: {all}"
    );
    assert!(!all.contains("bad header"), "{all}");
    let log = w.wait_log("X-Bad");
    assert!(log.contains("X-Bad"), "{log}");
    still_serves(&w, &mut c);
}

#[test]
fn bad_status_is_a_500_and_the_log_names_it() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let r = get(&mut c, "/bad-status");
    assert_eq!(r.status(), 500);
    assert_complete(&r);
    assert!(!everything(&r).contains("bad status"));
    let log = w.wait_log("\"OK\"");
    assert!(log.contains("status \"OK\""), "{log}");
    still_serves(&w, &mut c);
}

#[test]
fn print_output_goes_to_the_log_not_the_response() {
    // At info level the request's span is made only for the lines written (log_scope); at
    // debug level it is entered for the whole request. Either way each line carries the id.
    for level in ["info", "debug"] {
        let w = Wfcgi::serve_testapp(&["--log-level", level]);
        let mut c = w.connect();
        let r = get(&mut c, "/print");
        assert_eq!(r.status(), 200);
        assert_eq!(r.body(), b"printed");
        let all = everything(&r);
        let log = w.wait_log("wsgi-errors-line");
        for line in ["printed-to-stdout", "printed-to-stderr", "wsgi-errors-line"] {
            assert!(!all.contains(line), "{line} in the response: {all}");
            let logged = log
                .lines()
                .find(|l| l.contains(line))
                .unwrap_or_else(|| panic!("{line} not in the log:\n{log}"));
            assert!(
                logged.contains("request{id=") && logged.contains("}: "),
                "{level}: the line of {line} does not carry the request's id: {logged}"
            );
        }
        still_serves(&w, &mut c);
    }
}

#[test]
fn every_fault_in_turn_on_one_connection() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    for (path, status) in [
        ("/raise-before", 500),
        ("/raise-after", 200),
        ("/bad-header", 500),
        ("/bad-status", 500),
        ("/print", 200),
        ("/nope", 404),
    ] {
        let r = get(&mut c, path);
        assert_eq!(r.status(), status, "{path}");
        assert_complete(&r);
        let r = get(&mut c, "/hello");
        assert_eq!(
            r.body(),
            b"Hello, World!",
            "after {path}; log:\n{}",
            w.log()
        );
    }
}

#[test]
fn unimportable_handler_answers_500_and_the_log_says_what_was_tried() {
    let python = repo_path("python");
    let w = Wfcgi::serve(&[
        "--app-dir",
        python.to_str().unwrap(),
        "--handler",
        "does_not_exist.app",
    ]);
    let mut c = w.connect();
    for _ in 0..3 {
        let r = get(&mut c, "/hello");
        assert_eq!(r.status(), 500);
        assert_complete(&r);
        assert!(!everything(&r).contains("ModuleNotFoundError"));
    }
    let r = get(&mut w.connect(), "/hello");
    assert_eq!(r.status(), 500);
    let log = w.wait_log("could not be imported");
    assert!(log.contains("--handler"), "names the setting:\n{log}");
    assert!(
        log.contains("\"does_not_exist.app\""),
        "names the value:\n{log}"
    );
    assert!(
        log.contains("module \"does_not_exist\""),
        "names the modules tried:\n{log}"
    );
    assert!(log.contains("No module named 'does_not_exist'"), "{log}");
    let mut w = w;
    assert!(w.try_wait().is_none(), "the process must stay up");
}

#[test]
fn unimportable_handler_from_the_environment_names_wsgi_handler() {
    let python = repo_path("python");
    let w = Wfcgi::serve_with(&["--app-dir", python.to_str().unwrap()], &|cmd| {
        cmd.env("WSGI_HANDLER", "no_such_module.application");
    });
    let r = get(&mut w.connect(), "/hello");
    assert_eq!(r.status(), 500);
    let log = w.wait_log("could not be imported");
    assert!(log.contains("WSGI_HANDLER"), "{log}");
    assert!(log.contains("\"no_such_module.application\""), "{log}");
    assert!(log.contains("module \"no_such_module\""), "{log}");
}

#[test]
fn broken_import_shows_the_inner_import_error_traceback() {
    let fixtures = repo_path("python/loader_fixtures");
    let w = Wfcgi::serve(&[
        "--app-dir",
        fixtures.to_str().unwrap(),
        "--handler",
        "broken_import.application",
    ]);
    let r = get(&mut w.connect(), "/");
    assert_eq!(r.status(), 500);
    let log = w.wait_log("does_not_exist_xyz");
    assert!(log.contains("does_not_exist_xyz"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    assert!(
        log.contains("broken_import.py"),
        "the traceback reaches into the module:\n{log}"
    );
    // Still up, still 500 (the import is not retried into a half-loaded module).
    let r = get(&mut w.connect(), "/");
    assert_eq!(r.status(), 500);
}

#[test]
fn max_body_bytes_refuses_larger_bodies_with_413() {
    let w = Wfcgi::serve_testapp(&["--max-body-bytes", "1000"]);
    let mut c = w.connect();
    let big = vec![b'x'; 5000];
    let r = request(
        &mut c,
        "POST",
        "/echo",
        &[
            ("CONTENT_LENGTH", "5000"),
            ("CONTENT_TYPE", "application/octet-stream"),
        ],
        &big,
    );
    assert_eq!(r.status(), 413, "{}", text(&r.stdout));
    assert_complete(&r);
    // At the limit: accepted.
    let ok = vec![b'y'; 1000];
    let r = request(
        &mut w.connect(),
        "POST",
        "/echo",
        &[("CONTENT_LENGTH", "1000")],
        &ok,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.body(), &ok[..]);

    // Through nginx (Content-Length from the client).
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let r = peers::http(nginx.port, "POST", "/echo", &[], &big);
    assert_eq!(r.status, 413);
    let r = peers::http(nginx.port, "GET", "/hello", &[], b"");
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn max_body_bytes_applies_to_a_body_without_content_length() {
    // A FastCGI request may stream its body with no CONTENT_LENGTH (nginx with a chunked request
    // and request buffering off). The limit counts the bytes that arrive.
    let w = Wfcgi::serve_testapp(&["--max-body-bytes", "1000"]);
    let r = request(&mut w.connect(), "POST", "/sha256", &[], &vec![b'z'; 5000]);
    let status = r.status();
    assert_eq!(status, 413, "{}", text(&r.stdout));
    still_serves(&w, &mut w.connect());
}

/// A client that leaves mid-response: the app's iterable is still closed (PEP 3333), and the
/// process goes on serving.
#[test]
fn close_is_called_when_the_client_goes_away_mid_response() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let params = wsgi_params("GET", "/close-tracker", "chunks=200&delay=0.02");
    c.send(&Client::request_bytes(1, true, &params, b""));
    // Take the first record, then hang up while the app is still producing.
    let first = c.read_record().expect("the response begins");
    assert_eq!(first.record_type, fastcgi::RecordType::Stdout);
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let count = get(&mut w.connect(), "/close-count");
        if count.body() == b"1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "close() was not called; log:\n{}",
            w.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// With every Python thread busy, a request whose client leaves while it waits in the queue is
/// never started: nothing runs for a visitor who is gone.
#[test]
fn a_queued_request_whose_client_left_is_not_started() {
    let w = Wfcgi::serve_testapp(&["--threads", "1"]);
    let mut busy = w.connect();
    let params = wsgi_params("GET", "/sleep", "ms=1000");
    busy.send(&Client::request_bytes(1, true, &params, b""));
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Queued behind the sleeping request, then abandoned.
    let mut gone = w.connect();
    let params = wsgi_params("GET", "/print", "");
    gone.send(&Client::request_bytes(1, true, &params, b""));
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(gone);
    let reply = busy.read_reply(1);
    assert_eq!(reply.body(), b"slept");
    // The thread is free again and serves; the abandoned /print never ran.
    let mut c = w.connect();
    still_serves(&w, &mut c);
    assert!(
        !w.log().contains("printed-to-stdout"),
        "the abandoned request ran; log:\n{}",
        w.log()
    );
}

/// The id on an error page, from its `X-Request-Id` header, checked against the page's text.
fn page_id(reply: &Reply) -> String {
    let cgi = reply.cgi();
    let id = text(cgi.header("X-Request-Id").expect("an X-Request-Id header"));
    assert!(
        text(cgi.body).contains(&format!("Request id: {id}")),
        "{}",
        text(cgi.body)
    );
    id
}

#[test]
fn a_500_page_shows_the_request_id_that_leads_to_its_traceback_in_the_log() {
    let w = Wfcgi::serve_testapp(&[]);
    let mut c = w.connect();
    let reply = get(&mut c, "/raise-before");
    assert_eq!(reply.status(), 500);
    let id = page_id(&reply);
    assert_eq!(id.len(), 16, "{id}");
    assert!(
        !text(reply.cgi().body).contains("app.py"),
        "no traceback without debug"
    );
    // The log line of that request's failure carries the id, and the traceback follows it.
    let log = w.wait_log("boom before start_response");
    let at = log
        .find(&format!(
            "request{{id={id}}}: wsgi::response: the app failed"
        ))
        .unwrap_or_else(|| panic!("no line with {id}:\n{log}"));
    assert!(
        log[at..].contains("RuntimeError: boom before start_response"),
        "{log}"
    );
    // Another request gets another id.
    assert_ne!(page_id(&get(&mut c, "/raise-before")), id);
    still_serves(&w, &mut c);
}

#[test]
fn the_web_servers_request_id_is_used_on_the_page_and_in_the_log() {
    let w = Wfcgi::serve_testapp(&[]);
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    // nginx passes the header on as HTTP_X_REQUEST_ID (as with `$request_id` set upstream).
    let r = peers::http(
        nginx.port,
        "GET",
        "/raise-before",
        &[("X-Request-Id", "edge-7f3a")],
        b"",
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.header("X-Request-Id"), Some("edge-7f3a"));
    assert!(r.text().contains("Request id: edge-7f3a"), "{}", r.text());
    let log = w.wait_log("request{id=edge-7f3a}: wsgi::response");
    assert!(
        log.contains("request{id=edge-7f3a}: wsgi::response"),
        "{log}"
    );
    // A value that could not go into a header or a log line unescaped is replaced.
    let mut c = w.connect();
    let reply = request(
        &mut c,
        "GET",
        "/raise-before",
        &[("HTTP_X_REQUEST_ID", "a b\"c")],
        b"",
    );
    assert_eq!(page_id(&reply).len(), 16);
}
