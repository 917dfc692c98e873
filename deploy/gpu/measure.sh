#!/usr/bin/env bash
# The GPU measurement, for a lent H100/H200: one run, well inside 8 minutes.
#
#   1. the backend contract and the batched-forward test on the torch backend, on CUDA (fp32);
#   2. `picospec bench gpu`: verify(n) and decode for n = 1..9 on a random Llama-3-8B shape in
#      bf16, batched verification over 1, 4, 16 and 64 sessions, the on-device sampling
#      transform, written as a cloud profile JSON that `picospec sim --cloud` reads.
#
# Such a machine has torch and transformers and reaches no package registry, so picospec runs
# from this tree as it is (a link farm on PYTHONPATH, the numpy reference kernels: nothing to
# build) and pytest comes from build/gpu-py, which `bash deploy/gpu/measure.sh --prepare`
# fills here (carry build/gpu-py along). Outputs go to $OUT (default build/gpu-out):
# machine.txt, contract.log, bench.log, profile.json. DEVICE=cpu runs the same steps on a CPU
# with bench gpu's tiny model, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = --prepare ]; then
  rm -rf build/gpu-py
  .venv/bin/python -m pip install -q --disable-pip-version-check --target build/gpu-py pytest
  echo "measure: pytest is in build/gpu-py"
  exit 0
fi

py=${PYTHON:-python3}
device=${DEVICE:-cuda}
out=${OUT:-build/gpu-out}
mkdir -p "$out"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir "$root/picospec"
for e in picospec/*; do
  [ "${e##*/}" = __pycache__ ] || ln -s "$PWD/$e" "$root/picospec/"
done
for p in codec edge cloud; do ln -s "$PWD/$p" "$root/picospec/$p"; done
export PYTHONPATH="$root:$PWD/build/gpu-py${PYTHONPATH:+:$PYTHONPATH}"
export PICOSPEC_KERNELS=reference PYTHONDONTWRITEBYTECODE=1

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: none"
  "$py" -c 'import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
} 2>&1 | tee "$out/machine.txt"

status=0
echo "measure: the backend contract on $device" >&2
if ! PICOSPEC_TEST_DEVICE=$device timeout 240 "$py" -m pytest -q -p no:cacheprovider \
    tests/test_torch_backend.py -k "TestTorchBackend or batched" >"$out/contract.log" 2>&1; then
  status=1
fi
tail -3 "$out/contract.log"

echo "measure: bench gpu on $device" >&2
args=()
[ "$device" = cpu ] && args=(--tiny)
if ! timeout 300 "$py" -m picospec bench gpu "${args[@]}" --out "$out/profile.json" \
    >"$out/bench.log" 2>&1; then
  status=1
fi
cat "$out/bench.log"
exit $status
