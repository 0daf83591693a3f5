//! The real `wfcgi.exe`, cross-built for Windows with the official Windows CPython 3.13
//! embedded, run under Wine (`scripts/setup-windows-env` installs and builds all of it).
//!
//! Today it serves over TCP (`wfcgi.exe serve`); IIS's ways of starting it (the named pipe on
//! stdin, Tcp mode, the shutdown event) are the next tests here.

#![cfg(unix)]

use test_support::peers::repo;
use test_support::wfcgi::wsgi_params;
use test_support::wine::{windows_path, WindowsEnv, WineProcess};
use test_support::{Client, Reply};

fn get(client: &mut Client, path: &str) -> Reply {
    client.request(1, &wsgi_params("GET", path, ""), b"")
}

fn serve_testapp() -> WineProcess {
    let env = WindowsEnv::get();
    let app_dir = windows_path(&repo().join("python"));
    WineProcess::serve(
        &env,
        &[
            "--app-dir",
            &app_dir,
            "--handler",
            "testapp.app.application",
            "--log-level",
            "info",
        ],
    )
}

#[test]
fn wfcgi_exe_serves_the_test_app_with_windows_cpython() {
    let server = serve_testapp();
    let addr = server.addr().parse().unwrap();
    let mut client = Client::connect(addr);
    let hello = get(&mut client, "/hello");
    assert_eq!(hello.status(), 200, "{}", server.output());
    assert_eq!(hello.body(), b"Hello, World!");

    // The interpreter is the embedded Windows one, not the build machine's.
    let sys = get(&mut client, "/sys");
    let info = String::from_utf8_lossy(sys.body()).into_owned();
    assert!(info.contains("\"platform\": \"win32\""), "{info}");
    assert!(info.contains("3.13."), "{info}");

    // An app exception is a 500, and the process keeps serving on the same connection.
    let failed = get(&mut client, "/raise-before");
    assert_eq!(failed.status(), 500);
    assert_eq!(get(&mut client, "/hello").body(), b"Hello, World!");

    // A body round trip through wsgi.input.
    let body = test_support::pattern(0, 200_000);
    let echoed = client.request(2, &wsgi_params("POST", "/echo", ""), &body);
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.body(), &body[..]);
}
