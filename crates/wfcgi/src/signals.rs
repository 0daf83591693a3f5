//! When to stop: SIGTERM and SIGINT on Unix, Ctrl-C on Windows, and under IIS the event whose
//! handle IIS passes in `_FCGI_SHUTDOWN_EVENT_` (the decimal value of an inherited handle, as
//! libfcgi and PHP read it): IIS signals it when it wants the process to finish what it is
//! doing and exit (an app pool recycle), and kills it `signalBeforeTerminateSeconds` later.

#[cfg(unix)]
use tracing::error;
use tracing::{info, warn};

/// Exit status when a second signal cuts the drain short (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

/// Resolves when the process is asked to stop (SIGTERM, SIGINT / Ctrl-C). A second signal
/// exits at once, without waiting for the drain.
/// Installs the signal handlers now, before the first connection is accepted: a signal that
/// arrived before a lazily installed handler existed would kill the process outright instead of
/// draining it (seen in a test that signals right after its first replies). The future completes
/// on the first SIGTERM/SIGINT (Ctrl-C on Windows); a second one exits at once.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.recv().await;
        info!("shutdown requested: finishing in-flight requests (signal again to exit at once)");
        tokio::spawn(async move {
            signals.recv().await;
            warn!("second signal: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        });
    }
}

/// The shutdown signals' streams, registered when created.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    #[cfg(not(unix))]
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
    /// Set once by the thread waiting on IIS's shutdown event.
    #[cfg(windows)]
    iis: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                error!("cannot install signal handlers: stop wfcgi with SIGKILL");
                None
            }
        };
        Signals { streams }
    }

    #[cfg(windows)]
    fn install() -> Signals {
        Signals {
            ctrl_c: tokio::signal::windows::ctrl_c().ok(),
            iis: iis_shutdown_event::watch(),
        }
    }

    /// Waits for the next signal (for ever if none could be installed).
    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(windows)]
        {
            let ctrl_c = async {
                match &mut self.ctrl_c {
                    Some(c) => {
                        c.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let iis = async {
                let signalled = match &mut self.iis {
                    Some(rx) => rx.recv().await.is_some(),
                    None => false,
                };
                if !signalled {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = iis => {}
            }
        }
    }
}

#[cfg(windows)]
mod iis_shutdown_event {
    //! `_FCGI_SHUTDOWN_EVENT_`. All the Win32 calls of the binary are here.
    use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{WaitForSingleObject, INFINITE};

    pub(super) const VARIABLE: &str = "_FCGI_SHUTDOWN_EVENT_";

    /// Starts a thread that waits on the event named by `_FCGI_SHUTDOWN_EVENT_`, if set; the
    /// receiver gets one message when IIS signals it.
    pub(super) fn watch() -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
        let text = std::env::var(VARIABLE).ok()?;
        let Ok(value) = text.trim().parse::<usize>() else {
            tracing::warn!(
                "{VARIABLE} is {text:?}, not the decimal value of an event handle: IIS's \
                 shutdown requests cannot be seen (the process is stopped when IIS kills it)"
            );
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("wfcgi-iis-shutdown".into())
            .spawn(move || {
                // SAFETY: IIS made the handle inheritable and gave its value; waiting on a handle
                // value that is not an event fails (and is reported) rather than misbehaving.
                let waited = unsafe { WaitForSingleObject(value as HANDLE, INFINITE) };
                if waited == WAIT_OBJECT_0 {
                    tracing::info!("IIS signalled {VARIABLE}");
                    let _ = tx.send(());
                } else {
                    tracing::warn!(
                        "cannot wait on {VARIABLE} ({value}): {}",
                        std::io::Error::last_os_error()
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that waits on {VARIABLE}: {e}");
        }
        Some(rx)
    }
}

/// On SIGUSR1, logs every running request with its Python stack (Unix; a no-op elsewhere),
/// once `bridge` gives a bridge (stdin mode starts it at the first request). Runs for the
/// life of the runtime it is spawned on.
pub(crate) fn log_stacks_on_sigusr1(
    bridge: impl Fn() -> Option<std::sync::Arc<wsgi::Bridge>> + Send + 'static,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            warn!("cannot install the SIGUSR1 handler: stacks cannot be asked for");
            return;
        };
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                let Some(bridge) = bridge() else {
                    info!("stacks (SIGUSR1): the app has not started yet");
                    continue;
                };
                // Reading stacks waits for the GIL: off the runtime.
                let _ = tokio::task::spawn_blocking(move || bridge.log_running_stacks()).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = bridge;
}

/// SIGUSR1's default action ends the process; ignored until `log_stacks_on_sigusr1` installs
/// its handler (which replaces this, so processes started later get the default back).
#[cfg(unix)]
pub(crate) fn ignore_sigusr1_for_now() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
}
