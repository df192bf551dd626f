"""Reading radiology images robustly into 8-bit RGB arrays.

Medical images arrive as 8-bit JPEG, 16-bit grayscale PNG, CMYK or palette images, with or
without alpha. Everything downstream (segmenters, lens rendering) works on HxWx3 uint8.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Refuse images above this many pixels instead of exhausting memory (a 16k x 16k image).
MAX_PIXELS = 16384 * 16384


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{name}: image of {img.width}x{img.height} pixels exceeds the limit of {MAX_PIXELS}")
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: image is truncated or corrupt ({exc})") from None
    if img.width < 2 or img.height < 2:
        raise ImageError(f"{name}: image of {img.width}x{img.height} pixels is too small to segment")
    return img


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image file ({exc})") from None


def probe(data: bytes, name: str) -> tuple[int, int]:
    """Fully decode once (so truncated files are caught at ingest) and return (width, height)."""
    img = _open(data, name)
    return img.width, img.height


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to HxWx3 uint8; high bit depths are min-max scaled (windowing is
    unknown, so the full dynamic range is kept rather than clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        gray = np.round(scaled).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become black, the background of radiographs.
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_rgb(data: bytes, name: str) -> np.ndarray:
    return to_rgb_array(_open(data, name))
