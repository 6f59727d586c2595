#!/usr/bin/env bash
# The measurements of BENCHMARKS.md (issue 4) with `flashsale bench`, against a release server
# on this machine, each as interleaved rounds against the in-process hello peer.
#   bench/full/run.sh [rounds] [out dir]
# Env: CARGO_TARGET_DIR (default target), BUYERS (default 100000), CONNS (default 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}; OUT=${2:-bench-out}; BUYERS=${BUYERS:-100000}; CONNS=${CONNS:-64}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p flashsale --bin flashsale >/dev/null
BIN=$TARGET/release/flashsale
mkdir -p "$OUT"
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export RUST_LOG=warn
serve() { # extra env... → starts a fresh server on :18080
  env "$@" "$BIN" serve --listen 127.0.0.1:18080 --data-dir "$WORK/data-$RANDOM" &
  SERVER=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
B="$BIN bench --target http://127.0.0.1:18080 --peer hello --quiet"
R="--rounds $ROUNDS"

# P1: the rejection path: 100 units, a crowd of BUYERS with repeats and cheaters; almost every
# answer is a refusal (sold out, duplicate/window, limit, rate limited).
serve
$B $R --stock 100 --buyers "$BUYERS" --connections "$CONNS" --json "$OUT/p1.json" --report "$OUT/p1" | tee "$OUT/p1.txt"
stop

# P2 + P4: the durable buy: stock enough for everyone, no repeats or cheaters, admission and
# shedding out of the way: every answer is a 202 after the group-commit fsync; the monitor
# reads orders written per second into SQLite.
serve FLASHSALE_FILTERS__SALE_RATE_PER_SEC=0 FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000
$B $R --stock 10000000 --buyers "$BUYERS" --connections "$CONNS" --double-click-share 0 --repeat-share 0 \
   --cheater-share 0 --pay-share 0 --json "$OUT/p2.json" --report "$OUT/p2" | tee "$OUT/p2.txt"
stop

# P5: open loop at half the P1 maximum, then a 10x spike for 1 s on top of that base rate.
# --rate counts arriving *buyers* per second (each may click more than once), so the maximum is
# P1's buyers per second: the median over flashsale's rounds of buyers / round duration.
MAX=$(python3 - "$OUT/p1.json" <<'PY'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
ours = [r for r in report["rounds"] if r["kind"] == "flashsale"]
print(int(statistics.median(report["buyers"] / r["duration_s"] for r in ours)))
PY
)
HALF=$((MAX / 2))
echo "P5 base rate: $HALF buyers/s (half of P1's $MAX buyers/s)"
serve
$B $R --stock 100 --buyers $((HALF * 8)) --rate "$HALF" --connections 256 --json "$OUT/p5-half.json" --report "$OUT/p5-half" | tee "$OUT/p5-half.txt"
$B --rounds 1 --stock 100 --buyers $((HALF * 15)) --rate "$HALF" --spike-factor 10 --spike-secs 1 --connections 4000 \
   --json "$OUT/p5-spike.json" --report "$OUT/p5-spike" | tee "$OUT/p5-spike.txt"
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status)" | tee -a "$OUT/p5-spike.txt"
stop
