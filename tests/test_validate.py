"""`loclens validate`: passes on a good build, and names the file, row and problem of each kind
of damage (each test damages a copy of the session's small release)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import copy_release

from loclens.cli import main
from loclens.release.manifest import shard_entry
from loclens.release.shards import write_shard
from loclens.release.validate import validate_release


def _manifest(release):
    return json.loads((release / "manifest.json").read_text())


def _shards(release) -> list[dict]:
    return [s for d in _manifest(release)["datasets"].values() for sp in d["splits"].values() for s in sp["shards"]]


def _rewrite(release, file: str, mutate, refresh_manifest: bool = True) -> None:
    """Rewrite a shard with ``mutate(rows)`` applied; with ``refresh_manifest`` the manifest's
    size, sha256 and row count follow, so only the content checks can catch the damage."""
    path = release / file
    rows = pq.read_table(path).to_pylist()
    mutate(rows)
    write_shard(path, rows)
    if refresh_manifest:
        manifest = _manifest(release)
        for d in manifest["datasets"].values():
            for sp in d["splits"].values():
                for k, s in enumerate(sp["shards"]):
                    if s["file"] == file:
                        fresh = shard_entry(release, file)
                        sp["shards"][k] = {**s, **{key: fresh[key] for key in ("rows", "bytes", "sha256")}}
        (release / "manifest.json").write_text(json.dumps(manifest))


def _problems(report, check: str) -> list:
    return [p for p in report.problems if p.check == check]


def test_a_good_build_is_valid(small_release, capsys):
    report = validate_release(small_release.release, ingest_root=small_release.ingest)
    assert report.ok, report.text()
    n_rows = sum(s["rows"] for s in _shards(small_release.release))
    assert report.checked["rows"] == n_rows and report.checked["images decoded"] >= 2 * n_rows
    assert report.checked["masks decoded"] > 0
    assert main(["validate", str(small_release.release), "--ingest", str(small_release.ingest)]) == 0
    assert "valid" in capsys.readouterr().out


def test_truncated_shard(small_release, tmp_path, capsys):
    release = copy_release(small_release, tmp_path / "r")
    shard = _shards(release)[0]
    data = (release / shard["file"]).read_bytes()
    (release / shard["file"]).write_bytes(data[: len(data) // 2])
    report = validate_release(release)
    checks = {p.check for p in report.problems if p.file == shard["file"]}
    assert {"size", "sha256", "parquet"} <= checks, report.text()
    out_json = tmp_path / "report.json"
    assert main(["validate", str(release), "--report", str(out_json)]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and f"{shard['file']}: [parquet] not readable as Parquet" in err
    assert json.loads(out_json.read_text())["ok"] is False


def test_shard_whose_sha256_differs_from_the_manifest(small_release, tmp_path):
    release = copy_release(small_release, tmp_path / "r")
    shard = _shards(release)[0]

    def edit_answer(rows):
        rows[0]["qa"][0]["answer"] = rows[0]["qa"][0]["answer"] + " (edited)"

    _rewrite(release, shard["file"], edit_answer, refresh_manifest=False)
    report = validate_release(release)
    [problem] = _problems(report, "sha256")
    assert problem.file == shard["file"] and shard["sha256"] in problem.message
    assert not _problems(report, "accounting")  # same qids: only the checksum can tell


def test_dropped_qa(small_release, tmp_path):
    release = copy_release(small_release, tmp_path / "r")
    shard = _shards(release)[0]
    dropped = {}

    def drop_last_qa(rows):
        dropped["qid"] = rows[0]["qa"].pop()["qid"]
        dropped["image"] = rows[0]["image_id"]

    _rewrite(release, shard["file"], drop_last_qa)
    alone = validate_release(release)  # the manifest alone: the shard's QA count and digest
    assert any(p.file == shard["file"] and "holds" in p.message for p in _problems(alone, "accounting")), alone.text()
    assert any("1 unaccounted for" in p.message for p in _problems(alone, "accounting"))
    named = validate_release(release, ingest_root=small_release.ingest)  # with the ingest: the qid by name
    assert any(f"qid {dropped['qid']} (image {dropped['image']}" in p.message for p in _problems(named, "accounting"))


def test_corrupted_rle(small_release, tmp_path):
    release = copy_release(small_release, tmp_path / "r")
    shard = _shards(release)[-1]

    def corrupt(rows):
        rle = rows[0]["masks"][1]["rle"]
        rle["counts"] = rle["counts"][: len(rle["counts"]) // 2]

    _rewrite(release, shard["file"], corrupt)
    report = validate_release(release)
    [problem] = _problems(report, "rle")
    assert problem.file == shard["file"] and problem.row == 0 and "masks[1]" in problem.message
    assert f"{shard['file']} row 0: [rle] masks[1]" in report.text()


def test_image_in_two_splits_of_a_grouped_split(small_release, tmp_path):
    release = copy_release(small_release, tmp_path / "r")
    train = next(s for s in _shards(release) if s["file"].startswith("sample/train-"))
    test = next(s for s in _shards(release) if s["file"].startswith("sample/test-"))
    moved = pq.read_table(release / train["file"]).to_pylist()[0]

    def add_train_image(rows):
        rows.append({**moved, "split": "test"})

    _rewrite(release, test["file"], add_train_image)
    report = validate_release(release)
    [problem] = [p for p in _problems(report, "split") if moved["image_id"] in p.message]
    assert "2 splits of a grouped split" in problem.message and train["file"] in problem.message


@pytest.mark.parametrize("damage", ["stray", "card", "missing_image"])
def test_other_damage_is_named(small_release, tmp_path, damage):
    release = copy_release(small_release, tmp_path / "r")
    shard = _shards(release)[0]
    if damage == "stray":
        (release / "sample" / "train-00007-of-00009.parquet").write_bytes((release / shard["file"]).read_bytes())
        expected = ("sample/train-00007-of-00009.parquet", "stray")
    elif damage == "card":
        card = release / "README.md"
        card.write_text(card.read_text().replace("path: sample/train-*.parquet", "path: sample/training-*.parquet"))
        expected = ("README.md", "card")
    else:
        _rewrite(
            release,
            shard["file"],
            lambda rows: rows[0].update(medsam_unicolor={"bytes": b"not a png", "path": "x.png"}),
        )
        expected = (shard["file"], "image")
    report = validate_release(release)
    assert any((p.file, p.check) == expected for p in report.problems), report.text()


def test_coverage_that_differs_from_the_rows(small_release, tmp_path):
    release = copy_release(small_release, tmp_path / "r")
    manifest = _manifest(release)
    cov = manifest["datasets"]["sample"]["coverage"]
    region = next(iter(cov["regions"]))
    cov["regions"][region]["medsam"] += 1
    cov["all"]["medsam"] += 1
    (release / "manifest.json").write_text(json.dumps(manifest))
    report = validate_release(release)
    [problem] = _problems(report, "coverage")
    assert problem.file == "manifest.json" and "sample: the manifest's coverage" in problem.message
    assert validate_release(small_release.release).ok  # the untouched release recounts equal
