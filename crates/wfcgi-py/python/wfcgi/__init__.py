"""wfcgi: serve a Python WSGI app over FastCGI (IIS, nginx, Apache).

The server is native code (the ``_wfcgi`` extension module, the same Rust crates as the
``wfcgi`` executable). Run it as ``python -m wfcgi serve ...`` or with the ``wfcgi`` console
script; ``wfcgi --help`` lists the commands and settings.
"""

import sys

__all__ = ["main"]


def main(argv=None):
    """Runs wfcgi with ``argv`` (default: the command line) and returns its exit status."""
    from wfcgi import _wfcgi

    if argv is None:
        argv = sys.argv[1:]
    # What was printed before wfcgi takes over stdout and stderr. Under IIS there are none
    # (the process has no standard output or error handle): both are None.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    return _wfcgi.main(list(argv))
