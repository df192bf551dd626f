"""Finish a release: drop stale shards, copy rejects, write the card, then the manifest last."""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import TMP_PREFIX
from ..ingest import check_accounting
from ..lens import png_deflate
from ..plan import Plan, read_plan
from ..provenance import config_hash, package_version
from ..stages import build_hash, enabled_segmenters
from .card import write_card
from .manifest import REJECTS_DIR, dataset_entry, write_manifest
from .shards import read_mask_cache
from .stats import coverage, release_stats

log = logging.getLogger(__name__)


def remove_stale_files(release_dir: Path, plans: list[Plan]) -> list[Path]:
    """Shards of an earlier build with another shard count would match ``<split>-*.parquet``
    too, and a dataset dropped from the config would linger: a release holds exactly the
    planned shards and the rejects reports of its datasets."""
    wanted = {release_dir / f for plan in plans for f in plan.release_files}
    wanted |= {release_dir / REJECTS_DIR / f"{plan.dataset}.jsonl" for plan in plans}
    candidates = [*release_dir.glob("*/*.parquet"), *release_dir.glob(f"{REJECTS_DIR}/*.jsonl")]
    stale = sorted(p for p in candidates if p not in wanted)
    for path in stale:
        log.info("removing stale file %s", path)
        path.unlink()
    return stale


def remove_unfinished_writes(release_dir: Path) -> list[Path]:
    """Temporary files of writers that were killed (``.tmp-*``, see ``atomic``). The release
    step runs after every shard job, so none of them is still being written; a release that
    is published must not carry them."""
    leftovers = sorted(p for p in release_dir.rglob(f"{TMP_PREFIX}*") if p.is_file())
    for path in leftovers:
        log.info("removing unfinished write %s", path)
        path.unlink()
    return leftovers


def segmenter_infos(mask_paths: list[str]) -> list[dict]:
    infos: dict[str, dict] = {}
    for path in mask_paths:
        _, info = read_mask_cache([path])
        if info:
            infos[info["segmenter"]] = info
    return [infos[k] for k in sorted(infos)]


def split_protocol(config: dict) -> dict:
    """How rows were assigned to splits; the validator checks ``grouped`` keeps images apart."""
    return {"protocol": config["split"], "seed": config["seed"], **config["grouped_split"]}


def build_settings(config: dict, mask_paths: list[str]) -> dict:
    """The settings that shaped the rows, recorded so the card and the validator need only the
    release itself."""
    return {
        "limit_images": config["limit_images"],
        "segment": {s: config["segment"][s] for s in enabled_segmenters(config)},
        "read_max_side": config["segment"]["read_max_side"],
        "segmenters": segmenter_infos(mask_paths),
        "render": {**config["render"], "png_deflate": png_deflate()},
    }


def finalize_release(release_dir: Path, plan_paths: list[Path], config: dict, mask_paths: list[str]) -> dict:
    datasets = {}
    hashes = {}
    remove_unfinished_writes(release_dir)
    plans = [read_plan(p) for p in plan_paths]
    remove_stale_files(release_dir, plans)
    for plan_path, plan in zip(plan_paths, plans):
        check_accounting(plan)
        datasets[plan.dataset] = dataset_entry(release_dir, plan, Path(plan_path).parent, split_protocol(config))
        hashes[plan.dataset] = build_hash(config, plan.dataset)
    manifest = {
        "loclens_version": package_version(),
        "config_hash": config_hash(hashes),
        "seed": config["seed"],
        "build": build_settings(config, mask_paths),
        "datasets": datasets,
    }
    # One pass over the shards gives the card its counts and the manifest its coverage.
    stats = release_stats(release_dir, manifest)
    ran = [info["segmenter"] for info in manifest["build"]["segmenters"]]
    for name, d in datasets.items():
        d["coverage"] = coverage(stats[name], ran)
    write_card(release_dir, manifest, config["release"], stats)
    return write_manifest(release_dir, manifest)
