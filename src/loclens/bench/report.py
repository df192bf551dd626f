"""Derived figures (ratios measured within one run), the targets of the performance issue, and
the printed tables of ``loclens bench``."""

from __future__ import annotations

import math
from typing import TypeGuard

#: Targets: (key, description, limit, direction).
PIPELINE_SHARE_LIMIT = 0.10
BATCHED_DECODE_LIMIT = 2.0
NAIVE_SPEEDUP_LIMIT = 3.0
MEMORY_GROWTH_LIMIT = 0.10
#: On a GPU: the share of the model-bound rate a segment job sustains, by family (SAM's
#: automatic mode has more post-processing per image), and the speed-up over the naive mode.
GPU_MODEL_BOUND_LIMIT = {"medsam": 0.8, "sam": 0.6}
GPU_NAIVE_SPEEDUP_LIMIT = 10.0


def ok(result: dict | None) -> TypeGuard[dict]:
    return result is not None and bool(result) and "error" not in result


def figures(stages: dict, key: str) -> dict | None:
    r = stages.get(key)
    return r["figures"] if ok(r) else None


def _target(name: str, value: float, limit: float, below: bool, variant: str | None = None) -> dict:
    met = value < limit if below else value >= limit
    return {
        "target": name,
        "variant": variant,
        "value": value,
        "limit": f"{'<' if below else '>='} {limit:g}",
        "met": bool(met),
    }


def _primary_segments(stages: dict) -> dict[str, dict]:
    """The segment figures of the variants whose masks fed the render stage."""
    render = figures(stages, "render") or {}
    out = {}
    for variant in render.get("caches", {}).values():
        for key, r in stages.items():
            if key.startswith("segment ") and ok(r) and key.split(" ", 1)[1].replace("/", "-") == variant:
                out[key.split(" ", 1)[1]] = r["figures"]
    return out


def memory_growth(scale_runs: list[dict]) -> list[dict]:
    """Peak RSS of each stage from the first build that fills the fixed buffers to the largest.

    Memory is bounded by design, not constant from the first image: the release writer holds
    one row group (``ROW_GROUP_ROWS`` rows) and the segment loader a few decoded images, so a
    build smaller than a row group uses less. Growth is therefore measured from the first
    build with at least two row groups of images (falling back to the smallest build); every
    build's peak is in the scaling table."""
    from ..release.shards import ROW_GROUP_ROWS

    if len(scale_runs) < 2:
        return []
    past_buffers = [r for r in scale_runs[:-1] if r["n_images"] >= 2 * ROW_GROUP_ROWS]
    first, last = (past_buffers or scale_runs)[0], scale_runs[-1]
    rows = []
    for key, r in first["stages"].items():
        r2 = last["stages"].get(key)
        if not (ok(r) and ok(r2)):
            continue
        a, b = r["memory"]["peak_rss_mb"], r2["memory"]["peak_rss_mb"]
        rows.append(
            {
                "stage": key,
                "n_from": first["n_images"],
                "n_to": last["n_images"],
                "peak_from_mb": a,
                "peak_to_mb": b,
                "growth": (b - a) / a,
            }
        )
    return rows


def derive(report: dict) -> dict:
    stages = report["stages"]
    targets = []
    for key, r in stages.items():
        f = r.get("figures") if ok(r) else None
        if key.startswith("boxes ") and f and "batched_8_vs_1_prompt" in f:
            v = key.split(" ", 1)[1]
            targets.append(
                _target(
                    "decoder: 8 prompts batched vs 1 prompt", f["batched_8_vs_1_prompt"], BATCHED_DECODE_LIMIT, True, v
                )
            )
            targets.append(
                _target(
                    "image: encode + 8 prompts vs encode + 1 prompt",
                    f["image_8_vs_1_prompt"],
                    BATCHED_DECODE_LIMIT,
                    True,
                    v,
                )
            )
    summary = {}
    for key, r in stages.items():
        f = r.get("figures") if ok(r) else None
        if (
            key.startswith("segment ")
            and f
            and str(f.get("device", "")).startswith("cuda")
            and "model_bound_fraction" in f
        ):
            v = key.split(" ", 1)[1]
            limit = GPU_MODEL_BOUND_LIMIT.get(v.split("/")[0], 0.8)
            targets.append(
                _target(
                    "GPU: segment rate / model-bound rate (encoder + decoder alone)",
                    f["model_bound_fraction"],
                    limit,
                    False,
                    v,
                )
            )
    primary = _primary_segments(stages)
    ingest, render, release = figures(stages, "ingest"), figures(stages, "render"), figures(stages, "release")
    if primary and ingest and render:
        model = sum(f["model_seconds"] for f in primary.values())
        own = ingest["seconds"] + sum(f["other_seconds"] for f in primary.values()) + render["seconds"]
        own += release["seconds"] if release else 0.0
        summary["model_seconds"] = model
        summary["pipeline_own_seconds"] = own
        summary["pipeline_own_share"] = own / model
        targets.append(
            _target(
                "pipeline's own work (ingest, decode, prompts, RLE, render, Parquet, card) / model time",
                own / model,
                PIPELINE_SHARE_LIMIT,
                True,
                "+".join(primary),
            )
        )
    for key, r in stages.items():
        f = r.get("figures") if ok(r) else None
        if key.startswith("naive ") and f and render:
            v = key.split(" ", 1)[1]
            ours = figures(stages, f"segment {v}")
            if ours:
                speedup = f["seconds"] / (ours["seconds"] + render["seconds"])
                summary[f"naive_speedup {v}"] = speedup
                targets.append(
                    _target("speed-up over the naive mode (segment + render)", speedup, NAIVE_SPEEDUP_LIMIT, False, v)
                )
                if str(ours.get("device", "")).startswith("cuda"):
                    targets.append(
                        _target(
                            "GPU: speed-up over the naive mode (segment + render)",
                            speedup,
                            GPU_NAIVE_SPEEDUP_LIMIT,
                            False,
                            v,
                        )
                    )
    growth = memory_growth(report.get("scaling", {}).get("images", []))
    for g in growth:
        targets.append(
            _target(
                f"peak RSS growth {g['n_from']} -> {g['n_to']} images",
                g["growth"],
                MEMORY_GROWTH_LIMIT,
                True,
                g["stage"],
            )
        )
    return {"summary": summary, "targets": targets}


# --- text ---------------------------------------------------------------------------------------


def num(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    return f"{x:.{max(0, digits - 1 - mag)}f}" if mag < digits else f"{x:.0f}"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[num(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _stage_rows(stages: dict) -> list[list]:
    rows = []
    for key, r in stages.items():
        if not ok(r):
            rows.append([key, "n/a", "n/a", f"error: {r.get('error', 'not run')}"])
            continue
        f = r["figures"]
        kind = key.split(" ", 1)[0]
        if kind == "ingest":
            rows.append([key, f["images_per_s"], f["s_per_image"], "read, sha256, full decode"])
        elif kind == "segment":
            rows.append(
                [
                    key,
                    f["images_per_s"],
                    f["s_per_image"],
                    f"encoder {num(f['encoder_s_per_image'])} + decoder {num(f['decoder_s_per_image'])} + other "
                    f"{num(f['other_s_per_image'])} s/img; load {num(f['model_load_s'])} s; {num(f['masks_per_image'])} masks/img; "
                    f"{num(f.get('model_bound_fraction'))} of the model-bound {num(f.get('model_bound_images_per_s'))} img/s",
                ]
            )
        elif kind == "naive":
            rows.append(
                [
                    key,
                    f["images_per_s"],
                    f["s_per_image"],
                    f"segment {num(f['segment_seconds'] / f['images'])} + render {num(f['render_seconds'] / f['images'])} s/img (PNG files)",
                ]
            )
        elif kind == "render":
            rows.append(
                [
                    key,
                    1 / f["render_s_per_row"],
                    f["render_s_per_row"],
                    f"render {num(f['render_mpix_per_s'])} Mpix/s; stage {num(f['s_per_row'])} s/row incl. Parquet; "
                    f"{f.get('rows_with_copied_views', 0)} of {f['rows']} rows copy views rendered for another split",
                ]
            )
            rows.append(
                ["parquet write (render stage)", "", "", f"{num(f['write_mb_per_s'])} MB/s, {num(f['release_mb'])} MB"]
            )
        elif kind == "release":
            rows.append(
                [
                    key,
                    1 / f["s_per_row"],
                    f["s_per_row"],
                    "dataset card (view counts) + manifest (sha256 of shards), per row",
                ]
            )
        elif kind == "parquet":
            rows.append(
                [
                    "parquet write / read",
                    "",
                    "",
                    f"write {num(f['write_mb_per_s'])} MB/s, read {num(f['read_mb_per_s'])} MB/s (release writer: streamed, atomic; largest shard, best of rounds)",
                ]
            )
        elif kind in ("steps", "pipeline"):
            continue  # their own tables below
        elif kind == "train":
            if f.get("available"):
                rows.append(["train reader", f.get("samples_per_s"), "", "samples/s"])
            else:
                rows.append(["train reader", "n/a", "n/a", f"n/a ({f['reason']})"])
    return rows


def _boxes_text(key: str, f: dict) -> list[str]:
    enc = "  ".join(f"batch {b}: {num(s)}" for b, s in f["encoder_s_per_image_by_batch"].items())
    lines = [
        f"{key} ({f['images']} images, {f['device']}):",
        f"  encoder s/image  {enc}  (best batch {f['best_encoder_batch']})",
    ]
    if "decode_1_prompt_s" in f:
        lines += [
            f"  decode s/image   1 prompt {num(f['decode_1_prompt_s'])}   8 batched {num(f['decode_8_batched_s'])}   "
            f"8 one at a time {num(f['decode_8_one_at_a_time_s'])}",
            f"  s per box        batched {num(f['s_per_box_batched'])}   one at a time {num(f['s_per_box_one_at_a_time'])}   "
            f"(batched is {num(f['one_at_a_time_vs_batched'])}x faster per box)",
            f"  ratios           8 batched / 1 prompt = {num(f['batched_8_vs_1_prompt'])}x (decoder; its FLOPs "
            f"{num(f['decoder_gflop_8_prompts'])} / {num(f['decoder_gflop_1_prompt'])} GFLOP = {num(f['decoder_flop_ratio_8_vs_1'])}x);   "
            f"encode + 8 / encode + 1 = {num(f['image_8_vs_1_prompt'])}x (image)",
        ]
    return lines


STEP_NAMES = {
    "read": "read file",
    "decode": "decode image (as the runner reads it)",
    "prompts": "box prompts",
    "prepare": "backend preprocessing (prepare)",
    "post_cpu_rle": "post: host masks -> pycocotools RLE -> entries",
    "post_pipeline": "post: the runner's device post-processing (RLE on this device + entries)",
    "post_entries_from_counts": "post: its host part (run lengths -> COCO RLE -> entries)",
}


def _steps_text(key: str, f: dict) -> list[str]:
    rows = [[STEP_NAMES.get(k, k), v * 1000] for k, v in f["s_per_image"].items()]
    rows.append(["loader total (read + decode + prompts + prepare)", f["loader_s_per_image"] * 1000])
    return [
        "",
        f"{key}: CPU cost per image of each step around the model ({f['images']} images, "
        f"{num(f['masks_per_image'])} masks/image, one thread, best of rounds):",
        table(["step", "ms/image"], rows),
    ]


def _pipeline_text(key: str, f: dict) -> list[str]:
    rows = [
        [
            str(r["workers"]),
            r["images_per_s"],
            r["model_images_per_s"],
            r["sustained_fraction"],
            r["main_cpu_s_per_image"] * 1000,
            r["seconds"],
        ]
        for r in f["runs"]
    ]
    return [
        "",
        f"{key}: rate with model {f['model']} (stand-in alone: {num(f['stand_in_images_per_s'])} images/s), device {f['device']}:",
        table(
            ["workers", "images/s", "model-bound images/s", "sustained", "main process CPU ms/image", "seconds"], rows
        ),
    ]


def _memory_rows(stages: dict) -> list[list]:
    rows = []
    for key, r in stages.items():
        if ok(r):
            m = r["memory"]
            rows.append([key, m["peak_rss_mb"], m["base_rss_mb"], m["arrow_peak_mb"], m.get("cuda_peak_mb", "")])
    return rows


def _detail(f: dict) -> str:
    if "render_mpix_per_s" in f:
        return f"render {num(f['render_mpix_per_s'])} Mpix/s"
    if "encoder_s_per_image" in f:
        return f"encoder {num(f['encoder_s_per_image'])} decoder {num(f['decoder_s_per_image'])} other {num(f['other_s_per_image'])}"
    return ""


def _scale_rows(runs: list[dict], by: str) -> list[list]:
    rows = []
    for run in runs:
        for key, r in run["stages"].items():
            if ok(r):
                f, m = r["figures"], r["memory"]
                n = f.get("images") or f.get("rows")
                rows.append([str(run[by]), key, f["seconds"] / n, m["peak_rss_mb"], _detail(f)])
    return rows


def _scaling_text(scaling: dict) -> list[str]:
    out = []
    headers = ["stage", "s/image (row)", "peak RSS MB", "detail"]
    if scaling.get("images"):
        out += [
            "",
            "cost vs number of images (one segment shard and one release shard per split hold them all):",
            table(["images"] + headers, _scale_rows(scaling["images"], "n_images")),
        ]
    if scaling.get("image_size"):
        out += [
            "",
            f"cost vs image size ({scaling['image_size'][0]['n_images']} images resized to the longest side):",
            table(["longest side px"] + headers, _scale_rows(scaling["image_size"], "max_side")),
        ]
    return out


def coverage_text(cov: dict | None) -> list[str]:
    """The release manifest's coverage: per body region, the images with each segmenter's views."""
    if not cov or not cov.get("segmenters"):
        return []
    segs = cov["segmenters"]
    rows = [
        [
            region,
            str(c["images"]),
            *(f"{c[s]} ({num(100 * c[s] / c['images'])}%)" if c["images"] else "n/a" for s in segs),
        ]
        for region, c in [*cov["regions"].items(), ("all", cov["all"])]
    ]
    return [
        "",
        "coverage by body region (images with the segmenter's views; from the release manifest):",
        table(["body region", "images", *(f"{s} views" for s in segs)], rows),
    ]


def format_report(report: dict) -> str:
    m = report["machine"]
    stages = report["stages"]
    lines = [
        f"loclens bench: {report['n_images']} real VQA-RAD images, device {m['device']}"
        + (f", model replaced by the stand-in {report['model']}" if report.get("model") else "")
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"machine: {m['cpu']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB; python {m['python']}, torch {m['torch']} "
        f"({m['torch_threads']} threads); load average {num(m['load_average_1m'])}",
        "",
        table(["stage", "images/s", "s/image", "detail"], _stage_rows(stages)),
    ]
    for key, r in stages.items():
        if key.startswith("boxes ") and ok(r):
            lines += [""] + _boxes_text(key, r["figures"])
        elif key.startswith("steps ") and ok(r):
            lines += _steps_text(key, r["figures"])
        elif key.startswith("pipeline ") and ok(r):
            lines += _pipeline_text(key, r["figures"])
    pq = figures(stages, "parquet")
    if pq:
        lines += [
            "",
            f"parquet settings ({pq['rows']} rows of the largest shard; best of rounds):",
            table(
                ["variant", "MB", "write MB/s", "read MB/s"],
                [[k, v["mb"], v["write_mb_per_s"], v["read_mb_per_s"]] for k, v in pq["variants"].items()],
            ),
        ]
    lines += coverage_text((figures(stages, "release") or {}).get("coverage"))
    lines += [
        "",
        "peak memory per stage (each in its own process):",
        table(["stage", "peak RSS MB", "base RSS MB", "arrow peak MB", "cuda peak MB"], _memory_rows(stages)),
    ]
    lines += _scaling_text(report.get("scaling", {}))
    if report.get("targets"):
        lines += ["", "targets:"]
        for t in report["targets"]:
            where = f" [{t['variant']}]" if t.get("variant") else ""
            lines.append(
                f"  {'MET    ' if t['met'] else 'NOT MET'} {t['target']}{where}: {num(t['value'])} (target {t['limit']})"
            )
    return "\n".join(lines) + "\n"
