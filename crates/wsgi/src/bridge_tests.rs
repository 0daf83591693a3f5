//! Whole requests run in-process through `Bridge::dispatch` against the apps in
//! `tests/fixtures/bridge_apps.py`.

use pyo3::prelude::*;

use crate::testing::{bridge, python, request, Output};

const GET: &[(&str, &str)] = &[
    ("REQUEST_METHOD", "GET"),
    ("SCRIPT_NAME", ""),
    ("PATH_INFO", "/"),
    ("QUERY_STRING", ""),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "80"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("SERVER_SOFTWARE", "nginx/1.24.0"),
];

fn get(handler: &str) -> Output {
    request(&bridge(Some(handler), |_| {}), GET, b"")
}

fn assert_500(out: &Output, must_not_contain: &str) {
    assert_eq!(
        out.status_line(),
        "Status: 500 Internal Server Error",
        "{}",
        out.text()
    );
    assert!(!out.text().contains(must_not_contain), "{}", out.text());
    assert_eq!(out.app_status, Some(0));
}

fn closed_contains(name: &str) -> bool {
    python(|py| {
        let closed = py.import("bridge_apps").unwrap().getattr("closed").unwrap();
        closed.contains(name).unwrap()
    })
}

#[test]
fn single_bytes_response_is_framed_exactly() {
    let out = get("bridge_apps.hello");
    assert_eq!(
        out.text(),
        "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"
    );
    assert_eq!(out.app_status, Some(0));
}

#[test]
fn wsgiref_validator_passes_for_get_post_head() {
    let b = bridge(Some("validate_app.application"), |c| c.threads = 2);
    let out = request(&b, GET, b"");
    assert_eq!(out.status_line(), "Status: 200 OK", "{}", out.text());
    assert_eq!(out.body(), "method=GET body=");

    let mut post = GET.to_vec();
    post[0] = ("REQUEST_METHOD", "POST");
    post.push(("CONTENT_LENGTH", "5"));
    post.push(("CONTENT_TYPE", "text/plain"));
    let out = request(&b, &post, b"hello-and-more");
    assert_eq!(out.status_line(), "Status: 200 OK", "{}", out.text());
    assert_eq!(out.body(), "method=POST body=hello");

    let mut head = GET.to_vec();
    head[0] = ("REQUEST_METHOD", "HEAD");
    let out = request(&b, &head, b"");
    assert_eq!(out.status_line(), "Status: 200 OK", "{}", out.text());
    assert!(
        out.text().contains("Content-Length: 0\r\n"),
        "{}",
        out.text()
    );
    assert_eq!(out.body(), "");
}

#[test]
fn post_body_reaches_the_app() {
    let mut post = GET.to_vec();
    post[0] = ("REQUEST_METHOD", "POST");
    post.push(("CONTENT_LENGTH", "3"));
    let out = request(&bridge(Some("bridge_apps.echo"), |_| {}), &post, b"abc");
    assert_eq!(out.body(), "POST:abc");
}

#[test]
fn exception_before_start_response_is_a_500_without_traceback_by_default() {
    let out = get("bridge_apps.fail_before");
    assert_500(&out, "boom-before");
    assert!(out.body().contains("server's log"), "{}", out.text());

    let b = bridge(Some("bridge_apps.fail_before"), |c| {
        c.debug_responses = true
    });
    let out = request(&b, GET, b"");
    assert_eq!(out.status_line(), "Status: 500 Internal Server Error");
    assert!(
        out.body().contains("ValueError: boom-before"),
        "{}",
        out.text()
    );
    assert!(out.body().contains("Traceback"), "{}", out.text());
}

#[test]
fn exception_after_the_head_was_sent_ends_the_request() {
    let out = get("bridge_apps.fail_after");
    assert_eq!(
        out.text(),
        "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst"
    );
    assert_eq!(out.app_status, Some(1));
}

#[test]
fn exc_info_replaces_the_status_before_anything_is_sent() {
    let out = get("bridge_apps.exc_info_replaces");
    assert_eq!(
        out.text(),
        "Status: 503 Try Later\r\nRetry-After: 5\r\n\r\nlater"
    );
}

#[test]
fn exc_info_after_the_head_was_sent_reraises() {
    let out = get("bridge_apps.exc_info_after_sent");
    assert_eq!(out.text(), "Status: 200 OK\r\n\r\npartial");
    assert_eq!(out.app_status, Some(1));
}

#[test]
fn app_errors_are_500s() {
    for handler in [
        "bridge_apps.second_start_without_exc_info",
        "bridge_apps.str_chunk",
        "bridge_apps.bad_header",
        "bridge_apps.bad_status",
        "bridge_apps.no_start_response",
    ] {
        let out = get(handler);
        assert_500(&out, "evil");
        assert!(!out.text().contains("orphan"), "{handler}");
    }
}

#[test]
fn print_and_wsgi_errors_never_reach_the_response() {
    let out = get("bridge_apps.printing");
    assert_eq!(out.text(), "Status: 200 OK\r\n\r\nbody");
}

#[test]
fn close_is_called_on_success_and_on_failure() {
    let out = get("bridge_apps.tracked_ok");
    assert_eq!(out.body(), "ab");
    assert!(closed_contains("ok"));
    let out = get("bridge_apps.tracked_fail");
    assert_eq!(out.body(), "a");
    assert_eq!(out.app_status, Some(1));
    assert!(closed_contains("fail"));
    // A plain list has no close() and is not asked; a subclass of one may have it.
    assert_eq!(get("bridge_apps.closing_list").body(), "x");
    assert!(closed_contains("list-subclass"));
}

#[test]
fn write_callable_and_empty_bodies() {
    assert_eq!(get("bridge_apps.write_callable").body(), "written returned");
    assert_eq!(
        get("bridge_apps.empty_body").text(),
        "Status: 204 No Content\r\nX-Empty: 1\r\n\r\n"
    );
}

#[test]
fn file_wrapper_sends_a_regular_file_from_its_position() {
    let source = std::fs::read(crate::testing::fixtures().join("bridge_apps.py")).unwrap();
    let out = get("bridge_apps.file_wrapper");
    assert_eq!(out.body().as_bytes(), &source[10..]);
    let out = get("bridge_apps.file_wrapper_filelike");
    assert_eq!(out.body(), "0123456789");
    assert!(closed_contains("filelike"));
}

#[test]
fn large_chunks_arrive_whole() {
    let out = get("bridge_apps.big");
    let body = out.body();
    assert_eq!(body.len(), 100_020);
    assert!(body.starts_with("xxx") && body.ends_with("yyy"));
}

#[test]
fn content_length_over_the_limit_is_413_without_calling_the_app() {
    let b = bridge(Some("bridge_apps.counted"), |c| c.max_body_bytes = Some(10));
    let mut post = GET.to_vec();
    post[0] = ("REQUEST_METHOD", "POST");
    post[2] = ("PATH_INFO", "/too-large");
    post.push(("CONTENT_LENGTH", "11"));
    let out = request(&b, &post, b"01234567890");
    assert_eq!(out.status_line(), "Status: 413 Payload Too Large");
    let called = python(|py| {
        let calls = py.import("bridge_apps").unwrap().getattr("calls").unwrap();
        calls.contains("/too-large").unwrap()
    });
    assert!(!called);
    // A body without CONTENT_LENGTH that turns out too large: the app's read raises, 413.
    let b = bridge(Some("bridge_apps.read_all"), |c| {
        c.max_body_bytes = Some(10)
    });
    let out = request(&b, &post[..post.len() - 1], b"01234567890");
    assert_eq!(
        out.status_line(),
        "Status: 413 Payload Too Large",
        "{}",
        out.text()
    );
}

#[test]
fn load_failure_answers_500_every_time_and_retries() {
    let b = bridge(Some("no_such_module_for_bridge.app"), |_| {});
    for _ in 0..2 {
        let out = request(&b, GET, b"");
        assert_500(&out, "no_such_module_for_bridge");
    }
    let b = bridge(Some("no_such_module_for_bridge.app"), |c| {
        c.debug_responses = true
    });
    let out = request(&b, GET, b"");
    assert!(
        out.body()
            .contains("WSGI_HANDLER = \"no_such_module_for_bridge.app\" could not be imported"),
        "{}",
        out.text()
    );

    let b = bridge(Some("flaky_loader.app"), |_| {});
    assert_500(&request(&b, GET, b""), "flaky");
    let out = request(&b, GET, b"");
    assert_eq!(out.body(), "loaded on attempt 2", "{}", out.text());
}

#[test]
fn demo_app_without_a_handler() {
    let out = request(&bridge(None, |_| {}), GET, b"");
    assert_eq!(out.status_line(), "Status: 200 OK");
    assert!(
        out.body()
            .contains("wfcgi is serving the built-in demo app"),
        "{}",
        out.text()
    );
}

#[test]
fn bridge_environ_flags() {
    let b = bridge(Some("bridge_apps.environ_dump"), |c| {
        c.threads = 3;
        c.script_name = Some("/shop".to_owned());
    });
    let mut iis = GET.to_vec();
    iis[7] = ("SERVER_SOFTWARE", "Microsoft-IIS/10.0");
    iis[2] = ("PATH_INFO", "/shop/cart");
    iis.push(("HTTPS", "on"));
    let out = request(&b, &iis, b"");
    assert_eq!(out.body(), "['/shop', '/cart', 'https', True, True]");
    let out = request(&b, GET, b"");
    assert_eq!(out.body(), "['', '/', 'http', True, False]");
}

#[test]
fn python_info_names_the_running_python() {
    let info = bridge(None, |_| {}).python_info().unwrap();
    assert!(info
        .version
        .starts_with(crate::interpreter::BUILD_PYTHON_VERSION));
    python(|py| {
        let cwd: String = py
            .import("os")
            .unwrap()
            .call_method0("getcwd")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(std::path::Path::new(&cwd), crate::testing::fixtures());
    });
}
