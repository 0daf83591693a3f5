//! Bytes -> records -> `Connection::handle_record`, with the application ending its requests at
//! points chosen by the input. Never panics; every reply parses as whole, valid records; the
//! machine's events agree with a small model of which requests the application holds.
//!
//! Input: `[n, ctrl[0..n % 64], stream...]`. After each record one control byte (cycling) says
//! whether to end a held request (bit 0), which one (bits 2..), and whether it used STDERR (bit 1).
#![no_main]
use std::time::Instant;

use bytes::BytesMut;
use fastcgi::connection::Connection;
use fastcgi::protocol::{EndRequest, Pairs, Record, RecordType, UnknownType};
use fastcgi::{ConnectionConfig, Event};
use libfuzzer_sys::fuzz_target;

const CONFIG: ConnectionConfig = ConnectionConfig {
    max_requests: 4,
    max_params_bytes: 4096,
    advertised_max_conns: 1024,
    advertised_max_reqs: 1024,
};

/// Everything the machine wrote must be whole, valid records of the application's direction.
fn check_replies(out: &mut BytesMut) {
    while let Some(r) = Record::parse(out).expect("reply is not FastCGI") {
        match r.record_type {
            RecordType::Stdout | RecordType::Stderr => assert!(r.content.is_empty()),
            RecordType::EndRequest => {
                assert_ne!(r.request_id, 0);
                EndRequest::parse(&r.content).unwrap();
            }
            RecordType::UnknownType => {
                assert_eq!(r.request_id, 0);
                UnknownType::parse(&r.content).unwrap();
            }
            RecordType::GetValuesResult => {
                assert_eq!(r.request_id, 0);
                for pair in Pairs::new(&r.content) {
                    pair.unwrap();
                }
            }
            other => panic!("the application never sends {other:?}"),
        }
    }
    assert!(out.is_empty(), "a partial reply record: {out:?}");
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let (ctrl, stream) = rest.split_at((n as usize % 64).min(rest.len()));
    let mut buf = BytesMut::from(stream);
    let mut conn = Connection::new(CONFIG);
    let mut out = BytesMut::new();
    let now = Instant::now();
    let mut held: Vec<u16> = Vec::new(); // requests the application has and has not ended
    let mut step = 0usize;

    while let Ok(Some(record)) = Record::parse(&mut buf) {
        match conn.handle_record(record, now, &mut out) {
            Err(_) => break, // a violation: the driver closes the connection
            Ok(Some(Event::Request(head))) => {
                assert!(
                    !held.contains(&head.id),
                    "request {} handed over twice",
                    head.id
                );
                assert!(conn.is_active(head.id));
                held.push(head.id);
            }
            Ok(Some(Event::Stdin { id, data })) => {
                assert!(held.contains(&id) && !data.is_empty());
            }
            Ok(Some(Event::StdinEnd { id } | Event::Abort { id })) => assert!(held.contains(&id)),
            Ok(Some(Event::Refused { id, .. })) => assert!(!held.contains(&id)),
            Ok(None) => {}
        }
        assert!(conn.open_requests() <= CONFIG.max_requests);
        check_replies(&mut out);

        if let Some(&c) = ctrl.get(step % ctrl.len().max(1)) {
            if c & 1 == 1 && !held.is_empty() {
                let id = held.swap_remove((c as usize >> 2) % held.len());
                if c & 2 == 2 {
                    conn.note_stderr(id);
                }
                assert!(conn.end_request(id, c.into(), &mut out).is_some());
                assert!(!conn.is_active(id));
                check_replies(&mut out);
            }
        }
        step += 1;
    }
    for id in held {
        assert!(conn.end_request(id, 0, &mut out).is_some());
        assert!(conn.end_request(id, 0, &mut out).is_none(), "ended twice");
    }
    check_replies(&mut out);
});
