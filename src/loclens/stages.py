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


#: Config sections that never shape the release: changing how models are trained or evaluated
#: must not re-finalise it (which would retrain everything downstream).
NOT_RELEASE = ("train", "evaluate")


def release_settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_RELEASE}


def experiment_train_settings(config: dict, phase: str, cell, seed: int) -> dict:
    """A training phase's settings for one cell and training seed of the ablation grid (the
    release, built with the global seed, is shared by every cell and seed)."""
    from .evaluate.grid import cell_train_settings

    return cell_train_settings(train_settings(config, phase), cell, seed)


#: Evaluate settings that shape one run's predictions; the grid and seeds do not, so adding a
#: cell or a seed adds jobs without re-running the others.
EVALUATE_RUN_KEYS = ("split", "candidates_split", "top_k", "predictions_format")


def evaluate_run_settings(config: dict) -> dict:
    return {k: config["evaluate"][k] for k in EVALUATE_RUN_KEYS}
