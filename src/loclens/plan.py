"""The ingest's work plan (``plan.json``): what every later stage reads to know its work.

The plan is the contract between ingest and the segment, render and release stages (and the
workflow, which expands its jobs from it). It is typed here, with its one reader
(:func:`read_plan`) and writer (:func:`write_plan`), so no stage reads it by string keys.

- a *segment shard* is a list of unique image ids, segmented by one job per segmenter into
  ``<results>/segment/<dataset>/<segmenter>/`` (``MASK_CACHE``);
- a *release shard* is the rows of one split rendered into one Parquet file of the release,
  with the segment shards holding its masks and the earlier release shards whose views it copies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .atomic import write_json
from .errors import LoclensError

#: Files of an ingest folder (``<results>/ingest/<dataset>/``): the plan; the release rows (one
#: JSON line per image and split, with that split's QA); every input record or image left out,
#: with the reason.
PLAN_FILE = "plan.json"
RECORDS_FILE = "records.jsonl"
REJECTS_FILE = "rejects.jsonl"
#: A segment shard's mask cache, in ``<results>/segment/<dataset>/<segmenter>/``: ``{shard}`` is
#: the shard's index in five digits (the workflow's ``{shard}`` wildcard).
MASK_CACHE = "shard-{shard}.parquet"
#: Every mask cache of a folder.
MASK_CACHE_GLOB = MASK_CACHE.format(shard="*")


def mask_cache_name(index: int) -> str:
    """File name of segment shard ``index``'s mask cache."""
    return MASK_CACHE.format(shard=f"{index:05d}")


class PlanError(LoclensError, ValueError):
    """An ingest output (plan.json, records.jsonl) that is not one this version of loclens writes."""


@dataclass(frozen=True)
class ReleaseShard:
    """One Parquet file of the release: rows of one split."""

    split: str
    index: int
    total: int
    #: Path relative to the release folder: ``<dataset>/<split>-<index>-of-<total>.parquet``.
    file: str
    image_ids: list[str]
    #: Indices of the segment shards holding the masks of these images.
    segment_shards: list[int]
    #: Earlier release shard file -> images of this shard whose views it already renders (an
    #: image with QA in two splits has a row in each); the render job copies those views.
    views_from: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The shard's file name (without the dataset folder)."""
        return self.file.rsplit("/", 1)[-1]

    @property
    def copied_rows(self) -> int:
        return sum(len(ids) for ids in self.views_from.values())


@dataclass
class Plan:
    """The plan of one dataset. ``make_plan`` fills the shards; ``run_ingest`` the rest."""

    dataset: str
    #: Segment shard k -> its image ids.
    segment_shards: list[list[str]]
    release_shards: list[ReleaseShard]
    source: str | None = None
    root: str | None = None
    origin: dict | None = None
    input_records: int = 0
    released_qa: int = 0
    rejected_qa: int = 0
    #: split -> localization tag -> QA count.
    localization: dict = field(default_factory=dict)
    #: tagging rule -> QA count.
    localization_rules: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(s.image_ids) for s in self.release_shards)

    @property
    def release_files(self) -> list[str]:
        return [s.file for s in self.release_shards]

    def release_shard(self, name: str) -> ReleaseShard:
        """The release shard of a file name (``train-00000-of-00002.parquet``) or of its path
        relative to the release folder (``<dataset>/train-...``)."""
        for shard in self.release_shards:
            if name in (shard.file, shard.name):
                return shard
        raise PlanError(f"{name} is not a release shard of the {self.dataset} plan")

    def segment_shard(self, index: int) -> list[str]:
        if not 0 <= index < len(self.segment_shards):
            raise PlanError(f"the {self.dataset} plan has {len(self.segment_shards)} segment shards, not shard {index}")
        return self.segment_shards[index]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "plan") -> Plan:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(k for k in ("dataset", "segment_shards", "release_shards") if k not in data)
        if unknown or missing:
            raise PlanError(f"{source}: not a loclens plan (unknown keys {unknown}, missing keys {missing})")
        shard_keys = {f.name for f in fields(ReleaseShard)}
        shards = []
        for k, s in enumerate(data["release_shards"]):
            if not isinstance(s, dict) or not set(s) <= shard_keys:
                raise PlanError(f"{source}: release_shards[{k}] is not a release shard: {s!r}")
            shards.append(ReleaseShard(**s))
        return cls(**{**data, "release_shards": shards})


def read_plan(path: str | Path) -> Plan:
    """Read a plan.json (clear error naming the file when it is not one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc})") from None
    try:
        return Plan.from_dict(data, source=str(path))
    except TypeError as exc:
        raise PlanError(f"{path}: not a loclens plan ({exc})") from None


def write_plan(path: str | Path, plan: Plan) -> None:
    """Write plan.json atomically (sorted keys, so the same plan gives the same bytes)."""
    write_json(path, plan.to_dict())


__all__ = [
    "MASK_CACHE",
    "MASK_CACHE_GLOB",
    "PLAN_FILE",
    "RECORDS_FILE",
    "REJECTS_FILE",
    "Plan",
    "PlanError",
    "ReleaseShard",
    "mask_cache_name",
    "read_plan",
    "write_plan",
]
