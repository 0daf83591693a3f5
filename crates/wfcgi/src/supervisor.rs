//! `wfcgi serve --processes N`: a supervisor that holds no Python. It opens the listening
//! sockets once and runs N worker processes (this binary again, with the same arguments; see
//! `worker`), each accepting on the same sockets.
//!
//! - A worker that dies, by any signal or exit status, is replaced at once, and the log says
//!   how it died. One that keeps dying before its first request is retried with backoff; after
//!   [`EARLY_DEATHS`] in a row (or at once, if it could not start: exit status 2, a settings or
//!   venv problem) the supervisor stops with an error instead of spinning.
//! - A worker that asks to be recycled (`WFCGI_MAX_REQUESTS`, `WFCGI_MAX_RSS_BYTES`) goes on
//!   serving until its replacement has loaded the app; then it is told to drain. A draining
//!   worker hands its kept-alive connections over between requests (`handover`), and the
//!   supervisor passes each to a worker that goes on serving: the web server sees no close.
//! - SIGHUP reloads: a new worker for every slot; once all have their app loaded, the old ones
//!   drain. If a new one cannot load the app, the reload is abandoned and the old workers go on.
//! - SIGTERM/SIGINT: every worker drains within the shutdown grace; any still running after
//!   it (and a margin for exiting) is killed. A second signal exits at once.
//!
//! Workers never outlive the supervisor: on Linux each is started with `PR_SET_PDEATHSIG`
//! (SIGKILL), from the main thread, which lives as long as the supervisor; elsewhere a worker
//! whose control socket closes drains and exits.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tracing::{error, info, warn};

use crate::handover::Channel;
use crate::settings::Settings;
use crate::slate::Slate;
use crate::worker;

/// Deaths before a first request, in a row, after which the supervisor gives up.
const EARLY_DEATHS: u32 = 5;

/// The wait before starting a worker again after its predecessor died before its first
/// request: doubled each time, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// After the shutdown grace, how long workers have to exit (flush logs, end the interpreter)
/// before they are killed.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The exit status of a worker that could not start (bad settings, a venv refused).
const WORKER_STARTUP_FAILED: i32 = crate::EXIT_STARTUP as i32;

/// Runs the supervisor until it is stopped; returns the process's exit status. It listens
/// on `settings.listen`, or on `inherited` (the listening socket a web server passed on fd 0).
pub(crate) fn run(
    settings: &Settings,
    processes: usize,
    inherited: Option<OwnedFd>,
) -> Result<u8, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the supervisor's runtime: {e}"))?;
    // Workers are this program again: the native executable, or `python -m wfcgi`.
    let invocation = crate::invocation::current();
    let exe = invocation.program.clone();
    let args: Vec<OsString> = invocation
        .prefix
        .iter()
        .chain(&invocation.args)
        .cloned()
        .collect();
    runtime.block_on(async {
        let bind_options = fastcgi::BindOptions {
            unix_mode: settings.socket_mode,
        };
        // Kept open for the supervisor's life: workers come and go, the sockets stay.
        let mut listeners = Vec::new();
        let listen_fds = match &inherited {
            Some(fd) => {
                info!("serving the listening socket on fd 0");
                vec![fd.as_raw_fd()]
            }
            None => {
                for addr in &settings.listen {
                    let listener = fastcgi::Listener::bind(addr, bind_options)
                        .await
                        .map_err(|e| e.to_string())?;
                    info!("listening on {}", listener.local_addr());
                    listeners.push(listener);
                }
                listeners
                    .iter()
                    .filter_map(|l| l.listening_fd().map(|fd| fd.as_raw_fd()))
                    .collect()
            }
        };
        let (events, mut inbox) = mpsc::unbounded_channel();
        let mut s = Supervisor {
            exe,
            args,
            listen_fds,
            events,
            workers: HashMap::new(),
            slots: (0..processes).map(|_| Slot::new()).collect(),
            next_id: 1,
            grace: settings.bridge.shutdown_grace,
            reload: None,
            stopping: None,
            next_target: 0,
            slate_slots: settings.bridge.threads + 4,
        };
        info!(
            "supervisor: running {processes} worker process{}",
            if processes == 1 { "" } else { "es" }
        );
        s.watch_app(settings)?;
        if let Some(d) = &settings.bridge.debugpy {
            info!(
                "{}: the worker of the first slot listens for a debugger on {}:{} (one port, one process); the others do not",
                d.described, d.host, d.port
            );
        }
        let shutdown = crate::signals::shutdown_signal();
        tokio::pin!(shutdown);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
        loop {
            s.start_missing();
            if s.stopping.is_some() && s.workers.is_empty() {
                break;
            }
            let retry_at = s.next_retry();
            let kill_at = s.stopping.as_ref().map(|st| st.kill_at);
            let overdue_at = s.workers.values().filter_map(|w| w.kill_at).min();
            tokio::select! {
                Some(event) = inbox.recv() => s.on_event(event),
                () = &mut shutdown, if s.stopping.is_none() => s.stop(0),
                Some(()) = hangup.recv() => s.reload("SIGHUP"),
                Some(()) = usr1.recv() => s.ask_for_stacks(),
                () = sleep_until(overdue_at.unwrap_or_else(far_future).into()), if overdue_at.is_some() => {
                    s.kill_overdue();
                }
                () = sleep_until(retry_at.unwrap_or_else(far_future).into()), if retry_at.is_some() => {}
                () = sleep_until(kill_at.unwrap_or_else(far_future).into()), if kill_at.is_some() => {
                    s.kill_remaining();
                    break;
                }
            }
        }
        let code = s.stopping.map_or(1, |st| st.code);
        if code == 0 {
            info!("stopped");
        }
        Ok(code)
    })
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

struct Supervisor {
    exe: PathBuf,
    args: Vec<OsString>,
    listen_fds: Vec<RawFd>,
    events: mpsc::UnboundedSender<Event>,
    workers: HashMap<u64, Worker>,
    slots: Vec<Slot>,
    next_id: u64,
    grace: Duration,
    reload: Option<Reload>,
    stopping: Option<Stopping>,
    /// Where the search for a worker to take a handed-over connection starts (round robin).
    next_target: usize,
    /// Slots in each worker's table of running requests: one per Python thread, and spare.
    slate_slots: usize,
}

/// One of the N places a worker serves in.
struct Slot {
    /// The worker taking connections here.
    serving: Option<u64>,
    /// A worker starting to take over here, not yet ready.
    incoming: Option<u64>,
    /// The serving worker asked to be recycled.
    replace: bool,
    /// Deaths before a first request, in a row.
    early_deaths: u32,
    /// No worker is started here before this.
    retry_at: Instant,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            serving: None,
            incoming: None,
            replace: false,
            early_deaths: 0,
            retry_at: Instant::now(),
        }
    }

    fn wants_worker(&self) -> bool {
        self.incoming.is_none() && (self.serving.is_none() || self.replace)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Started, loading the app; not yet told to take over.
    Incoming,
    Serving,
    /// Told to finish what it has and exit.
    Draining,
}

struct Worker {
    pid: u32,
    slot: usize,
    role: Role,
    /// It took a request: a later death is not a start-up failure.
    busy: bool,
    /// Started by the reload in progress.
    reload: bool,
    control: tokio::net::unix::OwnedWriteHalf,
    /// Connections it hands over, and those it is handed.
    handover: Arc<Channel>,
    /// Connections it handed over, for the log.
    handed: u32,
    /// Told to drain: killed if still running at this time (a request stuck for ever).
    kill_at: Option<Instant>,
    /// What it is running, readable after it died.
    slate: Slate,
}

/// A reload in progress: new workers loading, the old ones serving until all are ready.
struct Reload {
    why: &'static str,
    started: Instant,
    /// The new workers, and whether each is ready.
    workers: HashMap<u64, bool>,
}

struct Stopping {
    kill_at: Instant,
    code: u8,
}

enum Event {
    Said(u64, String),
    Exited(u64, ExitStatus),
    HandedOver(u64, OwnedFd),
    /// App files changed (`--reload`, `WSGI_RESTART_FILE_REGEX`).
    Changed(Vec<PathBuf>),
}

impl Supervisor {
    /// Starts a worker in every slot that needs one and whose backoff is over.
    fn start_missing(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if self.slots[slot].wants_worker() && self.slots[slot].retry_at <= now {
                if let Some(id) = self.spawn_into(slot, false) {
                    self.slots[slot].incoming = Some(id);
                }
            }
        }
    }

    /// When a slot's backoff ends, if one is waiting for it.
    fn next_retry(&self) -> Option<Instant> {
        if self.stopping.is_some() {
            return None;
        }
        self.slots
            .iter()
            .filter(|s| s.wants_worker())
            .map(|s| s.retry_at)
            .min()
    }

    /// Starts a worker for `slot`; on failure, logs it and backs the slot off.
    fn spawn_into(&mut self, slot: usize, reload: bool) -> Option<u64> {
        match self.spawn(slot, reload) {
            Ok(id) => Some(id),
            Err(e) => {
                error!(
                    "cannot start a worker process ({}): {e}",
                    self.exe.display()
                );
                self.died_early(slot, None);
                None
            }
        }
    }

    fn spawn(&mut self, slot: usize, reload: bool) -> io::Result<u64> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let (handover, their_handover) = crate::handover::pair()?;
        let slate = Slate::create(self.slate_slots)?;
        let mut keep = vec![
            theirs.as_raw_fd(),
            their_handover.as_raw_fd(),
            slate.fd().as_raw_fd(),
        ];
        keep.extend_from_slice(&self.listen_fds);
        let listen: Vec<String> = self.listen_fds.iter().map(|fd| fd.to_string()).collect();
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env(
                worker::ENV,
                format!(
                    "{};{};{};{};{slot}",
                    keep[0],
                    listen.join(","),
                    keep[1],
                    keep[2]
                ),
            )
            .stdin(Stdio::null());
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec and makes only
        // async-signal-safe calls (fcntl, prctl, getppid) on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || child_setup(&keep, parent));
        }
        let mut child = cmd.spawn()?;
        drop(theirs);
        drop(their_handover);
        let handover = Arc::new(Channel::new(handover)?);
        let pid = child.id().unwrap_or(0);
        let id = self.next_id;
        self.next_id += 1;
        ours.set_nonblocking(true)?;
        let (said, control) = tokio::net::UnixStream::from_std(ours)?.into_split();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(said).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if events.send(Event::Said(id, line)).is_err() {
                    return;
                }
            }
        });
        let events = self.events.clone();
        let handed = handover.clone();
        tokio::spawn(async move {
            while let Ok(Some(fd)) = handed.recv().await {
                if events.send(Event::HandedOver(id, fd)).is_err() {
                    return;
                }
            }
        });
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status,
                Err(e) => {
                    warn!("cannot wait for worker {pid}: {e}");
                    ExitStatus::from_raw(0xff << 8)
                }
            };
            let _ = events.send(Event::Exited(id, status));
        });
        info!("started worker {pid}");
        self.workers.insert(
            id,
            Worker {
                pid,
                slot,
                role: Role::Incoming,
                busy: false,
                reload,
                control,
                handover,
                handed: 0,
                kill_at: None,
                slate,
            },
        );
        Ok(id)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Said(id, line) => self.on_said(id, &line),
            Event::Exited(id, status) => self.on_exit(id, status),
            Event::HandedOver(id, fd) => self.pass_on(id, fd),
            Event::Changed(paths) => {
                let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                info!(changed = %shown.join(", "), "app files changed");
                self.reload("app files changed");
            }
        }
    }

    /// With `--reload`, or `WSGI_RESTART_FILE_REGEX` set explicitly, a change to a matching
    /// app file reloads the workers.
    fn watch_app(&self, settings: &Settings) -> Result<(), String> {
        let explicit = settings.restart_files.as_ref().is_some_and(|r| r.explicit);
        if !settings.workers.reload && !explicit {
            return Ok(());
        }
        let Some(restart) = &settings.restart_files else {
            warn!(
                "--reload (WFCGI_RELOAD) has nothing to watch: WSGI_RESTART_FILE_REGEX is set \
                 empty. Unset it for the default (.py and .config files), or remove --reload"
            );
            return Ok(());
        };
        let events = self.events.clone();
        crate::watch::watch(
            crate::app_watch_spec(settings, restart),
            crate::watch::DEFAULT_QUIET,
            move |changed| match events.send(Event::Changed(changed)) {
                Ok(()) => crate::watch::Flow::Continue,
                Err(_) => crate::watch::Flow::Stop,
            },
        )?;
        info!(
            app_dir = %settings.bridge.app_dir.display(),
            "reloading when app files change: {}", restart.described
        );
        Ok(())
    }

    /// A connection `from` let go: to the next worker that serves (round robin over the
    /// slots). With none (everything is stopping), it is closed.
    fn pass_on(&mut self, from: u64, fd: OwnedFd) {
        if let Some(w) = self.workers.get_mut(&from) {
            w.handed += 1;
        }
        let n = self.slots.len();
        for i in 0..n {
            let slot = (self.next_target + i) % n;
            let Some(to) = self.slots[slot].serving else {
                continue;
            };
            let Some(w) = self.workers.get(&to) else {
                continue;
            };
            if to == from || w.role != Role::Serving {
                continue;
            }
            self.next_target = slot + 1;
            match w.handover.send(&fd) {
                Ok(()) => return,
                Err(e) => warn!("cannot pass a connection to worker {}: {e}", w.pid),
            }
        }
    }

    fn on_said(&mut self, id: u64, line: &str) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "busy" => {
                w.busy = true;
                self.slots[w.slot].early_deaths = 0;
            }
            // A worker that is not serving (still starting, or already draining) has nothing
            // to be replaced or to take over: its late word is moot.
            "retire" => {
                if w.role == Role::Serving {
                    info!(
                        "worker {} is to be recycled: {rest}; starting its replacement",
                        w.pid
                    );
                    self.slots[w.slot].replace = true;
                }
            }
            "ready" | "unloadable" => {
                if w.role == Role::Incoming {
                    self.on_ready(id, word == "ready");
                }
            }
            _ => warn!("unexpected message from worker {}: {line:?}", w.pid),
        }
    }

    /// An incoming worker has its app loaded (`loaded`), or tried and failed.
    fn on_ready(&mut self, id: u64, loaded: bool) {
        let (pid, slot, reload) = {
            let w = &self.workers[&id];
            (w.pid, w.slot, w.reload)
        };
        if !loaded && (reload || self.slots[slot].serving.is_some()) {
            // Taking over would replace a worker that serves with one that answers 500.
            error!("worker {pid} cannot load the app (its error is above): it does not take over");
            self.slots[slot].incoming = None;
            self.drain(id);
            if reload {
                self.abandon_reload();
            } else {
                self.died_early(slot, None);
            }
            return;
        }
        if reload {
            let Some(r) = self.reload.as_mut() else {
                return;
            };
            r.workers.insert(id, true);
            if r.workers.values().all(|ready| *ready) {
                self.commit_reload();
            }
            return;
        }
        self.take_over(slot, id);
    }

    /// `id` serves in `slot`; the worker it replaces drains.
    fn take_over(&mut self, slot: usize, id: u64) {
        let s = &mut self.slots[slot];
        s.incoming = None;
        s.replace = false;
        let old = s.serving.replace(id);
        if let Some(w) = self.workers.get_mut(&id) {
            w.role = Role::Serving;
            w.reload = false;
        }
        if let Some(old) = old {
            self.drain(old);
        }
    }

    /// Tells a worker to finish what it has and exit. Its kept-alive connections are handed
    /// over to the workers that serve on, unless everything is stopping (nothing would take
    /// them): then it closes them.
    fn drain(&mut self, id: u64) {
        let hand_over = self.stopping.is_none();
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.role == Role::Draining {
            return;
        }
        w.role = Role::Draining;
        w.kill_at = Some(Instant::now() + self.grace + EXIT_MARGIN);
        info!("worker {} is draining", w.pid);
        // Six bytes into an empty socket buffer: written at once, or the worker is gone (its
        // exit is on its way) or stuck; a signal asks it too.
        let say: &[u8] = if hand_over {
            b"drain hand-over\n"
        } else {
            b"drain\n"
        };
        if w.control.try_write(say).is_err() {
            signal(w.pid, libc::SIGTERM);
        }
    }

    fn on_exit(&mut self, id: u64, status: ExitStatus) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        let how = describe(status);
        let pid = w.pid;
        let slot = &mut self.slots[w.slot];
        if slot.serving == Some(id) {
            slot.serving = None;
        }
        if slot.incoming == Some(id) {
            slot.incoming = None;
        }
        if w.role == Role::Draining || self.stopping.is_some() {
            if status.success() && w.handed > 0 {
                info!(
                    "worker {pid} exited after draining; it handed {} kept-alive connection{} to the other workers",
                    w.handed,
                    if w.handed == 1 { "" } else { "s" }
                );
            } else if status.success() {
                info!("worker {pid} exited after draining");
            } else {
                warn!("worker {pid} did not drain cleanly: it {how}");
                if let Some(stopping) = self.stopping.as_mut() {
                    stopping.code = 1;
                }
            }
            return;
        }
        if status.success() && w.role == Role::Serving {
            // It drained and exited by itself: a signal from outside (SIGTERM to the worker,
            // not to the supervisor), not a crash.
            warn!(
                "worker {pid} exited by itself after draining (status 0): something outside stopped it; stop the supervisor ({}) to stop wfcgi. Replacing it",
                std::process::id()
            );
            let slot = &mut self.slots[w.slot];
            slot.early_deaths = 0;
            slot.retry_at = Instant::now();
            return;
        }
        let in_flight = w.slate.running();
        // A request in its slate means it was serving, even if its "busy" word, sent at that
        // request's start, is still unread in the pipe: a request that makes the worker exit at
        // once can end it before the supervisor reads the word.
        let busy = w.busy || !in_flight.is_empty();
        let when = match (w.role, busy) {
            (Role::Incoming, _) => "while starting, before it was ready",
            (_, false) => "before its first request",
            _ => "while serving",
        };
        let running = match in_flight.as_slice() {
            [] => "no request was running".to_string(),
            running => {
                let each: Vec<String> = running
                    .iter()
                    .map(|(what, age)| format!("{what} (for {:.1} s)", age.as_secs_f64()))
                    .collect();
                format!("it was running {}", each.join(", "))
            }
        };
        error!("worker {pid} died {when}: it {how}; {running}");
        if w.reload {
            self.abandon_reload();
        }
        if busy {
            let slot = &mut self.slots[w.slot];
            slot.early_deaths = 0;
            slot.retry_at = Instant::now();
        } else {
            self.died_early(w.slot, Some(status));
        }
    }

    /// A worker of `slot` failed before its first request: back off, or give up.
    fn died_early(&mut self, slot: usize, status: Option<ExitStatus>) {
        let s = &mut self.slots[slot];
        s.early_deaths += 1;
        let nothing_serves = s.serving.is_none();
        let could_not_start = status.and_then(|st| st.code()) == Some(WORKER_STARTUP_FAILED);
        if nothing_serves && (could_not_start || s.early_deaths >= EARLY_DEATHS) {
            let why = if could_not_start {
                "a worker could not start (its error is above)".to_string()
            } else {
                format!(
                    "workers keep dying before their first request ({} in a row; each death \
                     is logged above)",
                    s.early_deaths
                )
            };
            error!(
                "{why}: stopping. Fix the problem, or run `wfcgi serve` without --processes \
                 to see it in one process"
            );
            self.stop(1);
            return;
        }
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << (s.early_deaths - 1).min(16))
            .min(BACKOFF_MAX);
        s.retry_at = Instant::now() + backoff;
        info!(
            "starting another worker in {} ms ({} failure{} before a first request in a row)",
            backoff.as_millis(),
            s.early_deaths,
            if s.early_deaths == 1 { "" } else { "s" }
        );
    }

    /// Starts a new worker for every slot; the old ones drain once all are ready.
    fn reload(&mut self, why: &'static str) {
        if self.stopping.is_some() {
            return;
        }
        if self.reload.is_some() {
            info!("{why}: a reload was in progress; starting over with the current code");
            self.abandon_reload();
        }
        info!("{why}: reloading: starting workers with the current code; the running ones serve until those are ready");
        let mut started = HashMap::new();
        for slot in 0..self.slots.len() {
            if let Some(previous) = self.slots[slot].incoming.take() {
                // A replacement was already starting, perhaps with the old code.
                self.drain(previous);
            }
            match self.spawn(slot, true) {
                Ok(id) => {
                    self.slots[slot].incoming = Some(id);
                    started.insert(id, false);
                }
                Err(e) => {
                    error!("cannot start a worker process for the reload: {e}");
                    for id in started.into_keys() {
                        self.drain(id);
                    }
                    return;
                }
            }
        }
        self.reload = Some(Reload {
            why,
            started: Instant::now(),
            workers: started,
        });
    }

    /// Every new worker is ready: each takes over its slot, and the old ones drain.
    fn commit_reload(&mut self) {
        let Some(r) = self.reload.take() else {
            return;
        };
        for id in r.workers.keys() {
            if let Some(slot) = self.workers.get(id).map(|w| w.slot) {
                self.take_over(slot, *id);
            }
        }
        info!(
            "reload ({}) done in {} ms: {} worker{} with the current code; the old ones are draining",
            r.why,
            r.started.elapsed().as_millis(),
            r.workers.len(),
            if r.workers.len() == 1 { "" } else { "s" }
        );
    }

    /// A new worker failed: the reload's workers stop, the old ones go on serving.
    fn abandon_reload(&mut self) {
        let Some(r) = self.reload.take() else {
            return;
        };
        error!(
            "reload ({}) abandoned: a new worker failed (see above); the running workers go on serving the code they loaded",
            r.why
        );
        for id in r.workers.keys() {
            if let Some(slot) = self.workers.get(id).map(|w| w.slot) {
                if self.slots[slot].incoming == Some(*id) {
                    self.slots[slot].incoming = None;
                }
            }
            self.drain(*id);
        }
    }

    /// Every worker drains; the supervisor exits with `code` once all have exited.
    fn stop(&mut self, code: u8) {
        if self.stopping.is_some() {
            return;
        }
        self.reload = None;
        self.stopping = Some(Stopping {
            kill_at: Instant::now() + self.grace + EXIT_MARGIN,
            code,
        });
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        info!(workers = ids.len(), grace = ?self.grace, "stopping: every worker finishes the requests it has");
        for id in ids {
            self.drain(id);
        }
    }

    /// Draining workers still running past the shutdown grace (and a margin) are killed: a
    /// request stuck in Python for ever holds its worker, and only ending it frees the memory.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for w in self.workers.values_mut() {
            if w.kill_at.is_some_and(|at| at <= now) {
                w.kill_at = None;
                warn!(
                    "worker {} is still running {} s after it was told to drain (WFCGI_SHUTDOWN_GRACE_SECS plus {} s): killing it",
                    w.pid,
                    (self.grace + EXIT_MARGIN).as_secs(),
                    EXIT_MARGIN.as_secs()
                );
                signal(w.pid, libc::SIGKILL);
            }
        }
    }

    /// SIGUSR1: every worker logs the stacks of the requests it is running.
    fn ask_for_stacks(&self) {
        info!(
            "SIGUSR1: asking {} worker(s) for the stacks of their running requests",
            self.workers.len()
        );
        for w in self.workers.values() {
            signal(w.pid, libc::SIGUSR1);
        }
    }

    /// The grace is over: whatever still runs is killed.
    fn kill_remaining(&mut self) {
        for w in self.workers.values() {
            warn!(
                "worker {} did not exit within the shutdown grace: killing it",
                w.pid
            );
            signal(w.pid, libc::SIGKILL);
        }
        if let Some(stopping) = self.stopping.as_mut() {
            stopping.code = 1;
        }
    }
}

/// In the child, before exec: the inherited descriptors survive exec, and the worker dies
/// with the supervisor. Only async-signal-safe calls.
fn child_setup(keep: &[RawFd], parent: u32) -> io::Result<()> {
    for &fd in keep {
        // SAFETY: fcntl on descriptors this process holds open (the supervisor's sockets).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's parent-death signal.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // The supervisor died between fork and prctl: the signal will never come.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = parent;
    Ok(())
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory preconditions; the pid is our child's, not yet reaped
        // (its exit is handled on this thread, after which it is no longer asked).
        unsafe { libc::kill(pid, signal) };
    }
}

/// How a process ended, for the log: "exited with status 3", "was killed by signal SIGSEGV
/// (11, a crash: invalid memory access), core dumped".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(sig) = status.signal() else {
        return status.to_string();
    };
    let (name, meaning) = signal_name(sig);
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    match meaning {
        Some(meaning) => format!("was killed by signal {name} ({sig}, {meaning}){core}"),
        None => format!("was killed by signal {name} ({sig}){core}"),
    }
}

/// A signal's name, and what it usually means for a worker.
fn signal_name(sig: libc::c_int) -> (&'static str, Option<&'static str>) {
    match sig {
        libc::SIGSEGV => (
            "SIGSEGV",
            Some("a crash: invalid memory access, usually in a C extension"),
        ),
        libc::SIGBUS => ("SIGBUS", Some("a crash: bad memory access")),
        libc::SIGABRT => (
            "SIGABRT",
            Some("abort(): a failed assertion or a fatal error in native code"),
        ),
        libc::SIGFPE => ("SIGFPE", Some("a crash: arithmetic error")),
        libc::SIGILL => ("SIGILL", Some("a crash: illegal instruction")),
        libc::SIGKILL => (
            "SIGKILL",
            Some(
                "killed from outside: by a person, a script, or the kernel's out-of-memory killer",
            ),
        ),
        libc::SIGTERM => ("SIGTERM", None),
        libc::SIGINT => ("SIGINT", None),
        libc::SIGHUP => ("SIGHUP", None),
        libc::SIGQUIT => ("SIGQUIT", None),
        libc::SIGPIPE => ("SIGPIPE", None),
        libc::SIGUSR1 => ("SIGUSR1", None),
        libc::SIGUSR2 => ("SIGUSR2", None),
        libc::SIGALRM => ("SIGALRM", None),
        libc::SIGXCPU => ("SIGXCPU", Some("its CPU time limit was reached")),
        libc::SIGXFSZ => ("SIGXFSZ", Some("its file size limit was reached")),
        libc::SIGSYS => ("SIGSYS", Some("a forbidden system call")),
        _ => ("(unnamed)", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_described_with_the_signal_and_what_it_means() {
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal SIGKILL (9, killed from outside: by a person, a script, or the kernel's out-of-memory killer)"
        );
        // 0x80: the core-dump bit of a wait status.
        let segv = describe(ExitStatus::from_raw(libc::SIGSEGV | 0x80));
        assert!(
            segv.starts_with("was killed by signal SIGSEGV (11, a crash"),
            "{segv}"
        );
        assert!(segv.ends_with(", core dumped"), "{segv}");
    }
}
