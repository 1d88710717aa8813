#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine by the `device` tool (no network there):
#   the CUDA tests (tests/engine/test_cuda.py) and bench/serving.py on CUDA.
# Needs, carried beside the working tree: .whl/ (the wheels of the pinned packages the
# machine lacks: transformers 4.57.6, tokenizers, huggingface_hub, peft, pydantic stack) and
# .gpu/SmolLM2-135M-Instruct/ (config and tokenizer; the checkpoint exceeds the 64 MiB
# transfer, so the bench runs SmolLM2's architecture with seeded random weights).
# Results land in $OUT: cuda-tests.log, serving-cuda.json, bench.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q --confcutdir=tests/engine tests/engine/test_cuda.py \
  2>&1 | tee "$OUT/cuda-tests.log"
python3 bench/serving.py --device cuda --base .gpu/SmolLM2-135M-Instruct --random-weights \
  --out "$OUT/serving-cuda.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
