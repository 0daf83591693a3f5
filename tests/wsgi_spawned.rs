//! wfcgi started the way a web server starts it: with no subcommand and a socket as fd 0. A
//! listening socket (Apache mod_fcgid, spawn-fcgi) or one connected socket for the process's
//! life (IIS), settings from web.config read on the first request. And graceful shutdown.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use test_support::peers::{self, Nginx, PathParams, TempDir};
use test_support::wfcgi::{read_lossy, repo_path, venv, write_web_config, wsgi_params, Wfcgi};
use test_support::Client;

/// A temporary app directory whose web.config serves python/testapp.
fn app_dir(extra: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new("app");
    let python = repo_path("python");
    let mut settings = vec![
        ("WSGI_HANDLER", "testapp.app.application"),
        ("PYTHONPATH", python.to_str().unwrap()),
    ];
    settings.extend_from_slice(extra);
    write_web_config(dir.path(), &settings);
    dir
}

#[test]
fn listening_socket_on_stdin_with_web_config_behind_nginx() {
    let app = app_dir(&[]);
    let mut w = Wfcgi::with_listening_stdin(&[], &|cmd| {
        cmd.current_dir(app.path())
            .env_remove("WSGI_HANDLER")
            .env_remove("WFCGI_APP_DIR");
    });
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let r = peers::http(nginx.port, "GET", "/hello", &[], b"");
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), w.log());
    assert_eq!(r.text(), "Hello, World!");
    // Several connections from nginx on the one inherited listener.
    for _ in 0..3 {
        let r = peers::http(nginx.port, "POST", "/echo", &[], b"abc");
        assert_eq!(r.text(), "abc");
    }
    let log = w.log();
    assert!(log.contains("read web.config"), "{log}");
    assert!(log.contains("testapp.app.application"), "{log}");
    drop(nginx);
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

/// Params of a request from IIS for the site in `app`.
fn iis_params<'a>(app: &'a str, path: &'a str, query: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut p = wsgi_params("GET", path, query);
    // IIS sends the full URL path as PATH_INFO and the handler mapping as SCRIPT_NAME.
    p.retain(|(n, _)| *n != "SCRIPT_NAME");
    p.extend([
        ("SCRIPT_NAME", path),
        ("SERVER_SOFTWARE", "Microsoft-IIS/10.0"),
        ("APPL_PHYSICAL_PATH", app),
        ("APPL_MD_PATH", "/LM/W3SVC/1/ROOT"),
        ("INSTANCE_ID", "1"),
    ]);
    p
}

fn iis_process(
    app: &TempDir,
    close_std_handles: bool,
) -> (Wfcgi, test_support::Client<std::os::unix::net::UnixStream>) {
    Wfcgi::with_connected_stdin(&[], &|cmd| {
        // Somewhere else than the app: the app directory must come from APPL_PHYSICAL_PATH.
        cmd.current_dir("/")
            .env_remove("WSGI_HANDLER")
            .env_remove("WFCGI_APP_DIR")
            .env_remove("WSGI_LOG");
        let _ = app;
        if close_std_handles {
            // No console at all: fds 1 and 2 closed, not even /dev/null.
            // SAFETY: the closure runs in the forked child before exec and only calls close(),
            // which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::close(1);
                    libc::close(2);
                    Ok(())
                });
            }
        }
    })
}

fn iis_serves_and_logs(close_std_handles: bool) {
    // WSGI_LOG relative: taken from the app directory.
    let app = app_dir(&[("WSGI_LOG", "logs/wfcgi.log")]);
    let log_path = app.path().join("logs").join("wfcgi.log");
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, close_std_handles);

    let hello = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(
        hello.body(),
        b"Hello, World!",
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&hello.stdout),
        read_lossy(&log_path)
    );

    // URL Rewrite: the client's URL is in HTTP_X_ORIGINAL_URL and wins over PATH_INFO; the
    // query part is cut off; SCRIPT_NAME is blanked.
    let mut params = iis_params(&appl, "/rewritten/handler.py", "a=1");
    params.push(("HTTP_X_ORIGINAL_URL", "/environ?a=1"));
    let reply = conn.request(1, &params, b"");
    assert_eq!(
        reply.status(),
        200,
        "{}",
        String::from_utf8_lossy(&reply.stdout)
    );
    let env = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(env.contains(r#""PATH_INFO": "/environ""#), "{env}");
    assert!(env.contains(r#""SCRIPT_NAME": """#), "{env}");
    assert!(env.contains(r#""wsgi.multiprocess": true"#), "{env}");
    assert!(env.contains(r#""QUERY_STRING": "a=1""#), "{env}");

    // print() and wsgi.errors go to WSGI_LOG, not into the response.
    let reply = conn.request(1, &iis_params(&appl, "/print", ""), b"");
    assert_eq!(reply.body(), b"printed");
    let all = [&reply.stdout[..], &reply.stderr[..]].concat();
    let all = String::from_utf8_lossy(&all);
    for line in ["printed-to-stdout", "printed-to-stderr", "wsgi-errors-line"] {
        assert!(
            !all.contains(line),
            "{line} leaked into the response: {all}"
        );
    }
    let log = Wfcgi::wait_for_text(&log_path, "wsgi-errors-line");
    for line in [
        "printed-to-stdout",
        "printed-to-stderr",
        "wsgi-errors-line",
        "read web.config",
    ] {
        assert!(log.contains(line), "{line} is not in WSGI_LOG:\n{log}");
    }

    // IIS closes its end: the process is done, and exits cleanly.
    drop(conn);
    let status = w.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "still running after the connection closed; log:\n{}",
            read_lossy(&log_path)
        )
    });
    assert_eq!(Wfcgi::code(status), 0, "log:\n{}", read_lossy(&log_path));
}

#[test]
fn iis_style_connected_socket_on_stdin() {
    iis_serves_and_logs(false);
}

#[test]
fn iis_style_with_stdout_and_stderr_closed() {
    iis_serves_and_logs(true);
}

#[test]
fn iis_style_bad_web_config_answers_500_and_logs_then_recovers_when_fixed() {
    let app = TempDir::new("app-bad");
    let log_path = app.path().join("wfcgi.log");
    let python = repo_path("python");
    // WSGI_LOG is found even though the rest is broken: the log names the file and line.
    std::fs::write(
        app.path().join("web.config"),
        format!(
            "<configuration><appSettings>\n<add key=\"WSGI_LOG\" value=\"{}\"/>\n<add key=\"WFCGI_THREADS\" value=\"many\"/>\n</appSettings></configuration>",
            log_path.display()
        ),
    )
    .unwrap();
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, false);
    let reply = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(reply.status(), 500);
    let log = Wfcgi::wait_for_text(&log_path, "WFCGI_THREADS");
    assert!(
        log.contains("WFCGI_THREADS") && log.contains("many"),
        "{log}"
    );
    assert!(w.try_wait().is_none(), "the process must stay up under IIS");

    // Fixed web.config: picked up on a request at least 2 s later, in the same process.
    write_web_config(
        app.path(),
        &[
            ("WSGI_HANDLER", "testapp.app.application"),
            ("PYTHONPATH", python.to_str().unwrap()),
            ("WSGI_LOG", log_path.to_str().unwrap()),
        ],
    );
    std::thread::sleep(Duration::from_millis(2200));
    let reply = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(
        reply.body(),
        b"Hello, World!",
        "log:\n{}",
        read_lossy(&log_path)
    );
}

/// Sends `/sleep?ms=MS` on a raw connection from another thread; returns the thread, which
/// yields the reply's status and body.
fn sleep_request(w: &Wfcgi, ms: u32) -> std::thread::JoinHandle<(u16, Vec<u8>)> {
    let mut c = w.connect();
    let q = format!("ms={ms}");
    std::thread::spawn(move || {
        let params = wsgi_params("GET", "/sleep", &q);
        let bytes = Client::request_bytes(1, true, &params, b"");
        c.send(&bytes);
        let reply = c.read_reply(1);
        (reply.status(), reply.body().to_vec())
    })
}

/// Waits until the log shows the handler loaded (the first request has reached Python).
fn wait_in_python(w: &Wfcgi) {
    let log = w.wait_log("loading the WSGI handler");
    assert!(log.contains("loading the WSGI handler"), "{log}");
    // The sleep has begun once the app was called; give the import a moment to finish.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let mut w = Wfcgi::serve_testapp(&[]);
    let req = sleep_request(&w, 1500);
    wait_in_python(&w);
    w.signal(libc::SIGTERM);
    let (status, body) = req.join().unwrap();
    assert_eq!(
        (status, &body[..]),
        (200, &b"slept"[..]),
        "log:\n{}",
        w.log()
    );
    let exit = w
        .wait_exit(Duration::from_secs(30))
        .expect("wfcgi did not exit after the drain");
    assert_eq!(Wfcgi::code(exit), 0, "log:\n{}", w.log());
    assert!(w.log().contains("shutdown requested"), "{}", w.log());
}

#[test]
fn sigterm_stops_accepting_new_connections() {
    let mut w = Wfcgi::serve_testapp(&[]);
    let req = sleep_request(&w, 2000);
    wait_in_python(&w);
    w.signal(libc::SIGTERM);
    w.wait_log("shutdown requested");
    // Give the server a moment to drop its listener after logging.
    std::thread::sleep(Duration::from_millis(200));
    assert!(w.try_wait().is_none(), "exited with a request in flight");
    match TcpStream::connect(("127.0.0.1", w.port.unwrap())) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted during shutdown"),
    }
    let (status, _) = req.join().unwrap();
    assert_eq!(status, 200);
    let exit = w.wait_exit(Duration::from_secs(30)).expect("no exit");
    assert_eq!(Wfcgi::code(exit), 0, "log:\n{}", w.log());
}

#[test]
fn iis_style_django_with_venv_and_settings_from_web_config() {
    let app = TempDir::new("app-django");
    let db = test_support::wfcgi::django_db(app.path());
    let site = repo_path("python/django_site");
    let venv = test_support::wfcgi::venv("django");
    write_web_config(
        app.path(),
        &[
            ("WSGI_HANDLER", "django.core.wsgi.get_wsgi_application()"),
            ("PYTHONPATH", site.to_str().unwrap()),
            ("DJANGO_SETTINGS_MODULE", "mysite.settings"),
            ("WFCGI_VENV", venv.to_str().unwrap()),
            ("WFCGI_TEST_DB", db.to_str().unwrap()),
            ("WSGI_LOG", "wfcgi.log"),
        ],
    );
    let log_path = app.path().join("wfcgi.log");
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, false);
    let reply = conn.request(1, &iis_params(&appl, "/", ""), b"");
    assert_eq!(
        reply.status(),
        200,
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&reply.stdout),
        read_lossy(&log_path)
    );
    assert!(String::from_utf8_lossy(reply.body()).contains("<h1>wfcgi django demo</h1>"));
    // The admin reads the database named by an appSetting (copied into the environment).
    let reply = conn.request(1, &iis_params(&appl, "/admin/login/", ""), b"");
    assert_eq!(reply.status(), 200, "log:\n{}", read_lossy(&log_path));
    drop(conn);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("no exit after the connection closed");
    assert_eq!(Wfcgi::code(status), 0, "log:\n{}", read_lossy(&log_path));
}

#[test]
fn x_original_url_from_a_non_iis_server_is_ignored() {
    // Only IIS's URL Rewrite sets X-Original-URL after checking it; behind nginx a client's
    // header must not re-route the request.
    let python = repo_path("python");
    let w = Wfcgi::serve(&[
        "--app-dir",
        python.to_str().unwrap(),
        "--handler",
        "testapp.app.application",
    ]);
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let r = peers::http(
        nginx.port,
        "GET",
        "/hello",
        &[("X-Original-URL", "/environ")],
        b"",
    );
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn iis_style_venv_of_another_python_is_a_500_not_an_exit_and_fixing_it_recovers() {
    let py312 = test_support::wfcgi::venv("py312");
    let app = app_dir(&[
        ("WFCGI_VENV", py312.to_str().unwrap()),
        ("WSGI_LOG", "wfcgi.log"),
    ]);
    let log_path = app.path().join("wfcgi.log");
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, false);
    let reply = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(reply.status(), 500);
    let log = Wfcgi::wait_for_text(&log_path, "3.12");
    assert!(log.contains("3.12") && log.contains("3.11"), "{log}");
    assert!(
        w.try_wait().is_none(),
        "under IIS a start-up problem must not exit the process"
    );

    // Remove the venv setting: a request 2 s later starts Python in the same process.
    let python = repo_path("python");
    write_web_config(
        app.path(),
        &[
            ("WSGI_HANDLER", "testapp.app.application"),
            ("PYTHONPATH", python.to_str().unwrap()),
            ("WSGI_LOG", "wfcgi.log"),
        ],
    );
    std::thread::sleep(Duration::from_millis(2200));
    let reply = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(
        reply.body(),
        b"Hello, World!",
        "log:\n{}",
        read_lossy(&log_path)
    );
}

/// A web.config written for wfastcgi with ptvs_virtualenv_proxy.py, unchanged: WSGI_HANDLER names
/// the proxy, the real handler is WSGI_ALT_VIRTUALENV_HANDLER, the virtualenv comes from
/// WSGI_ALT_VIRTUALENV_ACTIVATE_THIS. No proxy script exists anywhere: wfcgi understands it.
#[test]
fn old_ptvs_virtualenv_proxy_web_config_works_without_the_proxy() {
    let cases = [
        // get_virtualenv_handler(): an old virtualenv's activate_this.py.
        (
            "ptvs_virtualenv_proxy.get_virtualenv_handler()",
            venv("activate-this").join("bin/activate_this.py"),
            "wfcgi_activate_marker",
        ),
        // get_venv_handler(): the venv's python executable.
        (
            "ptvs_virtualenv_proxy.get_venv_handler()",
            venv("isolated").join("bin/python"),
            "iso8601",
        ),
    ];
    for (proxy, activate, venv_only_module) in cases {
        let python = repo_path("python");
        let dir = TempDir::new("app-proxy");
        write_web_config(
            dir.path(),
            &[
                ("WSGI_HANDLER", proxy),
                ("WSGI_ALT_VIRTUALENV_HANDLER", "testapp.app.application"),
                (
                    "WSGI_ALT_VIRTUALENV_ACTIVATE_THIS",
                    activate.to_str().unwrap(),
                ),
                ("PYTHONPATH", python.to_str().unwrap()),
            ],
        );
        let appl = dir.path().to_str().unwrap().to_owned();
        let (mut w, mut conn) = iis_process(&dir, false);
        let reply = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
        assert_eq!(reply.body(), b"Hello, World!", "{proxy}: log:\n{}", w.log());
        let query = format!("name={venv_only_module}");
        let reply = conn.request(1, &iis_params(&appl, "/imports", &query), b"");
        let body = String::from_utf8_lossy(reply.body()).into_owned();
        assert!(
            body.starts_with("ok "),
            "{proxy}: the venv's package: {body}"
        );
        drop(conn);
        assert_eq!(
            w.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
            Some(0)
        );
    }
}

/// Under IIS the one connection's requests run on that connection's own thread (no hand-off to
/// a pool thread and back, as wfastcgi does it), except the first, which starts the app, and
/// those whose body is still arriving. Responses of every shape still arrive whole, and a
/// streamed one still streams.
#[test]
fn iis_style_requests_run_inline_on_the_connection_thread() {
    let app = app_dir(&[]);
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, false);
    let thread = |conn: &mut test_support::Client<_>| {
        let r = conn.request(1, &iis_params(&appl, "/thread", ""), b"");
        String::from_utf8_lossy(r.body()).into_owned()
    };
    let first = thread(&mut conn);
    assert!(first.starts_with("wfcgi-python-"), "{first}");
    for _ in 0..3 {
        assert_eq!(thread(&mut conn), "wfcgi-conn");
    }

    // 8 MiB to a reader that waits first: the inline writer waits for the socket.
    let size = 8 << 20;
    let query = format!("size={size}&chunk=65536");
    conn.send(&test_support::Client::request_bytes(
        1,
        true,
        &iis_params(&appl, "/bigresponse", &query),
        b"",
    ));
    std::thread::sleep(Duration::from_millis(300));
    let r = conn.read_reply(1);
    assert_eq!(r.body().len(), size);
    assert!(r.body() == test_support::pattern(0, size), "body differs");

    // A 1 MiB upload streams to a pool thread; the reply is the same either way.
    let body = test_support::pattern(0, 1 << 20);
    let mut params = iis_params(&appl, "/sha256", "");
    params.retain(|(n, _)| *n != "REQUEST_METHOD");
    params.extend([("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "1048576")]);
    let r = conn.request(1, &params, &body);
    assert!(
        r.body().ends_with(b" 1048576"),
        "{:?}",
        String::from_utf8_lossy(r.body())
    );

    // write() and a generator: each chunk goes out when produced, not held to the end.
    let r = conn.request(1, &iis_params(&appl, "/write-callable", ""), b"");
    assert_eq!(r.status(), 200);
    let (first_data, end) = conn.time_stream(&iis_params(&appl, "/stream", "chunks=3&delay=0.4"));
    assert!(
        end - first_data >= Duration::from_millis(600),
        "the first chunk came {first_data:?} after the request, the end {end:?}: not streamed"
    );

    drop(conn);
    let status = w.wait_exit(Duration::from_secs(30)).expect("no exit");
    assert_eq!(Wfcgi::code(status), 0, "log:\n{}", w.log());
}

/// IIS asks a process to stop while a request runs on the connection's own thread: the request
/// finishes and is answered, then the process exits 0.
#[test]
fn iis_style_sigterm_lets_an_inline_request_finish() {
    let app = app_dir(&[]);
    let appl = app.path().to_str().unwrap().to_owned();
    let (mut w, mut conn) = iis_process(&app, false);
    // The first request starts the app; the next one runs inline.
    let r = conn.request(1, &iis_params(&appl, "/hello", ""), b"");
    assert_eq!(r.body(), b"Hello, World!");
    conn.send(&test_support::Client::request_bytes(
        1,
        true,
        &iis_params(&appl, "/sleep", "ms=1500"),
        b"",
    ));
    std::thread::sleep(Duration::from_millis(400));
    w.signal(libc::SIGTERM);
    let r = conn.read_reply(1);
    assert_eq!(r.body(), b"slept", "log:\n{}", w.log());
    let exit = w
        .wait_exit(Duration::from_secs(30))
        .expect("no exit after the drain");
    assert_eq!(Wfcgi::code(exit), 0, "log:\n{}", w.log());
}

/// `wfcgi` on mod_fcgid's listening fd 0 with the app directory `app`.
fn fd0_in(app: &TempDir) -> Wfcgi {
    let dir = app.path().to_path_buf();
    Wfcgi::with_listening_stdin(&[], &move |cmd| {
        cmd.current_dir(&dir)
            .env_remove("WSGI_HANDLER")
            .env_remove("WFCGI_APP_DIR");
    })
}

#[test]
fn a_file_change_restarts_after_the_request_in_progress_finishes() {
    // Set explicitly: on Unix, wfastcgi's default does not apply (mod_fcgid starts wfcgi again
    // on the next request; spawn-fcgi would not).
    let app = app_dir(&[("WSGI_RESTART_FILE_REGEX", r".*\.py$")]);
    std::fs::write(app.path().join("settings_local.py"), "A = 1\n").unwrap();
    let mut w = fd0_in(&app);
    let req = sleep_request(&w, 2000);
    wait_in_python(&w);
    let log = w.wait_log("restarting when app files change");
    assert!(log.contains("restarting when app files change"), "{log}");
    // Neither bytecode nor files the regex does not match count.
    std::fs::create_dir_all(app.path().join("__pycache__")).unwrap();
    std::fs::write(app.path().join("__pycache__/x.cpython-311.pyc"), "x").unwrap();
    std::fs::write(app.path().join("notes.txt"), "x").unwrap();
    std::fs::write(app.path().join("settings_local.py"), "A = 2\n").unwrap();
    let log = w.wait_log("app files changed");
    assert!(
        log.contains("settings_local.py") && !log.contains("notes.txt") && !log.contains(".pyc"),
        "{log}"
    );
    assert!(w.try_wait().is_none(), "exited with a request in flight");
    let (status, body) = req.join().unwrap();
    assert_eq!(
        (status, &body[..]),
        (200, &b"slept"[..]),
        "log:\n{}",
        w.log()
    );
    let exit = w
        .wait_exit(Duration::from_secs(30))
        .expect("wfcgi did not exit after the change");
    assert_eq!(Wfcgi::code(exit), 0, "log:\n{}", w.log());
}

#[test]
fn wfastcgis_default_restart_regex_does_not_apply_on_unix() {
    let app = app_dir(&[]);
    let mut w = fd0_in(&app);
    let hello = |w: &Wfcgi| {
        w.connect()
            .request(1, &wsgi_params("GET", "/hello", ""), b"")
            .status()
    };
    assert_eq!(hello(&w), 200, "{}", w.log());
    std::fs::write(app.path().join("changed.py"), "A = 1\n").unwrap();
    // Longer than the watcher's quiet period: a restart would have begun.
    std::thread::sleep(Duration::from_millis(800));
    assert!(w.try_wait().is_none(), "exited: {}", w.log());
    assert!(!w.log().contains("app files changed"), "{}", w.log());
    assert_eq!(hello(&w), 200);
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}

#[test]
fn serve_ignores_an_explicit_restart_regex_and_says_so() {
    let app = app_dir(&[("WSGI_RESTART_FILE_REGEX", r".*\.py$")]);
    let mut w = Wfcgi::serve_with(&["--app-dir", app.path().to_str().unwrap()], &|cmd| {
        cmd.env_remove("WSGI_HANDLER");
    });
    let log = w.wait_log("is ignored by `wfcgi serve`");
    assert!(
        log.contains(r#"WSGI_RESTART_FILE_REGEX ".*\.py$" (web.config"#),
        "{log}"
    );
    std::fs::write(app.path().join("changed.py"), "A = 1\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(w.try_wait().is_none(), "exited: {}", w.log());
    assert_eq!(Wfcgi::code(w.stop(libc::SIGTERM)), 0, "log:\n{}", w.log());
}
