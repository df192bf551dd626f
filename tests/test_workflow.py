"""The real workflow end to end: real Snakemake, real LiteMedSAM, real VQA-RAD images."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, SEGMENT_ONE_THREAD, run_snakemake

from loclens.config import validate
from loclens.schema import FEATURES, IMAGE_COLUMNS, VIEW_COLUMNS
from loclens.stages import build_hash

pytestmark = pytest.mark.slow


def _write_config(workdir: Path, train_config: Path) -> Path:
    """The training tests' build configuration (conftest.train_release: 5 real VQA-RAD images)
    with the sample dataset (4 phantoms) added."""
    config = yaml.safe_load(train_config.read_text())
    config["datasets"]["sample"] = {"n_images": 4}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _shard_hashes(release: Path) -> dict[str, str]:
    return {
        str(p.relative_to(release)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(release.rglob("*.parquet"))
    }


def _jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:", 1)[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def build(tmp_path_factory, train_release):
    """A copy of the training tests' VQA-RAD build with a second dataset added: Snakemake keeps
    the finished VQA-RAD jobs (the test below checks it), builds the sample's, and makes the
    release and QC of both."""
    workdir = tmp_path_factory.mktemp("build") / "work"
    shutil.copytree(train_release, workdir, symlinks=True)
    cfg = _write_config(workdir, train_release / "config.yaml")
    proc = run_snakemake(workdir, "--configfile", str(cfg), "--cores", "2", *SEGMENT_ONE_THREAD)
    return workdir, cfg, proc


def test_adding_a_dataset_reuses_the_finished_jobs_of_the_other(build, train_release):
    workdir, _, _ = build
    for sub in ("ingest/vqa_rad", "segment/vqa_rad", "release/vqa_rad"):
        finished = sorted(
            p.relative_to(train_release) for p in (train_release / "results" / sub).rglob("*") if p.is_file()
        )
        assert finished, sub
        for rel in finished:
            assert (workdir / rel).stat().st_mtime_ns == (train_release / rel).stat().st_mtime_ns, f"{rel} was redone"


def test_release_loads_with_datasets_and_decodes_every_image(build):
    workdir, _, _ = build
    release = workdir / "results" / "release"
    manifest = json.loads((release / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"sample", "vqa_rad"}
    for name, entry in manifest["datasets"].items():
        acc = entry["accounting"]
        assert acc["input_records"] == acc["released_qa"] + acc["rejected_qa"]
        for split, s in entry["splits"].items():
            for shard in s["shards"]:
                path = release / shard["file"]
                assert re.fullmatch(rf"{name}/{split}-\d{{5}}-of-\d{{5}}\.parquet", shard["file"])
                assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
                meta = pq.read_schema(path).metadata[b"huggingface"]
                assert datasets.Features.from_dict(json.loads(meta)["info"]["features"]) == FEATURES

    vqa = datasets.load_dataset(str(release), "vqa_rad")
    assert set(vqa) == {"train", "test"}
    files = [str(p) for p in (release / "vqa_rad").glob("*.parquet")]
    flat = datasets.load_dataset("parquet", data_files=files, split="train")
    assert flat.features == FEATURES
    assert len(flat) == sum(len(vqa[s]) for s in vqa)

    without_masks = {"sample": 0, "vqa_rad": 0}
    rows_seen = {"sample": 0, "vqa_rad": 0}
    for config_name in ("sample", "vqa_rad"):
        ds = datasets.load_dataset(str(release), config_name)
        for split in ds:
            for row in ds[split]:
                rows_seen[config_name] += 1
                assert row["image"].size == (row["width"], row["height"])
                # An image where the prompt source finds no box (one of the 5 real ones) has no
                # masks, hence no views; the card counts it as "segmenter found no mask".
                has_masks = bool(row["masks"])
                without_masks[config_name] += not has_masks
                for col in VIEW_COLUMNS:
                    view = row[col]
                    if col.startswith("sam_"):
                        assert view is None  # SAM is not configured in this build
                    elif has_masks:
                        assert view is not None and view.size == row["image"].size, (config_name, col)
                    else:
                        assert view is None, (config_name, col)
                if has_masks:
                    assert row["alpha"]["medsam"] is not None and 0.2 <= row["alpha"]["medsam"] <= 0.8
                assert all(m["checkpoint_sha256"].startswith("79d8c9dc") for m in row["masks"])
                assert row["qa"] and all(q["answer_type"] in ("open", "closed") for q in row["qa"])
                prov = row["provenance"]
                assert prov["config_hash"] and prov["seed"] == 0
                assert prov["segmenters"][0]["checkpoint_sha256"].startswith("79d8c9dc")
                assert row["source_file"]
    assert rows_seen == {
        name: sum(s["rows"] for s in entry["splits"].values()) for name, entry in manifest["datasets"].items()
    }
    assert (
        without_masks["sample"] == 0 and without_masks["vqa_rad"] <= 2 < rows_seen["vqa_rad"]
    )  # one image, in both splits
    card = (release / "README.md").read_text()
    assert "config_name: vqa_rad" in card and "sam_*" in card
    assert ("segmenter found no mask" in card) == (without_masks["vqa_rad"] > 0)


def test_rerun_does_nothing_and_blend_change_only_rerenders(build):
    workdir, cfg, _ = build
    again = run_snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    config = yaml.safe_load(cfg.read_text())
    config["render"]["alpha"]["mean"] = 0.6
    changed = workdir / "config_blend.yaml"
    changed.write_text(yaml.safe_dump(config))
    dry = run_snakemake(workdir, "--configfile", str(changed), "--cores", "2", "-n")
    jobs = _jobs(dry.stdout + dry.stderr)
    assert jobs.get("render", 0) > 0 and jobs.get("release") == 1
    assert "segment" not in jobs and "ingest" not in jobs, jobs


def test_same_config_gives_byte_identical_shards(build, tmp_path):
    """A second run of the same config in another folder: one segment job recomputed from
    scratch gives the same masks, and every lens shard, rendered again, is byte-identical.
    (The mask caches of the other shards are reused to keep the suite short; a complete
    independent rebuild compared byte for byte is in test_reliability_workflow's resume test.)"""
    workdir, cfg, _ = build
    second = tmp_path / "second"
    shutil.copytree(
        workdir,
        second,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == workdir / "results" and n in ("release", "qc")],
    )
    shard = "results/segment/vqa_rad/medsam/shard-00000.parquet"
    run_snakemake(second, "--configfile", str(second / cfg.name), "--cores", "2", *SEGMENT_ONE_THREAD, "--force", shard)
    assert (second / shard).stat().st_mtime_ns != (workdir / shard).stat().st_mtime_ns  # really recomputed
    columns = ["image_id", "masks"]  # the cache's timing columns differ from run to run
    assert pq.read_table(second / shard, columns=columns).equals(pq.read_table(workdir / shard, columns=columns))

    # The release only (its manifest): the QC pictures are not what this test compares.
    run_snakemake(
        second,
        "results/release/manifest.json",
        "--configfile",
        str(second / cfg.name),
        "--cores",
        "2",
        *SEGMENT_ONE_THREAD,
    )
    first_hashes = _shard_hashes(workdir / "results" / "release")
    assert first_hashes and first_hashes == _shard_hashes(second / "results" / "release")
    assert (workdir / "results/release/manifest.json").read_text() == (
        second / "results/release/manifest.json"
    ).read_text()


def test_views_copied_from_the_other_split_equal_a_fresh_render(build, tmp_path):
    """An image with QA in both official splits has a row in each split; the later shard
    copies the views the earlier one rendered (the plan's views_from). Rendering those shards
    again with nothing to copy gives the same bytes."""
    workdir, cfg, _ = build
    results = workdir / "results"
    plan = json.loads((results / "ingest" / "vqa_rad" / "plan.json").read_text())
    copying = [s for s in plan["release_shards"] if s["views_from"]]
    assert copying, "the 5 real images include ones with QA in both splits"
    rows = {s["file"]: set(s["image_ids"]) for s in plan["release_shards"]}
    for shard in copying:
        for source, ids in shard["views_from"].items():
            assert set(ids) <= rows[source] & set(shard["image_ids"])
        shard["views_from"] = {}
    fresh_plan = tmp_path / "plan.json"
    fresh_plan.write_text(json.dumps(plan))
    config = validate(yaml.safe_load(cfg.read_text()))
    caches = ",".join(str(p) for p in sorted((results / "segment" / "vqa_rad" / "medsam").glob("shard-*.parquet")))
    for shard in copying:
        name = shard["file"].split("/")[-1]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loclens.cli",
                "render",
                "--records",
                str(results / "ingest" / "vqa_rad" / "records.jsonl"),
                "--plan",
                str(fresh_plan),
                "--shard",
                name,
                "--masks",
                f"medsam={caches}",
                "--settings",
                json.dumps(config["render"]),
                "--seed",
                str(config["seed"]),
                "--config-hash",
                build_hash(config, "vqa_rad"),
                "--out",
                str(tmp_path / name),
            ],
            check=True,
            capture_output=True,
        )
        assert (tmp_path / name).read_bytes() == (results / "release" / shard["file"]).read_bytes(), name


def test_lint_is_clean():
    proc = run_snakemake(REPO, "--lint", "--dry-run", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_image_columns_are_stored_uncompressed(build):
    workdir, _, _ = build
    shard = next((workdir / "results" / "release" / "vqa_rad").glob("train-*.parquet"))
    meta = pq.ParquetFile(shard).metadata
    for rg in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(rg).column(c)
            top = col.path_in_schema.split(".")[0]
            expected = "UNCOMPRESSED" if top in IMAGE_COLUMNS else "ZSTD"
            assert col.compression == expected, (col.path_in_schema, col.compression)


def test_build_ends_validated_with_a_qc_gallery_in_the_report(build):
    workdir, cfg, _ = build
    results = workdir / "results"
    manifest = json.loads((results / "release" / "manifest.json").read_text())
    validation = json.loads((results / "qc" / "validation.json").read_text())
    rows = sum(s["rows"] for d in manifest["datasets"].values() for s in d["splits"].values())
    assert validation["ok"] and validation["checked"]["rows"] == rows
    for name, entry in manifest["datasets"].items():
        assert entry["split_protocol"]["protocol"] == "official"
        assert (results / "qc" / name / "summary.png").is_file()
        assert sorted(p.stem for p in (results / "qc" / name / "samples").glob("*.png")) == sorted(entry["splits"])
    html = workdir / "report.html"
    run_snakemake(workdir, "--configfile", str(cfg), "--report", str(html))
    text = html.read_text()
    assert "Quality control" in text and "validation.json" in text
    for name, entry in manifest["datasets"].items():
        for split in entry["splits"]:
            assert f"{name}/samples/{split}.png" in text


def test_publish_is_an_explicit_target_never_in_the_default_run(build):
    workdir, cfg, _ = build
    default = run_snakemake(workdir, "--configfile", str(cfg), "--cores", "1", "-n")
    assert "publish" not in _jobs(default.stdout + default.stderr)
    refused = run_snakemake(workdir, "--configfile", str(cfg), "-n", "publish", check=False)
    assert refused.returncode != 0 and "publish.repo_id" in refused.stdout + refused.stderr
    config = yaml.safe_load(cfg.read_text())
    config["publish"] = {"repo_id": "someone/loclens-test"}
    with_repo = workdir / "config_publish.yaml"
    with_repo.write_text(yaml.safe_dump(config))
    dry = run_snakemake(workdir, "--configfile", str(with_repo), "-n", "publish")
    assert _jobs(dry.stdout + dry.stderr) == {"publish": 1}  # the release is reused: only the push runs
