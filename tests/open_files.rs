//! The open-files limit against `--max-connections`, on the real binary started with a low
//! limit (as a shell's `ulimit -n` of 1,024, or less, leaves it): a soft limit too low for the
//! connections asked for is raised, and more connections than the old limit are served at
//! once; a hard limit too low is reported in words that name the setting, the limit and the fix.
//! Started with a listening socket on fd 0 (spawn-fcgi's way), it makes room for its default.
#![cfg(unix)]
// rlim_t is u64 on Linux and macOS, not on every Unix.
#![allow(clippy::unnecessary_cast)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use test_support::wfcgi::{wsgi_params, Wfcgi};
use test_support::Client;

/// The process's (soft, hard) open-files limits.
fn own_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    (limit.rlim_cur as u64, limit.rlim_max as u64)
}

/// Raises this test process's soft limit to its hard one (it may hold as many sockets as that
/// allows), and returns the hard limit the servers are started with: this machine's, at most
/// 8,192.
fn raise_own_limit() -> u64 {
    let (_, hard) = own_limit();
    let limit = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    hard.min(8192)
}

/// Makes `cmd` start with open-files limits `soft` and `hard`.
fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// `wfcgi serve` of the test app with `args`, started with open-files limits `soft` and `hard`.
fn serve_limited(args: &[&str], soft: u64, hard: u64) -> Wfcgi {
    Wfcgi::serve_testapp_with(args, &move |cmd| limit_open_files(cmd, soft, hard))
}

/// `wfcgi` with a listening socket on fd 0 (spawn-fcgi's way), the test app named in the
/// environment with `env` beside it, started with open-files limits `soft` and `hard`.
fn stdin_limited(env: &[(&str, &str)], soft: u64, hard: u64) -> Wfcgi {
    let python = test_support::wfcgi::repo_path("python");
    Wfcgi::with_listening_stdin(&[], &move |cmd| {
        cmd.env("WFCGI_APP_DIR", &python)
            .env("WSGI_HANDLER", "testapp.app.application")
            .envs(env.iter().copied());
        limit_open_files(cmd, soft, hard);
    })
}

/// `w` answers `/hello`.
fn assert_serves(w: &Wfcgi) {
    let reply = w
        .connect()
        .request(1, &wsgi_params("GET", "/hello", ""), b"");
    assert_eq!(reply.body(), b"Hello, World!");
}

/// Waits for `needle` in `w`'s log (up to 10 s) and fails with the log if it never comes.
fn assert_logged(w: &Wfcgi, needle: &str) {
    let log = w.wait_log(needle);
    assert!(log.contains(needle), "{needle:?} not in:\n{log}");
}

/// The "Max open files" line of /proc/<pid>/limits: (soft, hard).
fn limits_of(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

#[test]
fn a_soft_limit_too_low_for_max_connections_is_raised_and_the_connections_are_served() {
    let hard = raise_own_limit();
    assert!(
        hard >= 2256,
        "this machine's hard limit ({hard}) is too low for the test"
    );
    let w = serve_limited(&["--max-connections", "2000"], 512, hard);
    assert_eq!(
        limits_of(w.pid()),
        ("2256".to_string(), hard.to_string()),
        "the soft limit is raised to 2,000 connections + 256, no further; log:\n{}",
        w.log()
    );
    assert_logged(
        &w,
        "open-files limit raised from 512 to 2256 for --max-connections 2000",
    );

    // More connections held at once than the old soft limit allowed descriptors.
    let params = wsgi_params("GET", "/hello", "");
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..800 {
        let mut c = Client::from_stream(TcpStream::connect(w.addr()).unwrap());
        let reply = c.request(1, &params, b"");
        assert_eq!(reply.status(), 200, "connection {i}");
        clients.push(c);
    }
    for c in &mut clients {
        assert_eq!(c.request(1, &params, b"").body(), b"Hello, World!");
    }
}

#[test]
fn a_hard_limit_too_low_for_max_connections_is_reported_with_the_fix() {
    let w = serve_limited(&["--max-connections", "2000"], 600, 600);
    let log = w.wait_log("WFCGI_MAX_CONNECTIONS");
    for needle in [
        "--max-connections 2000 (WFCGI_MAX_CONNECTIONS) needs about 2256 open files",
        "may open 600 (its hard limit",
        "Fix: raise the hard limit",
        "or lower --max-connections to 344",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    assert_eq!(limits_of(w.pid()), ("600".to_string(), "600".to_string()));
    // It serves all the same.
    assert_serves(&w);
}

#[test]
fn a_listening_socket_on_fd_0_gets_room_for_the_default_connections() {
    // spawn-fcgi and lighttpd start wfcgi this way; its server then has the default limits
    // (1,024 connections), and the settings come only with the first request.
    let hard = raise_own_limit();
    let w = stdin_limited(&[], 512, hard);
    assert_logged(
        &w,
        "open-files limit raised from 512 to 1280 for serving up to 1024 connections on fd 0",
    );
    assert_eq!(limits_of(w.pid()), ("1280".to_string(), hard.to_string()));
    assert_serves(&w);
}

#[test]
fn a_supervisor_on_fd_0_makes_room_for_its_workers_max_connections() {
    // With WFCGI_PROCESSES the settings are read at start, and the workers apply
    // WFCGI_MAX_CONNECTIONS: the supervisor makes room for it, and they inherit the limit.
    let hard = raise_own_limit();
    let w = stdin_limited(
        &[("WFCGI_PROCESSES", "1"), ("WFCGI_MAX_CONNECTIONS", "2000")],
        512,
        hard,
    );
    assert_logged(
        &w,
        "open-files limit raised from 512 to 2256 for --max-connections 2000",
    );
    assert_eq!(limits_of(w.pid()), ("2256".to_string(), hard.to_string()));
    assert_serves(&w);
}
