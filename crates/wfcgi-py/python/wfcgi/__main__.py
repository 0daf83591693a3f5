"""``python -m wfcgi ...``: the shape of wfastcgi's ``python.exe|wfastcgi.py`` under IIS."""

import sys

from wfcgi import main

if __name__ == "__main__":
    sys.exit(main())
