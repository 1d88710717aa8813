#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine by the `device` tool (no network there):
#   the CUDA tests (tests/engine/test_cuda.py, test_triton_lora.py: the Triton LoRA kernels
#   compiled and under Triton's interpreter, test_static_decode.py: the CUDA-graph decode step,
#   tests/modelfactory/cuda/), bench/training.py's throughput part and bench/serving.py on CUDA
#   (with its 100-request wide phase and issue 17's H100 targets).
# Needs, carried beside the working tree: .whl/ (the wheels of the pinned packages the
# machine lacks: transformers 4.57.6, tokenizers, huggingface_hub, peft, the pydantic stack,
# trl, datasets, dill, multiprocess, and eth-utils/eth-abi and their pure-Python needs, which
# the Datanet manifest code imports) and .gpu/SmolLM2-135M-Instruct/ (config and tokenizer; the
# checkpoint exceeds the 64 MiB transfer, so the benchmarks run SmolLM2's architecture with
# seeded random weights). Triton needs no wheel: it ships with the machine's CUDA torch. The
# node's fused CPU LoRA kernel (which test_triton_lora.py's interpreter run compares with) is
# compiled there first, with the machine's g++ and ninja.
# CHECKS picks the parts (default "tests training serving"). Results land in $OUT:
#   gpu.txt, cuda-tests.log, training-cuda.json + training.log, serving-cuda.json + bench.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
CHECKS=${CHECKS:-tests training serving}
BASE=.gpu/SmolLM2-135M-Instruct
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" | tee -a "$OUT/gpu.txt"
status=0
if [[ " $CHECKS " == *" tests "* ]]; then
  python3 -c 'from inference_node.engine.cpu_kernels import main; main()' \
    2>&1 | tee "$OUT/cuda-tests.log" || status=1
  # each folder alone: the suite's top-level conftest needs the chain's packages (the
  # variable passes the cut to the pytest that test_triton_lora.py starts for the interpreter)
  PYTEST_ADDOPTS=--confcutdir=tests/engine \
    python3 -m pytest -q --confcutdir=tests/engine tests/engine/test_cuda.py \
      tests/engine/test_triton_lora.py tests/engine/test_static_decode.py \
      2>&1 | tee -a "$OUT/cuda-tests.log" || status=1
  python3 -m pytest -q --confcutdir=tests/modelfactory/cuda tests/modelfactory/cuda \
    2>&1 | tee -a "$OUT/cuda-tests.log" || status=1
fi
if [[ " $CHECKS " == *" training "* ]]; then
  python3 bench/training.py --device cuda --base "$BASE" --random-weights \
    --out "$OUT/training-cuda.json" 2>&1 | tee "$OUT/training.log" || status=1
fi
if [[ " $CHECKS " == *" serving "* ]]; then
  python3 bench/serving.py --device cuda --base "$BASE" --random-weights \
    --out "$OUT/serving-cuda.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" || status=1
fi
exit $status
