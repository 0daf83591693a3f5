//! `wfcgi check`: everything a real start would do, on one screen, with each problem and its
//! fix. The settings are resolved exactly as serving resolves them (flags, `--app-dir` and its
//! web.config, the environment): each with its value and where it came from. Then the Python
//! in use and its venv (with the version check), `sys.path`, whether the WSGI handler imports
//! (with the explanation the log would give), and one request (`GET /`, or `--path`) through
//! the app in this process: its status, headers, first bytes and time. And whether the user
//! that serves (on Windows, the IIS app pool's identity) can read the app directory,
//! web.config and `sys.path`, and write `WSGI_LOG` (`readable`).
//!
//! Exit status 0 when all is well, 1 otherwise. `--json` prints one JSON object instead, for
//! scripts: `{"ok": bool, "sections": [{"name", "lines": [...]}], "problems": [...]}`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::settings::{self, Environment, Flags, Sources, SETTINGS};

/// What `wfcgi check` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Options {
    pub path: Option<String>,
    pub json: bool,
    /// IIS's applicationHost.config, to check the site's scriptProcessor against.
    pub apphostconfig: Option<std::path::PathBuf>,
}

/// The report, built section by section.
#[derive(Default)]
struct Report {
    sections: Vec<(&'static str, Vec<String>)>,
    problems: Vec<String>,
}

impl Report {
    fn section(&mut self, name: &'static str, lines: Vec<String>) {
        self.sections.push((name, lines));
    }

    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    fn print(&self, json: bool) -> ExitCode {
        let ok = self.problems.is_empty();
        if json {
            let mut out = format!("{{\"ok\":{ok},\"sections\":[");
            for (i, (name, lines)) in self.sections.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                wsgi::access::json_string(&mut out, name);
                out.push_str(",\"lines\":[");
                for (j, line) in lines.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    wsgi::access::json_string(&mut out, line);
                }
                out.push_str("]}");
            }
            out.push_str("],\"problems\":[");
            for (i, problem) in self.problems.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                wsgi::access::json_string(&mut out, problem);
            }
            out.push_str("]}");
            println!("{out}");
        } else {
            for (name, lines) in &self.sections {
                println!("{name}");
                for line in lines {
                    for (i, part) in line.lines().enumerate() {
                        println!("{}{part}", if i == 0 { "  " } else { "    " });
                    }
                }
                println!();
            }
            if ok {
                println!("All is well.");
            } else {
                println!("Problems ({}):", self.problems.len());
                for problem in &self.problems {
                    for (i, part) in problem.lines().enumerate() {
                        println!("{}{part}", if i == 0 { "  - " } else { "    " });
                    }
                }
            }
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

pub(crate) fn run(options: &Options, flags: &Flags, env: &Environment, cwd: &Path) -> ExitCode {
    let mut report = Report::default();
    check(&mut report, options, flags, env, cwd);
    report.print(options.json)
}

fn check(report: &mut Report, options: &Options, flags: &Flags, env: &Environment, cwd: &Path) {
    let app_dir = match settings::app_dir(flags, env, cwd, None) {
        Ok(dir) => dir,
        Err(e) => return report.problem(e.to_string()),
    };
    // Under IIS, the process starts with the environment variables of its registered FastCGI
    // application (applicationHost.config): the settings see them as a real start would.
    let mut env = env.clone();
    let mut iis_lines = Vec::new();
    if let Some(config) = crate::webconfig::find(&app_dir) {
        if let Some((processor, vars)) =
            crate::iis_traps::process_environment(&config, options.apphostconfig.as_deref())
        {
            let apphost = options
                .apphostconfig
                .clone()
                .unwrap_or_else(crate::iis_traps::default_apphost);
            if !vars.is_empty() {
                let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
                iis_lines.push(format!(
                    "IIS starts \"{processor}\" with the environmentVariables in {}: {}",
                    apphost.display(),
                    names.join(", ")
                ));
            }
            for (name, value) in &vars {
                env.set_by_iis(name, value, &apphost);
                std::env::set_var(name, value);
            }
        }
    }
    let env = &env;
    let (settings, web_config) = match settings::load(flags, env, &app_dir, cwd) {
        Ok(loaded) => loaded,
        Err(message) => return report.problem(message),
    };
    // The settings, each with where it came from.
    let sources = Sources {
        flags,
        web_config: web_config.as_ref(),
        env,
    };
    let mut lines = vec![format!("app directory: {}", app_dir.display())];
    lines.push(match &web_config {
        Some(config) => format!(
            "web.config: {} ({} appSettings)",
            config.path.display(),
            config.app_settings.len()
        ),
        None => "web.config: none in the app directory".to_string(),
    });
    for setting in SETTINGS {
        let line = match sources.lookup(setting.name) {
            Some(value) => format!("{} = {:?} ({})", setting.name, value.text, value.origin),
            None => format!("{} = {} (default)", setting.name, setting.default.text()),
        };
        lines.push(line);
    }
    report.section("Settings", lines);
    if !settings.warnings.is_empty() || !settings.notes.is_empty() {
        let mut notes: Vec<String> = settings.notes.clone();
        for warning in &settings.warnings {
            notes.push(format!("warning: {warning}"));
            report.problem(warning.clone());
        }
        report.section("Notes", notes);
    }
    // The IIS site's traps, when web.config has a FastCGI handler (or on Windows, always).
    if let Some(config) = &web_config {
        let (traps, notes) =
            crate::iis_traps::check(&config.path, options.apphostconfig.as_deref());
        if !traps.is_empty() || !notes.is_empty() || !iis_lines.is_empty() {
            let mut lines = iis_lines;
            lines.extend(traps.iter().map(|t| t.text.clone()));
            lines.extend(notes.iter().map(|n| format!("note: {n}")));
            report.section("IIS site", lines);
            for trap in traps {
                report.problem(trap.text);
            }
        }
    }
    settings::apply_environment(&settings);
    // The app's own log (a traceback) goes to stderr, the report to stdout.
    let _logging = crate::logging::Logging::init(settings.log_level.as_deref());

    // Python, and the venv (its version check is part of the start).
    let bridge = match wsgi::Bridge::start(settings.bridge.clone()) {
        Ok(bridge) => bridge,
        Err(e) => {
            report.section("Python", vec![format!("cannot start: {e}")]);
            return report.problem(e.to_string());
        }
    };
    match bridge.python_info() {
        Ok(info) => {
            let mut lines = vec![
                format!("version: {}", info.version.replace('\n', " ")),
                format!("executable: {}", info.executable),
                format!(
                    "venv: {}",
                    if info.prefix != info.base_prefix {
                        info.prefix.clone()
                    } else {
                        "none (the Python installation itself)".into()
                    }
                ),
            ];
            if let Some(lib) = info.library {
                lines.push(format!("library: {}", lib.display()));
            }
            report.section("Python", lines);
            // What the user that serves must read (and write).
            let mut needs = vec![crate::readable::Need {
                what: "the app directory".into(),
                path: app_dir.clone(),
                write: false,
            }];
            if let Some(config) = &web_config {
                needs.push(crate::readable::Need {
                    what: "web.config".into(),
                    path: config.path.clone(),
                    write: false,
                });
            }
            for entry in &info.sys_path {
                let path = std::path::PathBuf::from(entry);
                if path.exists() && !needs.iter().any(|n| n.path == path) {
                    needs.push(crate::readable::Need {
                        what: "on sys.path".into(),
                        path,
                        write: false,
                    });
                }
            }
            if let Some(log) = &settings.log_file {
                needs.push(crate::readable::Need {
                    what: "WSGI_LOG".into(),
                    path: log.clone(),
                    write: true,
                });
            }
            report.section("sys.path", info.sys_path);
            let found = crate::readable::check(&needs, &app_dir, options.apphostconfig.as_deref());
            report.section("Access", found.lines);
            for problem in found.problems {
                report.problem(problem);
            }
        }
        Err(e) => report.problem(format!("cannot read sys: {e}")),
    }

    // The handler, as a request's load would report it.
    match bridge.load_app() {
        Ok(()) => report.section(
            "WSGI handler",
            vec![match &settings.bridge.handler {
                Some(h) => format!("{} = {} imports", h.source, h.path),
                None => "none set: the built-in demo app (set WSGI_HANDLER or --handler)".into(),
            }],
        ),
        Err(e) => {
            report.section("WSGI handler", vec![e.text.clone()]);
            return report.problem(e.text);
        }
    }

    // One request through the app.
    let path = options.path.clone().unwrap_or_else(|| "/".into());
    let params = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path.as_str()),
        ("QUERY_STRING", ""),
        ("REQUEST_URI", path.as_str()),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "localhost"),
    ];
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    let started = Instant::now();
    let (stdout, _) = bridge.request(fastcgi::Params::from_pairs(pairs), bytes::Bytes::new());
    let took = started.elapsed();
    let mut lines = Vec::new();
    match fastcgi::client::CgiResponse::parse(&stdout) {
        Ok(Some(response)) => {
            lines.push(format!(
                "GET {path}: {} in {:.1} ms",
                response.status,
                took.as_secs_f64() * 1000.0
            ));
            for header in String::from_utf8_lossy(response.head).lines() {
                lines.push(format!("  {}", header.trim_end()));
            }
            let first = &response.body[..response.body.len().min(200)];
            lines.push(format!(
                "body ({} bytes): {:?}",
                response.body.len(),
                String::from_utf8_lossy(first)
            ));
            if response.status >= 500 {
                report.problem(format!(
                    "GET {path} answered {}: the app's traceback is in the log (stderr, or WSGI_LOG)",
                    response.status
                ));
            }
        }
        _ => {
            lines.push(format!("GET {path}: no CGI response"));
            report.problem(format!("GET {path} got no response from the app"));
        }
    }
    report.section("Request", lines);
}
