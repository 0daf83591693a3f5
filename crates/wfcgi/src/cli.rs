//! The command line. Flags only record what was typed; `settings` resolves them against
//! web.config and the environment, so every flag's help is generated from `settings::SPECS`
//! and names the setting it overrides.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::settings::{self, Flags};

#[derive(Debug, Parser)]
#[command(
    name = "wfcgi",
    version,
    about = "Serve a Python WSGI app over FastCGI (IIS, nginx, Apache, lighttpd)",
    long_about = "Serve a Python WSGI app over FastCGI (IIS, nginx, Apache, lighttpd).\n\n\
        With no subcommand, wfcgi serves the FastCGI connection or listening socket it inherits \
        as standard input, the way IIS, Apache mod_fcgid and spawn-fcgi start it; settings come \
        from web.config in the app directory (under IIS: the first request's \
        APPL_PHYSICAL_PATH). `wfcgi serve` listens on addresses of its own."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[arg(long, global = true, value_name = "DOTTED")]
    pub handler: Option<String>,
    #[arg(long, global = true, value_name = "DIR")]
    pub app_dir: Option<String>,
    #[arg(long, global = true, value_name = "PATH")]
    pub venv: Option<String>,
    #[arg(long, global = true, value_name = "PATHS")]
    pub python_path: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    pub queue_len: Option<String>,
    #[arg(long, global = true)]
    pub debug_responses: bool,
    #[arg(long, global = true)]
    pub multiprocess: bool,
    #[arg(long, global = true, value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    #[arg(long, global = true, value_name = "BYTES")]
    pub spool_threshold_bytes: Option<String>,
    #[arg(long, global = true, value_name = "SECS")]
    pub shutdown_grace_secs: Option<String>,
    #[arg(long, global = true, value_name = "PREFIX")]
    pub script_name: Option<String>,
    #[arg(long, global = true)]
    pub allow_path_info_for_script_mappings: bool,
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<String>,
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    pub max_connections: Option<String>,
    #[arg(long, global = true, value_name = "N")]
    pub max_requests_per_connection: Option<String>,
    #[arg(long, global = true, value_name = "BYTES")]
    pub max_params_bytes: Option<String>,
    #[arg(long, global = true, value_name = "SECS")]
    pub params_timeout_secs: Option<String>,
    #[arg(long, global = true, value_name = "SECS")]
    pub idle_timeout_secs: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Listen on TCP addresses or Unix sockets and serve (nginx, Apache mod_proxy_fcgi).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
}

/// The clap command with every flag's help taken from `settings::SPECS`.
pub(crate) fn command() -> clap::Command {
    let mut cmd = Cli::command().after_long_help(settings_help());
    for spec in settings::SPECS {
        let Some(flag) = spec.flag else { continue };
        let id = arg_id(flag);
        let help = format!(
            "{} [setting: {}] [default: {}]",
            spec.help, spec.name, spec.default
        );
        if matches!(id.as_str(), "listen" | "socket_mode") {
            cmd = cmd.mut_subcommand("serve", |serve| serve.mut_arg(id, |a| a.help(help)));
        } else {
            cmd = cmd.mut_arg(id, |a| a.help(help));
        }
    }
    cmd
}

/// `--app-dir` -> `app_dir`, the id clap's derive gives the field.
fn arg_id(flag: &str) -> String {
    flag.trim_start_matches('-').replace('-', "_")
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
    for spec in settings::SPECS.iter().filter(|s| s.flag.is_none()) {
        text.push_str(&format!(
            "  {}\n          {} [default: {}]\n",
            spec.name, spec.help, spec.default
        ));
    }
    text.push_str("\nLog level also: RUST_LOG. Full reference: docs/configuration.md");
    text
}

impl Cli {
    /// Parses the process arguments; on a usage error prints clap's message and exits 2.
    pub(crate) fn parse_args() -> Cli {
        let matches = command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The values given on the command line, by setting name.
    pub(crate) fn flags(&self) -> Flags {
        let mut flags = Flags::default();
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        let switch = |on: bool| {
            if on {
                vec!["true".to_string()]
            } else {
                Vec::new()
            }
        };
        flags.set(settings::WSGI_HANDLER, one(&self.handler));
        flags.set(settings::WFCGI_APP_DIR, one(&self.app_dir));
        flags.set(settings::WFCGI_VENV, one(&self.venv));
        flags.set(settings::PYTHONPATH, one(&self.python_path));
        flags.set(settings::WFCGI_THREADS, one(&self.threads));
        flags.set(settings::WFCGI_QUEUE_LEN, one(&self.queue_len));
        flags.set(settings::WFCGI_DEBUG, switch(self.debug_responses));
        flags.set(settings::WFCGI_MULTIPROCESS, switch(self.multiprocess));
        flags.set(settings::WFCGI_MAX_BODY_BYTES, one(&self.max_body_bytes));
        flags.set(
            settings::WFCGI_SPOOL_THRESHOLD_BYTES,
            one(&self.spool_threshold_bytes),
        );
        flags.set(
            settings::WFCGI_SHUTDOWN_GRACE_SECS,
            one(&self.shutdown_grace_secs),
        );
        flags.set(settings::SCRIPT_NAME, one(&self.script_name));
        flags.set(
            settings::ALLOW_PATH_INFO,
            switch(self.allow_path_info_for_script_mappings),
        );
        flags.set(settings::WSGI_LOG, one(&self.log_file));
        flags.set(settings::WFCGI_LOG_LEVEL, one(&self.log_level));
        flags.set(settings::WFCGI_MAX_CONNECTIONS, one(&self.max_connections));
        flags.set(
            settings::WFCGI_MAX_REQUESTS_PER_CONNECTION,
            one(&self.max_requests_per_connection),
        );
        flags.set(
            settings::WFCGI_MAX_PARAMS_BYTES,
            one(&self.max_params_bytes),
        );
        flags.set(
            settings::WFCGI_PARAMS_TIMEOUT_SECS,
            one(&self.params_timeout_secs),
        );
        flags.set(
            settings::WFCGI_IDLE_TIMEOUT_SECS,
            one(&self.idle_timeout_secs),
        );
        if let Some(Command::Serve(serve)) = &self.command {
            flags.set(settings::WFCGI_LISTEN, serve.listen.clone());
            flags.set(settings::WFCGI_SOCKET_MODE, one(&serve.socket_mode));
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Environment, Sources};
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
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
        for spec in settings::SPECS {
            let shown_in = if matches!(spec.flag, Some("--listen" | "--socket-mode")) {
                &serve_help
            } else {
                &help
            };
            assert!(
                shown_in.contains(spec.name),
                "{} missing from help",
                spec.name
            );
            assert!(
                shown_in.contains(spec.default),
                "default of {} missing from help",
                spec.name
            );
            if let Some(flag) = spec.flag {
                assert!(shown_in.contains(flag), "{flag} missing from help");
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
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "unix:/run/s.sock",
            "--socket-mode",
            "0600",
        ])
        .expect("parses");
        let flags = cli.flags();
        let env = Environment::default();
        let sources = Sources {
            flags: &flags,
            web_config: None,
            env: &env,
        };
        for spec in settings::SPECS {
            let value = sources.lookup(spec.name);
            match (spec.flag, spec.name) {
                (None, _) => assert!(value.is_none()),
                (Some(_), settings::WFCGI_LISTEN) => assert_eq!(
                    value.map(|v| v.text),
                    Some("127.0.0.1:1,unix:/run/s.sock".to_string())
                ),
                (Some(flag), name) => {
                    let value = value.unwrap_or_else(|| panic!("{flag} did not reach {name}"));
                    assert_eq!(value.origin, settings::Origin::Flag(flag));
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
    }

    #[test]
    fn modes() {
        let stdin = parse(&["wfcgi"]).expect("no subcommand");
        assert!(stdin.command.is_none());
        assert!(stdin.flags().get(settings::WFCGI_DEBUG).is_none());
        // Global flags work after the subcommand too.
        let serve = parse(&["wfcgi", "serve", "--threads", "2"]).expect("serve");
        assert!(matches!(serve.command, Some(Command::Serve(_))));
        assert_eq!(serve.threads.as_deref(), Some("2"));
        // --listen belongs to serve only.
        let err = parse(&["wfcgi", "--listen", "x"]).expect_err("listen needs serve");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let version = parse(&["wfcgi", "--version"]).expect_err("version exits");
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
