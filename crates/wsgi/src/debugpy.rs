//! `WFCGI_DEBUGPY`: the embedded interpreter listens for a debugger (VS Code's "Python: Remote
//! Attach", or any DAP client) through debugpy, installed in the app's venv. It is started once
//! the venv is active and `sys.path` is set, before the app is loaded, so that breakpoints in
//! the app's import code work too; with `wait`, start-up waits for the debugger to attach
//! (before the first request). A missing debugpy or a port in use is logged with its fix and
//! the app runs on without a debugger.

use pyo3::prelude::*;

use crate::config::Debugpy;
use crate::format_exception;

/// Starts debugpy's listener (on an attached thread).
pub(crate) fn start(py: Python<'_>, d: &Debugpy) {
    let debugpy = match py.import("debugpy") {
        Ok(module) => module,
        Err(err) => {
            let prefix = py
                .import("sys")
                .and_then(|sys| sys.getattr("prefix"))
                .and_then(|p| p.extract::<String>())
                .unwrap_or_default();
            tracing::error!(
                "{}: debugpy cannot be imported in this Python ({prefix}): {}. Fix: install it in the venv, {prefix}/bin/python -m pip install debugpy (Scripts\\python.exe on Windows); the app runs without a debugger meanwhile",
                d.described,
                err.value(py)
            );
            return;
        }
    };
    if let Err(err) = debugpy.call_method1("listen", ((d.host.as_str(), d.port),)) {
        tracing::error!(
            "{}: debugpy cannot listen on {}:{}: {}. Fix: choose a free port (another process, or another worker, may hold it); the app runs without a debugger meanwhile",
            d.described,
            d.host,
            d.port,
            format_exception(py, &err).trim_end()
        );
        return;
    }
    tracing::info!(
        "debugpy listening on {}:{} ({}): attach a debugger (VS Code: \"Python: Remote Attach\" to this host and port)",
        d.host,
        d.port,
        d.described
    );
    if d.wait {
        tracing::info!(
            "waiting for a debugger to attach before the first request (WFCGI_DEBUGPY_WAIT)"
        );
        // Waiting releases the GIL inside debugpy.
        if let Err(err) = debugpy.call_method0("wait_for_client") {
            tracing::error!("debugpy.wait_for_client failed: {}", err.value(py));
        } else {
            tracing::info!("a debugger attached");
        }
    }
}

/// debugpy traces the threads Python's `threading` starts; the bridge's threads are started
/// by Rust and only attached to the interpreter, so each is shown to debugpy once, at its
/// first request (or no breakpoint would be hit in a request).
pub(crate) fn trace_this_thread(py: Python<'_>) {
    thread_local! {
        static TRACED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if TRACED.with(|t| t.replace(true)) {
        return;
    }
    let traced = py
        .import("debugpy")
        .and_then(|debugpy| debugpy.call_method0("debug_this_thread"));
    if let Err(err) = traced {
        tracing::debug!("debugpy.debug_this_thread failed: {}", err.value(py));
    }
}
