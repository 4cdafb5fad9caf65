#!/usr/bin/env bash
# Everything that needs a GPU, in one run (GPU time is rare and short): the CUDA tests, then the benchmarks.
#   bash benchmarks/gpu.sh [OUT_DIR]      (from the repository root, in the environment the README sets up)
# 1. the tests that skip without a GPU: pinned, overlapped host-to-GPU copies; transforms on the GPU; tune on CUDA;
# 2. batch sizes and layouts per view on the card (benchmarks/batch_tuning.py);
# 3. whole videos: decode, transforms, model, predict / evaluate / features end to end against the model alone
#    (benchmarks/pipeline.py: the >= 80 % of the model-only rate target), one model and size first, then the rest.
set -uo pipefail
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
py="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -m pytest tests -q -p no:cacheprovider -k "cuda or gpu" -rs 2>&1 | tail -20 | tee "$out/tests.txt"
"$py" benchmarks/batch_tuning.py --device cuda --modes fp32,bf16fast --out "$out/batch_tuning_cuda.json" \
    2>&1 | tail -8 | tee "$out/batch_tuning.txt"
"$py" benchmarks/pipeline.py --device cuda --models slowfast_r50_8x8 --sizes 340x256 --precisions fp32,bf16fast \
    --out "$out/pipeline_cuda_first.json" 2>&1 | tail -40 | tee "$out/pipeline_first.txt"
"$py" benchmarks/pipeline.py --device cuda --out "$out/pipeline_cuda.json" 2>&1 | tail -60 | tee "$out/pipeline.txt"
