//! The command line, built from the settings table: every flag, its help line (naming the
//! setting it overrides and its default) and the list of settings without a flag come from
//! `settings::SETTINGS`. Flags only record what was typed; `settings` resolves them against
//! web.config and the environment.

use clap::{Arg, ArgAction, ArgMatches};

use crate::settings::{Flags, Takes, SETTINGS};

/// What the command line asked for.
#[derive(Debug)]
pub(crate) struct Cli {
    pub command: Option<Command>,
    /// The values of every flag given, by setting name.
    pub flags: Flags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Listen on addresses of its own.
    Serve,
    /// Register with (or remove from) IIS: `enable` / `disable`.
    Iis(crate::enable::Options),
    /// One request, in-process or to a running server.
    Request(crate::request::Options),
    /// Everything a start would do, reported.
    Check(crate::check::Options),
}

fn check_command() -> clap::Command {
    clap::Command::new("check")
        .about(
            "Check the setup as a real start would resolve it: each setting and where it came \
             from, the Python and venv, sys.path, the WSGI handler's import, and one request \
             through the app; each problem with its fix. Exit status 0 when all is well, else 1",
        )
        .arg(
            Arg::new("path")
                .long("path")
                .value_name("PATH")
                .help("the request to try [default: /]"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("one JSON object: {ok, sections, problems}"),
        )
        .arg(
            Arg::new("apphostconfig")
                .long("apphostconfig")
                .value_name("FILE")
                .help("IIS's applicationHost.config, to check the site's scriptProcessor against [default on Windows: %windir%\\System32\\inetsrv\\config\\applicationHost.config]"),
        )
}

fn request_command() -> clap::Command {
    clap::Command::new("request")
        .about(
            "Send one request through the configured app, in this process (no server needed), or \
             with --connect to a running FastCGI server; print the response like curl -i. Exit \
             status: 0, 1 for a 5xx, 3 when no response came",
        )
        .arg(
            Arg::new("path")
                .value_name("PATH")
                .default_value("/")
                .help("the path, with an optional ?query"),
        )
        .arg(
            Arg::new("method")
                .short('X')
                .long("request")
                .value_name("METHOD")
                .help("the method [default: GET, or POST with -d]"),
        )
        .arg(
            Arg::new("header")
                .short('H')
                .long("header")
                .value_name("NAME: VALUE")
                .action(ArgAction::Append)
                .help("a request header (repeatable)"),
        )
        .arg(
            Arg::new("data")
                .short('d')
                .long("data")
                .value_name("DATA")
                .help("the body: text, @file, or - for standard input"),
        )
        .arg(
            Arg::new("query")
                .long("query")
                .value_name("QUERY")
                .help("the query string (instead of ?query in PATH)"),
        )
        .arg(Arg::new("connect").long("connect").value_name("ADDR").help(
            "a running FastCGI server: HOST:PORT, unix:/path, or on Windows \\\\.\\pipe\\NAME",
        ))
}

/// `enable` or `disable`, with the arguments they share.
fn iis_command(name: &'static str, about: &'static str, enable: bool) -> clap::Command {
    let defaults = crate::enable::Options::default();
    let mut cmd = clap::Command::new(name)
        .about(about)
        .arg(
            Arg::new("appcmd")
                .long("appcmd")
                .value_name("PATH")
                .help("appcmd.exe [default: %windir%\\system32\\inetsrv\\appcmd.exe]"),
        )
        .arg(
            Arg::new("apphostconfig")
                .long("apphostconfig")
                .value_name("FILE")
                .help("IIS Express: its applicationhost.config"),
        )
        .arg(
            Arg::new("dry-run")
                .long("dry-run")
                .action(ArgAction::SetTrue)
                .help("print the appcmd command (and the web.config) instead of running it"),
        );
    if enable {
        cmd = cmd
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(ArgAction::SetTrue)
                    .help("replace an existing web.config in --app-dir"),
            )
            .arg(number_arg(
                "signal-before-terminate-secs",
                "IIS's wait after its shutdown event (let running requests finish)",
                defaults.signal_before_terminate_secs,
            ))
            .arg(number_arg(
                "instance-max-requests",
                "requests before IIS recycles the process (IIS's default 200 restarts Python often)",
                defaults.instance_max_requests,
            ))
            .arg(number_arg(
                "activity-timeout-secs",
                "IIS kills a request silent for this long (IIS's default is 70)",
                defaults.activity_timeout_secs,
            ));
    }
    cmd
}

fn number_arg(name: &'static str, help: &'static str, default: u32) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("N")
        .value_parser(clap::value_parser!(u32))
        // clap keeps default values as &'static str; three small strings, once per process.
        .default_value(&*Box::leak(default.to_string().into_boxed_str()))
        .help(help)
}

/// The clap command: the settings' flags (global, or on `serve` when only serving listens),
/// and `serve`.
pub(crate) fn command() -> clap::Command {
    let mut serve = clap::Command::new("serve")
        .about("Listen on TCP addresses or Unix sockets and serve (nginx, Apache mod_proxy_fcgi)");
    let mut cmd = clap::Command::new("wfcgi")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Serve a Python WSGI app over FastCGI (IIS, nginx, Apache, lighttpd)")
        .long_about(
            "Serve a Python WSGI app over FastCGI (IIS, nginx, Apache, lighttpd).\n\n\
             With no subcommand, wfcgi serves the FastCGI connection or listening socket it \
             inherits as standard input, the way IIS, Apache mod_fcgid and spawn-fcgi start it; \
             settings come from web.config in the app directory (under IIS: the first request's \
             APPL_PHYSICAL_PATH). `wfcgi serve` listens on addresses of its own.",
        )
        .after_long_help(settings_help());
    for setting in SETTINGS {
        let Some(flag) = setting.flag else { continue };
        let help = format!(
            "{} [setting: {}] [default: {}]",
            setting.help,
            setting.name,
            setting.default.text()
        );
        let arg = Arg::new(setting.name)
            .long(flag.long.trim_start_matches("--"))
            .help(help);
        let arg = match flag.takes {
            Takes::Value(name) => arg.value_name(name).action(ArgAction::Set),
            Takes::Values(name) => arg.value_name(name).action(ArgAction::Append),
            Takes::Switch => arg.action(ArgAction::SetTrue),
        };
        if flag.serve_only {
            serve = serve.arg(arg);
        } else {
            cmd = cmd.arg(arg.global(true));
        }
    }
    cmd.subcommand(serve)
        .subcommand(request_command())
        .subcommand(check_command())
        .subcommand(iis_command(
            "enable",
            "Register wfcgi as an IIS FastCGI application (appcmd); with --app-dir and --handler also \
             write the site's web.config (wfastcgi-enable's successor)",
            true,
        ))
        .subcommand(iis_command(
            "disable",
            "Remove wfcgi's IIS FastCGI application (appcmd)",
            false,
        ))
}

/// The settings without a flag, and the precedence rule, for `--help`.
fn settings_help() -> String {
    let mut text = String::from(
        "Every flag can also be set as an appSetting in web.config \
         (<add key=\"NAME\" value=\"..\"/>) or as an environment variable, by its [setting] name. \
         Precedence: flag, then web.config, then environment, then default. Every appSetting \
         (DJANGO_SETTINGS_MODULE, ...) is also copied into the app's environment, as wfastcgi did.\n\n\
         Settings without a flag:\n",
    );
    for setting in SETTINGS.iter().filter(|s| s.flag.is_none()) {
        text.push_str(&format!(
            "  {}\n          {} [default: {}]\n",
            setting.name,
            setting.help,
            setting.default.text()
        ));
    }
    text.push_str("\nFull reference: docs/configuration.md");
    text
}

impl Cli {
    /// Parses the process arguments; on a usage error prints clap's message and exits 2.
    /// Parses `argv` (a program name first); prints help, the version or a usage error and
    /// exits, as clap does.
    pub(crate) fn parse_args(argv: Vec<std::ffi::OsString>) -> Cli {
        Cli::from_matches(&command().get_matches_from(argv))
    }

    fn from_matches(matches: &ArgMatches) -> Cli {
        let serve = matches.subcommand_matches("serve");
        let sub = matches.subcommand().map(|(_, m)| m);
        let mut flags = Flags::default();
        for setting in SETTINGS {
            let Some(flag) = setting.flag else { continue };
            // Global flags are propagated to the subcommand's matches, which hold all.
            let Some(found) = (if flag.serve_only {
                serve
            } else {
                sub.or(Some(matches))
            }) else {
                continue;
            };
            let values = match flag.takes {
                Takes::Switch if found.get_flag(setting.name) => vec!["true".to_string()],
                Takes::Switch => Vec::new(),
                Takes::Value(_) | Takes::Values(_) => found
                    .get_many::<String>(setting.name)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            };
            flags.set(setting.name, values);
        }
        let command = match matches.subcommand() {
            Some(("serve", _)) => Some(Command::Serve),
            Some(("check", m)) => Some(Command::Check(crate::check::Options {
                path: m.get_one::<String>("path").cloned(),
                json: m.get_flag("json"),
                apphostconfig: m.get_one::<String>("apphostconfig").map(Into::into),
            })),
            Some(("request", m)) => {
                let one = |id: &str| m.get_one::<String>(id).cloned();
                Some(Command::Request(crate::request::Options {
                    path: one("path").unwrap_or_else(|| "/".into()),
                    method: one("method"),
                    headers: m
                        .get_many::<String>("header")
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default(),
                    data: one("data"),
                    query: one("query"),
                    connect: one("connect"),
                }))
            }
            Some((name @ ("enable" | "disable"), m)) => {
                let number = |id: &str| m.try_get_one::<u32>(id).ok().flatten().copied();
                let defaults = crate::enable::Options::default();
                Some(Command::Iis(crate::enable::Options {
                    enable: name == "enable",
                    appcmd: m.get_one::<String>("appcmd").map(Into::into),
                    apphostconfig: m.get_one::<String>("apphostconfig").map(Into::into),
                    dry_run: m.get_flag("dry-run"),
                    force: m
                        .try_get_one::<bool>("force")
                        .ok()
                        .flatten()
                        .copied()
                        .unwrap_or(false),
                    signal_before_terminate_secs: number("signal-before-terminate-secs")
                        .unwrap_or(defaults.signal_before_terminate_secs),
                    instance_max_requests: number("instance-max-requests")
                        .unwrap_or(defaults.instance_max_requests),
                    activity_timeout_secs: number("activity-timeout-secs")
                        .unwrap_or(defaults.activity_timeout_secs),
                }))
            }
            _ => None,
        };
        Cli { command, flags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{self, Environment, Origin, Sources};
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Ok(Cli::from_matches(&command().try_get_matches_from(args)?))
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn help_names_every_setting_and_default() {
        let mut cmd = command();
        let help = cmd.render_long_help().to_string();
        let serve_help = cmd
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        for setting in SETTINGS {
            let shown_in = match setting.flag {
                Some(flag) if flag.serve_only => &serve_help,
                _ => &help,
            };
            assert!(
                shown_in.contains(setting.name),
                "{} missing from help",
                setting.name
            );
            assert!(
                shown_in.contains(&setting.default.text()),
                "default of {} missing from help",
                setting.name
            );
            if let Some(flag) = setting.flag {
                assert!(
                    shown_in.contains(flag.long),
                    "{} missing from help",
                    flag.long
                );
            }
        }
    }

    #[test]
    fn every_flag_reaches_its_setting() {
        let cli = parse(&[
            "wfcgi",
            "--handler",
            "app.app",
            "--app-dir",
            "/srv",
            "--venv",
            "/v",
            "--python-path",
            "/p",
            "--threads",
            "3",
            "--queue-len",
            "7",
            "--debug-responses",
            "--multiprocess",
            "--max-body-bytes",
            "1K",
            "--spool-threshold-bytes",
            "2K",
            "--shutdown-grace-secs",
            "4",
            "--script-name",
            "/m",
            "--allow-path-info-for-script-mappings",
            "--log-file",
            "/l.log",
            "--log-level",
            "debug",
            "--max-connections",
            "100",
            "--max-requests-per-connection",
            "2",
            "--max-params-bytes",
            "128K",
            "--params-timeout-secs",
            "9",
            "--idle-timeout-secs",
            "60",
            "--max-requests",
            "500",
            "--max-requests-jitter",
            "50",
            "--max-rss-bytes",
            "512M",
            "--request-timeout-secs",
            "45",
            "--body-timeout-secs",
            "7",
            "--access-log",
            "json",
            "--sched-policy",
            "normal",
            "--debugpy",
            "5678",
            "--debugpy-wait",
            "serve",
            "--processes",
            "2",
            "--reload",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "unix:/run/s.sock",
            "--socket-mode",
            "0600",
        ])
        .expect("parses");
        let env = Environment::default();
        let sources = Sources {
            flags: &cli.flags,
            web_config: None,
            env: &env,
        };
        for setting in SETTINGS {
            let value = sources.lookup(setting.name);
            match (setting.flag, setting.name) {
                (None, _) => assert!(value.is_none()),
                (Some(_), settings::WFCGI_LISTEN) => assert_eq!(
                    value.map(|v| v.text),
                    Some("127.0.0.1:1,unix:/run/s.sock".to_string())
                ),
                (Some(flag), name) => {
                    let value =
                        value.unwrap_or_else(|| panic!("{} did not reach {name}", flag.long));
                    assert_eq!(value.origin, Origin::Flag(flag.long));
                }
            }
        }
        let resolved =
            settings::resolve(&sources, Path::new("/srv"), Path::new("/")).expect("resolves");
        assert_eq!(resolved.bridge.threads, 3);
        assert!(resolved.bridge.debug_responses);
        assert_eq!(resolved.server.max_connections, 100);
        assert_eq!(resolved.server.max_requests_per_connection, 2);
        assert_eq!(resolved.server.max_params_bytes, 128 * 1024);
        assert_eq!(resolved.server.params_timeout.as_secs(), 9);
        assert_eq!(resolved.server.idle_timeout.map(|t| t.as_secs()), Some(60));
        assert_eq!(
            resolved.bridge.request_timeout.map(|t| t.as_secs()),
            Some(45)
        );
        assert_eq!(resolved.bridge.body_timeout.map(|t| t.as_secs()), Some(7));
        assert_eq!(resolved.bridge.access_log, wsgi::AccessLog::Json);
        assert_eq!(resolved.sched_policy, crate::sched::Policy::Normal);
        let debugpy = resolved.bridge.debugpy.clone().expect("--debugpy");
        assert_eq!(
            (debugpy.host.as_str(), debugpy.port, debugpy.wait),
            ("127.0.0.1", 5678, true)
        );
        assert_eq!(resolved.listen.len(), 2);
        assert!(!resolved.listen_is_default());
        assert_eq!(resolved.socket_mode, Some(0o600));
        assert_eq!(
            resolved.workers,
            settings::Workers {
                processes: Some(2),
                max_requests: Some(500),
                max_requests_jitter: 50,
                max_rss_bytes: Some(512 << 20),
                reload: true,
            }
        );
    }

    #[test]
    fn modes() {
        let stdin = parse(&["wfcgi"]).expect("no subcommand");
        assert!(stdin.command.is_none());
        assert!(stdin.flags.get(settings::WFCGI_DEBUG).is_none());
        // Global flags work before and after the subcommand.
        for args in [
            &["wfcgi", "serve", "--threads", "2"][..],
            &["wfcgi", "--threads", "2", "serve"][..],
        ] {
            let serve = parse(args).expect("serve");
            assert_eq!(serve.command, Some(Command::Serve));
            assert_eq!(
                serve.flags.get(settings::WFCGI_THREADS),
                Some(&["2".to_string()][..]),
                "{args:?}"
            );
        }
        // --listen belongs to serve only.
        let err = parse(&["wfcgi", "--listen", "x"]).expect_err("listen needs serve");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let version = parse(&["wfcgi", "--version"]).expect_err("version exits");
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        let missing = parse(&["wfcgi", "--threads"]).expect_err("needs a value");
        assert_eq!(missing.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
