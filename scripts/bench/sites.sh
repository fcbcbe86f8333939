# The `sites` and `mix` modes of scripts/bench.sh (issue 17), sourced by it
# inside a private network and mount namespace (`unshare --net --mount`):
# loopback only, /etc/resolv.conf bind-mounted to name 127.0.0.1, where
# bench-dns answers on port 53. Both senders route by MX through it:
# postman by `dns.nameservers`, Postfix by the system resolver (its smtp
# is not chrooted). Every receiving host listens on port 25 of its own
# loopback address.
#
# Both senders need retries here (a refused connection, a throttle or a
# greylisting defers the message), so both get the same short retry
# delays: postman's delivery.retry.min_backoff / max_backoff = RETRY_MIN /
# RETRY_MAX, Postfix's minimal_backoff_time = queue_run_delay = RETRY_MIN
# and maximal_backoff_time = RETRY_MAX (defaults 10 and 60 s; 2 and 5 s
# with QUICK=1). postman runs as a daemon (`postman run`), which retries,
# until the receiver has every deliverable message, then gets SIGTERM.
#
# Uses from bench.sh: $work, $bin, $helpers, $QUICK, $RUNS, meter, report,
# log, load_note, thousands, machine, postfix_*, held, in_queue, and
# workload.py.

RETRY_MIN=${RETRY_MIN:-$([ "$QUICK" = 1 ] && echo 2 || echo 10)}
RETRY_MAX=${RETRY_MAX:-$([ "$QUICK" = 1 ] && echo 5 || echo 60)}
# A smoke test gives up on a sender after a minute (the run shows as
# incomplete); a real run after half an hour.
RUN_TIMEOUT=${RUN_TIMEOUT:-$([ "$QUICK" = 1 ] && echo 60 || echo 1800)}
# SENDERS="postman" measures only some of them (e.g. while working on one).
SENDERS=${SENDERS:-postman postfix source-d}
sender() { [[ " $SENDERS " == *" $1 "* ]]; }
sink_bin=$work/shaped-sink
dns_bin=$work/bench-dns
shared_mx_ip=127.0.1.1

ns_setup() {
  ip link set lo up
  echo "nameserver 127.0.0.1" >"$work/resolv.conf"
  chmod 644 "$work/resolv.conf"
  mount --bind "$work/resolv.conf" /etc/resolv.conf
}

# Waits until something listens on TCP port $1 of address $2 (hex in
# /proc/net/tcp, little-endian per byte of the address).
wait_listen() {
  local port=$1 ip=$2 hex
  hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "$ip" | awk -F. '{print $4, $3, $2, $1}') "$port")
  for _ in $(seq 200); do
    awk '$4 == "0A" {print $2}' /proc/net/tcp | grep -q "^$hex\$" && return 0
    sleep 0.02
  done
  echo "bench.sh: nothing listens on $ip:$port" >&2
  return 1
}

dns_pid=
dns_start() {
  "$dns_bin" "$1" 127.0.0.1:53 >"$work/dns.out" 2>"$work/dns.err" &
  dns_pid=$!
  wait_listen 53 127.0.0.1
}
# Stops bench-dns; its question counts (JSON) are left in $work/dns.json.
# (Not in a command substitution: a subshell cannot wait for the server.)
dns_stop() {
  kill "$dns_pid" 2>/dev/null || true
  wait "$dns_pid" 2>/dev/null || true
  dns_pid=
  tail -1 "$work/dns.out" 2>/dev/null | grep '^{' >"$work/dns.json" || echo '{}' >"$work/dns.json"
}

# receiver_start shaped CONFIG | backlog: shaped-sink with CONFIG, or
# `smtp-sink -m 20` on the shared MX address.
rcv_pid=
rcv_kind=
receiver_start() {
  rcv_kind=$1
  rm -f "$work/stats.json"
  : >"$work/sink.out"
  if [ "$rcv_kind" = shaped ]; then
    "$sink_bin" "$2" "$work/stats.json" 2>"$work/sink.err" &
    rcv_pid=$!
    for _ in $(seq 500); do [ -s "$work/stats.json" ] && break; sleep 0.02; done
    [ -s "$work/stats.json" ] || { echo "bench.sh: shaped-sink did not start:" >&2; cat "$work/sink.err" >&2; exit 1; }
  else
    smtp-sink -c -m 20 -u nobody "$shared_mx_ip:25" 1024 >"$work/sink.out" 2>"$work/sink.err" &
    rcv_pid=$!
    wait_listen 25 "$shared_mx_ip"
  fi
}
receiver_spec() {
  if [ "$rcv_kind" = shaped ]; then echo "shaped:$work/stats.json"; else echo "smtp-sink:$work/sink.out"; fi
}
# Stops the receiver; what it counted (report.py receiver) is left in
# $work/receiver.json.
receiver_stop() {
  kill "$rcv_pid" 2>/dev/null || true
  wait "$rcv_pid" 2>/dev/null || true
  rcv_pid=
  if [ "$rcv_kind" = shaped ]; then
    report receiver shaped "$work/stats.json" >"$work/receiver.json"
  else
    report receiver smtp-sink "$work/sink.out" >"$work/receiver.json"
  fi
}

# postman_mx_config FILE: postman's defaults but for the queue, the log,
# the DNS server, the port and the retry delays.
postman_mx_config() {
  cat >"$1" <<TOML
[application]
hostname = "bench.postman.test"
server_port = 25
[application.maildir]
path = "$work/maildir"
[dns]
nameservers = ["127.0.0.1:53"]
[delivery.retry]
min_backoff = $RETRY_MIN
max_backoff = $RETRY_MAX
[log]
format = "json"
metrics_interval = 0
TOML
}

# Postfix routed by MX: no transport_maps, DNS on, and the retry delays.
postfix_mx_setup() {
  postfix_setup
  python3 - "$pf_etc/main.cf" "$RETRY_MIN" "$RETRY_MAX" <<'PY'
import sys
path, lo, hi = sys.argv[1:]
drop = ("transport_maps", "default_transport", "relay_transport", "smtp_dns_support_level")
lines = [l for l in open(path) if not l.startswith(drop)]
lines = [l for l in lines if not l.startswith("# Every bench domain to the sink")]
lines.append(f"""# Routed by MX through the bench's DNS server (the namespace's resolv.conf).
default_transport = smtp
relay_transport = smtp
# The one change from the defaults: retries in bench time, as postman's.
minimal_backoff_time = {lo}s
maximal_backoff_time = {hi}s
queue_run_delay = {lo}s
""")
open(path, "w").writelines(lines)
PY
}

queue_left() {
  # Queue files only: not the site backoffs in .sites/, .suspend/ or .status.
  ( (find "$work/maildir/.OTHER_SERVERS" -mindepth 2 -maxdepth 2 -type f -not -name '.*' \
    -not -path "$work/maildir/.OTHER_SERVERS/.*/*"
    find "$work/maildir/.OTHER_SERVERS" -mindepth 4 -maxdepth 4 -path '*/.active/*' -type f) 2>/dev/null || true) | wc -l
}

# mx_postman OUT.json EXPECT RECEIVER SINK_CONFIG ZONE FILL-ARGS...: fills
# the queue (workload.py FILL-ARGS), runs the postman daemon until the
# receiver has EXPECT messages.
mx_postman() {
  local out=$1 expect=$2 kind=$3 sink_config=$4 zone=$5
  shift 5
  rm -rf "$work/maildir"
  mkdir -p "$work/maildir"
  python3 "$helpers/workload.py" "$@"
  sync
  dns_start "$zone"
  receiver_start "$kind" "$sink_config"
  local load sink_pid_arg=()
  load=$(load_note)
  log "  postman (load $load)"
  [ "$kind" = backlog ] && sink_pid_arg=(--sink-pid "$rcv_pid")
  meter daemon --json "$out" --receiver "$(receiver_spec)" --expect "$expect" "${sink_pid_arg[@]}" \
    --peer-pid "$rcv_pid" --peer-pid "$dns_pid" --stderr "$work/postman.log" --timeout "$RUN_TIMEOUT" \
    -- "$bin" run --config "$work/postman-mx.toml" || log "postman did not deliver everything (see $out)"
  local facts start
  receiver_stop
  dns_stop
  start=$(python3 -c "import json; print(json.load(open('$out'))['start_epoch'])")
  facts=$(report postman-log "$work/postman.log" "$start")
  cp "$work/postman.log" "${out%.json}.log"
  report annotate "$out" receiver="$(cat "$work/receiver.json")" dns="$(cat "$work/dns.json")" facts="$facts" \
    left="$(queue_left)" load="\"$load\""
}

# mx_postfix OUT.json EXPECT RECEIVER SINK_CONFIG ZONE COUNT INJECT-ARGS...
mx_postfix() {
  local out=$1 expect=$2 kind=$3 sink_config=$4 zone=$5 count=$6
  shift 6
  postfix_start
  python3 "$helpers/workload.py" "$@"
  for _ in $(seq 3000); do
    [ "$(held)" -ge "$count" ] && [ "$(in_queue)" = 0 ] && break
    sleep 0.1
  done
  [ "$(held)" -ge "$count" ] || { echo "bench.sh: only $(held) of $count messages held" >&2; exit 1; }
  postfix_stop
  : >"$work/postfix/maillog"
  postfix_start
  dns_start "$zone"
  receiver_start "$kind" "$sink_config"
  local master load sink_pid_arg=()
  load=$(load_note)
  log "  Postfix (load $load)"
  [ "$kind" = backlog ] && sink_pid_arg=(--sink-pid "$rcv_pid")
  master=$(tr -d ' ' <"$pf_spool/pid/master.pid")
  meter postfix --json "$out" --master-pid "$master" --spool "$pf_spool" --receiver "$(receiver_spec)" \
    --no-drain --expect "$expect" "${sink_pid_arg[@]}" --peer-pid "$rcv_pid" --peer-pid "$dns_pid" \
    --timeout "$RUN_TIMEOUT" \
    -- sh -c "postsuper -c '$pf_etc' -H ALL >/dev/null 2>&1 && postqueue -c '$pf_etc' -f" ||
    log "Postfix did not deliver everything (see $out)"
  postfix_stop
  local sent deferred
  receiver_stop
  dns_stop
  sent=$(grep -c 'status=sent' "$work/postfix/maillog" || true)
  deferred=$(grep -c 'status=deferred' "$work/postfix/maillog" || true)
  cp "$work/postfix/maillog" "${out%.json}.log"
  report annotate "$out" receiver="$(cat "$work/receiver.json")" dns="$(cat "$work/dns.json")" \
    sent="$sent" deferred="$deferred" \
    left="$(($(held) + $(in_queue)))" load="\"$load\""
  postsuper -c "$pf_etc" -d ALL >/dev/null 2>&1 || true
}

# mx_source OUT.json COUNT RECEIVER SINK_CONFIG: smtp-source -d -s 20.
mx_source() {
  local out=$1 count=$2 kind=$3 sink_config=$4 length load
  length=$(python3 "$helpers/workload.py" body-size 2048)
  receiver_start "$kind" "$sink_config"
  load=$(load_note)
  log "  smtp-source (load $load)"
  meter run --json "$out" --sink-pid "$rcv_pid" --timeout "$RUN_TIMEOUT" \
    -- smtp-source -d -s 20 -m "$count" -l "$length" -f a@src.test -t u0@d0.bench.test \
    "$shared_mx_ip:25" || log "smtp-source failed (see $out)"
  receiver_stop
  report annotate "$out" receiver="$(cat "$work/receiver.json")" load="\"$load\""
}

# ---- sites --------------------------------------------------------------------
sites() {
  local res=$work/sites count=10000
  local -a doms=(50 1000)
  if [ "$QUICK" = 1 ]; then count=200; doms=(5 50); fi
  # Every bench domain's MX is the one shared host name.
  {
    echo "mx.shared.test. 300 IN A $shared_mx_ip"
    for i in $(seq 0 $((${doms[1]} - 1))); do echo "d$i.bench.test. 300 IN MX 10 mx.shared.test."; done
  } >"$work/sites.zone"
  cat >"$work/sites-sink.json" <<JSON
{"port": 25, "hostname": "shaped-sink.test", "sites": [{"name": "shared", "group": "shared",
 "addrs": ["$shared_mx_ip"], "mode": "serve", "max_connections": 20}]}
JSON
  postman_mx_config "$work/postman-mx.toml"
  postfix_mx_setup
  local load_before order=0
  load_before=$(load_note)
  local receivers="refuse backlog"
  [ "$QUICK" = 1 ] && receivers=refuse
  for kind in ${SITES_RECEIVERS:-$receivers}; do
    local rcv=shaped
    [ "$kind" = backlog ] && rcv=backlog
    for d in "${doms[@]}"; do
      local dir=$res/$kind-$d title
      mkdir -p "$dir"
      title="$(thousands "$count") × 2 KB to $(thousands "$d") domains on one MX host; "
      if [ "$kind" = backlog ]; then
        title+="\`smtp-sink -m 20\` (past 20, connections wait unaccepted)"
      else
        title+="shaped-sink serving 20 at once (past 20: \`421 4.7.0 Too many concurrent SMTP connections\`)"
      fi
      printf '{"title": "%s", "order": %d, "count": %d, "domains": %d, "receiver": "%s"}\n' \
        "$title" "$order" "$count" "$d" "$kind" >"$dir/workload.json"
      order=$((order + 1))
      for run in $(seq "$RUNS"); do
        log "sites, $title: run $run/$RUNS (load $(load_note))"
        if sender postman; then
          mx_postman "$dir/postman.$run.json" "$count" "$rcv" "$work/sites-sink.json" \
            "$work/sites.zone" maildir "$work/maildir" "$count" "$d" 2048
        fi
        if sender postfix; then
          mx_postfix "$dir/postfix.$run.json" "$count" "$rcv" "$work/sites-sink.json" \
            "$work/sites.zone" "$count" smtp 127.0.0.1 "$smtpd_port" "$count" "$d" 2048
        fi
        if sender source-d; then
          mx_source "$dir/source-d.$run.json" "$count" "$rcv" "$work/sites-sink.json"
        fi
      done
    done
  done
  {
    echo "## Sites: many domains on one MX host that serves 20 connections at once"
    echo
    machine
    echo "* Load average (1, 5, 15 min) before: $load_before; after: $(load_note); each run's own in the run table"
    echo "* Median of $RUNS runs per sender; the runs of the senders alternate. Retry delays for both senders: $RETRY_MIN s, doubling up to $RETRY_MAX s."
    echo
    sites_method
    echo
    report sites "$res"
  } >"$work/sites.md"
}

sites_method() {
  cat <<'EOF'
How it is run (`scripts/bench.sh sites`, scripts/bench/sites.sh): in a
private network and mount namespace (`unshare --net --mount`; loopback
only; `/etc/resolv.conf` bind-mounted to say `nameserver 127.0.0.1`),
bench-dns (the tests' hickory server, `integration/src/bin/bench-dns.rs`)
answers on port 53: `d<i>.bench.test MX 10 mx.shared.test`,
`mx.shared.test A 127.0.1.1`, TTL 300. The receiver listens on
127.0.1.1:25. Both senders route by MX through that server: postman by
`dns.nameservers = ["127.0.0.1:53"]`, Postfix by the system resolver (no
transport_maps, its smtp not chrooted). Receivers:

* **refuse**: `shaped-sink` (`integration/src/bin/shaped-sink/`) serves
  20 connections at once and greets one more with `421 4.7.0 Too many
  concurrent SMTP connections; please try again later`, then closes it, as
  Exim does past `smtp_accept_max` (default 20).
* **backlog**: `smtp-sink -m 20`. `-m` does not refuse anything: when the
  20th session is accepted smtp-sink stops polling its listening socket
  until one ends (smtp-sink.c, `connect_event`), so more connections
  complete the TCP handshake in the kernel and wait in the listen queue
  without a greeting, until a slot frees or the client's greeting timeout.
  That is how Postfix's own smtpd behaves at its process limit.

Senders: **postman** as a daemon (`postman run`: only a daemon retries
what was deferred) with its defaults (2 threads, 500 connections, 20 per
domain starting at 5, 100 messages a connection, 2 s connection cache)
but the retry delays, over a queue written and synced before the run;
stopped by SIGTERM once the receiver has every message. **Postfix**: the
private instance of `compare`, defaults (100 smtp processes, 20
connections per destination, which is the domain when routed by MX,
starting at 5), but the retry delays; injected and held, restarted,
released. **smtp-source -d -s 20**: 20 connections that each carry their
share of the messages, straight to 127.0.1.1:25.

* **msgs/s**: messages over the time from exec (postman) or release
  (Postfix) to the receiver's acceptance of the last one (shaped-sink
  records when each recipient is first accepted; smtp-sink's count is
  polled every 10 ms); smtp-source: exec to exit.
* **connections opened**: TCP connections the sender attempted (the
  namespace's `ActiveOpens` in /proc/net/snmp over the run: nothing else
  connects there meanwhile); **refused**: the receiver's `421` greetings
  (shaped-sink) — smtp-sink refuses none; **peak at once**: the most the
  receiver served at once (shaped-sink counts them; smtp-sink's open
  descriptors, sampled every 50 ms).
* **deferrals**: postman's `"status":"deferred"` records, Postfix's
  `status=deferred` log lines.
* CPU and peak RSS as in `compare`: postman's whole process (its
  shutdown included), Postfix's whole process tree.
EOF
}

# ---- mix ----------------------------------------------------------------------
mix() {
  local res=$work/mix count=${MIX_COUNT:-100000} domains=${MIX_DOMAINS:-2000} rate=${MIX_RATE:-300}
  if [ "$QUICK" = 1 ]; then count=${MIX_COUNT:-2000}; domains=${MIX_DOMAINS:-100}; rate=${MIX_RATE:-50}; fi
  local runs=${MIX_RUNS:-1}
  local plan=$work/mixplan deliverable
  # A greylisted recipient's retry passes after half the first retry delay.
  deliverable=$(python3 "$helpers/mixplan.py" "$plan" "$count" "$domains" "$rate" $((RETRY_MIN * 500)))
  mkdir -p "$res/mix"
  printf '{"title": "mix", "order": 0, "count": %d, "deliverable": %d}\n' "$count" "$deliverable" \
    >"$res/mix/workload.json"
  postman_mx_config "$work/postman-mx.toml"
  postfix_mx_setup
  local load_before
  load_before=$(load_note)
  for run in $(seq "$runs"); do
    log "mix, $(thousands "$count") messages over $(thousands "$domains") domains: run $run/$runs (load $(load_note))"
    if sender postman; then
      mx_postman "$res/mix/postman.$run.json" "$deliverable" shaped "$plan/sink.json" \
        "$plan/zone" maildir-plan "$work/maildir" "$plan/plan.json" 2048
    fi
    if sender postfix; then
      mx_postfix "$res/mix/postfix.$run.json" "$deliverable" shaped "$plan/sink.json" \
        "$plan/zone" "$count" smtp-plan 127.0.0.1 "$smtpd_port" "$plan/plan.json" 2048
    fi
  done
  {
    echo "## Mix: the internet in small"
    echo
    machine
    echo "* Load average (1, 5, 15 min) before: $load_before; after: $(load_note); each run's own in the run table"
    echo "* $runs run(s) per sender (MIX_RUNS), alternating. Retry delays for both senders: $RETRY_MIN s, doubling up to $RETRY_MAX s."
    echo
    cat "$plan/plan.md"
    echo
    mix_method
    echo
    report mix "$res"
  } >"$work/mix.md"
}

mix_method() {
  cat <<'EOF'
How it is run (`scripts/bench.sh mix`, scripts/bench/mixplan.py and
sites.sh): the namespace, DNS server and senders of `sites`; one
shaped-sink serves every site on its own address (the down hosts'
addresses have no listener, so the kernel refuses them). Both senders keep
their default timeouts (postman waits 300 s for a greeting, Postfix's
`smtp_helo_timeout` is 300 s), so a black hole holds a connection 5
minutes.

* **drained in**: from exec (postman) or release (Postfix) until the
  receiver has accepted every deliverable message once (the messages to
  black-holed and refusing domains stay queued; both senders are stopped
  there).
* **connections opened**: TCP connection attempts (`ActiveOpens`, as in
  `sites`); **RST**: the attempts that failed before they were established
  (`AttemptFails`: the refusing hosts); the receiver's counts per group of
  sites below it: connections accepted, `421` greetings past a provider's
  20, throttle and greylisting replies, messages accepted (repeats
  included) and first acceptances.
EOF
}
