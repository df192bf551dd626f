"""Benchmark inputs: a small VQA-RAD release (same layout, real images) cut from the full one.

The benchmark runs the real ingest reader on it, so every stage sees exactly what a workflow
run on N images would see. Images are the first N file names (sorted) that QA records refer
to; their QA records are kept verbatim.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from ..atomic import write_text
from ..sources.vqa_rad import IMAGE_DIR, JSON_NAME


def _records(root: Path) -> list:
    path = root / JSON_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; --vqa-rad must point at the VQA-RAD release folder")
    return json.loads(path.read_text(encoding="utf-8"))


def _resized(src: Path, dst: Path, max_side: int) -> None:
    """The image with its longest side set to ``max_side`` (up or down), saved as JPEG q95."""
    with Image.open(src) as img:
        rgb = img.convert("RGB")
        scale = max_side / max(rgb.size)
        size = (max(2, round(rgb.width * scale)), max(2, round(rgb.height * scale)))
        rgb.resize(size, Image.Resampling.LANCZOS).save(dst, format="JPEG", quality=95)


def make_subset(root, out, n_images: int, max_side: int | None = None) -> list[str]:
    """Write a VQA-RAD release of the first ``n_images`` referenced images under ``out``.

    Images are copied (the reader refuses symlinks that leave the dataset root); ``max_side``:
    resize every image so its longest side is this many pixels (for the image-size scaling
    figures). Returns the image file names.
    """
    root, out = Path(root), Path(out)
    records = _records(root)
    names = sorted({str(r["image_name"]) for r in records if isinstance(r, dict) and "image_name" in r})
    names = [n for n in names if (root / IMAGE_DIR / n).is_file()][:n_images]
    if len(names) < n_images:
        raise ValueError(f"{root}: only {len(names)} images available, {n_images} requested")
    chosen = set(names)
    kept = [r for r in records if isinstance(r, dict) and str(r.get("image_name")) in chosen]
    image_dir = out / IMAGE_DIR
    if image_dir.exists():
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    for name in names:
        src, dst = (root / IMAGE_DIR / name).resolve(), image_dir / name
        if max_side is not None:
            _resized(src, dst, max_side)
        else:
            shutil.copyfile(src, dst)
    write_text(out / JSON_NAME, json.dumps(kept, indent=1, ensure_ascii=False))
    return names
