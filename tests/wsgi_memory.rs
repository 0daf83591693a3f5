//! Memory targets, measured on the real `wfcgi` process (debug build, as the `Wfcgi` wrapper
//! builds it): a slow reader of a 256 MiB response and a 1 GiB upload must not make the
//! server's memory grow with the bytes moved. Every assertion is on memory (VmHWM, VmRSS from
//! /proc), never on time; the figures are printed for the record (`--nocapture`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fastcgi::protocol::{self, BeginRequest, EndRequest, ProtocolStatus, RecordType, Role};
use sha2::{Digest, Sha256};
use test_support::peers::{Nginx, PathParams};
use test_support::rss_kib;
use test_support::wfcgi::{wsgi_params, Wfcgi};
use test_support::Client;

/// The target: the server's peak resident memory stays under this, whatever the body size.
const MAX_HWM_KIB: u64 = 150 * 1024;
/// RSS may not grow by this much between 25% and 90% of a transfer.
const MAX_GROWTH_KIB: u64 = 32 * 1024;

const RESPONSE_SIZE: usize = 256 << 20;
const UPLOAD_SIZE: usize = 1 << 30;

/// The slow reader: after each READ_STEP bytes of body it sleeps READ_PAUSE (256 MiB in about
/// 1024 pauses), so the server is always ahead of the client and must hold back.
const READ_STEP: usize = 256 << 10;
const READ_PAUSE: Duration = Duration::from_millis(5);

/// Peak resident memory of the process so far (VmHWM), in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    test_support::proc_status_kib(pid, "VmHWM:")
}

/// One request first (interpreter, handler import), so that the baseline is the idle server.
fn warm_up<S: Read + Write>(c: &mut Client<S>, pid: u32, label: &str) {
    c.send(&Client::request_bytes(
        1,
        true,
        &wsgi_params("GET", "/hello", ""),
        b"",
    ));
    assert_eq!(c.read_reply(1).body(), b"Hello, World!");
    eprintln!(
        "{label}: idle wfcgi VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(rss_kib(pid)),
        mib(vm_hwm_kib(pid))
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `i % 251` for i in 0..64 KiB + 251: any run of up to 64 KiB of the pattern starting at
/// offset `o` is `&pattern_block()[o % 251..][..len]`.
fn pattern_block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| (0..65536 + 251).map(|i| (i % 251) as u8).collect())
}

fn pattern_at(offset: usize, len: usize) -> &'static [u8] {
    assert!(len <= 65536);
    &pattern_block()[offset % 251..][..len]
}

/// Checks body bytes against the pattern as they arrive; keeps nothing but the count.
struct PatternCheck {
    received: usize,
}

impl PatternCheck {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(65536);
            if data[..n] != *pattern_at(self.received, n) {
                let at = (0..n)
                    .find(|&i| data[i] != ((self.received + i) % 251) as u8)
                    .unwrap();
                panic!(
                    "body byte {} is {}, expected {}",
                    self.received + at,
                    data[at],
                    (self.received + at) % 251
                );
            }
            self.received += n;
            data = &data[n..];
        }
    }
}

/// Splits a CGI/HTTP head from the body as bytes arrive; holds only the head.
struct HeadSplit {
    head: Vec<u8>,
    done: bool,
}

impl HeadSplit {
    fn new() -> Self {
        HeadSplit {
            head: Vec::new(),
            done: false,
        }
    }

    /// Returns the body part of `data` (empty while the head is still coming).
    fn feed<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.done {
            return data;
        }
        let before = self.head.len();
        self.head.extend_from_slice(data);
        // One read may bring the head and much of the body: look for the end of the head first,
        // and bound only the head itself.
        match self.head.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => {
                assert!(at < 64 * 1024, "an HTTP head over 64 KiB");
                self.done = true;
                self.head.truncate(at + 4);
                &data[at + 4 - before..]
            }
            None => {
                assert!(self.head.len() < 64 * 1024, "no end of head in 64 KiB");
                &[]
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
}

/// RSS samples taken at each 5% of a transfer: (percent, KiB).
struct Samples {
    pid: u32,
    total: usize,
    next_pct: usize,
    taken: Vec<(usize, u64)>,
}

impl Samples {
    fn new(pid: u32, total: usize) -> Self {
        Samples {
            pid,
            total,
            next_pct: 5,
            taken: Vec::new(),
        }
    }

    fn at(&mut self, done: usize) {
        while self.next_pct <= 100 && done * 100 >= self.total * self.next_pct {
            self.taken.push((self.next_pct, rss_kib(self.pid)));
            self.next_pct += 5;
        }
    }

    fn rss_at(&self, pct: usize) -> u64 {
        self.taken
            .iter()
            .find(|(p, _)| *p == pct)
            .unwrap_or_else(|| panic!("no sample at {pct}%"))
            .1
    }

    fn describe(&self) -> String {
        self.taken
            .iter()
            .map(|(p, k)| format!("{p}%:{:.1}", mib(*k)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// RSS at 90% is not more than MAX_GROWTH_KIB above RSS at 25%.
    fn assert_flat(&self, what: &str) {
        let (early, late) = (self.rss_at(25), self.rss_at(90));
        assert!(
            late < early + MAX_GROWTH_KIB,
            "{what}: RSS grew from {:.1} MiB (25%) to {:.1} MiB (90%); samples (MiB): {}",
            mib(early),
            mib(late),
            self.describe()
        );
    }
}

fn assert_hwm(what: &str, pid: u32, samples: &Samples) -> u64 {
    let hwm = vm_hwm_kib(pid);
    eprintln!(
        "{what}: wfcgi VmHWM {:.1} MiB; VmRSS samples (MiB): {}",
        mib(hwm),
        samples.describe()
    );
    assert!(
        hwm < MAX_HWM_KIB,
        "{what}: wfcgi VmHWM {:.1} MiB >= {} MiB; VmRSS samples (MiB): {}",
        mib(hwm),
        MAX_HWM_KIB / 1024,
        samples.describe()
    );
    hwm
}

#[test]
fn slow_reader_of_a_256_mib_response_keeps_rss_flat() {
    let w = Wfcgi::serve_testapp(&[]);
    let pid = w.pid();
    let mut c = w.connect();
    // Warm up (interpreter, handler import) so the baseline is the idle server.
    warm_up(&mut c, pid, "slow reader");
    read_256_mib_slowly(&mut c, pid, "slow reader, 256 MiB response");
}

/// As IIS runs it: the one connection on fd 0, where a request after the first runs inline on
/// the connection's thread and writes straight to the socket, waiting for it when full.
#[test]
fn slow_reader_of_a_256_mib_response_keeps_rss_flat_as_under_iis() {
    let python = test_support::wfcgi::repo_path("python");
    let (w, mut c) = Wfcgi::with_connected_stdin(
        &[
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
        ],
        &|_| {},
    );
    let pid = w.pid();
    warm_up(&mut c, pid, "slow reader (IIS-style)");
    read_256_mib_slowly(&mut c, pid, "slow reader, 256 MiB response, IIS-style");
}

fn read_256_mib_slowly<S: Read + Write>(c: &mut Client<S>, pid: u32, what: &str) {
    let started = Instant::now();
    let query = format!("size={RESPONSE_SIZE}&chunk=65536");
    c.send(&Client::request_bytes(
        2,
        true,
        &wsgi_params("GET", "/bigresponse", &query),
        b"",
    ));
    let mut head = HeadSplit::new();
    let mut check = PatternCheck { received: 0 };
    let mut samples = Samples::new(pid, RESPONSE_SIZE);
    let mut since_pause = 0;
    let end = loop {
        let r = c
            .read_record()
            .expect("connection closed before END_REQUEST");
        assert_eq!(r.request_id, 2);
        match r.record_type {
            RecordType::Stdout => {
                let body = head.feed(&r.content);
                check.feed(body);
                samples.at(check.received);
                since_pause += body.len();
                if since_pause >= READ_STEP {
                    since_pause = 0;
                    std::thread::sleep(READ_PAUSE);
                }
            }
            RecordType::Stderr => panic!("stderr: {}", String::from_utf8_lossy(&r.content)),
            RecordType::EndRequest => break EndRequest::parse(&r.content).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!(
        "{what}: {} MiB in {:.1} s",
        RESPONSE_SIZE >> 20,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(end.protocol_status, ProtocolStatus::RequestComplete);
    assert_eq!(end.app_status, 0);
    assert!(
        head.text()
            .contains(&format!("Content-Length: {RESPONSE_SIZE}")),
        "{}",
        head.text()
    );
    assert_eq!(check.received, RESPONSE_SIZE);
    assert_hwm(what, pid, &samples);
    samples.assert_flat(what);
}

#[test]
fn one_gib_upload_streams_with_flat_rss() {
    let w = Wfcgi::serve_testapp(&[]);
    let pid = w.pid();
    let mut c = w.connect();
    warm_up(&mut c, pid, "upload");

    // /sha256 reads wsgi.input in 64 KiB read(n) calls, bounded by CONTENT_LENGTH: the
    // streaming path (Input::read_exact_or_end). Nothing is spooled to a temporary file; that
    // happens only for a read() of everything on a body of unknown length.
    let started = Instant::now();
    let length = UPLOAD_SIZE.to_string();
    let mut params = wsgi_params("POST", "/sha256", "");
    params.push(("CONTENT_LENGTH", &length));
    params.push(("CONTENT_TYPE", "application/octet-stream"));
    // BEGIN and PARAMS; STDIN follows from the sending thread.
    let mut start = BytesMut::new();
    BeginRequest {
        role: Role::Responder,
        flags: 1,
    }
    .encode(2, &mut start);
    let mut p = BytesMut::new();
    for (n, v) in &params {
        protocol::encode_pair(&mut p, n.as_bytes(), v.as_bytes());
    }
    protocol::encode_stream(&mut start, RecordType::Params, 2, &p);
    protocol::encode_stream_end(&mut start, RecordType::Params, 2);
    c.send(&start);

    // The sender writes as fast as the server takes it; the expected digest is computed on
    // another thread over the same deterministic bytes (sha2 in a debug build hashes at about
    // 60 MB/s, which would otherwise throttle the sender and hide any buffering in the server).
    let hasher = std::thread::spawn(|| {
        let mut hasher = Sha256::new();
        let mut done = 0usize;
        while done < UPLOAD_SIZE {
            let n = (UPLOAD_SIZE - done).min(protocol::MAX_CONTENT_LEN);
            hasher.update(pattern_at(done, n));
            done += n;
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (hex, done)
    });
    let mut out = c.stream.try_clone().unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let sender_progress = progress.clone();
    let sender = std::thread::spawn(move || {
        let mut sent = 0usize;
        let mut record = BytesMut::with_capacity(protocol::HEADER_LEN + 65536);
        while sent < UPLOAD_SIZE {
            // One STDIN record of (nearly) 64 KiB, built from the pattern as it goes out.
            let n = (UPLOAD_SIZE - sent).min(protocol::MAX_CONTENT_LEN);
            record.clear();
            protocol::encode_stream(&mut record, RecordType::Stdin, 2, pattern_at(sent, n));
            out.write_all(&record).unwrap();
            sent += n;
            sender_progress.store(sent, Ordering::Relaxed);
        }
        record.clear();
        protocol::encode_stream_end(&mut record, RecordType::Stdin, 2);
        out.write_all(&record).unwrap();
        sent
    });

    // While the body goes out, sample the server's RSS against the bytes written so far (what
    // the server has consumed, give or take the socket buffers).
    let mut samples = Samples::new(pid, UPLOAD_SIZE);
    while !sender.is_finished() {
        samples.at(progress.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = sender.join().unwrap();
    let send_secs = started.elapsed().as_secs_f64();
    let reply = c.read_reply(2);
    samples.at(sent);
    eprintln!(
        "upload: {} MiB sent in {send_secs:.1} s, reply after {:.1} s",
        sent >> 20,
        started.elapsed().as_secs_f64()
    );
    let (expected_hex, hashed) = hasher.join().unwrap();
    assert_eq!(hashed, sent);
    let end = reply.end.as_ref().expect("END_REQUEST");
    assert_eq!(end.protocol_status, ProtocolStatus::RequestComplete);
    let body = String::from_utf8_lossy(reply.body()).into_owned();
    assert_eq!(body, format!("{expected_hex} {UPLOAD_SIZE}"));
    assert_hwm("1 GiB upload", pid, &samples);
    samples.assert_flat("1 GiB upload");
}

#[test]
fn slow_http_reader_through_nginx_keeps_wfcgi_rss_flat() {
    let w = Wfcgi::serve_testapp(&[]);
    let pid = w.pid();
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // HTTP/1.0: no chunked encoding, the body ends at close.
    write!(
        s,
        "GET /bigresponse?size={RESPONSE_SIZE}&chunk=65536 HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut head = HeadSplit::new();
    let mut check = PatternCheck { received: 0 };
    let mut samples = Samples::new(pid, RESPONSE_SIZE);
    let mut since_pause = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let body = head.feed(&buf[..n]);
        check.feed(body);
        samples.at(check.received);
        since_pause += body.len();
        if since_pause >= READ_STEP {
            since_pause = 0;
            std::thread::sleep(READ_PAUSE);
        }
    }
    eprintln!(
        "nginx slow reader: {} MiB in {:.1} s",
        RESPONSE_SIZE >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(head.text().starts_with("HTTP/1.1 200"), "{}", head.text());
    assert!(
        head.text()
            .contains(&format!("Content-Length: {RESPONSE_SIZE}")),
        "{}",
        head.text()
    );
    assert_eq!(check.received, RESPONSE_SIZE);
    assert_hwm("nginx slow reader, 256 MiB response", pid, &samples);
    samples.assert_flat("nginx slow reader, 256 MiB response");
}

/// Kept-alive connections, each idle after one request: what nginx's `keepalive` pool holds.
const IDLE_CONNECTIONS: usize = 2000;
/// What one idle connection may add to the server's resident memory. Before idle connections
/// gave their read buffer back, one cost about 10 KiB (16 KiB allocated, the touched part
/// resident); without it, about 6 KiB (the connection's task, its channel, the socket's
/// registration).
const MAX_KIB_PER_IDLE_CONNECTION: u64 = 8;

#[test]
fn kept_alive_idle_connections_hold_no_read_buffer() {
    let max_connections = (IDLE_CONNECTIONS + 100).to_string();
    let w = Wfcgi::serve_testapp(&["--max-connections", &max_connections]);
    let pid = w.pid();
    let addr = w.addr().parse().unwrap();
    let mut first = Client::connect(addr);
    warm_up(&mut first, pid, "idle connections");
    let before = rss_kib(pid);
    let request = Client::request_bytes(1, true, &wsgi_params("GET", "/hello", ""), b"");
    // Opened in waves, as a web server's pool fills: each answered before the next wave.
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    while held.len() < IDLE_CONNECTIONS {
        let mut wave: Vec<Client> = (0..100).map(|_| Client::connect(addr)).collect();
        for c in &mut wave {
            c.send(&request);
        }
        for c in &mut wave {
            assert_eq!(c.read_reply(1).body(), b"Hello, World!");
        }
        held.extend(wave);
    }
    let after = rss_kib(pid);
    let per_connection = after.saturating_sub(before) / IDLE_CONNECTIONS as u64;
    eprintln!(
        "{IDLE_CONNECTIONS} idle connections: wfcgi VmRSS {:.1} -> {:.1} MiB, {per_connection} KiB each",
        mib(before),
        mib(after)
    );
    assert!(
        per_connection <= MAX_KIB_PER_IDLE_CONNECTION,
        "each idle connection costs {per_connection} KiB (at most {MAX_KIB_PER_IDLE_CONNECTION})"
    );
    // They are still served: one more request on every tenth.
    for c in held.iter_mut().step_by(10) {
        c.send(&request);
        assert_eq!(c.read_reply(1).body(), b"Hello, World!");
    }
}

/// Whether glibc's malloc keeps the memory the app frees (the binary's `allocator`), counted
/// in minor page faults of the real server once it is warm: with glibc's start thresholds a
/// freed block was given back to the kernel and faulted in again, zeroed, by the next request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod freed_memory {
    use super::*;
    use test_support::minor_faults;

    /// 1 MiB responses per connection in each phase, and the connections: enough requests
    /// that the first touches of a phase (up to ~120 pages on a busy machine) count for little.
    const RESPONSES: usize = 150;
    const CONNECTIONS: usize = 4;
    /// What a warm 1 MiB response may cost. Measured: 0.03-0.06 with the binary's allocator
    /// set-up, two CPU-bound processes running beside it (with 60 responses a connection,
    /// 0.05-0.46, and once 0.53 while the rest of the suite ran); 13-91 with glibc's start
    /// thresholds (`MALLOC_TOP_PAD_=131072` set, which fixes them there and so undoes the
    /// set-up).
    const MAX_FAULTS_PER_RESPONSE: f64 = 0.5;

    /// An upload read whole by one `read()`: a block glibc `mmap`s while it is over the
    /// threshold, 2,049 faults a request each time if the threshold cannot move up to it.
    const WHOLE_READ: usize = 8 << 20;
    const WHOLE_READS: usize = 12;
    /// Measured: 0-4 a request with the binary's set-up; 2,054 with the thresholds fixed at
    /// 4 MiB (`mallopt`'s way, first tried), 2,216-2,593 at glibc's start values.
    const MAX_FAULTS_PER_WHOLE_READ: f64 = 256.0;

    /// Each connection asks for `RESPONSES` 1 MiB responses, all connections at once.
    fn download_in_parallel(w: &Wfcgi) {
        let addr = w.addr().parse().unwrap();
        let request = Client::request_bytes(
            1,
            true,
            &wsgi_params("GET", "/bigresponse", "size=1048576&chunk=65536"),
            b"",
        );
        std::thread::scope(|s| {
            for _ in 0..CONNECTIONS {
                s.spawn(|| {
                    let mut c = Client::connect(addr);
                    for _ in 0..RESPONSES {
                        c.send(&request);
                        assert_eq!(c.read_reply(1).body().len(), 1 << 20);
                    }
                });
            }
        });
    }

    /// The app's 64 KiB pieces and their copies reuse memory the requests before freed.
    #[test]
    fn freed_response_memory_is_reused_not_faulted_in_again() {
        // One Python thread, so that the warm-up grows the one arena the app allocates from
        // (a thread's first requests fault its arena in: not the point here).
        let w = Wfcgi::serve_testapp(&["--threads", "1"]);
        let pid = w.pid();
        download_in_parallel(&w);
        let before = minor_faults(pid);
        download_in_parallel(&w);
        let responses = (CONNECTIONS * RESPONSES) as f64;
        let per_response = (minor_faults(pid) - before) as f64 / responses;
        eprintln!("1 MiB responses once warm: {per_response:.2} minor page faults each");
        assert!(
            per_response < MAX_FAULTS_PER_RESPONSE,
            "{per_response:.2} page faults per 1 MiB response once warm (at most \
             {MAX_FAULTS_PER_RESPONSE}): freed memory went back to the kernel"
        );
    }

    /// glibc still raises its thresholds for blocks larger than the binary's start values.
    #[test]
    fn a_large_block_freed_is_reused_not_mapped_afresh() {
        let w = Wfcgi::serve_testapp(&["--threads", "1"]);
        let pid = w.pid();
        let mut c = w.connect();
        let length = WHOLE_READ.to_string();
        let mut params = wsgi_params("POST", "/read-all", "");
        params.push(("CONTENT_LENGTH", &length));
        let request = Client::request_bytes(1, true, &params, &vec![7u8; WHOLE_READ]);
        let mut read_whole = |times: usize| {
            for _ in 0..times {
                c.send(&request);
                assert_eq!(c.read_reply(1).body(), length.as_bytes());
            }
        };
        read_whole(4);
        let before = minor_faults(pid);
        read_whole(WHOLE_READS);
        let per_read = (minor_faults(pid) - before) as f64 / WHOLE_READS as f64;
        eprintln!("8 MiB read whole, once warm: {per_read:.1} minor page faults each");
        assert!(
            per_read < MAX_FAULTS_PER_WHOLE_READ,
            "{per_read:.1} page faults per 8 MiB read() once warm (at most \
             {MAX_FAULTS_PER_WHOLE_READ}): the block is mapped afresh every time, so glibc's \
             mmap threshold no longer follows the blocks freed"
        );
    }
}
