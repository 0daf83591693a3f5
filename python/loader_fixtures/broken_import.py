"""The module exists but an import inside it fails: the error shown must be this inner
ImportError's traceback (naming does_not_exist_xyz), not a bare "could not be imported"."""

import does_not_exist_xyz  # noqa: F401

from _respond import make

application = make("broken_import")
