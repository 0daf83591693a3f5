//! Reading the `<appSettings>` of an IIS `web.config`.
//!
//! wfastcgi kept its settings there: `<configuration><appSettings><add key=".." value=".."/>`.
//! This module turns the file into an ordered list of key/value pairs, each with the line it
//! came from, so that a bad value can be reported as `web.config line 7`. It knows nothing of
//! what the keys mean (that is `settings`).
//!
//! Beyond wfastcgi (which picked up every `<add>` it found), `<clear/>` and `<remove key=".."/>`
//! work as in .NET, keys compare case-insensitively as in .NET's `NameValueCollection` and
//! Windows environment names, a later `<add>` of the same key replaces an earlier one, a UTF-8 or
//! UTF-16 byte-order mark is accepted (Notepad's "Unicode" saves UTF-16), and anything IIS itself
//! would refuse inside `<appSettings>` is an error with its line and column rather than silently
//! skipped.

use std::fmt;
use std::path::{Path, PathBuf};

/// Names IIS accepts for the file; Windows file names are case-insensitive, so on Unix a copied
/// site may have any of them.
const FILE_NAME: &str = "web.config";

/// The largest web.config read. IIS's own limit is 100 KiB by default (`maxWebConfigFileSizeInKB`);
/// 1 MiB leaves room and still refuses a file that is not a configuration at all.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One `<add key=".." value=".."/>` that survived `<clear/>` and `<remove/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppSetting {
    pub key: String,
    pub value: String,
    /// 1-based line of the `<add>` element, for error messages.
    pub line: u32,
}

/// A parsed web.config: its path and its effective appSettings in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WebConfig {
    pub path: PathBuf,
    pub app_settings: Vec<AppSetting>,
    /// Things accepted but not acted on (`configSource=`, `<location>` blocks), to be logged.
    pub warnings: Vec<String>,
}

impl WebConfig {
    /// The setting of this key, compared case-insensitively.
    pub(crate) fn get(&self, key: &str) -> Option<&AppSetting> {
        self.app_settings
            .iter()
            .find(|s| s.key.eq_ignore_ascii_case(key))
    }
}

/// Why a web.config could not be used. Its `Display` names the file and, when the problem is in
/// the text, the line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the text.
    pub position: Option<(u32, u32)>,
    pub message: String,
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{} line {line} column {column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for WebConfigError {}

/// The web.config in `dir`, if there is one: `web.config` exactly, else any case of it.
pub(crate) fn find(dir: &Path) -> Option<PathBuf> {
    let exact = dir.join(FILE_NAME);
    if exact.is_file() {
        return Some(exact);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .find(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.eq_ignore_ascii_case(FILE_NAME))
                && entry.path().is_file()
        })
        .map(|entry| entry.path())
}

/// Reads and parses the file at `path`.
pub(crate) fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let error = |message: String| WebConfigError {
        path: path.to_path_buf(),
        position: None,
        message,
    };
    let metadata = std::fs::metadata(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(error(format!(
            "it is {} bytes; a web.config larger than {MAX_FILE_BYTES} bytes is refused",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    parse(path, &bytes)
}

/// Parses web.config bytes; `path` is only used in messages.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<WebConfig, WebConfigError> {
    let text = decode(path, bytes)?;
    let error_at = |position: Option<(u32, u32)>, message: String| WebConfigError {
        path: path.to_path_buf(),
        position,
        message,
    };
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, options).map_err(|e| {
        let pos = e.pos();
        // roxmltree ends its messages with " at LINE:COL"; the position is shown once, ours.
        let message = e.to_string();
        let suffix = format!(" at {pos}");
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        error_at(
            Some((pos.row, pos.col)),
            format!("not well-formed XML: {message}"),
        )
    })?;
    let position = |node: roxmltree::Node| {
        let pos = doc.text_pos_at(node.range().start);
        Some((pos.row, pos.col))
    };

    let root = doc.root_element();
    if root.tag_name().name() != "configuration" {
        return Err(error_at(
            position(root),
            format!(
                "the root element is <{}>; a web.config starts with <configuration>",
                root.tag_name().name()
            ),
        ));
    }

    let mut config = WebConfig {
        path: path.to_path_buf(),
        ..WebConfig::default()
    };
    for section in root.children().filter(|n| n.is_element()) {
        match section.tag_name().name() {
            "appSettings" => read_app_settings(&mut config, section, &position)?,
            "location" if section.descendants().any(|n| n.has_tag_name("appSettings")) => {
                let line = position(section).map_or(0, |(line, _)| line);
                config.warnings.push(format!(
                    "{} line {line}: <appSettings> inside <location> is ignored; \
                     put the settings in the top-level <appSettings>",
                    path.display()
                ));
            }
            _ => {}
        }
    }
    Ok(config)
}

fn read_app_settings<'a, 'input>(
    config: &mut WebConfig,
    section: roxmltree::Node<'a, 'input>,
    position: &impl Fn(roxmltree::Node<'a, 'input>) -> Option<(u32, u32)>,
) -> Result<(), WebConfigError> {
    let error_at = |node, message: String| WebConfigError {
        path: config.path.clone(),
        position: position(node),
        message,
    };
    for attribute in ["file", "configSource"] {
        if let Some(value) = section.attribute(attribute) {
            let line = position(section).map_or(0, |(line, _)| line);
            config.warnings.push(format!(
                "{} line {line}: <appSettings {attribute}=\"{value}\"> is not supported: \
                 the settings in that file are ignored; copy them into this web.config",
                config.path.display()
            ));
        }
    }
    let mut settings = std::mem::take(&mut config.app_settings);
    for node in section.children().filter(|n| n.is_element()) {
        let key = node.attribute("key");
        match node.tag_name().name() {
            "add" => {
                let Some(key) = key else {
                    return Err(error_at(node, "<add> has no key attribute".to_string()));
                };
                check_key(key).map_err(|problem| error_at(node, problem))?;
                // .NET treats a missing value as ""; so does wfastcgi (minidom's getAttribute).
                let value = node.attribute("value").unwrap_or_default();
                if value.contains('\0') {
                    return Err(error_at(
                        node,
                        format!("the value of {key} contains a NUL character"),
                    ));
                }
                let line = position(node).map_or(0, |(line, _)| line);
                settings.retain(|s: &AppSetting| !s.key.eq_ignore_ascii_case(key));
                settings.push(AppSetting {
                    key: key.to_string(),
                    value: value.to_string(),
                    line,
                });
            }
            "remove" => {
                let Some(key) = key else {
                    return Err(error_at(node, "<remove> has no key attribute".to_string()));
                };
                settings.retain(|s| !s.key.eq_ignore_ascii_case(key));
            }
            "clear" => settings.clear(),
            other => {
                return Err(error_at(
                    node,
                    format!(
                        "unexpected <{other}> in <appSettings>: only <add key=\"..\" \
                         value=\"..\"/>, <remove key=\"..\"/> and <clear/> belong there"
                    ),
                ))
            }
        }
    }
    config.app_settings = settings;
    Ok(())
}

/// A key becomes an environment variable name, so it must be one.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("<add> has an empty key".to_string());
    }
    if key.contains('=') || key.contains('\0') {
        return Err(format!(
            "the key \"{key}\" cannot be an environment variable name (it contains '=' or NUL)"
        ));
    }
    Ok(())
}

/// Bytes to text: UTF-8 (with or without a byte-order mark) or UTF-16 with its byte-order mark.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<String, WebConfigError> {
    let error = |position, message: String| WebConfigError {
        path: path.to_path_buf(),
        position,
        message,
    };
    let utf16 = |bytes: &[u8], unit: fn([u8; 2]) -> u16| {
        if bytes.len() % 2 == 1 {
            return Err(error(
                None,
                "UTF-16 text with an odd number of bytes".to_string(),
            ));
        }
        let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|e| error(None, format!("invalid UTF-16 text: {e}")))
    };
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return utf8(path, rest);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes);
    }
    utf8(path, bytes)
}

fn utf8(path: &Path, bytes: &[u8]) -> Result<String, WebConfigError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let valid = &bytes[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() as u32 + 1;
        WebConfigError {
            path: path.to_path_buf(),
            position: Some((line, column)),
            message: "not UTF-8 text (save the file as UTF-8, or as UTF-16 with a byte-order \
                      mark)"
                .to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<WebConfig, WebConfigError> {
        parse(Path::new("site/web.config"), text.as_bytes())
    }

    fn pairs(config: &WebConfig) -> Vec<(&str, &str, u32)> {
        config
            .app_settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str(), s.line))
            .collect()
    }

    #[test]
    fn good_files() {
        type Expected<'a> = &'a [(&'a str, &'a str, u32)];
        let cases: &[(&str, &str, Expected)] = &[
            (
                "plain",
                r#"<configuration><appSettings><add key="WSGI_HANDLER" value="app.app"/></appSettings></configuration>"#,
                &[("WSGI_HANDLER", "app.app", 1)],
            ),
            (
                "CRLF, comments, declaration, other sections",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<configuration>\r\n  <!-- a comment -->\r\n  <system.webServer><handlers/></system.webServer>\r\n  <appSettings>\r\n    <!-- <add key=\"X\" value=\"commented\"/> -->\r\n    <add key=\"A\" value=\"1\" />\r\n    <add key=\"B\" value=\"two words\" />\r\n  </appSettings>\r\n</configuration>\r\n",
                &[("A", "1", 7), ("B", "two words", 8)],
            ),
            (
                "clear drops what came before",
                r#"<configuration><appSettings><add key="A" value="1"/><clear/><add key="B" value="2"/></appSettings></configuration>"#,
                &[("B", "2", 1)],
            ),
            (
                "remove is case-insensitive",
                r#"<configuration><appSettings><add key="A" value="1"/><add key="B" value="2"/><remove key="a"/></appSettings></configuration>"#,
                &[("B", "2", 1)],
            ),
            (
                "a later add replaces an earlier one",
                "<configuration><appSettings>\n<add key=\"A\" value=\"1\"/>\n<add key=\"a\" value=\"2\"/>\n</appSettings></configuration>",
                &[("a", "2", 3)],
            ),
            (
                "missing value is empty; entities decoded",
                r#"<configuration><appSettings><add key="E"/><add key="P" value="a&amp;b &quot;c&quot;"/></appSettings></configuration>"#,
                &[("E", "", 1), ("P", "a&b \"c\"", 1)],
            ),
            (
                "two appSettings sections read in order",
                r#"<configuration><appSettings><add key="A" value="1"/></appSettings><appSettings><add key="A" value="3"/></appSettings></configuration>"#,
                &[("A", "3", 1)],
            ),
            ("no appSettings", "<configuration/>", &[]),
        ];
        for (name, text, expected) in cases {
            let config = parse_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pairs(&config), *expected, "{name}");
            assert!(config.warnings.is_empty(), "{name}: {:?}", config.warnings);
        }
    }

    #[test]
    fn byte_order_marks() {
        let text = "<configuration><appSettings><add key=\"K\" value=\"é\"/></appSettings></configuration>";
        let mut utf8 = b"\xEF\xBB\xBF".to_vec();
        utf8.extend_from_slice(text.as_bytes());
        let mut utf16le = b"\xFF\xFE".to_vec();
        utf16le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let mut utf16be = b"\xFE\xFF".to_vec();
        utf16be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        for (name, bytes) in [("utf8", utf8), ("utf16le", utf16le), ("utf16be", utf16be)] {
            let config = parse(Path::new("w"), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pairs(&config), [("K", "é", 1)], "{name}");
        }
    }

    #[test]
    fn bad_files_name_the_file_line_and_problem() {
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "unclosed element",
                b"<configuration>\n<appSettings>\n<add key=\"A\" value=\"1\">\n</appSettings>",
                "site/web.config line 4 column 1: not well-formed XML: expected 'add' tag, not 'appSettings'",
            ),
            (
                "wrong root",
                b"<settings/>",
                "site/web.config line 1 column 1: the root element is <settings>; a web.config starts with <configuration>",
            ),
            (
                "add without key",
                b"<configuration>\r\n <appSettings>\r\n  <add value=\"1\"/>\r\n </appSettings>\r\n</configuration>",
                "site/web.config line 3 column 3: <add> has no key attribute",
            ),
            (
                "remove without key",
                b"<configuration><appSettings><remove/></appSettings></configuration>",
                "site/web.config line 1 column 29: <remove> has no key attribute",
            ),
            (
                "empty key",
                b"<configuration><appSettings><add key=\"\" value=\"1\"/></appSettings></configuration>",
                "site/web.config line 1 column 29: <add> has an empty key",
            ),
            (
                "key with =",
                b"<configuration><appSettings><add key=\"A=B\" value=\"1\"/></appSettings></configuration>",
                "site/web.config line 1 column 29: the key \"A=B\" cannot be an environment variable name (it contains '=' or NUL)",
            ),
            (
                "unknown element",
                b"<configuration><appSettings>\n<set key=\"A\" value=\"1\"/></appSettings></configuration>",
                "site/web.config line 2 column 1: unexpected <set> in <appSettings>: only <add key=\"..\" value=\"..\"/>, <remove key=\"..\"/> and <clear/> belong there",
            ),
            (
                "latin-1 bytes",
                b"<configuration>\n<appSettings><add key=\"A\" value=\"caf\xE9\"/></appSettings></configuration>",
                "site/web.config line 2 column 37: not UTF-8 text (save the file as UTF-8, or as UTF-16 with a byte-order mark)",
            ),
            (
                "odd UTF-16",
                b"\xFF\xFE<\x00c",
                "site/web.config: UTF-16 text with an odd number of bytes",
            ),
            (
                "empty file",
                b"",
                "site/web.config line 1 column 1: not well-formed XML: the document does not have a root node",
            ),
        ];
        for (name, bytes, expected) in cases {
            let err = parse(Path::new("site/web.config"), bytes)
                .expect_err(name)
                .to_string();
            assert_eq!(err, *expected, "{name}");
        }
    }

    #[test]
    fn unsupported_constructs_warn() {
        let config = parse_str(
            "<configuration>\n<appSettings configSource=\"app.config\"><add key=\"A\" value=\"1\"/></appSettings>\n<location path=\"x\"><appSettings><add key=\"B\" value=\"2\"/></appSettings></location>\n</configuration>",
        )
        .expect("parses");
        assert_eq!(pairs(&config), [("A", "1", 2)]);
        assert_eq!(
            config.warnings,
            [
                "site/web.config line 2: <appSettings configSource=\"app.config\"> is not supported: the settings in that file are ignored; copy them into this web.config",
                "site/web.config line 3: <appSettings> inside <location> is ignored; put the settings in the top-level <appSettings>",
            ]
        );
    }

    #[test]
    fn load_and_find() {
        let dir = std::env::temp_dir().join(format!("wfcgi-webconfig-{}", std::process::id()));
        // Process ids repeat (under Wine, from one run to the next): start empty.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert_eq!(find(&dir), None);
        let path = dir.join("Web.Config");
        std::fs::write(
            &path,
            "<configuration><appSettings><add key=\"A\" value=\"1\"/></appSettings></configuration>",
        )
        .expect("write");
        let found = find(&dir).expect("found in any case");
        if cfg!(windows) {
            // A case-insensitive file system: the first spelling tried names the same file.
            assert!(found
                .to_string_lossy()
                .eq_ignore_ascii_case(&path.to_string_lossy()));
        } else {
            assert_eq!(found, path);
        }
        let config = load(&found).expect("loads");
        assert_eq!(config.get("a").map(|s| s.value.as_str()), Some("1"));
        let missing = load(&dir.join("nope.config")).expect_err("missing file");
        assert!(
            missing.to_string().starts_with(&format!(
                "{}: cannot read it: ",
                dir.join("nope.config").display()
            )),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
