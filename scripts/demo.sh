#!/usr/bin/env bash
# The first command: on a fresh Debian machine, set everything up and run dockwatch's main job
# end to end against a local AWS-compatible endpoint (moto), then read the events back.
#
#   ./scripts/demo.sh
#
# Installs what is missing (Docker engine, moto in .dev/venv, a small local image), leaves
# the user's own containers and an already running engine alone.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust

# The build (the debug profile: ~3 min from nothing on 2 cores, against ~10 min for the
# release profile's fat LTO) runs while the engine, the images and moto are installed.
log "building dockwatch in the background (debug profile; log: $DEV/build.log)"
(
  t=$SECONDS
  rc=0
  cargo build --locked --bin dockwatch >"$DEV/build.log" 2>&1 || rc=$?
  echo $((SECONDS - t)) >"$DEV/build.secs"
  exit $rc
) &
BUILD_PID=$!
trap 'kill $BUILD_PID 2>/dev/null || true; stop_moto; steps_summary' EXIT

step "Docker engine"
ensure_docker
step "local images"
ensure_images
step "moto (a local AWS-compatible endpoint)"
start_moto

step "waiting for the build"
if ! wait "$BUILD_PID"; then
  tail -30 "$DEV/build.log" >&2
  echo "the build failed; the whole log is $DEV/build.log" >&2
  exit 1
fi
step_took "$(cat "$DEV/build.secs")" "cargo build (in the background)"

GROUP="demo-group-$(date +%s)"
STREAM="demo-stream-1"
step "running a container; its output goes to CloudWatch group $GROUP, stream $STREAM at $MOTO_URL"
# The user's example (a python counter printing every 0.1 s), in bash: the local image has no
# python, and no registry is reachable here to pull one.
set +e
./target/debug/dockwatch \
  --docker-image "$TEST_IMAGE" \
  --bash-command 'echo "starting 🚀"; counter=0; while [ $counter -lt 20 ]; do echo $counter; counter=$((counter + 1)); sleep 0.1; done; echo "done, with a warning on stderr" >&2' \
  --aws-cloudwatch-group "$GROUP" --aws-cloudwatch-stream "$STREAM" \
  --aws-access-key-id demo-key-id --aws-secret-access-key demo-secret \
  --aws-region eu-west-1 --aws-endpoint-url "$MOTO_URL"
code=$?
set -e
step "dockwatch exited with $code; the events as read back from the endpoint (GetLogEvents):"
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo "$DEV/venv/bin/python" - "$MOTO_URL" "$GROUP" "$STREAM" <<'PY'
import sys, datetime, boto3
url, group, stream = sys.argv[1:4]
logs = boto3.client("logs", endpoint_url=url, region_name="eu-west-1")
events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
for e in events:
    ts = datetime.datetime.fromtimestamp(e["timestamp"] / 1000, datetime.timezone.utc)
    print(f"  {ts:%H:%M:%S.%f}"[:-3], e["message"])
print(f"  ({len(events)} events in {group}/{stream})")
PY
exit "$code"
