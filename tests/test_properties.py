"""Property tests (hypothesis): readers lose nothing whatever the records hold, RLE round-trips,
blending stays in range and is deterministic, splits keep every QA and never share an image."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from messy_data import encode, phantom
from PIL import Image

from loclens import lens
from loclens.config import validate
from loclens.ingest import read_jsonl, run_ingest
from loclens.segment import rle
from loclens.sources.base import QA, ImageRecord
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME
from loclens.split import assign_splits

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- readers -----------------------------------------------------------------------------------

#: Image names a record may point at: good files, bad files, missing ones and escapes.
GOOD_IMAGES = {"a.png": ("abdomen", 1), "b.png": ("chest", 2)}
IMAGE_NAMES = [*GOOD_IMAGES, "bad.png", "missing.png", "../x.png", "/etc/passwd", "", "a.png\x00", "sub/../a.png"]

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
text = st.one_of(st.sampled_from(["Is it?", "", "  ", "yes", "\udcff", "caf\u00e9", "\u80ba"]), st.text(max_size=8))


@st.composite
def record(draw):
    """Mostly plausible records, each field replaced by junk now and then, keys dropped or added."""

    def field(valid):
        return draw(st.one_of(junk, text)) if draw(st.integers(0, 11)) == 0 else draw(valid)

    rec = {
        "qid": field(st.one_of(st.integers(0, 12), st.sampled_from(["0", "7"]))),
        "image_name": field(st.sampled_from([*GOOD_IMAGES] * 3 + IMAGE_NAMES)),
        "question": field(st.one_of(st.sampled_from(["Is it?", "Where?"]), text)),
        "answer": field(st.one_of(st.sampled_from(["yes", "no"]), st.integers(0, 3), text)),
        "answer_type": field(st.sampled_from(["OPEN", "CLOSED ", "closed", "open", "maybe"])),
        "phrase_type": field(st.sampled_from(["freeform", "para", "test_freeform", "test_para", "freeform", "x"])),
        "question_type": field(st.sampled_from(["PRES", "PRES, POS", "ATRIB", ""])),
        "qid_linked_id": field(st.sampled_from(["l1", "l2", "NULL"])),
    }
    if draw(st.integers(0, 5)) == 0:
        del rec[draw(st.sampled_from(sorted(rec)))]  # a key goes missing
    rec.update(draw(st.dictionaries(st.text(max_size=5), junk, max_size=2)))  # unknown keys
    return rec


def _dataset(root: Path) -> None:
    (root / IMAGE_DIR).mkdir(parents=True)
    for name, (region, seed) in GOOD_IMAGES.items():
        (root / IMAGE_DIR / name).write_bytes(encode(Image.fromarray(phantom(region, 32, seed)), "PNG"))
    (root / IMAGE_DIR / "bad.png").write_bytes(b"not an image")
    (root / "x.png").write_bytes((root / IMAGE_DIR / "a.png").read_bytes())


@FAST
@given(records=st.lists(st.one_of(record(), record(), record(), junk), max_size=12), raw_bytes=st.booleans())
def test_every_record_is_released_or_rejected(records, raw_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        _dataset(root)
        data = json.dumps(records).encode("ascii")
        if raw_bytes:  # undecodable bytes inside a string of the file
            data = data.replace(b"Is it?", b"Is \xff it?")
        (root / JSON_NAME).write_bytes(data)
        config = validate({"datasets": {"d": {"source": "vqa_rad", "path": str(root)}}})
        plan = run_ingest("d", config, Path(tmp) / "out")  # writes UTF-8 reports: must not fail
        rows = read_jsonl(Path(tmp) / "out" / "records.jsonl")
        rejects = read_jsonl(Path(tmp) / "out" / "rejects.jsonl")
        released = [qa["qid"] for row in rows for qa in row["qa"]]
        qa_rejects = [r for r in rejects if r["kind"] == "qa"]
        assert plan.input_records == len(records) == len(released) + len(qa_rejects)
        assert len(set(released)) == len(released), "a qid released twice"
        assert all(r["reason"] and r["source_file"] for r in rejects)
        assert all(row["source_file"].startswith(IMAGE_DIR + "/") for row in rows)  # nothing from outside
        for row in rows:
            assert all(qa["question"].strip() and qa["answer"].strip() for qa in row["qa"])
        event(f"released: {'some' if released else 'none'}")


# --- RLE -----------------------------------------------------------------------------------------

masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda hw: arrays(np.bool_, hw))


@FAST
@given(mask=masks)
def test_rle_round_trip(mask):
    enc = rle.encode(mask)
    assert enc["size"] == list(mask.shape)
    assert np.array_equal(rle.decode(enc), mask)
    assert rle.area(enc) == int(mask.sum())
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert rle.bbox_xywh(enc) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@FAST
@given(mask=masks, size=st.tuples(st.integers(1, 60), st.integers(1, 60)))
def test_rle_of_a_resized_mask_equals_the_resized_mask(mask, size):
    h, w = mask.shape
    full = mask[(np.arange(size[0]) * h) // size[0]][:, (np.arange(size[1]) * w) // size[1]]
    assert rle.encode_resized(mask, size) == rle.encode(full)


# --- blending ------------------------------------------------------------------------------------

ALPHA = {"mean": 0.5, "std": 0.1, "min": 0.2, "max": 0.8}
RENDER = {"unicolor": [255, 0, 0], "palette": [[230, 25, 75], [60, 180, 75], [0, 130, 200]]}


@st.composite
def scene(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    image = draw(arrays(np.uint8, (h, w, 3)))
    ms = draw(st.lists(arrays(np.bool_, (h, w)), min_size=1, max_size=4))
    return image, ms


@FAST
@given(scene=scene(), alpha=st.floats(0, 1), outside=st.sampled_from(["paper", "keep"]))
def test_blends_stay_between_image_and_colour_and_are_deterministic(scene, alpha, outside):
    image, ms = scene
    cfg = {**RENDER, "outside": outside}
    views = lens.render_blends(image, ms, alpha, cfg)
    again = lens.render_blends(image.copy(), [m.copy() for m in ms], alpha, cfg)
    labels = lens.label_map(ms)
    pal = np.asarray(cfg["palette"])
    for kind, view in views.items():
        assert view.dtype == np.uint8 and view.shape == image.shape
        assert np.array_equal(view, again[kind])
        colour = np.zeros(image.shape)
        covered = labels > 0
        if kind == "unicolor":
            colour[covered] = cfg["unicolor"]
        else:
            colour[covered] = pal[(labels[covered] - 1) % len(pal)]
        lo, hi = np.minimum(image, colour), np.maximum(image, colour)
        assert (view >= np.floor(lo) - 1).all() and (view <= np.ceil(hi) + 1).all()
        if outside == "keep":
            assert np.array_equal(view[~covered], image[~covered])
    masked = lens.masked(image, labels > 0)
    assert np.array_equal(masked[labels > 0], image[labels > 0]) and not masked[labels == 0].any()


@FAST
@given(seed=st.integers(0, 2**63 - 1), image_id=st.text(max_size=16), source=st.sampled_from(["sam", "medsam"]))
def test_alpha_is_in_range_and_reproducible(seed, image_id, source):
    a = lens.draw_alpha(seed, image_id, source, ALPHA)
    assert np.float32(ALPHA["min"]) <= a <= np.float32(ALPHA["max"])
    assert a == lens.draw_alpha(seed, image_id, source, ALPHA)


# --- split ---------------------------------------------------------------------------------------


@st.composite
def images(draw):
    n = draw(st.integers(1, 12))
    out = []
    qid = 0
    for i in range(n):
        qas = []
        for _ in range(draw(st.integers(1, 4))):
            qas.append(
                QA(
                    str(qid),
                    "q?",
                    "a",
                    "open",
                    [],
                    "en",
                    draw(st.one_of(st.none(), st.sampled_from(["l1", "l2", "l3", "l4"]))),
                    draw(st.sampled_from(["train", "test", None])),
                )
            )
            qid += 1
        out.append(ImageRecord("d", f"img{i:02d}", "", f"f{i}", f"/f{i}", 8, 8, None, None, qas))
    return out


@FAST
@given(imgs=images(), seed=st.integers(0, 1000), fraction=st.floats(0.05, 0.95))
def test_grouped_split_keeps_every_qa_and_no_image_or_paraphrase_in_two_splits(imgs, seed, fraction):
    rows = assign_splits(imgs, "grouped", seed, fraction)
    split_of: dict[str, set] = {}
    for split, image, _ in rows:
        split_of.setdefault(image.image_id, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values()) and set(split_of) == {i.image_id for i in imgs}
    assert Counter(qa.qid for _, _, qas in rows for qa in qas) == Counter(qa.qid for i in imgs for qa in i.qa)
    link_splits: dict[str, set] = {}
    for split, _, qas in rows:
        for qa in qas:
            if qa.linked_id:
                link_splits.setdefault(qa.linked_id, set()).add(split)
    assert all(len(s) == 1 for s in link_splits.values())
    reordered = assign_splits(list(reversed(imgs)), "grouped", seed, fraction)
    assert sorted((s, i.image_id) for s, i, _ in rows) == sorted((s, i.image_id) for s, i, _ in reordered)


@FAST
@given(imgs=images())
def test_official_split_keeps_every_qa_in_its_own_split(imgs):
    rows = assign_splits(imgs, "official", 0, 0.3)
    got = Counter((split, qa.qid) for split, _, qas in rows for qa in qas)
    assert got == Counter((qa.official_split or "train", qa.qid) for i in imgs for qa in i.qa)
    assert len({(split, image.image_id) for split, image, _ in rows}) == len(rows)  # one row per image and split
