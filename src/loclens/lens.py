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

import struct
import zlib

import numpy as np
from isal import isal_zlib

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


def blend_tables(colours: np.ndarray, alpha: float, outside: str) -> np.ndarray:
    """(K+1) x 3 x 256 uint8: ``rint(a*v + (1-a)*c)`` for every colour row ``c`` (row 0 is
    outside every mask, colour 0) and grey value ``v``, in float32 as a per-pixel blend would
    compute it, so looking pixels up in it gives the formula's values exactly, for a fraction
    of the work (one gather per pixel instead of seven float passes)."""
    v = np.arange(256, dtype=np.float32)
    out = alpha * v[None, None, :] + (1.0 - alpha) * np.asarray(colours, dtype=np.float32)[:, :, None]
    if outside == "keep":
        out[0] = v
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def is_grey(image: np.ndarray) -> bool:
    """Whether the three channels are equal (302 of VQA-RAD's 315 JPEGs decode so)."""
    return np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])


def _table_index(image: np.ndarray, labels: np.ndarray, grey: bool) -> np.ndarray:
    """Each pixel's offset into the flattened tables: its label's row, plus its grey value
    when the channels are equal (otherwise each channel's value is added per channel)."""
    index = labels.astype(np.intp)
    index *= 256
    if grey:
        index += image[..., 0]
    return index


def _lookup(image: np.ndarray, index: np.ndarray, tables: np.ndarray, grey: bool) -> np.ndarray:
    out = np.empty_like(image)
    if grey:
        # One gather of 4-byte RGB0 words per pixel instead of three gathers of bytes, then
        # the three bytes copied out (benchmarks/cpu_micro.py times both paths). The copy keeps
        # the result contiguous: numpy filters PNG rows of a view with a pad byte to skip one
        # 3-byte pixel at a time, which cost more than the gather saved. Words are viewed back
        # as bytes, so byte order does not matter.
        rgb0 = np.zeros((tables.shape[0], 256, 4), np.uint8)
        rgb0[..., :3] = tables.transpose(0, 2, 1)
        words = np.take(rgb0.reshape(-1).view(np.uint32), index).view(np.uint8).reshape(*index.shape, 4)
        for c in range(3):
            out[..., c] = words[..., c]
        return out
    for c in range(image.shape[2]):
        out[..., c] = np.take(tables[:, c, :].ravel(), index + image[..., c])
    return out


def apply_tables(image: np.ndarray, labels: np.ndarray, tables: np.ndarray, grey: bool | None = None) -> np.ndarray:
    """Each pixel's channel value looked up in the table row of its label. ``grey``: whether
    the image's channels are equal (checked when not given)."""
    grey = is_grey(image) if grey is None else grey
    return _lookup(image, _table_index(image, labels, grey), tables, grey)


def _unicolor_colours(colour, n_masks: int) -> np.ndarray:
    """Table rows of the unicolor view: outside, then the one colour for every mask label (so
    it looks pixels up with the same index as the multicolor view)."""
    return np.array([(0, 0, 0)] + [colour] * n_masks, dtype=np.float32)


def _multicolor_colours(palette, n_masks: int) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.float32)
    return np.vstack([np.zeros((1, 3), np.float32), pal[np.arange(n_masks) % len(pal)]])


def unicolor(
    image: np.ndarray, labels: np.ndarray, alpha: float, colour, outside: str, grey: bool | None = None
) -> np.ndarray:
    return apply_tables(image, labels, blend_tables(_unicolor_colours(colour, int(labels.max())), alpha, outside), grey)


def multicolor(
    image: np.ndarray, labels: np.ndarray, alpha: float, palette, outside: str, grey: bool | None = None
) -> np.ndarray:
    return apply_tables(
        image, labels, blend_tables(_multicolor_colours(palette, int(labels.max())), alpha, outside), grey
    )


def masked(image: np.ndarray, union: np.ndarray) -> np.ndarray:
    return (image * union[..., None]).astype(np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


#: Deflate levels of ISA-L (the config schema's render.png_compress_level range).
PNG_LEVELS = range(isal_zlib.ISAL_BEST_SPEED, isal_zlib.ISAL_BEST_COMPRESSION + 1)


def png_deflate() -> str:
    """The deflate library and version that made the views' PNG bytes (for the manifest)."""
    import isal

    return f"isal {isal.__version__}"


def png_bytes(array: np.ndarray, compress_level: int) -> bytes:
    """An 8-bit grey (HxW) or RGB (HxWx3) PNG, every row with the "Up" filter, deflated with
    ISA-L (python-isal; a standard zlib stream that any PNG reader decodes).

    One fixed filter, not Pillow's best of four per row: on radiographs and their views "Up"
    alone compresses as well, without encoding every row four times. ISA-L, not zlib: at the
    same level it deflates faster with no larger output (BENCHMARKS.md;
    ``benchmarks/cpu_micro.py`` compares the two deflates).
    Deterministic for a given ISA-L version (recorded in the manifest:
    ``build.render.png_deflate``)."""
    if compress_level not in PNG_LEVELS:
        raise ValueError(f"png_bytes: compress level {compress_level}; ISA-L levels are {list(PNG_LEVELS)}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"png_bytes: expected HxW or HxWx3 uint8, got shape {array.shape}")
    h, w = array.shape[:2]
    rows = array.reshape(h, -1)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    colour_type = 2 if array.ndim == 3 else 0
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", isal_zlib.compress(filtered, compress_level))
        + _png_chunk(b"IEND", b"")
    )


def decode_masks(entries: list[dict], shape: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for entry in entries:
        m = rle.decode(entry["rle"])
        if m.shape != tuple(shape):
            raise ValueError(f"mask {entry.get('label')!r} is {m.shape}, image is {tuple(shape)}")
        out.append(m)
    return out


def render_blends(image: np.ndarray, masks: list[np.ndarray], alpha: float, cfg: dict) -> dict[str, np.ndarray]:
    return blend_views(image, label_map(masks), alpha, cfg)


def blend_views(image: np.ndarray, labels: np.ndarray, alpha: float, cfg: dict) -> dict[str, np.ndarray]:
    """The blended views from a ``label_map`` (the renderer computes it once per image and mask
    source, and reuses it for the masked view)."""
    grey = is_grey(image)
    n_masks = int(labels.max())
    index = _table_index(image, labels, grey)  # one index for both views
    colours = {
        "unicolor": _unicolor_colours(cfg["unicolor"], n_masks),
        "multicolor": _multicolor_colours(cfg["palette"], n_masks),
    }
    return {kind: _lookup(image, index, blend_tables(c, alpha, cfg["outside"]), grey) for kind, c in colours.items()}
