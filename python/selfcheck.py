"""Check wfcgi's Python test fixtures without any server: plain wsgiref, in-process.

    python3 python/selfcheck.py                         # testapp + loader_fixtures
    python3 python/selfcheck.py --venvs                 # + the .venvs made by scripts/setup-test-env
    .venvs/django/bin/python python/selfcheck.py --django   # + the Django site

Prints one line per check and a closing ``N passed, N failed`` line; exits 1 on a failure.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import validator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENVS = os.path.join(REPO, ".venvs")

RESULTS = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
    except Exception:
        RESULTS["failed"] += 1
        print("FAIL %s\n%s" % (name, traceback.format_exc()))
    else:
        RESULTS["passed"] += 1
        print("ok   %s" % name)


class Response:
    def __init__(self):
        self.status = None
        self.headers = []
        self.chunks = []
        self.arrivals = []  # time.monotonic() of each non-empty chunk

    @property
    def body(self):
        return b"".join(self.chunks)

    def header(self, name):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def cookies(self):
        # Django emits Set-Cookie values with a leading space (SimpleCookie.output(header="")).
        return [v.split(";", 1)[0].strip() for k, v in self.headers if k.lower() == "set-cookie"]


def call(app, path, query="", method="GET", body=b"", headers=(), validate=True):
    """Run one request through ``app`` the way a minimal server would; returns a Response."""
    environ = {}
    setup_testing_defaults(environ)
    errors = io.StringIO()
    environ.update({
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": errors,
        "wsgi.file_wrapper": FileWrapper,
    })
    if body or method == "POST":
        environ["CONTENT_LENGTH"] = str(len(body))
    for key, value in headers:
        key = key.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    resp = Response()

    def start_response(status, response_headers, exc_info=None):
        resp.status, resp.headers = status, list(response_headers)

        def write(data):
            resp.chunks.append(data)
            resp.arrivals.append(time.monotonic())

        return write

    result = (validator(app) if validate else app)(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                resp.chunks.append(chunk)
                resp.arrivals.append(time.monotonic())
    finally:
        if hasattr(result, "close"):
            result.close()
    resp.errors = errors.getvalue()
    return resp


def expect(cond, message="check failed"):
    if not cond:
        raise AssertionError(message)


def expect_raises(exc_type, fn, contains=""):
    try:
        fn()
    except exc_type as exc:
        expect(contains in str(exc), "%r does not contain %r" % (str(exc), contains))
    else:
        raise AssertionError("%s not raised" % exc_type.__name__)


# ---------------------------------------------------------------- testapp
def check_testapp():
    sys.path.insert(0, HERE)
    from testapp import app as appmod
    from testapp.validated import application as validated

    app = appmod.application
    pattern = lambda n: bytes(i % 251 for i in range(n))  # noqa: E731 (documented pattern)

    def hello():
        r = call(app, "/hello")
        expect(r.status == "200 OK" and r.body == b"Hello, World!" and len(r.body) == 13)
        expect(r.header("Content-Type") == "text/plain")

    def echo():
        data = os.urandom(200_000)
        r = call(app, "/echo", method="POST", body=data)
        expect(r.body == data and r.header("Content-Type") == "application/octet-stream")
        expect(len(r.chunks) == 4, "expected 4 pieces of <= 64 KiB, got %d" % len(r.chunks))

    def sha():
        data = os.urandom(300_001)
        r = call(app, "/sha256", method="POST", body=data)
        expect(r.body.decode() == "%s %d" % (hashlib.sha256(data).hexdigest(), len(data)), r.body)
        r = call(app, "/sha256", method="POST")
        expect(r.body.decode() == hashlib.sha256(b"").hexdigest() + " 0")
        r = call(app, "/count", method="POST", body=data)
        expect(r.body == b"300001", r.body)

    def stream():
        r = call(app, "/stream")
        expect(r.chunks == [appmod.stream_chunk(i, 10) for i in range(5)], r.chunks)
        expect(r.chunks[0] == b"chunk-0..\n")
        gaps = [b - a for a, b in zip(r.arrivals, r.arrivals[1:])]
        expect(all(g >= 0.18 for g in gaps), gaps)
        r = call(app, "/stream", "chunks=3&size=100&delay=0")
        expect(len(r.chunks) == 3 and all(len(c) == 100 for c in r.chunks))

    def big():
        r = call(app, "/bigresponse")
        expect(r.body == pattern(1 << 20) and r.header("Content-Length") == str(1 << 20))
        expect(len(r.chunks) == 16)
        r = call(app, "/bigresponse", "size=1000&chunk=300")
        expect(r.body == pattern(1000) and [len(c) for c in r.chunks] == [300, 300, 300, 100])

    def sleep():
        t = time.monotonic()
        r = call(app, "/sleep", "ms=150")
        expect(r.body == b"slept" and time.monotonic() - t >= 0.15)

    def environ_route():
        r = call(app, "/environ", "a=1", headers=[("X-Test", "yes")])
        env = json.loads(r.body)
        expect(env["QUERY_STRING"] == "a=1" and env["HTTP_X_TEST"] == "yes")
        expect(env["wsgi.version"] == [1, 0] and not env["wsgi.multithread"])
        expect("wsgi.input" not in env)

    def raise_before():
        expect_raises(RuntimeError, lambda: call(app, "/raise-before"), "boom before start_response")

    def raise_after():
        got = []
        r = call(app, "/hello")  # warm up nothing; keep the pattern simple
        res = app(_env("/raise-after"), lambda s, h, e=None: got.append(s))
        it = iter(res)
        expect(next(it) == b"partial" and got == ["200 OK"])
        expect_raises(RuntimeError, lambda: next(it), "boom after")
        del r

    def bad_header():
        expect_raises(AssertionError, lambda: call(validated, "/bad-header"))
        r = call(app, "/bad-header", validate=False)
        expect(r.header("X-Bad") == "a\r\nInjected: yes")

    def bad_status():
        expect_raises(AssertionError, lambda: call(validated, "/bad-status"))
        expect(call(app, "/bad-status", validate=False).status == "OK")

    def print_route():
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            r = call(app, "/print")
        finally:
            sys.stdout, sys.stderr = old
        expect(r.body == b"printed" and out.getvalue() == "printed-to-stdout\n")
        expect(err.getvalue() == "printed-to-stderr\n" and r.errors == "wsgi-errors-line\n")

    def write_callable():
        r = call(app, "/write-callable")
        expect(r.chunks == [b"written-1\n", b"written-2\n"], r.chunks)

    def file_wrapper():
        r = call(app, "/file-wrapper", "size=100000")
        expect(r.body == pattern(100000) and r.header("Content-Length") == "100000")
        env = _env("/file-wrapper")
        env["QUERY_STRING"] = "size=70000"
        del env["wsgi.file_wrapper"]  # optional extension absent: plain iteration
        res = app(env, lambda s, h, e=None: None)
        expect(b"".join(res) == pattern(70000))
        res.close()

    def close_tracker():
        before = int(call(app, "/close-count").body)
        call(app, "/close-tracker")
        expect(int(call(app, "/close-count").body) == before + 1)
        res = app(_env("/close-tracker"), lambda s, h, e=None: None)  # client gone after 1 chunk
        next(iter(res))
        res.close()
        expect(int(call(app, "/close-count").body) == before + 2)

    def imports():
        expect(call(app, "/imports", "name=json.decoder").body.startswith(b"ok /"))
        expect(call(app, "/imports", "name=does_not_exist_xyz").body == b"missing does_not_exist_xyz")

    def sys_route():
        info = json.loads(call(app, "/sys").body)
        expect(info["executable"] == sys.executable and info["prefix"] == sys.prefix)
        expect(isinstance(info["path"], list))

    def not_found():
        r = call(app, "/nope")
        expect(r.status.startswith("404") and b"/nope" in r.body)

    for name, fn in locals().copy().items():
        if callable(fn) and name not in ("app", "pattern", "validated", "appmod"):
            check("testapp %s" % name, fn)


def _env(path):
    env = {}
    setup_testing_defaults(env)
    env.update(PATH_INFO=path, QUERY_STRING="", **{"wsgi.file_wrapper": FileWrapper})
    return env


# ---------------------------------------------------------------- loader fixtures
def resolve_handler(dotted):
    """wfastcgi 3.0.0's WSGI_HANDLER resolution, restated: import the longest importable
    module prefix, getattr the rest, call each element written with a trailing ``()``."""
    if not dotted:
        raise Exception("WSGI_HANDLER env var must be set")

    def split(name):
        return (name[:-2], True) if name.endswith("()") else (name, False)

    module, _, last = dotted.rpartition(".")
    chain = [split(last)]
    last_tb = ""
    while module:
        try:
            obj = __import__(module, fromlist=[chain[0][0]])
            for name, call_it in chain:
                obj = getattr(obj, name)
                if call_it:
                    obj = obj()
            return obj
        except ImportError:
            last_tb = ": " + traceback.format_exc()
            module, _, last = module.rpartition(".")
            chain.insert(0, split(last))
    raise ValueError('"%s" could not be imported%s' % (dotted, last_tb))


def check_loader():
    fixtures = os.path.join(HERE, "loader_fixtures")
    sys.path.insert(0, fixtures)

    def loads(handler, body):
        def run():
            expect(call(resolve_handler(handler), "/").body == body)
        return run

    check("loader pkg.sub.application", loads("pkg.sub.application", b"pkg.sub"))
    check("loader pkg.application", loads("pkg.application", b"pkg"))
    check("loader factory.make_app()", loads("factory.make_app()", b"factory"))
    check("loader factory called once", lambda: expect(sys.modules["factory"].CALLS == 1))
    check("loader objapp.Holder.app", loads("objapp.Holder.app", b"objapp.Holder.app"))
    check("loader broken_import", lambda: expect_raises(
        ValueError, lambda: resolve_handler("broken_import.application"), "does_not_exist_xyz"))
    check("loader raises_at_import", lambda: expect_raises(
        ValueError, lambda: resolve_handler("raises_at_import.application"), "raises_at_import fixture"))
    check("loader missing attribute", lambda: expect_raises(
        AttributeError, lambda: resolve_handler("pkg.sub.missing_attr"), "missing_attr"))
    check("loader no such module", lambda: expect_raises(
        ValueError, lambda: resolve_handler("no_such_module.application"),
        '"no_such_module.application" could not be imported'))
    check("loader empty name", lambda: expect_raises(
        Exception, lambda: resolve_handler(""), "WSGI_HANDLER env var must be set"))
    sys.path.remove(fixtures)


# ---------------------------------------------------------------- venvs
def check_venvs():
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter behind a venv
    with open(os.path.join(VENVS, "BASE_ONLY_PACKAGE")) as f:
        base_only = f.read().strip()

    def run(python, code):
        return subprocess.run([python, "-c", code], capture_output=True, text=True)

    def imports(python, module):
        return run(python, "import " + module).returncode == 0

    def vpy(name):
        return os.path.join(VENVS, name, "bin", "python")

    check("venvs base has %s" % base_only, lambda: expect(imports(base, base_only)))
    check("venvs django: django yes, %s no" % base_only, lambda: expect(
        imports(vpy("django"), "django") and not imports(vpy("django"), base_only)))
    check("venvs isolated: iso8601 yes, %s no" % base_only, lambda: expect(
        imports(vpy("isolated"), "iso8601") and not imports(vpy("isolated"), base_only)))
    check("venvs base has no iso8601", lambda: expect(not imports(base, "iso8601")))
    check("venvs py312 is another minor version", lambda: expect(
        run(vpy("py312"), "import sys; print(sys.version_info[:2])").stdout.strip()
        != str(tuple(sys.version_info[:2]))))

    def activate_this():
        script = os.path.join(VENVS, "activate-this", "bin", "activate_this.py")
        code = ("import sys, os\n"
                "p = %r\n"
                "try:\n import wfcgi_activate_marker\nexcept ImportError: pass\n"
                "else: raise SystemExit('marker visible before activation')\n"
                "exec(open(p).read(), dict(__file__=p))\n"
                "import wfcgi_activate_marker as m\n"
                "print(m.MARKER, sys.prefix, sys.real_prefix, os.environ['VIRTUAL_ENV'])\n") % script
        r = run(base, code)
        expect(r.returncode == 0, r.stderr)
        marker, prefix, real_prefix, venv = r.stdout.split()
        root = os.path.join(VENVS, "activate-this")
        expect(marker == "wfcgi-activate-this" and prefix == venv == root, r.stdout)
        expect(real_prefix == sys.base_prefix, r.stdout)

    check("venvs activate_this.py", activate_this)


# ---------------------------------------------------------------- Django
def check_django():
    site = os.path.join(HERE, "django_site")
    tmp = tempfile.mkdtemp(prefix="wfcgi-selfcheck-")
    template = os.path.join(VENVS, "django-template.sqlite3")
    db = os.path.join(tmp, "db.sqlite3")
    shutil.copy(template, db)
    os.environ["WFCGI_TEST_DB"] = db
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    sys.path.insert(0, site)
    import logging
    logging.disable(logging.WARNING)  # 403/400 are expected below; keep the output short
    try:
        try:
            from mysite.wsgi import application as app
        except ImportError:
            check("django importable (run me with .venvs/django/bin/python)", lambda: exec("raise"))
            return

        def index():
            r = call(app, "/")
            expect(r.status == "200 OK" and b"<h1>wfcgi django demo</h1>" in r.body, r.status)

        def form_roundtrip():
            r = call(app, "/form/")
            expect(r.status == "200 OK" and b'name="csrfmiddlewaretoken"' in r.body, r.status)
            token = r.body.split(b'name="csrfmiddlewaretoken" value="')[1].split(b'"')[0].decode()
            cookie = "; ".join(r.cookies())
            expect(cookie.startswith("csrftoken="), cookie)
            form = [("Content-Type", "application/x-www-form-urlencoded")]
            r = call(app, "/form/", method="POST", body=b"name=Bob", headers=form)
            expect(r.status.startswith("403"), "no token must be 403, got %s" % r.status)
            body = ("csrfmiddlewaretoken=%s&name=Bob" % token).encode()
            r = call(app, "/form/", method="POST", body=body, headers=form + [("Cookie", cookie)])
            expect(r.status == "200 OK" and b"Hello, Bob!" in r.body, (r.status, r.body))

        def upload_raw():
            data = os.urandom(500_000)
            r = call(app, "/upload/", method="POST", body=data,
                     headers=[("Content-Type", "application/octet-stream")])
            expect(r.body.decode() == "sha256 %s %d" % (hashlib.sha256(data).hexdigest(), len(data)),
                   r.body)

        def upload_multipart():
            data = os.urandom(3_000_000)  # above FILE_UPLOAD_MAX_MEMORY_SIZE: a temp file
            boundary = "wfcgiBoundary1234"
            body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n" % boundary).encode()
                    + data + ("\r\n--%s--\r\n" % boundary).encode())
            r = call(app, "/upload/", method="POST", body=body,
                     headers=[("Content-Type", "multipart/form-data; boundary=" + boundary)])
            expect(r.body.decode() == "sha256 %s %d" % (hashlib.sha256(data).hexdigest(), len(data)),
                   r.body)

        def stream():
            r = call(app, "/stream/")
            expect(r.chunks == [b"django-chunk-%d\n" % i for i in range(5)], r.chunks)
            gaps = [b - a for a, b in zip(r.arrivals, r.arrivals[1:])]
            expect(all(g >= 0.18 for g in gaps), gaps)

        def admin():
            r = call(app, "/admin/")
            expect(r.status.startswith("302") and "/admin/login/" in r.header("Location"), r.status)
            r = call(app, "/admin/login/")
            expect(r.status == "200 OK" and b"csrfmiddlewaretoken" in r.body, r.status)

        def wfastcgi_handler_name():
            handler = resolve_handler("django.core.wsgi.get_wsgi_application()")
            expect(b"<h1>wfcgi django demo</h1>" in call(handler, "/").body)

        for name, fn in [("WSGI_HANDLER=django.core.wsgi.get_wsgi_application()", wfastcgi_handler_name),
                         ("index", index), ("form", form_roundtrip), ("upload raw", upload_raw),
                         ("upload multipart", upload_multipart), ("stream", stream), ("admin", admin)]:
            check("django %s" % name, fn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    warnings.simplefilter("error", category=Warning)  # wsgiref.validate warns on spec breaches
    check_testapp()
    check_loader()
    if "--venvs" in argv:
        check_venvs()
    if "--django" in argv:
        warnings.simplefilter("default")
        check_django()
    print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
