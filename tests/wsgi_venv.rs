//! Virtualenvs: what `--venv` makes importable (and what it keeps out), the three ways to name
//! one, a venv of another Python refused at start-up, and the libpython the binary loads.

use std::process::Command;

use test_support::wfcgi::{repo_path, venv, wfcgi_bin, wsgi_params, Configure, Wfcgi};

/// wfcgi serving python/testapp with `--venv VENV`.
fn serve_in(venv: &str, configure: Configure) -> Wfcgi {
    let python = repo_path("python");
    Wfcgi::serve_with(
        &[
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
            "--venv",
            venv,
        ],
        configure,
    )
}

fn get(w: &Wfcgi, path: &str, query: &str) -> String {
    let mut c = w.connect();
    let bytes = test_support::Client::request_bytes(1, true, &wsgi_params("GET", path, query), b"");
    c.send(&bytes);
    let reply = c.read_reply(1);
    assert_eq!(
        reply.status(),
        200,
        "{path}: {}\nlog:\n{}",
        String::from_utf8_lossy(&reply.stdout),
        w.log()
    );
    String::from_utf8_lossy(reply.body()).into_owned()
}

fn base_only_package() -> String {
    std::fs::read_to_string(venv("BASE_ONLY_PACKAGE"))
        .unwrap()
        .trim()
        .to_owned()
}

fn python3(code: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The JSON string value of `key` in /sys's answer (plain strings only).
fn json_str(json: &str, key: &str) -> String {
    let at = json
        .find(&format!("\"{key}\": \""))
        .unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 5..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn assert_isolated(w: &Wfcgi, venv_dir: &std::path::Path) {
    let ok = get(w, "/imports", "name=iso8601");
    assert!(ok.starts_with("ok "), "{ok}");
    assert!(
        ok.contains(venv_dir.to_str().unwrap()),
        "iso8601 from the venv: {ok}"
    );
    let base = base_only_package();
    // The base interpreter really has it (else the next check proves nothing).
    assert_eq!(python3(&format!("import {base}; print('yes')")), "yes");
    assert_eq!(
        get(w, "/imports", &format!("name={base}")),
        format!("missing {base}")
    );
    let sys = get(w, "/sys", "");
    let prefix = json_str(&sys, "prefix");
    assert_eq!(
        std::fs::canonicalize(&prefix).unwrap(),
        std::fs::canonicalize(venv_dir).unwrap(),
        "sys.prefix: {sys}"
    );
}

#[test]
fn venv_folder_isolates_imports() {
    let dir = venv("isolated");
    let w = serve_in(dir.to_str().unwrap(), &|_| {});
    assert_isolated(&w, &dir);
}

#[test]
fn venv_given_as_its_python_works_the_same() {
    let dir = venv("isolated");
    let python = dir.join("bin").join("python");
    let w = serve_in(python.to_str().unwrap(), &|_| {});
    assert_isolated(&w, &dir);
}

#[test]
fn venv_given_as_activate_this_py() {
    let dir = venv("activate-this");
    let script = dir.join("bin").join("activate_this.py");
    let w = serve_in(script.to_str().unwrap(), &|_| {});
    let ok = get(&w, "/imports", "name=wfcgi_activate_marker");
    assert!(ok.starts_with("ok "), "{ok}\nlog:\n{}", w.log());
    assert!(ok.contains(dir.to_str().unwrap()), "{ok}");
}

#[test]
fn venv_of_another_python_minor_is_refused_with_exit_2() {
    let dir = venv("py312");
    let python = repo_path("python");
    let (status, stderr) = Wfcgi::run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
            "--venv",
            dir.to_str().unwrap(),
        ],
        &|_| {},
    );
    assert_eq!(Wfcgi::code(status), 2, "stderr:\n{stderr}");
    assert!(
        stderr.contains("3.12") && stderr.contains("3.11"),
        "{stderr}"
    );
    assert!(
        stderr.contains(dir.to_str().unwrap()),
        "names the venv: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("fix"),
        "says how to fix it: {stderr}"
    );
}

#[test]
fn clean_environment_loads_the_build_libpython() {
    let want = python3("import sys; print(sys.version)");
    let python = repo_path("python");
    let w = Wfcgi::serve_with(
        &[
            "--app-dir",
            python.to_str().unwrap(),
            "--handler",
            "testapp.app.application",
        ],
        &|cmd| {
            cmd.env_clear().env("PATH", "/usr/bin:/bin");
        },
    );
    let sys = get(&w, "/sys", "");
    let version = json_str(&sys, "version");
    assert_eq!(
        version, want,
        "served by a different Python than the one built against"
    );
}

#[test]
fn binary_links_the_build_interpreters_libpython() {
    let libdir = python3("import sysconfig; print(sysconfig.get_config_var('LIBDIR'))");
    let ldlibrary = python3("import sysconfig; print(sysconfig.get_config_var('LDLIBRARY'))");
    let out = Command::new("ldd").arg(wfcgi_bin()).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("libpython"))
        .unwrap_or_else(|| panic!("no libpython in ldd output:\n{text}"));
    assert!(
        line.contains(&ldlibrary) || line.contains("libpython3.11.so"),
        "{line}"
    );
    let resolved = line.split("=>").nth(1).unwrap_or("").trim();
    assert!(
        resolved.starts_with(&format!("{libdir}/")),
        "libpython resolves to {resolved:?}, not under the build interpreter's LIBDIR {libdir}"
    );
}
