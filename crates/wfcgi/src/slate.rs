//! What each worker is running, where the supervisor can still read it after the worker has
//! died: a small shared memory table (one slot per Python thread) that the worker writes as
//! requests start and end, and the supervisor reads when the worker's exit is not a clean one.
//! So a death is logged with the requests it killed: "worker 1234 died while serving: it was
//! killed by signal SIGSEGV (...); it was running GET /report?year=2026 (for 2.1 s)".
//!
//! The table is an anonymous shared mapping (memfd on Linux, an unlinked temporary file
//! elsewhere) created by the supervisor and inherited by the worker. A slot is written only by
//! the thread that owns it; its key is stored last (release) and cleared first, so a reader sees
//! either a complete entry or none. All the unsafe FFI of the table is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes per slot: the key, the start time, the text's length and the text.
const SLOT: usize = 256;
const TEXT_AT: usize = 18;
const TEXT_MAX: usize = SLOT - TEXT_AT;

/// A mapping of the table.
pub(crate) struct Slate {
    fd: OwnedFd,
    base: *mut u8,
    slots: usize,
    /// The next slot to give a thread that has none (worker side).
    next_slot: AtomicUsize,
}

// SAFETY: the mapping is shared memory; every slot is written by one thread only (its owner,
// `begin`/`end`), its key through an atomic, and read by the supervisor after the writer is gone.
unsafe impl Send for Slate {}
// SAFETY: as above.
unsafe impl Sync for Slate {}

impl Slate {
    /// A new table of `slots` slots (supervisor side).
    pub(crate) fn create(slots: usize) -> io::Result<Slate> {
        let fd = anonymous_file()?;
        let len = slots * SLOT;
        // SAFETY: ftruncate on a descriptor this process owns.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Slate::map(fd, slots)
    }

    /// The table handed down by the supervisor (worker side).
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Slate> {
        // SAFETY: fstat writes into a zeroed, properly sized buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a descriptor this process owns.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let slots = usize::try_from(st.st_size).unwrap_or(0) / SLOT;
        if slots == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "an empty table"));
        }
        Slate::map(fd, slots)
    }

    fn map(fd: OwnedFd, slots: usize) -> io::Result<Slate> {
        // SAFETY: a fresh shared mapping of the whole file, checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                slots * SLOT,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Slate {
            fd,
            base: base.cast(),
            slots,
            next_slot: AtomicUsize::new(0),
        })
    }

    /// The descriptor, to hand down to a worker.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn key(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: slot < self.slots; each slot starts 256-aligned in a page-aligned mapping,
        // so its first 8 bytes are an aligned u64, only ever accessed atomically.
        unsafe { &*(self.base.add(slot * SLOT).cast::<AtomicU64>()) }
    }

    /// The calling thread's slot, given on first use; `None` once all are taken.
    fn own_slot(&self) -> Option<usize> {
        thread_local! {
            static SLOT_OF_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        }
        SLOT_OF_THREAD.with(|cell| {
            if cell.get().is_none() {
                let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
                cell.set(Some(slot));
            }
            cell.get().filter(|&slot| slot < self.slots)
        })
    }

    /// The calling thread starts running `what`.
    pub(crate) fn begin(&self, key: u64, what: &str) {
        let Some(slot) = self.own_slot() else {
            return;
        };
        let text = truncated(what, TEXT_MAX);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // SAFETY: this thread owns the slot; the writes stay within it (TEXT_AT + TEXT_MAX is
        // SLOT), and the key, stored last, tells a reader the entry is complete.
        unsafe {
            let at = self.base.add(slot * SLOT);
            std::ptr::write_unaligned(at.add(8).cast::<u64>(), started);
            std::ptr::write_unaligned(at.add(16).cast::<u16>(), text.len() as u16);
            std::ptr::copy_nonoverlapping(text.as_ptr(), at.add(TEXT_AT), text.len());
        }
        self.key(slot).store(key.max(1), Ordering::Release);
    }

    /// The calling thread's request ended.
    pub(crate) fn end(&self) {
        if let Some(slot) = self.own_slot() {
            self.key(slot).store(0, Ordering::Release);
        }
    }

    /// What was running, with how long each had run (supervisor side, once the worker is gone).
    pub(crate) fn running(&self) -> Vec<(String, Duration)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut found = Vec::new();
        for slot in 0..self.slots {
            if self.key(slot).load(Ordering::Acquire) == 0 {
                continue;
            }
            // SAFETY: reads within the slot, whose entry is complete (its key is set).
            let (started, text) = unsafe {
                let at = self.base.add(slot * SLOT);
                let started = std::ptr::read_unaligned(at.add(8).cast::<u64>());
                let len = usize::from(std::ptr::read_unaligned(at.add(16).cast::<u16>()));
                let bytes = std::slice::from_raw_parts(at.add(TEXT_AT), len.min(TEXT_MAX));
                (started, String::from_utf8_lossy(bytes).into_owned())
            };
            found.push((text, Duration::from_millis(now.saturating_sub(started))));
        }
        found
    }
}

impl wsgi::watchdog::Mirror for Slate {
    fn begin(&self, key: u64, what: std::fmt::Arguments<'_>) {
        // Formatted on the stack: the slot holds at most TEXT_MAX bytes anyway.
        let mut buf = Truncating {
            buf: [0; TEXT_MAX],
            len: 0,
        };
        let _ = std::fmt::Write::write_fmt(&mut buf, what);
        let text = truncated(
            std::str::from_utf8(&buf.buf[..buf.len]).unwrap_or(""),
            TEXT_MAX,
        );
        Slate::begin(self, key, text);
    }
    fn end(&self) {
        Slate::end(self);
    }
}

impl Drop for Slate {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.slots * SLOT) };
    }
}

/// A fixed buffer that keeps what fits, cut at a character boundary.
struct Truncating {
    buf: [u8; TEXT_MAX],
    len: usize,
}

impl std::fmt::Write for Truncating {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = TEXT_MAX - self.len;
        let s = truncated(s, room);
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn anonymous_file() -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"wfcgi-running".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn anonymous_file() -> io::Result<OwnedFd> {
    let path = std::env::temp_dir().join(format!("wfcgi-running-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_thread_runs_is_read_back_through_another_mapping() {
        let slate = Slate::create(4).unwrap();
        let dup = slate.fd().try_clone().unwrap();
        let other = Slate::open(dup).unwrap();
        assert!(other.running().is_empty());
        slate.begin(7, "GET /report?year=2026");
        let running = other.running();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].0, "GET /report?year=2026");
        assert!(running[0].1 < Duration::from_secs(5));
        slate.end();
        assert!(other.running().is_empty());
        // Long text is cut at a character boundary.
        let long = "é".repeat(200);
        slate.begin(8, &long);
        assert_eq!(other.running()[0].0, "é".repeat(TEXT_MAX / 2));
    }
}
