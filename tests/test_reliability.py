"""Bad inputs, one case at a time (fast): each gives a clear error or a rejects entry naming the
file and the problem, and nothing else is lost. The same cases go through the real workflow
together in tests/test_reliability_workflow.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from messy_data import LARGE_SIZE, check_outcome, encode, image_files, phantom, write_messy_release
from PIL import Image

from loclens import accounting, atomic
from loclens.config import ConfigError, validate
from loclens.imageio import MAX_PIXELS, ImageError, load_rgb, probe
from loclens.ingest import read_jsonl, run_ingest
from loclens.release.finalize import finalize_release
from loclens.segment.prompts import Prompt
from loclens.segment.run import load_with_prompts, mask_entries
from loclens.shard_jobs import render_job
from loclens.sources import read_source
from loclens.sources.base import Reject, safe_join
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME
from loclens.stages import segment_settings


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "release"
    return root, write_messy_release(root)


@pytest.fixture(scope="module")
def files():
    return image_files()


# --- the whole crafted dataset through the reader and the ingest stage --------------------------


def test_every_record_is_released_or_rejected_with_file_and_reason(messy):
    root, exp = messy
    result = read_source("vqa_rad", root, dataset="messy")
    assert result.input_records == exp.input_records
    released = [qa.qid for img in result.images for qa in img.qa]
    check_outcome(exp, released, [r.to_dict() for r in result.rejects])


def test_ingest_reports_are_valid_utf8_and_account_for_everything(messy, tmp_path):
    root, exp = messy
    config = validate({"datasets": {"messy": {"source": "vqa_rad", "path": str(root)}}})
    plan = run_ingest("messy", config, tmp_path)
    assert plan.input_records == exp.input_records
    assert plan.released_qa + plan.rejected_qa == exp.input_records
    raw = (tmp_path / "rejects.jsonl").read_bytes().decode("utf-8")  # strict: must be UTF-8
    rejects = [json.loads(line) for line in raw.splitlines()]
    # The undecodable byte is shown escaped in the report, not lost and not crashing it.
    latin1 = next(r for r in rejects if r["qid"] == "207")
    assert latin1["record"]["question"] == "Is the l\\xe9sion visible?"
    rows = read_jsonl(tmp_path / "records.jsonl")
    check_outcome(exp, [qa["qid"] for row in rows for qa in row["qa"]], rejects)


def test_a_qa_file_that_is_not_json_is_a_clear_error(tmp_path):
    from loclens.sources import SourceError

    (tmp_path / IMAGE_DIR).mkdir()
    (tmp_path / JSON_NAME).write_bytes(b"\xff\xfe[\x00{\x00")  # UTF-16: not the expected encoding
    with pytest.raises(SourceError, match=f"{JSON_NAME}: not valid UTF-8 JSON"):
        read_source("vqa_rad", tmp_path, dataset="x")


# --- images, one kind at a time ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("truncated.jpg", "image is truncated or corrupt"),
        ("not_png.png", "not a readable image"),
        ("tiny.png", "image of 1x1 pixels is too small to segment"),
        ("bomb.png", f"image exceeds the limit of {MAX_PIXELS} pixels"),
    ],
)
def test_unusable_images_raise_naming_file_and_problem(files, name, problem):
    with pytest.raises(ImageError) as info:
        probe(files[name], f"/data/{name}")
    assert str(info.value).startswith(f"/data/{name}: ") and problem in str(info.value)
    assert info.value.problem.startswith(problem) and "/data" not in info.value.problem
    # The message is the same on every run (no object addresses): rejects reports are reproducible.
    with pytest.raises(ImageError) as again:
        probe(files[name], f"/data/{name}")
    assert str(again.value) == str(info.value)


def test_16bit_grayscale_uses_its_full_range(files):
    assert Image.open(__import__("io").BytesIO(files["gray16.png"])).mode.startswith("I")
    rgb = load_rgb(files["gray16.png"], "gray16.png")
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255  # min-max scaled, not clipped at 255
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_cmyk_alpha_and_misnamed_jpeg_become_rgb(files):
    cmyk = load_rgb(files["cmyk.jpg"], "cmyk.jpg")
    assert cmyk.shape == (256, 256, 3)
    ref = phantom("chest", 256, 5).astype(int)
    assert np.abs(cmyk.mean(axis=2) - ref).mean() < 8  # the same picture, not inverted ink
    rgba = load_rgb(files["alpha.png"], "alpha.png")
    assert rgba.shape == (256, 256, 3) and not rgba[:16].any()  # transparent frame -> black
    assert rgba[100:150, 100:150].any()
    misnamed = load_rgb(files["jpeg_named.png"], "jpeg_named.png")  # content decides, not the name
    assert misnamed.shape == (256, 256, 3)


#: A reduced-read size (segment.read_max_side), as a user short of memory might set it.
READ_MAX_SIDE = 1024


def test_large_images_are_reduced_while_read(files):
    assert probe(files["large.png"], "large.png") == LARGE_SIZE
    reduced = load_rgb(files["large.png"], "large.png", max_side=READ_MAX_SIDE)
    w, h = LARGE_SIZE
    assert reduced.shape == (round(h * READ_MAX_SIDE / w), READ_MAX_SIDE, 3)
    # A large JPEG is decoded at a reduced DCT scale; the result matches the full decode reduced.
    big = Image.fromarray(phantom("chest", 300, 11)).resize((3000, 2400), Image.Resampling.NEAREST)
    jpeg = encode(big, "JPEG", quality=95)
    fast = load_rgb(jpeg, "big.jpg", max_side=512)
    full = np.asarray(Image.fromarray(load_rgb(jpeg, "big.jpg")).resize(fast.shape[1::-1], Image.Resampling.BOX))
    assert fast.shape == (410, 512, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3
    small = load_rgb(files["palette.png"], "palette.png", max_side=READ_MAX_SIDE)
    assert np.array_equal(small, load_rgb(files["palette.png"], "palette.png"))  # small images: untouched


def test_segment_jobs_read_full_resolution_unless_read_max_side_is_set(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(phantom("abdomen", 300, 8)).resize((1500, 1200), Image.Resampling.NEAREST).save(path)
    row = {"image_id": "big", "path": str(path), "height": 1200, "width": 1500}
    config = validate({"datasets": {"d": {"source": "sample"}}})
    full, prompts = load_with_prompts(row, segment_settings(config, "medsam"))
    assert full.shape == (1200, 1500, 3) and prompts  # the default: as the models' reference reads it
    config["segment"]["read_max_side"] = READ_MAX_SIDE
    reduced, reduced_prompts = load_with_prompts(row, segment_settings(config, "medsam"))
    assert reduced.shape == (819, 1024, 3) and reduced_prompts
    assert max(p.box[2] for p in reduced_prompts) <= 1024 < max(p.box[2] for p in prompts)


def test_masks_from_a_reduced_image_are_stored_at_the_image_size():
    class Seg:
        name, model_name, checkpoint_sha256 = "medsam", "LiteMedSAM", "0" * 64

    small = np.zeros((30, 40), bool)
    small[5:15, 10:30] = True
    entries = mask_entries(Seg(), small[None], np.array([0.9]), [Prompt((10, 5, 30, 15), "x", "otsu")], (300, 400))
    (entry,) = entries
    assert entry["rle"]["size"] == [300, 400]
    assert entry["bbox"] == [100.0, 50.0, 200.0, 100.0]
    assert entry["prompt_box"] == [100.0, 50.0, 300.0, 150.0]
    assert entry["area"] == 100 * 200


# --- paths ------------------------------------------------------------------------------------


def test_source_paths_cannot_escape_the_dataset_root(tmp_path):
    root = tmp_path / "ds"
    (root / "imgs").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "imgs" / "ok.png").write_bytes(b"x")
    (root / "imgs" / "link.png").symlink_to(tmp_path / "secret.png")
    assert safe_join(root / "imgs", "ok.png") == (root / "imgs" / "ok.png").resolve()
    assert safe_join(root / "imgs", "sub/../ok.png") == (root / "imgs" / "ok.png").resolve()
    for name in ("../../secret.png", "../imgs/../../secret.png", str(tmp_path / "secret.png"), "link.png"):
        with pytest.raises(ImageError, match="escapes the dataset root"):
            safe_join(root / "imgs", name)
    for name in ("", "a\x00b.png"):
        with pytest.raises(ImageError, match="not a valid file name"):
            safe_join(root / "imgs", name)


def test_rejects_with_undecodable_text_are_written_escaped():
    r = Reject("d", "imgs/caf\udce9.png", "x", record={"question": "\ud800?", "k\udcff": 1})
    out = r.to_dict()
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # no UnicodeEncodeError
    assert out["source_file"] == "imgs/caf\\xe9.png" and out["record"]["question"] == "\\ud800?"


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, where, problem",
    [
        ({"seed": "zero"}, "seed", "is not of type 'integer'"),
        ({"segment": {"images_per_shard": 1.5}}, "segment.images_per_shard", "is not of type 'integer'"),
        ({"render": {"alhpa": {}}}, "render", "'alhpa' was unexpected"),
        ({"relase": {}}, "<top level>", "'relase' was unexpected"),
    ],
)
def test_config_errors_name_the_key(config, where, problem):
    with pytest.raises(ConfigError) as info:
        validate({"datasets": {"sample": {}}, **config})
    assert f"  {where}: " in str(info.value) and problem in str(info.value)


# --- atomic writes and interruptions ------------------------------------------------------------


def test_a_writer_killed_before_rename_leaves_no_file_under_the_final_name(tmp_path):
    final = tmp_path / "out" / "train-00000-of-00001.parquet"
    code = "import sys; from loclens.atomic import write_bytes; write_bytes(sys.argv[1], b'complete content')"
    env = {**os.environ, atomic.HOLD_ENV: "*/train-*.parquet"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(final)], env=env, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the writer announces the hold once the content is complete
    assert "holding" in line and str(final) in line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    (tmp,) = final.parent.glob(f"{atomic.TMP_PREFIX}{final.name}.*")
    assert tmp.read_bytes() == b"complete content"  # complete, yet not under its final name


def test_a_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "x.json"
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise ZeroDivisionError("interrupted mid-write")
    assert list(tmp_path.iterdir()) == []


# --- accounting in the release -----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_release(messy, tmp_path_factory):
    """A release of the crafted dataset without segmentation (views null): enough for the
    accounting, and fast."""
    root, exp = messy
    work = tmp_path_factory.mktemp("rel")
    config = validate({"datasets": {"messy": {"source": "vqa_rad", "path": str(root)}}, "limit_images": 3})
    plan = run_ingest("messy", config, work / "ingest")
    release = work / "release"
    for shard in plan.release_shards:
        render_job(shard, work / "ingest" / "records.jsonl", {}, [], config["render"], config["seed"], "h", release)
    (release / "messy" / f"{atomic.TMP_PREFIX}train-00000-of-00001.parquet.abc").write_bytes(b"half")
    manifest = finalize_release(release, [work / "ingest" / "plan.json"], config, [])
    return release, manifest, plan


def test_manifest_accounting_is_counted_from_the_written_release(small_release, messy):
    release, manifest, plan = small_release
    acc = manifest["datasets"]["messy"]["accounting"]
    assert acc["input_records"] == messy[1].input_records == acc["released_qa"] + acc["rejected_qa"]
    assert acc["rejected_images"] == 1
    reasons = {r["reason"] for r in acc["by_reason"]}
    assert "beyond limit_images=N" in reasons and "image of NxN pixels is too small to segment" in reasons
    assert accounting.check_dataset(release, "messy", manifest["datasets"]["messy"]) == []
    card = (release / "README.md").read_text()
    assert "| QA records |" in card and "beyond limit_images=N" in card
    assert not list(release.rglob(f"{atomic.TMP_PREFIX}*")), "unfinished writes are not released"


def test_accounting_check_finds_lost_records(small_release, tmp_path):
    release, manifest, _ = small_release
    entry = manifest["datasets"]["messy"]
    shard = release / entry["splits"]["train"]["shards"][0]["file"]
    table = pq.read_table(shard)
    copy = tmp_path / "release"
    import shutil

    shutil.copytree(release, copy)
    qa = table.column("qa").to_pylist()
    qa[0] = qa[0][1:]  # one QA dropped from a row
    pq.write_table(
        table.set_column(table.schema.get_field_index("qa"), table.schema.field("qa"), [qa]),
        copy / shard.relative_to(release),
    )
    problems = accounting.check_dataset(copy, "messy", entry)
    assert any("shards hold" in p for p in problems), problems

    shutil.copyfile(shard, copy / shard.relative_to(release))
    lines = (copy / entry["rejects_file"]).read_text().splitlines()
    qa_line = next(i for i, line in enumerate(lines) if '"kind": "qa"' in line)
    (copy / entry["rejects_file"]).write_text("".join(x + "\n" for i, x in enumerate(lines) if i != qa_line))
    problems = accounting.check_dataset(copy, "messy", entry)
    assert len(problems) == 1 and "lists" in problems[0], problems

    bad = {**entry, "accounting": {**entry["accounting"], "input_records": entry["accounting"]["input_records"] + 1}}
    assert any("records were lost" in p for p in accounting.check_dataset(release, "messy", bad))


def test_release_refuses_a_plan_that_does_not_match_its_shards(small_release, tmp_path):
    release, _, plan = small_release
    with pytest.raises(RuntimeError, match="shards hold"):
        accounting.dataset_accounting(
            release,
            dataclasses.replace(plan, released_qa=plan.released_qa + 1),
            accounting.read_rejects(release / "rejects" / "messy.jsonl"),
        )


# --- archives -----------------------------------------------------------------------------------


def _zip(path: Path, members: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    import stat
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("imgs/xmlab1/source.jpg", b"fine")
        for name, data in members:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../../../etc/passwd")
    return path


@pytest.mark.parametrize(
    "members, symlink, problem",
    [
        ([("../../evil.txt", b"x")], None, "escapes the target folder"),
        ([("imgs/../../evil.txt", b"x")], None, "escapes the target folder"),
        ([("..\\..\\evil.txt", b"x")], None, "escapes the target folder"),
        ([("/tmp/evil.txt", b"x")], None, "absolute path"),
        ([("C:/evil.txt", b"x")], None, "absolute path"),
        ([], "imgs/xmlab2/source.jpg", "symbolic link"),
    ],
)
def test_malicious_archives_are_refused_before_anything_is_written(tmp_path, members, symlink, problem):
    from loclens.archive import ArchiveError, safe_extract

    archive = _zip(tmp_path / "imgs.zip", members, symlink)
    target = tmp_path / "deep" / "er" / "unpacked"
    with pytest.raises(ArchiveError) as info:
        safe_extract(archive, target)
    assert str(info.value).startswith(f"{archive}: member ") and problem in str(info.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != archive]
    assert written == [], f"an unsafe archive wrote {written}"


def test_an_archive_bomb_is_refused(tmp_path, monkeypatch):
    from loclens import archive as archive_mod

    archive = _zip(tmp_path / "imgs.zip", [("imgs/xmlab2/source.jpg", b"\0" * 200_000)])
    assert archive.stat().st_size < 5_000  # tiny on disk, large unpacked
    monkeypatch.setattr(archive_mod, "MAX_UNPACKED_BYTES", 100_000)
    with pytest.raises(archive_mod.ArchiveError, match="over the limit of 100000"):
        archive_mod.safe_extract(archive, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists() or not any((tmp_path / "unpacked").rglob("*.jpg"))
