//! The `request{id=...}` span on the log lines written while a request runs, made only when a
//! line is written.
//!
//! Entering a span for every request cost the Python thread about a tenth of its time on a
//! `/hello` (tracing's registry storing the span, each fmt layer formatting its fields, the
//! per-layer filters asked at every enter, exit and close), for a span that nothing was
//! logged in. So while a request runs its id is kept in a thread-local ([`begin`]), and the
//! bridge's code that logs during a request enters the span around the event ([`enter`]):
//! the line reads as before. Other crates' events on the thread (the FastCGI writer's, at
//! debug level) cannot do that; when debug events may be written, the span is entered for the
//! whole request, as before.

use std::cell::RefCell;

use tracing::span::EnteredSpan;

use crate::request_id::RequestId;

thread_local! {
    static CURRENT: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// While a request runs on this thread: its id for [`enter`], or its span entered.
#[must_use = "the scope ends when dropped"]
pub(crate) struct RequestScope {
    /// `None`: the id is in `CURRENT` instead.
    entered: Option<EnteredSpan>,
}

/// Request `id` runs on this thread until the scope is dropped.
pub(crate) fn begin(id: &RequestId) -> RequestScope {
    if tracing::enabled!(tracing::Level::DEBUG)
        || tracing::enabled!(target: "fastcgi", tracing::Level::DEBUG)
    {
        return RequestScope {
            entered: Some(span(id).entered()),
        };
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(id.clone()));
    RequestScope { entered: None }
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        if self.entered.is_none() {
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
}

/// The running request's span, entered until the guard is dropped: an event written meanwhile
/// carries its id. `None` outside a request, and where [`begin`] entered the span itself.
pub(crate) fn enter() -> Option<EnteredSpan> {
    CURRENT.with(|c| c.borrow().as_ref().map(|id| span(id).entered()))
}

/// A request's span, by `id`. The watchdog, which logs about a request from its own thread,
/// makes the same.
pub(crate) fn span(id: &RequestId) -> tracing::Span {
    tracing::error_span!("request", id = %id)
}
