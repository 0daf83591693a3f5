//! The Windows side of the suite: the real `wfcgi.exe` (cross-built for x86_64-pc-windows-gnu)
//! with the official Windows CPython embedded, run under Wine. `scripts/setup-windows-env`
//! installs and builds everything used here, under `.windows/`.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::peers::{free_port, repo};

const WINDOWS_HINT: &str = "run scripts/setup-windows-env (Wine, mingw-w64, the Rust target \
     x86_64-pc-windows-gnu, the Windows CPython, and wfcgi.exe; scripts/test runs it)";

/// Where setup-windows-env put things.
pub struct WindowsEnv {
    root: PathBuf,
    /// Whether the CPython's folder is on the Windows PATH (as after a python.org install
    /// with "Add to PATH"), or only where the app's settings say.
    python_on_path: bool,
}

impl WindowsEnv {
    /// The installed environment; panics with what to run when something is missing.
    pub fn get() -> WindowsEnv {
        let env = WindowsEnv {
            root: repo().join(".windows"),
            python_on_path: true,
        };
        for needed in [
            env.python_home().join("python313.dll"),
            env.root.join("shim/bcryptprimitives.dll"),
            env.root.join("prefix/system.reg"),
            env.root.join("venv-django/pyvenv.cfg"),
            wfcgi_exe(),
            iis_sim_exe(),
            appcmd_exe(),
        ] {
            assert!(
                needed.exists(),
                "{} is missing: {WINDOWS_HINT}",
                needed.display()
            );
        }
        env
    }

    /// The Windows venv with the Django site's packages.
    pub fn django_venv(&self) -> PathBuf {
        self.root.join("venv-django")
    }

    /// The embeddable CPython's folder (python313.dll, python313.zip, python.exe).
    pub fn python_home(&self) -> PathBuf {
        self.root.join("cp313")
    }

    /// `python.exe` of the pip package's layout: the Windows wheel unpacked next to a copy of
    /// the embeddable CPython, whose `._pth` names its folder (`scripts/build-wheels --test`).
    pub fn pip_python(&self) -> PathBuf {
        let python = self.root.join("pip-cp313/python.exe");
        assert!(
            self.root
                .join("pip-cp313/site-packages/wfcgi/__init__.py")
                .exists(),
            "{} has no wfcgi package: run scripts/build-wheels --test (scripts/test runs it)",
            self.root.join("pip-cp313").display()
        );
        python
    }

    /// The same environment with the CPython's folder not on the Windows PATH: only a venv's
    /// `pyvenv.cfg` can lead to it (IIS's usual case: Python is not on the app pool's PATH).
    pub fn python_off_path(self) -> WindowsEnv {
        WindowsEnv {
            python_on_path: false,
            ..self
        }
    }

    /// `wine PROGRAM` with this environment's prefix, the shim DLL and (unless
    /// [`python_off_path`](Self::python_off_path)) the CPython on the Windows PATH.
    pub fn command(&self, program: &Path) -> Command {
        let mut path = vec![windows_path(&self.root.join("shim"))];
        if self.python_on_path {
            path.insert(0, windows_path(&self.python_home()));
        }
        let mut cmd = Command::new("wine");
        cmd.arg(program)
            .env("WINEPREFIX", self.root.join("prefix"))
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("WINEPATH", path.join(";"))
            // Nothing of the Linux side's Python may leak into the Windows one.
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH");
        cmd
    }
}

/// `target/x86_64-pc-windows-gnu/debug/wfcgi.exe`.
pub fn wfcgi_exe() -> PathBuf {
    repo().join("target/x86_64-pc-windows-gnu/debug/wfcgi.exe")
}

/// `target/x86_64-pc-windows-gnu/debug/iis-sim.exe`.
pub fn iis_sim_exe() -> PathBuf {
    repo().join("target/x86_64-pc-windows-gnu/debug/iis-sim.exe")
}

/// `target/x86_64-pc-windows-gnu/debug/appcmd.exe`, the stand-in that records its arguments.
pub fn appcmd_exe() -> PathBuf {
    repo().join("target/x86_64-pc-windows-gnu/debug/appcmd.exe")
}

/// A Unix path as Wine's `Z:` drive shows it.
pub fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// How iis-sim hands wfcgi.exe its connection.
#[derive(Debug, Clone, Copy)]
pub enum Iis {
    /// NamedPipe mode (IIS's default), the web server's end connected first, as IIS does.
    Pipe,
    /// NamedPipe mode, the web server's end connected after wfcgi.exe waits for it.
    PipeServerFirst,
    /// NamedPipe mode with a pipe not opened for overlapped I/O (IIS opens it overlapped):
    /// wfcgi.exe falls back to blocking I/O.
    PipeBlocking,
    /// Tcp mode: a listening socket as standard input.
    Tcp,
    /// NamedPipe mode with the client end left for another client to connect (the pipe's
    /// name is in the output: [`WineProcess::pipe_name`]); nothing listens on the port.
    PipeClientFree,
}

/// A Windows program running under Wine, its output collected; killed on drop.
pub struct WineProcess {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    pub port: Option<u16>,
}

impl WineProcess {
    /// Starts `cmd` with stdin from /dev/null (or, with `talk`, a pipe for [`Self::say`]) and
    /// stdout/stderr into pipes (CPython under Wine 8 cannot start with a regular file as a
    /// standard handle).
    pub fn spawn(mut cmd: Command, talk: bool) -> WineProcess {
        cmd.stdin(if talk { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start wine");
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        WineProcess {
            child,
            stdin,
            output,
            port: None,
        }
    }

    /// `wfcgi.exe serve --listen 127.0.0.1:PORT ARGS...`, once the port accepts.
    pub fn serve(env: &WindowsEnv, args: &[&str]) -> WineProcess {
        let port = free_port();
        let mut cmd = env.command(&wfcgi_exe());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args);
        WineProcess::spawn(cmd, false).listening(port, "wfcgi.exe", None)
    }

    /// `wfcgi.exe ARGS...` started as IIS starts it, by `iis-sim.exe` (crates/iis-sim), once
    /// 127.0.0.1:PORT takes connections: relayed to the pipe in the pipe modes, wfcgi's own
    /// listening socket in Tcp mode.
    pub fn as_iis(env: &WindowsEnv, mode: Iis, args: &[&str]) -> WineProcess {
        WineProcess::program_as_iis(env, mode, &wfcgi_exe(), args)
    }

    /// `PROGRAM ARGS...` started as IIS starts a scriptProcessor, as in [`Self::as_iis`]
    /// (`python.exe -m wfcgi`: IIS's `scriptProcessor="python.exe|-m wfcgi"`).
    pub fn program_as_iis(
        env: &WindowsEnv,
        mode: Iis,
        program: &Path,
        args: &[&str],
    ) -> WineProcess {
        let port = free_port();
        let mut cmd = env.command(&iis_sim_exe());
        match mode {
            Iis::Pipe => {}
            Iis::PipeServerFirst => {
                cmd.arg("--server-first");
            }
            Iis::PipeBlocking => {
                cmd.arg("--blocking-pipe");
            }
            Iis::Tcp => {
                cmd.arg("--tcp");
            }
            Iis::PipeClientFree => {
                cmd.arg("--client-free");
            }
        }
        cmd.arg(port.to_string())
            .arg(windows_path(program))
            .args(args);
        // iis-sim relays one connection at a time: a probe would be one. It says when it listens.
        let says = match mode {
            Iis::PipeClientFree => "waits for a client",
            _ => "iis-sim: listening on",
        };
        WineProcess::spawn(cmd, true).listening(port, "iis-sim.exe", Some(says))
    }

    /// Waits until `port` accepts (or, with `says`, until the output says so). Wine's first
    /// start in a prefix, and CPython's import of its zipped stdlib, take seconds here.
    fn listening(mut self, port: u16, what: &str, says: Option<&str>) -> WineProcess {
        self.port = Some(port);
        let deadline = Instant::now() + Duration::from_secs(90);
        let ready = |p: &WineProcess| match says {
            Some(text) => p.output().contains(text),
            None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !ready(&self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{what} exited ({status}) before listening; output:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {port}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// Waits for the process to exit: its status, or `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes `line` to its standard input (`shutdown`: iis-sim signals IIS's shutdown event).
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("started with talk");
        writeln!(stdin, "{line}").expect("write to the process");
        stdin.flush().expect("flush");
    }

    /// Kills it (SIGKILL to its Wine process) and waits for that process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// The pipe iis-sim made, in [`Iis::PipeClientFree`] mode.
    pub fn pipe_name(&self) -> String {
        let output = self.output();
        let start = output.find(r"\\.\pipe\").expect("iis-sim names its pipe");
        output[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port.expect("a serving process"))
    }
}

impl Drop for WineProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
