"""WSGI test application shared by wfcgi's end-to-end tests and benchmarks.

Use ``testapp.app.application`` (or ``testapp.validated.application`` for the
same app wrapped in ``wsgiref.validate``) with ``python/`` as the app directory.
"""
