//! Watching the app directory for changes that should restart (or reload) the app:
//! `WSGI_RESTART_FILE_REGEX`, matched like wfastcgi's against the changed file's path relative
//! to the app directory.
//!
//! One watcher for every platform (the `notify` crate: inotify on Linux, ReadDirectoryChangesW
//! on Windows; docs/decisions/0009-wfcgi-notify.md). What is never a reason to restart: the
//! bytecode Python writes itself (`__pycache__`), a virtualenv inside the app directory (any
//! folder with a `pyvenv.cfg`, and the configured venv), and wfcgi's own log file.
//!
//! Changes come in bursts (an editor's save is several events, a deploy is many files): the
//! first match starts a short quiet period, and the callback gets every path that matched once
//! no further match arrived for that long.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tracing::{debug, warn};

/// How long changes must stop before the callback runs.
pub(crate) const DEFAULT_QUIET: Duration = Duration::from_millis(200);

/// The longest a steady stream of changes can hold the callback back.
const MAX_DELAY: Duration = Duration::from_secs(3);

/// What to watch and what to ignore.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    /// The app directory; the regex sees paths relative to it.
    pub root: PathBuf,
    /// Anchored at the start (`re.match`), as `settings` compiles it.
    pub regex: regex::Regex,
    /// Folders never looked into (the configured venv), besides `__pycache__` and any folder
    /// holding a `pyvenv.cfg`.
    pub ignore_dirs: Vec<PathBuf>,
    /// Files whose changes never count (the log file).
    pub ignore_files: Vec<PathBuf>,
}

/// What the callback tells the watcher after a batch of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep watching (a reload).
    #[cfg_attr(
        not(unix),
        allow(dead_code, reason = "reloads are the supervisor's, which is Unix only")
    )]
    Continue,
    /// Stop watching (a restart: the process is about to exit).
    Stop,
}

impl WatchSpec {
    /// The path relative to the root, when a change to it counts.
    fn relevant(&self, path: &Path) -> Option<PathBuf> {
        let relative = path.strip_prefix(&self.root).ok()?;
        if relative.as_os_str().is_empty() || self.ignore_files.iter().any(|f| f == path) {
            return None;
        }
        // Any ignored folder between the root and the file.
        let mut dir = self.root.clone();
        let mut components = relative.components().peekable();
        while let Some(component) = components.next() {
            if components.peek().is_none() {
                break; // the file itself
            }
            dir.push(component);
            if self.ignored_dir(&dir) {
                return None;
            }
        }
        self.regex
            .is_match(&relative.to_string_lossy())
            .then(|| relative.to_path_buf())
    }

    fn ignored_dir(&self, dir: &Path) -> bool {
        dir.file_name().is_some_and(|n| n == "__pycache__")
            || self.ignore_dirs.iter().any(|d| d == dir)
            || dir.join("pyvenv.cfg").is_file()
    }

    /// The folders to watch one by one where the platform's recursive watch cannot skip
    /// ignored folders (inotify: one watch per folder, and a venv has thousands).
    fn folders(&self, from: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![from.to_path_buf()];
        while let Some(dir) = pending.pop() {
            if dir != self.root && self.ignored_dir(&dir) {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    // Not following symlinks: a link to `/` must not become a watch of it all.
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(entry.path());
                    }
                }
            }
            found.push(dir);
        }
        found
    }

    /// The files already inside a folder that appeared (created or moved in) before its watch
    /// was added: they count as changed.
    fn files_within(&self, dir: &Path) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for folder in self.folders(dir) {
            if let Ok(entries) = std::fs::read_dir(&folder) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        changed.extend(self.relevant(&entry.path()));
                    }
                }
            }
        }
        changed
    }
}

/// Windows watches a tree with one handle and reports every change in it: recursive there.
const NATIVE_RECURSION: bool = cfg!(windows);

/// Starts watching `spec.root`. `on_change` runs on the watcher's thread with the relative
/// paths that changed in one burst, until it returns [`Flow::Stop`]. An error is returned
/// when the root cannot be watched at all.
pub(crate) fn watch(
    spec: WatchSpec,
    quiet: Duration,
    mut on_change: impl FnMut(Vec<PathBuf>) -> Flow + Send + 'static,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)
        .map_err(|e| format!("cannot watch the app directory for WSGI_RESTART_FILE_REGEX: {e}"))?;
    let cannot = |path: &Path, e: notify::Error| {
        format!(
            "cannot watch {} for WSGI_RESTART_FILE_REGEX: {e}. Fix: make the app directory readable by wfcgi, or set WSGI_RESTART_FILE_REGEX to an empty value to turn restarts off",
            path.display()
        )
    };
    if NATIVE_RECURSION {
        watcher
            .watch(&spec.root, RecursiveMode::Recursive)
            .map_err(|e| cannot(&spec.root, e))?;
    } else {
        watcher
            .watch(&spec.root, RecursiveMode::NonRecursive)
            .map_err(|e| cannot(&spec.root, e))?;
        add_folders(&mut watcher, &spec, &spec.root);
    }
    std::thread::Builder::new()
        .name("wfcgi-watch".into())
        .spawn(move || {
            let mut pending: Vec<PathBuf> = Vec::new();
            let mut first_at = Instant::now();
            loop {
                let event = if pending.is_empty() {
                    rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    let left = MAX_DELAY.saturating_sub(first_at.elapsed());
                    rx.recv_timeout(quiet.min(left))
                };
                match event {
                    Ok(Ok(event)) => {
                        let before = pending.len();
                        collect(&mut watcher, &spec, event, &mut pending);
                        if before == 0 && !pending.is_empty() {
                            first_at = Instant::now();
                        }
                    }
                    Ok(Err(e)) => warn!("watching the app directory: {e}"),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        pending.sort();
                        pending.dedup();
                        if on_change(std::mem::take(&mut pending)) == Flow::Stop {
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .map_err(|e| format!("cannot start the file-watching thread: {e}"))?;
    Ok(())
}

/// Watches every folder under `from` (itself excluded) that is not ignored.
fn add_folders(watcher: &mut notify::RecommendedWatcher, spec: &WatchSpec, from: &Path) {
    for dir in spec.folders(from) {
        if dir == spec.root {
            continue;
        }
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            // A folder removed meanwhile, or the system's watch limit
            // (fs.inotify.max_user_watches): changes there go unseen, and the log says so.
            warn!(folder = %dir.display(), "not watched for WSGI_RESTART_FILE_REGEX: {e}");
        }
    }
}

/// Adds the event's relevant paths to `pending`, and starts watching folders that appeared.
fn collect(
    watcher: &mut notify::RecommendedWatcher,
    spec: &WatchSpec,
    event: notify::Event,
    pending: &mut Vec<PathBuf>,
) {
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    for path in &event.paths {
        let appeared = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
                | EventKind::Any
        );
        if !NATIVE_RECURSION && appeared && path.is_dir() && spec.relevant_dir(path) {
            debug!(folder = %path.display(), "watching a new folder");
            if watcher.watch(path, RecursiveMode::NonRecursive).is_ok() {
                add_folders(watcher, spec, path);
            }
            pending.extend(spec.files_within(path));
            continue;
        }
        if let Some(relative) = spec.relevant(path) {
            debug!(path = %relative.display(), kind = ?event.kind, "app file changed");
            pending.push(relative);
        }
    }
}

impl WatchSpec {
    /// Whether a folder under the root is one to look into.
    fn relevant_dir(&self, dir: &Path) -> bool {
        dir.starts_with(&self.root)
            && dir
                .ancestors()
                .take_while(|a| *a != self.root)
                .all(|a| !self.ignored_dir(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("wfcgi-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            // The watcher reports paths under the folder as the system spells it.
            Scratch(p.canonicalize().unwrap())
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(root: &Path, regex: &str) -> WatchSpec {
        WatchSpec {
            root: root.to_path_buf(),
            regex: regex::Regex::new(&format!("^(?:{regex})")).unwrap(),
            ignore_dirs: vec![root.join("env")],
            ignore_files: vec![root.join("wfcgi.log")],
        }
    }

    const DEFAULT: &str = r".*((\.py)|(\.config))$";

    #[test]
    fn relevant_paths_are_relative_and_matched_from_the_start() {
        let dir = Scratch::new("watch-relevant");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".venv")).unwrap();
        std::fs::write(root.join(".venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let s = spec(root, DEFAULT);
        let rel = |p: &str| s.relevant(&root.join(p));
        assert_eq!(rel("app.py"), Some(PathBuf::from("app.py")));
        assert_eq!(rel("web.config"), Some(PathBuf::from("web.config")));
        assert_eq!(rel("pkg/views.py"), Some(PathBuf::from("pkg/views.py")));
        assert_eq!(rel("static/site.css"), None, "not matched by the regex");
        assert_eq!(rel("app.pyc"), None, "the regex is anchored at the end too");
        assert_eq!(rel("pkg/__pycache__/views.cpython-313.pyc"), None);
        assert_eq!(
            rel("pkg/__pycache__/odd.py"),
            None,
            "__pycache__ is never looked into"
        );
        assert_eq!(
            rel(".venv/lib/site.py"),
            None,
            "a folder with a pyvenv.cfg is a venv"
        );
        assert_eq!(rel("env/lib/x.py"), None, "the configured venv");
        assert_eq!(rel("wfcgi.log"), None);
        assert_eq!(s.relevant(Path::new("/elsewhere/app.py")), None);

        // The path as the platform spells it, as wfastcgi matched it (`\` on Windows).
        let anchored = spec(root, r"pkg[/\\]");
        assert!(anchored.relevant(&root.join("pkg/a.txt")).is_some());
        assert!(
            anchored.relevant(&root.join("x/pkg/a.txt")).is_none(),
            "re.match: anchored at the start of the relative path"
        );
        let everything = spec(root, ".*");
        assert!(everything.relevant(&root.join("wfcgi.log")).is_none());
    }

    #[test]
    fn folders_skip_venvs_and_pycache() {
        let dir = Scratch::new("watch-folders");
        let root = dir.path();
        for d in [
            "pkg/sub",
            "pkg/__pycache__",
            ".venv/lib/site-packages",
            "env/bin",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join(".venv/pyvenv.cfg"), "").unwrap();
        let mut folders = spec(root, DEFAULT).folders(root);
        folders.sort();
        let expected: Vec<PathBuf> = ["", "pkg", "pkg/sub"]
            .iter()
            .map(|p| root.join(p))
            .collect();
        let expected: Vec<PathBuf> = expected
            .into_iter()
            .map(|p| p.components().collect())
            .collect();
        let folders: Vec<PathBuf> = folders
            .into_iter()
            .map(|p| p.components().collect())
            .collect();
        assert_eq!(folders, expected);
    }

    /// Real changes on disk, through the platform's watcher: what counts arrives as one batch,
    /// what does not never arrives.
    #[test]
    fn changes_on_disk_arrive_in_one_batch() {
        let dir = Scratch::new("watch-live");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::write(root.join("app.py"), "x = 1\n").unwrap();
        let (tx, rx) = mpsc::channel();
        watch(spec(&root, DEFAULT), DEFAULT_QUIET, move |paths| {
            tx.send(paths).unwrap();
            Flow::Continue
        })
        .unwrap();

        // Ignored: bytecode, the log, a file the regex does not match.
        std::fs::write(root.join("pkg/__pycache__/app.cpython-313.pyc"), "x").unwrap();
        std::fs::write(root.join("wfcgi.log"), "line\n").unwrap();
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(600)).is_err(),
            "nothing relevant changed"
        );

        // A burst: an edit, a new folder with a module in it, all in one batch.
        std::fs::write(root.join("app.py"), "x = 2\n").unwrap();
        std::fs::create_dir_all(root.join("newpkg")).unwrap();
        std::fs::write(root.join("newpkg/mod.py"), "y = 1\n").unwrap();
        let batch = rx.recv_timeout(Duration::from_secs(5)).expect("a batch");
        let batch: Vec<String> = batch
            .iter()
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .collect();
        assert!(batch.contains(&"app.py".to_string()), "{batch:?}");
        assert!(batch.contains(&"newpkg/mod.py".to_string()), "{batch:?}");

        // The new folder is watched from now on.
        std::fs::write(root.join("newpkg/mod.py"), "y = 2\n").unwrap();
        let batch = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a second batch");
        assert_eq!(batch, vec![PathBuf::from("newpkg").join("mod.py")]);
    }
}
