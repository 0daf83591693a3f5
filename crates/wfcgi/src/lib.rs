//! wfcgi: serve a Python WSGI app over FastCGI. A native replacement for wfastcgi.py (IIS) and
//! for flup (Unix web servers).
//!
//! The program is thin: it reads the command line, web.config and the environment, sets up
//! logging and signals, and runs `fastcgi::Server` with `wsgi::Bridge` as its handler. It is a
//! library ([`run`]) so that two front doors share it: the native executable (src/main.rs),
//! and the `pip install wfcgi` extension module run by the venv's own Python
//! (crates/wfcgi-py); [`Invocation`] says which, and how to start the program again.
//!
//! Modules:
//! - [`cli`]: the command line (clap), help generated from the settings table.
//! - [`settings`]: every setting, precedence (flag > web.config > environment > default),
//!   validation with messages that say where a value came from and how to fix it.
//! - [`webconfig`]: the `<appSettings>` of an IIS web.config.
//! - [`logging`]: stderr and the `WSGI_LOG` file, reconfigurable after web.config is read.
//! - [`enable`]: `wfcgi enable` / `disable` (IIS registration, the site's web.config).
//! - [`lazy`]: stdin mode's handler, which starts the bridge on the first request.
//! - [`signals`]: SIGTERM/SIGINT, Ctrl-C, and IIS's `_FCGI_SHUTDOWN_EVENT_`.
//! - [`watch`]: the app directory's changes (`WSGI_RESTART_FILE_REGEX`).
//! - `supervisor` and `worker` (Unix): `wfcgi serve --processes N`, a supervisor holding no
//!   Python that runs N worker processes (this binary again) on the sockets it opened.
//! - `allocator` (Linux with glibc): glibc's malloc keeps the memory the app frees.
//! - `sched` (Linux): the server's threads are `SCHED_BATCH` (`WFCGI_SCHED_POLICY`).
//! - `limits` (Unix): the open-files limit raised to what `--max-connections` needs.
//!
//! Two modes:
//! - `wfcgi serve`: settings are read at start-up; any problem is one message on stderr (and
//!   in WSGI_LOG) and exit status 2.
//! - `wfcgi` alone: serve the connection or listening socket inherited on stdin (IIS, Apache
//!   mod_fcgid, spawn-fcgi). Settings are read on the first request, once the app directory is
//!   known from APPL_PHYSICAL_PATH; a problem then is a 500 and a log line, never an exit:
//!   under IIS an exit shows only "The FastCGI process exited unexpectedly".

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator;
mod check;
mod cli;
mod enable;
#[cfg(unix)]
mod handover;
mod iis_traps;
mod invocation;
mod lazy;
#[cfg(unix)]
mod limits;
mod logging;
mod readable;
mod request;
mod sched;
mod settings;
mod signals;
#[cfg(unix)]
mod slate;
#[cfg(unix)]
mod supervisor;
mod watch;
mod webconfig;
#[cfg(unix)]
mod worker;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info, warn};

pub use crate::invocation::Invocation;

use crate::cli::{Cli, Command};
use crate::lazy::{LazyBridge, StartFailure, Starter};
use crate::logging::Logging;
use crate::settings::{Environment, Flags, Intended, Settings};
use crate::webconfig::WebConfig;

/// Exit status for a problem at start-up (bad settings, bind failure, venv refused), like a
/// usage error.
const EXIT_STARTUP: u8 = 2;
/// Exit status when a request timed out on the one connection, whose thread it holds: the
/// process can serve nothing more (the web server starts another).
const EXIT_STUCK: i32 = 3;

/// Threads that drive connections. They only move bytes between sockets and the Python
/// threads (which do the app's work and are counted by `WFCGI_THREADS`), so a small number
/// serves any load the GIL allows: two, so that one busy connection cannot hold up every
/// other, but not more than the machine's cores. Each drives its own connections on a runtime
/// with one thread (`ServerConfig::io_threads`; the main runtime has one worker): a Python
/// thread's write wakes only the thread that sends it. On Windows, one: IIS keeps a few
/// connections to a process.
pub(crate) fn io_threads() -> usize {
    if cfg!(windows) {
        return 1;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get().min(2))
}

/// The tracing subscriber the binary installs (at its default level), not installed: for the
/// dispatch bench (`benches/dispatch.rs`), which measures what logging costs a request that
/// writes no line. Not an API.
#[doc(hidden)]
pub fn log_subscriber_for_bench() -> impl tracing::Subscriber + Send + Sync {
    logging::bench_subscriber()
}

/// Runs wfcgi as `invocation` asks: the whole program, from the command line to the exit
/// status.
pub fn run(invocation: Invocation) -> ExitCode {
    let invocation = invocation.install();
    // SIGUSR1 asks for the running requests' stacks; until its handler is installed (once
    // serving), it is ignored rather than fatal: the supervisor passes it to workers that
    // may still be loading the app.
    #[cfg(unix)]
    signals::ignore_sigusr1_for_now();
    // First, while this is the only thread: a worker's inherited descriptors and its
    // variable, which the app must not see.
    #[cfg(unix)]
    let inherited = match worker::Inherited::take() {
        Ok(inherited) => inherited,
        Err(message) => return startup_failure(&message, None),
    };
    let Cli { command, flags } = Cli::parse_args(invocation.argv());
    // Taken before anything changes the environment: it tells an inherited variable from an
    // appSetting copied in later.
    let env = Environment::capture();
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return startup_failure(&format!("cannot read the current directory: {e}"), None),
    };
    match command {
        #[cfg(unix)]
        Some(Command::Serve) => match inherited {
            Some(inherited) => serve_worker(inherited, &flags, &env, &cwd),
            None => serve(&flags, &env, &cwd),
        },
        #[cfg(not(unix))]
        Some(Command::Serve) => serve(&flags, &env, &cwd),
        Some(Command::Request(options)) => request::run(&options, &flags, &env, &cwd),
        Some(Command::Check(options)) => check::run(&options, &flags, &env, &cwd),
        Some(Command::Iis(options)) => {
            let site = match settings::iis_site(&flags, &cwd, options.enable) {
                Ok(site) => site,
                Err(message) => return startup_failure(&message, None),
            };
            enable::run(&options, site.as_ref())
        }
        #[cfg(unix)]
        None => match inherited {
            // A worker of a supervisor that serves fd 0 (started with the same arguments).
            Some(inherited) => serve_worker(inherited, &flags, &env, &cwd),
            None => serve_stdin(flags, env, cwd),
        },
        #[cfg(not(unix))]
        None => serve_stdin(flags, env, cwd),
    }
}

/// Prints one message on stderr (through the subscriber when logging is up, so it also reaches
/// the log file) and returns the start-up exit status.
fn startup_failure(message: &str, log: Option<(&Logging, Option<&Path>)>) -> ExitCode {
    match log {
        // Logging is up and someone can read it: one event, to stderr and the open log file.
        Some((logging, intended_file)) if logging.has_reader() => {
            error!("{message}");
            if let (None, Some(file)) = (logging.file_path(), intended_file) {
                logging::append_line(file, message);
            }
        }
        Some((_, intended_file)) => {
            eprintln!("wfcgi: error: {message}");
            if let Some(file) = intended_file {
                logging::append_line(file, message);
            }
        }
        None => eprintln!("wfcgi: error: {message}"),
    }
    ExitCode::from(EXIT_STARTUP)
}

/// Points logging at the configured level and file.
fn configure_logging(logging: &Logging, settings: &Settings) -> Result<(), String> {
    logging.set_level(settings.log_level.as_deref());
    match &settings.log_file {
        Some(path) => logging.set_file(path),
        None => {
            logging.discard_pending();
            Ok(())
        }
    }
}

/// Logs what resolution found worth saying, and points logging at the configured file.
fn report_settings(
    logging: &Logging,
    settings: &Settings,
    web_config: Option<&WebConfig>,
    app_dir: &Path,
) -> Result<(), String> {
    configure_logging(logging, settings)?;
    match web_config {
        Some(config) => {
            info!(web_config = %config.path.display(), settings = config.app_settings.len(), "read web.config")
        }
        None => {
            info!(app_dir = %app_dir.display(), "no web.config in the app directory: settings come from flags and the environment")
        }
    }
    for note in &settings.notes {
        info!("{note}");
    }
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    match &settings.bridge.handler {
        Some(handler) => info!(handler = %handler.path, source = %handler.source, "WSGI handler"),
        None => info!("no WSGI_HANDLER configured: serving the built-in demo app (set WSGI_HANDLER or --handler)"),
    }
    Ok(())
}

/// The I/O runtime, or the start-up failure that says why there is none. First, the allocator is
/// told to keep the memory the app frees (`allocator`), and this thread is given the scheduling
/// policy, so that the runtime's threads, the Python threads and the waker all have it
/// (`sched`).
fn build_runtime(
    logging: &Logging,
    policy: sched::Policy,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    allocator::keep_freed_memory();
    sched::start(policy);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wfcgi-io")
        .enable_all()
        .build()
        .map_err(|e| {
            startup_failure(
                &format!("cannot start the I/O runtime: {e}"),
                Some((logging, None)),
            )
        })
}

/// `wfcgi serve`: everything is read and checked before the first connection is accepted.
fn serve(flags: &Flags, env: &Environment, cwd: &Path) -> ExitCode {
    let app_dir = match settings::app_dir(flags, env, cwd, None) {
        Ok(dir) => dir,
        Err(e) => return startup_failure(&e.to_string(), None),
    };
    let (settings, web_config) = match settings::load(flags, env, &app_dir, cwd) {
        Ok(loaded) => loaded,
        Err(message) => {
            let file = Intended::read(flags, env, Some(&app_dir), cwd).log_file;
            return startup_failure(&message, Some((&Logging::init(None), file.as_deref())));
        }
    };
    let supervised = settings.workers.processes;
    if supervised.is_none() {
        // Still the only thread: safe to change the environment before Python reads it. A
        // supervisor leaves it alone: its workers resolve the settings again from the same
        // inputs, and appSettings copied in would look inherited to them.
        settings::apply_environment(&settings);
    }
    let logging = Logging::init(settings.log_level.as_deref());
    if let Err(message) = report_settings(&logging, &settings, web_config.as_ref(), &app_dir) {
        return startup_failure(&message, Some((&logging, None)));
    }
    // A supervisor's workers inherit the limit it sets (each may hold --max-connections).
    #[cfg(unix)]
    limits::make_room(
        settings.server.max_connections,
        limits::Connections::Setting,
    );

    if let Some(restart) = settings.restart_files.as_ref().filter(|r| r.explicit) {
        if supervised.is_none() {
            warn!(
                "{} is ignored by `wfcgi serve` in one process: exiting on a change would \
                 leave nothing to start wfcgi again. Add --reload (or --processes N) to reload \
                 the app when files change",
                restart.described
            );
        }
    }

    if settings.listen_is_default() {
        info!(
            "no --listen given: listening on {} (loopback only)",
            settings::default_value(settings::WFCGI_LISTEN)
        );
    }

    if let Some(processes) = supervised {
        #[cfg(unix)]
        return match supervisor::run(&settings, processes, None) {
            Ok(code) => ExitCode::from(code),
            Err(message) => startup_failure(&message, Some((&logging, None))),
        };
        #[cfg(not(unix))]
        return startup_failure(
            &format!(
                "--processes {processes} (WFCGI_PROCESSES) is for Unix: on Windows, IIS starts                  and recycles the processes (the FastCGI application's maxInstances and                  instanceMaxRequests). Remove it"
            ),
            Some((&logging, None)),
        );
    }

    let runtime = match build_runtime(&logging, settings.sched_policy) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let bind_options = fastcgi::BindOptions {
        unix_mode: settings.socket_mode,
    };
    let outcome = runtime.block_on(async {
        let mut listeners = Vec::new();
        for addr in &settings.listen {
            match fastcgi::Listener::bind(addr, bind_options).await {
                Ok(listener) => {
                    info!("listening on {}", listener.local_addr());
                    listeners.push(listener);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let config = settings.bridge.clone();
        let bridge = tokio::task::spawn_blocking(move || wsgi::Bridge::start(config))
            .await
            .map_err(|e| format!("starting the bridge panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let bridge = Arc::new(bridge);
        let server = fastcgi::Server::new(settings.server_config(), bridge.clone());
        serve_bridge(
            &settings,
            server,
            listeners,
            bridge,
            signals::shutdown_signal(),
        )
        .await
    });
    finish(outcome, &logging)
}

/// Serves `listeners` with `server` (whose handler is the bridge, or a wrapper of it) until `stop`, then lets
/// the bridge's Python requests finish within the grace: how serving ended, and whether they did.
async fn serve_bridge(
    settings: &Settings,
    server: fastcgi::Server,
    listeners: Vec<fastcgi::Listener>,
    bridge: Arc<wsgi::Bridge>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(fastcgi::ServeOutcome, bool), String> {
    let stacks = bridge.clone();
    signals::log_stacks_on_sigusr1(move || Some(stacks.clone()));
    let outcome = server
        .serve(listeners, stop)
        .await
        .map_err(|e| format!("the server failed: {e}"))?;
    let grace = settings.bridge.shutdown_grace;
    let drained = tokio::task::spawn_blocking(move || bridge.shutdown(grace))
        .await
        .unwrap_or(false);
    Ok((outcome, drained))
}

/// A worker under the supervisor: `wfcgi serve`'s settings, the supervisor's sockets.
#[cfg(unix)]
fn serve_worker(
    inherited: worker::Inherited,
    flags: &Flags,
    env: &Environment,
    cwd: &Path,
) -> ExitCode {
    let label = Some(format!("worker {}", std::process::id()));
    let loaded = settings::app_dir(flags, env, cwd, None)
        .map_err(|e| e.to_string())
        .and_then(|app_dir| settings::load(flags, env, &app_dir, cwd));
    let (mut settings, _) = match loaded {
        Ok(loaded) => loaded,
        // The supervisor read the same settings a moment ago; they changed since (a reload).
        Err(message) => {
            let logging = Logging::init_labelled(None, label);
            return startup_failure(&message, Some((&logging, None)));
        }
    };
    // One port, one process: the debugger listens in the first slot's worker only.
    if inherited.slot != 0 {
        settings.bridge.debugpy = None;
    }
    settings::apply_environment(&settings);
    let logging = Logging::init_labelled(settings.log_level.as_deref(), label);
    // The supervisor has reported the settings; the workers do not repeat it.
    if let Err(message) = configure_logging(&logging, &settings) {
        return startup_failure(&message, Some((&logging, None)));
    }
    let runtime = match build_runtime(&logging, settings.sched_policy) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    finish(worker::run(inherited, &settings, runtime), &logging)
}

/// Maps how serving ended to the exit status.
fn finish(outcome: Result<(fastcgi::ServeOutcome, bool), String>, logging: &Logging) -> ExitCode {
    match outcome {
        Ok((fastcgi::ServeOutcome::GraceExpired { connections }, _)) => {
            warn!(connections, "exiting with requests still running");
            ExitCode::FAILURE
        }
        Ok((_, false)) => {
            warn!("exiting with Python requests still running");
            ExitCode::FAILURE
        }
        Ok((outcome, true)) => {
            info!(?outcome, "stopped");
            ExitCode::SUCCESS
        }
        Err(message) => startup_failure(&message, Some((logging, None))),
    }
}

/// `wfcgi` with no subcommand: the inherited stdin connection or listening socket.
fn serve_stdin(flags: Flags, env: Environment, cwd: PathBuf) -> ExitCode {
    // Logging from what is known before web.config: flags and the environment. A log file
    // named there is opened now, so that even a web.config that cannot be read is reported.
    let (early_level, early_file) = settings::early_logging(&flags, &env, &cwd);
    let logging = Logging::init(early_level.as_deref());
    if let Some(path) = early_file {
        if let Err(message) = logging.set_file(&path) {
            return startup_failure(&message, Some((&logging, None)));
        }
    }

    if std::io::stdin().is_terminal() {
        return startup_failure(
            "standard input is a terminal, not a FastCGI connection: `wfcgi` alone is started by \
             a web server (IIS, mod_fcgid, spawn-fcgi). To listen on an address, run `wfcgi serve \
             --listen 127.0.0.1:9000` (see `wfcgi --help`)",
            Some((&logging, None)),
        );
    }
    #[cfg(unix)]
    if let Some(code) = supervise_stdin_if_asked(&flags, &env, &cwd, &logging) {
        return code;
    }
    // A listening socket on fd 0 (spawn-fcgi, lighttpd) is served here with the default limits.
    #[cfg(unix)]
    limits::make_room(
        fastcgi::ServerConfig::default().max_connections,
        limits::Connections::Stdin,
    );
    // The settings are read at the first request (web.config's place comes with it): the
    // default now, and the policy they name once they are read (`BridgeStarter`).
    let runtime = match build_runtime(&logging, sched::Policy::Batch) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        let listener = fastcgi::Listener::from_stdin()
            .map_err(|e| format!("cannot serve standard input as a FastCGI connection: {e}"))?;
        let restart = Arc::new(tokio::sync::Notify::new());
        let starter = BridgeStarter {
            flags,
            env,
            cwd,
            logging: logging.clone(),
            restart: restart.clone(),
            watching: std::sync::Once::new(),
        };
        let lazy = Arc::new(LazyBridge::new(starter));
        let stacks = lazy.clone();
        signals::log_stacks_on_sigusr1(move || stacks.started());
        let handler: Arc<dyn fastcgi::Handler> = lazy.clone();
        let signal = signals::shutdown_signal();
        let stop = async move {
            tokio::select! {
                () = signal => {}
                () = restart.notified() => {}
            }
        };
        let config = fastcgi::ServerConfig::default();
        let grace = config.shutdown_grace;
        let outcome = fastcgi::Server::new(config, handler)
            .serve(vec![listener], stop)
            .await
            .map_err(|e| format!("the server failed: {e}"))?;
        let drained = match lazy.started() {
            Some(bridge) => tokio::task::spawn_blocking(move || bridge.shutdown(grace))
                .await
                .unwrap_or(false),
            None => true,
        };
        Ok((outcome, drained))
    });
    finish(outcome, &logging)
}

/// With `WFCGI_PROCESSES` and a listening socket on fd 0 (mod_fcgid, lighttpd, spawn-fcgi), a
/// supervisor serves fd 0 with worker processes, as `wfcgi serve --processes` does its
/// `--listen` addresses; the settings are read now rather than at the first request (a Unix
/// web server has them all in the environment at start). `None`: fd 0 is served here, in one
/// process.
#[cfg(unix)]
fn supervise_stdin_if_asked(
    flags: &Flags,
    env: &Environment,
    cwd: &Path,
    logging: &Logging,
) -> Option<ExitCode> {
    let app_dir = settings::app_dir(flags, env, cwd, None).ok()?;
    // A settings error is reported by the one-process start, at the first request, as before.
    let (settings, web_config) = settings::load(flags, env, &app_dir, cwd).ok()?;
    let processes = settings.workers.processes?;
    let fd = match fastcgi::Listener::take_stdin_if_listening() {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            warn!(
                "WFCGI_PROCESSES is ignored: the web server handed this process one connection, \
                 not a listening socket (under IIS, set the FastCGI application's maxInstances)"
            );
            return None;
        }
        Err(e) => {
            return Some(startup_failure(
                &format!("cannot take the listening socket on fd 0: {e}"),
                Some((logging, None)),
            ))
        }
    };
    if let Err(message) = report_settings(logging, &settings, web_config.as_ref(), &app_dir) {
        return Some(startup_failure(&message, Some((logging, None))));
    }
    // Its workers serve with the settings' limits, and inherit this.
    limits::make_room(
        settings.server.max_connections,
        limits::Connections::Setting,
    );
    Some(match supervisor::run(&settings, processes, Some(fd)) {
        Ok(code) => ExitCode::from(code),
        Err(message) => startup_failure(&message, Some((logging, None))),
    })
}

/// Stdin mode's start-up, run by `LazyBridge` on its own thread at the first request.
struct BridgeStarter {
    flags: Flags,
    env: Environment,
    cwd: PathBuf,
    logging: Logging,
    /// Notified when a watched file changed: the server then drains and the process exits 0.
    restart: Arc<tokio::sync::Notify>,
    /// The watcher starts with the first settings that load (a failed start is retried).
    watching: std::sync::Once,
}

impl BridgeStarter {
    /// Starts watching the app directory when `WSGI_RESTART_FILE_REGEX` applies here: under IIS
    /// (wfastcgi's default, on Windows), or when set explicitly (a Unix web server that starts
    /// wfcgi again on the next request, as mod_fcgid does).
    fn watch_app(&self, settings: &Settings) {
        let Some(restart) = &settings.restart_files else {
            return;
        };
        if !(restart.explicit || cfg!(windows)) {
            return;
        }
        self.watching.call_once(|| {
            let spec = app_watch_spec(settings, restart);
            let notify = self.restart.clone();
            let started = watch::watch(spec, watch::DEFAULT_QUIET, move |changed| {
                let shown: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                info!(
                    changed = %shown.join(", "),
                    "app files changed (WSGI_RESTART_FILE_REGEX): finishing the requests in progress, then exiting for the web server to start a fresh process"
                );
                notify.notify_one();
                watch::Flow::Stop
            });
            match started {
                Ok(()) => info!(
                    app_dir = %settings.bridge.app_dir.display(),
                    "restarting when app files change: {}", restart.described
                ),
                Err(message) => error!("{message}"),
            }
        });
    }
}

/// What `WSGI_RESTART_FILE_REGEX` watches: the app directory, less the venv and the log file.
pub(crate) fn app_watch_spec(
    settings: &Settings,
    restart: &settings::RestartFiles,
) -> watch::WatchSpec {
    watch::WatchSpec {
        root: settings.bridge.app_dir.clone(),
        regex: restart.regex.clone(),
        ignore_dirs: settings
            .bridge
            .venv
            .iter()
            .filter_map(|v| venv_root(&v.path))
            .collect(),
        ignore_files: settings.log_file.iter().cloned().collect(),
    }
}

/// The folder of a venv given as its folder, its interpreter or an old virtualenv's
/// `activate_this.py` (both one folder down, in `bin` or `Scripts`).
fn venv_root(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        Some(path.to_path_buf())
    } else {
        path.parent()?.parent().map(Path::to_path_buf)
    }
}

impl Starter for BridgeStarter {
    type Handler = wsgi::Bridge;

    fn start(&self, appl_physical_path: Option<PathBuf>) -> Result<wsgi::Bridge, StartFailure> {
        let settings_failure = |message: String, app_dir: Option<&Path>| StartFailure {
            message,
            // Nothing of Python has started: fixing the settings and retrying works.
            retryable: true,
            debug_responses: Intended::read(&self.flags, &self.env, app_dir, &self.cwd)
                .debug_responses,
            public: None,
        };
        let app_dir = settings::app_dir(
            &self.flags,
            &self.env,
            &self.cwd,
            appl_physical_path.as_deref(),
        )
        .map_err(|e| settings_failure(e.to_string(), None))?;
        let (settings, web_config) = settings::load(&self.flags, &self.env, &app_dir, &self.cwd)
            .map_err(|message| {
                if self.logging.file_path().is_none() {
                    let intended =
                        Intended::read(&self.flags, &self.env, Some(&app_dir), &self.cwd);
                    if let Some(file) = intended.log_file {
                        let _ = self.logging.set_file(&file);
                    }
                }
                settings_failure(message, Some(&app_dir))
            })?;
        // See settings::apply_environment for why this is sound here: the runtime's workers
        // are waiting for this start-up, and no wfcgi thread reads the environment via libc.
        settings::apply_environment(&settings);
        report_settings(&self.logging, &settings, web_config.as_ref(), &app_dir)
            .map_err(|message| settings_failure(message, Some(&app_dir)))?;
        // The runtime was built with the default policy, before the settings were known; the
        // Python threads, started below, inherit this thread's.
        sched::settle(settings.sched_policy);
        // Before Python starts: a fix to a handler that fails to import restarts the process.
        self.watch_app(&settings);
        let debug_responses = settings.bridge.debug_responses;
        let bridge = wsgi::Bridge::start(settings.bridge).map_err(|e| StartFailure {
            retryable: start_error_is_retryable(&e),
            message: e.to_string(),
            debug_responses,
            public: e.public_summary(),
        })?;
        let restart = self.restart.clone();
        bridge.on_request_timeout(Box::new(move |timed_out| {
            replace_this_process(timed_out, &restart)
        }));
        Ok(bridge)
    }
}

/// A request timed out in a process the web server started (IIS, mod_fcgid): its Python thread
/// cannot be stopped, so this process makes way for a fresh one. On the one inline connection
/// (IIS) the thread holds the connection, and the 504 is already written: exit now. Otherwise
/// finish the other requests first, as for a file-change restart.
fn replace_this_process(timed_out: &wsgi::watchdog::TimedOut<'_>, restart: &tokio::sync::Notify) {
    if timed_out.holds_connection {
        error!(
            "{}: its thread holds this process's connection, so the process can serve nothing more; exiting (status {EXIT_STUCK}) for the web server to start a fresh one",
            timed_out.what
        );
        std::process::exit(EXIT_STUCK);
    }
    warn!(
        "{}: its thread cannot be stopped; finishing the other requests, then exiting for the web server to start a fresh process",
        timed_out.what
    );
    restart.notify_one();
}

/// Errors raised before CPython was initialised can be retried; after, the interpreter exists
/// (or half exists) and cannot be initialised again in this process.
fn start_error_is_retryable(error: &wsgi::StartError) -> bool {
    use wsgi::StartError as E;
    match error {
        E::VenvNotFound { .. }
        | E::NotAVenv { .. }
        | E::VenvVersionMismatch { .. }
        | E::AppDir { .. }
        | E::PythonNotFound { .. }
        | E::Invalid { .. } => true,
        E::Interpreter { .. }
        | E::AlreadyStarted { .. }
        | E::ActivateThis { .. }
        | E::Python(_)
        | E::Threads(_) => false,
    }
}
