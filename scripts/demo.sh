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

ensure_docker
ensure_images
start_moto
trap stop_moto EXIT

log "building dockwatch (release)"
cargo build --release --locked --quiet

GROUP="demo-group-$(date +%s)"
STREAM="demo-stream-1"
log "running a container; its output goes to CloudWatch group $GROUP, stream $STREAM at $MOTO_URL"
# The user's example (a python counter printing every 0.1 s), in bash: the local image has no
# python, and no registry is reachable here to pull one.
set +e
./target/release/dockwatch \
  --docker-image "$TEST_IMAGE" \
  --bash-command 'echo "starting 🚀"; counter=0; while [ $counter -lt 20 ]; do echo $counter; counter=$((counter + 1)); sleep 0.1; done; echo "done, with a warning on stderr" >&2' \
  --aws-cloudwatch-group "$GROUP" --aws-cloudwatch-stream "$STREAM" \
  --aws-access-key-id demo-key-id --aws-secret-access-key demo-secret \
  --aws-region eu-west-1 --aws-endpoint-url "$MOTO_URL"
code=$?
set -e
log "dockwatch exited with $code; the events as read back from the endpoint (GetLogEvents):"
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
