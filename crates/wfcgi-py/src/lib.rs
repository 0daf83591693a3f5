//! `wfcgi._wfcgi`: the whole wfcgi server, run by the Python interpreter that imported it
//! (`python -m wfcgi ...`, or the `wfcgi` console script of `pip install wfcgi`). The one
//! difference from the native executable is who started the interpreter: here the venv's own
//! python did, so there is no venv to activate and no libpython to find.

use pyo3::prelude::*;

#[pymodule]
mod _wfcgi {
    use pyo3::prelude::*;
    use std::ffi::OsString;
    use std::process::ExitCode;

    /// Runs wfcgi with `args`, the command line after the program (`["serve", "--listen",
    /// ...]`), until it is done; returns its exit status. The GIL is released meanwhile: the
    /// server's own Python threads take it for each request.
    #[pyfunction]
    fn main(py: Python<'_>, args: Vec<OsString>) -> PyResult<u8> {
        let sys = py.import("sys")?;
        let executable: OsString = sys.getattr("executable")?.extract()?;
        let invocation = wfcgi::Invocation {
            program: executable.into(),
            prefix: vec!["-m".into(), "wfcgi".into()],
            args,
        };
        let code = py.detach(|| wfcgi::run(invocation));
        Ok(exit_status(code))
    }

    /// The number behind an `ExitCode` (it has no accessor, but compares).
    fn exit_status(code: ExitCode) -> u8 {
        (0..=u8::MAX)
            .find(|&n| ExitCode::from(n) == code)
            .unwrap_or(1)
    }
}
