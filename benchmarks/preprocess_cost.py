"""CPU cost per image of each box-prompted backend's preprocessing, on one core.

MedSAM ViT-B's is upstream's scikit-image call (cubic, anti-aliased resize to 1024) and
LiteMedSAM's upstream's OpenCV INTER_AREA to 256; PIL's bicubic resize to 1024 is printed beside
them as the cheap approximation loclens used before parity. The loaders of a segment job run this
per image, so it bounds the rate a GPU can be fed at: loaders / (seconds per image).

    OMP_NUM_THREADS=1 python benchmarks/preprocess_cost.py --vqa-rad ../shared/datasets/vqa_rad
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from loclens.imageio import load_rgb, read_bytes
from loclens.segment import litemedsam, medsam_vitb


def best_seconds(fn, image: np.ndarray, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(image)
        best = min(best, time.perf_counter() - t0)
    return best


def pil_bicubic(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((1024, 1024), Image.Resampling.BICUBIC), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqa-rad", type=Path, required=True, help="folder holding 'VQA_RAD Image Folder/'")
    parser.add_argument("--images", type=int, default=8, help="images, spread over the sorted folder")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    files = sorted((args.vqa_rad / "VQA_RAD Image Folder").glob("*.jpg"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    images = [load_rgb(read_bytes(str(f)), str(f)) for f in files]
    print(f"{len(images)} images, sizes (h, w): {[im.shape[:2] for im in images]}")
    steps = {
        "medsam_vitb (skimage, upstream)": lambda im: medsam_vitb.preprocess(im, 1024),
        "PIL bicubic 1024 (approximation)": pil_bicubic,
        "litemedsam (cv2, upstream)": litemedsam.preprocess,
    }
    for name, fn in steps.items():
        seconds = sum(best_seconds(fn, im, args.repeats) for im in images) / len(images)
        print(f"{name:34s} {seconds * 1000:8.1f} ms/image  (15 loaders feed {15 / seconds:7.1f} images/s)")


if __name__ == "__main__":
    main()
