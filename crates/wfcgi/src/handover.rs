//! Kept-alive connections passed between processes, so that recycling a worker closes none of
//! them. Closing a web server's kept-alive connection races it: nginx may be sending the next
//! request on it at that moment, and then logs "upstream prematurely closed connection" and
//! retries, or answers 502. Instead, a draining worker hands each connection, between requests,
//! to the supervisor, which passes it to a worker that goes on serving; the web server never
//! sees a close.
//!
//! Each worker has a `SOCK_SEQPACKET` socket pair with the supervisor for this, beside the
//! control socket: one message per connection, carrying its descriptor (`SCM_RIGHTS`). Both
//! ways: the worker sends the connections it lets go and receives those it is to serve. All
//! the unsafe FFI of the hand-over is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long a send waits for room in a full socket buffer (hundreds of connections queued)
/// before the connection is closed instead.
const SEND_WAIT: Duration = Duration::from_millis(500);

/// A socket pair for handing connections over: the supervisor keeps one end, the worker
/// inherits the other. Both close on exec; the worker's end is kept open for its exec only
/// (`supervisor::child_setup`). The supervisor starts workers from its one thread, so no
/// other thread can fork between the pair's creation and `set_cloexec`.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the two-element array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, PAIR_TYPE, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are open descriptors owned by nothing else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if PAIR_TYPE == libc::SOCK_SEQPACKET {
        // No SOCK_CLOEXEC here: set right after, on the supervisor's one thread.
        set_cloexec(pair.0.as_raw_fd())?;
        set_cloexec(pair.1.as_raw_fd())?;
    }
    Ok(pair)
}

/// One end of a hand-over socket pair.
pub(crate) struct Channel(AsyncFd<OwnedFd>);

impl Channel {
    /// Call inside a runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Channel> {
        set_nonblocking(fd.as_raw_fd())?;
        // SAFETY: the channel owns `fd` and neither replaces nor closes it while registered.
        Ok(Channel(unsafe { AsyncFd::register(fd)? }))
    }

    /// The next connection handed over, `None` once the other end has closed.
    pub(crate) async fn recv(&self) -> io::Result<Option<OwnedFd>> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| recv_fd(fd.as_raw_fd())) {
                Ok(Ok(Received::Fd(fd))) => return Ok(Some(fd)),
                Ok(Ok(Received::Closed)) => return Ok(None),
                Ok(Ok(Received::Nothing)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends `fd` to the other end, waiting a little if its buffer is full. Synchronous, so
    /// that a connection handed over is on its way before the worker can exit.
    pub(crate) fn send(&self, fd: &OwnedFd) -> io::Result<()> {
        let raw = self.0.get_ref().as_raw_fd();
        loop {
            match send_fd(raw, fd.as_raw_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut poll = libc::pollfd {
                        fd: raw,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll reads and writes the one pollfd given.
                    let n = unsafe { libc::poll(&mut poll, 1, SEND_WAIT.as_millis() as i32) };
                    if n == 0 {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

/// The worker's side: connections it lets go while draining, and connections it is given.
pub(crate) struct WorkerSide {
    channel: Arc<Channel>,
    /// Set when the supervisor asks for a drain that hands connections over (a recycle or a
    /// reload, where other workers go on serving), not for a stop.
    wanted: AtomicBool,
}

impl WorkerSide {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Arc<WorkerSide>> {
        Ok(Arc::new(WorkerSide {
            channel: Arc::new(Channel::new(fd)?),
            wanted: AtomicBool::new(false),
        }))
    }

    pub(crate) fn want(&self) {
        self.wanted.store(true, Ordering::Release);
    }

    /// The listener of the connections the supervisor passes to this worker. A connection
    /// that arrives once this worker has stopped accepting is sent back, to go elsewhere.
    pub(crate) fn adopted(self: &Arc<Self>) -> fastcgi::Listener {
        let (arrived, arriving) = mpsc::unbounded_channel::<OwnedFd>();
        let bounce = self.channel.clone();
        let back = self.channel.clone();
        tokio::spawn(async move {
            loop {
                match bounce.recv().await {
                    Ok(Some(fd)) => {
                        if let Err(mpsc::error::SendError(fd)) = arrived.send(fd) {
                            send_back(&bounce, fd);
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        warn!(error = %e, "cannot receive connections from the supervisor");
                        return;
                    }
                }
            }
        });
        fastcgi::Listener::adopting(arriving, move |fd| send_back(&back, fd))
    }
}

fn send_back(channel: &Channel, fd: OwnedFd) {
    if let Err(e) = channel.send(&fd) {
        debug!(error = %e, "cannot hand a connection back to the supervisor: closing it");
    }
}

impl fastcgi::HandOver for WorkerSide {
    fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    fn hand_over(&self, stream: fastcgi::Stream) {
        match stream.into_fd() {
            Ok(fd) => send_back(&self.channel, fd),
            Err(e) => debug!(error = %e, "cannot take the connection off the runtime"),
        }
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for one descriptor's control message.
#[repr(C)]
union ControlBuffer {
    buf: [u8; 64],
    _align: libc::cmsghdr,
}

fn send_fd(socket: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [b'c'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = ControlBuffer { buf: [0; 64] };
    // SAFETY: msghdr is plain data; zeroed is a valid value, and the fields set below point
    // into buffers that outlive the sendmsg call. CMSG_* compute within the control buffer,
    // which has room for one descriptor's message (CMSG_SPACE(4) is at most 24 bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The pair is close-on-exec from the start where the system can say so.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const PAIR_TYPE: libc::c_int = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const PAIR_TYPE: libc::c_int = libc::SOCK_SEQPACKET;

/// A received descriptor is close-on-exec from the start where the system can say so.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const RECV_FLAGS: libc::c_int = 0;

enum Received {
    Fd(OwnedFd),
    /// A message without a descriptor (none is sent so; skipped).
    Nothing,
    Closed,
}

fn recv_fd(socket: RawFd) -> io::Result<Received> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = ControlBuffer { buf: [0; 64] };
    // SAFETY: as in send_fd; recvmsg writes at most msg_controllen bytes of control data, and
    // a descriptor it passes (MSG_CMSG_CLOEXEC: close-on-exec) is owned by this process.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of::<ControlBuffer>() as _;
        let n = libc::recvmsg(socket, &mut msg, RECV_FLAGS);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(Received::Closed);
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Ok(Received::Nothing);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        let fd = OwnedFd::from_raw_fd(fd);
        if RECV_FLAGS == 0 {
            set_cloexec(fd.as_raw_fd())?;
        }
        Ok(Received::Fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn a_connection_passed_over_the_pair_is_the_same_connection() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let (mut near, far) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send(&OwnedFd::from(far)).unwrap();
        let got = b.recv().await.unwrap().expect("a descriptor");
        let mut far = std::os::unix::net::UnixStream::from(got);
        near.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        far.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        drop(a);
        assert!(b.recv().await.unwrap().is_none());
    }
}
