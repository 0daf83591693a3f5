//! `pip install wfcgi`: the wheel of crates/wfcgi-py (scripts/build-wheels --test, run by
//! scripts/test), installed into fresh venvs of CPython 3.11 and 3.12 with nothing else in
//! them, run as its console script and as `python -m wfcgi`, with a clean environment: no
//! LD_LIBRARY_PATH, PATH only /usr/bin:/bin. The demo app, the Django site behind nginx, the
//! IIS-style start with the connection on fd 0, and a bad handler explained.

use std::process::Command;

use test_support::peers::{self, Nginx, PathParams, TempDir};
use test_support::wfcgi::{django_db, repo_path, venv, wsgi_params, Program, Wfcgi};

/// The venvs scripts/build-wheels --test made, one per CPython version.
const VENVS: [&str; 2] = ["pip-cp311", "pip-cp312"];

/// Nothing of the test's own environment: what a service manager or IIS would give.
fn clean(cmd: &mut Command) {
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
}

fn stdout_of(mut cmd: Command) -> (i32, String) {
    clean(&mut cmd);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_console_script_serves_the_demo_app_on_each_python_with_no_library_path() {
    let (_, native) = stdout_of({
        let mut c = Program::native().command();
        c.arg("--version");
        c
    });
    for name in VENVS {
        let venv = venv(name);
        // Nothing but the wheel (and pip) in the venv.
        let (_, listed) = stdout_of({
            let mut c = Command::new(venv.join("bin/python"));
            c.args([
                "-m",
                "pip",
                "list",
                "--format=freeze",
                "--disable-pip-version-check",
            ]);
            c
        });
        let packages: Vec<&str> = listed
            .lines()
            .filter(|l| !l.starts_with("pip==") && !l.starts_with("setuptools=="))
            .collect();
        assert_eq!(packages, ["wfcgi==0.1.0"], "{name}: {listed}");
        // The version is the native binary's.
        let (code, version) = stdout_of({
            let mut c = Program::console_script(&venv).command();
            c.arg("--version");
            c
        });
        assert_eq!((code, version.as_str()), (0, native.as_str()), "{name}");

        let w = Wfcgi::serve_as(&Program::console_script(&venv), &[], &clean);
        let mut client = w.connect();
        let reply = client.request(1, &wsgi_params("GET", "/", ""), b"");
        assert_eq!(reply.status(), 200, "{name}: {}", w.log());
        let page = String::from_utf8_lossy(reply.body()).into_owned();
        assert!(page.contains("wfcgi demo app"), "{name}: {page}");
        // The venv's own interpreter serves it.
        let minor = &name["pip-cp3".len()..];
        assert!(page.contains(&format!("3.{minor}.")), "{name}: {page}");
    }
}

#[test]
fn python_m_wfcgi_started_as_iis_starts_it_serves_the_connection_on_fd_0() {
    let python = repo_path("python");
    for name in VENVS {
        let venv = venv(name);
        let (w, mut client) = Wfcgi::with_connected_stdin_as(
            &Program::python_m(&venv),
            &[
                "--app-dir",
                python.to_str().unwrap(),
                "--handler",
                "testapp.app.application",
            ],
            &clean,
        );
        for _ in 0..3 {
            let reply = client.request(1, &wsgi_params("GET", "/hello", ""), b"");
            assert_eq!(reply.body(), b"Hello, World!", "{name}");
        }
        drop(client);
        let mut w = w;
        let status = w.wait_exit(std::time::Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()), "{name}: {status:?}");
    }
}

#[test]
fn a_bad_handler_is_explained_by_the_installed_package() {
    let python = repo_path("python");
    let python = python.to_str().unwrap();
    for name in VENVS {
        let venv = venv(name);
        let (code, out) = stdout_of({
            let mut c = Program::python_m(&venv).command();
            c.args([
                "check",
                "--app-dir",
                python,
                "--handler",
                "testapp.nothere.app",
            ]);
            c
        });
        assert_eq!(code, 1, "{name}: {out}");
        assert!(
            out.contains("--handler = \"testapp.nothere.app\" could not be imported."),
            "{name}: {out}"
        );
        assert!(out.contains("has no attribute 'nothere'"), "{name}: {out}");
        // Serving: a 500 for the visitor, the explanation in the log, and it keeps serving.
        let w = Wfcgi::serve_as(
            &Program::console_script(&venv),
            &["--app-dir", python, "--handler", "testapp.nothere.app"],
            &clean,
        );
        let mut client = w.connect();
        for _ in 0..2 {
            let reply = client.request(1, &wsgi_params("GET", "/", ""), b"");
            assert_eq!(reply.status(), 500, "{name}");
            assert!(!String::from_utf8_lossy(reply.body()).contains("nothere"));
        }
        let log = w.wait_log("could not be imported");
        assert!(log.contains("has no attribute 'nothere'"), "{name}: {log}");
    }
}

#[test]
fn the_django_site_behind_nginx_runs_on_the_pip_installed_server() {
    let db_dir = TempDir::new("pip-django-db");
    let db = django_db(db_dir.path());
    let venv = venv("pip-cp311-django");
    let app_dir = repo_path("python/django_site");
    let w = Wfcgi::serve_as(
        &Program::console_script(&venv),
        &[
            "--app-dir",
            app_dir.to_str().unwrap(),
            "--handler",
            "mysite.wsgi.application",
        ],
        &|cmd| {
            clean(cmd);
            cmd.env("WFCGI_TEST_DB", &db);
        },
    );
    let nginx = Nginx::start(&w.addr(), PathParams::Wsgi);
    let r = peers::http(nginx.port, "GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), w.log());
    assert!(
        r.text().contains("<h1>wfcgi django demo</h1>"),
        "{}",
        r.text()
    );
    // The admin, from the database.
    let r = peers::http(nginx.port, "GET", "/admin/login/", &[], b"");
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), w.log());
    // The venv's own interpreter, with no --venv.
    let log = w.log();
    assert!(!log.contains("venv"), "{log}");
}

#[test]
fn a_venv_setting_is_reported_when_it_names_another_venv_than_the_one_running() {
    let python = repo_path("python");
    let python = python.to_str().unwrap();
    let venv = venv("pip-cp311");
    let check = |setting: &std::path::Path| {
        stdout_of({
            let mut c = Program::python_m(&venv).command();
            c.args(["check", "--app-dir", python, "--venv"])
                .arg(setting);
            c
        })
    };
    // Another venv: the app would not run where the setting says.
    let other = test_support::wfcgi::venv("django");
    let (code, out) = check(&other);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "--venv = {} is not used: this is the pip-installed wfcgi",
            other.display()
        )),
        "{out}"
    );
    // Its own venv: a note, all is well.
    let (code, out) = check(&venv);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the venv of the Python running wfcgi"),
        "{out}"
    );
}
