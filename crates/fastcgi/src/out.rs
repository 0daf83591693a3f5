//! Output waiting for a socket: framed records, in order, with large payloads kept as the
//! `Bytes` they came in (written with vectored IO, no copy).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::{self, RecordType, MAX_CONTENT_LEN};

/// Stdout/stderr payloads up to this size are copied next to their header; larger ones are
/// queued as they are (no copy) and written with vectored IO.
const COPY_THRESHOLD: usize = 4096;

/// Output waiting for the socket, in order: `segs`, then `tail`.
#[derive(Default)]
pub(crate) struct OutBuf {
    segs: VecDeque<Bytes>,
    pub(crate) tail: BytesMut,
    len: usize,
}

impl OutBuf {
    pub(crate) fn len(&self) -> usize {
        self.len + self.tail.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push_stream(&mut self, ty: RecordType, id: u16, data: Bytes) {
        let mut offset = 0;
        while offset < data.len() {
            let n = (data.len() - offset).min(MAX_CONTENT_LEN);
            protocol::encode_header(&mut self.tail, ty, id, n);
            if n <= COPY_THRESHOLD {
                self.tail.extend_from_slice(&data[offset..offset + n]);
            } else {
                let head = self.tail.split().freeze();
                self.len += head.len() + n;
                self.segs.push_back(head);
                self.segs.push_back(data.slice(offset..offset + n));
            }
            offset += n;
        }
    }

    /// Appends `other` behind what is here.
    #[cfg(unix)]
    pub(crate) fn append(&mut self, mut other: OutBuf) {
        if other.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.len += tail.len();
            self.segs.push_back(tail);
        }
        self.len += other.len;
        self.segs.append(&mut other.segs);
        if self.segs.is_empty() {
            self.tail = other.tail;
        } else if !other.tail.is_empty() {
            let tail = other.tail.split().freeze();
            self.len += tail.len();
            self.segs.push_back(tail);
        }
    }

    pub(crate) fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; 32]) -> usize {
        let mut n = 0;
        let segs = self.segs.iter().map(|b| &b[..]);
        for seg in segs.chain(std::iter::once(&self.tail[..])) {
            if n == out.len() {
                break;
            }
            if !seg.is_empty() {
                out[n] = IoSlice::new(seg);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segs.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.len -= k;
            n -= k;
            if front.is_empty() {
                self.segs.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(out: &OutBuf) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 32];
        let n = out.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.to_vec()).collect()
    }

    #[cfg(unix)]
    #[test]
    fn append_keeps_order_and_length() {
        let big = Bytes::from(vec![9u8; COPY_THRESHOLD + 1]);
        for (a_tail, b_big, b_tail) in [
            (&b""[..], false, &b""[..]),
            (b"ab", false, b""),
            (b"", true, b"cd"),
            (b"ab", true, b"cd"),
            (b"ab", false, b"cd"),
        ] {
            let mut a = OutBuf::default();
            a.tail.extend_from_slice(a_tail);
            let mut b = OutBuf::default();
            let mut expected = a_tail.to_vec();
            if b_big {
                b.push_stream(RecordType::Stdout, 1, big.clone());
                expected.extend_from_slice(&contents(&b));
            }
            b.tail.extend_from_slice(b_tail);
            expected.extend_from_slice(b_tail);
            a.append(b);
            assert_eq!(contents(&a), expected);
            assert_eq!(a.len(), expected.len());
            a.advance(expected.len());
            assert!(a.is_empty());
        }
    }
}
