"""WSGI entry point: WSGI_HANDLER=mysite.wsgi.application (or
django.core.wsgi.get_wsgi_application() with DJANGO_SETTINGS_MODULE=mysite.settings)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
