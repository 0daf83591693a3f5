//! The real FastCGI server (crates/fastcgi) on a loopback port, driven with raw bytes and by two
//! clients nobody here wrote: cgi-fcgi and nginx.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fastcgi::protocol::{self, ProtocolStatus, RecordType};
use fastcgi::{ServeOutcome, ServerConfig};
use test_support::peers::{self, Nginx, PathParams};
use test_support::{pattern, Client, TestServer};

/// Writes `unit` over and over until a write times out (the server stopped reading: true) or
/// `limit` bytes went through (it did not: false). Partial writes resume where they stopped, so
/// the stream stays well-framed.
fn writes_stall(w: &mut std::net::TcpStream, unit: &[u8], limit: usize) -> (bool, usize) {
    w.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0usize;
    let mut at = 0usize;
    loop {
        match w.write(&unit[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % unit.len();
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (true, sent)
            }
            Err(e) => panic!("{e}"),
        }
        if sent > limit {
            return (false, sent);
        }
    }
}

/// Starts /wait-abort (a handler that ends only when aborted), aborts it after `wait`, and
/// checks that END_REQUEST follows.
fn wait_abort_after(c: &mut Client, wait: Duration) {
    c.send(&Client::request_bytes(
        1,
        true,
        &[("SCRIPT_NAME", "/wait-abort")],
        b"",
    ));
    std::thread::sleep(wait);
    c.abort(1);
    let reply = c.read_reply(1);
    assert_eq!(
        reply.end.unwrap().protocol_status,
        ProtocolStatus::RequestComplete
    );
}

#[test]
fn hello_over_raw_bytes() {
    let server = TestServer::start();
    let mut c = server.connect();
    let reply = c.get("/hello", "");
    assert_eq!(reply.body(), b"Hello, World!");
    let end = reply.end.unwrap();
    assert_eq!(
        (end.app_status, end.protocol_status),
        (0, ProtocolStatus::RequestComplete)
    );
    // The stdout stream is closed by an empty record before END_REQUEST.
    let n = reply.records.len();
    assert_eq!(reply.records[n - 2], (RecordType::Stdout, 1, 0));
}

#[test]
fn keep_conn_serves_many_requests_and_its_absence_closes() {
    let server = TestServer::start();
    let mut c = server.connect();
    for _ in 0..50 {
        assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    }
    let bytes = Client::request_bytes(1, false, &[("SCRIPT_NAME", "/hello")], b"");
    c.send(&bytes);
    assert_eq!(c.read_reply(1).body(), b"Hello, World!");
    assert!(
        c.read_record().is_none(),
        "the server closes after a request without FCGI_KEEP_CONN"
    );
}

#[test]
fn multiplexed_requests_on_one_connection() {
    let server = TestServer::start();
    let mut c = server.connect();
    // Interleave two requests' records: BEGIN 1, BEGIN 2, PARAMS 2, PARAMS 1, STDIN 1, STDIN 2.
    let r1 = Client::request_bytes(1, true, &[("SCRIPT_NAME", "/echo")], b"one");
    let r2 = Client::request_bytes(2, true, &[("SCRIPT_NAME", "/echo")], b"two");
    let split = |r: &BytesMut| {
        let mut b = r.clone();
        let mut recs = Vec::new();
        while let Some(rec) = protocol::Record::parse(&mut b).unwrap() {
            let mut out = BytesMut::new();
            protocol::encode_header(&mut out, rec.record_type, rec.request_id, rec.content.len());
            out.extend_from_slice(&rec.content);
            recs.push(out);
        }
        recs
    };
    let (a, b) = (split(&r1), split(&r2));
    for rec in [
        &a[0], &b[0], &b[1], &b[2], &a[1], &a[2], &a[3], &a[4], &b[3], &b[4],
    ] {
        c.send(rec);
    }
    let mut got = std::collections::HashMap::new();
    let mut ended = 0;
    while ended < 2 {
        let r = c.read_record().unwrap();
        match r.record_type {
            RecordType::Stdout => got
                .entry(r.request_id)
                .or_insert_with(Vec::new)
                .extend_from_slice(&r.content),
            RecordType::EndRequest => ended += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(got[&1].ends_with(b"one"));
    assert!(got[&2].ends_with(b"two"));
}

#[test]
fn management_records_over_the_wire() {
    let server = TestServer::with_config(ServerConfig {
        max_connections: 7,
        advertised_max_requests: Some(3),
        ..ServerConfig::default()
    });
    let mut c = server.connect();
    let mut q = BytesMut::new();
    for n in ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
        protocol::encode_pair(&mut q, n.as_bytes(), b"");
    }
    let mut out = BytesMut::new();
    protocol::encode_header(&mut out, RecordType::GetValues, 0, q.len());
    out.extend_from_slice(&q);
    // An unknown type too: answered, and the connection goes on.
    protocol::encode_header(&mut out, RecordType::Other(99), 0, 0);
    c.send(&out);
    let r = c.read_record().unwrap();
    assert_eq!(r.record_type, RecordType::GetValuesResult);
    let pairs: Vec<_> = protocol::Pairs::new(&r.content)
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(
        pairs,
        [
            (&b"FCGI_MAX_CONNS"[..], &b"7"[..]),
            (b"FCGI_MAX_REQS", b"3"),
            (b"FCGI_MPXS_CONNS", b"1")
        ]
    );
    let r = c.read_record().unwrap();
    assert_eq!(r.record_type, RecordType::UnknownType);
    assert_eq!(
        protocol::UnknownType::parse(&r.content)
            .unwrap()
            .record_type,
        99
    );
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn unknown_role_is_refused_on_the_wire() {
    let server = TestServer::start();
    let mut c = server.connect();
    let mut out = BytesMut::new();
    protocol::BeginRequest {
        role: protocol::Role::Authorizer,
        flags: 1,
    }
    .encode(1, &mut out);
    protocol::encode_stream_end(&mut out, RecordType::Params, 1);
    protocol::encode_stream_end(&mut out, RecordType::Stdin, 1);
    c.send(&out);
    let reply = c.read_reply(1);
    assert_eq!(
        reply.end.unwrap().protocol_status,
        ProtocolStatus::UnknownRole
    );
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn abort_reaches_the_handler_and_end_request_follows() {
    let server = TestServer::start();
    let mut c = server.connect();
    // A full request first (the connection is accepted), then one that waits for an abort.
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    wait_abort_after(&mut c, Duration::from_millis(100));
    assert_eq!(server.stats.aborted.load(Ordering::Relaxed), 1);
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn a_protocol_violation_closes_that_connection_only() {
    let server = TestServer::start();
    let mut good = server.connect();
    assert_eq!(good.get("/hello", "").body(), b"Hello, World!");
    let violations: &[&[u8]] = &[
        b"\x02\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00", // version 2
        b"\x01\x05\x00\x07\x00\x01\x00\x00x",                                 // STDIN for id never begun
        b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00", // BEGIN twice
        b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00\x01\x04\x00\x01\x00\x02\x00\x00\x09\x09\x01\x04\x00\x01\x00\x00\x00\x00", // pair past the stream
    ];
    for bytes in violations {
        let mut bad = server.connect();
        bad.send(bytes);
        assert!(bad.is_closed(), "{bytes:?} should close the connection");
    }
    assert_eq!(
        good.get("/hello", "").body(),
        b"Hello, World!",
        "the other connection lives on"
    );
}

#[test]
fn params_over_the_limit_are_refused_cleanly() {
    let server = TestServer::with_config(ServerConfig {
        max_params_bytes: 1000,
        ..ServerConfig::default()
    });
    let mut c = server.connect();
    let big = "x".repeat(2000);
    c.send(&Client::request_bytes(
        1,
        true,
        &[("SCRIPT_NAME", "/hello"), ("HTTP_COOKIE", &big)],
        b"",
    ));
    assert_eq!(
        c.read_reply(1).end.unwrap().protocol_status,
        ProtocolStatus::Overloaded
    );
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn params_that_never_complete_time_out() {
    let server = TestServer::with_config(ServerConfig {
        params_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let mut c = server.connect();
    c.send(b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00\x01\x04\x00\x01\x00\x02\x00\x00\x01\x01");
    let t = Instant::now();
    assert!(c.is_closed());
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[test]
fn large_bodies_stream_both_ways() {
    let server = TestServer::start();
    let mut c = server.connect();
    let body = pattern(0, 3 * 1024 * 1024 + 17);
    let bytes = Client::request_bytes(1, true, &[("SCRIPT_NAME", "/echo")], &body);
    // Send and read at once: the echo handler writes while the body still arrives.
    let mut w = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    let reply = c.read_reply(1);
    sender.join().unwrap();
    assert_eq!(reply.body(), &body[..]);
    assert!(reply.records.iter().all(|(_, _, len)| *len <= 65535));
}

#[test]
fn slow_reader_backpressure_holds_the_handler() {
    let server = TestServer::start();
    let mut c = server.connect();
    c.stream.set_nodelay(true).unwrap();
    let total = 256 * 1024 * 1024;
    c.send(&Client::request_bytes(
        1,
        true,
        &[
            ("SCRIPT_NAME", "/big"),
            ("QUERY_STRING", &total.to_string()),
        ],
        b"",
    ));
    // Read nothing for a while: the handler must be held back by the socket and the
    // connection's bounded buffer, not run ahead into memory.
    std::thread::sleep(Duration::from_millis(700));
    let written = server.stats.written.load(Ordering::Relaxed);
    assert!(
        written < 32 * 1024 * 1024,
        "handler ran {written} bytes ahead of a reader that reads nothing"
    );
    // Then read it all and check every byte.
    let mut offset = 0;
    let mut head_done = false;
    loop {
        let r = c.read_record().unwrap();
        match r.record_type {
            RecordType::Stdout if !head_done => {
                head_done = true;
                assert!(r.content.ends_with(b"\r\n\r\n"));
            }
            RecordType::Stdout => {
                assert_eq!(&r.content[..], &pattern(offset, r.content.len())[..]);
                offset += r.content.len();
            }
            RecordType::EndRequest => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(offset, total);
}

#[test]
fn body_backpressure_stops_reading_the_socket() {
    let server = TestServer::start();
    let mut c = server.connect();
    // /wait-abort never reads its body: once the request's buffer and the socket buffers are
    // full, our writes must stall instead of the server buffering without end.
    c.send(&Client::request_bytes(1, true, &[("SCRIPT_NAME", "/wait-abort")], b"")[..40]);
    let mut w = c.stream.try_clone().unwrap();
    let mut header = BytesMut::new();
    protocol::encode_header(&mut header, RecordType::Stdin, 1, 65535);
    // Build records by hand: BEGIN+PARAMS were sent; now STDIN records until a write stalls.
    let bytes = Client::request_bytes(1, true, &[("SCRIPT_NAME", "/wait-abort")], b"");
    w.write_all(&bytes[40..bytes.len() - 8]).unwrap(); // everything but the empty STDIN
    let record: Vec<u8> = [&header[..], &[0u8; 65535][..]].concat();
    let (stalled, sent) = writes_stall(&mut w, &record, 512 * 1024 * 1024);
    assert!(
        stalled,
        "the server kept reading {sent} bytes of a body nobody reads"
    );
}

#[test]
fn a_client_that_resets_mid_response_does_not_hurt_the_server() {
    let server = TestServer::start();
    for _ in 0..3 {
        let mut c = server.connect();
        c.send(&Client::request_bytes(
            1,
            true,
            &[("SCRIPT_NAME", "/big"), ("QUERY_STRING", "67108864")],
            b"",
        ));
        let mut buf = [0u8; 100_000];
        c.stream.read_exact(&mut buf).unwrap();
        // SO_LINGER 0: close with a RST rather than a FIN.
        set_linger_zero(&c.stream);
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats.write_failures.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < deadline,
            "handlers did not learn the client was gone"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connect().get("/hello", "").body(), b"Hello, World!");
}

fn set_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a properly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let server = TestServer::start();
    let addr = server.addr;
    let mut c = server.connect();
    // A full request first: the connection is then accepted (a connection still in the listen
    // backlog when shutdown begins is never served, and is not in flight).
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    // A request in flight: everything but the empty STDIN record that ends its body.
    let bytes = Client::request_bytes(1, true, &[("SCRIPT_NAME", "/echo")], b"body");
    let (start, end) = bytes.split_at(bytes.len() - 8);
    c.send(start);
    std::thread::sleep(Duration::from_millis(100));
    let stopper = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no new connections while draining"
    );
    assert!(
        !stopper.is_finished(),
        "serve() waits for the in-flight request"
    );
    c.send(end);
    let reply = c.read_reply(1);
    assert_eq!(reply.body(), b"body");
    assert_eq!(
        reply.end.unwrap().protocol_status,
        ProtocolStatus::RequestComplete
    );
    assert!(
        c.read_record().is_none(),
        "the idle connection is closed once drained"
    );
    assert_eq!(stopper.join().unwrap(), ServeOutcome::Drained);
}

#[test]
fn connections_are_spread_over_the_io_threads() {
    let server = TestServer::with_config(ServerConfig {
        io_threads: 3,
        ..ServerConfig::default()
    });
    let mut clients: Vec<Client> = (0..6).map(|_| server.connect()).collect();
    let thread = |c: &mut Client| String::from_utf8(c.get("/thread", "").body().to_vec()).unwrap();
    let first: Vec<String> = clients.iter_mut().map(thread).collect();
    // Each takes the thread with the fewest connections: two each, the serving runtime's
    // two on its own workers.
    let mut threads = first.clone();
    threads.sort();
    assert_eq!(
        threads[2..],
        ["wfcgi-io-1", "wfcgi-io-1", "wfcgi-io-2", "wfcgi-io-2"],
        "{threads:?}"
    );
    assert!(!threads[0].starts_with("wfcgi-io") && !threads[1].starts_with("wfcgi-io"));
    // Each keeps its thread, serves both ways, and the server still drains them all.
    let body = pattern(0, 300_000);
    for (c, first) in clients.iter_mut().zip(&first) {
        let reply = c.request(1, &[("SCRIPT_NAME", "/echo")], &body);
        assert_eq!(reply.body(), body);
        if first.starts_with("wfcgi-io") {
            assert_eq!(&thread(c), first);
        }
    }
    assert_eq!(server.shutdown(), ServeOutcome::Drained);
    for c in &mut clients {
        assert!(c.read_record().is_none(), "closed by the drain");
    }
}

#[test]
fn graceful_shutdown_gives_up_after_the_grace_period() {
    let server = TestServer::with_config(ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut c = server.connect();
    // Accepted for sure (see the test above), then a request that never ends by itself.
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    c.send(&Client::request_bytes(
        1,
        true,
        &[("SCRIPT_NAME", "/wait-abort")],
        b"",
    ));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.shutdown(),
        ServeOutcome::GraceExpired { connections: 1 }
    );
}

#[test]
fn cgi_fcgi_as_a_client() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let out = peers::cgi_fcgi(
        &addr,
        &[("SCRIPT_NAME", "/hello"), ("REQUEST_METHOD", "GET")],
        b"",
    );
    assert!(
        out.ends_with(b"Hello, World!"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let body = pattern(0, 300_000);
    let out = peers::cgi_fcgi(
        &addr,
        &[("SCRIPT_NAME", "/echo"), ("REQUEST_METHOD", "POST")],
        &body,
    );
    assert!(out.ends_with(&body));
    let out = peers::cgi_fcgi(
        &addr,
        &[("SCRIPT_NAME", "/params"), ("X_LONG", &"v".repeat(5000))],
        b"",
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains(&format!("X_LONG={}", "v".repeat(5000))),
        "a 4-byte-length pair arrives whole"
    );
}

#[test]
fn nginx_in_front_with_keepalive() {
    let server = TestServer::start();
    let nginx = Nginx::start(&server.addr.to_string(), PathParams::ScriptName);
    for _ in 0..20 {
        let r = peers::http(nginx.port, "GET", "/hello", &[], b"");
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    }
    let body = pattern(0, 5 * 1024 * 1024);
    let r = peers::http(nginx.port, "POST", "/sha256", &[], &body);
    assert_eq!(r.text(), test_support::checksum(&body));
    let r = peers::http(nginx.port, "GET", "/big?3000000", &[], b"");
    assert_eq!(r.body, pattern(0, 3_000_000));
    // nginx kept its upstream connections open: far fewer connections than requests.
    assert!(server.stats.requests.load(Ordering::Relaxed) >= 22);
}

#[test]
fn a_peer_that_never_reads_cannot_grow_the_reply_buffer() {
    // Every unknown-type record earns a 16-byte reply. A peer that sends them and never reads
    // ours must be held back (its writes stall), not answered into an ever-growing buffer.
    let server = TestServer::start();
    let c = server.connect();
    let mut w = c.stream.try_clone().unwrap();
    let mut batch = BytesMut::new();
    for _ in 0..8192 {
        protocol::encode_header(&mut batch, RecordType::Other(99), 0, 0);
    }
    let (stalled, sent) = writes_stall(&mut w, &batch, 64 * 1024 * 1024);
    assert!(
        stalled,
        "the server read {sent} bytes of records whose replies nobody reads"
    );
    assert_eq!(server.connect().get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn an_early_reply_without_keep_conn_is_not_lost_to_a_reset() {
    // /hello answers without reading its body. The connection must stay open (discarding the
    // body) until the web server has sent it all, then close cleanly: closing with unread data
    // would send a reset, which can destroy the reply.
    let server = TestServer::start();
    let mut c = server.connect();
    let body = pattern(0, 4 * 1024 * 1024);
    let bytes = Client::request_bytes(1, false, &[("SCRIPT_NAME", "/hello")], &body);
    let mut w = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    let reply = c.read_reply(1);
    assert_eq!(reply.body(), b"Hello, World!");
    sender.join().unwrap();
    assert!(
        c.read_record().is_none(),
        "a clean close after the whole body"
    );
}

#[test]
fn an_abort_before_the_request_is_handed_over_still_ends_it() {
    // BEGIN, PARAMS, part of the body and ABORT in one read: the handler (which reads its
    // body to the end) must learn of the abort rather than wait for a body that never comes.
    let server = TestServer::start();
    let mut c = server.connect();
    let mut bytes = Client::request_bytes(1, true, &[("SCRIPT_NAME", "/echo")], b"");
    bytes.truncate(bytes.len() - 8); // no empty STDIN
    protocol::encode_stream(&mut bytes, RecordType::Stdin, 1, b"partial body");
    protocol::encode_header(&mut bytes, RecordType::AbortRequest, 1, 0);
    c.send(&bytes);
    let reply = c.read_reply(1);
    assert_eq!(
        reply.end.unwrap().protocol_status,
        ProtocolStatus::RequestComplete
    );
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::with_config(ServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    });
    // Between requests.
    let mut c = server.connect();
    assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    let t = Instant::now();
    assert!(c.read_record().is_none(), "closed when idle");
    assert!(t.elapsed() >= Duration::from_millis(250));
    // Half a BEGIN_REQUEST and then nothing is idle too.
    let mut c = server.connect();
    c.send(b"\x01\x01\x00\x01");
    assert!(c.is_closed());
}

#[test]
fn a_request_longer_than_the_idle_timeout_is_not_cut_off() {
    let server = TestServer::with_config(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    });
    let mut c = server.connect();
    wait_abort_after(&mut c, Duration::from_millis(700));
}
