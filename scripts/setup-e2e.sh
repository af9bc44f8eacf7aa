#!/usr/bin/env bash
# Installs what the real-SDK end-to-end tests (crates/tally/tests/it/sdk_e2e*.rs) drive:
#   - npm packages in tests/e2e/node_modules, pinned by tests/e2e/package-lock.json:
#     posthog-node, @segment/analytics-node, posthog-js and playwright-core;
#   - a Python venv in tests/e2e/.venv with the pinned `posthog` and
#     `segment-analytics-python` from tests/e2e/python/requirements.txt;
#   - Debian's Chromium (/usr/bin/chromium) for posthog-js, when it is missing.
# Idempotent and quick when everything is present: each step records the hash of the
# file it installed from and is skipped while that hash is unchanged.
# TALLY_E2E_SKIP_BROWSER=1 skips the Chromium install (the browser test then skips,
# outside CI, or fails, in CI).
set -euo pipefail
cd "$(dirname "$0")/../tests/e2e"

say() { printf '    setup-e2e: %s\n' "$*"; }

# Runs `install` unless `stamp` already holds the hash of `source`; records it after.
stamped() {
    local source=$1 stamp=$2
    shift 2
    local want
    want=$(sha256sum "$source" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$source unchanged since the last install, skipping"
        return 0
    fi
    "$@"
    printf '%s\n' "$want" >"$stamp"
}

# --- Node packages ---------------------------------------------------------------
if ! command -v node >/dev/null 2>&1; then
    echo "node is required for the SDK end-to-end tests; install Node.js 20+" >&2
    exit 1
fi
npm_install() {
    npm ci --no-audit --no-fund --loglevel=error
}
# The stamps live inside what they describe, so deleting node_modules or .venv by hand
# also deletes the stamp and the next run reinstalls.
stamped package-lock.json node_modules/.tally-installed.sha256 npm_install

# --- Python SDKs -----------------------------------------------------------------
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "python3 (3.9+) is required for the Python SDK end-to-end test" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "creating the Python venv in tests/e2e/.venv"
    "$python" -m venv .venv
fi
pip_install() {
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --no-input -r python/requirements.txt
}
stamped python/requirements.txt .venv/.tally-installed.sha256 pip_install

# --- Chromium for posthog-js -----------------------------------------------------
# playwright-core drives Debian's Chromium: Playwright's own browser download is not
# reachable from CI.
if [ "${TALLY_E2E_SKIP_BROWSER:-0}" = 1 ]; then
    say "TALLY_E2E_SKIP_BROWSER=1: not installing Chromium"
elif [ -x /usr/bin/chromium ]; then
    say "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
else
    echo "chromium is missing and cannot be installed here (needs root and apt-get);" \
        "install Debian's 'chromium' package for the browser SDK test" >&2
    [ "${CI:-}" = true ] && exit 1
fi
