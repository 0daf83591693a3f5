//! What a run counts, percentile math, and the report (text or one JSON object).

use std::fmt::Write as _;
use std::time::Duration;

/// Why a request did not count as a success. Each is counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The connection could not be made (refused, unreachable, connect timed out).
    Connect,
    /// Read or write failed, or the server closed the connection before END_REQUEST.
    Io,
    /// Not FastCGI, an unexpected record, a malformed CGI head, or END_REQUEST with a
    /// protocol status other than REQUEST_COMPLETE.
    Protocol,
    /// A whole response whose CGI status is not the expected one.
    Status,
    /// A whole response whose body is not the expected one.
    Body,
    /// No END_REQUEST within the per-request timeout.
    Timeout,
}

impl ErrorKind {
    pub(crate) const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Io,
        ErrorKind::Protocol,
        ErrorKind::Status,
        ErrorKind::Body,
        ErrorKind::Timeout,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
            ErrorKind::Body => "body",
            ErrorKind::Timeout => "timeout",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One connection task's counters over the measured window.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    pub ok: u64,
    pub errors: [u64; 6],
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub body_bytes: u64,
    /// Kept connections the server had closed when the next request was sent (reconnected
    /// and sent again, as a web server does; not errors).
    pub server_closed: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.ok += other.ok;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.body_bytes += other.body_bytes;
        self.server_closed += other.server_closed;
    }

    pub(crate) fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.ok + self.error_total()
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `sorted` (ascending); `None` if empty.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Latency {
    pub count: usize,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
    pub mean: f64,
}

impl Latency {
    /// Sorts `samples` in place and summarises them.
    pub(crate) fn from_samples(samples: &mut [u32]) -> Latency {
        samples.sort_unstable();
        let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
        let at = |p| percentile(samples, p).unwrap_or(0);
        Latency {
            count: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: samples.last().copied().unwrap_or(0),
            mean: if samples.is_empty() {
                0.0
            } else {
                sum as f64 / samples.len() as f64
            },
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone)]
/// `--idle`: the connections held open beside the load.
pub(crate) struct Idle {
    pub requested: u64,
    /// Connected and answered their one request.
    pub opened: u64,
    pub failed: u64,
    /// Still open after the run.
    pub held: u64,
}

pub(crate) struct Report {
    pub target: String,
    pub connections: usize,
    pub keep_conn: bool,
    pub method: String,
    pub uri: String,
    pub body_size: u64,
    pub client_threads: usize,
    pub warmup: Duration,
    pub warmup_requests: u64,
    pub warmup_errors: u64,
    /// Measured window: from the end of warm-up to the end of the last measured request.
    pub elapsed: Duration,
    pub counts: Counts,
    pub latency: Latency,
    /// This process's CPU time (getrusage RUSAGE_SELF) over the measured window.
    pub cpu_user: Duration,
    pub cpu_sys: Duration,
    pub cpus: usize,
    pub idle: Option<Idle>,
}

impl Report {
    pub(crate) fn rps(&self) -> f64 {
        per_sec(self.counts.ok, self.elapsed)
    }

    pub(crate) fn cpu_percent(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.cpu_user + self.cpu_sys).as_secs_f64() / secs * 100.0
        } else {
            0.0
        }
    }

    pub(crate) fn to_json(&self) -> String {
        let c = &self.counts;
        let l = &self.latency;
        let mut out = String::with_capacity(1024);
        let _ = write!(
            out,
            "{{\"target\":{},\"connections\":{},\"keep_conn\":{},\"method\":{},\"uri\":{},\
             \"body_size\":{},\"client_threads\":{},\"warmup_secs\":{:.3},\"warmup_requests\":{},\
             \"warmup_errors\":{},\"duration_secs\":{:.6},\"requests\":{},\"ok\":{},\"errors_total\":{},\
             \"errors\":{{",
            json_str(&self.target),
            self.connections,
            self.keep_conn,
            json_str(&self.method),
            json_str(&self.uri),
            self.body_size,
            self.client_threads,
            self.warmup.as_secs_f64(),
            self.warmup_requests,
            self.warmup_errors,
            self.elapsed.as_secs_f64(),
            c.requests(),
            c.ok,
            c.error_total(),
        );
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}\"{}\":{}", kind.name(), c.errors[kind.index()]);
        }
        let _ = write!(
            out,
            "}},\"rps\":{:.2},\"latency_us\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{},\
             \"mean\":{:.1}}},\"bytes_sent\":{},\"bytes_received\":{},\"body_bytes\":{},\
             \"server_closed_kept_conns\":{},\"client_cpu\":{{\"user_secs\":{:.3},\"sys_secs\":{:.3},\"percent_of_one_core\":{:.1}}},\
             \"cpus\":{}",
            self.rps(),
            l.count,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.mean,
            c.bytes_sent,
            c.bytes_received,
            c.body_bytes,
            c.server_closed,
            self.cpu_user.as_secs_f64(),
            self.cpu_sys.as_secs_f64(),
            self.cpu_percent(),
            self.cpus,
        );
        if let Some(idle) = &self.idle {
            let _ = write!(
                out,
                ",\"idle\":{{\"requested\":{},\"opened\":{},\"failed\":{},\"held\":{}}}",
                idle.requested, idle.opened, idle.failed, idle.held
            );
        }
        out.push('}');
        out
    }

    pub(crate) fn to_text(&self) -> String {
        let c = &self.counts;
        let l = &self.latency;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fcgi-bench: {}, {} connection{} (keep-conn {}), {} {}{}",
            self.target,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            if self.keep_conn { "on" } else { "off" },
            self.method,
            self.uri,
            if self.body_size > 0 {
                format!(", {}-byte body", self.body_size)
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            out,
            "  duration     {:.2} s measured, after {:.2} s warm-up ({} requests, {} errors)",
            self.elapsed.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.warmup_requests,
            self.warmup_errors,
        );
        let _ = writeln!(
            out,
            "  requests     {} ({} ok, {} errors)",
            c.requests(),
            c.ok,
            c.error_total()
        );
        let errors: Vec<String> = ErrorKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), c.errors[k.index()]))
            .collect();
        let _ = writeln!(out, "  errors       {}", errors.join(", "));
        let _ = writeln!(
            out,
            "  throughput   {:.1} req/s, {:.2} MiB/s received",
            self.rps(),
            per_sec(c.bytes_received, self.elapsed) / (1024.0 * 1024.0)
        );
        let ms = |us: u32| f64::from(us) / 1000.0;
        let _ = writeln!(
            out,
            "  latency      p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            l.mean / 1000.0,
        );
        let _ = writeln!(
            out,
            "  transfer     {} bytes sent, {} received ({} of response body)",
            c.bytes_sent, c.bytes_received, c.body_bytes
        );
        if c.server_closed > 0 {
            let _ = writeln!(
                out,
                "  keep-conn    the server closed {} kept connections after a response \
                 (reconnected and sent again, as a web server does: not errors)",
                c.server_closed
            );
        }
        let _ = writeln!(
            out,
            "  client CPU   user {:.2} s + sys {:.2} s = {:.0}% of one core ({} thread{}, {} cores here)",
            self.cpu_user.as_secs_f64(),
            self.cpu_sys.as_secs_f64(),
            self.cpu_percent(),
            self.client_threads,
            if self.client_threads == 1 { "" } else { "s" },
            self.cpus,
        );
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                out,
                "  idle         {} of {} connections held open and idle through the run ({} opened, \
                 {} failed to open or to answer their request)",
                idle.held, idle.requested, idle.opened, idle.failed
            );
        }
        out
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        // 10 samples: p50 is the 5th, p90 the 9th, p99 rounds up to the 10th.
        let v: Vec<u32> = (10..20).collect();
        assert_eq!(percentile(&v, 50.0), Some(14));
        assert_eq!(percentile(&v, 90.0), Some(18));
        assert_eq!(percentile(&v, 99.0), Some(19));
        // 1000 samples: p99 is the 990th, not the max.
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.0), Some(990));
    }

    #[test]
    fn latency_summary_sorts() {
        let mut v = vec![5, 1, 4, 2, 3, 100];
        let l = Latency::from_samples(&mut v);
        assert_eq!(v, vec![1, 2, 3, 4, 5, 100]);
        assert_eq!((l.count, l.p50, l.p90, l.p99, l.max), (6, 3, 100, 100, 100));
        assert!((l.mean - 115.0 / 6.0).abs() < 1e-9);
        let empty = Latency::from_samples(&mut []);
        assert_eq!(
            (empty.count, empty.p50, empty.max, empty.mean),
            (0, 0, 0, 0.0)
        );
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn json_report_shape() {
        let mut counts = Counts {
            ok: 10,
            ..Counts::default()
        };
        counts.errors[ErrorKind::Timeout.index()] = 2;
        let report = Report {
            target: "127.0.0.1:9000".into(),
            connections: 2,
            keep_conn: true,
            method: "GET".into(),
            uri: "/hello".into(),
            body_size: 0,
            client_threads: 1,
            warmup: Duration::from_secs(1),
            warmup_requests: 3,
            warmup_errors: 0,
            elapsed: Duration::from_secs(2),
            counts,
            latency: Latency::default(),
            cpu_user: Duration::from_millis(500),
            cpu_sys: Duration::from_millis(500),
            cpus: 2,
            idle: None,
        };
        let json = report.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(json.contains("\"rps\":5.00"), "{json}");
        assert!(
            json.contains("\"requests\":12,\"ok\":10,\"errors_total\":2"),
            "{json}"
        );
        assert!(json.contains("\"timeout\":2}"), "{json}");
        assert!(json.contains("\"percent_of_one_core\":50.0"), "{json}");
        assert!(report.to_text().contains("5.0 req/s"));
        assert!(!json.contains("idle"), "{json}");
        let report = Report {
            idle: Some(Idle {
                requested: 10,
                opened: 9,
                failed: 1,
                held: 8,
            }),
            ..report
        };
        let json = report.to_json();
        assert!(
            json.ends_with(",\"idle\":{\"requested\":10,\"opened\":9,\"failed\":1,\"held\":8}}"),
            "{json}"
        );
        assert!(report.to_text().contains("8 of 10 connections held open"));
    }
}
