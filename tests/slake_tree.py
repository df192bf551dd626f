"""A small SLAKE tree in either published layout, made from the sample phantoms.

Images have real structure (the phantoms of ``loclens.sources.sample``) and matching expert
annotations: ``mask.png`` (class id in channel 0, other channels noise-free but non-zero so a
reader that ignores the convention fails), ``detection.json`` (one box per connected component
of each organ, so an organ can appear twice) and ``mask.txt``. The JSON records carry SLAKE's
quirks: keys in varying order, Chinese rows (one image's Chinese rows in another split than its
English rows), an empty answer, a CLOSED answer that is not yes/no, a kvqa row with a triple, a
record whose img_name does not match its img_id, an image folder no record refers to, and an
image without expert annotations (empty detection.json, no mask.png).
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import label, regionprops

from loclens.sources.sample import phantom_case

#: mask.txt of the tree: class id -> organ name (SLAKE spells organs capitalised).
CLASS_NAMES = {1: "Liver", 2: "Kidney", 3: "Heart", 4: "Lung", 5: "Spinal Cord", 6: "Brain", 7: "Ventricle"}
ORGAN_CLASS = {"liver": 1, "kidneys": 2, "heart": 3, "lungs": 4, "spine": 5, "brain": 6, "ventricles": 7}
LOCATION = {"chest": ("Chest_lung", "X-Ray"), "abdomen": ("Abdomen", "CT"), "head": ("Brain_Tissue", "MRI")}
MAIN_ORGAN = {"chest": "Heart", "abdomen": "Liver", "head": "Brain"}

#: img_id -> (phantom index, split of its English rows, has expert annotations)
IMAGES = {3: (0, "train", True), 17: (1, "train", True), 102: (2, "validation", True), 641: (3, "test", False)}
#: img_id -> split file holding its Chinese rows (not the English rows' split for 3 and 102)
CHINESE_SPLIT = {3: "test", 17: "train", 102: "train", 641: "test"}
UNREFERENCED_ID = 999


def label_map(organs: dict[str, np.ndarray]) -> np.ndarray:
    """Class ids painted in the phantom's organ order (inner structures last, on top)."""
    ids = np.zeros(next(iter(organs.values())).shape, dtype=np.uint8)
    for organ, mask in organs.items():
        ids[mask] = ORGAN_CLASS[organ]
    return ids


def boxes(ids: np.ndarray) -> list[dict]:
    out = []
    for class_id in sorted(int(c) for c in np.unique(ids) if c):
        for region in regionprops(label(ids == class_id, connectivity=2)):
            y0, x0, y1, x1 = region.bbox
            out.append({CLASS_NAMES[class_id]: [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]})
    return out


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _record(
    rng: random.Random,
    qid: int,
    img_id: int,
    region: str,
    question: str,
    answer,
    lang: str,
    answer_type: str,
    content_type: str,
    base_type: str = "vqa",
    triple=("vhead", "_", "_"),
) -> dict:
    location, modality = LOCATION[region]
    rec = {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": location,
        "modality": modality,
        "answer_type": answer_type,
        "base_type": base_type,
        "triple": list(triple),
        "qid": qid,
        "content_type": content_type,
    }
    keys = list(rec)
    rng.shuffle(keys)  # SLAKE's key order varies from record to record
    return {k: rec[k] for k in keys}


def _records(rng: random.Random) -> dict[str, list[dict]]:
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    qid = 10_000
    for img_id, (index, split, _) in IMAGES.items():
        region = phantom_case(index)[0]
        organ = MAIN_ORGAN[region]
        english = [
            (f"Does the picture contain {organ.lower()}?", "Yes", "CLOSED", "Organ"),
            (f"Where is the {organ.lower()} in this image?", "Center", "OPEN", "Position"),
            ("What modality is used to take this image?", LOCATION[region][1], "OPEN", "Modality"),
            (f"Which is bigger in this image, {organ.lower()} or spinal cord?", organ, "CLOSED", "Size"),
        ]
        for question, answer, atype, ctype in english:
            splits[split].append(_record(rng, qid, img_id, region, question, answer, "en", atype, ctype))
            qid += 1
        chinese = [
            ("这张图片是用什么方式拍摄的？", LOCATION[region][1], "OPEN", "Modality"),
            ("主要器官在哪里？", "中间", "OPEN", "Position"),
        ]
        for question, answer, atype, ctype in chinese:
            splits[CHINESE_SPLIT[img_id]].append(
                _record(rng, qid, img_id, region, question, answer, "zh", atype, ctype)
            )
            qid += 1
    # A knowledge-graph question, an empty answer and an img_name that does not match its img_id.
    splits["train"].append(
        _record(
            rng,
            qid,
            17,
            "abdomen",
            "What is the function of the liver?",
            "Detoxification",
            "en",
            "OPEN",
            "KG",
            base_type="kvqa",
            triple=("liver", "function", "?"),
        )
    )
    splits["train"].append(
        _record(
            rng, qid + 1, 17, "abdomen", "What diseases are included in the picture?", "", "en", "OPEN", "Abnormality"
        )
    )
    bad = _record(rng, qid + 2, 3, "chest", "Is this a CT image?", "No", "en", "CLOSED", "Modality")
    bad["img_name"] = "xmlab4/source.jpg"
    splits["test"].append(bad)
    return splits


#: Records the tree's JSON holds, and which of them a reader must reject (with lang: en).
N_RECORDS = len(IMAGES) * 6 + 3
N_CHINESE = len(IMAGES) * 2
N_MALFORMED = 2  # the empty answer and the img_name mismatch


def build_slake_tree(root: Path, layout: str = "original", seed: int = 0) -> Path:
    """Write the tree under ``root`` in the ``original`` or ``hf`` (BoKelvin/SLAKE) layout."""
    assert layout in ("original", "hf")
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for img_id, (index, _, annotated) in IMAGES.items():
        region, gray, organs = phantom_case(index, seed)
        folder = f"imgs/xmlab{img_id}"
        files[f"{folder}/source.jpg"] = _jpeg(gray)
        if annotated:
            ids = label_map(organs)
            rgb = np.stack([ids, ids * 20, (ids > 0).astype(np.uint8) * 255], axis=2)
            files[f"{folder}/mask.png"] = _png(rgb)
            files[f"{folder}/detection.json"] = json.dumps(boxes(ids)).encode()
        else:
            files[f"{folder}/detection.json"] = b"[]"
    files[f"imgs/xmlab{UNREFERENCED_ID}/source.jpg"] = _jpeg(phantom_case(5, seed)[1])
    splits = _records(rng)
    for img_id in IMAGES:
        mine = [r for recs in splits.values() for r in recs if r["img_id"] == img_id]
        files[f"imgs/xmlab{img_id}/question.json"] = json.dumps(mine, ensure_ascii=False).encode()
    validation = "validate.json" if layout == "original" else "validation.json"
    for split, name in (("train", "train.json"), ("validation", validation), ("test", "test.json")):
        (root / name).write_text(json.dumps(splits[split], ensure_ascii=False, indent=1), encoding="utf-8")
    (root / "mask.txt").write_text("".join(f"{i}:{n}\n" for i, n in CLASS_NAMES.items()))
    if layout == "original":
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        (root / "KG").mkdir(exist_ok=True)
        (root / "KG" / "en_organ.csv").write_text("liver#function#detoxification\n")
    else:
        with zipfile.ZipFile(root / "imgs.zip", "w") as zf:
            for rel, data in sorted(files.items()):
                zf.writestr(rel, data)
    return root


def expert_label_maps(seed: int = 0) -> dict[int, np.ndarray]:
    """img_id -> the class-id map written to its mask.png (annotated images)."""
    return {img_id: label_map(phantom_case(index, seed)[2]) for img_id, (index, _, ann) in IMAGES.items() if ann}
