"""Shared helper: a WSGI app whose body names the handler a test expected to load."""


def make(name):
    body = name.encode("ascii")

    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return application
