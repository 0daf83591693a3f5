//! The bridge behind the real FastCGI server: raw records over 127.0.0.1 (streaming request
//! bodies, the pool's 503 when its queue is full). Its own process, so its own interpreter.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fastcgi::client::{self, ResponseRecord};
use fastcgi::{BindOptions, ListenAddr, Listener, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgi::{Bridge, BridgeConfig, HandlerSetting, SettingSource};

/// One bridge for the whole test binary (the interpreter starts once per process), served on
/// an ephemeral port. Returns the address.
async fn serve(threads: usize, queue_len: usize) -> String {
    let mut config =
        BridgeConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    config.threads = threads;
    config.queue_len = queue_len;
    config.handler = Some(HandlerSetting {
        path: "bridge_apps.dispatch_by_path".to_owned(),
        source: SettingSource::Flag("--handler"),
    });
    let bridge = Bridge::start(config).expect("bridge starts");
    let addr: ListenAddr = "127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind(&addr, BindOptions::default()).await.unwrap();
    let local = listener.local_addr();
    let server = Server::new(ServerConfig::default(), Arc::new(bridge));
    tokio::spawn(server.serve(vec![listener], std::future::pending()));
    local
}

/// Sends a request whose body arrives in `pieces` with a pause between them; returns STDOUT.
async fn send(addr: &str, params: &[(&str, &str)], pieces: &[&[u8]], pause: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = BytesMut::new();
    client::encode_begin(&mut head, 1, false);
    client::encode_params(
        &mut head,
        1,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    );
    stream.write_all(&head).await.unwrap();
    for piece in pieces {
        tokio::time::sleep(pause).await;
        let mut out = BytesMut::new();
        client::encode_stdin(&mut out, 1, piece);
        stream.write_all(&out).await.unwrap();
    }
    let mut end = BytesMut::new();
    client::encode_stdin_end(&mut end, 1);
    stream.write_all(&end).await.unwrap();
    let mut buf = BytesMut::new();
    let mut stdout = Vec::new();
    loop {
        while let Some((_, record)) = client::parse_response(&mut buf).unwrap() {
            match record {
                ResponseRecord::Stdout(data) => stdout.extend_from_slice(&data),
                ResponseRecord::End(_) => return String::from_utf8_lossy(&stdout).into_owned(),
                _ => {}
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before END_REQUEST; got {stdout:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn params<'a>(path: &'a str, len: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", path),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("CONTENT_LENGTH", len),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_body_and_queue_full_503() {
    let addr = serve(1, 1).await;

    // A body that arrives in pieces while the app is already reading it.
    let out = send(
        &addr,
        &params("/echo", "15"),
        &[b"hello", b" strea", b"ming"],
        Duration::from_millis(30),
    )
    .await;
    assert!(out.ends_with("\r\n\r\nPOST:hello streaming"), "{out:?}");

    // One thread, a queue of one: while a slow request (1 s) runs and one waits, a third
    // gets 503 from the handler itself, without Python.
    let spawn_slow = |addr: String| {
        tokio::spawn(async move {
            let mut p = params("/slow", "0");
            p.push(("QUERY_STRING", "1"));
            send(&addr, &p, &[], Duration::ZERO).await
        })
    };
    let first = spawn_slow(addr.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = spawn_slow(addr.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = send(&addr, &params("/slow", "0"), &[], Duration::ZERO).await;
    assert!(
        third.starts_with("Status: 503 Service Unavailable\r\n"),
        "{third:?}"
    );
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(first.starts_with("Status: 200 OK"), "{first:?}");
    assert!(second.starts_with("Status: 200 OK"), "{second:?}");
}
