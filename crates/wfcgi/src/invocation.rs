//! How this process was started, and so how to start it again (worker processes) or name it
//! to IIS (`wfcgi enable`): the native executable (`wfcgi serve ...`), or a Python interpreter
//! running the `wfcgi` package (`python -m wfcgi serve ...`, the pip-installed server).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The program, what goes before the user's arguments, and the user's arguments.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The executable: `wfcgi` itself, or the venv's `python`.
    pub program: PathBuf,
    /// Arguments that select wfcgi in `program`: none for the native executable, `-m wfcgi`
    /// for Python.
    pub prefix: Vec<OsString>,
    /// The command line after the program's own (`serve --listen ...`).
    pub args: Vec<OsString>,
}

static CURRENT: OnceLock<Invocation> = OnceLock::new();

impl Invocation {
    /// The native executable, from this process's own command line.
    pub fn native() -> Invocation {
        Invocation {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wfcgi")),
            prefix: Vec::new(),
            args: std::env::args_os().skip(1).collect(),
        }
    }

    /// Remembers this as the process's invocation (the first call wins).
    pub(crate) fn install(self) -> &'static Invocation {
        CURRENT.get_or_init(|| self)
    }

    /// The command line as clap parses it: a program name, then the user's arguments.
    pub(crate) fn argv(&self) -> Vec<OsString> {
        std::iter::once(OsString::from("wfcgi"))
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// This process's invocation (the native one until `run` installed another).
pub(crate) fn current() -> &'static Invocation {
    CURRENT.get_or_init(Invocation::native)
}
