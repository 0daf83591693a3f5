//! A request's params: the whole `FCGI_PARAMS` stream kept as one buffer plus an index.
//!
//! Nothing is copied per pair: [`Params::get`] and [`Params::iter`] hand out slices of the
//! stream. When the stream came in one record (nginx, IIS), the buffer is that record's content,
//! which itself shares the connection's read buffer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{self, PairSpan, Pairs, ProtocolError};

#[derive(Clone, Default)]
pub struct Params {
    stream: Bytes,
    spans: Vec<PairSpan>,
}

impl Params {
    /// Indexes a complete name-value pair stream. A pair whose lengths run past the end of the
    /// stream is a protocol violation (it can never be completed).
    pub fn parse(stream: Bytes) -> Result<Params, ProtocolError> {
        // nginx sends about 30 params; reserving by a typical pair size avoids regrowth.
        let mut spans = Vec::with_capacity(stream.len() / 24 + 1);
        let mut pairs = Pairs::new(&stream);
        while let Some(span) = pairs.next_span() {
            spans.push(span?);
        }
        Ok(Params { stream, spans })
    }

    /// Builds params from pairs, as a web server would send them (tests, benches, tools).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Params {
        let mut buf = BytesMut::new();
        for (name, value) in pairs {
            protocol::encode_pair(&mut buf, name, value);
        }
        Params::parse(buf.freeze()).expect("encoded pairs always parse")
    }

    /// The value of the first param called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every pair, in the order the web server sent them.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |s| {
            let name = &self.stream[s.name_start as usize..][..s.name_len as usize];
            let value = &self.stream[s.value_start as usize..][..s.value_len as usize];
            (name, value)
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The raw `FCGI_PARAMS` stream.
    pub fn stream(&self) -> &Bytes {
        &self.stream
    }

    /// Encodes these params back into a name-value pair stream (a client's side).
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.stream);
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_iter_borrow_the_stream() {
        let p = Params::from_pairs([
            (&b"REQUEST_METHOD"[..], &b"GET"[..]),
            (b"EMPTY", b""),
            (b"REQUEST_METHOD", b"POST"),
        ]);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.get(b"REQUEST_METHOD"),
            Some(&b"GET"[..]),
            "first one wins"
        );
        assert_eq!(p.get(b"EMPTY"), Some(&b""[..]));
        assert_eq!(p.get(b"MISSING"), None);
        let names: Vec<_> = p.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"REQUEST_METHOD"[..], b"EMPTY", b"REQUEST_METHOD"]);
        let range = p.stream().as_ptr_range();
        assert!(p.iter().all(|(n, _)| range.contains(&n.as_ptr())));
    }

    #[test]
    fn truncated_stream_is_refused() {
        assert_eq!(
            Params::parse(Bytes::from_static(b"\x01\x05ab")).unwrap_err(),
            ProtocolError::PairTruncated
        );
    }
}
