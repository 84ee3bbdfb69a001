#!/usr/bin/env bash
# CPU benchmark series behind docs/performance.md. Random-init backbones
# (speed does not depend on weight values); real dev photos for decode and
# end-to-end. Writes one JSON per configuration into benchmarks/results/.
#   bash benchmarks/run_cpu.sh [DATA] [MODELS...]
set -euo pipefail
DATA=${1:-/work/shared/data/dev/real}
shift || true
MODELS=${*:-"ViT-B-16 ViT-L-14"}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
for m in $MODELS; do
  IFS=, read -ra CFGS <<< "${CONFIGS:-torch float32,torch bfloat16,onnx float32,onnx int8}"
  for cfg in "${CFGS[@]}"; do
    set -- $cfg
    f="$OUT/$m-$1-$2.json"
    echo "== $m $1 $2 -> $f" >&2
    python -m aiidetect bench "$DATA" --backbone "$m" --pretrained none --runtime "$1" --dtype "$2" \
      --batch-size 8 --images "${IMAGES:-24}" --format json > "$f" || echo "failed: $m $1 $2" >&2
  done
done
