//! Every setting wfcgi understands, where each may come from, and how they resolve into the
//! `BridgeConfig` handed to the bridge plus what the binary itself needs (listen addresses,
//! logging).
//!
//! - [`table`]: the settings table, one entry per setting; everything else is derived from it.
//! - [`apply`]: how each value takes effect, and the parsers.
//! - [`reference`]: the table in docs/configuration.md, generated and checked.
//!
//! Precedence, highest first: a command-line flag, a web.config appSetting, the inherited
//! environment, the default. wfastcgi copied every appSetting into the process environment, so
//! an appSetting has always overridden an inherited variable; flags are new and win over both.
//!
//! Every error names the setting the way the user wrote it (`--threads` or `WFCGI_THREADS`),
//! the value, where it came from (the command line, a web.config file and line, or the
//! environment) and what to write instead.

mod apply;
#[cfg(test)]
mod reference;
pub(crate) mod table;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::webconfig::{self, WebConfig};
use wsgi::config::{BridgeConfig, HandlerSetting, SettingSource, VenvSetting};

pub(crate) use apply::check_log_filter;
#[cfg(test)]
use apply::{expand_variables, split_python_path};
pub(crate) use table::*;

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
    /// An environment variable IIS sets for the process: `<environmentVariables>` of its
    /// FastCGI application in applicationHost.config (as `wfcgi check` reads it).
    ApplicationHost(PathBuf),
    /// Nothing set it: the table's default value.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::WebConfig { path, line } => {
                write!(f, "web.config {} line {line}", path.display())
            }
            Origin::Environment => f.write_str("environment variable"),
            Origin::ApplicationHost(path) => {
                write!(f, "environmentVariables in {}", path.display())
            }
            Origin::Default => f.write_str("default"),
        }
    }
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
            Origin::ApplicationHost(path) => format!(
                "{} \"{}\" (environmentVariables in {})",
                self.name,
                self.text,
                path.display()
            ),
            Origin::Default => format!("{} \"{}\" (default)", self.name, self.text),
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
            Origin::ApplicationHost(path) => SettingSource::Setting(format!(
                "{} (environmentVariables in {})",
                self.name,
                path.display()
            )),
            Origin::Default => SettingSource::Default,
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
    /// Records a flag's value(s) for a setting. A switch given is recorded as "true".
    pub(crate) fn set(&mut self, name: &'static str, values: Vec<String>) {
        debug_assert!(setting(name).flag.is_some(), "{name} has no flag");
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
    /// The names IIS sets from applicationHost.config (see [`Environment::set_by_iis`]).
    by_iis: Vec<String>,
    apphost: Option<PathBuf>,
}

impl Environment {
    /// The process environment now. Names or values that are not Unicode are kept lossily:
    /// wfcgi's own settings are all Unicode text.
    pub(crate) fn capture() -> Self {
        Environment {
            by_iis: Vec::new(),
            apphost: None,
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
            by_iis: Vec::new(),
            apphost: None,
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

    /// Sets `name` (replacing it in any case on Windows) as IIS does for the process it
    /// starts, from the `<environmentVariables>` in `apphost`.
    pub(crate) fn set_by_iis(&mut self, name: &str, value: &str, apphost: &Path) {
        let same = |k: &String| k == name || (cfg!(windows) && k.eq_ignore_ascii_case(name));
        self.vars.retain(|(k, _)| !same(k));
        self.vars.push((name.to_string(), value.to_string()));
        self.by_iis.push(name.to_string());
        self.apphost = Some(apphost.to_path_buf());
    }

    /// Where the variable `name` comes from.
    fn origin(&self, name: &str) -> Origin {
        let by_iis = self
            .by_iis
            .iter()
            .any(|k| k == name || (cfg!(windows) && k.eq_ignore_ascii_case(name)));
        match &self.apphost {
            Some(path) if by_iis => Origin::ApplicationHost(path.clone()),
            _ => Origin::Environment,
        }
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
            let flag = setting(name)
                .flag
                .expect("only settings with flags are recorded");
            return Some(Value {
                name,
                text: values.join(","),
                origin: Origin::Flag(flag.long),
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
            origin: self.env.origin(name),
        })
    }

    /// The value by precedence, else the table's default value (if it has one).
    fn lookup_or_default(&self, name: &'static str) -> Option<Value> {
        self.lookup(name).or_else(|| match setting(name).default {
            table::Default::Value(text) => Some(Value {
                name,
                text: text.to_string(),
                origin: Origin::Default,
            }),
            table::Default::Text(_) => None,
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

/// `WSGI_RESTART_FILE_REGEX`, compiled.
#[derive(Debug, Clone)]
pub(crate) struct RestartFiles {
    /// Anchored at the start, like wfastcgi's `re.match`.
    pub regex: regex::Regex,
    /// Set by the user rather than wfastcgi's default: only then does it apply where wfastcgi
    /// did not run (a Unix web server's fd-0 process, `wfcgi serve`).
    pub explicit: bool,
    /// The value and where it came from, for log lines.
    pub described: String,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub bridge: BridgeConfig,
    /// Worker processes and their recycling (`wfcgi serve --processes`).
    pub workers: Workers,
    /// The FastCGI server's limits; see `server_config` for the whole server configuration.
    pub server: fastcgi::ServerConfig,
    /// Where `wfcgi serve` listens (the default unless set), and the value they came from.
    pub listen: Vec<fastcgi::ListenAddr>,
    pub listen_from: Option<Value>,
    pub socket_mode: Option<u32>,
    /// The scheduling policy of the server's threads (Linux).
    pub sched_policy: crate::sched::Policy,
    pub log_file: Option<PathBuf>,
    /// A tracing filter directive from `--log-level` / `WFCGI_LOG_LEVEL`, already validated.
    pub log_level: Option<String>,
    /// `None`: restarting on file changes is disabled (empty `WSGI_RESTART_FILE_REGEX`).
    pub restart_files: Option<RestartFiles>,
    /// appSettings to copy into the process environment, as wfastcgi did.
    pub environment: Vec<(String, String)>,
    /// To be logged once logging is up.
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// Worker processes under a supervisor, and when a worker is recycled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Workers {
    /// `None`: one process, no supervisor.
    pub processes: Option<usize>,
    /// Requests after which a worker is replaced.
    pub max_requests: Option<u64>,
    /// Up to this many more, chosen per worker.
    pub max_requests_jitter: u64,
    /// Resident memory past which a worker is replaced.
    pub max_rss_bytes: Option<u64>,
    /// `--reload`: workers are reloaded when app files change.
    pub reload: bool,
}

impl Settings {
    /// The FastCGI server's configuration: its limits, plus the shutdown grace and the
    /// capacity it advertises, which follow from the bridge's settings.
    pub(crate) fn server_config(&self) -> fastcgi::ServerConfig {
        fastcgi::ServerConfig {
            shutdown_grace: self.bridge.shutdown_grace,
            // Requests the bridge can hold: running plus queued. Web servers that ask
            // (GET_VALUES) then do not send more than the pool would refuse.
            advertised_max_requests: Some(self.bridge.threads + self.bridge.queue_len),
            io_threads: crate::io_threads(),
            ..self.server.clone()
        }
    }

    /// Whether `wfcgi serve` listens where it does because nothing said otherwise.
    pub(crate) fn listen_is_default(&self) -> bool {
        self.listen_from
            .as_ref()
            .is_none_or(|v| v.origin == Origin::Default)
    }
}

/// A resolution in progress: its inputs, and the settings so far. `apply` functions fill it.
pub(crate) struct Resolution<'a> {
    sources: &'a Sources<'a>,
    /// Anchors relative paths given as flags.
    cwd: &'a Path,
    /// Anchors relative paths from web.config or the environment.
    app_dir: &'a Path,
    settings: Settings,
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
    // Unreadable, it would look like a folder with no web.config and no app in it.
    if let Err(e) = std::fs::read_dir(&dir) {
        let problem = format!(
            "{} cannot be read by the user running wfcgi: {e}",
            dir.display()
        );
        let fix = if cfg!(windows) {
            format!(
                "give that user (under IIS, the app pool identity) read access: icacls \"{}\" /grant IIS_IUSRS:(OI)(CI)RX",
                dir.display()
            )
        } else {
            format!(
                "give that user read access: chmod o+rx {} (or a group it is in), or chown the folder to it",
                dir.display()
            )
        };
        return Err(match value {
            Some(value) => value.invalid(problem, fix),
            None => SettingsError::Conflict(format!("{problem}. Fix: {fix}")),
        });
    }
    Ok(dir)
}

/// Reads web.config in `app_dir` (if there is one) and resolves every setting. The error is
/// the one message to show.
pub(crate) fn load(
    flags: &Flags,
    env: &Environment,
    app_dir: &Path,
    cwd: &Path,
) -> Result<(Settings, Option<WebConfig>), String> {
    let web_config = match webconfig::find(app_dir) {
        Some(path) => {
            Some(webconfig::load(&path).map_err(|e| format!("cannot use web.config: {e}"))?)
        }
        None => None,
    };
    let sources = Sources {
        flags,
        web_config: web_config.as_ref(),
        env,
    };
    let mut settings = resolve(&sources, app_dir, cwd).map_err(|e| e.to_string())?;
    set_aside_venv_in_python(&mut settings, crate::invocation::current());
    Ok((settings, web_config))
}

/// Under the pip package (`python -m wfcgi`) the interpreter is the venv's own, started
/// before wfcgi: a venv setting (`WFCGI_VENV`, wfastcgi's `WSGI_ALT_VIRTUALENV_*`) cannot
/// change it. Naming that same venv is harmless (a note); naming another is a warning, since
/// the app would not run where the setting says.
fn set_aside_venv_in_python(settings: &mut Settings, invocation: &crate::invocation::Invocation) {
    if invocation.prefix.is_empty() {
        return;
    }
    let Some(venv) = settings.bridge.venv.take() else {
        return;
    };
    // The venv folder: the setting itself, or above its bin/python or bin/activate_this.py.
    let root = if venv.path.is_file() {
        venv.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&venv.path)
            .to_path_buf()
    } else {
        venv.path.clone()
    };
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let program = &invocation.program;
    let same = program.starts_with(&root)
        || program
            .parent()
            .and_then(Path::parent)
            .is_some_and(|own| canonical(own) == canonical(&root));
    if same {
        settings.notes.push(format!(
            "{} = {}: the venv of the Python running wfcgi ({}), already in use",
            venv.source,
            venv.path.display(),
            program.display()
        ));
    } else {
        settings.warnings.push(format!(
            "{} = {} is not used: this is the pip-installed wfcgi, running in the Python that started it ({}), whose venv is the one in use. Fix: remove the setting, or install wfcgi into that venv and start it from there ({} -m wfcgi)",
            venv.source,
            venv.path.display(),
            program.display(),
            root.join(if cfg!(windows) { "Scripts\\python.exe" } else { "bin/python" }).display()
        ));
    }
}

/// Resolves every setting: the handler and venv together, then every other setting in table
/// order, each from its value by precedence or else its default value.
pub(crate) fn resolve(
    sources: &Sources,
    app_dir: &Path,
    cwd: &Path,
) -> Result<Settings, SettingsError> {
    let mut r = Resolution {
        sources,
        cwd,
        app_dir,
        settings: Settings {
            bridge: BridgeConfig::new(app_dir.to_path_buf()),
            workers: Workers::default(),
            server: fastcgi::ServerConfig::default(),
            listen: Vec::new(),
            listen_from: None,
            socket_mode: None,
            sched_policy: crate::sched::Policy::Batch,
            log_file: None,
            log_level: None,
            restart_files: None,
            environment: Vec::new(),
            warnings: sources
                .web_config
                .map(|c| c.warnings.clone())
                .unwrap_or_default(),
            notes: Vec::new(),
        },
    };
    resolve_handler_and_venv(&mut r)?;
    for setting in SETTINGS {
        if let Apply::Each(apply) = setting.apply {
            if let Some(value) = sources.lookup_or_default(setting.name) {
                apply(&value, &mut r)?;
            }
        }
    }

    // Every appSetting but PYTHONPATH goes into the environment. PYTHONPATH stays out: the
    // embedded interpreter starts after the copy and would read it itself, putting the
    // unexpanded entries before the standard library; wfastcgi appended them to sys.path,
    // which `python_path` does.
    r.settings.environment = sources
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
    Ok(r.settings)
}

/// `WSGI_HANDLER`, `WFCGI_VENV` and the ptvs_virtualenv_proxy mapping
/// (`WSGI_ALT_VIRTUALENV_HANDLER`, `WSGI_ALT_VIRTUALENV_ACTIVATE_THIS`), which decide each
/// other.
fn resolve_handler_and_venv(r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let (sources, cwd, app_dir) = (r.sources, r.cwd, r.app_dir);
    let out = &mut r.settings;
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
    out.bridge.venv = venv.map(|value| VenvSetting {
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
            out.notes.push(format!(
                "{WSGI_HANDLER} is the ptvs_virtualenv_proxy: serving {ALT_HANDLER} = {}; \
                 wfcgi runs the virtualenv itself, ptvs_virtualenv_proxy.py is not needed",
                alt.text.trim()
            ));
            match (&out.bridge.venv, alt_activate) {
                (None, Some(activate)) if !activate.text.is_empty() => {
                    out.bridge.venv = Some(VenvSetting {
                        path: activate.path(cwd, app_dir),
                        source: activate.source(),
                    });
                }
                (None, _) => out.warnings.push(format!(
                    "{WSGI_HANDLER} is the ptvs_virtualenv_proxy but neither {ALT_ACTIVATE_THIS} \
                     nor --venv / {WFCGI_VENV} is set: running without a virtualenv"
                )),
                (Some(_), Some(activate)) => out.warnings.push(format!(
                    "{} is ignored: --venv / {WFCGI_VENV} is set",
                    activate.describe()
                )),
                (Some(_), None) => {}
            }
            out.bridge.handler = Some(HandlerSetting {
                path: alt.text.trim().to_string(),
                source: alt.source(),
            });
        }
        handler => {
            for value in [alt_handler, alt_activate].into_iter().flatten() {
                out.warnings.push(format!(
                    "{} is ignored: it is used only when {WSGI_HANDLER} is \
                     ptvs_virtualenv_proxy.get_virtualenv_handler() or get_venv_handler()",
                    value.describe()
                ));
            }
            out.bridge.handler = handler.map(|value| HandlerSetting {
                path: value.text.trim().to_string(),
                source: value.source(),
            });
        }
    }
    Ok(())
}

/// What the user meant for the settings that report a failure, read on their own when
/// resolution itself failed (a bad value elsewhere must not hide where the error goes).
#[derive(Debug, Default)]
pub(crate) struct Intended {
    pub log_file: Option<PathBuf>,
    pub debug_responses: bool,
}

impl Intended {
    /// From flags, the environment and (when `app_dir` is known and its web.config parses)
    /// web.config.
    pub(crate) fn read(
        flags: &Flags,
        env: &Environment,
        app_dir: Option<&Path>,
        cwd: &Path,
    ) -> Intended {
        let web_config = app_dir
            .and_then(webconfig::find)
            .and_then(|p| webconfig::load(&p).ok());
        let sources = Sources {
            flags,
            web_config: web_config.as_ref(),
            env,
        };
        Intended {
            log_file: sources
                .lookup(WSGI_LOG)
                .and_then(|v| v.log_path(cwd, app_dir.unwrap_or(cwd))),
            debug_responses: sources
                .lookup(WFCGI_DEBUG)
                .is_some_and(|v| apply::parse_bool(&v).unwrap_or(false)),
        }
    }
}

/// Logging before web.config is read (stdin mode): the level and log file from flags and the
/// environment. A relative log file is taken from the app directory when that is known from
/// flags or the environment, else from the current directory. An invalid level is left to the
/// full resolution to report.
pub(crate) fn early_logging(
    flags: &Flags,
    env: &Environment,
    cwd: &Path,
) -> (Option<String>, Option<PathBuf>) {
    let sources = Sources {
        flags,
        web_config: None,
        env,
    };
    let level = sources
        .lookup(WFCGI_LOG_LEVEL)
        .map(|v| v.text)
        .filter(|text| check_log_filter(text).is_ok());
    let app_dir = app_dir(flags, env, cwd, None).unwrap_or_else(|_| cwd.to_path_buf());
    let file = sources
        .lookup(WSGI_LOG)
        .and_then(|v| v.log_path(cwd, &app_dir));
    (level, file)
}

/// The site `wfcgi enable` writes a web.config for: `--app-dir` with `--handler` (and
/// `--log-file`, else `logs\wfcgi.log`). `None` without `--app-dir`, or for `disable`.
pub(crate) fn iis_site(
    flags: &Flags,
    cwd: &Path,
    enable: bool,
) -> Result<Option<crate::enable::Site>, String> {
    if !enable || flags.get(WFCGI_APP_DIR).is_none() {
        return Ok(None);
    }
    let Some(handler) = flags.get(WSGI_HANDLER).and_then(|v| v.first()) else {
        return Err(
            "wfcgi enable --app-dir writes the site's web.config, which needs the app. \
             Fix: add --handler (e.g. --handler django.core.wsgi.get_wsgi_application())"
                .to_string(),
        );
    };
    // The same resolution and message as serving's, from the flag alone (the site is named
    // on the command line).
    let app_dir = app_dir(flags, &Environment::default(), cwd, None).map_err(|e| e.to_string())?;
    Ok(Some(crate::enable::Site {
        app_dir,
        handler: handler.clone(),
        log_file: flags.get(WSGI_LOG).and_then(|v| v.first()).cloned(),
    }))
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

/// `ptvs_virtualenv_proxy.get_virtualenv_handler()` or `...get_venv_handler()`, with or
/// without the call parentheses.
pub(crate) fn is_virtualenv_proxy(handler: &str) -> bool {
    let Some(function) = handler.trim().strip_prefix("ptvs_virtualenv_proxy.") else {
        return false;
    };
    let function = function.strip_suffix("()").unwrap_or(function);
    matches!(function, "get_virtualenv_handler" | "get_venv_handler")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webconfig::AppSetting;
    use std::time::Duration;

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
        assert_eq!(s.bridge.threads, 32);
        assert_eq!(s.bridge.app_dir, Path::new("/site"));
        assert!(!s.bridge.debug_responses);
        assert_eq!(s.bridge.max_body_bytes, None);
        assert!(s.listen_is_default());
        assert!(s.log_file.is_none());
        let restart = s.restart_files.expect("default regex");
        assert!(!restart.explicit);
        let regex = restart.regex;
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
            s.listen,
            [
                "127.0.0.1:9001".parse::<fastcgi::ListenAddr>().unwrap(),
                "unix:/run/wfcgi.sock".parse().unwrap()
            ]
        );
        assert_eq!(s.socket_mode, Some(0o660));
        assert!(s.restart_files.is_none(), "empty disables");
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
                "WSGI_PTVSD_SECRET \"s\" (web.config /site/web.config line 3) is obsolete and ignored: debugpy (ptvsd's successor, WFCGI_DEBUGPY) has no secret: listen on 127.0.0.1 and tunnel to it",
                "WSGI_PTVSD_ADDRESS \"0.0.0.0:5678\" (environment variable) is obsolete (ptvsd): taken as WFCGI_DEBUGPY=\"0.0.0.0:5678\"; debugpy, its successor, must be installed in the venv. Set WFCGI_DEBUGPY instead",
                "APPINSIGHTS_INSTRUMENTATIONKEY (web.config /site/web.config line 4) is ignored: wfastcgi's Application Insights wrapper is deprecated; add OpenTelemetry middleware to the app instead",
            ]
        );
        let debugpy = s.bridge.debugpy.expect("mapped onto WFCGI_DEBUGPY");
        assert_eq!((debugpy.host.as_str(), debugpy.port), ("0.0.0.0", 5678));
        let s = Case {
            flags: &[],
            web: &[(WSGI_RESTART_FILE_REGEX, r".*\.py$")],
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let restart = s.restart_files.expect("regex");
        assert!(restart.explicit);
        assert_eq!(
            restart.described,
            r#"WSGI_RESTART_FILE_REGEX ".*\.py$" (web.config /site/web.config line 3)"#
        );
        assert!(restart.regex.is_match("a/b.py") && !restart.regex.is_match("a/b.pyc"));
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
             "invalid --threads \"abc\" (command line): not a whole number. Fix: use a whole number of Python threads from 1 to 1024, e.g. 32"),
            ("threads zero (web.config)", Case { flags: &[], web: &[(WFCGI_THREADS, "0")], env: NONE },
             "invalid WFCGI_THREADS \"0\" (web.config /site/web.config line 3): out of range 1-1024. Fix: use a whole number of Python threads from 1 to 1024, e.g. 32"),
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
            ("sched policy", Case { flags: &[], web: &[(WFCGI_SCHED_POLICY, "fifo")], env: NONE },
             "invalid WFCGI_SCHED_POLICY \"fifo\" (web.config /site/web.config line 3): not a scheduling policy. Fix: use batch or normal"),
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
            format!(
                "invalid --app-dir \"/definitely/not/here\" (command line): {} is not a directory. Fix: give an existing folder",
                // "/definitely/not/here" on Unix; on Windows on the current drive.
                tmp.join(Path::new("/definitely/not/here")).display()
            )
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
            format!(
                "the app directory {} does not exist. Fix: pass --app-dir or set WFCGI_APP_DIR",
                tmp.join(Path::new("/definitely/not/here")).display()
            )
        );
    }

    #[test]
    fn default_values_match_the_libraries_defaults() {
        // The table's defaults are what the binary uses; the bridge's and the server's own
        // defaults (for library users and tests) must not drift from them.
        let s = Case {
            flags: &[],
            web: NONE,
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        let bridge = BridgeConfig::new(PathBuf::from("/site"));
        let server = fastcgi::ServerConfig::default();
        assert_eq!(s.bridge.threads, bridge.threads);
        assert_eq!(s.bridge.queue_len, bridge.queue_len);
        assert_eq!(s.bridge.spool_threshold, bridge.spool_threshold);
        assert_eq!(s.bridge.shutdown_grace, bridge.shutdown_grace);
        assert_eq!(s.bridge.max_body_bytes, bridge.max_body_bytes);
        assert_eq!(s.bridge.debug_responses, bridge.debug_responses);
        assert_eq!(s.bridge.multiprocess, bridge.multiprocess);
        assert_eq!(
            s.bridge.allow_path_info_for_script_mappings,
            bridge.allow_path_info_for_script_mappings
        );
        assert_eq!(s.server.max_connections, server.max_connections);
        assert_eq!(
            s.server.max_requests_per_connection,
            server.max_requests_per_connection
        );
        assert_eq!(s.server.max_params_bytes, server.max_params_bytes);
        assert_eq!(s.server.params_timeout, server.params_timeout);
        assert_eq!(s.server.idle_timeout, server.idle_timeout);
        assert_eq!(
            s.listen,
            ["127.0.0.1:9000".parse::<fastcgi::ListenAddr>().unwrap()]
        );
    }

    #[test]
    fn every_setting_has_one_entry_and_a_way_to_apply() {
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[i + 1..]
                    .iter()
                    .all(|other| !other.name.eq_ignore_ascii_case(setting.name)),
                "{} is in the table twice",
                setting.name
            );
            if let (Apply::Rule(_), table::Default::Value(_)) = (setting.apply, setting.default) {
                panic!(
                    "{}: a default value is applied only by Apply::Each",
                    setting.name
                );
            }
            if let Some(flag) = setting.flag {
                assert!(flag.long.starts_with("--"), "{}", flag.long);
            }
        }
    }

    #[test]
    fn listen_addresses() {
        let s = Case {
            flags: &[(WFCGI_LISTEN, "[::1]:9001")],
            web: NONE,
            env: NONE,
        }
        .resolve()
        .expect("resolves");
        assert!(!s.listen_is_default());
        assert_eq!(s.listen.len(), 1);
        let e = Case {
            flags: &[],
            web: &[(WFCGI_LISTEN, "127.0.0.1:9000,localhost")],
            env: NONE,
        }
        .resolve()
        .expect_err("no port")
        .to_string();
        assert_eq!(
            e,
            "invalid WFCGI_LISTEN \"127.0.0.1:9000,localhost\" (web.config /site/web.config line 3): \"localhost\": there is no port. Fix: give HOST:PORT or unix:/path, e.g. 127.0.0.1:9000"
        );
    }
}
