#!/usr/bin/env python3
"""Turns the per-run JSON files of scripts/bench.sh into Markdown.

  report.py annotate FILE KEY=VALUE...     add fields to a run's JSON
  report.py postman-log LOG START_EPOCH    JSON facts from postman's JSON log
  report.py compare DIR                    the comparison tables (stdout)
  report.py scale DIR                      the scale tables (stdout)
  report.py receiver KIND FILE             JSON facts from a receiver: KIND
                                           shaped (shaped-sink's stats) or
                                           smtp-sink (its -c counters)
  report.py sites DIR                      the sites tables (stdout)
  report.py mix DIR                        the mix tables (stdout)
  report.py splice FILE NAME < TEXT        replace the section NAME of FILE
                                           (between <!-- BEGIN NAME --> and
                                           <!-- END NAME -->), or append it

Run files are DIR/<workload>/<sender>.<run>.json; DIR/<workload>/workload.json
describes the workload.
"""
import glob
import json
import os
import re
import statistics
import sys
from datetime import datetime

SENDERS = [
    ("postman", "postman `run --once`"),
    ("postfix", "Postfix 3 (qmgr + smtp)"),
    ("source-d", "smtp-source -d (shared connections)"),
    ("source-1", "smtp-source (1 message/connection)"),
    ("floor", "queue floor: claim `rename` + `unlink` only, no SMTP"),
]


def load(path):
    with open(path) as f:
        return json.load(f)


def annotate(path, pairs):
    data = load(path)
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value
    with open(path, "w") as f:
        json.dump(data, f)


TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def parse_ts(text):
    m = TS.match(text)
    if not m:
        return None
    base, frac, zone = m.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    if len(zone) == 5:
        zone = zone[:3] + ":" + zone[3:]
    when = datetime.fromisoformat(base + zone).timestamp()
    return when + (int(frac) / 10 ** len(frac) if frac else 0.0)


SITE_RECORDS = ("site throttled", "site suspended", "site backing off", "site backoff lifted")


def postman_log(path, start_epoch):
    """sent/deferred/bounced counts, the first delivery's delay after start,
    and the workers' metrics (sum of per-worker peaks)."""
    facts = {"sent": 0, "deferred": 0, "bounced": 0, "first_delivery": None,
             "worker_peak_sum": 0, "connections_opened_log": 0, "records": 0}
    with open(path, errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            facts["records"] += 1
            msg = rec.get("msg")
            if msg == "delivery":
                status = rec.get("status")
                if status in ("sent", "deferred", "bounced"):
                    facts[status] += 1
                if facts["first_delivery"] is None and "ts" in rec:
                    ts = parse_ts(rec["ts"])
                    if ts is not None:
                        facts["first_delivery"] = ts - float(start_epoch)
            elif msg in SITE_RECORDS:
                # The site scheduler's changes of state (issue 17).
                key = msg.replace(" ", "_")
                facts[key] = facts.get(key, 0) + 1
            elif msg == "metrics" and "peak_connections" in rec:
                facts["worker_peak_sum"] += int(rec["peak_connections"])
                facts["connections_opened_log"] += int(rec.get("connections_opened", 0))
    print(json.dumps(facts))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def derive(run):
    sent = run.get("sent") or 0
    cpu = run["user"] + run["sys"]
    return {
        "rate": sent / run["wall"] if run["wall"] > 0 else 0,
        "cpu_k": cpu / sent * 1000 if sent else None,
        "mem": run["peak_rss_kb"] / 1024,
        "pss": run["peak_pss_kb"] / 1024 if run.get("peak_pss_kb") else None,
        "conns": run.get("sessions"),
        "peak": run.get("peak_conns"),
        "sent": sent,
        "wall": run["wall"],
        "cpu": cpu,
        "other": run["machine_busy"] - cpu if "machine_busy" in run else None,
    }


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}×"


def workloads(root):
    out = []
    for path in sorted(glob.glob(os.path.join(root, "*", "workload.json"))):
        wl = load(path)
        wl["dir"] = os.path.dirname(path)
        out.append(wl)
    out.sort(key=lambda w: w.get("order", 0))
    return out


def runs_of(wl, sender):
    files = sorted(glob.glob(os.path.join(wl["dir"], f"{sender}.*.json")))
    return [derive(load(p)) for p in files]


def compare(root):
    lines = []
    medians = {}
    for wl in workloads(root):
        lines.append(f"### {wl['title']}\n")
        lines.append(
            "| sender | messages/s | CPU s / 1,000 msgs | peak RSS MB | "
            "connections opened | peak simultaneous connections | runs |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        per = {}
        for key, label in SENDERS:
            runs = runs_of(wl, key)
            if not runs:
                continue
            m = {k: median([r[k] for r in runs]) for k in runs[0]}
            per[key] = m
            mem = fmt(m["mem"], 1)
            if m.get("pss") is not None:
                mem += f" (PSS {fmt(m['pss'], 1)})"
            lines.append(
                f"| {label} | {fmt(m['rate'])} | {fmt(m['cpu_k'], 3)} | {mem} | "
                f"{fmt(m['conns'])} | {fmt(m['peak'])} | {len(runs)} |"
            )
        medians[wl["title"]] = per
        lines.append("")
        lines.append("<details><summary>every run</summary>\n")
        lines.append(
            "| sender | run | sent | wall s | msgs/s | CPU s | CPU s / 1,000 | peak RSS MB | connections | "
            "CPU s of all else on the machine (sink included) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, label in SENDERS:
            for i, r in enumerate(runs_of(wl, key), 1):
                lines.append(
                    f"| {key} | {i} | {r['sent']} | {r['wall']:.2f} | {fmt(r['rate'])} | "
                    f"{r['cpu']:.2f} | {fmt(r['cpu_k'], 3)} | {fmt(r['mem'], 1)} | {fmt(r['conns'])} | "
                    f"{fmt(r['other'], 2)} |"
                )
        lines.append("\n</details>\n")
    lines.append("### Ratios (medians)\n")
    lines.append(
        "| workload | postman / Postfix msgs/s | postman / Postfix CPU per msg | "
        "postman / Postfix peak RSS (PSS) | postman / smtp-source -d | postman / smtp-source 1-per-conn | "
        "postman / queue floor |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for title, per in medians.items():
        pm, pf = per.get("postman"), per.get("postfix")
        sd, s1 = per.get("source-d"), per.get("source-1")
        fl = per.get("floor")
        get = lambda d, k: d[k] if d else None
        lines.append(
            f"| {title} | {ratio(get(pm, 'rate'), get(pf, 'rate'))} | "
            f"{ratio(get(pm, 'cpu_k'), get(pf, 'cpu_k'))} | "
            f"{ratio(get(pm, 'mem'), get(pf, 'mem'))} ({ratio(get(pm, 'mem'), get(pf, 'pss'))}) | "
            f"{ratio(get(pm, 'rate'), get(sd, 'rate'))} | {ratio(get(pm, 'rate'), get(s1, 'rate'))} | "
            f"{ratio(get(pm, 'rate'), get(fl, 'rate'))} |"
        )
    lines.append("")
    print("\n".join(lines))


def scale(root):
    lines = []
    for wl in workloads(root):
        lines.append(f"### {wl['title']}\n")
        if wl.get("note"):
            lines.append(wl["note"] + "\n")
        lines.append(
            "| run | sent | deferred | wall s | msgs/s | CPU s | peak RSS MB | "
            "first delivery after start s | peak simultaneous connections (sink) | "
            "sum of workers' peak_connections (log) | connections opened |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        files = sorted(glob.glob(os.path.join(wl["dir"], "postman.*.json")))
        for i, path in enumerate(files, 1):
            r = load(path)
            d = derive(r)
            lines.append(
                f"| {i} | {d['sent']} | {r.get('deferred', 0)} | {d['wall']:.2f} | {fmt(d['rate'])} | "
                f"{d['cpu']:.2f} | {fmt(d['mem'], 1)} | {fmt(r.get('first_delivery'), 3)} | "
                f"{fmt(d['peak'])} | {fmt(r.get('worker_peak_sum'))} | {fmt(d['conns'])} |"
            )
        lines.append("")
    print("\n".join(lines))


def receiver(kind, path):
    if kind == "shaped":
        stats = load(path)
        facts = dict(stats.get("total", {}))
        facts["groups"] = stats.get("groups", {})
    else:
        with open(path, "rb") as f:
            found = re.findall(rb"sess=(\d+) quit=(\d+) mesg=(\d+)", f.read())
        sess, _, mesg = map(int, found[-1]) if found else (0, 0, 0)
        facts = {"connections": sess, "refused": 0, "messages": mesg, "unique": None,
                 "peak_active": None}
    print(json.dumps(facts))


MX_SENDERS = [
    ("postman", "postman (daemon)"),
    ("postfix", "Postfix 3 (qmgr + smtp, by MX)"),
    ("source-d", "smtp-source -d -s 20"),
]


def mx_run(run, count):
    """The numbers of one sites or mix run."""
    rcv = run.get("receiver") or {}
    facts = run.get("facts") or {}
    delivered = run.get("delivered")
    if delivered is None:  # smtp-source: every message went to one recipient
        delivered = rcv.get("messages") or 0
    cpu = run["user"] + run["sys"]
    peak = rcv.get("peak_active")
    if peak is None:
        peak = run.get("peak_conns")
    opened = run.get("active_opens")
    refused = rcv.get("refused")
    return {
        "delivered": delivered,
        "complete": delivered >= count,
        "wall": run["wall"],
        "rate": delivered / run["wall"] if run["wall"] > 0 else 0,
        "opened": opened,
        "refused": refused,
        "refused_pct": 100.0 * refused / opened if opened and refused is not None else None,
        "rst": run.get("attempt_fails"),
        "peak": peak,
        "deferred": facts.get("deferred", run.get("deferred")),
        "cpu": cpu,
        "cpu_k": cpu / delivered * 1000 if delivered else None,
        "mem": run["peak_rss_kb"] / 1024,
        "pss": run["peak_pss_kb"] / 1024 if run.get("peak_pss_kb") else None,
        "dns": sum((run.get("dns") or {}).values()) if run.get("dns") else None,
        "peers": run.get("peer_cpu") or [],
        "other": run["machine_busy"] - cpu if "machine_busy" in run else None,
        "left": run.get("left"),
        "load": run.get("load", ""),
        "site_records": " / ".join(str(facts.get(k.replace(" ", "_"), 0)) for k in SITE_RECORDS[:3])
        if facts else "–",
        "groups": rcv.get("groups") or {},
        "messages": rcv.get("messages"),
    }


def mx_runs(wl, sender):
    files = sorted(glob.glob(os.path.join(wl["dir"], f"{sender}.*.json")),
                   key=lambda p: int(p.rsplit(".", 2)[-2]))
    return [mx_run(load(p), wl["count"] if sender == "source-d" else wl.get("deliverable", wl["count"]))
            for p in files]


def sites(root):
    lines = []
    ratios = []
    for wl in workloads(root):
        lines.append(f"### {wl['title']}\n")
        lines.append(
            "| sender | msgs/s | connections opened | refused (421) | refused / opened | "
            "peak at once | deferrals | CPU s / 1,000 msgs | peak RSS MB | runs |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        per = {}
        for key, label in MX_SENDERS:
            runs = mx_runs(wl, key)
            if not runs:
                continue
            m = {k: median([r[k] for r in runs]) for k in
                 ("rate", "opened", "refused", "refused_pct", "peak", "deferred", "cpu_k", "mem", "pss")}
            per[key] = m
            incomplete = sum(not r["complete"] for r in runs)
            mem = fmt(m["mem"], 1) + (f" (PSS {fmt(m['pss'], 1)})" if m["pss"] is not None else "")
            pct = "–" if m["refused_pct"] is None else f"{m['refused_pct']:.1f} %"
            lines.append(
                f"| {label} | {fmt(m['rate'])}{' (' + str(incomplete) + ' incomplete)' if incomplete else ''} | "
                f"{fmt(m['opened'])} | {fmt(m['refused'])} | {pct} | {fmt(m['peak'])} | "
                f"{fmt(m['deferred'])} | {fmt(m['cpu_k'], 3)} | {mem} | {len(runs)} |"
            )
        pm, pf, sd = per.get("postman"), per.get("postfix"), per.get("source-d")
        get = lambda d, k: d[k] if d else None
        ratios.append(
            f"| {wl['title']} | {ratio(get(pm, 'rate'), get(pf, 'rate'))} | "
            f"{ratio(get(pm, 'rate'), get(sd, 'rate'))} |"
        )
        lines.append("")
        lines.append("<details><summary>every run</summary>\n")
        lines.append(
            "| sender | run | load before (1, 5, 15 min) | delivered | wall s | msgs/s | connections | "
            "refused | deferrals | CPU s | peak RSS MB | DNS questions | receiver CPU s | "
            "DNS server CPU s | CPU s of all else | left queued | postman's site records: "
            "throttled / suspended / backing off |"
        )
        lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, _ in MX_SENDERS:
            for i, r in enumerate(mx_runs(wl, key), 1):
                peers = r["peers"] + [None, None]
                lines.append(
                    f"| {key} | {i} | {r['load']} | {r['delivered']:,} | {r['wall']:.2f} | {fmt(r['rate'])} | "
                    f"{fmt(r['opened'])} | {fmt(r['refused'])} | {fmt(r['deferred'])} | {r['cpu']:.2f} | "
                    f"{fmt(r['mem'], 1)} | {fmt(r['dns'])} | {fmt(peers[0], 2)} | {fmt(peers[1], 2)} | "
                    f"{fmt(r['other'], 2)} | {fmt(r['left'])} | {r['site_records']} |"
                )
        lines.append("\n</details>\n")
    lines.append("### Ratios (medians)\n")
    lines.append("| workload | postman / Postfix msgs/s | postman / smtp-source -d -s 20 |")
    lines.append("|---|---:|---:|")
    lines.extend(ratios)
    lines.append("")
    print("\n".join(lines))


GROUP_FIELDS = ("connections", "refused", "throttled", "greylisted", "messages", "unique")


def mix(root):
    lines = []
    for wl in workloads(root):
        lines.append(
            "| sender | run | load before (1, 5, 15 min) | drained in s | delivered | connections opened | "
            "RST (refused by a down host) | 421 past a provider's 20 | throttle replies | "
            "greylisting replies | black-hole connections | deferrals | CPU s | peak RSS MB | "
            "DNS questions | receiver CPU s | left queued | postman's site records: throttled / "
            "suspended / backing off |"
        )
        lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        all_runs = {key: mx_runs(wl, key) for key, _ in MX_SENDERS}
        for key, label in MX_SENDERS:
            for i, r in enumerate(all_runs[key], 1):
                g = r["groups"]
                total = lambda f: sum(v.get(f, 0) for v in g.values())
                holes = sum(v.get("connections", 0) for k, v in g.items() if k.startswith("hole"))
                drained = f"{r['wall']:.1f}" if r["complete"] else f"not drained ({r['wall']:.0f} s)"
                mem = fmt(r["mem"], 1) + (f" (PSS {fmt(r['pss'], 1)})" if r["pss"] is not None else "")
                lines.append(
                    f"| {label} | {i} | {r['load']} | {drained} | {r['delivered']:,} | {fmt(r['opened'])} | "
                    f"{fmt(r['rst'])} | {fmt(total('refused'))} | {fmt(total('throttled'))} | "
                    f"{fmt(total('greylisted'))} | {fmt(holes)} | {fmt(r['deferred'])} | {r['cpu']:.1f} | "
                    f"{mem} | {fmt(r['dns'])} | {fmt((r['peers'] + [None])[0], 2)} | {fmt(r['left'])} | "
                    f"{r['site_records']} |"
                )
        lines.append("")
        for key, label in MX_SENDERS:
            runs = all_runs[key]
            if not runs:
                continue
            lines.append(f"What the receiver saw of {label}, per group of sites (run 1):\n")
            lines.append("| group | " + " | ".join(GROUP_FIELDS) + " |")
            lines.append("|---|" + "---:|" * len(GROUP_FIELDS))
            for name, v in sorted(runs[0]["groups"].items()):
                lines.append(f"| {name} | " + " | ".join(fmt(v.get(f)) for f in GROUP_FIELDS) + " |")
            lines.append("")
    print("\n".join(lines))


def splice(path, name, text):
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = open(path).read() if os.path.exists(path) else ""
    if begin in old and end in old:
        head, _, rest = old.partition(begin)
        _, _, tail = rest.partition(end)
        new = head + block + tail
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    with open(path, "w") as f:
        f.write(new)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "annotate":
        annotate(argv[2], argv[3:])
    elif cmd == "postman-log":
        postman_log(argv[2], argv[3])
    elif cmd == "compare":
        compare(argv[2])
    elif cmd == "scale":
        scale(argv[2])
    elif cmd == "receiver":
        receiver(argv[2], argv[3])
    elif cmd == "sites":
        sites(argv[2])
    elif cmd == "mix":
        mix(argv[2])
    elif cmd == "splice":
        splice(argv[2], argv[3], sys.stdin.read())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
