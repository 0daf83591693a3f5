//! How each setting's value takes effect: one function per `Apply::Each` entry of the table,
//! and the parsers they share. Each is handed the user's value, or the table's default value
//! when the user set none, so that a default is parsed exactly as a user's value would be.

use std::path::PathBuf;
use std::time::Duration;

use super::table::{self, *};
use super::{Origin, Resolution, RestartFiles, SettingsError, Value};

/// The most Python threads accepted: far beyond what the GIL lets run usefully at once, low
/// enough to catch a typo (`80000`).
const MAX_THREADS: usize = 1024;

/// The most worker processes accepted: each holds an interpreter and the app, so far more than
/// any machine's cores is a typo.
const MAX_PROCESSES: usize = 256;

pub(super) fn python_path(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    // Only from a flag or web.config. An inherited PYTHONPATH is Python's own business (the
    // interpreter reads it at start-up); re-adding it would list it twice.
    if matches!(
        value.origin,
        Origin::Environment | Origin::ApplicationHost(_)
    ) {
        return Ok(());
    }
    let (expanded, missing) = expand_variables(&value.text, |name| r.sources.variable(name));
    for name in missing {
        r.settings.warnings.push(format!(
            "{} refers to %{name}%, which is not set: it expands to nothing",
            value.describe()
        ));
    }
    let base = match value.origin {
        Origin::Flag(_) => r.cwd,
        _ => r.app_dir,
    };
    r.settings.bridge.python_path = split_python_path(&expanded)
        .into_iter()
        .map(|part| base.join(part))
        .collect();
    Ok(())
}

pub(super) fn threads(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.threads = parse_count(value, 1, MAX_THREADS, "Python threads")?;
    Ok(())
}

pub(super) fn queue_len(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.queue_len = parse_count(value, 1, 1_000_000, "queued requests")?;
    Ok(())
}

pub(super) fn debug(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let on = parse_bool(value)?;
    r.settings.bridge.debug_responses = on;
    if on {
        r.settings.warnings.push(format!(
            "{}: tracebacks and start-up errors are shown to every visitor; do not leave \
             this on in production",
            value.describe()
        ));
    }
    Ok(())
}

pub(super) fn multiprocess(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.multiprocess = parse_bool(value)?;
    Ok(())
}

pub(super) fn max_body_bytes(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.max_body_bytes = match value.text.trim().to_ascii_lowercase().as_str() {
        "" | "none" | "unlimited" => None,
        _ => match parse_bytes(value)? {
            0 => {
                return Err(value.invalid(
                    "0 would refuse every request body",
                    "use a size such as 10M, or 'none' for no limit",
                ))
            }
            n => Some(n),
        },
    };
    Ok(())
}

pub(super) fn spool_threshold(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let bytes = parse_bytes(value)?;
    r.settings.bridge.spool_threshold = usize::try_from(bytes)
        .map_err(|_| value.invalid("too large for this machine", "use a size such as 1M"))?;
    Ok(())
}

pub(super) fn shutdown_grace(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.shutdown_grace = seconds(parse_count(value, 0, 3600, "seconds")?);
    Ok(())
}

pub(super) fn request_timeout(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let secs = parse_count(value, 0, 86_400, "seconds")?;
    r.settings.bridge.request_timeout = (secs > 0).then(|| seconds(secs));
    Ok(())
}

pub(super) fn body_timeout(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let secs = parse_count(value, 0, 86_400, "seconds")?;
    r.settings.bridge.body_timeout = (secs > 0).then(|| seconds(secs));
    Ok(())
}

pub(super) fn processes(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.workers.processes = Some(parse_count_like(
        value,
        1,
        MAX_PROCESSES,
        "worker processes",
        "2",
    )?);
    Ok(())
}

pub(super) fn reload(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let on = value.text.trim().is_empty() || parse_bool(value)?;
    r.settings.workers.reload = on;
    if on && r.settings.workers.processes.is_none() {
        // Reloading replaces worker processes: one, unless more were asked for.
        r.settings.workers.processes = Some(1);
        r.settings.notes.push(format!(
            "{} runs the app in a worker process under a supervisor (as --processes 1 would), so that a new one can load the changed code before the old one stops",
            value.describe()
        ));
    }
    Ok(())
}

pub(super) fn max_requests(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let n = parse_count_like(value, 0, 1_000_000_000, "requests", "10000")?;
    r.settings.workers.max_requests = (n > 0).then_some(n as u64);
    if n > 0 {
        needs_processes(value, r);
    }
    Ok(())
}

pub(super) fn max_requests_jitter(
    value: &Value,
    r: &mut Resolution<'_>,
) -> Result<(), SettingsError> {
    r.settings.workers.max_requests_jitter =
        parse_count_like(value, 0, 1_000_000_000, "requests", "1000")? as u64;
    Ok(())
}

pub(super) fn max_rss_bytes(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.workers.max_rss_bytes = match value.text.trim().to_ascii_lowercase().as_str() {
        "" | "none" | "unlimited" => None,
        _ => match parse_bytes(value)? {
            n if n < 1 << 20 => {
                return Err(value.invalid(
                    "below 1M: no Python process is that small",
                    "use a size such as 512M, or 'none' for no limit",
                ))
            }
            n => Some(n),
        },
    };
    if r.settings.workers.max_rss_bytes.is_some() {
        needs_processes(value, r);
    }
    Ok(())
}

/// Recycling replaces a worker: one process alone has nothing to replace it.
fn needs_processes(value: &Value, r: &mut Resolution<'_>) {
    if r.settings.workers.processes.is_none() {
        r.settings.warnings.push(format!(
            "{} is ignored without {WFCGI_PROCESSES} (--processes): a single process has              nothing to take over from it. Add --processes 1 or more",
            value.describe()
        ));
    }
}

pub(super) fn script_name(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let text = value.text.trim().trim_end_matches('/');
    if !text.is_empty() && !text.starts_with('/') {
        return Err(value.invalid(
            "a mount prefix starts with '/'",
            format!("write it as /{text}"),
        ));
    }
    r.settings.bridge.script_name = (!text.is_empty()).then(|| text.to_string());
    Ok(())
}

pub(super) fn allow_path_info(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    // wfastcgi looked only at presence; an explicit "false" meaning true would surprise.
    r.settings.bridge.allow_path_info_for_script_mappings =
        value.text.trim().is_empty() || parse_bool(value)?;
    Ok(())
}

pub(super) fn log_file(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.log_file = value.log_path(r.cwd, r.app_dir);
    Ok(())
}

pub(super) fn log_level(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    check_log_filter(value.text.trim()).map_err(|problem| {
        value.invalid(
            problem,
            "use error, warn, info, debug or trace, or a filter such as info,python.stdout=off",
        )
    })?;
    r.settings.log_level = Some(value.text.trim().to_string());
    Ok(())
}

pub(super) fn access_log(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.bridge.access_log = match value.text.trim().to_ascii_lowercase().as_str() {
        "" | "off" | "0" | "false" | "no" => wsgi::AccessLog::Off,
        "text" | "on" | "1" | "true" | "yes" => wsgi::AccessLog::Text,
        "json" => wsgi::AccessLog::Json,
        _ => return Err(value.invalid("not an access log form", "use off, text or json")),
    };
    Ok(())
}

pub(super) fn sched_policy(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.sched_policy = match value.text.trim().to_ascii_lowercase().as_str() {
        "batch" => crate::sched::Policy::Batch,
        "normal" => crate::sched::Policy::Normal,
        _ => return Err(value.invalid("not a scheduling policy", "use batch or normal")),
    };
    Ok(())
}

pub(super) fn listen(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let fix = || {
        format!(
            "give HOST:PORT or unix:/path, e.g. {}",
            table::default_value(WFCGI_LISTEN)
        )
    };
    let mut addrs = Vec::new();
    for part in value
        .text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let addr = part
            .parse::<fastcgi::ListenAddr>()
            .map_err(|e| value.invalid(format!("{part:?}: {}", e.why), fix()))?;
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return Err(value.invalid("no address", fix()));
    }
    r.settings.listen = addrs;
    r.settings.listen_from = Some(value.clone());
    Ok(())
}

pub(super) fn socket_mode(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let fix = "use octal permissions such as 0660 (owner and group read/write)";
    let mode = u32::from_str_radix(value.text.trim(), 8)
        .map_err(|_| value.invalid("not an octal number", fix))?;
    if mode > 0o777 {
        return Err(value.invalid("above 0777", fix));
    }
    r.settings.socket_mode = Some(mode);
    Ok(())
}

pub(super) fn max_connections(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.server.max_connections = parse_count(value, 1, 1_000_000, "connections")?;
    Ok(())
}

pub(super) fn max_requests_per_connection(
    value: &Value,
    r: &mut Resolution<'_>,
) -> Result<(), SettingsError> {
    r.settings.server.max_requests_per_connection =
        parse_count(value, 1, 65_535, "requests per connection")?;
    Ok(())
}

pub(super) fn max_params_bytes(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let bytes = parse_bytes(value)?;
    if !(1024..=64 * 1024 * 1024).contains(&bytes) {
        return Err(value.invalid(
            "out of range",
            format!(
                "use a size from 1K to 64M, e.g. {}",
                table::default_value(WFCGI_MAX_PARAMS_BYTES)
            ),
        ));
    }
    r.settings.server.max_params_bytes = bytes as usize;
    Ok(())
}

pub(super) fn params_timeout(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    r.settings.server.params_timeout = seconds(parse_count(value, 1, 3600, "seconds")?);
    Ok(())
}

pub(super) fn idle_timeout(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let secs = parse_count(value, 0, 86_400, "seconds")?;
    r.settings.server.idle_timeout = (secs > 0).then(|| seconds(secs));
    Ok(())
}

pub(super) fn web_server_addrs(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let mut allowed = Vec::new();
    for part in value
        .text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let ip = part.parse::<std::net::IpAddr>().map_err(|_| {
            value.invalid(
                format!("{part:?} is not an IP address"),
                "list IP addresses separated by commas, e.g. 127.0.0.1,::1",
            )
        })?;
        allowed.push(ip);
    }
    r.settings.server.allowed_peers = (!allowed.is_empty()).then_some(allowed);
    Ok(())
}

pub(super) fn restart_file_regex(
    value: &Value,
    r: &mut Resolution<'_>,
) -> Result<(), SettingsError> {
    if value.text.is_empty() {
        r.settings.restart_files = None;
        return Ok(());
    }
    // `re.match` semantics: anchored at the start of the relative path.
    let regex = regex::Regex::new(&format!("^(?:{})", value.text)).map_err(|e| {
        value.invalid(
            format!("not a valid regular expression: {e}"),
            "wfcgi uses Rust regex syntax (no look-around or back-references); \
             leave it empty to disable restarts",
        )
    })?;
    r.settings.restart_files = Some(RestartFiles {
        regex,
        explicit: value.origin != Origin::Default,
        described: value.describe(),
    });
    Ok(())
}

pub(super) fn debugpy(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let text = value.text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("off") {
        r.settings.bridge.debugpy = None;
        return Ok(());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host.trim_matches(|c| c == '[' || c == ']'), port),
        None => ("127.0.0.1", text),
    };
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(|| {
        value.invalid(
            "not a port (1-65535)",
            "write PORT or HOST:PORT, e.g. 5678 or 0.0.0.0:5678",
        )
    })?;
    let wait = r.settings.bridge.debugpy.as_ref().is_some_and(|d| d.wait);
    r.settings.bridge.debugpy = Some(wsgi::Debugpy {
        host: if host.is_empty() {
            "127.0.0.1".into()
        } else {
            host.into()
        },
        port,
        wait,
        described: value.describe(),
    });
    Ok(())
}

pub(super) fn debugpy_wait(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    let on = value.text.trim().is_empty() || parse_bool(value)?;
    match r.settings.bridge.debugpy.as_mut() {
        Some(d) => d.wait = on,
        None if on => r.settings.warnings.push(format!(
            "{} is ignored without WFCGI_DEBUGPY (--debugpy PORT): there is no debugger to wait for",
            value.describe()
        )),
        None => {}
    }
    Ok(())
}

pub(super) fn obsolete_ptvsd(value: &Value, r: &mut Resolution<'_>) -> Result<(), SettingsError> {
    if value.name == WSGI_PTVSD_ADDRESS && r.settings.bridge.debugpy.is_none() {
        let text = value.text.trim().trim_start_matches("tcp://");
        let text = text.rsplit_once('@').map_or(text, |(_, addr)| addr);
        let mapped = Value {
            text: text.to_string(),
            ..value.clone()
        };
        debugpy(&mapped, r)?;
        r.settings.warnings.push(format!(
            "{} is obsolete (ptvsd): taken as WFCGI_DEBUGPY={text:?}; debugpy, its successor, must be installed in the venv. Set WFCGI_DEBUGPY instead",
            value.describe()
        ));
        return Ok(());
    }
    r.settings.warnings.push(format!(
        "{} is obsolete and ignored: {}",
        value.describe(),
        if value.name == WSGI_PTVSD_SECRET {
            "debugpy (ptvsd's successor, WFCGI_DEBUGPY) has no secret: listen on 127.0.0.1 and tunnel to it"
        } else {
            "WFCGI_DEBUGPY is set and wins"
        }
    ));
    Ok(())
}

pub(super) fn obsolete_appinsights(
    value: &Value,
    r: &mut Resolution<'_>,
) -> Result<(), SettingsError> {
    r.settings.warnings.push(format!(
        "{} ({}) is ignored: wfastcgi's Application Insights wrapper is deprecated; add \
         OpenTelemetry middleware to the app instead",
        value.name, value.origin
    ));
    Ok(())
}

fn seconds(n: usize) -> Duration {
    Duration::from_secs(n as u64)
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

/// A whole number in `min..=max`; the fix's example is the setting's default.
fn parse_count(value: &Value, min: usize, max: usize, what: &str) -> Result<usize, SettingsError> {
    parse_count_like(value, min, max, what, table::default_value(value.name))
}

/// A whole number in `min..=max`, with `example` in the fix.
fn parse_count_like(
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

pub(super) fn parse_bool(value: &Value) -> Result<bool, SettingsError> {
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

impl Value {
    /// A log file path: empty means none.
    pub(super) fn log_path(
        &self,
        cwd: &std::path::Path,
        app_dir: &std::path::Path,
    ) -> Option<PathBuf> {
        (!self.text.is_empty()).then(|| self.path(cwd, app_dir))
    }
}
