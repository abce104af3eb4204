#!/usr/bin/env bash
# Builds the Debian package: target/debian/dockwatch_<version>_<arch>.deb.
#
#   ./scripts/package.sh            # release build (fat LTO: ~10 min on 2 cores)
#   ./scripts/package.sh --profile dev --no-build
#                                   # package the binary the tests built (the suite's smoke test)
#
# The man page and the shell completions are generated from the binary's own clap
# definitions (`dockwatch man`, `dockwatch completions SHELL`) into target/assets/ first.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
CARGO_DEB_VERSION="3.6.4"
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: $0 [--profile release|dev] [--no-build]" >&2; exit 2 ;;
  esac
done
dir=release
[ "$profile" = dev ] && dir=debug
if [ $build = 1 ]; then
  cargo build --locked --profile "$profile" --bin dockwatch
fi
bin="target/$dir/dockwatch"
[ -x "$bin" ] || { echo "no $bin: build it first (or drop --no-build)" >&2; exit 2; }

mkdir -p target/assets
"$bin" man | gzip -9n > target/assets/dockwatch.1.gz
"$bin" completions bash > target/assets/dockwatch.bash
"$bin" completions zsh > target/assets/_dockwatch
"$bin" completions fish > target/assets/dockwatch.fish

args=(--no-build --locked)
[ "$profile" = dev ] && args+=(--profile dev --fast)
cargo deb "${args[@]}"
