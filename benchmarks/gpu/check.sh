#!/usr/bin/env bash
# The GPU check: everything aiidetect's CUDA path needs measured, in one command of at most
# ~8 minutes, on a machine without network (run benchmarks/gpu/prepare.sh first, where pip works).
#
#   bash benchmarks/gpu/check.sh OUT_DIR                 # on the GPU machine, from the repo root
#   SMOKE=1 bash benchmarks/gpu/check.sh OUT_DIR         # CPU smoke run: tiny-vit, a few images
#
# Measures: the bf16/fp16/fp32 matmul peak (CUDA events) and device copy bandwidth; `aiidetect
# bench` model images/s for each backbone x dtype x batch size (also with the batch already on the
# GPU) and its efficiency against the peak; an end-to-end run of the scan pipeline over the sample
# repeated to REPEAT_TO files with WORKERS decode threads, the decode rate it reaches and the rate
# the model would need; a real `aiidetect scan` of those files; the agreement of bf16 and fp16 on
# DEVICE with float32 on the CPU (linear probe logits and fused verdicts, on the sample); peak GPU
# memory; how the decode stage alone scales with worker threads. Backbones are random-init (no CLIP weights travel): speed does not depend on weight
# values, and the agreement is that of a probe trained here on the random backbone (see summary).
#
# OUT_DIR receives check.log (live), results.json, summary.txt and raw.tar.gz (every step's JSON
# and log); the summary is rebuilt after each step, so a run stopped early still leaves one.
# A failed step is recorded and the next one runs. Knobs (environment): DEVICE, BACKBONES,
# DTYPES, BATCHES, SAMPLE, REPEAT_TO, WORKERS, E2E_BATCH, E2E_PREPROCESS, MODEL_SECONDS, DECODE_FILES,
# DECODE_WORKERS,
# PEAK_SECONDS (each bench run's own), PEAK_STEP_SECONDS, PEAK_N, BUDGET_S (no step starts after it), HARD_S (every step ends by it),
# INSTALL (carried wheels into SITE), PYTHON, KEEP_WORK (keep the work folder under TMPDIR).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
OUTDIR=${1:?usage: bash benchmarks/gpu/check.sh OUT_DIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

if [ "${SMOKE:-0}" = 1 ]; then
  : "${DEVICE:=cpu}" "${BACKBONES:=tiny-vit}" "${BATCHES:=2,4}" "${REPEAT_TO:=24}" "${WORKERS:=2}"
  : "${E2E_BATCH:=4}" "${E2E_PREPROCESS:=resize-center-crop}" "${MODEL_SECONDS:=0.2}" "${PEAK_SECONDS:=0.1}"
  : "${DECODE_FILES:=12}" "${DECODE_WORKERS:=1,2}" "${PEAK_N:=256}" "${PEAK_STEP_SECONDS:=0.3}" "${BUDGET_S:=300}" "${HARD_S:=400}"
fi
DEVICE=${DEVICE:-cuda}
BACKBONES=${BACKBONES:-"ViT-L-14 ViT-B-16"}
DTYPES=${DTYPES:-"bfloat16 float16"}
BATCHES=${BATCHES:-32,64,128,256}
SAMPLE=${SAMPLE:-.gpu-sample}
REPEAT_TO=${REPEAT_TO:-3000}
WORKERS=${WORKERS:-$(nproc)}
E2E_BATCH=${E2E_BATCH:-128}
E2E_PREPROCESS=${E2E_PREPROCESS:-"center-crop resize-center-crop"}
MODEL_SECONDS=${MODEL_SECONDS:-1}
DECODE_FILES=${DECODE_FILES:-1000}
DECODE_WORKERS=${DECODE_WORKERS:-4,8,16,32}
PEAK_SECONDS=${PEAK_SECONDS:-0.5}
PEAK_N=${PEAK_N:-}
PEAK_STEP_SECONDS=${PEAK_STEP_SECONDS:-3}
BUDGET_S=${BUDGET_S:-420}
HARD_S=${HARD_S:-470}
PY=${PYTHON:-python3}
if [ "$DEVICE" = cuda ]; then INSTALL=${INSTALL:-1}; else INSTALL=${INSTALL:-0}; fi
SITE=${SITE:-/tmp/aiidetect-site}
FIRST=${BACKBONES%% *}   # end to end, the head and the agreement use the first backbone

if [ ! -f "$SAMPLE/manifest.csv" ]; then
  echo "error: no sample at $SAMPLE (run benchmarks/gpu/prepare.sh first, where pip and the dev data are)" >&2
  exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aiidetect-gpucheck.XXXXXX")
export AIIDETECT_WEIGHTS="$WORK/weights" AIIDETECT_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUTDIR/check.log") 2>&1
START=$(date +%s)
echo "== aiidetect GPU check $(date -u +%FT%TZ): DEVICE=$DEVICE BACKBONES='$BACKBONES' DTYPES='$DTYPES'" \
     "BATCHES=$BATCHES REPEAT_TO=$REPEAT_TO WORKERS=$WORKERS E2E_BATCH=$E2E_BATCH work=$WORK"
: > "$WORK/steps.tsv"

if [ "$INSTALL" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || echo "warning: installing the carried wheels failed; going on with what is installed"
  export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
AID=("$PY" -m aiidetect)
G=("$PY" benchmarks/gpu/gpucheck.py)

bb_args() {  # shipped configs (tiny-vit, small-vit) or a config file: random init; else an open_clip name
  case "$1" in
    tiny-vit|small-vit|*.json) echo "--backbone-config $1" ;;
    *) echo "--backbone $1 --pretrained none" ;;
  esac
}

summarize() {
  "${G[@]}" summary "$WORK" > /dev/null 2>&1
  cp "$WORK/results.json" "$OUTDIR/results.json" 2>/dev/null
  cp "$WORK/summary.txt" "$OUTDIR/summary.txt" 2>/dev/null
  (cd "$WORK" && tar czf "$OUTDIR/raw.tar.gz" --exclude='scan-e2e-*.jsonl' ./*.json ./*.err ./*.tsv ./*.jsonl \
     2>/dev/null)
}

# step NAME TIMEOUT_S CMD... : runs CMD with stdout to $WORK/NAME.out and stderr to the log and
# $WORK/NAME.err, records rc and seconds in $WORK/steps.tsv.
step() {
  local name=$1 limit=$2; shift 2
  local now elapsed left t0 rc
  now=$(date +%s); elapsed=$((now - START))
  if [ "$elapsed" -ge "$BUDGET_S" ]; then
    echo "-- $name: skipped (budget of ${BUDGET_S}s spent)"
    printf '%s\tskipped\t0\n' "$name" >> "$WORK/steps.tsv"
    return
  fi
  left=$((HARD_S - elapsed)); [ "$left" -lt "$limit" ] && limit=$left
  echo "-- $name (limit ${limit}s, at ${elapsed}s): $*"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.out" 2> >(tee "$WORK/$name.err" >&2)
  rc=$?
  awk -v n="$name" -v rc="$rc" -v ns="$(( $(date +%s%N) - t0 ))" 'BEGIN {printf "%s\t%s\t%.1f\n", n, rc, ns / 1e9}' \
    >> "$WORK/steps.tsv"
  [ "$rc" -ne 0 ] && echo "-- $name FAILED rc=$rc" && tail -c 2000 "$WORK/$name.out"
  summarize
}

# step's output file becomes NAME.json when it is JSON
json_step() { local name=$1; step "$@"; mv -f "$WORK/$name.out" "$WORK/$name.json" 2>/dev/null; }

step facts 90 "${G[@]}" facts "$WORK"
step peak 90 "${G[@]}" peak "$WORK" --device "$DEVICE" --seconds "$PEAK_STEP_SECONDS" ${PEAK_N:+--n "$PEAK_N"}

# Model only, each backbone x dtype, the batch sizes in one process (random pixels).
for m in $BACKBONES; do
  for d in $DTYPES; do
    # shellcheck disable=SC2046 # bb_args is a word list
    json_step "bench-model-$m-$d" 150 "${AID[@]}" bench $(bb_args "$m") --device "$DEVICE" --dtype "$d" \
      --batch-sizes "$BATCHES" --model-seconds "$MODEL_SECONDS" --peak-seconds "$PEAK_SECONDS" --format json
  done
done

# End to end: the sample repeated to REPEAT_TO files with bytes of their own, through the scan pipeline.
REP="$WORK/repeated"
step repeat 90 "${G[@]}" repeat "$SAMPLE" "$REP" --files "$REPEAT_TO"
D1=${DTYPES%% *}
for p in $E2E_PREPROCESS; do
  # shellcheck disable=SC2046
  json_step "bench-e2e-$FIRST-$D1-$p" 180 "${AID[@]}" bench "$REP" $(bb_args "$FIRST") --device "$DEVICE" \
    --dtype "$D1" --batch-size "$E2E_BATCH" --workers "$WORKERS" --images "$REPEAT_TO" --preprocess "$p" \
    --model-seconds "$MODEL_SECONDS" --peak-seconds "$PEAK_SECONDS" --format json
done

# Agreement: a linear probe trained here on the first backbone (center-crop, as the shipped head),
# the sample scanned on the CPU in float32 and on DEVICE in each dtype.
# shellcheck disable=SC2046
step train-head 150 "${AID[@]}" train linear "$SAMPLE/manifest.csv" $(bb_args "$FIRST") --device "$DEVICE" \
  --dtype float32 --preprocess center-crop --name gpu-check --no-cache --json
# shellcheck disable=SC2046
step scan-cpu-float32 200 "${AID[@]}" scan "$SAMPLE" $(bb_args "$FIRST") -d metadata,linear --device cpu \
  --dtype float32 --no-cache --format jsonl -o "$WORK/scan-cpu-float32.jsonl"
VARIANTS=()
for d in $DTYPES; do
  # shellcheck disable=SC2046
  step "scan-$DEVICE-$d" 120 "${AID[@]}" scan "$SAMPLE" $(bb_args "$FIRST") -d metadata,linear \
    --device "$DEVICE" --dtype "$d" --no-cache --workers "$WORKERS" --batch-size 64 --format jsonl \
    -o "$WORK/scan-$DEVICE-$d.jsonl"
  VARIANTS+=("$DEVICE-$d=$WORK/scan-$DEVICE-$d.jsonl")
done
step agree 60 "${G[@]}" agree "$WORK" "$WORK/scan-cpu-float32.jsonl" "${VARIANTS[@]}"
step embed-agree 150 "${G[@]}" embed-agree "$WORK" "$SAMPLE" --backbone "$FIRST" --device "$DEVICE" \
  --dtypes "$(echo "$DTYPES" | tr ' ' ',')"

# The real command over the repeated files, as a user runs it (report written, head, fusion).
# shellcheck disable=SC2046
step "scan-e2e-$FIRST-$D1" 180 "${AID[@]}" scan "$REP" $(bb_args "$FIRST") -d metadata,linear \
  --device "$DEVICE" --dtype "$D1" --no-cache --workers "$WORKERS" --batch-size "$E2E_BATCH" --format jsonl \
  -o "$WORK/scan-e2e-$FIRST-$D1.jsonl"

# How the decode stage alone scales with worker threads (no model): how many workers the GPU needs.
step decode-scaling 90 "${G[@]}" decode-scaling "$WORK" "$REP" --files "$DECODE_FILES" --workers "$DECODE_WORKERS"

summarize
echo "== done in $(( $(date +%s) - START ))s; $OUTDIR: check.log results.json summary.txt raw.tar.gz"
cat "$OUTDIR/summary.txt"
[ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
