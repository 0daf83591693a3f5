//! Diagnostics against the real binary: the access log in both forms, with the request ids
//! that error pages show and the pid of the worker that served each request.

use std::time::Duration;

use test_support::wfcgi::{wsgi_params, Wfcgi};
use test_support::{Client, Reply};

fn get(c: &mut Client, path: &str, query: &str) -> Reply {
    c.request(1, &wsgi_params("GET", path, query), b"")
}

/// The log's lines holding `needle`, once there are `n` of them.
fn lines_with(w: &Wfcgi, needle: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = w
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_json_access_log_has_a_line_per_request_with_its_id_status_bytes_and_worker() {
    let mut w = Wfcgi::serve_testapp(&["--access-log", "json", "--processes", "1"]);
    let mut c = loop {
        let mut c = w.connect();
        if c.request(1, &wsgi_params("GET", "/hello", ""), b"")
            .status()
            == 200
        {
            break c;
        }
    };
    let pid = String::from_utf8(get(&mut c, "/pid", "").body().to_vec()).unwrap();
    let failed = get(&mut c, "/raise-before", "x=1");
    assert_eq!(failed.status(), 500);
    let id = String::from_utf8_lossy(failed.cgi().header("X-Request-Id").unwrap()).into_owned();
    let lines = lines_with(&w, "\"method\":\"GET\"", 3);
    assert_eq!(lines.len(), 3, "{}", w.log());
    // Written bare: each line is one JSON object, nothing before it.
    for line in &lines {
        assert!(
            line.starts_with("{\"time\":\"20") && line.ends_with('}'),
            "{line}"
        );
        assert!(line.contains(&format!("\"pid\":{}", pid.trim())), "{line}");
        assert!(line.contains("\"duration_ms\":"), "{line}");
    }
    assert!(
        lines[0].contains("\"path\":\"/hello\",\"status\":200,\"bytes\":13,"),
        "{}",
        lines[0]
    );
    let failure = &lines[2];
    assert!(failure.contains(&format!("\"id\":\"{id}\"")), "{failure}");
    assert!(
        failure.contains("\"path\":\"/raise-before?x=1\",\"status\":500,"),
        "{failure}"
    );
    w.stop(libc::SIGTERM);
}

#[test]
fn the_text_access_log_keeps_the_usual_line_form_whatever_the_log_level() {
    let mut w = Wfcgi::serve_testapp(&["--access-log", "text", "--log-level", "warn"]);
    let mut c = w.connect();
    assert_eq!(get(&mut c, "/hello", "").status(), 200);
    let missing = get(&mut c, "/nowhere", "");
    assert_eq!(missing.status(), 404);
    let lines = lines_with(&w, "wfcgi::access:", 2);
    assert_eq!(lines.len(), 2, "{}", w.log());
    let pid = w.pid();
    assert!(
        lines[0].contains(" INFO request{id=")
            && lines[0].contains("}: wfcgi::access: GET /hello 200 13 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(&format!("ms pid={pid}")), "{}", lines[0]);
    assert!(lines[1].contains("GET /nowhere 404 "), "{}", lines[1]);
    // The level is warn: nothing else at info.
    assert!(!w.log().contains("INFO wfcgi:"), "{}", w.log());
    w.stop(libc::SIGTERM);
}

/// `wfcgi request ARGS...` to its end: exit code, stdout, stderr.
fn wfcgi_request(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let python = test_support::wfcgi::repo_path("python");
    let mut child = std::process::Command::new(test_support::wfcgi::wfcgi_bin())
        .arg("request")
        .args(["--app-dir", python.to_str().unwrap()])
        .args(["--handler", "testapp.app.application"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wfcgi_request_runs_one_request_through_the_app_in_process() {
    let (code, out, err) = wfcgi_request(&["/hello"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("Content-Length: 13\r\n\r\nHello, World!"),
        "{out}"
    );

    // A body from standard input, a header, the method given.
    let (code, out, err) = wfcgi_request(
        &["-X", "PUT", "-H", "X-Request-Id: cli-1", "-d", "-", "/echo"],
        b"from stdin",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\r\n\r\nfrom stdin"), "{out}");
    let (_, out, _) = wfcgi_request(&["--query", "a=1&b=2", "/environ"], b"");
    assert!(out.contains("\"QUERY_STRING\": \"a=1&b=2\""), "{out}");

    // A 5xx: exit status 1; the traceback on stderr carries the page's request id.
    let (code, out, err) = wfcgi_request(&["/raise-before"], b"");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{out}"
    );
    let id = out
        .split("X-Request-Id: ")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        err.contains(&format!(
            "request{{id={id}}}: wsgi::response: the app failed"
        )),
        "{err}"
    );
    assert!(
        err.contains("RuntimeError: boom before start_response"),
        "{err}"
    );

    let (code, _, err) = wfcgi_request(&["health"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("must start with '/'"), "{err}");
}

#[test]
fn wfcgi_request_connects_to_a_running_server_over_tcp_and_unix_sockets() {
    let dir = test_support::peers::TempDir::new("request-connect");
    let sock = dir.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let mut w = Wfcgi::serve_testapp(&["--listen", &unix]);
    let tcp = w.addr();
    for addr in [tcp.as_str(), unix.as_str()] {
        let (code, out, err) =
            wfcgi_request(&["--connect", addr, "-d", "over the wire", "/echo"], b"");
        assert_eq!(code, 0, "{addr}: {err}");
        assert!(out.ends_with("\r\n\r\nover the wire"), "{addr}: {out}");
    }
    let (code, out, _) = wfcgi_request(&["--connect", &tcp, "/raise-before"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("X-Request-Id: "), "{out}");
    w.stop(libc::SIGTERM);
    // Nobody there any more: no response, exit status 3, and why.
    let (code, _, err) = wfcgi_request(&["--connect", &tcp, "/"], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("cannot reach {tcp}")), "{err}");
}

/// `wfcgi check ARGS...`: exit code and stdout (the report).
fn wfcgi_check(args: &[&str]) -> (i32, String) {
    run_check(
        std::process::Command::new(test_support::wfcgi::wfcgi_bin()),
        args,
    )
}

/// Runs `command` (the wfcgi binary, or a wrapper of it) with `check ARGS...`, none of the
/// test's own settings inherited.
fn run_check(mut command: std::process::Command, args: &[&str]) -> (i32, String) {
    let out = command
        .arg("check")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("WSGI_HANDLER")
        .env_remove("WFCGI_VENV")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn wfcgi_check_reports_a_good_setup_with_where_each_setting_came_from() {
    let site = test_support::peers::TempDir::new("check-good");
    let python = test_support::wfcgi::repo_path("python");
    test_support::wfcgi::write_web_config(
        site.path(),
        &[
            ("WSGI_HANDLER", "testapp.app.application"),
            ("PYTHONPATH", python.to_str().unwrap()),
        ],
    );
    let (code, out) = wfcgi_check(&[
        "--app-dir",
        site.path().to_str().unwrap(),
        "--path",
        "/hello",
        "--threads",
        "3",
    ]);
    assert_eq!(code, 0, "{out}");
    let config = site.path().join("web.config");
    assert!(
        out.contains(&format!(
            "WSGI_HANDLER = \"testapp.app.application\" (web.config {} line",
            config.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("WFCGI_THREADS = \"3\" (flag --threads)"),
        "{out}"
    );
    assert!(
        out.contains("WFCGI_BODY_TIMEOUT_SECS = 60 (default)"),
        "{out}"
    );
    assert!(out.contains("Python\n  version: 3."), "{out}");
    assert!(out.contains(python.to_str().unwrap()), "sys.path: {out}");
    assert!(out.contains("GET /hello: 200 in "), "{out}");
    assert!(out.contains("body (13 bytes): \"Hello, World!\""), "{out}");
    assert!(out.ends_with("All is well.\n"), "{out}");

    let (code, json) = wfcgi_check(&["--app-dir", site.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    assert!(
        json.starts_with("{\"ok\":true,\"sections\":[{\"name\":\"Settings\""),
        "{json}"
    );
    assert!(json.trim_end().ends_with("\"problems\":[]}"), "{json}");
}

#[test]
fn wfcgi_check_names_the_setting_the_value_and_the_fix_for_each_broken_setup() {
    let python = test_support::wfcgi::repo_path("python");
    let python = python.to_str().unwrap();
    // A handler that does not import: the loader's own explanation.
    let (code, out) = wfcgi_check(&["--app-dir", python, "--handler", "testapp.nothere.app"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "Problems (1):\n  - --handler = \"testapp.nothere.app\" could not be imported."
        ),
        "{out}"
    );
    assert!(out.contains("has no attribute 'nothere'"), "{out}");
    // A venv of another Python.
    let other = test_support::wfcgi::venv("py312");
    let (code, out) = wfcgi_check(&["--app-dir", python, "--venv", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was made with Python 3.12"), "{out}");
    assert!(out.contains("--venv"), "{out}");
    // An app directory that is not there.
    let (code, out) = wfcgi_check(&["--app-dir", "/nonexistent/site"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid --app-dir \"/nonexistent/site\" (command line)"),
        "{out}"
    );
    // An app that answers 500.
    let (code, out) = wfcgi_check(&[
        "--app-dir",
        python,
        "--handler",
        "testapp.app.application",
        "--path",
        "/raise-before",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GET /raise-before answered 500"), "{out}");
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// `wfcgi check ARGS` as a user to whom the permission bits apply: as root (CI), without the
/// capabilities that override them (setpriv); as anyone else, as that user.
fn wfcgi_check_bound_by_permissions(args: &[&str]) -> (i32, String) {
    let command = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--bounding-set", "-dac_override,-dac_read_search", "--"]);
        c.arg(test_support::wfcgi::wfcgi_bin());
        c
    } else {
        std::process::Command::new(test_support::wfcgi::wfcgi_bin())
    };
    run_check(command, args)
}

/// Makes `path` unusable to the check's user: someone else's with mode 0700 as root, mode
/// 0 otherwise.
fn lock(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
}

#[test]
fn wfcgi_check_names_an_app_dir_and_a_log_folder_the_user_cannot_use() {
    use std::os::unix::fs::PermissionsExt;
    let sites = test_support::peers::TempDir::new("check-access");
    let site = sites.path().join("site");
    std::fs::create_dir(&site).unwrap();
    test_support::wfcgi::write_web_config(&site, &[("WSGI_LOG", "logs/wfcgi.log")]);
    std::fs::create_dir(site.join("logs")).unwrap();
    let site_text = site.to_str().unwrap();
    // Usable: all is well, each path checked.
    let (code, out) = wfcgi_check_bound_by_permissions(&["--app-dir", site_text]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("reads {site_text}: ok (the app directory)")),
        "{out}"
    );
    assert!(out.contains("wfcgi.log: ok (WSGI_LOG)"), "{out}");

    // A log folder the user cannot write to: named with its setting and the fix.
    lock(&site.join("logs"));
    let (code, out) = wfcgi_check_bound_by_permissions(&["--app-dir", site_text]);
    assert_eq!(code, 1, "{out}");
    let problems = out.split("Problems (1):").nth(1).unwrap_or_default();
    assert!(
        problems.contains(&format!(
            "cannot write {site_text}/logs/wfcgi.log (WSGI_LOG): its folder {site_text}/logs is not writable"
        )),
        "{out}"
    );
    assert!(problems.contains("Fix: "), "{out}");
    std::fs::set_permissions(site.join("logs"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // An app directory the user cannot read: the setting, the value, why and the fix.
    lock(&site);
    let (code, out) = wfcgi_check_bound_by_permissions(&["--app-dir", site_text]);
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "invalid --app-dir \"{site_text}\" (command line): {site_text} cannot be read by the user running wfcgi: Permission denied"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Fix: give that user read access: chmod o+rx {site_text}"
        )),
        "{out}"
    );
}

/// A site folder with `handlers` (the <handlers> XML of web.config, and what else goes in
/// <configuration>), the test app's settings, a static folder, and an applicationHost.config
/// registering `registered` (fullPath, arguments).
fn iis_site(name: &str, handlers: &str, registered: (&str, &str)) -> test_support::peers::TempDir {
    let site = test_support::peers::TempDir::new(name);
    let python = test_support::wfcgi::repo_path("python");
    std::fs::create_dir(site.path().join("static")).unwrap();
    std::fs::write(
        site.path().join("web.config"),
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<configuration>\n{handlers}\n  <appSettings>\n    <add key=\"WSGI_HANDLER\" value=\"testapp.app.application\" />\n    <add key=\"PYTHONPATH\" value=\"{}\" />\n  </appSettings>\n</configuration>\n",
            python.display()
        ),
    )
    .unwrap();
    std::fs::write(
        site.path().join("applicationHost.config"),
        format!(
            "<configuration><system.webServer><fastCgi>\n  <application fullPath=\"{}\" arguments=\"{}\" maxInstances=\"4\" />\n</fastCgi></system.webServer></configuration>\n",
            registered.0, registered.1
        ),
    )
    .unwrap();
    site
}

#[test]
fn wfcgi_check_finds_the_classic_iis_traps_in_the_sites_web_config() {
    // wfastcgi's usual setup, pointed at by a scriptProcessor IIS does not know, buffering on,
    // and /static sent to Python.
    let site = iis_site(
        "check-iis-traps",
        r#"  <system.webServer><handlers>
    <add name="Python FastCGI" path="*" verb="*" modules="FastCgiModule" scriptProcessor="C:\Python313\python.exe|C:\Python313\Lib\site-packages\wfastcgi.py" resourceType="Unspecified" requireAccess="Script" />
  </handlers></system.webServer>"#,
        (r"C:\site\.venv\Scripts\wfcgi.exe", ""),
    );
    let apphost = site.path().join("applicationHost.config");
    let (code, out) = wfcgi_check(&[
        "--app-dir",
        site.path().to_str().unwrap(),
        "--apphostconfig",
        apphost.to_str().unwrap(),
        "--path",
        "/hello",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Problems (3):"), "{out}");
    assert!(
        out.contains("has responseBufferLimit=unset (4194304 bytes, IIS's default)")
            && out.contains("Fix: responseBufferLimit=\"0\""),
        "{out}"
    );
    assert!(
        out.contains("every static file goes through Python")
            && out.contains("<remove name=\"Python FastCGI\" />"),
        "{out}"
    );
    assert!(
        out.contains(r"matches no FastCGI application registered with IIS (registered: C:\site\.venv\Scripts\wfcgi.exe)"),
        "{out}"
    );
    // The app itself is fine: the request still answers.
    assert!(out.contains("GET /hello: 200"), "{out}");
}

#[test]
fn wfcgi_check_takes_the_environment_iis_gives_the_process_from_application_host_config() {
    let site = iis_site(
        "check-iis-env",
        r#"  <system.webServer><handlers>
    <add name="wfcgi" path="*" verb="*" modules="FastCgiModule" scriptProcessor="C:\site\wfcgi.exe" resourceType="Unspecified" responseBufferLimit="0" />
  </handlers></system.webServer>"#,
        ("", ""),
    );
    let apphost = site.path().join("applicationHost.config");
    let write_apphost = |threads: &str| {
        std::fs::write(
            &apphost,
            format!(
                r#"<configuration><system.webServer><fastCgi>
  <application fullPath="C:\site\wfcgi.exe" arguments="">
    <environmentVariables>
      <environmentVariable name="WFCGI_THREADS" value="{threads}" />
    </environmentVariables>
  </application>
</fastCgi></system.webServer></configuration>"#
            ),
        )
        .unwrap();
    };
    let check = || {
        wfcgi_check(&[
            "--app-dir",
            site.path().to_str().unwrap(),
            "--apphostconfig",
            apphost.to_str().unwrap(),
        ])
    };
    write_apphost("3");
    let at = format!("environmentVariables in {}", apphost.display());
    let (_, out) = check();
    assert!(
        out.contains(&format!("WFCGI_THREADS = \"3\" ({at})")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            r#"IIS starts "C:\site\wfcgi.exe" with the {at}: WFCGI_THREADS"#
        )),
        "{out}"
    );
    // A bad value there is named with where it came from.
    write_apphost("lots");
    let (code, out) = check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "invalid WFCGI_THREADS \"lots\" ({at}): not a whole number"
        )),
        "{out}"
    );
}

#[test]
fn wfcgi_check_passes_a_site_set_up_as_wfcgi_enable_writes_it() {
    let site = iis_site(
        "check-iis-good",
        r#"  <system.webServer><handlers>
    <add name="wfcgi" path="*" verb="*" modules="FastCgiModule" scriptProcessor="C:\site\.venv\Scripts\wfcgi.exe" resourceType="Unspecified" requireAccess="Script" responseBufferLimit="0" />
  </handlers></system.webServer>
  <location path="static"><system.webServer><handlers><remove name="wfcgi" /></handlers></system.webServer></location>"#,
        (r"c:\SITE\.venv\Scripts\wfcgi.exe", ""),
    );
    let apphost = site.path().join("applicationHost.config");
    let (code, out) = wfcgi_check(&[
        "--app-dir",
        site.path().to_str().unwrap(),
        "--apphostconfig",
        apphost.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("IIS site"), "no trap, no note: {out}");
    assert!(out.contains("(the app directory)"), "{out}");
    assert!(out.ends_with("All is well.\n"), "{out}");
}

/// A minimal Debug Adapter Protocol client: requests out, messages in (Content-Length framed).
struct Dap {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    seq: u32,
}

impl Dap {
    fn connect(port: u16) -> Dap {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                return Dap {
                    stream,
                    buf: Vec::new(),
                    seq: 0,
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "debugpy does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, command: &str, arguments: &str) {
        use std::io::Write;
        self.seq += 1;
        let body = format!(
            r#"{{"seq":{},"type":"request","command":"{command}","arguments":{arguments}}}"#,
            self.seq
        );
        write!(self.stream, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    }

    /// The next message, with its spaces removed (debugpy's JSON has them after `:` and `,`).
    fn next(&mut self) -> String {
        use std::io::Read;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length:"))
                    .expect("Content-Length")
                    .trim()
                    .parse()
                    .unwrap();
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    let message = String::from_utf8_lossy(&body).replace(' ', "");
                    eprintln!("dap <- {}", &message[..message.len().min(300)]);
                    return message;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("a DAP message");
            assert!(n > 0, "debugpy closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads messages until one contains every one of `needles`; returns it.
    fn wait_for(&mut self, needles: &[&str]) -> String {
        for _ in 0..200 {
            let message = self.next();
            if needles.iter().all(|n| message.contains(n)) {
                return message;
            }
        }
        panic!("no DAP message with {needles:?}");
    }
}

#[test]
fn a_debugger_attaches_through_debugpy_and_stops_at_a_breakpoint_in_the_app() {
    let venv = test_support::wfcgi::venv("django");
    let port = test_support::peers::free_port();
    let app = test_support::wfcgi::repo_path("python/testapp/app.py");
    let mut w = Wfcgi::serve_testapp(&[
        "--venv",
        venv.to_str().unwrap(),
        "--debugpy",
        &port.to_string(),
        "--debugpy-wait",
    ]);
    w.wait_log(&format!("debugpy listening on 127.0.0.1:{port}"));
    // The line of `start_response` in the app's `hello`.
    let line = std::fs::read_to_string(&app)
        .unwrap()
        .lines()
        .position(|l| l.contains("def hello("))
        .unwrap()
        + 2;
    let mut dap = Dap::connect(port);
    dap.send(
        "initialize",
        r#"{"clientID":"wfcgi-test","adapterID":"debugpy","pathFormat":"path","linesStartAt1":true,"columnsStartAt1":true}"#,
    );
    dap.wait_for(&[r#""type":"response""#, r#""command":"initialize""#]);
    dap.send("attach", r#"{"justMyCode":false}"#);
    dap.wait_for(&[r#""event":"initialized""#]);
    dap.send(
        "setBreakpoints",
        &format!(
            r#"{{"source":{{"path":"{}"}},"breakpoints":[{{"line":{line}}}]}}"#,
            app.display()
        ),
    );
    let set = dap.wait_for(&[r#""command":"setBreakpoints""#]);
    assert!(set.contains(r#""verified":true"#), "{set}");
    dap.send("configurationDone", "{}");
    dap.wait_for(&[r#""command":"configurationDone""#]);
    // The debugger is attached: the app was waiting for it (--debugpy-wait). A request now
    // stops at the breakpoint.
    let addr = w.addr();
    let request = std::thread::spawn(move || {
        let mut c = test_support::Client::connect(addr.parse().unwrap());
        let reply = get(&mut c, "/hello", "");
        (reply.status(), reply.body().to_vec())
    });
    let stopped = dap.wait_for(&[r#""event":"stopped""#]);
    assert!(stopped.contains(r#""reason":"breakpoint""#), "{stopped}");
    let thread: String = stopped
        .split(r#""threadId":"#)
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    dap.send("stackTrace", &format!(r#"{{"threadId":{thread}}}"#));
    let trace = dap.wait_for(&[r#""command":"stackTrace""#]);
    assert!(trace.contains(r#""name":"hello""#), "{trace}");
    assert!(trace.contains("testapp/app.py"), "{trace}");
    assert!(trace.contains(&format!(r#""line":{line}"#)), "{trace}");
    dap.send("continue", &format!(r#"{{"threadId":{thread}}}"#));
    let (status, body) = request.join().unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"Hello, World!"[..]));
    dap.send("disconnect", "{}");
    w.stop(libc::SIGTERM);
}

#[test]
fn under_worker_processes_one_listens_for_the_debugger_and_the_old_ptvsd_setting_maps_onto_it() {
    let venv = test_support::wfcgi::venv("django");
    let port = test_support::peers::free_port();
    let address = format!("localhost:{port}");
    let mut w = Wfcgi::serve_with(
        &[
            "--app-dir",
            test_support::wfcgi::repo_path("python").to_str().unwrap(),
            "--handler",
            "testapp.app.application",
            "--venv",
            venv.to_str().unwrap(),
            "--processes",
            "2",
        ],
        &|cmd| {
            cmd.env("WSGI_PTVSD_ADDRESS", &address)
                .env("WSGI_PTVSD_SECRET", "old");
        },
    );
    let log = w.wait_log(&format!("debugpy listening on localhost:{port}"));
    assert!(
        log.contains(&format!("WSGI_PTVSD_ADDRESS \"{address}\" (environment variable) is obsolete (ptvsd): taken as WFCGI_DEBUGPY")),
        "{log}"
    );
    assert!(
        log.contains("WSGI_PTVSD_SECRET \"old\" (environment variable) is obsolete and ignored"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "the worker of the first slot listens for a debugger on localhost:{port}"
        )),
        "{log}"
    );
    // Two workers serve; one of them listens, and its line says which (the worker label).
    std::thread::sleep(Duration::from_millis(500));
    let log = w.log();
    let listening: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("debugpy listening on"))
        .collect();
    assert_eq!(listening.len(), 1, "{log}");
    assert!(listening[0].contains(" worker "), "{}", listening[0]);
    assert!(!log.contains("debugpy cannot listen"), "{log}");
    w.stop(libc::SIGTERM);
}
