#!/usr/bin/env python3
"""The benchmark workload, written the same way for every sender.

Message i goes from <a@src.test> to <u{i}@d{i % domains}.bench.test>; it is
SIZE bytes of RFC 5322 text (a few headers, then 76-character lines of body)
with CRLF line ends, identical for postman and for Postfix.

  workload.py maildir ROOT COUNT DOMAINS SIZE      fill a postman queue
  workload.py smtp HOST PORT COUNT DOMAINS SIZE    inject into an SMTP server
  workload.py maildir-plan ROOT PLAN SIZE          the same for the messages
  workload.py smtp-plan HOST PORT PLAN SIZE        of a plan.json (mixplan.py):
                                                   message i to the plan's
                                                   i-th domain
  workload.py body-size SIZE                       bytes after the headers
                                                   (for smtp-source -l)
  workload.py claim-unlink ROOT THREADS            the queue's floor: claim
                                                   every file of a filled
                                                   queue by rename, then
                                                   unlink it, no SMTP
"""
import json
import os
import smtplib
import sys
import threading
import time

SENDER = "a@src.test"


def domain(i, domains):
    return f"d{i % domains}.bench.test"


def plan_domains(path):
    """The domain of each message of a plan, in order."""
    with open(path) as f:
        return json.load(f)["order"]


def headers(i, dom):
    return (
        f"From: <{SENDER}>\r\n"
        f"To: <u{i}@{dom}>\r\n"
        f"Subject: bench {i}\r\n"
        f"Message-ID: <{i}.bench@src.test>\r\n"
        "Date: Thu, 27 Nov 2025 12:00:00 +0000\r\n"
        "\r\n"
    ).encode()


def body(length):
    """`length` bytes of 76-character CRLF-terminated lines."""
    line = b"x" * 76 + b"\r\n"
    full, rest = divmod(length, len(line))
    tail = b"y" * max(rest - 2, 0) + b"\r\n" if rest >= 2 else b""
    return line * full + tail


def message(i, dom, size):
    head = headers(i, dom)
    return head + body(max(size - len(head), 0))


def fill_maildir(root, doms, size):
    """Message i to <u{i}@doms[i]>."""
    now = int(time.time())
    made = set()
    for i, dom in enumerate(doms):
        folder = os.path.join(root, ".OTHER_SERVERS", dom)
        if dom not in made:
            os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
            made.add(dom)
        envelope = (
            f"X-Postman-From: <{SENDER}>\r\n"
            f"X-Postman-Date: {now}\r\n"
            f"X-Postman-To: <u{i}@{dom}>\r\n\r\n"
        ).encode()
        tmp = os.path.join(folder, "tmp", f"m{i}")
        with open(tmp, "wb") as f:
            f.write(envelope + message(i, dom, size))
        os.rename(tmp, os.path.join(folder, f"m{i}"))


def inject_smtp(host, port, doms, size, connections=4):
    """Sends the workload over a few parallel connections (Postfix's smtpd
    is a process per connection, so parallel sessions fill it faster)."""
    errors = []

    def worker(k):
        try:
            s = smtplib.SMTP(host, port, timeout=120)
            for i in range(k, len(doms), connections):
                rcpt = f"u{i}@{doms[i]}"
                s.sendmail(SENDER, [rcpt], message(i, doms[i], size))
            s.quit()
        except Exception as e:  # reported below, the caller fails
            errors.append(repr(e))

    run_threads(worker, connections)
    if errors:
        sys.exit("injection failed: " + "; ".join(errors))


def run_threads(worker, n):
    """Runs `worker(k)` for k in 0..n on n threads and waits for them."""
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def claim_unlink(root, threads):
    """What any sender that claims a queue file by rename and removes it
    once delivered must ask of the filesystem, and nothing else: the rename
    into `<domain>/.active/<owner>/` and the unlink, as postman does, with
    `threads` threads (the system calls run in parallel: CPython lets go of
    its lock around them). Prints how many files it took."""
    jobs = []
    top = os.path.join(root, ".OTHER_SERVERS")
    for dom in sorted(os.listdir(top)):
        folder = os.path.join(top, dom)
        active = os.path.join(folder, ".active", "floor")
        os.makedirs(active, exist_ok=True)
        for name in os.listdir(folder):
            if not name.startswith(".") and name != "tmp":
                jobs.append((os.path.join(folder, name), os.path.join(active, name)))
    errors = []

    def worker(k):
        try:
            for src, dst in jobs[k::threads]:
                os.rename(src, dst)
                os.unlink(dst)
        except OSError as e:  # reported below, the caller fails
            errors.append(repr(e))

    run_threads(worker, threads)
    if errors:
        sys.exit("claim-unlink failed: " + "; ".join(errors))
    print(len(jobs))


def main(argv):
    cmd = argv[1]
    if cmd == "maildir":
        count, domains = int(argv[3]), int(argv[4])
        fill_maildir(argv[2], [domain(i, domains) for i in range(count)], int(argv[5]))
    elif cmd == "smtp":
        count, domains = int(argv[4]), int(argv[5])
        inject_smtp(argv[2], int(argv[3]), [domain(i, domains) for i in range(count)], int(argv[6]))
    elif cmd == "maildir-plan":
        fill_maildir(argv[2], plan_domains(argv[3]), int(argv[4]))
    elif cmd == "smtp-plan":
        inject_smtp(argv[2], int(argv[3]), plan_domains(argv[4]), int(argv[5]), connections=8)
    elif cmd == "claim-unlink":
        claim_unlink(argv[2], int(argv[3]))
    elif cmd == "body-size":
        size = int(argv[2])
        print(max(size - len(headers(0, domain(0, 1))), 0))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
