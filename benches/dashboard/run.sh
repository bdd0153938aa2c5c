#!/usr/bin/env bash
# Dashboard load time for 200 checks x 3 regions (issue 7: under 1 s).
# Builds release binaries, starts a local target, a coordinator with 200
# checks and three agents (regions eu, us, ap) on loopback, lets them report
# for a while, then times the dashboard's first load in headless Chromium
# (coordinator/tests/browser/load-time.mjs; needs `npm ci` there and
# Debian's chromium). Everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
CHECKS=${CHECKS:-200}
SETTLE=${SETTLE:-40}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release -q -p vantage-coordinator -p vantage-agent
bin=target/release

# The target: a static server with one small file per check.
mkdir -p "$work/www"
for i in $(seq 1 "$CHECKS"); do echo ok > "$work/www/c$i"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)

token=bench-dashboard-token-0123456789
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
{
  printf 'version = 1\n\n[server]\ngrpc_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:0"\ndata_dir = "data"\nwindow = "10s"\n\n'
  printf '[[api.token]]\nname = "bench"\nrole = "viewer"\nsha256 = "%s"\n\n' "$sha"
  for i in $(seq 1 "$CHECKS"); do
    printf '[[check]]\nname = "c%d"\nkind = "http"\nurl = "http://127.0.0.1:%d/c%d"\nregions = ["eu", "us", "ap"]\ninterval = "10s"\n\n' "$i" "$port" "$i"
  done
} > "$work/vantage.toml"

"$bin/vantage-coordinator" run --config "$work/vantage.toml" > "$work/coord.out" 2> "$work/coord.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening" "$work/coord.out" 2>/dev/null && break; sleep 0.1; done
line=$(grep "listening" "$work/coord.out")
grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$line")
http=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$line")
for r in eu us ap; do
  VANTAGE_EGRESS_ALLOW=127.0.0.0/8 "$bin/vantage-agent" run --coordinator "http://$grpc" \
    --region "$r" --name "agent-$r" --spool-dir "$work/spool-$r" 2> "$work/agent-$r.log" &
  pids+=($!)
done
echo "coordinator http=$http, $CHECKS checks x 3 regions; letting them report for ${SETTLE}s"
sleep "$SETTLE"

VANTAGE_URL="http://$http/" VANTAGE_TOKEN="$token" ROWS="$CHECKS" CELLS=$((CHECKS * 3)) \
  node coordinator/tests/browser/load-time.mjs
