//! The real `wfcgi.exe`, cross-built for Windows with the official Windows CPython 3.13
//! embedded, run under Wine (`scripts/setup-windows-env` installs and builds all of it).
//!
//! `wfcgi.exe serve` over TCP, and `wfcgi.exe` started as IIS starts it (crates/iis-sim plays
//! IIS): in NamedPipe mode the named pipe's server end as standard input, in Tcp mode a
//! listening socket; no standard output or error; `_FCGI_SHUTDOWN_EVENT_` set.

#![cfg(unix)]

use sha2::{Digest, Sha256};
use test_support::peers::repo;
use test_support::wfcgi::wsgi_params;
use test_support::wine::{windows_path, Iis, WindowsEnv, WineProcess};
use test_support::{Client, Reply};

fn get(client: &mut Client, path: &str) -> Reply {
    client.request(1, &wsgi_params("GET", path, ""), b"")
}

/// The test app started by iis-sim as IIS would (`mode`), with its WSGI_LOG in a scratch
/// folder (`log`, relative to it), and `extra` flags: the process, the log file, the folder.
fn testapp_as_iis(
    mode: Iis,
    name: &str,
    handler: &str,
    log: &str,
    extra: &[&str],
) -> (WineProcess, std::path::PathBuf, test_support::TempDir) {
    let env = WindowsEnv::get();
    let dir = test_support::TempDir::new(name);
    let log = dir.path().join(log.replace('\\', "/"));
    let app_dir = windows_path(&repo().join("python"));
    let log_arg = windows_path(&log);
    let mut args = vec![
        "--app-dir",
        &app_dir,
        "--handler",
        handler,
        "--log-file",
        &log_arg,
    ];
    args.extend_from_slice(extra);
    (WineProcess::as_iis(&env, mode, &args), log, dir)
}

/// The process ends by itself, with status 0, within 30 s.
fn assert_exits_0(iis: &mut WineProcess) {
    let status = iis.wait_exit(std::time::Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        iis.output()
    );
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

/// Requests over the one kept connection, as IIS sends them: after the first (which starts the
/// app on a pool thread), each runs inline on the thread that serves the pipe, and writes to
/// the pipe itself; responses of every shape arrive whole. IIS closing the pipe then ends the
/// process, cleanly, and with no console the log file has it all: returned.
fn serves_the_pipe_inline(mode: Iis, name: &str) -> String {
    let (mut iis, log, _dir) = testapp_as_iis(
        mode,
        name,
        "testapp.app.application",
        "wfcgi.log",
        &["--log-level", "debug"],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let thread = |client: &mut Client| {
        let r = get(client, "/thread");
        String::from_utf8_lossy(r.body()).into_owned()
    };
    let first = thread(&mut client);
    assert!(
        first.starts_with("wfcgi-python-"),
        "{first}\n{}",
        iis.output()
    );
    for _ in 0..3 {
        assert_eq!(thread(&mut client), "wfcgi-conn");
        let hello = get(&mut client, "/hello");
        assert_eq!(hello.status(), 200, "{}", iis.output());
        assert_eq!(hello.body(), b"Hello, World!");
    }
    // 8 MiB to a reader that waits first: the inline writer waits for the pipe.
    let size = 8 << 20;
    client.send(&Client::request_bytes(
        1,
        true,
        &wsgi_params("GET", "/bigresponse", &format!("size={size}&chunk=65536")),
        b"",
    ));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let big = client.read_reply(1);
    assert_eq!(big.body().len(), size);
    assert!(big.body() == test_support::pattern(0, size), "body differs");
    // A generator's chunks each go out when produced.
    let (first_data, end) =
        client.time_stream(&wsgi_params("GET", "/stream", "chunks=3&delay=0.4"));
    assert!(
        end - first_data >= std::time::Duration::from_millis(600),
        "the first chunk came {first_data:?} after the request, the end {end:?}: not streamed"
    );
    let body = test_support::pattern(0, 300_000);
    let echoed = client.request(1, &wsgi_params("POST", "/echo", ""), &body);
    assert_eq!(echoed.body(), &body[..]);
    let failed = get(&mut client, "/raise-before");
    assert_eq!(failed.status(), 500);
    assert_eq!(get(&mut client, "/hello").body(), b"Hello, World!");
    assert_eq!(thread(&mut client), "wfcgi-conn");

    drop(client);
    assert_exits_0(&mut iis);
    assert!(
        iis.output().contains("the program exited with 0"),
        "{}",
        iis.output()
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("named pipe on standard input"), "{logged}");
    assert!(
        logged.contains("requests run inline on this thread"),
        "{logged}"
    );
    assert!(
        logged.contains("Traceback"),
        "the /raise-before traceback: {logged}"
    );
    logged
}

#[test]
fn wfcgi_exe_serves_the_named_pipe_iis_hands_it_inline() {
    let logged = serves_the_pipe_inline(Iis::Pipe, "wine-iis");
    assert!(logged.contains("is served overlapped"), "{logged}");
}

#[test]
fn a_pipe_not_opened_for_overlapped_io_is_served_with_blocking_io() {
    let logged = serves_the_pipe_inline(Iis::PipeBlocking, "wine-iis-blocking");
    assert!(
        logged.contains("not opened for overlapped I/O: serving it with blocking I/O"),
        "{logged}"
    );
}

#[test]
fn without_keep_conn_the_pipe_is_disconnected_and_connected_again() {
    reconnects_without_keep_conn(Iis::Pipe, "wine-reconnect");
}

#[test]
fn without_keep_conn_a_blocking_pipe_is_disconnected_and_connected_again() {
    reconnects_without_keep_conn(Iis::PipeBlocking, "wine-reconnect-blocking");
}

fn reconnects_without_keep_conn(mode: Iis, name: &str) {
    // cgi-fcgi (Debian's libfcgi-bin) sends each request without FCGI_KEEP_CONN, as libfcgi's
    // web servers may: wfcgi closes the connection after the response, disconnects its pipe
    // end and connects it again for the next, in the same process (libfcgi's behaviour).
    let (mut iis, log, _dir) = testapp_as_iis(
        mode,
        name,
        "testapp.app.application",
        "wfcgi.log",
        &["--log-level", "debug"],
    );
    let cgi = [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/hello"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ];
    for _ in 0..3 {
        let addr = iis.addr();
        let out = std::panic::catch_unwind(|| test_support::peers::cgi_fcgi(&addr, &cgi, b""))
            .unwrap_or_else(|_| {
                panic!(
                    "{}\nlog:\n{}",
                    iis.output(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.ends_with("Hello, World!"), "{text}\n{}", iis.output());
    }
    // Then a web server that keeps its connection, until it closes it: the process ends.
    let mut client = Client::connect(iis.addr().parse().unwrap());
    assert_eq!(get(&mut client, "/hello").body(), b"Hello, World!");
    drop(client);
    assert_exits_0(&mut iis);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        logged.matches("first request: starting the app").count(),
        1,
        "{logged}"
    );
    assert_eq!(
        logged.matches("named pipe disconnected").count(),
        3,
        "{logged}"
    );
}

#[test]
fn the_iis_shutdown_event_lets_the_request_in_progress_finish_then_exits_0() {
    let (mut iis, log, _dir) = testapp_as_iis(
        Iis::Pipe,
        "wine-shutdown",
        "testapp.app.application",
        "wfcgi.log",
        &[],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    assert_eq!(get(&mut client, "/hello").body(), b"Hello, World!");
    // A 1.5 s request; IIS asks for shutdown while it runs.
    let slow = std::thread::spawn(move || {
        let reply = client.request(1, &wsgi_params("GET", "/sleep", "ms=1500"), b"");
        (reply.status(), reply.body().to_vec())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    iis.say("shutdown");
    let (status, body) = slow.join().unwrap();
    assert_eq!(
        (status, &body[..]),
        (200, &b"slept"[..]),
        "{}",
        iis.output()
    );
    let exit = iis.wait_exit(std::time::Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        iis.output()
    );
    assert!(
        iis.output().contains("the program exited with 0"),
        "{}",
        iis.output()
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("IIS signalled _FCGI_SHUTDOWN_EVENT_"),
        "{logged}"
    );
    assert!(logged.contains("outcome=Drained"), "{logged}");
}

#[test]
fn iis_tcp_mode_serves_the_listening_socket_on_stdin() {
    let (mut iis, log, _dir) = testapp_as_iis(
        Iis::Tcp,
        "wine-tcp-mode",
        "testapp.app.application",
        "wfcgi.log",
        &[],
    );
    // Several connections at once: the socket is a listener, not one connection.
    let addr = iis.addr().parse().unwrap();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    for _ in 0..2 {
        assert_eq!(
            get(&mut a, "/hello").body(),
            b"Hello, World!",
            "{}",
            iis.output()
        );
        assert_eq!(get(&mut b, "/hello").body(), b"Hello, World!");
    }
    drop((a, b));
    // The connections' end does not end the process (it listens on); IIS's shutdown event does.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        iis.wait_exit(std::time::Duration::ZERO).is_none(),
        "{}",
        iis.output()
    );
    iis.say("shutdown");
    let exit = iis.wait_exit(std::time::Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        iis.output()
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("IIS signalled _FCGI_SHUTDOWN_EVENT_"),
        "{logged}"
    );
}

#[test]
fn under_iis_there_is_no_console_the_log_has_everything_and_windows_identity_reaches_environ() {
    let (mut iis, log, _dir) = testapp_as_iis(
        Iis::Pipe,
        "wine-console",
        "testapp.app.application",
        "logs\\wfcgi.log",
        &[],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    // print() and wsgi.errors with no stdout or stderr to write to: they land in the log.
    assert_eq!(get(&mut client, "/print").body(), b"printed");
    // What IIS sends for Windows authentication reaches environ unchanged (Django's
    // RemoteUserMiddleware reads REMOTE_USER).
    let mut params = wsgi_params("GET", "/environ", "");
    params.extend([
        ("AUTH_TYPE", "Negotiate"),
        ("AUTH_USER", "CORP\\alice"),
        ("LOGON_USER", "CORP\\alice"),
        ("REMOTE_USER", "CORP\\alice"),
    ]);
    let environ = client.request(1, &params, b"");
    let text = String::from_utf8_lossy(environ.body()).into_owned();
    for expected in [
        r#""AUTH_TYPE": "Negotiate""#,
        r#""AUTH_USER": "CORP\\alice""#,
        r#""LOGON_USER": "CORP\\alice""#,
        r#""REMOTE_USER": "CORP\\alice""#,
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    drop(client);
    assert_exits_0(&mut iis);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    for line in ["printed-to-stdout", "printed-to-stderr", "wsgi-errors-line"] {
        assert!(logged.contains(line), "{line} not in the log:\n{logged}");
    }
}

#[test]
fn under_iis_a_bad_handler_is_explained_in_the_log_and_answered_with_500() {
    let (mut iis, log, _dir) = testapp_as_iis(
        Iis::Pipe,
        "wine-bad-handler",
        "testapp.nosuchmodule.application",
        "wfcgi.log",
        &[],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let reply = get(&mut client, "/hello");
    assert_eq!(reply.status(), 500);
    let page = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(
        !page.contains("Traceback"),
        "no traceback for visitors: {page}"
    );
    // The process keeps serving (and keeps answering 500 until the handler is fixed).
    assert_eq!(get(&mut client, "/hello").status(), 500);
    drop(client);
    assert_exits_0(&mut iis);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("testapp.nosuchmodule"), "{logged}");
    assert!(
        logged.contains("--handler"),
        "the setting is named: {logged}"
    );
}

#[test]
fn configured_by_web_config_alone_as_iis_runs_it() {
    // No flags: IIS's first request names the app directory (APPL_PHYSICAL_PATH), whose
    // web.config has the handler, the extra sys.path entry and the log.
    let env = WindowsEnv::get();
    let site = test_support::TempDir::new("wine-site");
    test_support::wfcgi::write_web_config(
        site.path(),
        &[
            ("WSGI_HANDLER", "testapp.app.application"),
            ("PYTHONPATH", &windows_path(&repo().join("python"))),
            ("WSGI_LOG", "logs\\wfcgi.log"),
        ],
    );
    let site_dir = windows_path(site.path());
    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let iis_params = |method: &'static str, path: &'static str, query: &'static str| {
        let mut params = wsgi_params(method, path, query);
        params.extend([
            ("APPL_PHYSICAL_PATH", site_dir.as_str()),
            ("INSTANCE_META_PATH", "/LM/W3SVC/1"),
            ("APPL_MD_PATH", "/LM/W3SVC/1/ROOT"),
            ("SERVER_SOFTWARE", "Microsoft-IIS/10.0"),
        ]);
        params
    };
    let hello = client.request(1, &iis_params("GET", "/hello", ""), b"");
    assert_eq!(hello.body(), b"Hello, World!", "{}", iis.output());

    // A 10 MiB upload, hashed by the app as it streams in.
    let body = test_support::pattern(0, 10 << 20);
    let hashed = client.request(1, &iis_params("POST", "/sha256", ""), &body);
    let want = format!("{:x} {}", Sha256::digest(&body), body.len());
    assert_eq!(String::from_utf8_lossy(hashed.body()), want);

    // A streamed response (its chunks as the generator yields them) and wsgi.file_wrapper.
    let streamed = client.request(
        1,
        &iis_params("GET", "/stream", "chunks=4&size=1000&delay=0.05"),
        b"",
    );
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.body().len(), 4000);
    let file = client.request(1, &iis_params("GET", "/file-wrapper", "size=300000"), b"");
    assert_eq!(file.body(), &test_support::pattern(0, 300_000)[..]);

    drop(client);
    assert_exits_0(&mut iis);
    let logged =
        std::fs::read_to_string(site.path().join("logs").join("wfcgi.log")).unwrap_or_default();
    assert!(logged.contains("read web.config"), "{logged}");
}

#[test]
fn the_pipe_client_may_connect_after_wfcgi_waits_for_it() {
    // The other order than IIS's usual: wfcgi.exe is in ConnectNamedPipe (ERROR_IO_PENDING on
    // its overlapped handle) when the web server's end connects.
    let env = WindowsEnv::get();
    let app_dir = windows_path(&repo().join("python"));
    let mut iis = WineProcess::as_iis(
        &env,
        Iis::PipeServerFirst,
        &[
            "--app-dir",
            &app_dir,
            "--handler",
            "testapp.app.application",
        ],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    assert_eq!(
        get(&mut client, "/hello").body(),
        b"Hello, World!",
        "{}",
        iis.output()
    );
    drop(client);
    assert_exits_0(&mut iis);
}

#[test]
fn a_django_site_in_a_windows_venv_as_iis_runs_it() {
    let env = WindowsEnv::get();
    let db_dir = test_support::TempDir::new("wine-django-db");
    let db = test_support::wfcgi::django_db(db_dir.path());
    let site = test_support::TempDir::new("wine-django-site");
    let log = site.path().join("wfcgi.log");
    // The site's settings as an IIS site has them: web.config alone.
    test_support::wfcgi::write_web_config(
        site.path(),
        &[
            ("WSGI_HANDLER", "django.core.wsgi.get_wsgi_application()"),
            ("DJANGO_SETTINGS_MODULE", "mysite.settings"),
            (
                "PYTHONPATH",
                &windows_path(&repo().join("python/django_site")),
            ),
            ("WFCGI_VENV", &windows_path(&env.django_venv())),
            ("WFCGI_TEST_DB", &windows_path(&db)),
            ("WSGI_LOG", "wfcgi.log"),
        ],
    );
    let site_dir = windows_path(site.path());
    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let django_get = |client: &mut Client, path: &'static str| {
        let mut params = wsgi_params("GET", path, "");
        params.extend([
            ("APPL_PHYSICAL_PATH", site_dir.as_str()),
            ("HTTP_HOST", "localhost"),
            ("SERVER_SOFTWARE", "Microsoft-IIS/10.0"),
        ]);
        client.request(1, &params, b"")
    };
    let index = django_get(&mut client, "/");
    let html = String::from_utf8_lossy(index.body()).into_owned();
    assert_eq!(index.status(), 200, "{html}\n{}", iis.output());
    assert!(html.contains("wfcgi django demo"), "{html}");
    // The admin's login page: templates, the session middleware, the SQLite database.
    let login = django_get(&mut client, "/admin/login/");
    assert_eq!(login.status(), 200);
    assert!(String::from_utf8_lossy(login.body()).contains("csrfmiddlewaretoken"));
    drop(client);
    assert_exits_0(&mut iis);
    // Django is only in the venv: it imported, so the venv was used. The handler came from
    // web.config, as the log says.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("loading the WSGI handler WSGI_HANDLER (web.config"),
        "{logged}"
    );
}

#[test]
fn wfcgi_enable_runs_appcmd_with_whole_arguments_and_writes_the_site_web_config() {
    let env = WindowsEnv::get();
    let dir = test_support::TempDir::new("wine-enable");
    // A site folder with a space in its name, as under C:\inetpub\my site.
    let site = dir.path().join("my site");
    std::fs::create_dir_all(&site).unwrap();
    let recorded = dir.path().join("appcmd.log");
    let run = |args: &[&str]| {
        let mut cmd = env.command(&test_support::wine::wfcgi_exe());
        cmd.args(args)
            .env("WFCGI_TEST_APPCMD_LOG", windows_path(&recorded))
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("run wfcgi.exe");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let appcmd = windows_path(&test_support::wine::appcmd_exe());
    let site_arg = windows_path(&site);
    let enable = [
        "enable",
        "--appcmd",
        &appcmd,
        "--app-dir",
        &site_arg,
        "--handler",
        "django.core.wsgi.get_wsgi_application()",
    ];
    let (ok, out) = run(&enable);
    assert!(ok, "{out}");
    let exe = windows_path(&test_support::wine::wfcgi_exe());
    let args = std::fs::read_to_string(&recorded).unwrap();
    let expected = format!(
        "set\nconfig\n/section:system.webServer/fastCgi\n/+[fullPath='{exe}',signalBeforeTerminateSeconds='30',instanceMaxRequests='10000',activityTimeout='600']\n/commit:apphost\n--\n"
    );
    assert_eq!(args, expected);
    let config = std::fs::read_to_string(site.join("web.config")).expect("web.config written");
    assert!(
        config.contains(&format!("scriptProcessor=\"{exe}\"")),
        "{config}"
    );
    assert!(config.contains(r#"responseBufferLimit="0""#));

    // Never overwritten without --force; --dry-run runs nothing.
    let (ok, out) = run(&[
        "enable",
        "--appcmd",
        &appcmd,
        "--app-dir",
        &site_arg,
        "--handler",
        "app.app",
    ]);
    assert!(!ok && out.contains("--force"), "{out}");
    let (ok, out) = run(&["disable", "--appcmd", &appcmd, "--dry-run"]);
    assert!(
        ok && out.contains(&format!("/-[fullPath='{exe}']")),
        "{out}"
    );
    let (ok, _) = run(&["disable", "--appcmd", &appcmd]);
    assert!(ok);
    let args = std::fs::read_to_string(&recorded).unwrap();
    assert!(
        args.ends_with(&format!(
            "set\nconfig\n/section:system.webServer/fastCgi\n/-[fullPath='{exe}']\n/commit:apphost\n--\n"
        )),
        "{args}"
    );
    assert_eq!(
        args.matches("--\n").count(),
        2,
        "the refused and dry runs ran nothing: {args}"
    );

    // The whole of --dry-run's output, paths as placeholders, against its golden file
    // (WFCGI_BLESS=1 rewrites the file from this run).
    let (ok, out) = run(&[&enable[..], &["--dry-run"]].concat());
    assert!(ok, "{out}");
    let shown = out
        .replace("\r\n", "\n")
        .replace(&exe, "{EXE}")
        .replace(&appcmd, "{APPCMD}")
        .replace(&site_arg, "{SITE}");
    let golden = repo().join("tests/golden/enable-dry-run.txt");
    if std::env::var_os("WFCGI_BLESS").is_some() {
        std::fs::write(&golden, &shown).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        shown, expected,
        "--dry-run's output differs from {golden:?}"
    );
    assert!(
        !args.contains("--dry-run") && std::fs::read_to_string(&recorded).unwrap() == args,
        "a dry run runs nothing"
    );
}

/// Waits up to 60 s for the log file to contain `needle`; returns its text.
fn wait_logged(log: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_file_change_during_a_slow_request_lets_it_finish_and_the_next_process_serves_the_new_code() {
    // WSGI_RESTART_FILE_REGEX is not set: wfastcgi's default applies under IIS.
    let env = WindowsEnv::get();
    let site = test_support::TempDir::new("wine-restart");
    let module = |version: &str| {
        format!(
            "import time\nVERSION = {version:?}\n\ndef application(environ, start_response):\n    \
             if environ['PATH_INFO'] == '/sleep':\n        time.sleep(3)\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [VERSION.encode()]\n"
        )
    };
    std::fs::write(site.path().join("site_app.py"), module("one")).unwrap();
    test_support::wfcgi::write_web_config(
        site.path(),
        &[
            ("WSGI_HANDLER", "site_app.application"),
            ("WSGI_LOG", "wfcgi.log"),
        ],
    );
    let log = site.path().join("wfcgi.log");
    let site_dir = windows_path(site.path());
    let params = |path: &'static str| {
        let mut params = wsgi_params("GET", path, "");
        params.extend([
            ("APPL_PHYSICAL_PATH", site_dir.as_str()),
            ("INSTANCE_META_PATH", "/LM/W3SVC/1"),
        ]);
        params
    };

    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let sleep_params: Vec<(String, String)> = params("/sleep")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let slow = std::thread::spawn(move || {
        let params: Vec<(&str, &str)> = sleep_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = client.request(1, &params, b"");
        (reply.status(), reply.body().to_vec())
    });
    let logged = wait_logged(&log, "loading the WSGI handler");
    assert!(
        logged.contains("restarting when app files change"),
        "{logged}\n{}",
        iis.output()
    );
    // The app is in its 3 s sleep (the import writes __pycache__, which must not count).
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(site.path().join("site_app.py"), module("two")).unwrap();
    let logged = wait_logged(&log, "app files changed");
    assert!(logged.contains("changed=site_app.py"), "{logged}");
    let (status, body) = slow.join().unwrap();
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (200, "one".to_string()),
        "{}",
        iis.output()
    );
    assert_exits_0(&mut iis);
    assert!(
        iis.output().contains("the program exited with 0"),
        "{}",
        iis.output()
    );

    // IIS starts a fresh process for the next request: it has the new code.
    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let reply = client.request(1, &params("/"), b"");
    assert_eq!(reply.body(), b"two", "{}", iis.output());
    drop(client);
    assert_exits_0(&mut iis);
}

/// A site whose web.config serves the test app, with `extra` settings; `(site, its Windows
/// path)`.
fn testapp_site(name: &str, extra: &[(&str, &str)]) -> (test_support::TempDir, String) {
    let site = test_support::TempDir::new(name);
    let python = windows_path(&repo().join("python"));
    let mut settings = vec![
        ("WSGI_HANDLER", "testapp.app.application"),
        ("PYTHONPATH", python.as_str()),
        ("WSGI_LOG", "wfcgi.log"),
    ];
    settings.extend_from_slice(extra);
    test_support::wfcgi::write_web_config(site.path(), &settings);
    let dir = windows_path(site.path());
    (site, dir)
}

/// `GET path` as IIS sends it for the site at `site_dir`.
fn iis_get(client: &mut Client, site_dir: &str, path: &str) -> Reply {
    let mut params = wsgi_params("GET", path, "");
    params.extend([
        ("APPL_PHYSICAL_PATH", site_dir),
        ("INSTANCE_META_PATH", "/LM/W3SVC/1"),
    ]);
    client.request(1, &params, b"")
}

#[test]
fn with_python_not_on_path_the_venvs_home_is_enough() {
    // IIS's usual case: the app pool's PATH has no Python. Windows would stop a program that
    // imports python313.dll before it runs ("The FastCGI process exited unexpectedly").
    let env = WindowsEnv::get();
    let venv = windows_path(&env.django_venv());
    let (site, site_dir) = testapp_site("wine-no-path", &[("WFCGI_VENV", &venv)]);
    let env = env.python_off_path();
    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let reply = iis_get(&mut client, &site_dir, "/hello");
    let logged = std::fs::read_to_string(site.path().join("wfcgi.log")).unwrap_or_default();
    assert_eq!(reply.body(), b"Hello, World!", "{logged}\n{}", iis.output());
    // Loaded from the folder the venv's pyvenv.cfg names.
    let home = windows_path(&env.python_home());
    assert!(
        logged.contains(&format!("loaded Python dll={home}\\python313.dll")),
        "{logged}"
    );
    drop(client);
    assert_exits_0(&mut iis);
}

#[test]
fn with_no_python_to_find_every_request_is_a_500_that_names_the_setting_and_the_log_says_where_it_looked(
) {
    let env = WindowsEnv::get().python_off_path();
    let (site, site_dir) = testapp_site("wine-no-python", &[]);
    let mut iis = WineProcess::as_iis(&env, Iis::Pipe, &[]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    for _ in 0..2 {
        let reply = iis_get(&mut client, &site_dir, "/hello");
        let body = String::from_utf8_lossy(reply.body()).into_owned();
        assert_eq!(reply.status(), 500, "{body}\n{}", iis.output());
        assert!(
            body.contains("wfcgi cannot find Python 3.13 (python313.dll). Fix: set WFCGI_VENV"),
            "{body}"
        );
        assert!(!body.contains("Z:\\"), "no paths shown to visitors: {body}");
    }
    let logged = std::fs::read_to_string(site.path().join("wfcgi.log")).unwrap_or_default();
    assert!(
        logged.contains("python313.dll (Python 3.13, which wfcgi was built for) cannot be loaded"),
        "{logged}"
    );
    assert!(
        logged.contains(
            "python313.dll by Windows' search (wfcgi.exe's folder, the system folders, PATH)"
        ),
        "{logged}"
    );
    assert!(
        logged.contains("Fix: set WFCGI_VENV (or --venv)"),
        "{logged}"
    );
    // Still serving (a 500 per request, not an exit), and it stops cleanly.
    drop(client);
    assert_exits_0(&mut iis);
}

#[test]
fn under_iis_a_hung_request_gets_504_with_its_stack_logged_and_the_process_makes_way() {
    let (mut iis, log, _dir) = testapp_as_iis(
        Iis::Pipe,
        "wine-timeout",
        "testapp.app.application",
        "wfcgi.log",
        &["--request-timeout-secs", "2"],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    assert_eq!(get(&mut client, "/hello").status(), 200, "{}", iis.output());
    let reply = client.request(1, &wsgi_params("GET", "/sleep", "ms=60000"), b"");
    assert_eq!(reply.status(), 504, "{}", iis.output());
    // The request's thread holds the pipe: the process exits for IIS to start another.
    let status = iis.wait_exit(std::time::Duration::from_secs(30));
    assert!(status.is_some(), "still running\n{}", iis.output());
    let logged = wait_logged(&log, "exiting (status 3)");
    assert!(
        logged.contains("the client got 504 Gateway Timeout"),
        "{logged}"
    );
    assert!(
        logged.contains(&test_support::peers::testapp_frame(
            "time.sleep(_int(_query(environ)",
            "sleep"
        )),
        "the app's frame: {logged}"
    );
}

#[test]
fn wfcgi_exe_request_connects_to_a_server_on_a_named_pipe() {
    // wfcgi.exe as IIS starts it, the pipe's client end left free for `wfcgi request`.
    let (iis, _log, _dir) = testapp_as_iis(
        Iis::PipeClientFree,
        "wine-request-pipe",
        "testapp.app.application",
        "wfcgi.log",
        &[],
    );
    let env = WindowsEnv::get();
    let pipe = iis.pipe_name();
    let request = |args: &[&str]| {
        let out = env
            .command(&test_support::wine::wfcgi_exe())
            .args(["request", "--connect", &pipe])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, response, err) = request(&["-d", "over the pipe", "/echo"]);
    assert_eq!(code, Some(0), "{response}{err}\n{}", iis.output());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nover the pipe"), "{response}");
    // The server connects its end again for the next client; a 5xx is exit status 1.
    let (code, response, err) = request(&["/raise-before"]);
    assert_eq!(code, Some(1), "{response}{err}\n{}", iis.output());
    assert!(
        response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{response}"
    );
}

#[test]
fn wfcgi_exe_check_reads_the_sites_acl_for_its_app_pool_identity() {
    use std::os::unix::fs::PermissionsExt;
    let env = WindowsEnv::get();
    let (site, site_dir) = testapp_site("wine-check-acl", &[]);
    // IIS's configuration: the site's folder, served by the pool "shop" as its own identity.
    let apphost = site.path().join("applicationHost.config");
    std::fs::write(
        &apphost,
        format!(
            r#"<configuration><system.applicationHost>
  <applicationPools>
    <add name="shop" />
    <applicationPoolDefaults><processModel identityType="ApplicationPoolIdentity" /></applicationPoolDefaults>
  </applicationPools>
  <sites>
    <site name="Shop" id="2">
      <application path="/" applicationPool="shop"><virtualDirectory path="/" physicalPath="{site_dir}" /></application>
    </site>
  </sites>
</system.applicationHost></configuration>"#
        ),
    )
    .unwrap();
    let check = || {
        let out = env
            .command(&test_support::wine::wfcgi_exe())
            .args(["check", "--app-dir", &site_dir, "--apphostconfig"])
            .arg(windows_path(&apphost))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Wine gives a file the DACL of its mode: 0755 lets Everyone read, not write.
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, report) = check();
    assert!(
        report.contains(r#"checked for IIS APPPOOL\shop, the identity of the app pool "shop" (ApplicationPoolIdentity"#),
        "{report}"
    );
    assert!(
        report.contains(&format!("reads {site_dir}: ok (the app directory)")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            r#"IIS APPPOOL\shop cannot write {site_dir}\wfcgi.log (WSGI_LOG): no entry of {site_dir}'s ACL grants it. Fix: icacls "{site_dir}" /grant "IIS APPPOOL\shop:(OI)(CI)M""#
        )),
        "{report}"
    );
    // 0700: the owner only; the pool's identity reads nothing.
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, report) = check();
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, Some(1), "{report}");
    let problems = report.split("Problems (").nth(1).unwrap_or_default();
    assert!(
        problems.contains(&format!(
            r#"IIS APPPOOL\shop cannot read {site_dir} (the app directory): no entry of {site_dir}'s ACL grants it. Fix: icacls "{site_dir}" /grant "IIS APPPOOL\shop:(OI)(CI)RX""#
        )),
        "{report}"
    );
}

#[test]
fn wfcgi_exe_check_finds_a_site_with_no_fastcgi_handler_and_request_answers_in_process() {
    let env = WindowsEnv::get();
    // A web.config with the app's settings only: IIS would send nothing to wfcgi.
    let (site, site_dir) = testapp_site("wine-check", &[]);
    let out = env
        .command(&test_support::wine::wfcgi_exe())
        .args(["check", "--app-dir", &site_dir, "--path", "/hello"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("has no FastCGI handler"), "{report}");
    assert!(
        report.contains(&format!("wfcgi enable --app-dir {}", site_dir)),
        "{report}"
    );
    assert!(
        report.contains("version: 3.13"),
        "the Windows CPython: {report}"
    );
    assert!(report.contains("GET /hello: 200"), "{report}");

    let out = env
        .command(&test_support::wine::wfcgi_exe())
        .args([
            "request",
            "--app-dir",
            &site_dir,
            "-d",
            "from wine",
            "/echo",
        ])
        .output()
        .unwrap();
    let response = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{response}");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nfrom wine"), "{response}");
    drop(site);
}

/// The pip package on Windows, as wfastcgi's users deploy it: the Windows wheel unpacked next
/// to the embeddable CPython (its `._pth` names the folder; `import site` stays off, as it
/// ships), and `python.exe -m wfcgi` started as IIS starts `scriptProcessor="python.exe|-m
/// wfcgi"`, configured by the site's web.config alone, over the named pipe.
#[test]
fn the_windows_wheel_beside_the_embeddable_python_serves_the_named_pipe_as_python_m_wfcgi() {
    let env = WindowsEnv::get();
    let python = env.pip_python();
    let (site, site_dir) = testapp_site("wine-pip", &[]);
    let mut iis = WineProcess::program_as_iis(&env, Iis::Pipe, &python, &["-m", "wfcgi"]);
    let mut client = Client::connect(iis.addr().parse().unwrap());
    let hello = iis_get(&mut client, &site_dir, "/hello");
    assert_eq!(hello.body(), b"Hello, World!", "{}", iis.output());

    // The interpreter serving is the one that ran `-m wfcgi`, with the package from the folder
    // its ._pth names: nothing was embedded or activated.
    let sys = iis_get(&mut client, &site_dir, "/sys");
    let info = String::from_utf8_lossy(sys.body()).into_owned();
    let json = |path: &std::path::Path| windows_path(path).replace('\\', r"\\");
    assert!(
        info.contains(&format!("\"executable\": \"{}\"", json(&python))),
        "{info}"
    );
    let packages = python.parent().unwrap().join("site-packages");
    assert!(info.contains(&json(&packages)), "{info}");
    assert!(info.contains("\"platform\": \"win32\""), "{info}");

    // An app exception is a 500 and the pipe keeps serving; a body round trip through
    // wsgi.input.
    assert_eq!(
        iis_get(&mut client, &site_dir, "/raise-before").status(),
        500
    );
    let body = test_support::pattern(0, 300_000);
    let mut params = wsgi_params("POST", "/echo", "");
    params.extend([
        ("APPL_PHYSICAL_PATH", site_dir.as_str()),
        ("INSTANCE_META_PATH", "/LM/W3SVC/1"),
    ]);
    let echoed = client.request(1, &params, &body);
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.body(), &body[..]);

    // IIS's end of life for the process: the shutdown event, then exit status 0.
    iis.say("shutdown");
    let exit = iis.wait_exit(std::time::Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        iis.output()
    );
    let logged = std::fs::read_to_string(site.path().join("wfcgi.log")).unwrap_or_default();
    assert!(logged.contains("read web.config"), "{logged}");
    assert!(
        logged.contains("IIS signalled _FCGI_SHUTDOWN_EVENT_"),
        "{logged}"
    );
}

/// `wfcgi enable` run by the pip package's python.exe registers that python.exe with
/// `arguments='-m wfcgi'`, and writes the site's `scriptProcessor="...python.exe|-m wfcgi"`.
#[test]
fn wfcgi_enable_from_python_m_wfcgi_registers_python_exe_with_dash_m_wfcgi() {
    let env = WindowsEnv::get();
    let python = env.pip_python();
    let dir = test_support::TempDir::new("wine-pip-enable");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let recorded = dir.path().join("appcmd.log");
    let out = env
        .command(&python)
        .args(["-m", "wfcgi", "enable", "--appcmd"])
        .arg(windows_path(&test_support::wine::appcmd_exe()))
        .arg("--app-dir")
        .arg(windows_path(&site))
        .args(["--handler", "testapp.app.application"])
        .env("WFCGI_TEST_APPCMD_LOG", windows_path(&recorded))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python.exe");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let exe = windows_path(&python);
    let args = std::fs::read_to_string(&recorded).unwrap_or_default();
    assert!(
        args.contains(&format!("/+[fullPath='{exe}',arguments='-m wfcgi',")),
        "{args}"
    );
    let config = std::fs::read_to_string(site.join("web.config")).expect("web.config written");
    assert!(
        config.contains(&format!("scriptProcessor=\"{exe}|-m wfcgi\"")),
        "{config}"
    );
}

/// The Linux processes whose command line contains `needle` (Wine shows a Windows program's
/// command line as its own).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// IIS puts its FastCGI processes in a job that ends with the worker process; iis-sim does the
/// same, so that a test which ends (killing iis-sim) leaves no wfcgi.exe running behind it.
#[test]
fn killing_iis_sim_ends_the_program_it_started() {
    let (mut iis, _log, dir) = testapp_as_iis(
        Iis::Pipe,
        "wine-job",
        "testapp.app.application",
        "wfcgi.log",
        &[],
    );
    let mut client = Client::connect(iis.addr().parse().unwrap());
    assert_eq!(get(&mut client, "/hello").body(), b"Hello, World!");
    // The scratch folder's name is in wfcgi.exe's --log-file, and nowhere else.
    let marker = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        processes_with(&marker)
            .iter()
            .any(|p| p.contains("wfcgi.exe")),
        "{:?}",
        processes_with(&marker)
    );
    // A request that runs for a minute: at the end of its pipe wfcgi.exe would let it finish
    // (the shutdown grace) before exiting; the job ends it with iis-sim.
    client.send(&Client::request_bytes(
        1,
        true,
        &wsgi_params("GET", "/sleep", "ms=60000"),
        b"",
    ));
    std::thread::sleep(std::time::Duration::from_millis(500));
    iis.kill();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still running after iis-sim was killed: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(client);
}
