"""Render one release shard: original image bytes, lens views, masks, QA and provenance per row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from .. import lens
from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from ..provenance import package_version
from ..schema import BLEND_KINDS, FEATURES, MASKED_VIEW, SEGMENTERS, UNCOMPRESSED_COLUMNS, arrow_schema

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
    unions = {"expert": lens.decode_masks(all_masks, shape)} if all_masks else {}
    for seg in SEGMENTERS:
        entries = caches.get(seg, {}).get(row["image_id"], [])
        all_masks.extend(entries)
        alphas[seg] = None
        for kind in BLEND_KINDS:
            views[f"{seg}_{kind}"] = None
        if not entries:
            continue
        masks = lens.decode_masks(entries, shape)
        alpha = lens.draw_alpha(seed, row["image_id"], seg, cfg["alpha"])
        alphas[seg] = alpha
        for kind, arr in lens.render_blends(image, masks, alpha, cfg).items():
            views[f"{seg}_{kind}"] = _image_cell(lens.png_bytes(arr, level), f"{row['image_id']}_{seg}_{kind}.png")
        unions[seg] = masks
    masked_from = next((src for src in cfg["masked_from"] if src in unions), None)
    views[MASKED_VIEW] = None
    if masked_from is not None:
        union = lens.label_map(unions[masked_from]) > 0
        views[MASKED_VIEW] = _image_cell(lens.png_bytes(lens.masked(image, union), level), f"{row['image_id']}_masked.png")
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


def write_shard(path, rows: list[dict]) -> None:
    """Write rows atomically. Image bytes are already compressed (JPEG/PNG): no compression,
    no dictionary and no statistics for them; zstd for everything else."""
    schema = arrow_schema()
    table = pa.Table.from_pylist(rows, schema=schema)
    image_leaves = set(_leaf_paths(schema, UNCOMPRESSED_COLUMNS))
    other = [p for p in _leaf_paths(schema, tuple(schema.names)) if p not in image_leaves]
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=ROW_GROUP_ROWS,
            compression={p: ("none" if p in image_leaves else "zstd") for p in image_leaves | set(other)},
            use_dictionary=[p for p in other if not p.endswith("counts")],
            write_statistics=other,
        )


def render_shard(rows: list[dict], caches: dict, infos: list[dict], render_cfg: dict, seed: int, config_hash: str, out_path) -> int:
    rows = sorted(rows, key=lambda r: r["image_id"])
    out = [build_row(r, render_row(r, caches, render_cfg, seed), config_hash, seed, infos) for r in rows]
    write_shard(out_path, out)
    return len(out)


__all__ = ["render_shard", "write_shard", "read_mask_cache", "FEATURES"]
