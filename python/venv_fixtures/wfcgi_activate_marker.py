"""Installed only into .venvs/activate-this: importable only once its activate_this.py has run."""

MARKER = "wfcgi-activate-this"
