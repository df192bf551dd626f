"""The dataset card (release README.md) in Hugging Face conventions: YAML front matter with
one config per dataset, then prose on how the views were made, counts and citations."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml

from ..atomic import write_text
from ..schema import FEATURES, VIEW_COLUMNS

LICENSES = {"vqa_rad": "cc0-1.0", "sample": "cc0-1.0", "slake": "cc-by-4.0"}

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


def view_counts(release_dir: Path, shards: list[dict]) -> dict[str, int]:
    """Non-null views per view column over a split's shards."""
    counts = {v: 0 for v in VIEW_COLUMNS}
    for shard in shards:
        pf = pq.ParquetFile(release_dir / shard["file"])
        for rg in range(pf.num_row_groups):
            table = pf.read_row_group(rg, columns=list(VIEW_COLUMNS))
            for v in VIEW_COLUMNS:
                counts[v] += len(table) - table.column(v).null_count
    return counts


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def front_matter(manifest: dict, pretty_name: str) -> dict:
    datasets = manifest["datasets"]
    licenses = sorted({LICENSES.get(d["source"], "other") for d in datasets.values()})
    total = sum(s["rows"] for d in datasets.values() for s in d["splits"].values())
    return {
        "pretty_name": pretty_name,
        "license": licenses[0] if len(licenses) == 1 else "other",
        "task_categories": ["visual-question-answering", "image-segmentation"],
        "tags": ["medical", "radiology", "localization-lens", "sam", "medsam", "loclens"],
        "size_categories": [_size_category(total)],
        "source_datasets": sorted({d["source"] for d in datasets.values()}),
        "configs": [
            {
                "config_name": name,
                "data_files": [
                    {"split": split, "path": f"{name}/{split}-*.parquet"} for split in sorted(d["splits"])
                ],
            }
            for name, d in sorted(datasets.items())
        ],
        "dataset_info": [
            {
                "config_name": name,
                "features": FEATURES._to_yaml_list(),
                "splits": [
                    {"name": s, "num_bytes": sum(x["bytes"] for x in v["shards"]), "num_examples": v["rows"]}
                    for s, v in sorted(d["splits"].items())
                ],
            }
            for name, d in sorted(datasets.items())
        ],
    }


def _dataset_section(release_dir: Path, name: str, d: dict, segmenters: list[dict]) -> str:
    lines = [f"### `{name}` (source: {d['source']}, license: {LICENSES.get(d['source'], 'see source')})", ""]
    lines.append("| split | rows | " + " | ".join(VIEW_COLUMNS) + " |")
    lines.append("|---|---|" + "---|" * len(VIEW_COLUMNS))
    for split, s in sorted(d["splits"].items()):
        counts = view_counts(release_dir, s["shards"])
        lines.append(f"| {split} | {s['rows']} | " + " | ".join(str(counts[v]) for v in VIEW_COLUMNS) + " |")
    acc = d["accounting"]
    lines += [
        "",
        f"Input QA records: {acc['input_records']}; released: {acc['released_qa']}; rejected: "
        f"{acc['rejected_qa']} (each with its reason in `{d['rejects_file']}`); images without any "
        f"QA record: {acc.get('rejected_images', 0)}.",
        "",
        f"Source data: {origin_text(d)}",
        "",
        *localization_lines(d),
        *_rejects_table(acc.get("by_reason", [])),
    ]
    return "\n".join(lines)


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
        text += (" Generic Parquet source: no question-type metadata (localization tags from keyword rules);"
                 " answer_type derived from yes/no where the data has none.")
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
    return ["Localization tags (`qa.localization`, rule in `qa.localization_rule`):", "", *lines, "", f"Rules: {rules}.", ""]


def _rejects_table(by_reason: list[dict]) -> list[str]:
    """Why records were rejected, most frequent first (details per record in the report)."""
    if not by_reason:
        return []
    lines = ["Rejects by reason:", "", "| rejected | count | reason |", "|---|---|---|"]
    for r in by_reason:
        what = "QA records" if r["kind"] == "qa" else "images"
        lines.append(f"| {what} | {r['count']} | {r['reason'].replace('|', '/')} |")
    return lines + [""]


def _automatic_note(config: dict) -> str:
    sam = config["segment"]["sam"]
    generator = ", ".join(f"{k}={v}" for k, v in sorted(sam["generator"].items())) or "library defaults"
    filters = ", ".join(f"{k}={v}" for k, v in sorted(sam["filter"].items()) if v is not None)
    return f"automatic mask generation ({generator}), radiology filters: {filters}"


def render_card(release_dir: Path, manifest: dict, config: dict, segmenters: list[dict]) -> str:
    meta = yaml.safe_dump(front_matter(manifest, config["release"]["pretty_name"]), sort_keys=False, allow_unicode=True)
    alpha = config["render"]["alpha"]
    seg_lines = [
        f"- `{s['segmenter']}`: {s['model']} ({s['backend']}), checkpoint `{s['checkpoint']}` "
        f"sha256 `{s['checkpoint_sha256']}`, "
        + (f"prompt sources: {', '.join(s['prompt_sources'])}" if s["prompt_sources"] else _automatic_note(config))
        for s in segmenters
    ] or ["- none"]
    enabled = {s["segmenter"] for s in segmenters}
    missing = [f"`{s}_*`" for s in ("sam", "medsam") if s not in enabled]
    body = [
        f"# {config['release']['pretty_name']}",
        "",
        "Localization-lens views (Farooq et al., MICCAI 2025) of medical VQA images, built with loclens.",
        "One row per image and split; the image's QA pairs are in the `qa` list column.",
        "",
        "## How the views were made",
        "",
        *seg_lines,
        "",
        f"- Blend: `I_blend = a*I + (1-a)*C`, `a ~ N({alpha['mean']}, {alpha['std']})` clipped to "
        f"[{alpha['min']}, {alpha['max']}], drawn per (seed, image_id, segmenter); seed {manifest['seed']}; "
        f"outside the masks: `{config['render']['outside']}`.",
        f"- Masked view: the image outside the union of masks set to 0, from the first of "
        f"{config['render']['masked_from']} that has masks for the image.",
        f"- Config hash: `{manifest['config_hash']}`; loclens {manifest['loclens_version']}.",
    ]
    if missing:
        body.append(
            f"- {', '.join(missing)} views are null: that segmenter was not run (not enabled in this build; "
            "SAM needs a checkpoint, see `segment.sam` in loclens' config.yaml). Nothing was substituted for it."
        )
    body += ["", "## Counts", ""]
    for name, d in sorted(manifest["datasets"].items()):
        body.append(_dataset_section(release_dir, name, d, segmenters))
    body += [
        "## Intended use and limitations",
        "",
        "For research on medical vision-language models. Masks are machine-generated and unreviewed;",
        "not for clinical use or diagnosis.",
        "",
        "## Citation",
        "",
        CITATIONS,
    ]
    return f"---\n{meta}---\n\n" + "\n".join(body) + "\n"


def write_card(release_dir: Path, manifest: dict, config: dict, segmenters: list[dict]) -> None:
    write_text(release_dir / "README.md", render_card(release_dir, manifest, config, segmenters))
