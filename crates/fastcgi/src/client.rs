//! The web server's side of FastCGI, sans-IO: encoding a request, decoding the records of its
//! response, and reading the CGI head at the start of FCGI_STDOUT.
//!
//! The server in this crate never uses it. It is for whatever plays the web server: the load
//! generator (`crates/fcgi-bench`), the tests, and `wfcgi request`. Like [`crate::protocol`],
//! nothing here touches a socket: encoders append to a caller's buffer, decoders take bytes off
//! the front of one and say "need more" as `Ok(None)`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    self, BeginRequest, EndRequest, ProtocolError, Record, RecordType, Role, FLAG_KEEP_CONN,
    NULL_REQUEST_ID,
};

/// A CGI head longer than this is refused: servers send a few hundred bytes, and a reader that
/// waits for the blank line must not buffer without end.
pub const MAX_HEAD_LEN: usize = 64 * 1024;

/// BEGIN_REQUEST for a Responder, with FCGI_KEEP_CONN when the connection is to be kept.
pub fn encode_begin(dst: &mut impl BufMut, request_id: u16, keep_conn: bool) {
    BeginRequest {
        role: Role::Responder,
        flags: if keep_conn { FLAG_KEEP_CONN } else { 0 },
    }
    .encode(request_id, dst);
}

/// The PARAMS stream: the pairs in records of at most 65535 bytes, then the empty record.
pub fn encode_params<'a>(
    dst: &mut impl BufMut,
    request_id: u16,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    let mut stream = Vec::new();
    for (name, value) in pairs {
        protocol::encode_pair(&mut stream, name, value);
    }
    protocol::encode_stream(dst, RecordType::Params, request_id, &stream);
    protocol::encode_stream_end(dst, RecordType::Params, request_id);
}

/// Part of the STDIN stream. An empty `data` writes nothing (the end is [`encode_stdin_end`]).
pub fn encode_stdin(dst: &mut impl BufMut, request_id: u16, data: &[u8]) {
    protocol::encode_stream(dst, RecordType::Stdin, request_id, data);
}

/// The empty STDIN record: the request body is complete.
pub fn encode_stdin_end(dst: &mut impl BufMut, request_id: u16) {
    protocol::encode_stream_end(dst, RecordType::Stdin, request_id);
}

/// A whole Responder request as a web server sends it: BEGIN_REQUEST, PARAMS, then the body as
/// STDIN, each stream closed by its empty record.
pub fn encode_request<'a>(
    dst: &mut impl BufMut,
    request_id: u16,
    keep_conn: bool,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) {
    encode_begin(dst, request_id, keep_conn);
    encode_params(dst, request_id, pairs);
    encode_stdin(dst, request_id, body);
    encode_stdin_end(dst, request_id);
}

/// FCGI_ABORT_REQUEST: the web server's client went away (spec 5.4).
pub fn encode_abort(dst: &mut impl BufMut, request_id: u16) {
    protocol::encode_header(dst, RecordType::AbortRequest, request_id, 0);
}

/// One record the application sent, decoded for the web server's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseRecord {
    /// Part of FCGI_STDOUT; empty at the end of the stream.
    Stdout(Bytes),
    /// Part of FCGI_STDERR; empty at the end of the stream.
    Stderr(Bytes),
    /// FCGI_END_REQUEST: the request is over.
    End(EndRequest),
    /// A management record (request id 0): GET_VALUES_RESULT, UNKNOWN_TYPE.
    Management(Record),
}

/// Why a response stream cannot be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A record an application does not send to a web server (BEGIN_REQUEST, STDIN, ...), or a
    /// management record type on a request id.
    #[error("unexpected {record_type:?} record for request {request_id}")]
    Unexpected {
        record_type: RecordType,
        request_id: u16,
    },
}

/// Takes one record off the front of `src` and says what it is, with its request id.
/// `Ok(None)`: not a whole record yet (`src` is left as it was). The content shares `src`'s
/// memory.
pub fn parse_response(src: &mut BytesMut) -> Result<Option<(u16, ResponseRecord)>, ClientError> {
    let Some(record) = Record::parse(src)? else {
        return Ok(None);
    };
    let id = record.request_id;
    let part = match record.record_type {
        RecordType::Stdout => ResponseRecord::Stdout(record.content),
        RecordType::Stderr => ResponseRecord::Stderr(record.content),
        RecordType::EndRequest => ResponseRecord::End(EndRequest::parse(&record.content)?),
        RecordType::GetValuesResult | RecordType::UnknownType if id == NULL_REQUEST_ID => {
            ResponseRecord::Management(record)
        }
        record_type => {
            return Err(ClientError::Unexpected {
                record_type,
                request_id: id,
            })
        }
    };
    Ok(Some((id, part)))
}

/// Why a CGI head (the start of FCGI_STDOUT) cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("CGI head line without a colon: {0:?}")]
    NotAHeader(String),
    #[error("bad CGI Status (not a three-digit code): {0:?}")]
    BadStatus(String),
    #[error("no end of the CGI head in {MAX_HEAD_LEN} bytes")]
    TooLong,
}

/// The end of a CGI head: the index just past its blank line (`\r\n\r\n` or `\n\n`; a head
/// with no header lines is the blank line alone). `None`: the blank line has not come yet.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\n") {
        return Some(1);
    }
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut from = 0;
    while let Some(pos) = buf[from..].iter().position(|&b| b == b'\n') {
        let nl = from + pos;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        from = nl + 1;
    }
    None
}

/// The status of a CGI head (`Status: 404 Not Found`), 200 when it has no Status header
/// (RFC 3875 6.3.3). Every line must be a header (`Name: value`).
pub fn parse_status(head: &[u8]) -> Result<u16, HeadError> {
    let mut status = 200;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| HeadError::NotAHeader(lossy(line)))?;
        if !line[..colon].eq_ignore_ascii_case(b"status") {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let digits = value.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
        let ends_there = value.get(3).is_none_or(|&b| b == b' ');
        match digits {
            Some(d) if ends_there => {
                status = d.iter().fold(0, |n, &b| n * 10 + u16::from(b - b'0'));
            }
            _ => return Err(HeadError::BadStatus(lossy(value))),
        }
    }
    Ok(status)
}

/// The first 80 bytes, for an error message.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

/// Reads the CGI head off FCGI_STDOUT as it arrives, record by record. Only a head split
/// across records is copied; the body never is.
#[derive(Debug, Default)]
pub struct CgiHead {
    /// The part of a head seen so far when it spans records.
    partial: Vec<u8>,
    status: Option<u16>,
}

impl CgiHead {
    pub fn new() -> CgiHead {
        CgiHead::default()
    }

    /// Ready for the next response (keeps the buffer's memory).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.status = None;
    }

    /// The response's status, once the head is complete.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    pub fn is_complete(&self) -> bool {
        self.status.is_some()
    }

    /// Takes the next piece of STDOUT. `Ok(Some(i))`: the head is complete and `data[i..]` is
    /// the start of the body. `Ok(None)`: the head goes on in the next piece. Once complete,
    /// every later piece is body: `Ok(Some(0))`.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<usize>, HeadError> {
        if self.status.is_some() {
            return Ok(Some(0));
        }
        if self.partial.is_empty() {
            if let Some(end) = head_end(data) {
                self.status = Some(parse_status(&data[..end])?);
                return Ok(Some(end));
            }
            if data.len() > MAX_HEAD_LEN {
                return Err(HeadError::TooLong);
            }
            self.partial.extend_from_slice(data);
            return Ok(None);
        }
        // The blank line was not in what came before, so it ends inside `data`.
        let before = self.partial.len();
        self.partial.extend_from_slice(data);
        match head_end(&self.partial) {
            Some(end) => {
                self.status = Some(parse_status(&self.partial[..end])?);
                self.partial.clear();
                Ok(Some(end - before))
            }
            None if self.partial.len() > MAX_HEAD_LEN => Err(HeadError::TooLong),
            None => Ok(None),
        }
    }
}

/// A CGI response held whole (a test's or `wfcgi request`'s view): its status, the head's
/// header lines and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse<'a> {
    pub status: u16,
    /// The head without its blank line.
    pub head: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> CgiResponse<'a> {
    /// Splits a whole FCGI_STDOUT into head and body. `Ok(None)`: there is no blank line.
    pub fn parse(stdout: &'a [u8]) -> Result<Option<CgiResponse<'a>>, HeadError> {
        let Some(end) = head_end(stdout) else {
            return Ok(None);
        };
        let status = parse_status(&stdout[..end])?;
        // Without the blank line, and without the line end of the last header before it.
        let head = strip_line_end(strip_line_end(&stdout[..end]));
        Ok(Some(CgiResponse {
            status,
            head,
            body: &stdout[end..],
        }))
    }

    /// The value of the first header of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.head.split(|&b| b == b'\n').find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| line[colon + 1..].trim_ascii())
        })
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolStatus;

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"Status: 200 OK\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"Status: 200 OK\n\nbody"), Some(16));
        assert_eq!(head_end(b"A: b\r\nC: d\r\n\r\n"), Some(14));
        assert_eq!(head_end(b"\r\n"), Some(2));
        assert_eq!(head_end(b"\nx"), Some(1));
        assert_eq!(head_end(b"\r"), None);
        assert_eq!(head_end(b"A: b\r\n"), None);
        assert_eq!(head_end(b"A: b\r\n\r"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn status_header() {
        assert_eq!(
            parse_status(b"Status: 200 OK\r\nContent-Type: x\r\n\r\n"),
            Ok(200)
        );
        assert_eq!(
            parse_status(b"content-type: x\r\nSTATUS:404 Not Found\r\n\r\n"),
            Ok(404)
        );
        assert_eq!(parse_status(b"Status: 302\r\n\r\n"), Ok(302));
        // No Status header: 200 (CGI).
        assert_eq!(parse_status(b"Content-Type: text/plain\r\n\r\n"), Ok(200));
        assert_eq!(parse_status(b"\r\n"), Ok(200));
        assert!(matches!(
            parse_status(b"Status: OK\r\n\r\n"),
            Err(HeadError::BadStatus(_))
        ));
        assert!(parse_status(b"Status: 2000\r\n\r\n").is_err());
        assert!(matches!(
            parse_status(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(HeadError::NotAHeader(_))
        ));
    }

    /// Feeds `pieces` to a fresh `CgiHead`; returns the status and the body bytes it let through.
    fn feed(pieces: &[&[u8]]) -> Result<(Option<u16>, Vec<u8>), HeadError> {
        let mut head = CgiHead::new();
        let mut body = Vec::new();
        for piece in pieces {
            if let Some(at) = head.push(piece)? {
                body.extend_from_slice(&piece[at..]);
            }
        }
        Ok((head.status(), body))
    }

    #[test]
    fn head_in_pieces() {
        // (STDOUT pieces, the status, the body let through)
        type Case<'a> = (&'a [&'a [u8]], Option<u16>, &'a [u8]);
        let cases: &[Case] = &[
            (&[b"Status: 200 OK\r\n\r\nHello"], Some(200), b"Hello"),
            (
                &[
                    b"Status: 40",
                    b"4 Not Found\r\n",
                    b"\r",
                    b"\nnot ",
                    b"",
                    b"found",
                ],
                Some(404),
                b"not found",
            ),
            (&[b"\r", b"\nbody"], Some(200), b"body"),
            (&[b"A: b\n", b"\n"], Some(200), b""),
            (&[b"A: b\r\n"], None, b""),
            (&[], None, b""),
        ];
        for (pieces, status, body) in cases {
            assert_eq!(feed(pieces), Ok((*status, body.to_vec())), "{pieces:?}");
        }
        let mut whole = CgiHead::new();
        assert_eq!(whole.push(b"Status: 200 OK\r\n\r\nHello"), Ok(Some(18)));
        assert!(
            whole.partial.is_empty(),
            "no copy when the head is in one record"
        );
        assert_eq!(whole.push(b"more"), Ok(Some(0)));
    }

    #[test]
    fn bad_heads() {
        assert!(matches!(
            feed(&[b"garbage\r\n\r\n"]),
            Err(HeadError::NotAHeader(_))
        ));
        let long = vec![b'x'; MAX_HEAD_LEN + 1];
        assert_eq!(feed(&[&long]), Err(HeadError::TooLong));
        assert_eq!(feed(&[b"A: b\r\n", &long]), Err(HeadError::TooLong));
    }

    #[test]
    fn whole_response() {
        let r = CgiResponse::parse(b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nhi")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"hi");
        assert_eq!(r.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(r.header("Location"), None);
        assert_eq!(r.head, b"Status: 201 Created\r\nContent-Type: text/plain");
        assert_eq!(CgiResponse::parse(b"A: b\r\n"), Ok(None));
        let bare = CgiResponse::parse(b"\nbody").unwrap().unwrap();
        assert_eq!(
            (bare.status, bare.head, bare.body),
            (200, &b""[..], &b"body"[..])
        );
    }

    #[test]
    fn request_encoding() {
        let body: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        encode_request(
            &mut wire,
            7,
            false,
            [(&b"SCRIPT_NAME"[..], &b"/x"[..]), (b"QUERY_STRING", b"")],
            &body,
        );
        let mut records = Vec::new();
        while let Some(rec) = Record::parse(&mut wire).unwrap() {
            assert_eq!(rec.request_id, 7);
            records.push(rec);
        }
        assert!(wire.is_empty());
        let kinds: Vec<_> = records
            .iter()
            .map(|r| (r.record_type, r.content.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                (RecordType::BeginRequest, 8),
                (RecordType::Params, 29),
                (RecordType::Params, 0),
                (RecordType::Stdin, 65535),
                (RecordType::Stdin, 70_000 - 65535),
                (RecordType::Stdin, 0),
            ]
        );
        let begin = BeginRequest::parse(&records[0].content).unwrap();
        assert_eq!(begin.role, Role::Responder);
        assert!(!begin.keep_conn());
        let pairs: Vec<_> = protocol::Pairs::new(&records[1].content)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            pairs,
            [(&b"SCRIPT_NAME"[..], &b"/x"[..]), (b"QUERY_STRING", b"")]
        );
        let stdin: Vec<u8> = records[3..]
            .iter()
            .flat_map(|r| r.content.to_vec())
            .collect();
        assert_eq!(stdin, body);

        let mut keep = BytesMut::new();
        encode_begin(&mut keep, 1, true);
        assert!(BeginRequest::parse(&keep[8..]).unwrap().keep_conn());
        let mut abort = BytesMut::new();
        encode_abort(&mut abort, 3);
        assert_eq!(&abort[..], [1, 2, 0, 3, 0, 0, 0, 0]);
    }

    #[test]
    fn response_records() {
        let mut wire = BytesMut::new();
        protocol::encode_stream(
            &mut wire,
            RecordType::Stdout,
            1,
            b"Status: 200 OK\r\n\r\nhi",
        );
        protocol::encode_stream(&mut wire, RecordType::Stderr, 1, b"warn");
        protocol::encode_stream_end(&mut wire, RecordType::Stdout, 1);
        EndRequest {
            app_status: 3,
            protocol_status: ProtocolStatus::RequestComplete,
        }
        .encode(1, &mut wire);
        protocol::UnknownType { record_type: 99 }.encode(&mut wire);
        wire.extend_from_slice(&[1, 6]); // half a header
        let mut got = Vec::new();
        while let Some(part) = parse_response(&mut wire).unwrap() {
            got.push(part);
        }
        assert_eq!(&wire[..], [1, 6], "a partial record is left in place");
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[0],
            (
                1,
                ResponseRecord::Stdout(Bytes::from_static(b"Status: 200 OK\r\n\r\nhi"))
            )
        );
        assert_eq!(
            got[1],
            (1, ResponseRecord::Stderr(Bytes::from_static(b"warn")))
        );
        assert_eq!(got[2], (1, ResponseRecord::Stdout(Bytes::new())));
        assert!(matches!(got[3], (1, ResponseRecord::End(e)) if e.app_status == 3));
        assert!(
            matches!(&got[4], (0, ResponseRecord::Management(r)) if r.record_type == RecordType::UnknownType)
        );

        let mut stdin = BytesMut::new();
        encode_stdin(&mut stdin, 2, b"x");
        assert_eq!(
            parse_response(&mut stdin),
            Err(ClientError::Unexpected {
                record_type: RecordType::Stdin,
                request_id: 2
            })
        );
        let mut bad_version = BytesMut::from(&[2u8, 6, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(
            parse_response(&mut bad_version),
            Err(ClientError::Protocol(ProtocolError::UnsupportedVersion(2)))
        ));
    }
}
