//! Request ids: every request has one, so that a visitor's error page leads to its traceback.
//! The web server's `X-Request-Id` (nginx's `$request_id`, a load balancer's) is used when it
//! sends a sane one; otherwise wfcgi makes one: 16 hex digits, a per-process random half and a
//! counter, unique across the workers of a site. Every error page (500, 503, 504, 413) shows
//! it, in its text and an `X-Request-Id` header, and every log line about the request carries
//! it (the `request` span).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use fastcgi::Params;

/// The longest `X-Request-Id` taken from the web server.
const MAX_LEN: usize = 128;

/// This request's id: the web server's `X-Request-Id` if it sent a sane one, else a new one.
pub fn request_id(params: &Params) -> Arc<str> {
    if let Some(given) = params.get(b"HTTP_X_REQUEST_ID").filter(|v| is_sane(v)) {
        // Checked ASCII just above.
        return Arc::from(std::str::from_utf8(given).unwrap_or_default());
    }
    new_id()
}

/// Printable, no spaces or quotes: it goes into a header, a log line and a page unescaped.
fn is_sane(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+=/@".contains(&b))
}

fn new_id() -> Arc<str> {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{prefix:08x}{n:08x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_servers_id_is_kept_when_sane_and_replaced_otherwise() {
        let with = |v: &[u8]| Params::from_pairs([(&b"HTTP_X_REQUEST_ID"[..], v)]);
        assert_eq!(&*request_id(&with(b"3f2a-77")), "3f2a-77");
        let made = request_id(&with(b"a b\r\nSet-Cookie: x"));
        assert_eq!(made.len(), 16);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        let next = request_id(&Params::from_pairs(std::iter::empty::<(&[u8], &[u8])>()));
        assert_ne!(made, next);
        assert_eq!(made[..8], next[..8], "one process, one prefix");
    }
}
