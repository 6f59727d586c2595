#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable whatever else the machine is doing
# (user-space instructions only; the kernel's TCP work is not counted). Serves flashsale and the
# hello peer under valgrind, zeroes the counters after setup, loads each with wrk for a while,
# dumps, and divides by the requests wrk completed.
#   bench/quick/callgrind.sh [seconds] [out dir]
# Env: CARGO_TARGET_DIR, PORT (28180), PEER_PORT (28190).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}; OUT=${2:-callgrind-out}
TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PORT:-28180}; PEER_PORT=${PEER_PORT:-28190}
# BIN and HELLO may name prebuilt binaries; otherwise build them.
if [ -z "${BIN:-}" ]; then
  cargo build --release -p flashsale --bin flashsale --example hello >/dev/null
fi
BIN=${BIN:-$TARGET/release/flashsale}; HELLO=${HELLO:-$TARGET/release/examples/hello}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000
export FLASHSALE_FILTERS__SALE_RATE_PER_SEC=0
export RUST_LOG=warn
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" 20000 > "$WORK/tokens"
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
BASE=http://127.0.0.1:$PORT
wait_up() { for _ in $(seq 600); do curl -sf "$1" >/dev/null 2>&1 && return; sleep 0.2; done; echo "not up: $1"; exit 1; }
mk_sale() { # stock limit → sale id (started)
  local now id; now=$(date -u +%s)
  id=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"bench\",\"price_cents\":1,\"stock\":$1,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":$2,\"payment_window_secs\":3600}" "$BASE/api/admin/sales" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  curl -sf -X POST -H "$AUTH" "$BASE/api/admin/sales/$id/start" >/dev/null
  echo "$id"
}
path_of() { curl -sf "$BASE/api/sales/$1/status" | python3 -c 'import json,sys;print(json.load(sys.stdin)["buy_path"])'; }
# wrk under valgrind's pace: few connections, one thread.
load() { wrk -t1 -c8 -d"${SECS}s" -s bench/quick/buy.lua "$@" | awk '/requests in/ {print $1}'; }
measure() { # name pid url path → prints "name requests instructions per_request"
  local name=$1 pid=$2 url=$3 path=$4
  callgrind_control -z "$pid" >/dev/null
  local n; n=$(RUN="$name" TOKENS="$WORK/tokens" BUY_PATH="$path" load "$url")
  callgrind_control -d "$name" "$pid" >/dev/null
  sleep 1
  local file; file=$(ls -t "$OUT"/callgrind.out.*."$name"* 2>/dev/null | head -1 || true)
  [ -z "$file" ] && file=$(ls -t "$OUT"/callgrind.out* | head -1)
  local ir; ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$name $n $ir $((ir / n))"
}

valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.hello.%p" "$HELLO" "127.0.0.1:$PEER_PORT" 2>/dev/null &
HELLO_PID=$!
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.flashsale.%p" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" 2>/dev/null &
SERVER_PID=$!
wait_up "$BASE/readyz"
SOLD=$(mk_sale 1 1); SOLD_PATH=$(path_of "$SOLD")
TOKENS="$WORK/tokens" BUY_PATH="$SOLD_PATH" wrk -t1 -c1 -d2s -s bench/quick/buy.lua "$BASE" >/dev/null # sells the one unit
BIG=$(mk_sale 10000000 100); BIG_PATH=$(path_of "$BIG")
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PEER_PORT) 2>/dev/null && break; sleep 0.2; done
echo "name requests instructions instructions_per_request" | tee "$OUT/summary.txt"
measure hello "$HELLO_PID" "http://127.0.0.1:$PEER_PORT" /x | tee -a "$OUT/summary.txt"
# The router and its layers with no handler work: POST /healthz is answered 405 by the
# router's fallback, through every layer a route has.
measure stack "$SERVER_PID" "$BASE" /healthz | tee -a "$OUT/summary.txt"
measure rejection "$SERVER_PID" "$BASE" "$SOLD_PATH" | tee -a "$OUT/summary.txt"
measure accepted "$SERVER_PID" "$BASE" "$BIG_PATH" | tee -a "$OUT/summary.txt"
