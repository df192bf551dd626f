"""The embedded ``sample`` source: synthetic radiology phantoms in the VQA-RAD release layout.

Made at run time (no download), with known organ geometry so that the templated QA is true of
the image: chest slices (lungs, heart, spine), abdomen slices (liver, kidneys, spine) and head
slices (skull, brain, ventricles). Left/right follow the radiological convention: the patient's
right is on the image's left.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_bytes, write_json
from ..provenance import seeded_int
from .base import IngestResult
from .vqa_rad import IMAGE_DIR, JSON_NAME, read_vqa_rad

REGIONS = ("chest", "abdomen", "head")
ORGAN_CODE = {"chest": "CHEST", "abdomen": "ABD", "head": "HEAD"}


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _phantom(region: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A grayscale slice in [0, 1] and its organ masks."""
    h = w = size
    img = np.zeros((h, w))
    organs: dict[str, np.ndarray] = {}
    jitter = lambda s: s * (1 + rng.uniform(-0.06, 0.06))  # noqa: E731
    if region == "head":
        skull = _ellipse((h, w), h / 2, w / 2, jitter(0.42 * h), jitter(0.36 * w))
        brain = _ellipse((h, w), h / 2, w / 2, 0.38 * h, 0.32 * w)
        img[skull] = 0.95
        img[brain] = 0.5
        organs["brain"] = brain
        for side in (-1, 1):
            v = _ellipse((h, w), h / 2, w / 2 + side * 0.06 * w, jitter(0.1 * h), 0.03 * w)
            img[v] = 0.15
            organs.setdefault("ventricles", np.zeros_like(v))
            organs["ventricles"] |= v
    else:
        body = _ellipse((h, w), h / 2, w / 2, jitter(0.36 * h), jitter(0.46 * w))
        img[body] = 0.45
        spine = _ellipse((h, w), 0.72 * h, w / 2, 0.06 * h, 0.06 * w)
        if region == "chest":
            lungs = _ellipse((h, w), 0.47 * h, 0.3 * w, jitter(0.22 * h), 0.13 * w) | _ellipse(
                (h, w), 0.47 * h, 0.7 * w, jitter(0.22 * h), 0.13 * w
            )
            heart = _ellipse((h, w), 0.52 * h, 0.56 * w, jitter(0.12 * h), jitter(0.1 * w))
            img[lungs] = 0.08
            img[heart] = 0.7
            organs.update(lungs=lungs & ~heart, heart=heart)
        else:
            liver = _ellipse((h, w), 0.45 * h, 0.32 * w, jitter(0.16 * h), jitter(0.17 * w))
            kidneys = _ellipse((h, w), 0.62 * h, 0.33 * w, 0.07 * h, 0.05 * w) | _ellipse(
                (h, w), 0.62 * h, 0.67 * w, 0.07 * h, 0.05 * w
            )
            img[liver] = 0.68
            img[kidneys] = 0.8
            organs.update(liver=liver, kidneys=kidneys)
        img[spine] = 0.98
        organs["spine"] = spine
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    return img, organs


def phantom_case(index: int, seed: int = 0) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Phantom ``index`` of a sample: its region, 8-bit grey image and organ masks (the ground
    truth), derived from ``(seed, index)`` only."""
    region = REGIONS[index % len(REGIONS)]
    rng = np.random.default_rng(seeded_int("sample", seed, index))
    size = int(rng.choice([256, 320, 384, 512]))
    img, organs = _phantom(region, size, rng)
    return region, np.round(img * 255).astype(np.uint8), organs


def _side(mask: np.ndarray) -> str:
    cx = np.nonzero(mask)[1].mean() / mask.shape[1]
    # Radiological convention: the image's left is the patient's right.
    return "right" if cx < 0.45 else "left" if cx > 0.55 else "midline"


def _qa(region: str, organs: dict) -> list[tuple[str, str, str, str]]:
    """(question, answer, answer_type, question_type) templated from the phantom's geometry."""
    name = {"chest": "chest", "abdomen": "abdomen", "head": "head"}[region]
    items = [
        (f"Is this an image of the {name}?", "yes", "CLOSED", "ORGAN"),
        ("What imaging modality was used?", "CT", "OPEN", "MODALITY"),
    ]
    main = {"chest": "heart", "abdomen": "liver", "head": "brain"}[region]
    items.append((f"Is the {main} visible?", "yes", "CLOSED", "PRES"))
    items.append((f"On which side of the patient is the {main}?", _side(organs[main]), "OPEN", "POS"))
    absent = {"chest": "liver", "abdomen": "heart", "head": "lungs"}[region]
    items.append((f"Are the {absent} seen in this image?", "no", "CLOSED", "PRES, ORGAN"))
    return items


def generate_sample(out_dir, n_images: int = 8, seed: int = 0) -> Path:
    """Write ``n_images`` phantoms and their QA in the VQA-RAD layout under ``out_dir``."""
    out = Path(out_dir)
    records = []
    qid = 0
    n_test = max(1, round(n_images * 0.25))
    for i in range(n_images):
        region, img, organs = phantom_case(i, seed)
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=6)
        name = f"phantom_{i:03d}_{region}.png"
        write_bytes(out / IMAGE_DIR / name, buf.getvalue())
        test = i >= n_images - n_test
        for j, (question, answer, atype, qtype) in enumerate(_qa(region, organs)):
            records.append(
                {
                    "qid": qid,
                    "phrase_type": "test_freeform" if test else "freeform",
                    "qid_linked_id": f"sample-{i:03d}-{j}",
                    "image_case_url": "NULL",
                    "image_name": name,
                    "image_organ": ORGAN_CODE[region],
                    "evaluation": "synthetic",
                    "question": question,
                    "question_rephrase": "NULL",
                    "question_relation": "NULL",
                    "question_frame": "NULL",
                    "question_type": qtype,
                    "answer": answer,
                    "answer_type": atype,
                }
            )
            qid += 1
    write_json(out / JSON_NAME, records)
    return out


def read_sample(root, dataset: str = "sample") -> IngestResult:
    return read_vqa_rad(root, dataset=dataset)


__all__ = ["generate_sample", "read_sample", "phantom_case"]
