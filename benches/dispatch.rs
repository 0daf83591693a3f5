//! The request dispatch hot path, in-process: params -> environ -> app call -> framed response,
//! for the hello route of python/testapp, against the same app called from Python with a ready
//! environ (the app's own work). The difference is what the bridge adds per request.
//!
//! `bridge_hello_logged` is the first with a tracing subscriber installed, as in the binary.
//!
//! `cargo bench --bench dispatch`; figures in docs/benchmarks.md.

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use fastcgi::{Body, Params, Response};
use pyo3::prelude::*;
use wsgi::{Bridge, BridgeConfig, HandlerSetting, SettingSource};

/// The params nginx sends for `GET /hello` (stock fastcgi_params and a browser's headers).
fn nginx_params() -> Params {
    let pairs: [(&[u8], &[u8]); 24] = [
        (b"QUERY_STRING", b""),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""),
        (b"SCRIPT_NAME", b""),
        (b"PATH_INFO", b"/hello"),
        (b"REQUEST_URI", b"/hello"),
        (b"DOCUMENT_URI", b"/hello"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"http"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"nginx/1.22.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"REMOTE_PORT", b"53412"),
        (b"SERVER_ADDR", b"127.0.0.1"),
        (b"SERVER_PORT", b"8080"),
        (b"SERVER_NAME", b"localhost"),
        (b"HTTP_HOST", b"localhost:8080"),
        (
            b"HTTP_USER_AGENT",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            b"HTTP_ACCEPT",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        (b"HTTP_ACCEPT_LANGUAGE", b"en-US,en;q=0.5"),
        (b"HTTP_ACCEPT_ENCODING", b"gzip, deflate, br"),
        (b"HTTP_CONNECTION", b"keep-alive"),
        (
            b"HTTP_COOKIE",
            b"csrftoken=Xk3lP0m9V2aQ7rT5yU8iO1pZ4sD6fG0h; sessionid=abcdefghijklmnop",
        ),
    ];
    Params::from_pairs(pairs)
}

/// The app's own work: the hello app called from Python with an environ already built (a copy
/// of one, as a server must give each request its own dict) and a trivial start_response.
const APP_ONLY: &str = r#"
import io, sys
from testapp.app import application

def _start_response(status, headers, exc_info=None):
    return None

_environ = {
    'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': '/hello', 'QUERY_STRING': '',
    'SERVER_NAME': 'localhost', 'SERVER_PORT': '8080', 'SERVER_PROTOCOL': 'HTTP/1.1',
    'wsgi.version': (1, 0), 'wsgi.url_scheme': 'http', 'wsgi.input': io.BytesIO(b''),
    'wsgi.errors': sys.stderr, 'wsgi.multithread': True, 'wsgi.multiprocess': False,
    'wsgi.run_once': False,
}

def app_only():
    result = application(_environ.copy(), _start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, 'close', None)
        if close is not None:
            close()
"#;

fn dispatch(c: &mut Criterion) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = BridgeConfig::new(repo.join("python"));
    config.handler = Some(HandlerSetting {
        path: "testapp.app.application".into(),
        source: SettingSource::Flag("--handler"),
    });
    config.threads = 1;
    let bridge = Bridge::start(config).expect("start the bridge");
    let params = nginx_params();

    Python::attach(|py| {
        // Load the handler and check the response once, outside the measurement.
        let (response, mut capture) = Response::for_test(1);
        bridge.dispatch(py, params.clone(), Body::full(Bytes::new()), response);
        let out = capture.stdout().to_vec();
        assert!(out.starts_with(b"Status: 200 OK\r\n") && out.ends_with(b"Hello, World!"));

        let mut g = c.benchmark_group("dispatch");
        g.bench_function("bridge_hello", |b| {
            // Setup (params copy, a capturing writer) and teardown stay outside the timing.
            b.iter_batched(
                || {
                    let (response, capture) = Response::for_test(1);
                    (params.clone(), response, capture)
                },
                |(p, response, mut capture)| {
                    bridge.dispatch(py, p, Body::full(Bytes::new()), response);
                    debug_assert_eq!(capture.app_status(), Some(0));
                    capture
                },
                criterion::BatchSize::SmallInput,
            )
        });

        // The same with the binary's subscriber: what tracing costs a request that logs
        // nothing. Without one, spans and events are free, and `bridge_hello` cannot show them
        // (a span per request once cost a tenth of the Python thread's time, unseen here).
        tracing::subscriber::with_default(wfcgi::log_subscriber_for_bench(), || {
            g.bench_function("bridge_hello_logged", |b| {
                b.iter_batched(
                    || {
                        let (response, capture) = Response::for_test(1);
                        (params.clone(), response, capture)
                    },
                    |(p, response, capture)| {
                        bridge.dispatch(py, p, Body::full(Bytes::new()), response);
                        capture
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        });

        let module = PyModule::from_code(
            py,
            &std::ffi::CString::new(APP_ONLY).unwrap(),
            c"app_only.py",
            c"app_only",
        )
        .expect("app_only module");
        let app_only = module.getattr("app_only").unwrap();
        g.bench_function("app_only_hello", |b| b.iter(|| app_only.call0().unwrap()));
        g.finish();
    });
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
