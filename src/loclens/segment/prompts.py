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

``chest`` (after ``otsu`` by default): a frontal chest radiograph whose body fills the frame.
There ``otsu`` finds nothing: the body is a whole-image box, its bright class one component
larger than ``max_area_fraction``, and the lungs, not darker than the body threshold, are no
dark holes. This source works on a copy reduced to ``work_side`` pixels: the body is the
filled foreground of the lowest three-class Otsu threshold; a second Otsu threshold over the
body's pixels alone splits it into air and dense tissue, and the lung fields are the (at most
two) largest air components after the rim of the body (``rim_fraction``) is removed and thin
dark bridges to the neck and axillae are opened (``opening_fraction``), each at least
``min_lung_fraction`` of the image and at most ``LUNG_MAX_WIDTH`` of the body's width and,
when two, on either side of the body's midline.
Boxes: each lung field (labelled by its side in the image, not the patient's: orientation
markers are not read), the mediastinum (the rows that cross both lungs, between their median
inner edges), the heart shadow (the lower half of those rows) and the body below the higher
lung base (``below-diaphragm``, when at least ``min_below_fraction`` of the image height).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# scipy.ndimage and scikit-image are imported where an image is prompted: the registry below is
# read whenever the workflow loads (every Snakemake start, the release job), and importing
# them there cost 0.8 s each time.


#: A box spanning at least this fraction of both image sides counts as a whole-image box.
WHOLE_IMAGE = 0.95
#: A lung field spans at most this fraction of the body's width: one side of the thorax and
#: what it overlaps of the mediastinum. Wider dark regions (the soft tissue around a denser
#: organ, a strip across the frame) are not a lung.
LUNG_MAX_WIDTH = 0.6


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
    ``binary_fill_holes(~background) & background``, from one labelling pass instead of a
    dilation repeated until it converges, whose passes grow with the holes (BENCHMARKS.md,
    Otsu prompts)."""
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


def _work_copy(gray: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``gray`` reduced (anti-aliased) so that its longest side is at most ``side``, lightly
    smoothed, and the factors (sy, sx) that map its pixels back to ``gray``'s. The analysis
    then costs the same at any image size and sees anatomy, not film grain."""
    from skimage.filters import gaussian
    from skimage.transform import resize

    h, w = gray.shape
    if max(h, w) > side:
        shape = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
        gray = resize(gray, shape, anti_aliasing=True, preserve_range=True)
    return gaussian(gray, sigma=1.0, preserve_range=True), (h / gray.shape[0], w / gray.shape[1])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _lung_fields(gray: np.ndarray, cfg: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """The body (filled) and up to two lung fields of a reduced chest radiograph, lung fields
    ordered left to right in the image. The body is what the lowest of three Otsu classes
    leaves; the lung fields are the largest components of the air class of a second Otsu
    threshold taken over the body's pixels only, so the black surround does not set it. Dark
    pixels near the body's edge (soft tissue thinning towards the skin, the frame border) are
    not lung: they are removed with ``rim_fraction`` of the longest side before labelling."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu, threshold_otsu
    from skimage.morphology import disk

    t_body = threshold_multiotsu(gray, classes=3)[0]
    body = _largest_component(ndimage.binary_fill_holes(gray > t_body))
    if body.sum() < 2:
        return body, []
    air = (gray < threshold_otsu(gray[body])) & body
    rim = max(1.0, cfg["rim_fraction"] * max(gray.shape))
    # Distance to the nearest pixel outside the body, the frame counting as outside.
    inside = ndimage.distance_transform_edt(np.pad(body, 1))[1:-1, 1:-1] > rim
    # An opening cuts the thin dark bridges (neck, axilla, the rim) that join a lung field to
    # soft tissue outside the thorax.
    radius = max(1, round(cfg["opening_fraction"] * max(gray.shape)))
    air = ndimage.binary_opening(air & inside, structure=disk(radius))
    labels, n = ndimage.label(air)
    if n == 0:
        return body, []
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    min_area = cfg["min_lung_fraction"] * gray.size
    cols = np.nonzero(body.any(axis=0))[0]
    max_width = LUNG_MAX_WIDTH * (cols[-1] + 1 - cols[0])
    boxes = ndimage.find_objects(labels)
    candidates = [
        k for k in range(1, n + 1) if sizes[k] >= min_area and boxes[k - 1][1].stop - boxes[k - 1][1].start <= max_width
    ]
    # Two largest; ties by label so the choice never depends on anything else.
    order = sorted(candidates, key=lambda k: (-sizes[k], k))[:2]
    fields = [labels == k for k in order]
    fields.sort(key=lambda m: np.nonzero(m.any(axis=0))[0].mean())
    if len(fields) == 2:
        # Both on one side of the body's midline: the smaller is a pocket of the same lung
        # (or bowel gas), not the other lung.
        mid = (cols[0] + cols[-1] + 1) / 2
        centres = [np.nonzero(m)[1].mean() for m in fields]
        if (centres[0] - mid) * (centres[1] - mid) > 0:
            fields = [max(fields, key=lambda m: int(m.sum()))]
    return body, fields


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty mask, exclusive ends."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _between_lungs(left: np.ndarray, right: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, first column, end column) of the gap between the two lung fields, for every row
    that crosses both."""
    gaps = []
    for y in np.nonzero(left.any(axis=1) & right.any(axis=1))[0]:
        x0 = int(np.nonzero(left[y])[0][-1]) + 1
        x1 = int(np.nonzero(right[y])[0][0])
        if x1 > x0:
            gaps.append((int(y), x0, x1))
    return gaps


def _gap_box(gaps: list[tuple[int, int, int]]) -> tuple[int, int, int, int]:
    """The box of a run of gap rows: its rows, and the median edges of the gap (the lungs'
    apices and costophrenic angles are thin slivers whose inner edges lie far out; the
    median edge is the mediastinum's)."""
    x0 = int(np.median([g[1] for g in gaps]))
    x1 = int(np.ceil(np.median([g[2] for g in gaps])))
    return x0, gaps[0][0], max(x1, x0 + 1), gaps[-1][0] + 1


def chest_prompts(image: np.ndarray, cfg: dict, context: dict | None = None) -> list[Prompt]:
    gray, (sy, sx) = _work_copy(_grey(image), cfg["work_side"])
    if np.unique(gray[:: max(1, gray.shape[0] // 64), :: max(1, gray.shape[1] // 64)]).size < 3:
        return []
    body, fields = _lung_fields(gray, cfg)
    if not fields:
        return []
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    if len(fields) == 2:
        boxes += [("lung-field-image-left", _bbox(fields[0])), ("lung-field-image-right", _bbox(fields[1]))]
        gaps = _between_lungs(*fields)
        if len(gaps) >= 2:
            boxes.append(("mediastinum", _gap_box(gaps)))
            # The heart shadow: the gap's lower half, where the heart widens it.
            boxes.append(("heart-shadow", _gap_box(gaps[len(gaps) // 2 :])))
    else:
        x0, y0, x1, y1 = _bbox(fields[0])
        bx0, _, bx1, _ = _bbox(body)
        side = "left" if x0 + x1 < bx0 + bx1 else "right"  # of the body's midline
        boxes.append((f"lung-field-image-{side}", (x0, y0, x1, y1)))
    # Below the diaphragm: the body under the higher of the lung bases, across the lung fields,
    # at most as deep as the lungs are high.
    lx0, ly0, lx1, ly1 = _bbox(np.logical_or.reduce(fields))
    dome = min(_bbox(m)[3] for m in fields)
    below = body[dome : min(body.shape[0], dome + (ly1 - ly0)), lx0:lx1]
    if below.any(axis=1).sum() >= cfg["min_below_fraction"] * gray.shape[0]:
        rows = np.nonzero(below.any(axis=1))[0]
        boxes.append(("below-diaphragm", (lx0, dome + int(rows[0]), lx1, dome + int(rows[-1]) + 1)))
    h, w = image.shape[:2]
    prompts = []
    for label, (x0, y0, x1, y1) in boxes:
        box = (min(x0 * sx, w), min(y0 * sy, h), min(x1 * sx, w), min(y1 * sy, h))
        if box[2] > box[0] and box[3] > box[1] and not _is_whole_image(box, h, w):
            prompts.append(
                Prompt(
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    label=f"chest-{label}",
                    source="chest",
                )
            )
    return prompts[: cfg["max_prompts"]]


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
    boxes = [
        {**b, "box": [b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy]}
        for b in row.get("expert_boxes") or []
    ]
    scaled = {
        seg: [
            {**e, "bbox": [e["bbox"][0] * sx, e["bbox"][1] * sy, e["bbox"][2] * sx, e["bbox"][3] * sy]} for e in entries
        ]
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
    "chest": chest_prompts,
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
