#!/usr/bin/env bash
# Pack what the GPU check needs on a GPU machine that has no network:
#   .whl/         wheels (CPython 3.12, manylinux x86-64) of aiidetect's dependencies that such a
#                 machine's image usually lacks (its own CUDA torch, torchvision, timm, numpy, Pillow,
#                 scikit-learn, matplotlib, safetensors, typer and rich are used as they are)
#   .gpu-sample/  a < 30 MB sample of the dev images (both labels, JPEG/PNG/WebP/HEIC/TIFF/GIF/BMP)
#                 with its manifest.csv
# Both folders are git-ignored; the working tree plus both must stay under 64 MiB.
#
#   bash benchmarks/gpu/prepare.sh [DEV_DATA]          # default: ../shared/data/dev
#   WITH_C2PA=1 bash benchmarks/gpu/prepare.sh         # also c2pa-python (+ cryptography, toml; ~21 MB)
#
# Then, on the GPU machine, from the repository root: bash benchmarks/gpu/check.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
DEV=${1:-../shared/data/dev}
PY=${PYTHON:-python3}
# The versions this repository is tested with (pip show in its CPU environment).
WHEELS=${WHEELS:-"open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 ExifRead==3.5.1 pillow_heif==1.8.1 defusedxml==0.7.1"}
if [ "${WITH_C2PA:-0}" = 1 ]; then
  # the sample holds no C2PA manifest, so the scan never calls this library unless other files are scanned
  WHEELS="$WHEELS c2pa-python==0.38.1 cryptography toml"
fi

if [ ! -f "$DEV/manifest.csv" ]; then
  echo "error: $DEV/manifest.csv not found (give the dev data folder as the first argument)" >&2
  exit 2
fi

rm -rf .whl
mkdir -p .whl
# shellcheck disable=SC2086 # WHEELS is a list of requirement specifiers
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
echo "wheels:"; ls -l .whl | awk 'NR>1 {printf "  %8.1f MB  %s\n", $5/1e6, $9}'

"$PY" benchmarks/gpu/gpucheck.py sample "$DEV" .gpu-sample --max-mb 30

# What travels: tracked and untracked-but-not-ignored files, plus the two ignored folders.
tree=$(git ls-files -co --exclude-standard -z | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -sb .whl | cut -f1)
sample=$(du -sb .gpu-sample | cut -f1)
total=$((tree + whl + sample))
printf 'travel size: working tree %.1f MiB + .whl %.1f MiB + .gpu-sample %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
  "$(echo "$tree/1048576" | bc -l)" "$(echo "$whl/1048576" | bc -l)" "$(echo "$sample/1048576" | bc -l)" \
  "$(echo "$total/1048576" | bc -l)"
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "error: over 64 MiB; leave out WITH_C2PA or shrink the sample plan in benchmarks/gpu/gpucheck.py" >&2
  exit 1
fi
