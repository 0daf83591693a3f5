//! One connection's exchanges: the request, built once; the response read record by record with
//! `fastcgi::client`, its CGI status and body checked as they arrive, the body never kept.

use std::io;
#[cfg(unix)]
use std::path::PathBuf;

use bytes::BytesMut;
use fastcgi::client::{self, CgiHead, ResponseRecord};
use fastcgi::{ProtocolStatus, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stats::ErrorKind;

/// The request id every request uses: one request at a time per connection.
pub(crate) const REQUEST_ID: u16 = 1;

/// Where to connect.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Tcp(std::net::SocketAddr),
    #[cfg(unix)]
    Unix(PathBuf),
}

impl Target {
    pub(crate) async fn connect(&self) -> io::Result<Stream> {
        match self {
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            #[cfg(unix)]
            Target::Unix(path) => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?)),
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body_size: usize,
    pub server_port: u16,
    /// `--param NAME=VALUE`: replaces a standard param of that name, or is added.
    pub extra: Vec<(String, String)>,
    pub keep_conn: bool,
}

impl RequestSpec {
    pub(crate) fn uri(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The params a web server sends for this request (nginx's fastcgi_params, WSGI at the
    /// root: SCRIPT_NAME empty, PATH_INFO the path), then the extra ones.
    pub(crate) fn params(&self) -> Vec<(String, String)> {
        let has_body = self.body_size > 0 || self.method != "GET";
        let mut params: Vec<(String, String)> = [
            ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
            (
                "SERVER_SOFTWARE",
                concat!("fcgi-bench/", env!("CARGO_PKG_VERSION")).to_string(),
            ),
            ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
            ("SERVER_NAME", "localhost".to_string()),
            ("SERVER_ADDR", "127.0.0.1".to_string()),
            ("SERVER_PORT", self.server_port.to_string()),
            ("REQUEST_SCHEME", "http".to_string()),
            ("REMOTE_ADDR", "127.0.0.1".to_string()),
            ("REMOTE_PORT", "40000".to_string()),
            ("REQUEST_METHOD", self.method.clone()),
            ("REQUEST_URI", self.uri()),
            ("DOCUMENT_URI", self.path.clone()),
            ("SCRIPT_NAME", String::new()),
            ("PATH_INFO", self.path.clone()),
            ("QUERY_STRING", self.query.clone()),
            (
                "CONTENT_LENGTH",
                if has_body {
                    self.body_size.to_string()
                } else {
                    String::new()
                },
            ),
            (
                "CONTENT_TYPE",
                if has_body {
                    "application/octet-stream".to_string()
                } else {
                    String::new()
                },
            ),
            ("HTTP_HOST", "localhost".to_string()),
            ("HTTP_USER_AGENT", "fcgi-bench".to_string()),
            ("HTTP_ACCEPT", "*/*".to_string()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        for (name, value) in &self.extra {
            match params.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => params.push((name.clone(), value.clone())),
            }
        }
        params
    }

    /// The whole request as it goes on the wire: BEGIN_REQUEST, PARAMS, STDIN (the body is
    /// `body_pattern`), each stream closed by its empty record.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let params = self.params();
        let body = body_pattern(self.body_size);
        let mut out = Vec::with_capacity(body.len() + body.len() / 8192 + 1024);
        let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        client::encode_request(&mut out, REQUEST_ID, self.keep_conn, pairs, &body);
        out
    }
}

/// The request body: byte i is `i % 251` (the test app's pattern, so a reader can recompute it).
pub(crate) fn body_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What to check in each response.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    pub status: u16,
    pub body: Option<Vec<u8>>,
}

/// One response as it arrives: the CGI head read by [`CgiHead`], the body compared with the
/// expected one piece by piece and only counted.
#[derive(Debug, Default)]
pub(crate) struct ResponseState {
    head: CgiHead,
    pub body_len: u64,
    body_matches: bool,
    pub stderr_len: u64,
}

impl ResponseState {
    pub(crate) fn reset(&mut self) {
        self.head.reset();
        self.body_len = 0;
        self.body_matches = true;
        self.stderr_len = 0;
    }

    /// The CGI status, once the head is in (0 before).
    pub(crate) fn status(&self) -> u16 {
        self.head.status().unwrap_or(0)
    }

    /// One STDOUT record's content.
    pub(crate) fn stdout(&mut self, data: &[u8], expect: &Expect) -> Result<(), client::HeadError> {
        if let Some(body_start) = self.head.push(data)? {
            self.body(&data[body_start..], expect);
        }
        Ok(())
    }

    fn body(&mut self, data: &[u8], expect: &Expect) {
        if let (Some(expected), true) = (&expect.body, self.body_matches) {
            let start = self.body_len as usize;
            self.body_matches = expected.get(start..start + data.len()) == Some(data);
        }
        self.body_len += data.len() as u64;
    }

    /// At END_REQUEST: the verdict on the whole response.
    pub(crate) fn finish(&self, expect: &Expect) -> Result<(), ErrorKind> {
        if !self.head.is_complete() {
            return Err(ErrorKind::Protocol);
        }
        if self.status() != expect.status {
            return Err(ErrorKind::Status);
        }
        if let Some(expected) = &expect.body {
            if !self.body_matches || self.body_len != expected.len() as u64 {
                return Err(ErrorKind::Body);
            }
        }
        Ok(())
    }
}

/// How one exchange went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A whole response, as expected.
    Ok,
    /// A whole response that did not pass a check (`Status` or `Body`): the connection can
    /// carry on.
    Mismatch(ErrorKind),
    /// The connection is no longer usable (`Io`, `Protocol`).
    Broken(ErrorKind),
    /// The connection was closed (EOF, reset) before any byte of the response: on a kept
    /// connection, the server closed it after the previous request (uWSGI ignores
    /// FCGI_KEEP_CONN), and a web server would reconnect and send the request again.
    Closed,
}

/// Per-connection buffers, reused across requests.
pub(crate) struct Buffers {
    pub read: BytesMut,
    pub response: ResponseState,
    pub received: u64,
}

impl Buffers {
    pub(crate) fn new() -> Buffers {
        Buffers {
            read: BytesMut::with_capacity(128 * 1024),
            response: ResponseState::default(),
            received: 0,
        }
    }
}

/// Sends `request` and reads records until END_REQUEST.
pub(crate) async fn exchange(
    stream: &mut Stream,
    request: &[u8],
    bufs: &mut Buffers,
    expect: &Expect,
) -> Outcome {
    bufs.read.clear();
    bufs.response.reset();
    bufs.received = 0;
    if stream.write_all(request).await.is_err() {
        return Outcome::Closed;
    }
    loop {
        // Every whole record in the buffer; the content shares the buffer's memory.
        loop {
            let before = bufs.read.len();
            let (id, record) = match client::parse_response(&mut bufs.read) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(_) => return Outcome::Broken(ErrorKind::Protocol),
            };
            bufs.received += (before - bufs.read.len()) as u64;
            if id != REQUEST_ID {
                return Outcome::Broken(ErrorKind::Protocol);
            }
            match record {
                ResponseRecord::Stdout(content) => {
                    if bufs.response.stdout(&content, expect).is_err() {
                        return Outcome::Broken(ErrorKind::Protocol);
                    }
                }
                ResponseRecord::Stderr(content) => bufs.response.stderr_len += content.len() as u64,
                ResponseRecord::End(end) => {
                    let complete = end.protocol_status == ProtocolStatus::RequestComplete;
                    if !complete || !bufs.read.is_empty() {
                        return Outcome::Broken(ErrorKind::Protocol);
                    }
                    return match bufs.response.finish(expect) {
                        Ok(()) => Outcome::Ok,
                        Err(ErrorKind::Protocol) => Outcome::Broken(ErrorKind::Protocol),
                        Err(kind) => Outcome::Mismatch(kind),
                    };
                }
                ResponseRecord::Management(_) => return Outcome::Broken(ErrorKind::Protocol),
            }
        }
        if bufs.read.capacity() - bufs.read.len() < 16 * 1024 {
            bufs.read.reserve(64 * 1024);
        }
        match stream.read_buf(&mut bufs.read).await {
            Ok(0) | Err(_) if bufs.received == 0 && bufs.read.is_empty() => return Outcome::Closed,
            Ok(0) | Err(_) => return Outcome::Broken(ErrorKind::Io),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcgi::protocol::BeginRequest;
    use fastcgi::{RecordType, Role};

    fn expect(status: u16, body: Option<&[u8]>) -> Expect {
        Expect {
            status,
            body: body.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn response_in_one_record() {
        let e = expect(200, Some(b"Hello, World!"));
        let mut r = ResponseState::default();
        r.reset();
        r.stdout(
            b"Status: 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!",
            &e,
        )
        .unwrap();
        assert_eq!(r.finish(&e), Ok(()));
        assert_eq!((r.status(), r.body_len), (200, 13));
    }

    #[test]
    fn head_split_across_records() {
        let e = expect(404, Some(b"not found"));
        let mut r = ResponseState::default();
        r.reset();
        for piece in [
            &b"Status: 40"[..],
            b"4 Not Found\r\n",
            b"\r",
            b"\nnot ",
            b"",
            b"found",
        ] {
            r.stdout(piece, &e).unwrap();
        }
        assert_eq!(r.finish(&e), Ok(()));
        assert_eq!(r.body_len, 9);
    }

    #[test]
    fn verdicts() {
        let e = expect(200, Some(b"abc"));
        let run = |pieces: &[&[u8]]| {
            let mut r = ResponseState::default();
            r.reset();
            for p in pieces {
                r.stdout(p, &e).unwrap();
            }
            r.finish(&e)
        };
        assert_eq!(run(&[b"\r\nabc"]), Ok(()));
        assert_eq!(
            run(&[b"Status: 500 Oops\r\n\r\nabc"]),
            Err(ErrorKind::Status)
        );
        assert_eq!(run(&[b"\r\nab"]), Err(ErrorKind::Body));
        assert_eq!(run(&[b"\r\nab", b"cd"]), Err(ErrorKind::Body));
        assert_eq!(run(&[b"\r\nabd"]), Err(ErrorKind::Body));
        assert_eq!(run(&[b"\r\na", b"b", b"c"]), Ok(()));
        // The head never ended.
        assert_eq!(run(&[b"Status: 200 OK\r\n"]), Err(ErrorKind::Protocol));
        assert_eq!(run(&[]), Err(ErrorKind::Protocol));
        // No body check: any body.
        let any = expect(200, None);
        let mut r = ResponseState::default();
        r.reset();
        r.stdout(b"\n\nwhatever", &any).unwrap();
        assert_eq!(r.finish(&any), Ok(()));
    }

    #[test]
    fn malformed_head_is_a_protocol_error() {
        let e = expect(200, None);
        let mut r = ResponseState::default();
        r.reset();
        assert!(r.stdout(b"garbage\r\n\r\n", &e).is_err());
        r.reset();
        assert!(r.stdout(&vec![b'x'; client::MAX_HEAD_LEN + 1], &e).is_err());
    }

    #[test]
    fn request_encoding() {
        let spec = RequestSpec {
            method: "POST".into(),
            path: "/sha256".into(),
            query: "a=1".into(),
            body_size: 70_000,
            server_port: 9000,
            extra: vec![
                ("SERVER_NAME".into(), "example.org".into()),
                ("APPL_PHYSICAL_PATH".into(), "/srv".into()),
            ],
            keep_conn: false,
        };
        let params = spec.params();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_URI"), Some("/sha256?a=1"));
        assert_eq!(get("PATH_INFO"), Some("/sha256"));
        assert_eq!(get("SCRIPT_NAME"), Some(""));
        assert_eq!(get("CONTENT_LENGTH"), Some("70000"));
        assert_eq!(get("SERVER_NAME"), Some("example.org"));
        assert_eq!(get("APPL_PHYSICAL_PATH"), Some("/srv"));
        assert_eq!(params.iter().filter(|(k, _)| k == "SERVER_NAME").count(), 1);

        // Decode what goes on the wire with the server's own codec.
        let mut wire = BytesMut::from(&spec.encode()[..]);
        let mut types = Vec::new();
        let mut stdin = Vec::new();
        while let Some(rec) = fastcgi::Record::parse(&mut wire).unwrap() {
            assert_eq!(rec.request_id, REQUEST_ID);
            if rec.record_type == RecordType::BeginRequest {
                let begin = BeginRequest::parse(&rec.content).unwrap();
                assert_eq!(begin.role, Role::Responder);
                assert!(!begin.keep_conn());
            }
            if rec.record_type == RecordType::Stdin {
                stdin.extend_from_slice(&rec.content);
            }
            types.push((rec.record_type, rec.content.len()));
        }
        assert!(wire.is_empty());
        assert_eq!(types[0].0, RecordType::BeginRequest);
        assert_eq!(types[1].0, RecordType::Params);
        assert_eq!(types[2], (RecordType::Params, 0));
        assert_eq!(types[3], (RecordType::Stdin, 65535));
        assert_eq!(types[4], (RecordType::Stdin, 70_000 - 65535));
        assert_eq!(types[5], (RecordType::Stdin, 0));
        assert_eq!(stdin, body_pattern(70_000));
        assert_eq!(stdin[251], 0);
        assert_eq!(stdin[250], 250);
    }

    #[test]
    fn get_without_body_has_empty_content_length() {
        let spec = RequestSpec {
            method: "GET".into(),
            path: "/hello".into(),
            query: String::new(),
            body_size: 0,
            server_port: 80,
            extra: Vec::new(),
            keep_conn: true,
        };
        let params = spec.params();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("CONTENT_LENGTH"), Some(""));
        assert_eq!(get("REQUEST_URI"), Some("/hello"));
    }
}
