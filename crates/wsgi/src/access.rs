//! The access log: one line per request, when `BridgeConfig::access_log` is on. Through
//! tracing, like every other line: `Text` is an event of target `wfcgi::access` in the log's
//! usual form (its time, then `request{id=...}`, then method, path, status, body bytes,
//! duration and pid); `Json` is an event of target `wfcgi::access_json` whose message is one
//! JSON object with the same fields and the time, which wfcgi's logging writes bare, a line
//! each (JSON lines).

use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::AccessLog;
use crate::request_id::Head;

/// The target of text access lines.
pub const TARGET: &str = "wfcgi::access";
/// The target of JSON access lines, written without the usual prefix.
pub const JSON_TARGET: &str = "wfcgi::access_json";

/// A request being timed for the access log.
pub(crate) struct Access {
    form: AccessLog,
    started: Instant,
    method: String,
    path: String,
}

/// Starts timing a request, if the access log is on.
pub(crate) fn begin(form: AccessLog, head: &Head<'_>) -> Option<Access> {
    if form == AccessLog::Off {
        return None;
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut path = text(head.uri);
    if path.is_empty() {
        path = text(head.path_info);
        if !head.query.is_empty() {
            path.push('?');
            path.push_str(&text(head.query));
        }
    }
    Some(Access {
        form,
        started: Instant::now(),
        method: text(head.method),
        path,
    })
}

impl Access {
    /// The request ended: its line. `status` 0: nothing was sent.
    pub(crate) fn end(self, id: &crate::request_id::RequestId, status: u16, bytes: u64) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let pid = std::process::id();
        match self.form {
            AccessLog::Off => {}
            AccessLog::Text => {
                let _span = crate::log_scope::enter();
                tracing::info!(
                    target: TARGET,
                    "{} {} {status} {bytes} {ms:.2}ms pid={pid}",
                    self.method,
                    self.path
                )
            }
            AccessLog::Json => {
                let mut line = String::with_capacity(160 + self.path.len());
                line.push_str("{\"time\":\"");
                rfc3339_now(&mut line);
                line.push_str("\",\"id\":");
                json_string(&mut line, &id.to_string());
                line.push_str(",\"method\":");
                json_string(&mut line, &self.method);
                line.push_str(",\"path\":");
                json_string(&mut line, &self.path);
                let _ = write!(
                    line,
                    ",\"status\":{status},\"bytes\":{bytes},\"duration_ms\":{ms:.3},\"pid\":{pid}}}"
                );
                tracing::info!(target: JSON_TARGET, "{line}");
            }
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current UTC time as `2026-12-03T14:00:00.123Z`.
fn rfc3339_now(out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`). Also the log file's timestamps (wfcgi's `logging`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_strings_are_written_as_json_expects() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_426), (2025, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }
}
