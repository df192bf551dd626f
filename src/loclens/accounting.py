"""Nothing lost: every input QA record of a dataset is either in the release or in its rejects
report, and the release says so per dataset (``manifest.json`` -> ``datasets.<name>.accounting``).

The counts are taken from what was actually written (the ``qa`` lists of the release shards and
the lines of the rejects report), not from the plan, so a shard that lost rows cannot hide behind
a correct plan. ``check_dataset`` is what ``loclens validate`` runs per dataset.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .plan import Plan


def released_qa(release_dir: Path, shard_files: list[str]) -> int:
    """QA records in the release shards (the lengths of the ``qa`` lists)."""
    total = 0
    for relative in shard_files:
        column = pq.read_table(Path(release_dir) / relative, columns=["qa"]).column("qa")
        total += int(pc.sum(pc.list_value_length(column)).as_py() or 0)
    return total


def reason_key(reason: str) -> str:
    """A reason without its per-record details (numbers, a trailing parenthesis), so that the
    summary groups alike rejects: 'image of 1x1 pixels ...' -> 'image of NxN pixels ...'."""
    return re.sub(r"\d+", "N", re.sub(r"\s*\(.*\)\s*$", "", reason)).strip()


def read_rejects(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summarise_rejects(rejects: list[dict]) -> dict:
    """Counts of rejected QA records and images, and QA/image counts per reason."""
    by_reason: Counter = Counter()
    for r in rejects:
        by_reason[(reason_key(r["reason"]), r.get("kind", "qa"))] += 1
    return {
        "rejected_qa": sum(1 for r in rejects if r.get("kind", "qa") == "qa"),
        "rejected_images": sum(1 for r in rejects if r.get("kind") == "image"),
        "by_reason": [
            {"reason": reason, "kind": kind, "count": n}
            for (reason, kind), n in sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
        ],
    }


def dataset_accounting(release_dir: Path, plan: Plan, rejects: list[dict]) -> dict:
    """The manifest's accounting entry of one dataset; raise if records were lost."""
    shard_files = plan.release_files
    summary = summarise_rejects(rejects)
    entry = {
        "input_records": plan.input_records,
        "released_qa": released_qa(release_dir, shard_files),
        **summary,
    }
    problems = balance_problems(plan.dataset, entry)
    if entry["released_qa"] != plan.released_qa:
        problems.append(
            f"{plan.dataset}: the plan releases {plan.released_qa} QA records but the shards hold {entry['released_qa']}"
        )
    if problems:
        raise RuntimeError("; ".join(problems))
    return entry


def balance_problems(dataset: str, accounting: dict) -> list[str]:
    total = accounting["released_qa"] + accounting["rejected_qa"]
    if total == accounting["input_records"]:
        return []
    return [
        f"{dataset}: {accounting['input_records']} input QA records but {accounting['released_qa']} released "
        f"+ {accounting['rejected_qa']} rejected = {total}; records were lost or counted twice"
    ]


def check_dataset(release_dir: Path, name: str, entry: dict) -> list[str]:
    """Problems with one dataset's accounting in a release (empty when it holds): the shards and
    the rejects report are recounted and compared with the manifest, and input = released +
    rejected must hold."""
    release_dir = Path(release_dir)
    acc = entry.get("accounting")
    if not acc:
        return [f"{name}: the manifest has no accounting"]
    problems = balance_problems(name, acc)
    shard_files = [s["file"] for split in entry["splits"].values() for s in split["shards"]]
    try:
        in_shards = released_qa(release_dir, shard_files)
    except (OSError, ValueError, KeyError) as exc:
        return problems + [f"{name}: cannot count the QA in the shards ({exc})"]
    if in_shards != acc["released_qa"]:
        problems.append(f"{name}: the manifest says {acc['released_qa']} QA released but the shards hold {in_shards}")
    rejects_path = release_dir / entry["rejects_file"]
    if not rejects_path.is_file():
        return problems + [f"{name}: rejects report {entry['rejects_file']} is missing"]
    try:
        rejected = summarise_rejects(read_rejects(rejects_path))["rejected_qa"]
    except (ValueError, KeyError) as exc:
        return problems + [f"{name}: rejects report {entry['rejects_file']} is not valid JSON lines ({exc})"]
    if rejected != acc["rejected_qa"]:
        problems.append(
            f"{name}: the manifest says {acc['rejected_qa']} QA rejected but {entry['rejects_file']} lists {rejected}"
        )
    return problems


__all__ = ["dataset_accounting", "check_dataset", "summarise_rejects", "released_qa", "reason_key"]
