//! What each transport needs for a request to write its response from the thread running it:
//! a [`Writer`] (send without blocking; wait while the transport is full) and the thread that
//! drives a connection whose requests run inline. Every platform difference of the output path
//! lives here: the Unix stream socket, and the Windows named pipe IIS hands over (overlapped,
//! or blocking where the handle was not opened for overlapped I/O).

use std::future::Future;
use std::io;

use crate::listener::Stream;
use crate::output::OutBuf;

/// Stack of the thread that drives an inline connection: it runs the application (Python, with
/// its deep recursion in template engines and ORMs), so it gets a main thread's 8 MiB.
pub(crate) const INLINE_THREAD_STACK: usize = 8 * 1024 * 1024;

/// A connection's transport as a plain thread writes it. Valid while the connection's driver
/// holds the stream it came from (the driver lends it only for the length of an inline call).
#[derive(Debug, Clone)]
pub(crate) struct Writer(Inner);

#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
struct Inner(std::os::fd::RawFd);

#[cfg(windows)]
#[derive(Debug, Clone)]
struct Inner(std::sync::Arc<windows::PipeWriter>);

#[cfg(windows)]
pub(crate) use windows::write_blocking;

impl Writer {
    /// The writer of `stream`, where its transport has one (on Windows, the named pipe only).
    pub(crate) fn for_stream(stream: &Stream) -> Option<Writer> {
        #[cfg(unix)]
        return Some(Writer(Inner(std::os::fd::AsRawFd::as_raw_fd(stream))));
        #[cfg(windows)]
        return stream.pipe_writer();
    }

    /// The writer of a socket a test holds (and keeps open).
    #[cfg(all(test, unix))]
    pub(crate) fn for_fd(fd: std::os::fd::RawFd) -> Writer {
        Writer(Inner(fd))
    }

    /// The writer of the named pipe instance `handle` (which must outlive it): with overlapped
    /// writes of its own if the handle was opened for overlapped I/O, else blocking ones.
    #[cfg(windows)]
    pub(crate) fn for_pipe(
        handle: windows_sys::Win32::Foundation::HANDLE,
        overlapped: bool,
    ) -> io::Result<Writer> {
        windows::PipeWriter::new(handle, overlapped).map(|w| Writer(Inner(std::sync::Arc::new(w))))
    }

    /// Sends what `out` holds: with `wait`, until it is empty (waiting while the transport is
    /// full), else as far as the transport takes it now. A peer that has gone is an error,
    /// never a signal.
    pub(crate) fn send(&self, out: &mut OutBuf, wait: bool) -> io::Result<()> {
        #[cfg(unix)]
        return unix::send(self.0 .0, out, wait);
        #[cfg(windows)]
        return self.0 .0.send(out, wait);
    }

    /// Waits until nothing this writer took is still on its way to the transport: the driver
    /// writes through its own path next, and nothing may overtake what the request wrote.
    /// (A Unix socket has taken whatever `send` reported sent; an overlapped pipe write may
    /// still be in progress.)
    pub(crate) fn settle(&self) -> io::Result<()> {
        #[cfg(unix)]
        return Ok(());
        #[cfg(windows)]
        return self.0 .0.send(&mut OutBuf::default(), true);
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

#[cfg(windows)]
mod windows {
    //! The named pipe's [`Writer`](super::Writer). All its unsafe Win32 FFI is here.
    //!
    //! The pipe handle is registered with the runtime's completion port (tokio reads and writes
    //! it too). A write of ours must not post a completion packet there (tokio would take our
    //! OVERLAPPED for one of its own): its event handle has the low bit set, which tells the
    //! system not to queue one, and completion is learnt from the event. The bytes are copied
    //! into a buffer that lives as long as the write: the system reads it until it completes.
    //! A write tokio still has in progress when the driver lends its output goes out ahead of
    //! ours: a pipe completes writes in the order they were issued.
    use std::io::{self, IoSlice};
    use std::sync::{Mutex, MutexGuard};

    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, HANDLE, WAIT_FAILED,
    };
    use windows_sys::Win32::Storage::FileSystem::WriteFile;
    use windows_sys::Win32::System::Threading::{
        CreateEventW, ResetEvent, WaitForSingleObject, INFINITE,
    };
    use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

    use crate::output::OutBuf;

    /// Bytes one write takes from the output at most (the default response buffer's size).
    const WRITE_CHUNK: usize = 256 * 1024;

    pub(crate) struct PipeWriter {
        /// The pipe (owned by the listener's instance, which outlives this writer's use).
        handle: usize,
        /// A manual-reset event signalled when an overlapped write completes; 0 when the handle
        /// is blocking.
        event: usize,
        state: Mutex<State>,
    }

    impl std::fmt::Debug for PipeWriter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PipeWriter")
                .field("overlapped", &(self.event != 0))
                .finish_non_exhaustive()
        }
    }

    struct State {
        /// The write in progress's OVERLAPPED (boxed: the system writes to it until the write
        /// completes, wherever this state is).
        overlapped: Box<OVERLAPPED>,
        /// The bytes of the current write: `buf[..done]` are written, `buf[done..]` are in
        /// progress (if `pending`) or yet to be written.
        buf: Vec<u8>,
        done: usize,
        pending: bool,
    }

    // SAFETY: OVERLAPPED holds a pointer only as the system's scratch space; the state is used
    // under its mutex by one thread at a time, from whichever thread.
    unsafe impl Send for State {}

    fn last_error() -> io::Error {
        io::Error::last_os_error()
    }

    /// Writes `data` (as much as one call takes) to a handle opened without
    /// FILE_FLAG_OVERLAPPED, waiting while the pipe is full; the bytes written.
    ///
    /// # Safety
    /// `handle` must be an open synchronous file or pipe handle.
    pub(crate) unsafe fn write_blocking(handle: HANDLE, data: &[u8]) -> io::Result<usize> {
        let len = data.len().min(u32::MAX as usize) as u32;
        let mut n = 0u32;
        // SAFETY: `data` is valid for `len` bytes; the caller vouches for the handle, which
        // is synchronous, so the call returns when the bytes are written.
        if unsafe { WriteFile(handle, data.as_ptr(), len, &mut n, std::ptr::null_mut()) } == 0 {
            return Err(last_error());
        }
        Ok(n as usize)
    }

    impl PipeWriter {
        pub(crate) fn new(handle: HANDLE, overlapped: bool) -> io::Result<PipeWriter> {
            let event = if overlapped {
                // SAFETY: a manual-reset, unsignalled, unnamed event with default security.
                let event =
                    unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) } as usize;
                if event == 0 {
                    return Err(last_error());
                }
                event
            } else {
                0
            };
            Ok(PipeWriter {
                handle: handle as usize,
                event,
                state: Mutex::new(State {
                    // SAFETY: OVERLAPPED is plain data; zero is its initial state.
                    overlapped: Box::new(unsafe { std::mem::zeroed() }),
                    buf: Vec::new(),
                    done: 0,
                    pending: false,
                }),
            })
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// See [`Writer::send`](super::Writer::send). A blocking handle takes each write whole
        /// (waiting while the pipe is full), `wait` or not.
        pub(crate) fn send(&self, out: &mut OutBuf, wait: bool) -> io::Result<()> {
            let mut guard = self.lock();
            let st = &mut *guard;
            loop {
                if st.pending {
                    if wait {
                        self.wait_event()?;
                    }
                    match self.result(st) {
                        Ok(Some(n)) => st.done += n,
                        // In progress, and not to be waited for: the rest goes later.
                        Ok(None) => return Ok(()),
                        Err(e) => {
                            st.buf.clear();
                            st.done = 0;
                            return Err(e);
                        }
                    }
                }
                if st.done < st.buf.len() {
                    if let Err(e) = self.start(st) {
                        st.buf.clear();
                        st.done = 0;
                        return Err(e);
                    }
                    continue;
                }
                if out.is_empty() {
                    return Ok(());
                }
                fill(st, out);
            }
        }

        /// Starts writing `buf[done..]`: done at once (`done` moves on) or pending.
        fn start(&self, st: &mut State) -> io::Result<()> {
            let rest = &st.buf[st.done..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            if self.event == 0 {
                // SAFETY: the handle is a synchronous pipe, open while this writer is used.
                st.done += unsafe { write_blocking(self.handle as HANDLE, rest) }?;
                return Ok(());
            }
            // SAFETY: OVERLAPPED is plain data; a fresh one per write.
            *st.overlapped = unsafe { std::mem::zeroed() };
            // Low bit set: no completion packet for tokio's port; the event says when.
            st.overlapped.hEvent = (self.event | 1) as HANDLE;
            // SAFETY: the event is ours.
            unsafe { ResetEvent(self.event as HANDLE) };
            // SAFETY: `buf` and `overlapped` stay where they are, untouched, until the write
            // completes: `pending` keeps them (see `send` and Drop).
            let ok = unsafe {
                WriteFile(
                    self.handle as HANDLE,
                    rest.as_ptr(),
                    len,
                    std::ptr::null_mut(),
                    &mut *st.overlapped,
                )
            };
            // SAFETY: reads the calling thread's last error.
            if ok == 0 && unsafe { GetLastError() } != ERROR_IO_PENDING {
                return Err(last_error());
            }
            // Done at once or not, the OVERLAPPED has the outcome once it is complete.
            st.pending = true;
            Ok(())
        }

        /// The pending write's outcome: the bytes written, or `None` while it is in progress.
        fn result(&self, st: &mut State) -> io::Result<Option<usize>> {
            let mut n = 0u32;
            // SAFETY: the OVERLAPPED of the write in progress on this handle; no waiting.
            let ok =
                unsafe { GetOverlappedResult(self.handle as HANDLE, &*st.overlapped, &mut n, 0) };
            if ok == 0 {
                let err = last_error();
                if err.raw_os_error() == Some(ERROR_IO_INCOMPLETE as i32) {
                    return Ok(None);
                }
                st.pending = false;
                return Err(err);
            }
            st.pending = false;
            Ok(Some(n as usize))
        }

        fn wait_event(&self) -> io::Result<()> {
            // SAFETY: the event is ours and open.
            if unsafe { WaitForSingleObject(self.event as HANDLE, INFINITE) } == WAIT_FAILED {
                return Err(last_error());
            }
            Ok(())
        }
    }

    /// Takes the next bytes of `out` (at most WRITE_CHUNK) into the write buffer.
    fn fill(st: &mut State, out: &mut OutBuf) {
        st.buf.clear();
        st.done = 0;
        let mut slices = [IoSlice::new(&[]); 32];
        let n = out.slices(&mut slices);
        for slice in &slices[..n] {
            let take = slice.len().min(WRITE_CHUNK - st.buf.len());
            st.buf.extend_from_slice(&slice[..take]);
            if st.buf.len() == WRITE_CHUNK {
                break;
            }
        }
        let taken = st.buf.len();
        out.advance(taken);
    }

    impl Drop for PipeWriter {
        fn drop(&mut self) {
            if self.event == 0 {
                return;
            }
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            if st.pending {
                // The system still owns the buffer: wait for it to finish (closing the pipe
                // ends a write in progress).
                let _ = self.wait_event();
            }
            // SAFETY: the event is ours, and nothing waits on it any more.
            unsafe { CloseHandle(self.event as HANDLE) };
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
