#!/usr/bin/env bash
# Measures what each way of taking a container's output costs the container itself: W1
# (3,000,000 short lines from `seq`) under the json-file driver with and without an attached
# reader, `none` with an attached reader, the `local` driver, and a logging plugin that
# discards everything (scripts/null_log_plugin.rs), with and without the engine's dual-logging
# cache. The container's own time (State.StartedAt to FinishedAt), medians of 3 rounds.
#
# On a private engine (its own network namespace, data root, exec root and socket; vfs
# storage), as the benchmark does for the awslogs driver: installing a plugin on the shared
# engine is not ours to do. Stopped and removed at the end.
#
#   ./scripts/log_drivers.sh        (about 4 minutes)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_docker
ensure_images

dir="$(mktemp -d /tmp/dockwatch-log-drivers.XXXXXX)"
host="unix://$dir/docker.sock"
cleanup() {
  [ -f "$dir/dockerd.pid" ] && kill "$(cat "$dir/dockerd.pid")" 2>/dev/null
  sleep 2
  rm -rf "$dir" 2>/dev/null || true
}
trap cleanup EXIT
log "private engine in $dir"
unshare --net -- sh -c 'ip link set lo up && exec dockerd "$@"' dockerd \
  --data-root "$dir/root" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" -H "$host" \
  --bridge=none --iptables=false --ip-masq=false --ip-forward=false --storage-driver vfs \
  >"$dir/dockerd.log" 2>&1 &
for _ in $(seq 1 150); do docker -H "$host" version >/dev/null 2>&1 && break; sleep 0.2; done
d() { docker -H "$host" "$@"; }
docker save "$TEST_IMAGE" | d load -q >/dev/null

mkdir -p "$dir/plugin/rootfs/run/docker/plugins" "$dir/plugin/rootfs/tmp"
rustc -O -C target-feature=+crt-static --edition 2021 scripts/null_log_plugin.rs \
  -o "$dir/plugin/rootfs/dwnull"
cat >"$dir/plugin/config.json" <<'JSON'
{"description": "dockwatch measurement: drain and discard", "documentation": "-",
 "entrypoint": ["/dwnull"], "network": {"type": "host"},
 "interface": {"types": ["docker.logdriver/1.0"], "socket": "dwnull.sock"}}
JSON
d plugin create dwnull "$dir/plugin" >/dev/null
d plugin enable dwnull >/dev/null

ran() {
  d inspect -f '{{.State.StartedAt}} {{.State.FinishedAt}}' "$1" | python3 -c '
import sys, datetime
def t(s):
    day, frac = s.rstrip("Z").split(".")
    return datetime.datetime.fromisoformat(day + "+00:00").timestamp() + float("0." + frac)
a, b = sys.stdin.read().split()
print(f"{t(b) - t(a):.2f}")'
}
W="seq 1 3000000"
modes=(json-file json-file+attach none+attach local plugin plugin-no-cache)
declare -A times
for round in 1 2 3; do
  for m in "${modes[@]}"; do
    case $m in
      json-file) id=$(d run -d --log-driver json-file "$TEST_IMAGE" bash -c "$W"); d wait "$id" >/dev/null ;;
      json-file+attach) id=$(d create --log-driver json-file "$TEST_IMAGE" bash -c "$W"); d start -a "$id" >/dev/null ;;
      none+attach) id=$(d create --log-driver none "$TEST_IMAGE" bash -c "$W"); d start -a "$id" >/dev/null ;;
      local) id=$(d run -d --log-driver local "$TEST_IMAGE" bash -c "$W"); d wait "$id" >/dev/null ;;
      plugin) id=$(d run -d --log-driver dwnull "$TEST_IMAGE" bash -c "$W"); d wait "$id" >/dev/null ;;
      plugin-no-cache) id=$(d run -d --log-driver dwnull --log-opt cache-disabled=true "$TEST_IMAGE" bash -c "$W"); d wait "$id" >/dev/null ;;
    esac
    times[$m]="${times[$m]:-} $(ran "$id")"
    d rm -f "$id" >/dev/null
  done
done
echo "| W1, 3M short lines: the container's own time | median of 3 | rounds |"
echo "|---|---|---|"
for m in "${modes[@]}"; do
  med=$(echo ${times[$m]} | tr ' ' '\n' | sort -n | sed -n 2p)
  echo "| $m | $med s |${times[$m]} |"
done
