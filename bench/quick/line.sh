#!/usr/bin/env bash
# The fair line at scale (issue 14): a line of LINE buyers on the embedded default, then
# interleaved rounds of hello, line/me and joins (new buyers) against it, and the server's
# memory per member.
#   bench/quick/line.sh [rounds] [seconds] [connections] [line length]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-64}; LINE=${4:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN:-}" ]; then
  cargo build --release -p flashsale --bin flashsale --example hello >/dev/null
fi
BIN=${BIN:-$TARGET/release/flashsale}; HELLO=${HELLO:-$TARGET/release/examples/hello}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export RUST_LOG=warn
PORT=${PORT:-18080}; PEER_PORT=${PEER_PORT:-18090}
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" &
SERVER=$!
"$HELLO" 127.0.0.1:$PEER_PORT 2>/dev/null &
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
EXTRA=$((ROUNDS * SECS * 40000))
echo "== $((LINE + EXTRA)) buyer tokens"
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" $((LINE + EXTRA)) > "$WORK/tokens"
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
now=$(date -u +%s)
SALE=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"line bench\",\"price_cents\":1,\"stock\":1000,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":1,\"payment_window_secs\":3600,\"waiting_room\":{\"opens_at\":\"$(date -u -d @$((now+1)) +%FT%TZ)\",\"admit_per_sec\":100,\"admission_secs\":600}}" http://127.0.0.1:$PORT/api/admin/sales | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
sleep 2
rss() { awk '/VmRSS/ {print $2}' /proc/$SERVER/status; }
RSS0=$(rss)
echo "== filling the line with $LINE buyers (joins before the start, 512 connections)"
t0=$(date +%s)
TOKENS="$WORK/tokens" SALE=$SALE MODE=join FROM=0 COUNT=$LINE THREADS=2 \
  wrk -t2 -c512 -d$((LINE / 5000 + 30))s -s bench/quick/line.lua http://127.0.0.1:$PORT >/dev/null &
FILL=$!
# Stop the fill once every buyer is in (the status's length comes from the node's summary).
while kill -0 $FILL 2>/dev/null; do
  sleep 5
  len=$(curl -sf http://127.0.0.1:$PORT/api/sales/$SALE/status | python3 -c 'import json,sys;print(json.load(sys.stdin)["line"].get("length",0))' || echo 0)
  # Ask line/me once so the node refreshes its summary.
  curl -sf -o /dev/null -H "Authorization: Bearer $(head -1 "$WORK/tokens")" http://127.0.0.1:$PORT/api/sales/$SALE/line/me || true
  echo "   $len in line after $(( $(date +%s) - t0 )) s"
  [ "$len" -ge "$LINE" ] && kill $FILL 2>/dev/null && break
done
wait $FILL 2>/dev/null || true
RSS1=$(rss)
echo "== memory: $(( (RSS1 - RSS0) * 1024 / LINE )) bytes of server RSS per member ($RSS0 kB before, $RSS1 kB after); line log $(stat -c %s "$WORK/data/line.log") bytes"
curl -sf -X POST -H "$AUTH" http://127.0.0.1:$PORT/api/admin/sales/$SALE/start >/dev/null
# The first call after the start draws the line.
curl -sf -o /dev/null -H "Authorization: Bearer $(head -1 "$WORK/tokens")" http://127.0.0.1:$PORT/api/sales/$SALE/line/me
rps() { wrk -t2 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
echo "round hello_rps line_me_rps join_rps  (line of $LINE, drawn; line/me of members; joins of new buyers)"
for r in $(seq "$ROUNDS"); do
  h=$(TOKENS="$WORK/tokens" SALE=x MODE=me COUNT=100000 rps -s bench/quick/line.lua http://127.0.0.1:$PEER_PORT)
  m=$(TOKENS="$WORK/tokens" SALE=$SALE MODE=me FROM=$(( (r - 1) * 100000 )) COUNT=100000 rps -s bench/quick/line.lua http://127.0.0.1:$PORT)
  j=$(TOKENS="$WORK/tokens" SALE=$SALE MODE=join FROM=$(( LINE + (r - 1) * SECS * 40000 )) COUNT=$((SECS * 40000)) rps -s bench/quick/line.lua http://127.0.0.1:$PORT)
  echo "$r $h $m $j"
done
curl -sf http://127.0.0.1:$PORT/api/sales/$SALE/status | python3 -c 'import json,sys;print("line after the rounds:", json.load(sys.stdin)["line"])'
