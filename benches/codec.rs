//! The FastCGI codec and state machine alone: decoding a typical nginx request and encoding
//! responses. `cargo bench --bench codec`; figures in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastcgi::connection::{Connection, ConnectionConfig, Event};
use fastcgi::protocol::{self, EndRequest, ProtocolStatus, Record, RecordType};

/// What nginx sends for `GET /hello` with its stock fastcgi_params plus a few browser headers:
/// 30 params in one PARAMS record, then the empty PARAMS and STDIN records.
fn nginx_request() -> BytesMut {
    let params: [(&str, &str); 30] = [
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/hello"),
        ("REQUEST_URI", "/hello"),
        ("DOCUMENT_URI", "/hello"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "53412"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "localhost"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "localhost:8080"),
        ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
        ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
        ("HTTP_CONNECTION", "keep-alive"),
        ("HTTP_COOKIE", "csrftoken=Xk3lP0m9V2aQ7rT5yU8iO1pZ4sD6fG0h; sessionid=abcdefghijklmnopqrstuvwxyz012345"),
        ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"),
        ("HTTP_SEC_FETCH_DEST", "document"),
        ("HTTP_SEC_FETCH_MODE", "navigate"),
        ("HTTP_SEC_FETCH_SITE", "none"),
    ];
    let mut out = BytesMut::new();
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    fastcgi::client::encode_request(&mut out, 1, true, pairs, b"");
    out
}

fn decode(c: &mut Criterion) {
    let wire = nginx_request();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nginx_request_30_params", |b| {
        let mut conn = Connection::new(ConnectionConfig::default());
        let mut out = BytesMut::with_capacity(64);
        let now = Instant::now();
        b.iter(|| {
            let mut buf = wire.clone();
            let mut request = None;
            while let Some(record) = Record::parse(&mut buf).unwrap() {
                match conn.handle_record(record, now, &mut out).unwrap() {
                    Some(Event::Request(head)) => request = Some(head),
                    Some(Event::StdinEnd { id }) => {
                        conn.end_request(id, 0, &mut out);
                    }
                    _ => {}
                }
            }
            out.clear();
            let head = request.unwrap();
            black_box(head.params.get(b"PATH_INFO"));
            head
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_response");
    for (name, len) in [("13_bytes", 13usize), ("64_KiB", 64 * 1024)] {
        let body = vec![b'x'; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            let mut out = BytesMut::with_capacity(len + 256);
            b.iter(|| {
                out.clear();
                protocol::encode_stream(
                    &mut out,
                    RecordType::Stdout,
                    1,
                    b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n",
                );
                protocol::encode_stream(&mut out, RecordType::Stdout, 1, black_box(&body));
                protocol::encode_stream_end(&mut out, RecordType::Stdout, 1);
                EndRequest {
                    app_status: 0,
                    protocol_status: ProtocolStatus::RequestComplete,
                }
                .encode(1, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
