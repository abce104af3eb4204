#!/usr/bin/env bash
# The benchmark: sets up the engine and images, then `cargo bench --bench ship`, which prints
# a table of W1-W4 (see benches/ship.rs), then `cargo bench --bench agent` (W5, W6), then
# `cargo bench --bench web` (W8, W9).
# DOCKWATCH_BENCH_QUICK=1 skips the 1 GiB W4.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_docker
ensure_images
apt_install time
cargo bench --locked --bench ship
# The agent's GetLogs against `docker logs` (W5, W6; see benches/agent.rs).
cargo bench --locked --bench agent
# dockwatch web: a 1M-line log's last page and every page back, a live 10,000 lines/s (W8, W9).
cargo bench --locked --bench web
