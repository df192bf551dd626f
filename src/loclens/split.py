"""Split protocols.

- ``official``: each QA keeps its source's split label; an image whose QA sit in several splits
  gets one row per split (VQA-RAD's official split is by question, not by image).
- ``grouped``: the paper's seeded 70:30 split by image. Images connected by linked or
  paraphrased questions form one group; whole groups go to one split, so no image (and no
  paraphrase of a question) is in both train and test.
"""

from __future__ import annotations

from .provenance import seeded_int
from .sources.base import QA, ImageRecord


def official_rows(images: list[ImageRecord]) -> list[tuple[str, ImageRecord, list[QA]]]:
    rows: list[tuple[str, ImageRecord, list[QA]]] = []
    for image in images:
        by_split: dict[str, list[QA]] = {}
        for qa in image.qa:
            by_split.setdefault(qa.official_split or "train", []).append(qa)
        rows.extend((split, image, qas) for split, qas in sorted(by_split.items()))
    return rows


def _groups(images: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Connected components of images that share a linked_id (union-find)."""
    parent = {img.image_id: img.image_id for img in images}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_with_link: dict[str, str] = {}
    for img in images:
        for qa in img.qa:
            if qa.linked_id:
                other = first_with_link.setdefault(qa.linked_id, img.image_id)
                parent[find(img.image_id)] = find(other)
    groups: dict[str, list[ImageRecord]] = {}
    for img in images:
        groups.setdefault(find(img.image_id), []).append(img)
    return list(groups.values())


def grouped_rows(images: list[ImageRecord], seed: int, test_fraction: float) -> list[tuple[str, ImageRecord, list[QA]]]:
    groups = _groups(images)
    # Order groups by a key derived from their content and the seed only, so the split does
    # not depend on input order.
    groups.sort(key=lambda g: seeded_int("grouped-split", seed, min(i.image_id for i in g)))
    target = test_fraction * len(images)
    test_ids: set[str] = set()
    for group in groups:
        if len(test_ids) >= target:
            break
        test_ids.update(i.image_id for i in group)
    return [("test" if img.image_id in test_ids else "train", img, list(img.qa)) for img in images]


def assign_splits(images: list[ImageRecord], protocol: str, seed: int, test_fraction: float):
    if protocol == "official":
        return official_rows(images)
    if protocol == "grouped":
        return grouped_rows(images, seed, test_fraction)
    raise ValueError(f"unknown split protocol {protocol!r}")
