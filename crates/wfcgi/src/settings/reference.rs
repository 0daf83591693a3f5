//! The settings table of docs/configuration.md, generated from the settings table: a test
//! fails when the file differs from what the table generates, and `UPDATE_DOCS=1 cargo test -p
//! wfcgi configuration_md` rewrites it.

use super::table::{Default, Setting, Takes, SETTINGS};

/// The lines that enclose the generated table in docs/configuration.md.
const BEGIN: &str =
    "<!-- BEGIN settings table: generated from crates/wfcgi/src/settings/table.rs, edit it there -->";
const END: &str = "<!-- END settings table -->";

/// The Markdown table, one row per setting.
fn render() -> String {
    let mut out = String::from(
        "| Flag | web.config / environment name | Default | Meaning | wfastcgi compatibility |\n\
         |---|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        out.push_str(&row(setting));
    }
    out
}

fn row(setting: &Setting) -> String {
    let flag = match setting.flag {
        None => String::new(),
        Some(flag) => {
            let (text, repeatable) = match flag.takes {
                Takes::Value(name) => (format!("`{} {name}`", flag.long), false),
                Takes::Values(name) => (format!("`{} {name}`", flag.long), true),
                Takes::Switch => (format!("`{}`", flag.long), false),
            };
            match (flag.serve_only, repeatable) {
                (true, true) => format!("{text} (serve, repeatable)"),
                (true, false) => format!("{text} (serve)"),
                (false, true) => format!("{text} (repeatable)"),
                (false, false) => text,
            }
        }
    };
    let default = match setting.default {
        Default::Value(text) => format!("`{}`", text.replace('|', "\\|")),
        Default::Text(text) => text.to_string(),
    };
    format!(
        "| {flag} | `{}` | {default} | {} | {} |\n",
        setting.name, setting.doc, setting.wfastcgi
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `doc` with the text between the markers replaced by `table`.
    fn with_table(doc: &str, table: &str) -> String {
        let begin = doc
            .find(BEGIN)
            .expect("docs/configuration.md has the BEGIN settings table marker");
        let end = doc
            .find(END)
            .expect("docs/configuration.md has the END settings table marker");
        assert!(begin < end, "the markers are in order");
        format!("{}{BEGIN}\n{table}{}", &doc[..begin], &doc[end..])
    }

    #[test]
    fn configuration_md_matches_the_settings_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(path).expect("docs/configuration.md");
        let expected = with_table(&doc, &render());
        if doc == expected {
            return;
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, expected).expect("rewrite docs/configuration.md");
            return;
        }
        panic!(
            "docs/configuration.md's settings table differs from crates/wfcgi/src/settings/table.rs. \
             Edit the table, then run `UPDATE_DOCS=1 cargo test -p wfcgi configuration_md` to \
             regenerate the file"
        );
    }

    #[test]
    fn rows_escape_table_syntax() {
        let regex = SETTINGS
            .iter()
            .find(|s| s.name == super::super::WSGI_RESTART_FILE_REGEX)
            .expect("in the table");
        assert!(row(regex).contains(r"`.*((\.py)\|(\.config))$`"));
        for setting in SETTINGS {
            assert_eq!(
                row(setting).matches(" | ").count(),
                4,
                "{}: a cell holds an unescaped |",
                setting.name
            );
        }
    }
}
