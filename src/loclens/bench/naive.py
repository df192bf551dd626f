"""The naive mode: our own pipeline run the way the paper's published scripts work, so that
``loclens bench --naive`` measures the speed-up as a ratio within one run, same model, same
machine, same images.

What differs from the pipeline (and nothing else: same reader, segmenter, prompt sources,
blend code and PNG settings):

- one image at a time through the encoder (no encoder batching);
- one box prompt per decoder call, and the image re-encoded for every prompt (no reuse of the
  embedding); an automatic segmenter (SAM) encodes each image once either way;
- each mask written as a PNG file; a second pass (the "blend script") decodes the image again,
  reads the mask PNGs back and writes every view as its own PNG file, instead of rendering
  straight from the mask cache into Parquet.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from ..atomic import write_bytes
from ..imageio import load_rgb, read_bytes
from ..lens import blend_views, draw_alpha, label_map, masked, png_bytes
from ..segment import build_segmenter, resolve_device, rle
from ..segment.run import load_with_prompts
from .stages import plan_and_records, segmenter_cfg, stage, sync, unique_rows, work


def full_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask made on the reduced working image, at the image's size (the nearest-neighbour
    mapping of ``rle.encode_resized``)."""
    h, w = mask.shape
    if (h, w) == (height, width):
        return mask
    return mask[(np.arange(height) * h) // height][:, (np.arange(width) * w) // width]


def naive_masks(segmenter, row: dict, cfg: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """The image and its non-empty full-size masks, one encoder pass per prompt and one prompt
    per decoder call."""
    image, prompts = load_with_prompts(row, cfg)
    if getattr(segmenter, "automatic", False):
        enc = segmenter.encode([image])[0]
        masks = [rle.decode(c.rle) for c in segmenter.generate(enc, image)]
    else:
        masks = []
        for prompt in prompts:
            enc = segmenter.encode([image])[0]
            decoded, _ = segmenter.decode(enc, np.array([prompt.box], dtype=np.float32))
            masks.append(decoded[0])
    return image, [full_size(m, row["height"], row["width"]) for m in masks if m.any()]


@stage("naive", imports=("loclens.segment.run",))
def naive_stage(spec: dict) -> dict:
    device = resolve_device(spec["device"])
    cfg = segmenter_cfg(spec)
    render_cfg = spec["config"]["render"]
    level = render_cfg["png_compress_level"]
    t0 = time.perf_counter()
    segmenter = build_segmenter(spec["family"], cfg, device)
    load_s = time.perf_counter() - t0
    _, records = plan_and_records(spec)
    rows = unique_rows(records)
    out = work(spec) / "naive" / spec["variant"]
    n_masks: dict[str, int] = {}

    t0 = time.perf_counter()
    for row in rows:  # the "segmentation script"
        _, masks = naive_masks(segmenter, row, cfg)
        n_masks[row["image_id"]] = len(masks)
        for k, mask in enumerate(masks):
            write_bytes(out / "masks" / f"{row['image_id']}_{k:02d}.png", png_bytes(mask.astype(np.uint8) * 255, level))
    sync(device)
    segment_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for row in rows:  # the "blend script"
        image = load_rgb(read_bytes(row["path"]), row["path"])
        masks = []
        for k in range(n_masks[row["image_id"]]):
            with Image.open(out / "masks" / f"{row['image_id']}_{k:02d}.png") as m:
                masks.append(np.asarray(m) > 0)
        if not masks:
            continue
        labels = label_map(masks)
        alpha = draw_alpha(spec["config"]["seed"], row["image_id"], spec["family"], render_cfg["alpha"])
        views = {f"{spec['family']}_{k}": v for k, v in blend_views(image, labels, alpha, render_cfg).items()}
        views["masked"] = masked(image, labels > 0)
        for name, view in views.items():
            write_bytes(out / "views" / f"{row['image_id']}_{name}.png", png_bytes(view, level))
    render_s = time.perf_counter() - t0

    n = len(rows)
    seconds = segment_s + render_s
    return {
        "images": n,
        "device": device,
        "model_load_s": load_s,
        "segment_seconds": segment_s,
        "render_seconds": render_s,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "s_per_image": seconds / n,
        "encoder_s": segmenter.timings["encoder"],
        "decoder_s": segmenter.timings["decoder"],
        "masks_per_image": sum(n_masks.values()) / n,
    }
