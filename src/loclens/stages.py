"""The configuration each stage depends on, so the workflow re-runs exactly what a change
affects (blend settings re-render without re-segmenting; a new seed re-splits)."""

from __future__ import annotations

from .provenance import config_hash


def ingest_settings(config: dict, dataset: str) -> dict:
    return {
        "datasets": {dataset: config["datasets"][dataset]},
        "resources": config["resources"],
        "seed": config["seed"],
        "split": config["split"],
        "grouped_split": config["grouped_split"],
        "limit_images": config["limit_images"],
        "segment": {"images_per_shard": config["segment"]["images_per_shard"]},
        "release": {"rows_per_shard": config["release"]["rows_per_shard"]},
    }


def segment_settings(config: dict, segmenter: str) -> dict:
    return config["segment"][segmenter]


def enabled_segmenters(config: dict) -> list[str]:
    return [name for name in ("sam", "medsam") if config["segment"][name].get("enabled", False)]


def render_settings(config: dict) -> dict:
    return config["render"]


def build_hash(config: dict, dataset: str) -> str:
    """The config hash recorded in every row: everything that shapes that dataset's rows."""
    return config_hash(
        {
            "ingest": ingest_settings(config, dataset),
            "segment": {s: segment_settings(config, s) for s in enabled_segmenters(config)},
            "render": render_settings(config),
        }
    )


def release_settings(config: dict) -> dict:
    """Everything but training: changing how to train must not re-finalise the release."""
    return {k: v for k, v in config.items() if k != "train"}


def train_settings(config: dict, phase: str) -> dict:
    """A training phase's settings: the train section (less the other phase's) and the seed."""
    other = {"align": "vqa", "vqa": "align"}[phase]
    return {**{k: v for k, v in config["train"].items() if k != other}, "seed": config["seed"]}
