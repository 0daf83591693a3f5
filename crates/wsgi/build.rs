//! Links the test and bench executables of this package with an rpath to the build
//! interpreter's libpython (link args do not propagate to dependents, so the binary crate does
//! the same), and records the build interpreter's path: with no venv configured the bridge
//! starts CPython with that `executable`, so the stdlib found does not depend on PATH.
//!
//! For Windows, `python3XX.dll` is delay-loaded (docs/decisions/0008-windows-python-dll.md):
//! a delay-import library made here from the DLL's own export table takes the place of pyo3's
//! raw-dylib import, so that the executable starts without the DLL on PATH and the bridge loads
//! the configured Python's DLL itself. An extension module (the `pip install wfcgi` wheel, built
//! by maturin, which sets `PYO3_BUILD_EXTENSION_MODULE`) is loaded by a python.exe that has its
//! DLL already: it imports it with pyo3's raw-dylib, and nothing is delay-loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let executable = config.executable().unwrap_or("");
    println!("cargo:rustc-env=WFCGI_BUILD_PYTHON={executable}");
    let version = config.version();
    println!(
        "cargo:rustc-env=WFCGI_BUILD_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let dll = format!("python{}{}", version.major, version.minor);
    println!("cargo:rustc-env=WFCGI_PYTHON_DLL={dll}.dll");
    println!("cargo::rustc-check-cfg=cfg(python_delay_loaded)");
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    let extension_module = std::env::var_os("PYO3_BUILD_EXTENSION_MODULE").is_some();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        if extension_module {
            if std::env::var("PYO3_USE_RAW_DYLIB").as_deref() == Ok("0") {
                fail_with(
                    "PYO3_USE_RAW_DYLIB is 0 in an extension-module build: the module must import the DLL of the python.exe that loads it (raw-dylib), not a delay-import library",
                    "build the Windows wheels with scripts/build-wheels --platform windows, without scripts/windows-build-env",
                );
            }
        } else {
            delay_import_library(&dll);
            println!("cargo:rustc-cfg=python_delay_loaded");
        }
    }
}

/// Makes `lib<dll>.a`, a delay-import library of every export of `$WFCGI_WINDOWS_PYTHON\<dll>.dll`,
/// and puts it on the link's search path, where pyo3's `-l<dll>` finds it.
fn delay_import_library(dll: &str) {
    println!("cargo:rerun-if-env-changed=PYO3_USE_RAW_DYLIB");
    println!("cargo:rerun-if-env-changed=WFCGI_WINDOWS_PYTHON");
    if std::env::var("PYO3_USE_RAW_DYLIB").as_deref() != Ok("0") {
        fail("PYO3_USE_RAW_DYLIB is not 0: pyo3 would import python3XX.dll with raw-dylib, and wfcgi.exe would die before main wherever the DLL is not on PATH");
    }
    let Some(python) = std::env::var_os("WFCGI_WINDOWS_PYTHON").map(PathBuf::from) else {
        fail("WFCGI_WINDOWS_PYTHON is not set: it names the folder of the Windows Python whose DLL wfcgi.exe delay-loads");
    };
    let dll_path = python.join(format!("{dll}.dll"));
    println!("cargo:rerun-if-changed={}", dll_path.display());
    let exports = exports(&dll_path);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let def = out.join(format!("{dll}.def"));
    let mut text = format!("LIBRARY {dll}.dll\nEXPORTS\n");
    for name in &exports {
        text.push_str(name);
        text.push('\n');
    }
    std::fs::write(&def, text).expect("write the .def file");
    let lib = out.join(format!("lib{dll}.a"));
    let dlltool =
        std::env::var("WFCGI_DLLTOOL").unwrap_or_else(|_| "x86_64-w64-mingw32-dlltool".into());
    // Run in OUT_DIR with a bare file name: dlltool derives its symbols' names from the path.
    let status = Command::new(&dlltool)
        .current_dir(&out)
        .arg("--input-def")
        .arg(&def)
        .arg("--dllname")
        .arg(format!("{dll}.dll"))
        .arg("--output-delaylib")
        .arg(lib.file_name().expect("a file name"))
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {dlltool} (binutils-mingw-w64): {e}")));
    if !status.success() {
        fail(&format!(
            "{dlltool} failed ({status}) making {}",
            lib.display()
        ));
    }
    println!("cargo:rustc-link-search=native={}", out.display());
    // dlltool names the library's delay-import descriptor after the library's file name; the
    // bridge binds every import through it (ld leaves the image's delay-import directory empty,
    // so mingw-w64's __HrLoadAllImportsForDll finds nothing).
    let descriptor = format!("__DELAY_IMPORT_DESCRIPTOR_lib{dll}_a");
    std::fs::write(
        out.join("delay_descriptor.rs"),
        format!(
            "unsafe extern \"C\" {{\n    /// The delay-import descriptor of {dll}.dll (made by build.rs).\n    #[link_name = \"{descriptor}\"]\n    static PYTHON_DELAY_DESCRIPTOR: [u32; 8];\n}}\n"
        ),
    )
    .expect("write delay_descriptor.rs");
}

/// The names in a PE DLL's export table.
fn exports(dll: &Path) -> Vec<String> {
    let bytes = std::fs::read(dll).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read {}: {e} (scripts/setup-windows-env installs it)",
            dll.display()
        ))
    });
    pe_export_names(&bytes)
        .unwrap_or_else(|| fail(&format!("{} has no readable export table", dll.display())))
}

fn pe_export_names(b: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let pe = u32_at(0x3c)? as usize;
    if b.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(pe + 6)? as usize;
    let optional = pe + 24;
    let optional_size = u16_at(pe + 20)? as usize;
    // PE32+ (0x20b): the data directories start at 112; the export table is the first.
    if u16_at(optional)? != 0x20b {
        return None;
    }
    let export_rva = u32_at(optional + 112)?;
    let table = optional + optional_size;
    let to_offset = |rva: u32| -> Option<usize> {
        (0..sections).find_map(|i| {
            let s = table + i * 40;
            let (size, va, raw) = (u32_at(s + 8)?, u32_at(s + 12)?, u32_at(s + 20)?);
            (rva >= va && rva < va + size).then(|| (rva - va + raw) as usize)
        })
    };
    let dir = to_offset(export_rva)?;
    let count = u32_at(dir + 24)? as usize;
    let names = to_offset(u32_at(dir + 32)?)?;
    (0..count)
        .map(|i| {
            let name = to_offset(u32_at(names + 4 * i)?)?;
            let end = name + b.get(name..)?.iter().position(|&c| c == 0)?;
            String::from_utf8(b[name..end].to_vec()).ok()
        })
        .collect()
}

fn fail(message: &str) -> ! {
    fail_with(
        message,
        "build for Windows through scripts/windows-build-env (scripts/setup-windows-env does)",
    )
}

fn fail_with(message: &str, fix: &str) -> ! {
    eprintln!("error: {message}. Fix: {fix}");
    std::process::exit(1);
}
