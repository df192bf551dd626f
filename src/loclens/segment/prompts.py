"""Box prompt sources for box-prompted segmenters (MedSAM, LiteMedSAM).

A prompt source turns an image (and whatever the source knows about it) into labelled boxes.
Sources are named and tried in the configured order of preference: the first one that yields
boxes for an image is used. Never a whole-image box: MedSAM's authors report poor masks with it.

Each source is a function ``(image, cfg, context) -> [Prompt]``; ``cfg`` is its section of
``segment.medsam`` (plus the global ``max_prompts``, which a source's own ``max_prompts``
overrides) and ``context`` what the runner knows of the image (``prompt_context``):

- ``expert_boxes``: the dataset's expert boxes ``[{"label", "box": [x, y, w, h]}]`` (SLAKE
  ``detection.json``), validated at ingest;
- ``masks``: ``{<segmenter>: [<mask entries of this image from that segmenter's cache>]}``.

A source that reads another segmenter's masks names it in ``MASKS_READ``; the workflow then
makes the medsam job of a shard wait for that segmenter's cache of the same shard, and drops the
source when that segmenter is not enabled.

``expert`` (first by default): the expert boxes, labelled with their organ, in file order, up to
the source's own ``max_prompts``; images without expert boxes fall through to the next source.

``sam``: the boxes of the filtered SAM automatic masks of the image (``sam_filter``), ranked
by ``rank_by`` (``area``, largest first, or ``score``, SAM's predicted IoU), whole-image boxes
excluded, capped at ``max_prompts``. Each prompt keeps the SAM mask's label.

``otsu`` (the fallback where no other source has boxes): three-class Otsu thresholds of
the lightly smoothed grey image split it into background, soft tissue and bright structures.
Candidates are the connected components of the bright class (organs with contrast, bone), the
dark regions enclosed by the body (lungs, ventricles, bowel gas) and the body itself; largest
first, keeping those between ``min_area_fraction`` and ``max_area_fraction`` of the image,
capped at ``max_prompts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# scipy.ndimage and scikit-image are imported where an image is prompted: the registry below is
# read whenever the workflow loads (every Snakemake start, the release job), and importing
# them there cost 0.8 s each time.


#: A box spanning at least this fraction of both image sides counts as a whole-image box.
WHOLE_IMAGE = 0.95


@dataclass(frozen=True)
class Prompt:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels
    label: str
    source: str


def _is_whole_image(box, height: int, width: int) -> bool:
    x0, y0, x1, y1 = box
    return (x1 - x0) >= WHOLE_IMAGE * width and (y1 - y0) >= WHOLE_IMAGE * height


def _grey(image: np.ndarray) -> np.ndarray:
    """The channel mean in float64, as ``image.mean(axis=2)`` gives it (sums of 8-bit values are
    exact in float64, so the order of additions does not matter) at a quarter of its cost."""
    if image.ndim == 2:
        return image.astype(np.float64)
    grey = image[..., 0].astype(np.float64)
    for c in range(1, image.shape[2]):
        grey += image[..., c]
    grey /= image.shape[2]
    return grey


def _enclosed(background: np.ndarray) -> np.ndarray:
    """The background pixels that no 4-connected background path links to the image border:
    ``binary_fill_holes(~background) & background``, from one labelling instead of a dilation
    repeated until it converges (3x faster on VQA-RAD images)."""
    from scipy import ndimage

    regions, n = ndimage.label(background)  # 4-connectivity, as binary_fill_holes uses
    edges = np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])
    inside = np.ones(n + 1, dtype=bool)
    inside[0] = False  # label 0: not background
    inside[edges] = False  # regions that touch the border
    return inside[regions]


def _components(mask: np.ndarray):
    """(area, (y0, x0, y1, x1)) of each 8-connected component in label order, as regionprops
    gives them, from one bincount and one find_objects pass (regionprops sums each region
    separately: half of this prompt source's time on images with hundreds of specks)."""
    from scipy import ndimage
    from skimage.measure import label

    labels = label(mask, connectivity=2)
    areas = np.bincount(labels.ravel())
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            yield int(areas[k]), (box[0].start, box[1].start, box[0].stop, box[1].stop)


def otsu_prompts(image: np.ndarray, cfg: dict, context: dict | None = None) -> list[Prompt]:
    from skimage.filters import gaussian, threshold_multiotsu

    gray = _grey(image)
    gray = gaussian(gray, sigma=1.0, preserve_range=True)
    if np.unique(gray[:: max(1, gray.shape[0] // 64), :: max(1, gray.shape[1] // 64)]).size < 3:
        return []  # a (nearly) constant image has no structure to prompt
    try:
        t_body, t_bright = threshold_multiotsu(gray, classes=3)
    except ValueError:
        return []
    body = gray > t_body
    bright = gray > t_bright
    # Dark regions fully enclosed by the body: holes of the filled body mask.
    holes = _enclosed(~body)
    total = gray.size
    lo, hi = cfg["min_area_fraction"] * total, cfg["max_area_fraction"] * total
    candidates = []
    for kind, mask in (("bright", bright), ("dark", holes), ("body", body)):
        for area, (y0, x0, y1, x1) in _components(mask):
            if lo <= area <= hi and not _is_whole_image((x0, y0, x1, y1), *gray.shape[:2]):
                candidates.append((area, kind, (float(x0), float(y0), float(x1), float(y1))))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [
        Prompt(box=box, label=f"otsu-{kind}-{rank}", source="otsu")
        for rank, (_, kind, box) in enumerate(candidates[: cfg["max_prompts"]])
    ]


def expert_prompts(image: np.ndarray, cfg: dict, context: dict | None = None) -> list[Prompt]:
    prompts = []
    for item in (context or {}).get("expert_boxes") or []:
        x, y, w, h = (float(v) for v in item["box"])
        prompts.append(Prompt(box=(x, y, x + w, y + h), label=item["label"], source="expert"))
    return prompts


def prompt_context(row: dict, shape: tuple[int, int] | None = None, masks: dict | None = None) -> dict:
    """What prompt sources may know about one image: its ingest record's expert boxes and the
    masks other segmenters found (segmenter -> mask entries), both in the pixels of the image the
    segmenter sees: ``shape`` is its (height, width) when it was reduced from the record's size
    (see segment.run.read_max_side)."""
    sy = sx = 1.0
    if shape is not None and "height" in row and tuple(shape) != (row["height"], row["width"]):
        sy, sx = shape[0] / row["height"], shape[1] / row["width"]
    boxes = [{**b, "box": [b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy]} for b in row.get("expert_boxes") or []]
    scaled = {
        seg: [{**e, "bbox": [e["bbox"][0] * sx, e["bbox"][1] * sy, e["bbox"][2] * sx, e["bbox"][3] * sy]} for e in entries]
        for seg, entries in (masks or {}).items()
    }
    return {"expert_boxes": boxes, "masks": scaled}


def sam_prompts(image: np.ndarray, cfg: dict, context: dict | None = None) -> list[Prompt]:
    entries = ((context or {}).get("masks") or {}).get("sam") or []
    h, w = image.shape[:2]
    ranked = []
    for entry in entries:
        x, y, bw, bh = entry["bbox"]
        box = (float(x), float(y), float(x + bw), float(y + bh))
        if bw > 0 and bh > 0 and not _is_whole_image(box, h, w):
            ranked.append((-float(entry[cfg["rank_by"]]), box, entry["label"]))
    ranked.sort()
    return [Prompt(box=box, label=label, source="sam") for _, box, label in ranked[: cfg["max_prompts"]]]


PromptFn = Callable[[np.ndarray, dict, dict | None], list[Prompt]]

PROMPT_SOURCES: dict[str, PromptFn] = {
    "expert": expert_prompts,
    "sam": sam_prompts,
    "otsu": otsu_prompts,
}

#: Prompt source -> the segmenter whose masks it reads from the context.
MASKS_READ: dict[str, str] = {
    "sam": "sam",
}


def check_sources(names: list[str]) -> None:
    unknown = [n for n in names if n not in PROMPT_SOURCES]
    if unknown:
        raise ValueError(f"segment.medsam.prompts: unknown prompt source(s) {unknown}; known: {sorted(PROMPT_SOURCES)}")


def prompts_for(image: np.ndarray, sources: list[str], cfg: dict, context: dict | None = None) -> list[Prompt]:
    """Boxes from the first source, in order of preference, that yields any."""
    check_sources(sources)
    for name in sources:
        fn = PROMPT_SOURCES[name]
        # A source's own max_prompts (expert: every annotated organ) overrides the global cap.
        source_cfg = {"max_prompts": cfg["max_prompts"], **cfg.get(name, {})}
        boxes = fn(image, source_cfg, context)
        if boxes:
            return boxes[: source_cfg["max_prompts"]]
    return []
