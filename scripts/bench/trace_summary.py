#!/usr/bin/env python3
"""Condenses `perf trace -s` output: per thread, the system calls that took
the most wall time (time inside the call, blocked or not).

  trace_summary.py TRACE.txt [TOP] [MESSAGES]
"""
import re
import sys

THREAD = re.compile(r"^ (?P<name>\S.*?) \((?P<tid>\d+)\), (?P<events>\d+) events")
ROW = re.compile(r"^\s+(?P<call>\w+)\s+(?P<calls>\d+)\s+(?P<errors>\d+)\s+(?P<total>[\d.]+)\s")


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    threads, current = [], None
    for line in open(path, errors="replace"):
        m = THREAD.match(line)
        if m:
            current = {"name": m["name"], "tid": m["tid"], "rows": []}
            threads.append(current)
            continue
        m = ROW.match(line)
        if m and current is not None:
            current["rows"].append((m["call"], int(m["calls"]), int(m["errors"]), float(m["total"])))
    print("| thread | system call | calls | per message (all threads' messages) | errors | total ms | avg µs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in threads:
        rows = sorted(t["rows"], key=lambda r: -r[3])
        if sum(r[1] for r in rows) < 1000:
            continue  # idle helper threads
        for call, calls, errors, total in rows[:top]:
            per = f"{calls / messages:.2f}" if messages else "–"
            print(f"| {t['name']} ({t['tid']}) | {call} | {calls:,} | {per} | {errors:,} | "
                  f"{total:,.0f} | {1000 * total / calls:,.0f} |")


if __name__ == "__main__":
    main()
