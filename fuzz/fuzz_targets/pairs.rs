//! Name-value pairs: `Pairs` and `Params::parse` agree, and the canonical re-encoding of what
//! parsed (`encode_pair`) parses back to the same pairs and is never longer than the input.
#![no_main]
use bytes::{Bytes, BytesMut};
use fastcgi::protocol::{encode_pair, pair_len, Pairs};
use fastcgi::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut it = Pairs::new(data);
    let pairs: Result<Vec<_>, _> = it.by_ref().collect();
    assert!(it.next().is_none(), "nothing after an error or the end");
    let params = Params::parse(Bytes::copy_from_slice(data));
    match (&pairs, &params) {
        (Ok(pairs), Ok(params)) => {
            assert!(pairs.iter().copied().eq(params.iter()));
            assert_eq!(&params.stream()[..], data);
            let mut buf = BytesMut::new();
            for (n, v) in pairs {
                encode_pair(&mut buf, n, v);
            }
            assert_eq!(
                buf.len(),
                pairs.iter().map(|(n, v)| pair_len(n, v)).sum::<usize>()
            );
            assert!(buf.len() <= data.len());
            let again: Vec<_> = Pairs::new(&buf).collect::<Result<_, _>>().unwrap();
            assert_eq!(&again, pairs);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("Pairs said {a:?}, Params said {b:?}"),
    }
});
