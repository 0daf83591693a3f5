//! The classic traps of an IIS site that serves Python, read from its web.config (and, when it
//! can be read, IIS's applicationHost.config), for `wfcgi check`:
//!
//! - a handler's `scriptProcessor` that matches no registered FastCGI application (IIS then
//!   answers every request with a 500 that says nothing of Python);
//! - `responseBufferLimit` not 0 (IIS holds each response back, 4 MiB by default, so streamed
//!   responses arrive late or at once);
//! - every path sent to Python, `/static` included, when the site has a static folder (IIS's
//!   static file handler is faster, and Django does not serve static files in production).
//!
//! Which folders the app pool's identity may read is checked apart, in `readable`.

use std::path::{Path, PathBuf};

use crate::webconfig;

/// One problem, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trap {
    pub text: String,
}

/// A FastCGI handler of the site.
struct Handler {
    name: String,
    path: String,
    script_processor: String,
    response_buffer_limit: Option<String>,
    line: u32,
}

/// The traps of the site whose web.config is `config`. `apphost`: IIS's applicationHost.config
/// to check the scriptProcessor against (`None`: the default one on Windows, nothing
/// elsewhere). Notes (what could not be checked) come back apart from the traps.
pub(crate) fn check(config: &Path, apphost: Option<&Path>) -> (Vec<Trap>, Vec<String>) {
    let mut traps = Vec::new();
    let mut notes = Vec::new();
    let Some(text) = read(config) else {
        return (traps, notes);
    };
    let Ok(doc) = roxmltree::Document::parse(&text) else {
        return (traps, notes);
    };
    let root = doc.root_element();
    let handlers = handlers(&doc);
    if handlers.is_empty() {
        if cfg!(windows) {
            traps.push(Trap {
                text: format!(
                    "{} has no FastCGI handler (<handlers><add modules=\"FastCgiModule\" .../>): IIS does not send requests to wfcgi. Fix: run `wfcgi enable --app-dir {}`, which writes one",
                    config.display(),
                    config.parent().map(|p| p.display().to_string()).unwrap_or_default()
                ),
            });
        }
        return (traps, notes);
    }
    let site = config.parent().unwrap_or(Path::new("."));
    let registered = registered_applications(apphost, &mut notes);
    for h in &handlers {
        let at = format!(
            "the handler \"{}\" ({} line {})",
            h.name,
            config.display(),
            h.line
        );
        match h.response_buffer_limit.as_deref() {
            Some(limit) if limit.trim() == "0" => {}
            limit => traps.push(Trap {
                text: format!(
                    "{at} has responseBufferLimit={}: IIS holds back up to that much of each response, so a streamed response arrives late, or all at once. Fix: responseBufferLimit=\"0\"",
                    limit.map_or("unset (4194304 bytes, IIS's default)".to_string(), |l| format!("\"{l}\""))
                ),
            }),
        }
        if h.path.trim() == "*"
            && site.join("static").is_dir()
            && !static_excluded(root, &h.name, site)
        {
            traps.push(Trap {
                text: format!(
                    "{at} has path=\"*\" and nothing takes {} away from it: every static file goes through Python. Fix: add <location path=\"static\"><system.webServer><handlers><remove name=\"{}\" /></handlers></system.webServer></location> to web.config (`wfcgi enable` writes it)",
                    site.join("static").display(),
                    h.name
                ),
            });
        }
        if let Some(registered) = &registered {
            if !registered.iter().any(|r| r.matches(&h.script_processor)) {
                let known: Vec<String> = registered
                    .iter()
                    .map(|r| {
                        if r.arguments.is_empty() {
                            r.full_path.clone()
                        } else {
                            format!("{}|{}", r.full_path, r.arguments)
                        }
                    })
                    .collect();
                traps.push(Trap {
                    text: format!(
                        "{at} has scriptProcessor=\"{}\", which matches no FastCGI application registered with IIS (registered: {}): IIS answers every request with a 500 that says nothing of Python. Fix: run `wfcgi enable`, or make scriptProcessor match a registered fullPath|arguments exactly",
                        h.script_processor,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                });
            }
        }
    }
    (traps, notes)
}

/// The FastCGI handlers at the top level of web.config (not inside `<location>`).
fn handlers(doc: &roxmltree::Document) -> Vec<Handler> {
    let line = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("system.webServer"))
        .flat_map(|n| n.children().filter(|c| c.has_tag_name("handlers")))
        .flat_map(|n| n.children().filter(|c| c.has_tag_name("add")))
        .filter(|n| {
            n.attribute("modules")
                .is_some_and(|m| m.eq_ignore_ascii_case("FastCgiModule"))
        })
        .map(|n| Handler {
            name: n.attribute("name").unwrap_or("").to_string(),
            path: n.attribute("path").unwrap_or("").to_string(),
            script_processor: n.attribute("scriptProcessor").unwrap_or("").to_string(),
            response_buffer_limit: n.attribute("responseBufferLimit").map(str::to_string),
            line: line(n),
        })
        .collect()
}

pub(crate) fn read(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    webconfig::decode(path, &bytes).ok()
}

/// `EXE|ARGS` as IIS writes a scriptProcessor: (EXE, ARGS).
fn split_processor(text: &str) -> (&str, &str) {
    text.split_once('|').unwrap_or((text, ""))
}

/// Whether `/static` is taken from handler `name`: a `<location path="static">` (or a
/// web.config in the folder) that removes it or clears the handlers.
fn static_excluded(root: roxmltree::Node, name: &str, site: &Path) -> bool {
    let removes = |node: roxmltree::Node| {
        node.descendants()
            .filter(|n| n.has_tag_name("handlers"))
            .flat_map(|n| n.children())
            .any(|n| {
                n.has_tag_name("clear")
                    || (n.has_tag_name("remove")
                        && n.attribute("name")
                            .is_some_and(|r| r.eq_ignore_ascii_case(name)))
            })
    };
    let in_location = root.children().any(|n| {
        n.has_tag_name("location")
            && n.attribute("path")
                .is_some_and(|p| p.trim_matches('/').eq_ignore_ascii_case("static"))
            && removes(n)
    });
    in_location
        || webconfig::find(&site.join("static"))
            .and_then(|p| read(&p))
            .and_then(|text| {
                roxmltree::Document::parse(&text)
                    .ok()
                    .map(|doc| removes(doc.root_element()))
            })
            .unwrap_or(false)
}

/// A FastCGI application registered with IIS (`<fastCgi><application>`).
struct Registered {
    full_path: String,
    arguments: String,
    /// Its `<environmentVariables>`: IIS starts the process with them.
    environment: Vec<(String, String)>,
}

impl Registered {
    fn matches(&self, script_processor: &str) -> bool {
        let (exe, args) = split_processor(script_processor);
        self.full_path.eq_ignore_ascii_case(exe)
            && self.arguments.trim().eq_ignore_ascii_case(args.trim())
    }
}

/// What IIS adds to the environment of the process it starts for the site whose web.config
/// is `config`: the `<environmentVariables>` of the registered FastCGI application that the
/// site's first FastCGI handler names. With that handler's scriptProcessor.
pub(crate) fn process_environment(
    config: &Path,
    apphost: Option<&Path>,
) -> Option<(String, Vec<(String, String)>)> {
    let text = read(config)?;
    let doc = roxmltree::Document::parse(&text).ok()?;
    let registered = registered_applications(apphost, &mut Vec::new())?;
    handlers(&doc).into_iter().find_map(|h| {
        registered
            .iter()
            .find(|r| r.matches(&h.script_processor))
            .map(|r| (h.script_processor.clone(), r.environment.clone()))
    })
}

/// The FastCGI applications IIS knows. `None` when there is no file to read (a note says so
/// when one was expected).
fn registered_applications(
    apphost: Option<&Path>,
    notes: &mut Vec<String>,
) -> Option<Vec<Registered>> {
    let path = match apphost {
        Some(path) => path.to_path_buf(),
        None if cfg!(windows) => default_apphost(),
        None => return None,
    };
    let Some(text) = read(&path) else {
        notes.push(format!(
            "cannot read {} (run as an administrator, or give --apphostconfig): the scriptProcessor is not checked against IIS's FastCGI applications",
            path.display()
        ));
        return None;
    };
    let doc = roxmltree::Document::parse(&text).ok()?;
    Some(
        doc.descendants()
            .filter(|n| n.has_tag_name("fastCgi"))
            .flat_map(|n| n.children().filter(|c| c.has_tag_name("application")))
            .map(|n| Registered {
                full_path: n.attribute("fullPath").unwrap_or("").to_string(),
                arguments: n.attribute("arguments").unwrap_or("").to_string(),
                environment: n
                    .children()
                    .filter(|c| c.has_tag_name("environmentVariables"))
                    .flat_map(|c| c.children())
                    .filter(|v| v.has_tag_name("environmentVariable"))
                    .filter_map(|v| {
                        let name = v.attribute("name")?;
                        Some((
                            name.to_string(),
                            v.attribute("value").unwrap_or("").to_string(),
                        ))
                    })
                    .collect(),
            })
            .collect(),
    )
}

pub(crate) fn default_apphost() -> PathBuf {
    let windir = std::env::var_os("windir")
        .or_else(|| std::env::var_os("WINDIR"))
        .unwrap_or_else(|| "C:\\Windows".into());
    let mut path = PathBuf::from(windir);
    for part in ["System32", "inetsrv", "config", "applicationHost.config"] {
        path.push(part);
    }
    path
}
