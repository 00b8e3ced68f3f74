#!/usr/bin/env bash
# The GPU check in one command (about 20 minutes on one H200, most of it compiling): the CUDA tests,
# training steps/s on CUDA and on the CPU, DoPr's per-step overhead on CUDA, and the training loop
# eager, compiled, and compiled and captured as CUDA graphs (what --compile does on CUDA) for AdamW
# and DoPr-AdamW, exact and amortized, on the MLP, the transformer and the pixel encoder, on the
# same card; everything is printed.
#
# Setup, once, in a fresh checkout on a machine with an NVIDIA GPU (pip's default index gives the
# CUDA build of torch there):
#   python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e ".[test]"
# Then, from anywhere:
#   bash benchmarks/gpu_check.sh                  # PYTHON=/other/python bash benchmarks/gpu_check.sh
#   PARTS="unet pixels" bash benchmarks/gpu_check.sh   # only the parts named (a short device lease: these two
#                                                      # take a few minutes; "tests" alone about 5)
# Parts: tests flow speed overhead compiled unet pixels (all by default).
#
# Exit status: 0 when every part passed, 1 otherwise (the later parts run even when an earlier one failed).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1
export MUJOCO_GL=disable  # nothing here renders: a headless machine without EGL or GLFW libraries runs it too
failed=()

PARTS=${PARTS:-tests flow speed overhead compiled unet pixels}

part() {  # part KEY NAME COMMAND...: run it if KEY is in $PARTS, time it, remember a failure
    [[ " $PARTS " == *" $1 "* ]] || return 0
    shift
    echo
    echo "=== $1"
    local name=$1 started=$SECONDS
    shift
    "$@" || failed+=("$name")
    echo "--- $name: $((SECONDS - started)) s"
}

echo "=== machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                                  f"{torch.cuda.device_count()} GPU(s) visible")
assert torch.cuda.is_available(), "torch sees no CUDA device: this check needs one (and a CUDA build of torch)"' || exit 1

# Every test of test_device.py (the CUDA ones run here; -rs would name any that skipped), the
# optimizer's own CUDA tests (no host sync: as torch's sync debug mode sees it, and as time shows
# it), the captured training step against eager (test_train_compile.py; it skips without a GPU),
# and the gloo torchrun test (it must keep passing on a GPU machine).
part tests "CUDA tests" "$PYTHON" -m pytest -q -rs tests/test_device.py tests/test_train_compile.py \
    "tests/test_optim_no_sync.py::test_cuda_step_makes_no_host_synchronization" \
    "tests/test_optim_no_sync.py::test_cuda_step_returns_while_the_device_is_still_busy" tests/test_train_distributed.py
part flow "flow policy on CUDA" "$PYTHON" benchmarks/flow_cuda_check.py
part speed "training steps/s, CUDA and CPU" "$PYTHON" benchmarks/train_speed.py --devices cuda,cpu --steps 200
part overhead "DoPr overhead on CUDA" "$PYTHON" benchmarks/optimizer_overhead.py --device cuda --repeats 5 --steps 30
part compiled "eager vs compiled vs captured, CUDA" "$PYTHON" benchmarks/compiled_step.py --devices cuda --steps 300 \
    --policies mlp,transformer,pixels --modes eager,compiled,captured
# DoPr-AdamW's step against AdamW's on the published-size U-Net at the published batch (target <= 2x), and
# the pixel step at 64 px (AdamW, each conv form, bf16 beside float32).
part unet "paper-size U-Net, DoPr / AdamW, CUDA" "$PYTHON" benchmarks/unet_step.py --part dopr --device cuda \
    --dopr-batch 256 --repeats 3
part pixels "pixel step, CUDA" bash -c "'$PYTHON' benchmarks/pixel_step.py --device cuda --repeats 3 && \
    '$PYTHON' benchmarks/pixel_step.py --device cuda --repeats 3 --amp bf16"

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "GPU check passed"
else
    echo "GPU check FAILED: ${failed[*]}"
    exit 1
fi
