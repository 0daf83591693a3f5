//! The settings table: one entry per setting, from which the command line (`cli`), `--help`,
//! resolution (`super::resolve`) and the reference table in docs/configuration.md
//! (`super::reference`) are all derived. Adding a setting is adding one entry here (and, when
//! it needs one, its `apply` function in `super::apply`).

use super::apply;
use super::{Resolution, SettingsError, Value};

/// One setting.
#[derive(Debug)]
pub(crate) struct Setting {
    /// The web.config appSetting and environment variable name (web.config matches any case).
    pub name: &'static str,
    /// The command-line flag, when there is one.
    pub flag: Option<Flag>,
    pub default: Default,
    /// One line for `--help`.
    pub help: &'static str,
    /// The "Meaning" column of docs/configuration.md (Markdown).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "read when tests generate the docs")
    )]
    pub doc: &'static str,
    /// The "wfastcgi compatibility" column of docs/configuration.md (Markdown).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "read when tests generate the docs")
    )]
    pub wfastcgi: &'static str,
    pub apply: Apply,
}

/// A long flag (`--threads N`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    /// With the dashes: `--threads`.
    pub long: &'static str,
    pub takes: Takes,
    /// Only `wfcgi serve` has it (listening is serve's business); other flags are global.
    pub serve_only: bool,
}

/// What a flag takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Takes {
    /// One value, shown in help as this name.
    Value(&'static str),
    /// Repeatable; the values are joined with `,` as the setting's text.
    Values(&'static str),
    /// No value: given means `true`.
    Switch,
}

/// A setting's default.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Default {
    /// A value, applied through `apply` like any other when nothing sets the setting: the
    /// default is written once, here, and always parses the way a user's value would.
    Value(&'static str),
    /// No value: what happens when the setting is unset, in words (Markdown).
    Text(&'static str),
}

impl Default {
    /// As `--help` shows it: plain text.
    pub(crate) fn text(&self) -> String {
        match self {
            Default::Value(text) => (*text).to_string(),
            Default::Text(text) => text.replace('`', ""),
        }
    }
}

/// How a value takes effect.
#[derive(Clone, Copy)]
pub(crate) enum Apply {
    /// Parses one value (the user's, else a `Default::Value`) into the resolution.
    Each(fn(&Value, &mut Resolution<'_>) -> Result<(), SettingsError>),
    /// Resolved together with others, by the named function in `super` (the handler, the venv
    /// and the ptvs_virtualenv_proxy mapping depend on each other; the app directory is needed
    /// before web.config can be read; RUST_LOG is read by logging).
    Rule(&'static str),
}

impl std::fmt::Debug for Apply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Apply::Each(_) => f.write_str("Each"),
            Apply::Rule(by) => write!(f, "Rule({by})"),
        }
    }
}

// Setting names, as wfastcgi spelled them (its own) or as wfcgi adds them (WFCGI_*).
pub(crate) const WSGI_HANDLER: &str = "WSGI_HANDLER";
pub(crate) const PYTHONPATH: &str = "PYTHONPATH";
pub(crate) const WSGI_LOG: &str = "WSGI_LOG";
pub(crate) const WSGI_RESTART_FILE_REGEX: &str = "WSGI_RESTART_FILE_REGEX";
pub(crate) const SCRIPT_NAME: &str = "SCRIPT_NAME";
pub(crate) const ALLOW_PATH_INFO: &str = "AllowPathInfoForScriptMappings";
pub(crate) const WFCGI_DEBUGPY: &str = "WFCGI_DEBUGPY";
pub(crate) const WFCGI_DEBUGPY_WAIT: &str = "WFCGI_DEBUGPY_WAIT";
pub(crate) const WSGI_PTVSD_SECRET: &str = "WSGI_PTVSD_SECRET";
pub(crate) const WSGI_PTVSD_ADDRESS: &str = "WSGI_PTVSD_ADDRESS";
pub(crate) const APPINSIGHTS: &str = "APPINSIGHTS_INSTRUMENTATIONKEY";
pub(crate) const ALT_HANDLER: &str = "WSGI_ALT_VIRTUALENV_HANDLER";
pub(crate) const ALT_ACTIVATE_THIS: &str = "WSGI_ALT_VIRTUALENV_ACTIVATE_THIS";
pub(crate) const WFCGI_APP_DIR: &str = "WFCGI_APP_DIR";
pub(crate) const WFCGI_VENV: &str = "WFCGI_VENV";
pub(crate) const WFCGI_THREADS: &str = "WFCGI_THREADS";
pub(crate) const WFCGI_QUEUE_LEN: &str = "WFCGI_QUEUE_LEN";
pub(crate) const WFCGI_DEBUG: &str = "WFCGI_DEBUG";
pub(crate) const WFCGI_MULTIPROCESS: &str = "WFCGI_MULTIPROCESS";
pub(crate) const WFCGI_MAX_BODY_BYTES: &str = "WFCGI_MAX_BODY_BYTES";
pub(crate) const WFCGI_SPOOL_THRESHOLD_BYTES: &str = "WFCGI_SPOOL_THRESHOLD_BYTES";
pub(crate) const WFCGI_SHUTDOWN_GRACE_SECS: &str = "WFCGI_SHUTDOWN_GRACE_SECS";
pub(crate) const WFCGI_REQUEST_TIMEOUT_SECS: &str = "WFCGI_REQUEST_TIMEOUT_SECS";
pub(crate) const WFCGI_BODY_TIMEOUT_SECS: &str = "WFCGI_BODY_TIMEOUT_SECS";
pub(crate) const WFCGI_PROCESSES: &str = "WFCGI_PROCESSES";
pub(crate) const WFCGI_RELOAD: &str = "WFCGI_RELOAD";
pub(crate) const WFCGI_MAX_REQUESTS: &str = "WFCGI_MAX_REQUESTS";
pub(crate) const WFCGI_MAX_REQUESTS_JITTER: &str = "WFCGI_MAX_REQUESTS_JITTER";
pub(crate) const WFCGI_MAX_RSS_BYTES: &str = "WFCGI_MAX_RSS_BYTES";
pub(crate) const WFCGI_LOG_LEVEL: &str = "WFCGI_LOG_LEVEL";
pub(crate) const WFCGI_ACCESS_LOG: &str = "WFCGI_ACCESS_LOG";
pub(crate) const WFCGI_LISTEN: &str = "WFCGI_LISTEN";
pub(crate) const WFCGI_SOCKET_MODE: &str = "WFCGI_SOCKET_MODE";
pub(crate) const WFCGI_MAX_CONNECTIONS: &str = "WFCGI_MAX_CONNECTIONS";
pub(crate) const WFCGI_MAX_REQUESTS_PER_CONNECTION: &str = "WFCGI_MAX_REQUESTS_PER_CONNECTION";
pub(crate) const WFCGI_MAX_PARAMS_BYTES: &str = "WFCGI_MAX_PARAMS_BYTES";
pub(crate) const WFCGI_PARAMS_TIMEOUT_SECS: &str = "WFCGI_PARAMS_TIMEOUT_SECS";
pub(crate) const WFCGI_IDLE_TIMEOUT_SECS: &str = "WFCGI_IDLE_TIMEOUT_SECS";
pub(crate) const WFCGI_SCHED_POLICY: &str = "WFCGI_SCHED_POLICY";
/// libfcgi's name: the peers allowed to connect over TCP.
pub(crate) const FCGI_WEB_SERVER_ADDRS: &str = "FCGI_WEB_SERVER_ADDRS";
pub(crate) const RUST_LOG: &str = "RUST_LOG";

const fn flag(long: &'static str, value: &'static str) -> Option<Flag> {
    Some(Flag {
        long,
        takes: Takes::Value(value),
        serve_only: false,
    })
}

const fn switch(long: &'static str) -> Option<Flag> {
    Some(Flag {
        long,
        takes: Takes::Switch,
        serve_only: false,
    })
}

/// wfastcgi's two ptvsd settings, both obsolete alike.
const fn obsolete_ptvsd(name: &'static str) -> Setting {
    Setting {
        name,
        flag: None,
        default: Default::Text("none"),
        help: "obsolete (ptvsd remote debugging): WSGI_PTVSD_ADDRESS becomes WFCGI_DEBUGPY, with a warning; the secret is ignored",
        doc: "ptvsd is obsolete; its successor is debugpy. `WSGI_PTVSD_ADDRESS` (`host:port`) is taken as `WFCGI_DEBUGPY` when that is not set, with a warning; `WSGI_PTVSD_SECRET` is ignored with a warning (debugpy has no secret: listen on 127.0.0.1 and tunnel).",
        wfastcgi: "wfastcgi enabled ptvsd remote debugging.",
        apply: Apply::Each(apply::obsolete_ptvsd),
    }
}

/// Every setting, in the order `--help` and docs/configuration.md list them and in which they
/// are applied (so in which their warnings are logged).
pub(crate) const SETTINGS: &[Setting] = &[
    Setting {
        name: WSGI_HANDLER,
        flag: flag("--handler", "DOTTED"),
        default: Default::Text("the built-in demo app"),
        help: "the WSGI app, as a dotted path (myapp.app, django.core.wsgi.get_wsgi_application()) or module:attr",
        doc: "The WSGI app: `myapp.app`, `django.core.wsgi.get_wsgi_application()` (a trailing `()` calls it), or `module:attr`.",
        wfastcgi: "Same resolution: the longest importable module prefix, then attributes. With nothing set, wfastcgi failed with \"WSGI_HANDLER env var must be set\"; wfcgi serves a demo page saying what to set (and logs it). An empty value is an error.",
        apply: Apply::Rule("resolve_handler_and_venv"),
    },
    Setting {
        name: WFCGI_APP_DIR,
        flag: flag("--app-dir", "DIR"),
        default: Default::Text("`APPL_PHYSICAL_PATH` of the first request (stdin mode), else the current directory"),
        help: "the app directory: web.config is read there, the process chdirs there, and it is sys.path[0]",
        doc: "Where web.config is read; the process changes to it; it is `sys.path[0]`.",
        wfastcgi: "wfastcgi used `APPL_PHYSICAL_PATH` only. Cannot be set in web.config (it is where web.config is).",
        apply: Apply::Rule("app_dir"),
    },
    Setting {
        name: WFCGI_VENV,
        flag: flag("--venv", "PATH"),
        default: Default::Text("none: the Python wfcgi was built with"),
        help: "the virtualenv: its folder, its python executable, or an old virtualenv's activate_this.py",
        doc: "The virtualenv: its folder, its `python`/`python.exe`, or an old virtualenv's `activate_this.py`. Must be of the same Python minor version wfcgi was built with.",
        wfastcgi: "New. Replaces `ptvs_virtualenv_proxy` (below).",
        apply: Apply::Rule("resolve_handler_and_venv"),
    },
    Setting {
        name: PYTHONPATH,
        flag: flag("--python-path", "PATHS"),
        default: Default::Text("none"),
        help: "extra sys.path entries, appended: %VAR% expanded, separated by ';' (and ':' on Unix), relative entries taken from the app directory",
        doc: "Entries appended to `sys.path`. `%NAME%` is replaced by the variable from appSettings or the environment (an unset one by nothing, with a warning). Separated by `;`; on Unix also by `:`. Empty entries are dropped; relative ones are taken from the app directory.",
        wfastcgi: "Same expansion and splitting (`:` on Unix is new). An *inherited* `PYTHONPATH` environment variable is left to Python itself, as it always was.",
        apply: Apply::Each(apply::python_path),
    },
    Setting {
        name: WFCGI_THREADS,
        flag: flag("--threads", "N"),
        default: Default::Value("32"),
        help: "the most Python threads serving at once (1-1024)",
        doc: "The most Python threads serving at once (1-1024). Another thread is woken only when a request waits behind threads that are blocked (a database call, a sleep, a slow upload), so a CPU-bound app runs on about one thread whatever the number, and an I/O-bound one on as many as it has requests blocked. Raise it when more requests than this block at once. At shutdown the log's `Python threads:` line (info level) says how they served: requests started, wakes, and how long requests waited in the queue for a thread (mean and most).",
        wfastcgi: "New: wfastcgi ran one request at a time per process.",
        apply: Apply::Each(apply::threads),
    },
    Setting {
        name: WFCGI_QUEUE_LEN,
        flag: flag("--queue-len", "N"),
        default: Default::Value("1024"),
        help: "requests waiting for a free Python thread before new ones get 503",
        doc: "Requests waiting for a free thread (1-1000000); beyond, 503.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::queue_len),
    },
    Setting {
        name: WFCGI_DEBUG,
        flag: switch("--debug-responses"),
        default: Default::Value("false"),
        help: "show tracebacks and start-up errors in responses (never in production: visitors see them)",
        doc: "Tracebacks and start-up errors in responses. Visitors see them: development only. The log always has them.",
        wfastcgi: "wfastcgi always sent tracebacks (IIS showed them with `stderrMode=ReturnStdErrIn500`). wfcgi hides them unless asked.",
        apply: Apply::Each(apply::debug),
    },
    Setting {
        name: WFCGI_MULTIPROCESS,
        flag: switch("--multiprocess"),
        default: Default::Value("false"),
        help: "tell the app (wsgi.multiprocess) that several processes serve it (mod_fcgid, a process manager); requests from IIS always say so",
        doc: "`wsgi.multiprocess` for requests not from IIS (set it under mod_fcgid or a process manager). Requests from IIS always say `True`.",
        wfastcgi: "wfastcgi always said `True`.",
        apply: Apply::Each(apply::multiprocess),
    },
    Setting {
        name: WFCGI_MAX_BODY_BYTES,
        flag: flag("--max-body-bytes", "BYTES"),
        default: Default::Value("none"),
        help: "request bodies larger than this get 413; bytes, or with K/M/G (binary) suffix, or 'none' (no limit)",
        doc: "Larger request bodies get 413. `10M`, `512K`, `1G` (x1024), plain bytes, or `none` (no limit). `0` is refused.",
        wfastcgi: "New (IIS's `maxAllowedContentLength` still applies in front).",
        apply: Apply::Each(apply::max_body_bytes),
    },
    Setting {
        name: WFCGI_SPOOL_THRESHOLD_BYTES,
        flag: flag("--spool-threshold-bytes", "BYTES"),
        default: Default::Value("1M"),
        help: "request bodies larger than this are spooled to a temporary file as they arrive",
        doc: "Request bodies larger than this go to a temporary file as they arrive instead of memory.",
        wfastcgi: "wfastcgi held every body in memory.",
        apply: Apply::Each(apply::spool_threshold),
    },
    Setting {
        name: WFCGI_SHUTDOWN_GRACE_SECS,
        flag: flag("--shutdown-grace-secs", "SECS"),
        default: Default::Value("30"),
        help: "on shutdown, seconds to let running requests finish",
        doc: "On SIGTERM/SIGINT, how long running requests may finish (0-3600).",
        wfastcgi: "New. Match IIS's `signalBeforeTerminateSeconds`.",
        apply: Apply::Each(apply::shutdown_grace),
    },
    Setting {
        name: WFCGI_REQUEST_TIMEOUT_SECS,
        flag: flag("--request-timeout-secs", "SECS"),
        default: Default::Value("0"),
        help: "a request running longer has its Python stack logged and gets 504 (its worker is replaced under --processes); 0: no limit",
        doc: "A request still running after this many seconds has the Python stack of the thread running it logged (every frame, file:line and the source line) with its method, path and age. The client gets `504 Gateway Timeout` if nothing of the response was sent yet; otherwise the connection is closed, so the response is seen cut short, not complete. A Python thread cannot be stopped, so under `WFCGI_PROCESSES` its worker is recycled: a fresh one takes new work and the stuck one is ended after `WFCGI_SHUTDOWN_GRACE_SECS`. Under IIS the stuck thread holds the process's one connection: after the 504 the process exits (status 3) and IIS starts a fresh one. `0` (the default) sets no limit: what is too long is the app's to say (a report may take minutes). Set it a little below the web server's own timeout (nginx's `fastcgi_read_timeout`, 60 s; IIS's `activityTimeout`, 30 s) so that the log shows where the app hung before the web server gives up. SIGUSR1 logs the stacks of all running requests, with or without this setting.",
        wfastcgi: "New (uWSGI's harakiri, gunicorn's timeout, with the Python stack).",
        apply: Apply::Each(apply::request_timeout),
    },
    Setting {
        name: WFCGI_BODY_TIMEOUT_SECS,
        flag: flag("--body-timeout-secs", "SECS"),
        default: Default::Value("60"),
        help: "the longest one wsgi.input read waits for the body it asked for; past it the read raises TimeoutError and the connection closes (0: no limit)",
        doc: "The longest one `wsgi.input` read (`read()`, `readline()`, a line of iteration) waits for the body it asked for. Past it the read raises `TimeoutError`, the connection is closed (there is no one to answer: the client stopped sending), and the Python thread is free once the app returns. Measured per read rather than between pieces, so that a client trickling a byte a second cannot hold a thread: a web server that buffers bodies (nginx by default) never comes near it. `60` (the default) is nginx's `client_body_timeout`; `0` sets no limit.",
        wfastcgi: "New (IIS's `minBytesPerSecond` guards the client side).",
        apply: Apply::Each(apply::body_timeout),
    },
    Setting {
        name: WFCGI_PROCESSES,
        flag: Some(Flag {
            long: "--processes",
            takes: Takes::Value("N"),
            serve_only: true,
        }),
        default: Default::Text("none: one process, no supervisor"),
        help: "run N worker processes under a supervisor that holds no Python: a worker that dies is replaced at once, recycling and SIGHUP reloads need it (1-256)",
        doc: "Worker processes (1-256) under a supervisor that holds no Python and opens the listening sockets once. A worker that dies, however it dies, is replaced at once and the log says how it died; one that keeps dying before its first request is retried with backoff, then the supervisor stops with an error. Needed for `WFCGI_MAX_REQUESTS`, `WFCGI_MAX_RSS_BYTES` and SIGHUP reloads. Unset, `wfcgi serve` is one process, as before: the default stays the simplest thing, and `--processes 1` already gives crash recovery. Also for the listening socket a web server passes on fd 0 (mod_fcgid's `FcgidInitialEnv WFCGI_PROCESSES 2`, lighttpd, spawn-fcgi): the supervisor serves it as it serves `--listen`. Unix only; under IIS, IIS manages the processes (`maxInstances`), and the setting is ignored with a warning.",
        wfastcgi: "New (under IIS, the FastCGI `maxInstances` setting).",
        apply: Apply::Each(apply::processes),
    },
    Setting {
        name: WFCGI_RELOAD,
        flag: Some(Flag {
            long: "--reload",
            takes: Takes::Switch,
            serve_only: true,
        }),
        default: Default::Value("false"),
        help: "reload when app files change (the WSGI_RESTART_FILE_REGEX pattern: .py and .config files by default): new workers load the new code, then the old ones drain; implies --processes 1; present = on, unless 0/false/no/off",
        doc: "Reload when a file in the app directory whose path matches `WSGI_RESTART_FILE_REGEX` (by default `.py` and `.config` files) changes, after 200 ms without further changes: as SIGHUP does, new workers start with the new code, and once each has loaded the app the old ones finish their requests and exit, handing their kept-alive connections over. No request fails or waits for an import. `__pycache__`, virtualenvs and the log file are ignored. Implies `--processes 1` when no process count is given. An explicitly set `WSGI_RESTART_FILE_REGEX` turns it on under `WFCGI_PROCESSES` too. Off by default: production deploys reload on purpose (SIGHUP).",
        wfastcgi: "New for `wfcgi serve` (wfastcgi exited on a change under IIS, which wfcgi also does there).",
        apply: Apply::Each(apply::reload),
    },
    Setting {
        name: WFCGI_MAX_REQUESTS,
        flag: flag("--max-requests", "N"),
        default: Default::Value("0"),
        help: "with --processes: a worker is replaced after this many requests (0: never)",
        doc: "With `WFCGI_PROCESSES`: after this many requests a worker is recycled. Its replacement starts and loads the app first; the old one then stops taking connections, finishes what it has, closes kept-alive connections only between requests and exits. `0` (the default) never recycles: a well-behaved app needs no recycling, and a leaking one is better caught by `WFCGI_MAX_RSS_BYTES`.",
        wfastcgi: "New (under IIS, `instanceMaxRequests`).",
        apply: Apply::Each(apply::max_requests),
    },
    Setting {
        name: WFCGI_MAX_REQUESTS_JITTER,
        flag: flag("--max-requests-jitter", "N"),
        default: Default::Value("0"),
        help: "with --max-requests: each worker's limit is raised by a random 0..=N, so that workers do not all recycle at once",
        doc: "Adds a random 0 to N to each worker's `WFCGI_MAX_REQUESTS`, so that workers started together do not recycle together.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::max_requests_jitter),
    },
    Setting {
        name: WFCGI_MAX_RSS_BYTES,
        flag: flag("--max-rss-bytes", "SIZE"),
        default: Default::Value("none"),
        help: "with --processes: a worker whose resident memory exceeds this (sampled each second) is recycled; bytes or K/M/G, or 'none'",
        doc: "With `WFCGI_PROCESSES`: a worker whose resident set size exceeds this (sampled every second) is recycled as with `WFCGI_MAX_REQUESTS`. `512M`, `1G` (x1024), or `none` (the default: what an app needs is the app's business).",
        wfastcgi: "New (under IIS, the app pool's private memory limit).",
        apply: Apply::Each(apply::max_rss_bytes),
    },
    Setting {
        name: SCRIPT_NAME,
        flag: flag("--script-name", "PREFIX"),
        default: Default::Text("none"),
        help: "mount prefix: moved from PATH_INFO to SCRIPT_NAME when PATH_INFO starts with it (case-insensitive)",
        doc: "A mount prefix: for requests from IIS, moved from `PATH_INFO` to `SCRIPT_NAME` when `PATH_INFO` starts with it (case-insensitive). Must start with `/`; a trailing `/` is dropped.",
        wfastcgi: "Same.",
        apply: Apply::Each(apply::script_name),
    },
    Setting {
        name: ALLOW_PATH_INFO,
        flag: switch("--allow-path-info-for-script-mappings"),
        default: Default::Value("false"),
        help: "keep the SCRIPT_NAME IIS sends (set when IIS's allowPathInfo is on); present = on, unless 0/false/no/off",
        doc: "Keep the `SCRIPT_NAME` IIS sends instead of blanking it (use when the handler has `allowPathInfo=\"true\"`). Present with an empty value = on; `0`/`false`/`no`/`off` = off.",
        wfastcgi: "wfastcgi looked only at presence; an explicit `false` now means off.",
        apply: Apply::Each(apply::allow_path_info),
    },
    Setting {
        name: WSGI_LOG,
        flag: flag("--log-file", "PATH"),
        default: Default::Text("none: stderr only"),
        help: "append log lines (UTF-8) to this file; under IIS the only place start-up errors can be read",
        doc: "Log lines appended (UTF-8) to this file, folder created if missing. Under IIS the only place to read anything, including start-up errors. In stdin mode, lines logged before web.config is read (up to 256) are written once the file is known.",
        wfastcgi: "Same name and meaning; wfcgi's lines are `timestamp LEVEL target: message`. Python's `print()` output is logged too (targets `python.stdout`, `python.stderr`).",
        apply: Apply::Each(apply::log_file),
    },
    Setting {
        name: WFCGI_LOG_LEVEL,
        flag: flag("--log-level", "LEVEL"),
        default: Default::Text("`RUST_LOG`, else `info`"),
        help: "error, warn, info, debug, trace, or a filter such as info,python.stdout=off",
        doc: "`error`, `warn`, `info`, `debug`, `trace`, or a filter: `info,python.stdout=off`, `warn,wfcgi=debug`. A bare word must be a level.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::log_level),
    },
    Setting {
        name: WFCGI_SCHED_POLICY,
        flag: flag("--sched-policy", "POLICY"),
        default: Default::Value("batch"),
        help: "Linux scheduling policy of the server's threads: batch (their wake-ups do not preempt the web server) or normal (as the process was started)",
        doc: "Linux only (elsewhere ignored). `batch`: a process started with the normal policy makes its threads `SCHED_BATCH`: the same share of the CPU as any thread, but their wake-ups do not preempt the thread running on that CPU (the web server, the thread holding the GIL), which served 1.3-1.8x the requests a second behind nginx on two cores. Processes the app starts inherit it. A policy the process was started with (`chrt`, systemd's `CPUSchedulingPolicy=`) is kept. `normal`: the policy is left as the process was started; the normal policy's preemptions shorten the slowest requests when the machine's cores are all busy with other CPU-bound work (docs/decisions/0014).",
        wfastcgi: "New.",
        apply: Apply::Each(apply::sched_policy),
    },
    Setting {
        name: WFCGI_ACCESS_LOG,
        flag: flag("--access-log", "FORM"),
        default: Default::Value("off"),
        help: "one line per request (time, request id, method, path, status, body bytes, duration, pid) in the log: off, text, or json (a JSON object a line)",
        doc: "One line per request in the log (stderr and `WSGI_LOG`), whatever `WFCGI_LOG_LEVEL` says: `text` gives the log's usual line form, its time and `request{id=...}` then `GET /path?query 200 13 0.42ms pid=1234`; `json` gives one JSON object a line, `{\"time\":\"2026-12-03T14:00:00.123Z\",\"id\":\"...\",\"method\":\"GET\",\"path\":\"/path?query\",\"status\":200,\"bytes\":13,\"duration_ms\":0.421,\"pid\":1234}`, for log shippers. The id is the one on error pages (`X-Request-Id`). `off` (the default): IIS and nginx keep access logs of their own.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::access_log),
    },
    Setting {
        name: WFCGI_LISTEN,
        flag: Some(Flag {
            long: "--listen",
            takes: Takes::Values("ADDR"),
            serve_only: true,
        }),
        default: Default::Value("127.0.0.1:9000"),
        help: "address to listen on (HOST:PORT, [IPv6]:PORT or unix:/path), repeatable; in the setting, separated by ','; the default is loopback only, so a first run exposes nothing",
        doc: "`host:port`, `[ipv6]:port`, or `unix:/path/to.sock`; in the setting, several separated by `,`. The default is loopback only, so that a first run exposes nothing.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::listen),
    },
    Setting {
        name: WFCGI_SOCKET_MODE,
        flag: Some(Flag {
            long: "--socket-mode",
            takes: Takes::Value("MODE"),
            serve_only: true,
        }),
        default: Default::Text("the umask's"),
        help: "permissions of Unix socket files created by --listen, in octal (0660)",
        doc: "Octal permissions of Unix socket files created by `--listen` (`0660`: the web server's group may connect).",
        wfastcgi: "New.",
        apply: Apply::Each(apply::socket_mode),
    },
    Setting {
        name: WFCGI_MAX_CONNECTIONS,
        flag: flag("--max-connections", "N"),
        default: Default::Value("1024"),
        help: "FastCGI connections open at once; more wait in the listen backlog",
        doc: "FastCGI connections open at once (1-1000000); more wait in the listen backlog (never unbounded memory). Also answered as `FCGI_MAX_CONNS` to `FCGI_GET_VALUES`. On Unix, `wfcgi serve` raises its open-files soft limit (`ulimit -n`) to this plus 256 if it is lower, up to the hard limit, and warns with the fix when the hard limit is lower still; a process serving the socket on fd 0 does the same for the default 1,024, which is what its server uses.",
        wfastcgi: "New (wfastcgi served one).",
        apply: Apply::Each(apply::max_connections),
    },
    Setting {
        name: WFCGI_MAX_REQUESTS_PER_CONNECTION,
        flag: flag("--max-requests-per-connection", "N"),
        default: Default::Value("64"),
        help: "requests in progress on one multiplexed connection; one more is refused with FCGI_OVERLOADED",
        doc: "Requests in progress on one multiplexed connection (1-65535; nginx and IIS use one at a time); one more is refused with `FCGI_OVERLOADED` (`FCGI_CANT_MPX_CONN` when 1).",
        wfastcgi: "New.",
        apply: Apply::Each(apply::max_requests_per_connection),
    },
    Setting {
        name: WFCGI_MAX_PARAMS_BYTES,
        flag: flag("--max-params-bytes", "BYTES"),
        default: Default::Value("256K"),
        help: "bytes of FastCGI params (CGI variables and headers) one request may send; more is refused with FCGI_OVERLOADED",
        doc: "Bytes of FastCGI params (CGI variables and request headers) one request may send, 1K to 64M; more is refused with `FCGI_OVERLOADED` and a log line.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::max_params_bytes),
    },
    Setting {
        name: WFCGI_PARAMS_TIMEOUT_SECS,
        flag: flag("--params-timeout-secs", "SECS"),
        default: Default::Value("30"),
        help: "seconds a request's params may take to arrive before its connection is closed",
        doc: "Seconds (1-3600) from a request's BEGIN_REQUEST until its params are complete; past it the connection is closed and logged.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::params_timeout),
    },
    Setting {
        name: WFCGI_IDLE_TIMEOUT_SECS,
        flag: flag("--idle-timeout-secs", "SECS"),
        default: Default::Value("300"),
        help: "seconds a connection with no request in progress stays open (0: for ever); never applied to the connection inherited on fd 0",
        doc: "A connection with no request in progress (between requests, or stuck inside an unfinished record) is closed after this long (0-86400); 0 keeps it for ever. Never applied to the connection inherited on fd 0 (IIS's pipe), whose close would end the process. Web servers drop idle keepalive connections sooner (nginx after 60 s).",
        wfastcgi: "New.",
        apply: Apply::Each(apply::idle_timeout),
    },
    Setting {
        name: FCGI_WEB_SERVER_ADDRS,
        flag: None,
        default: Default::Text("none (any peer)"),
        help: "comma-separated IP addresses allowed to connect over TCP (libfcgi's variable); others are refused and logged",
        doc: "Comma-separated IP addresses allowed to connect over TCP (libfcgi's variable); other peers are refused with a log line.",
        wfastcgi: "New (libfcgi convention).",
        apply: Apply::Each(apply::web_server_addrs),
    },
    Setting {
        name: WSGI_RESTART_FILE_REGEX,
        flag: None,
        default: Default::Value(r".*((\.py)|(\.config))$"),
        help: "restart when a file whose path (relative to the app directory) matches changes: the request in progress finishes, then the process exits for IIS to start a fresh one; empty turns it off",
        doc: "Under IIS (`wfcgi` started on a named pipe or socket, on Windows), a change to a file whose path relative to the app directory matches (Rust regex syntax, anchored at the start like `re.match`) makes wfcgi finish the requests in progress and exit 0, and IIS starts a fresh process for the next request. Changes within 200 ms count as one. `__pycache__`, any virtualenv (a folder with `pyvenv.cfg`) and the log file are ignored. Empty turns it off. On Unix's fd-0 mode (mod_fcgid) only an explicitly set value applies. Under `wfcgi serve` an explicit value drives reloads when there are worker processes (`WFCGI_PROCESSES`, `--reload`), with nothing exiting; in one process it is ignored with a warning, since nothing would start wfcgi again.",
        wfastcgi: "wfastcgi exited at once on a match, killing requests in flight; wfcgi lets them finish. Look-around and back-references are not accepted.",
        apply: Apply::Each(apply::restart_file_regex),
    },
    Setting {
        name: ALT_HANDLER,
        flag: None,
        default: Default::Text("none"),
        help: "the real handler when WSGI_HANDLER is ptvs_virtualenv_proxy.get_virtualenv_handler() or get_venv_handler()",
        doc: "When `WSGI_HANDLER` is `ptvs_virtualenv_proxy.get_virtualenv_handler()` or `ptvs_virtualenv_proxy.get_venv_handler()`, the handler actually served. Required then; ignored (with a warning) otherwise.",
        wfastcgi: "Same effect; `ptvs_virtualenv_proxy.py` itself is not needed.",
        apply: Apply::Rule("resolve_handler_and_venv"),
    },
    Setting {
        name: ALT_ACTIVATE_THIS,
        flag: None,
        default: Default::Text("none"),
        help: "with the ptvs_virtualenv_proxy handler: the venv's activate_this.py or python.exe (used as --venv)",
        doc: "With the proxy handler: the venv's `activate_this.py` or `python.exe`, used as `--venv`. `--venv` / `WFCGI_VENV` win over it (with a warning). Without either, a warning and no venv.",
        wfastcgi: "Same.",
        apply: Apply::Rule("resolve_handler_and_venv"),
    },
    Setting {
        name: WFCGI_DEBUGPY,
        flag: flag("--debugpy", "[HOST:]PORT"),
        default: Default::Text("none"),
        help: "listen for a debugger (debugpy, installed in the venv) on this port, 127.0.0.1 unless a host is given",
        doc: "The embedded interpreter listens for a debugger through debugpy (`pip install debugpy` in the app's venv) once the venv is active, before the app is loaded: attach VS Code's \"Python: Remote Attach\" (or any DAP client) to this host and port. `5678` listens on 127.0.0.1 only; `0.0.0.0:5678` on every interface (debugpy has no authentication: tunnel instead where you can). Without debugpy in the venv, or with the port taken, the log says so and the app runs without a debugger. Under `WFCGI_PROCESSES` the worker of the first slot listens (one port, one process), and the log names it.",
        wfastcgi: "The successor of `WSGI_PTVSD_SECRET` / `WSGI_PTVSD_ADDRESS`.",
        apply: Apply::Each(apply::debugpy),
    },
    Setting {
        name: WFCGI_DEBUGPY_WAIT,
        flag: switch("--debugpy-wait"),
        default: Default::Value("false"),
        help: "with --debugpy: wait for the debugger to attach before the first request; present = on, unless 0/false/no/off",
        doc: "With `WFCGI_DEBUGPY`: start-up waits for a debugger to attach, so that a breakpoint in the first request (or in the app's import) is hit.",
        wfastcgi: "New.",
        apply: Apply::Each(apply::debugpy_wait),
    },
    obsolete_ptvsd(WSGI_PTVSD_SECRET),
    obsolete_ptvsd(WSGI_PTVSD_ADDRESS),
    Setting {
        name: APPINSIGHTS,
        flag: None,
        default: Default::Text("none"),
        help: "deprecated Application Insights wrapper: ignored with a warning",
        doc: "Ignored with a warning.",
        wfastcgi: "wfastcgi wrapped the app in the deprecated Application Insights middleware; use OpenTelemetry middleware in the app.",
        apply: Apply::Each(apply::obsolete_appinsights),
    },
    Setting {
        name: RUST_LOG,
        flag: None,
        default: Default::Text("none"),
        help: "log filter when --log-level / WFCGI_LOG_LEVEL are not set",
        doc: "Log filter when `--log-level` / `WFCGI_LOG_LEVEL` are not set.",
        wfastcgi: "",
        apply: Apply::Rule("logging"),
    },
];

/// The entry of a setting name; every name used in this crate has one.
pub(crate) fn setting(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no entry for setting {name} in the settings table"))
}

/// The default text of a setting with a `Default::Value` (the example in its error messages).
pub(crate) fn default_value(name: &str) -> &'static str {
    match setting(name).default {
        Default::Value(text) => text,
        Default::Text(_) => panic!("setting {name} has no default value"),
    }
}
