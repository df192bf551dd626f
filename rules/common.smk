# Config validation and helper functions shared by all rules (no rule bodies here).
import json
from pathlib import Path

from snakemake.utils import validate

from loclens import stages
from loclens.config import dataset_source

validate(config, "../workflow/schemas/config.schema.yaml")

RESULTS = Path(config["results"])
RESOURCES = Path(config["resources"])
INGEST = RESULTS / "ingest"
SEGMENT = RESULTS / "segment"
RELEASE = RESULTS / "release"
LOGS = RESULTS / "logs"
TRAIN = RESULTS / "train"
DATASETS = sorted(config["datasets"])
SEGMENTERS = stages.enabled_segmenters(config)


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    segmenter="sam|medsam",
    shard="[0-9]{5}",
    split="[A-Za-z0-9_]+",
    index="[0-9]{5}",
    total="[0-9]{5}",


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def ingest_input(wildcards):
    """The source's QA file: the generated sample's, or the configured release's."""
    cfg = config["datasets"][wildcards.dataset]
    if dataset_source(wildcards.dataset, cfg) == "sample":
        return RESOURCES / "sample" / wildcards.dataset / "VQA_RAD Dataset Public.json"
    return Path(cfg["path"]).expanduser() / "VQA_RAD Dataset Public.json"


def plan_of(dataset):
    """The ingest plan; reading it makes the DAG wait for the ingest checkpoint."""
    with open(checkpoints.ingest.get(dataset=dataset).output.plan) as fh:
        return json.load(fh)


def segment_caches(dataset, shard_indices, segmenter):
    return [SEGMENT / dataset / segmenter / f"shard-{k:05d}.parquet" for k in shard_indices]


def release_shard(wildcards):
    name = f"{wildcards.dataset}/{wildcards.split}-{wildcards.index}-of-{wildcards.total}.parquet"
    for shard in plan_of(wildcards.dataset)["release_shards"]:
        if shard["file"] == name:
            return shard
    raise ValueError(f"{name} is not a shard of the current plan")


def render_masks(wildcards):
    shard = release_shard(wildcards)
    return {s: segment_caches(wildcards.dataset, shard["segment_shards"], s) for s in SEGMENTERS}


def render_masks_args(wildcards):
    args = []
    for seg, paths in render_masks(wildcards).items():
        joined = ",".join(str(p) for p in paths)
        args.append(f"--masks {seg}={joined}")
    return " ".join(args)


def all_release_shards(wildcards):
    return [RELEASE / s["file"] for d in DATASETS for s in plan_of(d)["release_shards"]]


def all_segment_caches(wildcards):
    out = []
    for d in DATASETS:
        n = len(plan_of(d)["segment_shards"])
        for s in SEGMENTERS:
            out.extend(segment_caches(d, range(n), s))
    return out


def train_release():
    """The release training reads: train.release, else this workflow's own."""
    return config["train"]["release"] or str(RELEASE)


def train_release_input(wildcards):
    """This workflow's manifest when training on its own release (so the build runs first)."""
    return {} if config["train"]["release"] else {"manifest": RELEASE / "manifest.json"}
