//! Finding the WSGI callable: wfastcgi's resolution of `WSGI_HANDLER`, `module:attr`, the
//! `ptvs_virtualenv_proxy` names, and the built-in demo app.
//!
//! wfastcgi's algorithm: split at the last `.`; import the module part and walk the remaining
//! names with `getattr`; on ImportError move the last module segment to the front of the
//! attribute chain and retry, so the longest importable prefix wins. A name ending in `()` is
//! called with no arguments once it has been looked up.

use std::fmt::Write as _;

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::HandlerSetting;
use crate::format_exception;

/// The demo app served when no handler is configured.
const DEMO_APP: &str = include_str!("demo_app.py");

/// The handler names that meant "run ptvs_virtualenv_proxy.py, which then loads
/// WSGI_ALT_VIRTUALENV_HANDLER". The proxy script need not exist: the venv is handled at
/// start-up, so only the alternative handler is loaded.
const VIRTUALENV_PROXY_NAMES: [&str; 2] = [
    "ptvs_virtualenv_proxy.get_virtualenv_handler()",
    "ptvs_virtualenv_proxy.get_venv_handler()",
];

/// Why the handler could not be loaded: the full text for the log (and, with debug responses,
/// for the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct LoadError {
    pub text: String,
}

/// One step of the attribute chain: a name, and whether it is called (`name()`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step<'a> {
    name: &'a str,
    call: bool,
}

impl<'a> Step<'a> {
    fn parse(element: &'a str) -> Self {
        match element.strip_suffix("()") {
            Some(name) => Step { name, call: true },
            None => Step {
                name: element,
                call: false,
            },
        }
    }
}

/// Loads the configured handler, or the demo app when `handler` is `None`.
/// `alt` is WSGI_ALT_VIRTUALENV_HANDLER, used when `handler` names ptvs_virtualenv_proxy.
pub fn load(
    py: Python<'_>,
    handler: Option<&HandlerSetting>,
    alt: Option<&HandlerSetting>,
) -> Result<Py<PyAny>, LoadError> {
    let Some(handler) = handler else {
        return demo_app(py).map_err(|err| LoadError {
            text: format!(
                "the built-in demo app failed to load: {}",
                format_exception(py, &err)
            ),
        });
    };
    let path = handler.path.trim();
    if VIRTUALENV_PROXY_NAMES.contains(&path) {
        let Some(alt) = alt else {
            return Err(LoadError {
                text: format!(
                    "{} = \"{path}\" means \"load WSGI_ALT_VIRTUALENV_HANDLER\", but \
                     WSGI_ALT_VIRTUALENV_HANDLER is not set.\nFix: set WSGI_HANDLER to your app \
                     (e.g. myproject.wsgi.application) and the venv with --venv, or set \
                     WSGI_ALT_VIRTUALENV_HANDLER.",
                    handler.source
                ),
            });
        };
        return resolve(py, alt);
    }
    resolve(py, handler)
}

/// Resolves one setting (dotted or `module:attr` form).
pub fn resolve(py: Python<'_>, setting: &HandlerSetting) -> Result<Py<PyAny>, LoadError> {
    let path = setting.path.trim();
    if path.is_empty() {
        return Err(LoadError {
            text: format!(
                "{} is empty.\nFix: set it to your WSGI callable, e.g. myproject.wsgi.application \
                 or django.core.wsgi.get_wsgi_application().",
                setting.source
            ),
        });
    }
    if let Some((module, attrs)) = path.split_once(':') {
        let steps: Vec<Step<'_>> = attrs.split('.').map(Step::parse).collect();
        return import_and_walk(py, module, &steps).map_err(|err| {
            let mut text = header(setting);
            let _ = write!(
                text,
                "\nImported module \"{module}\" then looked up \"{attrs}\":\n{}",
                format_exception(py, &err)
            );
            push_sys_path(py, &mut text);
            LoadError { text }
        });
    }

    let (mut module, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut steps = vec![Step::parse(last)];
    let mut tried: Vec<String> = Vec::new();
    let mut last_import_error: Option<String> = None;
    while !module.is_empty() {
        match import_and_walk(py, module, &steps) {
            Ok(app) => return Ok(app),
            Err(err) if err.is_instance_of::<PyImportError>(py) => {
                let chain: Vec<String> = steps
                    .iter()
                    .map(|s| format!("{}{}", s.name, if s.call { "()" } else { "" }))
                    .collect();
                tried.push(format!(
                    "module \"{module}\", then attribute \"{}\": {}",
                    chain.join("."),
                    one_line(py, &err)
                ));
                last_import_error = Some(format_exception(py, &err));
                let (rest, segment) = module.rsplit_once('.').unwrap_or(("", module));
                module = rest;
                steps.insert(0, Step::parse(segment));
            }
            Err(err) => {
                let mut text = header(setting);
                let _ = write!(
                    text,
                    "\nModule \"{module}\" was imported, but looking up the rest failed:\n{}",
                    format_exception(py, &err)
                );
                push_sys_path(py, &mut text);
                return Err(LoadError { text });
            }
        }
    }
    let mut text = header(setting);
    if tried.is_empty() {
        text.push_str(
            "\nThe value has no module part.\nFix: give a dotted path module.attribute, e.g. \
             app.application.",
        );
    } else {
        text.push_str("\nTried, longest module path first:");
        for line in &tried {
            let _ = write!(text, "\n  {line}");
        }
        if let Some(tb) = last_import_error {
            let _ = write!(text, "\nThe last ImportError:\n{tb}");
        }
    }
    push_sys_path(py, &mut text);
    Err(LoadError { text })
}

fn header(setting: &HandlerSetting) -> String {
    format!(
        "{} = \"{}\" could not be imported.",
        setting.source, setting.path
    )
}

fn one_line(py: Python<'_>, err: &PyErr) -> String {
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "ImportError".to_owned());
    format!("{type_name}: {}", err.value(py))
}

fn push_sys_path(py: Python<'_>, text: &mut String) {
    if let Ok(path) = py.import("sys").and_then(|sys| sys.getattr("path")) {
        let _ = write!(text, "\nsys.path = {path}");
    }
}

fn import_and_walk(py: Python<'_>, module: &str, steps: &[Step<'_>]) -> PyResult<Py<PyAny>> {
    let mut object = py.import(module)?.into_any();
    for step in steps {
        object = object.getattr(step.name)?;
        if step.call {
            object = object.call0()?;
        }
    }
    Ok(object.unbind())
}

/// The built-in demo app: a friendly page saying what to configure.
fn demo_app(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let globals = PyDict::new(py);
    globals.set_item("__name__", "wfcgi_demo_app")?;
    let code = std::ffi::CString::new(DEMO_APP)?;
    py.run(&code, Some(&globals), None)?;
    let app = globals.get_item("application")?.ok_or_else(|| {
        pyo3::exceptions::PyKeyError::new_err("the demo app defines no `application`")
    })?;
    Ok(app.unbind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingSource;
    use crate::testing;

    fn setting(path: &str) -> HandlerSetting {
        HandlerSetting {
            path: path.to_owned(),
            source: SettingSource::Setting("WSGI_HANDLER".to_owned()),
        }
    }

    /// (handler value, Ok(result of calling the app with no args as str) | Err(substrings of the
    /// error text)).
    #[test]
    fn resolution_table() {
        type Expect = Result<&'static str, &'static [&'static str]>;
        let table: &[(&str, Expect)] = &[
            ("loader_fixture.app", Ok("app")),
            ("loader_fixture.holder.inner", Ok("inner")),
            ("loader_fixture.make_app()", Ok("made")),
            ("loader_fixture.factory().built", Ok("built")),
            ("loader_pkg.sub.mod.app", Ok("nested")),
            ("loader_pkg.sub.mod.holder.inner", Ok("nested inner")),
            ("loader_fixture:holder.inner", Ok("inner")),
            ("loader_fixture:make_app()", Ok("made")),
            (
                "no_such_module_xyz.app",
                Err(&[
                    "WSGI_HANDLER = \"no_such_module_xyz.app\"",
                    "module \"no_such_module_xyz\"",
                    "No module named 'no_such_module_xyz'",
                    "sys.path",
                ]),
            ),
            (
                "no_such_pkg.sub.app",
                Err(&["module \"no_such_pkg.sub\"", "module \"no_such_pkg\""]),
            ),
            (
                "loader_broken.app",
                Err(&[
                    "loader_broken",
                    "Traceback",
                    "missing_dependency_inside",
                    "The last ImportError",
                ]),
            ),
            (
                "loader_fixture.no_such_attr",
                Err(&["no_such_attr", "AttributeError", "was imported"]),
            ),
            ("loader_fixture:nope", Err(&["nope", "AttributeError"])),
            ("app", Err(&["no module part"])),
        ];
        testing::python(|py| {
            for (value, expect) in table {
                let got = resolve(py, &setting(value));
                match (expect, got) {
                    (Ok(want), Ok(app)) => {
                        let out: String = app.bind(py).call0().unwrap().extract().unwrap();
                        assert_eq!(&out, want, "{value}");
                    }
                    (Err(parts), Err(err)) => {
                        for part in *parts {
                            assert!(err.text.contains(part), "{value}: {part:?} not in\n{err}");
                        }
                    }
                    (_, got) => panic!("{value}: unexpected {:?}", got.map(|_| "an app")),
                }
            }
        });
    }

    #[test]
    fn virtualenv_proxy_names_use_the_alt_handler() {
        testing::python(|py| {
            let alt = setting("loader_fixture.app");
            for name in VIRTUALENV_PROXY_NAMES {
                let app = load(py, Some(&setting(name)), Some(&alt)).unwrap();
                let out: String = app.bind(py).call0().unwrap().extract().unwrap();
                assert_eq!(out, "app");
                let err = load(py, Some(&setting(name)), None).unwrap_err();
                assert!(err.text.contains("WSGI_ALT_VIRTUALENV_HANDLER"), "{err}");
            }
        });
    }

    #[test]
    fn demo_app_loads_without_a_handler() {
        testing::python(|py| {
            let app = load(py, None, None).unwrap();
            assert!(app.bind(py).is_callable());
        });
    }
}
