//! Shared by the end-to-end tests (`tests/`) and the crates' own tests, as h2 keeps `h2-support`:
//! an in-process FastCGI server with a small Rust handler ([`TestServer`]), a blocking FastCGI
//! client that speaks raw records ([`Client`], on `fastcgi::client`), real peers that nobody here
//! wrote ([`peers`]: nginx, `cgi-fcgi`), the real `wfcgi` binary as a child process ([`wfcgi`]),
//! scratch directories, child processes ([`process`]: signals, exits, `/proc`), and the real
//! `wfcgi.exe` under Wine ([`wine`]).

pub mod peers;
#[cfg(unix)]
pub mod process;
#[cfg(unix)]
pub mod wfcgi;
#[cfg(unix)]
pub mod wine;

pub use peers::TempDir;
#[cfg(unix)]
pub use process::{minor_faults, proc_status_kib, rss_kib, stat_name_and_fields};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastcgi::client::{self, CgiResponse};
use fastcgi::protocol::{EndRequest, Record, RecordType};
use fastcgi::{Handler, ListenAddr, Listener, Request, ServeOutcome, Server, ServerConfig};

/// What the test handler has seen, for assertions.
#[derive(Default)]
pub struct Stats {
    /// Response bytes the handler managed to hand to the server.
    pub written: AtomicUsize,
    /// Requests whose writes failed (client gone or aborted).
    pub write_failures: AtomicUsize,
    /// Requests that saw an abort.
    pub aborted: AtomicUsize,
    pub requests: AtomicUsize,
    /// Body bytes the handlers have read.
    pub body_read: AtomicUsize,
}

/// Routes on `SCRIPT_NAME`:
/// - `/hello`: 13 bytes.
/// - `/echo`: the body back, read and written piece by piece.
/// - `/big?N`: N bytes of `i % 251` in 64 KiB writes.
/// - `/sha256`: reads the body, answers its length and a checksum.
/// - `/wait-abort`: waits until the request is aborted, then ends.
/// - `/stderr`: writes to stdout and stderr.
/// - `/params`: the params as `name=value` lines.
pub struct TestHandler {
    pub stats: Arc<Stats>,
}

pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

/// A param's value, empty if absent.
pub fn param(request: &Request, name: &[u8]) -> Vec<u8> {
    request.params().get(name).unwrap_or(b"").to_vec()
}

impl Handler for TestHandler {
    fn handle(&self, request: Request) {
        let stats = self.stats.clone();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let (script, query) = (
                param(&request, b"SCRIPT_NAME"),
                param(&request, b"QUERY_STRING"),
            );
            let params_dump: Vec<u8> = request
                .params()
                .iter()
                .flat_map(|(n, v)| [n, b"=", v, b"\n"].concat())
                .collect();
            let (_, mut body, mut response) = request.into_parts();
            let head = Bytes::from_static(
                b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n",
            );
            // The head goes out first except where the body is read first: nginx stops sending
            // a request body once the response has begun (fastcgi_request_buffering off).
            let mut ok = script == b"/sha256" || response.write(head.clone()).await.is_ok();
            match &script[..] {
                b"/hello" => {
                    ok &= response
                        .write(Bytes::from_static(b"Hello, World!"))
                        .await
                        .is_ok()
                }
                b"/echo" => {
                    while let Ok(Some(chunk)) = body.chunk().await {
                        ok &= response.write(chunk).await.is_ok();
                    }
                }
                b"/big" => {
                    let total: usize = std::str::from_utf8(&query).unwrap().parse().unwrap();
                    let mut sent = 0;
                    while sent < total && ok {
                        let n = (total - sent).min(65536);
                        ok &= response.write(Bytes::from(pattern(sent, n))).await.is_ok();
                        if ok {
                            stats.written.fetch_add(n, Ordering::Relaxed);
                        }
                        sent += n;
                    }
                }
                b"/sha256" => {
                    let mut len = 0usize;
                    let mut sum = 0u64;
                    loop {
                        match body.chunk().await {
                            Ok(Some(c)) => {
                                for (i, b) in c.iter().enumerate() {
                                    sum = sum
                                        .wrapping_mul(31)
                                        .wrapping_add(*b as u64 ^ (len + i) as u64);
                                }
                                len += c.len();
                                stats.body_read.fetch_add(c.len(), Ordering::Relaxed);
                            }
                            Ok(None) => break,
                            Err(_) => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    ok &= response.write(head).await.is_ok();
                    ok &= response
                        .write(Bytes::from(format!("{len} {sum:x}")))
                        .await
                        .is_ok();
                }
                b"/wait-abort" => {
                    while !response.is_aborted() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    stats.aborted.fetch_add(1, Ordering::Relaxed);
                }
                b"/stderr" => {
                    ok &= response.write(Bytes::from_static(b"out")).await.is_ok();
                    ok &= response
                        .write_stderr(Bytes::from_static(b"err"))
                        .await
                        .is_ok();
                }
                b"/params" => ok &= response.write(Bytes::from(params_dump)).await.is_ok(),
                // The thread that drives the connection (this task runs on its runtime).
                b"/thread" => {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    ok &= response.write(Bytes::from(name)).await.is_ok()
                }
                _ => {}
            }
            if !ok {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
            }
            response.finish(0);
        });
    }
}

/// The same checksum as `/sha256` computes, for the client side.
pub fn checksum(data: &[u8]) -> String {
    let mut sum = 0u64;
    for (i, b) in data.iter().enumerate() {
        sum = sum.wrapping_mul(31).wrapping_add(*b as u64 ^ i as u64);
    }
    format!("{} {sum:x}", data.len())
}

/// The runtime an in-process server under test runs on: two workers, as on the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server running on its own runtime thread, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<ServeOutcome>>>,
}

impl TestServer {
    /// With two I/O threads, as `wfcgi serve` runs on a machine of two cores or more.
    pub fn start() -> TestServer {
        Self::with_config(ServerConfig {
            io_threads: 2,
            ..ServerConfig::default()
        })
    }

    pub fn with_config(config: ServerConfig) -> TestServer {
        let stats = Arc::new(Stats::default());
        let handler = Arc::new(TestHandler {
            stats: stats.clone(),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let addr: ListenAddr = "127.0.0.1:0".parse().unwrap();
                let listener = Listener::bind(&addr, Default::default()).await.unwrap();
                addr_tx.send(listener.local_addr()).unwrap();
                Server::new(config, handler)
                    .serve(vec![listener], async {
                        let _ = shutdown_rx.await;
                    })
                    .await
            })
        });
        let addr = addr_rx.recv().unwrap().parse().unwrap();
        TestServer {
            addr,
            stats,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Asks for a graceful shutdown and waits for `serve` to return.
    pub fn shutdown(mut self) -> ServeOutcome {
        let _ = self.shutdown.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap().unwrap()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One decoded response.
#[derive(Debug, Default)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: Option<EndRequest>,
    /// Records in arrival order (type, id, length), for framing assertions.
    pub records: Vec<(RecordType, u16, usize)>,
}

impl Reply {
    /// STDOUT split into its CGI head and body; panics, showing STDOUT, when there is no head.
    pub fn cgi(&self) -> CgiResponse<'_> {
        match CgiResponse::parse(&self.stdout) {
            Ok(Some(response)) => response,
            other => panic!(
                "no CGI head ({other:?}) in {:?}",
                String::from_utf8_lossy(&self.stdout)
            ),
        }
    }

    /// STDOUT after the CGI head.
    pub fn body(&self) -> &[u8] {
        self.cgi().body
    }

    /// The CGI status (200 when the head has no Status header).
    pub fn status(&self) -> u16 {
        self.cgi().status
    }
}

/// A FastCGI client over a blocking socket (TCP unless made `from_unix`), speaking raw bytes.
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client::over(stream)
    }

    /// The records of one whole request: BEGIN, PARAMS, STDIN (in 64 KiB records).
    pub fn request_bytes(
        id: u16,
        keep_conn: bool,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> BytesMut {
        let mut out = BytesMut::new();
        let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        client::encode_request(&mut out, id, keep_conn, pairs, body);
        out
    }
}

#[cfg(unix)]
impl Client<std::os::unix::net::UnixStream> {
    /// A client over one end of a socketpair (the IIS-style connected fd 0).
    pub fn from_unix(stream: std::os::unix::net::UnixStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client::over(stream)
    }
}

impl<S> Client<S> {
    fn over(stream: S) -> Self {
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl<S: Read + Write> Client<S> {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends FCGI_ABORT_REQUEST for `id`.
    pub fn abort(&mut self, id: u16) {
        let mut abort = BytesMut::new();
        client::encode_abort(&mut abort, id);
        self.send(&abort);
    }

    /// Sends one whole request (keep-conn set) and reads its reply.
    pub fn request(&mut self, id: u16, params: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send(&Client::request_bytes(id, true, params, body));
        self.read_reply(id)
    }

    /// Sends a request on this connection (keep-conn set) and reads its reply.
    pub fn get(&mut self, script: &str, query: &str) -> Reply {
        let bytes = Client::request_bytes(
            1,
            true,
            &[("SCRIPT_NAME", script), ("QUERY_STRING", query)],
            b"",
        );
        self.send(&bytes);
        self.read_reply(1)
    }

    /// The next record, or `None` at a clean end of stream.
    pub fn read_record(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = Record::parse(&mut self.buf).unwrap() {
                return Some(r);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap();
            if n == 0 {
                assert!(self.buf.is_empty(), "stream ended inside a record");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads records until END_REQUEST for `id` (records for other ids are kept out).
    pub fn read_reply(&mut self, id: u16) -> Reply {
        let mut reply = Reply::default();
        loop {
            let r = self
                .read_record()
                .expect("connection closed before END_REQUEST");
            if r.request_id != id {
                panic!(
                    "unexpected record for id {}: {:?}",
                    r.request_id, r.record_type
                );
            }
            reply
                .records
                .push((r.record_type, r.request_id, r.content.len()));
            match r.record_type {
                RecordType::Stdout => reply.stdout.extend_from_slice(&r.content),
                RecordType::Stderr => reply.stderr.extend_from_slice(&r.content),
                RecordType::EndRequest => {
                    reply.end = Some(EndRequest::parse(&r.content).unwrap());
                    return reply;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Sends a request (id 1, kept connection) and reads its reply: how long after sending
    /// its first STDOUT data came, and how long after sending it ended. A streamed response's
    /// first chunk comes well before its end.
    pub fn time_stream(&mut self, params: &[(&str, &str)]) -> (Duration, Duration) {
        self.send(&Client::request_bytes(1, true, params, b""));
        let start = std::time::Instant::now();
        let mut first_data = None;
        loop {
            let rec = self.read_record().expect("closed");
            if rec.record_type == RecordType::Stdout && !rec.content.is_empty() {
                first_data.get_or_insert_with(|| start.elapsed());
            }
            if rec.record_type == RecordType::EndRequest {
                let end = start.elapsed();
                return (first_data.expect("no STDOUT data"), end);
            }
        }
    }

    /// True once the server has closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}
