"""testapp.app wrapped in wsgiref's PEP 3333 validator: a server that breaks the spec fails loudly."""

from wsgiref.validate import validator

from testapp import app

application = validator(app.application)
