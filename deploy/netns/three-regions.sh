#!/usr/bin/env bash
# Three Vantage regions on one machine, each agent in its own network
# namespace, set up the way a real deployment is: a private CA and a
# coordinator certificate (openssl), an API token and one token per agent
# (`vantage-coordinator token`), a config checked with `validate`, the
# coordinator on the host with TLS, and one agent per region dialling it.
#
#   sudo deploy/netns/three-regions.sh up        # set it all up, wait for steady state
#   sudo deploy/netns/three-regions.sh status [--window 1m]   # `vantage-coordinator status`
#   sudo deploy/netns/three-regions.sh down [--purge]   # --purge: the state directory too
#
# The network (NET defaults to 10.233; every address is private):
#
#   host (the router between the regions, and the coordinator's machine)
#     lo          NET.0.1/32   the coordinator: gRPC :7070, HTTP API :7080
#     PREFIX-eu   NET.1.1/24 ── veth ── NET.1.2  namespace PREFIX-eu      agent eu-1
#     PREFIX-us   NET.2.1/24 ── veth ── NET.2.2  namespace PREFIX-us      agent us-1
#     PREFIX-ap   NET.3.1/24 ── veth ── NET.3.2  namespace PREFIX-ap      agent ap-1
#     PREFIX-tg   NET.4.1/24 ── veth ── NET.4.2  namespace PREFIX-target  HTTP target :8080
#
# Each namespace has one route, NET.0.0/16 via its host side, and IPv4
# forwarding is turned on for these four host interfaces only, so the
# regions reach the target through the host. The host gets an `unreachable`
# route for NET.0.0/16 besides its own /24s: nothing from the namespaces is
# forwarded out of the machine's own interfaces (no name lookups either),
# and its global forwarding setting is left as it is. `down` removes all of
# it.
#
# Environment:
#   VANTAGE_BIN_DIR     where vantage-coordinator and vantage-agent are
#                       (default: target/release of this checkout)
#   VANTAGE_3R_DIR      state directory: keys, tokens, config, store, spools,
#                       logs, pid files (default ./vantage-3r)
#   VANTAGE_3R_PREFIX   prefix of namespace and interface names (default v3r)
#   VANTAGE_3R_NET      first two octets of the addresses (default 10.233)
#   VANTAGE_3R_WAIT     seconds `up` waits for steady state (default 60)
# `status` and `down` take the prefix and network from the state directory
# that `up` wrote, so only VANTAGE_3R_DIR has to match.
#
# Needs root (namespaces, addresses), iproute2, openssl and python3 (the
# target is `python3 -m http.server`).

set -euo pipefail
umask 077

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${VANTAGE_BIN_DIR:-$REPO/target/release}
STATE=${VANTAGE_3R_DIR:-./vantage-3r}
PREFIX=${VANTAGE_3R_PREFIX:-v3r}
NET=${VANTAGE_3R_NET:-10.233}
WAIT=${VANTAGE_3R_WAIT:-60}

REGIONS=(eu us ap)
GRPC_PORT=7070
HTTP_PORT=7080
TARGET_PORT=8080
# The checks, one row per check and region in `status`.
CHECKS=(front health target-port)

die() {
  echo "three-regions: $*" >&2
  exit 1
}

say() {
  echo "==> $*"
}

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 2
}

# Absolute paths: the processes outlive this script and its directory.
absolute() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# Settings `up` wrote, so `status` and `down` act on what is running even
# when the environment differs.
load_settings() {
  if [[ -f $STATE/settings ]]; then
    # shellcheck source=/dev/null
    source "$STATE/settings"
  fi
  addresses
}

addresses() {
  COORD_ADDR=$NET.0.1
  TARGET_ADDR=$NET.4.2
  API=https://$COORD_ADDR:$HTTP_PORT
}

check_settings() {
  [[ $PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] ||
    die "VANTAGE_3R_PREFIX=$PREFIX: use 1-10 characters, a-z and 0-9, starting with a letter (interface names are limited to 15)"
  if ! [[ $NET =~ ^10\.([0-9]{1,3})$ ]] || ((10#${BASH_REMATCH[1]} > 255)); then
    die "VANTAGE_3R_NET=$NET: expected 10.N (N 0-255), the first two octets of a private /16"
  fi
  [[ $WAIT =~ ^[0-9]+$ ]] || die "VANTAGE_3R_WAIT=$WAIT: expected whole seconds"
}

need_root() {
  [[ $(id -u) == 0 ]] || die "needs root (network namespaces and addresses): run it with sudo"
}

coordinator() {
  "$BIN_DIR/vantage-coordinator" "$@"
}

status_cmd() {
  coordinator status --api "$API" --ca-file "$STATE/ca.pem" \
    --token-file "$STATE/tokens/operator.token" "$@"
}

# ---------------------------------------------------------------- up

preflight() {
  need_root
  check_settings
  for tool in ip openssl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (ip comes with iproute2)"
  done
  for bin in vantage-coordinator vantage-agent; do
    [[ -x $BIN_DIR/$bin ]] ||
      die "$BIN_DIR/$bin not found: run \`cargo build --release\` first, or set VANTAGE_BIN_DIR"
  done
  if ip netns list | grep -qE "^$PREFIX-(eu|us|ap|target)( |$)"; then
    die "namespaces $PREFIX-* exist already: run \`$0 down\` first"
  fi
  if [[ -n $(ip -4 route list root "$NET.0.0/16") ]] ||
    ip -4 addr show dev lo | grep -q " $NET\.0\.1/32 "; then
    die "$NET.0.0/16 is in use on this machine: \`$0 down\` if it is an earlier run's, or choose another VANTAGE_3R_NET"
  fi
  for f in "$STATE"/run/*.pid; do
    [[ -f $f ]] && running "$(cat "$f")" &&
      die "$f: still running; run \`$0 down\` with this VANTAGE_3R_DIR first"
  done
  return 0
}

# Namespace NAME joined to the host by veth HOST_IF; host side NET.N.1,
# namespace side NET.N.2 (eth0), NET.0.0/16 routed via the host.
make_namespace() {
  local ns=$1 host_if=$2 n=$3
  ip netns add "$ns"
  ip link add "$host_if" type veth peer name eth0 netns "$ns"
  ip addr add "$NET.$n.1/24" dev "$host_if"
  ip link set "$host_if" up
  echo 1 >"/proc/sys/net/ipv4/conf/$host_if/forwarding"
  ip -n "$ns" addr add "$NET.$n.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add "$NET.0.0/16" via "$NET.$n.1"
}

make_network() {
  say "network: the coordinator at $COORD_ADDR; namespaces $PREFIX-eu, $PREFIX-us, $PREFIX-ap and $PREFIX-target"
  ip route add unreachable "$NET.0.0/16"
  ip addr add "$COORD_ADDR/32" dev lo
  local n=1
  for r in "${REGIONS[@]}"; do
    make_namespace "$PREFIX-$r" "$PREFIX-$r" "$n"
    n=$((n + 1))
  done
  make_namespace "$PREFIX-target" "$PREFIX-tg" 4
}

# Runs "$@" in the background, detached from this terminal, with its output
# in logs/NAME.log and its pid in run/NAME.pid.
start_bg() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/run/$name.pid"
}

# Whether process PID exists and is not a zombie.
running() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

# Whether what run/NAME.pid names is running.
alive() {
  local pid
  pid=$(cat "$STATE/run/$1.pid" 2>/dev/null) || return 1
  running "$pid"
}

start_target() {
  say "target: python3 -m http.server on $TARGET_ADDR:$TARGET_PORT in $PREFIX-target"
  mkdir -p "$STATE/www"
  printf '<!doctype html><title>three regions</title><p>vantage three-regions target</p>\n' \
    >"$STATE/www/index.html"
  printf 'ok\n' >"$STATE/www/healthz"
  start_bg target ip netns exec "$PREFIX-target" \
    python3 -m http.server "$TARGET_PORT" --bind "$TARGET_ADDR" --directory "$STATE/www"
  # The product's own one-shot probe, from each region: the target is up
  # and routed before any agent depends on it (python may take seconds to
  # start on a busy machine).
  local r last
  for r in "${REGIONS[@]}"; do
    for _ in $(seq 1 60); do
      if last=$(ip netns exec "$PREFIX-$r" "$BIN_DIR/vantage-agent" probe \
        "http://$TARGET_ADDR:$TARGET_PORT/healthz" --timeout 1s 2>&1); then
        last=
        break
      fi
      alive target || break
      sleep 0.5
    done
    if [[ -n $last ]]; then
      tail -n 20 "$STATE/logs/target.log" >&2 || true
      alive target || die "the target exited (its log is above)"
      echo "$last" >&2
      die "region $r cannot reach the target at $TARGET_ADDR:$TARGET_PORT within 30 s (the last probe is above; a host firewall dropping forwarded packets between $PREFIX-$r and $PREFIX-tg?)"
    fi
  done
}

make_pki() {
  mkdir -p "$STATE/pki"
  local log=$STATE/logs/openssl.log
  if [[ ! -f $STATE/ca.pem ]]; then
    say "a private CA: ca.pem (its key stays in pki/ca.key)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=Vantage three-regions CA" \
      -keyout "$STATE/pki/ca.key" -out "$STATE/ca.pem" 2>>"$log"
  fi
  # A certificate kept from an earlier run is reused if it names this address.
  if [[ -f $STATE/pki/coordinator.crt ]] &&
    openssl x509 -in "$STATE/pki/coordinator.crt" -noout -checkip "$COORD_ADDR" 2>/dev/null |
    grep -q 'does match'; then
    return
  fi
  say "the coordinator's certificate for IP:$COORD_ADDR, signed by the CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=vantage-coordinator" \
    -keyout "$STATE/pki/coordinator.key" -out "$STATE/pki/coordinator.csr" 2>>"$log"
  openssl x509 -req -in "$STATE/pki/coordinator.csr" \
    -CA "$STATE/ca.pem" -CAkey "$STATE/pki/ca.key" -CAserial "$STATE/pki/ca.srl" -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=IP:%s\n' "$COORD_ADDR") \
    -out "$STATE/pki/coordinator.crt" 2>>"$log"
}

# `vantage-coordinator token ARGS` into tokens/NAME.token (the token) and
# tokens/NAME.toml (its config table). Kept across runs, as a deployment
# keeps its tokens.
make_token() {
  local name=$1
  shift
  [[ -s $STATE/tokens/$name.token && -s $STATE/tokens/$name.toml ]] && return
  local out
  out=$(coordinator token --name "$name" "$@")
  # Line 2 is the token, indented; the table follows the line `config:`.
  sed -n '2s/^ *//p' <<<"$out" >"$STATE/tokens/$name.token"
  sed -n '/^config:$/,$p' <<<"$out" | sed 1d >"$STATE/tokens/$name.toml"
  if ! [[ -s $STATE/tokens/$name.token ]] || ! grep -q '^sha256 = ' "$STATE/tokens/$name.toml"; then
    die "unexpected output of \`vantage-coordinator token\`"
  fi
}

make_tokens() {
  say "tokens: operator (API, admin) and eu-1, us-1, ap-1 (agents, each pinned to its region)"
  mkdir -p "$STATE/tokens"
  make_token operator --role admin
  for r in "${REGIONS[@]}"; do
    make_token "$r-1" --agent --region "$r"
  done
}

write_config() {
  local regions url=http://$TARGET_ADDR:$TARGET_PORT
  regions=$(printf '"%s", ' "${REGIONS[@]}")
  regions="[${regions%, }]"
  {
    cat <<EOF
# Written by deploy/netns/three-regions.sh.
version = 1

[server]
grpc_listen = "$COORD_ADDR:$GRPC_PORT"
http_listen = "$COORD_ADDR:$HTTP_PORT"
data_dir = "data"
# Short windows, so that steady state shows within seconds.
window = "2s"

[server.tls]
cert_file = "pki/coordinator.crt"
key_file = "pki/coordinator.key"

EOF
    cat "$STATE/tokens/operator.toml"
    for r in "${REGIONS[@]}"; do
      echo
      cat "$STATE/tokens/$r-1.toml"
    done
    cat <<EOF

[[check]]
name = "front"
kind = "http"
url = "$url/"
body_contains = "three-regions target"
regions = $regions
interval = "2s"

[[check]]
name = "health"
kind = "http"
url = "$url/healthz"
expect_status = [200]
regions = $regions
interval = "2s"

[[check]]
name = "target-port"
kind = "tcp"
host = "$TARGET_ADDR"
port = $TARGET_PORT
regions = $regions
interval = "2s"
EOF
  } >"$STATE/coordinator.toml"
  coordinator validate "$STATE/coordinator.toml"
}

start_coordinator() {
  say "coordinator: grpc $COORD_ADDR:$GRPC_PORT, API $API"
  start_bg coordinator "$BIN_DIR/vantage-coordinator" run --config "$STATE/coordinator.toml"
  for _ in $(seq 1 100); do
    grep -q '^vantage-coordinator listening ' "$STATE/logs/coordinator.log" && return
    alive coordinator || break
    sleep 0.3
  done
  tail -n 30 "$STATE/logs/coordinator.log" >&2 || true
  die "the coordinator did not start listening within 30 s (log above: $STATE/logs/coordinator.log)"
}

start_agents() {
  for r in "${REGIONS[@]}"; do
    say "agent $r-1 in namespace $PREFIX-$r"
    mkdir -p "$STATE/spool"
    start_bg "$r-1" ip netns exec "$PREFIX-$r" "$BIN_DIR/vantage-agent" run \
      --region "$r" --name "$r-1" \
      --coordinator "https://$COORD_ADDR:$GRPC_PORT" --ca-file "$STATE/ca.pem" \
      --token-file "$STATE/tokens/$r-1.token" \
      --spool-dir "$STATE/spool/$r-1" \
      --egress-allow "$NET.4.0/24"
  done
}

# From `status --json` on stdin: "AGENTS UP ROWS", the regions with an
# agent, the check rows whose state is `up`, and all check rows ("0 0 0"
# when it is not JSON: the coordinator is not answering yet).
tally() {
  python3 -c '
import json, sys
try:
    fleet = json.load(sys.stdin)
except ValueError:
    fleet = {"agents": [], "checks": []}
seen = {a.get("region") for a in fleet["agents"]}
rows = fleet["checks"]
up = sum(r["state"] == "up" for r in rows)
print(sum(r in seen for r in sys.argv[1:]), up, len(rows))
' "${REGIONS[@]}"
}

show_logs() {
  for f in "$STATE"/logs/*.log; do
    echo "---- $f (last 20 lines)"
    tail -n 20 "$f"
  done
}

wait_steady() {
  local want_rows=$((${#CHECKS[@]} * ${#REGIONS[@]})) start=$SECONDS out counts window
  say "waiting up to ${WAIT}s for every region to report every check up"
  while true; do
    # Only windows since the agents started (and the one they started in,
    # windows being 2 s): a store kept from an earlier run holds results
    # that say nothing about this one.
    window="$((SECONDS - start + 3))s"
    out=$(status_cmd --json --window "$window" 2>/dev/null) || true
    read -r agents up rows <<<"$(tally <<<"$out")"
    counts="agents $agents/${#REGIONS[@]}, check rows up $up/$want_rows"
    if ((agents == ${#REGIONS[@]} && up == want_rows && rows == want_rows)); then
      status_cmd --window "$window"
      echo
      say "steady state $((SECONDS - start)) s after the agents started, $SECONDS s after \`up\` started ($counts)"
      return 0
    fi
    for p in coordinator "${REGIONS[@]/%/-1}" target; do
      alive "$p" || {
        status_cmd --window "$window" 2>&1 || true
        show_logs
        die "$p exited ($counts); logs above"
      }
    done
    if ((SECONDS - start >= WAIT)); then
      status_cmd --window "$window" 2>&1 || true
      echo
      show_logs
      die "no steady state within ${WAIT}s ($counts); logs above"
    fi
    sleep 1
  done
}

cmd_up() {
  addresses
  preflight
  STATE=$(absolute "$STATE")
  BIN_DIR=$(cd "$BIN_DIR" && pwd)
  mkdir -p "$STATE/logs" "$STATE/run"
  touch "$STATE/.three-regions"
  printf 'PREFIX=%q\nNET=%q\nBIN_DIR=%q\n' "$PREFIX" "$NET" "$BIN_DIR" >"$STATE/settings"
  trap 'rc=$?; ((rc == 0)) || echo "three-regions: up failed; \`$0 down\` cleans up what it started" >&2' EXIT
  make_network
  start_target
  make_pki
  make_tokens
  write_config
  start_coordinator
  start_agents
  wait_steady
  echo "State, logs and pid files: $STATE. \`$0 status\` shows the fleet, \`$0 down\` stops it."
}

# ---------------------------------------------------------------- status

cmd_status() {
  load_settings
  [[ -f $STATE/coordinator.toml ]] || die "no fleet in $STATE (run \`$0 up\` first, or set VANTAGE_3R_DIR)"
  status_cmd "$@"
}

# ---------------------------------------------------------------- down

# SIGTERM to what run/NAME.pid names, if it is still the process `up`
# started (its command line names WHAT), then SIGKILL after 15 s.
stop() {
  local name=$1 what=$2 file=$STATE/run/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$what"; then
    echo "stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      echo "$name ($pid) still running 15 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

cmd_down() {
  local purge=
  case ${1:-} in
  --purge) purge=1 ;;
  "") ;;
  *) usage ;;
  esac
  need_root
  load_settings
  check_settings
  # Agents first, so they deliver what they hold before the coordinator goes.
  for r in "${REGIONS[@]}"; do
    stop "$r-1" vantage-agent
  done
  stop coordinator vantage-coordinator
  stop target http.server
  for ns in "${REGIONS[@]/#/$PREFIX-}" "$PREFIX-target"; do
    if ip netns list | grep -qE "^$ns( |$)"; then
      echo "removing namespace $ns"
      ip netns del "$ns"
    fi
  done
  # Deleting a namespace deletes its veth pair, but not at once: what is
  # left may vanish between the look and the delete.
  for link in "${REGIONS[@]/#/$PREFIX-}" "$PREFIX-tg"; do
    ip link del "$link" 2>/dev/null || true
  done
  if ip -4 addr show dev lo | grep -q " $COORD_ADDR/32 "; then
    ip addr del "$COORD_ADDR/32" dev lo
  fi
  ip route del unreachable "$NET.0.0/16" 2>/dev/null || true
  if [[ -n $purge ]]; then
    if [[ -f $STATE/.three-regions ]]; then
      echo "removing $STATE"
      rm -rf "$STATE"
    elif [[ -e $STATE ]]; then
      die "$STATE was not made by this script (no .three-regions in it): not removed"
    fi
  fi
  echo "down"
}

case ${1:-} in
up) cmd_up ;;
status)
  shift
  cmd_status "$@"
  ;;
down)
  shift
  cmd_down "$@"
  ;;
*) usage ;;
esac
