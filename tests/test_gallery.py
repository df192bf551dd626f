"""QC gallery: sample pictures and summary plots of a real (small) release."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from loclens.cli import main
from loclens.release.gallery import PANEL_INCHES, sample_ids, samples_figure


def test_sample_is_seeded_and_order_free():
    ids = [f"{i:016x}" for i in range(50)]
    picked = sample_ids(ids, 5, seed=0)
    assert len(picked) == 5 and picked == sample_ids(list(reversed(ids)), 5, seed=0)
    assert picked != sample_ids(ids, 5, seed=1)
    assert sample_ids(ids[:3], 5, seed=0) == sorted(ids[:3])


def test_gallery_pictures_show_every_image_and_view(small_release, tmp_path):
    out = tmp_path / "qc"
    assert (
        main(
            ["gallery", str(small_release.release), "--dataset", "sample", "--out", str(out), "--images-per-split", "2"]
        )
        == 0
    )
    manifest = json.loads((small_release.release / "manifest.json").read_text())
    splits = manifest["datasets"]["sample"]["splits"]
    assert set(splits) == {"train", "test"}
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(f"{s}.png" for s in splits)
    for split, s in splits.items():
        img = Image.open(out / "samples" / f"{split}.png")
        n = min(2, s["rows"])
        # one line per sampled image, one panel per column (original, masks, 5 views)
        assert img.height >= int(n * PANEL_INCHES * 110) and img.width >= int(7 * PANEL_INCHES * 110) - 2
        pixels = np.asarray(img.convert("RGB"))
        assert pixels.std() > 20  # pictures, not a blank canvas
    summary = Image.open(out / "summary.png")
    assert summary.size == (1200, 800)
    first = (out / "summary.png").read_bytes()
    main(["gallery", str(small_release.release), "--dataset", "sample", "--out", str(out), "--images-per-split", "2"])
    assert (out / "summary.png").read_bytes() == first  # same release, same picture


def test_missing_views_are_labelled_with_their_reason(small_release):
    import pyarrow.parquet as pq

    row = pq.read_table(next(small_release.release.glob("sample/test-*.parquet"))).to_pylist()[0]
    fig = samples_figure([row], "t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("missing:\nsegmenter not run") == 2  # sam_unicolor, sam_multicolor
    assert any(t.startswith("otsu-") for t in texts)  # mask labels on the outlined original
    assert [ax.get_title() for ax in fig.axes][:7] == [
        "original",
        "masks",
        "sam_unicolor",
        "sam_multicolor",
        "medsam_unicolor",
        "medsam_multicolor",
        "masked",
    ]
