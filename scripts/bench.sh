#!/usr/bin/env bash
# postman against Postfix on the same machine, same workload, same receiver
# (issue 6). Everything runs on loopback (127.0.0.1 only): Postfix's
# smtp-sink receives every message, a dnslib server gives the bench domains
# their MX records, and three senders are measured side by side:
#
#   postman     `postman run --once` over a pre-filled queue;
#   postfix     a private Postfix instance (own config and queue directories
#               under a temporary directory, smtpd on a loopback port only to
#               inject), the messages held in its queue by a header_checks
#               HOLD, then released at once (postsuper -H ALL; postqueue -f)
#               and timed until its queue is empty; transport_maps send every
#               bench domain to smtp:[127.0.0.1]:<sink port>;
#   smtp-source Postfix's load generator straight into the sink, with -d
#               (messages share connections) and without (one per
#               connection): the upper bound of this SMTP exchange here.
#
# Usage:
#   scripts/bench.sh [compare|scale|profile|all|sites|mix]
#     compare  10,000 x 2 KB to 1 domain, to 50 domains, 1,000 x 100 KB
#     scale    1,000 domains with up to 900 connections; start-up over a
#              queue of 100,000 files
#     profile  perf record, strace -c and valgrind DHAT of postman on the
#              10,000 x 2 KB 1-domain workload
#     sites    10,000 x 2 KB to 50 and to 1,000 domains whose MX is one
#              host serving 20 connections at once (refusing more with 421,
#              and smtp-sink -m 20, which queues them): postman, Postfix
#              routed by MX, smtp-source -d -s 20 (issue 17)
#     mix      100,000 messages over 2,000 domains: Zipf volume, three
#              throttling providers, greylisting, black holes and down
#              hosts; time until all deliverable mail is delivered
#     sites and mix run in a private network and mount namespace with their
#     own DNS server and receiver (scripts/bench/sites.sh); `all` does not
#     include them.
# Environment:
#   RUNS=3      runs per sender and workload (the median is reported)
#   QUICK=1     small workloads, RUNS=1 by default, for smoke tests; results
#               go to stdout only unless RESULTS is set
#   RESULTS=F   the Markdown file to update (default bench/results.md)
#   KEEP=1      keep the temporary directory (logs, queues, raw JSON)
#   WORKLOADS="2k-1 2k-50 100k-1"  the compare workloads to run (default
#               all three; with fewer, write to another RESULTS file, since
#               the compare section is replaced whole)
#   POSTMAN_BIN=F measure this binary instead of building
#               target/release/postman
#   MAX_LOAD=L  before each mode, wait up to WAIT_MINUTES (5) for a 1-minute
#               load average below L (the load is recorded either way)
#   SITES_RECEIVERS="refuse backlog"  the sites receivers to run (QUICK:
#               refuse only)
#   SENDERS="postman postfix source-d"  the senders sites and mix measure
#               (fewer while working on one; write to another RESULTS file)
#   MIX_RUNS=1  runs of mix per sender; MIX_COUNT, MIX_DOMAINS, MIX_RATE
#               (each provider's messages/s) change its plan
#   RETRY_MIN=10 RETRY_MAX=60  both senders' retry delays in sites and mix
#   RUN_TIMEOUT=1800  seconds one sites or mix run may take
#
# The generated sections of the results file sit between
# <!-- BEGIN name --> and <!-- END name --> markers; anything else in the
# file (the written profile findings) is kept. Runs as root (Postfix needs
# it); installs Postfix (apt, "No configuration") and dnslib (pip) if
# missing. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
command_line="scripts/bench.sh $*"
mode=${1:-compare}
case $mode in
  compare | scale | profile | all | sites | mix) ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
# The settings the caller gave, for the results' command line.
user_env=
for v in WORKLOADS SENDERS SITES_RECEIVERS MIX_RUNS MIX_COUNT MIX_DOMAINS MIX_RATE RETRY_MIN RETRY_MAX RUN_TIMEOUT; do
  [ -n "${!v:-}" ] && user_env+="$v=\"${!v}\" "
done
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then RUNS=${RUNS:-1}; else RUNS=${RUNS:-3}; fi
results=${RESULTS:-}
[ -z "$results" ] && [ "$QUICK" != 1 ] && results=bench/results.md
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (a private Postfix instance needs it)" >&2; exit 1; }

helpers=$repo/scripts/bench
meter() { python3 "$helpers/meter.py" "$@"; }
report() { python3 "$helpers/report.py" "$@"; }
log() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- dependencies -------------------------------------------------------------
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}
if ! command -v smtp-sink >/dev/null || ! command -v postfix >/dev/null; then
  log "installing postfix (No configuration) for smtp-sink, smtp-source and the peer"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt_install postfix
fi
if ! python3 -c 'import dnslib' 2>/dev/null; then
  log "installing dnslib"
  pip() { python3 -m pip install -q --disable-pip-version-check "$@" dnslib; }
  pip 2>/dev/null || pip --break-system-packages 2>/dev/null || apt_install python3-dnslib
fi
if [ "$mode" = profile ] || [ "$mode" = all ]; then
  command -v perf >/dev/null || apt_install linux-perf || log "no perf: the profile will lack it"
  command -v strace >/dev/null || apt_install strace || true
  command -v valgrind >/dev/null || apt_install valgrind || true
fi

if [ -z "${POSTMAN_BIN:-}" ]; then
  log "building postman (release)"
  cargo build --release -q -p postman-actors
  postman_desc="postman built from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src actors 2>/dev/null || echo ' with uncommitted changes in src/ or actors/')"
else
  postman_desc=${BENCH_POSTMAN_DESC:-"postman binary $POSTMAN_BIN ($(date -u -r "$POSTMAN_BIN" '+%Y-%m-%d %H:%M UTC'); HEAD is $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"}
fi
target_dir=${CARGO_TARGET_DIR:-target}
if [ "$mode" = sites ] || [ "$mode" = mix ]; then
  if [ -z "${PEERS_DIR:-}" ]; then
    log "building shaped-sink and bench-dns (release)"
    cargo build --release -q -p postman-integration --bin shaped-sink --bin bench-dns
    PEERS_DIR=$(cd "$target_dir/release" && pwd)
  fi
  # Into a network namespace of our own: loopback only, port 53 and 25 are
  # ours, and a resolv.conf of our own without touching the machine's.
  if [ "${BENCH_NETNS:-0}" != 1 ]; then
    command -v unshare >/dev/null || { echo "bench.sh: $mode needs unshare (util-linux)" >&2; exit 1; }
    exec unshare --net --mount -- env BENCH_NETNS=1 PEERS_DIR="$PEERS_DIR" \
      POSTMAN_BIN="${POSTMAN_BIN:-$(cd "$target_dir/release" && pwd)/postman}" BENCH_POSTMAN_DESC="$postman_desc" \
      "$repo/scripts/$(basename "$0")" "$@"
  fi
fi

# ---- the temporary world ------------------------------------------------------
work=$(mktemp -d -t postman-bench.XXXXXX)
chmod 755 "$work" # Postfix's daemons run as the postfix user and must reach their queue
# A private copy: other builds may replace target/release/postman meanwhile.
cp "${POSTMAN_BIN:-$target_dir/release/postman}" "$work/postman"
bin=$work/postman
if [ "${BENCH_NETNS:-0}" = 1 ]; then
  cp "$PEERS_DIR/shaped-sink" "$PEERS_DIR/bench-dns" "$work/"
fi
pf_etc=$work/postfix/etc
pf_spool=$work/postfix/spool
pids=()
sink_pid=

postfix_stop() {
  [ -f "$pf_etc/main.cf" ] || return 0
  local master
  master=$(cat "$pf_spool/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
  postfix -c "$pf_etc" stop >/dev/null 2>&1 || true
  if [ -n "$master" ]; then
    for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$master" 2>/dev/null || true
  fi
}
cleanup() {
  set +e
  postfix_stop
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
  # sites.sh's receiver and DNS server (their namespace lives while they do)
  [ -n "${rcv_pid:-}" ] && kill "$rcv_pid" 2>/dev/null
  [ -n "${dns_pid:-}" ] && kill "$dns_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dns_port=$(free_port)
sink_port=$(free_port)
smtpd_port=$(free_port)

# The zone: 1,000 domains cover every mode.
python3 - "$work/zone" 1000 <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("mx.bench.test. 300 IN A 127.0.0.1\n")
    for i in range(n):
        f.write(f"d{i}.bench.test. 300 IN MX 10 mx.bench.test.\n")
PY
python3 -m dnslib.zoneresolver --zone "$work/zone" --address 127.0.0.1 --port "$dns_port" --tcp \
  --log=-request,-reply,-truncated >/dev/null 2>&1 &
pids+=($!)

# A fresh sink for every measurement, so its counters are the run's own.
# -c prints "sess=N quit=N mesg=N" after each session and message; PIPELINING
# is advertised by default; -m 2000 lifts its default cap of 256 sessions at
# once (beyond it, connections wait unaccepted); 1024 is the listen backlog. SINK_ARGS adds e.g.
# a reply delay.
sink_fds=0
sink_start() {
  : >"$work/sink.out"
  smtp-sink -c -m 2000 -u nobody ${SINK_ARGS:-} 127.0.0.1:"$sink_port" 1024 >"$work/sink.out" 2>"$work/sink.err" &
  sink_pid=$!
  local hexport
  hexport=$(printf ':%04X ' "$sink_port")
  for _ in $(seq 100); do
    awk '$4 == "0A"' /proc/net/tcp | grep -q "$hexport" && break
    sleep 0.05
  done
  sink_fds=$(ls "/proc/$sink_pid/fd" | wc -l)
}
# Waits until the sink holds no connection, stops it, and sets
# sink_sessions and sink_messages from its last counters.
sink_sessions=0
sink_messages=0
sink_finish() {
  for _ in $(seq 200); do
    [ "$(ls "/proc/$sink_pid/fd" 2>/dev/null | wc -l)" -le "$sink_fds" ] && break
    sleep 0.05
  done
  sleep 0.1
  local counts
  counts=$(tr '\r' '\n' <"$work/sink.out" | grep 'sess=' | tail -1)
  kill "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
  sink_pid=
  sink_sessions=0
  sink_messages=0
  if [[ $counts =~ sess=([0-9]+)\ quit=[0-9]+\ mesg=([0-9]+) ]]; then
    sink_sessions=${BASH_REMATCH[1]}
    sink_messages=${BASH_REMATCH[2]}
  fi
}

machine() {
  echo "* Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "* Postfix $(postconf -d -h mail_version), $(rustc --version 2>/dev/null || echo rustc), $postman_desc"
  echo "* Command: \`$([ "$QUICK" = 1 ] && echo "QUICK=1 ")$([ "$mode" = mix ] || echo "RUNS=$RUNS ")$user_env$command_line\`, $(date -u '+%Y-%m-%d %H:%M UTC')"
}

# ---- postman ------------------------------------------------------------------
# postman_config FILE MAX_CONNECTIONS PER_DOMAIN
postman_config() {
  cat >"$1" <<TOML
[application]
hostname = "bench.postman.test"
server_port = $sink_port
threads = 2
[application.maildir]
path = "$work/maildir"
[dns]
nameservers = ["127.0.0.1:$dns_port"]
[delivery]
max_connections = $2
max_connections_per_domain = $3
max_messages_per_connection = 100
[log]
format = "json"
metrics_interval = 0
TOML
}

# postman_run OUT.json COUNT DOMAINS SIZE CONFIG
postman_run() {
  local out=$1 count=$2 domains=$3 size=$4 config=$5
  rm -rf "$work/maildir"
  mkdir -p "$work/maildir"
  python3 "$helpers/workload.py" maildir "$work/maildir" "$count" "$domains" "$size"
  sync
  sink_start
  meter run --json "$out" --sink-pid "$sink_pid" --stderr "$work/postman.log" --timeout 1800 \
    -- "$bin" run --once --config "$config" || log "postman run failed or timed out (see $out)"
  local left facts start
  sink_finish
  # Queued (<domain>/<name>) or still claimed (<domain>/.active/<owner>/…).
  # (The work directory is itself under /tmp: no -path '*/tmp/*' here.)
  left=$( (find "$work/maildir/.OTHER_SERVERS" -mindepth 2 -maxdepth 2 -type f -not -name '.*'
    find "$work/maildir/.OTHER_SERVERS" -mindepth 4 -maxdepth 4 -path '*/.active/*' -type f) | wc -l)
  start=$(python3 -c "import json; print(json.load(open('$out'))['start_epoch'])")
  facts=$(report postman-log "$work/postman.log" "$start")
  cp "$work/postman.log" "${out%.json}.log"
  python3 - "$out" "$facts" "$sink_sessions" "$sink_messages" "$left" <<'PY'
import json, sys
path, facts, sessions, messages, left = sys.argv[1:]
d = json.load(open(path)); d.update(json.loads(facts))
d.update(sessions=int(sessions), sink_messages=int(messages), left=int(left))
json.dump(d, open(path, "w"))
PY
}

# floor_run OUT.json COUNT DOMAINS SIZE: the same queue as postman_run, only
# claimed by rename and unlinked (workload.py claim-unlink, as many threads
# as postman's disk threads): the filesystem's share of any queue's work.
floor_run() {
  local out=$1 count=$2 domains=$3 size=$4
  rm -rf "$work/maildir"
  mkdir -p "$work/maildir"
  python3 "$helpers/workload.py" maildir "$work/maildir" "$count" "$domains" "$size"
  sync
  meter run --json "$out" --stdout "$work/floor.out" --timeout 1800 \
    -- python3 "$helpers/workload.py" claim-unlink "$work/maildir" 6 || log "floor run failed (see $out)"
  report annotate "$out" sent="$(cat "$work/floor.out" 2>/dev/null || echo 0)" peak_conns=null
}

# ---- Postfix ------------------------------------------------------------------
postfix_setup() {
  mkdir -p "$pf_etc" "$pf_spool" "$work/postfix/data"
  chown postfix: "$work/postfix/data"
  cat >"$pf_etc/main.cf" <<EOF
# A private instance for the benchmark: its own directories, loopback only.
compatibility_level = 3.6
queue_directory = $pf_spool
data_directory = $work/postfix/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.postfix.test
mydomain = postfix.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
# Every bench domain to the sink, nothing anywhere else.
transport_maps = regexp:$pf_etc/transport
default_transport = discard:no delivery outside the benchmark
relay_transport = discard:no delivery outside the benchmark
smtp_dns_support_level = disabled
# Injected messages wait in the hold queue until released.
header_checks = regexp:$pf_etc/hold
maillog_file = $work/postfix/maillog
maillog_file_prefixes = $work/postfix
smtputf8_enable = no
biff = no
# Delivery tuning: Postfix's defaults (default_process_limit = 100,
# default_destination_concurrency_limit = 20 per nexthop, connection cache
# on demand, no TLS).
EOF
  echo "/\\.bench\\.test\$/ smtp:[127.0.0.1]:$sink_port" >"$pf_etc/transport"
  echo "/^Subject: bench / HOLD" >"$pf_etc/hold"
  # Debian's master.cf less chroot (the instance's queue has no chroot
  # files), less local delivery, smtpd on a loopback port only.
  cat >"$pf_etc/master.cf" <<EOF
127.0.0.1:$smtpd_port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
  postfix -c "$pf_etc" check >/dev/null 2>&1 || true
}

postfix_start() {
  postfix -c "$pf_etc" start >/dev/null 2>&1 || {
    echo "bench.sh: the private Postfix did not start; see $work/postfix/maillog" >&2
    KEEP=1
    exit 1
  }
  local master
  for _ in $(seq 100); do
    master=$(cat "$pf_spool/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
    [ -n "$master" ] && pgrep -P "$master" -x qmgr >/dev/null && break
    sleep 0.1
  done
  sleep 0.5
}

held() { find "$pf_spool/hold" -type f | wc -l; }
in_queue() { find "$pf_spool"/{maildrop,incoming,active,deferred} -type f | wc -l; }

# postfix_run OUT.json COUNT DOMAINS SIZE
postfix_run() {
  local out=$1 count=$2 domains=$3 size=$4
  postfix_start
  python3 "$helpers/workload.py" smtp 127.0.0.1 "$smtpd_port" "$count" "$domains" "$size"
  for _ in $(seq 600); do
    [ "$(held)" -ge "$count" ] && [ "$(in_queue)" = 0 ] && break
    sleep 0.1
  done
  [ "$(held)" -ge "$count" ] || { echo "bench.sh: only $(held) of $count messages held" >&2; exit 1; }
  # Restart, so only the delivery side runs (no idle smtpd or cleanup
  # processes from the injection) and qmgr starts from its own queue scan.
  postfix_stop
  : >"$work/postfix/maillog"
  postfix_start
  sink_start
  local master
  master=$(tr -d ' ' <"$pf_spool/pid/master.pid")
  meter postfix --json "$out" --master-pid "$master" --spool "$pf_spool" --sink-out "$work/sink.out" \
    --sink-pid "$sink_pid" --expect "$count" --timeout 1800 \
    -- sh -c "postsuper -c '$pf_etc' -H ALL >/dev/null 2>&1 && postqueue -c '$pf_etc' -f" ||
    log "Postfix run timed out (see $out)"
  postfix_stop # closes the cached connections
  local sent
  sink_finish
  sent=$(grep -c 'status=sent' "$work/postfix/maillog" || true)
  report annotate "$out" sent="$sent" sessions="$sink_sessions" sink_messages="$sink_messages" \
    left="$(($(held) + $(in_queue)))"
  # Anything left (a failed run) must not leak into the next one.
  postsuper -c "$pf_etc" -d ALL >/dev/null 2>&1 || true
}

# ---- smtp-source --------------------------------------------------------------
# source_run OUT.json COUNT SIZE SESSIONS [-d]
source_run() {
  local out=$1 count=$2 size=$3 sessions=$4 shared=${5:-}
  local length
  length=$(python3 "$helpers/workload.py" body-size "$size")
  sink_start
  meter run --json "$out" --sink-pid "$sink_pid" --timeout 1800 \
    -- smtp-source $shared -s "$sessions" -m "$count" -l "$length" -f a@src.test -t u0@d0.bench.test \
    127.0.0.1:"$sink_port" || log "smtp-source failed (see $out)"
  sink_finish
  report annotate "$out" sent="$sink_messages" sessions="$sink_sessions" sink_messages="$sink_messages"
}

load_note() { cut -d' ' -f1-3 /proc/loadavg; }
thousands() { python3 -c "print(f'{$1:,}')"; }
# MAX_LOAD=1: wait (up to WAIT_MINUTES, default 5) for a 1-minute load
# average below it, so other work on the machine does not skew the runs.
wait_for_quiet() {
  [ -n "${MAX_LOAD:-}" ] || return 0
  local deadline=$(($(date +%s) + ${WAIT_MINUTES:-5} * 60))
  while awk -v max="$MAX_LOAD" '{ exit !($1 >= max) }' /proc/loadavg; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "load still $(load_note) after ${WAIT_MINUTES:-5} minutes; measuring anyway"
      return 0
    fi
    log "load $(load_note), waiting for < $MAX_LOAD"
    sleep 15
  done
}

# ---- compare ------------------------------------------------------------------
compare() {
  local res=$work/compare
  local -a names titles counts domains sizes
  if [ "$QUICK" = 1 ]; then
    names=(2k-1 2k-50 100k-1); counts=(500 500 50)
  else
    names=(2k-1 2k-50 100k-1); counts=(10000 10000 1000)
  fi
  domains=(1 50 1)
  sizes=(2048 2048 102400)
  postfix_setup
  local load_before
  load_before=$(load_note)
  for w in 0 1 2; do
    case " ${WORKLOADS:-${names[*]}} " in *" ${names[$w]} "*) ;; *) continue ;; esac
    local dir=$res/${names[$w]} count=${counts[$w]} doms=${domains[$w]} size=${sizes[$w]}
    mkdir -p "$dir"
    local per=20 total=500
    # smtp-source gets the concurrency postman may use for this workload.
    local sessions=$((doms * per < total ? doms * per : total))
    local title
    title="$(thousands "$count") messages of $((size / 1024)) KB to $doms domain$([ "$doms" = 1 ] || echo s)"
    printf '{"title": "%s", "order": %d, "count": %d, "domains": %d, "size": %d, "sessions": %d}\n' \
      "$title" "$w" "$count" "$doms" "$size" "$sessions" >"$dir/workload.json"
    postman_config "$work/postman.toml" "$total" "$per"
    for run in $(seq "$RUNS"); do
      log "$title: run $run/$RUNS (load $(load_note))"
      postman_run "$dir/postman.$run.json" "$count" "$doms" "$size" "$work/postman.toml"
      floor_run "$dir/floor.$run.json" "$count" "$doms" "$size"
      postfix_run "$dir/postfix.$run.json" "$count" "$doms" "$size"
      source_run "$dir/source-d.$run.json" "$count" "$size" "$sessions" -d
      source_run "$dir/source-1.$run.json" "$count" "$size" "$sessions"
    done
  done
  local load_after
  load_after=$(load_note)
  {
    echo "## Throughput: postman, Postfix and smtp-source into the same smtp-sink"
    echo
    machine
    echo "* Load average (1, 5, 15 min) before: $load_before; after: $load_after"
    echo "* Median of $RUNS runs per sender; the runs of the senders alternate."
    echo
    cat <<'EOF'
How each number is measured (scripts/bench/meter.py):

* **messages/s**: messages delivered (postman's `"status":"sent"` records,
  Postfix's `status=sent` log lines, the sink's count for smtp-source) over
  the wall time. postman: from exec to exit of `postman run --once`
  (start-up, queue scan and DNS included). Postfix: from the release
  (`postsuper -H ALL; postqueue -f`, included) until the sink has every
  message and the queue directories are empty; the instance is restarted
  after the injection, so qmgr, the smtp processes and the rest start idle.
  smtp-source: exec to exit.
* **CPU s / 1,000 msgs**: user + system time. postman and smtp-source:
  `wait4(2)` rusage of the process (all threads). Postfix: every process of
  the instance's master tree, from /proc: the master's own time plus
  `cutime`/`cstime` (children it reaped: smtp processes come and go) plus
  the time of every child alive, before the release and after the queue
  emptied; the difference is the CPU the instance spent (postsuper and
  postqueue, not Postfix daemons, are not counted).
* **peak RSS**: postman and smtp-source: the process's `VmHWM` (kernel
  high-water mark of its RSS) read every 20 ms until it exits (`ru_maxrss`
  would include the Python parent it was forked from). Postfix: the highest
  sum of RSS over the master's tree, sampled every 50 ms (PSS beside it:
  RSS counts the shared library pages of each of its ~20-40 processes again).
* **connections opened**: the sink's session count. **peak simultaneous
  connections**: the sink's open descriptors, sampled every 50 ms.
* **CPU s of all else on the machine** (per run): the machine's busy CPU
  time during the run (/proc/stat) less the sender's: the sink, the DNS
  server, the meter, and anything else running. The load averages above
  also count this script's own injection into Postfix between runs.
* The sink is `smtp-sink -c` (PIPELINING advertised, no delay), fresh for
  every run. postman: `application.threads = 2`, `max_connections = 500`,
  `max_connections_per_domain = 20`, `max_messages_per_connection = 100`,
  JSON log to a file, DNS from a local dnslib server. Postfix: defaults (20
  connections per nexthop; all bench domains share the nexthop
  `[127.0.0.1]:port` of `transport_maps`, so they share those 20), logging to
  a file through postlogd. smtp-source: `-s` = the connections postman may
  open for the workload (20 for one domain, 500 for 50), `-l` so the message
  is the same size; its own headers and body.
* **queue floor**: no sender, only the filesystem work that postman's queue
  needs for each message whatever else it does, timed the same way: the
  same synced queue, every file claimed by a `rename` into
  `<domain>/.active/<owner>/` and then unlinked, by 6 threads (postman's
  disk threads: 3 per worker). Its messages/s bounds any sender that
  claims and removes queue files on this disk.
* Postfix's message is the injected one plus the Received: header its
  smtpd adds (about 200 bytes).
* postman's queue is written and `sync`ed before each run, as a receiving
  server's fsync would leave it (Postfix's cleanup fsyncs its queue files
  too): deleting a file whose blocks are on disk costs ext4 far more than
  one still only in the page cache (unsynced, the 2 KB runs go about 2.5×
  faster).
EOF
    echo
    report compare "$res"
  } >"$work/compare.md"
}

# ---- scale --------------------------------------------------------------------
scale() {
  local res=$work/scale
  local load_before
  load_before=$(load_note)
  # 1,000 domains, up to 900 connections. The sink waits 1 s before answering
  # each DATA, as a distant server would, so connections stay open long
  # enough to pile up.
  local count=20000 doms=1000
  [ "$QUICK" = 1 ] && count=2000
  local dir=$res/a-domains
  mkdir -p "$dir"
  printf '{"title": "%s", "order": 0, "note": "%s"}\n' \
    "$(thousands "$count") messages of 2 KB to 1,000 domains, max_connections = 900, max_connections_per_domain = 2" \
    "The sink is \`smtp-sink -w 1\`: it waits 1 s before its reply to each DATA, so connections stay busy and pile up to the cap." \
    >"$dir/workload.json"
  postman_config "$work/postman-scale.toml" 900 2
  for run in $(seq "$RUNS"); do
    log "scale, 1,000 domains: run $run/$RUNS (load $(load_note))"
    SINK_ARGS="-w 1" postman_run "$dir/postman.$run.json" "$count" "$doms" 2048 "$work/postman-scale.toml"
  done
  # Start-up over a big queue: 100,000 files in 100 domains.
  count=100000
  [ "$QUICK" = 1 ] && count=5000
  dir=$res/b-startup
  mkdir -p "$dir"
  printf '{"title": "%s", "order": 1, "note": "%s"}\n' \
    "Start-up over a queue of $(thousands "$count") files (2 KB, 100 domains), default connection limits" \
    "First delivery: the \`ts\` of the first \`\\\"msg\\\":\\\"delivery\\\"\` record minus the time of exec." \
    >"$dir/workload.json"
  postman_config "$work/postman.toml" 500 20
  for run in $(seq "$RUNS"); do
    log "scale, start-up over $count files: run $run/$RUNS (load $(load_note))"
    postman_run "$dir/postman.$run.json" "$count" 100 2048 "$work/postman.toml"
  done
  {
    echo "## Scale"
    echo
    machine
    echo "* Load average (1, 5, 15 min) before: $load_before; after: $(load_note)"
    echo "* Peak RSS is postman's \`VmHWM\` (read every 20 ms until exit); peak simultaneous connections are the sink's open descriptors sampled every 50 ms; the workers' \`peak_connections\` come from their final \`metrics\` records (each worker's own peak, summed)."
    echo
    report scale "$res"
  } >"$work/scale.md"
}

# ---- profile ------------------------------------------------------------------
profile() {
  local count=10000
  [ "$QUICK" = 1 ] && count=1000
  local out=$work/profile.md
  postman_config "$work/postman.toml" 500 20
  local cmd=("$bin" run --once --config "$work/postman.toml")
  prepare() {
    rm -rf "$work/maildir"
    mkdir -p "$work/maildir"
    python3 "$helpers/workload.py" maildir "$work/maildir" "$1" 1 2048
    sync # as before the compare runs: the files' blocks are on disk
    sink_start
  }
  {
    echo "### Profile data (generated)"
    echo
    machine
    echo
  } >"$out"
  if command -v perf >/dev/null; then
    log "perf record over $count x 2 KB, 1 domain"
    prepare "$count"
    perf record -q -F 1999 -e cpu-clock --call-graph dwarf,16384 --mmap-pages 4096 \
      -o "$work/perf.data" -- "${cmd[@]}" 2>"$work/postman.log" >/dev/null || true
    sink_finish
    # (|| true: head closes the pipe early, and pipefail would stop the script)
    local pr=(perf report -i "$work/perf.data" --stdio -g none)
    {
      echo "#### perf: self time by function, all threads (cpu-clock, 1999 Hz, $count messages)"
      echo
      echo '```'
      "${pr[@]}" --no-children --sort comm,dso,sym -F overhead,comm,dso,sym --percent-limit 0.6 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *$//' | cut -c1-160 | sort -rn | head -60 || true
      echo '```'
      echo
      echo "#### perf: by thread"
      echo
      echo '```'
      "${pr[@]}" --no-children --sort comm -F overhead,comm 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *$//' | sort -rn | head -20 || true
      echo '```'
      echo
      echo "#### perf: by shared object"
      echo
      echo '```'
      "${pr[@]}" --no-children --sort dso -F overhead,dso 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *$//' | sort -rn | head -20 || true
      echo '```'
      echo
      echo "#### perf: time including callees (children, self), postman's and its logger's functions"
      echo
      echo '```'
      "${pr[@]}" --children --sort sym --percent-limit 1.5 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep -E 'postman|slog|serde|std::fs|std::io|crossbeam|hickory' |
        grep -v '(inlined)' | sed 's/ *$//' | cut -c1-170 | head -50 || true
      echo '```'
      echo
    } >>"$out"
  fi
  if command -v perf >/dev/null; then
    log "perf trace -s over $count x 2 KB, 1 domain"
    prepare "$count"
    perf trace -s -o "$work/trace.txt" -- "${cmd[@]}" 2>"$work/postman.log" >/dev/null || true
    sink_finish
    if [ -s "$work/trace.txt" ]; then
      {
        echo "#### perf trace -s: where each thread spends its time in system calls ($count messages)"
        echo
        echo "Wall time inside each call (blocked or running), the top calls of every busy thread;"
        echo "perf trace slows the run, so compare the rows, not the totals with other runs."
        echo
        python3 "$helpers/trace_summary.py" "$work/trace.txt" 6 "$count" || true
        echo
      } >>"$out"
    fi
  fi
  if command -v strace >/dev/null; then
    log "strace -c -f over $count x 2 KB, 1 domain"
    prepare "$count"
    strace -c -f -o "$work/strace.txt" -- "${cmd[@]}" 2>"$work/postman.log" >/dev/null || true
    sink_finish
    {
      echo "#### strace -c -f: system calls ($count messages; divide by $count for per message)"
      echo
      echo '```'
      head -45 "$work/strace.txt" || true
      echo '```'
      echo
    } >>"$out"
  fi
  if command -v valgrind >/dev/null; then
    local small=$((count / 10))
    log "valgrind DHAT over $small x 2 KB, 1 domain"
    prepare "$small"
    valgrind --tool=dhat --dhat-out-file="$work/dhat.json" -- "${cmd[@]}" \
      2>"$work/dhat.log" >/dev/null || true
    sink_finish
    {
      echo "#### valgrind DHAT: heap allocations ($small messages)"
      echo
      echo '```'
      grep -E '^==[0-9]+== (Total|At t-gmax|At t-end)' "$work/dhat.log" | sed 's/^==[0-9]*== //' || true
      echo
      echo "Allocation sites with the most blocks (the first frames outside the standard library):"
      echo
      python3 "$helpers/dhat_top.py" "$work/dhat.json" 30 "$small" || true
      echo '```'
    } >>"$out"
  fi
}

if [ "${BENCH_NETNS:-0}" = 1 ]; then
  # shellcheck source=scripts/bench/sites.sh
  . "$helpers/sites.sh"
  ns_setup
fi

case $mode in
  sites) wait_for_quiet; sites ;;
  mix) wait_for_quiet; mix ;;
  compare) wait_for_quiet; compare ;;
  scale) wait_for_quiet; scale ;;
  profile) wait_for_quiet; profile ;;
  all) wait_for_quiet; compare; wait_for_quiet; scale; wait_for_quiet; profile ;;
esac

for section in compare scale profile sites mix; do
  [ -f "$work/$section.md" ] || continue
  if [ -n "$results" ]; then
    mkdir -p "$(dirname "$results")"
    report splice "$results" "$section" <"$work/$section.md"
  fi
  cat "$work/$section.md"
done
[ -n "$results" ] && log "updated $results"
exit 0
