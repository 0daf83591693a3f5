"""flup's threaded FastCGI server for benches/run-load.

    python flup_server.py PORT|unix:PATH APP_DIR

Serves testapp.app.application (from APP_DIR) on 127.0.0.1:PORT (or a Unix
socket) with
flup.server.fcgi.WSGIServer(multithreaded=True): one thread per connection
from flup's pool, the way flup is deployed behind nginx or Apache.
"""

import sys

addr, app_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, app_dir)
# flup takes a (host, port) tuple for TCP, a path string for a Unix socket.
bind = addr[len("unix:"):] if addr.startswith("unix:") else ("127.0.0.1", int(addr))

from flup.server.fcgi import WSGIServer  # noqa: E402
from testapp.app import application  # noqa: E402

WSGIServer(application, bindAddress=bind, multithreaded=True).run()
