"""wfcgi's built-in demo app, served when no WSGI handler is configured."""
import html
import sys

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wfcgi demo app</title>
<style>body{{font-family:sans-serif;max-width:48em;margin:2em auto;line-height:1.5}}
code{{background:#eee;padding:0 .2em}}th{{text-align:left;padding-right:1em}}</style></head>
<body><h1>wfcgi is working</h1>
<p>wfcgi is serving the built-in demo app; set <code>WSGI_HANDLER</code> or
<code>--handler</code> to serve yours (for Django:
<code>django.core.wsgi.get_wsgi_application()</code> or <code>myproject.wsgi.application</code>).</p>
<table>{rows}</table></body></html>
"""

_SHOWN = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_SOFTWARE",
          "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme", "wsgi.multithread",
          "wsgi.multiprocess")


def application(environ, start_response):
    venv = sys.prefix if sys.prefix != sys.base_prefix else "(none)"
    rows = [("Python", sys.version), ("sys.executable", sys.executable), ("venv", venv)]
    rows += [(key, environ.get(key, "")) for key in _SHOWN]
    body = _PAGE.format(rows="".join(
        "<tr><th>%s</th><td>%s</td></tr>" % (html.escape(k), html.escape(str(v)))
        for k, v in rows)).encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
