//! What each transport needs for a request to write its response from the thread running it:
//! a [`Writer`] (send without blocking; wait while the transport is full) and the thread that
//! drives a connection whose requests run inline. Every platform difference of the output path
//! lives here: the Unix stream socket now; the Windows named pipe and socket are the next
//! [`Writer`]s.

use std::future::Future;
use std::io;

use crate::listener::Stream;
use crate::output::OutBuf;

/// Stack of the thread that drives an inline connection: it runs the application (Python, with
/// its deep recursion in template engines and ORMs), so it gets a main thread's 8 MiB.
const INLINE_THREAD_STACK: usize = 8 * 1024 * 1024;

/// A connection's transport as a plain thread writes it. Valid while the connection's driver
/// holds the stream it came from (the driver lends it only for the length of an inline call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer(Inner);

#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
struct Inner(std::os::fd::RawFd);

/// No writer on this platform yet: the type has no values, so nothing is ever written inline.
#[cfg(not(unix))]
#[derive(Debug, Clone, Copy)]
enum Inner {}

impl Writer {
    /// The writer of `stream`, where its transport has one.
    pub(crate) fn for_stream(stream: &Stream) -> Option<Writer> {
        #[cfg(unix)]
        return Some(Writer(Inner(std::os::fd::AsRawFd::as_raw_fd(stream))));
        #[cfg(not(unix))]
        {
            let _ = stream;
            None
        }
    }

    /// The writer of a socket a test holds (and keeps open).
    #[cfg(all(test, unix))]
    pub(crate) fn for_fd(fd: std::os::fd::RawFd) -> Writer {
        Writer(Inner(fd))
    }

    /// Sends what `out` holds: with `wait`, until it is empty (waiting while the transport is
    /// full), else as far as the transport takes it now. A peer that has gone is an error,
    /// never a signal.
    pub(crate) fn send(&self, out: &mut OutBuf, wait: bool) -> io::Result<()> {
        #[cfg(unix)]
        return unix::send(self.0 .0, out, wait);
        #[cfg(not(unix))]
        {
            let _ = (out, wait);
            match self.0 {}
        }
    }
}

/// Drives `stream` on a thread of its own, with a current-thread runtime of its own (the stream
/// is registered with it, so that its readiness wakes this thread and no other): requests can
/// then run inline on it. `drive` is given the stream and its writer. If the thread cannot
/// start, `drive` is dropped (with whatever it holds) and the error returned.
pub(crate) fn spawn_driver_thread<F, Fut>(stream: Stream, drive: F) -> io::Result<()>
where
    F: FnOnce(Stream, Option<Writer>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let run = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => return tracing::warn!(error = %e, "cannot start the connection's runtime"),
        };
        runtime.block_on(async {
            match stream.rebind() {
                Ok(stream) => {
                    let writer = Writer::for_stream(&stream);
                    drive(stream, writer).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot move the connection to its thread"),
            }
        });
    };
    std::thread::Builder::new()
        .name("wfcgi-conn".into())
        .stack_size(INLINE_THREAD_STACK)
        .spawn(run)
        .map(drop)
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::fd::RawFd;

    use crate::output::OutBuf;

    pub(super) fn send(fd: RawFd, out: &mut OutBuf, wait: bool) -> io::Result<()> {
        while !out.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); 32];
            let n = out.slices(&mut slices);
            // SAFETY: msghdr is plain data; the iovecs point into `slices`, which outlives the
            // call (IoSlice is ABI-compatible with iovec on Unix).
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
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::RecordType;
    use bytes::Bytes;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn writer(s: &UnixStream) -> Writer {
        s.set_nonblocking(true).unwrap();
        Writer::for_fd(s.as_raw_fd())
    }

    /// Reads `s` to its end on the calling thread; the number of bytes read.
    pub(crate) fn count_until_eof(mut s: &UnixStream) -> usize {
        let mut total = 0;
        let mut buf = vec![0; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }

    #[test]
    fn sends_without_waiting_until_full_then_waits_when_asked() {
        let (a, b) = UnixStream::pair().unwrap();
        let w = writer(&a);
        let mut out = OutBuf::default();
        out.push_stream(RecordType::Stdout, 1, Bytes::from(vec![7u8; 4 << 20]));
        w.send(&mut out, false).unwrap();
        assert!(!out.is_empty(), "a socket buffer is far smaller than 4 MiB");
        let reader = std::thread::spawn(move || count_until_eof(&b));
        w.send(&mut out, true).unwrap();
        assert!(out.is_empty());
        drop(a);
        let records = (4usize << 20).div_ceil(65535);
        assert_eq!(reader.join().unwrap(), (4 << 20) + 8 * records);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut out = OutBuf::default();
        out.tail.extend_from_slice(b"x");
        assert!(writer(&a).send(&mut out, true).is_err());
    }
}
