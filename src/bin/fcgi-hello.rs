//! A FastCGI responder with no Python: answers every request with a fixed 13-byte body.
//!
//! It is the ceiling of what this machine's loopback allows (`benches/`), and the process the
//! tests signal to prove graceful shutdown. `fcgi-hello --listen ADDR [--listen ADDR ...]`;
//! `/slow?ms=N` sleeps before answering (for the drain test); `/bigresponse?size=N&chunk=M`
//! answers what python/testapp's `/bigresponse` does (byte i is `i % 251`), from one buffer
//! made at start, so that the 1 MiB scenario has a ceiling too; `/count` reads the whole body
//! and answers its length, as the test app's `/count` does (the ceiling of the upload's
//! transport); `/sha256` answers `<hex SHA-256> <byte count>` of the body, as the test app's
//! `/sha256` does, hashing each piece as it comes on the runtime's worker threads (one per
//! core): the hashed upload's ceiling, the app's work without Python.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fastcgi::{Handler, ListenAddr, Listener, Request, ServeOutcome, Server, ServerConfig};

struct Hello;

const REPLY: &[u8] =
    b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// `i % 251` for i in 0..(MAX_CHUNK + 251): a chunk of the pattern starting at offset `o` is
/// `PATTERN[o % 251..][..len]`.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| (0..MAX_CHUNK + 251).map(|i| (i % 251) as u8).collect())
}

const MAX_CHUNK: usize = 1 << 20;

/// `size` and `chunk` of a `/bigresponse` query (the test app's defaults: 1 MiB in 64 KiB).
fn big_response_query(request: &Request) -> Option<(usize, usize)> {
    let query = request.params().get(b"QUERY_STRING").unwrap_or_default();
    let (mut size, mut chunk) = (1 << 20, 65536);
    for pair in std::str::from_utf8(query).ok()?.split('&') {
        match pair.split_once('=') {
            Some(("size", v)) => size = v.parse().ok()?,
            Some(("chunk", v)) => chunk = v.parse::<usize>().ok()?.clamp(1, MAX_CHUNK),
            _ => {}
        }
    }
    Some((size, chunk))
}

/// `/count`: reads the whole body, answers its length.
fn count(request: Request) {
    let (_, mut body, response) = request.into_parts();
    tokio::spawn(async move {
        let mut total = 0;
        while let Ok(Some(chunk)) = body.chunk().await {
            total += chunk.len();
        }
        let total = total.to_string();
        let reply = format!(
            "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{total}",
            total.len()
        );
        response.finish_with(Bytes::from(reply), 0);
    });
}

/// `/sha256`: hashes the body piece by piece as it arrives, answers `<hex digest> <count>`.
/// The hash runs on the worker thread that polls the task (about 30 us a 64 KiB piece with
/// SHA-NI), as hashlib's `update()` runs on the app's thread with the GIL released.
fn sha256(request: Request) {
    use std::fmt::Write;
    let (_, mut body, response) = request.into_parts();
    tokio::spawn(async move {
        let mut digest = Sha256::new();
        let mut total = 0;
        while let Ok(Some(chunk)) = body.chunk().await {
            digest.update(&chunk);
            total += chunk.len();
        }
        let mut text = String::with_capacity(80);
        for b in digest.finish() {
            let _ = write!(text, "{b:02x}");
        }
        let _ = write!(text, " {total}");
        let reply = format!(
            "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        response.finish_with(Bytes::from(reply), 0);
    });
}

/// SHA-256 by the system's libcrypto, the code Python's `hashlib.sha256` runs (OpenSSL's
/// SHA-NI routine: 0.58 ms a MiB here, where the `sha2` crate takes 0.68), loaded at run time so
/// that building needs no OpenSSL headers; `sha2` when it cannot be loaded (decision 0005).
enum Sha256 {
    Crypto(Box<[u64; 16]>, &'static Libcrypto),
    Rust(sha2::Sha256),
}

/// OpenSSL's `SHA256_Init`, `SHA256_Update` and `SHA256_Final` (deprecated in 3.0, still
/// exported; the `SHA256_CTX` they take is 112 bytes).
struct Libcrypto {
    init: InitFn,
    update: UpdateFn,
    finish: FinalFn,
}

type InitFn = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type UpdateFn = unsafe extern "C" fn(*mut libc::c_void, *const libc::c_void, usize) -> libc::c_int;
type FinalFn = unsafe extern "C" fn(*mut u8, *mut libc::c_void) -> libc::c_int;

/// libcrypto's SHA-256, loaded once; `None` (said on stderr) when it cannot be, or when
/// `FCGI_HELLO_SHA256=sha2` asks for the `sha2` crate (the tests check both).
fn libcrypto() -> Option<&'static Libcrypto> {
    static LOADED: OnceLock<Option<Libcrypto>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if std::env::var_os("FCGI_HELLO_SHA256").is_some_and(|v| v == "sha2") {
                return None;
            }
            let loaded = load_libcrypto();
            if let Err(why) = &loaded {
                eprintln!("fcgi-hello: {why}; /sha256 hashes with the sha2 crate");
            }
            loaded.ok()
        })
        .as_ref()
}

fn load_libcrypto() -> Result<Libcrypto, String> {
    // SAFETY: dlopen with a NUL-terminated name; the handle is never closed, so the symbols
    // stay valid for the life of the process.
    let lib = unsafe { libc::dlopen(c"libcrypto.so.3".as_ptr(), libc::RTLD_NOW) };
    if lib.is_null() {
        return Err("libcrypto.so.3 not found".into());
    }
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: a symbol looked up in a handle that stays open.
        let f = unsafe { libc::dlsym(lib, name.as_ptr()) };
        if f.is_null() {
            Err(format!("libcrypto.so.3 has no {name:?}"))
        } else {
            Ok(f)
        }
    };
    let (init, update, finish) = (
        sym(c"SHA256_Init")?,
        sym(c"SHA256_Update")?,
        sym(c"SHA256_Final")?,
    );
    // SAFETY: the three functions have these C signatures in every OpenSSL since 0.9.8.
    unsafe {
        Ok(Libcrypto {
            init: std::mem::transmute::<*mut libc::c_void, InitFn>(init),
            update: std::mem::transmute::<*mut libc::c_void, UpdateFn>(update),
            finish: std::mem::transmute::<*mut libc::c_void, FinalFn>(finish),
        })
    }
}

impl Sha256 {
    fn new() -> Self {
        match libcrypto() {
            Some(lib) => {
                let mut ctx = Box::new([0u64; 16]);
                // SAFETY: ctx is 128 bytes, 8-aligned: room for OpenSSL's 112-byte SHA256_CTX.
                unsafe { (lib.init)(ctx.as_mut_ptr().cast()) };
                Sha256::Crypto(ctx, lib)
            }
            None => Sha256::Rust(sha2::Digest::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            // SAFETY: ctx was initialised by SHA256_Init; data is valid for its length.
            Sha256::Crypto(ctx, lib) => unsafe {
                (lib.update)(ctx.as_mut_ptr().cast(), data.as_ptr().cast(), data.len());
            },
            Sha256::Rust(d) => sha2::Digest::update(d, data),
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            Sha256::Crypto(mut ctx, lib) => {
                let mut out = [0u8; 32];
                // SAFETY: out has the 32 bytes SHA256_Final writes; ctx is initialised.
                unsafe { (lib.finish)(out.as_mut_ptr(), ctx.as_mut_ptr().cast()) };
                out
            }
            Sha256::Rust(d) => sha2::Digest::finalize(d).into(),
        }
    }
}

/// `/bigresponse`: `size` bytes of the pattern in `chunk`-byte writes.
fn big_response(request: Request, size: usize, chunk: usize) {
    let (_, _, mut response) = request.into_parts();
    tokio::spawn(async move {
        let head = format!(
            "Status: 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        );
        let mut ok = response.write(Bytes::from(head)).await.is_ok();
        let mut sent = 0;
        while ok && sent < size {
            let n = chunk.min(size - sent);
            let start = sent % 251;
            ok = response
                .write(pattern().slice(start..start + n))
                .await
                .is_ok();
            sent += n;
        }
        response.finish(0);
    });
}

/// Every other path: the fixed reply, after `?ms=N` milliseconds if asked.
fn hello(request: Request) {
    let delay = request
        .params()
        .get(b"QUERY_STRING")
        .and_then(|q| q.strip_prefix(b"ms="))
        .and_then(|ms| std::str::from_utf8(ms).ok()?.parse::<u64>().ok());
    let (_, _, mut response) = request.into_parts();
    match delay {
        None => {
            let _ = response.try_write(Bytes::from_static(REPLY));
            response.finish(0);
        }
        Some(ms) => {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = response.write(Bytes::from_static(REPLY)).await;
                response.finish(0);
            });
        }
    }
}

impl Handler for Hello {
    fn handle(&self, request: Request) {
        match request.params().get(b"PATH_INFO").unwrap_or_default() {
            b"/count" => count(request),
            b"/sha256" => sha256(request),
            b"/bigresponse" => match big_response_query(&request) {
                Some((size, chunk)) => big_response(request, size, chunk),
                None => hello(request),
            },
            _ => hello(request),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addrs = Vec::new();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(a)) => match a.parse::<ListenAddr>() {
                Ok(a) => addrs.push(a),
                Err(e) => fail(&e.to_string()),
            },
            _ => fail("usage: fcgi-hello --listen ADDR [--listen ADDR ...]"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let mut listeners = Vec::new();
        for a in &addrs {
            match Listener::bind(a, Default::default()).await {
                Ok(l) => {
                    println!("listening on {}", l.local_addr());
                    listeners.push(l)
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        if listeners.is_empty() {
            listeners.push(Listener::from_stdin().unwrap_or_else(|e| fail(&e.to_string())));
        }
        let config = ServerConfig {
            shutdown_grace: Duration::from_secs(10),
            ..ServerConfig::default()
        };
        Server::new(config, Arc::new(Hello))
            .serve(listeners, shutdown_signal())
            .await
    });
    match outcome {
        Ok(ServeOutcome::GraceExpired { .. }) => std::process::exit(1),
        Ok(_) => {}
        Err(e) => fail(&e.to_string()),
    }
}

/// Registers the handlers when called (before the first connection is accepted), so that an
/// early signal drains rather than kills.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("fcgi-hello: {msg}");
    std::process::exit(2)
}
