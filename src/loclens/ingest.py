"""Ingest stage: read a source, split it, and plan the work shards.

Writes, under ``<results>/ingest/<dataset>/``:
- ``records.jsonl``: one line per release row (an image in one split, with that split's QA);
- ``rejects.jsonl``: every input record or image that will not reach the release, with a reason;
- ``plan.json`` (written last): the segmentation work shards (unique images) and the release
  shards (rows per split), and the mapping between them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from .atomic import write_jsonl
from .config import dataset_source
from .download import read_origin
from .localization import count_rules, count_tags, tag_qa
from .plan import PLAN_FILE, RECORDS_FILE, REJECTS_FILE, Plan, PlanError, ReleaseShard, write_plan
from .sources import Reject, read_source, source_spec
from .sources.base import ImageRecord
from .sources.sample import generate_sample
from .split import assign_splits


def shard_name(split: str, index: int, total: int) -> str:
    """Hugging Face layout shard file name."""
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def source_root(name: str, dataset_cfg: dict, config: dict) -> Path:
    """Where a dataset's files are: the generated sample's folder, the configured ``path``, or
    (for sources ``loclens download`` can fetch) ``<resources>/<name>``, where it puts them."""
    source = dataset_source(name, dataset_cfg)
    if source == "sample":
        return Path(config["resources"]) / "sample" / name
    if "path" in dataset_cfg:
        return Path(dataset_cfg["path"]).expanduser()
    if download_origin(name, dataset_cfg):
        return Path(config["resources"]) / name
    raise ValueError(f"datasets.{name}: a 'path' to the dataset release is required")


def download_origin(name: str, dataset_cfg: dict) -> str | None:
    """What ``loclens download`` fetches for a dataset entry (None: not downloadable)."""
    source = dataset_source(name, dataset_cfg)
    if source == "hf_parquet":
        return f"hub:{dataset_cfg['repo']}" if dataset_cfg.get("repo") else None
    return source_spec(source).download


def downloaded_into_resources(name: str, dataset_cfg: dict, config: dict) -> bool:
    """Whether the workflow downloads the dataset: a source ``loclens download`` fetches, living
    in ``<resources>/<name>`` (no ``path``, or that one)."""
    if not download_origin(name, dataset_cfg):
        return False
    return source_root(name, dataset_cfg, config) == Path(config["resources"]) / name


def unpack_dir(name: str, config: dict) -> Path:
    """Where archives and embedded images of a dataset are unpacked (SLAKE imgs.zip, Parquet)."""
    return Path(config["resources"]) / "unpacked" / name


def reader_options(name: str, dataset_cfg: dict, config: dict) -> dict:
    spec = source_spec(dataset_source(name, dataset_cfg))
    available = {**dataset_cfg, "unpack_dir": unpack_dir(name, config)}
    return {k: available[k] for k in spec.options if k in available}


def _tag_and_select(dataset: str, images: list[ImageRecord], vocabulary: str | None, lang: str) -> list[Reject]:
    """Tag every QA; keep the configured language (``all`` keeps every one). QA of other
    languages are rejected with the reason; images left without QA leave the release."""
    rejects = []
    for image in images:
        kept = []
        for qa in image.qa:
            tag_qa(qa, vocabulary)
            if lang in ("all", qa.lang):
                kept.append(qa)
            else:
                reason = f"question language {qa.lang!r} not selected (datasets.{dataset}.lang: {lang})"
                rejects.append(Reject(dataset, image.source_file, reason, qid=qa.qid, record=qa.to_row()))
        image.qa = kept
    return rejects


def ensure_sample(name: str, dataset_cfg: dict, config: dict) -> Path:
    return generate_sample(source_root(name, dataset_cfg, config), dataset_cfg.get("n_images", 8), config["seed"])


def make_plan(dataset: str, rows: list[dict], images_per_shard: int, rows_per_shard: int) -> Plan:
    image_ids = sorted({r["image_id"] for r in rows})
    segment_shards = _chunks(image_ids, images_per_shard)
    seg_of = {iid: k for k, shard in enumerate(segment_shards) for iid in shard}
    release = []
    rendered_in: dict[str, str] = {}  # image_id -> the first release shard that renders its views
    for split in sorted({r["split"] for r in rows}):
        split_ids = [r["image_id"] for r in rows if r["split"] == split]
        chunks = _chunks(split_ids, rows_per_shard)
        for index, ids in enumerate(chunks):
            file = f"{dataset}/{shard_name(split, index, len(chunks))}"
            release.append(
                ReleaseShard(
                    split=split,
                    index=index,
                    total=len(chunks),
                    file=file,
                    image_ids=ids,
                    segment_shards=sorted({seg_of[i] for i in ids}),
                    views_from=_views_from(ids, rendered_in),
                )
            )
            rendered_in.update({i: file for i in ids if i not in rendered_in})
    return Plan(dataset=dataset, segment_shards=segment_shards, release_shards=release)


def _views_from(ids: list[str], rendered_in: dict[str, str]) -> dict[str, list[str]]:
    """Images of a shard whose views an earlier shard already renders (an image with QA in
    two splits has a row in each), grouped by that shard: the render job copies those rows'
    views instead of rendering them again. Views depend only on the image, its masks, the
    seed and the render settings, so the copy is the same bytes a second render would give."""
    out: dict[str, list[str]] = {}
    for i in ids:
        if i in rendered_in:
            out.setdefault(rendered_in[i], []).append(i)
    return out


def run_ingest(dataset: str, config: dict, out_dir) -> Plan:
    dataset_cfg = config["datasets"][dataset]
    root = source_root(dataset, dataset_cfg, config)
    source = dataset_source(dataset, dataset_cfg)
    result = read_source(source, root, dataset=dataset, **reader_options(dataset, dataset_cfg, config))
    rejects = list(result.rejects)
    rejects += _tag_and_select(dataset, result.images, source_spec(source).vocabulary, dataset_cfg.get("lang", "en"))
    images = [image for image in result.images if image.qa]
    limit = config.get("limit_images")
    if limit is not None and len(images) > limit:
        # Images are sorted by image_id, so "the first N" is deterministic; the QA of images
        # left out are reported, not silently dropped.
        for image in images[limit:]:
            rejects.extend(
                Reject(dataset, image.source_file, f"beyond limit_images={limit}", qid=qa.qid) for qa in image.qa
            )
        images = images[:limit]
    split_rows = assign_splits(images, config["split"], config["seed"], config["grouped_split"]["test_fraction"])
    rows = []
    for split, image, qas in sorted(split_rows, key=lambda t: (t[0], t[1].image_id)):
        info = {k: v for k, v in asdict(image).items() if k != "qa"}
        rows.append({**info, "split": split, "qa": [qa.to_row() for qa in qas]})
    plan = make_plan(dataset, rows, config["segment"]["images_per_shard"], config["release"]["rows_per_shard"])
    plan.source = source
    plan.root = str(root)
    plan.origin = read_origin(root)
    plan.input_records = result.input_records
    plan.released_qa = sum(len(r["qa"]) for r in rows)
    plan.rejected_qa = sum(1 for r in rejects if r.kind == "qa")
    plan.localization = count_tags(rows)
    plan.localization_rules = count_rules(rows)
    out = Path(out_dir)
    write_records(out / RECORDS_FILE, rows)
    write_jsonl(out / REJECTS_FILE, [r.to_dict() for r in rejects])
    write_plan(out / PLAN_FILE, plan)
    return plan


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


#: Keys of a release record (a line of records.jsonl): the image's ``ImageRecord`` fields (its
#: ``qa`` those of one split) and the split.
RECORD_KEYS = frozenset({f.name for f in fields(ImageRecord)} | {"split"})


def write_records(path, rows: list[dict]) -> None:
    """Write records.jsonl (the release rows the segment and render stages read)."""
    for row in rows:
        if set(row) != RECORD_KEYS:
            raise PlanError(
                f"{path}: a record of {row.get('image_id')!r} has keys {sorted(row)}, not {sorted(RECORD_KEYS)}"
            )
    write_jsonl(path, rows)


def read_records(path) -> list[dict]:
    """Read records.jsonl; a line that is not a record is an error naming the file and line."""
    rows = read_jsonl(path)
    for line, row in enumerate(rows, 1):
        missing = RECORD_KEYS - set(row) if isinstance(row, dict) else RECORD_KEYS
        if missing:
            raise PlanError(f"{path}:{line}: not a loclens record (missing {sorted(missing)}); re-run the ingest")
    return rows


def shard_rows(records_path, image_ids: list[str] | None = None, split: str | None = None) -> list[dict]:
    """Rows of ``records.jsonl`` restricted to a shard's images (and split)."""
    wanted = None if image_ids is None else set(image_ids)
    return [
        r
        for r in read_records(records_path)
        if (wanted is None or r["image_id"] in wanted) and (split is None or r["split"] == split)
    ]


def check_accounting(plan: Plan) -> None:
    total = plan.released_qa + plan.rejected_qa
    if total != plan.input_records:
        raise RuntimeError(
            f"{plan.dataset}: {plan.input_records} input QA records but {plan.released_qa} released "
            f"+ {plan.rejected_qa} rejected = {total}; records were lost"
        )


__all__ = [
    "run_ingest",
    "ensure_sample",
    "source_root",
    "download_origin",
    "unpack_dir",
    "make_plan",
    "shard_name",
    "shard_rows",
    "read_jsonl",
    "read_records",
    "write_records",
    "RECORD_KEYS",
    "check_accounting",
]
