"""The vendored VQA-RAD subset (tests/data/) is what its README and script say it is."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json

from conftest import REPO
from PIL import Image

DATA = REPO / "tests" / "data"


def _script():
    spec = importlib.util.spec_from_file_location("make_vqa_rad_subset", DATA / "make_vqa_rad_subset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_are_the_release_files_unmodified_and_the_scripts_choice(vqa_rad_root):
    script = _script()
    folder = vqa_rad_root / script.IMAGE_DIR
    sums = dict(reversed(line.split("  ", 1)) for line in (DATA / "vqa_rad.sha256").read_text().splitlines())
    assert sorted(p.name for p in folder.iterdir()) == sorted(script.IMAGES)
    assert sorted(sums) == sorted(f"{script.IMAGE_DIR}/{n}" for n in script.IMAGES)
    for rel, digest in sums.items():
        assert hashlib.sha256((vqa_rad_root / rel).read_bytes()).hexdigest() == digest, rel
    total = sum(p.stat().st_size for p in vqa_rad_root.rglob("*") if p.is_file())
    assert total <= script.MAX_BYTES


def test_json_keeps_the_release_layout_and_covers_every_region_and_size(vqa_rad_root):
    script = _script()
    data = (vqa_rad_root / script.JSON_NAME).read_bytes()
    records = json.loads(data)
    assert json.dumps(records, indent=3, ensure_ascii=False).encode("utf-8") == data
    assert {r["image_name"] for r in records} == set(script.IMAGES) - {"synpic35356.jpg"}
    sizes = {}
    for name in script.IMAGES:
        with Image.open(vqa_rad_root / script.IMAGE_DIR / name) as im:
            sizes[name] = im.size
    regions = collections.defaultdict(set)
    for r in records:
        regions[r["image_organ"]].add(r["image_name"])
    assert set(regions) == {"HEAD", "CHEST", "ABD"} and all(len(v) >= 3 for v in regions.values())
    assert max(max(s) for s in sizes.values()) > 1024 and (1024, 842) in sizes.values()
    assert len({s for s in sizes.values()}) >= 10, "images of many sizes"
