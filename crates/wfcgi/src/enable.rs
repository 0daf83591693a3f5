//! `wfcgi enable` / `wfcgi disable`: the successor of wfastcgi's `wfastcgi-enable`. Registers
//! (or removes) this executable as an IIS FastCGI application with appcmd, and with `--app-dir`
//! writes the site's web.config. `--dry-run` prints what would be run and written instead.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `enable` / `disable` were asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub enable: bool,
    /// appcmd.exe; default `%windir%\system32\inetsrv\appcmd.exe`.
    pub appcmd: Option<PathBuf>,
    /// IIS Express: its applicationhost.config.
    pub apphostconfig: Option<PathBuf>,
    pub dry_run: bool,
    pub force: bool,
    pub signal_before_terminate_secs: u32,
    pub instance_max_requests: u32,
    pub activity_timeout_secs: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enable: true,
            appcmd: None,
            apphostconfig: None,
            dry_run: false,
            force: false,
            // wfcgi's own shutdown grace: running requests may finish.
            signal_before_terminate_secs: 30,
            // IIS's 200 restarts Python every 200 requests; wfcgi does not leak per request.
            instance_max_requests: 10_000,
            // IIS's 70 s kills long uploads and reports.
            activity_timeout_secs: 600,
        }
    }
}

/// The site's web.config, when `--app-dir` is given with `enable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    pub app_dir: PathBuf,
    pub handler: String,
    pub log_file: Option<String>,
}

/// What IIS runs for the site: the native executable, or the venv's python with `-m wfcgi`
/// (the pip package), as a FastCGI application's `fullPath` and `arguments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Processor {
    pub exe: PathBuf,
    pub arguments: String,
}

impl Processor {
    /// This process's own program, as started.
    pub(crate) fn current() -> Processor {
        let invocation = crate::invocation::current();
        Processor {
            exe: invocation.program.clone(),
            arguments: invocation
                .prefix
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    #[cfg(test)]
    fn native(exe: &str) -> Processor {
        Processor {
            exe: PathBuf::from(exe),
            arguments: String::new(),
        }
    }

    /// `fullPath='...'`, with `,arguments='...'` when there are any: the key of IIS's entry.
    fn key(&self) -> String {
        let exe = attribute(&self.exe.display().to_string());
        if self.arguments.is_empty() {
            format!("fullPath='{exe}'")
        } else {
            format!(
                "fullPath='{exe}',arguments='{}'",
                attribute(&self.arguments)
            )
        }
    }

    /// The handler's `scriptProcessor`: `EXE`, or `EXE|ARGUMENTS`.
    fn script_processor(&self) -> String {
        if self.arguments.is_empty() {
            self.exe.display().to_string()
        } else {
            format!("{}|{}", self.exe.display(), self.arguments)
        }
    }
}

/// The appcmd arguments (each one argv element) that add or remove the FastCGI application.
pub(crate) fn appcmd_args(processor: &Processor, options: &Options) -> Vec<String> {
    let key = processor.key();
    let entry = if options.enable {
        format!(
            "/+[{key},signalBeforeTerminateSeconds='{}',instanceMaxRequests='{}',activityTimeout='{}']",
            options.signal_before_terminate_secs,
            options.instance_max_requests,
            options.activity_timeout_secs
        )
    } else {
        format!("/-[{key}]")
    };
    let mut args = vec![
        "set".to_string(),
        "config".to_string(),
        "/section:system.webServer/fastCgi".to_string(),
        entry,
    ];
    match &options.apphostconfig {
        Some(file) => args.push(format!("/apphostconfig:{}", file.display())),
        None => args.push("/commit:apphost".to_string()),
    }
    args
}

/// A value inside appcmd's `[name='value']`: a `'` is doubled.
fn attribute(value: &str) -> String {
    value.replace('\'', "''")
}

/// How a command line shows an argument: quoted when it has spaces (paths under
/// `C:\Program Files`, PTVS#1107) or quotes.
fn shown(arg: &str) -> String {
    if arg.contains([' ', '"']) {
        format!("\"{}\"", arg.replace('"', "\\\""))
    } else {
        arg.to_string()
    }
}

fn xml(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The site's web.config: every request to wfcgi through IIS's FastCGI module, with response
/// buffering off (`responseBufferLimit="0"`: streamed responses stream), `/static` left to IIS's
/// static file handler, and the app's settings.
pub(crate) fn web_config(processor: &Processor, site: &Site) -> String {
    let exe = xml(&processor.script_processor());
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n");
    out.push_str("<!-- Written by `wfcgi enable`. Settings: docs/configuration.md -->\r\n");
    out.push_str("<configuration>\r\n  <system.webServer>\r\n    <handlers>\r\n");
    let _ = write!(
        out,
        "      <add name=\"wfcgi\" path=\"*\" verb=\"*\" modules=\"FastCgiModule\" \
         scriptProcessor=\"{exe}\" resourceType=\"Unspecified\" requireAccess=\"Script\" \
         responseBufferLimit=\"0\" />\r\n"
    );
    out.push_str("    </handlers>\r\n  </system.webServer>\r\n");
    out.push_str("  <location path=\"static\">\r\n    <system.webServer>\r\n      <handlers>\r\n");
    out.push_str("        <remove name=\"wfcgi\" />\r\n      </handlers>\r\n    </system.webServer>\r\n  </location>\r\n");
    out.push_str("  <appSettings>\r\n");
    let _ = write!(
        out,
        "    <add key=\"WSGI_HANDLER\" value=\"{}\" />\r\n",
        xml(&site.handler)
    );
    let log = site.log_file.as_deref().unwrap_or("logs\\wfcgi.log");
    let _ = write!(
        out,
        "    <add key=\"WSGI_LOG\" value=\"{}\" />\r\n",
        xml(log)
    );
    out.push_str("  </appSettings>\r\n</configuration>\r\n");
    out
}

/// The default appcmd: `%windir%\system32\inetsrv\appcmd.exe`.
fn default_appcmd() -> PathBuf {
    let windir = std::env::var_os("windir")
        .or_else(|| std::env::var_os("WINDIR"))
        .unwrap_or_else(|| "C:\\Windows".into());
    let mut path = PathBuf::from(windir);
    path.push("system32");
    path.push("inetsrv");
    path.push("appcmd.exe");
    path
}

/// Runs `enable` / `disable`; prints what it does (or, with `--dry-run`, would do).
pub(crate) fn run(options: &Options, site: Option<&Site>) -> ExitCode {
    let exe = Processor::current();
    let appcmd = options.appcmd.clone().unwrap_or_else(default_appcmd);
    let args = appcmd_args(&exe, options);
    let line = std::iter::once(appcmd.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| shown(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let config = site.map(|site| (site.app_dir.join("web.config"), web_config(&exe, site)));
    if options.dry_run {
        println!("{line}");
        if let Some((path, text)) = &config {
            println!("\nwould write {}:\n{text}", path.display());
        }
        return ExitCode::SUCCESS;
    }
    if let Some((path, _)) = &config {
        if path.exists() && !options.force {
            eprintln!(
                "wfcgi: error: {} exists and is left as it is. Fix: add --force to replace it, \
                 or --dry-run to see what would be written",
                path.display()
            );
            return ExitCode::from(1);
        }
    }
    println!("{line}");
    match std::process::Command::new(&appcmd).args(&args).status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!(
                "wfcgi: error: appcmd failed ({status}). Fix: run from an elevated prompt; for \
                 IIS Express pass --apphostconfig with its applicationhost.config"
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!(
                "wfcgi: error: cannot run {}: {e}. Fix: install IIS with its management tools, \
                 or pass --appcmd PATH",
                appcmd.display()
            );
            return ExitCode::from(1);
        }
    }
    if let Some((path, text)) = config {
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("wfcgi: error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_a_venv_python_runs_wfcgi_as_python_m_wfcgi_the_shape_of_wfastcgi() {
        let python = Processor {
            exe: PathBuf::from(r"C:\site\.venv\Scripts\python.exe"),
            arguments: "-m wfcgi".into(),
        };
        let args = appcmd_args(&python, &Options::default());
        assert!(
            args[3].starts_with(
                r"/+[fullPath='C:\site\.venv\Scripts\python.exe',arguments='-m wfcgi',"
            ),
            "{args:?}"
        );
        let site = Site {
            app_dir: PathBuf::from(r"C:\site"),
            handler: "app.application".into(),
            log_file: None,
        };
        assert!(web_config(&python, &site)
            .contains(r#"scriptProcessor="C:\site\.venv\Scripts\python.exe|-m wfcgi""#));
        let removal = appcmd_args(
            &python,
            &Options {
                enable: false,
                ..Options::default()
            },
        );
        assert_eq!(
            removal[3],
            r"/-[fullPath='C:\site\.venv\Scripts\python.exe',arguments='-m wfcgi']"
        );
    }

    #[test]
    fn enable_adds_the_application_with_iis_timeouts_fit_for_python() {
        let exe = Processor::native(r"C:\Program Files\wfcgi\wfcgi.exe");
        let args = appcmd_args(&exe, &Options::default());
        assert_eq!(
            args,
            [
                "set",
                "config",
                "/section:system.webServer/fastCgi",
                r"/+[fullPath='C:\Program Files\wfcgi\wfcgi.exe',signalBeforeTerminateSeconds='30',instanceMaxRequests='10000',activityTimeout='600']",
                "/commit:apphost",
            ]
        );
        // A path with spaces stays one argument, quoted when shown.
        assert_eq!(
            shown(&args[3]),
            r#""/+[fullPath='C:\Program Files\wfcgi\wfcgi.exe',signalBeforeTerminateSeconds='30',instanceMaxRequests='10000',activityTimeout='600']""#
        );
    }

    #[test]
    fn disable_removes_it_and_iis_express_names_its_config() {
        let options = Options {
            enable: false,
            apphostconfig: Some(PathBuf::from(
                r"C:\Users\me\IISExpress\applicationhost.config",
            )),
            ..Options::default()
        };
        let args = appcmd_args(&Processor::native(r"C:\it's\wfcgi.exe"), &options);
        assert_eq!(args[3], r"/-[fullPath='C:\it''s\wfcgi.exe']");
        assert_eq!(
            args[4],
            r"/apphostconfig:C:\Users\me\IISExpress\applicationhost.config"
        );
    }

    #[test]
    fn web_config_streams_leaves_static_files_to_iis_and_names_the_app() {
        let site = Site {
            app_dir: PathBuf::from(r"C:\sites\mysite"),
            handler: "django.core.wsgi.get_wsgi_application()".to_string(),
            log_file: None,
        };
        let text = web_config(&Processor::native(r"C:\wfcgi\wfcgi.exe"), &site);
        assert!(
            text.contains(r#"scriptProcessor="C:\wfcgi\wfcgi.exe""#),
            "{text}"
        );
        assert!(text.contains(r#"responseBufferLimit="0""#));
        assert!(
            text.contains(r#"<location path="static">"#)
                && text.contains(r#"<remove name="wfcgi" />"#)
        );
        assert!(text.contains(
            r#"<add key="WSGI_HANDLER" value="django.core.wsgi.get_wsgi_application()" />"#
        ));
        assert!(text.contains(r#"<add key="WSGI_LOG" value="logs\wfcgi.log" />"#));
        // What wfcgi itself reads back from it.
        let dir = std::env::temp_dir().join(format!("wfcgi-enable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.config");
        std::fs::write(&path, &text).unwrap();
        let parsed = crate::webconfig::load(&path).expect("wfcgi reads what it writes");
        assert_eq!(
            parsed.get("WSGI_HANDLER").map(|s| s.value.as_str()),
            Some("django.core.wsgi.get_wsgi_application()")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
