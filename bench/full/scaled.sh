#!/usr/bin/env bash
# The scaled-out measurements of BENCHMARKS.md (issue 5), each one `flashsale bench` run with
# interleaved rounds: batched nodes (`--target`) against a classic node (`--versus`, same
# Redis, NATS and PostgreSQL, its own keys, stream and database) and the hello peer.
#   bench/full/scaled.sh [rounds] [out dir] [parts...]
# Parts (default: all): durable crowd two-nodes drain copy
#   durable    every answer a 202 after the durable write (stock 10 M, distinct buyers)
#   crowd      the flash-sale shape: 1,000 units, a crowd with repeats and cheaters
#   two-nodes  the durable shape spread over two batched nodes
#   drain      writers held at 0 during the crowd, then timed: orders written per second
#   copy       COPY of the drained orders into a copy of the orders table (the drain's peer)
# Env: BIN (prebuilt flashsale binary), BUYERS (default 150000), CONNS (default 64), and the
# engines' URLs REDIS, NATS, PG (default: the ones on this machine). Everything it creates on
# the engines is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}; OUT=${2:-bench-out/scaled}; shift 2 || true
PARTS=${*:-durable crowd two-nodes drain copy}
BUYERS=${BUYERS:-150000}; CONNS=${CONNS:-64}
REDIS=${REDIS:-redis://127.0.0.1:6379}; NATS=${NATS:-nats://127.0.0.1:4222}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
if [ -z "${BIN:-}" ]; then cargo build --release -p flashsale --bin flashsale >/dev/null; fi
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/flashsale}
mkdir -p "$OUT"
TAG=$(date +%s)
WORK=$(mktemp -d)
export FLASHSALE_ADMIN_TOKEN=bench-admin-token-0123456789
export FLASHSALE_BUYER_JWT_SECRET=bench-buyer-secret-0123456789abcdef01234
export FLASHSALE_BUY_PATH_SECRET=bench-buy-path-secret-0123456789abcdef0
export RUST_LOG=warn

nats_delete_stream() { # name: deletes a JetStream stream (and its dead-letter stream)
  python3 - "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", 4222)); s.recv(4096)
for name in (sys.argv[1], sys.argv[1] + "_DEAD"):
    s.sendall(f"CONNECT {{\"verbose\":false}}\r\nPUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\nPING\r\n".encode())
    s.recv(4096)
PY
}
cleanup() {
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
  for d in a b; do
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS fsbench_${d}_$TAG WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "$REDIS" --scan --pattern "{fs:bench-$d-$TAG:*" | xargs -r redis-cli -u "$REDIS" del >/dev/null
    nats_delete_stream "FSBENCH_${d}_$TAG"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
for d in a b; do psql "$PG/postgres" -qc "CREATE DATABASE fsbench_${d}_$TAG"; done

node() { # deployment (a|b) port design → starts a node in the background
  local d=$1 port=$2 design=$3
  env FLASHSALE_BACKENDS__STOCK="$REDIS" FLASHSALE_BACKENDS__QUEUE="$NATS" \
    FLASHSALE_BACKENDS__ORDERS="$PG/fsbench_${d}_$TAG" \
    FLASHSALE_REDIS__KEY_PREFIX="bench-$d-$TAG" FLASHSALE_NATS__STREAM="FSBENCH_${d}_$TAG" \
    FLASHSALE_RESERVATIONS__DESIGN="$design" \
    FLASHSALE_QUEUE__CAPACITY_RESERVATIONS=10000000 FLASHSALE_FILTERS__SALE_RATE_PER_SEC=0 \
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$d-$port" &
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
  echo "node on $port did not start" >&2; exit 1
}
node a 28080 batched
node b 28081 classic
A=http://127.0.0.1:28080; B=http://127.0.0.1:28081
BENCH="$BIN bench --quiet --rounds $ROUNDS --connections $CONNS"
DURABLE="--stock 10000000 --buyers $BUYERS --double-click-share 0 --repeat-share 0 --cheater-share 0 --pay-share 0 --payment-window-secs 600"
echo "machine: $(nproc) cores, $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

for part in $PARTS; do
  echo "== $part"
  case $part in
    durable)
      $BENCH --target $A --versus $B --peer hello $DURABLE --json "$OUT/durable.json" | tee "$OUT/durable.txt" | tail -4 ;;
    crowd)
      $BENCH --target $A --versus $B --peer hello --stock 1000 --buyers 100000 --json "$OUT/crowd.json" | tee "$OUT/crowd.txt" | tail -4 ;;
    two-nodes)
      node a 28082 batched
      $BENCH --target $A,http://127.0.0.1:28082 --peer hello $DURABLE --json "$OUT/two-nodes.json" | tee "$OUT/two-nodes.txt" | tail -3 ;;
    drain)
      $BENCH --target $A --versus $B --drain-writers 2 $DURABLE --json "$OUT/drain.json" | tee "$OUT/drain.txt" | tail -2 ;;
    copy)
      # COPY of the orders the runs wrote into a table of the same schema: the drain's peer.
      psql "$PG/fsbench_a_$TAG" -qc "\copy orders TO '$WORK/orders.csv' CSV"
      rows=$(wc -l < "$WORK/orders.csv")
      for r in $(seq 3); do
        psql "$PG/fsbench_a_$TAG" -qc "DROP TABLE IF EXISTS orders_copy; CREATE TABLE orders_copy (LIKE orders INCLUDING ALL)"
        start=$(date +%s.%N)
        psql "$PG/fsbench_a_$TAG" -qc "\copy orders_copy FROM '$WORK/orders.csv' CSV"
        end=$(date +%s.%N)
        python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'copy round $r: {int(sys.argv[3])} rows in {t:.2f} s = {int(sys.argv[3])/t:,.0f} rows/s')" "$start" "$end" "$rows"
      done | tee "$OUT/copy.txt" ;;
    *) echo "unknown part $part" >&2; exit 1 ;;
  esac
done
