//! Diagnostics against the real binary: the access log in both forms, with the request ids
//! that error pages show and the pid of the worker that served each request.

use std::time::Duration;

use test_support::wfcgi::{wsgi_params, Wfcgi};
use test_support::{Client, Reply};

fn get(c: &mut Client, path: &str, query: &str) -> Reply {
    c.request(1, &wsgi_params("GET", path, query), b"")
}

/// The log's lines holding `needle`, once there are `n` of them.
fn lines_with(w: &Wfcgi, needle: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = w
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_json_access_log_has_a_line_per_request_with_its_id_status_bytes_and_worker() {
    let mut w = Wfcgi::serve_testapp(&["--access-log", "json", "--processes", "1"]);
    let mut c = loop {
        let mut c = w.connect();
        if c.request(1, &wsgi_params("GET", "/hello", ""), b"")
            .status()
            == 200
        {
            break c;
        }
    };
    let pid = String::from_utf8(get(&mut c, "/pid", "").body().to_vec()).unwrap();
    let failed = get(&mut c, "/raise-before", "x=1");
    assert_eq!(failed.status(), 500);
    let id = String::from_utf8_lossy(failed.cgi().header("X-Request-Id").unwrap()).into_owned();
    let lines = lines_with(&w, "\"method\":\"GET\"", 3);
    assert_eq!(lines.len(), 3, "{}", w.log());
    // Written bare: each line is one JSON object, nothing before it.
    for line in &lines {
        assert!(
            line.starts_with("{\"time\":\"20") && line.ends_with('}'),
            "{line}"
        );
        assert!(line.contains(&format!("\"pid\":{}", pid.trim())), "{line}");
        assert!(line.contains("\"duration_ms\":"), "{line}");
    }
    assert!(
        lines[0].contains("\"path\":\"/hello\",\"status\":200,\"bytes\":13,"),
        "{}",
        lines[0]
    );
    let failure = &lines[2];
    assert!(failure.contains(&format!("\"id\":\"{id}\"")), "{failure}");
    assert!(
        failure.contains("\"path\":\"/raise-before?x=1\",\"status\":500,"),
        "{failure}"
    );
    w.stop(libc::SIGTERM);
}

#[test]
fn the_text_access_log_keeps_the_usual_line_form_whatever_the_log_level() {
    let mut w = Wfcgi::serve_testapp(&["--access-log", "text", "--log-level", "warn"]);
    let mut c = w.connect();
    assert_eq!(get(&mut c, "/hello", "").status(), 200);
    let missing = get(&mut c, "/nowhere", "");
    assert_eq!(missing.status(), 404);
    let lines = lines_with(&w, "wfcgi::access:", 2);
    assert_eq!(lines.len(), 2, "{}", w.log());
    let pid = w.pid();
    assert!(
        lines[0].contains(" INFO request{id=")
            && lines[0].contains("}: wfcgi::access: GET /hello 200 13 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(&format!("ms pid={pid}")), "{}", lines[0]);
    assert!(lines[1].contains("GET /nowhere 404 "), "{}", lines[1]);
    // The level is warn: nothing else at info.
    assert!(!w.log().contains("INFO wfcgi:"), "{}", w.log());
    w.stop(libc::SIGTERM);
}
