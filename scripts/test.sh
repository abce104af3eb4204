#!/usr/bin/env bash
# The second command: set up everything the tests need (Docker engine, moto, local images),
# then run formatting and lint checks and the whole test suite.
#
#   ./scripts/test.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
trap 'stop_moto; steps_summary' EXIT

step "Docker engine"
ensure_docker
step "local images, the local registry, Chromium"
ensure_images
apt_install docker-registry   # a local registry for the pull test (started by the test itself)
apt_install chromium          # a real browser for dockwatch web's page (headless)
step "moto"
start_moto
log "moto at $MOTO_URL"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
step "building the tests"
cargo test --locked --no-run --quiet
step "tests"
# The e2e binaries run dockwatch in scratch directories under this one (see tests/e2e/common.rs).
rm -rf "${TMPDIR:-/tmp}/dockwatch-e2e"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
step "the Debian package"
./scripts/deb_smoke.sh
