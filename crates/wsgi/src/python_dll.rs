//! Windows: finding and loading the Python DLL before CPython starts.
//!
//! `wfcgi.exe` delay-loads `python3XX.dll` (crates/wsgi/build.rs), so it starts whatever PATH
//! holds; the Python to use is then the configured one, in this order (the first DLL that
//! loads wins):
//! 1. the venv's Python: `home` in its `pyvenv.cfg` (an old virtualenv: `Lib\orig-prefix.txt`);
//! 2. Windows' own search for the DLL: the executable's folder, the system folders, PATH;
//! 3. where the python.org installer registered that version (PEP 514), for this user, then
//!    for all users;
//! 4. the installer's default folders.
//!
//! When none loads, the error lists every place tried and the fix (docs/decisions/0008).

use std::path::{Path, PathBuf};

use crate::config::VenvSetting;
use crate::interpreter::{VenvLayout, BUILD_PYTHON_VERSION};
use crate::StartError;

/// The DLL this build embeds, `python313.dll`.
pub(crate) const DLL: &str = env!("WFCGI_PYTHON_DLL");

/// Loads the Python DLL and binds every import of it. Idempotent.
pub(crate) fn ensure_loaded(
    layout: Option<&VenvLayout>,
    venv: Option<&VenvSetting>,
) -> Result<PathBuf, StartError> {
    let bind = |from: PathBuf| -> Result<PathBuf, StartError> {
        crate::ffi::dll::bind_all_imports(DLL).map_err(|why| StartError::PythonNotFound {
            dll: DLL.to_owned(),
            version: BUILD_PYTHON_VERSION.to_owned(),
            tried: vec![format!(
                "{} loaded, but {why}: it is not the Python {BUILD_PYTHON_VERSION} DLL wfcgi was built for",
                from.display()
            )],
        })?;
        tracing::info!(dll = %from.display(), "loaded Python");
        Ok(from)
    };
    if let Some(path) = crate::ffi::dll::loaded(DLL) {
        return bind(path);
    }
    let mut tried = Vec::new();
    if let (Some(layout), Some(setting)) = (layout, venv) {
        if let VenvLayout::Venv { root, .. } = layout {
            // A venv of another version would load another DLL (or none): say that instead.
            crate::interpreter::check_venv_version(setting, root, BUILD_PYTHON_VERSION)?;
        }
        match venv_home(layout) {
            Some((home, from)) => {
                if let Some(path) = try_folder(&home, &mut tried, &from) {
                    return bind(path);
                }
            }
            None => tried.push(format!(
                "the venv {} names no Python (no `home` in pyvenv.cfg)",
                setting.path.display()
            )),
        }
    }
    if venv.is_none() {
        tried.push("no virtualenv (WFCGI_VENV, --venv) to name one".to_owned());
    }
    match crate::ffi::dll::load_by_name(DLL) {
        Ok(()) => {
            let path = crate::ffi::dll::loaded(DLL).unwrap_or_else(|| PathBuf::from(DLL));
            return bind(path);
        }
        Err(e) => tried.push(format!(
            "{DLL} by Windows' search (wfcgi.exe's folder, the system folders, PATH): {e}"
        )),
    }
    let registered = crate::ffi::dll::registered_install_paths(BUILD_PYTHON_VERSION);
    if registered.is_empty() {
        tried.push(format!(
            "no Python {BUILD_PYTHON_VERSION} registered by the installer (PEP 514)"
        ));
    }
    for folder in registered {
        if let Some(path) = try_folder(&folder, &mut tried, "registered by the Python installer") {
            return bind(path);
        }
    }
    for folder in default_folders() {
        if let Some(path) = try_folder(&folder, &mut tried, "the installer's default folder") {
            return bind(path);
        }
    }
    Err(StartError::PythonNotFound {
        dll: DLL.to_owned(),
        version: BUILD_PYTHON_VERSION.to_owned(),
        tried,
    })
}

/// Loads `folder\python3XX.dll`; on failure notes why in `tried`.
fn try_folder(folder: &Path, tried: &mut Vec<String>, why: &str) -> Option<PathBuf> {
    let path = folder.join(DLL);
    if !path.is_file() {
        tried.push(format!("{} ({why}): not found", path.display()));
        return None;
    }
    match crate::ffi::dll::load_at(&path) {
        Ok(()) => Some(path),
        Err(e) => {
            tried.push(format!("{} ({why}): {e}", path.display()));
            None
        }
    }
}

/// The Python installation a venv was made from, and how that was found.
fn venv_home(layout: &VenvLayout) -> Option<(PathBuf, String)> {
    match layout {
        VenvLayout::Venv { root, .. } => {
            let cfg = root.join("pyvenv.cfg");
            let text = std::fs::read_to_string(&cfg).ok()?;
            let home = text.lines().find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == "home").then(|| PathBuf::from(value.trim()))
            })?;
            Some((home, format!("`home` in {}", cfg.display())))
        }
        VenvLayout::ActivateThis { script } => {
            let root = script.parent()?.parent()?;
            let file = root.join("Lib").join("orig-prefix.txt");
            let prefix = std::fs::read_to_string(&file).ok()?;
            Some((PathBuf::from(prefix.trim()), format!("{}", file.display())))
        }
    }
}

/// Where the python.org installer puts Python 3.X by default: for all users, then for one.
fn default_folders() -> Vec<PathBuf> {
    let short = format!("Python{}", BUILD_PYTHON_VERSION.replace('.', ""));
    let mut folders = Vec::new();
    if let Some(pf) = std::env::var_os("ProgramFiles") {
        folders.push(PathBuf::from(pf).join(&short));
    }
    if let Some(local) = std::env::var_os("LOCALAPPDATA") {
        folders.push(
            PathBuf::from(local)
                .join("Programs")
                .join("Python")
                .join(&short),
        );
    }
    folders
}
