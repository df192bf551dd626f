"""Lens views (Farooq et al., MICCAI 2025): the image blended with its segmentation masks.

- unicolor:   ``I_blend = a*I + (1-a)*C`` with ``C = c * union(M_i)`` (one colour ``c``);
- multicolor: the same with ``C = sum(M_i * c_i)`` (one colour per mask);
- masked:     ``I * union(M_i)`` (everything outside the masks set to 0).

``a ~ N(mean, std)`` clipped to ``[min, max]``, drawn from ``(seed, image_id, source)`` only, so a
view never depends on sharding or processing order. Overlapping masks are resolved so that each
pixel has exactly one colour: masks are painted largest first, so smaller structures inside
larger ones stay visible. By default the formula is applied to the whole image as in the paper
(pixels outside every mask become ``a*I``); ``outside: keep`` keeps the original there instead.
Rendering is pure CPU work and deterministic.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .provenance import seeded_int
from .segment import rle


def draw_alpha(seed: int, image_id: str, source: str, cfg: dict) -> float:
    rng = np.random.default_rng(seeded_int("alpha", seed, image_id, source))
    a = rng.normal(cfg["mean"], cfg["std"])
    return float(np.float32(np.clip(a, cfg["min"], cfg["max"])))


def label_map(masks: list[np.ndarray]) -> np.ndarray:
    """HxW int map: 0 = background, k = mask k-1 (input order), larger masks painted first."""
    if not masks:
        raise ValueError("label_map needs at least one mask")
    out = np.zeros(masks[0].shape, dtype=np.int32)
    order = sorted(range(len(masks)), key=lambda i: (-int(masks[i].sum()), i))
    for i in order:
        out[masks[i]] = i + 1
    return out


def blend(image: np.ndarray, colour_layer: np.ndarray, covered: np.ndarray, alpha: float, outside: str) -> np.ndarray:
    img = image.astype(np.float32)
    out = alpha * img + (1.0 - alpha) * colour_layer
    if outside == "keep":
        out = np.where(covered[..., None], out, img)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def unicolor(image: np.ndarray, labels: np.ndarray, alpha: float, colour, outside: str) -> np.ndarray:
    covered = labels > 0
    layer = covered[..., None] * np.asarray(colour, dtype=np.float32)
    return blend(image, layer, covered, alpha, outside)


def multicolor(image: np.ndarray, labels: np.ndarray, alpha: float, palette, outside: str) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.float32)
    lut = np.vstack([np.zeros((1, 3), np.float32), pal[np.arange(int(labels.max())) % len(pal)]])
    layer = lut[labels]
    return blend(image, layer, labels > 0, alpha, outside)


def masked(image: np.ndarray, union: np.ndarray) -> np.ndarray:
    return (image * union[..., None]).astype(np.uint8)


def png_bytes(array: np.ndarray, compress_level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_masks(entries: list[dict], shape: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for entry in entries:
        m = rle.decode(entry["rle"])
        if m.shape != tuple(shape):
            raise ValueError(f"mask {entry.get('label')!r} is {m.shape}, image is {tuple(shape)}")
        out.append(m)
    return out


def render_blends(image: np.ndarray, masks: list[np.ndarray], alpha: float, cfg: dict) -> dict[str, np.ndarray]:
    labels = label_map(masks)
    return {
        "unicolor": unicolor(image, labels, alpha, cfg["unicolor"], cfg["outside"]),
        "multicolor": multicolor(image, labels, alpha, cfg["palette"], cfg["outside"]),
    }
