#!/usr/bin/env bash
# One measured spike through the filtering layers (issue 3): a sale of STOCK units, 20,000
# buyers whose clicks repeat (each buyer about 5 times), for SECS seconds at CONNS
# connections; prints how many requests each layer answered.
#   bench/quick/spike.sh [stock] [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
STOCK=${1:-1000}; SECS=${2:-5}; CONNS=${3:-64}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p flashsale --bin flashsale >/dev/null
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export RUST_LOG=warn
"$TARGET/release/flashsale" serve --listen 127.0.0.1:18080 --data-dir "$WORK/data" &
SERVER=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" 20000 > "$WORK/tokens"
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
now=$(date -u +%s)
SALE=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"spike\",\"price_cents\":1,\"stock\":$STOCK,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":1,\"payment_window_secs\":3600}" http://127.0.0.1:18080/api/admin/sales | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
curl -sf -X POST -H "$AUTH" "http://127.0.0.1:18080/api/admin/sales/$SALE/start" >/dev/null
BUY_PATH=$(curl -sf "http://127.0.0.1:18080/api/sales/$SALE/status" | python3 -c 'import json,sys;print(json.load(sys.stdin)["buy_path"])')
REPEAT=5 RUN=spike TOKENS="$WORK/tokens" BUY_PATH="$BUY_PATH" wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/quick/buy.lua http://127.0.0.1:18080 | grep -E "requests in|Requests/sec|Latency"
sleep 1
echo "server RSS after the spike: $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVER/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status))"
curl -sf -H "$AUTH" "http://127.0.0.1:18080/api/admin/sales/$SALE" | python3 -c '
import json,sys
v=json.load(sys.stdin); print("counters:", v["counters"]); print("layers:")
for k,n in v["layers"].items(): print(f"  {k:24} {n}")'
