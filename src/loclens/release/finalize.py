"""Finish a release: drop stale shards, copy rejects, write the card, then the manifest last."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..atomic import TMP_PREFIX
from ..ingest import check_accounting
from ..provenance import config_hash
from ..stages import build_hash
from .card import write_card
from .manifest import dataset_entry, write_manifest
from .shards import read_mask_cache

log = logging.getLogger(__name__)


def remove_stale_shards(release_dir: Path, plan: dict) -> list[Path]:
    """Shards of an earlier build with another shard count would match ``<split>-*.parquet``
    too; a release holds exactly the planned shards."""
    wanted = {release_dir / s["file"] for s in plan["release_shards"]}
    stale = [p for p in (release_dir / plan["dataset"]).glob("*.parquet") if p not in wanted]
    for path in stale:
        log.info("removing stale shard %s", path)
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


def finalize_release(release_dir: Path, plan_paths: list[Path], config: dict, mask_paths: list[str]) -> dict:
    datasets = {}
    hashes = {}
    remove_unfinished_writes(release_dir)
    for plan_path in plan_paths:
        plan = json.loads(plan_path.read_text())
        check_accounting(plan)
        remove_stale_shards(release_dir, plan)
        datasets[plan["dataset"]] = dataset_entry(release_dir, plan, plan_path.parent / "rejects.jsonl")
        hashes[plan["dataset"]] = build_hash(config, plan["dataset"])
    infos = segmenter_infos(mask_paths)
    manifest = {"datasets": datasets, "config_hash": config_hash(hashes), "seed": config["seed"]}
    write_card(release_dir, {**manifest, "loclens_version": _version()}, config, infos)
    return write_manifest(release_dir, datasets, manifest["config_hash"], config["seed"])


def _version() -> str:
    from ..provenance import package_version

    return package_version()
