//! The fixed-size bodies (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE) and the header: no panics,
//! only 8 bytes accepted, and encode(parse(x)) gives back x's meaningful bytes.
#![no_main]
use bytes::BytesMut;
use fastcgi::protocol::{BeginRequest, EndRequest, Header, Record, RecordType, UnknownType};
use libfuzzer_sys::fuzz_target;

fn one_record(mut out: BytesMut, ty: RecordType, id: u16) -> bytes::Bytes {
    let r = Record::parse(&mut out).unwrap().unwrap();
    assert!(out.is_empty());
    assert_eq!((r.record_type, r.request_id, r.content.len()), (ty, id, 8));
    r.content
}

fuzz_target!(|data: &[u8]| {
    let id = data.first().map_or(0, |&b| u16::from(b) << 8 | 1);
    let begin = BeginRequest::parse(data);
    let end = EndRequest::parse(data);
    let unknown = UnknownType::parse(data);
    let is8 = data.len() == 8;
    assert_eq!(
        (begin.is_ok(), end.is_ok(), unknown.is_ok()),
        (is8, is8, is8)
    );
    if let Ok(b) = begin {
        let mut out = BytesMut::new();
        b.encode(id, &mut out);
        let c = one_record(out, RecordType::BeginRequest, id);
        assert_eq!(&c[..3], &data[..3]);
        assert_eq!(&c[3..], &[0; 5]);
        assert_eq!(BeginRequest::parse(&c).unwrap(), b);
    }
    if let Ok(e) = end {
        let mut out = BytesMut::new();
        e.encode(id, &mut out);
        let c = one_record(out, RecordType::EndRequest, id);
        assert_eq!(&c[..5], &data[..5]);
        assert_eq!(&c[5..], &[0; 3]);
        assert_eq!(EndRequest::parse(&c).unwrap(), e);
    }
    if let Ok(u) = unknown {
        let mut out = BytesMut::new();
        u.encode(&mut out);
        let c = one_record(out, RecordType::UnknownType, 0);
        assert_eq!((c[0], &c[1..]), (data[0], &[0u8; 7][..]));
    }
    if let Some(h) = Header::parse(data) {
        let mut out = BytesMut::new();
        h.encode(&mut out);
        assert_eq!(&out[..7], &data[..7]);
        assert_eq!(Header::parse(&out), Some(h));
    }
});
