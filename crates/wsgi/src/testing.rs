//! Shared test helpers: the interpreter is started once per test process (it cannot be started
//! twice), with the fixtures folder on `sys.path`.

use std::path::{Path, PathBuf};
use std::sync::Once;

use bytes::Bytes;
use pyo3::prelude::*;

use crate::{Bridge, BridgeConfig, HandlerSetting, SettingSource};
use fastcgi::{Body, Params, Response};

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Runs `f` attached to the interpreter, starting it first if needed.
pub(crate) fn python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    static START: Once = Once::new();
    START.call_once(|| {
        crate::interpreter::initialize(None).expect("the interpreter starts");
        Python::attach(|py| {
            crate::stdio::install(py).unwrap();
            let path = py.import("sys").unwrap().getattr("path").unwrap();
            path.call_method1("insert", (0, fixtures().to_string_lossy().as_ref()))
                .unwrap();
        });
    });
    Python::attach(f)
}

/// A bridge serving `handler` from the fixtures folder (one thread; tests call `dispatch`).
pub(crate) fn bridge(handler: Option<&str>, tweak: impl FnOnce(&mut BridgeConfig)) -> Bridge {
    python(|_| ());
    let mut config = BridgeConfig::new(fixtures());
    config.threads = 1;
    config.handler = handler.map(|path| HandlerSetting {
        path: path.to_owned(),
        source: SettingSource::Setting("WSGI_HANDLER".to_owned()),
    });
    tweak(&mut config);
    Bridge::start(config).expect("the bridge starts")
}

/// The bytes a request produced on FCGI_STDOUT, and its END_REQUEST app status.
pub(crate) struct Output {
    pub stdout: Vec<u8>,
    pub app_status: Option<u32>,
}

impl Output {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn status_line(&self) -> String {
        self.text().lines().next().unwrap_or_default().to_owned()
    }

    pub(crate) fn body(&self) -> String {
        let text = self.text();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// Runs one request through `bridge` on this thread.
pub(crate) fn request(bridge: &Bridge, params: &[(&str, &str)], body: &[u8]) -> Output {
    let params = Params::from_pairs(params.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let (response, mut capture) = Response::for_test(1);
    python(|py| {
        bridge.dispatch(
            py,
            params,
            Body::full(Bytes::copy_from_slice(body)),
            response,
        )
    });
    Output {
        stdout: capture.stdout().to_vec(),
        app_status: capture.app_status(),
    }
}
