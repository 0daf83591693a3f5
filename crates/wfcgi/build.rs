//! Links the binary so that it finds its libpython from a clean shell (an rpath to the
//! interpreter pyo3 was configured with), without LD_LIBRARY_PATH.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
