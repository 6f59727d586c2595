#!/usr/bin/env bash
# The accepted-buy path under load, for a profile (issue 16): one server, one sale of 10 M
# units, wrk posting new buyers for SECS seconds; prints wrk's rate and latency, the server's
# CPU over the load (from /proc/PID/stat; ticks of 10 ms, so 100 % is one core) and the queue
# depth a second later (did the writers keep up).
#   BIN=target/release/flashsale ENGINE=log SECS=10 CONNS=64 [PERF=/tmp/perf.data] bench/quick/profile-buy.sh
# Any FLASHSALE_* setting passes through (e.g. FLASHSALE_WRITERS__COUNT=0).
# With PERF set, `perf record -F 999 -g` samples the server during the load into that file.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/flashsale}; SECS=${SECS:-10}; CONNS=${CONNS:-64}; PORT=${PORT:-18180}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000
export FLASHSALE_QUEUE__ENGINE=${ENGINE:-log}
export RUST_LOG=warn
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" &
SPID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
python3 bench/quick/tokens.py "$FLASHSALE_BUYER_JWT_SECRET" 200000 > "$WORK/tokens"
AUTH="Authorization: Bearer $FLASHSALE_ADMIN_TOKEN"
now=$(date -u +%s)
id=$(curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"bench\",\"price_cents\":1,\"stock\":10000000,\"starts_at\":\"$(date -u -d @$((now+3600)) +%FT%TZ)\",\"ends_at\":\"$(date -u -d @$((now+7200)) +%FT%TZ)\",\"per_buyer_limit\":100,\"payment_window_secs\":3600}" http://127.0.0.1:$PORT/api/admin/sales | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
curl -sf -X POST -H "$AUTH" "http://127.0.0.1:$PORT/api/admin/sales/$id/start" >/dev/null
P=$(curl -sf "http://127.0.0.1:$PORT/api/sales/$id/status" | python3 -c 'import json,sys;print(json.load(sys.stdin)["buy_path"])')
t0=$(awk '{print $14+$15}' /proc/$SPID/stat)
PERF_PID=
if [ -n "${PERF:-}" ]; then perf record -F 999 -g -o "$PERF" -p $SPID -- sleep $SECS >/dev/null 2>&1 & PERF_PID=$!; fi
RUN=p TOKENS="$WORK/tokens" BUY_PATH="$P" wrk -t2 -c$CONNS -d${SECS}s -s bench/quick/buy.lua http://127.0.0.1:$PORT | grep -E "Requests/sec|Latency"
t1=$(awk '{print $14+$15}' /proc/$SPID/stat)
echo "server CPU: $(( (t1-t0) )) ticks over ${SECS}s = $(( (t1-t0) / SECS ))%"
sleep 1
curl -s http://127.0.0.1:$PORT/metrics | grep -E "^flashsale_queue_depth" || true
# Let perf finish writing its file.
if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; fi
