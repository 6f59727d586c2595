#!/usr/bin/env bash
# P4 (and its scaled-out twin): orders written per second by the order writers alone. Fills the
# durable queue with writers at 0 (wrk buying a big sale), then sets the writer count and times
# the queue draining into the order store.
#   bench/full/drain.sh [writers] [fill seconds] [batch_max]
# Env: CARGO_TARGET_DIR, BIN (prebuilt binary), PORT (18080), and any FLASHSALE_* for the server
# (e.g. the scaled-out backends: FLASHSALE_BACKENDS__STOCK=redis://... and so on).
set -euo pipefail
cd "$(dirname "$0")/../.."
WRITERS=${1:-2}; FILL_SECS=${2:-6}; BATCH=${3:-1000}
TARGET=${CARGO_TARGET_DIR:-target}; PORT=${PORT:-18080}
if [ -z "${BIN:-}" ]; then cargo build --release -p flashsale --bin flashsale >/dev/null; fi
BIN=${BIN:-$TARGET/release/flashsale}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export FLASHSALE_BUY_PATH_SECRET=${FLASHSALE_BUY_PATH_SECRET:-bench-buy-path-secret-0123456789abcdef0}
export FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000
export FLASHSALE_FILTERS__SALE_RATE_PER_SEC=0
export FLASHSALE_WRITERS__COUNT=0
export FLASHSALE_WRITERS__BATCH_MAX=$BATCH
export RUST_LOG=warn
BASE=http://127.0.0.1:$PORT
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" &
for _ in $(seq 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
# 200,000 buyers: at tens of thousands of buys a second, fewer would come back within the
# buyer window (1 s) and be answered from it, not bought.
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" 200000 > "$WORK/tokens"
now=$(date -u +%s)
SALE=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"drain\",\"price_cents\":1,\"stock\":10000000,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":100,\"payment_window_secs\":3600}" "$BASE/api/admin/sales" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
curl -sf -X POST -H "$AUTH" "$BASE/api/admin/sales/$SALE/start" >/dev/null
BUY_PATH=$(curl -sf "$BASE/api/sales/$SALE/status" | python3 -c 'import json,sys;print(json.load(sys.stdin)["buy_path"])')
RUN=drain TOKENS="$WORK/tokens" BUY_PATH="$BUY_PATH" wrk -t2 -c64 -d"${FILL_SECS}s" -s bench/quick/buy.lua "$BASE" >/dev/null
queued() { curl -sf -H "$AUTH" "$BASE/api/admin/sales/$SALE" | python3 -c 'import json,sys;print(json.load(sys.stdin)["counters"]["queued"])'; }
TOTAL=$(queued)
START=$(date +%s.%N)
curl -sf -X PUT -H "$AUTH" -H 'Content-Type: application/json' -d "{\"count\":$WRITERS}" "$BASE/api/admin/writers" >/dev/null
while [ "$(queued)" != "0" ]; do sleep 0.05; done
END=$(date +%s.%N)
python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'drained {n} reservations with {sys.argv[4]} writers (batch {sys.argv[5]}) in {t:.2f} s: {n/t:,.0f} orders/s')" "$START" "$END" "$TOTAL" "$WRITERS" "$BATCH"
