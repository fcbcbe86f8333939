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

  meter.py daemon --json OUT --receiver KIND:PATH --expect N [--sink-pid PID]
                  [--peer-pid PID]... [--stderr FILE] [--timeout S] -- CMD...
      For senders that run until stopped (postman as a daemon, which retries
      what was deferred): runs CMD until the receiver has N messages, then
      SIGTERM and wait. The wall time ends at the receiver's last first
      acceptance (shaped-sink's last_unique_at; for smtp-sink the moment its
      count was seen); CPU is the whole process's, its shutdown included.

The receiver (--receiver, or --sink-out for smtp-sink) is
`smtp-sink:FILE` (the counters `smtp-sink -c` prints) or `shaped:FILE`
(shaped-sink's stats file: unique recipients accepted, and when).
`meter.py postfix --no-drain` stops at N delivered without waiting for
the queue to empty (what is left cannot be delivered). With --peer-pid
(the receiver, the DNS server) each peer's CPU over the run is recorded.
Inside the bench's network namespace the TCP counters of /proc/net/snmp
are the senders' own: ActiveOpens (connections attempted) and
AttemptFails (refused or failed before they were established) are
recorded as their differences over the run.

Connections: with --sink-pid the sampler counts the sink's open descriptors
(a baseline taken at start subtracted): the peak number of simultaneous SMTP
connections, as the receiving side saw them.

Every mode also records machine_busy: the CPU seconds the whole machine spent
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
    around = Around(args.peer_pid)
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
    result = around.result()
    timer.cancel()
    sampler.stop.set()
    sampler.join()
    result.update({
        "start_epoch": start_epoch,
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "peak_rss_kb": sampler.peak_rss,
        "peak_conns": sampler.peak_conns,
        "exit": child.returncode,
        "timed_out": bool(timed_out),
        "samples": sampler.samples,
    })
    with open(args.json, "w") as f:
        json.dump(result, f)
    return 0 if child.returncode == 0 and not timed_out else 1


COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


class Receiver:
    """How many messages the receiver has, and since when (if it says)."""

    def __init__(self, spec):
        self.kind, _, self.path = spec.partition(":")
        if self.kind not in ("smtp-sink", "shaped"):
            raise SystemExit(f"unknown receiver {spec!r}: smtp-sink:FILE or shaped:FILE")

    def stats(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def delivered(self):
        if self.kind == "smtp-sink":
            return sink_counts(self.path)[2]
        return self.stats().get("total", {}).get("unique", 0)

    def last_at(self):
        """Unix time of the last new message, when the receiver records it."""
        return self.stats().get("last_unique_at") if self.kind == "shaped" else None


def tcp_counters():
    """ActiveOpens and AttemptFails of this network namespace."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        table = dict(zip(rows[0][1:], map(int, rows[1][1:])))
        return {"active_opens": table["ActiveOpens"], "attempt_fails": table["AttemptFails"]}
    except (OSError, IndexError, KeyError, ValueError):
        return {"active_opens": 0, "attempt_fails": 0}


def cpu_of(pid):
    s = stat(pid)
    return (s[1] + s[2]) / TICK if s else 0.0


class Around:
    """What is measured around any sender: the machine's busy time, the
    namespace's TCP counters, and the peers' CPU."""

    def __init__(self, peers):
        self.peers = peers or []
        self.busy0 = machine_busy()
        self.tcp0 = tcp_counters()
        self.cpu0 = [cpu_of(p) for p in self.peers]

    def result(self):
        tcp = tcp_counters()
        out = {"machine_busy": machine_busy() - self.busy0}
        out.update({k: tcp[k] - self.tcp0[k] for k in tcp})
        out["peer_cpu"] = [cpu_of(p) - c for p, c in zip(self.peers, self.cpu0)]
        return out


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
    receiver = Receiver(args.receiver or f"smtp-sink:{args.sink_out}")
    u0, s0, _ = tree_cpu(master)
    around = Around(args.peer_pid)
    sampler = Sampler(master, args.sink_pid, whole_tree=True)
    sampler.start()
    start_epoch = time.time()
    t0 = time.monotonic()
    subprocess.run(args.cmd, check=True, stdout=subprocess.DEVNULL)
    released = time.monotonic() - t0
    deadline = t0 + args.timeout
    timed_out = False
    while receiver.delivered() < args.expect:
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.01)
    sunk = time.monotonic() - t0
    last = receiver.last_at()
    if last is not None and not timed_out:
        sunk = last - start_epoch
    while not timed_out and not args.no_drain and not queue_empty(args.spool):
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.01)
    # Drained: the queue is empty too; --no-drain: the last delivery.
    wall = sunk if args.no_drain else time.monotonic() - t0
    u1, s1, _ = tree_cpu(master)
    sampler.stop.set()
    sampler.join()
    result = {
        "start_epoch": start_epoch,
        "wall": wall,
        "release_wall": released,
        "sink_done_wall": sunk,
        "delivered": receiver.delivered(),
        "user": u1 - u0,
        "sys": s1 - s0,
        "peak_rss_kb": sampler.peak_rss,
        "peak_pss_kb": sampler.peak_pss,
        "peak_procs": sampler.peak_procs,
        "peak_conns": sampler.peak_conns,
        "timed_out": timed_out,
        "samples": sampler.samples,
    }
    result.update(around.result())
    with open(args.json, "w") as f:
        json.dump(result, f)
    return 1 if timed_out else 0


def daemon(args):
    receiver = Receiver(args.receiver)
    err = open(args.stderr, "wb") if args.stderr else subprocess.DEVNULL
    around = Around(args.peer_pid)
    start_epoch = time.time()
    t0 = time.monotonic()
    child = subprocess.Popen(args.cmd, stdout=subprocess.DEVNULL, stderr=err)
    sampler = Sampler(child.pid, args.sink_pid)
    sampler.start()
    deadline = t0 + args.timeout
    timed_out = False
    reaped = None  # (status, rusage) once the child is gone
    while receiver.delivered() < args.expect:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            reaped = (status, usage)
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    last = receiver.last_at()
    if last is not None and not (timed_out or reaped):
        wall = last - start_epoch
    result = around.result()
    if reaped is None:
        os.kill(child.pid, signal.SIGTERM)
        # In-flight transactions get a short grace period; a black hole's
        # connection is simply dropped. A postman that hangs is killed.
        killer = threading.Timer(120, os.kill, (child.pid, signal.SIGKILL))
        killer.start()
        _, status, usage = os.wait4(child.pid, 0)
        killer.cancel()
        reaped = (status, usage)
    status, usage = reaped
    sampler.stop.set()
    sampler.join()
    result.update({
        "start_epoch": start_epoch,
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "peak_rss_kb": sampler.peak_rss,
        "peak_conns": sampler.peak_conns,
        "delivered": receiver.delivered(),
        "exit": os.waitstatus_to_exitcode(status),
        # Stopped before the receiver had everything (a crash, or an exit).
        "died": not timed_out and receiver.delivered() < args.expect,
        "timed_out": timed_out,
        "samples": sampler.samples,
    })
    with open(args.json, "w") as f:
        json.dump(result, f)
    return 0 if receiver.delivered() >= args.expect else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--json", required=True)
    r.add_argument("--sink-pid", type=int, default=0)
    r.add_argument("--peer-pid", type=int, action="append")
    r.add_argument("--stderr")
    r.add_argument("--stdout")
    r.add_argument("--timeout", type=float, default=900)
    r.add_argument("cmd", nargs="+")
    q = sub.add_parser("postfix")
    q.add_argument("--json", required=True)
    q.add_argument("--master-pid", type=int, required=True)
    q.add_argument("--spool", required=True)
    q.add_argument("--sink-out")
    q.add_argument("--receiver")
    q.add_argument("--no-drain", action="store_true")
    q.add_argument("--peer-pid", type=int, action="append")
    q.add_argument("--sink-pid", type=int, default=0)
    q.add_argument("--expect", type=int, required=True)
    q.add_argument("--timeout", type=float, default=900)
    q.add_argument("cmd", nargs="+")
    d = sub.add_parser("daemon")
    d.add_argument("--json", required=True)
    d.add_argument("--receiver", required=True)
    d.add_argument("--expect", type=int, required=True)
    d.add_argument("--peer-pid", type=int, action="append")
    d.add_argument("--sink-pid", type=int, default=0)
    d.add_argument("--stderr")
    d.add_argument("--timeout", type=float, default=1800)
    d.add_argument("cmd", nargs="+")
    args = p.parse_args()
    if args.mode == "postfix" and not (args.sink_out or args.receiver):
        p.error("postfix: --sink-out or --receiver")
    sys.exit({"run": run, "postfix": postfix, "daemon": daemon}[args.mode](args))


if __name__ == "__main__":
    main()
