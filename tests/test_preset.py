"""The paper preset (config/paper.yaml), the preflight that lists every missing input in one
message, and a command-line config's `datasets` replacing config.yaml's (no sample dragged in).

Snakemake runs in a working directory holding a copy of the checkout's config.yaml, as a user's
checkout has it (the Snakefile's `configfile: "config.yaml"` is read from there)."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SEGMENT_ONE_THREAD, TINY_SAM_ARCH, TINY_SAM_GENERATOR, run_snakemake
from slake_tree import build_slake_tree

from loclens import preflight
from loclens.config import load
from loclens.download import SLAKE_FILES, VQA_RAD_IMAGES, VQA_RAD_JSON, VQA_RAD_ZIP, VQA_RAD_ZIP_URL
from loclens.provenance import sha256_file
from loclens.segment import checkpoints as ckpt
from loclens.sources.sample import generate_sample

PRESET = REPO / "config" / "paper.yaml"
SAM_VIT_B = ckpt.KNOWN_SOURCES[("sam", "vit_b")]


def _jobs(text: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table Snakemake prints."""
    table = text.split("Job stats:", 1)[-1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def _checkout(path: Path) -> Path:
    """A working directory with the checkout's config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", path / "config.yaml")
    return path


def _preset(resources: Path) -> dict:
    config = load(PRESET)
    config["resources"] = str(resources)
    return config


def _medsam_expectation(resources: str = "resources") -> tuple[str, str]:
    """(file name, where it goes) the offline message gives for the preset's MedSAM ViT-B weights:
    the backend's default download when it has one, else the manual source."""
    cfg = load(PRESET)["segment"]["medsam"]
    spec = ckpt.download_spec("medsam", cfg)
    if spec is None:
        return "medsam_vit_b.pth", "set segment.medsam.checkpoint"
    return ckpt.spec_filename(spec), f"{resources}/checkpoints/{ckpt.spec_filename(spec)}"


# --- the preset ----------------------------------------------------------------------------------


def test_preset_sets_the_papers_data_and_nothing_else_to_build():
    config = load(PRESET)
    assert sorted(config["datasets"]) == ["slake", "vqa_rad"]  # no sample
    assert config["datasets"]["slake"]["lang"] == "en" and "path" not in config["datasets"]["vqa_rad"]
    assert config["split"] == "grouped" and config["grouped_split"]["test_fraction"] == 0.3 and config["seed"] == 0
    sam, medsam = config["segment"]["sam"], config["segment"]["medsam"]
    assert sam["enabled"] and sam["model_type"] == "vit_b"
    assert medsam["enabled"] and medsam["backend"] == "medsam_vitb"
    # Both from their default downloads: no local file, no custom source, the published architecture.
    for cfg in (sam, medsam):
        assert cfg["checkpoint"] is None and cfg["download"] is None and cfg["arch"] == {}
    assert ckpt.download_spec("sam", sam) == SAM_VIT_B
    assert config["render"]["masked_from"] == ["expert", "medsam", "sam"] and config["render"]["outside"] == "paper"


# --- preflight -----------------------------------------------------------------------------------


def test_missing_lists_every_dataset_and_checkpoint_with_where_to_put_it(tmp_path):
    res = tmp_path / "res"
    items = {m.key: m for m in preflight.missing(_preset(res))}
    assert sorted(items) == ["datasets.slake", "datasets.vqa_rad", "segment.medsam", "segment.sam"]
    assert items["datasets.vqa_rad"].url == VQA_RAD_ZIP_URL
    assert str(res / "vqa_rad" / VQA_RAD_ZIP) in items["datasets.vqa_rad"].put
    assert (
        items["datasets.slake"].url.endswith("/datasets/BoKelvin/SLAKE")
        and str(res / "slake") in items["datasets.slake"].put
    )
    assert all(name in items["datasets.slake"].get for name in SLAKE_FILES)
    assert items["segment.sam"].url == SAM_VIT_B["url"]
    assert items["segment.sam"].put == str(res / "checkpoints" / "sam_vit_b_01ec64.pth")
    assert SAM_VIT_B["sha256"] in items["segment.sam"].get
    name, where = _medsam_expectation(str(res))
    assert name in items["segment.medsam"].get + items["segment.medsam"].put and where in items["segment.medsam"].put


def test_files_put_where_the_message_says_are_not_missing(tmp_path):
    res = tmp_path / "res"
    config = _preset(res)
    build_slake_tree(res / "slake", "hf")
    (res / "vqa_rad").mkdir(parents=True)
    (res / "vqa_rad" / VQA_RAD_ZIP).write_bytes(b"unpacked and checked by the download job")
    (res / "checkpoints").mkdir()
    (res / "checkpoints" / "sam_vit_b_01ec64.pth").write_bytes(b"sha256-checked when loaded")
    assert [m.key for m in preflight.missing(config)] == ["segment.medsam"]


def test_a_configured_path_that_is_empty_is_missing_and_only_the_user_can_fill_it(tmp_path):
    config = load(PRESET)
    config["datasets"] = {"vqa_rad": {"path": str(tmp_path / "nowhere"), "lang": "en"}}
    config["segment"]["sam"]["checkpoint"] = str(tmp_path / "sam.pth")
    items = {m.key: m for m in preflight.missing(config)}
    assert items["datasets.vqa_rad"].url is None
    assert items["datasets.vqa_rad"].put == f"{tmp_path / 'nowhere'}/ (datasets.vqa_rad.path)"
    assert VQA_RAD_ZIP_URL in items["datasets.vqa_rad"].get
    assert items["segment.sam"].url is None and SAM_VIT_B["url"] in items["segment.sam"].get
    generate_sample(tmp_path / "nowhere", n_images=1)
    (tmp_path / "sam.pth").write_bytes(b"x")
    assert "datasets.vqa_rad" not in {m.key for m in preflight.missing(config)}
    assert "segment.sam" not in {m.key for m in preflight.missing(config)}


def test_a_hub_parquet_dataset_is_missing_until_a_parquet_file_is_in_place(tmp_path):
    config = load(PRESET)
    config["resources"] = str(tmp_path / "res")
    config["datasets"] = {"pathvqa": {"source": "hf_parquet", "repo": "someone/path-vqa", "lang": "en"}}
    config["segment"]["sam"]["enabled"] = config["segment"]["medsam"]["enabled"] = False
    (item,) = preflight.missing(config)
    assert item.key == "datasets.pathvqa" and item.url.endswith("/datasets/someone/path-vqa")
    assert item.put.startswith(f"{tmp_path / 'res' / 'pathvqa'}/")
    (tmp_path / "res" / "pathvqa" / "data").mkdir(parents=True)
    (tmp_path / "res" / "pathvqa" / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    assert preflight.missing(config) == []


def _online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_offline_reason_offline_mode_or_a_host_that_does_not_answer(monkeypatch):
    assert preflight.offline_reason(["https://example.org/x"]) == "HF_HUB_OFFLINE=1 is set"
    _online(monkeypatch)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = listening.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            down = closed.getsockname()[1]  # bound, not listening: connections are refused
            assert preflight.offline_reason([f"http://127.0.0.1:{up}/a", f"http://127.0.0.1:{up}/b"]) is None
            reason = preflight.offline_reason([f"http://127.0.0.1:{up}/a", f"http://127.0.0.1:{down}/b"], timeout=2)
    assert reason.startswith(f"cannot reach 127.0.0.1:{down} (ConnectionRefusedError") and str(up) not in reason


def test_check_raises_offline_with_every_item_and_online_returns_what_nothing_fetches(tmp_path, monkeypatch):
    config = _preset(tmp_path / "res")
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check(config)
    text = str(err.value)
    assert "lacks 4 input(s)" in text and "HF_HUB_OFFLINE=1 is set" in text
    for key in ("datasets.slake", "datasets.vqa_rad", "segment.sam", "segment.medsam"):
        assert f". {key}: " in text
    # Online (the hosts answer), nothing is raised; what no download fetches is handed back.
    _online(monkeypatch)
    monkeypatch.setattr(preflight, "_probe", lambda address, timeout: None)
    assert [m.key for m in preflight.check(config)] == [m.key for m in preflight.missing(config) if not m.url]


def test_check_offline_stops_for_a_file_nothing_fetches_too(tmp_path):
    config = load(PRESET)
    config["datasets"] = {"sample": {"n_images": 1}}
    config["segment"]["sam"]["checkpoint"] = str(tmp_path / "sam.pth")
    config["segment"]["medsam"] = {**config["segment"]["medsam"], "backend": "litemedsam"}
    with pytest.raises(preflight.PreflightError, match=r"lacks 1 input\(s\)") as err:
        preflight.check(config)
    assert f"put  {tmp_path / 'sam.pth'} (segment.sam.checkpoint)" in str(err.value)


def test_check_counts_file_urls_as_fetched_here(tmp_path):
    config = load(PRESET)
    config["datasets"] = {"sample": {"n_images": 1}}
    config["segment"]["medsam"] = {**config["segment"]["medsam"], "backend": "litemedsam"}
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"w")
    config["segment"]["sam"]["download"] = {"url": weights.as_uri(), "sha256": sha256_file(weights)}
    config["resources"] = str(tmp_path / "res")
    assert [m.key for m in preflight.missing(config)] == ["segment.sam"]
    assert preflight.check(config) == []  # offline, yet nothing to fetch over a network


# --- the preset through Snakemake --------------------------------------------------------------------


@pytest.mark.slow  # runs Snakemake
def test_preset_dry_run_plans_the_downloads_before_the_build(tmp_path):
    work = _checkout(tmp_path / "work")
    dry = run_snakemake(work, "--configfile", str(PRESET), "-n")
    text = dry.stdout + dry.stderr
    assert _jobs(text) == {"download_dataset": 2, "ingest": 2, "release": 1, "validate": 1, "gallery": 2, "all": 1}
    assert "resources/vqa_rad/loclens-download.json" in text and "resources/slake/loclens-download.json" in text
    assert "results/paper/release/manifest.json" in text


@pytest.mark.slow  # runs Snakemake
def test_preset_offline_stops_before_any_job_naming_every_missing_file(tmp_path):
    work = _checkout(tmp_path / "work")
    proc = run_snakemake(work, "--configfile", str(PRESET), "--cores", "2", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the build lacks 4 input(s) and cannot download them here: HF_HUB_OFFLINE=1 is set" in text
    medsam_name, medsam_where = _medsam_expectation()
    for fragment in (
        # VQA-RAD: the OSF zip, or its two entries, in resources/vqa_rad
        VQA_RAD_ZIP_URL,
        f"resources/vqa_rad/{VQA_RAD_ZIP}",
        VQA_RAD_JSON,
        VQA_RAD_IMAGES,
        # SLAKE: each file of the Hub copy, in resources/slake
        "https://huggingface.co/datasets/BoKelvin/SLAKE",
        "resources/slake/",
        *SLAKE_FILES,
        # the checkpoints
        SAM_VIT_B["url"],
        SAM_VIT_B["sha256"],
        "resources/checkpoints/sam_vit_b_01ec64.pth",
        medsam_name,
        medsam_where,
    ):
        assert fragment in text, fragment
    # Stopped before the first job: nothing was written.
    assert not (work / "results").exists() and not (work / "resources").exists()
    assert "Finished job" not in text


# --- the preset with the files in place, through segmentation ---------------------------------------


def _overlay(work: Path, tiny_sam: Path, tiny_medsam: Path) -> Path:
    """What a test changes on top of the preset: few images, and small random models fetched
    from local files (the official weights are not reachable here) - same jobs, same rules."""
    overlay = {
        "limit_images": 2,
        "segment": {
            "device": "cpu",
            "images_per_shard": 2,
            "sam": {
                "download": {"url": tiny_sam.as_uri(), "sha256": sha256_file(tiny_sam)},
                "arch": TINY_SAM_ARCH,
                "generator": {**TINY_SAM_GENERATOR, "points_per_side": 2},
                # The random model's masks span the image (see test_sam_workflow.FILTER).
                "filter": {"max_span_fraction": None, "max_area_fraction": 0.8, "max_masks": 4},
            },
            "medsam": {
                "download": {"url": tiny_medsam.as_uri(), "sha256": sha256_file(tiny_medsam)},
                "arch": TINY_SAM_ARCH,
            },
        },
        "release": {"rows_per_shard": 2},
    }
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


@pytest.fixture(scope="module")
def placed(tmp_path_factory, vqa_rad_root, tiny_sam_checkpoint, tiny_medsam_checkpoint):
    """A checkout where the datasets were put by hand where the offline message says (the real
    VQA-RAD release, a SLAKE tree in the Hub layout); ingested by the preset's own jobs, offline."""
    work = _checkout(tmp_path_factory.mktemp("placed") / "work")
    build_slake_tree(work / "resources" / "slake", "hf")
    overlay = _overlay(work, tiny_sam_checkpoint, tiny_medsam_checkpoint)
    # The test subset of VQA-RAD is not the published JSON, which the download step checks by
    # sha256 (test_download covers a VQA-RAD copy put in resources/), so it is given by path here.
    with_path = yaml.safe_load(overlay.read_text())
    with_path["datasets"] = {"vqa_rad": {"path": str(vqa_rad_root)}, "slake": {"lang": "en"}}
    overlay.write_text(yaml.safe_dump(with_path))
    args = ("--configfile", str(PRESET), str(overlay))
    before = run_snakemake(work, *args, "-n")
    plans = [f"results/paper/ingest/{d}/plan.json" for d in ("slake", "vqa_rad")]
    run_snakemake(work, *args, "--cores", "2", *plans)
    return work, args, _jobs(before.stdout + before.stderr)


@pytest.mark.slow
def test_files_in_place_are_recorded_without_network_then_ingested(placed):
    work, _, before = placed
    assert before == {"download_dataset": 1, "ingest": 2, "release": 1, "validate": 1, "gallery": 2, "all": 1}
    record = json.loads((work / "resources" / "slake" / "loclens-download.json").read_text())
    assert record["dataset"] == "slake" and record["origin"] == "local copy" and record["files"]
    assert not (work / "resources" / "vqa_rad").exists()  # a dataset with a path is never downloaded
    for name in ("vqa_rad", "slake"):
        plan = json.loads((work / "results" / "paper" / "ingest" / name / "plan.json").read_text())
        assert plan["segment_shards"] and plan["release_shards"]


@pytest.mark.slow
def test_preset_plans_every_job_of_the_build(placed):
    """After ingest the dry run plans each checkpoint fetch, a sam and a medsam job per work shard
    of both datasets, a render job per release shard, and the release, checks and galleries."""
    work, args, _ = placed
    plans = {
        d: json.loads((work / "results" / "paper" / "ingest" / d / "plan.json").read_text())
        for d in ("slake", "vqa_rad")
    }
    dry = run_snakemake(work, *args, "-n")
    text = dry.stdout + dry.stderr
    assert _jobs(text) == {
        "fetch_checkpoint": 2,
        "segment": 2 * sum(len(p["segment_shards"]) for p in plans.values()),
        "render": sum(len(p["release_shards"]) for p in plans.values()),
        "release": 1,
        "validate": 1,
        "gallery": 2,
        "all": 1,
    }
    for name in ("slake", "vqa_rad"):
        for seg in ("sam", "medsam"):
            assert f"results/paper/segment/{name}/{seg}/shard-00000.parquet" in text


# --- a user's config builds the user's datasets only ---------------------------------------------------


def _my_yaml(work: Path, data: Path) -> Path:
    """The README's configuration: one real dataset named, nothing else."""
    my = work / "my.yaml"
    my.write_text(yaml.safe_dump({"datasets": {"vqa_rad": {"path": str(data)}}}))
    return my


@pytest.mark.slow  # runs Snakemake (dry runs)
@pytest.mark.parametrize(
    "args, sample_jobs",
    [
        ((), 1),  # config.yaml alone: the sample (the quick start)
        (("--config", "seed=1"), 1),  # a command-line config without datasets keeps config.yaml's
        (("--configfile", "MY"), 0),  # naming a dataset replaces the list
        (("--config", "datasets={vqa_rad: {path: data}}"), 0),
    ],
)
def test_a_command_line_datasets_list_replaces_config_yaml_s(tmp_path, args, sample_jobs):
    work = _checkout(tmp_path / "work")
    my = _my_yaml(work, generate_sample(work / "data", n_images=1))
    dry = run_snakemake(work, *(str(my) if a == "MY" else a for a in args), "-n")
    jobs = _jobs(dry.stdout + dry.stderr)
    assert jobs.get("sample_data", 0) == sample_jobs and jobs["ingest"] == 1 and jobs["gallery"] == 1


@pytest.mark.slow
def test_readme_command_builds_and_releases_only_the_users_dataset(tmp_path, capsys):
    """`snakemake --cores 2 --configfile my.yaml` with `datasets: {vqa_rad: {path: ...}}` in a
    checkout: the release, its card and what `snakemake publish` would push hold vqa_rad only."""
    from loclens import cli

    work = _checkout(tmp_path / "work")
    my = _my_yaml(work, generate_sample(work / "my_vqa_rad", n_images=2, seed=5))
    proc = run_snakemake(work, "--cores", "2", "--configfile", str(my), *SEGMENT_ONE_THREAD)
    assert "sample_data" not in _jobs(proc.stdout + proc.stderr)
    release = work / "results" / "release"
    assert list(json.loads((release / "manifest.json").read_text())["datasets"]) == ["vqa_rad"]
    card = (release / "README.md").read_text()
    front = yaml.safe_load(card.split("---", 2)[1])
    assert [c["config_name"] for c in front["configs"]] == ["vqa_rad"]
    assert not (release / "sample").exists() and not (work / "resources" / "sample").exists()
    assert not (work / "results" / "ingest" / "sample").exists()
    assert cli.main(["publish", str(release), "--repo", "me/my-lens", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "upload  vqa_rad/" in plan and "sample" not in plan


@pytest.mark.slow
def test_preset_builds_every_view_of_both_datasets_end_to_end(placed):
    """The planned build, run offline with the small random models: checkpoints fetched from their
    (file) downloads and sha256-checked, both datasets released with every view, split by image."""
    import datasets

    work, args, _ = placed
    run_snakemake(work, *args, "--cores", "2", *SEGMENT_ONE_THREAD)
    release = work / "results" / "paper" / "release"
    manifest = json.loads((release / "manifest.json").read_text())
    assert sorted(manifest["datasets"]) == ["slake", "vqa_rad"]
    assert json.loads((work / "results" / "paper" / "qc" / "validation.json").read_text())["ok"]
    assert all(entry["split_protocol"]["protocol"] == "grouped" for entry in manifest["datasets"].values())
    for name in ("slake", "vqa_rad"):
        ds = datasets.load_dataset(str(release), name)
        rows = [row for split in ds for row in ds[split]]
        for view in ("sam_unicolor", "sam_multicolor", "medsam_unicolor", "medsam_multicolor", "masked"):
            assert any(row[view] is not None for row in rows), (name, view)
        splits = {}
        for row in rows:
            splits.setdefault(row["image_id"], set()).add(row["split"])
        assert all(len(s) == 1 for s in splits.values())  # the image-grouped split
    for seg, tiny in (("sam", "tiny_sam.pth"), ("medsam", "tiny_medsam.pth")):
        assert (work / "resources" / "checkpoints" / tiny).is_file(), seg
