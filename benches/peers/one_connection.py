"""Start a FastCGI server the way IIS does, for benches/run-load.

    python one_connection.py PORT COMMAND [ARGS...]

IIS starts its FastCGI process with one connected pipe as standard input and
sends it one request at a time over it. This listens on 127.0.0.1:PORT,
accepts ONE connection, closes the listening socket (further connects are
refused, not queued), and runs COMMAND with the connection on fd 0.

The server exits when the client closes the connection, as under IIS, so this
process waits for it and then for SIGTERM: run-load's CPU figure counts the
waited-for child (cutime), and the launcher stays to be stopped. The child's
peak RSS goes with it: run-load's RSS column shows this launcher's, so the
launcher prints the child's own (from wait4) in the server log instead. wfastcgi_launcher.py does the same
for wfastcgi, which needs more help.
"""

import os
import signal
import socket
import sys


def accept_one(port, label):
    """Listens on 127.0.0.1:PORT, accepts one connection and stops listening."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    print("%s: listening on 127.0.0.1:%d (one connection)" % (label, port), flush=True)
    conn, _ = listener.accept()
    listener.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    port, command = int(sys.argv[1]), sys.argv[2:]
    conn = accept_one(port, "one_connection")
    pid = os.fork()
    if pid == 0:
        os.dup2(conn.fileno(), 0)
        conn.close()
        os.execvp(command[0], command)
    conn.close()
    _, status, usage = os.wait4(pid, 0)
    print("one_connection: the server exited with status %d; its peak RSS was %.1f MiB" % (
        os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024), flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
