#!/usr/bin/env bash
# Builds Tally (release) and starts it with demo data on http://127.0.0.1:8000.
# Extra arguments go to `tally serve`, e.g. `--listen 0.0.0.0:8000 --demo-events 10000000`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tally
exec ./target/release/tally --data-dir "${TALLY_DATA_DIR:-./data}" serve --demo "$@"
