//! `Record::parse` on arbitrary bytes, checked against a reference walk of the headers, and
//! differentially against the same bytes arriving in two reads (cut given by the first byte):
//! "need more" must never lose, invent or reorder bytes.
#![no_main]
use bytes::BytesMut;
use fastcgi::protocol::{Header, Record, HEADER_LEN};
use fastcgi::ProtocolError;
use libfuzzer_sys::fuzz_target;

fn parse_all(buf: &mut BytesMut) -> (Vec<Record>, Option<ProtocolError>) {
    let mut records = Vec::new();
    loop {
        let before = buf.clone();
        match Record::parse(buf) {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {
                assert_eq!(*buf, before, "need-more must not consume");
                return (records, None);
            }
            Err(e) => {
                assert_eq!(*buf, before, "an error must not consume");
                return (records, Some(e));
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let mut whole = BytesMut::from(data);
    let (records, err) = parse_all(&mut whole);

    // Reference: walk the headers by hand.
    let mut at = 0;
    for r in &records {
        let h = Header::parse(&data[at..]).unwrap();
        assert_eq!(
            (h.version, h.record_type, h.request_id),
            (1, r.record_type, r.request_id)
        );
        let body = &data[at + HEADER_LEN..][..h.content_length as usize];
        assert_eq!(&r.content[..], body);
        at += h.record_len();
    }
    assert_eq!(
        &whole[..],
        &data[at..],
        "left over must be exactly the unparsed tail"
    );
    match (err, Header::parse(&data[at..])) {
        (Some(e), Some(h)) => assert_eq!(e, ProtocolError::UnsupportedVersion(h.version)),
        (Some(e), None) => panic!("error {e:?} without a header"),
        (None, Some(h)) => assert!(h.version == 1 && data.len() - at < h.record_len()),
        (None, None) => assert!(data.len() - at < HEADER_LEN),
    }

    // The same bytes in two reads.
    let cut = cut as usize * data.len() / 255;
    let mut split = BytesMut::from(&data[..cut]);
    let (mut records2, mut err2) = parse_all(&mut split);
    split.extend_from_slice(&data[cut..]);
    if err2.is_none() {
        let (more, e) = parse_all(&mut split);
        records2.extend(more);
        err2 = e;
    }
    assert_eq!(records, records2);
    assert_eq!(err, err2);
    assert_eq!(whole, split);
});
