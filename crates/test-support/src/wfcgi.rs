//! The real `wfcgi` binary as a child process: built once per test process (so it is never
//! stale), started in `serve` mode on a free port, with a listening socket as its stdin
//! (mod_fcgid / spawn-fcgi style), or with one end of a connected socketpair as its stdin (the
//! IIS model: one connection for the process's life). Its stderr goes to a file that tests read.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::peers::{free_port, repo, TempDir};
use super::Client;

/// The `wfcgi` binary of this checkout, built (debug profile) the first time it is asked for.
pub fn wfcgi_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "wfcgi", "--bin", "wfcgi"])
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run cargo build -p wfcgi");
        assert!(
            out.status.success(),
            "cargo build -p wfcgi failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| if p.is_relative() { repo().join(p) } else { p })
            .unwrap_or_else(|| repo().join("target"));
        let bin = target.join("debug").join("wfcgi");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// A path under the repository (`.venvs/django`, `python/django_site`, ...).
pub fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// `.venvs/<name>`, with a hint when the test environment is missing.
pub fn venv(name: &str) -> PathBuf {
    let p = repo().join(".venvs").join(name);
    assert!(
        p.exists(),
        "{} is missing: {}",
        p.display(),
        super::peers::SETUP_HINT
    );
    p
}

/// A fresh copy of the migrated Django database in `dir`, for `WFCGI_TEST_DB`.
pub fn django_db(dir: &Path) -> PathBuf {
    let template = venv("django-template.sqlite3");
    let db = dir.join("db.sqlite3");
    std::fs::copy(template, &db).unwrap();
    db
}

/// Writes a web.config with these appSettings into `dir`.
pub fn write_web_config(dir: &Path, settings: &[(&str, &str)]) -> PathBuf {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<configuration>\r\n  <appSettings>\r\n",
    );
    for (k, v) in settings {
        xml.push_str(&format!(
            "    <add key=\"{}\" value=\"{}\" />\r\n",
            xml_escape(k),
            xml_escape(v)
        ));
    }
    xml.push_str("  </appSettings>\r\n</configuration>\r\n");
    let path = dir.join("web.config");
    std::fs::write(&path, xml).unwrap();
    path
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Reads a file, or "" when it does not exist (yet).
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// How to start wfcgi: the native binary, or a pip-installed one (`venv/bin/wfcgi`, or
/// `venv/bin/python -m wfcgi`).
#[derive(Debug, Clone)]
pub struct Program {
    pub exe: PathBuf,
    /// Arguments before wfcgi's own (`-m wfcgi`).
    pub prefix: Vec<std::ffi::OsString>,
}

impl Program {
    /// The native `wfcgi` binary of this checkout.
    pub fn native() -> Program {
        Program {
            exe: wfcgi_bin(),
            prefix: Vec::new(),
        }
    }

    /// `VENV/bin/wfcgi`, the console script of the pip-installed package.
    pub fn console_script(venv: &Path) -> Program {
        Program {
            exe: venv.join("bin").join("wfcgi"),
            prefix: Vec::new(),
        }
    }

    /// `VENV/bin/python -m wfcgi`, as IIS starts it (`python.exe|-m wfcgi`).
    pub fn python_m(venv: &Path) -> Program {
        Program {
            exe: venv.join("bin").join("python"),
            prefix: vec!["-m".into(), "wfcgi".into()],
        }
    }

    /// A command for it, arguments to follow.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.prefix);
        cmd
    }
}

/// A running wfcgi process, killed on drop.
pub struct Wfcgi {
    /// The TCP port it serves (serve mode, or the listening socket given as stdin).
    pub port: Option<u16>,
    /// Where its stderr goes (serve mode and listening-stdin mode).
    pub stderr_path: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
    pub dir: TempDir,
}

/// Extra set-up of the command: environment, current directory.
pub type Configure<'a> = &'a dyn Fn(&mut Command);

pub fn no_config(_: &mut Command) {}

impl Wfcgi {
    /// `wfcgi serve --listen 127.0.0.1:PORT ARGS...`; waits until the port accepts.
    /// Panics (with the log) if the process exits first.
    /// `wfcgi serve` of python/testapp, with `extra` flags.
    pub fn serve_testapp(extra: &[&str]) -> Wfcgi {
        Self::serve_testapp_with(extra, &no_config)
    }

    /// [`Wfcgi::serve_testapp`], with `configure` applied to the command.
    pub fn serve_testapp_with(extra: &[&str], configure: Configure) -> Wfcgi {
        let python = repo_path("python");
        let mut args = vec![
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
        ];
        args.extend_from_slice(extra);
        Wfcgi::serve_with(&args, configure)
    }

    pub fn serve(args: &[&str]) -> Wfcgi {
        Self::serve_with(args, &no_config)
    }

    pub fn serve_with(args: &[&str], configure: Configure) -> Wfcgi {
        Self::serve_as(&Program::native(), args, configure)
    }

    /// [`Wfcgi::serve_with`], started as `program`.
    pub fn serve_as(program: &Program, args: &[&str], configure: Configure) -> Wfcgi {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all: Vec<&OsStr> = vec!["serve".as_ref(), "--listen".as_ref(), listen.as_ref()];
        all.extend(args.iter().map(|a| OsStr::new(*a)));
        let mut w = Self::spawn_as(program, &all, Stdio::null(), None, configure);
        w.port = Some(port);
        w.wait_listening(port);
        w
    }

    /// Runs `wfcgi ARGS...` to its end (start-up failures): exit status and stderr.
    pub fn run_to_exit(args: &[&str], configure: Configure) -> (ExitStatus, String) {
        let mut w = Self::spawn(
            &args.iter().map(OsStr::new).collect::<Vec<_>>(),
            Stdio::null(),
            None,
            configure,
        );
        let status = w
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("wfcgi did not exit; log:\n{}", w.log()));
        (status, w.log())
    }

    /// `wfcgi ARGS...` (no subcommand) with a listening TCP socket as fd 0, the way mod_fcgid
    /// and spawn-fcgi start it. The socket is bound before the spawn, so it accepts at once.
    pub fn with_listening_stdin(args: &[&str], configure: Configure) -> Wfcgi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd: OwnedFd = listener.into();
        let mut w = Self::spawn(
            &args.iter().map(OsStr::new).collect::<Vec<_>>(),
            Stdio::from(fd),
            None,
            configure,
        );
        w.port = Some(port);
        w
    }

    /// `wfcgi ARGS...` (no subcommand) with one end of a connected Unix socketpair as fd 0,
    /// stdout and stderr `/dev/null` (IIS: no console). Returns the other end as a FastCGI client.
    pub fn with_connected_stdin(
        args: &[&str],
        configure: Configure,
    ) -> (Wfcgi, Client<UnixStream>) {
        Self::with_connected_stdin_as(&Program::native(), args, configure)
    }

    /// [`Wfcgi::with_connected_stdin`], started as `program`.
    pub fn with_connected_stdin_as(
        program: &Program,
        args: &[&str],
        configure: Configure,
    ) -> (Wfcgi, Client<UnixStream>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd: OwnedFd = theirs.into();
        let w = Self::spawn_as(
            program,
            &args.iter().map(OsStr::new).collect::<Vec<_>>(),
            Stdio::from(fd),
            Some(Stdio::null()),
            configure,
        );
        ours.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        (w, Client::from_unix(ours))
    }

    fn spawn(args: &[&OsStr], stdin: Stdio, stderr: Option<Stdio>, configure: Configure) -> Wfcgi {
        Self::spawn_as(&Program::native(), args, stdin, stderr, configure)
    }

    fn spawn_as(
        program: &Program,
        args: &[&OsStr],
        stdin: Stdio,
        stderr: Option<Stdio>,
        configure: Configure,
    ) -> Wfcgi {
        let dir = TempDir::new("wfcgi-proc");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = stderr.unwrap_or_else(|| Stdio::from(File::create(&stderr_path).unwrap()));
        let mut cmd = program.command();
        cmd.args(args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(stderr)
            // Deterministic log filter unless a test sets its own.
            .env_remove("RUST_LOG");
        configure(&mut cmd);
        let child = cmd.spawn().expect("start wfcgi");
        Wfcgi {
            port: None,
            stderr_path,
            child,
            exited: None,
            dir,
        }
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "wfcgi exited ({status}) before listening; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "wfcgi did not listen on {port}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`, for nginx's upstream or cgi-fcgi.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port.expect("no TCP port"))
    }

    /// A raw FastCGI connection to the TCP port.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr().parse().unwrap())
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Waits until `path`'s text contains `needle` (log lines are written as they happen, but
    /// asynchronously with the response).
    pub fn wait_for_text(path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = read_lossy(path);
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stderr log once it contains `needle` (or after 10 s, for the assertion to report).
    pub fn wait_log(&self, needle: &str) -> String {
        Self::wait_for_text(&self.stderr_path, needle)
    }

    pub fn signal(&self, signal: i32) {
        crate::process::signal(&self.child, signal);
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = crate::process::wait_exit(&mut self.child, timeout);
        }
        self.exited
    }

    /// Sends `signal` (SIGTERM, SIGINT) and waits for the exit (panics after 30 s).
    pub fn stop(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "wfcgi did not exit after signal {signal}; log:\n{}",
                self.log()
            )
        })
    }

    /// Exit code, with a readable panic when a signal killed it.
    pub fn code(status: ExitStatus) -> i32 {
        status
            .code()
            .unwrap_or_else(|| panic!("killed by signal {:?}", status.signal()))
    }
}

impl Drop for Wfcgi {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Params of a WSGI request at the root, the way nginx with `PathParams::Wsgi` sends them.
pub fn wsgi_params<'a>(method: &'a str, path: &'a str, query: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ]
}
