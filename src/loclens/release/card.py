"""The dataset card (release README.md) in Hugging Face conventions.

YAML front matter: ``configs`` (one per dataset, its splits and file patterns), ``dataset_info``
(features from :data:`loclens.schema.FEATURES`, the single source, plus split sizes), license
(per source; ``other`` with a name and details when sources differ), task categories, tags,
size category, source datasets, pretty name and optional Hub gating. Prose: how every view was
made, counts per dataset/split/view, missing views and why, coverage by body region (from the
manifest), the rejects summary, intended use and citations. Everything is derived from the manifest, the shards and the rejects reports, so
the card always matches what it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import write_text
from ..schema import FEATURES, SEGMENTERS, VIEW_COLUMNS
from .manifest import CARD
from .stats import SplitStats, release_stats


@dataclass(frozen=True)
class SourceInfo:
    """What the card says about a source dataset."""

    title: str
    license: str  # Hub license id
    license_name: str
    homepage: str
    hub_id: str | None  # the usual Hub copy, for ``source_datasets: extended|<id>``
    languages: tuple[str, ...]


SOURCES = {
    "vqa_rad": SourceInfo(
        "VQA-RAD (Lau et al., 2018)",
        "cc0-1.0",
        "CC0 1.0",
        "https://osf.io/89kps/",
        "flaviagiammarino/vqa-rad",
        ("en",),
    ),
    "slake": SourceInfo(
        "SLAKE (Liu et al., 2021)",
        "cc-by-4.0",
        "CC BY 4.0",
        "https://www.med-vqa.com/slake/",
        "BoKelvin/SLAKE",
        ("en", "zh"),
    ),
    "sample": SourceInfo(
        "loclens synthetic phantoms (made by `loclens sample` at build time)",
        "cc0-1.0",
        "CC0 1.0",
        "",
        None,
        ("en",),
    ),
}
UNKNOWN_SOURCE = SourceInfo("unknown source", "other", "see the source", "", None, ("en",))

LICENSE_URLS = {
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
}

CITATIONS = """\
```bibtex
@inproceedings{farooq2025loclens,
  title     = {Localization Lens for Improving Medical Vision-Language Models},
  author    = {Farooq, Anees Ur Rehman Hashmi and others},
  booktitle = {Medical Image Computing and Computer Assisted Intervention (MICCAI)},
  year      = {2025}
}
@article{lau2018vqarad,
  title   = {A dataset of clinically generated visual questions and answers about radiology images},
  author  = {Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina},
  journal = {Scientific Data}, volume = {5}, pages = {180251}, year = {2018}
}
@inproceedings{liu2021slake,
  title     = {SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical Visual Question Answering},
  author    = {Liu, Bo and Zhan, Li-Ming and Xu, Li and Ma, Lin and Yang, Yan and Wu, Xiao-Ming},
  booktitle = {IEEE International Symposium on Biomedical Imaging (ISBI)}, year = {2021}
}
@inproceedings{kirillov2023sam,
  title     = {Segment Anything},
  author    = {Kirillov, Alexander and Mintun, Eric and Ravi, Nikhila and others},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)}, year = {2023}
}
@article{ma2024medsam,
  title   = {Segment anything in medical images},
  author  = {Ma, Jun and He, Yuting and Li, Feifei and Han, Lin and You, Chenyu and Wang, Bo},
  journal = {Nature Communications}, volume = {15}, pages = {654}, year = {2024}
}
```
"""

VIEW_DESCRIPTIONS = {
    "unicolor": "`a*I + (1-a)*C` with `C = c * union(M_i)`, one colour",
    "multicolor": "`a*I + (1-a)*C` with `C = sum(M_i * c_i)`, one colour per mask (overlaps: each pixel one colour, larger masks painted first)",
}


def source_info(source: str) -> SourceInfo:
    return SOURCES.get(source, UNKNOWN_SOURCE)


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def license_metadata(datasets: dict) -> dict:
    """One Hub license id when every source shares it; otherwise ``other`` with a name and
    the per-config details (the prose says which applies to what)."""
    per_config = {name: source_info(d["source"]) for name, d in sorted(datasets.items())}
    ids = sorted({info.license for info in per_config.values()})
    if len(ids) == 1 and ids[0] != "other":
        return {"license": ids[0]}
    details = "; ".join(f"config {name}: {info.license_name}" for name, info in per_config.items())
    return {"license": "other", "license_name": "-and-".join(ids), "license_details": details}


def configs_metadata(datasets: dict) -> list[dict]:
    return [
        {
            "config_name": name,
            "data_files": [{"split": split, "path": f"{name}/{split}-*.parquet"} for split in sorted(d["splits"])],
        }
        for name, d in sorted(datasets.items())
    ]


def dataset_info_metadata(datasets: dict) -> list[dict]:
    infos = []
    for name, d in sorted(datasets.items()):
        splits = [
            {"name": s, "num_bytes": sum(x["bytes"] for x in v["shards"]), "num_examples": v["rows"]}
            for s, v in sorted(d["splits"].items())
        ]
        size = sum(s["num_bytes"] for s in splits)
        infos.append(
            {
                "config_name": name,
                "features": FEATURES._to_yaml_list(),
                "splits": splits,
                "download_size": size,
                "dataset_size": size,
            }
        )
    return infos


def front_matter(manifest: dict, release_cfg: dict) -> dict:
    datasets = manifest["datasets"]
    infos = [source_info(d["source"]) for d in datasets.values()]
    total = sum(s["rows"] for d in datasets.values() for s in d["splits"].values())
    meta = {
        "pretty_name": release_cfg["pretty_name"],
        **license_metadata(datasets),
        "language": sorted({lang for info in infos for lang in info.languages}),
        "annotations_creators": ["expert-generated", "machine-generated"],
        "task_categories": ["visual-question-answering", "image-segmentation"],
        "tags": ["medical", "radiology", "localization-lens", "segmentation-masks", *SEGMENTERS, "loclens"],
        "size_categories": [size_category(total)],
        "source_datasets": sorted({f"extended|{i.hub_id}" if i.hub_id else "original" for i in infos}),
        "configs": configs_metadata(datasets),
        "dataset_info": dataset_info_metadata(datasets),
    }
    gating = release_cfg.get("gating") or {}
    if gating.get("prompt"):
        meta["extra_gated_prompt"] = gating["prompt"]
        if gating.get("fields"):
            meta["extra_gated_fields"] = dict(gating["fields"])
    return meta


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _key_values(d: dict, prefix: str = "") -> str:
    """`a=1, b.c=2` for a nested config dict, keys sorted (stable across builds)."""
    parts = []
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict):
            if v:
                parts.append(_key_values(v, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k}={v}")
    return ", ".join(parts)


# Keys already stated elsewhere in the card (model, backend, checkpoint, prompt order).
_STATED_KEYS = ("enabled", "backend", "checkpoint", "prompts", "model_type", "download")


def _settings_text(segmenter: str, cfg: dict) -> str:
    """A segmenter's config in prose, one clause per config group, so a reader can rebuild it."""
    clauses = []
    if segmenter == "sam":
        clauses.append(
            f"automatic mask generation ({_key_values(cfg.get('generator') or {}) or 'segment-anything defaults'})"
        )
    groups = {k: v for k, v in cfg.items() if isinstance(v, dict) and k not in _STATED_KEYS and k != "generator"}
    scalars = {k: v for k, v in cfg.items() if not isinstance(v, dict) and k not in _STATED_KEYS}
    if scalars:
        clauses.append(_key_values(scalars))
    for name, group in sorted(groups.items()):
        if group:
            label = (
                "architecture override"
                if name == "arch"
                else f"prompt source `{name}`"
                if name in (cfg.get("prompts") or [])
                else name
            )
            clauses.append(f"{label} ({_key_values(group)})")
    url = (cfg.get("download") or {}).get("url")
    if url:
        clauses.append(f"checkpoint fetched from {url}")
    return "; ".join(clauses)


def _segmenter_lines(build: dict) -> list[str]:
    lines = []
    for info in build["segmenters"]:
        cfg = build["segment"].get(info["segmenter"], {})
        lines.append(
            f"- `{info['segmenter']}_*` views: **{info['model']}** (backend `{info['backend']}`), checkpoint "
            f"`{info['checkpoint']}`, sha256 `{info['checkpoint_sha256']}`."
        )
        if info["prompt_sources"]:
            lines.append(
                f"  Box prompts from the prompt sources {', '.join(f'`{p}`' for p in info['prompt_sources'])} "
                "(in order of preference; the first that yields boxes is used)."
            )
        settings = _settings_text(info["segmenter"], cfg)
        if settings:
            lines.append(f"  Settings: {settings}.")
    ran = {i["segmenter"] for i in build["segmenters"]}
    for seg in SEGMENTERS:
        if seg not in ran:
            lines.append(
                f"- `{seg}_*` views: not made in this build (the `{seg}` segmenter was not run); those columns are null."
            )
    if ran:
        lines.append(_resolution_line(build.get("read_max_side")))
    return lines


def _resolution_line(read_max_side: int | None) -> str:
    """Which resolution the segmenters saw (``segment.read_max_side``)."""
    if read_max_side is None:
        return (
            "- Every image was segmented at its full resolution, as the models' reference inference does: "
            "each segmenter resizes the image to its input size itself and its mask logits are upsampled "
            "bilinearly to the image's size (`segment.read_max_side: null`)."
        )
    return (
        f"- Images larger than {read_max_side} pixels per side were read reduced to {read_max_side} "
        f"(`segment.read_max_side: {read_max_side}`, a memory setting): their prompts and masks were made at "
        "that size and the masks scaled back to the image's size nearest-neighbour, so they differ slightly "
        "from the models' reference inference at full resolution. Smaller images were segmented at full resolution."
    )


def _method_section(manifest: dict) -> list[str]:
    build = manifest["build"]
    render = build["render"]
    alpha = render["alpha"]
    protocols = sorted(
        {
            (d["split_protocol"]["protocol"], d["split_protocol"].get("test_fraction"))
            for d in manifest["datasets"].values()
        }
    )
    outside = (
        "applied to the whole image as in the paper (pixels outside every mask become `a*I`)"
        if render["outside"] == "paper"
        else "applied inside the masks only (pixels outside keep their original value)"
    )
    lines = [
        "## How the views were made",
        "",
        "Masks:",
        "",
        *_segmenter_lines(build),
        "- Masks are stored in the `masks` column as COCO RLE (pycocotools) with box, score, label, prompt "
        "source, model and checkpoint sha256; empty masks are dropped.",
        "",
        "Views:",
        "",
        *[f"- `*_{kind}`: {text}." for kind, text in VIEW_DESCRIPTIONS.items()],
        f"- The blend is {outside}. Unicolor colour `c` = {render['unicolor']}; multicolor palette cycles over "
        f"{len(render['palette'])} colours.",
        f'- Views are PNG ("Up" row filter, deflate level {render["png_compress_level"]} by '
        f"{render.get('png_deflate', 'zlib')}); byte-identical for the same config, seed and deflate library.",
        f"- Blend weight `a ~ N({alpha['mean']}, {alpha['std']})`, clipped to [{alpha['min']}, {alpha['max']}], drawn "
        f"once per image and segmenter from `(seed, image_id, segmenter)` with seed **{manifest['seed']}**, so views do "
        "not depend on sharding or order; the value is in the `alpha` column.",
        f"- `masked`: the image with everything outside the union of masks set to 0, from the first of "
        f"{', '.join(f'`{s}`' for s in render['masked_from'])} that has masks for the image (recorded in "
        "`provenance.masked_from`).",
        "",
        "Rows and splits:",
        "",
        "- One row per image and split; the image's QA pairs of that split are in the `qa` list column.",
        *[
            f"- Split protocol `{p}`"
            + (
                f" (seeded {1 - tf:.0%}:{tf:.0%} split by image, linked paraphrases kept together, seed {manifest['seed']})"
                if p == "grouped"
                else " (each source's own split labels; an image can have a row in several splits)"
            )
            + "."
            for p, tf in protocols
        ],
    ]
    if build.get("limit_images") is not None:
        lines.append(
            f"- Quick build: only the first {build['limit_images']} images (by image_id) of each dataset; "
            "the QA of the others are in the rejects reports."
        )
    lines += [
        f"- Config hash `{manifest['config_hash']}`, loclens {manifest['loclens_version']}; every row's "
        "`provenance` repeats these with the checkpoint sha256.",
        "",
    ]
    return lines


def _counts_section(name: str, d: dict, stats: dict[str, SplitStats]) -> list[str]:
    info = source_info(d["source"])
    where = f" ({info.homepage})" if info.homepage else ""
    lines = [
        f"### `{name}`",
        "",
        f"Source: {info.title}{where}, read with the `{d['source']}` reader; license {info.license_name}.",
        "",
        f"Source data: {origin_text(d)}",
        "",
    ]
    rows = [[split, s.rows, s.qa, *(s.present[v] for v in VIEW_COLUMNS)] for split, s in stats.items()]
    lines += _table(["split", "images", "QA", *(f"`{v}`" for v in VIEW_COLUMNS)], rows)
    missing = []
    for view in VIEW_COLUMNS:
        reasons: dict[str, int] = {}
        for s in stats.values():
            for reason, n in s.missing.get(view, {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
        for reason, n in sorted(reasons.items()):
            missing.append([f"`{view}`", n, reason])
    total_missing = sum(s.n_missing for s in stats.values())
    lines += ["", f"Missing views: {total_missing} of {sum(s.rows for s in stats.values()) * len(VIEW_COLUMNS)}."]
    if missing:
        lines += ["", *_table(["view", "rows missing it", "why"], missing)]
    lines.append("")
    return lines + coverage_lines(d.get("coverage")) + localization_lines(d)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def coverage_lines(cov: dict | None) -> list[str]:
    """The manifest's coverage of a dataset (``stats.coverage``) as a table: per body region,
    the images with each segmenter's views."""
    segs = (cov or {}).get("segmenters")
    if not cov or not segs:
        return []
    rows = [
        [region, c["images"], *(f"{c[s]} ({percent(c[s], c['images'])})" for s in segs)]
        for region, c in [*cov["regions"].items(), ("**all**", cov["all"])]
    ]
    return [
        "Coverage by body region: images with each segmenter's views (every image of a region counted "
        "once, whatever its splits).",
        "",
        *_table(["body region", "images", *(f"with `{s}_*` views" for s in segs)], rows),
        "",
    ]


def _rejects_section(name: str, d: dict) -> list[str]:
    acc = d["accounting"]
    lines = [
        f"`{name}`: {acc['input_records']} input QA records = {acc['released_qa']} released + "
        f"{acc['rejected_qa']} rejected; every reject is listed with its file and reason in `{d['rejects_file']}`.",
        "",
    ]
    if acc.get("by_reason"):
        # Alike rejects grouped (numbers in reasons -> N), from the manifest's accounting.
        lines += _table(
            ["rejected", "count", "reason"],
            [
                ["QA records" if r["kind"] == "qa" else "images", r["count"], r["reason"].replace("|", "/")]
                for r in acc["by_reason"]
            ],
        ) + [""]
    return lines


def origin_text(d: dict) -> str:
    """Where a dataset's files came from, and what a copy lacks."""
    origin = d.get("origin")
    if not origin:
        text = "local files, not fetched by loclens (no download record)."
    elif origin.get("repo"):
        revision = f" at revision `{origin['revision']}`" if origin.get("revision") else ""
        how = "downloaded from" if origin["origin"] == "hub" else "a copy placed by hand of"
        text = f"{how} the Hugging Face Hub dataset `{origin['repo']}`{revision}."
    else:
        how = "downloaded from" if origin["origin"] == "osf" else "a copy placed by hand of"
        text = f"{how} the original release ({origin.get('page') or origin.get('url')})."
    if origin:
        text += f" {origin['files']} files, sha256 of their checksum list `{origin['files_sha256'][:16]}`."
        if origin.get("note"):
            text += f" Note: {origin['note']}."
    if d["source"] == "hf_parquet" and not (origin or {}).get("note"):
        text += (
            " Generic Parquet source: no question-type metadata (localization tags from keyword rules);"
            " answer_type derived from yes/no where the data has none."
        )
    return text


def localization_lines(d: dict) -> list[str]:
    """Counts of the paper's localization categories per split, and the rules that set them."""
    counts = d.get("localization") or {}
    if not counts:
        return []
    lines = ["| split | QA | anatomical | positioning | either |", "|---|---|---|---|---|"]
    for split, c in sorted(counts.items()):
        lines.append(f"| {split} | {c['qa']} | {c['anatomical']} | {c['positioning']} | {c['localization']} |")
    rules = ", ".join(f"`{rule}` {n}" for rule, n in (d.get("localization_rules") or {}).items())
    return [
        "Localization tags (`qa.localization`, rule in `qa.localization_rule`):",
        "",
        *lines,
        "",
        f"Rules: {rules}.",
        "",
    ]


def _license_section(datasets: dict) -> list[str]:
    lines = ["## Licenses", ""]
    for name, d in sorted(datasets.items()):
        info = source_info(d["source"])
        url = LICENSE_URLS.get(info.license, info.homepage)
        lines.append(
            f"- Config `{name}` (images, QA, masks and views derived from {info.title}): [{info.license_name}]({url})."
        )
    lines += [
        "- The masks and lens views are derived from the source images and follow the source's license; "
        "CC BY sources require attribution (cite them as below).",
        "",
    ]
    return lines


def render_card(release_dir: Path, manifest: dict, release_cfg: dict, stats: dict | None = None) -> str:
    """The card's text; ``stats``: the release's statistics when the caller already has them
    (``release_stats``), else they are read from the shards."""
    release_dir = Path(release_dir)
    meta = yaml.safe_dump(front_matter(manifest, release_cfg), sort_keys=False, allow_unicode=True)
    stats = stats if stats is not None else release_stats(release_dir, manifest)
    datasets = manifest["datasets"]
    body = [
        f"# {release_cfg['pretty_name']}",
        "",
        "Localization-lens views (Farooq et al., MICCAI 2025) of medical VQA images, built with loclens: each "
        "radiology image comes with its segmentation masks, the image blended with them (unicolor, multicolor) "
        "for two segmenters (SAM in automatic mode, MedSAM prompted with boxes), and the image masked to them.",
        "",
        "Configs: " + ", ".join(f"`{n}`" for n in sorted(datasets)) + ".",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("<this repo or folder>", "{sorted(datasets)[0]}")',
        '# or: import loclens; rows = loclens.load("<repo or folder>", dataset=..., split="train", streaming=True)',
        "```",
        "",
        *_license_section(datasets),
        *_method_section(manifest),
        "## Counts",
        "",
        "Images per split, their QA pairs, and non-null views per column.",
        "",
    ]
    for name, d in sorted(datasets.items()):
        body += _counts_section(name, d, stats[name])
    body += ["## Rejects", ""]
    for name, d in sorted(datasets.items()):
        body += _rejects_section(name, d)
    body += [
        "## Intended use and limitations",
        "",
        "- For research on medical vision-language models (training with lens views, localization analysis).",
        "- **Masks and views are machine-generated and were not reviewed by clinicians.** They can miss or "
        "mislabel structures; `label` values of prompt-derived masks (for example `otsu-bright-0`) name how a "
        "box was found, not an anatomical structure; those of the `chest` source (for example "
        "`chest-lung-field-image-left`) name the structure the box was aimed at, in image (not patient) sides.",
        "- **Not for clinical use**, diagnosis or treatment decisions.",
        "- Inherits the biases and the question distribution of the source datasets; splits of the "
        "`official` protocol may share images between train and test.",
        "",
        "## Citation",
        "",
        "Please cite the paper, the source datasets and the segmenters:",
        "",
        CITATIONS,
    ]
    return f"---\n{meta}---\n\n" + "\n".join(body) + "\n"


def write_card(release_dir: Path, manifest: dict, release_cfg: dict, stats: dict | None = None) -> None:
    write_text(Path(release_dir) / CARD, render_card(release_dir, manifest, release_cfg, stats))
