#!/usr/bin/env bash
# Side-by-side load generators: vantage-agent load, wrk and oha against the
# same local nginx, one after another, three rounds.
#
#   benches/load/run.sh            # ROUNDS=3 DURATION=10 CONNS=50 by default
#
# The generator runs pinned to one core (GEN_CPU) and nginx to the other
# (NGINX_CPU), with 50 keep-alive connections for 10 s. For each tool the
# script prints req/s, p50/p95/p99 latency, CPU time per request, peak RSS and
# the req/s ratio to wrk. It installs what is missing (as root: nginx-light
# and wrk from Debian, oha with cargo). Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PORT=${PORT:-18089}
GEN_CPU=${GEN_CPU:-0}
NGINX_CPU=${NGINX_CPU:-1}
URL="http://127.0.0.1:${PORT}/"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk >/dev/null
fi
if ! need oha; then
  cargo install oha --locked
fi
if [ -z "${AGENT:-}" ]; then
  cargo build --release -q -p vantage-agent
  AGENT="$PWD/target/release/vantage-agent"
fi

work=$(mktemp -d)
trap 'kill "$nginx_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# nginx: one worker, a fixed small response, no logging, keep-alive forever.
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:${PORT};
    location / { return 200 "vantage bench ok\n"; }
  }
}
EOF
taskset -c "$NGINX_CPU" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do
  curl -fsS "$URL" >/dev/null 2>&1 && break
  sleep 0.1
done

cat >"$work/load.toml" <<EOF
[[scenario]]
name = "bench"
executor = "constant-vus"
vus = ${CONNS}
duration = "${DURATION}s"

[[scenario.request]]
method = "GET"
url = "${URL}"
EOF

# Runs "$@" pinned to the generator core under /usr/bin/time; output in $2.
timed() {
  local out=$1
  shift
  /usr/bin/time -v -o "$out.time" taskset -c "$GEN_CPU" "$@" >"$out" 2>"$out.err"
}

results="$work/results.tsv"
: >"$results"
for round in $(seq "$ROUNDS"); do
  timed "$work/vantage.$round" "$AGENT" load "$work/load.toml" --threads 1 --quiet --max-rate 1000000 \
    --out "json=$work/vantage.$round.json"
  timed "$work/wrk.$round" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
    -s benches/load/wrk-percentiles.lua "$URL"
  timed "$work/oha.$round" oha -z "${DURATION}s" -c "$CONNS" --no-tui \
    --output-format json "$URL"
  python3 benches/load/parse.py "$work" "$round" >>"$results"
done
python3 benches/load/parse.py --table "$results"
