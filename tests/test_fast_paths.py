"""The optimised code paths give exactly what their plain definitions give: lookup-table blends
vs the paper's float formula, the PNG writer vs its decoded pixels, connected components vs
regionprops, enclosed background vs binary_fill_holes, the streaming shard writer vs one write of the whole table, and the loader pool
keeps order, bounds its look-ahead and reports errors."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.measure import label, regionprops

from loclens import lens
from loclens.imageio import ImageError
from loclens.release import shards
from loclens.schema import VIEW_COLUMNS, arrow_schema
from loclens.segment import prompts, run


def paper_blend(image, labels, colours, alpha, outside):
    """The formula evaluated per pixel in float32 (as the first implementation did)."""
    img = image.astype(np.float32)
    layer = np.asarray(colours, dtype=np.float32)[labels]
    out = alpha * img + (1.0 - alpha) * layer
    if outside == "keep":
        out = np.where((labels > 0)[..., None], out, img)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    k=st.integers(1, 12),
    alpha=st.floats(0.0, 1.0),
    outside=st.sampled_from(["paper", "keep"]),
    grey=st.booleans(),
)
def test_table_blends_equal_the_float_formula(seed, h, w, k, alpha, outside, grey):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 1 if grey else 3), dtype=np.uint8)
    image = np.repeat(image, 3, axis=2) if grey else image  # grey: the one-gather path
    assert lens.is_grey(image) == (grey or bool(np.ptp(image.astype(int), axis=2).max() == 0))
    labels = rng.integers(0, k + 1, (h, w)).astype(np.int32)
    alpha = float(np.float32(alpha))  # draw_alpha returns float32 values
    palette = rng.integers(0, 256, (5, 3)).tolist()
    colour = rng.integers(0, 256, 3).tolist()
    uni = lens.unicolor(image, labels, alpha, colour, outside)
    assert np.array_equal(uni, paper_blend(image, (labels > 0).astype(int), [(0, 0, 0), colour], alpha, outside))
    multi_colours = [(0, 0, 0)] + [palette[i % len(palette)] for i in range(max(int(labels.max()), 1))]
    multi = lens.multicolor(image, labels, alpha, palette, outside)
    assert np.array_equal(multi, paper_blend(image, labels, multi_colours, alpha, outside))
    # The renderer's path: both views from one table index.
    both = lens.blend_views(image, labels, alpha, {"unicolor": colour, "palette": palette, "outside": outside})
    assert np.array_equal(both["unicolor"], uni) and np.array_equal(both["multicolor"], multi)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    grey=st.booleans(),
    level=st.integers(0, 3),
)
def test_png_writer_round_trips_exactly_and_deterministically(seed, h, w, grey, level):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
    data = lens.png_bytes(array, level)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == ("L" if grey else "RGB")
        assert np.array_equal(np.asarray(im), array)
    assert lens.png_bytes(array.copy(), level) == data


def test_png_writer_rejects_other_shapes():
    with pytest.raises(ValueError, match="expected HxW or HxWx3"):
        lens.png_bytes(np.zeros((4, 4, 4), np.uint8), 1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.05, 0.95))
def test_components_equal_regionprops(seed, density):
    mask = np.random.default_rng(seed).random((30, 37)) < density
    expected = [(int(r.area), r.bbox) for r in regionprops(label(mask, connectivity=2))]
    assert list(prompts._components(mask)) == expected


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 1.0), frame=st.sampled_from([None, True, False]))
def test_enclosed_background_equals_fill_holes(seed, density, frame):
    from scipy import ndimage

    body = np.random.default_rng(seed).random((23, 31)) < density
    if frame is not None:  # body all round (everything enclosed) or background all round
        body[0, :] = body[-1, :] = body[:, 0] = body[:, -1] = frame
    expected = ndimage.binary_fill_holes(body) & ~body
    assert np.array_equal(prompts._enclosed(~body), expected)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.sampled_from([0, 3]))
def test_grey_equals_the_channel_mean(seed, channels):
    shape = (17, 9, channels) if channels else (17, 9)
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    expected = image.mean(axis=2) if channels else image.astype(np.float64)
    assert np.array_equal(prompts._grey(image), expected)


def _row(i: int) -> dict:
    rng = np.random.default_rng(i)
    cell = lambda n: {"bytes": rng.bytes(n), "path": f"{i}.png"}  # noqa: E731
    return {
        "image_id": f"id{i:04d}",
        "dataset": "d",
        "split": "train",
        "source_file": f"img/{i}.jpg",
        "modality": None,
        "body_region": "chest",
        "width": 8,
        "height": 6,
        "image": cell(300),
        **{v: (cell(200) if i % 4 else None) for v in VIEW_COLUMNS},
        "alpha": {"sam": None, "medsam": 0.5},
        "masks": [
            {
                "segmenter": "medsam",
                "label": "a",
                "prompt_source": "otsu",
                "rle": {"size": [6, 8], "counts": "0Y1"},
                "bbox": [0.0, 0.0, 1.0, 1.0],
                "prompt_box": [0.0, 0.0, 2.0, 2.0],
                "score": 0.9,
                "area": 1,
                "model": "m",
                "checkpoint_sha256": "c",
            }
        ],
        "qa": [
            {
                "qid": str(i),
                "question": "q?",
                "answer": "a",
                "answer_type": "open",
                "question_type": ["PRES"],
                "lang": "en",
                "linked_id": None,
                "extra": "{}",
            }
        ],
        "provenance": {
            "image_sha256": "h",
            "config_hash": "c",
            "seed": 0,
            "loclens_version": "0",
            "segmenters": [],
            "masked_from": "medsam",
        },
    }


@pytest.mark.parametrize("n", [0, 1, shards.ROW_GROUP_ROWS, shards.ROW_GROUP_ROWS + 1, 3 * shards.ROW_GROUP_ROWS + 5])
def test_streaming_writer_is_byte_identical_to_one_write_of_the_table(tmp_path, n):
    rows = [_row(i) for i in range(n)]
    schema = arrow_schema()
    whole = tmp_path / "whole.parquet"
    pq.write_table(
        pa.Table.from_pylist(rows, schema=schema),
        whole,
        row_group_size=shards.ROW_GROUP_ROWS,
        **shards.parquet_options(schema),
    )
    streamed = tmp_path / "streamed.parquet"
    assert shards.write_shard(streamed, (r for r in rows)) == n
    assert streamed.read_bytes() == whole.read_bytes()
    assert pq.read_table(streamed).to_pylist() == pa.Table.from_pylist(rows, schema=schema).to_pylist()


def test_streaming_writer_holds_one_row_group_at_a_time(tmp_path, monkeypatch):
    produced = []
    seen_at_write = []
    original = pq.ParquetWriter.write_table

    def spy(self, table, *args, **kwargs):
        seen_at_write.append(len(produced))
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", spy)

    def rows():
        for i in range(3 * shards.ROW_GROUP_ROWS):
            produced.append(i)
            yield _row(i)

    shards.write_shard(tmp_path / "s.parquet", rows())
    g = shards.ROW_GROUP_ROWS
    assert seen_at_write == [g, 2 * g, 3 * g]  # each group written as soon as it is complete
    assert pq.ParquetFile(tmp_path / "s.parquet").metadata.num_row_groups == 3


def test_prefetched_keeps_order_and_bounds_look_ahead():
    started = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        time.sleep(0.001 * (i % 3))
        return i * i

    results = []
    for k, value in enumerate(run.prefetched(work, range(20), workers=3, ahead=4)):
        with lock:
            assert len(started) <= k + 1 + 4  # never more than `ahead` items beyond the one consumed
        results.append(value)
    assert results == [i * i for i in range(20)]


def test_prefetched_reports_the_failing_item():
    def work(i):
        if i == 3:
            raise ImageError("img3.jpg: not a readable image")
        return i

    with pytest.raises(ImageError, match="img3.jpg"):
        list(run.prefetched(work, range(6), workers=2, ahead=2))


def test_encoder_batch_is_chosen_by_device():
    import torch

    assert run.encoder_batch(torch.device("cpu")) == run.ENCODER_BATCH["cpu"]
    assert run.encoder_batch("cuda:1") == run.ENCODER_BATCH["cuda"]
    assert run.encoder_batch("mps") == 1


def test_plan_copies_views_of_an_image_in_two_splits_from_the_first_shard_that_renders_it():
    from loclens.ingest import make_plan

    rows = [{"image_id": i, "split": s} for s, ids in (("train", "abcd"), ("test", "bce")) for i in ids]
    plan = make_plan("x", rows, images_per_shard=2, rows_per_shard=2)
    views_from = {s.file: s.views_from for s in plan.release_shards}
    # Splits are planned in name order: test renders b, c, e; train copies b and c.
    assert views_from == {
        "x/test-00000-of-00002.parquet": {},
        "x/test-00001-of-00002.parquet": {},
        "x/train-00000-of-00002.parquet": {"x/test-00000-of-00002.parquet": ["b"]},
        "x/train-00001-of-00002.parquet": {"x/test-00000-of-00002.parquet": ["c"]},
    }


def test_rendered_views_reads_each_row_group_once_and_returns_the_rows_fields(tmp_path, monkeypatch):
    n = 3 * shards.ROW_GROUP_ROWS + 5
    rows = [_row(i) for i in range(n)]
    path = tmp_path / "test-00000-of-00001.parquet"
    shards.write_shard(path, iter(rows))
    wanted = [r["image_id"] for r in rows[::3]]
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_group",
        lambda self, g, **kw: reads.append((g, tuple(kw.get("columns") or ()))) or original(self, g, **kw),
    )
    views = shards.rendered_views({path.name: wanted}, tmp_path)
    reads.clear()  # the index read only image_id
    by_id = {r["image_id"]: r for r in pq.read_table(path).to_pylist()}  # as stored (float32 scores)
    for image_id in wanted:
        got = views.get(image_id)
        row = by_id[image_id]
        assert got["views"] == {c: row[c] for c in VIEW_COLUMNS} and got["image"] == row["image"]
        assert got["alpha"] == row["alpha"] and got["masks"] == row["masks"]
        assert got["masked_from"] == row["provenance"]["masked_from"]
    assert [g for g, _ in reads] == [0, 1, 2, 3]  # one read per row group, in order
    assert all("qa" not in columns for _, columns in reads)  # only the rendered columns
    assert rows[1]["image_id"] not in views


def test_rendered_views_names_the_shard_that_lacks_a_planned_image(tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    shards.write_shard(path, iter([_row(0)]))
    with pytest.raises(ValueError, match=r"test-00000-of-00001\.parquet: .*'id9999'.*re-render"):
        shards.rendered_views({path.name: ["id0000", "id9999"]}, tmp_path)
