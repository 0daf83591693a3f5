//! Writing a response straight to the socket from the thread that runs the request.
//!
//! A request served inline (see [`Handler::handle_inline`](crate::Handler::handle_inline)) runs
//! on the thread that drives its connection, while the driver waits for it. Its writes cannot go
//! through the driver (nobody would take them), so they go to the socket directly: framed into
//! records, sent without blocking, and only when the socket is full does the writer wait for it
//! (`poll`). The connection's earlier output (management replies, the end of the previous
//! request) is handed in first and goes out ahead of the response, so records stay in order.
//!
//! When the inline call returns, the driver revokes the writer: what could not be sent yet goes
//! back to the driver's buffer, and any later write through the same response (an app thread
//! that kept `write()`) takes the ordinary queued path.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::out::OutBuf;
use crate::protocol::RecordType;

/// The most a held last write (see [`Direct::try_write`]) may keep back.
const HOLD_LAST_MAX: usize = 64 * 1024;

struct State {
    /// `None` once revoked.
    fd: Option<RawFd>,
    /// Framed bytes not yet sent, in order.
    pending: OutBuf,
    stderr_written: bool,
}

/// What a direct write did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Sent, or queued behind bytes the socket has not taken yet (at most this one write).
    Done,
    /// Earlier bytes are still waiting for the socket: wait (`write_blocking`) instead.
    WouldBlock(Bytes),
    /// The inline call is over: use the driver's queue.
    Revoked(Bytes),
    Failed(io::Error),
}

pub(crate) struct Direct {
    state: Mutex<State>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

impl Direct {
    /// `fd` must stay open until [`Direct::revoke`]; `earlier` goes out before anything else,
    /// as far as the socket takes it now (a slow app must not hold back management replies).
    pub(crate) fn new(fd: RawFd, earlier: OutBuf) -> Direct {
        let mut pending = earlier;
        // An error means the peer is gone: the next write, or the driver, finds out.
        let _ = flush(fd, &mut pending, false);
        Direct {
            state: Mutex::new(State {
                fd: Some(fd),
                pending,
                stderr_written: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames and sends `data` without waiting for the socket. With `last` (the caller knows
    /// that the end of the request follows at once), a small write is held to go out with the
    /// end in one send: one wake-up of the web server instead of two.
    pub(crate) fn try_write(&self, ty: RecordType, id: u16, data: Bytes, last: bool) -> Outcome {
        let mut state = self.lock();
        let Some(fd) = state.fd else {
            return Outcome::Revoked(data);
        };
        if last && state.pending.len() + data.len() <= HOLD_LAST_MAX {
            state.note(ty);
            state.pending.push_stream(ty, id, data);
            return Outcome::Done;
        }
        if let Err(e) = flush(fd, &mut state.pending, false) {
            return Outcome::Failed(e);
        }
        if !state.pending.is_empty() {
            return Outcome::WouldBlock(data);
        }
        state.note(ty);
        state.pending.push_stream(ty, id, data);
        match flush(fd, &mut state.pending, false) {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Frames and sends `data`, waiting until the socket has taken it and everything before it.
    pub(crate) fn write_blocking(&self, ty: RecordType, id: u16, data: Bytes) -> Outcome {
        let mut state = self.lock();
        let Some(fd) = state.fd else {
            return Outcome::Revoked(data);
        };
        state.note(ty);
        state.pending.push_stream(ty, id, data);
        match flush(fd, &mut state.pending, true) {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Ends the request: the end records go out behind the response, without waiting for the
    /// socket (what it does not take is left for the driver). `tell_driver` runs after they are
    /// queued and before any of them can be sent, under the lock that `revoke` also takes: the
    /// web server may reuse the id as soon as it reads END_REQUEST, and the driver must know by
    /// then that the id is free (it applies its messages before reading). `false` if revoked
    /// already: the caller tells the driver to write the end itself.
    pub(crate) fn finish(&self, id: u16, app_status: u32, tell_driver: impl FnOnce()) -> bool {
        let mut state = self.lock();
        let Some(fd) = state.fd else {
            return false;
        };
        let stderr_used = state.stderr_written;
        crate::connection::encode_request_end(&mut state.pending.tail, id, app_status, stderr_used);
        tell_driver();
        // An error means the peer is gone: the driver finds out from its own read or write.
        let _ = flush(fd, &mut state.pending, false);
        true
    }

    /// Ends direct writing: returns what was not sent yet, and whether STDERR was written.
    pub(crate) fn revoke(&self) -> (OutBuf, bool) {
        let mut state = self.lock();
        state.fd = None;
        (std::mem::take(&mut state.pending), state.stderr_written)
    }
}

impl State {
    fn note(&mut self, ty: RecordType) {
        if ty == RecordType::Stderr {
            self.stderr_written = true;
        }
    }
}

/// Sends what `out` holds; with `wait`, until it is empty, else until the socket is full.
fn flush(fd: RawFd, out: &mut OutBuf, wait: bool) -> io::Result<()> {
    while !out.is_empty() {
        let mut slices = [io::IoSlice::new(&[]); 32];
        let n = out.slices(&mut slices);
        // SAFETY: msghdr is plain data; the iovecs point into `slices`, which outlives the call
        // (IoSlice is ABI-compatible with iovec on Unix).
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = slices.as_mut_ptr().cast::<libc::iovec>();
            msg.msg_iovlen = n as _;
            // MSG_NOSIGNAL: a peer that has gone is an EPIPE here, never a SIGPIPE.
            libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        };
        if sent >= 0 {
            out.advance(sent as usize);
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock if wait => wait_writable(fd)?,
            io::ErrorKind::WouldBlock => return Ok(()),
            _ => return Err(err),
        }
    }
    Ok(())
}

fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r >= 0 {
            // POLLERR/POLLHUP: the next send reports the error.
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn read_all(mut s: &UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn earlier_output_goes_first_then_framed_records() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut earlier = OutBuf::default();
        earlier.tail.extend_from_slice(b"EARLIER");
        let d = Direct::new(a.as_raw_fd(), earlier);
        assert!(matches!(
            d.try_write(RecordType::Stdout, 1, Bytes::from_static(b"hi"), false),
            Outcome::Done
        ));
        let got = read_all(&b, 7 + 8 + 2);
        assert_eq!(&got[..7], b"EARLIER");
        assert_eq!(&got[7..15], &[1, 6, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&got[15..], b"hi");
        let (rest, stderr) = d.revoke();
        assert!(rest.is_empty() && !stderr);
        assert!(matches!(
            d.try_write(RecordType::Stdout, 1, Bytes::from_static(b"x"), false),
            Outcome::Revoked(_)
        ));
    }

    #[test]
    fn a_full_socket_keeps_one_write_then_asks_to_wait() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let d = Direct::new(a.as_raw_fd(), OutBuf::default());
        let big = Bytes::from(vec![7u8; 4 << 20]);
        assert!(matches!(
            d.try_write(RecordType::Stdout, 1, big.clone(), true),
            Outcome::Done
        ));
        // The socket buffer is far smaller than 4 MiB: the rest waits in `pending`.
        assert!(matches!(
            d.try_write(RecordType::Stdout, 1, Bytes::from_static(b"next"), false),
            Outcome::WouldBlock(_)
        ));
        let reader = std::thread::spawn(move || {
            let mut total = 0;
            let mut buf = vec![0; 65536];
            while let Ok(n) = (&b).read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        assert!(matches!(
            d.write_blocking(RecordType::Stderr, 1, Bytes::from_static(b"next")),
            Outcome::Done
        ));
        let (rest, stderr) = d.revoke();
        assert!(rest.is_empty() && stderr);
        drop(a);
        // 4 MiB in 65 records of at most 65535 bytes, then one STDERR record of 4.
        let records = (4usize << 20).div_ceil(65535);
        assert_eq!(reader.join().unwrap(), (4 << 20) + 8 * records + 8 + 4);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let d = Direct::new(a.as_raw_fd(), OutBuf::default());
        assert!(matches!(
            d.write_blocking(RecordType::Stdout, 1, Bytes::from_static(b"x")),
            Outcome::Failed(_)
        ));
    }
}
