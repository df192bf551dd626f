"""The release manifest: row counts, sizes and sha256 of every shard, plus per-dataset
accounting (input records = released + rejected). Written last: its presence marks a
complete release."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ..accounting import dataset_accounting, read_rejects
from ..atomic import copy_file, write_json
from ..provenance import package_version, sha256_file

MANIFEST = "manifest.json"
REJECTS_DIR = "rejects"


def shard_entry(release_dir: Path, relative: str) -> dict:
    path = release_dir / relative
    return {
        "file": relative,
        "rows": pq.ParquetFile(path).metadata.num_rows,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def dataset_entry(release_dir: Path, plan: dict, rejects_path: Path) -> dict:
    splits: dict[str, dict] = {}
    for shard in plan["release_shards"]:
        entry = shard_entry(release_dir, shard["file"])
        split = splits.setdefault(shard["split"], {"rows": 0, "shards": []})
        split["rows"] += entry["rows"]
        split["shards"].append(entry)
    rejects_file = f"{REJECTS_DIR}/{plan['dataset']}.jsonl"
    copy_file(rejects_path, release_dir / rejects_file)
    return {
        "source": plan["source"],
        "origin": plan.get("origin"),
        "localization": plan.get("localization", {}),
        "localization_rules": plan.get("localization_rules", {}),
        "splits": splits,
        "accounting": dataset_accounting(release_dir, plan, read_rejects(release_dir / rejects_file)),
        "rejects_file": rejects_file,
        "rejects_sha256": sha256_file(release_dir / rejects_file),
    }


def write_manifest(release_dir: Path, datasets: dict[str, dict], config_hash: str, seed: int) -> dict:
    manifest = {
        "loclens_version": package_version(),
        "config_hash": config_hash,
        "seed": seed,
        "datasets": datasets,
    }
    write_json(release_dir / MANIFEST, manifest)
    return manifest
