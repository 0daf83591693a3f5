"""Turn benches/run-load results into the tables and chart of docs/benchmarks.md.

    .venvs/bench/bin/python benches/report.py RESULTS_DIR [RESULTS_DIR ...] [--chart PNG]

Each RESULTS_DIR is a target/bench-results/<timestamp>/ folder. When several are given, a later
one's line for the same server and scenario replaces an earlier one's (a scenario re-run on a
quieter machine). Prints Markdown; with --chart, also draws requests/s against concurrency per
server (needs matplotlib: pip install matplotlib into the bench venv).
"""

import argparse
import json
import os
import sys

SERVERS = ["fcgi-hello", "wfcgi", "wfcgi-2t", "wfcgi-base", "wfcgi-base-2t", "wfcgi-iis", "uwsgi-1p",
           "uwsgi-2p4t", "flup", "flup-unix", "wfastcgi"]
SCENARIOS = ["hello-c1", "hello-c8", "hello-c64", "upload-1m", "download-1m", "sleep-10ms", "nginx-wrk"]
LABELS = {
    "fcgi-hello": "fcgi-hello (no Python, ceiling)",
    "wfcgi": "wfcgi (default settings)",
    "wfcgi-2t": "wfcgi --threads 2",
    "wfcgi-base": "wfcgi before the change (WFCGI_BASELINE), its defaults",
    "wfcgi-base-2t": "wfcgi before the change, --threads 2",
    "wfcgi-iis": "wfcgi as IIS runs it (1 connection on fd 0)",
    "uwsgi-1p": "uWSGI 1 process",
    "uwsgi-2p4t": "uWSGI 2 processes x 4 threads",
    "flup": "flup (TCP)",
    "flup-unix": "flup (Unix socket)",
    "wfastcgi": "wfastcgi 3.0.0 (1 connection, as IIS)",
}


def load(dirs):
    runs, machine = {}, None
    for d in dirs:
        with open(os.path.join(d, "results.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                runs[(r["server"], r["scenario"])] = dict(r, _dir=os.path.basename(d.rstrip("/")))
        m = os.path.join(d, "machine.json")
        if os.path.exists(m) and machine is None:
            with open(m) as f:
                machine = json.load(f)
    return runs, machine


def rps(runs, server, scenario):
    r = runs.get((server, scenario))
    if not r or "skipped" in r:
        return None
    res = r.get("result") or {}
    return res.get("rps")


def table(runs):
    out = ["| server | scenario | req/s | p50 ms | p99 ms | errors | server CPU % | client CPU % | other CPU % | server RSS MiB | run |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        for server in SERVERS:
            r = runs.get((server, scenario))
            if r is None:
                continue
            if "skipped" in r:
                out.append(f"| {server} | {scenario} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            res, load = r.get("result") or {}, r.get("load") or {}
            lat = res.get("latency_us") or {}
            rss = r.get("server_rss_max_kb")
            # The server exits with its connection; what was measured is its launcher's.
            if server == "wfcgi-iis":
                rss = None
            out.append("| {} | {} | {:,.0f} | {:.2f} | {:.2f} | {} | {:.0f} | {:.0f} | {:.0f} | {} | {} |".format(
                server, scenario, res.get("rps", 0), lat.get("p50", 0) / 1000, lat.get("p99", 0) / 1000,
                res.get("errors_total", 0), load.get("server_cpu_percent", 0),
                load.get("client_cpu_percent", 0), load.get("other_cpu_percent", 0),
                "{:.0f}".format(rss / 1024) if rss else "", r["_dir"]))
    return "\n".join(out)


def ratios(runs):
    def best(scenario, servers):
        vals = [(rps(runs, s, scenario) or 0, s) for s in servers]
        return max(vals)

    lines = ["| target | measured | ratio | met |", "|---|---|---|---|"]

    def row(name, num, den, want):
        (n, ns), (d, ds) = num, den
        if not n or not d:
            lines.append(f"| {name} | missing data | | |")
            return
        ratio = n / d
        met = "for context" if want is None else f"{'yes' if ratio >= want else 'no'} (>= {want})"
        lines.append(f"| {name} | {ns} {n:,.0f} / {ds} {d:,.0f} | {ratio:.2f} | {met} |")

    # Issue 13's targets: wfcgi with its default settings against the best thread count (this
    # build's --threads 2, and the build before the change with its defaults and with 2), the
    # peers, and the no-Python ceiling.
    tuned = ["wfcgi-2t", "wfcgi-base", "wfcgi-base-2t"]
    uwsgi = ["uwsgi-1p", "uwsgi-2p4t"]
    default = lambda scenario: (rps(runs, "wfcgi", scenario) or 0, "wfcgi")
    row("/hello c=64, defaults: within 5% of the best thread count", default("hello-c64"),
        best("hello-c64", tuned), 0.95)
    s = default("sleep-10ms")
    if s[0]:
        lines.append("| 10 ms sleep c=16, defaults: 95% of 1600 | {} {:,.0f} | {:.2f} | {} (>= 0.95) |".format(
            s[1], s[0], s[0] / 1600, "yes" if s[0] / 1600 >= 0.95 else "no"))
    else:
        lines.append("| 10 ms sleep c=16, defaults: 95% of 1600 | missing data | | |")
    row("1 MiB upload c=16, 1 process: 1.5x uWSGI 1 process", default("upload-1m"),
        best("upload-1m", ["uwsgi-1p"]), 1.5)
    row("1 MiB upload c=16: against the best uWSGI (2 processes)", default("upload-1m"),
        best("upload-1m", uwsgi), None)
    row("1 MiB download c=16: 2x best uWSGI", default("download-1m"), best("download-1m", uwsgi), 2.0)
    row("/hello via nginx c=64: 80% of nginx + no-Python", default("nginx-wrk"),
        best("nginx-wrk", ["fcgi-hello"]), 0.8)
    row("/hello c=64: best uWSGI", default("hello-c64"), best("hello-c64", uwsgi), None)
    row("/hello c=1: wfastcgi", best("hello-c1", ["wfcgi", "wfcgi-iis"]), best("hello-c1", ["wfastcgi"]), None)
    return "\n".join(lines)


def chart(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    conc = [1, 8, 64]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for server in SERVERS:
        ys = [rps(runs, server, f"hello-c{c}") for c in conc]
        pts = [(c, y) for c, y in zip(conc, ys) if y]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS.get(server, server))
    ax.set_xscale("log", base=2)
    ax.set_xticks(conc)
    ax.set_xticklabels([str(c) for c in conc])
    ax.set_xlabel("connections (keep-conn)")
    ax.set_ylabel("requests/s, GET /hello (13 bytes)")
    ax.set_title("FastCGI servers on one 2-core machine, same run (client on the same cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dirs", nargs="+")
    p.add_argument("--chart")
    a = p.parse_args()
    runs, machine = load(a.dirs)
    if machine:
        v = machine.get("versions", {})
        print(f"Machine: {machine.get('cpu_model')} ({machine.get('hypervisor')}), {machine.get('nproc')} cores, "
              f"kernel {machine.get('kernel')}, {machine.get('os')}; git {machine.get('git')}.")
        print("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".\n")
    print(ratios(runs))
    print()
    print(table(runs))
    if a.chart:
        chart(runs, a.chart)
        print(f"\nchart: {a.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
