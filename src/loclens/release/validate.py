"""Validate a release folder: is it what its manifest and card say, and is every row usable?

Checks, each reported with the file, the row (where there is one) and the problem:
- manifest: present and readable; no Parquet file in the folder that it does not list;
- shards: size and sha256 as in the manifest; readable Parquet; Arrow schema and the
  ``datasets.Features`` metadata equal to :mod:`loclens.schema`; row count as in the manifest;
- rows (streamed one row group at a time): dataset and split as the file says; one row per
  image per split; the image and every view decode, at the image's size; every mask's RLE
  decodes to the image's size with the recorded area; alpha finite, within the build's range,
  and present exactly when the segmenter's views are;
- accounting: each shard holds exactly the QA the ingest put there (count and qid digest from
  the manifest; with the ingest folder, the missing or extra qids by name); per dataset, input
  records = released + rejected, with the rejects report intact;
- splits: under the ``grouped`` protocol no image and no linked question is in two splits;
- coverage: the manifest's images with each segmenter's views, by body region, recounted;
- card: loads with ``huggingface_hub.DatasetCard``; its ``configs`` match the shards and its
  ``dataset_info`` the features and row counts.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..imageio import ImageError, probe
from ..ingest import read_jsonl, read_records
from ..plan import RECORDS_FILE
from ..provenance import sha256_file
from ..schema import FEATURES, IMAGE_COLUMNS, MASK_SOURCES, SEGMENTERS, arrow_schema
from ..segment import rle
from .card import configs_metadata
from .manifest import CARD, MANIFEST, qids_digest
from .stats import coverage_of, image_coverage

#: Problems listed per (file, check); further ones are only counted, so a broken shard does
#: not bury the rest of the report.
MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    file: str
    check: str
    message: str
    row: int | None = None

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        return f"{where}: [{self.check}] {self.message}"


@dataclass
class Report:
    release: str
    problems: list[Problem] = field(default_factory=list)
    unlisted: Counter = field(default_factory=Counter)  # (file, check) -> problems not listed
    checked: Counter = field(default_factory=Counter)
    manifest_sha256: str | None = None

    def add(self, file: str, check: str, message: str, row: int | None = None) -> None:
        key = (file, check)
        if sum(1 for p in self.problems if (p.file, p.check) == key) >= MAX_LISTED:
            self.unlisted[key] += 1
        else:
            self.problems.append(Problem(file, check, message, row))

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "release": self.release,
            "ok": self.ok,
            "manifest_sha256": self.manifest_sha256,
            "checked": dict(sorted(self.checked.items())),
            "problems": [asdict(p) for p in self.problems],
            "unlisted_problems": [{"file": f, "check": c, "count": n} for (f, c), n in sorted(self.unlisted.items())],
        }

    def text(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.checked.items()))
        if self.ok:
            return f"{self.release}: valid ({counts})"
        lines = [f"{self.release}: INVALID, {len(self.problems) + sum(self.unlisted.values())} problem(s) ({counts})"]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  {f}: [{c}] ... and {n} more" for (f, c), n in sorted(self.unlisted.items())]
        return "\n".join(lines)


@dataclass
class _DatasetSeen:
    """What the row scan of one dataset saw, for the cross-row checks."""

    image_rows: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # image -> split -> where
    linked_splits: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    qids: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (split, image_id) -> qids
    released_qa: int = 0
    unreadable_splits: set[str] = field(default_factory=set)  # their QA cannot be accounted for
    images: dict[str, tuple] = field(default_factory=dict)  # image_id -> stats.image_coverage


def load_manifest(release_dir: Path, report: Report) -> dict | None:
    path = release_dir / MANIFEST
    if not path.exists():
        report.add(MANIFEST, "manifest", "missing: the release is incomplete (the manifest is written last)")
        return None
    try:
        manifest = json.loads(path.read_text())
        manifest["datasets"].items()
        manifest["build"]["render"]["alpha"]["min"]
    except json.JSONDecodeError as exc:
        report.add(MANIFEST, "manifest", f"not JSON: {exc}")
        return None
    except (KeyError, TypeError, AttributeError) as exc:
        report.add(MANIFEST, "manifest", f"not a loclens manifest (made by an older loclens?): no {exc}")
        return None
    report.manifest_sha256 = sha256_file(path)
    return manifest


def _check_file(release_dir: Path, entry: dict, report: Report) -> bool:
    """Size and sha256 against the manifest; False when the file is missing."""
    name = entry["file"]
    path = release_dir / name
    if not path.is_file():
        report.add(name, "missing", "listed in the manifest but not in the release")
        return False
    size = path.stat().st_size
    if size != entry["bytes"]:
        report.add(name, "size", f"{size} bytes, manifest says {entry['bytes']} (truncated or rewritten?)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        report.add(name, "sha256", f"sha256 {digest} differs from the manifest's {entry['sha256']}")
    report.checked["files"] += 1
    return True


def _check_schema(name: str, pf: pq.ParquetFile, report: Report) -> None:
    expected = arrow_schema()
    actual = pf.schema_arrow
    if not actual.remove_metadata().equals(expected.remove_metadata()):
        extra = sorted(set(actual.names) - set(expected.names))
        absent = sorted(set(expected.names) - set(actual.names))
        differing = [n for n in expected.names if n in actual.names and actual.field(n).type != expected.field(n).type]
        report.add(
            name,
            "schema",
            f"Arrow schema differs from loclens.schema: extra columns {extra}, missing "
            f"{absent}, other types for {differing}",
        )
    meta = (actual.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(meta)["info"]["features"] if meta else None
    except (json.JSONDecodeError, KeyError, TypeError):
        features = None
    if features != FEATURES.to_dict():
        report.add(
            name,
            "features",
            "the 'huggingface' schema metadata does not hold loclens.schema.FEATURES "
            "(images would not decode as images)",
        )


def _check_images(name: str, index: int, row: dict, report: Report) -> None:
    size = (row["width"], row["height"])
    for col in IMAGE_COLUMNS:
        cell = row[col]
        if cell is None:
            if col == "image":
                report.add(name, "image", "the original image is null", index)
            continue
        try:
            got = probe(cell["bytes"] or b"", f"column {col}")
        except ImageError as exc:
            report.add(name, "image", f"does not decode: {exc}", index)
            continue
        report.checked["images decoded"] += 1
        if got != size:
            report.add(name, "image", f"column {col} is {got[0]}x{got[1]}, the row says {size[0]}x{size[1]}", index)


def _check_masks(name: str, index: int, row: dict, report: Report) -> None:
    shape = [row["height"], row["width"]]
    for k, mask in enumerate(row["masks"] or []):
        what = f"masks[{k}] ({mask['segmenter']}, {mask['label']})"
        if mask["segmenter"] not in MASK_SOURCES:
            report.add(name, "rle", f"{what}: unknown segmenter {mask['segmenter']!r}", index)
        if list(mask["rle"]["size"]) != shape:
            report.add(name, "rle", f"{what}: RLE size {mask['rle']['size']} is not the image's [h, w] {shape}", index)
            continue
        try:
            decoded = rle.decode(mask["rle"])
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            report.add(name, "rle", f"{what}: RLE does not decode: {exc}", index)
            continue
        report.checked["masks decoded"] += 1
        if int(decoded.sum()) != mask["area"]:
            report.add(name, "rle", f"{what}: RLE covers {int(decoded.sum())} pixels, area says {mask['area']}", index)


def _check_alpha(name: str, index: int, row: dict, bounds: dict, report: Report) -> None:
    for seg in SEGMENTERS:
        value = (row["alpha"] or {}).get(seg)
        views = [row[f"{seg}_{kind}"] is not None for kind in ("unicolor", "multicolor")]
        if value is None:
            if any(views):
                report.add(name, "alpha", f"alpha.{seg} is null but {seg} views exist", index)
            continue
        if not math.isfinite(value) or not bounds["min"] - 1e-6 <= value <= bounds["max"] + 1e-6:
            report.add(
                name,
                "alpha",
                f"alpha.{seg} = {value} outside the build's range [{bounds['min']}, {bounds['max']}]",
                index,
            )
        if not all(views):
            report.add(name, "alpha", f"alpha.{seg} = {value} but a {seg} view is null", index)


def _check_rows(
    name: str, pf: pq.ParquetFile, dataset: str, split: str, manifest: dict, seen: _DatasetSeen, report: Report
) -> list[str] | None:
    """Row checks, one row group in memory at a time; returns the shard's qids (None when a
    row group cannot be read)."""
    bounds = manifest["build"]["render"]["alpha"]
    qids: list[str] = []
    index = 0
    for rg in range(pf.num_row_groups):
        try:
            rows = pf.read_row_group(rg).to_pylist()
        except (pa.ArrowException, OSError) as exc:  # a damaged page surfaces only when read
            report.add(name, "parquet", f"row group {rg} not readable: {exc}", index)
            return None
        for row in rows:
            if row["dataset"] != dataset or row["split"] != split:
                report.add(
                    name,
                    "row",
                    f"row says dataset {row['dataset']!r} split {row['split']!r}, the file is {dataset!r}/{split!r}",
                    index,
                )
            image_id = row["image_id"]
            if split in seen.image_rows[image_id]:
                report.add(
                    name,
                    "row",
                    f"image {image_id} already has a row in split {split!r} ({seen.image_rows[image_id][split]})",
                    index,
                )
            seen.image_rows[image_id][split] = f"{name} row {index}"
            seen.images[image_id] = image_coverage(row)
            _check_images(name, index, row, report)
            _check_masks(name, index, row, report)
            _check_alpha(name, index, row, bounds, report)
            row_qids = [q["qid"] for q in row["qa"] or []]
            if not row_qids:
                report.add(name, "accounting", f"image {image_id} has no QA in this split", index)
            qids.extend(row_qids)
            seen.qids[(split, image_id)] = row_qids
            for q in row["qa"] or []:
                if q["linked_id"]:
                    seen.linked_splits[q["linked_id"]].add(split)
            report.checked["rows"] += 1
            index += 1
    return qids


def _check_shard(
    release_dir: Path,
    name: str,
    split: str,
    entry: dict,
    manifest: dict,
    seen: _DatasetSeen,
    report: Report,
    deep: bool,
) -> None:
    if not _check_file(release_dir, entry, report):
        return
    try:
        pf = pq.ParquetFile(release_dir / entry["file"])
    except (pa.ArrowException, OSError) as exc:
        report.add(entry["file"], "parquet", f"not readable as Parquet: {exc}")
        seen.unreadable_splits.add(split)
        return
    _check_schema(entry["file"], pf, report)
    if pf.metadata.num_rows != entry["rows"]:
        report.add(entry["file"], "rows", f"{pf.metadata.num_rows} rows, manifest says {entry['rows']}")
    if not deep:
        return
    qids = _check_rows(entry["file"], pf, name, split, manifest, seen, report)
    if qids is None:
        seen.unreadable_splits.add(split)
        return
    seen.released_qa += len(qids)
    if len(qids) != entry.get("qa") or qids_digest(qids) != entry.get("qids_sha256"):
        report.add(
            entry["file"],
            "accounting",
            f"holds {len(qids)} QA; the ingest put {entry.get('qa')} here "
            "(or other qids: digest differs from the manifest)",
        )


def _check_rejects(release_dir: Path, name: str, d: dict, seen: _DatasetSeen, report: Report, deep: bool) -> None:
    rejects_file = d["rejects_file"]
    path = release_dir / rejects_file
    if not path.is_file():
        report.add(rejects_file, "missing", "the rejects report is missing")
        return
    if sha256_file(path) != d.get("rejects_sha256"):
        report.add(rejects_file, "sha256", "differs from the manifest's rejects_sha256")
    try:
        rejected = sum(1 for r in read_jsonl(path) if r.get("kind", "qa") == "qa")
    except json.JSONDecodeError as exc:
        report.add(rejects_file, "rejects", f"not JSON lines: {exc}")
        return
    acc = d["accounting"]
    if rejected != acc["rejected_qa"]:
        report.add(rejects_file, "accounting", f"lists {rejected} rejected QA, the manifest says {acc['rejected_qa']}")
    released = seen.released_qa if deep else acc["released_qa"]
    if seen.unreadable_splits:
        return  # the unreadable shards are reported; counting their QA as lost would repeat it
    if released + rejected != acc["input_records"]:
        missing = acc["input_records"] - released - rejected
        report.add(
            MANIFEST,
            "accounting",
            f"{name}: {acc['input_records']} input QA records but {released} are in the "
            f"shards and {rejected} in {rejects_file}: {missing} unaccounted for",
        )


def _check_coverage(name: str, d: dict, seen: _DatasetSeen, report: Report) -> None:
    recorded = d.get("coverage")
    if recorded is None or seen.unreadable_splits:
        return  # a manifest of an older loclens; unreadable shards are reported already
    counted = coverage_of(seen.images, recorded["segmenters"])
    if counted != recorded:
        report.add(
            MANIFEST,
            "coverage",
            f"{name}: the manifest's coverage {recorded['all']} differs from the "
            f"shards' {counted['all']} (by region: {counted['regions']})",
        )


def _check_against_ingest(name: str, ingest_dir: Path, seen: _DatasetSeen, report: Report) -> None:
    """Name every QA the ingest planned that no release row holds, and every one it did not plan."""
    records = ingest_dir / RECORDS_FILE
    if not records.is_file():
        report.add(str(records), "accounting", "ingest records not found")
        return
    for r in read_records(records):
        if r["split"] in seen.unreadable_splits:
            continue  # its shard is already reported unreadable; its QA would only repeat that
        key = (r["split"], r["image_id"])
        planned = Counter(q["qid"] for q in r["qa"])
        held = Counter(seen.qids.get(key, []))
        for qid in sorted((planned - held).elements()):
            report.add(
                str(records),
                "accounting",
                f"qid {qid} (image {r['image_id']}, split {r['split']}) is in no release row",
            )
        for qid in sorted((held - planned).elements()):
            report.add(
                str(records),
                "accounting",
                f"qid {qid} (image {r['image_id']}, split {r['split']}) is in a release row but not here",
            )


def _check_grouped(name: str, d: dict, seen: _DatasetSeen, report: Report) -> None:
    protocol = d.get("split_protocol", {}).get("protocol")
    if protocol is None:
        report.add(MANIFEST, "split", f"{name}: the manifest does not record the split protocol")
    if protocol != "grouped":
        return
    for image_id, where in sorted(seen.image_rows.items()):
        if len(where) > 1:
            report.add(
                name,
                "split",
                f"image {image_id} is in {len(where)} splits of a grouped split: "
                + "; ".join(f"{s}: {w}" for s, w in sorted(where.items())),
            )
    for linked, splits in sorted(seen.linked_splits.items()):
        if len(splits) > 1:
            report.add(name, "split", f"linked question {linked} is in splits {sorted(splits)} of a grouped split")


def _check_card(release_dir: Path, manifest: dict, report: Report) -> None:
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    path = release_dir / CARD
    if not path.is_file():
        report.add(CARD, "card", "the dataset card is missing")
        return
    try:
        card = DatasetCard.load(path)
        infos = DatasetInfosDict.from_dataset_card_data(card.data)
    except Exception as exc:
        report.add(CARD, "card", f"does not load with huggingface_hub.DatasetCard: {exc}")
        return
    expected = configs_metadata(manifest["datasets"])
    if card.data.to_dict().get("configs") != expected:
        report.add(
            CARD, "card", f"YAML configs {card.data.to_dict().get('configs')} do not match the manifest's {expected}"
        )
    for config in expected:
        name = config["config_name"]
        for data_files in config["data_files"]:
            matched = sorted(str(p.relative_to(release_dir)) for p in release_dir.glob(data_files["path"]))
            listed = sorted(s["file"] for s in manifest["datasets"][name]["splits"][data_files["split"]]["shards"])
            if matched != listed:
                report.add(CARD, "card", f"pattern {data_files['path']} matches {matched}, the manifest lists {listed}")
        info = infos.get(name)
        if info is None or info.features != FEATURES:
            report.add(CARD, "card", f"dataset_info of config {name} does not hold loclens.schema.FEATURES")
            continue
        rows = {s: v["rows"] for s, v in manifest["datasets"][name]["splits"].items()}
        card_rows = {s: v.num_examples for s, v in (info.splits or {}).items()}
        if card_rows != rows:
            report.add(
                CARD, "card", f"dataset_info of config {name} gives {card_rows} examples, the shards hold {rows}"
            )


def _check_stray(release_dir: Path, manifest: dict, report: Report) -> None:
    listed = {s["file"] for d in manifest["datasets"].values() for sp in d["splits"].values() for s in sp["shards"]}
    for path in sorted(release_dir.rglob("*.parquet")):
        rel = str(path.relative_to(release_dir))
        if rel not in listed:
            report.add(rel, "stray", "Parquet file not in the manifest (a split pattern would load it)")


def validate_release(release_dir, ingest_root=None, deep: bool = True) -> Report:
    """Check a release; ``ingest_root`` (the folder with ``<dataset>/records.jsonl``) lets the
    accounting name missing qids; ``deep=False`` skips the row scan (files, schema, card only)."""
    release_dir = Path(release_dir)
    report = Report(str(release_dir))
    manifest = load_manifest(release_dir, report)
    if manifest is None:
        return report
    _check_stray(release_dir, manifest, report)
    for name, d in sorted(manifest["datasets"].items()):
        seen = _DatasetSeen()
        for split, s in sorted(d["splits"].items()):
            for entry in s["shards"]:
                _check_shard(release_dir, name, split, entry, manifest, seen, report, deep)
        _check_rejects(release_dir, name, d, seen, report, deep)
        if deep:
            if ingest_root is not None:
                _check_against_ingest(name, Path(ingest_root) / name, seen, report)
            _check_grouped(name, d, seen, report)
            _check_coverage(name, d, seen, report)
    _check_card(release_dir, manifest, report)
    return report


__all__ = ["Problem", "Report", "validate_release"]
