//! One request through the app: the app loaded on first use (wfastcgi's resolution, in
//! `loader`), the environ built (`environ`), the app called and its response framed
//! (`response`), the request ended. Run by a pool thread, or inline on the IIS connection's
//! thread (`pool`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock};

use crate::access;
use crate::config::BridgeConfig;
use crate::environ::{EnvironOptions, EnvironTemplate};
use crate::input::{Input, InputLimits};
use crate::loader::{self, LoadError};
use crate::request_id::id_for;
use crate::response::{self, error_page_for, Outcome, StartResponse};
use crate::watchdog::Running;
use crate::{format_exception, stdio};
use fastcgi::{Body, Params, Response};

/// What every pool thread shares.
pub(crate) struct Shared {
    pub(crate) config: BridgeConfig,
    template: EnvironTemplate,
    limits: InputLimits,
    app: PyOnceLock<Py<PyAny>>,
    /// Held while loading the handler: one thread loads, the others wait (detached).
    load_lock: Mutex<Option<LoadError>>,
    /// Incremented per load attempt, so that requests that waited for a failing attempt share
    /// its error instead of each trying again.
    load_attempts: AtomicU64,
    /// The requests being run, for the request timeout and SIGUSR1's stacks.
    pub(crate) running: Arc<Running>,
}

impl Shared {
    /// What the pool threads share, prepared once the interpreter runs.
    pub(crate) fn new(py: Python<'_>, config: BridgeConfig) -> PyResult<Shared> {
        let options = EnvironOptions {
            multithread: config.threads > 1,
            multiprocess: config.multiprocess,
            script_name: config.script_name.clone(),
            allow_path_info_for_script_mappings: config.allow_path_info_for_script_mappings,
        };
        let errors = Bound::new(py, stdio::LogWriter::new(stdio::Stream::WsgiErrors))?;
        let wrapper = py.get_type::<response::FileWrapper>();
        let template = EnvironTemplate::new(py, options, errors.into_any(), wrapper.into_any())?;
        let limits = InputLimits {
            spool_threshold: config.spool_threshold,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
        };
        Ok(Shared {
            config,
            template,
            limits,
            app: PyOnceLock::new(),
            load_lock: Mutex::new(None),
            load_attempts: AtomicU64::new(0),
            running: Arc::new(Running::default()),
        })
    }

    /// The app, loaded on first use; after a failure the next request tries again.
    pub(crate) fn app<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>, LoadError> {
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
        let _span = crate::log_scope::enter();
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
    /// It is in `running` while it runs, and every log line about it carries its id.
    pub(crate) fn dispatch(&self, py: Python<'_>, params: Params, body: Body, response: Response) {
        // The environ first: its pass over the params also reads the request's head (method,
        // path, length, X-Request-Id), which everything below needs.
        let (environ, head) = match self.template.build(py, params.iter()) {
            Ok(built) => built,
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
        let id = id_for(&head);
        let _scope = crate::log_scope::begin(&id);
        let _running = self
            .running
            .register(py, &params, &head, &id, response.expiry());
        let access = access::begin(self.config.access_log, &head);
        if self.config.debugpy.is_some() {
            crate::debugpy::trace_this_thread(py);
        }
        let app = match self.app(py) {
            Ok(app) => app,
            Err(err) => {
                let body = if self.config.debug_responses {
                    format!("500 Internal Server Error\n\n{}\n", err.text)
                } else {
                    LOAD_FAILED_500.to_owned()
                };
                let page =
                    error_page_for("500 Internal Server Error", &body, Some(&id.to_string()));
                if let Some(access) = access {
                    access.end(&id, 500, response::page_body_len(&page));
                }
                response.finish_with(page, 0);
                return;
            }
        };
        let content_length = std::str::from_utf8(head.content_length)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(len), Some(max)) = (content_length, self.limits.max_body_bytes) {
            if len > max {
                let _span = crate::log_scope::enter();
                tracing::warn!("request body of {len} bytes refused (max_body_bytes is {max})");
                let page = error_page_for(
                    "413 Payload Too Large",
                    "413 Payload Too Large\n",
                    Some(&id.to_string()),
                );
                if let Some(access) = access {
                    access.end(&id, 413, response::page_body_len(&page));
                }
                response.finish_with(page, 0);
                return;
            }
        }
        let input = Input::new(body, response.expiry(), content_length, self.limits);
        let prepared = Bound::new(py, input).and_then(|input| {
            environ.set_item(intern!(py, "wsgi.input"), &input)?;
            Ok((
                input,
                Bound::new(py, StartResponse::for_request(response, id.clone()))?,
            ))
        });
        let (input, start) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                // Only an allocation failure gets here; dropping the response ends the request
                // with app status 1.
                let _span = crate::log_scope::enter();
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
            if let Some(access) = access {
                let (status, bytes) = start.status_and_bytes();
                access.end(&id, status, bytes);
            }
        }
    }
}

/// What a visitor sees when the handler cannot be loaded and debug_responses is off.
const LOAD_FAILED_500: &str =
    "500 Internal Server Error\n\nThe application could not be loaded. The details are in the server's log.\n";
