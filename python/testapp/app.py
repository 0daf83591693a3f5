"""One WSGI application, routed on PATH_INFO, for every end-to-end test.

Standard library only: it must import in any interpreter or venv under test.
Routes (query parameters in brackets, with their defaults):

  /hello                       200 text/plain ``Hello, World!`` (13 bytes)
  /echo                        the request body back, application/octet-stream
  /sha256                      ``<hex sha256> <byte count>`` of the request body
  /count                       ``<byte count>`` of the request body, read as /sha256 reads it
                               and not looked at (an upload that costs the app little)
  /read-all                    ``<byte count>`` of the request body, read whole by one
                               ``wsgi.input.read()`` (one block the size of the body)
  /stream[chunks=5&size=10&delay=0.2]
                               N chunks of S bytes, ``delay`` seconds apart;
                               chunk i starts with ``chunk-<i>`` (see stream_chunk)
  /bigresponse[size=1048576&chunk=65536]
                               S bytes of pattern() in C-byte pieces, Content-Length set
  /sleep[ms=100]               sleeps, then ``slept``
  /barrier[?n=2&timeout=20]    ``passed`` once n requests are in the app at once (n threads), else 503
  /environ                     JSON of the environ's str/int/bool/tuple values
  /raise-before                RuntimeError before start_response
  /raise-after                 start_response, yields b'partial', then RuntimeError
  /bad-header                  a header value containing CR LF
  /bad-status                  status ``OK`` (no code)
  /print                       prints to stdout, stderr and wsgi.errors; body ``printed``
  /write-callable              two chunks through write(), returns []
  /file-wrapper[size=1048576]  pattern() bytes through wsgi.file_wrapper
  /close-tracker[chunks=3&delay=0]
                               an iterable whose close() counts into CLOSE_COUNT
  /close-count                 CLOSE_COUNT as decimal text
  /imports?name=mod            ``ok <mod.__file__>`` or ``missing <name>`` (200 both)
  /sys                         JSON of sys.version/executable/prefix/base_prefix/path
  /thread                      the OS name of the thread running the request (Linux and
                               Windows; ``unknown`` elsewhere): wfcgi-conn, wfcgi-python-N, ...
  /pid[?sleep=0]               the process id (which worker answered), after sleep seconds
  /exit?code=3                 os._exit(code) mid-request: a worker dying without clean-up
  /segfault                    a null read through ctypes: a crash in native code
  /leak?mib=1                  keeps mib MiB for the process's life: ``N MiB held``
  anything else                404 text/plain
"""

import hashlib
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs

#: Size of each wsgi.input read; matches FastCGI's largest record payload order.
READ_SIZE = 65536

#: The 251-byte period of pattern(): prime, so it never lines up with chunk sizes.
_PATTERN_PERIOD = 251
_PATTERN_BLOCK = bytes(i % _PATTERN_PERIOD for i in range(_PATTERN_PERIOD * 262))  # ~64 KiB

_close_lock = threading.Lock()
#: How many times a /close-tracker iterable's close() has run in this process.
CLOSE_COUNT = 0


def pattern(offset, length):
    """Deterministic body bytes: byte i of a response is ``i % 251``.

    Tests recompute it with ``bytes(i % 251 for i in range(n))``.
    """
    out = bytearray()
    while length > 0:
        start = offset % _PATTERN_PERIOD
        take = min(length, len(_PATTERN_BLOCK) - start)
        out += _PATTERN_BLOCK[start:start + take]
        offset += take
        length -= take
    return bytes(out)


def stream_chunk(index, size):
    """Chunk ``index`` of /stream: ``chunk-<index>`` padded with dots, ending in a newline."""
    if size <= 0:
        return b""
    body = (b"chunk-%d" % index).ljust(size - 1, b".")[: size - 1]
    return body + b"\n"


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _int(q, name, default):
    try:
        return int(q.get(name, default))
    except ValueError:
        return default


def _float(q, name, default):
    try:
        return float(q.get(name, default))
    except ValueError:
        return default


def read_body(environ):
    """Yield the request body in READ_SIZE pieces.

    Honours CONTENT_LENGTH when given (PEP 3333: do not read past it), else reads to EOF.
    Stops early on EOF, so a truncated body shows as a short byte count.
    """
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    remaining = int(length) if length.strip().isdigit() else None
    while remaining is None or remaining > 0:
        want = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
        piece = stream.read(want)
        if not piece:
            break
        if remaining is not None:
            remaining -= len(piece)
        yield piece


def _text(start_response, status, text, content_type="text/plain; charset=utf-8"):
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response, value):
    return _text(start_response, "200 OK", json.dumps(value, sort_keys=True), "application/json")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def echo(environ, start_response):
    pieces = list(read_body(environ))
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(sum(map(len, pieces)))),
    ])
    return pieces


def sha256(environ, start_response):
    digest = hashlib.sha256()
    count = 0
    for piece in read_body(environ):
        digest.update(piece)
        count += len(piece)
    return _text(start_response, "200 OK", "%s %d" % (digest.hexdigest(), count))


def count(environ, start_response):
    total = 0
    for piece in read_body(environ):
        total += len(piece)
    return _text(start_response, "200 OK", "%d" % total)


def read_all(environ, start_response):
    return _text(start_response, "200 OK", "%d" % len(environ["wsgi.input"].read()))


def stream(environ, start_response):
    q = _query(environ)
    chunks, size, delay = _int(q, "chunks", 5), _int(q, "size", 10), _float(q, "delay", 0.2)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def generate():
        for i in range(chunks):
            if i and delay > 0:
                time.sleep(delay)
            yield stream_chunk(i, size)

    return generate()


def bigresponse(environ, start_response):
    q = _query(environ)
    size, chunk = _int(q, "size", 1 << 20), max(1, _int(q, "chunk", READ_SIZE))
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(size)),
    ])
    return (pattern(off, min(chunk, size - off)) for off in range(0, size, chunk))


def sleep(environ, start_response):
    time.sleep(_int(_query(environ), "ms", 100) / 1000.0)
    return _text(start_response, "200 OK", "slept")


_barriers = {}
_barriers_lock = threading.Lock()


def barrier(environ, start_response):
    """Answers once `n` requests are in the app at the same time (so `n` threads serve them), or
    503 after `timeout` seconds (default 20) if they never were."""
    q = _query(environ)
    n = _int(q, "n", 2)
    with _barriers_lock:
        b = _barriers.get(n)
        if b is None or b.broken:
            b = _barriers[n] = threading.Barrier(n)
    try:
        b.wait(timeout=_float(q, "timeout", 20.0))
    except threading.BrokenBarrierError:
        return _text(start_response, "503 Service Unavailable",
                     "fewer than %d requests were in the app at once" % n)
    return _text(start_response, "200 OK", "passed")


def environ_json(environ, start_response):
    out = {}
    for key, value in environ.items():
        if isinstance(value, (str, int, bool)):  # bool is an int too
            out[key] = value
        elif isinstance(value, tuple) and all(isinstance(v, (str, int)) for v in value):
            out[key] = list(value)  # wsgi.version
    return _json(start_response, out)


def raise_before(environ, start_response):
    raise RuntimeError("boom before start_response")


def raise_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def generate():
        yield b"partial"
        raise RuntimeError("boom after start_response")

    return generate()


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
    return [b"bad header"]


def bad_status(environ, start_response):
    start_response("OK", [])
    return [b"bad status"]


def print_route(environ, start_response):
    print("printed-to-stdout")
    print("printed-to-stderr", file=sys.stderr)
    environ["wsgi.errors"].write("wsgi-errors-line\n")
    return _text(start_response, "200 OK", "printed")


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-1\n")
    write(b"written-2\n")
    return []


def file_wrapper(environ, start_response):
    size = _int(_query(environ), "size", 1 << 20)
    # Deleted when closed, on every platform (Windows cannot unlink an open file).
    handle = tempfile.TemporaryFile(prefix="wfcgi-testapp-")
    for off in range(0, size, READ_SIZE):
        handle.write(pattern(off, min(READ_SIZE, size - off)))
    handle.seek(0)
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(size)),
    ])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:  # PEP 3333 optional extension: fall back to plain iteration
        return _read_file(handle)
    return wrapper(handle, READ_SIZE)


def _read_file(handle):
    # A generator, so the server's close() on it closes the file too.
    with handle:
        yield from iter(lambda: handle.read(READ_SIZE), b"")


class CloseTracker:
    """Yields ``chunks`` pieces; close() counts, whether or not iteration finished."""

    def __init__(self, chunks, delay):
        self.chunks, self.delay = chunks, delay

    def __iter__(self):
        for i in range(self.chunks):
            if i and self.delay > 0:
                time.sleep(self.delay)
            yield b"tracked-%d\n" % i

    def close(self):
        global CLOSE_COUNT
        with _close_lock:
            CLOSE_COUNT += 1


def close_tracker(environ, start_response):
    q = _query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return CloseTracker(_int(q, "chunks", 3), _float(q, "delay", 0.0))


def close_count(environ, start_response):
    with _close_lock:
        count = CLOSE_COUNT
    return _text(start_response, "200 OK", str(count))


def imports(environ, start_response):
    name = _query(environ).get("name", "")
    try:
        module = importlib.import_module(name)
    except ImportError:
        return _text(start_response, "200 OK", "missing %s" % name)
    return _text(start_response, "200 OK", "ok %s" % getattr(module, "__file__", None))


def sys_info(environ, start_response):
    return _json(start_response, {
        "version": sys.version,
        "platform": sys.platform,
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "path": sys.path,
    })


def _windows_thread_name():
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32")
    kernel32.GetCurrentThread.restype = ctypes.c_void_p
    kernel32.GetThreadDescription.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_wchar_p)]
    kernel32.GetThreadDescription.restype = ctypes.c_long
    kernel32.LocalFree.argtypes = [ctypes.c_wchar_p]
    description = ctypes.c_wchar_p()
    if kernel32.GetThreadDescription(kernel32.GetCurrentThread(), ctypes.byref(description)) < 0:
        return "unknown"
    name = description.value or "unknown"
    kernel32.LocalFree(description)
    return name


def thread_name(environ, start_response):
    if sys.platform == "win32":
        name = _windows_thread_name()
    else:
        try:
            with open("/proc/self/task/%d/comm" % threading.get_native_id()) as f:
                name = f.read().strip()
        except OSError:
            name = "unknown"
    return _text(start_response, "200 OK", name)


def pid(environ, start_response):
    time.sleep(_float(_query(environ), "sleep", 0))
    return _text(start_response, "200 OK", str(os.getpid()))


def exit_now(environ, start_response):
    # A worker dying in the middle of a request, without Python's clean-up.
    os._exit(_int(_query(environ), "code", 3))


def segfault(environ, start_response):
    # A crash in native code, as a broken C extension would cause.
    import ctypes

    ctypes.string_at(0)


_LEAKED = []


def leak(environ, start_response):
    # Memory the app never gives back, as a leaking app holds it.
    mib = _int(_query(environ), "mib", 1)
    _LEAKED.append(bytearray(b"x" * (mib << 20)))
    return _text(start_response, "200 OK", "%d MiB held" % (sum(len(b) for b in _LEAKED) >> 20))


def not_found(environ, start_response):
    return _text(start_response, "404 Not Found", "not found: %s" % environ.get("PATH_INFO", ""))


ROUTES = {
    "/hello": hello,
    "/echo": echo,
    "/sha256": sha256,
    "/count": count,
    "/read-all": read_all,
    "/stream": stream,
    "/bigresponse": bigresponse,
    "/sleep": sleep,
    "/barrier": barrier,
    "/environ": environ_json,
    "/raise-before": raise_before,
    "/raise-after": raise_after,
    "/bad-header": bad_header,
    "/bad-status": bad_status,
    "/print": print_route,
    "/write-callable": write_callable,
    "/file-wrapper": file_wrapper,
    "/close-tracker": close_tracker,
    "/close-count": close_count,
    "/imports": imports,
    "/sys": sys_info,
    "/thread": thread_name,
    "/pid": pid,
    "/exit": exit_now,
    "/segfault": segfault,
    "/leak": leak,
}


def application(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO", ""), not_found)(environ, start_response)
