//! The connection state machine, without IO.
//!
//! [`Connection::handle_record`] takes one decoded record and yields at most one [`Event`] for
//! the application side, writing any protocol-level reply (`FCGI_GET_VALUES_RESULT`,
//! `FCGI_UNKNOWN_TYPE`, a refusing `FCGI_END_REQUEST`) into the caller's output buffer.
//! [`Connection::end_request`] is how the application side ends a request. An `Err` from
//! `handle_record` is a protocol violation: the driver closes this connection, and only it.
//!
//! Time is an input (`now`), so the machine is deterministic under test.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::params::Params;
use crate::protocol::{
    self, BeginRequest, EndRequest, ProtocolError, ProtocolStatus, Record, RecordType, Role,
    UnknownType,
};

/// The limits one connection enforces; the server fills them from `ServerConfig`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Requests begun and not yet ended on this connection. One more is refused with
    /// `FCGI_OVERLOADED` (`FCGI_CANT_MPX_CONN` when this is 1).
    pub max_requests: usize,
    /// Bytes of `FCGI_PARAMS` one request may send; more is refused with `FCGI_OVERLOADED`.
    pub max_params_bytes: usize,
    /// Answered as `FCGI_MAX_CONNS` to `FCGI_GET_VALUES`.
    pub advertised_max_conns: usize,
    /// Answered as `FCGI_MAX_REQS` to `FCGI_GET_VALUES`.
    pub advertised_max_reqs: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_requests: 64,
            max_params_bytes: 256 * 1024,
            advertised_max_conns: 1024,
            advertised_max_reqs: 1024,
        }
    }
}

/// What a request becomes when its params are complete.
#[derive(Debug)]
pub struct RequestHead {
    pub id: u16,
    pub role: Role,
    pub keep_conn: bool,
    pub params: Params,
}

/// Why a request was answered with END_REQUEST before the application saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownRole(Role),
    TooManyRequests,
    ParamsTooLarge,
}

#[derive(Debug)]
pub enum Event {
    /// The params are complete: hand the request to the application.
    Request(RequestHead),
    /// A piece of the request body (never empty).
    Stdin { id: u16, data: Bytes },
    /// The request body is complete.
    StdinEnd { id: u16 },
    /// The web server aborted a request the application has (spec 5.4). The application should
    /// stop and end it; the END_REQUEST comes from [`Connection::end_request`].
    Abort { id: u16 },
    /// A request was refused and END_REQUEST already written; for the driver's log, and so that
    /// a refused request without `FCGI_KEEP_CONN` still closes the connection (spec 5.1).
    Refused {
        id: u16,
        reason: Refusal,
        keep_conn: bool,
    },
}

#[derive(Debug)]
enum Slot {
    /// BEGIN seen, params arriving. One record's content is kept as is; a second one starts a
    /// copy (nginx and IIS send all params in one record).
    Params {
        role: Role,
        keep_conn: bool,
        first: Option<Bytes>,
        rest: BytesMut,
        begun: Instant,
    },
    /// Handed to the application.
    Active {
        keep_conn: bool,
        stdin_done: bool,
        aborted: bool,
        stderr_used: bool,
    },
    /// Ended (by the application or a refusal) while the web server may still be sending its
    /// body: swallow the rest of STDIN so that it is not mistaken for a violation.
    Discarding,
}

impl Slot {
    fn params_len(&self) -> usize {
        match self {
            Slot::Params { first, rest, .. } => first.as_ref().map_or(0, Bytes::len) + rest.len(),
            _ => 0,
        }
    }
}

/// Per-connection protocol state.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    /// Few at a time (nginx and IIS use one), so a vector beats a map.
    slots: Vec<(u16, Slot)>,
}

/// What ending a request means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOutcome {
    /// `FCGI_KEEP_CONN` was unset: close once the output is flushed (spec 5.1).
    pub close_connection: bool,
}

impl Connection {
    pub fn new(config: ConnectionConfig) -> Self {
        Connection {
            config,
            slots: Vec::new(),
        }
    }

    fn slot_index(&self, id: u16) -> Option<usize> {
        self.slots.iter().position(|(i, _)| *i == id)
    }

    /// Requests begun and not yet ended (params arriving or with the application).
    pub fn open_requests(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, s)| !matches!(s, Slot::Discarding))
            .count()
    }

    /// Whether a request that has ended is still owed the rest of its body by the web server.
    /// Closing the connection then would leave unread data and turn the close into a reset,
    /// which can destroy the reply just sent.
    pub fn is_discarding(&self) -> bool {
        self.slots
            .iter()
            .any(|(_, s)| matches!(s, Slot::Discarding))
    }

    /// Restarts the params clock of every request still waiting for its params: the driver
    /// calls it when it resumes reading after holding the socket back itself, so that its own
    /// pause is not charged to the web server.
    pub fn restart_params_clock(&mut self, now: Instant) {
        for (_, slot) in &mut self.slots {
            if let Slot::Params { begun, .. } = slot {
                *begun = (*begun).max(now);
            }
        }
    }

    /// The moment by which the oldest request still waiting for its params must have them.
    pub fn params_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|(_, s)| match s {
                Slot::Params { begun, .. } => Some(*begun + timeout),
                _ => None,
            })
            .min()
    }

    /// Feeds one record. Replies, if any, are appended to `out`.
    pub fn handle_record(
        &mut self,
        record: Record,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let id = record.request_id;
        let ty = record.record_type;
        match ty {
            RecordType::GetValues => {
                self.answer_get_values(&record.content, out)?;
                Ok(None)
            }
            RecordType::Other(t) => {
                // Spec 4.2: an unknown management (or any unknown) type gets UNKNOWN_TYPE and the
                // connection goes on.
                UnknownType { record_type: t }.encode(out);
                Ok(None)
            }
            RecordType::Stdout
            | RecordType::Stderr
            | RecordType::EndRequest
            | RecordType::GetValuesResult
            | RecordType::UnknownType => Err(ProtocolError::WrongDirection { record_type: ty }),
            _ if id == protocol::NULL_REQUEST_ID => {
                Err(ProtocolError::NullRequestId { record_type: ty })
            }
            RecordType::BeginRequest => self.handle_begin(id, &record.content, now, out),
            RecordType::Params => self.handle_params(id, record.content, out),
            RecordType::Stdin => self.handle_stdin(id, record.content),
            RecordType::Data => self.handle_data(id),
            RecordType::AbortRequest => Ok(self.handle_abort(id, out)),
        }
    }

    fn handle_begin(
        &mut self,
        id: u16,
        content: &[u8],
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let begin = BeginRequest::parse(content)?;
        let existing = self.slot_index(id);
        match existing.map(|i| &self.slots[i].1) {
            Some(Slot::Discarding) | None => {}
            Some(_) => return Err(ProtocolError::DuplicateBegin(id)),
        }
        if let Some(i) = existing {
            // The web server reuses an id we ended; whatever it still owed us is moot.
            self.slots.swap_remove(i);
        }
        let refusal = if begin.role != Role::Responder {
            Some((
                Refusal::UnknownRole(begin.role),
                ProtocolStatus::UnknownRole,
            ))
        } else if self.open_requests() >= self.config.max_requests {
            let status = if self.config.max_requests == 1 {
                ProtocolStatus::CantMpxConn
            } else {
                ProtocolStatus::Overloaded
            };
            Some((Refusal::TooManyRequests, status))
        } else {
            None
        };
        if let Some((reason, protocol_status)) = refusal {
            end_record(out, id, 0, protocol_status);
            self.slots.push((id, Slot::Discarding));
            return Ok(Some(Event::Refused {
                id,
                reason,
                keep_conn: begin.keep_conn(),
            }));
        }
        self.slots.push((
            id,
            Slot::Params {
                role: begin.role,
                keep_conn: begin.keep_conn(),
                first: None,
                rest: BytesMut::new(),
                begun: now,
            },
        ));
        Ok(None)
    }

    fn handle_params(
        &mut self,
        id: u16,
        content: Bytes,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let unknown = ProtocolError::UnknownRequest {
            record_type: RecordType::Params,
            id,
        };
        let i = self.slot_index(id).ok_or(unknown)?;
        let slot = &mut self.slots[i].1;
        let len = slot.params_len();
        match slot {
            Slot::Discarding => Ok(None),
            Slot::Active { .. } => Err(ProtocolError::StreamEnded {
                record_type: RecordType::Params,
                id,
            }),
            Slot::Params { keep_conn, .. }
                if len + content.len() > self.config.max_params_bytes =>
            {
                let keep_conn = *keep_conn;
                end_record(out, id, 0, ProtocolStatus::Overloaded);
                *slot = Slot::Discarding;
                Ok(Some(Event::Refused {
                    id,
                    reason: Refusal::ParamsTooLarge,
                    keep_conn,
                }))
            }
            Slot::Params {
                role,
                keep_conn,
                first,
                rest,
                ..
            } => {
                if !content.is_empty() {
                    match first {
                        None if rest.is_empty() => *first = Some(content),
                        _ => {
                            if let Some(f) = first.take() {
                                rest.extend_from_slice(&f);
                            }
                            rest.extend_from_slice(&content);
                        }
                    }
                    return Ok(None);
                }
                // The empty record ends the stream: pairs cut across records are whole now.
                let stream = match first.take() {
                    Some(f) => f,
                    None => std::mem::take(rest).freeze(),
                };
                let head = RequestHead {
                    id,
                    role: *role,
                    keep_conn: *keep_conn,
                    params: Params::parse(stream)?,
                };
                *slot = Slot::Active {
                    keep_conn: head.keep_conn,
                    stdin_done: false,
                    aborted: false,
                    stderr_used: false,
                };
                Ok(Some(Event::Request(head)))
            }
        }
    }

    fn handle_stdin(&mut self, id: u16, content: Bytes) -> Result<Option<Event>, ProtocolError> {
        let record_type = RecordType::Stdin;
        let i = self
            .slot_index(id)
            .ok_or(ProtocolError::UnknownRequest { record_type, id })?;
        match &mut self.slots[i].1 {
            Slot::Discarding => {
                if content.is_empty() {
                    self.slots.swap_remove(i);
                }
                Ok(None)
            }
            Slot::Params { .. } => Err(ProtocolError::ParamsIncomplete { record_type, id }),
            Slot::Active {
                stdin_done: true, ..
            } => Err(ProtocolError::StreamEnded { record_type, id }),
            Slot::Active { stdin_done, .. } => {
                if content.is_empty() {
                    *stdin_done = true;
                    Ok(Some(Event::StdinEnd { id }))
                } else {
                    Ok(Some(Event::Stdin { id, data: content }))
                }
            }
        }
    }

    fn handle_data(&mut self, id: u16) -> Result<Option<Event>, ProtocolError> {
        // FCGI_DATA belongs to the Filter role, which is refused; a responder's DATA is
        // accepted and dropped rather than treated as a violation.
        match self.slot_index(id) {
            Some(_) => Ok(None),
            None => Err(ProtocolError::UnknownRequest {
                record_type: RecordType::Data,
                id,
            }),
        }
    }

    fn handle_abort(&mut self, id: u16, out: &mut BytesMut) -> Option<Event> {
        // An abort may cross our END_REQUEST on the wire: an unknown id is not a violation.
        let i = self.slot_index(id)?;
        match &mut self.slots[i].1 {
            Slot::Params { .. } => {
                // The application never saw it: answer for it.
                end_record(out, id, 0, ProtocolStatus::RequestComplete);
                self.slots.swap_remove(i);
                None
            }
            Slot::Active { aborted: true, .. } | Slot::Discarding => None,
            Slot::Active {
                aborted,
                stdin_done,
                ..
            } => {
                *aborted = true;
                // No more body is coming for an aborted request.
                *stdin_done = true;
                Some(Event::Abort { id })
            }
        }
    }

    fn answer_get_values(&self, content: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        let conns = self.config.advertised_max_conns.to_string();
        let reqs = self.config.advertised_max_reqs.to_string();
        let mut answers: Vec<(&[u8], &[u8])> = Vec::with_capacity(3);
        for pair in protocol::Pairs::new(content) {
            let (name, _) = pair?;
            let value: &[u8] = match name {
                protocol::MAX_CONNS => conns.as_bytes(),
                protocol::MAX_REQS => reqs.as_bytes(),
                protocol::MPXS_CONNS => b"1",
                // Spec 4.1: names the application does not know are left out of the reply.
                _ => continue,
            };
            // Each name is answered once: a query repeating a name thousands of times must not
            // grow the reply past one record's 65535 bytes (found by reading the fuzz target).
            if !answers.iter().any(|(n, _)| *n == name) {
                answers.push((name, value));
            }
        }
        protocol::encode_get_values_result(out, &answers);
        Ok(())
    }

    /// Notes that the application wrote to STDERR, so that its stream is closed at the end.
    pub fn note_stderr(&mut self, id: u16) {
        if let Some(i) = self.slot_index(id) {
            if let Slot::Active { stderr_used, .. } = &mut self.slots[i].1 {
                *stderr_used = true;
            }
        }
    }

    /// Whether the application still owns this request (it may write to it).
    pub fn is_active(&self, id: u16) -> bool {
        matches!(
            self.slot_index(id).map(|i| &self.slots[i].1),
            Some(Slot::Active { .. })
        )
    }

    /// Ends an active request: the empty STDOUT (and STDERR, if used) records that close its
    /// streams, then END_REQUEST. `None` if `id` is not active.
    pub fn end_request(
        &mut self,
        id: u16,
        app_status: u32,
        out: &mut BytesMut,
    ) -> Option<EndOutcome> {
        let i = self.slot_index(id)?;
        let Slot::Active { stderr_used, .. } = self.slots[i].1 else {
            return None;
        };
        encode_request_end(out, id, app_status, stderr_used);
        let Slot::Active {
            keep_conn,
            stdin_done,
            ..
        } = self.slots[i].1
        else {
            unreachable!("checked above");
        };
        if stdin_done {
            self.slots.swap_remove(i);
        } else {
            self.slots[i].1 = Slot::Discarding;
        }
        Some(EndOutcome {
            close_connection: !keep_conn,
        })
    }
}

/// What ends a completed request: the closing empty STDOUT (and STDERR, if it was used) and
/// END_REQUEST.
pub(crate) fn encode_request_end(out: &mut BytesMut, id: u16, app_status: u32, stderr_used: bool) {
    protocol::encode_stream_end(out, RecordType::Stdout, id);
    if stderr_used {
        protocol::encode_stream_end(out, RecordType::Stderr, id);
    }
    end_record(out, id, app_status, ProtocolStatus::RequestComplete);
}

fn end_record(out: &mut BytesMut, id: u16, app_status: u32, protocol_status: ProtocolStatus) {
    EndRequest {
        app_status,
        protocol_status,
    }
    .encode(id, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_pair, encode_stream, encode_stream_end};

    const RESPONDER_KEEP: &[u8] = b"\x00\x01\x01\x00\x00\x00\x00\x00";
    const RESPONDER_CLOSE: &[u8] = b"\x00\x01\x00\x00\x00\x00\x00\x00";

    fn rec(ty: RecordType, id: u16, content: &[u8]) -> Record {
        Record {
            record_type: ty,
            request_id: id,
            content: Bytes::copy_from_slice(content),
        }
    }

    struct Harness {
        conn: Connection,
        out: BytesMut,
        now: Instant,
    }

    impl Harness {
        fn new(config: ConnectionConfig) -> Self {
            Harness {
                conn: Connection::new(config),
                out: BytesMut::new(),
                now: Instant::now(),
            }
        }
        fn feed(
            &mut self,
            ty: RecordType,
            id: u16,
            content: &[u8],
        ) -> Result<Option<Event>, ProtocolError> {
            self.conn
                .handle_record(rec(ty, id, content), self.now, &mut self.out)
        }
        fn begin(&mut self, id: u16) {
            assert!(self
                .feed(RecordType::BeginRequest, id, RESPONDER_KEEP)
                .unwrap()
                .is_none());
        }
        fn params(&mut self, id: u16, pairs: &[(&[u8], &[u8])]) -> RequestHead {
            let mut buf = BytesMut::new();
            for (n, v) in pairs {
                encode_pair(&mut buf, n, v);
            }
            if !buf.is_empty() {
                assert!(self.feed(RecordType::Params, id, &buf).unwrap().is_none());
            }
            match self.feed(RecordType::Params, id, b"").unwrap() {
                Some(Event::Request(head)) => head,
                other => panic!("expected a request, got {other:?}"),
            }
        }
        fn replies(&mut self) -> Vec<Record> {
            let mut v = Vec::new();
            while let Some(r) = Record::parse(&mut self.out).unwrap() {
                v.push(r);
            }
            assert!(self.out.is_empty());
            v
        }
    }

    fn end_status(r: &Record) -> (u32, ProtocolStatus) {
        assert_eq!(r.record_type, RecordType::EndRequest);
        let e = EndRequest::parse(&r.content).unwrap();
        (e.app_status, e.protocol_status)
    }

    #[test]
    fn a_request_from_begin_to_end() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        let head = h.params(
            1,
            &[(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"2")],
        );
        assert_eq!(
            (head.id, head.role, head.keep_conn),
            (1, Role::Responder, true)
        );
        assert_eq!(head.params.get(b"REQUEST_METHOD"), Some(&b"POST"[..]));
        match h.feed(RecordType::Stdin, 1, b"hi").unwrap() {
            Some(Event::Stdin { id: 1, data }) => assert_eq!(&data[..], b"hi"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.feed(RecordType::Stdin, 1, b""),
            Ok(Some(Event::StdinEnd { id: 1 }))
        ));
        assert_eq!(h.conn.open_requests(), 1);
        let outcome = h.conn.end_request(1, 7, &mut h.out).unwrap();
        assert!(!outcome.close_connection);
        let replies = h.replies();
        assert_eq!(replies.len(), 2);
        assert_eq!(
            (replies[0].record_type, replies[0].content.len()),
            (RecordType::Stdout, 0)
        );
        assert_eq!(
            end_status(&replies[1]),
            (7, ProtocolStatus::RequestComplete)
        );
        assert_eq!(h.conn.open_requests(), 0);
        // The id is free again: a new BEGIN for it is fine.
        h.begin(1);
    }

    #[test]
    fn keep_conn_unset_asks_to_close() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.feed(RecordType::BeginRequest, 3, RESPONDER_CLOSE)
            .unwrap();
        let head = h.params(3, &[]);
        assert!(!head.keep_conn);
        h.feed(RecordType::Stdin, 3, b"").unwrap();
        assert!(
            h.conn
                .end_request(3, 0, &mut h.out)
                .unwrap()
                .close_connection
        );
    }

    #[test]
    fn several_requests_multiplex_on_one_connection() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        h.begin(2);
        let b = h.params(2, &[(b"N", b"2")]);
        let a = h.params(1, &[(b"N", b"1")]);
        assert_eq!((a.id, b.id), (1, 2));
        assert!(matches!(
            h.feed(RecordType::Stdin, 2, b"x"),
            Ok(Some(Event::Stdin { id: 2, .. }))
        ));
        assert!(matches!(
            h.feed(RecordType::Stdin, 1, b""),
            Ok(Some(Event::StdinEnd { id: 1 }))
        ));
        assert_eq!(h.conn.open_requests(), 2);
    }

    #[test]
    fn a_pair_cut_across_params_records_decodes() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        let mut stream = BytesMut::new();
        encode_pair(&mut stream, b"SCRIPT_NAME", b"/index.py");
        encode_pair(&mut stream, b"HTTP_COOKIE", &[b'c'; 300]);
        // Cut inside the second pair's 4-byte value length, and again inside its value.
        for piece in [
            &stream[..22],
            &stream[22..27],
            &stream[27..100],
            &stream[100..],
        ] {
            assert!(h.feed(RecordType::Params, 1, piece).unwrap().is_none());
        }
        let Some(Event::Request(head)) = h.feed(RecordType::Params, 1, b"").unwrap() else {
            panic!("expected the request");
        };
        assert_eq!(head.params.get(b"SCRIPT_NAME"), Some(&b"/index.py"[..]));
        assert_eq!(head.params.get(b"HTTP_COOKIE"), Some(&[b'c'; 300][..]));
    }

    #[test]
    fn get_values_is_answered_with_the_real_limits() {
        let mut h = Harness::new(ConnectionConfig {
            advertised_max_conns: 10,
            advertised_max_reqs: 50,
            ..ConnectionConfig::default()
        });
        let mut q = BytesMut::new();
        for name in [
            &b"FCGI_MAX_CONNS"[..],
            b"FCGI_MAX_REQS",
            b"FCGI_MPXS_CONNS",
            b"OTHER",
        ] {
            encode_pair(&mut q, name, b"");
        }
        assert!(h.feed(RecordType::GetValues, 0, &q).unwrap().is_none());
        let replies = h.replies();
        assert_eq!(replies[0].record_type, RecordType::GetValuesResult);
        assert_eq!(replies[0].request_id, 0);
        let got: Vec<_> = protocol::Pairs::new(&replies[0].content)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            [
                (&b"FCGI_MAX_CONNS"[..], &b"10"[..]),
                (b"FCGI_MAX_REQS", b"50"),
                (b"FCGI_MPXS_CONNS", b"1")
            ]
        );
    }

    #[test]
    fn get_values_answers_each_name_once_however_often_asked() {
        // The fuzz reproducer: 3277 copies of one name (52 KB) would have asked for a 65540-byte
        // reply, past the 16-bit record length.
        let mut h = Harness::new(ConnectionConfig::default());
        let mut q = BytesMut::new();
        for _ in 0..3277 {
            encode_pair(&mut q, b"FCGI_MAX_CONNS", b"");
        }
        encode_pair(&mut q, b"FCGI_MPXS_CONNS", b"");
        assert!(h.feed(RecordType::GetValues, 0, &q).unwrap().is_none());
        let replies = h.replies();
        assert_eq!(replies.len(), 1);
        let got: Vec<_> = protocol::Pairs::new(&replies[0].content)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            [
                (&b"FCGI_MAX_CONNS"[..], &b"1024"[..]),
                (b"FCGI_MPXS_CONNS", b"1")
            ]
        );
    }

    #[test]
    fn unknown_role_is_refused_and_its_records_swallowed() {
        for role in [
            &b"\x00\x02\x01\x00\x00\x00\x00\x00"[..],
            b"\x00\x03\x01\x00\x00\x00\x00\x00",
            b"\x00\x09\x01\x00\x00\x00\x00\x00",
        ] {
            let mut h = Harness::new(ConnectionConfig::default());
            let ev = h.feed(RecordType::BeginRequest, 5, role).unwrap();
            assert!(matches!(
                ev,
                Some(Event::Refused {
                    id: 5,
                    reason: Refusal::UnknownRole(_),
                    ..
                })
            ));
            assert_eq!(
                end_status(&h.replies()[0]),
                (0, ProtocolStatus::UnknownRole)
            );
            // The web server may still send the request's streams: not violations.
            assert!(h
                .feed(RecordType::Params, 5, b"\x01\x01ab")
                .unwrap()
                .is_none());
            assert!(h.feed(RecordType::Params, 5, b"").unwrap().is_none());
            assert!(h.feed(RecordType::Data, 5, b"d").unwrap().is_none());
            assert!(h.feed(RecordType::Stdin, 5, b"").unwrap().is_none());
            // Then the id is gone.
            assert!(h.feed(RecordType::Stdin, 5, b"").is_err());
        }
    }

    #[test]
    fn unknown_record_type_gets_unknown_type_and_the_connection_goes_on() {
        let mut h = Harness::new(ConnectionConfig::default());
        assert!(h
            .feed(RecordType::Other(42), 0, b"whatever")
            .unwrap()
            .is_none());
        assert!(h.feed(RecordType::Other(200), 1, b"").unwrap().is_none());
        let replies = h.replies();
        assert_eq!(
            UnknownType::parse(&replies[0].content).unwrap().record_type,
            42
        );
        assert_eq!(
            UnknownType::parse(&replies[1].content).unwrap().record_type,
            200
        );
        h.begin(1);
    }

    #[test]
    fn abort_of_an_active_request_reaches_the_application() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        h.params(1, &[]);
        assert!(matches!(
            h.feed(RecordType::AbortRequest, 1, b""),
            Ok(Some(Event::Abort { id: 1 }))
        ));
        // Repeated: once is enough.
        assert!(h.feed(RecordType::AbortRequest, 1, b"").unwrap().is_none());
        assert!(
            h.replies().is_empty(),
            "END_REQUEST comes from the application"
        );
        h.conn.end_request(1, 0, &mut h.out).unwrap();
        assert_eq!(
            end_status(&h.replies()[1]),
            (0, ProtocolStatus::RequestComplete)
        );
        assert_eq!(h.conn.open_requests(), 0);
        // Abort racing our END_REQUEST is not a violation.
        assert!(h.feed(RecordType::AbortRequest, 1, b"").unwrap().is_none());
    }

    #[test]
    fn abort_before_params_complete_is_answered_at_once() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(4);
        assert!(h.feed(RecordType::AbortRequest, 4, b"").unwrap().is_none());
        assert_eq!(
            end_status(&h.replies()[0]),
            (0, ProtocolStatus::RequestComplete)
        );
        assert_eq!(h.conn.open_requests(), 0);
    }

    #[test]
    fn data_is_accepted() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        h.params(1, &[]);
        assert!(h
            .feed(RecordType::Data, 1, b"filter data")
            .unwrap()
            .is_none());
        assert!(h.feed(RecordType::Data, 1, b"").unwrap().is_none());
    }

    #[test]
    fn too_many_requests_are_refused() {
        for (max, status) in [
            (1, ProtocolStatus::CantMpxConn),
            (2, ProtocolStatus::Overloaded),
        ] {
            let mut h = Harness::new(ConnectionConfig {
                max_requests: max,
                ..Default::default()
            });
            for id in 1..=max as u16 {
                h.begin(id);
            }
            let ev = h.feed(RecordType::BeginRequest, 9, RESPONDER_KEEP).unwrap();
            assert!(matches!(
                ev,
                Some(Event::Refused {
                    id: 9,
                    reason: Refusal::TooManyRequests,
                    ..
                })
            ));
            assert_eq!(end_status(&h.replies()[0]), (0, status));
        }
    }

    #[test]
    fn params_over_the_limit_are_refused() {
        let mut h = Harness::new(ConnectionConfig {
            max_params_bytes: 100,
            ..Default::default()
        });
        h.begin(1);
        assert!(h.feed(RecordType::Params, 1, &[0u8; 60]).unwrap().is_none());
        let ev = h.feed(RecordType::Params, 1, &[0u8; 60]).unwrap();
        assert!(matches!(
            ev,
            Some(Event::Refused {
                id: 1,
                reason: Refusal::ParamsTooLarge,
                ..
            })
        ));
        assert_eq!(end_status(&h.replies()[0]), (0, ProtocolStatus::Overloaded));
        // The rest of its stream is swallowed.
        assert!(h.feed(RecordType::Params, 1, &[0u8; 60]).unwrap().is_none());
        assert!(h.feed(RecordType::Params, 1, b"").unwrap().is_none());
        assert!(h.feed(RecordType::Stdin, 1, b"").unwrap().is_none());
    }

    #[test]
    fn stdin_after_the_application_ended_early_is_swallowed() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        h.params(1, &[]);
        h.feed(RecordType::Stdin, 1, b"part").unwrap();
        h.conn.end_request(1, 0, &mut h.out).unwrap();
        assert!(h.feed(RecordType::Stdin, 1, b"more").unwrap().is_none());
        assert!(h.feed(RecordType::Stdin, 1, b"").unwrap().is_none());
        assert!(
            h.feed(RecordType::Stdin, 1, b"").is_err(),
            "after its end the id is unknown"
        );
    }

    #[test]
    fn params_deadline_follows_the_oldest_waiting_request() {
        let mut h = Harness::new(ConnectionConfig::default());
        let t0 = h.now;
        assert_eq!(h.conn.params_deadline(Duration::from_secs(5)), None);
        h.begin(1);
        h.now = t0 + Duration::from_secs(2);
        h.begin(2);
        assert_eq!(
            h.conn.params_deadline(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(5))
        );
        h.params(1, &[]);
        assert_eq!(
            h.conn.params_deadline(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(7))
        );
    }

    #[test]
    fn stderr_stream_is_closed_when_used() {
        let mut h = Harness::new(ConnectionConfig::default());
        h.begin(1);
        h.params(1, &[]);
        h.conn.note_stderr(1);
        h.conn.end_request(1, 0, &mut h.out).unwrap();
        let types: Vec<_> = h.replies().iter().map(|r| r.record_type).collect();
        assert_eq!(
            types,
            [
                RecordType::Stdout,
                RecordType::Stderr,
                RecordType::EndRequest
            ]
        );
    }

    #[test]
    fn violations() {
        type Setup = fn(&mut Harness);
        let none: Setup = |_| {};
        let begun: Setup = |h| h.begin(1);
        let active: Setup = |h| {
            h.begin(1);
            h.params(1, &[]);
        };
        let stdin_done: Setup = |h| {
            h.begin(1);
            h.params(1, &[]);
            h.feed(RecordType::Stdin, 1, b"").unwrap();
        };
        type Case<'a> = (&'a str, Setup, RecordType, u16, &'a [u8], ProtocolError);
        let cases: &[Case] = &[
            (
                "params for an id never begun",
                none,
                RecordType::Params,
                1,
                b"",
                ProtocolError::UnknownRequest {
                    record_type: RecordType::Params,
                    id: 1,
                },
            ),
            (
                "stdin for an id never begun",
                none,
                RecordType::Stdin,
                7,
                b"x",
                ProtocolError::UnknownRequest {
                    record_type: RecordType::Stdin,
                    id: 7,
                },
            ),
            (
                "data for an id never begun",
                none,
                RecordType::Data,
                7,
                b"x",
                ProtocolError::UnknownRequest {
                    record_type: RecordType::Data,
                    id: 7,
                },
            ),
            (
                "begin for an id in params",
                begun,
                RecordType::BeginRequest,
                1,
                RESPONDER_KEEP,
                ProtocolError::DuplicateBegin(1),
            ),
            (
                "begin for an active id",
                active,
                RecordType::BeginRequest,
                1,
                RESPONDER_KEEP,
                ProtocolError::DuplicateBegin(1),
            ),
            (
                "begin body too short",
                none,
                RecordType::BeginRequest,
                1,
                b"\x00\x01",
                ProtocolError::BadBodyLength {
                    record_type: RecordType::BeginRequest,
                    len: 2,
                    expected: 8,
                },
            ),
            (
                "begin with id 0",
                none,
                RecordType::BeginRequest,
                0,
                RESPONDER_KEEP,
                ProtocolError::NullRequestId {
                    record_type: RecordType::BeginRequest,
                },
            ),
            (
                "stdin before params end",
                begun,
                RecordType::Stdin,
                1,
                b"x",
                ProtocolError::ParamsIncomplete {
                    record_type: RecordType::Stdin,
                    id: 1,
                },
            ),
            (
                "params after params end",
                active,
                RecordType::Params,
                1,
                b"",
                ProtocolError::StreamEnded {
                    record_type: RecordType::Params,
                    id: 1,
                },
            ),
            (
                "stdin after stdin end",
                stdin_done,
                RecordType::Stdin,
                1,
                b"x",
                ProtocolError::StreamEnded {
                    record_type: RecordType::Stdin,
                    id: 1,
                },
            ),
            (
                "pair lengths past the stream",
                begun,
                RecordType::Params,
                1,
                b"\x09\x09short",
                ProtocolError::PairTruncated,
            ),
            (
                "stdout from the web server",
                none,
                RecordType::Stdout,
                1,
                b"x",
                ProtocolError::WrongDirection {
                    record_type: RecordType::Stdout,
                },
            ),
            (
                "end request from the web server",
                none,
                RecordType::EndRequest,
                1,
                &[0; 8],
                ProtocolError::WrongDirection {
                    record_type: RecordType::EndRequest,
                },
            ),
            (
                "get values with a truncated pair",
                none,
                RecordType::GetValues,
                0,
                b"\x0e",
                ProtocolError::PairTruncated,
            ),
        ];
        for (name, setup, ty, id, content, expected) in cases {
            let mut h = Harness::new(ConnectionConfig::default());
            setup(&mut h);
            let mut result = h.feed(*ty, *id, content);
            if *name == "pair lengths past the stream" {
                assert!(result.unwrap().is_none());
                result = h.feed(RecordType::Params, 1, b"");
            }
            assert_eq!(result.unwrap_err(), *expected, "{name}");
        }
    }

    #[test]
    fn encoded_client_streams_round_trip_through_the_machine() {
        // A whole request as a client library would encode it, through Record::parse.
        let mut wire = BytesMut::new();
        BeginRequest {
            role: Role::Responder,
            flags: 0,
        }
        .encode(1, &mut wire);
        let mut p = BytesMut::new();
        encode_pair(&mut p, b"A", b"B");
        encode_stream(&mut wire, RecordType::Params, 1, &p);
        encode_stream_end(&mut wire, RecordType::Params, 1);
        encode_stream(&mut wire, RecordType::Stdin, 1, b"body");
        encode_stream_end(&mut wire, RecordType::Stdin, 1);
        let mut h = Harness::new(ConnectionConfig::default());
        let mut events = Vec::new();
        while let Some(r) = Record::parse(&mut wire).unwrap() {
            events.extend(h.conn.handle_record(r, h.now, &mut h.out).unwrap());
        }
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[0], Event::Request(head) if head.params.get(b"A") == Some(&b"B"[..]))
        );
    }
}
