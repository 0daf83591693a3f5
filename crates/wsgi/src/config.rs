//! What the binary hands the bridge: every setting already resolved (flags over web.config
//! appSettings over the inherited environment). The bridge reads no configuration itself.

use std::path::PathBuf;
use std::time::Duration;

/// Where a setting's value came from, so that an error can name it the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// A command-line flag, e.g. `--handler`.
    Flag(&'static str),
    /// An environment variable or a web.config appSetting of this name.
    Setting(String),
    /// Nothing configured: the built-in default.
    Default,
}

impl std::fmt::Display for SettingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingSource::Flag(flag) => write!(f, "{flag}"),
            SettingSource::Setting(name) => write!(f, "{name}"),
            SettingSource::Default => write!(f, "(default)"),
        }
    }
}

/// The virtualenv to run in, in whichever form the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenvSetting {
    /// The venv folder, its interpreter (`bin/python`, `Scripts\python.exe`), or an old
    /// virtualenv's `activate_this.py`.
    pub path: PathBuf,
    pub source: SettingSource,
}

/// The WSGI handler to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSetting {
    /// Dotted path (`app.application`, `django.core.wsgi.get_wsgi_application()`) or
    /// `module:attr`.
    pub path: String,
    pub source: SettingSource,
}

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `None`: serve the built-in demo app (and say so in the log).
    pub handler: Option<HandlerSetting>,
    /// wfastcgi's `WSGI_ALT_VIRTUALENV_HANDLER`: loaded instead when `handler` is
    /// `ptvs_virtualenv_proxy.get_virtualenv_handler()` or `...get_venv_handler()`.
    pub alt_handler: Option<HandlerSetting>,
    pub venv: Option<VenvSetting>,
    /// The app directory: the process chdirs here and it is `sys.path[0]`.
    pub app_dir: PathBuf,
    /// Extra `sys.path` entries (already `%VAR%`-expanded and split on `;`), appended in order.
    pub python_path: Vec<PathBuf>,
    /// The most Python threads serving at once. Default 32. More are woken only for requests
    /// queued behind blocked ones (`pool`), so a CPU-bound app runs on about one whatever the
    /// count.
    pub threads: usize,
    /// Requests waiting for a free thread before new ones are refused with 503. Default 1024.
    pub queue_len: usize,
    /// Show tracebacks and handler-loading errors in responses (never on by default: visitors
    /// must not see them). The log always has them.
    pub debug_responses: bool,
    /// Request bodies above this size are spooled to a temporary file as they arrive. 1 MiB.
    pub spool_threshold: usize,
    /// Bodies above this answer 413 (`None`: no limit). Default `None`.
    pub max_body_bytes: Option<u64>,
    /// wfastcgi's `SCRIPT_NAME` appSetting: a prefix moved from PATH_INFO to SCRIPT_NAME for
    /// requests that come from IIS.
    pub script_name: Option<String>,
    /// wfastcgi's `AllowPathInfoForScriptMappings`: keep IIS's SCRIPT_NAME.
    pub allow_path_info_for_script_mappings: bool,
    /// `wsgi.multiprocess` for requests not from IIS: set it when several wfcgi processes serve
    /// the same app (mod_fcgid, a process manager). Requests from IIS always say `True`: IIS
    /// starts up to `maxInstances` processes per application. Default `false`.
    pub multiprocess: bool,
    /// Run during shutdown of the pool: how long to wait for running requests.
    pub shutdown_grace: Duration,
    /// A request running longer is logged with its Python stack and answered 504 (or its
    /// connection closed, if its response had begun). `None`: no limit (the default).
    pub request_timeout: Option<Duration>,
    /// The longest one `wsgi.input` read waits for the body it asked for; past it the read
    /// raises `TimeoutError` and the connection is closed. Default 60 s; `None`: no limit.
    pub body_timeout: Option<Duration>,
    /// One line per request (`AccessLog::Text` or `Json`), through tracing. Default off: IIS
    /// and nginx keep their own.
    pub access_log: AccessLog,
    /// Listen for a debugger (debugpy, in the venv) once the interpreter is up.
    pub debugpy: Option<Debugpy>,
}

/// `WFCGI_DEBUGPY`: where debugpy listens, and whether to wait for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debugpy {
    pub host: String,
    pub port: u16,
    /// Wait for a debugger to attach before the first request (`WFCGI_DEBUGPY_WAIT`).
    pub wait: bool,
    /// The setting as the user wrote it, for messages.
    pub described: String,
}

/// The access log's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    #[default]
    Off,
    /// A tracing event (target `wfcgi::access`) in the log's usual line form.
    Text,
    /// A JSON object per line (target `wfcgi::access_json`, written bare by wfcgi's logging).
    Json,
}

impl BridgeConfig {
    pub fn new(app_dir: PathBuf) -> Self {
        BridgeConfig {
            handler: None,
            alt_handler: None,
            venv: None,
            app_dir,
            python_path: Vec::new(),
            threads: 32,
            queue_len: 1024,
            debug_responses: false,
            spool_threshold: 1024 * 1024,
            max_body_bytes: None,
            script_name: None,
            allow_path_info_for_script_mappings: false,
            multiprocess: false,
            shutdown_grace: Duration::from_secs(30),
            request_timeout: None,
            body_timeout: Some(Duration::from_secs(60)),
            access_log: AccessLog::Off,
            debugpy: None,
        }
    }
}
