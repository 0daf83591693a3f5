//! The single inherited connection (IIS's way: one connected socket, one request at a time) is
//! driven by a thread of its own, and a handler that serves inline runs each request on that
//! thread, writing straight to the socket. Here against the real server over a socketpair, with
//! a handler that says which thread ran each request.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastcgi::protocol::{self, RecordType};
use fastcgi::{Handler, Listener, Request, ServeOutcome, Server, ServerConfig, Stream};
use test_support::{param, pattern, Client};

/// Routes on `SCRIPT_NAME`; every reply says in `X-Thread` which thread ran it.
/// - `/hello`: 13 bytes, as the last write.
/// - `/big?N`: N bytes of `pattern` in 64 KiB blocking writes.
/// - `/stderr`: `out` on STDOUT, `err` on STDERR.
/// - `/echo`: the body back.
/// - `/giveback`: refused by `handle_inline`, so it goes through `handle`.
/// - `/held`: writes nothing until `RELEASE_HELD` is set.
struct InlineHandler;

/// `/held` writes nothing (not even its head) until a test sets this.
static RELEASE_HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn serve(request: Request) {
    let thread = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let (script, query) = (
        param(&request, b"SCRIPT_NAME"),
        param(&request, b"QUERY_STRING"),
    );
    let (_, mut body, mut response) = request.into_parts();
    let head = format!("Status: 200 OK\r\nX-Thread: {thread}\r\n\r\n");
    if script == b"/held" {
        while !RELEASE_HELD.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut ok = response.blocking_write(Bytes::from(head)).is_ok();
    let mut last = Bytes::new();
    match &script[..] {
        b"/hello" => last = Bytes::from_static(b"Hello, World!"),
        b"/big" => {
            let total: usize = std::str::from_utf8(&query).unwrap().parse().unwrap();
            let mut sent = 0;
            while sent < total && ok {
                let n = (total - sent).min(65536);
                ok &= response
                    .blocking_write(Bytes::from(pattern(sent, n)))
                    .is_ok();
                sent += n;
            }
        }
        b"/stderr" => {
            ok &= response.blocking_write(Bytes::from_static(b"out")).is_ok();
            ok &= response
                .blocking_write_stderr(Bytes::from_static(b"err"))
                .is_ok();
        }
        b"/held" => {
            ok &= response
                .blocking_write(Bytes::from_static(b"released"))
                .is_ok()
        }
        b"/echo" | b"/giveback" => {
            while let Ok(Some(chunk)) = body.blocking_chunk() {
                ok &= response.blocking_write(chunk).is_ok();
            }
        }
        _ => {}
    }
    response.finish_with(last, if ok { 0 } else { 1 });
}

impl Handler for InlineHandler {
    fn handle(&self, request: Request) {
        std::thread::Builder::new()
            .name("pool".into())
            .spawn(move || serve(request))
            .unwrap();
    }

    fn serves_inline(&self) -> bool {
        true
    }

    fn handle_inline(&self, request: Request) -> Option<Request> {
        if request.params().get(b"SCRIPT_NAME") == Some(b"/giveback") {
            return Some(request);
        }
        serve(request);
        None
    }
}

/// A server whose only listener is one connected socket, as wfcgi has under IIS.
fn start() -> (Client<UnixStream>, JoinHandle<ServeOutcome>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        test_support::runtime().block_on(async move {
            let stream = tokio::net::UnixStream::from_std(theirs).unwrap();
            let listener = Listener::Connected(Some(Stream::Unix(stream)));
            ready_tx.send(()).unwrap();
            Server::new(ServerConfig::default(), std::sync::Arc::new(InlineHandler))
                .serve(vec![listener], std::future::pending())
                .await
                .unwrap()
        })
    });
    ready_rx.recv().unwrap();
    (Client::from_unix(ours), server)
}

fn params(script: &str, query: &str) -> [(&'static str, String); 2] {
    [
        ("SCRIPT_NAME", script.to_owned()),
        ("QUERY_STRING", query.to_owned()),
    ]
}

fn request_bytes(id: u16, keep_conn: bool, script: &str, query: &str, body: &[u8]) -> BytesMut {
    let p = params(script, query);
    let p: Vec<(&str, &str)> = p.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Client::request_bytes(id, keep_conn, &p, body)
}

fn thread_of(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Thread: "))
        .unwrap_or_else(|| panic!("no X-Thread in {text}"))
        .to_owned()
}

fn wait_done(server: JoinHandle<ServeOutcome>) -> ServeOutcome {
    for _ in 0..200 {
        if server.is_finished() {
            return server.join().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not finish after its connection closed");
}

#[test]
fn requests_run_on_the_connections_own_thread_and_end_cleanly() {
    let (mut c, server) = start();
    for _ in 0..3 {
        c.send(&request_bytes(1, true, "/hello", "", b""));
        let r = c.read_reply(1);
        assert_eq!(thread_of(&r.stdout), "wfcgi-conn");
        assert_eq!(r.body(), b"Hello, World!");
        assert_eq!(r.end.unwrap().app_status, 0);
        // The head, the body (the held last write), the closing empty STDOUT, END_REQUEST.
        let kinds: Vec<_> = r
            .records
            .iter()
            .map(|(ty, _, len)| (*ty, *len > 0))
            .collect();
        assert_eq!(
            kinds,
            [
                (RecordType::Stdout, true),
                (RecordType::Stdout, true),
                (RecordType::Stdout, false),
                (RecordType::EndRequest, true)
            ]
        );
    }
    c.send(&request_bytes(1, true, "/stderr", "", b""));
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "wfcgi-conn");
    assert!(r.stdout.ends_with(b"out"));
    assert_eq!(r.stderr, b"err");
    // Both streams are closed with an empty record before END_REQUEST.
    let closing: Vec<_> = r
        .records
        .iter()
        .filter(|(_, _, len)| *len == 0)
        .map(|(ty, _, _)| *ty)
        .collect();
    assert_eq!(closing, [RecordType::Stdout, RecordType::Stderr]);
    drop(c);
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn a_large_response_to_a_slow_reader_arrives_whole_then_the_next_request_works() {
    let (mut c, server) = start();
    let size = 8 << 20;
    c.send(&request_bytes(1, true, "/big", &size.to_string(), b""));
    // Read nothing for a while: the inline writer must wait for the socket, not fail or spin.
    std::thread::sleep(Duration::from_millis(300));
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "wfcgi-conn");
    assert_eq!(r.body().len(), size);
    assert!(
        r.body() == pattern(0, size),
        "the body differs from the pattern"
    );
    assert!(r.records.iter().all(|(_, _, len)| *len <= 65535));
    c.send(&request_bytes(1, true, "/hello", "", b""));
    assert_eq!(c.read_reply(1).body(), b"Hello, World!");
    drop(c);
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn what_cannot_run_inline_goes_through_handle() {
    let (mut c, server) = start();
    // A body larger than what is kept with a request (64 KiB) streams: not inline.
    let body = pattern(0, 200 * 1024);
    c.send(&request_bytes(1, true, "/echo", "", &body));
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "pool");
    assert!(r.body() == body);
    // A small body is whole when the request is handed over: inline.
    c.send(&request_bytes(1, true, "/echo", "", b"small"));
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "wfcgi-conn");
    assert_eq!(r.body(), b"small");
    // Refused by handle_inline.
    c.send(&request_bytes(1, true, "/giveback", "", b"back"));
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "pool");
    assert_eq!(r.body(), b"back");
    drop(c);
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn multiplexed_and_management_records_interleave_correctly() {
    let (mut c, server) = start();
    // Two requests and a GET_VALUES in one write: the first runs inline, the second waits
    // for the driver (a request is in progress), the management reply is not lost.
    let mut batch = request_bytes(1, true, "/big", "300000", b"");
    let mut query = BytesMut::new();
    protocol::encode_pair(&mut query, b"FCGI_MPXS_CONNS", b"");
    protocol::encode_stream(&mut batch, RecordType::GetValues, 0, &query);
    batch.extend_from_slice(&request_bytes(2, true, "/hello", "", b""));
    c.send(&batch);
    let mut stdout: HashMap<u16, Vec<u8>> = HashMap::new();
    let mut ended = Vec::new();
    let mut values = false;
    while ended.len() < 2 || !values {
        let r = c.read_record().expect("connection closed early");
        match r.record_type {
            RecordType::Stdout => stdout
                .entry(r.request_id)
                .or_default()
                .extend_from_slice(&r.content),
            RecordType::EndRequest => ended.push(r.request_id),
            RecordType::GetValuesResult => values = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (one, two) = (&stdout[&1], &stdout[&2]);
    assert_eq!(thread_of(one), "wfcgi-conn");
    assert_eq!(thread_of(two), "pool");
    assert!(one.ends_with(&pattern(0, 300000)));
    assert!(two.ends_with(b"Hello, World!"));
    drop(c);
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn without_keep_conn_the_connection_closes_after_the_reply() {
    let (mut c, server) = start();
    c.send(&request_bytes(1, false, "/hello", "", b""));
    let r = c.read_reply(1);
    assert_eq!(r.body(), b"Hello, World!");
    assert!(
        c.read_record().is_none(),
        "the server must close the connection"
    );
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn a_peer_that_leaves_mid_response_ends_the_connection() {
    let (mut c, server) = start();
    c.send(&request_bytes(
        1,
        true,
        "/big",
        &(256usize << 20).to_string(),
        b"",
    ));
    let mut first = [0u8; 65536];
    let n = c.stream.read(&mut first).unwrap();
    assert!(n > 0);
    drop(c);
    // The inline writer sees the peer gone (EPIPE, not SIGPIPE) and the request ends.
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}

#[test]
fn replies_queued_before_an_inline_request_are_not_held_by_it() {
    let (mut c, server) = start();
    // A GET_VALUES and, behind it, a request that writes nothing until the test says so: the
    // reply must not wait for the request's first write.
    let mut query = BytesMut::new();
    protocol::encode_pair(&mut query, b"FCGI_MAX_CONNS", b"");
    let mut batch = BytesMut::new();
    protocol::encode_stream(&mut batch, RecordType::GetValues, 0, &query);
    batch.extend_from_slice(&request_bytes(1, true, "/held", "", b""));
    c.send(&batch);
    // A held reply would time this read out (20 s) and fail the test.
    let first = c.read_record().expect("closed");
    assert_eq!(first.record_type, RecordType::GetValuesResult);
    RELEASE_HELD.store(true, std::sync::atomic::Ordering::Release);
    let r = c.read_reply(1);
    assert_eq!(thread_of(&r.stdout), "wfcgi-conn");
    drop(c);
    assert_eq!(wait_done(server), ServeOutcome::ConnectionClosed);
}
