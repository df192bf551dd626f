"""LiteMedSAM masks against the official script's, and segment time per image, on the parity
fixture (tests/data/parity/litemedsam/: real VQA-RAD images, loclens's otsu boxes, the masks
``CVPR24_LiteMedSAM_infer.py`` made for them).

Each image goes the way a segment job takes it with the default config: read (reduced first if
the code reads large images reduced), preprocessed, encoded, its boxes decoded and the masks
stored as RLE at the image's size (``segment.run.image_masks``). Prints per-box IoU with the
reference mask, mean/min IoU, and per image the best-of-rounds wall seconds (read, model, total;
one torch thread) and CPU seconds of the process (summed over its threads; on a shared, loaded
machine the steadier figure for comparing code).

    python benchmarks/litemedsam_parity.py [--rounds 3] [--read-max-side 1024]

``--read-max-side``: the memory setting ``segment.read_max_side`` (default: off, full resolution).

To measure other code (e.g. main's, before parity), put its ``src`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from loclens.imageio import load_rgb
from loclens.segment import rle, run
from loclens.segment.litemedsam import LiteMedSAM
from loclens.segment.prompts import Prompt

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "parity" / "litemedsam"


def reduced_read_side(cfg: dict) -> int | None:
    """What a segment job reads large images at: ``segment.read_max_side`` (default null), or in
    code from before that setting, the fixed ``WORK_MAX_SIDE``."""
    if hasattr(run, "read_max_side"):
        return run.read_max_side(cfg)
    return getattr(run, "WORK_MAX_SIDE", None)


def segment_image(
    seg: LiteMedSAM, data: bytes, name: str, entry: dict, max_side: int | None
) -> tuple[list, float, float, float]:
    """The image's stored masks (one per box, None where empty), wall seconds to read, to
    segment, and CPU seconds for both."""
    c0, t0 = time.process_time(), time.perf_counter()
    image = load_rgb(data, name, max_side=max_side)
    t1 = time.perf_counter()
    sy, sx = image.shape[0] / entry["height"], image.shape[1] / entry["width"]
    prompts = [
        Prompt((x0 * sx, y0 * sy, x1 * sx, y1 * sy), f"box-{k}", "otsu")
        for k, (x0, y0, x1, y1) in enumerate(entry["boxes"])
    ]
    enc = seg.encode([image], [seg.prepare(image)])[0]
    entries = run.image_masks(seg, enc, image, prompts, (entry["height"], entry["width"]))
    t2, c2 = time.perf_counter(), time.process_time()
    by_label = {e["label"]: e["rle"] for e in entries}
    return [by_label.get(f"box-{k}") for k in range(len(prompts))], t1 - t0, t2 - t1, c2 - c0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-max-side", type=int, default=None, help="segment.read_max_side (default: off)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fixture = json.loads((FIXTURE / "reference.json").read_text())
    seg = LiteMedSAM(device="cpu")
    max_side = reduced_read_side({"read_max_side": args.read_max_side})
    print(f"loclens at {run.__file__}; large images read at max side {max_side}")
    ious, read_s, model_s, cpu_s = [], [], [], []
    for name, entry in fixture["images"].items():
        data = (FIXTURE / "images" / name).read_bytes()
        best_read = best_model = best_cpu = float("inf")
        for _ in range(args.rounds):
            masks, t_read, t_model, t_cpu = segment_image(seg, data, name, entry, max_side)
            best_read, best_model, best_cpu = min(best_read, t_read), min(best_model, t_model), min(best_cpu, t_cpu)
        read_s.append(best_read)
        model_s.append(best_model)
        cpu_s.append(best_cpu)
        shape = (entry["height"], entry["width"])
        image_ious = [
            iou(rle.decode(ref), rle.decode(got) if got else np.zeros(shape, bool))
            for ref, got in zip(entry["masks"], masks)
        ]
        ious += image_ious
        print(
            f"{name:<18} {entry['width']}x{entry['height']:<5} boxes {len(image_ious)}  IoU "
            f"{' '.join(f'{v:.3f}' for v in image_ious)}  read {best_read:.3f} s  model {best_model:.3f} s  "
            f"CPU {best_cpu:.3f} s"
        )
    n = len(fixture["images"])
    print(
        f"{len(ious)} boxes on {n} images: mean IoU {np.mean(ious):.4f}, min {np.min(ious):.4f}, "
        f"{sum(v < 0.95 for v in ious)} below 0.95"
    )
    print(
        f"seconds per image (best of {args.rounds}, 1 thread): read {sum(read_s) / n:.4f}, model (preprocess, "
        f"encode, decode, RLE) {sum(model_s) / n:.4f}, total {(sum(read_s) + sum(model_s)) / n:.4f}; "
        f"CPU seconds per image (read + model) {sum(cpu_s) / n:.4f}"
    )


if __name__ == "__main__":
    main()
