"""Training data over a real VQA-RAD release: what a sample holds, determinism of the views,
and how ranks and DataLoader workers share the row groups."""

from __future__ import annotations

from collections import Counter

import datasets
import fsspec
import numpy as np
import pytest
from torch.utils.data import DataLoader

from loclens.schema import VIEW_COLUMNS
from loclens.train import ReleaseDataset, ReleaseError, ReleaseStream, open_release
from loclens.train.data import rank_pieces, round_robin
from loclens.train.reader import open_release_on
from loclens.train.samples import align_text


@pytest.fixture(scope="module")
def release_dir(train_release):
    return train_release / "results" / "release"


@pytest.fixture(scope="module")
def release(release_dir):
    return open_release(release_dir)


def keys_only(samples):
    return {"keys": [s["key"] for s in samples], "columns": [s["columns"] for s in samples]}


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_samples_match_the_release_read_back_with_datasets(release, release_dir):
    files = sorted(str(p) for p in (release_dir / "vqa_rad").glob("train-*.parquet"))
    rows = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(release.files) == len(files) >= 2 and release.num_rows == len(rows) == 5
    align = ReleaseDataset(release, "align")
    assert len(align) == len(rows)
    by_id = {r["image_id"]: r for r in rows}
    for i in range(len(align)):
        s = align[i]
        row = by_id[s["image_id"]]
        # No expert masks in VQA-RAD: the body region, then the answers of its open ORGAN questions.
        region, _, organs = s["text"].partition(": ")
        assert region == row["body_region"]
        said = {
            qa["answer"].lower() for qa in row["qa"] if "ORGAN" in qa["question_type"] and qa["answer_type"] == "open"
        }
        assert set(filter(None, organs.split(", "))) == said
        assert np.array_equal(s["images"][0], np.asarray(row["image"].convert("RGB")))
        present = [c for c in VIEW_COLUMNS if row[c] is not None]
        assert s["columns"][0] == "image" and set(s["columns"][1:]) <= set(present)
        kinds = {c.rsplit("_", 1)[-1] for c in present}
        assert len(s["images"]) == 1 + min(2, len(kinds))
        assert len({c.rsplit("_", 1)[-1] for c in s["columns"][1:]}) == len(s["columns"]) - 1  # distinct kinds
        for col, img in zip(s["columns"][1:], s["images"][1:]):
            assert np.array_equal(img, np.asarray(row[col].convert("RGB")))
    vqa = ReleaseDataset(release, "vqa")
    assert len(vqa) == sum(len(r["qa"]) for r in rows) > len(rows)
    s = vqa[len(vqa) - 1]
    qa = {q["qid"]: q for q in by_id[s["image_id"]]["qa"]}[s["key"].split("/")[1]]
    assert s["text"] == f"question: {qa['question']} answer: {qa['answer']}"
    assert (s["question"], s["answer"]) == (qa["question"], qa["answer"])


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_rows_without_lens_views_and_original_only_training(release):
    counts = Counter(len(ReleaseDataset(release, "align")[i]["images"]) for i in range(release.num_rows))
    assert counts == {3: release.num_rows}  # every image has medsam views (chest radiographs too)
    # SAM is off in this build, so no row has its views: a sample then holds the original alone.
    no_lens = ReleaseDataset(release, "align", views=["sam_unicolor", "sam_multicolor"])
    assert [no_lens[i]["columns"] for i in range(len(no_lens))] == [["image"]] * release.num_rows
    for kwargs in ({"views": []}, {"views_per_sample": 0}):
        ds = ReleaseDataset(release, "align", **kwargs)
        assert all(ds[i]["columns"] == ["image"] for i in range(len(ds)))
    only_masked = ReleaseDataset(release, "align", views=["masked"])
    assert {c for i in range(len(only_masked)) for c in only_masked[i]["columns"]} == {"image", "masked"}


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_views_depend_on_seed_epoch_and_sample_only(release):
    def columns(seed, epoch, **kw):
        ds = ReleaseDataset(release, "vqa", seed=seed, transform=lambda s: {k: s[k] for k in ("key", "columns")}, **kw)
        ds.set_epoch(epoch)
        return {s["key"]: s["columns"] for s in (ds[i] for i in range(len(ds)))}

    first = columns(0, 0)
    assert columns(0, 0) == first
    assert columns(0, 1) != first and columns(1, 0) != first
    # The same samples through the sharded stream (2 ranks, 2 workers) get the same views.
    seen = {}
    for rank in range(2):
        stream = ReleaseStream(release, "vqa", 3, keys_only, seed=0, rank=rank, world_size=2)
        stream.set_epoch(0)
        for batch in DataLoader(stream, batch_size=None, num_workers=2):
            seen.update(zip(batch["keys"], batch["columns"]))
    assert seen and all(first[k] == v for k, v in seen.items())


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_ranks_and_workers_share_row_groups_without_overlap(release):
    total = len(ReleaseDataset(release, "vqa"))
    for world in (1, 2, 3):
        by_rank = []
        for rank in range(world):
            stream = ReleaseStream(release, "vqa", 4, keys_only, rank=rank, world_size=world)
            orders = [stream.worker_order(w, 2) for w in range(2)]
            units = [{r.unit for r in o} for o in orders]
            assert not units[0] & units[1]  # a row group goes to one worker of a rank
            refs = [r for o in orders for r in o]
            assert len(refs) == len(set(refs)) == total // world
            by_rank.append(set(refs))
        assert sum(len(r) for r in by_rank) == len(set().union(*by_rank))  # disjoint across ranks
    # What a DataLoader with two workers really yields is exactly the planned share.
    keyed = ReleaseDataset(release, "vqa", transform=lambda s: s["key"])
    key_of = {ref: keyed[i] for i, ref in enumerate(keyed.index)}
    stream = ReleaseStream(release, "vqa", 4, keys_only, rank=1, world_size=2)
    got = [k for b in DataLoader(stream, batch_size=None, num_workers=2) for k in b["keys"]]
    planned = [key_of[r] for w in range(2) for r in stream.worker_order(w, 2)]
    assert len(got) == len(set(got)) == total // 2 and sorted(got) == sorted(planned)


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_skipping_batches_resumes_mid_epoch_exactly(release):
    stream = ReleaseStream(release, "vqa", 3, keys_only, seed=5)
    for workers in (0, 2):
        stream.set_epoch(2)
        full = [b["keys"] for b in DataLoader(stream, batch_size=None, num_workers=workers)]
        assert len(full) >= stream.batches_per_epoch() >= 5
        for skip in (1, 4):
            stream.set_epoch(2, skip_batches=skip)
            assert [b["keys"] for b in DataLoader(stream, batch_size=None, num_workers=workers)] == full[skip:]


def test_rank_pieces_cut_equal_contiguous_shares():
    counts = [5, 0, 7, 3, 9]
    shares = [rank_pieces(counts, seed=1, epoch=0, rank=r, world_size=3) for r in range(3)]
    sizes = [sum(p.stop - p.start for p in s) for s in shares]
    assert sizes == [8, 8, 8]
    covered = Counter((p.unit, i) for s in shares for p in s for i in range(p.start, p.stop))
    assert max(covered.values()) == 1 and len(covered) == 24
    assert rank_pieces(counts, 1, 1, 0, 3) != shares[0]  # a new permutation each epoch


def test_round_robin_is_the_dataloader_order():
    assert round_robin([[1, 2, 3], [4], [5, 6]]) == [1, 4, 5, 2, 6, 3]
    assert round_robin([[], [1]]) == [1]


def test_align_text_names_expert_organs_not_prompt_labels():
    masks = [
        {"segmenter": "expert", "label": "liver"},
        {"segmenter": "expert", "label": "spleen"},
        {"segmenter": "medsam", "label": "otsu-body-0"},
        {"segmenter": "expert", "label": "liver"},
    ]
    assert align_text({"body_region": "abdomen", "masks": masks}) == "abdomen: liver, spleen"
    assert align_text({"body_region": None, "modality": "CT", "masks": []}) == "CT"


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_release_read_through_an_fsspec_filesystem_as_from_the_hub(release, release_dir):
    remote = open_release_on(fsspec.filesystem("file"), str(release_dir), location="file-backed")
    assert remote.units == release.units and remote.fs is not None
    a, b = ReleaseDataset(remote, "vqa"), ReleaseDataset(release, "vqa")
    assert len(a) == len(b) and a[3]["key"] == b[3]["key"]
    assert np.array_equal(a[3]["images"][-1], b[3]["images"][-1])


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_bad_release_locations_are_named(tmp_path, release_dir):
    with pytest.raises(ReleaseError, match="release folder not found"):
        open_release(tmp_path / "nope")
    with pytest.raises(ReleaseError, match="no manifest.json, so the release is incomplete"):
        open_release(tmp_path)
    with pytest.raises(ReleaseError, match=r"no dataset\(s\) \['slake'\] in the release \(it has \['vqa_rad'\]\)"):
        open_release(release_dir, datasets=["slake"])
    with pytest.raises(ReleaseError, match="no 'validation' shards"):
        open_release(release_dir, split="validation")
    with pytest.raises(ReleaseError, match="HF_HUB_OFFLINE is set"):
        open_release("hf://datasets/someone/lenses")
    with pytest.raises(ReleaseError, match="hf://datasets/<org>/<name>"):
        open_release("hf://someone/lenses")


def test_config_view_choices_are_the_release_view_columns():
    from loclens.config import schema

    assert tuple(schema()["properties"]["train"]["properties"]["views"]["items"]["enum"]) == VIEW_COLUMNS
    assert tuple(schema()["properties"]["train"]["properties"]["views"]["default"]) == VIEW_COLUMNS


def test_views_are_two_distinct_kinds_then_a_source_among_those_present():
    from loclens.train.samples import choose_views

    row = {c: b"x" for c in VIEW_COLUMNS} | {"sam_multicolor": None}
    drawn = [tuple(choose_views(row, f"k{i}", 0, 0, VIEW_COLUMNS, 2)) for i in range(200)]
    kinds = [tuple(sorted(c.rsplit("_", 1)[-1] for c in d)) for d in drawn]
    assert all(len(set(k)) == 2 for k in kinds)  # never two views of one kind
    assert set(kinds) == {("multicolor", "unicolor"), ("masked", "unicolor"), ("masked", "multicolor")}
    # The multicolor kind has one source left (medsam); unicolor has both, drawn about evenly.
    assert all("sam_multicolor" not in d for d in drawn)
    uni = [c for d in drawn for c in d if c.endswith("unicolor")]
    assert 0.3 < uni.count("sam_unicolor") / len(uni) < 0.7
    assert choose_views({"masked": b"x"}, "k", 0, 0, VIEW_COLUMNS, 2) == ["masked"]


def test_phase1_text_takes_organ_words_from_organ_questions():
    from loclens.train.samples import align_text

    row = {
        "body_region": "head",
        "masks": [{"segmenter": "expert", "label": "Brain Edema"}, {"segmenter": "medsam", "label": "otsu-body-0"}],
        "qa": [
            {"question_type": ["ORGAN"], "answer_type": "open", "answer": "The brain\tskull"},
            {"question_type": ["ORGAN"], "answer_type": "closed", "answer": "yes"},
            {"question_type": ["POS"], "answer_type": "open", "answer": "left"},
        ],
    }
    assert align_text(row) == "head: Brain Edema, brain, skull"
