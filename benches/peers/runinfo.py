"""Measurements around one benchmark run, for benches/run-load (Linux /proc only).

    python runinfo.py snapshot PID [PID...]   one JSON object on stdout:
        t           monotonic seconds
        cpu         /proc/stat aggregate "cpu" line: busy and total jiffies of the machine
        loadavg     /proc/loadavg 1/5/15-minute figures
        trees       for each PID: CPU jiffies (utime+stime) and VmHWM/VmRSS kB summed over
                    the process and its descendants (uWSGI's workers, nginx's worker), and
                    the largest single VmHWM
        parent_children_ticks  cutime+cstime of this script's parent (the driver shell):
                    the CPU of the children it has reaped, i.e. the client once it has exited
    python runinfo.py record BEFORE AFTER RESULT META_JSON
        merges a before/after pair, the client's JSON result (fcgi-bench or wrk) and
        META_JSON (server, scenario, ...) into one line of results.jsonl.
"""

import json
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def read(path):
    with open(path) as f:
        return f.read()


def proc_stat(pid):
    text = read("/proc/%d/stat" % pid)
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17
    return {
        "ppid": int(fields[1]),
        "ticks": int(fields[11]) + int(fields[12]),
        "child_ticks": int(fields[13]) + int(fields[14]),
    }


def status_kb(pid, key):
    for line in read("/proc/%d/status" % pid).splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def all_ppids():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                out[int(name)] = proc_stat(int(name))["ppid"]
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree(root, ppids):
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(p for p, pp in ppids.items() if pp == pid)
    return found


def snapshot(pids):
    cpu = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)
    total = sum(cpu[:8])
    ppids = all_ppids()
    trees = {}
    for root in pids:
        ticks = hwm = rss = max_hwm = n = 0
        for pid in tree(root, ppids):
            try:
                st = proc_stat(pid)
                h = status_kb(pid, "VmHWM")
                r = status_kb(pid, "VmRSS")
            except (OSError, ValueError):
                continue
            # child_ticks: children that exited and were waited for (one_connection.py's server).
            ticks += st["ticks"] + st["child_ticks"]
            hwm += h
            rss += r
            max_hwm = max(max_hwm, h)
            n += 1
        trees[str(root)] = {"ticks": ticks, "hwm_kb": hwm, "rss_kb": rss,
                            "max_hwm_kb": max_hwm, "processes": n}
    return {
        "t": time.monotonic(),
        "cpu": {"busy": total - idle, "total": total},
        "loadavg": [float(x) for x in read("/proc/loadavg").split()[:3]],
        "trees": trees,
        "parent_children_ticks": proc_stat(os.getppid())["child_ticks"],
    }


def record(before_path, after_path, result_path, meta):
    before, after = json.loads(read(before_path)), json.loads(read(after_path))
    try:
        result = json.loads(read(result_path).strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        result = {"error": "no result: %s" % e}
    wall = after["t"] - before["t"]
    ncpu = os.cpu_count() or 1
    pct = lambda ticks: round(100.0 * ticks / HZ / wall, 1) if wall > 0 else None  # noqa: E731
    busy = after["cpu"]["busy"] - before["cpu"]["busy"]
    total = after["cpu"]["total"] - before["cpu"]["total"]
    load = {
        "window_secs": round(wall, 3),
        "loadavg_before": before["loadavg"],
        "loadavg_after": after["loadavg"],
        "machine_busy_percent": round(100.0 * busy / total * ncpu, 1) if total else None,
        "cpus": ncpu,
    }
    accounted = 0
    for role, pid in meta.pop("pids", {}).items():
        b, a = before["trees"].get(str(pid)), after["trees"].get(str(pid))
        if not (a and b):
            continue
        ticks = a["ticks"] - b["ticks"]
        accounted += ticks
        load["%s_cpu_percent" % role] = pct(ticks)
        if role == "server":
            meta["server_rss_max_kb"] = a["hwm_kb"]
            meta["server_rss_max_largest_process_kb"] = a["max_hwm_kb"]
            meta["server_processes"] = a["processes"]
    client = after["parent_children_ticks"] - before["parent_children_ticks"]
    accounted += client
    load["client_cpu_percent"] = pct(client)
    # Everything else the machine did meanwhile (other users' builds, ...), in % of one core.
    load["other_cpu_percent"] = round(max(0.0, 100.0 * busy / total * ncpu - pct(accounted)), 1) \
        if total and wall > 0 else None
    line = dict(meta)
    line["load"] = load
    line["result"] = result
    print(json.dumps(line, sort_keys=True))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "snapshot":
        print(json.dumps(snapshot([int(p) for p in sys.argv[2:]])))
    elif len(sys.argv) == 6 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
