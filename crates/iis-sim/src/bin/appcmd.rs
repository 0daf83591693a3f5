//! A stand-in for IIS's appcmd.exe, for the Windows suite: appends each argument it was given,
//! one per line, to the file named by `WFCGI_TEST_APPCMD_LOG`, then a line `--`, and exits 0.
//! What `wfcgi enable` passes to the real appcmd (one argv element per argument, a path with
//! spaces kept whole) is then checked exactly.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(log) = std::env::var_os("WFCGI_TEST_APPCMD_LOG") else {
        eprintln!("appcmd (test stand-in): WFCGI_TEST_APPCMD_LOG is not set");
        return ExitCode::from(2);
    };
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!("appcmd (test stand-in): {e}");
            return ExitCode::from(2);
        }
    };
    for arg in std::env::args().skip(1) {
        let _ = writeln!(file, "{arg}");
    }
    let _ = writeln!(file, "--");
    ExitCode::SUCCESS
}
