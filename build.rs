//! The root package's benches link the WSGI bridge (and so libpython): give their executables an
//! rpath to the build interpreter's libpython. Link args do not propagate from dependencies.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
