#!/usr/bin/env bash
# A local demo delivery, on loopback only, with no internet: a DNS server
# (dnslib) publishes MX records for three demo domains, a real SMTP server
# (aiosmtpd) receives, and postman delivers a small queue to it with
# `run --once`, then the delivery log and what the server received are shown.
#
#   scripts/demo.sh            # uses a release build
#   PROFILE=dev scripts/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
work=$(mktemp -d -t postman-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

if ! python3 -c 'import aiosmtpd, dnslib' 2>/dev/null; then
  echo "== installing the demo peers (aiosmtpd, dnslib) with pip"
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd dnslib
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dns_port=$(free_port)
smtp_port=$(free_port)

# Three domains: two with MX records (one of them with a dead first MX, so
# postman falls back to the second), one with a null MX (RFC 7505).
cat > "$work/zone" <<ZONE
alpha.demo.          60 IN MX 10 mx.alpha.demo.
mx.alpha.demo.       60 IN A  127.0.0.1
beta.demo.           60 IN MX 10 dead.beta.demo.
beta.demo.           60 IN MX 20 mx.beta.demo.
dead.beta.demo.      60 IN A  127.0.0.9
mx.beta.demo.        60 IN A  127.0.0.1
nomail.demo.         60 IN MX 0 .
ZONE
python3 -m dnslib.zoneresolver --zone "$work/zone" --address 127.0.0.1 --port "$dns_port" --tcp \
  --log=-request,-reply >"$work/dns.log" 2>&1 &
pids+=($!)

mkdir -p "$work/received"
# The sink exits when its standard input closes: hold a fifo open for it
# until this script ends.
mkfifo "$work/hold"
python3 integration/peers/aiosmtpd_sink.py --host 127.0.0.1 --port "$smtp_port" --dir "$work/received" \
  <"$work/hold" >"$work/smtp.log" 2>&1 &
pids+=($!)
exec 3>"$work/hold"

# The queue: what a receiving server would have written.
maildir="$work/maildir"
queue_file() { # domain name from to...
  local domain=$1 name=$2 from=$3; shift 3
  local dir="$maildir/.OTHER_SERVERS/$domain"
  mkdir -p "$dir/tmp"
  {
    printf 'X-Postman-From: <%s>\n' "$from"
    printf 'X-Postman-Date: %s\n' "$(date +%s)"
    printf 'X-Postman-To: %s\n' "$(printf '<%s>, ' "$@" | sed 's/, $//')"
    printf '\n'
    printf 'From: %s\nTo: %s\nSubject: postman demo %s\nMessage-ID: <%s@demo>\n\n' "$from" "$1" "$name" "$name"
    printf 'Hello from the postman demo.\n.A line that starts with a dot survives dot-stuffing.\n'
  } > "$dir/tmp/$name"
  mv "$dir/tmp/$name" "$dir/$name"
}
queue_file alpha.demo msg1 alice@local.demo bob@alpha.demo carol@alpha.demo
queue_file alpha.demo msg2 alice@local.demo dave@alpha.demo
queue_file beta.demo  msg3 alice@local.demo erin@beta.demo
queue_file nomail.demo msg4 alice@local.demo frank@nomail.demo
mkdir -p "$maildir/.OTHER_SERVERS/alpha.demo"
printf 'this is not a queue file\n' > "$maildir/.OTHER_SERVERS/alpha.demo/broken"

cat > "$work/postman.toml" <<TOML
[application]
hostname = "demo.postman.test"
# Bounces to senders in these domains go to their Maildir under the root.
local_domains = ["local.demo"]
server_port = $smtp_port
threads = 2
[application.maildir]
path = "$maildir"
[dns]
nameservers = ["127.0.0.1:$dns_port"]
[smtp.timeouts]
connect = 2
[log]
format = "term"
TOML

echo "== building postman ($profile)"
if [ "$profile" = release ]; then cargo build --release -q -p postman-actors; bin=${CARGO_TARGET_DIR:-target}/release/postman
else cargo build -q -p postman-actors; bin=${CARGO_TARGET_DIR:-target}/debug/postman; fi

for _ in $(seq 50); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$smtp_port),1)" 2>/dev/null && break
  sleep 0.1
done

echo "== postman run --once"
"$bin" run --once --config "$work/postman.toml"

echo
echo "== what the SMTP server received"
python3 - "$work/received" <<'PY'
import json, os, sys, base64
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    m = json.load(open(os.path.join(d, name)))
    body = base64.b64decode(m["data_b64"]).decode(errors="replace")
    subject = next((l for l in body.splitlines() if l.startswith("Subject:")), "")
    print(f"  from <{m['mail_from']}> to {', '.join('<%s>' % r for r in m['rcpt_tos'])}  {subject}")
PY
echo
echo "== what is left in the queue"
(cd "$maildir/.OTHER_SERVERS" && find . -type f | sort | sed 's/^/  /')
echo
echo "== bounces delivered to local senders (the null MX domain's message)"
for f in "$maildir"/*/new/*; do
  [ -e "$f" ] || continue
  echo "  ${f#"$maildir"/}"
  grep -E '^(Subject|Final-Recipient|Action|Status|Diagnostic-Code):' "$f" | sed 's/^/    /'
done
