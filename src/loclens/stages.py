"""The configuration each stage depends on, so the workflow re-runs exactly what a change
affects (blend settings re-render without re-segmenting; a new seed re-splits)."""

from __future__ import annotations

from .provenance import config_hash
from .schema import SEGMENTERS


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
    """A segmenter's config section, with its prompt sources narrowed to those that can run,
    and the resolution images are read at (``segment.read_max_side``, shared by all)."""
    settings = {**config["segment"][segmenter], "read_max_side": config["segment"]["read_max_side"]}
    if "prompts" in settings:
        settings["prompts"] = effective_prompts(config, settings["prompts"])
    return settings


def enabled_segmenters(config: dict) -> list[str]:
    return [name for name in SEGMENTERS if config["segment"][name].get("enabled", False)]


def effective_prompts(config: dict, names: list[str]) -> list[str]:
    """Prompt sources in the configured order, without those that read the masks of a
    segmenter that is not enabled (``sam`` while SAM is off): the provenance then lists the
    sources that could actually produce boxes."""
    from .segment.prompts import MASKS_READ, check_sources

    check_sources(names)
    enabled = set(enabled_segmenters(config))
    usable = [n for n in names if MASKS_READ.get(n) is None or MASKS_READ[n] in enabled]
    if names and not usable:
        needs = ", ".join(f"{n} needs segment.{MASKS_READ[n]}.enabled: true" for n in names)
        raise ValueError(f"segment.medsam.prompts {names}: no source can produce boxes ({needs})")
    return usable


def context_segmenters(config: dict, segmenter: str) -> list[str]:
    """Segmenters whose mask caches a segmenter's prompt sources read (the medsam job of a
    shard then waits for those caches of the same shard)."""
    from .segment.prompts import MASKS_READ

    names = segment_settings(config, segmenter).get("prompts", [])
    return sorted({MASKS_READ[n] for n in names if n in MASKS_READ})


def render_settings(config: dict) -> dict:
    return config["render"]


#: Config sections that do not shape the release (QC pictures, where to publish, how models are
#: trained or evaluated): changing them must not re-finalise it (which would retrain everything
#: downstream).
NOT_RELEASE_KEYS = ("qc", "publish", "train", "evaluate")


def release_settings(config: dict) -> dict:
    """The configuration the release stage (card, manifest) depends on."""
    return {k: v for k, v in config.items() if k not in NOT_RELEASE_KEYS}


def build_hash(config: dict, dataset: str) -> str:
    """The config hash recorded in every row: everything that shapes that dataset's rows."""
    return config_hash(
        {
            "ingest": ingest_settings(config, dataset),
            "segment": {s: segment_settings(config, s) for s in enabled_segmenters(config)},
            "render": render_settings(config),
        }
    )


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


def train_settings(config: dict, phase: str) -> dict:
    """A training phase's settings: the train section (less the other phase's) and the seed."""
    other = {"align": "vqa", "vqa": "align"}[phase]
    return {**{k: v for k, v in config["train"].items() if k != other}, "seed": config["seed"]}
