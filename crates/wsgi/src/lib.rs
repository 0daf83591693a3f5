//! The WSGI bridge of wfcgi: embedded CPython (pyo3) behind the FastCGI server.
//!
//! [`Bridge::start`] starts the interpreter, prepares the app directory and a pool of Python
//! threads; the bridge is the server's [`fastcgi::Handler`]. Each request is queued to a pool
//! thread, which builds the environ, calls the app and frames its response.
//!
//! Modules:
//! - [`config`]: [`BridgeConfig`], every setting resolved by the binary.
//! - [`interpreter`]: PyConfig start-up (a venv's interpreter as `executable`), the venv version
//!   check, `activate_this.py`, which libpython is loaded.
//! - [`loader`]: wfastcgi's handler resolution (longest importable prefix, `()` calls,
//!   `module:attr`), the built-in demo app.
//! - [`environ`]: PEP 3333 environ from a template copy with interned keys; IIS fix-ups.
//! - [`input`]: `wsgi.input`, streamed from the request body; spooled to disk when large.
//! - [`response`]: `start_response`, `write()`, header validation, framing, `wsgi.file_wrapper`.
//! - [`stdio`]: `sys.stdout`/`sys.stderr`/`wsgi.errors` into the log.
//! - `dispatch`: one request through the app (loading it on first use), on the calling thread.
//! - `ffi`: every raw CPython call, each behind a safe function with its SAFETY reason.
//! - `pool`: long-lived Python threads, attached once, detached only while waiting for work.
//!   All GIL handling is there, plus the `detach` around single blocking waits (more body, a
//!   full response buffer, a regular file read).

pub mod access;
#[cfg(test)]
mod bridge_tests;
pub mod config;
mod debugpy;
mod dispatch;
pub mod environ;
mod ffi;
pub mod input;
pub mod interpreter;
pub mod loader;
mod log_scope;
mod pool;
#[cfg(python_delay_loaded)]
mod python_dll;
pub mod request_id;
pub mod response;
pub mod stdio;
#[cfg(test)]
mod testing;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyList;

pub use config::{AccessLog, BridgeConfig, Debugpy, HandlerSetting, SettingSource, VenvSetting};
pub use interpreter::PythonInfo;
pub use loader::LoadError;
pub use response::{error_page, error_page_for};

use crate::dispatch::Shared;
use fastcgi::{Body, Params, Request, Response};

/// Why the bridge could not start. Each message names the setting, the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the virtualenv {} (from {setting}) cannot be read: {error}. Fix: point {setting} at the venv folder, its interpreter, or activate_this.py", path.display())]
    VenvNotFound {
        setting: SettingSource,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} (from {setting}) is not a virtualenv: {reason}", path.display())]
    NotAVenv {
        setting: SettingSource,
        path: PathBuf,
        reason: String,
    },
    #[error("the virtualenv {} (from {setting}) was made with Python {venv_version}, but wfcgi is built against Python {linked_version}: its packages cannot load. Fix: recreate the venv with Python {linked_version}: python{linked_version} -m venv {}, or build wfcgi against {venv_version} with PYO3_PYTHON=/path/to/python{venv_version} cargo build --release", path.display(), path.display())]
    VenvVersionMismatch {
        setting: SettingSource,
        path: PathBuf,
        venv_version: String,
        linked_version: String,
    },
    #[error("{dll} (Python {version}, which wfcgi was built for) cannot be loaded, so Python cannot start. Tried: {}. Fix: set WFCGI_VENV (or --venv) to a virtualenv made with Python {version} (its pyvenv.cfg names the Python in `home`), or install Python {version} for all users with the python.org installer, or add its folder to PATH", tried.join("; "))]
    PythonNotFound {
        dll: String,
        version: String,
        tried: Vec<String>,
    },
    #[error("Python failed to start with executable {}: {message}. Fix: check that the venv or the Python installation is complete and readable by this process's user", executable.display())]
    Interpreter {
        executable: PathBuf,
        message: String,
    },
    #[error("the interpreter was already started in this process with venv {previous:?}; it cannot be restarted with another")]
    AlreadyStarted { previous: Option<PathBuf> },
    #[error("running {} (from {setting}) failed:\n{message}", path.display())]
    ActivateThis {
        setting: SettingSource,
        path: PathBuf,
        message: String,
    },
    #[error("the app directory {} cannot be used: {error}. Fix: give an existing folder this process can read", path.display())]
    AppDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{setting} must be at least 1 (it is {value})")]
    Invalid { setting: &'static str, value: usize },
    #[error("setting up Python failed:\n{0}")]
    Python(String),
    #[error("starting the Python worker threads failed: {0}")]
    Threads(std::io::Error),
}

impl StartError {
    /// What a visitor's error page may say without debug output: the setting and the fix,
    /// with no paths (the log has those). `None`: only that the app could not start.
    pub fn public_summary(&self) -> Option<String> {
        match self {
            StartError::PythonNotFound { dll, version, .. } => Some(format!(
                "wfcgi cannot find Python {version} ({dll}). Fix: set WFCGI_VENV to a virtualenv made with Python {version}, or install Python {version} for all users. WSGI_LOG lists where wfcgi looked."
            )),
            _ => None,
        }
    }
}

/// The text of a Python exception with its traceback, as `traceback.format_exception` gives it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        lines
            .cast::<PyList>()?
            .iter()
            .map(|l| l.extract::<String>())
            .collect::<PyResult<String>>()
    });
    formatted.unwrap_or_else(|_| format!("{err}"))
}

/// The running bridge: a `fastcgi::Handler`.
pub struct Bridge {
    shared: Arc<Shared>,
    pool: pool::Pool,
}

impl Bridge {
    /// Starts the interpreter (once per process), chdirs to `app_dir`, makes it `sys.path[0]`,
    /// appends `python_path`, sends Python's stdout/stderr to the log, and starts the pool.
    pub fn start(config: BridgeConfig) -> Result<Bridge, StartError> {
        if config.threads == 0 {
            return Err(StartError::Invalid {
                setting: "threads",
                value: 0,
            });
        }
        if config.queue_len == 0 {
            return Err(StartError::Invalid {
                setting: "queue_len",
                value: 0,
            });
        }
        let app_dir = std::path::absolute(&config.app_dir)
            .and_then(|dir| std::env::set_current_dir(&dir).map(|()| dir))
            .map_err(|error| StartError::AppDir {
                path: config.app_dir.clone(),
                error,
            })?;
        interpreter::initialize(config.venv.as_ref())?;
        let shared = Python::attach(|py| -> PyResult<Shared> {
            interpreter::prepare_sys_path(py, &app_dir, &config.python_path)?;
            stdio::install(py)?;
            if let Some(d) = &config.debugpy {
                debugpy::start(py, d);
            }
            Shared::new(py, config)
        })
        .map_err(|err| StartError::Python(Python::attach(|py| format_exception(py, &err))))?;
        let shared = Arc::new(shared);
        if let Some(limit) = shared.config.request_timeout {
            shared.running.watch(limit).map_err(StartError::Threads)?;
        }
        let pool = pool::Pool::start(shared.clone()).map_err(StartError::Threads)?;
        Ok(Bridge { shared, pool })
    }

    /// Called (on the watchdog's thread) with a description each time a request runs past
    /// the request timeout: its thread cannot be stopped, and the owner may want a fresh
    /// process. Set once; later calls are ignored.
    pub fn on_request_timeout(&self, hook: watchdog::TimeoutHook) {
        self.shared.running.set_hook(hook);
    }

    /// Tells `mirror` when each request starts and ends (on the thread running it). Set
    /// once, before requests arrive; later calls are ignored.
    pub fn mirror_running(&self, mirror: Box<dyn watchdog::Mirror>) {
        self.shared.running.set_mirror(mirror);
    }

    /// Logs every running request with the Python stack of the thread running it (SIGUSR1).
    /// Blocks for up to a few seconds (reading stacks needs the GIL): call off the runtime.
    pub fn log_running_stacks(&self) {
        self.shared.running.log_stacks();
    }

    /// Stops taking requests, lets queued and running ones finish for up to `grace`, then
    /// flushes Python's stdout/stderr. Returns `false` if some were still running.
    pub fn shutdown(&self, grace: Duration) -> bool {
        let done = self.pool.shutdown(grace);
        Python::attach(interpreter::flush_std_streams);
        done
    }

    /// Loads the app now rather than on the first request (a worker process reports itself
    /// ready only once its app is loaded). On failure the error is logged, as a request's
    /// load would log it, and returned; a later request tries again.
    pub fn load_app(&self) -> Result<(), LoadError> {
        Python::attach(|py| self.shared.app(py).map(drop))
    }

    /// Runs ONE request in-process on the current thread, which must be attached (the
    /// benchmark's entry point; give it `Response::for_test()` to capture the output).
    pub fn dispatch(&self, py: Python<'_>, params: Params, body: Body, response: Response) {
        self.shared.dispatch(py, params, body, response);
    }

    /// Runs one request through the app on the calling thread (attaching it), as a pool
    /// thread would, and returns what it sent: FCGI_STDOUT (the CGI response) and FCGI_STDERR.
    /// For `wfcgi request`: no server, no socket.
    pub fn request(&self, params: Params, body: bytes::Bytes) -> (Vec<u8>, Vec<u8>) {
        let (response, mut capture) = Response::for_test(1);
        Python::attach(|py| {
            self.shared.dispatch(py, params, Body::full(body), response);
        });
        (capture.stdout().to_vec(), capture.stderr().to_vec())
    }

    /// Which Python is running (`sys.version`, `sys.executable`, `sys.prefix`, libpython).
    pub fn python_info(&self) -> Result<PythonInfo, String> {
        Python::attach(|py| interpreter::python_info(py).map_err(|e| format_exception(py, &e)))
    }
}

impl fastcgi::Handler for Bridge {
    fn handle(&self, request: Request) {
        self.pool.submit(request);
    }

    fn serves_inline(&self) -> bool {
        true
    }

    /// The single inherited connection (IIS) runs its requests on its own thread, as wfastcgi
    /// does, without a hand-off to a pool thread and back.
    fn handle_inline(&self, request: Request) -> Option<Request> {
        pool::run_inline(&self.shared, request);
        None
    }
}
