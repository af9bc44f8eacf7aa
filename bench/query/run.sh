#!/usr/bin/env bash
# Query benchmark: Tally vs DuckDB vs ClickHouse (chdb) on the largest demo tenant.
#
#   bench/query/run.sh [EVENTS] [TENANTS]      (defaults 100000000 50)
#
# 1. Builds the release binaries (tally, query-bench).
# 2. Generates the data set once with `tally demo` into /tmp/tally-bench-data-EVENTS
#    (reused when complete; `.complete` marks a finished generation).
# 3. Creates a Python venv with the pinned duckdb and chdb-core (requirements.txt).
# 4. Runs bench.py: exports the largest tenant's events and identity map, loads them into
#    DuckDB and a chdb MergeTree, runs the five questions on all three engines (one
#    warm-up, RUNS timed rounds, engines interleaved) and prints medians, peak memory and
#    the results side by side.
#
# Environment: RUNS (default 5), TALLY_BENCH_DATA_DIR (default /tmp/tally-bench-data-EVENTS),
# TALLY_BENCH_VENV (default /tmp/tally-query-bench-venv), RESULT_JSON (default
# DATA_DIR.bench.json).
set -euo pipefail

EVENTS="${1:-100000000}"
TENANTS="${2:-50}"
RUNS="${RUNS:-5}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${TALLY_BENCH_DATA_DIR:-/tmp/tally-bench-data-$EVENTS}"
VENV="${TALLY_BENCH_VENV:-/tmp/tally-query-bench-venv}"
WORK="$DATA.bench-work"
RESULT_JSON="${RESULT_JSON:-$DATA.bench.json}"

case "$EVENTS$TENANTS" in
*[!0-9]*) echo "usage: $0 [EVENTS] [TENANTS] (whole numbers)" >&2; exit 2 ;;
esac

echo "== build (release)"
(cd "$ROOT" && cargo build --release --locked -p tally -p query-bench)
TALLY="$ROOT/target/release/tally"
QUERY_BENCH="$ROOT/target/release/query-bench"

echo "== data: $DATA ($EVENTS events, $TENANTS tenants)"
if [[ -f "$DATA/.complete" ]]; then
    if [[ "$(cat "$DATA/.complete")" != "$EVENTS $TENANTS" ]]; then
        echo "$DATA holds another data set ($(cat "$DATA/.complete")); set TALLY_BENCH_DATA_DIR" >&2
        exit 1
    fi
    echo "reusing the generated data set"
elif [[ -e "$DATA" ]]; then
    echo "$DATA exists but its generation did not finish (no .complete): remove it, or wait for the running \`tally demo\`" >&2
    exit 1
else
    # ~80k events/s on an idle 2-core machine: 100 million take 20+ minutes.
    /usr/bin/time -v "$TALLY" --data-dir "$DATA" demo --events "$EVENTS" --tenants "$TENANTS" --json \
        >"$DATA.demo.json" 2>"$DATA.demo.time"
    grep -E "Elapsed|Maximum resident" "$DATA.demo.time" || true
    echo "$EVENTS $TENANTS" >"$DATA/.complete"
fi
du -sh "$DATA/store"

echo "== python venv: $VENV"
if ! "$VENV/bin/python" -c "import duckdb, chdb" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r "$HERE/requirements.txt"
fi
"$VENV/bin/python" -c "import duckdb, chdb; print('duckdb', duckdb.__version__, '/ chdb', chdb.__version__)"

echo "== benchmark ($RUNS timed runs per query and engine)"
"$VENV/bin/python" "$HERE/bench.py" \
    --data-dir "$DATA" \
    --query-bench "$QUERY_BENCH" \
    --queries "$HERE/queries" \
    --work "$WORK" \
    --runs "$RUNS" \
    --json-out "$RESULT_JSON"
echo "full timings, results and SQL: $RESULT_JSON"
