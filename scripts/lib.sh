# shellcheck shell=bash
# Shared set-up steps for scripts/demo.sh, scripts/test.sh and scripts/bench.sh.
#
# Everything the project needs on a fresh Debian 12 machine is installed here, idempotently:
#   - a Docker engine (Debian's docker.io), started in the background only when none answers;
#   - moto's standalone server (PyPI) in a project-local virtualenv under .dev/, on loopback;
#   - small local images built from Debian's busybox-static and bash-static (no registry here).
# Nothing here stops a daemon or container it did not start.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/.dev"
mkdir -p "$DEV"

MOTO_VERSION="5.2.1"
TEST_IMAGE="dockwatch-test:latest"
NOBASH_IMAGE="dockwatch-test-nobash:latest"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Timed steps: `step NAME` starts one (and ends the one before), `steps_summary` (on exit)
# prints how long each took, so that a slow machine or a slow mirror shows where the time went.
_T0=$SECONDS
_STEP=""
_STEP_T0=$SECONDS
_STEPS=()
_fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
step_end() {
  if [ -n "$_STEP" ]; then
    _STEPS+=("$(_fmt $((SECONDS - _STEP_T0)))  $_STEP")
    _STEP=""
  fi
}
step() {
  step_end
  _STEP="$*"
  _STEP_T0=$SECONDS
  log "$* [$(_fmt $((SECONDS - _T0)))]"
}
# step_took SECONDS NAME: a step that ran in the background, timed by itself.
step_took() { _STEPS+=("$(_fmt "$1")  $2"); }
steps_summary() {
  step_end
  [ ${#_STEPS[@]} -eq 0 ] && return 0
  log "steps:"
  local s
  for s in "${_STEPS[@]}"; do printf '    %s\n' "$s" >&2; done
  printf '    %s  in all\n' "$(_fmt $((SECONDS - _T0)))" >&2
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  # apt_install PKG... : install the Debian packages that are missing.
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The one prerequisite these scripts cannot install: the Rust toolchain (1.91 or newer, for
# edition 2024), from https://rustup.rs.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "dockwatch needs the Rust toolchain (1.91 or newer) to build: install it with rustup (https://rustup.rs), open a new shell, and run this again" >&2
    exit 2
  fi
  local v
  v="$(rustc --version 2>/dev/null | awk '{print $2}')"
  local major minor
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  if [ -z "$major" ] || [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 91 ]; }; then
    echo "dockwatch needs Rust 1.91 or newer (edition 2024); this is rustc ${v:-unknown}: run 'rustup update stable'" >&2
    exit 2
  fi
}

docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
  if command -v docker >/dev/null 2>&1 && docker_answers; then
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  if docker_answers; then return 0; fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "DOCKER_HOST=$DOCKER_HOST does not answer; unset it to use a local engine" >&2
    return 1
  fi
  log "starting dockerd in the background (log: $DEV/dockerd.log)"
  as_root sh -c "nohup dockerd >'$DEV/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do
    docker_answers && return 0
    sleep 0.5
  done
  echo "dockerd did not start; see $DEV/dockerd.log" >&2
  return 1
}

build_rootfs_image() {
  # build_rootfs_image TAG WITH_BASH
  local tag="$1" with_bash="$2" dir
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  apt_install busybox-static bash-static
  dir="$(mktemp -d)"
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/root"
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  if [ "$with_bash" = 1 ]; then
    cp /bin/bash-static "$dir/bin/bash"
  fi
  echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
  log "building image $tag (busybox-static, bash: $with_bash)"
  tar -C "$dir" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'LABEL dockwatch.test=1' \
    - "$tag" >/dev/null
  rm -rf "$dir"
}

ensure_images() {
  build_rootfs_image "$TEST_IMAGE" 1
  build_rootfs_image "$NOBASH_IMAGE" 0
}

ensure_moto_installed() {
  if [ ! -x "$DEV/venv/bin/moto_server" ]; then
    log "installing moto[server]==$MOTO_VERSION into $DEV/venv"
    python3 -m venv "$DEV/venv"
    "$DEV/venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

MOTO_PID=""
start_moto() {
  # Starts a moto server on a free loopback port; sets MOTO_URL. Stopped by stop_moto.
  ensure_moto_installed
  local port
  port="$(free_port)"
  # moto with the API-shape fixes listed in scripts/moto_server.py.
  "$DEV/venv/bin/python" "$ROOT/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$DEV/moto.log" 2>&1 &
  MOTO_PID=$!
  MOTO_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$MOTO_URL/moto-api/" 2>/dev/null; then
      export MOTO_URL
      return 0
    fi
    sleep 0.2
  done
  echo "moto server did not start; see $DEV/moto.log" >&2
  return 1
}

stop_moto() {
  if [ -n "$MOTO_PID" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=""
  fi
}
