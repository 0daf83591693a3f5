//! Every raw CPython (and loader) call of the bridge, each behind a safe function with the
//! reason it is sound. The rest of the crate uses pyo3's safe API only.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyString};

// ---------------------------------------------------------------- start-up (PyConfig)

pub(crate) fn is_initialized() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, before or after initialisation.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

pub(crate) fn linked_version() -> String {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated string and is
    // documented as callable before Py_Initialize.
    let version = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    version.to_string_lossy().into_owned()
}

/// Py_InitializeFromConfig with `executable` set and no signal handlers (the binary owns
/// signals), then PyEval_SaveThread so that the calling thread does not hold the GIL.
pub(crate) fn start(executable: &Path) -> Result<(), String> {
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct it is given.
    unsafe { ffi::PyConfig_InitPythonConfig(config.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut config = unsafe { config.assume_init() };
    config.install_signal_handlers = 0;
    let status = set_executable(&mut config, executable);
    // SAFETY: PyStatus_Exception only reads the status value it is given.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        // SAFETY: config was initialised by PyConfig_InitPythonConfig; after a failed setter
        // it is still valid for PyConfig_Clear.
        unsafe { ffi::PyConfig_Clear(&mut config) };
        return Err(status_message(status, "setting PyConfig.executable failed"));
    }
    // SAFETY: config is a fully initialised PyConfig; the interpreter is not initialised
    // (checked by the caller under the STARTED lock).
    let status = unsafe { ffi::Py_InitializeFromConfig(&config) };
    // SAFETY: config is no longer needed; Py_InitializeFromConfig copied what it keeps.
    unsafe { ffi::PyConfig_Clear(&mut config) };
    // SAFETY: status is a plain value returned above.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        return Err(status_message(status, "Py_InitializeFromConfig failed"));
    }
    // SAFETY: this thread holds the GIL after a successful initialisation; releasing it
    // lets every other thread attach. The thread state is kept by the interpreter.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}

#[cfg(unix)]
fn set_executable(config: &mut ffi::PyConfig, executable: &Path) -> ffi::PyStatus {
    use std::os::unix::ffi::OsStrExt;
    let bytes = std::ffi::CString::new(executable.as_os_str().as_bytes())
        .unwrap_or_else(|_| c"python3".to_owned());
    let config: *mut ffi::PyConfig = config;
    // SAFETY: config points to an initialised PyConfig; the field pointer is derived from
    // it; bytes is NUL-terminated and outlives the call (Python copies it).
    unsafe { ffi::PyConfig_SetBytesString(config, &raw mut (*config).executable, bytes.as_ptr()) }
}

#[cfg(windows)]
fn set_executable(config: &mut ffi::PyConfig, executable: &Path) -> ffi::PyStatus {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = executable
        .as_os_str()
        .encode_wide()
        .chain(std::iter::once(0))
        .collect();
    let config: *mut ffi::PyConfig = config;
    // SAFETY: as on unix; wchar_t is u16 on Windows and wide is NUL-terminated.
    unsafe { ffi::PyConfig_SetString(config, &raw mut (*config).executable, wide.as_ptr()) }
}

fn status_message(status: ffi::PyStatus, fallback: &str) -> String {
    let text = |p: *const std::ffi::c_char| {
        // SAFETY: PyStatus strings are static C strings or null.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    match (text(status.func), text(status.err_msg)) {
        (Some(func), Some(msg)) => format!("{func}: {msg}"),
        (None, Some(msg)) => msg,
        _ => fallback.to_owned(),
    }
}

/// The file the dynamic loader resolved `Py_GetVersion` from: the libpython in use.
#[cfg(unix)]
pub(crate) fn library_path() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the address and fills info; the function pointer is a
    // valid address inside the loaded libpython (or the executable when linked statically).
    let found =
        unsafe { libc::dladdr(ffi::Py_GetVersion as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr returned non-zero, so info is filled; dli_fname may still be null.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

#[cfg(windows)]
pub(crate) fn library_path() -> Option<PathBuf> {
    dll::loaded(env!("WFCGI_PYTHON_DLL"))
}

/// Windows: in wfcgi.exe `python3XX.dll` is delay-loaded (crates/wsgi/build.rs, the cfg
/// `python_delay_loaded`): nothing of it may be touched before `dll::bind_all_imports` has
/// run, which `python_dll::ensure_loaded` does before the first CPython call. (The extension
/// module of the pip package imports the DLL as usual: python.exe has loaded it.) The
/// address-table walk is what mingw-w64's `__HrLoadAllImportsForDll` does, with
/// GetProcAddress's failure returned instead of raised.
#[cfg(windows)]
#[cfg_attr(not(python_delay_loaded), allow(dead_code, unused_imports))]
pub(crate) mod dll {
    use std::ffi::{CStr, OsStr, OsString};
    use std::os::windows::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use windows_sys::Win32::System::LibraryLoader::{
        GetModuleFileNameW, GetModuleHandleW, GetProcAddress, LoadLibraryExW,
        LOAD_WITH_ALTERED_SEARCH_PATH,
    };
    use windows_sys::Win32::System::Registry::{
        RegGetValueW, HKEY, HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ,
        RRF_SUBKEY_WOW6464KEY,
    };

    fn wide(s: &OsStr) -> Vec<u16> {
        s.encode_wide().chain(std::iter::once(0)).collect()
    }

    /// Loads the DLL at `path`; its own imports (vcruntime140.dll) come from its folder.
    pub(crate) fn load_at(path: &Path) -> std::io::Result<()> {
        let name = wide(path.as_os_str());
        // SAFETY: name is NUL-terminated and outlives the call; no reserved handle is passed.
        // A DLL that loads stays loaded for the process's life (the module is never freed).
        let module = unsafe {
            LoadLibraryExW(
                name.as_ptr(),
                std::ptr::null_mut(),
                LOAD_WITH_ALTERED_SEARCH_PATH,
            )
        };
        if module.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Loads `name` through the standard search (the executable's folder, the system folders,
    /// PATH).
    pub(crate) fn load_by_name(name: &str) -> std::io::Result<()> {
        let name = wide(OsStr::new(name));
        // SAFETY: as in load_at.
        let module = unsafe { LoadLibraryExW(name.as_ptr(), std::ptr::null_mut(), 0) };
        if module.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The file of the loaded module `name`, if it is loaded.
    pub(crate) fn loaded(name: &str) -> Option<PathBuf> {
        let wname = wide(OsStr::new(name));
        // SAFETY: wname is NUL-terminated; GetModuleHandleW does not take a reference.
        let module = unsafe { GetModuleHandleW(wname.as_ptr()) };
        if module.is_null() {
            return None;
        }
        let mut buf = vec![0u16; 32 * 1024];
        // SAFETY: module is a loaded module's handle; buf's length is passed with it.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) };
        Some(PathBuf::from(OsString::from_wide(&buf[..n as usize])))
    }

    #[cfg(python_delay_loaded)]
    include!(concat!(env!("OUT_DIR"), "/delay_descriptor.rs"));

    /// Binds every delay-loaded import of the Python DLL, already loaded as `dll`, now: its
    /// data imports (type objects, exception classes) are only usable after this. A name the
    /// DLL does not export (another Python's DLL) is an error naming it.
    #[cfg(python_delay_loaded)]
    pub(crate) fn bind_all_imports(dll: &str) -> Result<(), String> {
        let wname = wide(OsStr::new(dll));
        // SAFETY: wname is NUL-terminated.
        let module = unsafe { GetModuleHandleW(wname.as_ptr()) };
        if module.is_null() {
            return Err(format!("{dll} is not loaded"));
        }
        // SAFETY: a null name gives this executable's own module: the image holding the
        // descriptor and the address tables it points into.
        let base = unsafe { GetModuleHandleW(std::ptr::null()) }.cast::<u8>();
        // SAFETY: the descriptor is a static of this image (made by dlltool, ImgDelayDescr
        // layout: attributes, then RVAs of the name, the module handle, the IAT and the INT).
        let descriptor = unsafe { &*std::ptr::addr_of!(PYTHON_DELAY_DESCRIPTOR) };
        let rva = |r: u32| base.wrapping_add(r as usize);
        let iat = rva(descriptor[3]).cast::<usize>();
        let int = rva(descriptor[4]).cast::<u64>();
        let mut i = 0;
        loop {
            // SAFETY: the INT is a zero-terminated array of IMAGE_THUNK_DATA64 inside the image.
            let entry = unsafe { int.add(i).read() };
            if entry == 0 {
                break;
            }
            if entry & (1 << 63) != 0 {
                return Err(format!(
                    "{dll}: an import by ordinal ({entry:#x}) is not expected"
                ));
            }
            // IMAGE_IMPORT_BY_NAME: a u16 hint, then the NUL-terminated name.
            let name = rva(entry as u32).wrapping_add(2).cast::<std::ffi::c_char>();
            // SAFETY: module is the loaded DLL; name is a NUL-terminated string in the image.
            let address = unsafe { GetProcAddress(module, name.cast()) };
            let Some(address) = address else {
                // SAFETY: as above.
                let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                return Err(format!("{dll} has no {name}"));
            };
            // SAFETY: the delay-import IAT is writable data of this image (the delay-load
            // helper writes it too), with one slot per INT entry; no CPython code runs yet,
            // so no thread reads the slot while it is written.
            unsafe { iat.add(i).write(address as usize) };
            i += 1;
        }
        // SAFETY: the descriptor's module-handle slot is writable data of this image; with it
        // set the delay-load helper, should it ever run, uses this module.
        unsafe {
            rva(descriptor[2])
                .cast::<*mut std::ffi::c_void>()
                .write(module)
        };
        Ok(())
    }

    /// PEP 514: where the python.org installer says Python `version` is, for this user and
    /// for all users.
    pub(crate) fn registered_install_paths(version: &str) -> Vec<PathBuf> {
        let key = wide(OsStr::new(&format!(
            r"Software\Python\PythonCore\{version}\InstallPath"
        )));
        [HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE]
            .into_iter()
            .filter_map(|root| default_value(root, &key))
            .map(PathBuf::from)
            .collect()
    }

    fn default_value(root: HKEY, key: &[u16]) -> Option<OsString> {
        let mut buf = vec![0u16; 4096];
        let mut size = (buf.len() * 2) as u32;
        // SAFETY: key is NUL-terminated; a null value name reads the key's default value;
        // buf and its size in bytes are passed together.
        let status = unsafe {
            RegGetValueW(
                root,
                key.as_ptr(),
                std::ptr::null(),
                RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY,
                std::ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        if status != 0 {
            return None;
        }
        let len = (size as usize / 2).saturating_sub(1); // without the NUL
        Some(OsString::from_wide(&buf[..len]))
    }
}

// ---------------------------------------------------------------- per request

/// PEP 3333 native string: each byte is the code point of the same value, by CPython's own
/// latin-1 decoder (one pass over the bytes, no intermediate Rust string).
pub(crate) fn decode_latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    let len = ffi::Py_ssize_t::try_from(bytes.len()).expect("a param fits in isize");
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; a null `errors`
    // means "strict", and latin-1 decoding cannot fail except on memory exhaustion. The result
    // is a new reference to a str (checked by from_owned_ptr_or_err for null).
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Bound::from_owned_ptr_or_err(py, ptr)
            .expect("latin-1 decoding never fails")
            .cast_into_unchecked()
    }
}

/// What `__length_hint__` says is left in an iterator, without raising when it has none.
pub(crate) fn length_hint(iter: &Bound<'_, PyIterator>) -> Option<usize> {
    // SAFETY: a valid object pointer, with the GIL held (a Bound).
    let n = unsafe { ffi::PyObject_LengthHint(iter.as_ptr(), -1) };
    if n < 0 {
        // -1: no hint; if __length_hint__ raised, that is not the app's business here.
        let _ = PyErr::take(iter.py());
        return None;
    }
    Some(n as usize)
}

/// Gives the calling thread a Python thread state for the rest of its life, without holding
/// the GIL: later `Python::attach` calls on it only take the GIL (no thread state created and
/// destroyed per request, ~8 us). Call once per thread, with the interpreter initialised.
pub(crate) fn keep_thread_state() {
    // SAFETY: the interpreter is initialised (the caller's contract: a Bridge exists).
    // PyGILState_Ensure creates this thread's state and takes the GIL; PyEval_SaveThread
    // releases the GIL and leaves the state registered with a count of one, which is never
    // released, so later PyGILState_Ensure calls (Python::attach) reuse it.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
}

// ---------------------------------------------------------------- bytes filled in place

/// The storage of a new `bytes` object that no one else can see yet, written front to back.
pub(crate) struct BytesFill {
    at: *mut u8,
    len: usize,
    filled: usize,
}

impl BytesFill {
    /// Room left.
    pub(crate) fn room(&self) -> usize {
        self.len - self.filled
    }

    /// Appends `data`, which must fit in `room()`.
    pub(crate) fn push(&mut self, data: &[u8]) {
        assert!(
            data.len() <= self.room(),
            "BytesFill::push past the object's length"
        );
        // SAFETY: `at` points to `len` writable bytes of an object only this thread holds
        // (see `bytes_filled`), and `filled + data.len() <= len`; `data` is another
        // allocation (a chunk of the request body), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.at.add(self.filled), data.len());
        }
        self.filled += data.len();
    }
}

/// A `bytes` object of `len` bytes written by `fill`, without zeroing it first, as
/// `PyBytes::new_with` does (a memset of every byte, holding the GIL, before the copy that
/// overwrites them). If `fill` writes fewer than `len` bytes, the result is a copy of what it
/// wrote.
pub(crate) fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut BytesFill) -> PyResult<()>,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("bytes object too large"))?;
    // SAFETY: with the GIL held (`py`), PyBytes_FromStringAndSize(NULL, n) returns a new
    // reference to a `bytes` object of n uninitialised bytes (plus its NUL), or NULL with an
    // exception set; `from_owned_ptr_or_err` takes that reference.
    let object = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), size))?
            .cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: a `bytes` object (GIL held): PyBytes_AsString returns its buffer, `len` bytes
    // long, valid while `object` lives. No other code has the object (it is returned only
    // below), so no one sees it being written.
    let at = unsafe { ffi::PyBytes_AsString(object.as_ptr()) }.cast::<u8>();
    let mut buf = BytesFill { at, len, filled: 0 };
    fill(&mut buf)?;
    if buf.filled < len {
        // SAFETY: the first `filled` bytes were written by `push`.
        let written = unsafe { std::slice::from_raw_parts(buf.at, buf.filled) };
        return Ok(PyBytes::new(py, written));
    }
    Ok(object)
}
