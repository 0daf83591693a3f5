"""Run wfastcgi 3.0.0 (the IIS FastCGI handler) on Linux, for benches/run-load.

    WSGI_HANDLER=testapp.app.application python wfastcgi_launcher.py PORT APP_DIR

IIS starts wfastcgi.py with a connected pipe as its standard input and talks
FastCGI over it: one connection, one request at a time, for the life of the
process (IIS starts more processes for concurrency). This launcher recreates
that: it listens on 127.0.0.1:PORT, accepts ONE connection, closes the
listening socket (so further connects are refused, not queued), puts the
connection on fd 0 and fd 1, and calls wfastcgi.main(). wfastcgi exits when
the client closes the connection; the launcher then waits for SIGTERM, so that
run-load can still read its CPU time and peak RSS.

wfastcgi imports ctypes.windll at module load (ReadDirectoryChangesW and
friends for its file watcher); a stub stands in for it. Every stubbed call
returns 0, so the watcher's CreateFile "fails" and no watcher runs.
APPL_PHYSICAL_PATH (the app directory IIS sends as a param) is not needed:
wfastcgi chdirs to it (default: its own directory) and reads Web.config from
it, so the launcher puts APP_DIR on sys.path instead.
"""

import ctypes
import os
import signal
import sys

from one_connection import accept_one


class _Stub:
    """Any attribute is another stub; calling one returns 0; attributes can be set."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Stub()
        object.__setattr__(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        return 0


def main():
    port, app_dir = int(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.environ.get("WSGI_HANDLER"):
        sys.exit("wfastcgi_launcher: set WSGI_HANDLER")
    ctypes.windll = _Stub()

    conn = accept_one(port, "wfastcgi_launcher")
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    conn.close()
    # sys.stdin/sys.stdout were opened on the old fds 0/1; reopen them on the socket.
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)

    # wfastcgi replaces sys.path[0] with '.' (its chdir target): keep the app dir after it.
    sys.path.insert(1, app_dir)
    import wfastcgi

    wfastcgi.main()
    sys.stdout = sys.__stdout__ = open(2, "w", closefd=False)
    signal.pause()


if __name__ == "__main__":
    main()
