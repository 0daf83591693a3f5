//! `wfcgi request [PATH]`: one request, printed like `curl -i` (the status line, the headers,
//! a blank line, the body). By default it runs in this process through the app the settings
//! name (flags, `--app-dir` and its web.config, the environment: exactly as `serve` resolves
//! them), with no server; with `--connect ADDR` it goes to a running FastCGI server instead
//! (wfcgi or any other), over TCP, a Unix socket (`unix:/path`) or, on Windows, a named pipe
//! (`\\.\pipe\name`), through the sans-IO client of `crates/fastcgi`.
//!
//! The request is what a web server would send: `REQUEST_METHOD`, `PATH_INFO` (with an empty
//! `SCRIPT_NAME`), `QUERY_STRING`, `REQUEST_URI`, the server and client addresses of a local
//! request, `CONTENT_TYPE`/`CONTENT_LENGTH` for a body, and each `-H` header as `HTTP_*`.
//! Exit status: 0 for a response below 500, 1 for a 5xx, 3 when no response came (the app
//! could not be started, the server could not be reached, or it broke the protocol), 2 for a
//! usage or settings error.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use fastcgi::client::{self, CgiResponse, ResponseRecord};

use crate::logging::Logging;
use crate::settings::{self, Environment, Flags};

/// Exit status when no response came.
const EXIT_NO_RESPONSE: u8 = 3;

/// What `wfcgi request` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Options {
    pub path: String,
    pub method: Option<String>,
    /// `Name: value`, as given.
    pub headers: Vec<String>,
    /// `-d`: the body, `@file`, or `-` (standard input).
    pub data: Option<String>,
    pub query: Option<String>,
    pub connect: Option<String>,
}

pub(crate) fn run(options: &Options, flags: &Flags, env: &Environment, cwd: &Path) -> ExitCode {
    let body = match read_body(options.data.as_deref()) {
        Ok(body) => body,
        Err(message) => return usage(&message),
    };
    let params = match build_params(options, body.len()) {
        Ok(params) => params,
        Err(message) => return usage(&message),
    };
    let sent = match &options.connect {
        Some(addr) => over_fastcgi(addr, &params, &body),
        None => in_process(flags, env, cwd, params, body),
    };
    match sent {
        Ok((stdout, stderr)) => print(&stdout, &stderr),
        Err(Failure::Usage(message)) => usage(&message),
        Err(Failure::NoResponse(message)) => {
            eprintln!("wfcgi request: {message}");
            ExitCode::from(EXIT_NO_RESPONSE)
        }
    }
}

enum Failure {
    Usage(String),
    NoResponse(String),
}

fn usage(message: &str) -> ExitCode {
    eprintln!("wfcgi request: {message}");
    ExitCode::from(crate::EXIT_STARTUP)
}

fn read_body(data: Option<&str>) -> Result<Bytes, String> {
    match data {
        None => Ok(Bytes::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("-d -: cannot read standard input: {e}"))?;
            Ok(Bytes::from(buf))
        }
        Some(file) if file.starts_with('@') => std::fs::read(&file[1..])
            .map(Bytes::from)
            .map_err(|e| format!("-d {file}: cannot read {}: {e}", &file[1..])),
        Some(text) => Ok(Bytes::copy_from_slice(text.as_bytes())),
    }
}

/// The CGI params of the request, as a web server sends them for a local client.
fn build_params(options: &Options, body_len: usize) -> Result<Vec<(String, String)>, String> {
    let (path, query_in_path) = match options.path.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (options.path.clone(), None),
    };
    if !path.starts_with('/') {
        return Err(format!(
            "the path {:?} must start with '/' (e.g. /health)",
            options.path
        ));
    }
    let query = options.query.clone().or(query_in_path).unwrap_or_default();
    let method = options
        .method
        .clone()
        .unwrap_or_else(|| {
            if options.data.is_some() {
                "POST"
            } else {
                "GET"
            }
            .into()
        })
        .to_ascii_uppercase();
    let uri = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let mut params = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "wfcgi-request".into()),
        ("REQUEST_METHOD".into(), method),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), path),
        ("QUERY_STRING".into(), query),
        ("REQUEST_URI".into(), uri),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "50000".into()),
        ("REQUEST_SCHEME".into(), "http".into()),
    ];
    let mut has_host = false;
    let mut has_type = false;
    for header in &options.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!(
                "-H {header:?} is not a header: write it as 'Name: value'"
            ));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("-H {header:?}: {name:?} is not a header name"));
        }
        let value = value.trim().to_string();
        let key = name.to_ascii_uppercase().replace('-', "_");
        match key.as_str() {
            "CONTENT_TYPE" => {
                has_type = true;
                params.push(("CONTENT_TYPE".into(), value));
            }
            "CONTENT_LENGTH" => {
                return Err("-H Content-Length: the length is the body's (-d)".into());
            }
            _ => {
                has_host |= key == "HOST";
                params.push((format!("HTTP_{key}"), value));
            }
        }
    }
    if !has_host {
        params.push(("HTTP_HOST".into(), "localhost".into()));
    }
    if options.data.is_some() {
        params.push(("CONTENT_LENGTH".into(), body_len.to_string()));
        if !has_type {
            params.push((
                "CONTENT_TYPE".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
    }
    Ok(params)
}

/// Through the configured app, in this process.
fn in_process(
    flags: &Flags,
    env: &Environment,
    cwd: &Path,
    params: Vec<(String, String)>,
    body: Bytes,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let app_dir =
        settings::app_dir(flags, env, cwd, None).map_err(|e| Failure::Usage(e.to_string()))?;
    let (settings, _) = settings::load(flags, env, &app_dir, cwd).map_err(Failure::Usage)?;
    settings::apply_environment(&settings);
    // The app's log (its tracebacks, print()) goes to stderr; the response to stdout.
    let logging = Logging::init(settings.log_level.as_deref());
    if let Some(path) = &settings.log_file {
        let _ = logging.set_file(path);
    }
    let bridge = wsgi::Bridge::start(settings.bridge.clone())
        .map_err(|e| Failure::NoResponse(format!("the app could not be started: {e}")))?;
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    let captured = bridge.request(fastcgi::Params::from_pairs(pairs), body);
    Ok(captured)
}

/// To a running FastCGI server at `addr`.
fn over_fastcgi(
    addr: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let mut request = BytesMut::new();
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    client::encode_request(&mut request, 1, false, pairs, body);
    let cannot = |e: std::io::Error| Failure::NoResponse(format!("cannot reach {addr}: {e}"));
    let mut stream = connect(addr).map_err(cannot)?;
    stream.write_all(&request).map_err(cannot)?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        while let Some((id, record)) = client::parse_response(&mut buf)
            .map_err(|e| Failure::NoResponse(format!("{addr} broke the FastCGI protocol: {e}")))?
        {
            match record {
                ResponseRecord::Stdout(data) if id == 1 => stdout.extend_from_slice(&data),
                ResponseRecord::Stderr(data) if id == 1 => stderr.extend_from_slice(&data),
                ResponseRecord::End(end) if id == 1 => {
                    if end.protocol_status != fastcgi::ProtocolStatus::RequestComplete {
                        return Err(Failure::NoResponse(format!(
                            "{addr} refused the request: {:?}",
                            end.protocol_status
                        )));
                    }
                    return Ok((stdout, stderr));
                }
                _ => {}
            }
        }
        let n = stream.read(&mut chunk).map_err(|e| {
            Failure::NoResponse(format!("reading the response from {addr} failed: {e}"))
        })?;
        if n == 0 {
            return Err(Failure::NoResponse(format!(
                "{addr} closed the connection before the end of the response"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    #[cfg(unix)]
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok(Box::new(std::os::unix::net::UnixStream::connect(path)?));
    }
    #[cfg(windows)]
    if addr.starts_with(r"\\.\pipe\") {
        // ERROR_PIPE_BUSY: every instance is serving a client, or the server is between
        // connections (it disconnects and connects its end again); wait for it a while.
        const ERROR_PIPE_BUSY: i32 = 231;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(addr)
            {
                Ok(pipe) => return Ok(Box::new(pipe)),
                Err(e)
                    if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Box::new(std::net::TcpStream::connect(addr)?))
}

/// Prints the response like `curl -i`; the exit status says whether it was a 5xx.
fn print(stdout: &[u8], stderr: &[u8]) -> ExitCode {
    if !stderr.is_empty() {
        eprintln!("FCGI_STDERR:\n{}", String::from_utf8_lossy(stderr));
    }
    let response = match CgiResponse::parse(stdout) {
        Ok(Some(response)) => response,
        Ok(None) | Err(_) => {
            eprintln!("wfcgi request: the response has no CGI head:");
            let _ = std::io::stdout().write_all(stdout);
            return ExitCode::from(EXIT_NO_RESPONSE);
        }
    };
    let status_line = response
        .header("Status")
        .map(|s| String::from_utf8_lossy(s).trim().to_string())
        .unwrap_or_else(|| "200 OK".to_string());
    let mut out = format!("HTTP/1.1 {status_line}\r\n").into_bytes();
    for line in response.head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.to_ascii_lowercase().starts_with(b"status:") {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(response.body);
    let mut stdout_handle = std::io::stdout().lock();
    let _ = stdout_handle.write_all(&out);
    let _ = stdout_handle.flush();
    if response.status >= 500 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(path: &str) -> Options {
        Options {
            path: path.into(),
            ..Options::default()
        }
    }

    fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn params_are_what_a_web_server_sends() {
        let mut o = options("/a/b?x=1");
        o.headers = vec![
            "X-Request-Id: abc".into(),
            "Content-Type: text/plain".into(),
        ];
        o.data = Some("hi".into());
        let p = build_params(&o, 2).unwrap();
        assert_eq!(get(&p, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&p, "PATH_INFO"), Some("/a/b"));
        assert_eq!(get(&p, "QUERY_STRING"), Some("x=1"));
        assert_eq!(get(&p, "REQUEST_URI"), Some("/a/b?x=1"));
        assert_eq!(get(&p, "HTTP_X_REQUEST_ID"), Some("abc"));
        assert_eq!(get(&p, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&p, "CONTENT_LENGTH"), Some("2"));
        assert_eq!(get(&p, "HTTP_HOST"), Some("localhost"));
        let mut o = options("/q");
        o.query = Some("y=2".into());
        o.method = Some("delete".into());
        let p = build_params(&o, 0).unwrap();
        assert_eq!(get(&p, "REQUEST_METHOD"), Some("DELETE"));
        assert_eq!(get(&p, "QUERY_STRING"), Some("y=2"));
        assert_eq!(get(&p, "CONTENT_LENGTH"), None);
    }

    #[test]
    fn bad_arguments_say_what_to_write() {
        assert!(build_params(&options("health"), 0)
            .unwrap_err()
            .contains("must start with '/'"));
        let mut o = options("/");
        o.headers = vec!["NoColon".into()];
        assert!(build_params(&o, 0).unwrap_err().contains("'Name: value'"));
    }
}
