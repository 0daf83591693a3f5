"""`objapp.Holder.app`: `objapp.Holder` is no module, so the loader imports `objapp`
and walks the attribute chain Holder -> app."""

from _respond import make


class Holder:
    app = staticmethod(make("objapp.Holder.app"))
