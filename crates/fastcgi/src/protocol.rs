//! The FastCGI 1.0 record codec, sans-IO: no sockets, no tokio, no allocation it can avoid.
//!
//! Decoding takes bytes from a caller's buffer and answers `Ok(None)` when the buffer does not
//! yet hold a whole record ("need more", never an error). Encoding appends to a caller's
//! [`BufMut`]. Section numbers refer to the FastCGI Specification 1.0 (Open Market, 1996).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `FCGI_VERSION_1` (spec 8): the only version there is.
pub const VERSION_1: u8 = 1;
/// `FCGI_HEADER_LEN` (spec 8): every record starts with this many bytes.
pub const HEADER_LEN: usize = 8;
/// The content length is a 16-bit field (spec 3.3).
pub const MAX_CONTENT_LEN: usize = u16::MAX as usize;
/// `FCGI_NULL_REQUEST_ID` (spec 3.3): management records carry request id 0.
pub const NULL_REQUEST_ID: u16 = 0;
/// `FCGI_KEEP_CONN` (spec 5.1): the only flag of `FCGI_BEGIN_REQUEST`.
pub const FLAG_KEEP_CONN: u8 = 1;

/// Management variable names of `FCGI_GET_VALUES` (spec 4.1).
pub const MAX_CONNS: &[u8] = b"FCGI_MAX_CONNS";
pub const MAX_REQS: &[u8] = b"FCGI_MAX_REQS";
pub const MPXS_CONNS: &[u8] = b"FCGI_MPXS_CONNS";

/// Everything that makes a peer's byte stream unacceptable. Small and `Copy` so that the
/// connection layer can log it and close without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unsupported FastCGI version {0} (only version 1 exists)")]
    UnsupportedVersion(u8),
    #[error("{record_type:?} record with a body of {len} bytes (expected {expected})")]
    BadBodyLength {
        record_type: RecordType,
        len: usize,
        expected: usize,
    },
    #[error("a name-value pair's lengths run past the end of its stream")]
    PairTruncated,
    #[error("{record_type:?} record for request id {id}, which was never begun")]
    UnknownRequest { record_type: RecordType, id: u16 },
    #[error("BEGIN_REQUEST for request id {0}, which is already active")]
    DuplicateBegin(u16),
    #[error("{record_type:?} record with request id 0 (reserved for management records)")]
    NullRequestId { record_type: RecordType },
    #[error("{record_type:?} record sent to the application (it flows the other way)")]
    WrongDirection { record_type: RecordType },
    #[error("{record_type:?} record for request id {id} before its params were complete")]
    ParamsIncomplete { record_type: RecordType, id: u16 },
    #[error("{record_type:?} record for request id {id} after its stream ended")]
    StreamEnded { record_type: RecordType, id: u16 },
}

/// A record's type (spec 8). Types this version does not know are kept as [`RecordType::Other`]
/// so they can be answered with `FCGI_UNKNOWN_TYPE` (spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    Other(u8),
}

impl From<u8> for RecordType {
    fn from(value: u8) -> Self {
        match value {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Other(other),
        }
    }
}

impl From<RecordType> for u8 {
    fn from(value: RecordType) -> Self {
        match value {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(other) => other,
        }
    }
}

/// The fixed 8-byte record header (spec 3.3, `FCGI_Header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub record_type: RecordType,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    /// Reads a header from the first 8 bytes of `src`; `None` if there are fewer.
    /// The version is not checked here: [`Record::parse`] does that.
    pub fn parse(src: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            version: h[0],
            record_type: RecordType::from(h[1]),
            request_id: u16::from_be_bytes([h[2], h[3]]),
            content_length: u16::from_be_bytes([h[4], h[5]]),
            padding_length: h[6],
        })
    }

    /// Header plus content plus padding.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_length as usize + self.padding_length as usize
    }

    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(self.version);
        dst.put_u8(self.record_type.into());
        dst.put_u16(self.request_id);
        dst.put_u16(self.content_length);
        dst.put_u8(self.padding_length);
        dst.put_u8(0); // reserved
    }
}

/// One decoded record. `content` shares the read buffer's memory (no copy); padding is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_type: RecordType,
    pub request_id: u16,
    pub content: Bytes,
}

impl Record {
    /// Takes one whole record off the front of `src`.
    ///
    /// `Ok(None)`: `src` holds less than a record (it is left untouched and, when the header is
    /// in, grown so the next read can fill it). `Err`: the stream is not FastCGI 1.0.
    pub fn parse(src: &mut BytesMut) -> Result<Option<Record>, ProtocolError> {
        let Some(header) = Header::parse(src) else {
            return Ok(None);
        };
        if header.version != VERSION_1 {
            return Err(ProtocolError::UnsupportedVersion(header.version));
        }
        let total = header.record_len();
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut record = src.split_to(total);
        record.advance(HEADER_LEN);
        record.truncate(header.content_length as usize);
        Ok(Some(Record {
            record_type: header.record_type,
            request_id: header.request_id,
            content: record.freeze(),
        }))
    }
}

/// The role a request asks the application to play (spec 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Responder,
    Authorizer,
    Filter,
    Other(u16),
}

impl From<u16> for Role {
    fn from(value: u16) -> Self {
        match value {
            1 => Role::Responder,
            2 => Role::Authorizer,
            3 => Role::Filter,
            other => Role::Other(other),
        }
    }
}

impl From<Role> for u16 {
    fn from(value: Role) -> Self {
        match value {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 3,
            Role::Other(other) => other,
        }
    }
}

/// `FCGI_BeginRequestBody` (spec 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequest {
    pub role: Role,
    pub flags: u8,
}

impl BeginRequest {
    pub const LEN: usize = 8;

    pub fn parse(content: &[u8]) -> Result<BeginRequest, ProtocolError> {
        match content {
            [r0, r1, flags, _, _, _, _, _] => Ok(BeginRequest {
                role: Role::from(u16::from_be_bytes([*r0, *r1])),
                flags: *flags,
            }),
            _ => Err(ProtocolError::BadBodyLength {
                record_type: RecordType::BeginRequest,
                len: content.len(),
                expected: Self::LEN,
            }),
        }
    }

    pub fn keep_conn(&self) -> bool {
        self.flags & FLAG_KEEP_CONN != 0
    }

    /// Encodes the whole record (header and body), as a web server would send it.
    pub fn encode(&self, request_id: u16, dst: &mut impl BufMut) {
        encode_header(dst, RecordType::BeginRequest, request_id, Self::LEN);
        dst.put_u16(self.role.into());
        dst.put_u8(self.flags);
        dst.put_bytes(0, 5);
    }
}

/// `protocolStatus` of `FCGI_END_REQUEST` (spec 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    RequestComplete,
    CantMpxConn,
    Overloaded,
    UnknownRole,
    Other(u8),
}

impl From<u8> for ProtocolStatus {
    fn from(value: u8) -> Self {
        match value {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            other => ProtocolStatus::Other(other),
        }
    }
}

impl From<ProtocolStatus> for u8 {
    fn from(value: ProtocolStatus) -> Self {
        match value {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(other) => other,
        }
    }
}

/// `FCGI_EndRequestBody` (spec 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequest {
    pub app_status: u32,
    pub protocol_status: ProtocolStatus,
}

impl EndRequest {
    pub const LEN: usize = 8;

    pub fn parse(content: &[u8]) -> Result<EndRequest, ProtocolError> {
        match content {
            [a0, a1, a2, a3, status, _, _, _] => Ok(EndRequest {
                app_status: u32::from_be_bytes([*a0, *a1, *a2, *a3]),
                protocol_status: ProtocolStatus::from(*status),
            }),
            _ => Err(ProtocolError::BadBodyLength {
                record_type: RecordType::EndRequest,
                len: content.len(),
                expected: Self::LEN,
            }),
        }
    }

    /// Encodes the whole record (header and body).
    pub fn encode(&self, request_id: u16, dst: &mut impl BufMut) {
        encode_header(dst, RecordType::EndRequest, request_id, Self::LEN);
        dst.put_u32(self.app_status);
        dst.put_u8(self.protocol_status.into());
        dst.put_bytes(0, 3);
    }
}

/// `FCGI_UnknownTypeBody` (spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownType {
    pub record_type: u8,
}

impl UnknownType {
    pub const LEN: usize = 8;

    pub fn parse(content: &[u8]) -> Result<UnknownType, ProtocolError> {
        match content {
            [t, _, _, _, _, _, _, _] => Ok(UnknownType { record_type: *t }),
            _ => Err(ProtocolError::BadBodyLength {
                record_type: RecordType::UnknownType,
                len: content.len(),
                expected: Self::LEN,
            }),
        }
    }

    /// Encodes the whole record (header and body) with the null request id.
    pub fn encode(&self, dst: &mut impl BufMut) {
        encode_header(dst, RecordType::UnknownType, NULL_REQUEST_ID, Self::LEN);
        dst.put_u8(self.record_type);
        dst.put_bytes(0, 7);
    }
}

/// Writes a record header with no padding. Padding is optional (spec 3.3: "recommended"); the
/// application side gains nothing from it.
pub fn encode_header(dst: &mut impl BufMut, record_type: RecordType, request_id: u16, len: usize) {
    debug_assert!(len <= MAX_CONTENT_LEN);
    Header {
        version: VERSION_1,
        record_type,
        request_id,
        content_length: len as u16,
        padding_length: 0,
    }
    .encode(dst);
}

/// Writes `data` as a stream (STDOUT, STDERR, PARAMS, STDIN, DATA) in records of at most
/// [`MAX_CONTENT_LEN`] bytes. An empty `data` writes nothing: the empty record that ends a
/// stream is [`encode_stream_end`].
pub fn encode_stream(dst: &mut impl BufMut, record_type: RecordType, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        encode_header(dst, record_type, request_id, chunk.len());
        dst.put_slice(chunk);
    }
}

/// The empty record that ends a stream (spec 3.3).
pub fn encode_stream_end(dst: &mut impl BufMut, record_type: RecordType, request_id: u16) {
    encode_header(dst, record_type, request_id, 0);
}

/// Splits a name-value pair stream (spec 3.4) without copying: each item borrows `src`.
/// A pair whose lengths run past the end yields [`ProtocolError::PairTruncated`] once.
pub struct Pairs<'a> {
    src: &'a [u8],
    offset: usize,
}

/// Where one pair sits inside its stream: offsets and lengths of name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSpan {
    pub name_start: u32,
    pub name_len: u32,
    pub value_start: u32,
    pub value_len: u32,
}

impl<'a> Pairs<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        Pairs { src, offset: 0 }
    }

    /// The next pair's position, for callers that keep an index rather than slices.
    pub fn next_span(&mut self) -> Option<Result<PairSpan, ProtocolError>> {
        if self.offset >= self.src.len() {
            return None;
        }
        let result = parse_pair_at(self.src, self.offset);
        match result {
            Ok((span, end)) => {
                self.offset = end;
                Some(Ok(span))
            }
            Err(e) => {
                self.offset = self.src.len();
                Some(Err(e))
            }
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let src = self.src;
        self.next_span().map(|r| {
            r.map(|s| {
                (
                    &src[s.name_start as usize..(s.name_start + s.name_len) as usize],
                    &src[s.value_start as usize..(s.value_start + s.value_len) as usize],
                )
            })
        })
    }
}

/// One length (spec 3.4): one byte if its high bit is clear, else four with that bit masked.
fn parse_len(src: &[u8], at: usize) -> Result<(usize, usize), ProtocolError> {
    let first = *src.get(at).ok_or(ProtocolError::PairTruncated)?;
    if first & 0x80 == 0 {
        return Ok((first as usize, at + 1));
    }
    let b = src.get(at..at + 4).ok_or(ProtocolError::PairTruncated)?;
    let len = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
    Ok((len, at + 4))
}

fn parse_pair_at(src: &[u8], at: usize) -> Result<(PairSpan, usize), ProtocolError> {
    let (name_len, at) = parse_len(src, at)?;
    let (value_len, at) = parse_len(src, at)?;
    let value_start = at
        .checked_add(name_len)
        .ok_or(ProtocolError::PairTruncated)?;
    let end = value_start
        .checked_add(value_len)
        .ok_or(ProtocolError::PairTruncated)?;
    if end > src.len() || end > u32::MAX as usize {
        return Err(ProtocolError::PairTruncated);
    }
    let span = PairSpan {
        name_start: at as u32,
        name_len: name_len as u32,
        value_start: value_start as u32,
        value_len: value_len as u32,
    };
    Ok((span, end))
}

fn encode_len(dst: &mut impl BufMut, len: usize) {
    if len < 0x80 {
        dst.put_u8(len as u8);
    } else {
        dst.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends one name-value pair (spec 3.4), choosing 1- or 4-byte lengths.
pub fn encode_pair(dst: &mut impl BufMut, name: &[u8], value: &[u8]) {
    encode_len(dst, name.len());
    encode_len(dst, value.len());
    dst.put_slice(name);
    dst.put_slice(value);
}

/// The bytes [`encode_pair`] writes for this pair.
pub fn pair_len(name: &[u8], value: &[u8]) -> usize {
    let len = |n: usize| if n < 0x80 { 1 } else { 4 };
    len(name.len()) + len(value.len()) + name.len() + value.len()
}

/// A whole `FCGI_GET_VALUES_RESULT` record (spec 4.1) answering `values`.
pub fn encode_get_values_result(dst: &mut impl BufMut, values: &[(&[u8], &[u8])]) {
    let len: usize = values.iter().map(|(n, v)| pair_len(n, v)).sum();
    encode_header(dst, RecordType::GetValuesResult, NULL_REQUEST_ID, len);
    for (name, value) in values {
        encode_pair(dst, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Vec<Record>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(r) = Record::parse(&mut buf)? {
            out.push(r);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    #[test]
    fn record_types_round_trip_through_u8() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(RecordType::from(v)), v);
        }
        let known = [
            (1, RecordType::BeginRequest),
            (2, RecordType::AbortRequest),
            (3, RecordType::EndRequest),
            (4, RecordType::Params),
            (5, RecordType::Stdin),
            (6, RecordType::Stdout),
            (7, RecordType::Stderr),
            (8, RecordType::Data),
            (9, RecordType::GetValues),
            (10, RecordType::GetValuesResult),
            (11, RecordType::UnknownType),
            (0, RecordType::Other(0)),
            (12, RecordType::Other(12)),
        ];
        for (byte, ty) in known {
            assert_eq!(RecordType::from(byte), ty);
        }
    }

    #[test]
    fn decodes_every_record_type_from_bytes() {
        // (bytes, type, id, content)
        let cases: &[(&[u8], RecordType, u16, &[u8])] = &[
            (
                b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00",
                RecordType::BeginRequest,
                1,
                b"\x00\x01\x01\x00\x00\x00\x00\x00",
            ),
            (
                b"\x01\x02\x00\x02\x00\x00\x00\x00",
                RecordType::AbortRequest,
                2,
                b"",
            ),
            (
                b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x07\x00\x00\x00\x00",
                RecordType::EndRequest,
                1,
                b"\x00\x00\x00\x07\x00\x00\x00\x00",
            ),
            (
                b"\x01\x04\x00\x01\x00\x03\x00\x00\x01\x00a",
                RecordType::Params,
                1,
                b"\x01\x00a",
            ),
            (
                b"\x01\x05\x01\x00\x00\x02\x00\x00hi",
                RecordType::Stdin,
                256,
                b"hi",
            ),
            (
                b"\x01\x06\x00\x01\x00\x02\x00\x00ok",
                RecordType::Stdout,
                1,
                b"ok",
            ),
            (
                b"\x01\x07\x00\x01\x00\x01\x00\x00!",
                RecordType::Stderr,
                1,
                b"!",
            ),
            (
                b"\x01\x08\x00\x01\x00\x01\x00\x00d",
                RecordType::Data,
                1,
                b"d",
            ),
            (
                b"\x01\x09\x00\x00\x00\x00\x00\x00",
                RecordType::GetValues,
                0,
                b"",
            ),
            (
                b"\x01\x0a\x00\x00\x00\x03\x00\x00\x01\x00x",
                RecordType::GetValuesResult,
                0,
                b"\x01\x00x",
            ),
            (
                b"\x01\x0b\x00\x00\x00\x08\x00\x00\x63\x00\x00\x00\x00\x00\x00\x00",
                RecordType::UnknownType,
                0,
                b"\x63\x00\x00\x00\x00\x00\x00\x00",
            ),
            (
                b"\x01\x63\xff\xff\x00\x00\x00\x00",
                RecordType::Other(0x63),
                0xffff,
                b"",
            ),
        ];
        for (bytes, ty, id, content) in cases {
            let records = parse_all(bytes).unwrap();
            assert_eq!(records.len(), 1, "{bytes:?}");
            assert_eq!(records[0].record_type, *ty);
            assert_eq!(records[0].request_id, *id);
            assert_eq!(&records[0].content[..], *content);
        }
    }

    #[test]
    fn padding_is_skipped() {
        // 5 bytes of content, 3 of padding, then a second record.
        let bytes =
            b"\x01\x06\x00\x01\x00\x05\x03\x00hello\xaa\xbb\xcc\x01\x06\x00\x01\x00\x00\x00\x00";
        let records = parse_all(bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[0].content[..], b"hello");
        assert!(records[1].content.is_empty());
    }

    #[test]
    fn incomplete_input_means_need_more_at_every_cut() {
        let bytes: &[u8] = b"\x01\x05\x00\x01\x00\x05\x03\x00hello\x00\x00\x00";
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(Record::parse(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "need-more must not consume");
        }
        let mut buf = BytesMut::from(bytes);
        assert!(Record::parse(&mut buf).unwrap().is_some());
    }

    #[test]
    fn maximum_content_length_decodes() {
        let mut buf = BytesMut::new();
        let data = vec![7u8; MAX_CONTENT_LEN];
        encode_stream(&mut buf, RecordType::Stdin, 1, &data);
        assert_eq!(buf.len(), HEADER_LEN + MAX_CONTENT_LEN);
        let r = Record::parse(&mut buf).unwrap().unwrap();
        assert_eq!(r.content.len(), MAX_CONTENT_LEN);
    }

    #[test]
    fn bad_version_is_an_error() {
        for v in [0u8, 2, 255] {
            let mut buf = BytesMut::from(&[v, 1, 0, 1, 0, 0, 0, 0][..]);
            assert_eq!(
                Record::parse(&mut buf),
                Err(ProtocolError::UnsupportedVersion(v))
            );
        }
    }

    #[test]
    fn begin_request_body() {
        let b = BeginRequest::parse(b"\x00\x01\x01\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(b.role, Role::Responder);
        assert!(b.keep_conn());
        let b = BeginRequest::parse(b"\x00\x03\x00\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(b.role, Role::Filter);
        assert!(!b.keep_conn());
        let b = BeginRequest::parse(b"\x01\x00\x00\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(b.role, Role::Other(256));
        assert!(matches!(
            BeginRequest::parse(b"\x00\x01"),
            Err(ProtocolError::BadBodyLength { len: 2, .. })
        ));
        let mut out = BytesMut::new();
        BeginRequest {
            role: Role::Authorizer,
            flags: 1,
        }
        .encode(9, &mut out);
        assert_eq!(
            &out[..],
            b"\x01\x01\x00\x09\x00\x08\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00"
        );
    }

    #[test]
    fn end_request_body() {
        let cases: &[(EndRequest, &[u8])] = &[
            (
                EndRequest {
                    app_status: 0,
                    protocol_status: ProtocolStatus::RequestComplete,
                },
                b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            ),
            (
                EndRequest {
                    app_status: 0x01020304,
                    protocol_status: ProtocolStatus::CantMpxConn,
                },
                b"\x01\x03\x00\x01\x00\x08\x00\x00\x01\x02\x03\x04\x01\x00\x00\x00",
            ),
            (
                EndRequest {
                    app_status: 0,
                    protocol_status: ProtocolStatus::Overloaded,
                },
                b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00",
            ),
            (
                EndRequest {
                    app_status: 0,
                    protocol_status: ProtocolStatus::UnknownRole,
                },
                b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00",
            ),
        ];
        for (end, bytes) in cases {
            let mut out = BytesMut::new();
            end.encode(1, &mut out);
            assert_eq!(&out[..], *bytes);
            let r = Record::parse(&mut out).unwrap().unwrap();
            assert_eq!(EndRequest::parse(&r.content).unwrap(), *end);
        }
    }

    #[test]
    fn unknown_type_body() {
        let mut out = BytesMut::new();
        UnknownType { record_type: 42 }.encode(&mut out);
        assert_eq!(
            &out[..],
            b"\x01\x0b\x00\x00\x00\x08\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00"
        );
        let r = Record::parse(&mut out).unwrap().unwrap();
        assert_eq!(UnknownType::parse(&r.content).unwrap().record_type, 42);
        assert!(UnknownType::parse(b"").is_err());
    }

    #[test]
    fn pairs_decode_from_bytes() {
        type Case<'a> = (&'a [u8], Result<Vec<(&'a [u8], &'a [u8])>, ProtocolError>);
        let long_value = [b'v'; 200];
        let mut long = vec![0x04, 0x80, 0x00, 0x00, 0xc8];
        long.extend_from_slice(b"LONG");
        long.extend_from_slice(&long_value);
        let mut long_name = vec![0x80, 0x00, 0x01, 0x00, 0x00];
        long_name.extend_from_slice(&[b'n'; 256]);
        let cases: Vec<Case> = vec![
            (b"", Ok(vec![])),
            (b"\x01\x01ab", Ok(vec![(b"a", b"b")])),
            (
                b"\x01\x00a\x02\x03bcdef",
                Ok(vec![(b"a", b""), (b"bc", b"def")]),
            ),
            (&long, Ok(vec![(b"LONG", &long_value)])),
            (&long_name, Ok(vec![(&[b'n'; 256], b"")])),
            // Lengths run past the end of the stream.
            (b"\x05\x00ab", Err(ProtocolError::PairTruncated)),
            (b"\x01", Err(ProtocolError::PairTruncated)),
            (b"\x80\x00\x00", Err(ProtocolError::PairTruncated)),
            (b"\x01\x01a", Err(ProtocolError::PairTruncated)),
            (
                b"\xff\xff\xff\xff\xff\xff\xff\xff",
                Err(ProtocolError::PairTruncated),
            ),
        ];
        for (bytes, expected) in cases {
            let got: Result<Vec<_>, _> = Pairs::new(bytes).collect();
            assert_eq!(got, expected, "{bytes:?}");
        }
    }

    #[test]
    fn pairs_round_trip_with_both_length_forms() {
        let names: [&[u8]; 4] = [b"A", &[b'n'; 127], &[b'n'; 128], b"QUERY_STRING"];
        let values: [&[u8]; 4] = [b"", &[b'v'; 127], &[b'v'; 128], &[b'q'; 70000]];
        let mut buf = BytesMut::new();
        for (n, v) in names.iter().zip(values) {
            encode_pair(&mut buf, n, v);
        }
        let expected: usize = names.iter().zip(values).map(|(n, v)| pair_len(n, v)).sum();
        assert_eq!(buf.len(), expected);
        let got: Vec<_> = Pairs::new(&buf).map(Result::unwrap).collect();
        assert_eq!(got, names.iter().copied().zip(values).collect::<Vec<_>>());
    }

    #[test]
    fn stream_encoding_splits_at_the_content_limit() {
        let mut buf = BytesMut::new();
        encode_stream(
            &mut buf,
            RecordType::Stdout,
            3,
            &vec![1u8; MAX_CONTENT_LEN * 2 + 5],
        );
        encode_stream(&mut buf, RecordType::Stdout, 3, b"");
        encode_stream_end(&mut buf, RecordType::Stdout, 3);
        let records = parse_all(&buf).unwrap();
        let lens: Vec<_> = records.iter().map(|r| r.content.len()).collect();
        assert_eq!(lens, [MAX_CONTENT_LEN, MAX_CONTENT_LEN, 5, 0]);
        assert!(records
            .iter()
            .all(|r| r.request_id == 3 && r.record_type == RecordType::Stdout));
    }

    #[test]
    fn get_values_result_encoding() {
        let mut buf = BytesMut::new();
        encode_get_values_result(&mut buf, &[(MPXS_CONNS, b"1")]);
        assert_eq!(
            &buf[..],
            b"\x01\x0a\x00\x00\x00\x12\x00\x00\x0f\x01FCGI_MPXS_CONNS1"
        );
    }
}
