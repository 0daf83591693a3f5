//! Where connections come from.
//!
//! - `host:port` (IPv4 or IPv6): a TCP listener.
//! - `unix:/path`: a Unix socket, with an optional file mode.
//! - fd 0, as web servers that spawn the application pass it: a listening socket
//!   (`FCGI_LISTENSOCK_FILENO`: Apache mod_fcgid, lighttpd, spawn-fcgi) is accepted on; a
//!   connected stream (IIS hands over one connected pipe; on Unix a socketpair stands in for it)
//!   is served as the one connection of the process's life.
//!
//! A transport (as the Windows named pipe and IIS's Tcp mode are) is one more [`Listener`] variant
//! producing one more [`Stream`] variant; the connection driver is generic over the stream.

use std::fmt;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

/// A `--listen` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `host:port`; the host may be a name, an IPv4 address or a bracketed IPv6 address.
    Tcp(String),
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address {addr:?}: {why} (expected host:port, [ipv6]:port or unix:/path)")]
pub struct InvalidListenAddr {
    pub addr: String,
    pub why: &'static str,
}

impl FromStr for ListenAddr {
    type Err = InvalidListenAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| InvalidListenAddr {
            addr: s.to_owned(),
            why,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("the socket path is empty"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| invalid("there is no port"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty (use 127.0.0.1 or 0.0.0.0)"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid("an IPv6 address must be in brackets"));
        }
        port.parse::<u16>()
            .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
        Ok(ListenAddr::Tcp(s.to_owned()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => f.write_str(a),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How to create a Unix socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// File mode of a Unix socket (e.g. `0o660` so that the web server's group may connect).
    /// `None` leaves what the umask gives.
    pub unix_mode: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: the address is already in use (another wfcgi, or another server, is listening there)")]
    InUse { addr: ListenAddr },
    #[error("cannot listen on {addr}: {path} exists and is not a socket; remove it or choose another path")]
    NotASocket { addr: ListenAddr, path: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Io {
        addr: ListenAddr,
        #[source]
        source: io::Error,
    },
}

/// Who is on the other end of a connection (for logs and `FCGI_WEB_SERVER_ADDRS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
    /// The connection inherited on fd 0.
    Inherited,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
            Peer::Inherited => f.write_str("fd0"),
        }
    }
}

/// A source of connections.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix {
        listener: UnixListener,
        /// Removed when the listener is dropped.
        path: Option<PathBuf>,
    },
    /// One connection handed over already connected; `None` once it has been taken.
    Connected(Option<Stream>),
    /// IIS's NamedPipe mode: the server end of a named pipe instance, handed over as standard
    /// input; the web server connects (or has connected) its client end.
    #[cfg(windows)]
    Pipe(inherited_windows::PipeListener),
    /// Connected sockets another process handed over (see [`HandOver`](crate::HandOver)).
    #[cfg(unix)]
    Adopted(Adopted),
}

/// Connections handed over by another process, arriving as descriptors: each is served as
/// if accepted here. Those still queued when the listener is dropped (the server stopped
/// accepting) go to `unaccepted`, to be handed on rather than closed.
#[cfg(unix)]
pub struct Adopted {
    arriving: tokio::sync::mpsc::UnboundedReceiver<std::os::fd::OwnedFd>,
    unaccepted: Box<dyn Fn(std::os::fd::OwnedFd) + Send + Sync>,
}

#[cfg(unix)]
impl fmt::Debug for Adopted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Adopted")
    }
}

#[cfg(unix)]
impl Drop for Adopted {
    fn drop(&mut self) {
        self.arriving.close();
        while let Ok(fd) = self.arriving.try_recv() {
            (self.unaccepted)(fd);
        }
    }
}

impl Listener {
    pub async fn bind(addr: &ListenAddr, options: BindOptions) -> Result<Listener, BindError> {
        #[cfg(not(unix))]
        let _ = options; // only Unix sockets have a file mode
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::AddrInUse {
                BindError::InUse { addr: addr.clone() }
            } else {
                BindError::Io {
                    addr: addr.clone(),
                    source,
                }
            }
        };
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await.map_err(io_err)?)),
            #[cfg(unix)]
            ListenAddr::Unix(path) => {
                remove_stale_socket(addr, path)?;
                let listener = UnixListener::bind(path).map_err(io_err)?;
                if let Some(mode) = options.unix_mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(io_err)?;
                }
                Ok(Listener::Unix {
                    listener,
                    path: Some(path.clone()),
                })
            }
            #[cfg(not(unix))]
            ListenAddr::Unix(_) => Err(io_err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Unix sockets are not available on this platform",
            ))),
        }
    }

    /// The socket a spawning web server passed on fd 0: accepted on if it is listening, served
    /// as the process's one connection if it is connected. fd 0 is replaced by `/dev/null`
    /// (so that closing our connection really closes it, and nothing else reads it).
    #[cfg(unix)]
    pub fn from_stdin() -> io::Result<Listener> {
        inherited::take_fd0()
    }

    /// fd 0 when it is a listening socket (Apache mod_fcgid, lighttpd, spawn-fcgi pass one),
    /// taken as a plain descriptor to hand down to worker processes; fd 0 is replaced by
    /// `/dev/null`. `None` (fd 0 untouched) when it is anything else.
    #[cfg(unix)]
    pub fn take_stdin_if_listening() -> io::Result<Option<std::os::fd::OwnedFd>> {
        inherited::take_fd0_if_listening()
    }

    /// A listening socket handed down by a parent process (wfcgi's supervisor passes its
    /// sockets to its workers), TCP or Unix by its address family. A Unix socket's file is
    /// left alone on drop: it belongs to the parent.
    #[cfg(unix)]
    pub fn from_listening_fd(fd: std::os::fd::OwnedFd) -> io::Result<Listener> {
        inherited::listening(fd)
    }

    /// The listening socket's descriptor, to hand down to a child process (`None` for a
    /// connection that is not a listener).
    #[cfg(unix)]
    pub fn listening_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Listener::Tcp(l) => Some(l.as_fd()),
            Listener::Unix { listener, .. } => Some(listener.as_fd()),
            Listener::Connected(_) | Listener::Adopted(_) => None,
        }
    }

    /// Serves the connected sockets that arrive on `arriving` (handed over by another process);
    /// any not yet accepted when the server stops accepting go to `unaccepted`.
    #[cfg(unix)]
    pub fn adopting(
        arriving: tokio::sync::mpsc::UnboundedReceiver<std::os::fd::OwnedFd>,
        unaccepted: impl Fn(std::os::fd::OwnedFd) + Send + Sync + 'static,
    ) -> Listener {
        Listener::Adopted(Adopted {
            arriving,
            unaccepted: Box::new(unaccepted),
        })
    }

    /// On Windows, IIS hands over a named pipe (its default, NamedPipe mode) or, in its Tcp
    /// mode, a listening socket as the standard input handle. The socket is registered with the
    /// calling thread's runtime (call it inside one); the pipe with that of the thread that
    /// serves it (see [`Server`](crate::Server)).
    #[cfg(windows)]
    pub fn from_stdin() -> io::Result<Listener> {
        inherited_windows::take_stdin()
    }

    /// Whether this listener is served by a thread of its own: the Windows named pipe, whose
    /// handle is registered with the runtime of the thread that first accepts on it.
    pub(crate) fn wants_own_thread(&self) -> bool {
        #[cfg(windows)]
        if matches!(self, Listener::Pipe(_)) {
            return true;
        }
        false
    }

    /// Whether this listener yields one connection only (after which the server is done).
    pub fn is_single_connection(&self) -> bool {
        #[cfg(windows)]
        if matches!(self, Listener::Pipe(_)) {
            return true;
        }
        matches!(self, Listener::Connected(_))
    }

    /// Waits for the next connection; `None` when there will be no more: a
    /// [`Listener::Connected`] yields its one stream, the IIS pipe a connection at a time until
    /// the web server closes it.
    pub async fn accept(&mut self) -> io::Result<Option<(Stream, Peer)>> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                // Responses are written whole; Nagle would only delay the last record.
                s.set_nodelay(true)?;
                Ok(Some((Stream::Tcp(s), Peer::Tcp(peer))))
            }
            #[cfg(unix)]
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                Ok(Some((Stream::Unix(s), Peer::Unix)))
            }
            Listener::Connected(stream) => Ok(stream.take().map(|s| (s, Peer::Inherited))),
            #[cfg(unix)]
            Listener::Adopted(a) => match a.arriving.recv().await {
                Some(fd) => inherited::connected(fd).map(Some),
                None => Ok(None),
            },
            #[cfg(windows)]
            Listener::Pipe(pipe) => Ok(pipe
                .accept()
                .await?
                .map(|conn| (Stream::Pipe(conn), Peer::Inherited))),
        }
    }

    /// A description for the log: the bound address, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            #[cfg(unix)]
            Listener::Unix { path, .. } => match path {
                Some(p) => format!("unix:{}", p.display()),
                None => "unix:(inherited)".into(),
            },
            Listener::Connected(_) => "fd0 (connected)".into(),
            #[cfg(unix)]
            Listener::Adopted(_) => "connections handed over by other workers".into(),
            #[cfg(windows)]
            Listener::Pipe(_) => "the named pipe on standard input (IIS NamedPipe mode)".into(),
        }
    }
}

#[cfg(unix)]
impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix {
            path: Some(path), ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A socket file left by a process that died is removed; one that answers is in use.
#[cfg(unix)]
fn remove_stale_socket(addr: &ListenAddr, path: &Path) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            addr: addr.clone(),
            path: path.to_owned(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse { addr: addr.clone() });
    }
    std::fs::remove_file(path).map_err(|source| BindError::Io {
        addr: addr.clone(),
        source,
    })
}

/// One connection's byte stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
    /// The server end of IIS's named pipe, one connection of it.
    #[cfg(windows)]
    Pipe(inherited_windows::PipeConn),
}

impl Stream {
    /// The writer of requests that run inline, for the named pipe (the only Windows transport
    /// with one).
    #[cfg(windows)]
    pub(crate) fn pipe_writer(&self) -> Option<crate::transport::Writer> {
        match self {
            Stream::Pipe(conn) => conn.writer(),
            _ => None,
        }
    }

    /// The connection ended after the web server asked for that (a request without
    /// FCGI_KEEP_CONN): its closing first was the expected end, not the web server going
    /// away. On IIS's named pipe, the instance is then connected again for the next.
    pub(crate) fn closed_as_asked(&mut self) {
        #[cfg(windows)]
        if let Stream::Pipe(conn) = self {
            conn.closed_as_asked();
        }
    }

    /// The socket itself, taken off the runtime: to hand it to another process.
    #[cfg(unix)]
    pub fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            Stream::Tcp(s) => s.into_std()?.into(),
            Stream::Unix(s) => s.into_std()?.into(),
        })
    }

    /// The same socket registered with the runtime of the calling thread (it was registered with
    /// the one that accepted it), so that its readiness wakes this runtime.
    pub(crate) fn rebind(self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            #[cfg(unix)]
            Stream::Unix(s) => Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            // A handle belongs to one completion port for its life: it cannot move runtimes.
            #[cfg(windows)]
            Stream::Pipe(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a named pipe cannot move to another runtime",
                ))
            }
        })
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl crate::driver::Transport for Stream {
    /// On Unix sockets (see the `AsyncRead` impl): an idle connection then gives its read
    /// buffer back until the next request arrives, so that thousands of kept-alive connections
    /// cost little. Windows' sockets and IIS's pipe serve a few connections: they keep theirs.
    fn waits_without_buffer(&self) -> bool {
        match self {
            Stream::Tcp(_) => cfg!(unix),
            #[cfg(unix)]
            Stream::Unix(_) => true,
            #[cfg(windows)]
            Stream::Pipe(_) => false,
        }
    }
}

/// A read into a buffer with no room waits until the stream is readable and reads nothing:
/// what tokio's own sockets do, less their zero-length `recv`. A connection waits for its next
/// request that way without holding a read buffer (`driver::Transport`).
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Stream::Tcp(s) if buf.remaining() == 0 => s.poll_read_ready(cx),
            #[cfg(unix)]
            Stream::Unix(s) if buf.remaining() == 0 => s.poll_read_ready(cx),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(windows)]
            Stream::Pipe(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(windows)]
            Stream::Pipe(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(windows)]
            Stream::Pipe(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            #[cfg(windows)]
            Stream::Pipe(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(windows)]
            Stream::Pipe(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(windows)]
mod inherited_windows {
    //! The standard input handle as IIS passes it. All the unsafe Win32 FFI of the listener is
    //! here.
    use super::*;
    use std::future::Future;
    use std::os::windows::io::{AsRawHandle, RawHandle};
    use std::time::Duration;
    use tokio::net::windows::named_pipe::NamedPipeServer;
    use tokio::sync::oneshot;
    use windows_sys::Win32::Foundation::{
        CloseHandle, DuplicateHandle, GetLastError, DUPLICATE_SAME_ACCESS, ERROR_BROKEN_PIPE,
        ERROR_PIPE_CONNECTED, ERROR_PIPE_NOT_CONNECTED, HANDLE, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Storage::FileSystem::{FlushFileBuffers, ReadFile};
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_INPUT_HANDLE};
    use windows_sys::Win32::System::Pipes::{
        ConnectNamedPipe, DisconnectNamedPipe, PeekNamedPipe, SetNamedPipeHandleState,
        PIPE_READMODE_BYTE,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;

    use crate::transport::Writer;

    pub(super) fn take_stdin() -> io::Result<Listener> {
        // SAFETY: GetStdHandle only reads the process's standard handle table.
        let handle: HANDLE = unsafe { GetStdHandle(STD_INPUT_HANDLE) };
        if handle.is_null() || handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "there is no standard input handle: `wfcgi` alone is started by IIS, with its \
                 named pipe as standard input; to listen on an address, run `wfcgi serve`",
            ));
        }
        // libfcgi's test: setting the read mode succeeds on a named pipe and fails (error 6,
        // invalid handle) on a socket.
        let mode = PIPE_READMODE_BYTE;
        // SAFETY: `handle` is this process's standard input; `mode` outlives the call; the
        // other two arguments may be null.
        let is_pipe =
            unsafe { SetNamedPipeHandleState(handle, &mode, std::ptr::null(), std::ptr::null()) }
                != 0;
        if !is_pipe {
            return take_listening_socket(handle);
        }
        // Registered with a runtime's completion port only when first accepted on: by the
        // thread that serves it (see `PipeListener::prepare`).
        Ok(Listener::Pipe(PipeListener {
            raw: Some(handle as usize),
            instance: None,
            back: None,
        }))
    }

    /// Whether `handle` is a listening socket (`SO_ACCEPTCONN`). Wine answers WSAENOTSOCK for
    /// an inherited socket that works, so only a definite "not listening" counts.
    fn socket_listening(handle: HANDLE) -> io::Result<bool> {
        use windows_sys::Win32::Networking::WinSock::{
            getsockopt, WSAStartup, SOCKET, SOL_SOCKET, SO_ACCEPTCONN, WSADATA,
        };
        // SAFETY: WSADATA is plain data that WSAStartup fills; it may be called more than once.
        let mut data: WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { WSAStartup(0x0202, &mut data) };
        let mut listening: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as i32;
        // SAFETY: `listening` and `len` are valid for the call; a handle that is not a socket
        // makes it fail (WSAENOTSOCK), nothing worse.
        let ok = unsafe {
            getsockopt(
                handle as SOCKET,
                SOL_SOCKET,
                SO_ACCEPTCONN,
                (&raw mut listening).cast(),
                &mut len,
            )
        } == 0;
        if ok {
            Ok(listening != 0)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// IIS's Tcp mode: standard input is a listening socket.
    fn take_listening_socket(handle: HANDLE) -> io::Result<Listener> {
        use std::os::windows::io::{FromRawSocket, RawSocket};
        if let Ok(false) = socket_listening(handle) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "standard input is a connected socket, not the listening socket IIS's Tcp mode \
                 hands over",
            ));
        }
        // SAFETY: standard input, not a pipe, so a socket (libfcgi's reasoning), owned by this
        // process from now on (nothing else uses standard input). If it is not a socket at all,
        // the next call says so.
        let listener = unsafe { std::net::TcpListener::from_raw_socket(handle as RawSocket) };
        let local = match listener.local_addr() {
            Ok(local) => local,
            Err(e) => {
                // Not a socket: forget it rather than close a handle that is not one.
                std::mem::forget(listener);
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "standard input is neither a named pipe (IIS's NamedPipe mode) nor a \
                         listening socket (its Tcp mode) ({e}): `wfcgi` alone is started by \
                         IIS; to listen on an address, run `wfcgi serve --listen 127.0.0.1:9000`"
                    ),
                ));
            }
        };
        tracing::debug!(%local, "standard input is a listening socket (IIS Tcp mode)");
        listener.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(listener)?))
    }

    /// The pipe instance between connections. A web server may keep one connection for the
    /// process's life (FCGI_KEEP_CONN: IIS does), or, like libfcgi's peers, have wfcgi close
    /// it after each request: the instance is then disconnected (once the web server has read
    /// everything) and connected again for the next.
    #[derive(Debug)]
    pub struct PipeListener {
        /// The handle as inherited, until the first accept takes it.
        raw: Option<usize>,
        /// `None` while a connection has it.
        instance: Option<Instance>,
        /// Where the current connection gives the instance back when it ends.
        back: Option<oneshot::Receiver<(Instance, bool)>>,
    }

    /// The pipe instance with its I/O, and the writer of requests that run inline.
    #[derive(Debug)]
    struct Instance {
        // Dropped first: closing the pipe ends a write of the writer still in progress.
        io: PipeIo,
        writer: Writer,
    }

    #[derive(Debug)]
    enum PipeIo {
        /// Opened for overlapped I/O (as IIS opens it): registered with the runtime.
        Overlapped(NamedPipeServer),
        /// Not: read when data is there, written with blocking calls, on the thread that
        /// serves the pipe (see [`BlockingPipe`]).
        Blocking(BlockingPipe),
    }

    impl PipeListener {
        /// Registers the handle with the calling thread's runtime, or, where that fails (a
        /// handle not opened for overlapped I/O), serves it with blocking I/O.
        fn prepare(&mut self) -> io::Result<()> {
            let Some(raw) = self.raw.take() else {
                return Ok(());
            };
            let handle = raw as HANDLE;
            // tokio closes a handle it fails to register: try with a duplicate.
            let mut dup: HANDLE = std::ptr::null_mut();
            // SAFETY: duplicates this process's own handle into `dup`, with the same access.
            let ok = unsafe {
                DuplicateHandle(
                    GetCurrentProcess(),
                    handle,
                    GetCurrentProcess(),
                    &mut dup,
                    0,
                    0,
                    DUPLICATE_SAME_ACCESS,
                )
            };
            let registered = if ok == 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: `dup` is a handle to the server end of the named pipe, owned by
                // tokio from now on (it closes it if registering fails).
                unsafe { NamedPipeServer::from_raw_handle(dup as RawHandle) }
            };
            let instance = match registered {
                Ok(server) => {
                    // SAFETY: the inherited handle, which nothing else uses (tokio has the
                    // duplicate).
                    unsafe { CloseHandle(handle) };
                    let writer = Writer::for_pipe(server.as_raw_handle() as HANDLE, true)?;
                    tracing::debug!("the named pipe on standard input is served overlapped");
                    Instance {
                        io: PipeIo::Overlapped(server),
                        writer,
                    }
                }
                Err(e) => {
                    tracing::info!(
                        error = %e,
                        "the named pipe on standard input was not opened for overlapped I/O: \
                         serving it with blocking I/O"
                    );
                    Instance {
                        writer: Writer::for_pipe(handle, false)?,
                        io: PipeIo::Blocking(BlockingPipe::new(handle)),
                    }
                }
            };
            self.instance = Some(instance);
            Ok(())
        }

        /// The next connection; `None` once the web server has closed its end (the process is
        /// done, as wfastcgi was at the end of its pipe).
        pub(super) async fn accept(&mut self) -> io::Result<Option<PipeConn>> {
            self.prepare().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot serve the named pipe on standard input: {e}"),
                )
            })?;
            if let Some(back) = self.back.take() {
                let Ok((instance, peer_closed)) = back.await else {
                    return Ok(None);
                };
                if peer_closed {
                    return Ok(None);
                }
                // wfcgi closed the connection (a request without FCGI_KEEP_CONN): let the web
                // server read all of the response first (DisconnectNamedPipe discards what is
                // unread), then free the instance for its next connection.
                let raw = instance.raw() as usize;
                // SAFETY: the pipe's handle, kept open by `instance`, which is not used until
                // the flush returns.
                off_thread(move || unsafe { FlushFileBuffers(raw as HANDLE) }).await?;
                // SAFETY: as above; the instance's connection has ended.
                if unsafe { DisconnectNamedPipe(instance.raw()) } == 0 {
                    return Err(io::Error::last_os_error());
                }
                tracing::debug!(
                    "named pipe disconnected after the connection; waiting for the next"
                );
                self.instance = Some(instance);
            }
            let Some(instance) = self.instance.take() else {
                return Ok(None);
            };
            // Ok at once when the web server connected first (ERROR_PIPE_CONNECTED).
            match &instance.io {
                PipeIo::Overlapped(server) => server.connect().await?,
                PipeIo::Blocking(_) => {
                    let raw = instance.raw() as usize;
                    // SAFETY: the pipe's handle, kept open by `instance` until this returns
                    // (or the process ends).
                    off_thread(move || {
                        // SAFETY: as above; waits until the web server connects.
                        let ok = unsafe { ConnectNamedPipe(raw as HANDLE, std::ptr::null_mut()) };
                        // SAFETY: reads the calling thread's last error.
                        if ok != 0 || unsafe { GetLastError() } == ERROR_PIPE_CONNECTED {
                            Ok(())
                        } else {
                            Err(io::Error::last_os_error())
                        }
                    })
                    .await??;
                }
            }
            let (tx, rx) = oneshot::channel();
            self.back = Some(rx);
            Ok(Some(PipeConn {
                instance: Some(instance),
                fresh: true,
                peer_closed: false,
                back: Some(tx),
            }))
        }
    }

    impl Instance {
        fn raw(&self) -> HANDLE {
            match &self.io {
                PipeIo::Overlapped(server) => server.as_raw_handle() as HANDLE,
                PipeIo::Blocking(pipe) => pipe.handle as HANDLE,
            }
        }
    }

    /// Runs a blocking call on a thread of its own (not the runtime's blocking pool: a call
    /// that never returns, such as ConnectNamedPipe when no client comes, must not hold up the
    /// runtime's shutdown).
    async fn off_thread<T: Send + 'static>(
        call: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("wfcgi-pipe".into())
            .spawn(move || {
                let _ = tx.send(call());
            })?;
        rx.await
            .map_err(|_| io::Error::other("a named pipe call's thread panicked"))
    }

    /// One connection on the pipe instance, which goes back to the [`PipeListener`] when the
    /// connection ends, with whether the web server closed it.
    #[derive(Debug)]
    pub struct PipeConn {
        instance: Option<Instance>,
        /// No read has finished yet: the first may give the last connection's stale result.
        fresh: bool,
        peer_closed: bool,
        back: Option<oneshot::Sender<(Instance, bool)>>,
    }

    impl PipeConn {
        fn io(&mut self) -> &mut PipeIo {
            &mut self.instance.as_mut().expect("present until drop").io
        }

        /// See [`Stream::closed_as_asked`]: a read that met the end of the connection
        /// does not mean that the web server is gone.
        pub(crate) fn closed_as_asked(&mut self) {
            self.peer_closed = false;
        }

        /// The writer of requests that run inline on this connection.
        pub(crate) fn writer(&self) -> Option<Writer> {
            self.instance.as_ref().map(|i| i.writer.clone())
        }
    }

    impl Drop for PipeConn {
        fn drop(&mut self) {
            if let (Some(instance), Some(back)) = (self.instance.take(), self.back.take()) {
                let _ = back.send((instance, self.peer_closed));
            }
        }
    }

    impl AsyncRead for PipeConn {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let fresh = this.fresh;
            let result = match this.io() {
                PipeIo::Overlapped(server) => {
                    let mut result = Pin::new(&mut *server).poll_read(cx, buf);
                    // The read tokio had in progress when the last connection ended failed
                    // then, and reports it now: not connected (wfcgi disconnected first), or
                    // the end of the stream (the web server closed first, after a request
                    // without FCGI_KEEP_CONN). It belongs to that connection, not this one: read
                    // again (a client that really closed at once gives the end again).
                    let stale_end =
                        matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() == before;
                    if fresh && (is_not_connected(&result) || stale_end) {
                        result = Pin::new(server).poll_read(cx, buf);
                    }
                    result
                }
                PipeIo::Blocking(pipe) => pipe.poll_read(cx, buf),
            };
            // One stale result at most: whatever the read gives after it is this connection's.
            if result.is_ready() {
                this.fresh = false;
            }
            match &result {
                Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                    this.peer_closed = true;
                }
                // A broken pipe is the web server gone too.
                Poll::Ready(Err(_)) => this.peer_closed = true,
                _ => {}
            }
            result
        }
    }

    fn is_not_connected(result: &Poll<io::Result<()>>) -> bool {
        matches!(result, Poll::Ready(Err(e)) if e.raw_os_error() == Some(ERROR_PIPE_NOT_CONNECTED as i32))
    }

    impl AsyncWrite for PipeConn {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match self.get_mut().io() {
                PipeIo::Overlapped(server) => Pin::new(server).poll_write(cx, buf),
                PipeIo::Blocking(pipe) => Poll::Ready(pipe.write(&[io::IoSlice::new(buf)])),
            }
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            match self.get_mut().io() {
                PipeIo::Overlapped(server) => Pin::new(server).poll_write_vectored(cx, bufs),
                PipeIo::Blocking(pipe) => Poll::Ready(pipe.write(bufs)),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match self.get_mut().io() {
                PipeIo::Overlapped(server) => Pin::new(server).poll_flush(cx),
                PipeIo::Blocking(_) => Poll::Ready(Ok(())),
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // The pipe stays open for the next connection; the listener disconnects it.
            self.poll_flush(cx)
        }
    }

    /// A pipe handle opened without FILE_FLAG_OVERLAPPED, as some web servers and test tools
    /// pass it. Every call on such a handle waits for the ones before it to finish, so a read
    /// that waits for data would hold back every write: it is read only when PeekNamedPipe
    /// says that bytes are there, and looked at again a moment later (1 ms, doubling to
    /// 16 ms while idle) when none are. Writes block the serving thread while the pipe is
    /// full, as any blocking writer does.
    #[derive(Debug)]
    struct BlockingPipe {
        handle: usize,
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
        delay: Duration,
    }

    const PEEK_FIRST: Duration = Duration::from_millis(1);
    const PEEK_MOST: Duration = Duration::from_millis(16);

    impl BlockingPipe {
        fn new(handle: HANDLE) -> BlockingPipe {
            BlockingPipe {
                handle: handle as usize,
                idle: None,
                delay: PEEK_FIRST,
            }
        }

        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            loop {
                let mut available = 0u32;
                // SAFETY: a peek of no bytes; only `available` is written.
                let ok = unsafe {
                    PeekNamedPipe(
                        self.handle as HANDLE,
                        std::ptr::null_mut(),
                        0,
                        std::ptr::null_mut(),
                        &mut available,
                        std::ptr::null_mut(),
                    )
                };
                if ok == 0 {
                    let e = io::Error::last_os_error();
                    // The web server closed its end: the end of this connection.
                    let ended = [ERROR_BROKEN_PIPE, ERROR_PIPE_NOT_CONNECTED]
                        .iter()
                        .any(|&code| e.raw_os_error() == Some(code as i32));
                    return Poll::Ready(if ended { Ok(()) } else { Err(e) });
                }
                if available > 0 {
                    self.idle = None;
                    self.delay = PEEK_FIRST;
                    // SAFETY: ReadFile only writes into the unfilled part, and `n` of it.
                    let unfilled = unsafe { buf.unfilled_mut() };
                    let want = unfilled.len().min(available as usize) as u32;
                    let mut n = 0u32;
                    // SAFETY: `unfilled` is valid for `want` bytes; `available` bytes are in
                    // the pipe, so the call returns at once.
                    let ok = unsafe {
                        ReadFile(
                            self.handle as HANDLE,
                            unfilled.as_mut_ptr().cast(),
                            want,
                            &mut n,
                            std::ptr::null_mut(),
                        )
                    };
                    if ok == 0 {
                        return Poll::Ready(Err(io::Error::last_os_error()));
                    }
                    // SAFETY: ReadFile initialised `n` bytes.
                    unsafe { buf.assume_init(n as usize) };
                    buf.advance(n as usize);
                    return Poll::Ready(Ok(()));
                }
                let delay = self.delay;
                let idle = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.idle = None;
                self.delay = (self.delay * 2).min(PEEK_MOST);
            }
        }

        /// Writes `bufs` (as much of them as one call takes, 256 KiB at most), waiting while
        /// the pipe is full.
        fn write(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            const MOST: usize = 256 * 1024;
            let mut gathered;
            let data: &[u8] = match bufs.iter().filter(|b| !b.is_empty()).count() {
                0 => return Ok(0),
                1 => bufs.iter().find(|b| !b.is_empty()).expect("one"),
                _ => {
                    gathered = Vec::with_capacity(MOST);
                    for b in bufs {
                        let take = b.len().min(MOST - gathered.len());
                        gathered.extend_from_slice(&b[..take]);
                        if gathered.len() == MOST {
                            break;
                        }
                    }
                    &gathered
                }
            };
            // SAFETY: this pipe's handle, synchronous and open.
            unsafe { crate::transport::write_blocking(self.handle as HANDLE, data) }
        }
    }

    impl Drop for BlockingPipe {
        fn drop(&mut self) {
            // SAFETY: the handle is this pipe's, closed once.
            unsafe { CloseHandle(self.handle as HANDLE) };
        }
    }
}

#[cfg(unix)]
mod inherited {
    //! fd 0 as spawning web servers pass it. All the unsafe FFI of this crate is here.
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    fn last_error(what: &str) -> io::Error {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }

    /// `SO_ACCEPTCONN` tells a listening socket from a connected one.
    /// A listening socket given as `fd`: accepted on, TCP or Unix by its family.
    pub(super) fn listening(fd: OwnedFd) -> io::Result<Listener> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        if !is_listening(raw)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {raw} is not a listening socket"),
            ));
        }
        listener_of(fd, family(raw)?)
    }

    fn listener_of(owned: OwnedFd, family: libc::sa_family_t) -> io::Result<Listener> {
        if family == libc::AF_UNIX as libc::sa_family_t {
            let l = std::os::unix::net::UnixListener::from(owned);
            l.set_nonblocking(true)?;
            Ok(Listener::Unix {
                listener: UnixListener::from_std(l)?,
                path: None,
            })
        } else {
            let l = std::net::TcpListener::from(owned);
            l.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(l)?))
        }
    }

    /// A connected socket handed over by another process, TCP or Unix by its family.
    pub(super) fn connected(fd: OwnedFd) -> io::Result<(Stream, Peer)> {
        use std::os::fd::AsRawFd;
        if family(fd.as_raw_fd())? == libc::AF_UNIX as libc::sa_family_t {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            return Ok((Stream::Unix(UnixStream::from_std(s)?), Peer::Unix));
        }
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        let peer = s.peer_addr()?;
        Ok((Stream::Tcp(TcpStream::from_std(s)?), Peer::Tcp(peer)))
    }

    fn is_listening(fd: RawFd) -> io::Result<bool> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are valid for writes and len is value's size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(last_error(&format!("getsockopt(SO_ACCEPTCONN) on fd {fd}")));
        }
        Ok(value != 0)
    }

    fn family(fd: RawFd) -> io::Result<libc::sa_family_t> {
        // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: addr and len are valid for writes and len is addr's size.
        let rc = unsafe {
            libc::getsockname(
                fd,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(last_error(&format!("getsockname on fd {fd}")));
        }
        Ok(addr.ss_family)
    }

    pub(super) fn take_fd0_if_listening() -> io::Result<Option<OwnedFd>> {
        // SAFETY: fstat writes into a zeroed, properly sized stat buffer; a closed fd 0 fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(0, &mut st) } != 0
            || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
            || !is_listening(0)?
        {
            return Ok(None);
        }
        // SAFETY: dup of an open descriptor; the result is checked below.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            return Err(last_error("dup(0)"));
        }
        // SAFETY: fd was just returned by dup and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        replace_fd0_with_dev_null()?;
        Ok(Some(owned))
    }

    pub(super) fn take_fd0() -> io::Result<Listener> {
        // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; fd 0 may be closed, which fstat reports as EBADF.
        if unsafe { libc::fstat(0, &mut st) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "fd 0 is closed: wfcgi with no subcommand serves the socket a web server passes \
                 on fd 0; to run it by hand use `wfcgi serve --listen 127.0.0.1:9000`",
            ));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fd 0 is not a socket: wfcgi with no subcommand serves the socket a web server \
                 passes on fd 0 (IIS, mod_fcgid, spawn-fcgi); to run it by hand use \
                 `wfcgi serve --listen 127.0.0.1:9000`",
            ));
        }
        let listening = is_listening(0)?;
        let family = family(0)?;
        // SAFETY: dup of an open descriptor; the result is checked below.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            return Err(last_error("dup(0)"));
        }
        // SAFETY: fd was just returned by dup and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        replace_fd0_with_dev_null()?;
        let unix = family == libc::AF_UNIX as libc::sa_family_t;
        let listener = match (listening, unix) {
            (true, _) => listener_of(owned, family)?,
            (false, true) => {
                let s = std::os::unix::net::UnixStream::from(owned);
                s.set_nonblocking(true)?;
                Listener::Connected(Some(Stream::Unix(UnixStream::from_std(s)?)))
            }
            (false, false) => {
                let s = std::net::TcpStream::from(owned);
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Listener::Connected(Some(Stream::Tcp(TcpStream::from_std(s)?)))
            }
        };
        Ok(listener)
    }

    fn replace_fd0_with_dev_null() -> io::Result<()> {
        let null = std::fs::File::open("/dev/null")?;
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open; dup2 atomically replaces fd 0.
        if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
            return Err(last_error("dup2(/dev/null, 0)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver's idle connections rely on this (`Stream::waits_without_buffer`): a read
    /// into a full buffer waits for data, reads none of it, and a real read then gets it all.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_read_without_room_waits_for_data_and_leaves_it() {
        use std::future::poll_fn;
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::driver::Transport;

        async fn wait_readable(s: &mut Stream) -> io::Result<()> {
            poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut ReadBuf::new(&mut []))).await
        }
        let (a, b) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(connect, listener.accept());
        let pairs = [
            (Stream::Unix(a), Stream::Unix(b)),
            (
                Stream::Tcp(accepted.unwrap().0),
                Stream::Tcp(client.unwrap()),
            ),
        ];
        for (mut near, mut far) in pairs {
            assert!(near.waits_without_buffer());
            // A new socket may say it is ready before anything came (tokio's accepted TCP
            // stream does); the read that finds nothing settles it, and the driver then waits.
            let mut got = [0u8; 16];
            let read_now = poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut near).poll_read(cx, &mut ReadBuf::new(&mut got)))
            });
            assert!(read_now.await.is_pending(), "{near:?} read something");
            let early = tokio::time::timeout(Duration::from_millis(50), wait_readable(&mut near));
            assert!(early.await.is_err(), "ready with nothing sent: {near:?}");
            far.write_all(b"request").await.unwrap();
            wait_readable(&mut near).await.unwrap();
            wait_readable(&mut near).await.unwrap();
            assert_eq!(near.read(&mut got).await.unwrap(), 7);
            assert_eq!(&got[..7], b"request");
            let late = tokio::time::timeout(Duration::from_millis(50), wait_readable(&mut near));
            assert!(late.await.is_err(), "ready again with nothing more sent");
            drop(far);
            wait_readable(&mut near).await.unwrap();
            assert_eq!(
                near.read(&mut got).await.unwrap(),
                0,
                "the end, after the wait"
            );
        }
    }

    #[test]
    fn listen_addresses_parse() {
        let ok = [
            ("127.0.0.1:9000", ListenAddr::Tcp("127.0.0.1:9000".into())),
            ("[::1]:0", ListenAddr::Tcp("[::1]:0".into())),
            ("localhost:9000", ListenAddr::Tcp("localhost:9000".into())),
            (
                "unix:/run/wfcgi.sock",
                ListenAddr::Unix("/run/wfcgi.sock".into()),
            ),
        ];
        for (s, expected) in ok {
            assert_eq!(s.parse::<ListenAddr>().unwrap(), expected, "{s}");
            assert_eq!(expected.to_string(), s);
        }
        let bad = [
            ("9000", "there is no port"),
            (":9000", "the host is empty"),
            ("127.0.0.1:http", "the port is not a number"),
            ("::1:9000", "in brackets"),
            ("unix:", "the socket path is empty"),
        ];
        for (s, why) in bad {
            let e = s.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(s), "{s}: {e}");
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn unix_socket_gets_its_mode_and_is_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wfcgi-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        let l = Listener::bind(
            &addr,
            BindOptions {
                unix_mode: Some(0o660),
            },
        )
        .await
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A second bind while the first answers is refused.
        let e = Listener::bind(&addr, BindOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BindError::InUse { .. }), "{e}");
        drop(l);
        assert!(!path.exists());
        // A stale socket file (nothing listening) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let l = Listener::bind(&addr, BindOptions::default()).await.unwrap();
        drop(l);
        // A regular file is never replaced.
        std::fs::write(&path, b"data").unwrap();
        let e = Listener::bind(&addr, BindOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BindError::NotASocket { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
