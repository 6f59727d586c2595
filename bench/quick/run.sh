#!/usr/bin/env bash
# Quick first measurement (issue 2): flashsale's buy path vs an axum hello-world peer served by
# the same accept loop, both loaded by wrk the same way, in interleaved rounds.
#   bench/quick/run.sh [rounds] [seconds] [connections]
# The full load generator is `flashsale bench` (issue 4).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-64}
TARGET=${CARGO_TARGET_DIR:-target}
# BIN and HELLO may name prebuilt binaries (e.g. to compare two builds); otherwise build them.
if [ -z "${BIN:-}" ]; then
  cargo build --release -p flashsale --bin flashsale --example hello >/dev/null
fi
BIN=${BIN:-$TARGET/release/flashsale}; HELLO=${HELLO:-$TARGET/release/examples/hello}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000
export RUST_LOG=warn
"$BIN" serve --listen 127.0.0.1:${PORT:-18080} --data-dir "$WORK/data" & 
"$HELLO" 127.0.0.1:${PEER_PORT:-18090} 2>/dev/null &
for _ in $(seq 100); do curl -sf http://127.0.0.1:${PORT:-18080}/readyz >/dev/null && break; sleep 0.1; done
# 200,000 buyers: at tens of thousands of buys a second, fewer would come back within the
# buyer window (1 s) and be answered from it, not bought.
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" 200000 > "$WORK/tokens"
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
mk_sale() { # stock limit → sale id (started)
  local now; now=$(date -u +%s)
  local id; id=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"bench\",\"price_cents\":1,\"stock\":$1,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":$2,\"payment_window_secs\":3600}" http://127.0.0.1:${PORT:-18080}/api/admin/sales | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  curl -sf -X POST -H "$AUTH" "http://127.0.0.1:${PORT:-18080}/api/admin/sales/$id/start" >/dev/null
  echo "$id"
}
path_of() { curl -sf "http://127.0.0.1:${PORT:-18080}/api/sales/$1/status" | python3 -c 'import json,sys;print(json.load(sys.stdin)["buy_path"])'; }
rps() { wrk -t2 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
SOLD=$(mk_sale 1 1); SOLD_PATH=$(path_of "$SOLD")
TOKENS="$WORK/tokens" BUY_PATH="$SOLD_PATH" wrk -t1 -c1 -d1s -s bench/quick/buy.lua http://127.0.0.1:${PORT:-18080} >/dev/null # sells the one unit
BIG=$(mk_sale 10000000 100); BIG_PATH=$(path_of "$BIG")
echo "round hello_rps rejection_rps accepted_rps  (rejection = sold out: JWT, path token, phase, ledger; accepted = 202 after group-commit fsync)"
for r in $(seq "$ROUNDS"); do
  h=$(TOKENS="$WORK/tokens" BUY_PATH="/x" rps -s bench/quick/buy.lua http://127.0.0.1:${PEER_PORT:-18090})
  j=$(TOKENS="$WORK/tokens" BUY_PATH="$SOLD_PATH" rps -s bench/quick/buy.lua http://127.0.0.1:${PORT:-18080})
  a=$(RUN="r$r" TOKENS="$WORK/tokens" BUY_PATH="$BIG_PATH" rps -s bench/quick/buy.lua http://127.0.0.1:${PORT:-18080})
  echo "$r $h $j $a"
done
curl -sf -H "$AUTH" "http://127.0.0.1:${PORT:-18080}/api/admin/sales/$BIG" | python3 -c 'import json,sys;c=json.load(sys.stdin)["counters"];print("big sale counters:",c)'
