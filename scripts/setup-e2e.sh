#!/usr/bin/env bash
# Installs the real SDK packages the end-to-end test drives, from the npm registry,
# into tests/e2e/node_modules (pinned by tests/e2e/package-lock.json when present).
set -euo pipefail
cd "$(dirname "$0")/../tests/e2e"
if ! command -v node >/dev/null 2>&1; then
    echo "node is required for the SDK end-to-end test; install Node.js 20+" >&2
    exit 1
fi
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
