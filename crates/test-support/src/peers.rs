//! Real peers that nobody here wrote: nginx in front, `cgi-fcgi` (Debian's libfcgi-bin) as a
//! client. `scripts/setup-test-env` installs them; a missing one fails the test with that hint.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP_HINT: &str =
    "run scripts/setup-test-env (it installs nginx, libfcgi-bin and the test virtualenvs)";

/// The repository root (this crate is `crates/test-support` in it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// How a Python traceback names the line of python/testapp/app.py that contains `source` (the
/// first such line), in `function`: `app.py", line N, in function` (no folder: Windows writes
/// it with backslashes). Tests match frames through this rather than a line number that every
/// edit above it would move.
pub fn testapp_frame(source: &str, function: &str) -> String {
    let app = repo().join("python/testapp/app.py");
    let text = std::fs::read_to_string(&app).expect("python/testapp/app.py");
    let line = text
        .lines()
        .position(|l| l.contains(source))
        .unwrap_or_else(|| panic!("no line of {} contains {source:?}", app.display()));
    format!("app.py\", line {}, in {function}", line + 1)
}

/// Where [`free_port`] takes ports: below Linux's default ephemeral range (32768-60999), from
/// which every client socket's source port comes.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port nothing listens on right now, for a server a test starts (it binds it itself).
///
/// Not the kernel's pick (`bind` to port 0), which comes from the ephemeral range: between the
/// pick and the server's `bind`, a client socket of a test running beside it could take the
/// same number as its source port, and the server would then fail with "address in use" while
/// the test talks to whatever answers there (seen once in CI). So the ports come from below
/// that range, each handed out once per process (tests run in parallel threads), starting at
/// an offset taken from the process id (for test binaries that run at the same time).
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let offset = std::process::id().wrapping_mul(997) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = TEST_PORTS.start + (offset + n) % span;
        let port = u16::try_from(port).expect("the test ports fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("wfcgi-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How nginx passes a request's path to the application.
#[derive(Clone, Copy)]
pub enum PathParams {
    /// `SCRIPT_NAME` is the URI path (the Rust test handler routes on it).
    ScriptName,
    /// WSGI at the root: `SCRIPT_NAME` empty, `PATH_INFO` the URI path.
    Wsgi,
}

/// nginx with `fastcgi_pass` to `upstream` (`host:port` or `unix:/path`), `fastcgi_keep_conn on`
/// and an upstream keepalive pool; response and request buffering off so that streaming shows.
pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Nginx {
    pub fn start(upstream: &str, path_params: PathParams) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("nginx is not installed: {SETUP_HINT}"));
        let dir = TempDir::new("nginx");
        let port = free_port();
        let d = dir.path().display();
        let path = match path_params {
            PathParams::ScriptName => {
                "fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n        fastcgi_param PATH_INFO \"\";"
            }
            PathParams::Wsgi => "fastcgi_param SCRIPT_NAME \"\";\n        fastcgi_param PATH_INFO $uri;",
        };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    upstream app {{
        server {upstream};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
        fastcgi_pass app;
        fastcgi_keep_conn on;
        fastcgi_buffering off;
        fastcgi_request_buffering off;
        fastcgi_read_timeout 60s;
        {path}
        fastcgi_param QUERY_STRING $query_string;
        fastcgi_param REQUEST_METHOD $request_method;
        fastcgi_param CONTENT_TYPE $content_type;
        fastcgi_param CONTENT_LENGTH $content_length;
        fastcgi_param REQUEST_URI $request_uri;
        fastcgi_param DOCUMENT_URI $document_uri;
        fastcgi_param SERVER_PROTOCOL $server_protocol;
        fastcgi_param REQUEST_SCHEME $scheme;
        fastcgi_param HTTPS $https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
        fastcgi_param REMOTE_ADDR $remote_addr;
        fastcgi_param REMOTE_PORT $remote_port;
        fastcgi_param SERVER_ADDR $server_addr;
        fastcgi_param SERVER_PORT $server_port;
        fastcgi_param SERVER_NAME $server_name;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_for_port(port, "nginx");
        Nginx { port, child, dir }
    }
}

impl Nginx {
    /// What nginx logged at `warn` and above so far (upstream errors, retries).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shown with a failing test's output (captured otherwise).
        let log = self.error_log();
        if !log.is_empty() {
            eprintln!("nginx error log:\n{log}");
        }
    }
}

/// An HTTP response as a minimal HTTP/1.1 client saw it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When each piece of the body arrived, relative to the first byte of the response.
    pub arrivals: Vec<(Duration, usize)>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`; the body is decoded (chunked or not).
pub fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();

    let mut raw = Vec::new();
    let mut arrivals = Vec::new();
    let mut start = None;
    let mut chunk = [0u8; 65536];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the HTTP response: {e}"),
        };
        let t0 = *start.get_or_insert_with(Instant::now);
        arrivals.push((t0.elapsed(), n));
        raw.extend_from_slice(&chunk[..n]);
    }
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP head");
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[at + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
        arrivals,
    }
}

fn dechunk(mut src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = src
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&src[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        src = &src[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&src[..size]);
        src = &src[size + 2..];
    }
}

/// Runs `cgi-fcgi -bind -connect ADDR` as a CGI client would: the request as environment
/// variables and the body on stdin; returns its stdout (the CGI response).
pub fn cgi_fcgi(connect: &str, env: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let bin = ["/usr/bin/cgi-fcgi", "/usr/local/bin/cgi-fcgi"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("cgi-fcgi is not installed: {SETUP_HINT}"));
    let mut child = Command::new(bin)
        .args(["-bind", "-connect", connect])
        .env_clear()
        .envs(env.iter().copied())
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "cgi-fcgi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
