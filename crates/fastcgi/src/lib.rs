//! The FastCGI half of wfcgi: FastCGI 1.0 for an application (the "responder" side), with no
//! Python in it. Three layers, each usable and testable alone:
//!
//! - [`protocol`]: the sans-IO record codec (headers, the bodies of BEGIN_REQUEST, END_REQUEST
//!   and UNKNOWN_TYPE, name-value pairs). Decoding says "need more" as `Ok(None)`; encoding
//!   appends to a caller's buffer.
//! - [`connection`]: the per-connection state machine, without IO: records in, [`Event`]s and
//!   reply records out; multiplexing, keep-conn, GET_VALUES, aborts, refusals, violations.
//! - [`server`]: the Tokio server: [`Listener`]s (TCP, Unix socket, an inherited fd 0), accept
//!   loops, limits, graceful shutdown. Applications implement [`Handler`]. Each connection has a
//!   driver (`driver`) that owns its transport, buffers and output (`output`); the
//!   per-transport writer that lets a request running inline write straight to the transport is
//!   in `transport`.
//!
//! [`Params`] is a request's params, kept as the raw stream plus an index (no copy per pair).
//!
//! [`client`] is the other side, also sans-IO: the request encoder, the response decoder and the
//! CGI head reader that the load generator, the tests and `wfcgi request` use.

pub mod client;
pub mod connection;
mod driver;
pub mod listener;
mod output;
pub mod params;
pub mod protocol;
pub mod request;
pub mod server;
mod transport;

pub use connection::{ConnectionConfig, Event, RequestHead};
pub use listener::{BindError, BindOptions, ListenAddr, Listener, Peer, Stream};
pub use params::Params;
pub use protocol::{ProtocolError, ProtocolStatus, Record, RecordType, Role};
pub use request::{
    Body, BodyError, Cut, Expired, Expiry, Failure, Request, Response, ResponseCapture,
    TryChunkError, TryWriteError, WriteError,
};
pub use server::{HandOver, Handler, ServeOutcome, Server, ServerConfig};
