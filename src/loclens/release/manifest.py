"""The release manifest: row counts, sizes and sha256 of every shard, the QA each shard must
hold, per-dataset accounting (input records = released + rejected), and the build settings a
validator or a dataset card needs (split protocol, alpha range, segmenters). Written last: its
presence marks a complete release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from ..accounting import dataset_accounting, read_rejects
from ..atomic import copy_file, write_json
from ..ingest import read_records
from ..plan import RECORDS_FILE, REJECTS_FILE, Plan
from ..provenance import sha256_file

MANIFEST = "manifest.json"
CARD = "README.md"
REJECTS_DIR = "rejects"


def qids_digest(qids) -> str:
    """Order-free digest of a multiset of qids: the release must hold exactly the QA the ingest
    put in each shard, and this lets a validator check that without the ingest files."""
    return hashlib.sha256("\n".join(sorted(str(q) for q in qids)).encode("utf-8")).hexdigest()


def shard_entry(release_dir: Path, relative: str, expected_qids: list[str] | None = None) -> dict:
    path = release_dir / relative
    entry = {
        "file": relative,
        "rows": pq.ParquetFile(path).metadata.num_rows,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    if expected_qids is not None:
        entry.update(qa=len(expected_qids), qids_sha256=qids_digest(expected_qids))
    return entry


def _planned_qids(records_path: Path) -> dict[tuple[str, str], list[str]]:
    """(split, image_id) -> qids the ingest assigned to that release row."""
    return {(r["split"], r["image_id"]): [q["qid"] for q in r["qa"]] for r in read_records(records_path)}


def dataset_entry(release_dir: Path, plan: Plan, ingest_dir: Path, split_protocol: dict) -> dict:
    """Manifest entry of one dataset; copies its rejects report into the release."""
    planned = _planned_qids(ingest_dir / RECORDS_FILE)
    splits: dict[str, dict] = {}
    for shard in plan.release_shards:
        qids = [q for iid in shard.image_ids for q in planned.get((shard.split, iid), [])]
        entry = shard_entry(release_dir, shard.file, qids)
        split = splits.setdefault(shard.split, {"rows": 0, "shards": []})
        split["rows"] += entry["rows"]
        split["shards"].append(entry)
    rejects_file = f"{REJECTS_DIR}/{plan.dataset}.jsonl"
    target = release_dir / rejects_file
    copy_file(ingest_dir / REJECTS_FILE, target)
    return {
        "source": plan.source,
        "origin": plan.origin,
        "localization": plan.localization,
        "localization_rules": plan.localization_rules,
        "split_protocol": split_protocol,
        "splits": splits,
        "accounting": dataset_accounting(release_dir, plan, read_rejects(target)),
        "rejects_file": rejects_file,
        "rejects_sha256": sha256_file(target),
    }


def write_manifest(release_dir: Path, manifest: dict) -> dict:
    write_json(release_dir / MANIFEST, manifest)
    return manifest
