//! Every setting wfcgi understands, where each may come from, and how they resolve into the
//! `BridgeConfig` handed to the bridge plus what the binary itself needs (listen addresses,
//! logging).
//!
//! Precedence, highest first: a command-line flag, a web.config appSetting, the inherited
//! environment, the default. wfastcgi copied every appSetting into the process environment, so
//! an appSetting has always overridden an inherited variable; flags are new and win over both.
//!
//! Every error names the setting the way the user wrote it (`--threads` or `WFCGI_THREADS`),
//! the value, where it came from (the command line, a web.config file and line, or the
//! environment) and what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::webconfig::WebConfig;
use wsgi::config::{BridgeConfig, HandlerSetting, SettingSource, VenvSetting};

// Setting names, as wfastcgi spelled them (its own) or as wfcgi adds them (WFCGI_*).
pub(crate) const WSGI_HANDLER: &str = "WSGI_HANDLER";
pub(crate) const PYTHONPATH: &str = "PYTHONPATH";
pub(crate) const WSGI_LOG: &str = "WSGI_LOG";
pub(crate) const WSGI_RESTART_FILE_REGEX: &str = "WSGI_RESTART_FILE_REGEX";
pub(crate) const SCRIPT_NAME: &str = "SCRIPT_NAME";
pub(crate) const ALLOW_PATH_INFO: &str = "AllowPathInfoForScriptMappings";
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
pub(crate) const WFCGI_LOG_LEVEL: &str = "WFCGI_LOG_LEVEL";
pub(crate) const WFCGI_LISTEN: &str = "WFCGI_LISTEN";
pub(crate) const WFCGI_SOCKET_MODE: &str = "WFCGI_SOCKET_MODE";
pub(crate) const WFCGI_MAX_CONNECTIONS: &str = "WFCGI_MAX_CONNECTIONS";
pub(crate) const WFCGI_MAX_REQUESTS_PER_CONNECTION: &str = "WFCGI_MAX_REQUESTS_PER_CONNECTION";
pub(crate) const WFCGI_MAX_PARAMS_BYTES: &str = "WFCGI_MAX_PARAMS_BYTES";
pub(crate) const WFCGI_PARAMS_TIMEOUT_SECS: &str = "WFCGI_PARAMS_TIMEOUT_SECS";
pub(crate) const WFCGI_IDLE_TIMEOUT_SECS: &str = "WFCGI_IDLE_TIMEOUT_SECS";
/// libfcgi's name: the peers allowed to connect over TCP.
pub(crate) const FCGI_WEB_SERVER_ADDRS: &str = "FCGI_WEB_SERVER_ADDRS";

/// wfastcgi's default for `WSGI_RESTART_FILE_REGEX`.
pub(crate) const DEFAULT_RESTART_FILE_REGEX: &str = r".*((\.py)|(\.config))$";

/// The address `wfcgi serve` listens on when none is given: loopback only, so that a first run
/// exposes nothing.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

/// The most Python threads accepted: far beyond what the GIL lets run usefully at once, low
/// enough to catch a typo (`80000`).
const MAX_THREADS: usize = 1024;

/// One setting: its names and the line `--help` and docs/configuration.md show for it.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Environment variable / web.config appSetting name.
    pub name: &'static str,
    /// Long flag (`--threads`), when there is one.
    pub flag: Option<&'static str>,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting, in the order `--help` lists them.
pub(crate) const SPECS: &[Spec] = &[
    Spec { name: WSGI_HANDLER, flag: Some("--handler"), default: "the built-in demo app",
        help: "the WSGI app, as a dotted path (myapp.app, django.core.wsgi.get_wsgi_application()) or module:attr" },
    Spec { name: WFCGI_APP_DIR, flag: Some("--app-dir"), default: "APPL_PHYSICAL_PATH of the first request (stdin mode), else the current directory",
        help: "the app directory: web.config is read there, the process chdirs there, and it is sys.path[0]" },
    Spec { name: WFCGI_VENV, flag: Some("--venv"), default: "none (the interpreter wfcgi was built with)",
        help: "the virtualenv: its folder, its python executable, or an old virtualenv's activate_this.py" },
    Spec { name: PYTHONPATH, flag: Some("--python-path"), default: "none",
        help: "extra sys.path entries, appended: %VAR% expanded, separated by ';' (and ':' on Unix), relative entries taken from the app directory" },
    Spec { name: WFCGI_THREADS, flag: Some("--threads"), default: "8",
        help: "Python worker threads (1-1024)" },
    Spec { name: WFCGI_QUEUE_LEN, flag: Some("--queue-len"), default: "1024",
        help: "requests waiting for a free Python thread before new ones get 503" },
    Spec { name: WFCGI_DEBUG, flag: Some("--debug-responses"), default: "false",
        help: "show tracebacks and start-up errors in responses (never in production: visitors see them)" },
    Spec { name: WFCGI_MULTIPROCESS, flag: Some("--multiprocess"), default: "false",
        help: "tell the app (wsgi.multiprocess) that several processes serve it (mod_fcgid, a process manager); requests from IIS always say so" },
    Spec { name: WFCGI_MAX_BODY_BYTES, flag: Some("--max-body-bytes"), default: "none (no limit)",
        help: "request bodies larger than this get 413; bytes, or with K/M/G (binary) suffix, or 'none'" },
    Spec { name: WFCGI_SPOOL_THRESHOLD_BYTES, flag: Some("--spool-threshold-bytes"), default: "1M",
        help: "request bodies larger than this are spooled to a temporary file as they arrive" },
    Spec { name: WFCGI_SHUTDOWN_GRACE_SECS, flag: Some("--shutdown-grace-secs"), default: "30",
        help: "on shutdown, seconds to let running requests finish" },
    Spec { name: SCRIPT_NAME, flag: Some("--script-name"), default: "none",
        help: "mount prefix: moved from PATH_INFO to SCRIPT_NAME when PATH_INFO starts with it (case-insensitive)" },
    Spec { name: ALLOW_PATH_INFO, flag: Some("--allow-path-info-for-script-mappings"), default: "false",
        help: "keep the SCRIPT_NAME IIS sends (set when IIS's allowPathInfo is on); present = on, unless 0/false/no/off" },
    Spec { name: WSGI_LOG, flag: Some("--log-file"), default: "none (stderr only)",
        help: "append log lines (UTF-8) to this file; under IIS the only place start-up errors can be read" },
    Spec { name: WFCGI_LOG_LEVEL, flag: Some("--log-level"), default: "RUST_LOG, else info",
        help: "error, warn, info, debug, trace, or a filter such as info,python.stdout=off" },
    Spec { name: WFCGI_LISTEN, flag: Some("--listen"), default: "127.0.0.1:9000 (serve only)",
        help: "address to listen on (HOST:PORT, [IPv6]:PORT or unix:/path), repeatable; in the setting, separated by ','" },
    Spec { name: WFCGI_SOCKET_MODE, flag: Some("--socket-mode"), default: "the umask's",
        help: "permissions of Unix socket files created by --listen, in octal (0660)" },
    Spec { name: WFCGI_MAX_CONNECTIONS, flag: Some("--max-connections"), default: "1024",
        help: "FastCGI connections open at once; more wait in the listen backlog" },
    Spec { name: WFCGI_MAX_REQUESTS_PER_CONNECTION, flag: Some("--max-requests-per-connection"), default: "64",
        help: "requests in progress on one multiplexed connection; one more is refused with FCGI_OVERLOADED" },
    Spec { name: WFCGI_MAX_PARAMS_BYTES, flag: Some("--max-params-bytes"), default: "256K",
        help: "bytes of FastCGI params (CGI variables and headers) one request may send; more is refused with FCGI_OVERLOADED" },
    Spec { name: WFCGI_PARAMS_TIMEOUT_SECS, flag: Some("--params-timeout-secs"), default: "30",
        help: "seconds a request's params may take to arrive before its connection is closed" },
    Spec { name: WFCGI_IDLE_TIMEOUT_SECS, flag: Some("--idle-timeout-secs"), default: "300",
        help: "seconds a connection with no request in progress stays open (0: for ever); never applied to the connection inherited on fd 0" },
    Spec { name: FCGI_WEB_SERVER_ADDRS, flag: None, default: "none (any peer)",
        help: "comma-separated IP addresses allowed to connect over TCP (libfcgi's variable); others are refused and logged" },
    Spec { name: WSGI_RESTART_FILE_REGEX, flag: None, default: DEFAULT_RESTART_FILE_REGEX,
        help: "validated, but file watching is not implemented yet: recycle the app pool to restart" },
    Spec { name: ALT_HANDLER, flag: None, default: "none",
        help: "the real handler when WSGI_HANDLER is ptvs_virtualenv_proxy.get_virtualenv_handler() or get_venv_handler()" },
    Spec { name: ALT_ACTIVATE_THIS, flag: None, default: "none",
        help: "with the ptvs_virtualenv_proxy handler: the venv's activate_this.py or python.exe (used as --venv)" },
    Spec { name: WSGI_PTVSD_SECRET, flag: None, default: "none",
        help: "obsolete (ptvsd remote debugging): ignored with a warning; debugpy support is planned" },
    Spec { name: WSGI_PTVSD_ADDRESS, flag: None, default: "none",
        help: "obsolete (ptvsd remote debugging): ignored with a warning; debugpy support is planned" },
    Spec { name: APPINSIGHTS, flag: None, default: "none",
        help: "deprecated Application Insights wrapper: ignored with a warning" },
];

/// The spec of a setting name; every name used in this module has one.
pub(crate) fn spec(name: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no Spec for setting {name}"))
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A command-line flag (its long name with dashes).
    Flag(&'static str),
    WebConfig {
        path: PathBuf,
        line: u32,
    },
    Environment,
}

/// A raw value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    /// The setting name (`WFCGI_THREADS`), also for a value given as a flag.
    pub name: &'static str,
    pub text: String,
    pub origin: Origin,
}

impl Value {
    /// `--threads "abc" (command line)`, `WFCGI_THREADS "abc" (web.config x line 7)`,
    /// `WFCGI_THREADS "abc" (environment variable)`.
    pub(crate) fn describe(&self) -> String {
        match &self.origin {
            Origin::Flag(flag) => format!("{flag} \"{}\" (command line)", self.text),
            Origin::WebConfig { path, line } => format!(
                "{} \"{}\" (web.config {} line {line})",
                self.name,
                self.text,
                path.display()
            ),
            Origin::Environment => {
                format!("{} \"{}\" (environment variable)", self.name, self.text)
            }
        }
    }

    /// How the bridge should name this value in its own errors.
    fn source(&self) -> SettingSource {
        match &self.origin {
            Origin::Flag(flag) => SettingSource::Flag(flag),
            Origin::WebConfig { path, line } => SettingSource::Setting(format!(
                "{} (web.config {} line {line})",
                self.name,
                path.display()
            )),
            Origin::Environment => {
                SettingSource::Setting(format!("{} (environment variable)", self.name))
            }
        }
    }

    fn invalid(&self, problem: impl Into<String>, fix: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            value: self.describe(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A path value: a flag's is relative to the current directory, anything else's to the app
    /// directory (wfastcgi chdir'd there before using them).
    fn path(&self, cwd: &Path, app_dir: &Path) -> PathBuf {
        let path = PathBuf::from(&self.text);
        match self.origin {
            Origin::Flag(_) => cwd.join(path),
            _ => app_dir.join(path),
        }
    }
}

/// Why the settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SettingsError {
    /// A value that does not parse or is out of range.
    Invalid {
        value: String,
        problem: String,
        fix: String,
    },
    /// A combination of settings that does not work.
    Conflict(String),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Invalid {
                value,
                problem,
                fix,
            } => write!(f, "invalid {value}: {problem}. Fix: {fix}"),
            SettingsError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for SettingsError {}

/// Values given on the command line, by setting name. Built by `cli`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    /// Records a flag's value(s) for a setting. A boolean flag given is recorded as "true".
    pub(crate) fn set(&mut self, name: &'static str, values: Vec<String>) {
        debug_assert!(spec(name).flag.is_some(), "{name} has no flag");
        if !values.is_empty() {
            self.values.push((name, values));
        }
    }

    pub(crate) fn get(&self, name: &'static str) -> Option<&[String]> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A snapshot of the inherited environment, taken before appSettings are copied into it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    /// The process environment now. Names or values that are not Unicode are kept lossily:
    /// wfcgi's own settings are all Unicode text.
    pub(crate) fn capture() -> Self {
        Environment {
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Exact name; on Windows, where environment names are case-insensitive, any case.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let found = self.vars.iter().find(|(k, _)| k == name).or_else(|| {
            if cfg!(windows) {
                self.vars.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
            } else {
                None
            }
        });
        found.map(|(_, v)| v.as_str())
    }
}

/// The inputs of a resolution.
pub(crate) struct Sources<'a> {
    pub flags: &'a Flags,
    pub web_config: Option<&'a WebConfig>,
    pub env: &'a Environment,
}

impl Sources<'_> {
    /// The value of a setting by precedence: flag, web.config (any case), environment.
    pub(crate) fn lookup(&self, name: &'static str) -> Option<Value> {
        if let Some(values) = self.flags.get(name) {
            let flag = spec(name)
                .flag
                .expect("only settings with flags are recorded");
            return Some(Value {
                name,
                text: values.join(","),
                origin: Origin::Flag(flag),
            });
        }
        if let Some(config) = self.web_config {
            if let Some(setting) = config.get(name) {
                return Some(Value {
                    name,
                    text: setting.value.clone(),
                    origin: Origin::WebConfig {
                        path: config.path.clone(),
                        line: setting.line,
                    },
                });
            }
        }
        self.env.get(name).map(|text| Value {
            name,
            text: text.to_string(),
            origin: Origin::Environment,
        })
    }

    /// A variable for `%VAR%` expansion: appSettings over the inherited environment, as in
    /// wfastcgi (which expanded after copying appSettings into `os.environ`).
    fn variable(&self, name: &str) -> Option<String> {
        if let Some(setting) = self.web_config.and_then(|c| c.get(name)) {
            return Some(setting.value.clone());
        }
        self.env
            .get(name)
            .or_else(|| {
                // wfastcgi ran on Windows, where %Var% matches VAR: keep that for ported sites.
                self.env
                    .vars
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            })
            .map(str::to_string)
    }
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub bridge: BridgeConfig,
    /// The FastCGI server's limits (its shutdown grace and advertised capacity are filled in
    /// from `bridge` when the server starts).
    pub server: fastcgi::ServerConfig,
    /// Listen addresses as written (parsed by the server), and where they came from.
    pub listen: Option<(Vec<String>, Value)>,
    pub socket_mode: Option<u32>,
    pub log_file: Option<PathBuf>,
    /// A tracing filter directive from `--log-level` / `WFCGI_LOG_LEVEL`, already validated.
    pub log_level: Option<String>,
    /// `None`: restarting on file changes is disabled (empty `WSGI_RESTART_FILE_REGEX`).
    pub restart_file_regex: Option<regex::Regex>,
    /// appSettings to copy into the process environment, as wfastcgi did.
    pub environment: Vec<(String, String)>,
    /// To be logged once logging is up.
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// The app directory before web.config is read: flag, `WFCGI_APP_DIR`, else `fallback` (the
/// first request's APPL_PHYSICAL_PATH in stdin mode, or the current directory). web.config
/// cannot set it: it lives there.
pub(crate) fn app_dir(
    flags: &Flags,
    env: &Environment,
    cwd: &Path,
    fallback: Option<&Path>,
) -> Result<PathBuf, SettingsError> {
    let sources = Sources {
        flags,
        web_config: None,
        env,
    };
    let (dir, value) = match sources.lookup(WFCGI_APP_DIR) {
        Some(value) if value.text.is_empty() => {
            return Err(value.invalid(
                "the app directory is empty",
                "give the folder that holds your app and its web.config",
            ))
        }
        Some(value) => (cwd.join(&value.text), Some(value)),
        None => (cwd.join(fallback.unwrap_or(cwd)), None),
    };
    if !dir.is_dir() {
        let problem = format!("{} is not a directory", dir.display());
        return Err(match value {
            Some(value) => value.invalid(problem, "give an existing folder"),
            None => SettingsError::Conflict(format!(
                "the app directory {} does not exist. Fix: pass --app-dir or set {WFCGI_APP_DIR}",
                dir.display()
            )),
        });
    }
    Ok(dir)
}

/// Resolves every setting. `cwd` anchors relative paths given as flags; `app_dir` anchors
/// relative paths from web.config or the environment.
pub(crate) fn resolve(
    sources: &Sources,
    app_dir: &Path,
    cwd: &Path,
) -> Result<Settings, SettingsError> {
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    if let Some(config) = sources.web_config {
        warnings.extend(config.warnings.iter().cloned());
    }
    let mut bridge = BridgeConfig::new(app_dir.to_path_buf());

    // Handler, venv, and the ptvs_virtualenv_proxy mapping.
    let handler = sources.lookup(WSGI_HANDLER);
    if let Some(value) = &handler {
        if value.text.trim().is_empty() {
            return Err(value.invalid(
                "the handler is empty",
                "set it to your app's dotted path (myapp.app, or \
                 django.core.wsgi.get_wsgi_application()), or remove it to serve the demo app",
            ));
        }
    }
    let venv = sources.lookup(WFCGI_VENV);
    if let Some(value) = &venv {
        if value.text.is_empty() {
            return Err(value.invalid(
                "the venv path is empty",
                "give the virtualenv folder or its python executable, or remove the setting",
            ));
        }
    }
    bridge.venv = venv.map(|value| VenvSetting {
        path: value.path(cwd, app_dir),
        source: value.source(),
    });
    let alt_handler = sources.lookup(ALT_HANDLER);
    let alt_activate = sources.lookup(ALT_ACTIVATE_THIS);
    match handler {
        Some(proxy) if is_virtualenv_proxy(&proxy.text) => {
            let Some(alt) = alt_handler else {
                return Err(SettingsError::Conflict(format!(
                    "{} names the ptvs_virtualenv_proxy, which serves the handler in \
                     {ALT_HANDLER}, but {ALT_HANDLER} is not set. Fix: add \
                     <add key=\"{ALT_HANDLER}\" value=\"myapp.app\"/> to appSettings, or set \
                     {WSGI_HANDLER} to your app's dotted path directly",
                    proxy.describe()
                )));
            };
            if alt.text.trim().is_empty() || is_virtualenv_proxy(&alt.text) {
                return Err(alt.invalid(
                    "it must name your app, not be empty or the proxy itself",
                    "set it to your app's dotted path, e.g. myapp.app",
                ));
            }
            notes.push(format!(
                "{WSGI_HANDLER} is the ptvs_virtualenv_proxy: serving {ALT_HANDLER} = {}; \
                 wfcgi runs the virtualenv itself, ptvs_virtualenv_proxy.py is not needed",
                alt.text.trim()
            ));
            match (&bridge.venv, alt_activate) {
                (None, Some(activate)) if !activate.text.is_empty() => {
                    bridge.venv = Some(VenvSetting {
                        path: activate.path(cwd, app_dir),
                        source: activate.source(),
                    });
                }
                (None, _) => warnings.push(format!(
                    "{WSGI_HANDLER} is the ptvs_virtualenv_proxy but neither {ALT_ACTIVATE_THIS} \
                     nor --venv / {WFCGI_VENV} is set: running without a virtualenv"
                )),
                (Some(_), Some(activate)) => warnings.push(format!(
                    "{} is ignored: --venv / {WFCGI_VENV} is set",
                    activate.describe()
                )),
                (Some(_), None) => {}
            }
            bridge.handler = Some(HandlerSetting {
                path: alt.text.trim().to_string(),
                source: alt.source(),
            });
        }
        handler => {
            for value in [alt_handler, alt_activate].into_iter().flatten() {
                warnings.push(format!(
                    "{} is ignored: it is used only when {WSGI_HANDLER} is \
                     ptvs_virtualenv_proxy.get_virtualenv_handler() or get_venv_handler()",
                    value.describe()
                ));
            }
            bridge.handler = handler.map(|value| HandlerSetting {
                path: value.text.trim().to_string(),
                source: value.source(),
            });
        }
    }

    // PYTHONPATH: only from a flag or web.config. An inherited PYTHONPATH is Python's own
    // business (the interpreter reads it at start-up); re-adding it would list it twice.
    if let Some(value) = sources.lookup(PYTHONPATH) {
        if !matches!(value.origin, Origin::Environment) {
            let (expanded, missing) = expand_variables(&value.text, |name| sources.variable(name));
            for name in missing {
                warnings.push(format!(
                    "{} refers to %{name}%, which is not set: it expands to nothing",
                    value.describe()
                ));
            }
            let base = match value.origin {
                Origin::Flag(_) => cwd,
                _ => app_dir,
            };
            bridge.python_path = split_python_path(&expanded)
                .into_iter()
                .map(|part| base.join(part))
                .collect();
        }
    }

    if let Some(value) = sources.lookup(WFCGI_THREADS) {
        bridge.threads = parse_count(&value, 1, MAX_THREADS, "Python threads", "8")?;
    }
    if let Some(value) = sources.lookup(WFCGI_QUEUE_LEN) {
        bridge.queue_len = parse_count(&value, 1, 1_000_000, "queued requests", "1024")?;
    }
    if let Some(value) = sources.lookup(WFCGI_DEBUG) {
        bridge.debug_responses = parse_bool(&value)?;
        if bridge.debug_responses {
            warnings.push(format!(
                "{}: tracebacks and start-up errors are shown to every visitor; do not leave \
                 this on in production",
                value.describe()
            ));
        }
    }
    if let Some(value) = sources.lookup(WFCGI_MULTIPROCESS) {
        bridge.multiprocess = parse_bool(&value)?;
    }
    if let Some(value) = sources.lookup(WFCGI_MAX_BODY_BYTES) {
        bridge.max_body_bytes = match value.text.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "unlimited" => None,
            _ => match parse_bytes(&value)? {
                0 => {
                    return Err(value.invalid(
                        "0 would refuse every request body",
                        "use a size such as 10M, or 'none' for no limit",
                    ))
                }
                n => Some(n),
            },
        };
    }
    if let Some(value) = sources.lookup(WFCGI_SPOOL_THRESHOLD_BYTES) {
        let bytes = parse_bytes(&value)?;
        bridge.spool_threshold = usize::try_from(bytes)
            .map_err(|_| value.invalid("too large for this machine", "use a size such as 1M"))?;
    }
    if let Some(value) = sources.lookup(WFCGI_SHUTDOWN_GRACE_SECS) {
        let secs = parse_count(&value, 0, 3600, "seconds", "30")?;
        bridge.shutdown_grace = Duration::from_secs(secs as u64);
    }
    let mut server = fastcgi::ServerConfig::default();
    if let Some(value) = sources.lookup(WFCGI_MAX_CONNECTIONS) {
        server.max_connections = parse_count(&value, 1, 1_000_000, "connections", "1024")?;
    }
    if let Some(value) = sources.lookup(WFCGI_MAX_REQUESTS_PER_CONNECTION) {
        server.max_requests_per_connection =
            parse_count(&value, 1, 65_535, "requests per connection", "64")?;
    }
    if let Some(value) = sources.lookup(WFCGI_MAX_PARAMS_BYTES) {
        let bytes = parse_bytes(&value)?;
        if !(1024..=64 * 1024 * 1024).contains(&bytes) {
            return Err(value.invalid("out of range", "use a size from 1K to 64M, e.g. 256K"));
        }
        server.max_params_bytes = bytes as usize;
    }
    if let Some(value) = sources.lookup(WFCGI_PARAMS_TIMEOUT_SECS) {
        let secs = parse_count(&value, 1, 3600, "seconds", "30")?;
        server.params_timeout = Duration::from_secs(secs as u64);
    }
    if let Some(value) = sources.lookup(WFCGI_IDLE_TIMEOUT_SECS) {
        let secs = parse_count(&value, 0, 86_400, "seconds", "300")?;
        server.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs as u64));
    }
    if let Some(value) = sources.lookup(FCGI_WEB_SERVER_ADDRS) {
        let mut allowed = Vec::new();
        for part in value
            .text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match part.parse::<std::net::IpAddr>() {
                Ok(ip) => allowed.push(ip),
                Err(_) => {
                    return Err(value.invalid(
                        format!("{part:?} is not an IP address"),
                        "list IP addresses separated by commas, e.g. 127.0.0.1,::1",
                    ))
                }
            }
        }
        if !allowed.is_empty() {
            server.allowed_peers = Some(allowed);
        }
    }
    if let Some(value) = sources.lookup(SCRIPT_NAME) {
        bridge.script_name = parse_script_name(&value)?;
    }
    if let Some(value) = sources.lookup(ALLOW_PATH_INFO) {
        // wfastcgi looked only at presence; an explicit "false" meaning true would surprise.
        bridge.allow_path_info_for_script_mappings =
            value.text.trim().is_empty() || parse_bool(&value)?;
    }

    let log_file = match sources.lookup(WSGI_LOG) {
        Some(value) if value.text.is_empty() => None,
        Some(value) => Some(value.path(cwd, app_dir)),
        None => None,
    };
    let log_level = match sources.lookup(WFCGI_LOG_LEVEL) {
        Some(value) => {
            check_log_filter(value.text.trim()).map_err(|problem| {
                value.invalid(
                    problem,
                    "use error, warn, info, debug or trace, or a filter such as \
                     info,python.stdout=off",
                )
            })?;
            Some(value.text.trim().to_string())
        }
        None => None,
    };

    let restart_file_regex = match sources.lookup(WSGI_RESTART_FILE_REGEX) {
        Some(value) if value.text.is_empty() => None,
        Some(value) => {
            let regex = compile_restart_regex(&value.text).map_err(|e| {
                value.invalid(
                    format!("not a valid regular expression: {e}"),
                    "wfcgi uses Rust regex syntax (no look-around or back-references); \
                     leave it empty to disable restarts",
                )
            })?;
            warnings.push(format!(
                "{} is accepted, but wfcgi does not watch files yet: after changing the app, \
                 recycle the app pool (or restart wfcgi)",
                value.describe()
            ));
            Some(regex)
        }
        None => Some(
            compile_restart_regex(DEFAULT_RESTART_FILE_REGEX).expect("the default regex is valid"),
        ),
    };

    for name in [WSGI_PTVSD_SECRET, WSGI_PTVSD_ADDRESS] {
        if let Some(value) = sources.lookup(name) {
            warnings.push(format!(
                "{name} ({}) is obsolete and ignored: ptvsd remote debugging is not supported; \
                 debugpy support is planned",
                origin_text(&value.origin)
            ));
        }
    }
    if let Some(value) = sources.lookup(APPINSIGHTS) {
        warnings.push(format!(
            "{APPINSIGHTS} ({}) is ignored: wfastcgi's Application Insights wrapper is \
             deprecated; add OpenTelemetry middleware to the app instead",
            origin_text(&value.origin)
        ));
    }

    let listen = sources.lookup(WFCGI_LISTEN).map(|value| {
        let addrs: Vec<String> = value
            .text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        (addrs, value)
    });
    if let Some((addrs, value)) = &listen {
        if addrs.is_empty() {
            return Err(value.invalid(
                "no address",
                format!("give HOST:PORT or unix:/path, e.g. {DEFAULT_LISTEN}"),
            ));
        }
    }
    let socket_mode = match sources.lookup(WFCGI_SOCKET_MODE) {
        Some(value) => Some(parse_socket_mode(&value)?),
        None => None,
    };

    // Every appSetting but PYTHONPATH goes into the environment. PYTHONPATH stays out: the
    // embedded interpreter starts after the copy and would read it itself, putting the
    // unexpanded entries before the standard library; wfastcgi appended them to sys.path,
    // which `python_path` does.
    let environment = sources
        .web_config
        .map(|config| {
            config
                .app_settings
                .iter()
                .filter(|s| !s.key.eq_ignore_ascii_case(PYTHONPATH))
                .map(|s| (s.key.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();

    Ok(Settings {
        bridge,
        server,
        listen,
        socket_mode,
        log_file,
        log_level,
        restart_file_regex,
        environment,
        warnings,
        notes,
    })
}

/// Copies the appSettings into the process environment, as wfastcgi did (so that the app, its
/// `os.environ` and its subprocesses see `DJANGO_SETTINGS_MODULE` and the like).
///
/// Must run before the Python interpreter starts (it snapshots the environment into
/// `os.environ`) and while no other thread reads the environment through libc: `setenv`
/// racing with a C `getenv` is undefined behaviour. `main` calls it before the Tokio runtime
/// exists; in stdin mode, where the app directory is only known from the first request, the
/// bridge's start-up thread calls it while the runtime's workers are parked waiting for that
/// start-up (Rust's own environment access is serialised by std's lock; no wfcgi thread calls
/// a libc function that reads the environment then).
pub(crate) fn apply_environment(settings: &Settings) {
    for (key, value) in &settings.environment {
        // Keys and values were checked in webconfig (no '=', no NUL, not empty), so this
        // cannot panic.
        std::env::set_var(key, value);
    }
}

fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Flag(flag) => format!("flag {flag}"),
        Origin::WebConfig { path, line } => format!("web.config {} line {line}", path.display()),
        Origin::Environment => "environment variable".to_string(),
    }
}

/// A tracing filter. EnvFilter reads a bare word as a target name (`loud` = "everything from
/// target loud"), so a typo of a level would silently log nothing: a bare word must be a level.
pub(crate) fn check_log_filter(text: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    if text.is_empty() {
        return Err("empty".to_string());
    }
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bare = !part.contains(['=', '[']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part)) {
            return Err(format!("\"{part}\" is not a level"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(drop)
        .map_err(|e| format!("not a log filter ({e})"))
}

/// `ptvs_virtualenv_proxy.get_virtualenv_handler()` or `...get_venv_handler()`, with or
/// without the call parentheses.
pub(crate) fn is_virtualenv_proxy(handler: &str) -> bool {
    let Some(function) = handler.trim().strip_prefix("ptvs_virtualenv_proxy.") else {
        return false;
    };
    let function = function.strip_suffix("()").unwrap_or(function);
    matches!(function, "get_virtualenv_handler" | "get_venv_handler")
}

/// wfastcgi's `%NAME%` expansion (`%(\w+?)%`): an unset name expands to nothing (and is
/// returned so that it can be warned about); a `%` not followed by `NAME%` stays as it is.
pub(crate) fn expand_variables(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('%') {
            let name = &after[..name_len];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => missing.push(name.to_string()),
            }
            rest = &after[name_len + 1..];
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, missing)
}

/// Splits a PYTHONPATH value into entries, dropping empty ones. wfastcgi split on `;` only
/// (a Windows path has `:` after its drive letter); on Unix `:` also separates, as in the
/// PYTHONPATH every Unix user knows.
pub(crate) fn split_python_path(text: &str) -> Vec<String> {
    let separators: &[char] = if cfg!(windows) { &[';'] } else { &[';', ':'] };
    text.split(separators)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `re.match` semantics: anchored at the start of the relative path.
fn compile_restart_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})"))
}

fn parse_count(
    value: &Value,
    min: usize,
    max: usize,
    what: &str,
    example: &str,
) -> Result<usize, SettingsError> {
    let fix = || format!("use a whole number of {what} from {min} to {max}, e.g. {example}");
    let n: usize = value
        .text
        .trim()
        .parse()
        .map_err(|_| value.invalid("not a whole number", fix()))?;
    if n < min || n > max {
        return Err(value.invalid(format!("out of range {min}-{max}"), fix()));
    }
    Ok(n)
}

fn parse_bool(value: &Value) -> Result<bool, SettingsError> {
    match value.text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(value.invalid(
            "not a yes/no value",
            "use true or false (also accepted: 1/0, yes/no, on/off)",
        )),
    }
}

/// Bytes, or with a binary K/M/G suffix (`64K`, `10M`, `1GiB`, `10 MB`).
fn parse_bytes(value: &Value) -> Result<u64, SettingsError> {
    let fix = || "use a number of bytes, optionally with K, M or G (x1024), e.g. 10M".to_string();
    let text = value.text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(value.invalid("not a size", fix())),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| value.invalid("not a size", fix()))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| value.invalid("too large", fix()))
}

fn parse_script_name(value: &Value) -> Result<Option<String>, SettingsError> {
    let text = value.text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Ok(None);
    }
    if !text.starts_with('/') {
        return Err(value.invalid(
            "a mount prefix starts with '/'",
            format!("write it as /{text}"),
        ));
    }
    Ok(Some(text.to_string()))
}

fn parse_socket_mode(value: &Value) -> Result<u32, SettingsError> {
    let fix = "use octal permissions such as 0660 (owner and group read/write)";
    let mode = u32::from_str_radix(value.text.trim(), 8)
        .map_err(|_| value.invalid("not an octal number", fix))?;
    if mode > 0o777 {
        return Err(value.invalid("above 0777", fix));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webconfig::AppSetting;

    fn web(pairs: &[(&str, &str)]) -> WebConfig {
        WebConfig {
            path: PathBuf::from("/site/web.config"),
            app_settings: pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| AppSetting {
                    key: k.to_string(),
                    value: v.to_string(),
                    line: i as u32 + 3,
                })
                .collect(),
            warnings: Vec::new(),
        }
    }

    fn flags(pairs: &[(&'static str, &str)]) -> Flags {
        let mut flags = Flags::default();
        for (name, value) in pairs {
            flags.set(name, vec![value.to_string()]);
        }
        flags
    }

    struct Case<'a> {
        flags: &'a [(&'static str, &'a str)],
        web: &'a [(&'a str, &'a str)],
        env: &'a [(&'a str, &'a str)],
    }

    impl Case<'_> {
        fn resolve(&self) -> Result<Settings, SettingsError> {
            let flags = flags(self.flags);
            let web = web(self.web);
            let env = Environment::from_pairs(self.env.iter().copied());
            let sources = Sources {
                flags: &flags,
                web_config: Some(&web),
                env: &env,
            };
            resolve(&sources, Path::new("/site"), Path::new("/cwd"))
        }
    }

    const NONE: &[(&str, &str)] = &[];

    #[test]
    fn defaults() {
        let s = Case {
            flags: &[],
            web: NONE,
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(s.bridge.handler, None);
        assert_eq!(s.bridge.threads, 8);
        assert_eq!(s.bridge.app_dir, Path::new("/site"));
        assert!(!s.bridge.debug_responses);
        assert_eq!(s.bridge.max_body_bytes, None);
        assert!(s.listen.is_none());
        assert!(s.log_file.is_none());
        let regex = s.restart_file_regex.expect("default regex");
        assert!(regex.is_match("app/views.py"));
        assert!(!regex.is_match("static/site.css"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn precedence_flag_over_web_config_over_environment() {
        let cases: &[(&str, Case, usize)] = &[
            (
                "flag wins",
                Case {
                    flags: &[(WFCGI_THREADS, "2")],
                    web: &[(WFCGI_THREADS, "3")],
                    env: &[(WFCGI_THREADS, "4")],
                },
                2,
            ),
            (
                "web.config over environment",
                Case {
                    flags: &[],
                    web: &[("wfcgi_threads", "3")],
                    env: &[(WFCGI_THREADS, "4")],
                },
                3,
            ),
            (
                "environment",
                Case {
                    flags: &[],
                    web: NONE,
                    env: &[(WFCGI_THREADS, "4")],
                },
                4,
            ),
        ];
        for (name, case, threads) in cases {
            let s = case.resolve().expect(name);
            assert_eq!(s.bridge.threads, *threads, "{name}");
        }
        // The source handed to the bridge names where the handler came from.
        let sources: &[(Case, SettingSource)] = &[
            (
                Case {
                    flags: &[(WSGI_HANDLER, "a.app")],
                    web: &[(WSGI_HANDLER, "b.app")],
                    env: NONE,
                },
                SettingSource::Flag("--handler"),
            ),
            (
                Case {
                    flags: &[],
                    web: &[(WSGI_HANDLER, "b.app")],
                    env: &[(WSGI_HANDLER, "c.app")],
                },
                SettingSource::Setting(
                    "WSGI_HANDLER (web.config /site/web.config line 3)".to_string(),
                ),
            ),
            (
                Case {
                    flags: &[],
                    web: NONE,
                    env: &[(WSGI_HANDLER, " c.app ")],
                },
                SettingSource::Setting("WSGI_HANDLER (environment variable)".to_string()),
            ),
        ];
        for (case, source) in sources {
            let handler = case
                .resolve()
                .expect("resolves")
                .bridge
                .handler
                .expect("set");
            assert_eq!(&handler.source, source);
            assert!(handler.path.ends_with(".app") && !handler.path.contains(' '));
        }
    }

    #[test]
    fn every_setting_parses() {
        let s = Case {
            flags: &[],
            web: &[
                (WSGI_HANDLER, "django.core.wsgi.get_wsgi_application()"),
                (WFCGI_VENV, "venv"),
                (WFCGI_QUEUE_LEN, "10"),
                (WFCGI_DEBUG, "Yes"),
                (WFCGI_MAX_BODY_BYTES, "10M"),
                (WFCGI_SPOOL_THRESHOLD_BYTES, "64k"),
                (WFCGI_SHUTDOWN_GRACE_SECS, "5"),
                (SCRIPT_NAME, "/app/"),
                (ALLOW_PATH_INFO, ""),
                (WSGI_LOG, "logs\\wfcgi.log"),
                (WFCGI_LOG_LEVEL, "debug,python.stdout=off"),
                (WFCGI_LISTEN, "127.0.0.1:9001, unix:/run/wfcgi.sock"),
                (WFCGI_MULTIPROCESS, "on"),
                (WFCGI_SOCKET_MODE, "0660"),
                (WSGI_RESTART_FILE_REGEX, ""),
                ("DJANGO_SETTINGS_MODULE", "site.settings"),
                ("PythonPath", "lib"),
            ],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        let b = &s.bridge;
        assert_eq!(
            b.handler.as_ref().map(|h| h.path.as_str()),
            Some("django.core.wsgi.get_wsgi_application()")
        );
        assert_eq!(
            b.venv.as_ref().map(|v| v.path.clone()),
            Some(PathBuf::from("/site/venv"))
        );
        assert_eq!(b.queue_len, 10);
        assert!(b.debug_responses);
        assert_eq!(b.max_body_bytes, Some(10 << 20));
        assert_eq!(b.spool_threshold, 64 << 10);
        assert_eq!(b.shutdown_grace, Duration::from_secs(5));
        assert_eq!(b.script_name.as_deref(), Some("/app"));
        assert!(b.allow_path_info_for_script_mappings);
        assert_eq!(b.python_path, [PathBuf::from("/site/lib")]);
        assert_eq!(s.log_file, Some(PathBuf::from("/site/logs\\wfcgi.log")));
        assert_eq!(s.log_level.as_deref(), Some("debug,python.stdout=off"));
        assert_eq!(
            s.listen.as_ref().map(|(addrs, _)| addrs.clone()),
            Some(vec![
                "127.0.0.1:9001".to_string(),
                "unix:/run/wfcgi.sock".to_string()
            ])
        );
        assert_eq!(s.socket_mode, Some(0o660));
        assert!(s.restart_file_regex.is_none(), "empty disables");
        // Everything but PYTHONPATH goes into the environment.
        assert!(s.environment.contains(&(
            "DJANGO_SETTINGS_MODULE".to_string(),
            "site.settings".to_string()
        )));
        assert!(!s.environment.iter().any(|(k, _)| k == "PythonPath"));
        assert!(b.multiprocess);
        assert_eq!(s.environment.len(), 16);
        assert_eq!(
            s.warnings,
            ["WFCGI_DEBUG \"Yes\" (web.config /site/web.config line 6): tracebacks and start-up errors are shown to every visitor; do not leave this on in production"]
        );
    }

    #[test]
    fn flag_paths_are_relative_to_the_current_directory() {
        let s = Case {
            flags: &[
                (WFCGI_VENV, "venv"),
                (WSGI_LOG, "w.log"),
                (PYTHONPATH, "a;b"),
            ],
            web: &[(WFCGI_VENV, "other")],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.bridge.venv.map(|v| v.path),
            Some(PathBuf::from("/cwd/venv"))
        );
        assert_eq!(s.log_file, Some(PathBuf::from("/cwd/w.log")));
        assert_eq!(
            s.bridge.python_path,
            [PathBuf::from("/cwd/a"), PathBuf::from("/cwd/b")]
        );
    }

    #[test]
    fn booleans_and_allow_path_info() {
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("1", true),
            ("TRUE", true),
            ("on", true),
            ("0", false),
            ("false", false),
            ("No", false),
        ];
        for (text, expected) in cases {
            let s = Case {
                flags: &[],
                web: &[(ALLOW_PATH_INFO, text)],
                env: NONE,
            }
            .resolve()
            .expect(text);
            assert_eq!(
                s.bridge.allow_path_info_for_script_mappings, *expected,
                "{text:?}"
            );
        }
        let s = Case {
            flags: &[(WFCGI_DEBUG, "true")],
            web: &[(WFCGI_DEBUG, "false")],
            env: NONE,
        }
        .resolve()
        .expect("flag bool");
        assert!(s.bridge.debug_responses);
    }

    #[test]
    fn python_path_expansion() {
        let env = [("HOME", "/home/u"), ("Mixed", "/m")];
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let cases: &[(&str, &str, &[&str])] = &[
            ("%HOME%\\lib;%Mixed%", "/home/u\\lib;/m", &[]),
            ("%UNSET%/x", "/x", &["UNSET"]),
            ("100% sure; %%; %HOME", "100% sure; %%; %HOME", &[]),
            ("%HOME%%HOME%", "/home/u/home/u", &[]),
            ("%not a name%", "%not a name%", &[]),
        ];
        for (text, expanded, missing) in cases {
            let (out, miss) = expand_variables(text, lookup);
            assert_eq!(out, *expanded, "{text}");
            assert_eq!(miss, *missing, "{text}");
        }
    }

    #[test]
    fn python_path_split() {
        assert_eq!(split_python_path("a;;b; ;c;"), ["a", "b", "c"]);
        if cfg!(windows) {
            assert_eq!(split_python_path("C:\\a;D:\\b"), ["C:\\a", "D:\\b"]);
        } else {
            assert_eq!(split_python_path("/a:/b;/c"), ["/a", "/b", "/c"]);
        }
    }

    #[test]
    fn python_path_from_web_config_uses_app_settings_and_environment() {
        let s = Case {
            flags: &[],
            web: &[
                ("LIBS", "/opt/libs"),
                ("pythonpath", "%LIBS%;%HOME%/x;%NOPE%;src"),
            ],
            env: &[("HOME", "/home/u"), (PYTHONPATH, "/ignored")],
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.bridge.python_path,
            [
                PathBuf::from("/opt/libs"),
                PathBuf::from("/home/u/x"),
                PathBuf::from("/site/src")
            ]
        );
        assert_eq!(
            s.warnings,
            ["PYTHONPATH \"%LIBS%;%HOME%/x;%NOPE%;src\" (web.config /site/web.config line 4) refers to %NOPE%, which is not set: it expands to nothing"]
        );
        // An inherited PYTHONPATH alone is left to the interpreter.
        let s = Case {
            flags: &[],
            web: NONE,
            env: &[(PYTHONPATH, "/x")],
        }
        .resolve()
        .expect("resolves");
        assert!(s.bridge.python_path.is_empty());
    }

    #[test]
    fn virtualenv_proxy_mapping() {
        for proxy in [
            "ptvs_virtualenv_proxy.get_virtualenv_handler()",
            "ptvs_virtualenv_proxy.get_venv_handler()",
            " ptvs_virtualenv_proxy.get_venv_handler ",
        ] {
            assert!(is_virtualenv_proxy(proxy), "{proxy}");
        }
        for other in [
            "ptvs_virtualenv_proxy.other()",
            "myapp.get_venv_handler()",
            "app.app",
        ] {
            assert!(!is_virtualenv_proxy(other), "{other}");
        }
        let s = Case {
            flags: &[],
            web: &[
                (
                    WSGI_HANDLER,
                    "ptvs_virtualenv_proxy.get_virtualenv_handler()",
                ),
                (ALT_HANDLER, "myapp.app"),
                (ALT_ACTIVATE_THIS, "env\\Scripts\\activate_this.py"),
            ],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        let handler = s.bridge.handler.expect("handler");
        assert_eq!(handler.path, "myapp.app");
        assert_eq!(
            handler.source,
            SettingSource::Setting(
                "WSGI_ALT_VIRTUALENV_HANDLER (web.config /site/web.config line 4)".to_string()
            )
        );
        assert_eq!(
            s.bridge.venv.map(|v| v.path),
            Some(PathBuf::from("/site/env\\Scripts\\activate_this.py"))
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.notes.len(), 1);

        // --venv wins over ACTIVATE_THIS, with a warning.
        let s = Case {
            flags: &[(WFCGI_VENV, "/v")],
            web: &[
                (WSGI_HANDLER, "ptvs_virtualenv_proxy.get_venv_handler()"),
                (ALT_HANDLER, "myapp.app"),
                (ALT_ACTIVATE_THIS, "C:\\env\\Scripts\\python.exe"),
            ],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(s.bridge.venv.map(|v| v.path), Some(PathBuf::from("/v")));
        assert_eq!(
            s.warnings,
            ["WSGI_ALT_VIRTUALENV_ACTIVATE_THIS \"C:\\env\\Scripts\\python.exe\" (web.config /site/web.config line 5) is ignored: --venv / WFCGI_VENV is set"]
        );

        // No venv at all: a warning.
        let s = Case {
            flags: &[],
            web: &[
                (WSGI_HANDLER, "ptvs_virtualenv_proxy.get_venv_handler()"),
                (ALT_HANDLER, "myapp.app"),
            ],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.warnings,
            ["WSGI_HANDLER is the ptvs_virtualenv_proxy but neither WSGI_ALT_VIRTUALENV_ACTIVATE_THIS nor --venv / WFCGI_VENV is set: running without a virtualenv"]
        );

        // ALT settings without the proxy: ignored with a warning.
        let s = Case {
            flags: &[],
            web: &[(WSGI_HANDLER, "app.app"), (ALT_HANDLER, "other.app")],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.bridge.handler.map(|h| h.path),
            Some("app.app".to_string())
        );
        assert_eq!(
            s.warnings,
            ["WSGI_ALT_VIRTUALENV_HANDLER \"other.app\" (web.config /site/web.config line 4) is ignored: it is used only when WSGI_HANDLER is ptvs_virtualenv_proxy.get_virtualenv_handler() or get_venv_handler()"]
        );
    }

    #[test]
    fn obsolete_settings_warn() {
        let s = Case {
            flags: &[],
            web: &[(WSGI_PTVSD_SECRET, "s"), (APPINSIGHTS, "k")],
            env: &[(WSGI_PTVSD_ADDRESS, "0.0.0.0:5678")],
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.warnings,
            [
                "WSGI_PTVSD_SECRET (web.config /site/web.config line 3) is obsolete and ignored: ptvsd remote debugging is not supported; debugpy support is planned",
                "WSGI_PTVSD_ADDRESS (environment variable) is obsolete and ignored: ptvsd remote debugging is not supported; debugpy support is planned",
                "APPINSIGHTS_INSTRUMENTATIONKEY (web.config /site/web.config line 4) is ignored: wfastcgi's Application Insights wrapper is deprecated; add OpenTelemetry middleware to the app instead",
            ]
        );
        let s = Case {
            flags: &[],
            web: &[(WSGI_RESTART_FILE_REGEX, r".*\.py$")],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(
            s.warnings,
            [
                r#"WSGI_RESTART_FILE_REGEX ".*\.py$" (web.config /site/web.config line 3) is accepted, but wfcgi does not watch files yet: after changing the app, recycle the app pool (or restart wfcgi)"#
            ]
        );
        let regex = s.restart_file_regex.expect("regex");
        assert!(regex.is_match("a/b.py") && !regex.is_match("a/b.pyc"));
    }

    #[test]
    fn fastcgi_server_limits() {
        let s = Case {
            flags: &[(WFCGI_MAX_CONNECTIONS, "10")],
            web: &[
                (WFCGI_MAX_REQUESTS_PER_CONNECTION, "1"),
                (WFCGI_MAX_PARAMS_BYTES, "64K"),
                (FCGI_WEB_SERVER_ADDRS, "127.0.0.1, ::1"),
            ],
            env: &[(WFCGI_PARAMS_TIMEOUT_SECS, "5")],
        }
        .resolve()
        .expect("resolves");
        assert_eq!(s.server.max_connections, 10);
        assert_eq!(s.server.max_requests_per_connection, 1);
        assert_eq!(s.server.max_params_bytes, 64 * 1024);
        assert_eq!(s.server.params_timeout, Duration::from_secs(5));
        assert_eq!(s.server.idle_timeout, Some(Duration::from_secs(300)));
        let off = Case {
            flags: &[],
            web: &[(WFCGI_IDLE_TIMEOUT_SECS, "0")],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(off.server.idle_timeout, None);
        let allowed: Vec<std::net::IpAddr> =
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(s.server.allowed_peers, Some(allowed));
        let defaults = Case {
            flags: &[],
            web: NONE,
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert_eq!(defaults.server.max_connections, 1024);
        assert_eq!(defaults.server.allowed_peers, None);
        for (name, value, problem) in [
            (
                FCGI_WEB_SERVER_ADDRS,
                "127.0.0.1,nginx",
                "\"nginx\" is not an IP address",
            ),
            (WFCGI_MAX_PARAMS_BYTES, "10", "out of range"),
            (WFCGI_MAX_CONNECTIONS, "0", ""),
        ] {
            let e = Case {
                flags: &[],
                web: NONE,
                env: &[(name, value)],
            }
            .resolve()
            .expect_err(name)
            .to_string();
            assert!(
                e.contains(name) && e.contains(problem) && e.contains("Fix:"),
                "{e}"
            );
        }
    }

    #[test]
    fn every_error_message() {
        let cases: &[(&str, Case, &str)] = &[
            ("threads not a number (flag)", Case { flags: &[(WFCGI_THREADS, "abc")], web: NONE, env: NONE },
             "invalid --threads \"abc\" (command line): not a whole number. Fix: use a whole number of Python threads from 1 to 1024, e.g. 8"),
            ("threads zero (web.config)", Case { flags: &[], web: &[(WFCGI_THREADS, "0")], env: NONE },
             "invalid WFCGI_THREADS \"0\" (web.config /site/web.config line 3): out of range 1-1024. Fix: use a whole number of Python threads from 1 to 1024, e.g. 8"),
            ("queue len (environment)", Case { flags: &[], web: NONE, env: &[(WFCGI_QUEUE_LEN, "-1")] },
             "invalid WFCGI_QUEUE_LEN \"-1\" (environment variable): not a whole number. Fix: use a whole number of queued requests from 1 to 1000000, e.g. 1024"),
            ("grace too long", Case { flags: &[(WFCGI_SHUTDOWN_GRACE_SECS, "9999")], web: NONE, env: NONE },
             "invalid --shutdown-grace-secs \"9999\" (command line): out of range 0-3600. Fix: use a whole number of seconds from 0 to 3600, e.g. 30"),
            ("debug not a bool", Case { flags: &[], web: &[(WFCGI_DEBUG, "maybe")], env: NONE },
             "invalid WFCGI_DEBUG \"maybe\" (web.config /site/web.config line 3): not a yes/no value. Fix: use true or false (also accepted: 1/0, yes/no, on/off)"),
            ("allow path info not a bool", Case { flags: &[], web: &[(ALLOW_PATH_INFO, "sometimes")], env: NONE },
             "invalid AllowPathInfoForScriptMappings \"sometimes\" (web.config /site/web.config line 3): not a yes/no value. Fix: use true or false (also accepted: 1/0, yes/no, on/off)"),
            ("max body unit", Case { flags: &[(WFCGI_MAX_BODY_BYTES, "10X")], web: NONE, env: NONE },
             "invalid --max-body-bytes \"10X\" (command line): not a size. Fix: use a number of bytes, optionally with K, M or G (x1024), e.g. 10M"),
            ("max body zero", Case { flags: &[(WFCGI_MAX_BODY_BYTES, "0")], web: NONE, env: NONE },
             "invalid --max-body-bytes \"0\" (command line): 0 would refuse every request body. Fix: use a size such as 10M, or 'none' for no limit"),
            ("max body overflow", Case { flags: &[(WFCGI_MAX_BODY_BYTES, "99999999999999999G")], web: NONE, env: NONE },
             "invalid --max-body-bytes \"99999999999999999G\" (command line): too large. Fix: use a number of bytes, optionally with K, M or G (x1024), e.g. 10M"),
            ("spool no digits", Case { flags: &[], web: NONE, env: &[(WFCGI_SPOOL_THRESHOLD_BYTES, "M")] },
             "invalid WFCGI_SPOOL_THRESHOLD_BYTES \"M\" (environment variable): not a size. Fix: use a number of bytes, optionally with K, M or G (x1024), e.g. 10M"),
            ("script name without slash", Case { flags: &[], web: &[(SCRIPT_NAME, "app")], env: NONE },
             "invalid SCRIPT_NAME \"app\" (web.config /site/web.config line 3): a mount prefix starts with '/'. Fix: write it as /app"),
            ("log level", Case { flags: &[(WFCGI_LOG_LEVEL, "loud")], web: NONE, env: NONE },
             "invalid --log-level \"loud\" (command line): \"loud\" is not a level. Fix: use error, warn, info, debug or trace, or a filter such as info,python.stdout=off"),
            ("log filter", Case { flags: &[], web: NONE, env: &[(WFCGI_LOG_LEVEL, "wfcgi=loud")] },
             "invalid WFCGI_LOG_LEVEL \"wfcgi=loud\" (environment variable): not a log filter (error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5). Fix: use error, warn, info, debug or trace, or a filter such as info,python.stdout=off"),
            ("log level empty", Case { flags: &[], web: &[(WFCGI_LOG_LEVEL, "")], env: NONE },
             "invalid WFCGI_LOG_LEVEL \"\" (web.config /site/web.config line 3): empty. Fix: use error, warn, info, debug or trace, or a filter such as info,python.stdout=off"),
            ("socket mode not octal", Case { flags: &[(WFCGI_SOCKET_MODE, "rw-rw----")], web: NONE, env: NONE },
             "invalid --socket-mode \"rw-rw----\" (command line): not an octal number. Fix: use octal permissions such as 0660 (owner and group read/write)"),
            ("socket mode too big", Case { flags: &[(WFCGI_SOCKET_MODE, "7777")], web: NONE, env: NONE },
             "invalid --socket-mode \"7777\" (command line): above 0777. Fix: use octal permissions such as 0660 (owner and group read/write)"),
            ("listen empty", Case { flags: &[], web: NONE, env: &[(WFCGI_LISTEN, " , ")] },
             "invalid WFCGI_LISTEN \" , \" (environment variable): no address. Fix: give HOST:PORT or unix:/path, e.g. 127.0.0.1:9000"),
            ("restart regex", Case { flags: &[], web: &[(WSGI_RESTART_FILE_REGEX, "(?<=a)b")], env: NONE },
             "invalid WSGI_RESTART_FILE_REGEX \"(?<=a)b\" (web.config /site/web.config line 3): not a valid regular expression: regex parse error:\n    ^(?:(?<=a)b)\n        ^^^^\nerror: look-around, including look-ahead and look-behind, is not supported. Fix: wfcgi uses Rust regex syntax (no look-around or back-references); leave it empty to disable restarts"),
            ("empty handler", Case { flags: &[], web: &[(WSGI_HANDLER, " ")], env: NONE },
             "invalid WSGI_HANDLER \" \" (web.config /site/web.config line 3): the handler is empty. Fix: set it to your app's dotted path (myapp.app, or django.core.wsgi.get_wsgi_application()), or remove it to serve the demo app"),
            ("empty venv", Case { flags: &[], web: NONE, env: &[(WFCGI_VENV, "")] },
             "invalid WFCGI_VENV \"\" (environment variable): the venv path is empty. Fix: give the virtualenv folder or its python executable, or remove the setting"),
            ("proxy without alt handler", Case { flags: &[], web: &[(WSGI_HANDLER, "ptvs_virtualenv_proxy.get_virtualenv_handler()")], env: NONE },
             "WSGI_HANDLER \"ptvs_virtualenv_proxy.get_virtualenv_handler()\" (web.config /site/web.config line 3) names the ptvs_virtualenv_proxy, which serves the handler in WSGI_ALT_VIRTUALENV_HANDLER, but WSGI_ALT_VIRTUALENV_HANDLER is not set. Fix: add <add key=\"WSGI_ALT_VIRTUALENV_HANDLER\" value=\"myapp.app\"/> to appSettings, or set WSGI_HANDLER to your app's dotted path directly"),
            ("proxy pointing at itself", Case { flags: &[], web: &[(WSGI_HANDLER, "ptvs_virtualenv_proxy.get_venv_handler()"), (ALT_HANDLER, "ptvs_virtualenv_proxy.get_venv_handler()")], env: NONE },
             "invalid WSGI_ALT_VIRTUALENV_HANDLER \"ptvs_virtualenv_proxy.get_venv_handler()\" (web.config /site/web.config line 4): it must name your app, not be empty or the proxy itself. Fix: set it to your app's dotted path, e.g. myapp.app"),
        ];
        for (name, case, expected) in cases {
            let err = case.resolve().expect_err(name).to_string();
            assert_eq!(err, *expected, "{name}");
        }
    }

    #[test]
    fn app_dir_resolution() {
        let tmp = std::env::temp_dir();
        let env = Environment::default();
        let none = Flags::default();
        assert_eq!(app_dir(&none, &env, &tmp, None).expect("cwd"), tmp);
        assert_eq!(
            app_dir(&none, &env, Path::new("/"), Some(&tmp)).expect("fallback"),
            tmp
        );
        let with_flag = flags(&[(WFCGI_APP_DIR, "/definitely/not/here")]);
        assert_eq!(
            app_dir(&with_flag, &env, &tmp, Some(&tmp))
                .expect_err("missing")
                .to_string(),
            "invalid --app-dir \"/definitely/not/here\" (command line): /definitely/not/here is not a directory. Fix: give an existing folder"
        );
        let env_missing = Environment::from_pairs([(WFCGI_APP_DIR, "")]);
        assert_eq!(
            app_dir(&none, &env_missing, &tmp, None).expect_err("empty").to_string(),
            "invalid WFCGI_APP_DIR \"\" (environment variable): the app directory is empty. Fix: give the folder that holds your app and its web.config"
        );
        assert_eq!(
            app_dir(&none, &env, &tmp, Some(Path::new("/definitely/not/here")))
                .expect_err("fallback missing")
                .to_string(),
            "the app directory /definitely/not/here does not exist. Fix: pass --app-dir or set WFCGI_APP_DIR"
        );
    }

    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        for spec in SPECS {
            assert!(
                doc.contains(&format!("`{}`", spec.name)),
                "{} not in docs/configuration.md",
                spec.name
            );
            if let Some(flag) = spec.flag {
                assert!(
                    doc.contains(&format!("`{flag}")),
                    "{flag} not in docs/configuration.md"
                );
            }
        }
    }
}
