#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   1. installs what the tests need that the machine may lack (Node packages of the
#      real PostHog and Segment SDKs for the end-to-end test),
#   2. checks formatting and lints (clippy with warnings as errors),
#   3. builds and runs every test in the debug profile.
# Everything runs in one target directory; nothing is built in two profiles.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A debug build of the workspace and its ~25 test binaries needs roughly 10 GB;
# a full disk shows up as an obscure linker crash (SIGBUS), so say so up front.
free_kib=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kib:-0}" -lt $((12 * 1024 * 1024)) ]; then
    printf 'warning: only %s MiB free on this disk; the build needs about 10 GB\n' "$((free_kib / 1024))" >&2
fi

step "Installing end-to-end test dependencies (npm: posthog-node, @segment/analytics-node)"
./scripts/setup-e2e.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Tests"
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests, so those go first; nextest's summary line
    # ("N tests run: N passed") is then the last thing printed.
    cargo test --workspace --locked --doc
    # nextest runs test binaries in parallel processes.
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
