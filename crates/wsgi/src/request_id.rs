//! Request ids: every request has one, so that a visitor's error page leads to its traceback.
//! The web server's `X-Request-Id` (nginx's `$request_id`, a load balancer's) is used when it
//! sends a sane one; otherwise wfcgi makes one: 16 hex digits, a per-process random half and a
//! counter, unique across the workers of a site. Every error page (500, 503, 504, 413) shows
//! it, in its text and an `X-Request-Id` header, and every log line about the request carries
//! it (the `request` span, see `log_scope`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use fastcgi::Params;

/// The longest `X-Request-Id` taken from the web server.
const MAX_LEN: usize = 128;

/// A request's id. One wfcgi makes is a number until it is shown (the hot path allocates
/// nothing for it); the web server's is kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    Given(Arc<str>),
    Made(u32),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Given(id) => f.write_str(id),
            RequestId::Made(n) => write!(f, "{:08x}{n:08x}", prefix()),
        }
    }
}

/// What the bridge reads of a request's params for itself (its id, the body's length, the
/// registry of running requests, the access log), found in one pass: a `Params::get` per name is a scan each, and
/// this is on every request's path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub method: &'a [u8],
    pub uri: &'a [u8],
    pub path_info: &'a [u8],
    pub query: &'a [u8],
    pub content_length: &'a [u8],
    pub x_request_id: Option<&'a [u8]>,
}

impl<'a> Head<'a> {
    pub(crate) fn of(params: &'a Params) -> Head<'a> {
        let mut head = Head::default();
        // By length first: one comparison of bytes at most per param.
        for (name, value) in params.iter() {
            match name.len() {
                14 if name == b"REQUEST_METHOD" => head.method = value,
                11 if name == b"REQUEST_URI" => head.uri = value,
                9 if name == b"PATH_INFO" => head.path_info = value,
                12 if name == b"QUERY_STRING" => head.query = value,
                14 if name == b"CONTENT_LENGTH" => head.content_length = value,
                17 if name == b"HTTP_X_REQUEST_ID" => head.x_request_id = Some(value),
                _ => {}
            }
        }
        head
    }

    /// `REQUEST_URI`, else `PATH_INFO`.
    pub(crate) fn path(&self) -> &'a [u8] {
        if self.uri.is_empty() {
            self.path_info
        } else {
            self.uri
        }
    }
}

/// This request's id: the web server's `X-Request-Id` if it sent a sane one, else a new one.
pub fn request_id(params: &Params) -> RequestId {
    id_for(&Head::of(params))
}

pub(crate) fn id_for(head: &Head<'_>) -> RequestId {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    match head.x_request_id.filter(|v| is_sane(v)) {
        // Checked ASCII by is_sane.
        Some(given) => RequestId::Given(Arc::from(std::str::from_utf8(given).unwrap_or_default())),
        None => RequestId::Made(NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

/// Printable, no spaces or quotes: it goes into a header, a log line and a page unescaped.
fn is_sane(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+=/@".contains(&b))
}

/// This process's half of the ids it makes: random, so that workers' ids differ.
fn prefix() -> u32 {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_servers_id_is_kept_when_sane_and_replaced_otherwise() {
        let with = |v: &[u8]| Params::from_pairs([(&b"HTTP_X_REQUEST_ID"[..], v)]);
        assert_eq!(request_id(&with(b"3f2a-77")).to_string(), "3f2a-77");
        let made = request_id(&with(b"a b\r\nSet-Cookie: x")).to_string();
        assert_eq!(made.len(), 16);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        let next =
            request_id(&Params::from_pairs(std::iter::empty::<(&[u8], &[u8])>())).to_string();
        assert_ne!(made, next);
        assert_eq!(made[..8], next[..8], "one process, one prefix");
    }
}
