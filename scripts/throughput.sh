#!/usr/bin/env bash
# Deliveries per second of `postman run --once` over a pre-filled queue, on
# loopback: Postfix's smtp-sink receives, dnslib serves the MX records.
# Prints one line per run and the median. (The full side-by-side comparison
# with Postfix is scripts/bench.sh; this is the quick number.)
#
#   scripts/throughput.sh [MESSAGES] [DOMAINS] [RUNS]     # defaults 10000 1 3
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-10000}
domains=${2:-1}
runs=${3:-3}

command -v smtp-sink >/dev/null || {
  echo "== installing postfix for smtp-sink"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
}
python3 -c 'import dnslib' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check dnslib

work=$(mktemp -d -t postman-throughput.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dns_port=$(free_port); smtp_port=$(free_port)

python3 - "$work/zone" "$domains" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("mx.bench.test. 300 IN A 127.0.0.1\n")
    for i in range(n):
        f.write(f"d{i}.bench.test. 300 IN MX 10 mx.bench.test.\n")
PY
python3 -m dnslib.zoneresolver --zone "$work/zone" --address 127.0.0.1 --port "$dns_port" --tcp \
  --log=-request,-reply >/dev/null 2>&1 &
pids+=($!)
# -c counts, 1000 is the listen backlog; PIPELINING is advertised by default.
smtp-sink -u nobody 127.0.0.1:"$smtp_port" 1000 >/dev/null 2>&1 &
pids+=($!)

cargo build --release -q -p postman-actors
bin=${CARGO_TARGET_DIR:-target}/release/postman

fill() {
  python3 - "$work/maildir" "$messages" "$domains" <<'PY'
import os, sys, time
root, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = ("Subject: throughput\r\nFrom: a@src.test\r\n\r\n" + ("x" * 76 + "\r\n") * 26).encode()
now = int(time.time())
for i in range(n):
    dom = f"d{i % d}.bench.test"
    folder = os.path.join(root, ".OTHER_SERVERS", dom)
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    head = f"X-Postman-From: <a@src.test>\r\nX-Postman-Date: {now}\r\nX-Postman-To: <u{i}@{dom}>\r\n\r\n".encode()
    tmp = os.path.join(folder, "tmp", f"m{i}")
    with open(tmp, "wb") as f:
        f.write(head + body)
    os.rename(tmp, os.path.join(folder, f"m{i}"))
PY
}

cat > "$work/postman.toml" <<TOML
[application]
hostname = "bench.postman.test"
server_port = $smtp_port
threads = 2
[application.maildir]
path = "$work/maildir"
[dns]
nameservers = ["127.0.0.1:$dns_port"]
[log]
format = "json"
metrics_interval = 0
TOML

rates=()
for run in $(seq "$runs"); do
  rm -rf "$work/maildir"; mkdir -p "$work/maildir"; fill; sync # written out, as a real queue would be
  start=$(date +%s.%N)
  "$bin" run --once --config "$work/postman.toml" 2>"$work/log.json"
  end=$(date +%s.%N)
  sent=$(grep -c '"status":"sent"' "$work/log.json" || true)
  # Queued (<domain>/<name>) or still claimed (<domain>/.active/<owner>/…).
  # (The work directory is itself under /tmp: no -path '*/tmp/*' here.)
  left=$( (find "$work/maildir/.OTHER_SERVERS" -mindepth 2 -maxdepth 2 -type f -not -name '.*'
    find "$work/maildir/.OTHER_SERVERS" -mindepth 4 -maxdepth 4 -path '*/.active/*' -type f) | wc -l)
  rate=$(python3 -c "print(f'{$sent/($end-$start):.0f}')")
  echo "run $run: $sent sent, $left left in the queue, $(python3 -c "print(f'{$end-$start:.2f}')") s, $rate messages/s"
  rates+=("$rate")
done
printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print "median: " a[int((NR+1)/2)] " messages/s over " NR " runs"}'
