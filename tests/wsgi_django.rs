//! A real Django 5.2 site (python/django_site, in .venvs/django) served by the wfcgi binary
//! behind nginx: templates, CSRF-checked forms, the admin with its SQLite database, a 10 MiB
//! upload, a streamed response. Plus the stdlib test app inside wsgiref's PEP 3333 validator.

use std::time::Duration;

use sha2::{Digest, Sha256};
use test_support::peers::{self, HttpResponse, Nginx, PathParams, TempDir};
use test_support::wfcgi::{django_db, repo_path, venv, wsgi_params, Wfcgi};
use test_support::Client;

/// wfcgi serving the Django site, nginx in front. `handler`: `Some(dotted)` for `--handler`,
/// `None` to take WSGI_HANDLER and DJANGO_SETTINGS_MODULE from the environment.
struct Site {
    nginx: Nginx,
    wfcgi: Wfcgi,
    _db_dir: TempDir,
}

fn django(handler: Option<&str>) -> Site {
    let db_dir = TempDir::new("django-db");
    let db = django_db(db_dir.path());
    let venv = venv("django");
    let app_dir = repo_path("python/django_site");
    let (venv, app_dir) = (venv.to_str().unwrap(), app_dir.to_str().unwrap());
    let mut args = vec!["--venv", venv, "--app-dir", app_dir, "--threads", "4"];
    if let Some(h) = handler {
        args.extend(["--handler", h]);
    }
    let from_env = handler.is_none();
    let wfcgi = Wfcgi::serve_with(&args, &|cmd| {
        cmd.env("WFCGI_TEST_DB", &db)
            .env_remove("WSGI_HANDLER")
            .env_remove("DJANGO_SETTINGS_MODULE");
        if from_env {
            cmd.env("WSGI_HANDLER", "django.core.wsgi.get_wsgi_application()")
                .env("DJANGO_SETTINGS_MODULE", "mysite.settings");
        }
    });
    let nginx = Nginx::start(&wfcgi.addr(), PathParams::Wsgi);
    Site {
        nginx,
        wfcgi,
        _db_dir: db_dir,
    }
}

impl Site {
    fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        peers::http(self.nginx.port, "GET", target, headers, b"")
    }
    fn post(&self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        peers::http(self.nginx.port, "POST", target, headers, body)
    }
}

/// `name=value` of the Set-Cookie header for `name` (Django writes values with a leading space).
fn cookie(resp: &HttpResponse, name: &str) -> String {
    resp.headers_named("set-cookie")
        .into_iter()
        .map(|v| v.trim().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", resp.headers))
}

/// The hidden csrfmiddlewaretoken of a rendered form.
fn csrf_field(html: &str) -> String {
    let at = html
        .find("name=\"csrfmiddlewaretoken\"")
        .unwrap_or_else(|| panic!("no csrf field in:\n{html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    let end = rest[v..].find('"').unwrap();
    rest[v..v + end].to_owned()
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[test]
fn django_index_renders_its_template() {
    let site = django(Some("mysite.wsgi.application"));
    let r = site.get("/", &[]);
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), site.wfcgi.log());
    assert!(
        r.text().contains("<h1>wfcgi django demo</h1>"),
        "{}",
        r.text()
    );
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
}

#[test]
fn django_from_environment_handler_with_call_suffix() {
    let site = django(None);
    let r = site.get("/", &[]);
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), site.wfcgi.log());
    assert!(r.text().contains("<h1>wfcgi django demo</h1>"));
    let log = site.wfcgi.log();
    assert!(
        log.contains("django.core.wsgi.get_wsgi_application()") && log.contains("WSGI_HANDLER"),
        "the log names the handler and where it came from:\n{log}"
    );
}

#[test]
fn django_csrf_form_post_and_rejection() {
    let site = django(Some("mysite.wsgi.application"));
    let page = site.get("/form/", &[]);
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf_cookie = cookie(&page, "csrftoken");
    let token = csrf_field(&page.text());

    let body = format!("csrfmiddlewaretoken={token}&name=W%C3%B6rld+Wide");
    let ok = site.post("/form/", &[FORM, ("Cookie", &csrf_cookie)], body.as_bytes());
    assert_eq!(ok.status, 200, "{}\nlog:\n{}", ok.text(), site.wfcgi.log());
    assert!(ok.text().contains("Hello, Wörld Wide!"), "{}", ok.text());

    // Without the token (cookie alone) Django's CSRF middleware refuses.
    let refused = site.post("/form/", &[FORM, ("Cookie", &csrf_cookie)], b"name=Mallory");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains("Hello, Mallory"));
    // And with neither.
    let refused = site.post("/form/", &[FORM], b"name=Mallory");
    assert_eq!(refused.status, 403);
}

#[test]
fn django_admin_login_page_and_login_against_the_database() {
    let site = django(Some("mysite.wsgi.application"));
    let page = site.get("/admin/login/", &[]);
    assert_eq!(
        page.status,
        200,
        "{}\nlog:\n{}",
        page.text(),
        site.wfcgi.log()
    );
    assert!(
        page.text().contains("Django administration"),
        "{}",
        page.text()
    );

    // Logging in reads the user from the copied SQLite database and writes a session.
    let csrf_cookie = cookie(&page, "csrftoken");
    let token = csrf_field(&page.text());
    let body =
        format!("csrfmiddlewaretoken={token}&username=admin&password=wfcgi-admin&next=%2Fadmin%2F");
    let login = site.post(
        "/admin/login/?next=/admin/",
        &[FORM, ("Cookie", &csrf_cookie)],
        body.as_bytes(),
    );
    assert_eq!(
        login.status,
        302,
        "{}\nlog:\n{}",
        login.text(),
        site.wfcgi.log()
    );
    assert_eq!(login.header("location"), Some("/admin/"));
    let session = cookie(&login, "sessionid");
    let cookies = format!("{csrf_cookie}; {session}");
    let admin = site.get("/admin/", &[("Cookie", &cookies)]);
    assert_eq!(admin.status, 200, "{}", admin.text());
    assert!(
        admin.text().contains("Site administration"),
        "{}",
        admin.text()
    );
}

fn upload_bytes(len: usize) -> Vec<u8> {
    // Not periodic in any power of two: a misplaced or repeated record changes the digest.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn django_10_mib_raw_upload_checksum() {
    let site = django(Some("mysite.wsgi.application"));
    let data = upload_bytes(10 << 20);
    let want = format!("sha256 {:x} {}", Sha256::digest(&data), data.len());
    let r = site.post(
        "/upload/",
        &[("Content-Type", "application/octet-stream")],
        &data,
    );
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), site.wfcgi.log());
    assert_eq!(r.text(), want);
}

#[test]
fn django_multipart_upload_checksum() {
    let site = django(Some("mysite.wsgi.application"));
    let data = upload_bytes(3 << 20);
    let boundary = "----wfcgiBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let r = site.post("/upload/", &[("Content-Type", &ctype)], &body);
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), site.wfcgi.log());
    assert_eq!(
        r.text(),
        format!("sha256 {:x} {}", Sha256::digest(&data), data.len())
    );
}

#[test]
fn django_streaming_response_arrives_piece_by_piece() {
    let site = django(Some("mysite.wsgi.application"));
    let r = site.get("/stream/", &[]);
    assert_eq!(r.status, 200);
    let want: String = (0..5).map(|i| format!("django-chunk-{i}\n")).collect();
    assert_eq!(r.text(), want);
    // The app sleeps 0.2 s between its 5 chunks: a server that streams delivers them in several
    // reads spread over at least 0.8 s; one that buffers delivers them together at the end.
    assert!(r.arrivals.len() >= 3, "arrivals: {:?}", r.arrivals);
    let first = r.arrivals.first().unwrap().0;
    let last = r.arrivals.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(600),
        "the body was not streamed: arrivals {:?}",
        r.arrivals
    );
}

fn validated_testapp() -> (Wfcgi, Nginx) {
    let python = repo_path("python");
    let w = Wfcgi::serve(&[
        "--app-dir",
        python.to_str().unwrap(),
        "--handler",
        "testapp.validated.application",
    ]);
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    (w, nginx)
}

/// No validator complaint in the log, once a sentinel request's output has reached it.
fn assert_no_validator_complaint(w: &Wfcgi, nginx: &Nginx) {
    let _ = peers::http(nginx.port, "GET", "/print", &[], b"");
    let log = w.wait_log("printed-to-stdout");
    for bad in [
        "AssertionError",
        "Traceback",
        "WSGIWarning",
        "the app failed",
    ] {
        assert!(
            !log.contains(bad),
            "validator complaint ({bad}) in the log:\n{log}"
        );
    }
}

#[test]
fn testapp_under_pep3333_validator_get_head_and_raw_post() {
    let (w, nginx) = validated_testapp();
    let get = peers::http(nginx.port, "GET", "/hello?x=1", &[], b"");
    assert_eq!(get.status, 200, "{}\nlog:\n{}", get.text(), w.log());
    assert_eq!(get.text(), "Hello, World!");

    let head = peers::http(nginx.port, "HEAD", "/hello", &[], b"");
    assert_eq!(head.status, 200, "log:\n{}", w.log());
    assert!(head.body.is_empty());

    // Other shapes the validator checks: a streamed generator, write(), file_wrapper.
    for target in [
        "/stream?delay=0",
        "/write-callable",
        "/file-wrapper?size=100000",
        "/environ",
    ] {
        let r = peers::http(nginx.port, "GET", target, &[], b"");
        assert_eq!(r.status, 200, "{target}: {}\nlog:\n{}", r.text(), w.log());
    }

    // A POST with a body straight over FastCGI (CONTENT_TYPE/CONTENT_LENGTH only, as CGI has
    // them): wsgi.input as the validator wraps and checks it.
    let body = upload_bytes(200_000);
    let len = body.len().to_string();
    let mut params = wsgi_params("POST", "/echo", "");
    params.push(("CONTENT_TYPE", "application/octet-stream"));
    params.push(("CONTENT_LENGTH", &len));
    let mut c = w.connect();
    let bytes = Client::request_bytes(1, true, &params, &body);
    c.send(&bytes);
    let reply = c.read_reply(1);
    assert_eq!(reply.status(), 200, "log:\n{}", w.log());
    assert_eq!(reply.body(), &body[..]);

    assert_no_validator_complaint(&w, &nginx);
}

#[test]
fn testapp_under_pep3333_validator_post_through_nginx() {
    let (w, nginx) = validated_testapp();
    let body = upload_bytes(200_000);
    let post = peers::http(
        nginx.port,
        "POST",
        "/echo",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    assert_eq!(post.status, 200, "{}\nlog:\n{}", post.text(), w.log());
    assert_eq!(post.body, body);
    assert_no_validator_complaint(&w, &nginx);
}
