#!/usr/bin/env python3
"""Writes the seed inputs under fuzz/seeds/<target>/ (run from anywhere; idempotent).

Each seed is what a real web server sends: an nginx-like request (BEGIN, ~30 params in one
record, STDIN), GET_VALUES, params split mid-pair across records, an abort, padding.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def rec(ty, rid, content=b"", pad=0):
    return struct.pack(">BBHHBB", 1, ty, rid, len(content), pad, 0) + content + b"\0" * pad


def ln(n):
    return bytes([n]) if n < 0x80 else struct.pack(">I", n | 0x80000000)


def pair(n, v):
    return ln(len(n)) + ln(len(v)) + n + v


BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, DATA, GET_VALUES = 1, 2, 3, 4, 5, 6, 8, 9
NGINX = [
    (b"QUERY_STRING", b"a=1&b=2"), (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"), (b"CONTENT_LENGTH", b"11"),
    (b"SCRIPT_NAME", b"/app"), (b"REQUEST_URI", b"/app/x?a=1&b=2"),
    (b"DOCUMENT_URI", b"/app/x"), (b"DOCUMENT_ROOT", b"/srv/www"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"),
    (b"GATEWAY_INTERFACE", b"CGI/1.1"), (b"SERVER_SOFTWARE", b"nginx/1.24.0"),
    (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"51234"),
    (b"SERVER_ADDR", b"127.0.0.1"), (b"SERVER_PORT", b"80"), (b"SERVER_NAME", b"localhost"),
    (b"REDIRECT_STATUS", b"200"), (b"PATH_INFO", b"/x"), (b"SCRIPT_FILENAME", b"/srv/www/app"),
    (b"HTTP_HOST", b"localhost"), (b"HTTP_USER_AGENT", b"curl/8.5.0"),
    (b"HTTP_ACCEPT", b"*/*"), (b"HTTP_CONTENT_TYPE", b"application/x-www-form-urlencoded"),
    (b"HTTP_CONTENT_LENGTH", b"11"), (b"HTTP_CONNECTION", b"keep-alive"),
    (b"HTTP_ACCEPT_ENCODING", b"gzip"), (b"HTTP_COOKIE", b"session=" + b"c" * 150),
    (b"HTTPS", b""), (b"HTTP_X_FORWARDED_FOR", b"10.0.0.1"),
]
params = b"".join(pair(n, v) for n, v in NGINX)
begin_keep = struct.pack(">HB5x", 1, 1)
nginx = (rec(BEGIN, 1, begin_keep) + rec(PARAMS, 1, params) + rec(PARAMS, 1)
         + rec(STDIN, 1, b"hello=world", pad=5) + rec(STDIN, 1))
names = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS", b"OTHER"]
get_values = rec(GET_VALUES, 0, b"".join(pair(n, b"") for n in names))
cut = 7  # mid-pair
split = (rec(BEGIN, 2, begin_keep) + rec(PARAMS, 2, params[:cut]) + rec(PARAMS, 2, params[cut:])
         + rec(PARAMS, 2) + rec(STDIN, 2))
multiplexed = (rec(BEGIN, 1, begin_keep) + rec(BEGIN, 2, begin_keep) + rec(PARAMS, 1, params)
               + rec(PARAMS, 2, params) + rec(PARAMS, 2) + rec(ABORT, 2) + rec(PARAMS, 1)
               + rec(DATA, 1, b"d") + rec(STDIN, 1, b"x") + rec(STDIN, 1) + rec(99, 0))
refused = rec(BEGIN, 3, struct.pack(">HB5x", 3, 0)) + rec(STDIN, 3, b"x") + rec(STDIN, 3)

seeds = {
    # record: first byte is the cut point of the differential split.
    "record": {"nginx": b"\x80" + nginx, "get_values": b"\x10" + get_values,
               "split": b"\x33" + split, "multiplexed": b"\xf0" + multiplexed},
    "pairs": {"nginx": params, "get_values": get_values[8:], "long": pair(b"N" * 130, b"v" * 200),
              "cut": params[:cut]},
    "bodies": {"begin": begin_keep, "end": struct.pack(">IB3x", 7, 0),
               "unknown": b"\x63" + b"\0" * 7, "header": rec(STDIN, 1, b"hi")},
    # connection: [n, ctrl[..n], stream]; ctrl bytes with bit 0 set end a held request.
    "connection": {"nginx": b"\x02\x00\x01" + nginx, "get_values": b"\x00" + get_values,
                   "split": b"\x01\x03" + split, "multiplexed": b"\x03\x00\x05\x01" + multiplexed,
                   "refused": b"\x00" + refused},
}
for target, files in seeds.items():
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
