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
//! - `pool`: long-lived Python threads, attached once, detached only while waiting for work.
//!   All GIL handling is there, plus the `detach` around single blocking waits (more body, a
//!   full response buffer, a regular file read).

#[cfg(test)]
mod bridge_tests;
pub mod config;
pub mod environ;
pub mod input;
pub mod interpreter;
pub mod loader;
mod pool;
pub mod response;
pub mod stdio;
#[cfg(test)]
mod testing;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::PyList;

pub use config::{BridgeConfig, HandlerSetting, SettingSource, VenvSetting};
pub use interpreter::PythonInfo;
pub use loader::LoadError;

use crate::environ::{EnvironOptions, EnvironTemplate};
use crate::input::{Input, InputLimits};
use crate::response::{error_page, Outcome, StartResponse};
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

/// What every pool thread shares.
pub(crate) struct Shared {
    config: BridgeConfig,
    template: EnvironTemplate,
    limits: InputLimits,
    app: PyOnceLock<Py<PyAny>>,
    /// Held while loading the handler: one thread loads, the others wait (detached).
    load_lock: Mutex<Option<LoadError>>,
    /// Incremented per load attempt, so that requests that waited for a failing attempt share
    /// its error instead of each trying again.
    load_attempts: AtomicU64,
}

impl Shared {
    /// The app, loaded on first use; after a failure the next request tries again.
    fn app<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>, LoadError> {
        if let Some(app) = self.app.get(py) {
            return Ok(app.bind(py).clone());
        }
        let seen = self.load_attempts.load(Ordering::Acquire);
        let mut last_error = self
            .load_lock
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        if let Some(app) = self.app.get(py) {
            return Ok(app.bind(py).clone());
        }
        if self.load_attempts.load(Ordering::Acquire) != seen {
            if let Some(err) = last_error.as_ref() {
                return Err(err.clone());
            }
        }
        self.load_attempts.fetch_add(1, Ordering::AcqRel);
        match self.config.handler.as_ref() {
            Some(h) => tracing::info!("loading the WSGI handler {} = {}", h.source, h.path),
            None => tracing::warn!(
                "no WSGI handler configured: serving the built-in demo app (set WSGI_HANDLER or --handler)"
            ),
        }
        match loader::load(
            py,
            self.config.handler.as_ref(),
            self.config.alt_handler.as_ref(),
        ) {
            Ok(app) => {
                *last_error = None;
                let app = self.app.get_or_init(py, || app);
                Ok(app.bind(py).clone())
            }
            Err(err) => {
                tracing::error!("{}", err.text);
                *last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Runs one request on the current (attached) thread: environ, app call, response, finish.
    pub(crate) fn dispatch(&self, py: Python<'_>, params: Params, body: Body, response: Response) {
        let app = match self.app(py) {
            Ok(app) => app,
            Err(err) => {
                let body = if self.config.debug_responses {
                    format!("500 Internal Server Error\n\n{}\n", err.text)
                } else {
                    LOAD_FAILED_500.to_owned()
                };
                response.finish_with(error_page("500 Internal Server Error", &body), 0);
                return;
            }
        };
        let content_length = params
            .get(b"CONTENT_LENGTH")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(len), Some(max)) = (content_length, self.limits.max_body_bytes) {
            if len > max {
                tracing::warn!("request body of {len} bytes refused (max_body_bytes is {max})");
                response.finish_with(
                    error_page("413 Payload Too Large", "413 Payload Too Large\n"),
                    0,
                );
                return;
            }
        }
        let prepared =
            Bound::new(py, Input::new(body, content_length, self.limits)).and_then(|input| {
                let environ = self.template.build(py, params.iter(), input.as_any())?;
                Ok((
                    input,
                    environ,
                    Bound::new(py, StartResponse::new(response))?,
                ))
            });
        let (input, environ, start) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                // Only an allocation failure gets here; dropping the response ends the request
                // with app status 1.
                tracing::error!(
                    "preparing the request failed:\n{}",
                    format_exception(py, &err)
                );
                return;
            }
        };
        let outcome = response::drive(py, &app, &environ, &start, self.config.debug_responses);
        // An app thread still using wsgi.input or write() right now keeps them: the body is then
        // released, and the request ended (by the Response's Drop), when Python frees them.
        if let Ok(mut input) = input.try_borrow_mut() {
            input.release();
        }
        if let Ok(mut start) = start.try_borrow_mut() {
            start.finish(match outcome {
                Outcome::Complete | Outcome::ErrorResponse => 0,
                Outcome::Truncated | Outcome::ClientGone => 1,
            });
        }
    }
}

/// What a visitor sees when the handler cannot be loaded and debug_responses is off.
const LOAD_FAILED_500: &str =
    "500 Internal Server Error\n\nThe application could not be loaded. The details are in the server's log.\n";

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
            prepare_sys_path(py, &app_dir, &config.python_path)?;
            stdio::install(py)?;
            let options = EnvironOptions {
                multithread: config.threads > 1,
                multiprocess: config.multiprocess,
                script_name: config.script_name.clone(),
                allow_path_info_for_script_mappings: config.allow_path_info_for_script_mappings,
            };
            let errors = Bound::new(py, stdio::LogWriter::new(stdio::Stream::WsgiErrors))?;
            let wrapper = py.get_type::<response::FileWrapper>();
            let template =
                EnvironTemplate::new(py, options, errors.into_any(), wrapper.into_any())?;
            let limits = InputLimits {
                spool_threshold: config.spool_threshold,
                max_body_bytes: config.max_body_bytes,
            };
            Ok(Shared {
                config,
                template,
                limits,
                app: PyOnceLock::new(),
                load_lock: Mutex::new(None),
                load_attempts: AtomicU64::new(0),
            })
        })
        .map_err(|err| StartError::Python(Python::attach(|py| format_exception(py, &err))))?;
        let shared = Arc::new(shared);
        let pool = pool::Pool::start(shared.clone()).map_err(StartError::Threads)?;
        Ok(Bridge { shared, pool })
    }

    /// Stops taking requests, lets queued and running ones finish for up to `grace`, then
    /// flushes Python's stdout/stderr. Returns `false` if some were still running.
    pub fn shutdown(&self, grace: Duration) -> bool {
        let done = self.pool.shutdown(grace);
        Python::attach(interpreter::flush_std_streams);
        done
    }

    /// Runs ONE request in-process on the current thread, which must be attached (the
    /// benchmark's entry point; give it `Response::for_test()` to capture the output).
    pub fn dispatch(&self, py: Python<'_>, params: Params, body: Body, response: Response) {
        self.shared.dispatch(py, params, body, response);
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

/// `sys.path[0] = app_dir` (absolute, unlike wfastcgi's `'.'`, so that a later chdir by the
/// app cannot change where imports come from), then `python_path` appended in order.
fn prepare_sys_path(py: Python<'_>, app_dir: &std::path::Path, extra: &[PathBuf]) -> PyResult<()> {
    let path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
    let app_dir = app_dir.to_string_lossy();
    while let Some(i) = path
        .iter()
        .position(|p| p.extract::<String>().is_ok_and(|p| p == app_dir))
    {
        path.del_item(i)?;
    }
    path.insert(0, app_dir.as_ref())?;
    for dir in extra {
        let dir = dir.to_string_lossy();
        if !path
            .iter()
            .any(|p| p.extract::<String>().is_ok_and(|p| p == dir))
        {
            path.append(dir.as_ref())?;
        }
    }
    Ok(())
}
