#!/usr/bin/env bash
# Open-model accuracy: a fixed 5,000 req/s for 30 s (constant-arrival-rate)
# against a local nginx, generator and nginx on separate cores. Prints the
# achieved rate and its error against the target, dropped iterations, and p99
# with and without coordinated-omission correction.
#
#   benches/load/rate.sh      # RATE=5000 DURATION=30 by default
set -euo pipefail
cd "$(dirname "$0")/../.."

RATE=${RATE:-5000}
DURATION=${DURATION:-30}
PORT=${PORT:-18090}
GEN_CPU=${GEN_CPU:-0}
NGINX_CPU=${NGINX_CPU:-1}
URL="http://127.0.0.1:${PORT}/"

command -v nginx >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
if [ -z "${AGENT:-}" ]; then
  cargo build --release -q -p vantage-agent
  AGENT="$PWD/target/release/vantage-agent"
fi

work=$(mktemp -d)
trap 'kill "$nginx_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:${PORT};
    location / { return 200 "vantage bench ok\n"; }
  }
}
CONF
taskset -c "$NGINX_CPU" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do curl -fsS "$URL" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$work/rate.toml" <<CONF
[[scenario]]
name = "rate"
executor = "constant-arrival-rate"
rate = ${RATE}
timeUnit = "1s"
duration = "${DURATION}s"
preAllocatedVUs = 50
maxVUs = 200

[[scenario.request]]
method = "GET"
url = "${URL}"
CONF

taskset -c "$GEN_CPU" "$AGENT" load "$work/rate.toml" --threads 1 --quiet \
  --out "json=$work/rate.json" >"$work/summary.txt"
python3 - "$work/rate.json" "$RATE" "$DURATION" <<'PY'
import json, sys
path, rate, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
summary = [json.loads(l) for l in open(path) if '"summary"' in l][-1]
m = summary["metrics"]
count = m["http_reqs"]["count"]
achieved = count / duration
pick = lambda t, k: t.get(k, t.get(k.replace("(", "").replace(")", "")))
print(f"target {rate:.0f} req/s for {duration:.0f} s: {count} requests, "
      f"{achieved:.1f} req/s ({(achieved - rate) / rate * 100:+.2f} %)")
print(f"dropped iterations: {summary['scenarios'][0].get('dropped_iterations')}")
print(f"p99 corrected {pick(m['http_req_duration_corrected'], 'p(99)'):.3f} ms, "
      f"uncorrected {pick(m['http_req_duration'], 'p(99)'):.3f} ms")
PY
