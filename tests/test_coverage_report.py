"""Coverage by body region (images with each segmenter's views): counted once per image, and
printed alike by the dataset card and ``loclens bench`` from the manifest's figures."""

from __future__ import annotations

from loclens.bench.report import coverage_text
from loclens.release.card import coverage_lines
from loclens.schema import VIEW_COLUMNS

COVERAGE = {
    "segmenters": ["medsam"],
    "regions": {
        "abdomen": {"images": 100, "medsam": 100},
        "chest": {"images": 107, "medsam": 106},
        "head": {"images": 0, "medsam": 0},
    },
    "all": {"images": 207, "medsam": 206},
}


def test_coverage_counts_images_once_per_region_combination():
    from loclens.release.stats import SplitStats, coverage

    def row(image_id, region, medsam, sam=False):
        views = {v: None for v in VIEW_COLUMNS}
        if medsam:
            views.update(medsam_unicolor={"path": "u"}, medsam_multicolor={"path": "m"})
        if sam:
            views.update(sam_unicolor={"path": "u"})
        return {
            "image_id": image_id,
            "body_region": region,
            "width": 4,
            "height": 4,
            "alpha": {},
            "masks": [],
            "qa": [],
            "provenance": {"segmenters": []},
            **views,
        }

    train, test = SplitStats(), SplitStats()
    for r in (
        row("a", "chest", True),
        row("b", "chest", False),
        row("c", None, True, sam=True),
        row("d", "abdomen,chest", False),
    ):
        train.add_row(r)
    test.add_row(row("a", "chest", True))  # the same image in a second split counts once
    cov = coverage({"train": train, "test": test}, ["medsam", "sam"])
    assert cov == {
        "segmenters": ["medsam", "sam"],
        "regions": {
            "abdomen,chest": {"images": 1, "medsam": 0, "sam": 0},
            "chest": {"images": 2, "medsam": 1, "sam": 0},
            "unknown": {"images": 1, "medsam": 1, "sam": 1},
        },
        "all": {"images": 4, "medsam": 2, "sam": 1},
    }


def test_card_and_bench_print_the_same_coverage():
    card = "\n".join(coverage_lines(COVERAGE))
    assert "| body region | images | with `medsam_*` views |" in card
    assert "| chest | 107 | 106 (99.1%) |" in card and "| abdomen | 100 | 100 (100.0%) |" in card
    assert "| head | 0 | 0 (n/a) |" in card and "| **all** | 207 | 206 (99.5%) |" in card
    bench = "\n".join(coverage_text(COVERAGE))
    assert "coverage by body region" in bench
    lines = {line.split()[0]: line.split()[1:] for line in bench.splitlines()[3:]}
    assert lines["chest"] == ["107", "106", "(99.1%)"] and lines["all"] == ["207", "206", "(99.5%)"]
    assert lines["head"] == ["0", "n/a"]
    # Nothing to say when no segmenter ran (or an older manifest has no coverage).
    assert coverage_lines(None) == [] and coverage_text(None) == []
    assert coverage_lines({**COVERAGE, "segmenters": []}) == []
