//! Links the test and bench executables of this package with an rpath to the build
//! interpreter's libpython (link args do not propagate to dependents, so the binary crate does
//! the same), and records the build interpreter's path: with no venv configured the bridge
//! starts CPython with that `executable`, so the stdlib found does not depend on PATH.

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
}
