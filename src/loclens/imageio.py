"""Reading radiology images robustly into 8-bit RGB arrays.

Medical images arrive as 8-bit JPEG, 16-bit grayscale PNG, CMYK or palette images, with or
without alpha, truncated, misnamed, tiny or huge. Everything downstream (segmenters, lens
rendering) works on HxWx3 uint8; anything that cannot become one raises ``ImageError``.

Memory: an image is refused from its header alone above ``MAX_PIXELS`` (before any pixel is
decoded). Callers that want a bounded working resolution (the segmenters, when the memory
setting ``segment.read_max_side`` is on) pass ``max_side``: JPEGs are then decoded at a reduced DCT scale (``Image.draft``) and every image is
reduced right after decoding, before the conversion to RGB and any float arrays, so the memory
of such a reader does not grow with the image beyond the decoded native pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import LoclensError

#: Refuse images above this many pixels instead of exhausting memory (a 16k x 16k image).
MAX_PIXELS = 16384 * 16384
# PIL's own decompression-bomb check (run while opening, made an error below) uses the same
# limit, so that there is one limit and not PIL's default of 89 million pixels as well.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
#: Smallest side that can be segmented.
MIN_SIDE = 2
#: High bit depth modes: min-max scaled to 8 bits.
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


class ImageError(LoclensError, ValueError):
    """An image that cannot be used; the message names the file and the problem.

    ``problem`` is the message without the file name, for reports (the rejects file) that name
    the file in a field of their own and must not carry absolute local paths.
    """

    def __init__(self, name: str, problem: str | None = None):
        if problem is None:  # one preformatted message
            super().__init__(name)
            self.problem = name
        else:
            super().__init__(f"{name}: {problem}")
            self.problem = problem


def _header(data: bytes, name: str) -> Image.Image:
    """Open (header only) and check the size before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"image exceeds the limit of {MAX_PIXELS} pixels ({exc})") from None
    except UnidentifiedImageError:
        # Not the exception text: it holds the repr of a BytesIO (a memory address), which
        # would make the rejects report differ from run to run.
        raise ImageError(name, "not a readable image (unknown format or not an image file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"image header is corrupt ({exc})") from None
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(name, f"image of {img.width}x{img.height} pixels exceeds the limit of {MAX_PIXELS}")
    if img.width < MIN_SIDE or img.height < MIN_SIDE:
        raise ImageError(name, f"image of {img.width}x{img.height} pixels is too small to segment")
    return img


def _reduced_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(data: bytes, name: str, max_side: int | None = None) -> Image.Image:
    """Decode fully (so truncation is caught), at most ``max_side`` pixels per side if given."""
    img = _header(data, name)
    size = _reduced_size(img.width, img.height, max_side)
    try:
        if size != img.size and img.format == "JPEG":
            img.draft(img.mode, size)  # decode at 1/2, 1/4 or 1/8 scale, still >= size
        img.load()
        if size != img.size:
            img = img.resize(size, Image.Resampling.BOX)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(name, f"image is truncated or corrupt ({exc})") from None
    return img


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(str(path), "image file not found") from None
    except IsADirectoryError:
        raise ImageError(str(path), "is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(str(path), f"cannot read image file ({exc.strerror or exc})") from None


def probe(data: bytes, name: str) -> tuple[int, int]:
    """Fully decode once (so truncated files are caught at ingest) and return (width, height).

    JPEGs are decoded at a reduced DCT scale: every block is still read (truncation is still
    caught) but the memory is a fraction of the full image's. The pixel mode is checked to
    convert to RGB, so later stages cannot fail on it.
    """
    img = _header(data, name)
    width, height = img.size
    img = _decode(data, name, max_side=max(MIN_SIDE, max(width, height) // 8) if img.format == "JPEG" else None)
    to_rgb_array(img.crop((0, 0, MIN_SIDE, MIN_SIDE)), name)
    return width, height


def to_rgb_array(img: Image.Image, name: str = "<image>") -> np.ndarray:
    """Convert any PIL mode to HxWx3 uint8; high bit depths are min-max scaled (windowing is
    unknown, so the full dynamic range is kept rather than clipped)."""
    try:
        if img.mode in HIGH_BIT_MODES:
            arr = np.asarray(img, dtype=np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * np.float32(255.0 / (hi - lo))
            gray = np.round(scaled).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
            # Transparent pixels become black, the background of radiographs.
            rgba = img.convert("RGBA")
            black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(black, rgba)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError, TypeError) as exc:
        raise ImageError(name, f"pixel mode {img.mode!r} cannot be converted to RGB ({exc})") from None


def load_rgb(data: bytes, name: str, max_side: int | None = None) -> np.ndarray:
    """HxWx3 uint8 pixels; with ``max_side``, reduced (keeping the aspect ratio) to fit it."""
    return to_rgb_array(_decode(data, name, max_side), name)
