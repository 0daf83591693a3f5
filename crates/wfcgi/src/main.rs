//! The native `wfcgi` executable: the whole server is the `wfcgi` library, which the pip
//! package's extension module runs too (crates/wfcgi-py).

fn main() -> std::process::ExitCode {
    wfcgi::run(wfcgi::Invocation::native())
}
