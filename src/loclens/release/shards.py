"""Render one release shard: original image bytes, lens views, masks, QA and provenance per row."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import lens
from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from ..provenance import package_version
from ..schema import BLEND_KINDS, FEATURES, MASKED_VIEW, SEGMENTERS, UNCOMPRESSED_COLUMNS, VIEW_COLUMNS, arrow_schema

#: Parquet row groups hold this many rows: image rows are large, so groups stay a few MB and
#: readers can stream a shard without loading it whole.
ROW_GROUP_ROWS = 16


def read_mask_cache(paths) -> tuple[dict[str, list[dict]], dict | None]:
    """image_id -> masks and the segmenter's provenance, from a segmenter's cache files."""
    masks: dict[str, list[dict]] = {}
    info = None
    for path in paths:
        table = pq.read_table(path, columns=["image_id", "masks"])
        meta = table.schema.metadata or {}
        if b"loclens_segmenter" in meta:
            info = json.loads(meta[b"loclens_segmenter"])
        for row in table.to_pylist():
            masks[row["image_id"]] = row["masks"]
    return masks, info


def _image_cell(data: bytes | None, name: str) -> dict | None:
    return None if data is None else {"bytes": data, "path": name}


def render_row(row: dict, caches: dict[str, dict[str, list[dict]]], cfg: dict, seed: int) -> dict:
    """The release row for one (image, split): views for every segmenter with masks."""
    data = read_bytes(row["path"])
    image = load_rgb(data, row["path"])
    shape = image.shape[:2]
    level = cfg["png_compress_level"]
    views: dict[str, dict | None] = {}
    alphas: dict[str, float | None] = {}
    # Expert masks (SLAKE mask.png, made at ingest) are released and can feed the masked view.
    all_masks: list[dict] = list(row.get("expert_masks") or [])
    # One label map per mask source, reused by its blends and by the masked view.
    labels = {"expert": lens.label_map(lens.decode_masks(all_masks, shape))} if all_masks else {}
    for seg in SEGMENTERS:
        entries = caches.get(seg, {}).get(row["image_id"], [])
        all_masks.extend(entries)
        alphas[seg] = None
        for kind in BLEND_KINDS:
            views[f"{seg}_{kind}"] = None
        if not entries:
            continue
        labels[seg] = lens.label_map(lens.decode_masks(entries, shape))
        alpha = lens.draw_alpha(seed, row["image_id"], seg, cfg["alpha"])
        alphas[seg] = alpha
        for kind, arr in lens.blend_views(image, labels[seg], alpha, cfg).items():
            views[f"{seg}_{kind}"] = _image_cell(lens.png_bytes(arr, level), f"{row['image_id']}_{seg}_{kind}.png")
    masked_from = next((src for src in cfg["masked_from"] if src in labels), None)
    views[MASKED_VIEW] = None
    if masked_from is not None:
        union = labels[masked_from] > 0
        views[MASKED_VIEW] = _image_cell(
            lens.png_bytes(lens.masked(image, union), level), f"{row['image_id']}_masked.png"
        )
    return {
        "image": _image_cell(data, row["source_file"].rsplit("/", 1)[-1]),
        "views": views,
        "alpha": alphas,
        "masks": all_masks,
        "masked_from": masked_from,
    }


def build_row(row: dict, rendered: dict, config_hash: str, seed: int, seg_info: list[dict]) -> dict:
    return {
        "image_id": row["image_id"],
        "dataset": row["dataset"],
        "split": row["split"],
        "source_file": row["source_file"],
        "modality": row["modality"],
        "body_region": row["body_region"],
        "width": row["width"],
        "height": row["height"],
        "image": rendered["image"],
        **rendered["views"],
        "alpha": rendered["alpha"],
        "masks": rendered["masks"],
        "qa": row["qa"],
        "provenance": {
            "image_sha256": row["image_sha256"],
            "config_hash": config_hash,
            "seed": seed,
            "loclens_version": package_version(),
            "segmenters": seg_info,
            "masked_from": rendered["masked_from"],
        },
    }


def _leaf_paths(schema: pa.Schema, top: tuple[str, ...]) -> list[str]:
    def walk(prefix: str, typ: pa.DataType):
        if pa.types.is_struct(typ):
            for f in typ:
                yield from walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(typ):
            yield from walk(f"{prefix}.list.element", typ.value_type)
        else:
            yield prefix

    return [p for name in top for p in walk(name, schema.field(name).type)]


def parquet_options(schema: pa.Schema) -> dict:
    """Writer settings. Image bytes are already compressed (JPEG/PNG): no compression, no
    dictionary and no statistics for them (compressing them again costs write time and saves
    almost nothing: BENCHMARKS.md, Parquet settings); zstd and dictionaries for everything else."""
    image_leaves = set(_leaf_paths(schema, UNCOMPRESSED_COLUMNS))
    other = [p for p in _leaf_paths(schema, tuple(schema.names)) if p not in image_leaves]
    return {
        "compression": {p: ("none" if p in image_leaves else "zstd") for p in image_leaves | set(other)},
        "use_dictionary": [p for p in other if not p.endswith("counts")],
        "write_statistics": other,
    }


def _groups(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    group = []
    for row in rows:
        group.append(row)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def write_shard(path, rows: Iterable[dict]) -> int:
    """Write rows atomically, one row group at a time, so memory holds one row group of image
    bytes, never the whole shard. The bytes equal a single ``pq.write_table`` of all rows with
    the same row group size (tests check it): streaming saves memory without changing a byte."""
    schema = arrow_schema()
    n = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
        for group in _groups(rows, ROW_GROUP_ROWS):
            writer.write_table(pa.Table.from_pylist(group, schema=schema), row_group_size=ROW_GROUP_ROWS)
            n += len(group)
        if n == 0:
            writer.write_table(schema.empty_table())  # as pq.write_table writes an empty table
    return n


class RenderedViews:
    """The rendered part of rows already written to other release shards of the build (the
    plan's ``views_from``), read back instead of rendered twice. Rows are looked up by
    image_id; the row group last read is kept per shard, and since shards are written and
    read in image_id order each row group is read once. Memory: one row group per source."""

    COLUMNS = ("image_id", "image", *VIEW_COLUMNS, "alpha", "masks", "provenance")

    def __init__(self, sources: dict[Path, list[str]]):
        self._where: dict[str, tuple[Path, int]] = {}
        self._files = {path: pq.ParquetFile(path) for path in sources}
        self._cached: dict[Path, tuple[int, dict[str, dict]]] = {}
        for path, ids in sources.items():
            found = self._index(path)
            missing = [i for i in ids if i not in found]
            if missing:
                raise ValueError(
                    f"{path}: the plan says this shard renders the views of {missing[:3]} "
                    f"({len(missing)} images) but it has no row for them; re-render it"
                )
            self._where.update({i: (path, found[i]) for i in ids})

    def _index(self, path: Path) -> dict[str, int]:
        f = self._files[path]
        return {
            image_id: g
            for g in range(f.num_row_groups)
            for image_id in f.read_row_group(g, columns=["image_id"]).column("image_id").to_pylist()
        }

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._where

    def get(self, image_id: str) -> dict:
        """The row's rendered fields, in ``render_row``'s shape."""
        path, group = self._where[image_id]
        cached_group, rows = self._cached.get(path, (None, {}))
        if cached_group != group:
            table = self._files[path].read_row_group(group, columns=list(self.COLUMNS))
            rows = {r["image_id"]: r for r in table.to_pylist()}
            self._cached[path] = (group, rows)
        row = rows[image_id]
        return {
            "image": row["image"],
            "views": {c: row[c] for c in VIEW_COLUMNS},
            "alpha": row["alpha"],
            "masks": row["masks"],
            "masked_from": row["provenance"]["masked_from"],
        }


NO_RENDERED_VIEWS = RenderedViews({})


def release_rows(
    rows: list[dict],
    caches: dict,
    infos: list[dict],
    render_cfg: dict,
    seed: int,
    config_hash: str,
    rendered: RenderedViews = NO_RENDERED_VIEWS,
) -> Iterator[dict]:
    """The shard's release rows in image_id order, rendered one at a time as they are consumed
    (or copied from ``rendered`` where an earlier shard rendered the image)."""
    for r in sorted(rows, key=lambda r: r["image_id"]):
        views = rendered.get(r["image_id"]) if r["image_id"] in rendered else render_row(r, caches, render_cfg, seed)
        yield build_row(r, views, config_hash, seed, infos)


def render_shard(
    rows: list[dict],
    caches: dict,
    infos: list[dict],
    render_cfg: dict,
    seed: int,
    config_hash: str,
    out_path,
    rendered: RenderedViews = NO_RENDERED_VIEWS,
) -> int:
    return write_shard(out_path, release_rows(rows, caches, infos, render_cfg, seed, config_hash, rendered))


def rendered_views(views_from: dict[str, list[str]], release_dir: Path) -> RenderedViews:
    """A plan shard's ``views_from`` (shard files relative to the release folder) opened."""
    return RenderedViews({Path(release_dir) / f: ids for f, ids in views_from.items()})


__all__ = [
    "render_shard",
    "release_rows",
    "rendered_views",
    "RenderedViews",
    "write_shard",
    "parquet_options",
    "read_mask_cache",
    "FEATURES",
]
