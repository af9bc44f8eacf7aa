#!/usr/bin/env bash
# Demo-data load benchmark: how long `tally demo --events N` takes to generate events and
# write them as sorted Parquet (plus identity effects into SQLite), on this machine.
# Usage: bench/demo-load.sh [events] [tenants]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
TENANTS=${2:-50}
cargo build --release --locked -p tally
DATA=$(mktemp -d /tmp/tally-demo-XXXXXX)
trap 'rm -rf "$DATA"' EXIT
/usr/bin/time -v ./target/release/tally --data-dir "$DATA" demo --events "$EVENTS" --tenants "$TENANTS" --json 2> "$DATA/time.txt" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"events": r["events"], "seconds": round(r["seconds"],1), "events_per_second": round(r["events"]/r["seconds"])}))'
grep -E "Maximum resident|Elapsed" "$DATA/time.txt"
du -sh "$DATA/store" | awk '{print "store size: " $1}'
