//! The FastCGI server as a process (src/bin/fcgi-hello.rs, no Python): signals, every transport,
//! and fd 0 as web servers that spawn the application pass it.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fastcgi::protocol::ProtocolStatus;
use sha2::Digest;
use test_support::peers::{self, Nginx, PathParams, TempDir};
use test_support::process::signal;
use test_support::{pattern, Client};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-hello");

fn spawn(args: &[&str], stdin: Stdio) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    test_support::process::wait_exit(child, within).expect("the process did not exit")
}

fn hello_over(stream: TcpStream) {
    let mut c = Client::from_stream(stream);
    let reply = c.get("/hello", "");
    assert_eq!(reply.body(), b"Hello, World!");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let port = peers::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = spawn(&["--listen", &addr], Stdio::null());
        peers::wait_for_port(port, "fcgi-hello");
        let mut c = Client::connect(addr.parse().unwrap());
        c.send(&Client::request_bytes(
            1,
            true,
            &[("SCRIPT_NAME", "/slow"), ("QUERY_STRING", "ms=800")],
            b"",
        ));
        std::thread::sleep(Duration::from_millis(100));
        signal(&child, sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(TcpStream::connect(&addr).is_err(), "stopped accepting");
        let reply = c.read_reply(1);
        assert_eq!(
            reply.body(),
            b"Hello, World!",
            "the in-flight request finished"
        );
        assert_eq!(
            reply.end.unwrap().protocol_status,
            ProtocolStatus::RequestComplete
        );
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "signal {sig}");
    }
}

#[test]
fn listening_socket_on_fd0_as_spawn_fcgi_passes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = spawn(&[], Stdio::from(OwnedFd::from(listener)));
    for _ in 0..3 {
        hello_over(TcpStream::connect(addr).unwrap());
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn connected_socket_on_fd0_is_the_one_connection_iis_style() {
    // IIS hands over one connected duplex pipe; on Unix a socketpair stands in for it.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = Command::new(BIN)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Client::from_unix(ours);
    for _ in 0..3 {
        assert_eq!(c.get("/hello", "").body(), b"Hello, World!");
    }
    drop(c);
    // The connection was the process's life: it ends when the web server closes it.
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn fd0_that_is_not_a_socket_is_explained() {
    let out = Command::new(BIN).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fd 0 is not a socket") && err.contains("--listen"),
        "{err}"
    );
}

#[test]
fn unix_socket_behind_nginx() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("app.sock");
    let listen = format!("unix:{}", path.display());
    let mut child = spawn(&["--listen", &listen], Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "socket not created");
        std::thread::sleep(Duration::from_millis(20));
    }
    let nginx = Nginx::start(&listen, PathParams::ScriptName);
    for _ in 0..5 {
        let r = peers::http(nginx.port, "GET", "/hello", &[], b"");
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[test]
fn ipv6_loopback() {
    let Ok(probe) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let addr = format!("[::1]:{port}");
    let mut child = spawn(&["--listen", &addr], Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    };
    hello_over(stream);
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn address_in_use_is_explained() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn the_ceilings_of_the_upload_and_download_scenarios_answer_as_the_test_app_does() {
    // benches/run-load compares wfcgi with fcgi-hello on `/count` (the upload, read whole and
    // counted), `/sha256` (the upload hashed, with libcrypto as hashlib hashes it, or with the
    // sha2 crate where libcrypto cannot be loaded) and `/bigresponse` (byte i is i % 251),
    // checking the same bodies it checks for python/testapp.
    for hash in ["libcrypto", "sha2"] {
        let port = peers::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["--listen", &addr])
            .env("FCGI_HELLO_SHA256", hash)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        peers::wait_for_port(port, "fcgi-hello");
        let mut c = Client::from_stream(TcpStream::connect(&addr).unwrap());
        let body = vec![b'u'; 300_001];
        let counted = c.request(
            1,
            &[("PATH_INFO", "/count"), ("CONTENT_LENGTH", "300001")],
            &body,
        );
        assert_eq!(counted.body(), b"300001");
        let hashed = c.request(
            1,
            &[("PATH_INFO", "/sha256"), ("CONTENT_LENGTH", "300001")],
            &body,
        );
        let digest: String = sha2::Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(hashed.body()),
            format!("{digest} 300001"),
            "hashed with {hash}"
        );
        let big = c.request(
            1,
            &[
                ("PATH_INFO", "/bigresponse"),
                ("QUERY_STRING", "size=100000&chunk=30000"),
            ],
            b"",
        );
        assert!(
            big.body() == pattern(0, 100_000),
            "/bigresponse is not the pattern"
        );
        signal(&child, libc::SIGTERM);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(10)).code(),
            Some(0)
        );
    }
}
