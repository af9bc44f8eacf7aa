#!/usr/bin/env bash
# Ingest benchmark: sustained durable events/s into the native batch endpoint, then
# acknowledgement latency at half that rate. Server and load generator run on the same
# machine (loopback), so they share its cores; the figures are for the whole box.
#
# Usage: bench/ingest.sh [seconds]   (results: JSON on stdout, recorded in docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-20}
cargo build --release --locked -p tally -p ingest-load
DATA=$(mktemp -d /tmp/tally-bench-XXXXXX)
PORT=${PORT:-18123}
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
KEY=$(./target/release/tally --data-dir "$DATA" tenant create bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["write_key"])')
./target/release/tally --data-dir "$DATA" --log warn serve --listen 127.0.0.1:$PORT &
SERVER=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done

echo "== machine"; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | head -2
echo "== max throughput (${SECONDS_PER_RUN}s, batches of 100)"
MAX=$(./target/release/ingest-load --url http://127.0.0.1:$PORT --write-key "$KEY" --seconds "$SECONDS_PER_RUN" --concurrency 64)
echo "$MAX"
RATE=$(echo "$MAX" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["events_per_second"]) // 2)')
echo "== latency at half load: $RATE events/s"
./target/release/ingest-load --url http://127.0.0.1:$PORT --write-key "$KEY" --seconds "$SECONDS_PER_RUN" --concurrency 64 --rate "$RATE"
