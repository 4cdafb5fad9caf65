#!/usr/bin/env bash
# Smoke test of an installed slowfast-zoo, offline and from outside any checkout: --version, list, info, and predict
# on the packaged sample clip. The checkpoint is built here (random weights saved in the zoo's own local-dir format):
# the run proves the packaging and the pipeline, not accuracy.
# Usage: tools/smoke_installed.sh VENV   (a virtual environment with the wheel installed, with its [video] extra)
set -euo pipefail
venv="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
export HF_HUB_OFFLINE=1 HF_HOME="$work/hf" SLOWFAST_ZOO_CACHE="$work/zoo" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
zoo="$venv/bin/slowfast-zoo"
py="$venv/bin/python"

"$zoo" --version
"$py" -c 'import slowfast_zoo, sys; p = slowfast_zoo.__file__; print(p); sys.exit(not p.startswith(sys.prefix))'
"$zoo" list > models.txt  # (not piped into head: a closed pipe is not what this checks)
head -n 4 models.txt
grep -q "^slowfast_r50_8x8 " models.txt
"$zoo" info slow_r50_4x16.k400_pysf
"$py" - <<'PY'
import torch

import slowfast_zoo

torch.manual_seed(0)
slowfast_zoo.publish.save_pretrained(slowfast_zoo.create("slow_r50_4x16"), "checkpoint")
PY
"$zoo" predict --model local-dir:checkpoint --views fast --top-k 3
"$zoo" predict --model local-dir:checkpoint --views fast --top-k 3 --json > predictions.json
"$py" - <<'PY'
import json

[row] = [json.loads(line) for line in open("predictions.json")]
assert row["video"].endswith("sample.mp4") and len(row["predictions"]) == 3, row
print("smoke test passed:", row["video"], [p["label"] for p in row["predictions"]])
PY
