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
