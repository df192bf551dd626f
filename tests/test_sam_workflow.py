"""SAM automatic masks and MedSAM ViT-B through the real workflow into the release, with small
random models (real checkpoints are not reachable here), and the SLURM profile's job plan."""

from __future__ import annotations

import itertools
import json
import re

import datasets
import pytest
import yaml
from conftest import REPO, TINY_SAM_ARCH, TINY_SAM_GENERATOR, run_snakemake
from pycocotools import mask as mask_utils

from loclens.provenance import sha256_file
from loclens.segment import rle

pytestmark = pytest.mark.slow

FILTER = {
    "min_area_fraction": 0.001,
    "max_area_fraction": 0.8,
    # The random model's masks are noise over the whole image: the span filter (tested on its
    # own in test_sam.py) would leave nothing to render here.
    "max_span_fraction": None,
    "border_fraction": 0.08,
    "marker_max_area_fraction": 0.01,
    "dedup_iou": 0.85,
    "max_masks": 6,
}


@pytest.fixture(scope="module")
def sam_build(tmp_path_factory, vqa_rad_root, tiny_sam_checkpoint, tiny_medsam_checkpoint):
    workdir = tmp_path_factory.mktemp("sam_build")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"vqa_rad": {"path": str(vqa_rad_root)}}
    config["limit_images"] = 2
    config["segment"]["images_per_shard"] = 1  # two shards: two sam and two medsam jobs
    config["segment"]["sam"] = {
        "enabled": True,
        "checkpoint": None,
        # Fetched by the workflow's fetch_checkpoint rule from a local file URL, sha256-checked.
        "download": {"url": tiny_sam_checkpoint.as_uri(), "sha256": sha256_file(tiny_sam_checkpoint)},
        "arch": TINY_SAM_ARCH,
        "generator": {**TINY_SAM_GENERATOR, "points_per_side": 2},
        "filter": FILTER,
    }
    config["segment"]["medsam"].update(
        backend="medsam_vitb", checkpoint=str(tiny_medsam_checkpoint), arch=TINY_SAM_ARCH, prompts=["sam", "otsu"]
    )
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # One thread per segment job, so the two shards' jobs run side by side on 2 cores.
    run_snakemake(workdir, "--configfile", str(cfg), "--cores", "2", "--set-threads", "segment=1")
    return workdir, cfg, config


def test_sam_views_masks_and_provenance_reach_the_release(sam_build, tiny_sam_checkpoint, tiny_medsam_checkpoint):
    workdir, _, config = sam_build
    release = workdir / "results" / "release"
    sam_sha, medsam_sha = sha256_file(tiny_sam_checkpoint), sha256_file(tiny_medsam_checkpoint)
    fetched = workdir / "resources" / "checkpoints" / tiny_sam_checkpoint.name
    assert sha256_file(fetched) == sam_sha

    rows = 0
    ds = datasets.load_dataset(str(release), "vqa_rad")
    for split in ds:
        for row in ds[split]:
            rows += 1
            h, w = row["height"], row["width"]
            for col in ("sam_unicolor", "sam_multicolor", "medsam_unicolor", "medsam_multicolor", "masked"):
                assert row[col] is not None and row[col].size == (w, h), col
            assert 0.2 <= row["alpha"]["sam"] <= 0.8
            sam = [m for m in row["masks"] if m["segmenter"] == "sam"]
            medsam = [m for m in row["masks"] if m["segmenter"] == "medsam"]
            assert 1 <= len(sam) <= FILTER["max_masks"] and medsam
            decoded = [rle.decode(m["rle"]) for m in sam]
            for m, mask in zip(sam, decoded):
                assert mask.shape == (h, w) and int(mask.sum()) == m["area"]
                assert FILTER["min_area_fraction"] * h * w <= m["area"] <= FILTER["max_area_fraction"] * h * w
                assert m["model"] == "SAM ViT-B" and m["checkpoint_sha256"] == sam_sha
                assert m["prompt_source"] is None and m["label"].startswith("sam-")
            assert [m["area"] for m in sam] == sorted((m["area"] for m in sam), reverse=True)
            for a, b in itertools.combinations(sam, 2):
                enc = [{"size": x["rle"]["size"], "counts": x["rle"]["counts"].encode()} for x in (a, b)]
                assert mask_utils.iou(enc[:1], enc[1:], [0])[0, 0] < FILTER["dedup_iou"]
            for m in medsam:
                assert rle.decode(m["rle"]).shape == (h, w)
                assert m["model"] == "MedSAM ViT-B" and m["checkpoint_sha256"] == medsam_sha
                # SAM's noise masks all span the image; whole-image boxes are never prompts,
                # so MedSAM fell back to the next source in the order.
                assert m["prompt_source"] == "otsu"
                x0, y0, x1, y1 = m["prompt_box"]
                assert not (x1 - x0 >= 0.95 * w and y1 - y0 >= 0.95 * h)
            segs = {s["segmenter"]: s for s in row["provenance"]["segmenters"]}
            assert segs["sam"]["checkpoint_sha256"] == sam_sha and segs["sam"]["backend"] == "sam_automatic"
            assert segs["medsam"]["checkpoint_sha256"] == medsam_sha and segs["medsam"]["backend"] == "medsam_vitb"
            assert segs["medsam"]["prompt_sources"] == ["sam", "otsu"]
    assert rows >= 2
    card = (release / "README.md").read_text()
    assert (
        f"**SAM ViT-B** (backend `sam_automatic`), checkpoint `{tiny_sam_checkpoint.name}`, sha256 `{sam_sha}`" in card
    )
    assert "automatic mask generation (box_nms_thresh=1.0, points_per_side=2" in card and "views are null" not in card


def test_medsam_job_of_a_shard_reads_the_sam_cache_of_that_shard(sam_build):
    workdir, cfg, _ = sam_build
    # Planned with the local multi-GPU profile (which also prints the shell commands).
    profile = REPO / "workflow" / "profiles" / "default"
    dry = run_snakemake(workdir, "--configfile", str(cfg), "--profile", str(profile), "-n", "--forcerun", "segment")
    text = dry.stdout + dry.stderr
    assert f"Using profile {profile}" in text
    assert all("gpu=1" in b for b in text.split("\n\n") if "rule segment:" in b)
    medsam_cmds = [line for line in text.splitlines() if "--segmenter medsam" in line]
    assert medsam_cmds
    for line in medsam_cmds:
        out = re.search(r"--out results/segment/(\w+)/medsam/(shard-\d{5})\.parquet", line)
        assert f"--context-masks sam=results/segment/{out.group(1)}/sam/{out.group(2)}.parquet" in line
        assert "--checkpoint " in line


def test_slurm_profile_plans_one_gpu_job_per_shard(sam_build):
    workdir, cfg, _ = sam_build
    n_shards = len(json.loads((workdir / "results" / "ingest" / "vqa_rad" / "plan.json").read_text())["segment_shards"])
    assert n_shards == 2
    profile = REPO / "workflow" / "profiles" / "slurm"
    dry = run_snakemake(
        workdir, "--configfile", str(cfg), "--profile", str(profile), "-n", "--forcerun", "fetch_checkpoint", "segment"
    )
    text = dry.stdout + dry.stderr
    jobs = [block for block in text.split("\n\n") if "rule segment:" in block]
    assert len(jobs) == 2 * n_shards  # one per shard for each of sam and medsam
    keys = set()
    for block in jobs:
        res = re.search(r"resources: (.*)", block).group(1)
        assert "gpu=1" in res and "slurm_partition=gpu" in res, res
        wc = re.search(r"wildcards: dataset=(\w+), segmenter=(\w+), shard=(\d+)", block).groups()
        keys.add(wc)
    assert len(keys) == len(jobs)
    fetch = [b for b in text.split("\n\n") if "rule fetch_checkpoint:" in b]
    assert len(fetch) == 1
    # Downloads stay on the submit host: a cluster executor runs local rules there. (Snakemake 9
    # dry runs no longer print "localrule", so the workflow's own local-rule set is checked.)
    assert {"fetch_checkpoint", "fetch_checkpoints", "download", "download_dataset", "publish"} <= local_rules(
        workdir, cfg
    )
    assert "segment" not in local_rules(workdir, cfg)


def local_rules(workdir, cfg) -> set[str]:
    """Rules the loaded workflow marks local (the set Snakemake consults for remote executors)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[cfg]),
            storage_settings=StorageSettings(),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )
        return set(wf._workflow._localrules)


def test_without_checkpoint_the_workflow_says_what_to_fetch(tmp_path, vqa_rad_root):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"sample": {"n_images": 1}}
    config["segment"]["sam"] = {"enabled": True, "checkpoint": str(tmp_path / "missing_sam.pth")}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "--configfile", str(cfg), "--cores", "1", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # Offline (as tests run), the check before the first job names the file, its official source
    # and where it goes; online, the segment job's CheckpointError says the same (test_checkpoints).
    assert "1. segment.sam: sam (vit_b) checkpoint: sam_vit_b_01ec64.pth from https://dl.fbaipublicfiles.com" in text
    assert f"put  {tmp_path / 'missing_sam.pth'} (segment.sam.checkpoint)" in text
    assert not (tmp_path / "results").exists()  # stopped before any job: nothing substituted
