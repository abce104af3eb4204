#!/usr/bin/env bash
# Builds the Debian package.
#
#   ./scripts/package.sh
#       release build (fat LTO: ~10 min on 2 cores) -> target/debian/dockwatch_<version>-1_<arch>.deb
#   ./scripts/package.sh --binary target/debug/dockwatch
#       packages a binary already built (the suite's smoke test packages the one it tested)
#       -> target/deb-smoke/debian/dockwatch_<version>-1_<arch>.deb
#
# The man page and the shell completions are generated from the binary's own clap
# definitions (`dockwatch man`, `dockwatch completions SHELL`) into target/assets/ first.
# Prints the path of the package on stdout.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
CARGO_DEB_VERSION="3.6.4"
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  log "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

binary=""
case "${1:-}" in
  "") ;;
  --binary) binary="${2:?--binary needs a path}" ;;
  *) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
esac

args=(--no-build --locked)
if [ -z "$binary" ]; then
  cargo build --locked --release --bin dockwatch
  bin=target/release/dockwatch
else
  [ -x "$binary" ] || { echo "$0: no executable $binary: build it first" >&2; exit 2; }
  # cargo-deb takes the binary from <target dir>/release: a target dir of its own holds a
  # link to the given one (the real target/release is left alone).
  export CARGO_TARGET_DIR="$ROOT/target/deb-smoke"
  mkdir -p "$CARGO_TARGET_DIR/release"
  ln -f "$binary" "$CARGO_TARGET_DIR/release/dockwatch" 2>/dev/null \
    || cp "$binary" "$CARGO_TARGET_DIR/release/dockwatch"
  bin="$CARGO_TARGET_DIR/release/dockwatch"
  args+=(--fast)
fi

mkdir -p target/assets
"$bin" man | gzip -9n > target/assets/dockwatch.1.gz
"$bin" completions bash > target/assets/dockwatch.bash
"$bin" completions zsh > target/assets/_dockwatch
"$bin" completions fish > target/assets/dockwatch.fish

cargo deb "${args[@]}" | tail -1
