//! Starting CPython: which interpreter (a venv's, or the one wfcgi was built against), the
//! venv version check, the old `activate_this.py` fallback, and what was actually loaded.
//!
//! The interpreter is started once per process and never finalised (pyo3 does not call
//! `Py_Finalize`); [`flush_std_streams`] is what shutdown does instead.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::config::VenvSetting;
use crate::StartError;

/// The interpreter wfcgi was built against (`pyo3_build_config`'s, recorded by build.rs). With
/// no venv it is PyConfig's `executable`, so the stdlib found does not depend on PATH.
pub const BUILD_PYTHON: &str = env!("WFCGI_BUILD_PYTHON");

/// `major.minor` of the build interpreter.
pub const BUILD_PYTHON_VERSION: &str = env!("WFCGI_BUILD_PYTHON_VERSION");

/// A venv setting resolved to what start-up has to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VenvLayout {
    /// A PEP 405 venv (has `pyvenv.cfg`): start with its interpreter as `executable` and let
    /// Python's path calculation read `pyvenv.cfg`.
    Venv { root: PathBuf, executable: PathBuf },
    /// An old virtualenv's `activate_this.py`: default start-up, then run the script (what
    /// wfastcgi's `ptvs_virtualenv_proxy.get_virtualenv_handler()` did).
    ActivateThis { script: PathBuf },
}

/// What the process started with, so that a second `Bridge::start` (tests) can tell whether it
/// asks for the same thing.
static STARTED: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);

#[cfg(windows)]
const VENV_PYTHON: &[&str] = &["Scripts", "python.exe"];
#[cfg(not(windows))]
const VENV_PYTHON: &[&str] = &["bin", "python"];

/// Works out what `setting.path` names: the venv folder, its interpreter, or `activate_this.py`.
pub fn resolve_venv(setting: &VenvSetting) -> Result<VenvLayout, StartError> {
    let path = &setting.path;
    let not_a_venv = |reason: &str| StartError::NotAVenv {
        setting: setting.source.clone(),
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let metadata = std::fs::metadata(path).map_err(|error| StartError::VenvNotFound {
        setting: setting.source.clone(),
        path: path.clone(),
        error,
    })?;
    if metadata.is_file() {
        if path.file_name().is_some_and(|n| n == "activate_this.py") {
            return Ok(VenvLayout::ActivateThis {
                script: path.clone(),
            });
        }
        // An interpreter inside a venv: <root>/bin/python or <root>\Scripts\python.exe.
        let root = path
            .parent()
            .and_then(Path::parent)
            .filter(|root| root.join("pyvenv.cfg").is_file())
            .ok_or_else(|| {
                not_a_venv("it is a file but neither a venv's interpreter (no pyvenv.cfg two folders up) nor activate_this.py")
            })?;
        return Ok(VenvLayout::Venv {
            root: root.to_path_buf(),
            executable: path.clone(),
        });
    }
    if path.join("pyvenv.cfg").is_file() {
        let executable = VENV_PYTHON
            .iter()
            .fold(path.clone(), |p, part| p.join(part));
        if !executable.exists() {
            return Err(not_a_venv(&format!(
                "it has pyvenv.cfg but no interpreter at {}",
                executable.display()
            )));
        }
        return Ok(VenvLayout::Venv {
            root: path.clone(),
            executable,
        });
    }
    let activate_this = path.join(VENV_PYTHON[0]).join("activate_this.py");
    if activate_this.is_file() {
        return Ok(VenvLayout::ActivateThis {
            script: activate_this,
        });
    }
    Err(not_a_venv(
        "it has no pyvenv.cfg (create one with: python -m venv PATH)",
    ))
}

/// The `major.minor` a venv was created with, from `pyvenv.cfg` (`version = 3.11.7` from
/// `venv`, `version_info = 3.11.7.final.0` from virtualenv and uv).
pub fn venv_version(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        match key.trim() {
            "version" | "version_info" => major_minor(value.trim()),
            _ => None,
        }
    })
}

/// `3.11` from `3.11.7 (main, ...)` or `3.11.7.final.0`.
fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().filter(|p| !p.is_empty())?;
    let minor = parts.next().filter(|p| !p.is_empty())?;
    Some(format!("{major}.{minor}"))
}

/// Refuses a venv made with another minor version than the linked libpython: it would start
/// with no usable site-packages and fail obscurely later.
pub fn check_venv_version(
    setting: &VenvSetting,
    root: &Path,
    linked: &str,
) -> Result<(), StartError> {
    let linked = major_minor(linked).unwrap_or_else(|| linked.to_owned());
    match venv_version(root) {
        Some(venv) if venv != linked => Err(StartError::VenvVersionMismatch {
            setting: setting.source.clone(),
            path: setting.path.clone(),
            venv_version: venv,
            linked_version: linked,
        }),
        _ => Ok(()),
    }
}

/// Starts the interpreter for `venv` (idempotent for the same setting), then leaves the calling
/// thread detached so that pool threads can attach.
pub fn initialize(venv: Option<&VenvSetting>) -> Result<(), StartError> {
    let layout = venv.map(resolve_venv).transpose()?;
    // Before any CPython call: wfcgi.exe delay-loads the DLL.
    #[cfg(python_delay_loaded)]
    crate::python_dll::ensure_loaded(layout.as_ref(), venv)?;
    let wanted = venv.map(|v| v.path.clone());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = started.as_ref() {
        if *previous == wanted {
            return Ok(());
        }
        return Err(StartError::AlreadyStarted {
            previous: previous.clone(),
        });
    }
    if crate::ffi::is_initialized() {
        // Someone else (an embedding test harness) started it: use it as it is.
        *started = Some(wanted);
        return Ok(());
    }
    let executable = match (&layout, venv) {
        (Some(VenvLayout::Venv { root, executable }), Some(setting)) => {
            check_venv_version(setting, root, &crate::ffi::linked_version())?;
            executable.clone()
        }
        _ => PathBuf::from(BUILD_PYTHON),
    };
    crate::ffi::start(&executable).map_err(|message| StartError::Interpreter {
        executable: executable.clone(),
        message,
    })?;
    *started = Some(wanted);
    if let (Some(VenvLayout::ActivateThis { script }), Some(setting)) = (&layout, venv) {
        Python::attach(|py| run_activate_this(py, script)).map_err(|message| {
            StartError::ActivateThis {
                setting: setting.source.clone(),
                path: script.clone(),
                message,
            }
        })?;
    }
    Ok(())
}

/// `exec(open(script).read(), {'__file__': script})`, as ptvs_virtualenv_proxy did.
fn run_activate_this(py: Python<'_>, script: &Path) -> Result<(), String> {
    let run = || -> PyResult<()> {
        let globals = PyDict::new(py);
        let file = script.to_string_lossy();
        globals.set_item("__file__", file.as_ref())?;
        globals.set_item("__name__", "__activate_this__")?;
        let code = py
            .import("builtins")?
            .getattr("open")?
            .call1((file.as_ref(),))?
            .call_method0("read")?;
        let compiled =
            py.import("builtins")?
                .getattr("compile")?
                .call1((code, file.as_ref(), "exec"))?;
        py.import("builtins")?
            .getattr("exec")?
            .call1((compiled, globals))?;
        Ok(())
    };
    run().map_err(|err| crate::format_exception(py, &err))
}

/// Which Python is running: proves the binary loaded the libpython and stdlib it was meant to.
#[derive(Debug, Clone)]
pub struct PythonInfo {
    /// `sys.version`.
    pub version: String,
    /// `sys.executable`: the venv's interpreter when a venv is configured.
    pub executable: String,
    /// `sys.prefix`: the venv when one is active.
    pub prefix: String,
    /// `sys.base_prefix`: the Python installation.
    pub base_prefix: String,
    /// The shared library `Py_GetVersion` was resolved from (`None` where unknown).
    pub library: Option<PathBuf>,
    /// `sys.path`, as the app will import with it.
    pub sys_path: Vec<String>,
}

pub fn python_info(py: Python<'_>) -> PyResult<PythonInfo> {
    let sys = py.import("sys")?;
    let get = |name: &str| -> PyResult<String> { sys.getattr(name)?.extract() };
    Ok(PythonInfo {
        version: get("version")?,
        executable: get("executable")?,
        prefix: get("prefix")?,
        base_prefix: get("base_prefix")?,
        library: crate::ffi::library_path(),
        sys_path: sys.getattr("path")?.extract()?,
    })
}

/// Flushes `sys.stdout` / `sys.stderr` (pyo3 never finalises the interpreter, so nothing else
/// would).
pub fn flush_std_streams(py: Python<'_>) {
    for name in ["stdout", "stderr"] {
        if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(name)) {
            if !stream.is_none() {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

/// The linked libpython's `Py_GetVersion()` (safe before initialisation).
pub fn linked_version() -> String {
    crate::ffi::linked_version()
}

/// `sys.path[0] = app_dir` (absolute, unlike wfastcgi's `'.'`, so that a later chdir by the
/// app cannot change where imports come from), then `python_path` appended in order.
pub(crate) fn prepare_sys_path(
    py: Python<'_>,
    app_dir: &std::path::Path,
    extra: &[PathBuf],
) -> PyResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingSource;
    use test_support::TempDir;

    fn setting(path: PathBuf) -> VenvSetting {
        VenvSetting {
            path,
            source: SettingSource::Flag("--venv"),
        }
    }

    fn fake_venv(dir: &TempDir, cfg: &str) -> PathBuf {
        let root = dir.path().join("venv");
        let bin = VENV_PYTHON[..1]
            .iter()
            .fold(root.clone(), |p, part| p.join(part));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(root.join("pyvenv.cfg"), cfg).unwrap();
        std::fs::write(bin.join(VENV_PYTHON[1]), "").unwrap();
        root
    }

    #[test]
    fn version_mismatch_names_both_versions_and_the_fix() {
        let dir = TempDir::new("venv");
        let root = fake_venv(&dir, "home = /usr/bin\nversion = 3.12.1\n");
        let err = check_venv_version(&setting(root.clone()), &root, "3.11.7 (main, ...)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("3.12"), "{err}");
        assert!(err.contains("3.11"), "{err}");
        assert!(err.contains("--venv"), "{err}");
        assert!(err.contains("python3.11 -m venv"), "{err}");
        assert!(err.contains("PYO3_PYTHON"), "{err}");
    }

    #[test]
    fn version_info_key_and_matching_version_pass() {
        let dir = TempDir::new("venv");
        let root = fake_venv(&dir, "version_info = 3.11.2.final.0\n");
        assert_eq!(venv_version(&root).as_deref(), Some("3.11"));
        check_venv_version(&setting(root.clone()), &root, "3.11.7").unwrap();
        assert!(check_venv_version(&setting(root.clone()), &root, "3.10.1").is_err());
    }

    #[test]
    fn venv_setting_forms_resolve() {
        let dir = TempDir::new("venv");
        let root = fake_venv(&dir, "version = 3.11.7\n");
        let exe = VENV_PYTHON
            .iter()
            .fold(root.clone(), |p, part| p.join(part));
        let expected = VenvLayout::Venv {
            root: root.clone(),
            executable: exe.clone(),
        };
        assert_eq!(resolve_venv(&setting(root.clone())).unwrap(), expected);
        assert_eq!(resolve_venv(&setting(exe)).unwrap(), expected);

        let old = dir.path().join("old");
        std::fs::create_dir_all(old.join(VENV_PYTHON[0])).unwrap();
        let script = old.join(VENV_PYTHON[0]).join("activate_this.py");
        std::fs::write(&script, "").unwrap();
        let want = VenvLayout::ActivateThis {
            script: script.clone(),
        };
        assert_eq!(resolve_venv(&setting(script)).unwrap(), want);
        assert_eq!(resolve_venv(&setting(old)).unwrap(), want);

        let missing = resolve_venv(&setting(dir.path().join("nope"))).unwrap_err();
        assert!(missing.to_string().contains("--venv"), "{missing}");
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let err = resolve_venv(&setting(plain)).unwrap_err().to_string();
        assert!(err.contains("pyvenv.cfg"), "{err}");
    }

    #[test]
    fn loaded_python_is_the_build_interpreter() {
        let info = crate::testing::python(|py| python_info(py).unwrap());
        assert!(
            info.version
                .starts_with(&format!("{BUILD_PYTHON_VERSION}.")),
            "{info:?}"
        );
        assert_eq!(info.executable, BUILD_PYTHON, "{info:?}");
        let base = Path::new(BUILD_PYTHON).parent().unwrap().parent().unwrap();
        assert_eq!(Path::new(&info.prefix), base, "{info:?}");
        let library = info.library.expect("dladdr finds libpython");
        assert!(
            library.starts_with(base.join("lib")),
            "{library:?} not under {base:?}"
        );
        assert!(linked_version().starts_with(&info.version[..4]));
    }
}
