//! Logging: tracing events to stderr and, with `WSGI_LOG` / `--log-file`, appended to a file.
//!
//! Under IIS stderr is not a usable handle and the log file is the only place anything can be
//! read, but the file's name may only be known once web.config is read on the first request.
//! So the file sink starts out holding the first lines in memory (bounded) and writes them out
//! when the file is set; `discard_pending` drops them when it turns out there is no file.
//!
//! The level (`--log-level` / `WFCGI_LOG_LEVEL`, else `RUST_LOG`, else `info`) is a reloadable
//! filter for the same reason. Python's `print()` output arrives from the bridge as events with
//! targets `python.stdout` and `python.stderr`, filterable like any other
//! (`info,python.stdout=off`).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Lines kept in memory until the log file is known: enough for start-up, bounded so that a
/// process that never learns of a file cannot grow.
const MAX_PENDING_LINES: usize = 256;

/// The default filter when nothing is configured.
const DEFAULT_LEVEL: &str = "info";

/// The handle `main` keeps to reconfigure logging once web.config is read.
#[derive(Clone)]
pub(crate) struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    file: FileSink,
    stderr_usable: bool,
}

impl Logging {
    /// Installs the global subscriber. `level` is `--log-level` / `WFCGI_LOG_LEVEL` when known
    /// (already validated by `settings`); otherwise `RUST_LOG`, else `info`.
    pub(crate) fn init(level: Option<&str>) -> Logging {
        Self::init_labelled(level, None)
    }

    /// As [`Logging::init`], with `label` after each line's time: a worker process's lines
    /// say which worker wrote them (`worker 1234`), since all share one stderr and log file.
    pub(crate) fn init_labelled(level: Option<&str>, label: Option<String>) -> Logging {
        let (subscriber, logging) = Self::subscriber(level, label);
        // A second init (tests) keeps the first subscriber; that is fine.
        let _ = subscriber.try_init();
        logging
    }

    /// The subscriber [`Logging::init_labelled`] installs, and the handle to its level and
    /// file. Also the dispatch bench's (`crate::log_subscriber_for_bench`), so that it
    /// measures what these layers cost a request.
    fn subscriber(
        level: Option<&str>,
        label: Option<String>,
    ) -> (impl tracing::Subscriber + Send + Sync, Logging) {
        let stderr_usable = stderr_is_usable();
        let (filter, handle) = reload::Layer::new(filter_for(level));
        let file = FileSink::default();
        let timer = Labelled(label.map(Arc::from));
        // JSON access lines (`wsgi::access::JSON_TARGET`) are written bare, a JSON object a
        // line; every other event in the usual form.
        let usual = || filter_fn(|m| m.target() != wsgi::access::JSON_TARGET);
        let bare = || filter_fn(|m| m.target() == wsgi::access::JSON_TARGET);
        let stderr_layer = stderr_usable.then(|| {
            tracing_subscriber::fmt::layer()
                .with_timer(timer.clone())
                .with_writer(io::stderr)
                .with_ansi(io::stderr().is_terminal())
                .with_filter(usual())
        });
        let stderr_bare = stderr_usable.then(|| {
            tracing_subscriber::fmt::layer()
                .event_format(MessageOnly)
                .with_writer(io::stderr)
                .with_filter(bare())
        });
        let file_layer = tracing_subscriber::fmt::layer()
            .with_timer(timer)
            .with_writer(file.clone())
            .with_ansi(false)
            .with_filter(usual());
        let file_bare = tracing_subscriber::fmt::layer()
            .event_format(MessageOnly)
            .with_writer(file.clone())
            .with_filter(bare());
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(stderr_layer)
            .with(stderr_bare)
            .with(file_layer)
            .with(file_bare);
        let logging = Logging {
            filter: handle,
            file,
            stderr_usable,
        };
        (subscriber, logging)
    }

    /// Replaces the filter (web.config's `WFCGI_LOG_LEVEL`, read after start-up).
    pub(crate) fn set_level(&self, level: Option<&str>) {
        if let Err(e) = self.filter.reload(filter_for(level)) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }

    /// Opens `path` for appending (creating it and its folder) and writes the lines held so
    /// far. On failure the lines stay held and the error is returned, naming the file.
    pub(crate) fn set_file(&self, path: &Path) -> Result<(), String> {
        self.file.open(path)
    }

    /// No file was configured: stop holding lines.
    pub(crate) fn discard_pending(&self) {
        self.file.discard_pending();
    }

    /// Whether anything written now can be read by someone: a usable stderr or an open file.
    pub(crate) fn has_reader(&self) -> bool {
        self.stderr_usable || self.file.is_open()
    }

    pub(crate) fn file_path(&self) -> Option<PathBuf> {
        self.file.path()
    }
}

/// An event's message alone, then a newline: the JSON access lines.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The subscriber's usual time, then the process's label when it has one.
#[derive(Clone)]
struct Labelled(Option<Arc<str>>);

impl tracing_subscriber::fmt::time::FormatTime for Labelled {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        match &self.0 {
            Some(label) => write!(w, " {label}"),
            None => Ok(()),
        }
    }
}

/// The binary's subscriber at its default level, not installed: see `crate::log_subscriber_for_bench`.
pub(crate) fn bench_subscriber() -> impl tracing::Subscriber + Send + Sync {
    Logging::subscriber(Some("info"), None).0
}

fn filter_for(level: Option<&str>) -> EnvFilter {
    let from_env = || {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let directive = level
        .map(str::to_string)
        .or_else(from_env)
        .unwrap_or_else(|| DEFAULT_LEVEL.to_string());
    // Access lines are on when the access log is (WFCGI_ACCESS_LOG), whatever the level.
    let directive = format!(
        "{directive},{}=info,{}=info",
        wsgi::access::TARGET,
        wsgi::access::JSON_TARGET
    );
    EnvFilter::try_new(&directive).unwrap_or_else(|_| {
        // Only RUST_LOG can be invalid here (settings validated the rest).
        eprintln!("wfcgi: ignoring RUST_LOG={directive:?}: not a valid filter; using info");
        EnvFilter::new(DEFAULT_LEVEL)
    })
}

/// Whether fd 2 / the standard error handle exists. A process started by IIS has none; writing
/// to a closed fd is harmless (std swallows EBADF on stderr) but formatting for nobody is waste.
pub(crate) fn stderr_is_usable() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: F_GETFD on a file descriptor number only reads the descriptor table.
        unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_GETFD) != -1 }
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawHandle;
        let handle = io::stderr().as_raw_handle();
        // INVALID_HANDLE_VALUE is -1; a process without a console gets a null handle.
        !handle.is_null() && handle as isize != -1
    }
    #[cfg(not(any(unix, windows)))]
    {
        true
    }
}

/// Writes a line to the log file at `path` without the subscriber: for errors before (or
/// instead of) logging being set up. Best effort: failures are ignored, there is nowhere else.
pub(crate) fn append_line(path: &Path, line: &str) {
    if let Ok(mut file) = open_append(path) {
        let _ = writeln!(file, "{} ERROR wfcgi: {line}", timestamp());
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Seconds since the Unix epoch, UTC, for `append_line` (the subscriber has its own format).
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = wsgi::access::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[derive(Default)]
enum FileState {
    /// The file is not known yet: lines are held.
    #[default]
    Pending,
    Open(PathBuf, File),
    /// No file: lines are dropped.
    None,
}

#[derive(Default)]
struct FileSinkInner {
    state: FileState,
    pending: Vec<Vec<u8>>,
}

/// The log file sink: one formatted event per `write` call, appended under a lock so that lines
/// from different threads never interleave.
#[derive(Clone, Default)]
struct FileSink(Arc<Mutex<FileSinkInner>>);

impl FileSink {
    fn lock(&self) -> MutexGuard<'_, FileSinkInner> {
        // A panic while holding the lock leaves a consistent state: keep logging.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, path: &Path) -> Result<(), String> {
        let mut file = open_append(path)
            .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
        let mut inner = self.lock();
        for line in inner.pending.drain(..) {
            let _ = file.write_all(&line);
        }
        inner.state = FileState::Open(path.to_path_buf(), file);
        Ok(())
    }

    fn discard_pending(&self) {
        let mut inner = self.lock();
        if matches!(inner.state, FileState::Pending) {
            inner.state = FileState::None;
            inner.pending = Vec::new();
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.lock().state, FileState::Open(..))
    }

    fn path(&self) -> Option<PathBuf> {
        match &self.lock().state {
            FileState::Open(path, _) => Some(path.clone()),
            _ => None,
        }
    }
}

impl Write for &FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        match &mut inner.state {
            FileState::Open(_, file) => {
                // A failing log file must not fail the request that logged: drop the line.
                let _ = file.write_all(buf);
            }
            FileState::Pending if inner.pending.len() < MAX_PENDING_LINES => {
                inner.pending.push(buf.to_vec());
            }
            FileState::Pending | FileState::None => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileSink {
    type Writer = &'a FileSink;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("wfcgi-logging-{}-{name}", std::process::id()))
    }

    #[test]
    fn held_lines_are_written_when_the_file_is_set() {
        let sink = FileSink::default();
        (&sink).write_all(b"one\n").expect("held");
        (&sink).write_all(b"two\n").expect("held");
        let dir = temp("held");
        let path = dir.join("sub").join("wfcgi.log");
        sink.open(&path).expect("opens, creating the folder");
        (&sink).write_all(b"three\n").expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
        assert_eq!(sink.path(), Some(path.clone()));
        // Appends, never truncates.
        let again = FileSink::default();
        again.open(&path).expect("reopens");
        (&again).write_all(b"four\n").expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\nfour\n"
        );
        // Windows does not delete a folder with a file open in it.
        drop((sink, again));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn pending_lines_are_bounded_and_discardable() {
        let sink = FileSink::default();
        for _ in 0..MAX_PENDING_LINES + 10 {
            (&sink).write_all(b"x\n").expect("held");
        }
        assert_eq!(sink.lock().pending.len(), MAX_PENDING_LINES);
        sink.discard_pending();
        (&sink).write_all(b"dropped\n").expect("dropped");
        assert!(sink.lock().pending.is_empty());
        assert!(!sink.is_open());
    }

    #[test]
    fn open_failure_names_the_file() {
        let sink = FileSink::default();
        let blocker = temp("blocker");
        std::fs::write(&blocker, "a file, not a folder").expect("write");
        let err = sink
            .open(&blocker.join("wfcgi.log"))
            .expect_err("parent is a file");
        assert!(
            err.starts_with(&format!(
                "cannot open the log file {}: ",
                blocker.join("wfcgi.log").display()
            )),
            "{err}"
        );
        std::fs::remove_file(blocker).expect("cleanup");
    }

    #[test]
    fn append_line_writes_a_timestamped_line() {
        let path = temp("append.log");
        append_line(&path, "bad setting");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with(" ERROR wfcgi: bad setting\n"), "{text}");
        // 2024-01-01T00:00:00.000000Z
        let stamp = text.as_bytes();
        assert!(
            stamp[4] == b'-' && stamp[10] == b'T' && stamp[26] == b'Z',
            "{text}"
        );
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn stderr_is_detected() {
        // The test harness has a stderr; a closed fd 2 is covered by the end-to-end tests.
        assert!(stderr_is_usable());
    }
}
