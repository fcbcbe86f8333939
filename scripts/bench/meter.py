#!/usr/bin/env python3
"""Measures one sender: wall time, CPU time, peak memory, connections.

  meter.py run --json OUT [--sink-pid PID] [--stderr FILE] [--timeout S] -- CMD...
      Runs CMD and waits for it. CPU comes from wait4(2)'s rusage (every
      thread of the process, exact; children it waited for included). Peak
      memory is the process's VmHWM (its peak RSS), read every SAMPLE_ONE
      seconds until it exits: ru_maxrss cannot serve, as the kernel keeps
      the peak of the image before exec too, and that image is a fork of
      this Python process (about 15 MB). postman and smtp-source are single
      processes, so their own peak is the whole sender's.

  meter.py postfix --json OUT --master-pid PID --spool DIR --sink-out FILE
                   --expect N [--sink-pid PID] [--timeout S] -- RELEASE-CMD...
      Postfix delivers in a tree of processes under its master, many of them
      short-lived. CPU is read from /proc: for the master its own time plus
      cutime/cstime (the time of every child it has reaped), plus utime/stime
      of every child still alive (zombies included). Each process's time is
      in exactly one of those terms, so the difference between a snapshot
      before RELEASE-CMD and one after the queue is empty is the CPU the
      whole instance spent. Memory is the peak of the sampled sum of RSS (and
      of PSS, which shares library pages fairly) over the tree. The run ends
      when the sink has counted N messages and the queue directories are
      empty.

Connections: with --sink-pid the sampler counts the sink's open descriptors
(a baseline taken at start subtracted): the peak number of simultaneous SMTP
connections, as the receiving side saw them.

Both modes also record machine_busy: the CPU seconds the whole machine spent
busy during the run (/proc/stat), so a run disturbed by other work shows:
busy minus the sender's CPU is everything else (the sink included).

Everything is written as one JSON object to OUT.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

SAMPLE = 0.05
SAMPLE_ONE = 0.02
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def stat(pid):
    """(ppid, utime, stime, cutime, cstime) in clock ticks, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
    return (int(fields[1]), int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14]))


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, IndexError):
        return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(root):
    """root and all its descendants, with their stat tuples."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s is not None:
                stats[int(name)] = s
    children = {}
    for pid, s in stats.items():
        children.setdefault(s[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid]
            todo.extend(children.get(pid, []))
    return out


def tree_cpu(root):
    """(user, system) seconds of root's tree: root's own and reaped
    children's time, plus every live descendant's own time."""
    procs = tree(root)
    user = sys_ = 0
    for pid, (_, ut, st, cut, cst) in procs.items():
        user += ut
        sys_ += st
        if pid == root:
            user += cut
            sys_ += cst
    return user / TICK, sys_ / TICK, len(procs)


def hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy():
    """Seconds of CPU the whole machine has spent busy (all CPUs, all
    processes) since boot: /proc/stat's first line less idle and iowait."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user
    return (sum(fields[:8]) - idle) / TICK


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """Samples the tree's summed RSS (and PSS) and the sink's descriptors."""

    def __init__(self, root, sink_pid, whole_tree=False):
        super().__init__(daemon=True)
        self.root, self.sink_pid, self.whole_tree = root, sink_pid, whole_tree
        self.peak_rss = self.peak_pss = self.peak_conns = self.peak_procs = 0
        self.samples = 0
        self.base_fds = fd_count(sink_pid) if sink_pid else 0
        self.stop = threading.Event()

    def run(self):
        period = SAMPLE if self.whole_tree else SAMPLE_ONE
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(period)

    def sample(self):
        if self.whole_tree:
            pids = list(tree(self.root))
            self.peak_procs = max(self.peak_procs, len(pids))
            self.peak_rss = max(self.peak_rss, sum(rss_kb(p) for p in pids))
            self.peak_pss = max(self.peak_pss, sum(pss_kb(p) for p in pids))
        else:
            # One process: its own high-water mark, monotonic while it runs.
            self.peak_rss = max(self.peak_rss, hwm_kb(self.root))
        if self.sink_pid:
            self.peak_conns = max(self.peak_conns, fd_count(self.sink_pid) - self.base_fds)
        self.samples += 1


def run(args):
    err = open(args.stderr, "wb") if args.stderr else subprocess.DEVNULL
    out = open(args.stdout, "wb") if args.stdout else subprocess.DEVNULL
    start_epoch = time.time()
    busy0 = machine_busy()
    t0 = time.monotonic()
    child = subprocess.Popen(args.cmd, stdout=out, stderr=err)
    sampler = Sampler(child.pid, args.sink_pid)
    sampler.start()
    timed_out = []

    def kill():
        timed_out.append(True)
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(args.timeout, kill)
    timer.start()
    # wait4 by hand: its rusage is the child's exact CPU and peak RSS.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    busy = machine_busy() - busy0
    timer.cancel()
    sampler.stop.set()
    sampler.join()
    result = {
        "start_epoch": start_epoch,
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "peak_rss_kb": sampler.peak_rss,
        "peak_conns": sampler.peak_conns,
        "machine_busy": busy,
        "exit": child.returncode,
        "timed_out": bool(timed_out),
        "samples": sampler.samples,
    }
    with open(args.json, "w") as f:
        json.dump(result, f)
    return 0 if child.returncode == 0 and not timed_out else 1


COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


def sink_counts(path):
    """The last (sessions, quits, messages) an `smtp-sink -c` printed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 256, 0))
            tail = f.read()
    except OSError:
        return (0, 0, 0)
    found = COUNTER.findall(tail)
    return tuple(map(int, found[-1])) if found else (0, 0, 0)


QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def queue_empty(spool):
    for q in QUEUES:
        for _, _, files in os.walk(os.path.join(spool, q)):
            if files:
                return False
    return True


def postfix(args):
    master = args.master_pid
    u0, s0, _ = tree_cpu(master)
    busy0 = machine_busy()
    sampler = Sampler(master, args.sink_pid, whole_tree=True)
    sampler.start()
    t0 = time.monotonic()
    subprocess.run(args.cmd, check=True, stdout=subprocess.DEVNULL)
    released = time.monotonic() - t0
    deadline = t0 + args.timeout
    timed_out = False
    while sink_counts(args.sink_out)[2] < args.expect:
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.01)
    sunk = time.monotonic() - t0
    while not timed_out and not queue_empty(args.spool):
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    busy = machine_busy() - busy0
    u1, s1, _ = tree_cpu(master)
    sampler.stop.set()
    sampler.join()
    result = {
        "wall": wall,
        "release_wall": released,
        "sink_done_wall": sunk,
        "user": u1 - u0,
        "sys": s1 - s0,
        "peak_rss_kb": sampler.peak_rss,
        "peak_pss_kb": sampler.peak_pss,
        "peak_procs": sampler.peak_procs,
        "peak_conns": sampler.peak_conns,
        "machine_busy": busy,
        "timed_out": timed_out,
        "samples": sampler.samples,
    }
    with open(args.json, "w") as f:
        json.dump(result, f)
    return 1 if timed_out else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--json", required=True)
    r.add_argument("--sink-pid", type=int, default=0)
    r.add_argument("--stderr")
    r.add_argument("--stdout")
    r.add_argument("--timeout", type=float, default=900)
    r.add_argument("cmd", nargs="+")
    q = sub.add_parser("postfix")
    q.add_argument("--json", required=True)
    q.add_argument("--master-pid", type=int, required=True)
    q.add_argument("--spool", required=True)
    q.add_argument("--sink-out", required=True)
    q.add_argument("--sink-pid", type=int, default=0)
    q.add_argument("--expect", type=int, required=True)
    q.add_argument("--timeout", type=float, default=900)
    q.add_argument("cmd", nargs="+")
    args = p.parse_args()
    sys.exit(run(args) if args.mode == "run" else postfix(args))


if __name__ == "__main__":
    main()
