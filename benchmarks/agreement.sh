#!/usr/bin/env bash
# Agreement of each ONNX variant with the PyTorch fp32 path on the dev set.
# Heads: whatever is in $AIIDETECT_WEIGHTS for the chosen backbone (see docs/performance.md
# for how the small-vit heads behind the published numbers were trained).
#   AIIDETECT_WEIGHTS=/tmp/agree_w bash benchmarks/agreement.sh [DATA] [BACKBONE-CONFIG]
set -euo pipefail
DATA=${1:-/work/shared/data/dev}
CFG=${2:-small-vit}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
for v in "fp32" "int8 dynamic" "int8 static" "fp16"; do
  set -- $v
  mode=${2:-dynamic}
  tag="$1"; [ "$1" = int8 ] && tag="int8-$mode"
  python -m aiidetect export onnx -o "/tmp/aiidetect-onnx-$CFG-$tag" --backbone-config "$CFG" --variant "$1" \
    --int8-mode "$mode" --calibration-data "$DATA" --calibration-limit 32 \
    --agreement-data "$DATA" --agreement-limit 1000 > "$OUT/agreement-$CFG-$tag.json"
done

# The torch path in bfloat16 (what `--dtype auto` picks on CPUs with native bf16) against float32:
# two full scans of the same files, compared head by head and on the fused verdict.
python -m aiidetect scan "$DATA" --backbone-config "$CFG" --format jsonl --no-cache -q --dtype float32 > "/tmp/agree-$CFG-fp32.jsonl"
python -m aiidetect scan "$DATA" --backbone-config "$CFG" --format jsonl --no-cache -q --dtype bfloat16 > "/tmp/agree-$CFG-bf16.jsonl"
python benchmarks/dtype_agreement.py "/tmp/agree-$CFG-fp32.jsonl" "/tmp/agree-$CFG-bf16.jsonl" --label "$CFG-torch-bf16" \
  > "$OUT/agreement-$CFG-torch-bf16.json"
