#!/usr/bin/env python3
"""The `mix` workload of scripts/bench.sh: the internet in small.

  mixplan.py OUT_DIR COUNT DOMAINS RATE GREY_DELAY_MS [SEED]

writes into OUT_DIR:

  plan.json   the domain of each message in order ("order"), the number of
              deliverable messages, and what each domain is
  zone        the DNS records (bench-dns): every domain's MX and each MX
              host's address
  sink.json   the shaped-sink configuration of every listening site
  plan.md     the plan in words and numbers, for the results

COUNT messages over DOMAINS domains, the volume of the k-th largest domain
proportional to 1/k (Zipf, s = 1; every domain at least one message):

* three provider sites (`mx.provider-{a,b,c}.test`, one address each) hold
  60 % of the messages: the three largest domains (as gmail.com, outlook.com
  and yahoo.com are) and, in a random order, as many of the others as it
  takes, each to the provider with the least volume so far. Each provider
  serves 20 connections at once (`421 4.7.0 Too many concurrent SMTP
  connections` past that) and RATE messages a second over the whole site
  (a token bucket holding one second's worth); past it, one throttles at
  the final dot with Gmail's `421 4.7.28`, one at MAIL with Yahoo's `421
  4.7.0 [TSS04]`, one at MAIL with Microsoft's `450 4.7.650`;
* 5 % of the domains (from the others, at random) cannot be delivered:
  half are black-holed (the connection is accepted and never greeted), half
  refuse connections (nothing listens); of each half, half share one MX
  host (a hosting company that went dark) and half have their own;
* 10 % of the domains (from the rest) greylist: the first attempt of each
  recipient is answered `450 4.2.0` at RCPT, one GREY_DELAY_MS later or
  more is accepted;
* every other domain is a site of its own (`mx.<domain>`), unlimited.

Addresses: providers 127.1.0.x, tail sites 127.2.x.y, black holes 127.3.x.y,
refusing hosts 127.4.x.y, all on port 25 of the bench's network namespace.
The same SEED gives the same plan.
"""
import json
import os
import random
import sys

PROVIDERS = [
    ("provider-a", "mx.provider-a.test", "data-end",
     "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail "
     "originating from your IP address. To protect our users from spam, mail sent from "
     "your IP address has been temporarily rate limited."),
    ("provider-b", "mx.provider-b.test", "mail",
     "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected "
     "volume or user complaints - 4.16.55.1"),
    ("provider-c", "mx.provider-c.test", "mail",
     "450 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to "
     "IP reputation."),
]
PROVIDER_SHARE = 0.60
BAD_SHARE = 0.05
GREY_SHARE = 0.10
CAP = 20
TTL = 300


def zipf_counts(count, domains):
    """Messages per domain, largest first, summing to count, each >= 1."""
    weights = [1.0 / k for k in range(1, domains + 1)]
    total = sum(weights)
    counts = [max(1, int(count * w / total)) for w in weights]
    # Hand out (or take back) the rounding difference from the top.
    diff = count - sum(counts)
    k = 0
    while diff != 0:
        step = 1 if diff > 0 else -1
        if counts[k % domains] + step >= 1:
            counts[k % domains] += step
            diff -= step
        k += 1
    return counts


def addr(prefix, n):
    """The n-th address (from 0) under 127.<prefix>.0.0/16, skipping .0."""
    return f"127.{prefix}.{n // 250}.{n % 250 + 1}"


def plan(count, domains, rate, grey_delay_ms, seed):
    rng = random.Random(seed)
    counts = zipf_counts(count, domains)
    names = [f"d{k}.mix.test" for k in range(domains)]
    kind = {}
    volume = {p[0]: 0 for p in PROVIDERS}
    for k, p in enumerate(PROVIDERS):
        kind[names[k]] = p[0]
        volume[p[0]] += counts[k]
    rest = list(range(len(PROVIDERS), domains))
    rng.shuffle(rest)
    others = []
    for k in rest:
        if sum(volume.values()) < PROVIDER_SHARE * count:
            p = min(volume, key=volume.get)
            kind[names[k]] = p
            volume[p] += counts[k]
        else:
            others.append(k)
    rng.shuffle(others)
    n_bad = round(BAD_SHARE * domains)
    n_grey = round(GREY_SHARE * domains)
    bad, grey, tail = others[:n_bad], others[n_bad:n_bad + n_grey], others[n_bad + n_grey:]
    holes, downs = bad[: n_bad // 2], bad[n_bad // 2:]
    for group, ks in (("hole", holes), ("down", downs)):
        for j, k in enumerate(ks):
            kind[names[k]] = f"{group}-shared" if j < len(ks) // 2 else f"{group}-own"
    for k in grey:
        kind[names[k]] = "grey"
    for k in tail:
        kind[names[k]] = "tail"

    zone, sites = [], []
    for name, host, at, reply in PROVIDERS:
        ip = addr(1, len(sites))
        zone.append(f"{host}. {TTL} IN A {ip}")
        sites.append({
            "name": name, "group": name, "addrs": [ip], "mode": "serve",
            "max_connections": CAP,
            "rate": {"per_second": rate, "burst": rate, "at": at, "reply": reply},
        })
    shared = {"hole-shared": ("mx.hole.test", addr(3, 0)), "down-shared": ("mx.down.test", addr(4, 0))}
    for host, ip in shared.values():
        zone.append(f"{host}. {TTL} IN A {ip}")
    sites.append({"name": "hole-shared", "group": "hole-shared", "addrs": [shared["hole-shared"][1]],
                  "mode": "blackhole"})
    hosts = {p[0]: p[1] for p in PROVIDERS}
    numbered = {"tail": 0, "grey": 0, "hole-own": 0, "down-own": 0}
    for k, name in enumerate(names):
        what = kind[name]
        if what in hosts:
            mx = hosts[what]
        elif what in shared:
            mx = shared[what][0]
        else:
            mx = f"mx.{name}"
            n = numbered[what]
            numbered[what] += 1
            ip = {"tail": lambda: addr(2, n), "grey": lambda: addr(2, 10000 + n),
                  "hole-own": lambda: addr(3, 250 + n), "down-own": lambda: addr(4, 250 + n)}[what]()
            zone.append(f"{mx}. {TTL} IN A {ip}")
            if what != "down-own":
                site = {"name": name, "group": what, "addrs": [ip],
                        "mode": "blackhole" if what == "hole-own" else "serve"}
                if what == "grey":
                    site["greylist"] = {"delay_ms": grey_delay_ms,
                                        "reply": "450 4.2.0 Greylisted, please try again later"}
                sites.append(site)
        zone.append(f"{name}. {TTL} IN MX 10 {mx}.")

    order = [names[k] for k in range(domains) for _ in range(counts[k])]
    rng.shuffle(order)
    groups = {}
    for k, name in enumerate(names):
        g = groups.setdefault(kind[name], {"domains": 0, "messages": 0})
        g["domains"] += 1
        g["messages"] += counts[k]
    undeliverable = sum(g["messages"] for what, g in groups.items() if what.startswith(("hole", "down")))
    return {
        "count": count,
        "domains": domains,
        "rate": rate,
        "grey_delay_ms": grey_delay_ms,
        "seed": seed,
        "deliverable": count - undeliverable,
        "largest": counts[0],
        "groups": groups,
        "kind": kind,
        "order": order,
    }, zone, {"port": 25, "hostname": "shaped-sink.test", "sites": sites}


def describe(p):
    lines = [
        f"{p['count']:,} messages over {p['domains']:,} domains (Zipf, s = 1: the largest domain "
        f"has {p['largest']:,}), seed {p['seed']}; "
        f"providers: {CAP} connections at once and {p['rate']:g} messages/s each; greylisting "
        f"accepts a retry after {p['grey_delay_ms'] / 1000:g} s; "
        f"{p['deliverable']:,} messages deliverable.",
        "",
        "| group | domains | messages | what the receiver does |",
        "|---|---:|---:|---|",
    ]
    what = {
        "provider-a": "one site: 20 connections, rate → `421 4.7.28` at the final dot",
        "provider-b": "one site: 20 connections, rate → `421 4.7.0 [TSS04]` at MAIL",
        "provider-c": "one site: 20 connections, rate → `450 4.7.650` at MAIL",
        "tail": "a site each, unlimited",
        "grey": "a site each, `450 4.2.0` to a recipient's first attempt",
        "hole-shared": "one shared MX host that accepts and never greets",
        "hole-own": "a host each that accepts and never greets",
        "down-shared": "one shared MX host that refuses connections",
        "down-own": "a host each that refuses connections",
    }
    for g in sorted(p["groups"]):
        v = p["groups"][g]
        lines.append(f"| {g} | {v['domains']:,} | {v['messages']:,} | {what.get(g, '')} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) not in (6, 7):
        sys.exit(__doc__)
    out, count, domains, rate, grey = argv[1], int(argv[2]), int(argv[3]), float(argv[4]), int(argv[5])
    seed = int(argv[6]) if len(argv) == 7 else 17
    p, zone, sink = plan(count, domains, rate, grey, seed)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(p, f)
    with open(os.path.join(out, "zone"), "w") as f:
        f.write("\n".join(zone) + "\n")
    with open(os.path.join(out, "sink.json"), "w") as f:
        json.dump(sink, f, indent=1)
    with open(os.path.join(out, "plan.md"), "w") as f:
        f.write(describe(p))
    print(p["deliverable"])


if __name__ == "__main__":
    main(sys.argv)
