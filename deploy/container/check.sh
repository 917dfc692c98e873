#!/usr/bin/env bash
# The verifier's container, built and run for real (podman; `bash setup.sh test` runs it).
#
#   bash deploy/container/check.sh      (root)
#
# Builds the image from deploy/container/Containerfile on the Debian base of deploy/lib.sh,
# with wheels built here (nothing compiles in the image), runs it with the certificate, key
# and token as podman secrets and its UDP and metrics ports published on loopback, then:
#   the health check turns healthy (/ready); the process runs as a non-root user;
#   a real edge on this machine generates through the published UDP port;
#   /metrics counts what it did;
#   `podman stop` (SIGTERM) in the middle of a long generation: the container drains (the
#   edge's generation ends with "the server is shutting down"), logs event=stopped and
#   exits 0 within drain_s plus a margin.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/build/container
py=$root/.venv/bin/python
image=localhost/picospec-cloud:latest
name=picospec-cloud-check
say() { echo "cloud-container-check: $*" >&2; }
fail() {
  say "FAILED: $*"
  podman logs --tail 25 "$name" >&2 2>/dev/null || true
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (podman)"
[ -x "$py" ] || fail "no ./.venv: run bash setup.sh test first"
# shellcheck source=../lib.sh
. deploy/lib.sh
podman_env
base_image

ctx=$work/cloud-context
rm -rf "$ctx" && mkdir -p "$ctx"
build_wheels "$ctx/wheels"
cp deploy/container/Containerfile deploy/container/cloud.toml "$ctx/"
say "building the image"
podman build -q --format docker --build-arg "BASE=$BASE_IMAGE" -t "$image" "$ctx" >/dev/null 2>"$work/cloud-build.log" || { cat "$work/cloud-build.log" >&2; fail "podman build"; }
podman image prune -f >/dev/null

secrets=$work/cloud-secrets && rm -rf "$secrets" && mkdir -p "$secrets"
pin=$("$py" -c "from picospec.runtime.quic import generate_self_signed as g; print(g('$secrets/cert.pem', '$secrets/key.pem', host='localhost'))")
token=$("$py" -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$token" >"$secrets/token"
cleanup() {
  podman rm -f -t 2 "$name" >/dev/null 2>&1 || true
  for s in picospec-cert picospec-key picospec-token; do podman secret rm "$s" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
cleanup
podman secret create picospec-cert "$secrets/cert.pem" >/dev/null
podman secret create picospec-key "$secrets/key.pem" >/dev/null
podman secret create picospec-token "$secrets/token" >/dev/null
read -r udp tcp < <(free_ports)
say "running it: QUIC on 127.0.0.1:$udp/udp, metrics on 127.0.0.1:$tcp"
podman run -d --name "$name" -p "127.0.0.1:$udp:4433/udp" -p "127.0.0.1:$tcp:9464" \
  --secret picospec-cert --secret picospec-key --secret picospec-token \
  --health-interval=disable -e PICOSPEC_TOKEN_FILE=/run/secrets/picospec-token \
  "$image" --drain-s 3 >/dev/null 2>"$work/cloud-run.log" \
  || { cat "$work/cloud-run.log" >&2; fail "podman run"; }
# (podman 4.3 still logs that it cannot reach systemd for health-check timers: there is no
# systemd here, and the check below runs the health check itself; that log stays in the file)

healthy() { podman healthcheck run "$name" >/dev/null 2>&1; }
end=$((SECONDS + 120))
until healthy; do [ $SECONDS -lt $end ] || fail "not healthy within 120 s"; sleep 1; done
say "healthy: $(curl -sS "http://127.0.0.1:$tcp/ready")"
uid=$(podman exec "$name" id -u)
[ "$uid" != 0 ] || fail "the verifier runs as root"
say "runs as uid $uid"

out=$(PICOSPEC_TOKEN=$token "$py" -m picospec edge generate --cloud "127.0.0.1:$udp" --pin "$pin" \
  --prompt "Name a robot part." --chat --max-tokens 16 --temperature 0 --json --threads 1)
n=$(printf '%s' "$out" | "$py" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["n_tokens"])')
[ "$n" -gt 0 ] || fail "no tokens: $out"
say "an edge generated $n tokens through the published UDP port"
committed=$(curl -sS "http://127.0.0.1:$tcp/metrics" | awk '/^picospec_cloud_committed_tokens_total/{print int($2)}')
[ "$committed" -ge "$n" ] || fail "/metrics counts $committed committed tokens, the edge got $n"
say "/metrics: picospec_cloud_committed_tokens_total $committed"

PICOSPEC_TOKEN=$token "$py" -m picospec edge generate --cloud "127.0.0.1:$udp" --pin "$pin" \
  --prompt "Write a long story about a robot." --chat --max-tokens 900 --mode cloud-only \
  --threads 1 >"$work/long.out" 2>&1 &
gen=$!
sleep 3
t0=$SECONDS
podman stop -t 20 "$name" >/dev/null 2>>"$work/cloud-run.log"
took=$((SECONDS - t0))
wait "$gen" || true
rc=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[ "$rc" = 0 ] || fail "the verifier exited with $rc"
[ "$took" -le 10 ] || fail "stopping took $took s (drain_s is 3)"
podman logs "$name" 2>&1 | grep -q "event=stopped ended_with_bye=1" || fail "no drain in the logs"
grep -q "the server is shutting down" "$work/long.out" || fail "the edge did not get the Bye: $(tail -2 "$work/long.out")"
say "podman stop: drained in $took s, exit 0; the edge: $(tail -1 "$work/long.out" | cut -c1-120)"
podman logs "$name" 2>&1 | tail -6 >&2
say "all checks passed"
