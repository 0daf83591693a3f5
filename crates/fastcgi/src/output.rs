//! A connection's output. Its driver owns it: an [`OutBuf`] of framed records, flushed by the
//! driver as the transport takes them (queued output). For the length of an inline call (see
//! [`Handler::handle_inline`](crate::Handler::handle_inline)) the driver lends it, with the
//! transport's [`Writer`], to the request running on its thread as a [`Lent`]: the request's
//! writes then go straight to the transport when nothing is queued ahead of them, and wait for
//! it (blocking the thread) when it is full. The driver takes it back when the call returns,
//! with whatever the transport has not taken yet, and ends requests itself in both cases: only
//! the driver's `Connection` knows a request's state (stderr used, ended).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard};

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::{self, RecordType, MAX_CONTENT_LEN};
use crate::transport::Writer;

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

/// The connection's output, lent to the request running inline on the driver's thread.
pub(crate) struct Lent {
    state: Mutex<LentState>,
}

struct LentState {
    /// `None` once taken back.
    writer: Option<Writer>,
    /// Framed bytes not yet sent, in order.
    pending: OutBuf,
}

/// What a write through a [`Lent`] output did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Sent, or queued behind bytes the transport has not taken yet (at most this one write).
    Done,
    /// Earlier bytes are still waiting for the transport: wait (`wait: true`) instead.
    WouldBlock(Bytes),
    /// The driver has taken its output back: use its queue.
    TakenBack(Bytes),
    Failed(io::Error),
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

impl Lent {
    /// Lends `earlier` (the connection's queued output, which goes out first, as far as the
    /// transport takes it now: a slow app must not hold back management replies) and `writer`.
    pub(crate) fn new(writer: Writer, earlier: OutBuf) -> Lent {
        let mut pending = earlier;
        // An error means the peer is gone: the next write, or the driver, finds out.
        let _ = writer.send(&mut pending, false);
        Lent {
            state: Mutex::new(LentState {
                writer: Some(writer),
                pending,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LentState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames `data` and sends it: with `wait`, until the transport has taken it and
    /// everything before it; else only if nothing is waiting ahead of it.
    pub(crate) fn write(&self, ty: RecordType, id: u16, data: Bytes, wait: bool) -> Outcome {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(writer) = &state.writer else {
            return Outcome::TakenBack(data);
        };
        if !wait {
            if let Err(e) = writer.send(&mut state.pending, false) {
                return Outcome::Failed(e);
            }
            if !state.pending.is_empty() {
                return Outcome::WouldBlock(data);
            }
        }
        state.pending.push_stream(ty, id, data);
        match writer.send(&mut state.pending, wait) {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Ends request `id` on the transport itself, waiting until it is taken: its closing
    /// STDOUT and END_REQUEST. For a request ended from outside while it runs inline (a
    /// timeout): the driver, whose thread the request holds, cannot.
    pub(crate) fn write_end(&self, id: u16, app_status: u32) -> Outcome {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(writer) = &state.writer else {
            return Outcome::TakenBack(Bytes::new());
        };
        crate::connection::encode_request_end(&mut state.pending.tail, id, app_status, false);
        match writer.send(&mut state.pending, true) {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Queues the last `data` of a request without sending it: the driver sends it with the
    /// end of the request, in one piece. Gives it back once the output was taken back.
    pub(crate) fn hold_last(&self, id: u16, data: Bytes) -> Result<(), Bytes> {
        let mut state = self.lock();
        if state.writer.is_none() {
            return Err(data);
        }
        state.pending.push_stream(RecordType::Stdout, id, data);
        Ok(())
    }

    /// Takes the output back: what the transport has not taken yet, to go out first. Waits
    /// until what it has taken is on its way (the driver's own writes must not overtake it).
    pub(crate) fn take_back(&self) -> OutBuf {
        let mut state = self.lock();
        if let Some(writer) = state.writer.take() {
            // An error means the peer is gone: the driver finds out.
            let _ = writer.settle();
        }
        std::mem::take(&mut state.pending)
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

#[cfg(all(test, unix))]
mod lent_tests {
    use super::*;
    use crate::transport::tests::count_until_eof;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Writer, UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Writer::for_fd(std::os::fd::AsRawFd::as_raw_fd(&a)), a, b)
    }

    fn read_n(mut s: &UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn earlier_output_first_then_records_and_the_last_write_is_held() {
        let (w, _a, b) = pair();
        let mut earlier = OutBuf::default();
        earlier.tail.extend_from_slice(b"EARLIER");
        let lent = Lent::new(w, earlier);
        assert!(matches!(
            lent.write(RecordType::Stdout, 1, Bytes::from_static(b"hi"), false),
            Outcome::Done
        ));
        let got = read_n(&b, 7 + 8 + 2);
        assert_eq!(&got[..7], b"EARLIER");
        assert_eq!(&got[7..15], &[1, 6, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&got[15..], b"hi");
        lent.hold_last(1, Bytes::from_static(b"end")).unwrap();
        let rest = lent.take_back();
        assert_eq!(rest.len(), 8 + 3, "held, not sent");
        assert!(matches!(
            lent.write(RecordType::Stdout, 1, Bytes::from_static(b"x"), false),
            Outcome::TakenBack(_)
        ));
        assert!(lent.hold_last(1, Bytes::from_static(b"y")).is_err());
    }

    #[test]
    fn a_full_transport_keeps_one_write_then_asks_to_wait() {
        let (w, a, b) = pair();
        let lent = Lent::new(w, OutBuf::default());
        assert!(matches!(
            lent.write(
                RecordType::Stdout,
                1,
                Bytes::from(vec![7u8; 4 << 20]),
                false
            ),
            Outcome::Done
        ));
        assert!(matches!(
            lent.write(RecordType::Stdout, 1, Bytes::from_static(b"next"), false),
            Outcome::WouldBlock(_)
        ));
        let reader = std::thread::spawn(move || count_until_eof(&b));
        assert!(matches!(
            lent.write(RecordType::Stderr, 1, Bytes::from_static(b"next"), true),
            Outcome::Done
        ));
        assert!(lent.take_back().is_empty());
        drop(a);
        let records = (4usize << 20).div_ceil(65535);
        assert_eq!(reader.join().unwrap(), (4 << 20) + 8 * records + 8 + 4);
    }
}
