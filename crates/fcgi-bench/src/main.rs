//! `fcgi-bench`: a FastCGI load generator for any FastCGI responder (wfcgi, uWSGI, flup,
//! PHP-FPM, ...). Its own binary, so that the server ships without it and it runs without
//! Python: it links only the `fastcgi` crate, whose sans-IO client encodes the requests and
//! decodes the responses.
//!
//! N connections, each a task that sends one request at a time (request id 1), keeping the
//! connection (FCGI_KEEP_CONN) or reconnecting per request. Every response is checked (CGI
//! status, optionally the exact body); errors are counted by kind. A warm-up runs first on the
//! same connections and is left out of the figures (a server that serves one connection, such
//! as wfastcgi under IIS, keeps it). Latency is kept per request as microseconds in a `Vec<u32>`
//! per connection, merged and sorted at the end (exact percentiles, 4 bytes a request).
//!
//! Modules: [`client`] (the request to send, one exchange, the checks), [`stats`] (counters,
//! percentiles, report).

mod client;
mod stats;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use client::{Buffers, Expect, Outcome, RequestSpec, Target};
use stats::{Counts, ErrorKind, Idle, Latency, Report};

/// Exit status for bad options (a usage error) or a target that cannot be resolved.
const EXIT_USAGE: u8 = 2;

/// Pause after a failed connect, so that a server that is down is not hammered in a loop.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Parser)]
#[command(
    name = "fcgi-bench",
    version,
    about = "Load a FastCGI server and report requests/s and latency",
    long_about = "Load a FastCGI server (wfcgi, uWSGI, flup, PHP-FPM, ...) and report requests/s \
        and latency percentiles.\n\n\
        Each connection sends one request at a time as a web server would (the standard CGI \
        params, WSGI at the root: SCRIPT_NAME empty, PATH_INFO the path), and checks every \
        response: the CGI Status (absent = 200) and, with --expect-body, the exact body. \
        Errors are counted by kind: connect, io (reset, closed early), protocol, status, body, \
        timeout. Requests/s counts the responses that passed every check; latency percentiles \
        cover every whole response (also those with the wrong status or body). A kept \
        connection that the server closed after a response (uWSGI does, whatever \
        FCGI_KEEP_CONN says) is reopened and the request sent again, as nginx does: counted \
        apart, not as an error. The client's own CPU time over the measured window is reported, so \
        that one can see what the server had left on a small machine.\n\n\
        Exit status: 0 when the run finished and at least one request succeeded, 1 when none \
        did, 2 for bad options.\n\n\
        Examples:\n  \
        fcgi-bench 127.0.0.1:9000 -c 8 --duration 10s --path /hello --expect-body 'Hello, World!'\n  \
        fcgi-bench unix:/run/php/php-fpm.sock --path /index.php \
        --param SCRIPT_FILENAME=/var/www/index.php --json\n  \
        fcgi-bench 127.0.0.1:9000 -c 16 --method POST --path /sha256 --body-size 1M"
)]
pub struct BenchArgs {
    /// FastCGI server: HOST:PORT or unix:/PATH
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Concurrent connections, each with one request in flight (0 with --idle: only hold the
    /// idle connections for the warm-up and the duration, for a load from another process)
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// How long to measure, after the warm-up: 10s, 500ms, 2m [default: 10s unless --requests]
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many requests (after the warm-up) instead of a duration
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// Load sent before measuring, on the same connections, left out of the figures
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// FCGI_KEEP_CONN: on keeps each connection for the next request, off reconnects per
    /// request (and counts the connect in the latency)
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, default_value = "on", action = clap::ArgAction::Set)]
    pub keep_conn: bool,
    /// REQUEST_METHOD
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// PATH_INFO (and the path of REQUEST_URI)
    #[arg(long, value_name = "PATH", default_value = "/hello")]
    pub path: String,
    /// QUERY_STRING, without the '?'
    #[arg(long, value_name = "QUERY", default_value = "")]
    pub query: String,
    /// Request body sent as FCGI_STDIN, byte i being i % 251: 1048576, 64K, 1M
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "0")]
    pub body_size: u64,
    /// An extra FastCGI param, or a replacement for a standard one (repeatable)
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// The CGI status every response must have
    #[arg(long, value_name = "CODE", default_value_t = 200)]
    pub expect_status: u16,
    /// The exact body every response must have: the text itself, or @FILE for a file's bytes
    #[arg(long, value_name = "TEXT|@FILE")]
    pub expect_body: Option<String>,
    /// Per-request limit (connect included) before it counts as a timeout
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Print one JSON object instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Threads of the client's runtime (1 leaves the other cores to the server)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub client_threads: usize,
    /// Also hold N connections open and idle for the whole run, each after one request, as a
    /// web server's keepalive pool holds them: opened before the warm-up, checked still open at
    /// the end. Needs a file descriptor limit above N (this process raises its soft limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,
}

/// `10s`, `500ms`, `2m`, `1.5s`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "{text:?} is not a duration: use e.g. 10s, 500ms, 2m"
        )),
    }
}

/// A byte count, optionally with K, M or G (x1024), with or without a trailing `B`/`iB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n <= 1 << 32)
        .ok_or_else(|| {
            format!("{text:?} is not a size: use bytes, optionally with K, M or G, up to 4G")
        })
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{text:?}: use on or off")),
    }
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: use NAME=VALUE")),
    }
}

/// Resolves `host:port` or `unix:/path`; also returns the port for SERVER_PORT.
fn resolve_target(text: &str) -> Result<(Target, u16), String> {
    if let Some(path) = text.strip_prefix("unix:") {
        #[cfg(unix)]
        let target = Ok((Target::Unix(path.into()), 80));
        #[cfg(not(unix))]
        let target = Err(format!("unix sockets are not supported here: {path}"));
        return target;
    }
    use std::net::ToSocketAddrs;
    let addr = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?} (use HOST:PORT or unix:/PATH): {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))?;
    Ok((Target::Tcp(addr), addr.port()))
}

/// What every connection task shares.
struct Plan {
    target: Target,
    request: Vec<u8>,
    expect: Expect,
    timeout: Duration,
    keep_conn: bool,
    /// Requests started at or after this are measured.
    measure_start: Instant,
    /// No request is started at or after this (duration mode).
    deadline: Option<Instant>,
    /// Measured requests still to start (request-count mode).
    remaining: Option<AtomicI64>,
    /// For the progress line.
    done: AtomicU64,
    failed: AtomicU64,
}

/// What one connection task measured.
#[derive(Default)]
struct TaskResult {
    counts: Counts,
    latencies: Vec<u32>,
    warmup_requests: u64,
    warmup_errors: u64,
    last_done: Option<Instant>,
}

async fn connection_task(plan: Arc<Plan>) -> TaskResult {
    let mut result = TaskResult {
        latencies: Vec::with_capacity(16 * 1024),
        ..TaskResult::default()
    };
    let mut bufs = Buffers::new();
    let mut stream: Option<fastcgi::Stream> = None;
    loop {
        let start = Instant::now();
        let measured = start >= plan.measure_start;
        if measured {
            if plan.deadline.is_some_and(|d| start >= d) {
                break;
            }
            if let Some(remaining) = &plan.remaining {
                if remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
            }
        }
        let mut server_closed = false;
        let outcome = tokio::time::timeout(plan.timeout, async {
            // A kept connection may have been closed by the server since the last response:
            // then reconnect and send again, once (nginx does the same with its keepalive pool).
            for attempt in 0..2 {
                let reused = stream.is_some();
                let conn = match &mut stream {
                    Some(conn) => conn,
                    None => match plan.target.connect().await {
                        Ok(conn) => stream.insert(conn),
                        Err(_) => return Outcome::Broken(ErrorKind::Connect),
                    },
                };
                match client::exchange(conn, &plan.request, &mut bufs, &plan.expect).await {
                    Outcome::Closed if reused && attempt == 0 => {
                        server_closed = true;
                        stream = None;
                    }
                    outcome => return outcome,
                }
            }
            Outcome::Closed
        })
        .await
        .unwrap_or(Outcome::Broken(ErrorKind::Timeout));
        let end = Instant::now();
        let whole_response = matches!(outcome, Outcome::Ok | Outcome::Mismatch(_));
        let error = match outcome {
            Outcome::Ok => None,
            Outcome::Mismatch(kind) => Some(kind),
            Outcome::Broken(kind) => {
                stream = None;
                Some(kind)
            }
            Outcome::Closed => {
                stream = None;
                Some(ErrorKind::Io)
            }
        };
        if !plan.keep_conn {
            stream = None;
        }
        if measured {
            let c = &mut result.counts;
            match error {
                None => c.ok += 1,
                Some(kind) => c.errors[kind.index()] += 1,
            }
            c.server_closed += u64::from(server_closed);
            if whole_response {
                let us = end.duration_since(start).as_micros();
                result.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                c.bytes_sent += plan.request.len() as u64;
                c.bytes_received += bufs.received;
                c.body_bytes += bufs.response.body_len;
            }
            result.last_done = Some(end);
        } else {
            result.warmup_requests += 1;
            result.warmup_errors += u64::from(error.is_some());
        }
        plan.done.fetch_add(1, Ordering::Relaxed);
        if error.is_some() {
            plan.failed.fetch_add(1, Ordering::Relaxed);
        }
        if error == Some(ErrorKind::Connect) {
            tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
        }
    }
    result
}

/// Idle connections opened at once: more would overflow the server's listen backlog.
const IDLE_OPEN_AT_ONCE: usize = 128;

/// Opens `n` connections and sends one request on each (it must pass the checks); returns the
/// ones that did, and how many did not.
async fn open_idle(plan: &Arc<Plan>, n: usize) -> (Vec<fastcgi::Stream>, u64) {
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    let mut opening = tokio::task::JoinSet::new();
    let mut started = 0;
    while started < n || !opening.is_empty() {
        while started < n && opening.len() < IDLE_OPEN_AT_ONCE {
            let plan = plan.clone();
            opening.spawn(async move {
                let mut stream = plan.target.connect().await.ok()?;
                let mut bufs = Buffers::new();
                let exchange =
                    client::exchange(&mut stream, &plan.request, &mut bufs, &plan.expect);
                match tokio::time::timeout(plan.timeout, exchange).await {
                    Ok(Outcome::Ok) => Some(stream),
                    _ => None,
                }
            });
            started += 1;
        }
        match opening.join_next().await {
            Some(Ok(Some(stream))) => streams.push(stream),
            Some(_) => failed += 1,
            None => {}
        }
    }
    (streams, failed)
}

/// How many of the idle connections are still open: a read that finds nothing to read within
/// a moment. One the server closed reads end of stream (or an error) at once.
async fn still_open(streams: Vec<fastcgi::Stream>) -> u64 {
    use tokio::io::AsyncReadExt;
    let mut checks = tokio::task::JoinSet::new();
    for mut stream in streams {
        checks.spawn(async move {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte));
            read.await.is_err()
        });
    }
    let mut open = 0;
    while let Some(check) = checks.join_next().await {
        open += u64::from(check.unwrap_or(false));
    }
    open
}

/// Raises this process's soft limit on open files to the hard one, for `--idle`.
#[cfg(unix)]
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit fills the struct it is given; setrlimit reads it.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur as u64
    }
}

#[cfg(not(unix))]
fn raise_fd_limit() -> u64 {
    u64::MAX
}

/// User and system CPU time of this process so far (not measured off Unix: zero).
#[cfg(not(unix))]
fn cpu_times() -> (Duration, Duration) {
    (Duration::ZERO, Duration::ZERO)
}

/// User and system CPU time of this process so far.
#[cfg(unix)]
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// The progress line on stderr, once a second, while the run lasts.
async fn progress(plan: Arc<Plan>, begin: Instant) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = 0;
    loop {
        tick.tick().await;
        let done = plan.done.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let now = Instant::now();
        let phase = if now < plan.measure_start {
            "warm-up"
        } else {
            "measuring"
        };
        eprint!(
            "\r\x1b[K{phase} {:>5.0} s  {done} requests  {} req/s  {failed} errors",
            now.duration_since(begin).as_secs_f64(),
            done - last,
        );
        last = done;
    }
}

/// Runs the benchmark and prints the report.
fn main() -> ExitCode {
    let args = &BenchArgs::parse();
    match run(args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.counts.ok == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(message) => {
            eprintln!("fcgi-bench: error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(args: &BenchArgs) -> Result<Report, String> {
    if args.connections == 0 && (args.idle == 0 || args.requests.is_some()) {
        return Err(
            "--connections must be at least 1 (0 only with --idle and a --duration: hold the \
             idle connections and send no load)"
                .into(),
        );
    }
    if args.client_threads == 0 {
        return Err("--client-threads must be at least 1".into());
    }
    if args.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    if args.idle > 0 {
        let limit = raise_fd_limit();
        let needed = (args.idle + args.connections + 64) as u64;
        if limit < needed {
            return Err(format!(
                "--idle {} needs about {needed} open files, and this process may open {limit}: \
                 raise the limit (ulimit -n) or hold fewer",
                args.idle
            ));
        }
    }
    let (target, server_port) = resolve_target(&args.target)?;
    let expect_body = match args.expect_body.as_deref() {
        None => None,
        Some(text) => Some(match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| format!("--expect-body @{path}: {e}"))?,
            None => text.as_bytes().to_vec(),
        }),
    };
    let spec = RequestSpec {
        method: args.method.clone(),
        path: args.path.clone(),
        query: args.query.clone(),
        body_size: usize::try_from(args.body_size).map_err(|_| "--body-size too large")?,
        server_port,
        extra: args.params.clone(),
        keep_conn: args.keep_conn,
    };
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };

    let runtime = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .thread_name("fcgi-bench")
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;

    let mut plan = Plan {
        target,
        request: spec.encode(),
        expect: Expect {
            status: args.expect_status,
            body: expect_body,
        },
        timeout: args.timeout,
        keep_conn: args.keep_conn,
        measure_start: Instant::now(),
        deadline: None,
        remaining: args.requests.map(|n| AtomicI64::new(n as i64)),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    // The idle connections first: the clock of the run starts once they are all held.
    let (idle_streams, idle_failed) = if args.idle > 0 {
        let shared = Arc::new(plan);
        let opened = runtime.block_on(open_idle(&shared, args.idle));
        plan = Arc::into_inner(shared).expect("the opening tasks are done");
        opened
    } else {
        (Vec::new(), 0)
    };
    let idle_opened = idle_streams.len() as u64;
    let begin = Instant::now();
    let measure_start = begin + args.warmup;
    plan.measure_start = measure_start;
    plan.deadline = duration.map(|d| measure_start + d);
    let plan = Arc::new(plan);

    let (results, cpu) = runtime.block_on(async {
        let progress = std::io::stderr()
            .is_terminal()
            .then(|| tokio::spawn(progress(plan.clone(), begin)));
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(connection_task(plan.clone())))
            .collect();
        tokio::time::sleep_until(measure_start.into()).await;
        if let (true, Some(deadline)) = (tasks.is_empty(), plan.deadline) {
            // Only holding the idle connections: for the whole duration.
            tokio::time::sleep_until(deadline.into()).await;
        }
        let cpu_start = cpu_times();
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.unwrap_or_default());
        }
        let cpu_end = cpu_times();
        if let Some(p) = progress {
            p.abort();
            eprint!("\r\x1b[K");
        }
        (
            results,
            (
                cpu_end.0.saturating_sub(cpu_start.0),
                cpu_end.1.saturating_sub(cpu_start.1),
            ),
        )
    });

    let idle = (args.idle > 0).then(|| Idle {
        requested: args.idle as u64,
        opened: idle_opened,
        failed: idle_failed,
        held: runtime.block_on(still_open(idle_streams)),
    });

    let mut counts = Counts::default();
    let mut latencies = Vec::with_capacity(results.iter().map(|r| r.latencies.len()).sum());
    let (mut warmup_requests, mut warmup_errors) = (0, 0);
    let mut last_done = None;
    for r in &results {
        counts.add(&r.counts);
        latencies.extend_from_slice(&r.latencies);
        warmup_requests += r.warmup_requests;
        warmup_errors += r.warmup_errors;
        last_done = last_done.max(r.last_done);
    }
    let elapsed = match last_done {
        Some(t) => t.saturating_duration_since(measure_start),
        None => duration.unwrap_or_default(),
    };
    Ok(Report {
        target: args.target.clone(),
        connections: args.connections,
        keep_conn: args.keep_conn,
        method: args.method.clone(),
        uri: spec.uri(),
        body_size: args.body_size,
        client_threads: args.client_threads,
        warmup: args.warmup,
        warmup_requests,
        warmup_errors,
        elapsed,
        counts,
        latency: Latency::from_samples(&mut latencies),
        cpu_user: cpu.0,
        cpu_sys: cpu.1,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        idle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("5G").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn params_and_switches() {
        assert_eq!(parse_param("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_param("A="), Ok(("A".into(), String::new())));
        assert!(parse_param("=x").is_err());
        assert!(parse_param("A").is_err());
        assert_eq!(parse_on_off("off"), Ok(false));
        assert_eq!(parse_on_off("ON"), Ok(true));
        assert!(parse_on_off("maybe").is_err());
    }

    #[test]
    fn targets() {
        let (t, port) = resolve_target("127.0.0.1:9000").unwrap();
        assert!(matches!(t, Target::Tcp(a) if a.port() == 9000));
        assert_eq!(port, 9000);
        #[cfg(unix)]
        assert!(
            matches!(resolve_target("unix:/run/x.sock").unwrap().0, Target::Unix(p) if p.as_os_str() == "/run/x.sock")
        );
        assert!(resolve_target("nohostnoport").is_err());
    }

    /// A whole run against an in-process FastCGI server (the `fastcgi` crate), over TCP.
    #[test]
    fn run_against_a_server() {
        struct Hello;
        impl fastcgi::Handler for Hello {
            fn handle(&self, request: fastcgi::Request) {
                let path = request.params().get(b"PATH_INFO").unwrap_or(b"").to_vec();
                let (_, _, mut response) = request.into_parts();
                let reply: &'static [u8] = match &path[..] {
                    b"/hello" => b"Status: 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!",
                    _ => b"Status: 404 Not Found\r\n\r\nnope",
                };
                let _ = response.try_write(bytes::Bytes::from_static(reply));
                response.finish(0);
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, stop) = rt.block_on(async {
            let listener = fastcgi::Listener::bind(
                &"127.0.0.1:0".parse::<fastcgi::ListenAddr>().unwrap(),
                fastcgi::BindOptions::default(),
            )
            .await
            .unwrap();
            let addr = listener.local_addr().to_string();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = fastcgi::Server::new(fastcgi::ServerConfig::default(), Arc::new(Hello));
            tokio::spawn(async move {
                let _ = server
                    .serve(vec![listener], async {
                        let _ = rx.await;
                    })
                    .await;
            });
            (addr, tx)
        });
        let args = |target: &str, extra: &[&str]| {
            let mut argv = vec!["fcgi-bench", target];
            argv.extend_from_slice(extra);
            BenchArgs::try_parse_from(argv).map_err(|e| e.to_string())
        };
        let bench = |extra: &[&str]| {
            let mut all = vec!["--warmup", "100ms"];
            all.extend_from_slice(extra);
            run(&args(&addr, &all).unwrap()).unwrap()
        };
        let ok = bench(&["-c", "3", "-n", "300", "--expect-body", "Hello, World!"]);
        assert_eq!(ok.counts.ok, 300, "{}", ok.to_text());
        assert_eq!(ok.counts.error_total(), 0);
        assert_eq!(ok.latency.count, 300);
        assert_eq!(ok.counts.body_bytes, 300 * 13);
        assert!(ok.warmup_requests > 0);

        let reconnect = bench(&["-c", "2", "-n", "50", "--keep-conn", "off"]);
        assert_eq!(reconnect.counts.ok, 50, "{}", reconnect.to_text());

        // Idle connections beside the load: each answered one request, and all are still
        // open at the end (the server keeps connections).
        let idle = bench(&["-c", "2", "-n", "100", "--idle", "300"]);
        assert_eq!(idle.counts.ok, 100, "{}", idle.to_text());
        let held = idle.idle.as_ref().unwrap();
        assert_eq!((held.opened, held.failed, held.held), (300, 0, 300));
        assert!(idle.to_json().contains("\"held\":300}"));

        // Only holding them, for a load sent by another process: no requests, the whole
        // duration.
        let started = Instant::now();
        let hold = bench(&["-c", "0", "--duration", "300ms", "--idle", "50"]);
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "warm-up and duration"
        );
        assert_eq!(hold.counts.ok, 0, "{}", hold.to_text());
        let held = hold.idle.as_ref().unwrap();
        assert_eq!((held.opened, held.held), (50, 50));
        assert!(args(&addr, &["-c", "0", "-n", "5", "--idle", "5"])
            .map(|a| run(&a))
            .is_ok_and(|r| r.is_err()));

        let wrong_body = bench(&["-n", "5", "--expect-body", "Hello"]);
        assert_eq!(wrong_body.counts.errors[ErrorKind::Body.index()], 5);
        let wrong_status = bench(&["-d", "200ms", "--path", "/nope"]);
        assert!(wrong_status.counts.errors[ErrorKind::Status.index()] > 0);
        assert_eq!(wrong_status.counts.ok, 0);
        assert!(
            args(&addr, &["-n", "5", "-d", "1s"]).is_err(),
            "--duration and --requests conflict"
        );
        let _ = stop.send(());

        // A port nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused =
            run(&args(&free.to_string(), &["-d", "100ms", "--warmup", "0s"]).unwrap()).unwrap();
        assert!(refused.counts.errors[ErrorKind::Connect.index()] > 0);
    }

    /// A server that answers one request per connection and closes it, FCGI_KEEP_CONN or not
    /// (uWSGI): each next request is sent again on a new connection, and that is no error.
    #[test]
    fn server_closing_kept_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            rt.block_on(async move {
                // 3 idle connections, then 20 requests, each on a new connection.
                for _ in 0..23 {
                    let (mut s, _) = listener.accept().await.unwrap();
                    let mut buf = bytes::BytesMut::new();
                    'read: loop {
                        s.read_buf(&mut buf).await.unwrap();
                        while let Some(rec) = fastcgi::Record::parse(&mut buf).unwrap() {
                            if rec.record_type == fastcgi::RecordType::Stdin
                                && rec.content.is_empty()
                            {
                                break 'read;
                            }
                        }
                    }
                    let mut out = Vec::new();
                    let id = client::REQUEST_ID;
                    fastcgi::protocol::encode_stream(
                        &mut out,
                        fastcgi::RecordType::Stdout,
                        id,
                        b"Status: 200 OK\r\n\r\nhi",
                    );
                    fastcgi::protocol::encode_stream_end(&mut out, fastcgi::RecordType::Stdout, id);
                    fastcgi::protocol::EndRequest {
                        app_status: 0,
                        protocol_status: fastcgi::ProtocolStatus::RequestComplete,
                    }
                    .encode(id, &mut out);
                    s.write_all(&out).await.unwrap();
                }
            })
        });
        let args = BenchArgs {
            target: addr,
            connections: 1,
            duration: None,
            requests: Some(20),
            warmup: Duration::ZERO,
            keep_conn: true,
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            body_size: 0,
            params: Vec::new(),
            expect_status: 200,
            expect_body: Some("hi".into()),
            timeout: Duration::from_secs(10),
            json: false,
            client_threads: 1,
            idle: 3,
        };
        let report = run(&args).unwrap();
        server.join().unwrap();
        assert_eq!(report.counts.ok, 20, "{}", report.to_text());
        assert_eq!(report.counts.error_total(), 0);
        assert_eq!(report.counts.server_closed, 19);
        assert!(report.to_json().contains("\"server_closed_kept_conns\":19"));
        // The idle connections were answered, then closed: none is held.
        let idle = report.idle.as_ref().unwrap();
        assert_eq!((idle.opened, idle.held), (3, 0), "{}", report.to_text());
    }
}
