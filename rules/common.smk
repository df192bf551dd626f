# Config validation and helper functions shared by all rules (no rule bodies here).
import copy
import json
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from loclens import preflight, stages
from loclens.config import ConfigError, dataset_source
from loclens.config import validate as check_config
from loclens.download import RECORD as DOWNLOAD_RECORD
from loclens.ingest import download_origin, downloaded_into_resources, source_root
from loclens.plan import MASK_CACHE, PLAN_FILE, RECORDS_FILE, REJECTS_FILE, mask_cache_name, read_plan
from loclens.schema import SEGMENTERS as SEGMENTER_NAMES
from loclens.sources import source_spec
from loclens.segment import checkpoints as ckpt
from loclens.evaluate import grid
from loclens.evaluate.tables import TABLE_STEMS

# `datasets` says what to build as a whole: a configuration given on the command line
# (--configfile, --config) that sets it replaces config.yaml's list instead of being merged into
# it key by key (Snakemake's rule for every other key), so naming real datasets does not also
# build the sample. Command-line files still merge with each other: an overlay can add a `path`
# to a dataset of config/paper.yaml.
if "datasets" in workflow.config_settings.overwrite_config:
    config["datasets"] = copy.deepcopy(workflow.config_settings.overwrite_config["datasets"])

# The same schema twice: loclens first, for one short message listing every wrong key at once
# ("render: Additional properties are not allowed ('alhpa' was unexpected)"); then Snakemake's
# validate, which fills the defaults into `config`.
try:
    check_config(config, source="configuration")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, "../workflow/schemas/config.schema.yaml")

RESULTS = Path(config["results"])
RESOURCES = Path(config["resources"])
INGEST = RESULTS / "ingest"
SEGMENT = RESULTS / "segment"
RELEASE = RESULTS / "release"
QC = RESULTS / "qc"
LOGS = RESULTS / "logs"
EXPERIMENTS = RESULTS / "experiments"
EVALUATION = RESULTS / "evaluation"
# One trained model of the ablation grid: a cell (lens sources, phase-1 loss, pixel shuffle) and a seed.
RUN = grid.RUN_FOLDER
TRAIN = RESULTS / "train"
DATASETS = sorted(config["datasets"])
SEGMENTERS = stages.enabled_segmenters(config)
# Fail at load time on an unknown prompt source, or one whose segmenter is off.
for _segmenter in SEGMENTERS:
    stages.segment_settings(config, _segmenter)


wildcard_constraints:
    **grid.wildcard_patterns(),
    dataset="[A-Za-z0-9_]+",
    segmenter="|".join(SEGMENTER_NAMES),
    shard="[0-9]{5}",
    split="[A-Za-z0-9_]+",
    index="[0-9]{5}",
    total="[0-9]{5}",
    filename="[^/]+",


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def ingest_input(wildcards):
    """What an ingest reads: the generated sample's QA file; for a dataset in <resources>/<name>,
    its download record (so the default target downloads what is not there yet, and the record's
    checksums stand for the files); otherwise the dataset's files that exist. Missing data at a
    configured path is not an input error here: the ingest job then fails saying how to get it."""
    name = wildcards.dataset
    cfg = config["datasets"][name]
    source = dataset_source(name, cfg)
    if source == "sample":
        return RESOURCES / "sample" / name / "VQA_RAD Dataset Public.json"
    if downloaded_into_resources(name, cfg, config):
        return RESOURCES / name / DOWNLOAD_RECORD
    return source_spec(source).inputs(source_root(name, cfg, config))


def download_targets():
    """Download records of the configured datasets that live in <resources>/<name>."""
    datasets = config["datasets"]
    return [RESOURCES / n / DOWNLOAD_RECORD for n in DATASETS if downloaded_into_resources(n, datasets[n], config)]


def plan_of(dataset):
    """The ingest plan; reading it makes the DAG wait for the ingest checkpoint."""
    return read_plan(checkpoints.ingest.get(dataset=dataset).output.plan)


def segment_caches(dataset, shard_indices, segmenter):
    return [SEGMENT / dataset / segmenter / mask_cache_name(k) for k in shard_indices]


def release_shard(wildcards):
    name = f"{wildcards.dataset}/{wildcards.split}-{wildcards.index}-of-{wildcards.total}.parquet"
    return plan_of(wildcards.dataset).release_shard(name)


def render_masks(wildcards):
    shard = release_shard(wildcards)
    return {s: segment_caches(wildcards.dataset, shard.segment_shards, s) for s in SEGMENTERS}


def render_views_from(wildcards):
    return [RELEASE / f for f in release_shard(wildcards).views_from]


def render_masks_args(wildcards):
    args = []
    for seg, paths in render_masks(wildcards).items():
        joined = ",".join(str(p) for p in paths)
        args.append(f"--masks {seg}={joined}")
    return " ".join(args)


def all_release_shards(wildcards):
    return [RELEASE / f for d in DATASETS for f in plan_of(d).release_files]


def dataset_release_shards(wildcards):
    return [RELEASE / f for f in plan_of(wildcards.dataset).release_files]


def publish_args(wildcards):
    """CLI arguments of the publish rule; the repo id must be configured."""
    cfg = config["publish"]
    if not cfg["repo_id"]:
        raise ValueError("the publish target needs publish.repo_id in the config (e.g. my-user/loclens-vqa-rad)")
    args = ["--repo", cfg["repo_id"], "--revision", cfg["revision"]]
    if not cfg["private"]:
        args.append("--public")
    if cfg["message"]:
        args += ["--message", cfg["message"]]
    return " ".join(shlex.quote(a) for a in args)


def all_segment_caches(wildcards):
    out = []
    for d in DATASETS:
        n = len(plan_of(d).segment_shards)
        for s in SEGMENTERS:
            out.extend(segment_caches(d, range(n), s))
    return out


def segment_inputs(wildcards):
    """Inputs of a segment job besides the records: the model checkpoint (unless weights ship
    in a package) and the caches of this shard that its prompt sources read (the medsam job
    of a shard waits for the sam job of that shard when `sam` is a prompt source)."""
    cfg = config["segment"][wildcards.segmenter]
    inputs = {}
    weights = ckpt.weights(wildcards.segmenter, cfg, RESOURCES)
    if weights.kind == ckpt.LOCAL and not weights.path.is_file():
        ckpt.require(
            weights.path, wildcards.segmenter, cfg, RESOURCES
        )  # raises unless a model folder: says what to fetch
    if weights.kind != ckpt.PACKAGED:
        inputs["checkpoint"] = weights.path
    for seg in stages.context_segmenters(config, wildcards.segmenter):
        inputs[f"context_{seg}"] = SEGMENT / wildcards.dataset / seg / MASK_CACHE.format(shard=wildcards.shard)
    return inputs


def segment_extra_args(wildcards, input):
    args = []
    if "checkpoint" in input.keys():
        args.append(f"--checkpoint {shlex.quote(str(input.checkpoint))}")
    for seg in stages.context_segmenters(config, wildcards.segmenter):
        args.append(f"--context-masks {seg}={shlex.quote(str(input[f'context_{seg}']))}")
    return " ".join(args)


def checkpoint_downloads():
    """File name under <resources>/checkpoints/ -> download spec, for the enabled segmenters
    that fetch their weights (no local checkpoint, no packaged weights)."""
    out = {}
    for seg in SEGMENTERS:
        try:
            weights = ckpt.weights(seg, config["segment"][seg], RESOURCES)
        except ckpt.CheckpointError:
            continue  # no weights known: the segment jobs' inputs say what to configure
        if weights.kind == ckpt.DOWNLOADED:
            out[weights.path.name] = weights.spec
    return out


def checkpoint_download(wildcards):
    try:
        return checkpoint_downloads()[wildcards.filename]
    except KeyError:
        raise ValueError(
            f"{RESOURCES / 'checkpoints' / wildcards.filename}: no enabled segmenter downloads a checkpoint of that name"
        ) from None


def experiment_train_settings(wildcards, phase):
    """A training phase's settings for one cell and seed of the ablation grid."""
    cell = grid.cell_from_wildcards(wildcards)
    return stages.experiment_train_settings(config, phase, cell, int(wildcards.seed))


def evaluate_datasets():
    """The datasets the models are trained on, hence evaluated on."""
    return " ".join(config["train"]["datasets"] or DATASETS)


def experiment_metrics():
    """metrics.json of every cell and seed of the configured grid."""
    cells = grid.grid_cells(config["evaluate"])
    seeds = config["evaluate"]["seeds"]
    return [EXPERIMENTS / RUN.format(**c.wildcards, seed=s) / "metrics.json" for c in cells for s in seeds]


def train_release():
    """The release training reads: train.release, else this workflow's own."""
    return config["train"]["release"] or str(RELEASE)


def train_release_input(wildcards):
    """This workflow's manifest when training on its own release (so the build runs first)."""
    return {} if config["train"]["release"] else {"manifest": RELEASE / "manifest.json"}
